//! The nftables side of port forwarding and rate limits: the JSON batches
//! this capability writes (`nft -j -f -`) and the reading of `nft -j list
//! table` back into forwards and rate limits.
//!
//! Every object a batch names is in family `inet` and in the one table the
//! [`Batch`] was made for; there is no way to build a command for another
//! table here. Reading compares rules by meaning (protocol, ports, addresses)
//! rather than text, because nft normalises what it lists (it folds a
//! `meta l4proto tcp` into `tcp dport`, prints addresses in canonical form).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::model::rules;

/// The only family this capability ever names.
pub(super) const FAMILY: &str = "inet";
/// Every rule this capability writes carries a comment starting with this.
const COMMENT_PREFIX: &str = "openidcs:";
/// The comment of the one shared rule (not a forward) in the forward chain.
pub(super) const ESTABLISHED_COMMENT: &str = "openidcs:established";

/// One base chain of the table.
pub(super) struct ChainSpec {
    pub name: &'static str,
    kind: &'static str,
    hook: &'static str,
    priority: i32,
}

pub(super) const PREROUTING: &str = "prerouting";
pub(super) const FORWARD: &str = "forward";
pub(super) const POLICE: &str = "police";

/// The chains the capability creates, in the order it creates them.
pub(super) const CHAINS: [ChainSpec; 5] = [
    // dstnat: traffic arriving from outside to a public port.
    ChainSpec {
        name: PREROUTING,
        kind: "nat",
        hook: "prerouting",
        priority: -100,
    },
    // The same DNAT for connections the server itself opens to its public
    // address (prerouting never sees locally originated packets).
    ChainSpec {
        name: "output",
        kind: "nat",
        hook: "output",
        priority: -100,
    },
    // srcnat: masquerade forwarded flows so the VM answers through us even
    // when its own route back to the client is missing or goes elsewhere.
    ChainSpec {
        name: "postrouting",
        kind: "nat",
        hook: "postrouting",
        priority: 100,
    },
    // filter: says which forwarded flows this capability means to let
    // through (policy accept, so it never blocks anything by itself).
    ChainSpec {
        name: FORWARD,
        kind: "filter",
        hook: "forward",
        priority: 0,
    },
    // filter: the VMs' rate limits, before anything accepts (a drop in any
    // base chain is final; an accept is not).
    ChainSpec {
        name: POLICE,
        kind: "filter",
        hook: "forward",
        priority: -10,
    },
];

/// Transport protocol of a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    fn parse(name: &str) -> Option<Proto> {
        match name {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// Which forward a rule belongs to: the host's name and the core's id,
/// written as the rule comment `openidcs:<host>:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct RuleKey {
    /// Already checked to be `[A-Za-z0-9_.-]{1,64}` (no `:`), so the comment
    /// parses back to exactly this key.
    pub host: String,
    pub id: u64,
}

impl RuleKey {
    pub fn comment(&self) -> String {
        format!("{COMMENT_PREFIX}{}:{}", self.host, self.id)
    }

    /// The key a comment names; `None` for anything else (the shared rule,
    /// hand-written comments).
    pub fn parse(comment: &str) -> Option<RuleKey> {
        let rest = comment.strip_prefix(COMMENT_PREFIX)?;
        let (host, id) = rest.rsplit_once(':')?;
        // `u64::from_str` accepts a leading `+`; a key has one spelling only.
        if !rules::is_name(host) || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(RuleKey {
            host: host.to_owned(),
            id: id.parse().ok()?,
        })
    }
}

impl fmt::Display for RuleKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "forward {} of host {}", self.id, self.host)
    }
}

/// Which VM a rate limit belongs to, written as the rule comment
/// `openidcs:rate:<host>:<vm>` (never a forward's: `rate:<host>` is not a
/// host name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct RateKey {
    /// Both already checked to be `[A-Za-z0-9_.-]{1,64}`.
    pub host: String,
    pub vm: String,
}

const RATE_PREFIX: &str = "openidcs:rate:";

impl RateKey {
    pub fn comment(&self) -> String {
        format!("{RATE_PREFIX}{}:{}", self.host, self.vm)
    }

    pub fn parse(comment: &str) -> Option<RateKey> {
        let (host, vm) = comment.strip_prefix(RATE_PREFIX)?.split_once(':')?;
        (rules::is_name(host) && rules::is_name(vm)).then(|| RateKey {
            host: host.to_owned(),
            vm: vm.to_owned(),
        })
    }
}

/// Which way a rate limit polices a VM's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Direction {
    /// What the VM sends (`saddr`): its upload.
    FromVm,
    /// What is sent to the VM (`daddr`): its download.
    ToVm,
}

impl Direction {
    fn field(self) -> &'static str {
        match self {
            Direction::FromVm => "saddr",
            Direction::ToVm => "daddr",
        }
    }
}

/// One rule of a rate limit: packets of one family from (or to) the VM's
/// addresses beyond `bytes_per_second` are dropped. nft's byte limit is a
/// token bucket of one second of the rate plus `burst_bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Police {
    pub direction: Direction,
    /// One family, at least one address.
    pub addrs: BTreeSet<IpAddr>,
    pub bytes_per_second: u64,
    pub burst_bytes: u64,
}

impl Police {
    fn expr(&self) -> Vec<Value> {
        let family = self.addrs.first().map_or("ip", |addr| ip_family(*addr));
        let addrs: Vec<String> = self.addrs.iter().map(IpAddr::to_string).collect();
        let right = match addrs.as_slice() {
            [one] => json!(one),
            _ => json!({ "set": addrs }),
        };
        vec![
            eq_match(
                json!({ "payload": { "protocol": family, "field": self.direction.field() } }),
                right,
            ),
            json!({ "limit": {
                "rate": self.bytes_per_second, "per": "second", "rate_unit": "bytes",
                "burst": self.burst_bytes, "burst_unit": "bytes", "inv": true,
            } }),
            // How much the limit dropped, for the operator's `nft list`.
            json!({ "counter": null }),
            json!({ "drop": null }),
        ]
    }
}

/// A police rule as nft lists it, when it has exactly the shape
/// [`Police::expr`] writes (nft may print the rate in kbytes or mbytes).
pub(super) fn parse_police(expr: &[Value]) -> Option<Police> {
    let mut matched = None;
    let mut limit = None;
    let mut dropped = false;
    for statement in expr {
        if let Some(matching) = statement.get("match") {
            if matched.is_some() || matching.get("op").and_then(Value::as_str) != Some("==") {
                return None;
            }
            let payload = matching.get("left")?.get("payload")?;
            let family = payload.get("protocol").and_then(Value::as_str)?;
            let direction = match payload.get("field").and_then(Value::as_str)? {
                "saddr" => Direction::FromVm,
                "daddr" => Direction::ToVm,
                _ => return None,
            };
            let right = matching.get("right")?;
            let texts: Vec<&str> = match right.get("set") {
                Some(set) => set
                    .as_array()?
                    .iter()
                    .map(Value::as_str)
                    .collect::<Option<_>>()?,
                None => vec![right.as_str()?],
            };
            let addrs: BTreeSet<IpAddr> = texts
                .iter()
                .map(|text| text.parse().ok())
                .collect::<Option<_>>()?;
            if addrs.is_empty() || addrs.iter().any(|addr| ip_family(*addr) != family) {
                return None;
            }
            matched = Some((direction, addrs));
        } else if let Some(found) = statement.get("limit") {
            let bytes = |amount: &str, unit: &str| -> Option<u64> {
                let scale = match found.get(unit).and_then(Value::as_str)? {
                    "bytes" => 1,
                    "kbytes" => 1024,
                    "mbytes" => 1024 * 1024,
                    _ => return None,
                };
                found.get(amount)?.as_u64()?.checked_mul(scale)
            };
            if limit.is_some()
                || found.get("inv").and_then(Value::as_bool) != Some(true)
                || found.get("per").and_then(Value::as_str) != Some("second")
            {
                return None;
            }
            limit = Some((bytes("rate", "rate_unit")?, bytes("burst", "burst_unit")?));
        } else if statement.get("drop").is_some() {
            dropped = true;
        } else if statement.get("counter").is_none() {
            return None;
        }
    }
    let (direction, addrs) = matched?;
    let (bytes_per_second, burst_bytes) = limit?;
    dropped.then_some(Police {
        direction,
        addrs,
        bytes_per_second,
        burst_bytes,
    })
}

/// A checked forward: what its rules match and where they send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Forward {
    pub protocol: Proto,
    pub public_port: u16,
    /// The server's address the forward listens on; `None`: any local
    /// address of the server (`fib daddr type local`). Always of the
    /// target's family.
    pub public_addr: Option<IpAddr>,
    pub target: IpAddr,
    pub target_port: u16,
}

impl Forward {
    /// True when both would catch the same packets (the kernel would only
    /// ever use the first): same family, protocol and port, and listening
    /// addresses that meet.
    pub fn overlaps(&self, other: &Forward) -> bool {
        self.target.is_ipv4() == other.target.is_ipv4()
            && self.protocol == other.protocol
            && self.public_port == other.public_port
            && match (self.public_addr, other.public_addr) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }
}

/// `ip` or `ip6`: the payload protocol / NAT family of an address.
fn ip_family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "ip" } else { "ip6" }
}

fn eq_match(left: Value, right: Value) -> Value {
    json!({ "match": { "op": "==", "left": left, "right": right } })
}

fn daddr_is(addr: IpAddr) -> Value {
    eq_match(
        json!({ "payload": { "protocol": ip_family(addr), "field": "daddr" } }),
        json!(addr.to_string()),
    )
}

/// `fib daddr type local`: addressed to the server itself. Without it a
/// forward with no public address would also catch traffic merely routed
/// through the server (a VM reaching port 22 somewhere on the Internet).
fn daddr_is_local() -> Value {
    eq_match(
        json!({ "fib": { "result": "type", "flags": ["daddr"] } }),
        json!("local"),
    )
}

fn dport_is(protocol: Proto, port: u16) -> Value {
    eq_match(
        json!({ "payload": { "protocol": protocol.as_str(), "field": "dport" } }),
        json!(port),
    )
}

/// `ct status dnat`: only flows a DNAT rule translated.
fn was_dnatted() -> Value {
    json!({ "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } })
}

/// The statements of each chain's rule for one forward.
fn forward_rules(forward: &Forward) -> [(&'static str, Vec<Value>); 4] {
    let public_match = match forward.public_addr {
        Some(addr) => daddr_is(addr),
        None => daddr_is_local(),
    };
    let dnat = json!({ "dnat": {
        "family": ip_family(forward.target),
        "addr": forward.target.to_string(),
        "port": forward.target_port,
    } });
    let to_target = || {
        vec![
            daddr_is(forward.target),
            dport_is(forward.protocol, forward.target_port),
            was_dnatted(),
        ]
    };
    let mut masquerade = to_target();
    masquerade.push(json!({ "masquerade": null }));
    let mut accept = to_target();
    accept.push(json!({ "accept": null }));
    let translate = vec![
        public_match,
        dport_is(forward.protocol, forward.public_port),
        dnat,
    ];
    [
        (PREROUTING, translate.clone()),
        ("output", translate),
        ("postrouting", masquerade),
        (FORWARD, accept),
    ]
}

/// One atomic nft batch on one table.
pub(super) struct Batch<'t> {
    table: &'t str,
    commands: Vec<Value>,
}

impl<'t> Batch<'t> {
    pub fn new(table: &'t str) -> Batch<'t> {
        Batch {
            table,
            commands: Vec::new(),
        }
    }

    fn table_object(&self) -> Value {
        json!({ "table": { "family": FAMILY, "name": self.table } })
    }

    /// Create the table and its chains when missing (`add` of an existing
    /// table or identical chain changes nothing).
    pub fn ensure_table(&mut self) {
        self.commands.push(json!({ "add": self.table_object() }));
        self.add_chains();
    }

    /// Replace the whole table: `add` first so that the `delete` cannot fail
    /// on a missing table, then everything from scratch. nft applies the
    /// batch as one transaction, so no packet ever sees the table half-built.
    pub fn recreate_table(&mut self) {
        self.commands.push(json!({ "add": self.table_object() }));
        self.commands.push(json!({ "delete": self.table_object() }));
        self.commands.push(json!({ "add": self.table_object() }));
        self.add_chains();
    }

    fn add_chains(&mut self) {
        for chain in &CHAINS {
            self.commands.push(json!({ "add": { "chain": {
                "family": FAMILY,
                "table": self.table,
                "name": chain.name,
                "type": chain.kind,
                "hook": chain.hook,
                "prio": chain.priority,
                "policy": "accept",
            } } }));
        }
    }

    fn add_rule(&mut self, chain: &str, comment: &str, expr: Vec<Value>) {
        self.commands.push(json!({ "add": { "rule": {
            "family": FAMILY,
            "table": self.table,
            "chain": chain,
            "comment": comment,
            "expr": expr,
        } } }));
    }

    /// Replies and related packets (ICMP errors) of accepted flows.
    pub fn add_established(&mut self) {
        let expr = vec![
            json!({ "match": {
                "op": "in",
                "left": { "ct": { "key": "state" } },
                "right": ["established", "related"],
            } }),
            json!({ "accept": null }),
        ];
        self.add_rule(FORWARD, ESTABLISHED_COMMENT, expr);
    }

    /// The forward's rule in each of the four chains, all tagged with its key.
    pub fn add_forward(&mut self, key: &RuleKey, forward: &Forward) {
        let comment = key.comment();
        for (chain, expr) in forward_rules(forward) {
            self.add_rule(chain, &comment, expr);
        }
    }

    /// A VM's rate limit: one police rule each, tagged with its key.
    pub fn add_police(&mut self, key: &RateKey, rules: &[Police]) {
        let comment = key.comment();
        for rule in rules {
            self.add_rule(POLICE, &comment, rule.expr());
        }
    }

    pub fn delete_rule(&mut self, chain: &str, handle: u64) {
        self.commands.push(json!({ "delete": { "rule": {
            "family": FAMILY,
            "table": self.table,
            "chain": chain,
            "handle": handle,
        } } }));
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The document `nft -j -f -` reads.
    pub fn to_json(&self) -> Value {
        json!({ "nftables": self.commands })
    }
}

/// One rule of our table as nft lists it.
#[derive(Clone, Debug)]
pub(super) struct LiveRule {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
    /// The forward it belongs to, from its comment.
    pub key: Option<RuleKey>,
    /// What it does, for a prerouting rule of the forward's shape.
    pub forward: Option<Forward>,
    /// The rate limit it is part of, for a tagged police rule of our shape.
    pub police: Option<(RateKey, Police)>,
}

impl LiveRule {
    fn is_shared(&self) -> bool {
        self.chain == FORWARD && self.comment.as_deref() == Some(ESTABLISHED_COMMENT)
    }
}

/// Our table as nft lists it; empty when the table does not exist.
#[derive(Clone, Debug, Default)]
pub(super) struct LiveTable {
    pub rules: Vec<LiveRule>,
}

impl LiveTable {
    /// Parse `nft -j list table inet <table>`; only rules of that table count.
    pub fn parse(listing: &Value, table: &str) -> Result<LiveTable, String> {
        let objects = listing
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("no \"nftables\" array")?;
        let mut rules = Vec::new();
        for object in objects {
            let Some(rule) = object.get("rule") else {
                continue;
            };
            if rule.get("family").and_then(Value::as_str) != Some(FAMILY)
                || rule.get("table").and_then(Value::as_str) != Some(table)
            {
                continue;
            }
            let chain = rule
                .get("chain")
                .and_then(Value::as_str)
                .ok_or("a rule without a chain")?;
            let handle = rule
                .get("handle")
                .and_then(Value::as_u64)
                .ok_or("a rule without a handle")?;
            let comment = rule.get("comment").and_then(Value::as_str);
            let key = comment.and_then(RuleKey::parse);
            let expr = rule.get("expr").and_then(Value::as_array);
            let forward = match expr {
                Some(expr) if chain == PREROUTING => parse_forward(expr),
                _ => None,
            };
            let police = match (expr, comment.and_then(RateKey::parse)) {
                (Some(expr), Some(rate_key)) if chain == POLICE => {
                    parse_police(expr).map(|police| (rate_key, police))
                }
                _ => None,
            };
            rules.push(LiveRule {
                chain: chain.to_owned(),
                handle,
                comment: comment.map(str::to_owned),
                key,
                forward,
                police,
            });
        }
        Ok(LiveTable { rules })
    }

    /// Every rule tagged with this key, in any chain.
    pub fn rules_of<'a>(&'a self, key: &'a RuleKey) -> impl Iterator<Item = &'a LiveRule> + 'a {
        self.rules
            .iter()
            .filter(move |rule| rule.key.as_ref() == Some(key))
    }

    /// The forwards the prerouting chain does, with their key when tagged.
    pub fn forwards(&self) -> impl Iterator<Item = (Option<&RuleKey>, &Forward)> {
        self.rules.iter().filter_map(|rule| {
            rule.forward
                .as_ref()
                .map(|forward| (rule.key.as_ref(), forward))
        })
    }

    /// Every rule of this VM's rate limit, whatever its shape.
    pub fn rate_rules_of<'a>(
        &'a self,
        key: &'a RateKey,
    ) -> impl Iterator<Item = &'a LiveRule> + 'a {
        let comment = key.comment();
        self.rules
            .iter()
            .filter(move |rule| rule.chain == POLICE && rule.comment.as_deref() == Some(&comment))
    }

    /// The rate limits' rules of our shape, by key.
    pub fn police(&self) -> impl Iterator<Item = &(RateKey, Police)> {
        self.rules.iter().filter_map(|rule| rule.police.as_ref())
    }

    pub fn has_established(&self) -> bool {
        self.rules.iter().any(LiveRule::is_shared)
    }

    /// Every key with at least one rule.
    pub fn keys(&self) -> BTreeSet<&RuleKey> {
        self.rules
            .iter()
            .filter_map(|rule| rule.key.as_ref())
            .collect()
    }

    /// Rules that are neither a forward's, a rate limit's nor the shared
    /// one (written by hand or by someone else): a reconcile removes them.
    pub fn strays(&self) -> usize {
        self.rules
            .iter()
            .filter(|rule| rule.key.is_none() && rule.police.is_none() && !rule.is_shared())
            .count()
    }
}

/// What a prerouting rule forwards, when it has exactly the shape this
/// module writes (in any of nft's spellings); `None` for anything else.
pub(super) fn parse_forward(expr: &[Value]) -> Option<Forward> {
    let mut protocol = None;
    let mut public_port = None;
    let mut public_addr = None;
    let mut any_local = false;
    let mut target = None;
    for statement in expr {
        if let Some(matching) = statement.get("match") {
            if matching.get("op").and_then(Value::as_str).unwrap_or("==") != "==" {
                return None;
            }
            let left = matching.get("left")?;
            let right = matching.get("right")?;
            if let Some(payload) = left.get("payload") {
                let field = payload.get("field").and_then(Value::as_str)?;
                match (payload.get("protocol").and_then(Value::as_str)?, field) {
                    (name @ ("tcp" | "udp"), "dport") => {
                        protocol = Some(agree(protocol, Proto::parse(name)?)?);
                        public_port = Some(u16::try_from(right.as_u64()?).ok()?);
                    }
                    ("th", "dport") => public_port = Some(u16::try_from(right.as_u64()?).ok()?),
                    ("ip" | "ip6", "daddr") => public_addr = Some(right.as_str()?.parse().ok()?),
                    _ => return None,
                }
            } else if let Some(meta) = left.get("meta") {
                match meta.get("key").and_then(Value::as_str)? {
                    "l4proto" => {
                        protocol = Some(agree(protocol, Proto::parse(right.as_str()?)?)?);
                    }
                    // The family is implied by the addresses.
                    "nfproto" => {}
                    _ => return None,
                }
            } else if let Some(fib) = left.get("fib") {
                let flags = fib.get("flags")?;
                let daddr_only = flags.as_str() == Some("daddr")
                    || flags.as_array().is_some_and(|flags| {
                        flags.len() == 1 && flags[0].as_str() == Some("daddr")
                    });
                if fib.get("result").and_then(Value::as_str) != Some("type")
                    || !daddr_only
                    || right.as_str() != Some("local")
                {
                    return None;
                }
                any_local = true;
            } else {
                return None;
            }
        } else if let Some(dnat) = statement.get("dnat") {
            if target.is_some() {
                return None;
            }
            let addr: IpAddr = dnat.get("addr")?.as_str()?.parse().ok()?;
            let port = u16::try_from(dnat.get("port")?.as_u64()?).ok()?;
            target = Some((addr, port));
        } else if statement.get("counter").is_none() {
            // A counter changes nothing; any other statement is not ours.
            return None;
        }
    }
    let (target, target_port) = target?;
    // Our rules say exactly one of "this address" or "any local address".
    if any_local == public_addr.is_some() {
        return None;
    }
    if public_addr.is_some_and(|addr: IpAddr| addr.is_ipv4() != target.is_ipv4()) {
        return None;
    }
    Some(Forward {
        protocol: protocol?,
        public_port: public_port?,
        public_addr,
        target,
        target_port,
    })
}

/// The protocol two matches agree on; `None` when they disagree.
fn agree(known: Option<Proto>, found: Proto) -> Option<Proto> {
    match known {
        Some(known) if known != found => None,
        _ => Some(found),
    }
}
