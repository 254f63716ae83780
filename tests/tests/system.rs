//! The 9 system endpoints over real HTTP against the real binary, with
//! their error cases, and the envelope on unknown routes, wrong methods and
//! bad JSON.

use openidcs_tests::{Server, binary, plugin_toml};
use serde_json::{Value, json};

fn config() -> String {
    plugin_toml("panic", "test_component_panic", &["log"], "")
}

#[tokio::test]
async fn token_endpoints() {
    let mut server = Server::start(&config());
    // tquery answers the presented token.
    let data = server.ok("GET", "/api/system/tquery", None).await;
    assert_eq!(data["token"], server.token.as_str());
    let alias = server.ok("GET", "/api/token/current", None).await;
    assert_eq!(alias["token"], server.token.as_str());

    // treset: a new token works, the old one stops at once.
    let old = server.token.clone();
    let data = server.ok("POST", "/api/system/treset", None).await;
    let new = data["token"].as_str().expect("token").to_owned();
    assert!(
        data["task_id"].as_i64().is_some(),
        "mutations carry task_id: {data}"
    );
    assert_ne!(new, old);
    assert_eq!(new.len(), 43);
    let (status, _) = server
        .call_as(Some(&old), "GET", "/api/system/statis", None)
        .await;
    assert_eq!(status, 401);
    server.token = new;
    // `async=true` (panels send it) still answers the new token: a detached
    // reset would lock the admin out.
    let data = server
        .ok("POST", "/api/system/treset?async=true", None)
        .await;
    let new = data["token"]
        .as_str()
        .expect("token with async=true")
        .to_owned();
    assert_ne!(new, server.token);
    server.token = new;
    server.ok("GET", "/api/system/statis", None).await;

    // tsetup: a chosen token, with its rules.
    for (body, field_rule) in [
        (json!({}), "token: must be 16 to 128"),
        (json!({ "token": "" }), "token: must be 16 to 128"),
        (json!({ "token": "aaaaaaaaaaaaaaaaaaaa" }), "too weak"),
        (
            json!({ "token": "has spaces in it 012345" }),
            "may only contain",
        ),
        (json!({ "token": 12345 }), "token: invalid type"),
    ] {
        let (status, envelope) = server
            .call("POST", "/api/system/tsetup", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {envelope}");
        assert!(
            envelope["msg"]
                .as_str()
                .unwrap_or_default()
                .contains(field_rule),
            "{body}: {envelope}"
        );
    }
    let chosen = "Operator_Chosen-token-42";
    let data = server
        .ok(
            "POST",
            "/api/system/tsetup",
            Some(json!({ "token": chosen })),
        )
        .await;
    assert_eq!(data["token"], chosen);
    server.token = chosen.to_owned();
    server.ok("GET", "/api/system/statis", None).await;

    // The token survives a restart and is stored only hashed.
    server.restart(false);
    server.ok("GET", "/api/system/statis", None).await;
    for entry in std::fs::read_dir(server.data_dir()).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            let found = bytes
                .windows(chosen.len())
                .any(|window| window == chosen.as_bytes());
            assert!(
                !found,
                "the token is stored in plain text in {}",
                path.display()
            );
        }
    }

    // `openidcs token reset` on the live data dir applies at once.
    let output = std::process::Command::new(binary())
        .args(["token", "reset", "--config"])
        .arg(server.config_path())
        .output()
        .expect("token reset");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert_eq!(printed.len(), 43, "only the token is printed: {printed:?}");
    let (status, _) = server.call("GET", "/api/system/statis", None).await;
    assert_eq!(status, 401, "the old token stops at once");
    server.token = printed;
    server.ok("GET", "/api/system/statis", None).await;
}

#[tokio::test]
async fn saving_writes_a_consistent_snapshot() {
    let server = Server::start(&config());
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h1", "type": "panic", "config": {} })),
        )
        .await;
    let data = server.ok("POST", "/api/system/saving", None).await;
    let path = data["path"].as_str().expect("path");
    let bytes = std::fs::read(path).expect("snapshot file");
    assert_eq!(data["bytes"].as_u64(), Some(bytes.len() as u64));
    assert!(bytes.starts_with(b"SQLite format 3\0"), "a SQLite file");
    assert!(
        bytes.windows(2).any(|window| window == b"h1"),
        "holds the host just created"
    );
    // Twice in a row gives two files.
    let again = server.ok("POST", "/api/system/save", None).await;
    assert_ne!(again["path"], data["path"]);
}

#[tokio::test]
async fn saving_keeps_only_the_newest_snapshots() {
    // Lines before any table header belong to the harness's [server].
    let server = Server::start(&format!("snapshots_kept = 2\n\n{}", config()));
    let mut paths = Vec::new();
    for _ in 0..4 {
        let data = server.ok("POST", "/api/system/saving", None).await;
        paths.push(data["path"].as_str().expect("path").to_owned());
    }
    let kept: Vec<String> = std::fs::read_dir(server.data_dir().join("backups"))
        .expect("backups")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().display().to_string())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for newest in &paths[2..] {
        assert!(kept.contains(newest), "{newest} kept: {kept:?}");
    }
}

#[tokio::test]
async fn loader_reloads_the_config_file() {
    let server = Server::start(&config());
    let engines = server.ok("GET", "/api/system/engine", None).await;
    assert_eq!(engines.as_object().map(|map| map.len()), Some(1));

    // Add a plugin and a host to the file; loader picks both up.
    let mut text = std::fs::read_to_string(server.config_path()).expect("config");
    text.push_str(&plugin_toml(
        "panic2",
        "test_component_panic",
        &["log"],
        "memory_mb = 32",
    ));
    text.push_str("\n[[host]]\nname = \"seeded\"\ntype = \"panic2\"\n");
    std::fs::write(server.config_path(), &text).expect("write config");
    let data = server.ok("POST", "/api/system/loader", None).await;
    assert_eq!(data["plugins"].as_array().map(Vec::len), Some(2), "{data}");
    assert_eq!(data["hosts"], 1);
    let engines = server.ok("GET", "/api/system/engine", None).await;
    assert_eq!(engines["panic2"]["memory_mb"], 32);
    assert_eq!(engines["panic2"]["enabled"], true);
    let hosts = server.ok("GET", "/api/server/listup", None).await;
    assert_eq!(hosts["seeded"]["type"], "panic2");

    // A config that does not parse is a 400 and changes nothing.
    std::fs::write(server.config_path(), "[server\nbroken").expect("write config");
    let (status, envelope) = server.call("POST", "/api/system/loader", None).await;
    assert_eq!(status, 400, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("config file"),
        "{envelope}"
    );
    let engines = server.ok("GET", "/api/system/engine", None).await;
    assert!(
        engines.get("panic2").is_some(),
        "previous plugins stay loaded"
    );
    // An unknown key is refused too (typos must not pass silently).
    std::fs::write(
        server.config_path(),
        format!("{text}\n[auth]\nmax_failure = 3\n"),
    )
    .expect("write config");
    let (status, envelope) = server.call("POST", "/api/system/load", None).await;
    assert_eq!(status, 400, "{envelope}");
}

#[tokio::test]
async fn statis_engine_logget_tasget() {
    let server = Server::start(&config());
    let stats = server.ok("GET", "/api/system/statis", None).await;
    for key in [
        "host_count",
        "vm_count",
        "running_vm_count",
        "task_running",
        "uptime_s",
        "version",
    ] {
        assert!(stats.get(key).is_some(), "statis lacks {key}: {stats}");
    }
    assert_eq!(stats["host_count"], 0);
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h1", "type": "panic", "config": {} })),
        )
        .await;
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h2", "type": "panic", "config": {} })),
        )
        .await;
    let stats = server.ok("GET", "/api/system/stats", None).await;
    assert_eq!(stats["host_count"], 2);

    let engines = server.ok("GET", "/api/system/engine", None).await;
    let panic = &engines["panic"];
    assert_eq!(panic["name"], "panic");
    assert_eq!(panic["enabled"], true);
    assert_eq!(panic["version"], "0.0.0");
    assert_eq!(panic["wit_version"], "0.2.0");
    assert_eq!(panic["grants"], json!(["log"]));
    assert!(panic["error"].is_null());
    assert!(
        panic["description"]
            .as_str()
            .unwrap_or_default()
            .contains("panics")
    );

    // A failed mutation is a failed task and a log record.
    let (status, _) = server
        .call(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h1", "type": "panic", "config": {} })),
        )
        .await;
    assert_eq!(status, 409);
    let failed = server
        .ok("GET", "/api/system/tasget?state=failed", None)
        .await;
    let failed = failed.as_array().expect("list");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["actions"], "server-create");
    assert_eq!(failed[0]["host"], "h1");
    assert_eq!(failed[0]["success"], false);
    for key in [
        "id",
        "vm_uuid",
        "progress",
        "message",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        assert!(failed[0].get(key).is_some(), "task lacks {key}");
    }
    let done = server
        .ok("GET", "/api/system/tasget?state=done&hs_name=h2", None)
        .await;
    assert_eq!(done.as_array().map(Vec::len), Some(1), "{done}");
    let all = server.ok("GET", "/api/system/tasker?limit=2", None).await;
    let all = all.as_array().expect("list");
    assert_eq!(all.len(), 2);
    assert!(
        all[0]["id"].as_i64() > all[1]["id"].as_i64(),
        "newest first"
    );
    let page = server
        .ok("GET", "/api/system/tasget?limit=1&offset=1", None)
        .await;
    assert_eq!(page[0]["id"], all[1]["id"]);

    let warnings = server
        .ok("GET", "/api/system/logget?level=warn&hs_name=h1", None)
        .await;
    let warnings = warnings.as_array().expect("list");
    assert!(
        warnings.iter().any(|log| log["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already exists")),
        "{warnings:?}"
    );
    for key in [
        "id",
        "level",
        "host",
        "vm_uuid",
        "actions",
        "message",
        "success",
        "created_at",
    ] {
        assert!(warnings[0].get(key).is_some(), "log lacks {key}");
    }
    let none = server
        .ok(
            "GET",
            "/api/system/logger/detail?level=error&hs_name=h2",
            None,
        )
        .await;
    assert_eq!(none, json!([]));

    for (path, rule) in [
        ("/api/system/logget?limit=0", "limit"),
        ("/api/system/logget?limit=5000", "limit"),
        ("/api/system/logget?level=loud", "level"),
        ("/api/system/logget?offset=-1", "offset"),
        ("/api/system/tasget?state=sleeping", "state"),
        ("/api/system/tasget?limit=abc", "limit"),
    ] {
        let (status, envelope) = server.call("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {envelope}");
        assert!(
            envelope["msg"].as_str().unwrap_or_default().contains(rule),
            "{path}: {envelope}"
        );
    }
}

#[tokio::test]
async fn envelope_on_unknown_routes_methods_and_bad_json() {
    let server = Server::start(&config());
    let (status, envelope) = server.call("GET", "/api/nowhere", None).await;
    assert_eq!(status, 404);
    assert!(envelope["data"].is_null());
    let (status, _) = server.call("GET", "/index.php", None).await;
    assert_eq!(status, 404);
    // `/` is the web panel's page.
    let page = server
        .client
        .get(server.url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 200);
    let csp = page.headers().get("content-security-policy").cloned();
    assert!(
        csp.is_some_and(|csp| csp
            .to_str()
            .unwrap_or_default()
            .contains("default-src 'none'")),
        "the panel's page is served with its CSP"
    );
    let (status, envelope) = server.call("DELETE", "/api/system/statis", None).await;
    assert_eq!(status, 405, "{envelope}");
    let (status, envelope) = server
        .call_raw("POST", "/api/server/create", "{\"name\": ")
        .await;
    assert_eq!(status, 400);
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("malformed JSON"),
        "{envelope}"
    );
    let (status, envelope) = server
        .call_raw("POST", "/api/server/create", "[1, 2]")
        .await;
    assert_eq!(status, 400, "{envelope}");
    let (status, envelope) = server
        .call(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h1", "type": "panic", "config": { "ports_start": "many" } })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("config.ports_start"),
        "{envelope}"
    );
    let (status, envelope) = server
        .call(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "h1", "type": "nonesuch" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown engine"),
        "{envelope}"
    );
    let oversized: Value = json!({ "name": "x".repeat(2 << 20) });
    let (status, envelope) = server
        .call("POST", "/api/server/create", Some(oversized))
        .await;
    assert_eq!(status, 413, "{envelope}");
}

/// A client that trickles its headers (slowloris) is cut off after
/// `[server] header_read_timeout_s`, while a normal request on the next
/// connection is served.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Lines before any table header belong to the harness's [server].
    let server = Server::start(&format!("header_read_timeout_s = 1\n\n{}", config()));
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connects");
    slow.write_all(b"GET /api/system/statis HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("writes part of the headers");
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 1024];
    // Never finishing the headers: the server must close the connection
    // (EOF, an error, or a 408 and then EOF) well before 10 s.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match slow.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was still open after 10 s");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "closed only after the timeout: {:?}",
        started.elapsed()
    );
    server.ok("GET", "/api/system/statis", None).await;
}
