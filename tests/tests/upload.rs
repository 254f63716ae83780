//! `POST /api/client/upload`: VMs report status samples with their own
//! upload key (no admin token); samples show in `status` and `detail`.

use openidcs_tests::{Server, plugin_toml};
use serde_json::{Value, json};

const MAC: &str = "52:54:00:12:34:56";

async fn prepare() -> (Server, String) {
    let server = Server::start(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    ));
    server
        .ok("POST", "/api/server/create", Some(json!({ "name": "local", "type": "libvirt", "config": { "server_addr": "test:///default", "network_nat": "default" } })))
        .await;
    server
        .ok(
            "POST",
            "/api/client/create/local",
            Some(json!({ "vm_uuid": "up1", "mem_num": 64, "hdd_num": 0,
                         "nic_all": { "nic0": { "nic_type": "nat", "mac_addr": MAC } } })),
        )
        .await;
    let detail = server.ok("GET", "/api/client/detail/local/up1", None).await;
    let key = detail["upload_key"]
        .as_str()
        .expect("upload key")
        .to_owned();
    (server, key)
}

async fn upload(
    server: &Server,
    query: &str,
    key: Option<&str>,
    body: reqwest::Body,
) -> (u16, Value) {
    let mut request = server
        .client
        .post(server.url(&format!("/api/client/upload{query}")))
        .body(body);
    if let Some(key) = key {
        request = request.header("X-Upload-Key", key);
    }
    let response = request.send().await.expect("upload");
    let status = response.status().as_u16();
    let envelope: Value = response.json().await.expect("JSON");
    openidcs_tests::check_envelope(status, &envelope);
    (status, envelope)
}

fn sample(flu: f64) -> reqwest::Body {
    json!({ "ac_status": "running", "cpu_total": 1, "cpu_usage": 12.5, "mem_total": 64, "mem_usage": 40.0,
            "hdd_total": 0, "hdd_usage": 0, "flu_usage": flu, "network_u": 0.5, "network_d": 1.5 })
    .to_string()
    .into()
}

#[tokio::test]
async fn samples_with_the_vm_key_are_stored_and_shown() {
    let (server, key) = prepare().await;
    let (status, envelope) = upload(&server, &format!("?nic={MAC}"), Some(&key), sample(3.0)).await;
    assert_eq!(status, 200, "{envelope}");
    assert_eq!(
        envelope["data"],
        json!({ "hs_name": "local", "vm_uuid": "up1" })
    );
    // The key also works as a query parameter; traffic accumulates.
    let (status, _) = upload(&server, &format!("?nic={MAC}&key={key}"), None, sample(2.0)).await;
    assert_eq!(status, 200);
    let status = server.ok("GET", "/api/client/status/local/up1", None).await;
    let history = status["history"].as_array().expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["cpu_usage"], 12.5);
    assert_eq!(history[0]["source"], "upload");
    assert_eq!(status["flu_usage"], 5.0);
    let detail = server.ok("GET", "/api/client/detail/local/up1", None).await;
    assert_eq!(detail["status"].as_array().map(Vec::len), Some(2));

    // A wrong key is 401 whether or not the MAC exists; the right key with a
    // MAC that is not the VM's is 404; bad bodies are 400/413.
    for mac in [MAC, "52:54:00:00:00:00"] {
        let (status, envelope) = upload(
            &server,
            &format!("?nic={mac}"),
            Some("wrong-key"),
            sample(1.0),
        )
        .await;
        assert_eq!(status, 401, "{envelope}");
        assert_eq!(envelope["msg"], "invalid upload key");
    }
    let (status, _) = upload(&server, &format!("?nic={MAC}"), None, sample(1.0)).await;
    assert_eq!(status, 401);
    let (status, _) = upload(&server, "?nic=52:54:00:00:00:00", Some(&key), sample(1.0)).await;
    assert_eq!(status, 404);
    let (status, _) = upload(
        &server,
        &format!("?nic={MAC}"),
        Some(&key),
        "{\"cpu_usage\": -5}".into(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = upload(
        &server,
        &format!("?nic={MAC}"),
        Some(&key),
        "not json".into(),
    )
    .await;
    assert_eq!(status, 400);
    // An empty sample would be stored as zeros: refused, nothing stored.
    for empty in ["{}", ""] {
        let (status, envelope) =
            upload(&server, &format!("?nic={MAC}"), Some(&key), empty.into()).await;
        assert_eq!(status, 400, "{empty:?}: {envelope}");
    }
    let status = server.ok("GET", "/api/client/status/local/up1", None).await;
    assert_eq!(status["history"].as_array().map(Vec::len), Some(2));
    let huge = format!("{{\"ac_status\": \"{}\"}}", "x".repeat(1 << 20));
    let sent = server
        .client
        .post(server.url(&format!("/api/client/upload?nic={MAC}")))
        .header("X-Upload-Key", &key)
        .body(huge)
        .send()
        .await;
    match sent {
        Ok(response) => assert_eq!(response.status(), 413),
        // The server answers 413 and closes without reading the rest, so
        // the client may still be writing it: refused either way.
        Err(error) => assert!(format!("{error:?}").contains("BodyWrite"), "{error:?}"),
    }
}

#[tokio::test]
async fn a_thousand_uploads_from_twenty_clients_are_all_stored() {
    let (server, key) = prepare().await;
    let clients = (0..20).map(|_| {
        let (server, key) = (&server, key.clone());
        async move {
            for _ in 0..50 {
                let (status, envelope) =
                    upload(server, &format!("?nic={MAC}"), Some(&key), sample(0.5)).await;
                assert_eq!(status, 200, "{envelope}");
            }
        }
    });
    futures::future::join_all(clients).await;
    let status = server.ok("GET", "/api/client/status/local/up1", None).await;
    assert_eq!(status["history"].as_array().map(Vec::len), Some(1000));
    assert_eq!(status["flu_usage"], 500.0);
}
