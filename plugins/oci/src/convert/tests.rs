//! The conversions, on answers shaped as dockerd 20.10 gives them.

use super::*;

fn host() -> HostConfig {
    HostConfig {
        name: "dk".to_owned(),
        engine: "oci".to_owned(),
        server_addr: "unix:///run/docker.sock".to_owned(),
        server_user: String::new(),
        filter_name: String::new(),
        images_path: String::new(),
        system_path: String::new(),
        network_nat: "oidcs-nat".to_owned(),
        network_pub: String::new(),
        ports_start: 20000,
        ports_close: 20100,
        public_addr: Vec::new(),
        ip_pools: Vec::new(),
        extend_data: "{}".to_owned(),
    }
}

fn spec() -> VmSpec {
    VmSpec {
        vm_uuid: "web1".to_owned(),
        os_name: "busybox".to_owned(),
        os_pass: String::new(),
        vc_port: 0,
        vc_pass: String::new(),
        cpu_num: 2,
        cpu_per: 50,
        mem_mb: 256,
        hdd_mb: 1024,
        speed_up: 0,
        speed_down: 0,
        nics: vec![Nic {
            name: "nic0".to_owned(),
            kind: NicKind::Nat,
            mac_addr: "52:54:00:aa:bb:cc".to_owned(),
            ip4_addr: "10.233.0.10".to_owned(),
            ip6_addr: String::new(),
            gate: "10.233.0.1".to_owned(),
            mask: "255.255.255.0".to_owned(),
            dns: vec!["1.1.1.1".to_owned()],
        }],
        disks: vec![Disk {
            name: "data".to_owned(),
            size_mb: 64,
        }],
    }
}

#[test]
fn the_create_body_carries_limits_address_volumes_and_labels() {
    let body = create_body(&host(), &spec(), "busybox:1", "web1").expect("body");
    assert_eq!(body["Image"], "busybox:1");
    // Two vCPUs capped at 50 %: one CPU's worth.
    assert_eq!(body["HostConfig"]["NanoCpus"], 1_000_000_000_u64);
    assert_eq!(body["HostConfig"]["Memory"], 256 * MIB);
    assert_eq!(body["HostConfig"]["MemorySwap"], 256 * MIB);
    assert_eq!(body["HostConfig"]["NetworkMode"], "oidcs-nat");
    assert_eq!(body["MacAddress"], "52:54:00:aa:bb:cc");
    let endpoint = &body["NetworkingConfig"]["EndpointsConfig"]["oidcs-nat"];
    assert_eq!(endpoint["IPAMConfig"]["IPv4Address"], "10.233.0.10");
    assert_eq!(endpoint["Aliases"], json!(["nic0"]));
    assert_eq!(
        body["HostConfig"]["Mounts"],
        json!([{ "Type": "volume", "Source": "openidcs-web1-data", "Target": "/data/data" }])
    );
    assert_eq!(body["Labels"][LABEL_VM], "web1");
}

#[test]
fn a_nic_without_a_network_is_refused_naming_the_field() {
    let mut spec = spec();
    spec.nics[0].kind = NicKind::Pub;
    match create_body(&host(), &spec, "busybox", "web1") {
        Err(Error::Invalid(message)) => assert!(message.contains("network_pub"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// An inspect of the container `create_body` makes, as dockerd answers it.
fn inspected(status: &str, paused: bool) -> Value {
    let body = create_body(&host(), &spec(), "busybox:1", "web1").expect("body");
    json!({
        "Id": "4f1c",
        "Name": "/web1",
        "State": { "Status": status, "Paused": paused },
        "Config": { "Image": "busybox:1", "Labels": body["Labels"] },
        "HostConfig": body["HostConfig"],
        "NetworkSettings": { "Networks": { "oidcs-nat": {
            "IPAddress": if status == "running" { "10.233.0.10" } else { "" },
            "MacAddress": if status == "running" { "52:54:00:aa:bb:cc" } else { "" },
        } } },
    })
}

#[test]
fn a_container_reads_back_as_the_vm_it_was_made_for() {
    let info = vm_info(&host(), &inspected("running", false));
    assert_eq!(info.vm_uuid, "web1");
    assert_eq!(info.domain_uuid, "4f1c");
    assert_eq!(info.power, PowerState::Running);
    assert_eq!(info.spec.os_name, "busybox");
    assert_eq!(info.spec.cpu_num, 1, "the limit in force");
    assert_eq!(info.spec.mem_mb, 256);
    assert_eq!(info.spec.hdd_mb, 1024);
    assert_eq!(info.spec.nics.len(), 1);
    assert_eq!(info.spec.nics[0].name, "nic0");
    assert_eq!(info.spec.nics[0].ip4_addr, "10.233.0.10");
    assert_eq!(info.spec.nics[0].dns, vec!["1.1.1.1".to_owned()]);
    assert_eq!(info.spec.disks[0].size_mb, 64);
    // Stopped: the address it was given.
    let stopped = vm_info(&host(), &inspected("exited", false));
    assert_eq!(stopped.power, PowerState::Stopped);
    assert_eq!(stopped.spec.nics[0].ip4_addr, "10.233.0.10");
    assert_eq!(
        vm_info(&host(), &inspected("running", true)).power,
        PowerState::Paused
    );
}

#[test]
fn a_foreign_container_gets_one_nic_per_network() {
    let inspect = json!({
        "Id": "9a", "Name": "/other",
        "State": { "Status": "created" },
        "Config": { "Image": "nginx:1" },
        "HostConfig": {},
        "NetworkSettings": { "Networks": { "bridge": {
            "IPAddress": "172.17.0.2", "MacAddress": "02:42:ac:11:00:02",
            "Gateway": "172.17.0.1", "IPPrefixLen": 16,
        } } },
    });
    let info = vm_info(&host(), &inspect);
    assert_eq!(info.spec.os_name, "nginx:1");
    assert_eq!(info.spec.cpu_num, 1);
    assert_eq!(info.spec.nics[0].ip4_addr, "172.17.0.2");
    assert_eq!(info.spec.nics[0].mask, "16");
}

#[test]
fn stats_become_counters_without_the_page_cache() {
    let info = vm_info(&host(), &inspected("running", false));
    let stats = json!({
        "cpu_stats": { "cpu_usage": { "total_usage": 123_456_789_u64 } },
        "memory_stats": { "usage": 80 * MIB + 1, "limit": 256 * MIB,
                          "stats": { "inactive_file": 16 * MIB } },
        "networks": { "eth0": { "rx_bytes": 1000, "tx_bytes": 200 },
                      "eth1": { "rx_bytes": 10, "tx_bytes": 2 } },
    });
    let counters = counters(&info, &stats);
    assert_eq!(counters.cpu_time_ns, 123_456_789);
    assert_eq!(counters.mem_used_mb, 65, "rounded up");
    assert_eq!(counters.mem_total_mb, 256);
    assert_eq!((counters.net_rx_bytes, counters.net_tx_bytes), (1010, 202));
    let stopped = counters_of_stopped();
    assert_eq!(stopped.cpu_time_ns, 0);
}

fn counters_of_stopped() -> VmCounters {
    counters(&vm_info(&host(), &inspected("exited", false)), &Value::Null)
}
