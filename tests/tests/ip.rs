//! NICs and addresses through the API on libvirt's test driver: allocation
//! from the host's pool (race-free), explicit addresses, exhaustion and
//! duplicates, the DHCP binding as libvirt's network XML holds it, removal
//! by index and by NIC name.

use openidcs_tests::{Server, plugin_toml};
use serde_json::{Value, json};

fn config() -> String {
    let mut text = plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    );
    text.push_str(&plugin_toml(
        "inspect",
        "test_component_domain_xml",
        &["libvirt"],
        "",
    ));
    text
}

fn host(engine: &str) -> Value {
    json!({ "type": engine, "config": {
        "server_addr": "test:///default", "network_nat": "default",
        "ipaddr_maps": { "lan": { "vers": "ipv4", "type": "nat", "gate": "192.168.122.1",
                                  "mask": "255.255.255.0", "from": "192.168.122.200", "nums": 3 } } } })
}

/// libvirt's network XML of the test driver's `default` network (read
/// through a test engine on the same driver).
async fn network_xml(server: &Server) -> String {
    let status = server
        .ok("GET", "/api/server/status/inspect?refresh=true", None)
        .await;
    status["status"]["hostname"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn nics_with_pool_addresses_and_dhcp_bindings() {
    let server = Server::start(&config());
    for (name, engine) in [("local", "libvirt"), ("inspect", "inspect")] {
        let mut body = host(engine);
        body["name"] = json!(name);
        server.ok("POST", "/api/server/create", Some(body)).await;
    }
    for vm in ["ipvm1", "ipvm2"] {
        server
            .ok(
                "POST",
                "/api/client/create/local",
                Some(json!({ "vm_uuid": vm, "mem_num": 64, "hdd_num": 0 })),
            )
            .await;
    }
    assert_eq!(
        server
            .ok("GET", "/api/client/iplist/local/ipvm1", None)
            .await,
        json!([])
    );

    // Next free address of the pool, a generated MAC, the pool's gateway.
    let first = server
        .ok(
            "POST",
            "/api/client/ipadd_/local/ipvm1",
            Some(json!({ "nic_type": "nat" })),
        )
        .await;
    assert_eq!(first["ip4_addr"], "192.168.122.200", "{first}");
    assert_eq!(first["nic_gate"], "192.168.122.1");
    assert_eq!(first["nic_name"], "nic0");
    let mac = first["mac_addr"].as_str().unwrap_or_default().to_owned();
    assert!(mac.starts_with("52:54:00:"), "{first}");
    let xml = network_xml(&server).await;
    assert!(
        xml.contains(&format!("mac='{mac}'")) && xml.contains("ip='192.168.122.200'"),
        "{xml}"
    );

    // An explicit address (with the original field names), and a duplicate.
    let second = server
        .ok("POST", "/api/client/ipaddr/create/local/ipvm1", Some(json!({ "type": "nat", "address": "192.168.122.202", "mac_addr": "52:54:00:aa:bb:cc" })))
        .await;
    assert_eq!(second["ip4_addr"], "192.168.122.202");
    assert_eq!(second["mac_addr"], "52:54:00:aa:bb:cc");
    let (status, envelope) = server
        .call(
            "POST",
            "/api/client/ipadd_/local/ipvm2",
            Some(json!({ "ip4_addr": "192.168.122.202" })),
        )
        .await;
    assert_eq!(status, 409, "{envelope}");
    let (status, _) = server
        .call(
            "POST",
            "/api/client/ipadd_/local/ipvm2",
            Some(json!({ "ip4_addr": "not-ip" })),
        )
        .await;
    assert_eq!(status, 400);

    // The pool has 3 addresses: .201 is the last free one, then 409.
    let third = server
        .ok("POST", "/api/client/ipadd_/local/ipvm2", Some(json!({})))
        .await;
    assert_eq!(third["ip4_addr"], "192.168.122.201");
    let (status, envelope) = server
        .call("POST", "/api/client/ipadd_/local/ipvm2", Some(json!({})))
        .await;
    assert_eq!(status, 409, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("exhausted"),
        "{envelope}"
    );

    let listed = server
        .ok("GET", "/api/client/iplist/local/ipvm1", None)
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(listed[1]["nic_name"], "nic1");

    // Remove by index and by NIC name: the binding goes from libvirt too.
    server
        .ok("DELETE", "/api/client/ipdel_/local/ipvm1/0", None)
        .await;
    server
        .ok("DELETE", "/api/client/ipaddr/delete/local/ipvm1/nic1", None)
        .await;
    assert_eq!(
        server
            .ok("GET", "/api/client/iplist/local/ipvm1", None)
            .await,
        json!([])
    );
    let xml = network_xml(&server).await;
    assert!(
        !xml.contains("192.168.122.200") && !xml.contains("192.168.122.202"),
        "{xml}"
    );
    assert!(
        xml.contains("192.168.122.201"),
        "ipvm2's binding stays: {xml}"
    );
    let (status, _) = server
        .call("DELETE", "/api/client/ipdel_/local/ipvm1/0", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .call("DELETE", "/api/client/ipdel_/local/ipvm1/nic7", None)
        .await;
    assert_eq!(status, 404);
    // The freed address is handed out again.
    let again = server
        .ok("POST", "/api/client/ipadd_/local/ipvm1", Some(json!({})))
        .await;
    assert_eq!(again["ip4_addr"], "192.168.122.200");
}

#[tokio::test]
async fn concurrent_allocations_never_share_an_address() {
    let server = Server::start(&config());
    let mut body = host("libvirt");
    body["name"] = json!("local");
    body["config"]["ipaddr_maps"]["lan"]["nums"] = json!(20);
    server.ok("POST", "/api/server/create", Some(body)).await;
    for vm in 0..4 {
        server
            .ok(
                "POST",
                "/api/client/create/local",
                Some(json!({ "vm_uuid": format!("race{vm}"), "mem_num": 64, "hdd_num": 0 })),
            )
            .await;
    }
    let paths: Vec<String> = (0..20)
        .map(|number| format!("/api/client/ipadd_/local/race{}", number % 4))
        .collect();
    let adds = paths
        .iter()
        .map(|path| server.call("POST", path, Some(json!({}))));
    let answers = futures::future::join_all(adds).await;
    let mut addresses = std::collections::BTreeSet::new();
    for (status, envelope) in &answers {
        assert_eq!(*status, 200, "{envelope}");
        addresses.insert(
            envelope["data"]["ip4_addr"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(addresses.len(), 20, "20 distinct addresses: {addresses:?}");
    let (status, _) = server
        .call("POST", "/api/client/ipadd_/local/race0", Some(json!({})))
        .await;
    assert_eq!(status, 409, "the pool is exhausted");
}
