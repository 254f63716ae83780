//! The `http` grant (`caps::http`): an engine reaches its host's API and
//! nothing else, with the host's credential added by the server (the engine
//! never holds it), and a request elsewhere is refused and logged. The API
//! is a plain TCP server of this test's own on loopback that records what it
//! receives; a second one on the "other" port records whether anything
//! reached it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openidcs_tests::{Server, binary, component, plugin_toml};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The request heads a listener received.
type Seen = Arc<Mutex<Vec<String>>>;

/// Answer every request with 200 `probe-ok`, recording its head.
fn serve(listener: TcpListener, seen: Seen) {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                seen.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nprobe-ok",
                    )
                    .await;
            });
        }
    });
}

/// Two listeners on ports `p` and `p ^ 1` (the probe's "other" port).
async fn listener_pair() -> (TcpListener, TcpListener) {
    for _ in 0..50 {
        let own = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = own.local_addr().expect("address").port();
        if let Ok(other) = TcpListener::bind(("127.0.0.1", port ^ 1)).await {
            return (own, other);
        }
    }
    panic!("no free pair of neighbouring ports");
}

#[tokio::test]
async fn an_engine_reaches_its_hosts_api_only_and_never_holds_the_credential() {
    let (own, other) = listener_pair().await;
    let port = own.local_addr().expect("address").port();
    let api_seen = Seen::default();
    let other_seen = Seen::default();
    serve(own, api_seen.clone());
    serve(other, other_seen.clone());

    let server = Server::start(&plugin_toml(
        "probe",
        "test_component_http_probe",
        &["http", "log"],
        "",
    ));
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "api1", "type": "probe", "config": {
                "server_addr": format!("http://127.0.0.1:{port}"),
                "server_user": "panel", "server_pass": "s3cret-pass" } })),
        )
        .await;
    let (status, envelope) = server
        .call("GET", "/api/server/status/api1?refresh=true", None)
        .await;
    let report = envelope["msg"].as_str().unwrap_or_default().to_owned();
    println!("{status}: {report}");
    assert!(
        report.contains(r#"own=Ok((200, "probe-ok"))"#),
        "the host's own API answered: {report}"
    );
    assert!(
        report.contains(r#"other=Err("ErrorCode::HttpRequestDenied")"#),
        "another authority is refused: {report}"
    );
    assert!(
        !report.contains("s3cret-pass"),
        "the engine was never given the password: {report}"
    );

    let heads = api_seen.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("get /probe http/1.1"), "{head}");
    // base64("panel:s3cret-pass"), added by the server; the engine's own
    // Authorization is gone.
    assert!(
        head.contains("authorization: basic cgfuzww6cznjcmv0lxbhc3m="),
        "{head}"
    );
    assert!(!head.contains("made-up-by-the-engine"), "{head}");
    assert!(head.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        other_seen.lock().expect("lock").is_empty(),
        "nothing reached the other port"
    );

    let logs = server
        .ok("GET", "/api/system/logget?hs_name=api1&limit=50", None)
        .await;
    let denied = logs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|record| record["message"].as_str())
        .find(|message| message.contains("HTTP request denied"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        denied.contains(&format!("127.0.0.1:{}", port ^ 1)) && denied.contains("probe"),
        "a log record names the plugin and the refused authority: {logs}"
    );
}

/// A unix socket API (Docker's, Podman's): only one the config file lists.
#[tokio::test]
async fn a_unix_socket_api_is_reached_as_localhost() {
    let directory = tempfile::tempdir().expect("tempdir");
    let socket = directory.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let seen = Seen::default();
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let read = stream.read(&mut head).await.unwrap_or(0);
            recorded
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&head[..read]).into_owned());
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nprobe-ok",
                )
                .await;
        }
    });
    let address = format!("unix://{}", socket.display());
    let server = Server::start(&format!(
        "[libvirt]\napi_sockets = [{:?}]\n\n{}",
        socket.display().to_string(),
        plugin_toml("probe", "test_component_http_probe", &["http", "log"], "")
    ));
    // A socket the config does not list is refused at the API; a client
    // certificate only over https, its key in server_pass.
    for (config, field) in [
        (
            json!({ "server_addr": "unix:///var/run/docker.sock" }),
            "api_sockets",
        ),
        (
            json!({ "server_addr": address, "extend_data": { "tls_client_cert": "x" } }),
            "config.extend_data.tls_client_cert: a client certificate needs an https://",
        ),
        (
            json!({ "server_addr": "https://127.0.0.1:2376",
                    "extend_data": { "tls_client_cert": "not PEM" } }),
            "config.extend_data.tls_client_cert: TLS certificate has no PEM block",
        ),
        (
            json!({ "server_addr": "https://127.0.0.1:2376",
                    "extend_data": { "tls_fingerprint": "ab:cd" } }),
            "config.extend_data.tls_fingerprint: must be a SHA-256 fingerprint",
        ),
    ] {
        let (status, envelope) = server
            .call(
                "POST",
                "/api/server/create",
                Some(json!({ "name": "d2", "type": "probe", "config": config })),
            )
            .await;
        assert_eq!(status, 400, "{envelope}");
        assert!(
            envelope["msg"].as_str().unwrap_or_default().contains(field),
            "{field}: {envelope}"
        );
    }
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "d1", "type": "probe",
                         "config": { "server_addr": address, "server_pass": "tok-123" } })),
        )
        .await;
    let (_, envelope) = server
        .call("GET", "/api/server/status/d1?refresh=true", None)
        .await;
    let report = envelope["msg"].as_str().unwrap_or_default();
    assert!(report.contains(r#"own=Ok((200, "probe-ok"))"#), "{report}");
    assert!(report.contains("HttpRequestDenied"), "{report}");
    let head = seen.lock().expect("lock").join("").to_ascii_lowercase();
    assert!(head.contains("authorization: bearer tok-123"), "{head}");
    assert!(head.contains("host: localhost"), "{head}");
}

#[tokio::test]
async fn an_engine_without_the_grant_is_refused_at_load() {
    let server = Server::start(&plugin_toml(
        "probe",
        "test_component_http_probe",
        &["log"],
        "",
    ));
    let engines = server.ok("GET", "/api/system/engine", None).await;
    let text = engines.to_string();
    assert!(
        text.contains("not granted \\\"http\\\""),
        "the load failure names the grant: {text}"
    );
    let output = std::process::Command::new(binary())
        .args(["plugin", "check"])
        .arg(component("test_component_http_probe"))
        .output()
        .expect("plugin check");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("grants needed: [") && report.contains("http"),
        "{report}"
    );
}
