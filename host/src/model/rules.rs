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

/// An image reference of a hypervisor API's image store (`debian:12`,
/// `library/debian:12`, `name@sha256:…`): `[A-Za-z0-9_.:/@-]{1,128}`, no
/// `..` and no leading `/`, so that it stays one segment set of an API path.
pub fn check_image_reference(field: &str, text: &str) -> Result<(), Invalid> {
    let plain = (1..=128).contains(&text.len())
        && !text.starts_with('/')
        && !text.contains("..")
        && !text.contains("//")
        && text.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'/' | b'@' | b'-')
        });
    if plain {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!("{text:?} must be an image reference [A-Za-z0-9_.:/@-]{{1,128}} without .."),
        ))
    }
}

/// A SHA-256 fingerprint as hex, with or without colons (`openssl x509
/// -fingerprint -sha256` prints it with).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut pin = [0u8; 32];
    for (index, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(pin)
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

/// The unicast form of a multicast MAC address (bit 0 of the first octet
/// cleared), or `None` when `mac` is not a multicast MAC. Billing modules
/// make MACs from 6 random bytes; half of them are multicast, which no NIC
/// may have.
pub fn unicast_mac(mac: &str) -> Option<String> {
    if !is_mac(mac) {
        return None;
    }
    let first = u8::from_str_radix(&mac[..2], 16).ok()?;
    (first & 1 == 1).then(|| format!("{:02x}{}", first & !1, &mac[2..]))
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
    // An all-digit top label makes an address (`10.0.0.1`), not a name: a
    // proxy site for an IP literal would catch requests for the address.
    if labels
        .last()
        .is_some_and(|top| top.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return bad("is an IP address, not a domain name");
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
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&colons), Some([0xab; 32]));
        assert_eq!(parse_fingerprint("ab"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn image_references_stay_inside_the_api_path() {
        for good in [
            "debian:12",
            "library/debian:12",
            "oidcs-busybox:1",
            "img@sha256:ab12",
        ] {
            assert!(check_image_reference("f", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a b",
            "a?b",
            "a%2e",
            "a#b",
        ] {
            assert!(check_image_reference("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_api_addresses_are_host_and_port_and_sockets_are_listed() {
        let policy = UriPolicy {
            api_sockets: vec!["/run/docker.sock".to_owned()],
            ..UriPolicy::default()
        };
        for allowed in [
            "https://10.0.0.5:8006",
            "https://pve.example.com:8006/",
            "http://127.0.0.1:2375",
            "http://[::1]:2375",
            "unix:///run/docker.sock",
        ] {
            assert!(
                check_host_uri("f", allowed, &policy, true).is_ok(),
                "{allowed}"
            );
        }
        for refused in [
            "https://user@10.0.0.5:8006",
            "https://10.0.0.5:8006/api2/json",
            "http://10.0.0.5?x=1",
            "http://-oProxy:80",
            "http://10.0.0.5:0",
            "unix:///run/podman/podman.sock",
            "unix:///run/../run/docker.sock",
            "unix://run/docker.sock",
        ] {
            assert!(
                check_host_uri("f", refused, &policy, true).is_err(),
                "{refused}"
            );
        }
        assert!(
            check_host_uri("f", "unix:///run/docker.sock", &UriPolicy::default(), true).is_err(),
            "no socket unless the config file lists it"
        );
    }

    #[test]
    fn multicast_macs_become_unicast() {
        assert_eq!(
            unicast_mac("93:d7:1a:02:4c:7e").as_deref(),
            Some("92:d7:1a:02:4c:7e")
        );
        assert_eq!(
            unicast_mac("01:00:5E:00:00:FB").as_deref(),
            Some("00:00:5E:00:00:FB")
        );
        assert_eq!(
            unicast_mac("ff:ff:ff:ff:ff:ff").as_deref(),
            Some("fe:ff:ff:ff:ff:ff")
        );
        assert_eq!(unicast_mac("52:54:00:12:34:56"), None);
        assert_eq!(unicast_mac(""), None);
        assert_eq!(unicast_mac("not-a-mac"), None);
    }

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

/// The libvirt URI schemes a host may use: local QEMU/KVM and LXC, QEMU
/// over SSH or TLS, and libvirt's in-process test driver.
pub const LIBVIRT_SCHEMES: &[&str] = &["test", "qemu", "qemu+ssh", "qemu+tls", "lxc"];

/// What a host URI may use beyond the base allow-list. Only the config file
/// sets it (`[libvirt]`), never the API: a leaked API token must not be able
/// to make the server run a program or read a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UriPolicy {
    /// libvirt URI query parameters allowed (none by default). libvirt's
    /// `command`, `netcat`, `socket`, `keyfile`, `no_verify`, `pkipath`, …
    /// run programs, read files or skip host-key checks.
    #[serde(default)]
    pub uri_params: Vec<String>,
    /// `test:///<absolute path>.xml` driver files (benchmarks); otherwise
    /// only `test:///default`. A driver file's content shows in errors.
    #[serde(default)]
    pub test_files: bool,
    /// `unix:///<path>` HTTP API sockets (engines granted `http`: Docker's
    /// or Podman's) a host may name; none by default: such a socket is
    /// often root on the machine.
    #[serde(default)]
    pub api_sockets: Vec<String>,
}

/// Schemes of a hypervisor's HTTP API (engines granted `http`).
pub const API_SCHEMES: &[&str] = &["http", "https", "unix"];

/// A host's `server_addr`: a libvirt URI of an allowed form.
///
/// - `test:///default` (or a `.xml` driver file when the policy allows);
/// - `qemu:///system`, `lxc:///`;
/// - `qemu+ssh://[user@]host[:port]/system` and `qemu+tls://host[:port]/system`
///   (ssh checks the host key against known_hosts: `no_verify` is a
///   parameter, refused unless allowed);
/// - query parameters only those the policy names; no percent-encoding
///   (it would hide a parameter's name from this check);
/// - or, when `http_api` (the host's engine is granted `http`), an HTTP API:
///   `http(s)://host[:port]` (no user, path or query), or `unix:///<path>`
///   when the policy lists the socket.
pub fn check_host_uri(
    field: &str,
    uri: &str,
    policy: &UriPolicy,
    http_api: bool,
) -> Result<(), Invalid> {
    let refuse = |rule: String| Err(Invalid::new(field, rule));
    if uri
        .chars()
        .any(|character| character.is_whitespace() || character.is_control() || character == '%')
    {
        return refuse("must not contain spaces, control characters or %-encoding".to_owned());
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return refuse(format!(
            "{uri:?} must be a URI with scheme one of {LIBVIRT_SCHEMES:?} or {API_SCHEMES:?}"
        ));
    };
    if API_SCHEMES.contains(&scheme) {
        if !http_api {
            return refuse(format!(
                "{uri:?} is an HTTP API address, for engines granted \"http\" only; this host's \
                 engine speaks libvirt ({LIBVIRT_SCHEMES:?})"
            ));
        }
        return check_api_uri(field, scheme, rest, policy);
    }
    if !LIBVIRT_SCHEMES.contains(&scheme) {
        return refuse(format!(
            "{uri:?} must be a URI with scheme one of {LIBVIRT_SCHEMES:?} or {API_SCHEMES:?}"
        ));
    }
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match location.find('/') {
        Some(slash) => location.split_at(slash),
        None => (location, ""),
    };
    let remote = matches!(scheme, "qemu+ssh" | "qemu+tls");
    if remote {
        check_uri_authority(field, authority, scheme == "qemu+ssh")?;
    } else if !authority.is_empty() {
        return refuse(format!(
            "{scheme}:// names no host (write {scheme}:///...), got {authority:?}"
        ));
    }
    let path_allowed = match scheme {
        "test" => {
            path == "/default"
                || (policy.test_files
                    && path.ends_with(".xml")
                    && !path.split('/').any(|part| part == ".." || part == "."))
        }
        "lxc" => path.is_empty() || path == "/",
        _ => path == "/system",
    };
    if !path_allowed {
        let allowed = match scheme {
            "test" if policy.test_files => "/default or an absolute .xml driver file",
            "test" => "/default (driver files only when [libvirt] test_files is set)",
            "lxc" => "/",
            _ => "/system",
        };
        return refuse(format!("{scheme} URI path must be {allowed}, got {path:?}"));
    }
    for parameter in query.into_iter().flat_map(|query| query.split('&')) {
        let name = parameter.split('=').next().unwrap_or_default();
        let allowed = policy
            .uri_params
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name));
        if !allowed {
            return refuse(format!(
                "URI parameter {name:?} is not allowed (the config file's [libvirt] \
                 uri_params lists those allowed: {:?})",
                policy.uri_params
            ));
        }
    }
    Ok(())
}

/// An HTTP API's address (after `scheme://`).
fn check_api_uri(field: &str, scheme: &str, rest: &str, policy: &UriPolicy) -> Result<(), Invalid> {
    if scheme == "unix" {
        let listed = policy.api_sockets.iter().any(|socket| socket == rest);
        if !rest.starts_with('/') || rest.split('/').any(|part| part == "..") || !listed {
            return Err(Invalid::new(
                field,
                format!(
                    "unix://{rest} is not an API socket the config file allows ([libvirt] \
                     api_sockets: {:?})",
                    policy.api_sockets
                ),
            ));
        }
        return Ok(());
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(Invalid::new(
            field,
            format!("{scheme}:// API address is host[:port] only, got {rest:?}"),
        ));
    }
    check_uri_authority(field, authority, false)
}

/// `[user@]host[:port]` of a remote libvirt URI. Nothing may start with
/// `-`: ssh would read a host or user like `-oProxyCommand=...` as an option.
fn check_uri_authority(field: &str, authority: &str, user_allowed: bool) -> Result<(), Invalid> {
    let refuse = |rule: String| Err(Invalid::new(field, rule));
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host_port)) => (Some(user), host_port),
        None => (None, authority),
    };
    if let Some(user) = user {
        let valid = user_allowed
            && !user.starts_with('-')
            && (1..=32).contains(&user.len())
            && user
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
        if !valid {
            return refuse(format!(
                "URI user {user:?} must match [A-Za-z0-9_.-]{{1,32}}"
            ));
        }
    }
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return refuse(format!("URI host {host_port:?} has an unclosed ["));
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return refuse(format!("URI host [{address}] is not an IPv6 address"));
        }
        (address, after.strip_prefix(':'))
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let host_valid = host.parse::<std::net::Ipv6Addr>().is_ok()
        || ((1..=253).contains(&host.len())
            && !host.starts_with(['-', '.'])
            && host
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-')));
    if !host_valid {
        return refuse(format!(
            "URI host {host:?} must be a host name or an address"
        ));
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|port| port > 0)
    {
        return refuse(format!("URI port {port:?} must be 1..=65535"));
    }
    Ok(())
}

#[cfg(test)]
mod uri_tests {
    use super::{UriPolicy, check_host_uri};

    #[track_caller]
    fn check(uri: &str, policy: &UriPolicy, allowed: bool) {
        let answer = check_host_uri("server_addr", uri, policy, false);
        assert_eq!(answer.is_ok(), allowed, "{uri}: {answer:?}");
    }

    #[test]
    fn only_the_allow_listed_forms_pass() {
        let strict = UriPolicy::default();
        for uri in [
            "test:///default",
            "qemu:///system",
            "lxc:///",
            "qemu+ssh://root@10.0.0.2/system",
            "qemu+ssh://hv-1.example.net:2222/system",
            "qemu+ssh://[2001:db8::1]/system",
            "qemu+tls://hv1/system",
        ] {
            check(uri, &strict, true);
        }
        for uri in [
            "qemu+ssh://h/system?command=/tmp/x",
            "qemu+ssh://h/system?Command=/tmp/x",
            "qemu+ssh://h/system?comm%61nd=/tmp/x",
            "qemu+ssh://h/system?netcat=nc",
            "qemu+ssh://h/system?no_verify=1",
            "qemu+ssh://h/system?keyfile=/root/.ssh/id",
            "qemu:///system?socket=/tmp/s",
            "qemu+ext:///system",
            "qemu+unix:///system",
            "qemu+tcp://h/system",
            "qemu+ssh://-oProxyCommand=x/system",
            "qemu+ssh://-o@h/system",
            "qemu+ssh://h:99999/system",
            "qemu+ssh://h/session",
            "qemu+tls://user@h/system",
            "qemu://h/system",
            "test:///etc/passwd",
            "test:///tmp/node.xml",
            "test://h/default",
            "lxc:///etc",
            "qemu:///system x",
            "ftp://evil/",
            "http://evil/path",
            "qemu",
        ] {
            check(uri, &strict, false);
        }
    }

    #[test]
    fn the_config_file_widens_the_list() {
        let policy = UriPolicy {
            uri_params: vec!["keyfile".to_owned()],
            test_files: true,
            ..UriPolicy::default()
        };
        check("qemu+ssh://h/system?keyfile=/root/.ssh/id", &policy, true);
        check("qemu+ssh://h/system?KEYFILE=/root/.ssh/id", &policy, true);
        check("qemu+ssh://h/system?command=/tmp/x", &policy, false);
        check("test:///tmp/node.xml", &policy, true);
        check("test:///tmp/../etc/node.xml", &policy, false);
        check("test:///etc/passwd", &policy, false);
    }
}

/// A map field that billing panels written in PHP may send as `[]`: PHP
/// encodes an empty array that way, so `[]` is read as an empty map; any
/// other list is refused. Errors inside a map keep their field paths.
/// One OpenSSH public key line: a key type, base64 key data, an optional
/// comment; no line breaks, at most 16 KiB.
pub fn is_ssh_public_key(line: &str) -> bool {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if line.len() > 16 * 1024 || line.chars().any(char::is_control) {
        return false;
    }
    let mut parts = line.split(' ');
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return false;
    };
    TYPES.contains(&kind)
        && data.len() >= 16
        && data
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"+/=".contains(&byte))
}

pub fn map_or_empty_list<'de, D, M>(deserializer: D) -> Result<M, D::Error>
where
    D: serde::Deserializer<'de>,
    M: serde::Deserialize<'de> + Default,
{
    struct MapOrEmptyList<M>(std::marker::PhantomData<M>);

    impl<'de, M: serde::Deserialize<'de> + Default> serde::de::Visitor<'de> for MapOrEmptyList<M> {
        type Value = M;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a map (an empty [] is taken as {})")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<M, A::Error> {
            M::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<M, A::Error> {
            match seq.next_element::<serde::de::IgnoredAny>()? {
                None => Ok(M::default()),
                Some(_) => Err(serde::de::Error::invalid_type(
                    serde::de::Unexpected::Seq,
                    &self,
                )),
            }
        }
    }

    deserializer.deserialize_any(MapOrEmptyList(std::marker::PhantomData))
}

/// A NIC's `nic_type` as panels spell it: `bridge` is what they call a NIC
/// on the public bridge, `pub` here. Read once, for VM configs and `ipadd`.
pub fn nic_type<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    Ok(if text == "bridge" {
        "pub".to_owned()
    } else {
        text
    })
}
