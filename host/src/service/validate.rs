//! Shared input rules: names, addresses, networks. Each answers the rule it
//! broke so the API can say "field: rule".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// Host names, VM keys and plugin names: `[A-Za-z0-9_.-]{1,64}`.
pub fn is_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

pub fn check_name(field: &str, text: &str) -> Result<(), ApiError> {
    if is_name(text) {
        Ok(())
    } else {
        Err(ApiError::bad_field(
            field,
            format!("{text:?} must match [A-Za-z0-9_.-]{{1,64}}"),
        ))
    }
}

/// Decode a JSON value into `T`, naming the failing field on error
/// (`config.ports_start: invalid type: string "x", expected u16`).
pub fn decode<T: DeserializeOwned>(prefix: &str, value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = match (prefix.is_empty(), path.as_str()) {
            (true, ".") => "body".to_owned(),
            (true, _) => path,
            (false, ".") => prefix.to_owned(),
            (false, _) => format!("{prefix}.{path}"),
        };
        ApiError::bad_field(&field, error.into_inner())
    })
}

/// A network mask as a prefix length: `24` or `255.255.255.0`.
pub fn prefix_length(mask: &str, is_v6: bool) -> Option<u8> {
    let max = if is_v6 { 128 } else { 32 };
    if let Ok(length) = mask.trim_start_matches('/').parse::<u8>() {
        return (length <= max).then_some(length);
    }
    let address: Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(address);
    let length = bits.leading_ones();
    (bits.checked_shl(length).unwrap_or(0) == 0 && !is_v6).then_some(length as u8)
}

/// The network address of `address/prefix`.
pub fn network_of(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_name("local"));
        assert!(is_name("vm-01.a_b"));
        assert!(!is_name(""));
        assert!(!is_name("a/b"));
        assert!(!is_name("a b"));
        assert!(!is_name(&"x".repeat(65)));
    }

    #[test]
    fn masks_and_networks() {
        assert_eq!(prefix_length("24", false), Some(24));
        assert_eq!(prefix_length("255.255.255.0", false), Some(24));
        assert_eq!(prefix_length("255.0.255.0", false), None);
        assert_eq!(prefix_length("33", false), None);
        assert_eq!(prefix_length("64", true), Some(64));
        let network = network_of("10.0.3.77".parse().unwrap(), 24);
        assert_eq!(network, "10.0.3.0".parse::<IpAddr>().unwrap());
    }
}
