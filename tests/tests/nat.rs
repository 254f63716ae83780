//! NAT port forwarding through the API on real nftables, with real TCP and
//! UDP traffic between network namespaces the test creates: a "host"
//! namespace holding the server's table (the server runs nft there), a "vm"
//! namespace with echo servers, a "client" namespace on the public side.

use std::collections::BTreeSet;

use openidcs_tests::netns::{self, Namespaces, PUBLIC_ADDRESS, VM_ADDRESS};
use openidcs_tests::{Server, plugin_toml};
use serde_json::{Value, json};

fn config(namespaces: &Namespaces) -> String {
    format!(
        "{}{}",
        namespaces.nat_config(),
        plugin_toml(
            "libvirt",
            "openidcs_plugin_libvirt",
            &["libvirt", "nat", "proxy", "log"],
            ""
        )
    )
}

async fn prepare(server: &Server) {
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "edge", "type": "libvirt", "config": {
                "server_addr": "test:///default", "public_addr": [PUBLIC_ADDRESS],
                "ports_start": 20000, "ports_close": 20999, "network_pub": "br-oidcs",
                "ipaddr_maps": { "vms": { "vers": "ipv4", "type": "nat", "gate": "10.231.0.1",
                                          "mask": "255.255.255.0", "from": "10.231.0.2", "nums": 50 } } } })),
        )
        .await;
    create_vm(server, "natvm", VM_ADDRESS).await;
}

/// A VM holding `address` on its NIC (a bridged NIC: the test driver needs
/// no DHCP network for it), so forwards to `address` are its own.
async fn create_vm(server: &Server, name: &str, address: &str) {
    server
        .ok(
            "POST",
            "/api/client/create/edge",
            Some(json!({ "vm_uuid": name, "mem_num": 64, "hdd_num": 0,
                         "nic_all": { "nic0": { "nic_type": "pub", "ip4_addr": address } } })),
        )
        .await;
}

/// The public ports our prerouting chain forwards, as nft lists them.
fn forwarded_ports(namespaces: &Namespaces) -> BTreeSet<u16> {
    let listing = namespaces.nft(&["-j", "list", "chain", "inet", "openidcs", "prerouting"]);
    let json: Value = serde_json::from_str(&listing).expect("nft JSON");
    let mut ports = BTreeSet::new();
    for item in json["nftables"].as_array().into_iter().flatten() {
        let Some(expressions) = item["rule"]["expr"].as_array() else {
            continue;
        };
        for expression in expressions {
            let matched = &expression["match"];
            if matched["left"]["payload"]["field"] == "dport"
                && let Some(port) = matched["right"].as_u64()
            {
                ports.insert(port as u16);
            }
        }
    }
    ports
}

async fn listed_ports(server: &Server) -> BTreeSet<u16> {
    let rules = server
        .ok("GET", "/api/client/natget/edge/natvm", None)
        .await;
    rules
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|rule| rule["wan_port"].as_u64())
        .map(|port| port as u16)
        .collect()
}

#[tokio::test]
async fn forwards_carry_real_traffic_and_survive_a_flush() {
    if !netns::require_root("forwards_carry_real_traffic_and_survive_a_flush") {
        return;
    }
    let mut namespaces = Namespaces::create();
    namespaces.start_echo_servers(22);
    let mut server = Server::start(&config(&namespaces));
    prepare(&server).await;

    assert_eq!(
        namespaces.echo("tcp", 20022, "before"),
        None,
        "nothing forwarded yet"
    );
    let rule = server
        .ok(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "protocol": "tcp", "wan_port": 20022, "lan_port": 22, "lan_addr": VM_ADDRESS, "nat_tips": "ssh" })),
        )
        .await;
    assert_eq!(rule["wan_port"], 20022);
    assert_eq!(rule["lan_addr"], VM_ADDRESS);
    assert_eq!(rule["index"], 0);
    assert_eq!(
        namespaces.echo("tcp", 20022, "hello-tcp").as_deref(),
        Some("hello-tcp")
    );
    // The original server's field names work too.
    server
        .ok(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "protocol": "udp", "external_port": 20053, "internal_port": 22, "internal_ip": VM_ADDRESS, "description": "udp echo" })),
        )
        .await;
    assert_eq!(
        namespaces.echo("udp", 20053, "hello-udp").as_deref(),
        Some("hello-udp")
    );
    let rules = server
        .ok("GET", "/api/client/natget/edge/natvm", None)
        .await;
    assert_eq!(rules[1]["nat_tips"], "udp echo");
    assert_eq!(rules[1]["protocol"], "udp");

    // A flushed table (a reboot, an operator's mistake) comes back on restart;
    // a stray rule in our table goes; another table is never touched.
    namespaces.nft(&["flush", "table", "inet", "openidcs"]);
    assert_eq!(namespaces.echo("tcp", 20022, "flushed"), None);
    namespaces.nft(&["add", "table", "inet", "bystander"]);
    namespaces.nft(&[
        "add",
        "chain",
        "inet",
        "bystander",
        "input",
        "{ type filter hook input priority 10 ; policy accept ; }",
    ]);
    namespaces.nft(&[
        "add",
        "rule",
        "inet",
        "bystander",
        "input",
        "tcp",
        "dport",
        "7777",
        "accept",
    ]);
    namespaces.nft(&[
        "add",
        "rule",
        "inet",
        "openidcs",
        "prerouting",
        "tcp",
        "dport",
        "20999",
        "dnat",
        "ip",
        "to",
        "10.231.0.9:1",
    ]);
    let bystander_before = namespaces.nft(&["list", "table", "inet", "bystander"]);
    server.restart(false);
    assert_eq!(
        namespaces.echo("tcp", 20022, "again").as_deref(),
        Some("again")
    );
    assert_eq!(
        namespaces.echo("udp", 20053, "again-udp").as_deref(),
        Some("again-udp")
    );
    assert_eq!(
        forwarded_ports(&namespaces),
        BTreeSet::from([20022, 20053]),
        "the stray rule is gone"
    );
    assert_eq!(
        namespaces.nft(&["list", "table", "inet", "bystander"]),
        bystander_before
    );
    let logs = server.ok("GET", "/api/system/logget?limit=200", None).await;
    assert!(
        logs.as_array()
            .expect("list")
            .iter()
            .any(|log| log["message"]
                .as_str()
                .unwrap_or_default()
                .contains("NAT reconciled")),
        "the reconcile result is logged: {logs}"
    );

    // natdel: the same connection now fails.
    server
        .ok("DELETE", "/api/client/natdel/edge/natvm/0", None)
        .await;
    assert_eq!(namespaces.echo("tcp", 20022, "after"), None);
    assert_eq!(
        namespaces.echo("udp", 20053, "still").as_deref(),
        Some("still")
    );
    let (status, _) = server
        .call("DELETE", "/api/client/natdel/edge/natvm/5", None)
        .await;
    assert_eq!(status, 404);
    // Deleting the VM removes its rules.
    server
        .ok("DELETE", "/api/client/delete/edge/natvm", None)
        .await;
    assert_eq!(namespaces.echo("udp", 20053, "gone"), None);
    assert!(forwarded_ports(&namespaces).is_empty());
}

#[tokio::test]
async fn concurrent_adds_pick_distinct_ports_and_bad_input_changes_nothing() {
    if !netns::require_root("concurrent_adds_pick_distinct_ports_and_bad_input_changes_nothing") {
        return;
    }
    let namespaces = Namespaces::create();
    let server = Server::start(&config(&namespaces));
    prepare(&server).await;

    let adds = (0..50).map(|number| {
        server.call(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "protocol": "tcp", "wan_port": 0, "lan_port": 1000 + number, "lan_addr": VM_ADDRESS })),
        )
    });
    let answers = futures::future::join_all(adds).await;
    let mut ports = BTreeSet::new();
    for (status, envelope) in &answers {
        assert_eq!(*status, 200, "{envelope}");
        ports.insert(envelope["data"]["wan_port"].as_u64().expect("port") as u16);
    }
    assert_eq!(ports.len(), 50, "50 distinct public ports");
    assert_eq!(listed_ports(&server).await, ports);
    assert_eq!(
        forwarded_ports(&namespaces),
        ports,
        "nft shows exactly the database's rules"
    );

    // Taken port, limit, and bad input: 400/409 and the ruleset unchanged.
    let before = namespaces.nft(&["-j", "list", "table", "inet", "openidcs"]);
    let taken = *ports.iter().next().expect("a port");
    let (status, _) = server
        .call(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "wan_port": taken, "lan_port": 22, "lan_addr": VM_ADDRESS })),
        )
        .await;
    assert_eq!(status, 409);
    // Targets outside the VM: the gateway (the host itself), the network's
    // own and broadcast addresses, another VM's address, an unassigned one.
    create_vm(&server, "othervm", "10.231.0.4").await;
    for target in [
        "10.231.0.1",
        "10.231.0.0",
        "10.231.0.255",
        "10.231.0.4",
        "10.231.0.3",
    ] {
        let (status, envelope) = server
            .call(
                "POST",
                "/api/client/natadd/edge/natvm",
                Some(json!({ "wan_port": 20100, "lan_port": 22, "lan_addr": target })),
            )
            .await;
        assert_eq!(status, 400, "{target}: {envelope}");
        assert!(
            envelope["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("lan_addr"),
            "{target}: {envelope}"
        );
    }
    for body in [
        json!({ "wan_port": 0, "lan_port": 0, "lan_addr": VM_ADDRESS }),
        json!({ "wan_port": 65536, "lan_port": 22, "lan_addr": VM_ADDRESS }),
        json!({ "wan_port": 80, "lan_port": 22, "lan_addr": VM_ADDRESS }),
        json!({ "wan_port": 20100, "lan_port": 22, "lan_addr": "10.99.0.5" }),
        json!({ "wan_port": 20100, "lan_port": 22, "lan_addr": "10.231.0.2; flush ruleset" }),
        json!({ "protocol": "icmp", "wan_port": 20100, "lan_port": 22, "lan_addr": VM_ADDRESS }),
        json!({ "wan_port": 20100, "lan_port": 22, "lan_addr": VM_ADDRESS, "nat_tips": "x\"; flush ruleset; \"" }),
        json!({ "wan_port": 20100, "lan_port": 22, "lan_addr": VM_ADDRESS, "nat_tips": "a{b}" }),
        json!({ "wan_port": 20100, "lan_port": 22, "lan_addr": VM_ADDRESS, "nat_tips": "line\nbreak" }),
        json!({ "wan_port": "20100", "lan_port": 22 }),
    ] {
        let (status, envelope) = server
            .call("POST", "/api/client/natadd/edge/natvm", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {envelope}");
    }
    assert_eq!(
        namespaces.nft(&["-j", "list", "table", "inet", "openidcs"]),
        before,
        "ruleset unchanged"
    );

    // nat_num: the VM may hold at most 50 rules here.
    server
        .ok(
            "PUT",
            "/api/client/update/edge/natvm",
            Some(json!({ "nat_num": 50 })),
        )
        .await;
    let (status, envelope) = server
        .call(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "wan_port": 0, "lan_port": 22, "lan_addr": VM_ADDRESS })),
        )
        .await;
    assert_eq!(status, 409, "{envelope}");
}

#[tokio::test]
async fn a_narrower_range_is_refused_and_a_deleted_host_takes_its_forwards_down() {
    if !netns::require_root(
        "a_narrower_range_is_refused_and_a_deleted_host_takes_its_forwards_down",
    ) {
        return;
    }
    let mut namespaces = Namespaces::create();
    namespaces.start_echo_servers(22);
    let server = Server::start(&config(&namespaces));
    prepare(&server).await;
    server
        .ok(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "wan_port": 20022, "lan_port": 22, "lan_addr": VM_ADDRESS })),
        )
        .await;
    assert_eq!(namespaces.echo("tcp", 20022, "up").as_deref(), Some("up"));

    // A range that would strand the forward is refused, naming it.
    let (status, envelope) = server
        .call(
            "PUT",
            "/api/server/update/edge",
            Some(json!({ "config": { "ports_start": 21000, "ports_close": 21999 } })),
        )
        .await;
    assert_eq!(status, 409, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("20022 of vm natvm"),
        "{envelope}"
    );
    assert_eq!(listed_ports(&server).await, BTreeSet::from([20022]));
    assert_eq!(forwarded_ports(&namespaces), BTreeSet::from([20022]));
    // A range that still holds it is fine.
    server
        .ok(
            "PUT",
            "/api/server/update/edge",
            Some(json!({ "config": { "ports_start": 20000, "ports_close": 20100 } })),
        )
        .await;

    // Deleting the host (with its VMs) takes the rule down in the same task.
    server
        .ok("DELETE", "/api/server/delete/edge?force=true", None)
        .await;
    assert_eq!(forwarded_ports(&namespaces), BTreeSet::new());
    assert_eq!(namespaces.echo("tcp", 20022, "gone"), None);
}
