//! The web panel in Debian's headless Chromium (playwright-core), over the
//! server's HTTPS: sign in, a wrong field named beside it, create a VM
//! through the form, the list showing it start without a reload (the event
//! stream), power buttons, NAT add and delete (real nftables in a network
//! namespace, as root), a NIC from the pool and a proxy (the server's own
//! nginx) added and deleted, password reset, reinstall with another image,
//! zh-CN and back, tasks and logs filtered, sign out,
//! 390×844, keyboard reach, a read-only token scoped to one host, the
//! customer page through templogin with 403 on
//! another VM, and no errors in the browser console. Screenshots of each
//! screen go to `tests/artifacts/panel/`. The browser's checks are in
//! `tests/browser/panel.mjs`; the server's state is checked here.

use std::time::Duration;

use openidcs_tests::netns::{self, Namespaces, PUBLIC_ADDRESS};
use openidcs_tests::{
    DomainCleanup, Server, browser_report, browser_script, browser_skip_reason, free_port,
    image_host_config, image_node, kvm_server, plugin_toml, qemu_system_skip_reason, root,
};
use serde_json::json;

const CUSTOMER_MAC: &str = "52:54:00:e8:00:01";

fn have_nginx() -> bool {
    std::process::Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn skip_reason() -> Option<String> {
    if let Some(reason) = browser_skip_reason() {
        return Some(reason);
    }
    if !root()
        .join("host/panel/node_modules/uplot/dist/uPlot.esm.js")
        .exists()
    {
        return Some("host/panel/node_modules is missing (make setup installs uplot)".to_owned());
    }
    None
}

#[tokio::test]
async fn the_panel_in_headless_chromium() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED the_panel_in_headless_chromium: {reason}");
        assert!(
            std::env::var("CI").is_err(),
            "CI installs chromium and npm packages: {reason}"
        );
        return;
    }
    let driver = browser_script("panel.mjs");
    // NAT needs nft, so root: in a network namespace of the test's own.
    let namespaces = netns::is_root().then(Namespaces::create);
    let nat = match &namespaces {
        Some(namespaces) => namespaces.nat_config(),
        None => {
            println!("NAT steps skipped: not root, so no nft (as root they run)");
            String::new()
        }
    };
    // The proxy needs nginx (make setup installs it): the server runs its own.
    let proxy = if have_nginx() {
        format!(
            "[proxy]\nmanaged = true\nhttp_port = {}\nhttps_port = {}\n\n",
            free_port(),
            free_port()
        )
    } else {
        println!("proxy steps skipped: no nginx on PATH (make setup installs it)");
        String::new()
    };
    // A test-driver host with two images, for the pickers and the reinstall.
    let directory = tempfile::tempdir().expect("tempdir");
    let node = image_node(directory.path());
    let mut host_config = image_host_config(&node);
    if let Some(config) = host_config.as_object_mut() {
        config.extend(
            json!({ "public_addr": [PUBLIC_ADDRESS], "ports_start": 20000, "ports_close": 20999,
                    "ipaddr_maps": { "lan": { "vers": "ipv4", "type": "nat", "gate": "10.231.0.1",
                                              "mask": "255.255.255.0", "from": "10.231.0.2", "nums": 50 } } })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
    }
    let server = Server::start_https(&format!(
        "[libvirt]\ntest_files = true\n\n{nat}{proxy}{}",
        plugin_toml(
            "libvirt",
            "openidcs_plugin_libvirt",
            &["libvirt", "nat", "proxy", "log"],
            ""
        )
    ));
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h1", "type": "libvirt", "config": host_config })),
        )
        .await;
    // A second host, which a token scoped to h1 must not show.
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h2", "type": "libvirt",
                         "config": { "server_addr": "test:///default" } })),
        )
        .await;
    let viewer = server
        .ok(
            "POST",
            "/api/system/tokens",
            Some(json!({ "name": "viewer", "role": "read-only", "hosts": ["h1"] })),
        )
        .await;
    let viewer = viewer["token"]
        .as_str()
        .expect("the viewer's token")
        .to_owned();
    for (vm, mac) in [("cust1", CUSTOMER_MAC), ("other1", "52:54:00:e8:00:02")] {
        server
            .ok(
                "POST",
                "/api/client/create/h1",
                Some(json!({ "vm_uuid": vm, "mem_num": 64, "hdd_num": 0,
                             "nic_all": { "eth0": { "nic_type": "nat", "mac_addr": mac } } })),
            )
            .await;
    }
    // Two samples of the customer's VM, for its charts' history.
    let detail = server.ok("GET", "/api/client/detail/h1/cust1", None).await;
    let upload_key = detail["upload_key"]
        .as_str()
        .expect("upload key")
        .to_owned();
    for cpu in [12.5, 30.0] {
        let response = server
            .client
            .post(server.url(&format!("/api/client/upload?nic={CUSTOMER_MAC}")))
            .header("X-Upload-Key", &upload_key)
            .json(
                &json!({ "ac_status": "running", "cpu_total": 1, "cpu_usage": cpu,
                           "mem_total": 64, "mem_usage": 40, "hdd_total": 0, "hdd_usage": 0,
                           "flu_usage": 1, "network_u": 0.5, "network_d": 1.5 }),
            )
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), 200);
        // Samples a moment apart, as a VM sends them.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let sign_on = server
        .ok("GET", "/api/client/temptoken/h1/cust1", None)
        .await;
    let templogin = sign_on["url"].as_str().expect("url").to_owned();
    assert!(templogin.starts_with("https://"), "{templogin}");

    let shots = root().join("tests/artifacts/panel");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("tests/artifacts/panel");
    let mut node = tokio::process::Command::new("node");
    node.arg(&driver)
        .env("PANEL_BASE", &server.base)
        .env("PANEL_TOKEN", &server.token)
        .env("PANEL_VIEWER_TOKEN", &viewer)
        .env("PANEL_HOST", "h1")
        .env("PANEL_TEMPLOGIN", &templogin)
        .env("PANEL_CUSTOMER_VM", "cust1")
        .env("PANEL_OTHER_VM", "other1")
        .env("PANEL_UPLOAD_KEY", &upload_key)
        .env("PANEL_CUSTOMER_MAC", CUSTOMER_MAC)
        .env("PANEL_NAT", if namespaces.is_some() { "1" } else { "0" })
        .env("PANEL_PROXY", if proxy.is_empty() { "0" } else { "1" })
        .env("PANEL_SHOTS", &shots);
    let (report, output) = browser_report(node, Duration::from_secs(300)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for step in report["steps"].as_array().into_iter().flatten() {
        println!("{}", step.as_str().unwrap_or_default());
    }
    assert!(output.status.success(), "{stderr}");
    let failures = report["failures"].as_array().cloned().unwrap_or_default();
    assert!(failures.is_empty(), "browser checks failed: {failures:#?}");
    let screenshots = report["screenshots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(screenshots.len() >= 14, "{screenshots:?}");
    for path in &screenshots {
        let png = std::fs::read(path.as_str().unwrap_or_default()).expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 2000, "{path}");
    }

    // What the browser did is the server's state.
    let vm = server.ok("GET", "/api/client/detail/h1/panel1", None).await;
    assert_eq!(vm["power_status"], "running", "{vm}");
    assert_eq!(vm["config"]["cpu_num"], 1);
    assert_eq!(
        vm["config"]["os_name"], "alpine3",
        "created with debian12, reinstalled with alpine3 from the page: {vm}"
    );
    assert_eq!(
        vm["config"]["hdd_num"], 2048,
        "hdd_num 0 from the form: the image's 2 GiB is what the VM has: {vm}"
    );
    let nics = server.ok("GET", "/api/client/iplist/h1/panel1", None).await;
    assert_eq!(
        nics.as_array().map(Vec::len),
        Some(1),
        "the NIC added and deleted in the browser is gone: {nics}"
    );
    let proxies = server.ok("GET", "/api/client/pxyget/h1/panel1", None).await;
    assert_eq!(
        proxies,
        json!([]),
        "the proxy deleted in the browser is gone"
    );
    assert_eq!(
        vm["config"]["os_pass"], "******",
        "the password is kept (hashed)"
    );
    let rules = server.ok("GET", "/api/client/natget/h1/panel1", None).await;
    assert_eq!(rules, json!([]), "the rule deleted in the browser is gone");
    if let Some(namespaces) = &namespaces {
        let listing = namespaces.nft(&["list", "chain", "inet", "openidcs", "prerouting"]);
        assert!(
            !listing.contains("20080"),
            "no forward left in nft: {listing}"
        );
    }
    let tasks = server
        .ok("GET", "/api/system/tasget?hs_name=h1&limit=100", None)
        .await;
    let actions: Vec<&str> = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["vm_uuid"] == "panel1")
        .filter_map(|task| task["actions"].as_str())
        .collect();
    for action in [
        "create",
        "powers:start",
        "powers:pause",
        "powers:resume",
        "ipadd_",
        "ipdel_",
        "password",
        "update",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    if !proxy.is_empty() {
        for action in ["pxyadd", "pxydel"] {
            assert!(actions.contains(&action), "{action} in {actions:?}");
        }
    }
    if namespaces.is_some() {
        for action in ["natadd", "natdel"] {
            assert!(actions.contains(&action), "{action} in {actions:?}");
        }
    }
}

const CONSOLE_VM: &str = "oidcs-test-panelcons";

/// On a real hypervisor (qemu:///system, as root), the console embedded in
/// the VM page connects and draws the VM's screen (its firmware: no disk).
#[tokio::test]
async fn the_console_embedded_in_the_vm_page_draws() {
    if let Some(reason) = skip_reason().or_else(qemu_system_skip_reason) {
        println!("SKIPPED the_console_embedded_in_the_vm_page_draws: {reason}");
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with libvirtd and chromium: {reason}"
        );
        return;
    }
    let driver = browser_script("panel-console.mjs");
    let _cleanup = DomainCleanup(CONSOLE_VM);
    let server = kvm_server().await;
    server
        .ok(
            "POST",
            "/api/client/create/kvm",
            Some(json!({ "vm_uuid": CONSOLE_VM, "cpu_num": 1, "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    let started = server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{CONSOLE_VM}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    assert_eq!(started["power_status"], "running", "{started}");
    let shot = root().join("tests/artifacts/panel-console.png");
    let _ = std::fs::remove_file(&shot);
    let mut node = tokio::process::Command::new("node");
    node.arg(&driver)
        .env("PANEL_BASE", &server.base)
        .env("PANEL_TOKEN", &server.token)
        .env("PANEL_HOST", "kvm")
        .env("PANEL_VM", CONSOLE_VM)
        .env("PANEL_SHOT", &shot);
    let (report, _) = browser_report(node, Duration::from_secs(180)).await;
    println!("browser report: {report}");
    assert_eq!(report["failures"], json!([]), "{report}");
    assert_eq!(
        report["console"],
        json!([]),
        "no errors in the browser console: {report}"
    );
    assert_eq!(report["state"], "connected", "{report}");
    assert!(
        report["distinct"].as_u64().unwrap_or_default() > 1,
        "the embedded console draws the VM's screen: {report}"
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG in tests/artifacts");
}
