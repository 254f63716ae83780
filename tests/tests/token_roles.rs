//! Named tokens with roles: a table over every route of the API document
//! (aliases included) and every role, in and out of the token's hosts. The
//! expectations are written here from the roles' definitions, not read from
//! the server's route groups, so a route put in the wrong group fails.

use openidcs_tests::{Server, binary, fill_path, plugin_toml};
use serde_json::json;

/// The event stream: an answer that never ends, so only its status is read.
const EVENTS: &str = "/api/system/events";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Admin,
    Read,
    Operate,
}

/// What a route needs, from the roles' definitions: system routes and host
/// administration are admin's; GETs of hosts and VMs are reads, except the
/// console and the customer's sign-on token, which control the VM; every
/// other VM route operates.
fn need(method: &str, path: &str) -> Need {
    // Every principal reads these; their answers are its own (the event
    // stream filtered to its hosts, the session it is).
    if path == EVENTS || path == "/api/system/session" {
        return Need::Read;
    }
    let console =
        path.contains("/vncons/") || path.contains("/remote/") || path.contains("/temptoken/");
    if path.starts_with("/api/system/") || path.starts_with("/api/token/") {
        Need::Admin
    } else if path.starts_with("/api/server/") {
        if method == "GET" {
            Need::Read
        } else {
            Need::Admin
        }
    } else if method == "GET" && !console {
        Need::Read
    } else {
        Need::Operate
    }
}

fn allows(role: &str, need: Need) -> bool {
    match role {
        "admin" => true,
        "operator" => need != Need::Admin,
        "read-only" => need == Need::Read,
        _ => false,
    }
}

async fn create_token(server: &Server, name: &str, role: &str, hosts: &[&str]) -> String {
    let data = server
        .ok(
            "POST",
            "/api/system/tokens",
            Some(json!({ "name": name, "role": role, "hosts": hosts })),
        )
        .await;
    assert_eq!(data["role"], role, "{data}");
    data["token"].as_str().expect("the new token").to_owned()
}

#[tokio::test]
async fn every_route_against_every_role() {
    let server = Server::start(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    ));
    for host in ["h1", "h2"] {
        server
            .ok(
                "POST",
                "/api/server/create",
                Some(json!({ "name": host, "type": "libvirt",
                             "config": { "server_addr": "test:///default" } })),
            )
            .await;
    }
    let tokens = [
        ("admin", create_token(&server, "root2", "admin", &[]).await),
        (
            "operator",
            create_token(&server, "panel", "operator", &["h1"]).await,
        ),
        (
            "read-only",
            create_token(&server, "viewer", "read-only", &["h1"]).await,
        ),
    ];

    let mut checked = 0;
    for (method, path) in server.bearer_operations().await {
        let path = path.as_str();
        if path.contains("treset")
            || path.contains("resets")
            || path.ends_with("token/reset")
            || path.contains("tsetup")
            || path.ends_with("token/set")
        {
            // The admin token's own replacement is tried below, by role only.
            continue;
        }
        let need = need(&method, path);
        for (role, token) in &tokens {
            // The admin goes to a host that does not exist: its calls
            // pass the check and then change nothing (no host delete).
            let hosts: &[&str] = if *role == "admin" {
                &["h9"]
            } else {
                &["h1", "h2"]
            };
            for &host in hosts {
                let url = fill_path(path, host, "ghost");
                let (status, envelope) = if path == EVENTS {
                    let status = server.stream_status(&url, Some(token), None).await;
                    (status, serde_json::Value::Null)
                } else {
                    server.call_as(Some(token), &method, &url, None).await
                };
                let in_scope = *role == "admin" || host == "h1" || !path.contains("{hs_name}");
                let allowed = allows(role, need) && in_scope;
                if allowed {
                    assert!(
                        status != 401 && status != 403,
                        "{role} {method} {url} must pass the token check: {status} {envelope}"
                    );
                } else {
                    assert_eq!(status, 403, "{role} {method} {url}: {envelope}");
                    assert_eq!(envelope["code"], 403);
                    let message = envelope["msg"].as_str().unwrap_or_default();
                    assert!(message.contains("token"), "{message}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 5 * 45, "only {checked} calls checked");

    // Replacing the admin token is the admin's alone.
    for (role, token) in &tokens[1..] {
        for path in ["/api/system/treset", "/api/system/tsetup"] {
            let (status, envelope) = server.call_as(Some(token), "POST", path, None).await;
            assert_eq!(status, 403, "{role} POST {path}: {envelope}");
        }
    }

    // A scoped token's host list shows its hosts only.
    let (status, envelope) = server
        .call_as(Some(&tokens[1].1), "GET", "/api/server/listup", None)
        .await;
    assert_eq!(status, 200, "{envelope}");
    let hosts: Vec<&String> = envelope["data"]
        .as_object()
        .expect("hosts")
        .keys()
        .collect();
    assert_eq!(hosts, ["h1"]);

    // An operator (a billing panel's token) manages VMs on its host...
    let (status, envelope) = server
        .call_as(
            Some(&tokens[1].1),
            "POST",
            "/api/client/create/h1",
            Some(json!({ "vm_uuid": "vm1", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    assert_eq!(status, 200, "{envelope}");
    // ...and cannot register a host URI at all.
    let (status, envelope) = server
        .call_as(
            Some(&tokens[1].1),
            "POST",
            "/api/server/create",
            Some(json!({ "name": "evil", "type": "libvirt",
                         "config": { "server_addr": "test:///default" } })),
        )
        .await;
    assert_eq!(status, 403, "{envelope}");

    // Routes by VM name find VMs only on the token's hosts.
    server
        .ok(
            "POST",
            "/api/client/create/h2",
            Some(json!({ "vm_uuid": "vm2", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    for (vm, expected) in [("vm1", 200), ("vm2", 404)] {
        let (status, envelope) = server
            .call_as(
                Some(&tokens[1].1),
                "GET",
                &format!("/api/status?hostname={vm}"),
                None,
            )
            .await;
        assert_eq!(status, expected, "{vm}: {envelope}");
    }

    // The list shows roles, hosts and last use, never a token.
    let listed = server.ok("GET", "/api/system/tokens", None).await;
    let panel = listed
        .as_array()
        .expect("tokens")
        .iter()
        .find(|token| token["name"] == "panel")
        .expect("panel listed")
        .clone();
    assert_eq!(panel["hosts"], json!(["h1"]));
    assert!(panel["last_used_at"].is_i64(), "{panel}");
    assert!(panel.get("token").is_none(), "{panel}");
    assert!(!listed.to_string().contains(&tokens[1].1));

    // Revoked: refused at once.
    server.ok("DELETE", "/api/system/tokens/panel", None).await;
    let (status, _) = server
        .call_as(Some(&tokens[1].1), "GET", "/api/client/listup/h1", None)
        .await;
    assert_eq!(status, 401);
    let (status, envelope) = server
        .call("DELETE", "/api/system/tokens/panel", None)
        .await;
    assert_eq!(status, 404, "{envelope}");
}

#[tokio::test]
async fn token_input_is_checked() {
    let server = Server::start("");
    for (body, field) in [
        (json!({ "name": "a b", "role": "operator" }), "name"),
        (json!({ "name": "x", "role": "root" }), "role"),
        (
            json!({ "name": "x", "role": "operator", "hosts": ["nope"] }),
            "hosts[0]",
        ),
        (
            json!({ "name": "x", "role": "admin", "hosts": ["nope"] }),
            "hosts",
        ),
        (
            json!({ "name": "x", "role": "operator", "expires_days": 0 }),
            "expires_days",
        ),
        (json!({ "name": "admin", "role": "operator" }), "name"),
    ] {
        let (status, envelope) = server
            .call("POST", "/api/system/tokens", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {envelope}");
        let message = envelope["msg"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: {message}");
    }
    server
        .ok(
            "POST",
            "/api/system/tokens",
            Some(json!({ "name": "x", "role": "read-only" })),
        )
        .await;
    let (status, envelope) = server
        .call(
            "POST",
            "/api/system/tokens",
            Some(json!({ "name": "x", "role": "read-only" })),
        )
        .await;
    assert_eq!(status, 409, "{envelope}");
}

/// The CLI makes the same tokens, on the data dir of a running server.
#[tokio::test]
async fn tokens_from_the_command_line() {
    let server = Server::start("");
    let run = |arguments: &[&str]| {
        let output = std::process::Command::new(binary())
            .args(arguments)
            .arg("--config")
            .arg(server.config_path())
            .output()
            .expect("openidcs");
        assert!(
            output.status.success(),
            "{arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let token = run(&["token", "create", "--name", "cli", "--role", "read-only"]);
    assert_eq!(token.len(), 43, "{token}");
    let (status, envelope) = server
        .call_as(Some(&token), "GET", "/api/server/listup", None)
        .await;
    assert_eq!(status, 200, "{envelope}");
    let (status, _) = server
        .call_as(Some(&token), "GET", "/api/system/statis", None)
        .await;
    assert_eq!(status, 403);
    let listing = run(&["token", "list"]);
    assert!(listing.starts_with("cli\tread-only\t*"), "{listing}");
    run(&["token", "revoke", "cli"]);
    let (status, _) = server
        .call_as(Some(&token), "GET", "/api/server/listup", None)
        .await;
    assert_eq!(status, 401);
}
