//! Single sign-on from a billing panel: `temptoken` (Bearer) → `templogin`
//! (no Bearer) → a VM session cookie. The token is single use and expires;
//! the cookie is HttpOnly, Secure, SameSite=Strict; and a table over every
//! route of the document shows the session reaching only its own VM's
//! customer routes.

use std::time::Duration;

use openidcs_tests::{Server, fill_path, plugin_toml};
use serde_json::{Value, json};

/// The routes a VM's customer may call (from the sign-on's definition:
/// power, console, NAT, proxy, IP list, password, and reading the VM),
/// aliases included; only with the VM in the path.
fn customer_route(path: &str) -> bool {
    const CUSTOMER: &[&str] = &[
        "/api/client/detail/",
        "/api/client/status/",
        "/api/client/natget/",
        "/api/client/iplist/",
        "/api/client/ipaddr/detail/",
        "/api/client/pxyget/",
        "/api/client/proxys/detail/",
        "/api/client/powers/",
        "/api/client/password/",
        "/api/client/vncons/",
        "/api/client/remote/",
        "/api/client/natadd/",
        "/api/client/natdel/",
        "/api/client/pxyadd/",
        "/api/client/proxys/create/",
        "/api/client/pxydel/",
        "/api/client/proxys/delete/",
    ];
    // Routes that name no VM and answer for the session's own only.
    const SELF_SCOPED: &[&str] = &["/api/system/events", "/api/system/session"];
    SELF_SCOPED.contains(&path)
        || (path.contains("{vm_uuid}") && CUSTOMER.iter().any(|prefix| path.starts_with(prefix)))
}

async fn call_with_session(
    server: &Server,
    session: &str,
    method: &str,
    path: &str,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let response = server
        .client
        .request(method, server.url(path))
        .header("Cookie", format!("theme=dark; openidcs_session={session}"))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let envelope = response.json().await.unwrap_or(Value::Null);
    (status, envelope)
}

/// `templogin` without following its redirect: (status, Location, Set-Cookie).
async fn templogin(server: &Server, token: &str) -> (u16, String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client
        .get(server.url(&format!("/api/client/templogin?token={token}")))
        .send()
        .await
        .expect("templogin");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (
        response.status().as_u16(),
        header("location"),
        header("set-cookie"),
    )
}

#[tokio::test]
async fn a_panel_signs_its_customer_in_to_one_vm() {
    let server = Server::start(&format!(
        "[auth]\ntemp_token_ttl_s = 3\n\n{}",
        plugin_toml(
            "libvirt",
            "openidcs_plugin_libvirt",
            &["libvirt", "nat", "proxy", "log"],
            ""
        )
    ));
    for (host, vms) in [("h1", &["vm1", "vm2"][..]), ("h2", &["vm3"][..])] {
        server
            .ok(
                "POST",
                "/api/server/create",
                Some(json!({ "name": host, "type": "libvirt",
                             "config": { "server_addr": "test:///default" } })),
            )
            .await;
        for vm in vms {
            server
                .ok(
                    "POST",
                    &format!("/api/client/create/{host}"),
                    Some(json!({ "vm_uuid": vm, "mem_num": 64, "hdd_num": 0 })),
                )
                .await;
        }
    }

    let issued = server.ok("GET", "/api/client/temptoken/h1/vm1", None).await;
    let token = issued["temp_token"]
        .as_str()
        .expect("temp_token")
        .to_owned();
    assert!(
        issued["url"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("templogin?token={token}"))
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        (now..=now + 4).contains(&issued["expire"].as_u64().unwrap_or(0)),
        "{issued}"
    );

    let (status, location, cookie) = templogin(&server, &token).await;
    assert_eq!(status, 302);
    // The VM's customer page of the web panel.
    assert_eq!(location, "/#/vm/h1/vm1");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let session = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("openidcs_session="))
        .expect("the session cookie")
        .to_owned();
    // Single use.
    let (status, _, cookie) = templogin(&server, &token).await;
    assert_eq!(status, 401);
    assert!(cookie.is_empty());

    // Every route of the document, with the session, on its own VM, another
    // VM of its host, and a VM of another host.
    let mut reached = 0;
    for (method, path) in server.bearer_operations().await {
        for (host, vm) in [("h1", "vm1"), ("h1", "vm2"), ("h2", "vm3")] {
            let url = fill_path(&path, host, vm);
            let (status, envelope) = if path == "/api/system/events" {
                let status = server.stream_status(&url, None, Some(&session)).await;
                (status, Value::Null)
            } else {
                call_with_session(&server, &session, &method, &url).await
            };
            // A route that names no VM answers for the session's own.
            let own = vm == "vm1" || !path.contains("{vm_uuid}");
            if customer_route(&path) && own {
                assert!(
                    status != 401 && status != 403,
                    "{method} {url} is the session's: {status} {envelope}"
                );
                reached += 1;
            } else {
                assert_eq!(status, 403, "{method} {url}: {envelope}");
            }
        }
    }
    assert!(reached >= 17, "only {reached} customer routes reached");
    // The customer can stop their VM...
    let (status, envelope) =
        call_with_session(&server, &session, "POST", "/api/client/powers/h1/vm1").await;
    assert_eq!(status, 400, "no body: past the check: {envelope}");
    // ...and a made-up session is no session.
    let (status, _) =
        call_with_session(&server, "made-up", "GET", "/api/client/status/h1/vm1").await;
    assert_eq!(status, 401);

    // A token not used in time expires.
    let late = server.ok("GET", "/api/client/temptoken/h1/vm1", None).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, _, _) = templogin(&server, late["temp_token"].as_str().unwrap_or_default()).await;
    assert_eq!(status, 401);
}
