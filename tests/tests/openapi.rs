//! `GET /api/openapi.json`: served without a token, OpenAPI 3.1, every
//! endpoint and alias of the contract documented with the envelope and the
//! auth scheme; and nothing documented that the server does not route.
//! `GET /api/docs` is the API browser when its files are installed (`make
//! setup`), else a 404 in the envelope.

use openidcs_tests::{Server, check_envelope};
use serde_json::Value;

/// The 35 endpoints of the contract (the table of `auth_table.rs`, as path
/// templates), upload last.
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
    ("GET", "/api/server/detail/{hs_name}"),
    ("POST", "/api/server/create"),
    ("PUT", "/api/server/update/{hs_name}"),
    ("DELETE", "/api/server/delete/{hs_name}"),
    ("POST", "/api/server/powers/{hs_name}"),
    ("GET", "/api/server/status/{hs_name}"),
    ("GET", "/api/client/listup/{hs_name}"),
    ("GET", "/api/client/detail/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/create/{hs_name}"),
    ("PUT", "/api/client/update/{hs_name}/{vm_uuid}"),
    ("DELETE", "/api/client/delete/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/powers/{hs_name}/{vm_uuid}"),
    ("GET", "/api/client/status/{hs_name}/{vm_uuid}"),
    ("GET", "/api/client/vncons/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/scaner/{hs_name}"),
    ("GET", "/api/client/natget/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/natadd/{hs_name}/{vm_uuid}"),
    (
        "DELETE",
        "/api/client/natdel/{hs_name}/{vm_uuid}/{rule_index}",
    ),
    ("GET", "/api/client/iplist/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/ipadd_/{hs_name}/{vm_uuid}"),
    (
        "DELETE",
        "/api/client/ipdel_/{hs_name}/{vm_uuid}/{ip_index}",
    ),
    ("GET", "/api/client/pxyget/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/pxyadd/{hs_name}/{vm_uuid}"),
    (
        "DELETE",
        "/api/client/pxydel/{hs_name}/{vm_uuid}/{proxy_index}",
    ),
    ("POST", "/api/client/upload"),
];

/// The original server's aliases (the table of `auth_table.rs`).
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
    ("GET", "/api/client/detail/{hs_name}"),
    ("GET", "/api/client/remote/{hs_name}/{vm_uuid}"),
    ("GET", "/api/client/ipaddr/detail/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/ipaddr/create/{hs_name}/{vm_uuid}"),
    (
        "DELETE",
        "/api/client/ipaddr/delete/{hs_name}/{vm_uuid}/{ip_index}",
    ),
    ("GET", "/api/client/proxys/detail/{hs_name}/{vm_uuid}"),
    ("POST", "/api/client/proxys/create/{hs_name}/{vm_uuid}"),
    (
        "DELETE",
        "/api/client/proxys/delete/{hs_name}/{vm_uuid}/{proxy_index}",
    ),
    ("POST", "/api/client/password/{hs_name}/{vm_uuid}"),
];

/// Routes that need no credential.
const PUBLIC: &[&str] = &["/api/openapi.json", "/api/docs", "/api/docs/{file}"];
/// The browser's session: signing in and out needs no credential (the
/// token is in the body), and asking "who am I" signed out is no error.
const SESSION: &str = "/api/system/session";

async fn fetch_document(server: &Server) -> Value {
    let response = server
        .client
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(response.status(), 200, "the document needs no token");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("the document is JSON")
}

fn operation<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &document["paths"][path][method.to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {path} is not in the document"
    );
    operation
}

/// `$ref`s resolved against the document's components.
fn resolve<'a>(document: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value["$ref"].as_str() {
        let mut target = document;
        for segment in reference.trim_start_matches("#/").split('/') {
            target = &target[segment];
        }
        value = target;
    }
    value
}

fn security_schemes(operation: &Value) -> Vec<String> {
    operation["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|requirement| requirement.keys().cloned())
        .collect()
}

/// A concrete path for a template: sample values for its parameters.
fn sample_path(template: &str) -> String {
    template
        .replace("{hs_name}", "h1")
        .replace("{vm_uuid}", "vm1")
        .replace("{file}", "swagger-ui.css")
        .replace("{rule_index}", "0")
        .replace("{ip_index}", "0")
        .replace("{proxy_index}", "0")
}

#[tokio::test]
async fn the_document_covers_every_route_with_envelope_and_auth() {
    let server = Server::start("");
    let document = fetch_document(&server).await;
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "OpenAPI version {version}");

    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    let upload_key = &document["components"]["securitySchemes"]["upload_key"];
    assert_eq!(upload_key["type"], "apiKey", "{upload_key}");
    assert_eq!(upload_key["in"], "header", "{upload_key}");
    assert_eq!(upload_key["name"], "X-Upload-Key", "{upload_key}");

    assert_eq!(ENDPOINTS.len(), 35);
    for (method, path) in ENDPOINTS.iter().chain(ALIASES) {
        let operation = operation(&document, method, path);
        let schemes = security_schemes(operation);
        if *path == "/api/client/upload" {
            assert!(
                schemes.contains(&"upload_key".to_owned())
                    && !schemes.contains(&"bearer".to_owned()),
                "upload is authenticated by its key: {schemes:?}"
            );
        } else {
            assert_eq!(schemes, ["bearer"], "{method} {path}");
        }
        // The 200 answer is the envelope; errors too.
        for status in ["200", "400", "401", "404", "500"] {
            let response = resolve(&document, &operation["responses"][status]);
            let schema = resolve(
                &document,
                &response["content"]["application/json"]["schema"],
            );
            let required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} {status}: no envelope in {response}"))
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for field in ["code", "msg", "data"] {
                assert!(
                    required.contains(&field),
                    "{method} {path} {status}: envelope lacks {field}"
                );
            }
        }
    }
    for path in PUBLIC {
        let operation = operation(&document, "GET", path);
        assert!(
            security_schemes(operation).is_empty(),
            "{path} needs no credential"
        );
    }

    // Nothing is documented that the server does not route: without a
    // token, a documented API path answers 401 (the auth layer), never the
    // fallback's 404 or 405.
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if PUBLIC.contains(&path.as_str()) || path == SESSION {
                continue;
            }
            let concrete = sample_path(path);
            let (status, envelope) = server
                .call_as(None, &method.to_uppercase(), &concrete, None)
                .await;
            assert_eq!(
                status, 401,
                "{method} {concrete} without credentials: {envelope}"
            );
        }
    }
    let (status, envelope) = server.call_as(None, "GET", SESSION, None).await;
    assert_eq!(
        (status, &envelope["data"]),
        (200, &Value::Null),
        "signed out: {envelope}"
    );
    let (status, envelope) = server.call_as(None, "DELETE", SESSION, None).await;
    assert_eq!(status, 200, "signing out twice is fine: {envelope}");
    let (status, envelope) = server
        .call_as(
            None,
            "POST",
            SESSION,
            Some(serde_json::json!({ "token": "wrong-token-0123456789" })),
        )
        .await;
    assert_eq!(status, 401, "a wrong token signs nobody in: {envelope}");
}

#[tokio::test]
async fn api_docs_is_the_browser_or_an_enveloped_404() {
    let server = Server::start("");
    let response = server
        .client
        .get(server.url("/api/docs"))
        .send()
        .await
        .expect("GET /api/docs");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.expect("body");
    // `make setup` installs npm's swagger-ui-dist here; the server finds it
    // next to its binary.
    let installed = openidcs_tests::root()
        .join("host/swagger-ui/node_modules/swagger-ui-dist/swagger-ui-bundle.js")
        .exists();
    if installed {
        assert_eq!(status, 200, "{body}");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(body.contains("/api/openapi.json"), "{body}");
        for file in ["swagger-ui-bundle.js", "swagger-ui.css"] {
            let response = server
                .client
                .get(server.url(&format!("/api/docs/{file}")))
                .send()
                .await
                .expect("a file of the browser");
            assert_eq!(response.status(), 200, "{file}");
        }
    } else {
        assert_eq!(status, 404, "{body}");
        let envelope: Value = serde_json::from_str(&body).expect("a JSON envelope");
        check_envelope(404, &envelope);
        assert!(
            envelope["msg"]
                .as_str()
                .is_some_and(|message| message.contains("swagger-ui-dist")),
            "{envelope}"
        );
    }
    // A file outside the served list is a 404 in the envelope.
    let (status, envelope) = server
        .call_as(None, "GET", "/api/docs/package.json", None)
        .await;
    assert_eq!(status, 404, "{envelope}");
}
