//! The engine written in Python (examples/python-engine, built with
//! componentize-py by `make examples`) loaded by the real server and driving
//! libvirt's test driver through the `libvirt` capability, granted only
//! `libvirt` and `log`.

use openidcs_tests::{Server, example_component, plugin_toml_at};
use serde_json::{Value, json};

fn config() -> String {
    let mut text = String::from("[poller]\ninterval_s = 1\n\n");
    // CPython's heap needs more than the Rust engine's 64 MiB default.
    text.push_str(&plugin_toml_at(
        "python",
        &example_component("python_engine"),
        &["libvirt", "log"],
        "memory_mb = 256\ntimeout_ms = 30000",
    ));
    text
}

fn power(listed: &Value) -> &str {
    listed["test"]["power_status"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_python_engine_adopts_and_operates_domains() {
    let server = Server::start(&config());
    let engines = server.ok("GET", "/api/system/engine", None).await;
    let engine = &engines["python"];
    assert_eq!(engine["enabled"], true, "{engines}");
    assert_eq!(engine["version"], "0.1.0");
    assert_eq!(engine["wit_version"], "0.1.0");
    assert_eq!(engine["grants"], json!(["libvirt", "log"]));
    assert!(
        engine["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Python"),
        "{engine}"
    );

    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "py", "type": "python", "config": {
                "server_addr": "test:///default", "public_addr": ["127.0.0.1"] } })),
        )
        .await;
    // The test driver starts with one running domain, "test"; the engine
    // reads its definition back (vm-scan → vm-get, XML parsed in Python).
    let scan = server
        .ok(
            "POST",
            "/api/client/scaner/py",
            Some(json!({ "prefix": "te" })),
        )
        .await;
    assert_eq!(
        (scan["scanned"].as_u64(), scan["added"].as_u64()),
        (Some(1), Some(1)),
        "{scan}"
    );
    let listed = server.ok("GET", "/api/client/listup/py", None).await;
    assert_eq!(power(&listed), "running", "{listed}");
    assert_eq!(listed["test"]["config"]["cpu_num"], 2, "{listed}");

    for (action, expected) in [
        ("hard_stop", "stopped"),
        ("start", "running"),
        ("pause", "paused"),
        ("resume", "running"),
    ] {
        let answer = server
            .ok(
                "POST",
                "/api/client/powers/py/test",
                Some(json!({ "action": action })),
            )
            .await;
        assert_eq!(answer["power_status"], expected, "after {action}: {answer}");
        let listed = server.ok("GET", "/api/client/listup/py", None).await;
        assert_eq!(power(&listed), expected, "libvirt agrees after {action}");
    }

    // vm-usage in Python feeds the poller.
    let mut history = Value::Null;
    for _ in 0..50 {
        let status = server.ok("GET", "/api/client/status/py/test", None).await;
        history = status["history"].clone();
        if history
            .as_array()
            .is_some_and(|samples| !samples.is_empty())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(history[0]["ac_status"], "running", "{history}");

    // What the engine does not do is a 400 naming it, and nothing changes.
    let (status, envelope) = server
        .call(
            "POST",
            "/api/client/create/py",
            Some(json!({ "vm_uuid": "py-new", "cpu_num": 1, "mem_num": 64 })),
        )
        .await;
    assert_eq!(status, 400, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("python-adopt adopts existing domains and does not create VMs"),
        "{envelope}"
    );
    let listed = server.ok("GET", "/api/client/listup/py", None).await;
    assert!(listed.get("py-new").is_none(), "{listed}");

    // The engine's own log line, through the `log` capability.
    let logs = server
        .ok("GET", "/api/system/logget?hs_name=py&limit=200", None)
        .await;
    assert!(
        logs.as_array()
            .is_some_and(|logs| logs.iter().any(|log| log["message"]
                .as_str()
                .unwrap_or_default()
                .contains("python-adopt: hard_stop test -> stopped"))),
        "{logs}"
    );
}
