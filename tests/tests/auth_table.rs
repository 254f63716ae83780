//! Every authenticated route answers 401 without a token and with a wrong
//! one, in the envelope; `upload` is outside the admin token but refuses a
//! request without an upload key.

use openidcs_tests::{Server, plugin_toml};

/// The 35 endpoints of the contract (upload last) with sample arguments.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/api/system/treset"),
    ("POST", "/api/system/tsetup"),
    ("GET", "/api/system/tquery"),
    ("POST", "/api/system/saving"),
    ("POST", "/api/system/loader"),
    ("GET", "/api/system/statis"),
    ("GET", "/api/system/engine"),
    ("GET", "/api/system/logget"),
    ("GET", "/api/system/tasget"),
    ("GET", "/api/server/listup"),
    ("GET", "/api/server/detail/h1"),
    ("POST", "/api/server/create"),
    ("PUT", "/api/server/update/h1"),
    ("DELETE", "/api/server/delete/h1"),
    ("POST", "/api/server/powers/h1"),
    ("GET", "/api/server/status/h1"),
    ("GET", "/api/client/listup/h1"),
    ("GET", "/api/client/detail/h1/vm1"),
    ("POST", "/api/client/create/h1"),
    ("PUT", "/api/client/update/h1/vm1"),
    ("DELETE", "/api/client/delete/h1/vm1"),
    ("POST", "/api/client/powers/h1/vm1"),
    ("GET", "/api/client/status/h1/vm1"),
    ("GET", "/api/client/vncons/h1/vm1"),
    ("POST", "/api/client/scaner/h1"),
    ("GET", "/api/client/natget/h1/vm1"),
    ("POST", "/api/client/natadd/h1/vm1"),
    ("DELETE", "/api/client/natdel/h1/vm1/0"),
    ("GET", "/api/client/iplist/h1/vm1"),
    ("POST", "/api/client/ipadd_/h1/vm1"),
    ("DELETE", "/api/client/ipdel_/h1/vm1/0"),
    ("GET", "/api/client/pxyget/h1/vm1"),
    ("POST", "/api/client/pxyadd/h1/vm1"),
    ("DELETE", "/api/client/pxydel/h1/vm1/0"),
];

/// The original server's aliases, authenticated the same way.
const ALIASES: &[(&str, &str)] = &[
    ("POST", "/api/system/resets"),
    ("POST", "/api/token/reset"),
    ("POST", "/api/token/set"),
    ("GET", "/api/token/current"),
    ("POST", "/api/system/save"),
    ("POST", "/api/system/load"),
    ("GET", "/api/system/stats"),
    ("GET", "/api/system/logger/detail"),
    ("GET", "/api/system/tasker"),
    ("GET", "/api/server/detail"),
    ("GET", "/api/client/detail/h1"),
    ("GET", "/api/client/remote/h1/vm1"),
    ("GET", "/api/client/ipaddr/detail/h1/vm1"),
    ("POST", "/api/client/ipaddr/create/h1/vm1"),
    ("DELETE", "/api/client/ipaddr/delete/h1/vm1/0"),
    ("GET", "/api/client/proxys/detail/h1/vm1"),
    ("POST", "/api/client/proxys/create/h1/vm1"),
    ("DELETE", "/api/client/proxys/delete/h1/vm1/0"),
    ("POST", "/api/client/password/h1/vm1"),
];

#[tokio::test]
async fn every_authenticated_route_refuses_missing_and_wrong_tokens() {
    let server = Server::start(&format!(
        "[auth]\nmax_failures = 1000\n\n{}",
        plugin_toml("panic", "test_component_panic", &["log"], "")
    ));
    assert_eq!(
        ENDPOINTS.len(),
        34,
        "34 authenticated endpoints + upload = 35"
    );
    for (method, path) in ENDPOINTS.iter().chain(ALIASES) {
        let (status, envelope) = server.call_as(None, method, path, None).await;
        assert_eq!(status, 401, "{method} {path} without a token: {envelope}");
        let (status, envelope) = server
            .call_as(Some("wrong-token"), method, path, None)
            .await;
        assert_eq!(
            status, 401,
            "{method} {path} with a wrong token: {envelope}"
        );
        assert_eq!(envelope["msg"], "invalid token");
    }
    // The real token passes the door on every route (whatever the route
    // then answers, it is not 401).
    for (method, path) in ENDPOINTS.iter().chain(ALIASES) {
        if path.contains("treset") || path.contains("token/reset") || path.contains("resets") {
            continue;
        }
        let (status, envelope) = server.call(method, path, None).await;
        assert_ne!(status, 401, "{method} {path} with the token: {envelope}");
    }
    // upload: no admin token needed, but an upload key is.
    let (status, envelope) = server
        .call_as(
            None,
            "POST",
            "/api/client/upload?nic=52:54:00:00:00:01",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 401, "upload without a key: {envelope}");
}

#[tokio::test]
async fn repeated_wrong_tokens_are_throttled() {
    let server = Server::start("[auth]\nmax_failures = 3\nfailure_window_s = 60\n");
    for _ in 0..3 {
        let (status, _) = server
            .call_as(Some("guess"), "GET", "/api/system/statis", None)
            .await;
        assert_eq!(status, 401);
    }
    let (status, envelope) = server
        .call_as(Some("guess"), "GET", "/api/system/statis", None)
        .await;
    assert_eq!(status, 429, "{envelope}");
    // The right token is not refused from a throttled address (the limiter
    // slows guesses; it must not lock the admin out); wrong ones still are.
    let (status, envelope) = server.call("GET", "/api/system/statis", None).await;
    assert_eq!(status, 200, "{envelope}");
    let (status, _) = server
        .call_as(Some("guess"), "GET", "/api/system/statis", None)
        .await;
    assert_eq!(status, 429);
}
