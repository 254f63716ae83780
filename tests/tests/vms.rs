//! Hosts and VMs end to end: the real binary, the real libvirt engine plugin
//! and libvirt's own `test:///default` driver (in-process, per connection:
//! what the API reads back comes from libvirt through the engine).

use openidcs_tests::{Server, plugin_toml};
use serde_json::{Value, json};

fn config() -> String {
    let mut text = String::from("[poller]\ninterval_s = 1\n\n");
    text.push_str(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    ));
    text.push_str(&plugin_toml(
        "domain-xml",
        "test_component_domain_xml",
        &["libvirt"],
        "",
    ));
    text
}

fn host_config() -> Value {
    json!({
        "server_addr": "test:///default",
        "server_user": "root",
        "server_pass": "secret",
        "system_path": "/default-pool",
        "network_nat": "default",
        "ports_start": 20000,
        "ports_close": 20999,
        "public_addr": ["127.0.0.1"],
        "ipaddr_maps": { "lan": { "vers": "ipv4", "type": "nat", "gate": "192.168.122.1",
                                  "mask": "255.255.255.0", "from": "192.168.122.100", "nums": 10 } }
    })
}

async fn create_host(server: &Server, name: &str, engine: &str) -> Value {
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": name, "type": engine, "config": host_config() })),
        )
        .await
}

#[track_caller]
fn message(envelope: &Value) -> &str {
    envelope["msg"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn host_crud_and_errors() {
    let server = Server::start(&config());
    let host = create_host(&server, "local", "libvirt").await;
    assert_eq!(host["name"], "local");
    assert_eq!(host["type"], "libvirt");
    assert_eq!(host["addr"], "test:///default");
    assert_eq!(
        host["config"]["server_pass"], "******",
        "passwords are never returned"
    );
    assert_eq!(host["status"], "active");

    for (body, code, needle) in [
        (
            json!({ "name": "local", "type": "libvirt", "config": host_config() }),
            409,
            "already exists",
        ),
        (
            json!({ "name": "bad name", "type": "libvirt" }),
            400,
            "name",
        ),
        (
            json!({ "name": "h2", "type": "xen" }),
            400,
            "unknown engine",
        ),
        (
            json!({ "name": "h2", "type": "libvirt", "config": { "ports_start": 3000, "ports_close": 2000 } }),
            400,
            "config.ports_start",
        ),
        (
            json!({ "name": "h2", "type": "libvirt", "config": { "server_addr": "http://evil/" } }),
            400,
            "config.server_addr",
        ),
        (
            json!({ "name": "h2", "type": "libvirt", "config": { "system_path": "relative/dir" } }),
            400,
            "config.system_path",
        ),
        (
            json!({ "name": "h2", "type": "libvirt", "config": { "public_addr": ["not-an-ip"] } }),
            400,
            "config.public_addr[0]",
        ),
        (
            json!({ "name": "h2", "type": "libvirt", "config": { "ipaddr_maps": { "x": { "from": "10.0.0.1", "nums": 0 } } } }),
            400,
            "config.ipaddr_maps.x",
        ),
    ] {
        let (status, envelope) = server
            .call("POST", "/api/server/create", Some(body.clone()))
            .await;
        assert_eq!(status, code, "{body}: {envelope}");
        assert!(message(&envelope).contains(needle), "{body}: {envelope}");
    }

    let hosts = server.ok("GET", "/api/server/listup", None).await;
    assert_eq!(hosts.as_object().map(|map| map.len()), Some(1));
    let alias = server.ok("GET", "/api/server/detail", None).await;
    assert_eq!(alias, hosts);

    // update merges; a masked password keeps the stored one.
    let updated = server
        .ok("PUT", "/api/server/update/local", Some(json!({ "config": { "filter_name": "", "ports_close": 20500, "server_pass": "******" } })))
        .await;
    assert_eq!(updated["config"]["ports_close"], 20500);
    assert_eq!(
        updated["config"]["ports_start"], 20000,
        "absent fields keep their value"
    );
    let (status, _) = server
        .call(
            "PUT",
            "/api/server/update/nohost",
            Some(json!({ "config": {} })),
        )
        .await;
    assert_eq!(status, 404);

    // status: fresh from the engine, then cached.
    let status = server
        .ok("GET", "/api/server/status/local?refresh=true", None)
        .await;
    assert_eq!(status["source"], "fresh");
    assert!(
        status["status"]["cpu_total"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert!(
        status["status"]["mem_total"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    let cached = server.ok("GET", "/api/server/status/local", None).await;
    assert_eq!(cached["source"], "cached");
    let detail = server
        .ok("GET", "/api/server/detail/local?status=true", None)
        .await;
    assert_eq!(detail["vm_list"], json!([]));
    assert!(detail["status"]["cpu_total"].is_number(), "{detail}");
    assert!(detail["last_updated"].is_string());

    // powers: a disabled host refuses VM calls with 403.
    let disabled = server
        .ok(
            "POST",
            "/api/server/powers/local",
            Some(json!({ "enable": false })),
        )
        .await;
    assert_eq!(disabled["status"], "inactive");
    let (status, envelope) = server.call("GET", "/api/client/listup/local", None).await;
    assert_eq!(status, 403, "{envelope}");
    server
        .ok(
            "POST",
            "/api/server/powers/local",
            Some(json!({ "enable": true })),
        )
        .await;
    let (status, _) = server
        .call(
            "POST",
            "/api/server/powers/local",
            Some(json!({ "enable": "yes" })),
        )
        .await;
    assert_eq!(status, 400);

    // delete refuses while VMs remain, unless forced.
    server
        .ok(
            "POST",
            "/api/client/create/local",
            Some(json!({ "vm_uuid": "keep1", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    let (status, envelope) = server
        .call("DELETE", "/api/server/delete/local", None)
        .await;
    assert_eq!(status, 409, "{envelope}");
    server
        .ok("DELETE", "/api/server/delete/local?force=true", None)
        .await;
    let (status, _) = server.call("GET", "/api/server/detail/local", None).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .call("DELETE", "/api/server/delete/local", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn vm_lifecycle_on_the_test_driver() {
    let server = Server::start(&config());
    create_host(&server, "local", "libvirt").await;
    let spec = json!({
        // The test driver assigns no autoport: give the console a port.
        "vm_uuid": "web1", "cpu_num": 1, "mem_num": 128, "hdd_num": 16, "vc_pass": "s3cret", "vc_port": 5901,
        "nic_all": { "nic0": { "nic_type": "nat", "ip4_addr": "192.168.122.100" } },
    });
    let vm = server
        .ok("POST", "/api/client/create/local", Some(spec.clone()))
        .await;
    assert_eq!(vm["uuid"], "web1");
    assert!(vm["task_id"].as_i64().is_some());
    assert_eq!(vm["power_status"], "stopped");
    let domain_uuid = vm["domain_uuid"].as_str().unwrap_or_default().to_owned();
    assert_eq!(domain_uuid.len(), 36, "libvirt assigned a UUID: {vm}");
    let mac = vm["config"]["nic_all"]["nic0"]["mac_addr"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        mac.starts_with("52:54:00:"),
        "the engine generated a MAC: {vm}"
    );

    // The same key again, and bad input.
    let (status, _) = server
        .call("POST", "/api/client/create/local", Some(spec))
        .await;
    assert_eq!(status, 409);
    for (body, needle) in [
        (json!({ "vm_uuid": "a/b" }), "vm_uuid"),
        (json!({ "vm_uuid": "x1", "cpu_num": 0 }), "cpu_num"),
        (json!({ "vm_uuid": "x1", "mem_num": "lots" }), "mem_num"),
        (
            json!({ "vm_uuid": "x1", "vc_pass": "far-too-long-password" }),
            "vc_pass",
        ),
        (
            json!({ "vm_uuid": "x1", "nic_all": { "nic0": { "nic_type": "wifi" } } }),
            "nic_all.nic0.nic_type",
        ),
        (
            json!({ "vm_uuid": "x1", "nic_all": { "nic0": { "nic_type": "nat", "mac_addr": "zz" } } }),
            "mac_addr",
        ),
        (
            json!({ "vm_uuid": "x1", "nic_all": { "nic0": { "nic_type": "nat", "nic_mask": "255.0.255.0" } } }),
            "nic_all.nic0.nic_mask",
        ),
        (
            json!({ "vm_uuid": "x1", "nic_all": { "nic0": { "nic_type": "nat", "nic_mask": "33" } } }),
            "nic_all.nic0.nic_mask",
        ),
    ] {
        let (status, envelope) = server
            .call("POST", "/api/client/create/local", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {envelope}");
        assert!(message(&envelope).contains(needle), "{body}: {envelope}");
    }
    let (status, _) = server
        .call(
            "POST",
            "/api/client/create/nohost",
            Some(json!({ "vm_uuid": "x" })),
        )
        .await;
    assert_eq!(status, 404);

    // Read back through libvirt (detail asks the engine, which asks libvirt).
    let detail = server
        .ok("GET", "/api/client/detail/local/web1", None)
        .await;
    assert_eq!(detail["domain_uuid"], domain_uuid.as_str());
    assert_eq!(detail["power_status"], "stopped");
    assert!(detail["upload_key"].as_str().unwrap_or_default().len() >= 32);
    let by_uuid = server
        .ok(
            "GET",
            &format!("/api/client/detail/local/{domain_uuid}"),
            None,
        )
        .await;
    assert_eq!(by_uuid["uuid"], "web1", "the libvirt UUID is accepted too");
    // So no new VM may take another VM's libvirt UUID as its key.
    let (status, envelope) = server
        .call(
            "POST",
            "/api/client/create/local",
            Some(json!({ "vm_uuid": domain_uuid, "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    assert_eq!(status, 409, "{envelope}");
    assert!(
        message(&envelope).contains("libvirt UUID of vm \"web1\""),
        "{envelope}"
    );
    let (status, _) = server
        .call("GET", "/api/client/detail/local/nope", None)
        .await;
    assert_eq!(status, 404);

    // Power, in words and in the original enum names.
    for (action, expected) in [
        ("start", "running"),
        ("pause", "paused"),
        ("A_WAKED", "running"),
        ("hard_reset", "running"),
        ("H_CLOSE", "stopped"),
        ("S_START", "running"),
        ("S_PAUSE", "paused"),
        // Billing panels unsuspend with S_START: a paused VM resumes.
        ("S_START", "running"),
        ("S_PAUSE", "paused"),
        ("resume", "running"),
    ] {
        let data = server
            .ok(
                "POST",
                "/api/client/powers/local/web1",
                Some(json!({ "action": action })),
            )
            .await;
        assert_eq!(data["power_status"], expected, "after {action}");
        let listed = server.ok("GET", "/api/client/listup/local", None).await;
        assert_eq!(
            listed["web1"]["power_status"], expected,
            "libvirt agrees after {action}"
        );
    }
    let (status, envelope) = server
        .call(
            "POST",
            "/api/client/powers/local/web1",
            Some(json!({ "action": "explode" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message(&envelope).contains("action"), "{envelope}");

    // The poller samples the running VM; status shows the history.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let status = server
        .ok("GET", "/api/client/status/local/web1", None)
        .await;
    assert_eq!(status["power_status"], "running");
    let history = status["history"].as_array().expect("history");
    assert!(!history.is_empty(), "the poller stored samples: {status}");
    assert_eq!(history[0]["ac_status"], "running");
    assert!(history[0]["cpu_total"].is_number(), "{status}");
    let stats = server.ok("GET", "/api/system/statis", None).await;
    assert_eq!(stats["running_vm_count"], 1, "{stats}");
    let listed = server.ok("GET", "/api/client/listup/local", None).await;
    assert!(
        listed["web1"]["status"].is_object(),
        "listup shows the latest sample: {listed}"
    );
    let alias = server.ok("GET", "/api/client/detail/local", None).await;
    assert_eq!(alias["web1"]["uuid"], "web1");

    // vncons: a URL with a one-time ticket.
    let console = server
        .ok("GET", "/api/client/vncons/local/web1", None)
        .await;
    let url = console["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&server.base) && url.contains("/console/?ticket="),
        "{console}"
    );
    assert_eq!(console["expires_in"], 60);
    let again = server
        .ok("GET", "/api/client/remote/local/web1", None)
        .await;
    assert_ne!(
        again["url"], console["url"],
        "each call issues a new ticket"
    );

    // update: absent fields keep their value.
    server
        .ok(
            "POST",
            "/api/client/powers/local/web1",
            Some(json!({ "action": "hard_stop" })),
        )
        .await;
    let updated = server
        .ok(
            "PUT",
            "/api/client/update/local/web1",
            Some(json!({ "cpu_num": 2, "mem_num": 256 })),
        )
        .await;
    assert_eq!(updated["config"]["cpu_num"], 2);
    assert_eq!(updated["config"]["mem_num"], 256);
    assert_eq!(updated["config"]["vc_pass"], "s3cret");
    let detail = server
        .ok("GET", "/api/client/detail/local/web1", None)
        .await;
    assert_eq!(detail["config"]["cpu_num"], 2);
    let (status, _) = server
        .call(
            "PUT",
            "/api/client/update/local/web1",
            Some(json!({ "cpu_num": -1 })),
        )
        .await;
    assert_eq!(status, 400);
    server
        .ok(
            "POST",
            "/api/client/password/local/web1",
            Some(json!({ "password": "N3w-pass" })),
        )
        .await;
    let detail = server
        .ok("GET", "/api/client/detail/local/web1", None)
        .await;
    assert_eq!(
        detail["config"]["os_pass"], "******",
        "a set password shows as ******"
    );

    // delete: gone from libvirt (a scan finds nothing) and from the panel.
    server
        .ok("DELETE", "/api/client/delete/local/web1", None)
        .await;
    let (status, _) = server
        .call("GET", "/api/client/detail/local/web1", None)
        .await;
    assert_eq!(status, 404);
    let scan = server
        .ok(
            "POST",
            "/api/client/scaner/local",
            Some(json!({ "prefix": "web" })),
        )
        .await;
    assert_eq!(scan["scanned"], 0, "libvirt no longer knows web1: {scan}");
    let tasks = server
        .ok("GET", "/api/system/tasget?hs_name=local&limit=100", None)
        .await;
    assert!(
        tasks
            .as_array()
            .expect("list")
            .iter()
            .any(|task| task["actions"] == "delete" && task["state"] == "done")
    );
}

#[tokio::test]
async fn scaner_imports_existing_domains_and_limits_hold() {
    let server = Server::start(&config());
    create_host(&server, "local", "libvirt").await;
    // The test driver starts with one running domain, named "test".
    let scan = server
        .ok(
            "POST",
            "/api/client/scaner/local",
            Some(json!({ "prefix": "te" })),
        )
        .await;
    assert_eq!(scan["scanned"], 1, "{scan}");
    assert_eq!(scan["added"], 1);
    assert_eq!(scan["prefix_filter"], "te");
    let listed = server.ok("GET", "/api/client/listup/local", None).await;
    assert_eq!(listed["test"]["power_status"], "running", "{listed}");
    let again = server
        .ok(
            "POST",
            "/api/client/scaner/local",
            Some(json!({ "prefix": "te" })),
        )
        .await;
    assert_eq!(again["added"], 0, "already known");
    let (status, _) = server
        .call(
            "POST",
            "/api/client/scaner/local",
            Some(json!({ "prefix": "bad prefix" })),
        )
        .await;
    assert_eq!(status, 400);

    // limits_nums: the host holds at most 2 VMs.
    server
        .ok(
            "PUT",
            "/api/server/update/local",
            Some(json!({ "config": { "limits_nums": 2 } })),
        )
        .await;
    server
        .ok(
            "POST",
            "/api/client/create/local",
            Some(json!({ "vm_uuid": "one", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    let (status, envelope) = server
        .call(
            "POST",
            "/api/client/create/local",
            Some(json!({ "vm_uuid": "two", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    assert_eq!(status, 409, "{envelope}");
    assert!(message(&envelope).contains("limits_nums"), "{envelope}");
}

#[tokio::test]
async fn hostile_domain_xml_is_denied_and_nothing_is_defined() {
    let server = Server::start(&config());
    create_host(&server, "sandbox", "domain-xml").await;
    // The test engine reads the attack from `os_name`, which must name an
    // image of the host's catalogue to get past the core.
    let attacks = ["commandline", "hostdev", "shadow", "traversal"];
    let catalogue: serde_json::Map<String, Value> = attacks
        .iter()
        .map(|attack| (attack.to_string(), json!([format!("{attack}.qcow2"), 0])))
        .collect();
    server
        .ok(
            "PUT",
            "/api/server/update/sandbox",
            Some(json!({ "config": { "images_path": "/srv/images", "system_maps": catalogue } })),
        )
        .await;
    for attack in attacks {
        let vm = format!("evil-{attack}");
        let (status, envelope) = server
            .call(
                "POST",
                "/api/client/create/sandbox",
                Some(json!({ "vm_uuid": vm, "os_name": attack })),
            )
            .await;
        assert_eq!(status, 403, "{attack}: {envelope}");
        assert!(
            message(&envelope).contains("denied"),
            "{attack}: {envelope}"
        );
    }
    // The same host (and so the same libvirt connection) through the real
    // engine: libvirt knows no evil-* domain, and the panel kept no record.
    server
        .ok(
            "PUT",
            "/api/server/update/sandbox",
            Some(json!({ "type": "libvirt", "config": {} })),
        )
        .await;
    let scan = server
        .ok(
            "POST",
            "/api/client/scaner/sandbox",
            Some(json!({ "prefix": "evil" })),
        )
        .await;
    assert_eq!(scan["scanned"], 0, "{scan}");
    let listed = server.ok("GET", "/api/client/listup/sandbox", None).await;
    assert_eq!(listed, json!({}));
}

/// An image larger than `hdd_num` sizes the system disk, and the config says
/// so (a later update then asks for no shrink); a reinstall the engine
/// refuses before any disk changed leaves the VM running with its image.
#[tokio::test]
async fn an_image_sizes_the_disk_and_a_refused_reinstall_leaves_the_vm_running() {
    let directory = tempfile::tempdir().expect("tempdir");
    let node = openidcs_tests::image_node(directory.path());
    let server = Server::start(&format!("[libvirt]\ntest_files = true\n\n{}", config()));
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "img", "type": "libvirt",
                         "config": openidcs_tests::image_host_config(&node) })),
        )
        .await;
    let created = server
        .ok(
            "POST",
            "/api/client/create/img",
            Some(json!({ "vm_uuid": "sized", "os_name": "debian12", "mem_num": 64, "hdd_num": 1024 })),
        )
        .await;
    assert_eq!(created["config"]["hdd_num"], 2048, "{created}");
    server
        .ok(
            "POST",
            "/api/client/powers/img/sized",
            Some(json!({ "action": "start" })),
        )
        .await;
    // An update that does not name the disk keeps it (hdd_num is 2048 now).
    let updated = server
        .ok(
            "PUT",
            "/api/client/update/img/sized",
            Some(json!({ "mem_num": 96 })),
        )
        .await;
    assert_eq!(updated["config"]["hdd_num"], 2048, "{updated}");

    // A reinstall asking to shrink the disk: refused, the VM runs on.
    let (status, refused) = server
        .call(
            "PUT",
            "/api/client/update/img/sized?reinstall=true",
            Some(json!({ "os_name": "alpine3", "hdd_num": 1024 })),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(message(&refused).contains("shrink"), "{refused}");
    let detail = server.ok("GET", "/api/client/detail/img/sized", None).await;
    assert_eq!(detail["power_status"], "running", "{detail}");
    assert_eq!(detail["config"]["os_name"], "debian12", "{detail}");
    assert_eq!(detail["config"]["hdd_num"], 2048, "{detail}");

    // The same reinstall without the shrink: the other image, running again.
    let reinstalled = server
        .ok(
            "PUT",
            "/api/client/update/img/sized?reinstall=true",
            Some(json!({ "os_name": "alpine3" })),
        )
        .await;
    assert_eq!(reinstalled["config"]["os_name"], "alpine3", "{reinstalled}");
    assert_eq!(reinstalled["power_status"], "running", "{reinstalled}");
    assert_eq!(reinstalled["config"]["hdd_num"], 2048, "{reinstalled}");
}
