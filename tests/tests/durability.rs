//! Crash durability: 200 concurrent mutations (host creates and NAT adds),
//! `kill -9` of the server in the middle, restart. Every request answered 200
//! is there, nothing half-written is visible, SQLite's integrity check
//! passes, and the NAT table matches the database after the reconcile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openidcs_tests::netns::{self, Namespaces, PUBLIC_ADDRESS, VM_ADDRESS};
use openidcs_tests::{Server, plugin_toml};
use serde_json::{Value, json};

fn forwarded_ports(namespaces: &Namespaces) -> BTreeSet<u64> {
    let listing = namespaces.nft(&["-j", "list", "chain", "inet", "openidcs", "prerouting"]);
    let json: Value = serde_json::from_str(&listing).expect("nft JSON");
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .flatten()
        .filter(|expression| expression["match"]["left"]["payload"]["field"] == "dport")
        .filter_map(|expression| expression["match"]["right"].as_u64())
        .collect()
}

/// A server with NAT in `namespaces`, host `edge` and VM `natvm` holding
/// `VM_ADDRESS` (its forwards' target).
async fn edge_server(namespaces: &Namespaces) -> Server {
    let nft: Vec<String> = namespaces
        .nft_command()
        .iter()
        .map(|part| format!("{part:?}"))
        .collect();
    let config = format!(
        "[nat]\nnft_command = [{}]\n\n{}",
        nft.join(", "),
        plugin_toml(
            "libvirt",
            "openidcs_plugin_libvirt",
            &["libvirt", "nat", "proxy", "log"],
            ""
        )
    );
    let server = Server::start(&config);
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "edge", "type": "libvirt", "config": {
                "server_addr": "test:///default", "public_addr": [PUBLIC_ADDRESS],
                "ports_start": 20000, "ports_close": 20999, "network_pub": "br-oidcs",
                "ipaddr_maps": { "vms": { "from": "10.231.0.2", "mask": "24", "nums": 10 } } } })),
        )
        .await;
    server
        .ok(
            "POST",
            "/api/client/create/edge",
            Some(
                json!({ "vm_uuid": "natvm", "mem_num": 64, "hdd_num": 0, "nat_num": 1000,
                         "nic_all": { "nic0": { "nic_type": "pub", "ip4_addr": VM_ADDRESS } } }),
            ),
        )
        .await;
    server
}

#[tokio::test]
async fn acknowledged_mutations_survive_kill_9() {
    if !netns::require_root("acknowledged_mutations_survive_kill_9") {
        return;
    }
    let namespaces = Namespaces::create();
    let server = edge_server(&namespaces).await;

    let server = Arc::new(tokio::sync::Mutex::new(server));
    let answered = Arc::new(AtomicUsize::new(0));
    let snapshot = server.lock().await;
    let (base, token) = (snapshot.base.clone(), snapshot.token.clone());
    let pid = snapshot.pid().expect("pid");
    drop(snapshot);
    let client = reqwest::Client::new();
    let mut requests = Vec::new();
    for number in 0..200u32 {
        let (client, base, token, answered) = (
            client.clone(),
            base.clone(),
            token.clone(),
            answered.clone(),
        );
        requests.push(tokio::spawn(async move {
            let (path, body, key) = if number % 2 == 0 {
                let name = format!("crash-{number}");
                ("/api/server/create".to_owned(), json!({ "name": name, "type": "libvirt", "config": {} }), name)
            } else {
                (
                    "/api/client/natadd/edge/natvm".to_owned(),
                    json!({ "protocol": "tcp", "wan_port": 0, "lan_port": 1000 + number, "lan_addr": VM_ADDRESS }),
                    String::new(),
                )
            };
            let response = client.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send().await.ok()?;
            let status = response.status().as_u16();
            let envelope: Value = response.json().await.ok()?;
            answered.fetch_add(1, Ordering::SeqCst);
            (status == 200).then(|| if key.is_empty() { envelope["data"]["wan_port"].to_string() } else { key })
        }));
    }
    // Kill in the middle: once some answers are in, well before all are.
    while answered.load(Ordering::SeqCst) < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let mut acknowledged_hosts = BTreeSet::new();
    let mut acknowledged_ports = BTreeSet::new();
    for request in requests {
        if let Ok(Some(key)) = request.await {
            if key.starts_with("crash-") {
                acknowledged_hosts.insert(key);
            } else if let Ok(port) = key.parse::<u64>() {
                acknowledged_ports.insert(port);
            }
        }
    }
    let acknowledged = acknowledged_hosts.len() + acknowledged_ports.len();
    assert!(
        (20..200).contains(&acknowledged),
        "the kill landed mid-way: {acknowledged} acknowledged"
    );

    // Restart on the same data.
    let mut server = Arc::try_unwrap(server)
        .ok()
        .expect("one owner")
        .into_inner();
    server.restart(true);
    let database = server.data_dir().join("openidcs.db");
    let integrity = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"])
        .arg(&database)
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");

    let hosts = server.ok("GET", "/api/server/listup", None).await;
    for name in &acknowledged_hosts {
        assert!(
            hosts.get(name).is_some(),
            "acknowledged host {name} is missing after the crash"
        );
    }
    let rules = server
        .ok("GET", "/api/client/natget/edge/natvm", None)
        .await;
    let stored: BTreeSet<u64> = rules
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|rule| rule["wan_port"].as_u64())
        .collect();
    for port in &acknowledged_ports {
        assert!(
            stored.contains(port),
            "acknowledged NAT port {port} is missing after the crash"
        );
    }
    // Nothing half-written: every stored rule is whole, every port distinct.
    for rule in rules.as_array().expect("list") {
        assert!(
            rule["wan_port"]
                .as_u64()
                .is_some_and(|port| (20000..=20999).contains(&port)),
            "{rule}"
        );
        assert!(
            rule["lan_port"].as_u64().is_some_and(|port| port >= 1000),
            "{rule}"
        );
        assert_eq!(rule["protocol"], "tcp");
    }
    assert_eq!(stored.len(), rules.as_array().map(Vec::len).unwrap_or(0));
    // The table is rebuilt from the database.
    assert_eq!(
        forwarded_ports(&namespaces),
        stored,
        "nft matches the database after the reconcile"
    );
    // Tasks cut short are failed, not left running.
    let running = server
        .ok("GET", "/api/system/tasget?state=running", None)
        .await;
    assert_eq!(running, json!([]));
}

/// A natadd or pxyadd killed between its row and the engine's answer leaves
/// a row without a target, holding its port or domain. The next start
/// removes such rows, logs each, and frees the port.
#[tokio::test]
async fn half_done_rows_are_repaired_at_start() {
    if !netns::require_root("half_done_rows_are_repaired_at_start") {
        return;
    }
    let namespaces = Namespaces::create();
    let mut server = edge_server(&namespaces).await;
    server
        .ok(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "wan_port": 20022, "lan_port": 22, "lan_addr": VM_ADDRESS })),
        )
        .await;
    server.stop(true);
    {
        let database = rusqlite::Connection::open(server.data_dir().join("openidcs.db"))
            .expect("opening the database");
        database
            .execute(
                "INSERT INTO nat_rules (host, vm_uuid, protocol, wan_port, lan_port, lan_addr, created_at)
                 VALUES ('edge', 'natvm', 'tcp', 20050, 22, '', 0)",
                [],
            )
            .expect("a half-done NAT row");
        database
            .execute(
                "INSERT INTO proxies (host, vm_uuid, domain, backend_ip, backend_port, created_at)
                 VALUES ('edge', 'natvm', 'half.test.example', '', 80, 0)",
                [],
            )
            .expect("a half-done proxy row");
    }
    server.restart(false);
    let rules = server
        .ok("GET", "/api/client/natget/edge/natvm", None)
        .await;
    let ports: Vec<u64> = rules
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|rule| rule["wan_port"].as_u64())
        .collect();
    assert_eq!(ports, vec![20022], "{rules}");
    assert_eq!(forwarded_ports(&namespaces), BTreeSet::from([20022]));
    let proxies = server
        .ok("GET", "/api/client/pxyget/edge/natvm", None)
        .await;
    assert_eq!(proxies.as_array().map(Vec::len), Some(0), "{proxies}");
    let logs = server
        .ok("GET", "/api/system/logget?level=warn&hs_name=edge", None)
        .await;
    let repairs = logs
        .as_array()
        .expect("list")
        .iter()
        .filter(|record| record["actions"] == "startup-repair")
        .count();
    assert_eq!(repairs, 2, "{logs}");
    // The port is free again.
    server
        .ok(
            "POST",
            "/api/client/natadd/edge/natvm",
            Some(json!({ "wan_port": 20050, "lan_port": 22, "lan_addr": VM_ADDRESS })),
        )
        .await;
}
