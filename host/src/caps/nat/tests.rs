//! Unit tests: the scope checks (table-driven), the JSON batches (every
//! object that names a table names ours, family inet) and the reading of
//! nft's listing back into forwards and rate limits. No nft runs here; see
//! `live_tests`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde_json::{Value, json};

use super::ruleset::{
    Batch, Direction, Forward, LiveTable, Police, Proto, RateKey, RuleKey, parse_forward,
    parse_police,
};
use super::*;
use crate::caps::NoTrap;
use crate::plugin::bindings::Protocol;

const TABLE: &str = "openidcs_test";

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

pub(super) fn scope_of(name: &str, ports: std::ops::RangeInclusive<u16>) -> HostScope {
    HostScope {
        name: name.to_owned(),
        uri: "test:///default".to_owned(),
        storage_dir: String::new(),
        ports,
        vm_networks: vec![
            "10.231.0.0/24".parse().expect("literal"),
            "fd00:231::/64".parse().expect("literal"),
        ],
        public_addr: Some(v4(10, 232, 0, 1)),
        name_prefix: String::new(),
        allow_hostdev: false,
        images: String::new(),
        api_credential: Default::default(),
        tls_pin: None,
    }
}

/// A store of a test's own for its calls' rate limits, in a directory
/// removed with it.
pub(super) struct TestStore {
    pub store: Arc<Store>,
    _directory: tempfile::TempDir,
}

pub(super) fn test_store() -> TestStore {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&directory.path().join("db.sqlite")).expect("a store");
    TestStore {
        store: Arc::new(store),
        _directory: directory,
    }
}

impl TestStore {
    pub fn call(&self, service: Arc<NatService>, host: Option<Arc<HostScope>>) -> NatCall {
        NatCall::new(service, self.store.clone(), host)
    }
}

pub(super) fn forward(
    id: u64,
    protocol: Protocol,
    public_port: u16,
    target: &str,
    target_port: u16,
) -> PortForward {
    PortForward {
        id,
        protocol,
        public_port,
        target_addr: target.to_owned(),
        target_port,
    }
}

// ------------------------------------------------------------ scope checks

enum Expect {
    Ok,
    Denied(&'static str),
    Invalid(&'static str),
}

#[track_caller]
fn check(scope: &HostScope, public_port: u16, target: &str, target_port: u16, expected: Expect) {
    let answer = scope::checked(
        scope,
        &forward(1, Protocol::Tcp, public_port, target, target_port),
    );
    match (expected, answer) {
        (Expect::Ok, Ok(_)) => {}
        (Expect::Denied(part), Err(PluginError::Denied(message)))
        | (Expect::Invalid(part), Err(PluginError::Invalid(message))) => assert!(
            message.contains(part),
            "message {message:?} lacks {part:?} for {public_port} -> {target}:{target_port}"
        ),
        (_, answer) => {
            panic!("unexpected answer {answer:?} for {public_port} -> {target}:{target_port}")
        }
    }
}

#[test]
fn scope_rules() {
    use Expect::{Denied, Invalid, Ok};
    let host = scope_of("h1", 20000..=20999);
    #[allow(clippy::reversed_empty_ranges)]
    let closed = scope_of("h1", 20000..=19999);
    let bad_name = scope_of("h:1", 20000..=20999);
    let v6_only = HostScope {
        vm_networks: vec!["fd00:231::/64".parse().expect("literal")],
        ..scope_of("h1", 20000..=20999)
    };
    let whole_world = HostScope {
        vm_networks: vec!["0.0.0.0/0".parse().expect("literal")],
        ..scope_of("h1", 20000..=20999)
    };

    check(&host, 20022, "10.231.0.2", 22, Ok);
    // Public port: the range's ends are in, the rest is denied, 0 is no port.
    check(&host, 20000, "10.231.0.2", 22, Ok);
    check(&host, 20999, "10.231.0.2", 22, Ok);
    check(
        &host,
        19999,
        "10.231.0.2",
        22,
        Denied("19999 is outside the host's range 20000-20999"),
    );
    check(
        &host,
        65535,
        "10.231.0.2",
        22,
        Denied("65535 is outside the host's range 20000-20999"),
    );
    check(&host, 22, "10.231.0.2", 22, Denied("port 22 is outside"));
    check(&host, 0, "10.231.0.2", 22, Invalid("public port 0"));
    check(
        &closed,
        20000,
        "10.231.0.2",
        22,
        Denied("no public port range"),
    );
    check(
        &closed,
        19999,
        "10.231.0.2",
        22,
        Denied("no public port range"),
    );
    // Target port.
    check(&host, 20022, "10.231.0.2", 0, Invalid("target port 0"));
    check(&host, 20022, "10.231.0.2", 65535, Ok);
    check(&host, 20022, "10.231.0.2", 1, Ok);
    // Target address: only VMs.
    check(&host, 20022, "10.231.0.254", 22, Ok);
    check(
        &host,
        20022,
        "10.232.0.1",
        22,
        Denied("outside the host's VM networks"),
    );
    check(
        &host,
        20022,
        "10.231.1.2",
        22,
        Denied("outside the host's VM networks"),
    );
    check(
        &host,
        20022,
        "192.168.1.1",
        22,
        Denied("10.231.0.0/24, fd00:231::/64"),
    );
    check(&host, 20022, "127.0.0.1", 22, Denied("not a VM's address"));
    check(&host, 20022, "0.0.0.0", 22, Denied("not a VM's address"));
    check(&host, 20022, "224.0.0.1", 22, Denied("not a VM's address"));
    check(
        &host,
        20022,
        "10.231.0.0",
        22,
        Denied("network or broadcast"),
    );
    check(
        &host,
        20022,
        "10.231.0.255",
        22,
        Denied("network or broadcast"),
    );
    check(&host, 20022, "", 22, Invalid("target address is empty"));
    check(
        &host,
        20022,
        "vm1.example",
        22,
        Invalid("not an IP address"),
    );
    check(
        &host,
        20022,
        "10.231.0.2:22",
        22,
        Invalid("not an IP address"),
    );
    check(
        &host,
        20022,
        " 10.231.0.2",
        22,
        Invalid("not an IP address"),
    );
    // IPv6 targets in an IPv6 network; mapped IPv4 is not the IPv4 network.
    check(&host, 20022, "fd00:231::2", 22, Ok);
    check(&host, 20022, "fd00:231:0:0:ffff::2", 22, Ok);
    check(
        &host,
        20022,
        "fd00:232::2",
        22,
        Denied("outside the host's VM networks"),
    );
    check(&host, 20022, "::1", 22, Denied("not a VM's address"));
    check(&host, 20022, "::ffff:10.231.0.2", 22, Denied("outside"));
    check(&v6_only, 20022, "10.231.0.2", 22, Denied("outside"));
    check(&v6_only, 20022, "fd00:231::2", 22, Ok);
    // A /0 "VM network" is no network: it would include the host itself.
    check(&whole_world, 20022, "10.231.0.2", 22, Denied("outside"));
    // The host name tags rules: a ':' would forge another host's tag.
    check(&bad_name, 20022, "10.231.0.2", 22, Invalid("cannot tag"));
}

#[test]
fn listening_address_follows_the_target_family() {
    let host = scope_of("h1", 20000..=20999);
    let (_, forward4) =
        scope::checked(&host, &forward(1, Protocol::Udp, 20053, "10.231.0.2", 53)).expect("ok");
    assert_eq!(forward4.public_addr, Some(v4(10, 232, 0, 1)));
    assert_eq!(forward4.protocol, Proto::Udp);
    let (key, forward6) =
        scope::checked(&host, &forward(7, Protocol::Tcp, 20022, "fd00:231::2", 22)).expect("ok");
    assert_eq!(
        forward6.public_addr, None,
        "an IPv4 public address cannot match IPv6"
    );
    assert_eq!(key.comment(), "openidcs:h1:7");
}

// ------------------------------------------------------------ rule keys

#[test]
fn rule_keys_parse_back() {
    let key = RuleKey {
        host: "node-1.dc_2".to_owned(),
        id: u64::MAX,
    };
    assert_eq!(RuleKey::parse(&key.comment()), Some(key));
    for other in [
        "openidcs:established",
        "openidcs::5",
        "openidcs:h1:",
        "openidcs:h1:+5",
        "openidcs:h1:5x",
        "openidcs:h 1:5",
        "openidcs:h1:99999999999999999999999",
        "other:h1:5",
        "",
    ] {
        assert_eq!(RuleKey::parse(other), None, "{other:?}");
    }
}

// ------------------------------------------------------------ batches

fn keyed(host: &str, id: u64, protocol: Proto, port: u16, target: &str) -> (RuleKey, Forward) {
    let target: IpAddr = target.parse().expect("literal");
    (
        RuleKey {
            host: host.to_owned(),
            id,
        },
        Forward {
            protocol,
            public_port: port,
            public_addr: target.is_ipv4().then(|| v4(10, 232, 0, 1)),
            target,
            target_port: 22,
        },
    )
}

/// Every JSON object in `value` that names a table names `table`, family
/// inet: objects with a `"table"` string (chains, rules) and the objects
/// under a `"table"` key (the table itself).
fn assert_only_our_table(value: &Value, table: &str, path: &str) {
    match value {
        Value::Object(object) => {
            match object.get("table") {
                Some(Value::String(name)) => {
                    assert_eq!(name, table, "{path} names another table");
                    assert_eq!(object.get("family"), Some(&json!("inet")), "{path}: family");
                }
                Some(Value::Object(inner)) => {
                    assert_eq!(
                        inner.get("name"),
                        Some(&json!(table)),
                        "{path} names another table"
                    );
                    assert_eq!(inner.get("family"), Some(&json!("inet")), "{path}: family");
                }
                Some(other) => panic!("{path}: odd table {other}"),
                None => {}
            }
            for (name, inner) in object {
                assert_ne!(name, "flush", "{path}: no flush of anything");
                assert_ne!(name, "ruleset", "{path}: never the whole ruleset");
                assert_only_our_table(inner, table, &format!("{path}.{name}"));
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                assert_only_our_table(item, table, &format!("{path}[{index}]"));
            }
        }
        _ => {}
    }
}

/// Every command of a batch: exactly one verb holding exactly one object
/// of our table.
fn assert_batch_shape(batch: &Value, table: &str) {
    assert_only_our_table(batch, table, "batch");
    let commands = batch["nftables"].as_array().expect("a command list");
    assert!(!commands.is_empty());
    for command in commands {
        let command = command.as_object().expect("a command object");
        assert_eq!(command.len(), 1, "one verb per command: {command:?}");
        let (verb, object) = command.iter().next().expect("one verb");
        assert!(["add", "delete"].contains(&verb.as_str()), "verb {verb}");
        let object = object.as_object().expect("an object");
        assert_eq!(object.len(), 1, "one object per command: {object:?}");
        let (kind, body) = object.iter().next().expect("one object");
        assert!(
            ["table", "chain", "rule"].contains(&kind.as_str()),
            "kind {kind}"
        );
        assert_eq!(body["family"], json!("inet"));
        let named = if kind == "table" {
            &body["name"]
        } else {
            &body["table"]
        };
        assert_eq!(named, &json!(table), "{verb} {kind}");
    }
}

#[test]
fn batches_name_only_our_table() {
    let wanted = vec![
        keyed("h1", 1, Proto::Tcp, 20022, "10.231.0.2"),
        keyed("h1", 2, Proto::Udp, 20053, "10.231.0.3"),
        keyed("h2", 3, Proto::Tcp, 20080, "fd00:231::2"),
    ];
    let reconcile = reconcile_batch(TABLE, &wanted, &[]).to_json();
    assert_batch_shape(&reconcile, TABLE);
    // add table, delete table, add table, 5 chains, established, 4 per forward.
    assert_eq!(
        reconcile["nftables"].as_array().map(Vec::len),
        Some(3 + 5 + 1 + 12)
    );

    let mut add = Batch::new(TABLE);
    add.ensure_table();
    add.add_established();
    add.delete_rule("prerouting", 7);
    add.add_forward(&wanted[0].0, &wanted[0].1);
    assert_batch_shape(&add.to_json(), TABLE);

    let mut remove = Batch::new(TABLE);
    remove.delete_rule("forward", 9);
    assert_batch_shape(&remove.to_json(), TABLE);
}

#[test]
fn forward_rules_are_exactly_these() {
    let (key, forward) = keyed("h1", 5, Proto::Tcp, 20022, "10.231.0.2");
    let mut batch = Batch::new(TABLE);
    batch.add_forward(&key, &forward);
    let rule = |chain: &str, expr: Value| {
        json!({ "add": { "rule": {
            "family": "inet", "table": TABLE, "chain": chain,
            "comment": "openidcs:h1:5", "expr": expr,
        } } })
    };
    let translate = json!([
        { "match": { "op": "==", "left": { "payload": { "protocol": "ip", "field": "daddr" } }, "right": "10.232.0.1" } },
        { "match": { "op": "==", "left": { "payload": { "protocol": "tcp", "field": "dport" } }, "right": 20022 } },
        { "dnat": { "family": "ip", "addr": "10.231.0.2", "port": 22 } },
    ]);
    let to_target = |verdict: Value| {
        json!([
            { "match": { "op": "==", "left": { "payload": { "protocol": "ip", "field": "daddr" } }, "right": "10.231.0.2" } },
            { "match": { "op": "==", "left": { "payload": { "protocol": "tcp", "field": "dport" } }, "right": 22 } },
            { "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } },
            verdict,
        ])
    };
    assert_eq!(
        batch.to_json(),
        json!({ "nftables": [
            rule("prerouting", translate.clone()),
            rule("output", translate),
            rule("postrouting", to_target(json!({ "masquerade": null }))),
            rule("forward", to_target(json!({ "accept": null }))),
        ] })
    );

    // IPv6, no public address of that family: any local address, dnat ip6.
    let (key, forward) = keyed("h1", 6, Proto::Udp, 20053, "fd00:231::2");
    let mut batch = Batch::new(TABLE);
    batch.add_forward(&key, &forward);
    let json = batch.to_json();
    let prerouting = &json["nftables"][0]["add"]["rule"]["expr"];
    assert_eq!(
        prerouting[0],
        json!({ "match": { "op": "==", "left": { "fib": { "result": "type", "flags": ["daddr"] } }, "right": "local" } })
    );
    assert_eq!(
        prerouting[2],
        json!({ "dnat": { "family": "ip6", "addr": "fd00:231::2", "port": 22 } })
    );
    assert_eq!(
        json["nftables"][3]["add"]["rule"]["expr"][0]["match"]["left"]["payload"]["protocol"],
        json!("ip6")
    );
}

// ------------------------------------------------------------ reading back

/// A listing as nft prints it: our batch's rules with handles added.
fn listing_of(batch: &Batch<'_>, table: &str) -> Value {
    let mut objects = vec![json!({ "metainfo": { "json_schema_version": 1 } })];
    for (handle, command) in batch.to_json()["nftables"]
        .as_array()
        .expect("commands")
        .iter()
        .enumerate()
    {
        let Some(object) = command.get("add") else {
            continue;
        };
        let mut object = object.clone();
        if let Some(rule) = object.get_mut("rule") {
            rule["handle"] = json!(handle);
            rule["table"] = json!(table);
        }
        objects.push(object);
    }
    json!({ "nftables": objects })
}

#[test]
fn listing_parses_back_to_what_was_written() {
    let wanted = vec![
        keyed("h1", 1, Proto::Tcp, 20022, "10.231.0.2"),
        keyed("h1", 2, Proto::Udp, 20053, "fd00:231::2"),
        keyed("h2", 3, Proto::Tcp, 20080, "10.231.0.3"),
    ];
    let batch = reconcile_batch(TABLE, &wanted, &[]);
    let live = LiveTable::parse(&listing_of(&batch, TABLE), TABLE).expect("parses");
    let forwards: Vec<(RuleKey, Forward)> = live
        .forwards()
        .map(|(key, forward)| (key.expect("tagged").clone(), forward.clone()))
        .collect();
    assert_eq!(forwards, wanted);
    assert!(live.has_established());
    assert_eq!(live.strays(), 0);
    assert_eq!(live.rules_of(&wanted[0].0).count(), 4);
    assert_eq!(live.keys().len(), 3);
    // Rules of another table in the listing are not ours.
    let other = LiveTable::parse(&listing_of(&batch, "other"), TABLE).expect("parses");
    assert!(other.rules.is_empty());
}

#[test]
fn nft_spellings_are_compared_by_meaning() {
    let expected = Forward {
        protocol: Proto::Tcp,
        public_port: 20022,
        public_addr: Some(v4(10, 232, 0, 1)),
        target: v4(10, 231, 0, 2),
        target_port: 22,
    };
    let daddr = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "ip", "field": "daddr" } }, "right": "10.232.0.1" } });
    let dport = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "tcp", "field": "dport" } }, "right": 20022 } });
    let l4proto = json!({ "match": { "op": "==", "left": { "meta": { "key": "l4proto" } }, "right": "tcp" } });
    let th_dport = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "th", "field": "dport" } }, "right": 20022 } });
    let dnat = json!({ "dnat": { "family": "ip", "addr": "10.231.0.2", "port": 22 } });
    let counter = json!({ "counter": { "packets": 3, "bytes": 180 } });
    let udp_dport = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "udp", "field": "dport" } }, "right": 20022 } });
    let masquerade = json!({ "masquerade": null });
    let v6_dnat = json!({ "dnat": { "family": "ip6", "addr": "fd00:231:0::2", "port": 22 } });

    let cases: Vec<(Vec<Value>, Option<Forward>)> = vec![
        (
            vec![daddr.clone(), dport.clone(), dnat.clone()],
            Some(expected.clone()),
        ),
        (
            vec![daddr.clone(), l4proto.clone(), dport.clone(), dnat.clone()],
            Some(expected.clone()),
        ),
        (
            vec![
                daddr.clone(),
                l4proto.clone(),
                th_dport,
                counter.clone(),
                dnat.clone(),
            ],
            Some(expected.clone()),
        ),
        (
            vec![counter, daddr.clone(), dport.clone(), dnat.clone()],
            Some(expected.clone()),
        ),
        // Not our shape: disagreeing protocols, no DNAT, another verdict,
        // two address matches missing, an IPv4 address with an IPv6 target.
        (vec![daddr.clone(), l4proto, udp_dport, dnat.clone()], None),
        (vec![daddr.clone(), dport.clone()], None),
        (vec![daddr.clone(), dport.clone(), masquerade], None),
        (vec![dport.clone(), dnat.clone()], None),
        (vec![daddr, dport, v6_dnat], None),
    ];
    for (expr, expected) in cases {
        assert_eq!(parse_forward(&expr), expected, "{expr:?}");
    }
}

// ------------------------------------------------------------ rate limits

pub(super) fn rate_limit(vm: &str, addresses: &[&str], up: u64, down: u64) -> RateLimit {
    RateLimit {
        vm_uuid: vm.to_owned(),
        addresses: addresses.iter().map(|addr| (*addr).to_owned()).collect(),
        upload_kbps: up,
        download_kbps: down,
    }
}

#[test]
fn rate_limit_scope_rules() {
    let scope = scope_of("h1", 20000..=20999);
    let check = |limit: RateLimit| scope::checked_rate_limit(&scope, &limit);

    // 10 Mbit/s up, 20 down, two families: four rules, 1 250 000 B/s up.
    let (key, rules) = check(rate_limit(
        "vm1",
        &["10.231.0.2", "fd00:231::2", "10.231.0.3"],
        10_000,
        20_000,
    ))
    .expect("in scope");
    assert_eq!(key.comment(), "openidcs:rate:h1:vm1");
    assert_eq!(rules.len(), 4);
    let up_v4 = &rules[0];
    assert_eq!(up_v4.direction, Direction::FromVm);
    assert_eq!(up_v4.bytes_per_second, 1_250_000);
    assert_eq!(
        up_v4
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.231.0.2", "10.231.0.3"]
    );
    assert_eq!(rules[2].direction, Direction::ToVm);
    assert_eq!(rules[2].bytes_per_second, 2_500_000);
    // Only one way limited: only that way's rules.
    let (_, rules) = check(rate_limit("vm1", &["10.231.0.2"], 0, 1_000)).expect("in scope");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].direction, Direction::ToVm);

    let refusals: Vec<(RateLimit, &str)> = vec![
        (
            rate_limit("vm1", &["10.232.0.9"], 1_000, 0),
            "outside the host's VM networks",
        ),
        (rate_limit("vm1", &["10.231.0.255"], 1_000, 0), "broadcast"),
        (
            rate_limit("vm1", &["127.0.0.1"], 1_000, 0),
            "not a VM's address",
        ),
        (rate_limit("vm1", &["no"], 1_000, 0), "not an IP address"),
        (rate_limit("vm1", &[], 1_000, 0), "names no address"),
        (rate_limit("vm1", &["10.231.0.2"], 0, 0), "limits nothing"),
        (
            rate_limit("vm1", &["10.231.0.2"], 100_000_001, 0),
            "upload-kbps",
        ),
        (rate_limit("a:b", &["10.231.0.2"], 1_000, 0), "cannot tag"),
        (
            rate_limit(&"v".repeat(65), &["10.231.0.2"], 1_000, 0),
            "cannot tag",
        ),
    ];
    for (limit, expected) in refusals {
        let vm = limit.vm_uuid.clone();
        match check(limit) {
            Err(PluginError::Denied(message) | PluginError::Invalid(message)) => {
                assert!(message.contains(expected), "{vm}: {message}")
            }
            other => panic!("{vm}: expected a refusal with {expected:?}: {other:?}"),
        }
    }
    // Names that fit alone but not together in nft's 128-byte comment.
    let long_host = scope_of(&"h".repeat(64), 20000..=20999);
    assert!(matches!(
        scope::checked_rate_limit(&long_host, &rate_limit(&"v".repeat(64), &["10.231.0.2"], 1, 0)),
        Err(PluginError::Invalid(message)) if message.contains("too long together")
    ));
}

#[test]
fn rate_limits_parse_back_and_come_back_with_a_reconcile() {
    let scope = scope_of("h1", 20000..=20999);
    let (key, rules) = scope::checked_rate_limit(
        &scope,
        &rate_limit("vm1", &["10.231.0.2", "fd00:231::2"], 10_000, 1_000),
    )
    .expect("in scope");
    let mut batch = Batch::new(TABLE);
    batch.ensure_table();
    batch.add_police(&key, &rules);
    assert_batch_shape(&batch.to_json(), TABLE);
    let live = LiveTable::parse(&listing_of(&batch, TABLE), TABLE).expect("parses");
    let parsed: Vec<&(RateKey, Police)> = live.police().collect();
    assert_eq!(parsed.len(), 4);
    assert!(parsed.iter().all(|(parsed_key, _)| *parsed_key == key));
    assert_eq!(
        parsed
            .iter()
            .map(|(_, police)| police.clone())
            .collect::<Vec<_>>(),
        rules
    );
    assert_eq!(live.rate_rules_of(&key).count(), 4);
    assert_eq!(live.strays(), 0, "a rate limit's rules are not strays");
    assert!(live.forwards().next().is_none(), "and not forwards");

    // A reconcile writes them, beside the forwards.
    let forwards = vec![keyed("h1", 1, Proto::Tcp, 20022, "10.231.0.2")];
    let reconciled = reconcile_batch(TABLE, &forwards, &[(key, rules)]);
    assert_batch_shape(&reconciled.to_json(), TABLE);
    let again = LiveTable::parse(&listing_of(&reconciled, TABLE), TABLE).expect("parses");
    assert_eq!(again.police().count(), 4);
    assert_eq!(again.forwards().count(), 1);
}

#[test]
fn police_rules_are_read_by_meaning() {
    let set = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "ip", "field": "saddr" } },
        "right": { "set": ["10.231.0.2", "10.231.0.3"] } } });
    let one_v6 = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "ip6", "field": "daddr" } },
        "right": "fd00:231::2" } });
    let wrong_family = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "ip6", "field": "daddr" } },
        "right": "10.231.0.2" } });
    // As nft lists `limit rate over 1 mbytes/second burst 64 kbytes`.
    let limit = json!({ "limit": { "rate": 1, "burst": 64, "per": "second", "inv": true,
        "rate_unit": "mbytes", "burst_unit": "kbytes" } });
    let under = json!({ "limit": { "rate": 1, "burst": 64, "per": "second",
        "rate_unit": "mbytes", "burst_unit": "kbytes" } });
    let per_minute = json!({ "limit": { "rate": 1, "burst": 64, "per": "minute", "inv": true,
        "rate_unit": "mbytes", "burst_unit": "kbytes" } });
    let counter = json!({ "counter": { "packets": 12, "bytes": 9000 } });
    let drop = json!({ "drop": null });
    let accept = json!({ "accept": null });

    let police = parse_police(&[set.clone(), limit.clone(), counter.clone(), drop.clone()])
        .expect("our shape");
    assert_eq!(police.direction, Direction::FromVm);
    assert_eq!(police.addrs.len(), 2);
    assert_eq!(police.bytes_per_second, 1024 * 1024);
    assert_eq!(police.burst_bytes, 64 * 1024);
    let police = parse_police(&[one_v6, limit.clone(), drop.clone()]).expect("our shape");
    assert_eq!(police.direction, Direction::ToVm);

    for expr in [
        vec![set.clone(), limit.clone(), accept],
        vec![set.clone(), under, drop.clone()],
        vec![set.clone(), per_minute, drop.clone()],
        vec![wrong_family, limit.clone(), drop.clone()],
        vec![limit, counter, drop],
    ] {
        assert_eq!(parse_police(&expr), None, "{expr:?}");
    }
}

// ------------------------------------------------------------ service without nft

#[tokio::test]
async fn unconfigured_service_answers_unsupported_and_runs_nothing() {
    let db = test_store();
    let service = Arc::new(NatService::new(None));
    assert!(!service.is_configured());
    let mut call = db.call(
        service.clone(),
        Some(Arc::new(scope_of("h1", 20000..=20999))),
    );
    let unsupported = |answer: Result<(), PluginError>| matches!(answer, Err(PluginError::Unsupported(message)) if message.contains("[nat] section"));
    let add = call
        .add_rule(forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22))
        .await
        .no_trap();
    assert!(unsupported(add));
    assert!(unsupported(call.remove_rule(1).await.no_trap()));
    assert!(unsupported(call.list_rules().await.no_trap().map(drop)));
    // Not even the host check comes first.
    let mut hostless = db.call(service.clone(), None);
    assert!(unsupported(hostless.remove_rule(1).await.no_trap()));

    assert_eq!(
        service
            .reconcile(Vec::new(), Vec::new())
            .await
            .expect("nothing to do"),
        ReconcileReport::default()
    );
    let one = vec![(
        Arc::new(scope_of("h1", 20000..=20999)),
        forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22),
    )];
    assert!(matches!(
        service.reconcile(one, Vec::new()).await,
        Err(NatError::NotConfigured)
    ));
}

#[tokio::test]
async fn unusable_config_fails_every_call() {
    let db = test_store();
    for (command, table, part) in [
        (vec![], "openidcs", "nft_command is empty"),
        (vec!["nft"], "1abc", "not a valid nftables table name"),
        (vec!["nft"], "a b", "not a valid nftables table name"),
        (vec!["nft"], "", "not a valid nftables table name"),
    ] {
        let service = Arc::new(NatService::new(Some(NatConfig {
            table: table.to_owned(),
            nft_command: command.into_iter().map(str::to_owned).collect(),
        })));
        let mut call = db.call(
            service.clone(),
            Some(Arc::new(scope_of("h1", 20000..=20999))),
        );
        match call.list_rules().await.no_trap() {
            Err(PluginError::Failed(message)) => assert!(message.contains(part), "{message}"),
            answer => panic!("unexpected {answer:?}"),
        }
        assert!(matches!(
            service.reconcile(Vec::new(), Vec::new()).await,
            Err(NatError::Config(_))
        ));
    }
}

#[tokio::test]
async fn refusals_come_before_nft_runs() {
    let db = test_store();
    // A program that cannot run: any nft call would fail with "could not run".
    let service = Arc::new(NatService::new(Some(NatConfig {
        table: "openidcs".to_owned(),
        nft_command: vec!["/nonexistent/nft".to_owned()],
    })));
    let mut hostless = db.call(service.clone(), None);
    assert!(matches!(
        hostless.add_rule(forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22)).await.no_trap(),
        Err(PluginError::Denied(message)) if message.contains("not for a host")
    ));
    let mut call = db.call(
        service.clone(),
        Some(Arc::new(scope_of("h1", 20000..=20999))),
    );
    assert!(matches!(
        call.add_rule(forward(1, Protocol::Tcp, 80, "10.231.0.2", 22))
            .await
            .no_trap(),
        Err(PluginError::Denied(_))
    ));
    assert!(matches!(
        call.add_rule(forward(1, Protocol::Tcp, 20022, "10.232.0.1", 22))
            .await
            .no_trap(),
        Err(PluginError::Denied(_))
    ));
    // In scope, so nft runs, and its failure names the command.
    match call.list_rules().await.no_trap() {
        Err(PluginError::Failed(message)) => {
            assert!(
                message.contains("/nonexistent/nft -j list table inet openidcs"),
                "{message}"
            );
        }
        answer => panic!("unexpected {answer:?}"),
    }
    // A reconcile skips what is out of scope before it runs nft.
    let scope = Arc::new(scope_of("h1", 20000..=20999));
    let answer = service
        .reconcile(
            vec![(
                scope.clone(),
                forward(4, Protocol::Tcp, 80, "10.231.0.2", 22),
            )],
            Vec::new(),
        )
        .await;
    assert!(matches!(answer, Err(NatError::Spawn { .. })), "{answer:?}");
}

#[test]
fn reconcile_skips_out_of_scope_duplicates_and_overlaps() {
    let h1 = Arc::new(scope_of("h1", 20000..=20999));
    let h2 = Arc::new(HostScope {
        public_addr: Some(v4(10, 232, 0, 9)),
        ..scope_of("h2", 20000..=20999)
    });
    let list = vec![
        (
            h1.clone(),
            forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22),
        ),
        (h1.clone(), forward(2, Protocol::Tcp, 80, "10.231.0.2", 22)),
        (
            h1.clone(),
            forward(1, Protocol::Tcp, 20023, "10.231.0.2", 22),
        ),
        (
            h1.clone(),
            forward(3, Protocol::Tcp, 20022, "10.231.0.3", 22),
        ),
        // Same port, other protocol; other host on another public address.
        (
            h1.clone(),
            forward(4, Protocol::Udp, 20022, "10.231.0.3", 22),
        ),
        (
            h2.clone(),
            forward(5, Protocol::Tcp, 20022, "10.231.0.4", 22),
        ),
        // Same port, other family.
        (
            h1.clone(),
            forward(6, Protocol::Tcp, 20022, "fd00:231::2", 22),
        ),
    ];
    let mut skipped = Vec::new();
    let wanted = wanted_forwards(&list, &mut skipped);
    let ids: Vec<u64> = wanted.iter().map(|(key, _)| key.id).collect();
    assert_eq!(ids, [1, 4, 5, 6]);
    let skipped_ids: Vec<u64> = skipped.iter().map(|(id, _)| *id).collect();
    assert_eq!(skipped_ids, [2, 1, 3], "{skipped:?}");
    assert!(
        skipped[0].1.starts_with("denied: public port 80"),
        "{skipped:?}"
    );
    assert!(skipped[1].1.contains("listed twice"), "{skipped:?}");
    assert!(
        skipped[2]
            .1
            .contains("already forwarded by forward 1 of host h1"),
        "{skipped:?}"
    );
}
