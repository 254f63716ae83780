//! The Docker Engine API's JSON and the engine's WIT records, both ways.
//! Pure functions (no request), tested natively.

use openidcs_sdk::{
    Disk, Error, HostConfig, Nic, NicKind, PowerState, Result, VmCounters, VmInfo, VmSpec,
};
use serde_json::{Value, json};

/// Labels of the containers this engine makes.
pub const LABEL_VM: &str = "openidcs.vm";
pub const LABEL_OS: &str = "openidcs.os";
/// The NICs and disks asked for, as JSON (Docker cannot say which NIC name
/// or disk size a network or volume stands for).
pub const LABEL_NICS: &str = "openidcs.nics";
pub const LABEL_DISKS: &str = "openidcs.disks";
pub const LABEL_HDD: &str = "openidcs.hdd-mb";

const MIB: u64 = 1 << 20;
const NANO_CPUS: u64 = 1_000_000_000;

/// The state of a container (`State` of an inspect).
pub fn power(state: &Value) -> PowerState {
    if state["Paused"].as_bool() == Some(true) {
        return PowerState::Paused;
    }
    match state["Status"].as_str().unwrap_or_default() {
        "running" | "restarting" => PowerState::Running,
        "paused" => PowerState::Paused,
        "created" | "exited" => PowerState::Stopped,
        "removing" => PowerState::Stopping,
        "dead" => PowerState::Crashed,
        _ => PowerState::Unknown,
    }
}

/// The network a NIC of `kind` joins: the host's `network_nat` or
/// `network_pub` (names of Docker networks).
pub fn network_of(host: &HostConfig, kind: NicKind) -> Result<&str> {
    let (network, field) = match kind {
        NicKind::Nat => (host.network_nat.as_str(), "network_nat"),
        NicKind::Pub => (host.network_pub.as_str(), "network_pub"),
    };
    if network.is_empty() {
        return Err(Error::Invalid(format!(
            "the host has no Docker network for this NIC ({field} is empty)"
        )));
    }
    Ok(network)
}

/// The name of a data disk's volume: kept across reinstalls, removed with
/// the VM.
pub fn volume_name(vm_uuid: &str, disk: &str) -> String {
    format!("openidcs-{vm_uuid}-{disk}")
}

/// The body of `POST /containers/create` for `spec` from `image`. The first
/// NIC's network is joined at create (the API takes one); the others are
/// connected after.
pub fn create_body(host: &HostConfig, spec: &VmSpec, image: &str, hostname: &str) -> Result<Value> {
    let mut labels = serde_json::Map::new();
    labels.insert(LABEL_VM.to_owned(), json!(spec.vm_uuid));
    labels.insert(LABEL_OS.to_owned(), json!(spec.os_name));
    labels.insert(
        LABEL_NICS.to_owned(),
        json!(nics_json(&spec.nics).to_string()),
    );
    labels.insert(
        LABEL_DISKS.to_owned(),
        json!(disks_json(&spec.disks).to_string()),
    );
    labels.insert(LABEL_HDD.to_owned(), json!(spec.hdd_mb.to_string()));
    let mounts: Vec<Value> = spec
        .disks
        .iter()
        .map(|disk| {
            json!({
                "Type": "volume",
                "Source": volume_name(&spec.vm_uuid, &disk.name),
                "Target": format!("/data/{}", disk.name),
            })
        })
        .collect();
    let mut body = json!({
        "Image": image,
        "Hostname": hostname,
        "Labels": labels,
        "HostConfig": {
            "Mounts": mounts,
            "RestartPolicy": { "Name": "no" },
        },
    });
    if let Some(config) = body["HostConfig"].as_object_mut() {
        config.extend(resources(spec));
    }
    if let Some(first) = spec.nics.first() {
        let network = network_of(host, first.kind)?;
        body["NetworkingConfig"] = json!({ "EndpointsConfig": { network: endpoint(first) } });
        body["HostConfig"]["NetworkMode"] = json!(network);
        if !first.mac_addr.is_empty() {
            body["MacAddress"] = json!(first.mac_addr);
        }
    } else {
        body["HostConfig"]["NetworkMode"] = json!("none");
    }
    Ok(body)
}

/// CPU and memory limits (`HostConfig`, and the body of `/update`).
pub fn resources(spec: &VmSpec) -> serde_json::Map<String, Value> {
    let mut resources = serde_json::Map::new();
    let cpus = u64::from(spec.cpu_num.max(1));
    // `cpu_per` caps the VM's vCPUs to a percentage of them.
    let nano_cpus = if spec.cpu_per > 0 && spec.cpu_per < 100 {
        cpus * NANO_CPUS * u64::from(spec.cpu_per) / 100
    } else {
        cpus * NANO_CPUS
    };
    resources.insert("NanoCpus".to_owned(), json!(nano_cpus));
    if spec.mem_mb > 0 {
        // No swap beyond the memory: the limit is the VM's RAM.
        resources.insert("Memory".to_owned(), json!(spec.mem_mb * MIB));
        resources.insert("MemorySwap".to_owned(), json!(spec.mem_mb * MIB));
    }
    resources
}

/// A NIC's endpoint on its network: its address and its name as an alias.
pub fn endpoint(nic: &Nic) -> Value {
    let mut ipam = serde_json::Map::new();
    if !nic.ip4_addr.is_empty() {
        ipam.insert("IPv4Address".to_owned(), json!(nic.ip4_addr));
    }
    if !nic.ip6_addr.is_empty() {
        ipam.insert("IPv6Address".to_owned(), json!(nic.ip6_addr));
    }
    json!({ "IPAMConfig": ipam, "Aliases": [nic.name] })
}

fn nics_json(nics: &[Nic]) -> Value {
    Value::Array(
        nics.iter()
            .map(|nic| {
                json!({
                    "name": nic.name,
                    "kind": if nic.kind == NicKind::Pub { "pub" } else { "nat" },
                    "mac": nic.mac_addr, "ip4": nic.ip4_addr, "ip6": nic.ip6_addr,
                    "gate": nic.gate, "mask": nic.mask, "dns": nic.dns,
                })
            })
            .collect(),
    )
}

fn disks_json(disks: &[Disk]) -> Value {
    Value::Array(
        disks
            .iter()
            .map(|disk| json!({ "name": disk.name, "size": disk.size_mb }))
            .collect(),
    )
}

fn label<'a>(inspect: &'a Value, name: &str) -> &'a str {
    inspect["Config"]["Labels"][name]
        .as_str()
        .unwrap_or_default()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// A container (`GET /containers/{name}/json`) as the engine's VM: limits
/// from its `HostConfig`, addresses from its networks, the rest from its
/// labels.
pub fn vm_info(host: &HostConfig, inspect: &Value) -> VmInfo {
    let vm_uuid = inspect["Name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let config = &inspect["HostConfig"];
    let nano_cpus = config["NanoCpus"].as_u64().unwrap_or(0);
    let networks = &inspect["NetworkSettings"]["Networks"];
    let mut nics: Vec<Nic> = serde_json::from_str::<Value>(label(inspect, LABEL_NICS))
        .ok()
        .and_then(|nics| nics.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|nic| Nic {
            name: text(&nic["name"]),
            kind: if nic["kind"] == "pub" {
                NicKind::Pub
            } else {
                NicKind::Nat
            },
            mac_addr: text(&nic["mac"]),
            ip4_addr: text(&nic["ip4"]),
            ip6_addr: text(&nic["ip6"]),
            gate: text(&nic["gate"]),
            mask: text(&nic["mask"]),
            dns: nic["dns"]
                .as_array()
                .map(|dns| dns.iter().map(text).collect())
                .unwrap_or_default(),
        })
        .collect();
    // What the networks say now wins (a running container's live address).
    for nic in &mut nics {
        let Ok(network) = network_of(host, nic.kind) else {
            continue;
        };
        let live = &networks[network];
        if let Some(mac) = live["MacAddress"].as_str().filter(|mac| !mac.is_empty()) {
            nic.mac_addr = mac.to_owned();
        }
        if let Some(ip) = live["IPAddress"].as_str().filter(|ip| !ip.is_empty()) {
            nic.ip4_addr = ip.to_owned();
        }
    }
    // A container this engine did not make: one NIC per network.
    if nics.is_empty()
        && let Some(networks) = networks.as_object()
    {
        for (index, (network, live)) in networks.iter().enumerate() {
            nics.push(Nic {
                name: format!("nic{index}"),
                kind: if *network == host.network_pub && !host.network_pub.is_empty() {
                    NicKind::Pub
                } else {
                    NicKind::Nat
                },
                mac_addr: text(&live["MacAddress"]),
                ip4_addr: text(&live["IPAddress"]),
                ip6_addr: text(&live["GlobalIPv6Address"]),
                gate: text(&live["Gateway"]),
                mask: live["IPPrefixLen"]
                    .as_u64()
                    .map(|length| length.to_string())
                    .unwrap_or_default(),
                dns: Vec::new(),
            });
        }
    }
    let disks = serde_json::from_str::<Value>(label(inspect, LABEL_DISKS))
        .ok()
        .and_then(|disks| disks.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|disk| Disk {
            name: text(&disk["name"]),
            size_mb: disk["size"].as_u64().unwrap_or(0),
        })
        .collect();
    let os_name = match label(inspect, LABEL_OS) {
        "" => text(&inspect["Config"]["Image"]),
        os => os.to_owned(),
    };
    VmInfo {
        vm_uuid: vm_uuid.clone(),
        domain_uuid: text(&inspect["Id"]),
        power: power(&inspect["State"]),
        spec: VmSpec {
            vm_uuid,
            os_name,
            os_pass: String::new(),
            vc_port: 0,
            vc_pass: String::new(),
            cpu_num: nano_cpus.div_ceil(NANO_CPUS).max(1) as u32,
            cpu_per: 0,
            mem_mb: config["Memory"].as_u64().unwrap_or(0) / MIB,
            hdd_mb: label(inspect, LABEL_HDD).parse().unwrap_or(0),
            speed_up: 0,
            speed_down: 0,
            nics,
            disks,
        },
    }
}

/// The counters of a container from one `stats?stream=false&one-shot=true`
/// answer (empty for a stopped container).
pub fn counters(info: &VmInfo, stats: &Value) -> VmCounters {
    let memory = &stats["memory_stats"];
    // The page cache is not the container's own use (as `docker stats`).
    let cache = memory["stats"]["inactive_file"]
        .as_u64()
        .or_else(|| memory["stats"]["total_inactive_file"].as_u64())
        .unwrap_or(0);
    let used = memory["usage"].as_u64().unwrap_or(0).saturating_sub(cache);
    let (mut rx, mut tx) = (0_u64, 0_u64);
    if let Some(networks) = stats["networks"].as_object() {
        for network in networks.values() {
            rx += network["rx_bytes"].as_u64().unwrap_or(0);
            tx += network["tx_bytes"].as_u64().unwrap_or(0);
        }
    }
    let limit = memory["limit"].as_u64().unwrap_or(0) / MIB;
    VmCounters {
        vm_uuid: info.vm_uuid.clone(),
        power: info.power,
        cpu_num: info.spec.cpu_num,
        cpu_time_ns: stats["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap_or(0),
        mem_total_mb: if info.spec.mem_mb > 0 {
            info.spec.mem_mb
        } else {
            limit
        },
        // Rounded up: a small container (a shell, a web server) uses less
        // than a MB, and zero would read as "not measured".
        mem_used_mb: used.div_ceil(MIB),
        hdd_total_mb: info.spec.hdd_mb,
        hdd_used_mb: 0,
        net_rx_bytes: rx,
        net_tx_bytes: tx,
    }
}

#[cfg(test)]
mod tests;
