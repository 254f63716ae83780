//! Plugin sandboxing and loading: a runaway loop, a memory bomb and a panic
//! each fail only their own call; a plugin importing an interface it was
//! not granted, or a file that is not a component, is refused at load and
//! listed with its reason; the second start loads from the precompiled cache.

use std::time::{Duration, Instant};

use openidcs_tests::{Server, binary, component, plugin_toml};
use serde_json::json;

fn config(directory: &std::path::Path) -> String {
    let not_wasm = directory.join("not-a-plugin.wasm");
    std::fs::write(&not_wasm, "#!/bin/sh\necho hello\n").expect("write");
    // A valid core module (no component layer).
    let core = directory.join("core-module.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let mut text = String::new();
    text.push_str(&plugin_toml(
        "loop",
        "test_component_loop_forever",
        &["log"],
        "timeout_ms = 1000",
    ));
    text.push_str(&plugin_toml(
        "bomb",
        "test_component_memory_bomb",
        &["log"],
        "memory_mb = 16",
    ));
    text.push_str(&plugin_toml("panic", "test_component_panic", &["log"], ""));
    text.push_str(&plugin_toml(
        "natless",
        "test_component_nat_ungranted",
        &["log"],
        "",
    ));
    text.push_str(&format!(
        "[[plugin]]\nname = \"notwasm\"\npath = {:?}\n",
        not_wasm.display().to_string()
    ));
    text.push_str(&format!(
        "[[plugin]]\nname = \"core\"\npath = {:?}\n",
        core.display().to_string()
    ));
    text
}

#[tokio::test]
async fn misbehaving_plugins_fail_only_their_call() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&config(scratch.path()));
    for (host, engine) in [("h-loop", "loop"), ("h-bomb", "bomb"), ("h-panic", "panic")] {
        server
            .ok(
                "POST",
                "/api/server/create",
                Some(json!({ "name": host, "type": engine, "config": {} })),
            )
            .await;
    }

    // The runaway loop dies at its 1 s deadline while the server answers others.
    let started = Instant::now();
    let looping = server.call("GET", "/api/server/status/h-loop?refresh=true", None);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let stats = server.ok("GET", "/api/system/statis", None).await;
        (stats, asked.elapsed())
    };
    let ((status, envelope), (stats, answered_in)) = tokio::join!(looping, meanwhile);
    assert_eq!(status, 500, "{envelope}");
    let message = envelope["msg"].as_str().unwrap_or_default();
    assert!(
        message.contains("loop") && message.contains("1000 ms deadline"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "interrupted on time: {:?}",
        started.elapsed()
    );
    assert!(
        answered_in < Duration::from_millis(500),
        "statis waited {answered_in:?} behind the loop"
    );
    assert_eq!(stats["host_count"], 3);

    // The memory bomb hits its 16 MiB cap.
    let (status, envelope) = server
        .call("GET", "/api/server/status/h-bomb?refresh=true", None)
        .await;
    assert_eq!(status, 500, "{envelope}");
    let message = envelope["msg"].as_str().unwrap_or_default();
    assert!(
        message.contains("bomb") && message.contains("16 MiB memory limit"),
        "{message}"
    );

    // The panic is a trap with the panic message; the next call is a fresh
    // instance and fails the same way (no poisoned state).
    for _ in 0..2 {
        let (status, envelope) = server
            .call("GET", "/api/server/status/h-panic?refresh=true", None)
            .await;
        assert_eq!(status, 500, "{envelope}");
        let message = envelope["msg"].as_str().unwrap_or_default();
        assert!(
            message.contains("panic") && message.contains("deliberate test panic for host h-panic"),
            "{message}"
        );
    }

    // Each fault is a log record; the plugin's stdout is captured, tagged.
    let errors = server
        .ok("GET", "/api/system/logget?level=error&limit=50", None)
        .await;
    let errors = errors.as_array().expect("list");
    for needle in ["deadline", "memory limit", "deliberate test panic"] {
        assert!(
            errors
                .iter()
                .any(|log| log["message"].as_str().unwrap_or_default().contains(needle)),
            "no error log with {needle:?}: {errors:?}"
        );
    }
    let infos = server
        .ok("GET", "/api/system/logget?level=info&hs_name=h-panic", None)
        .await;
    assert!(
        infos
            .as_array()
            .expect("list")
            .iter()
            .any(|log| log["actions"] == "plugin:panic"
                && log["message"] == "about to fail for host h-panic"),
        "{infos}"
    );

    // And the server is fine.
    server.ok("GET", "/api/system/statis", None).await;
}

#[tokio::test]
async fn refused_plugins_are_listed_with_their_reason() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&config(scratch.path()));
    let engines = server.ok("GET", "/api/system/engine", None).await;
    let natless = &engines["natless"];
    assert_eq!(natless["enabled"], false);
    let error = natless["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("plugin natless imports openidcs:engine/nat")
            && error.contains("not granted \"nat\""),
        "{error}"
    );
    let error = engines["notwasm"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("not a WebAssembly component"), "{error}");
    let error = engines["core"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("core WebAssembly module, not a component"),
        "{error}"
    );
    // The good ones loaded regardless.
    assert_eq!(engines["panic"]["enabled"], true);
    // A host on a refused engine answers 500 naming why, and nothing else breaks.
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h-natless", "type": "natless", "config": {} })),
        )
        .await;
    let (status, envelope) = server
        .call("GET", "/api/server/status/h-natless?refresh=true", None)
        .await;
    assert_eq!(status, 500);
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("engine natless is not loaded"),
        "{envelope}"
    );
}

#[tokio::test]
async fn second_start_loads_from_the_precompiled_cache() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&config(scratch.path()));
    let engines = server.ok("GET", "/api/system/engine", None).await;
    assert_eq!(engines["panic"]["precompiled_cache_hit"], false);
    server.restart(false);
    let engines = server.ok("GET", "/api/system/engine", None).await;
    for name in ["loop", "bomb", "panic"] {
        assert_eq!(
            engines[name]["precompiled_cache_hit"], true,
            "{name}: {}",
            engines[name]
        );
    }
    let logs = server
        .ok("GET", "/api/system/logget?level=info&limit=200", None)
        .await;
    assert!(
        logs.as_array()
            .expect("list")
            .iter()
            .any(|log| log["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("plugin panic loaded (from the precompiled cache")),
        "{logs}"
    );
}

#[test]
fn plugin_check_reports_versions_and_refusals() {
    let output = std::process::Command::new(binary())
        .args(["plugin", "check"])
        .arg(component("test_component_nat_ungranted"))
        .output()
        .expect("plugin check");
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("export: openidcs:engine/engine@0.2.2"),
        "{report}"
    );
    assert!(
        report.contains("import: openidcs:engine/nat@0.2.2"),
        "{report}"
    );
    assert!(report.contains("wit version: 0.2.2"), "{report}");
    assert!(report.contains("grants needed: [nat]"), "{report}");

    let output = std::process::Command::new(binary())
        .args(["plugin", "check"])
        .arg(openidcs_tests::root().join("Cargo.toml"))
        .output()
        .expect("plugin check");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a WebAssembly component"));
}
