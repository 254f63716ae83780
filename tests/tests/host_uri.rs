//! A host's `server_addr` is a libvirt URI, and libvirt URIs can run
//! programs (`qemu+ssh://...?command=`, `netcat=`, `qemu+ext://`), read files
//! (`test:///<file>` echoes a file's first line in its error, `keyfile=`)
//! or skip checks (`no_verify=`). Through the API only the allow-listed
//! forms pass; each hostile value is 400 naming the field, creates no host,
//! and starts no process (a marker script never runs).

use std::path::Path;

use openidcs_tests::{Server, plugin_toml};
use serde_json::json;

fn config() -> String {
    plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    )
}

/// A script that leaves `marker` behind if anything ever runs it.
fn marker_script(directory: &Path) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let marker = directory.join("ran");
    let script = directory.join("run.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display()))
        .expect("writing the marker script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("making it executable");
    (script.display().to_string(), marker)
}

#[tokio::test]
async fn hostile_server_addr_values_are_refused_and_run_nothing() {
    let server = Server::start(&config());
    let directory = tempfile::tempdir().expect("temp dir");
    let (script, marker) = marker_script(directory.path());
    let secret_file = directory.path().join("secret.xml");
    std::fs::write(&secret_file, "top-secret-first-line\n").expect("writing the file");
    let secret = secret_file.display().to_string();

    let hostile = [
        format!("qemu+ssh://localhost/system?command={script}"),
        format!("qemu+ssh://root@localhost/system?netcat={script}"),
        format!("qemu+ssh://localhost/system?COMMAND={script}"),
        format!("qemu+ssh://localhost/system?comm%61nd={script}"),
        format!("qemu+ssh://localhost/system?socket={script}"),
        format!("qemu+ssh://localhost/system?keyfile={secret}"),
        "qemu+ssh://localhost/system?no_verify=1".to_owned(),
        "qemu+ssh://localhost/system?known_hosts_verify=ignore".to_owned(),
        format!("qemu+ext:///system?command={script}"),
        format!("qemu+unix:///system?socket={script}"),
        format!("qemu:///system?socket={script}"),
        "qemu+ssh://-oProxyCommand=touch/system".to_owned(),
        "qemu+ssh://-oProxyCommand@localhost/system".to_owned(),
        "qemu+ssh://localhost:0/system".to_owned(),
        "qemu+ssh://localhost/session".to_owned(),
        "qemu+tcp://localhost/system".to_owned(),
        format!("test://{secret}"),
        "test:///etc/passwd".to_owned(),
        "test:///default?x=1".to_owned(),
        "test://localhost/default".to_owned(),
        "qemu:///system\n".to_owned(),
        "http://evil/".to_owned(),
    ];
    for server_addr in &hostile {
        for (method, path) in [("POST", "/api/server/create")] {
            let (status, envelope) = server
                .call(
                    method,
                    path,
                    Some(json!({ "name": "h1", "type": "libvirt",
                                 "config": { "server_addr": server_addr } })),
                )
                .await;
            assert_eq!(status, 400, "{server_addr}: {envelope}");
            let message = envelope["msg"].as_str().unwrap_or_default();
            assert!(
                message.contains("config.server_addr"),
                "{server_addr}: {message}"
            );
            assert!(!message.contains("top-secret"), "{server_addr}: {message}");
        }
    }
    // An allowed host, then the same values through an update.
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h1", "type": "libvirt",
                         "config": { "server_addr": "test:///default" } })),
        )
        .await;
    for server_addr in &hostile {
        let (status, envelope) = server
            .call(
                "PUT",
                "/api/server/update/h1",
                Some(json!({ "config": { "server_addr": server_addr } })),
            )
            .await;
        assert_eq!(status, 400, "{server_addr}: {envelope}");
    }
    // The host still answers through its allowed URI.
    server.ok("GET", "/api/server/status/h1", None).await;
    let hosts = server.ok("GET", "/api/server/listup", None).await;
    assert_eq!(
        hosts.as_object().map(|hosts| hosts.len()),
        Some(1),
        "{hosts}"
    );
    assert!(!marker.exists(), "a hostile URI ran the marker script");
}

#[tokio::test]
async fn allowed_forms_pass() {
    let server = Server::start(&config());
    for (index, server_addr) in [
        "test:///default",
        "qemu:///system",
        "qemu+ssh://root@203.0.113.7/system",
        "qemu+ssh://ops.example-1.net:2222/system",
        "qemu+ssh://admin@[2001:db8::7]:22/system",
        "qemu+tls://hv1.example.net/system",
        "lxc:///",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("h{index}");
        server
            .ok(
                "POST",
                "/api/server/create",
                Some(json!({ "name": name, "type": "libvirt",
                             "config": { "server_addr": server_addr } })),
            )
            .await;
    }
}

#[tokio::test]
async fn the_config_file_may_allow_more() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = directory.path().join("node.xml");
    std::fs::write(
        &node,
        "<node><domain type='test'><name>bench-1</name><memory>65536</memory>\
         <os><type>hvm</type></os></domain></node>",
    )
    .expect("writing the driver file");
    let mut text = String::from("[libvirt]\nuri_params = [\"keyfile\"]\ntest_files = true\n\n");
    text.push_str(&config());
    let server = Server::start(&text);
    for (index, server_addr) in [
        format!("test://{}", node.display()),
        "qemu+ssh://root@203.0.113.7/system?keyfile=/root/.ssh/hv1".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        server
            .ok(
                "POST",
                "/api/server/create",
                Some(json!({ "name": format!("h{index}"), "type": "libvirt",
                             "config": { "server_addr": server_addr } })),
            )
            .await;
    }
    let (status, _) = server
        .call(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h9", "type": "libvirt",
                         "config": { "server_addr": "qemu+ssh://h/system?command=/bin/true" } })),
        )
        .await;
    assert_eq!(status, 400);
}
