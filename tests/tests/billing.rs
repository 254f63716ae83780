//! The API driven exactly as a billing panel's PHP module drives it: HTTPS
//! with certificate verification off, bodies as `json_encode` makes them
//! (`[]` for empty maps, unknown fields), a 12-character panel password as
//! `vc_pass`, a random (multicast) MAC, no address, `S_*` power words, and
//! `data[0].vm_status` read from the status. Each step checks the server's
//! state, and the routes by VM name the modules call; and a VM over its
//! traffic quota paused until the panel resets its traffic.

use openidcs_tests::{Server, plugin_toml};
use serde_json::{Value, json};

/// The host as a provider sets it up: a NAT pool and a public pool.
fn host() -> Value {
    json!({ "name": "node1", "type": "libvirt", "config": {
        "server_addr": "test:///default", "network_nat": "default", "network_pub": "br0",
        "ports_start": 20000, "ports_close": 20099,
        "ipaddr_maps": {
            "lan": { "vers": "ipv4", "type": "nat", "gate": "192.168.122.1",
                     "mask": "255.255.255.0", "from": "192.168.122.100", "nums": 50 },
            "lan6": { "vers": "ipv6", "type": "nat", "gate": "fd00:122::1",
                      "mask": "64", "from": "fd00:122::100", "nums": 50 },
            "wan": { "vers": "ipv4", "type": "pub", "gate": "203.0.113.1",
                     "mask": "255.255.255.0", "from": "203.0.113.10", "nums": 20 } } } })
}

/// A plain-HTTP server with the libvirt engine and the host `node1`.
async fn server_with_node1() -> Server {
    let server = Server::start(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    ));
    server.ok("POST", "/api/server/create", Some(host())).await;
    server
}

/// The module's `vm_status` of the status answer, as PHP reads it.
async fn php_status(server: &Server, vm: &str) -> String {
    let data = server
        .ok("GET", &format!("/api/client/status/node1/{vm}"), None)
        .await;
    data["0"]["vm_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn power(server: &Server, vm: &str, action: &str) {
    server
        .ok(
            "POST",
            &format!("/api/client/powers/node1/{vm}"),
            Some(json!({ "action": action })),
        )
        .await;
}

#[tokio::test]
async fn a_php_module_creates_operates_and_terminates_a_vm() {
    let mut server = Server::start_https(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    ));
    // curl with CURLOPT_SSL_VERIFYPEER off, as the modules do.
    server.client = openidcs_tests::api_client()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    server.ok("POST", "/api/server/create", Some(host())).await;

    // CreateAccount, byte for byte as the module encodes it.
    let created = server
        .ok(
            "POST",
            "/api/client/create/node1",
            Some(json!({
                "vm_uuid": "ser261202de2b0aa", "os_name": "", "os_pass": "Zj9kLm2Qx7Pw",
                "vc_port": 26057, "vc_pass": "Zj9kLm2Qx7Pw", "cpu_num": 1, "cpu_per": 100,
                "mem_num": 1024, "hdd_num": 0, "speed_u": 100, "speed_d": 100,
                "flu_num": 102400, "nat_num": 10, "web_num": 5, "hdd_all": [], "iso_all": [],
                "nic_all": { "eth0": { "nic_type": "nat", "mac_addr": "93:d7:1a:02:4c:7e",
                                       "ip4_addr": "", "ip6_addr": "" } } })),
        )
        .await;
    let nic = &created["config"]["nic_all"]["eth0"];
    assert_eq!(
        nic["mac_addr"], "92:d7:1a:02:4c:7e",
        "multicast bit cleared: {created}"
    );
    assert_eq!(
        nic["ip4_addr"], "192.168.122.100",
        "IPv4 from the pool: {created}"
    );
    assert_eq!(
        nic["ip6_addr"], "fd00:122::100",
        "IPv6 from the v6 pool: {created}"
    );
    assert_eq!(nic["nic_gate"], "192.168.122.1");
    assert_eq!(
        created["config"]["vc_pass"], "Zj9kLm2Q",
        "the first 8 characters"
    );
    let logs = server
        .ok("GET", "/api/system/logget?level=warn&hs_name=node1", None)
        .await;
    assert!(logs.to_string().contains("multicast"), "{logs}");

    let vm = "ser261202de2b0aa";
    power(&server, vm, "S_START").await;
    assert_eq!(php_status(&server, vm).await, "RUNNING");
    power(&server, vm, "S_PAUSE").await; // SuspendAccount
    assert_eq!(php_status(&server, vm).await, "PAUSED");
    power(&server, vm, "S_START").await; // UnsuspendAccount resumes
    assert_eq!(php_status(&server, vm).await, "RUNNING");
    power(&server, vm, "S_RESET").await;
    assert_eq!(php_status(&server, vm).await, "RUNNING");
    // The console button: the module opens data.url in the customer's
    // browser (the VNC port is the one the module chose, 26057).
    let console = server
        .ok("GET", &format!("/api/client/remote/node1/{vm}"), None)
        .await;
    let url = console["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&format!("{}/console/?ticket=", server.base)),
        "{console}"
    );
    power(&server, vm, "H_CLOSE").await;
    assert_eq!(php_status(&server, vm).await, "STOPPED");
    let status = server
        .ok("GET", &format!("/api/client/status/node1/{vm}"), None)
        .await;
    assert_eq!(
        status["power_status"], "stopped",
        "newer clients' field: {status}"
    );
    assert!(status["history"].is_array());

    // A public address, as the module's IP add sends it: NIC items carry
    // public_ipv4 for pub NICs.
    server
        .ok(
            "POST",
            &format!("/api/client/ipaddr/create/node1/{vm}"),
            Some(json!({ "nic_type": "bridge", "mac_addr": "01:00:5e:00:00:fb" })),
        )
        .await;
    let nics = server
        .ok(
            "GET",
            &format!("/api/client/ipaddr/detail/node1/{vm}"),
            None,
        )
        .await;
    let public = nics
        .as_array()
        .expect("NICs")
        .iter()
        .find(|nic| nic["nic_type"] == "pub")
        .unwrap_or_else(|| panic!("no pub NIC: {nics}"));
    assert_eq!(public["public_ipv4"], "203.0.113.10", "{public}");
    assert_eq!(public["mac_addr"], "00:00:5e:00:00:fb", "{public}");
    let nat = nics
        .as_array()
        .expect("NICs")
        .iter()
        .find(|nic| nic["nic_type"] == "nat")
        .unwrap_or_else(|| panic!("no NAT NIC: {nics}"));
    assert!(
        nat.get("public_ipv4").is_none(),
        "a NAT NIC has none: {nics}"
    );
    let name = public["nic_name"].as_str().expect("NIC name").to_owned();
    server
        .ok(
            "DELETE",
            &format!("/api/client/ipaddr/delete/node1/{vm}/{name}"),
            None,
        )
        .await;

    // ChangePassword (the original's route).
    server
        .ok(
            "POST",
            &format!("/api/client/password/node1/{vm}"),
            Some(json!({ "password": "N3wPanelPass" })),
        )
        .await;

    // The module's reads and changes by VM name.
    let by_name = |path: &str| format!("{path}?hostname={vm}");
    let named = server.ok("GET", &by_name("/api/status"), None).await;
    assert_eq!(named["status"], "stopped", "{named}");
    let info = server.ok("GET", &by_name("/api/info"), None).await;
    assert_eq!(info["ipv4"], "192.168.122.100", "{info}");
    assert_eq!(info["ipv6"], "fd00:122::100", "{info}");
    assert_eq!(info["config"]["memory"], "1024 MB", "{info}");
    assert_eq!(info["type"], "libvirt");
    let v4 = server.ok("GET", &by_name("/api/ipv4/list"), None).await;
    assert_eq!(v4.as_array().map(Vec::len), Some(1), "{v4}");
    let v6 = server.ok("GET", &by_name("/api/ipv6/list"), None).await;
    assert_eq!(v6[0]["ip6_addr"], "fd00:122::100", "{v6}");
    assert_eq!(
        server.ok("GET", &by_name("/api/natlist"), None).await,
        json!([])
    );
    assert_eq!(
        server.ok("GET", &by_name("/api/proxy/list"), None).await,
        json!([])
    );
    let ports = server
        .ok("GET", "/api/server/ports/node1?protocol=tcp", None)
        .await;
    assert_eq!(
        ports,
        json!({ "range": [20000, 20099], "used": [], "free_count": 100 })
    );
    let traffic = server.ok("GET", &by_name("/api/traffic"), None).await;
    assert_eq!(traffic["used"], 0);
    let reset = server
        .ok("POST", &by_name("/api/traffic/reset"), None)
        .await;
    assert_eq!(reset["used"], 0, "{reset}");
    // This server has no [nat] or [proxy]: the checks say so, not "available".
    let check = server
        .ok(
            "GET",
            &format!("/api/nat/check?hostname={vm}&protocol=tcp&port=20022"),
            None,
        )
        .await;
    assert_eq!(check["available"], false, "{check}");
    assert!(
        check["reason"].as_str().unwrap_or_default().contains("off"),
        "{check}"
    );
    let check = server
        .ok("GET", "/api/proxy/check?domain=shop.example.com", None)
        .await;
    assert_eq!(check["available"], false, "{check}");
    let check = server
        .ok("GET", "/api/proxy/check?domain=not_a_domain", None)
        .await;
    assert!(
        check["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("domain"),
        "{check}"
    );
    server
        .ok(
            "POST",
            "/api/password",
            Some(json!({ "hostname": vm, "password": "An0therPass" })),
        )
        .await;
    let (status, envelope) = server
        .call("GET", "/api/status?hostname=nosuchvm", None)
        .await;
    assert_eq!(status, 404, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("hostname"),
        "{envelope}"
    );
    let (status, _) = server.call("GET", "/api/status", None).await;
    assert_eq!(status, 400, "hostname is required");
    // TerminateAccount.
    server
        .ok("DELETE", &format!("/api/client/delete/node1/{vm}"), None)
        .await;
    let listed = server.ok("GET", "/api/client/listup/node1", None).await;
    assert!(listed.get(vm).is_none(), "{listed}");

    // A key on two hosts is ambiguous: node2 on the same test driver imports
    // node1's domain with a scan.
    server
        .ok(
            "POST",
            "/api/client/create/node1",
            Some(json!({ "vm_uuid": "dup", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    let mut second = host();
    second["name"] = json!("node2");
    server.ok("POST", "/api/server/create", Some(second)).await;
    server
        .ok(
            "POST",
            "/api/client/scaner/node2",
            Some(json!({ "prefix": "dup" })),
        )
        .await;
    let (status, envelope) = server.call("GET", "/api/status?hostname=dup", None).await;
    assert_eq!(status, 409, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("node1, node2"),
        "{envelope}"
    );
}

/// Plans: a panel's product as a host's named config values; create with
/// `plan` takes them first and the body's over them.
#[tokio::test]
async fn plans_give_a_create_its_defaults() {
    let server = server_with_node1().await;
    server
        .ok(
            "POST",
            "/api/server/plan/node1",
            Some(json!({ "name": "basic", "config": { "cpu_num": 1, "mem_num": 512, "nat_num": 5 } })),
        )
        .await;
    let plans = server.ok("GET", "/api/server/plans/node1", None).await;
    assert_eq!(plans["basic"]["mem_num"], 512, "{plans}");

    let created = server
        .ok(
            "POST",
            "/api/client/create/node1",
            Some(json!({ "vm_uuid": "planned", "plan": "basic", "mem_num": 768, "hdd_num": 0 })),
        )
        .await;
    let config = &created["config"];
    assert_eq!(
        (
            &config["cpu_num"],
            &config["mem_num"],
            &config["nat_num"],
            &config["plan"]
        ),
        (&json!(1), &json!(768), &json!(5), &json!("basic")),
        "{created}"
    );

    for (body, field) in [
        (json!({ "vm_uuid": "x", "plan": "gold" }), "plan"),
        (
            json!({ "name": "bad", "config": { "cpu_num": "many" } }),
            "config.cpu_num",
        ),
        (
            json!({ "name": "bad", "config": { "vm_uuid": "a" } }),
            "config.vm_uuid",
        ),
        (json!({ "name": "a b", "config": {} }), "name"),
    ] {
        let path = if body.get("vm_uuid").is_some() {
            "/api/client/create/node1"
        } else {
            "/api/server/plan/node1"
        };
        let (status, envelope) = server.call("POST", path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {envelope}");
        assert!(
            envelope["msg"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{body}: {envelope}"
        );
    }
    server
        .ok("DELETE", "/api/server/plan/node1/basic", None)
        .await;
    assert_eq!(
        server.ok("GET", "/api/server/plans/node1", None).await,
        json!({})
    );
    let (status, _) = server
        .call("DELETE", "/api/server/plan/node1/basic", None)
        .await;
    assert_eq!(status, 404);
}

/// A sample the VM reports with its upload key: `megabytes` of traffic.
async fn report_traffic(server: &Server, key: &str, mac: &str, megabytes: f64) {
    let (status, envelope) = server
        .call_as(
            None,
            "POST",
            &format!("/api/client/upload?nic={mac}&key={key}"),
            Some(json!({ "ac_status": "running", "cpu_total": 1, "flu_usage": megabytes })),
        )
        .await;
    assert_eq!(status, 200, "{envelope}");
}

async fn power_status(server: &Server, vm: &str) -> String {
    let detail = server
        .ok("GET", &format!("/api/client/detail/node1/{vm}"), None)
        .await;
    detail["power_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_vm_over_its_traffic_quota_is_paused_until_the_reset() {
    let server = server_with_node1().await;
    server
        .ok(
            "PUT",
            "/api/server/update/node1",
            Some(json!({ "config": { "flu_over": "pause" } })),
        )
        .await;
    let mac = "52:54:00:12:34:56";
    let created = server
        .ok(
            "POST",
            "/api/client/create/node1",
            Some(
                json!({ "vm_uuid": "quota1", "mem_num": 64, "hdd_num": 0, "flu_num": 10,
                         "nic_all": { "nic0": { "nic_type": "nat", "mac_addr": mac } } }),
            ),
        )
        .await;
    assert_eq!(
        created["config"]["flu_rst"], 1,
        "the period starts on the 1st by default"
    );
    power(&server, "quota1", "S_START").await;
    let detail = server
        .ok("GET", "/api/client/detail/node1/quota1", None)
        .await;
    let key = detail["upload_key"].as_str().unwrap_or_default().to_owned();

    report_traffic(&server, &key, mac, 6.0).await;
    assert_eq!(
        power_status(&server, "quota1").await,
        "running",
        "under the quota"
    );
    report_traffic(&server, &key, mac, 6.0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while power_status(&server, "quota1").await != "paused" {
        assert!(
            std::time::Instant::now() < deadline,
            "12 MB of a 10 MB quota pauses the VM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let traffic = server.ok("GET", "/api/traffic?hostname=quota1", None).await;
    assert_eq!(traffic["used"], 12 * 1024 * 1024, "{traffic}");
    let tasks = server
        .ok("GET", "/api/system/tasget?hs_name=node1", None)
        .await;
    assert!(
        tasks.as_array().is_some_and(|tasks| tasks
            .iter()
            .any(|task| task["actions"] == "traffic-limit" && task["state"] == "done")),
        "the measure is a task: {tasks}"
    );
    let logs = server
        .ok("GET", "/api/system/logget?hs_name=node1", None)
        .await;
    assert!(
        logs.to_string().contains("traffic quota"),
        "and a log record: {logs}"
    );

    server
        .ok("POST", "/api/traffic/reset?hostname=quota1", None)
        .await;
    assert_eq!(
        power_status(&server, "quota1").await,
        "running",
        "the reset lets it go"
    );
    let traffic = server.ok("GET", "/api/traffic?hostname=quota1", None).await;
    assert_eq!(traffic["used"], 0);
}

#[tokio::test]
async fn a_php_module_reinstalls_forwards_and_publishes_on_a_full_host() {
    use openidcs_tests::netns::{self, Namespaces, PUBLIC_ADDRESS, VM_ADDRESS};
    if !netns::require_root("a_php_module_reinstalls_forwards_and_publishes_on_a_full_host") {
        return;
    }
    let mut namespaces = Namespaces::create();
    namespaces.start_echo_servers(22);
    let directory = tempfile::tempdir().expect("tempdir");
    let node = openidcs_tests::image_node(directory.path());
    let mut server = Server::start_https(&format!(
        "[libvirt]\ntest_files = true\n\n{}\
         [proxy]\nmanaged = true\nhttp_port = {}\nhttps_port = {}\n\n{}",
        namespaces.nat_config(),
        openidcs_tests::free_port(),
        openidcs_tests::free_port(),
        plugin_toml(
            "libvirt",
            "openidcs_plugin_libvirt",
            &["libvirt", "nat", "proxy", "log"],
            ""
        )
    ));
    server.client = openidcs_tests::api_client()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "node1", "type": "libvirt", "config": {
                "server_addr": format!("test://{}", node.display()),
                "system_path": "/srv/php-vms", "images_path": "/srv/php-images",
                "network_nat": "default", "ports_start": 20000, "ports_close": 20099,
                "public_addr": [PUBLIC_ADDRESS],
                "ipaddr_maps": { "lan": { "vers": "ipv4", "type": "nat", "gate": "10.231.0.1",
                                          "mask": "255.255.255.0", "from": VM_ADDRESS, "nums": 1 } },
                "system_maps": { "debian12": ["debian-12.qcow2", "2048"],
                                 "alpine3": ["alpine-3.qcow2", 1024] } } })),
        )
        .await;
    let images = server.ok("GET", "/api/client/os-images/node1", None).await;
    assert_eq!(images.as_array().map(Vec::len), Some(2), "{images}");

    let vm = "ser2612030a7c11";
    let by_name = |path: &str| format!("{path}?hostname={vm}");
    let created = server
        .ok(
            "POST",
            "/api/client/create/node1",
            Some(json!({
                "vm_uuid": vm, "os_name": "debian12", "os_pass": "Zj9kLm2Qx7Pw",
                "vc_port": 0, "vc_pass": "Zj9kLm2Qx7Pw", "cpu_num": 1, "cpu_per": 100,
                "mem_num": 1024, "hdd_num": 10240, "speed_u": 100, "speed_d": 100,
                "flu_num": 102400, "nat_num": 10, "web_num": 5, "hdd_all": [], "iso_all": [],
                "nic_all": { "eth0": { "nic_type": "nat", "mac_addr": "a1:d7:1a:02:4c:7e",
                                       "ip4_addr": "", "ip6_addr": "" } } })),
        )
        .await;
    assert_eq!(created["config"]["os_pass"], "******", "{created}");
    assert_eq!(created["config"]["nic_all"]["eth0"]["ip4_addr"], VM_ADDRESS);
    power(&server, vm, "S_START").await;

    // Reinstall, as the module's "reinstall OS" sends it: another os_name
    // and a new password. The VM runs again afterwards.
    let reinstalled = server
        .ok(
            "PUT",
            &format!("/api/client/update/node1/{vm}"),
            Some(json!({ "os_name": "alpine3", "os_pass": "N3wPassw0rd!", "hdd_all": [] })),
        )
        .await;
    assert_eq!(reinstalled["config"]["os_name"], "alpine3", "{reinstalled}");
    assert_eq!(reinstalled["power_status"], "running", "{reinstalled}");
    let tasks = server
        .ok("GET", "/api/system/tasget?hs_name=node1", None)
        .await;
    assert!(
        tasks
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|task| {
                task["actions"] == "update" && task["state"] == "done" && task["progress"] == 100
            })),
        "{tasks}"
    );
    // An image the host does not have is refused, naming the choices.
    let (status, refusal) = server
        .call(
            "PUT",
            &format!("/api/client/update/node1/{vm}"),
            Some(json!({ "os_name": "win2022" })),
        )
        .await;
    assert_eq!(status, 400, "{refusal}");
    assert!(
        refusal["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("alpine3, debian12"),
        "{refusal}"
    );

    // NAT as the module does it: check, add (no internal address: the VM's
    // own), list, check again, delete; real TCP through the forward.
    let check = server
        .ok(
            "GET",
            &format!("/api/nat/check?hostname={vm}&protocol=tcp&port=20022"),
            None,
        )
        .await;
    assert_eq!(check["available"], true, "{check}");
    server
        .ok(
            "POST",
            &format!("/api/client/natadd/node1/{vm}"),
            Some(json!({ "protocol": "tcp", "external_port": 20022, "internal_port": 22 })),
        )
        .await;
    assert_eq!(
        namespaces.echo("tcp", 20022, "php-nat").as_deref(),
        Some("php-nat"),
        "the forward carries traffic to the VM"
    );
    let listed = server.ok("GET", &by_name("/api/natlist"), None).await;
    assert_eq!(listed[0]["external_port"], 20022, "{listed}");
    assert_eq!(listed[0]["internal_port"], 22, "{listed}");
    let check = server
        .ok(
            "GET",
            &format!("/api/nat/check?hostname={vm}&protocol=tcp&port=20022"),
            None,
        )
        .await;
    assert_eq!(check["available"], false, "taken now: {check}");
    server
        .ok("DELETE", &format!("/api/client/natdel/node1/{vm}/0"), None)
        .await;
    assert_eq!(
        namespaces.echo("tcp", 20022, "gone"),
        None,
        "no forward after natdel"
    );

    // Proxy: check, add, list, check again, delete.
    let check = server
        .ok("GET", "/api/proxy/check?domain=shop.example.com", None)
        .await;
    assert_eq!(check["available"], true, "{check}");
    server
        .ok(
            "POST",
            &format!("/api/client/pxyadd/node1/{vm}"),
            Some(json!({ "web_addr": "shop.example.com", "lan_port": 80, "web_tips": "shop" })),
        )
        .await;
    let listed = server.ok("GET", &by_name("/api/proxy/list"), None).await;
    assert_eq!(listed[0]["domain"], "shop.example.com", "{listed}");
    let check = server
        .ok("GET", "/api/proxy/check?domain=shop.example.com", None)
        .await;
    assert_eq!(check["available"], false, "taken now: {check}");
    server
        .ok("DELETE", &format!("/api/client/pxydel/node1/{vm}/0"), None)
        .await;
    let listed = server.ok("GET", &by_name("/api/proxy/list"), None).await;
    assert_eq!(listed, json!([]), "{listed}");

    // Password, traffic reset, terminate.
    let answer = server
        .ok(
            "POST",
            "/api/password",
            Some(json!({ "hostname": vm, "password": "An0therPass" })),
        )
        .await;
    // The test driver answers set-user-password for a running domain as an
    // agent would.
    assert_eq!(answer["applied"], "guest-agent", "{answer}");
    server
        .ok("POST", &by_name("/api/traffic/reset"), None)
        .await;
    server
        .ok("DELETE", &format!("/api/client/delete/node1/{vm}"), None)
        .await;
    let listed = server.ok("GET", "/api/client/listup/node1", None).await;
    assert!(listed.get(vm).is_none(), "{listed}");
    server.stop(false);
}

/// The speeds of `vm` as libvirt's domain XML has them: a second host on the
/// same test driver imports the domain with a scan (the engine reads the
/// NICs' `<bandwidth>` back), then goes again without touching the domain.
async fn speeds_in_domain_xml(server: &Server, vm: &str) -> (Value, Value) {
    let mut reader = host();
    reader["name"] = json!("reader");
    server.ok("POST", "/api/server/create", Some(reader)).await;
    server
        .ok(
            "POST",
            "/api/client/scaner/reader",
            Some(json!({ "prefix": vm })),
        )
        .await;
    let imported = server
        .ok("GET", &format!("/api/client/detail/reader/{vm}"), None)
        .await;
    // Forced: the records go, the domain (node1's VM) stays.
    server
        .ok("DELETE", "/api/server/delete/reader?force=true", None)
        .await;
    (
        imported["config"]["speed_u"].clone(),
        imported["config"]["speed_d"].clone(),
    )
}

#[tokio::test]
async fn a_vm_over_its_quota_is_throttled_in_its_domain_until_the_reset() {
    let server = server_with_node1().await;
    let mac = "52:54:00:12:34:57";
    server
        .ok(
            "POST",
            "/api/client/create/node1",
            Some(
                json!({ "vm_uuid": "quota2", "mem_num": 64, "hdd_num": 0, "flu_num": 10,
                         "speed_u": 100, "speed_d": 50,
                         "nic_all": { "nic0": { "nic_type": "nat", "mac_addr": mac } } }),
            ),
        )
        .await;
    power(&server, "quota2", "S_START").await;
    assert_eq!(
        speeds_in_domain_xml(&server, "quota2").await,
        (json!(100), json!(50)),
        "the VM's own speeds"
    );
    let detail = server
        .ok("GET", "/api/client/detail/node1/quota2", None)
        .await;
    let key = detail["upload_key"].as_str().unwrap_or_default().to_owned();
    report_traffic(&server, &key, mac, 12.0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tasks = server
            .ok("GET", "/api/system/tasget?hs_name=node1", None)
            .await;
        let done = tasks.as_array().is_some_and(|tasks| {
            tasks
                .iter()
                .any(|task| task["actions"] == "traffic-limit" && task["state"] == "done")
        });
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no throttle task: {tasks}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        speeds_in_domain_xml(&server, "quota2").await,
        (json!(1), json!(1)),
        "throttled to [traffic] over_quota_mbps in the domain XML"
    );
    assert_eq!(
        power_status(&server, "quota2").await,
        "running",
        "not paused"
    );
    let stored = server
        .ok("GET", "/api/client/detail/node1/quota2", None)
        .await;
    assert_eq!(stored["config"]["speed_u"], 100, "the sold speed is kept");
    server
        .ok("POST", "/api/traffic/reset?hostname=quota2", None)
        .await;
    assert_eq!(
        speeds_in_domain_xml(&server, "quota2").await,
        (json!(100), json!(50)),
        "the reset gives the VM its own speeds again"
    );
}
