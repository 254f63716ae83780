//! The input rules, each written once: names, MAC addresses, domains, plain
//! text, network masks. Services, the config loader and the capabilities
//! all call these; each answers the rule it broke so that an error can say
//! "field: rule".

use std::net::{IpAddr, Ipv4Addr};

use serde::de::DeserializeOwned;

/// A value that breaks a rule: the field it came from and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Invalid {
    pub field: String,
    pub rule: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, rule: impl std::fmt::Display) -> Invalid {
        Invalid {
            field: field.into(),
            rule: rule.to_string(),
        }
    }

    /// The same rule under a longer path (`nic_all.nic0.` + `mac_addr`).
    pub fn within(self, prefix: &str) -> Invalid {
        Invalid {
            field: format!("{prefix}{}", self.field),
            rule: self.rule,
        }
    }
}

/// Host names, VM keys, pool and NIC names, plugin names: `[A-Za-z0-9_.-]{1,64}`.
pub fn is_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

pub fn check_name(field: &str, text: &str) -> Result<(), Invalid> {
    if is_name(text) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!("{text:?} must match [A-Za-z0-9_.-]{{1,64}}"),
        ))
    }
}

/// The nftables table name rule: `[A-Za-z0-9_]{1,64}` and not starting with
/// a digit (nft parses `9x` as a number and refuses it as a table name).
pub fn check_table_name(field: &str, text: &str) -> Result<(), Invalid> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        && !text.starts_with(|character: char| character.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!("{text:?} must match [A-Za-z_][A-Za-z0-9_]{{0,63}}"),
        ))
    }
}

/// `52:54:00:12:34:56`: six pairs of hex digits.
pub fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|part| part.len() == 2 && part.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// An IP address, or the rule it breaks.
pub fn parse_address(field: &str, text: &str) -> Result<IpAddr, Invalid> {
    text.parse()
        .map_err(|_| Invalid::new(field, format!("{text:?} is not an IP address")))
}

/// An optional IP address: empty is fine.
pub fn check_optional_address(field: &str, text: &str) -> Result<(), Invalid> {
    if text.is_empty() {
        Ok(())
    } else {
        parse_address(field, text).map(|_| ())
    }
}

/// RFC 1123 host name, optional leading `*.`, punycode labels accepted.
pub fn check_domain(field: &str, domain: &str) -> Result<(), Invalid> {
    let bad = |rule: &str| Err(Invalid::new(field, format!("{domain:?} {rule}")));
    if domain.is_empty() || domain.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return bad("must have at least two labels");
    }
    for label in labels {
        let valid = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return bad(
                "is not a valid host name (RFC 1123 labels of letters, digits and inner hyphens)",
            );
        }
    }
    Ok(())
}

/// Text fields that reach nftables comments or nginx files: at most `max`
/// characters, printable, no quotes, braces, semicolons or newlines.
pub fn check_plain_text(field: &str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.len() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(bad) = text.chars().find(|character| {
        character.is_control()
            || matches!(character, '"' | '\'' | '`' | ';' | '{' | '}' | '\\' | '$')
    }) {
        return Err(Invalid::new(field, format!("must not contain {bad:?}")));
    }
    Ok(())
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

/// Decode a JSON value into `T`, naming the failing field on error
/// (`config.ports_start: invalid type: string "x", expected u16`).
pub fn decode<T: DeserializeOwned>(prefix: &str, value: serde_json::Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = match (prefix.is_empty(), path.as_str()) {
            (true, ".") => "body".to_owned(),
            (true, _) => path,
            (false, ".") => prefix.to_owned(),
            (false, _) => format!("{prefix}.{path}"),
        };
        Invalid::new(field, error.into_inner())
    })
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
    fn table_names_are_what_nft_accepts() {
        assert!(check_table_name("t", "openidcs").is_ok());
        assert!(check_table_name("t", "a_9").is_ok());
        assert!(check_table_name("t", "9x").is_err());
        assert!(check_table_name("t", "a-b").is_err());
        assert!(check_table_name("t", "").is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_length("24", false), Some(24));
        assert_eq!(prefix_length("255.255.255.0", false), Some(24));
        assert_eq!(prefix_length("255.0.255.0", false), None);
        assert_eq!(prefix_length("33", false), None);
        assert_eq!(prefix_length("64", true), Some(64));
    }

    #[test]
    fn domains() {
        assert!(check_domain("domain", "www.example.com").is_ok());
        assert!(check_domain("domain", "*.example.com").is_ok());
        assert!(check_domain("domain", "localhost").is_err());
        assert!(check_domain("domain", "-a.example.com").is_err());
    }
}
