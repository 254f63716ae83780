//! The OpenAPI 3.1 document of the API and its browsable form.
//!
//! The operations come from the router itself (`api::document`): each
//! route is registered with its handler's `#[utoipa::path]`, whose bodies
//! and answers are the model's own types. [`finish`] then adds what is the
//! same everywhere: the error answers, the security schemes, and the
//! original server's alias paths (each a copy of its endpoint's operation
//! with its own `operationId`).
//!
//! `GET /api/openapi.json` serves it (no token); `GET /api/docs` is Swagger
//! UI, whose files come from npm's `swagger-ui-dist` (installed by `make
//! setup` into `host/swagger-ui/node_modules`) and are served from disk
//! (`api::files`; only the files of `UI_FILES`).

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, ResponseBuilder};
use utoipa::{OpenApi, PartialSchema};

use super::extract::ApiPath;
use crate::error::{ApiError, Failure};

// ------------------------------------------------------------ the document

#[derive(OpenApi)]
#[openapi(
    info(
        title = "openidcs",
        description = "The OpenIDCS REST API v1.0: hypervisor hosts, VMs, NAT, IPs and reverse \
                       proxies. Every answer, errors included, is `{code, msg, data}` with HTTP \
                       status = `code`. Every mutation runs as a task: its answer carries \
                       `task_id`, and `?async=true` answers at once with `{task_id, state}`."
    ),
    components(schemas(Failure)),
    tags(
        (name = "system", description = "Token, snapshot, reload, statistics, engines, logs, tasks"),
        (name = "server", description = "Hypervisor hosts"),
        (name = "client", description = "Virtual machines, their NAT rules, NICs and proxies"),
        (name = "panel", description = "What billing panels call beyond the 35: a VM by its \
                                        key alone (`hostname`), NAT and proxy availability, \
                                        a host's free ports"),
        (name = "docs", description = "This document (no token needed)"),
    )
)]
struct ApiDoc;

/// Paths that need no credential at all.
const PUBLIC_PATHS: &[&str] = &["/api/openapi.json", "/api/docs", "/api/docs/{file}"];

/// Error answers every API operation documents: (status, description).
const ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "Bad input: `msg` names the field and the rule it broke",
    ),
    ("401", "No token, or a wrong one"),
    (
        "403",
        "Host disabled, a capability denied, or outside the token's role or hosts",
    ),
    ("404", "Unknown host, VM, index or route"),
    ("405", "Wrong method"),
    (
        "409",
        "Conflict: name exists, port or domain taken, pool exhausted",
    ),
    ("413", "Body too large"),
    ("429", "Too many failed logins from this address"),
    (
        "500",
        "Fault: the reason is in `msg`, and a log record was written",
    ),
];

/// Errors of the documentation routes.
const DOCS_ERRORS: &[&str] = &["404", "405", "500"];

/// The router's operations with what every operation shares, and each
/// `(alias, endpoint)` documented as a copy of its endpoint.
pub fn finish(
    operations: utoipa::openapi::OpenApi,
    aliases: &[(&str, &str)],
) -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.merge(operations);
    let components = document
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token: `Authorization: Bearer <token>` (printed once at the \
                     first start; `openidcs token reset` prints a new one)",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "upload_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Upload-Key",
            "The VM's own upload key (`upload_key` in its detail); upload only",
        ))),
    );
    components.add_security_scheme(
        "upload_key_query",
        SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
            "key",
            "The VM's upload key as a query parameter, for clients that cannot set headers",
        ))),
    );
    for (status, description) in ERRORS {
        components.responses.insert(
            error_response_name(status),
            RefOr::T(
                ResponseBuilder::new()
                    .description(*description)
                    .content("application/json", Content::new(Some(Failure::schema())))
                    .build(),
            ),
        );
    }
    for (path, item) in document.paths.paths.iter_mut() {
        let errors: Vec<&str> = if PUBLIC_PATHS.contains(&path.as_str()) {
            DOCS_ERRORS.to_vec()
        } else {
            ERRORS.iter().map(|(status, _)| *status).collect()
        };
        for operation in operations_mut(item) {
            // Handler names repeat across groups (`create`): prefix the tag.
            if let (Some(tag), Some(id)) = (
                operation.tags.as_ref().and_then(|tags| tags.first()),
                &operation.operation_id,
            ) {
                operation.operation_id = Some(format!("{tag}_{id}"));
            }
            // An empty body reads as `{}` (`ApiJson`): a body is never required.
            if let Some(body) = operation.request_body.as_mut() {
                body.required = Some(utoipa::openapi::Required::False);
            }
            for status in &errors {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| {
                        RefOr::Ref(utoipa::openapi::Ref::new(format!(
                            "#/components/responses/{}",
                            error_response_name(status)
                        )))
                    });
            }
        }
    }
    for (alias, endpoint) in aliases {
        // A missing endpoint is caught by the tests; the alias is skipped.
        let Some(mut item) = document.paths.paths.get(*endpoint).cloned() else {
            continue;
        };
        let slug: String = alias
            .trim_start_matches("/api/")
            .chars()
            .filter(|character| *character != '{' && *character != '}')
            .map(|character| {
                if character.is_ascii_alphanumeric() {
                    character
                } else {
                    '_'
                }
            })
            .collect();
        for operation in operations_mut(&mut item) {
            operation.operation_id = Some(format!(
                "{}_alias_{slug}",
                operation.operation_id.as_deref().unwrap_or("operation")
            ));
            operation.summary = Some(format!(
                "{} (alias of {endpoint})",
                operation.summary.as_deref().unwrap_or_default()
            ));
        }
        document.paths.paths.insert((*alias).to_owned(), item);
    }
    document
}

fn error_response_name(status: &str) -> String {
    format!("Error{status}")
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document as JSON, rendered once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        super::document().to_json().unwrap_or_else(|error| {
            format!("{{\"error\":\"cannot render the document: {error}\"}}")
        })
    })
}

// ------------------------------------------------------------ handlers

/// The OpenAPI 3.1 document of this API (no token needed).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn spec() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document_json(),
    )
        .into_response()
}

/// The files of `swagger-ui-dist` that `/api/docs` uses, with their types.
const UI_FILES: &[(&str, &str)] = &[
    ("swagger-ui.css", super::files::CSS),
    ("swagger-ui-bundle.js", super::files::JAVASCRIPT),
    ("swagger-ui-standalone-preset.js", super::files::JAVASCRIPT),
    ("favicon-32x32.png", "image/png"),
    ("favicon-16x16.png", "image/png"),
];

/// Environment variable naming the `swagger-ui-dist` directory.
pub const UI_DIR_VARIABLE: &str = "OPENIDCS_SWAGGER_UI_DIR";

/// Where `swagger-ui-dist` is installed below the repository.
const UI_DIR_IN_REPO: &str = "host/swagger-ui/node_modules/swagger-ui-dist";

/// The `swagger-ui-dist` directory: `$OPENIDCS_SWAGGER_UI_DIR`, else the
/// repository's.
fn ui_dir() -> Option<PathBuf> {
    super::files::repo_dir(UI_DIR_VARIABLE, UI_DIR_IN_REPO, "swagger-ui-bundle.js")
}

fn ui_missing() -> ApiError {
    ApiError::NotFound(format!(
        "the API browser needs npm's swagger-ui-dist: run `make setup` (installs it into \
         {UI_DIR_IN_REPO}) or set {UI_DIR_VARIABLE}; the document itself is at /api/openapi.json"
    ))
}

const DOCS_PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>openidcs API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="/api/docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/api/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      plugins: [SwaggerUIBundle.plugins.DownloadUrl],
      layout: "StandaloneLayout"
    });
  </script>
</body>
</html>
"##;

/// Swagger UI on this document (no token needed; "Authorize" takes it).
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = "docs",
    responses(
        (status = 200, description = "The Swagger UI page", content_type = "text/html", body = String),
        (status = 404, description = "swagger-ui-dist is not installed", body = Failure),
    )
)]
pub async fn docs() -> Result<Response, ApiError> {
    ui_dir().ok_or_else(ui_missing)?;
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        DOCS_PAGE,
    )
        .into_response())
}

/// A file of Swagger UI.
#[utoipa::path(
    get,
    path = "/api/docs/{file}",
    tag = "docs",
    params(
        ("file" = String, Path, description = "A file of swagger-ui-dist",
         example = "swagger-ui.css",
         // Keep in step with UI_FILES.
         pattern = r"^(swagger-ui\.css|swagger-ui-bundle\.js|swagger-ui-standalone-preset\.js|favicon-32x32\.png|favicon-16x16\.png)$"),
    ),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/css"),
            (String = "text/javascript"),
            (String = "image/png"),
        )),
        (status = 404, description = "No such file, or swagger-ui-dist is not installed", body = Failure),
    )
)]
pub async fn docs_asset(ApiPath(file): ApiPath<String>, request: Request) -> Response {
    let Some(&(name, content_type)) = UI_FILES.iter().find(|(name, _)| *name == file) else {
        return ApiError::NotFound(format!("no API browser file {file:?}")).into_response();
    };
    let Some(directory) = ui_dir() else {
        return ui_missing().into_response();
    };
    super::files::serve(&directory, name, content_type, request, ui_missing()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(document: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
        let mut found = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                found.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        found
    }

    #[test]
    fn aliases_are_copies_of_their_endpoints() {
        let document = serde_json::to_value(crate::api::document()).expect("document as JSON");
        for (alias, endpoint, _) in crate::api::aliases() {
            let original = &document["paths"][endpoint];
            let copy = &document["paths"][alias];
            let methods: Vec<&String> = original.as_object().expect(endpoint).keys().collect();
            assert_eq!(methods.len(), 1, "{endpoint}");
            let method = methods[0];
            assert_eq!(
                original[method]["parameters"], copy[method]["parameters"],
                "{alias}: parameters differ"
            );
            assert_eq!(
                original[method]["responses"], copy[method]["responses"],
                "{alias}: responses differ"
            );
            assert_ne!(
                original[method]["operationId"], copy[method]["operationId"],
                "{alias}"
            );
        }
    }

    #[test]
    fn document_is_openapi_3_1_with_unique_operation_ids_and_security() {
        let document = serde_json::to_value(crate::api::document()).expect("document as JSON");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|version| version.starts_with("3.1"))
        );
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let operations = operations(&document);
        // 35 endpoints, the console counters, the 3 named-token routes, the
        // 15 billing-panel routes, temptoken and templogin, the OS image
        // list, the event stream, the browser session's 3, 19 aliases, 3
        // documentation routes.
        assert_eq!(
            operations.len(),
            35 + 1 + 3 + 15 + 2 + 1 + 1 + 3 + 19 + 3,
            "{:?}",
            operations
                .iter()
                .map(|(method, path, _)| format!("{method} {path}"))
                .collect::<Vec<_>>()
        );
        let mut ids = std::collections::HashSet::new();
        for (method, path, operation) in &operations {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            let security = operation["security"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let schemes: Vec<&str> = security
                .iter()
                .flat_map(|requirement| {
                    requirement
                        .as_object()
                        .into_iter()
                        .flat_map(|object| object.keys())
                })
                .map(String::as_str)
                .collect();
            let expected: &[&str] = if PUBLIC_PATHS.contains(&path.as_str()) {
                &[]
            } else if path == "/api/client/upload" {
                &["upload_key", "upload_key_query"]
            } else if path == "/api/client/templogin" {
                // Its query's single sign-on token is the credential.
                &[]
            } else if path == "/api/system/session" && method != "get" {
                // Signing in (the token is in the body) and out.
                &[]
            } else {
                &["bearer"]
            };
            assert_eq!(schemes, expected, "{method} {path}");
            let responses = operation["responses"].as_object().expect("responses");
            // templogin answers a redirect; every other operation a 200.
            let success = if path == "/api/client/templogin" {
                "302"
            } else {
                "200"
            };
            assert!(
                responses.contains_key(success),
                "{method} {path}: no {success}"
            );
            if !PUBLIC_PATHS.contains(&path.as_str()) {
                for (status, _) in ERRORS {
                    assert!(
                        responses.contains_key(*status),
                        "{method} {path}: no {status}"
                    );
                }
            }
        }
    }

    /// The console counters are a typed body, not a bare object.
    #[test]
    fn console_counters_are_a_named_schema() {
        let document = serde_json::to_value(crate::api::document()).expect("document as JSON");
        let answer =
            document["paths"]["/api/system/consoles"]["get"]["responses"]["200"].to_string();
        assert!(
            answer.contains("#/components/schemas/Envelope_ConsoleCounters"),
            "{answer}"
        );
        let schemas = &document["components"]["schemas"];
        // The generic envelope inlines its `data`.
        let data = &schemas["Envelope_ConsoleCounters"]["properties"]["data"];
        assert!(data["properties"]["tcp_connects"].is_object(), "{data}");
        assert_eq!(
            data["properties"]["limits"]["$ref"], "#/components/schemas/ConsoleLimits",
            "{data}"
        );
        assert!(schemas["ConsoleLimits"]["properties"]["ticket_ttl_s"].is_object());
    }

    /// The body types accept the original server's names (documented in
    /// their descriptions).
    #[test]
    fn body_aliases_are_accepted() {
        use crate::model::{IpAddInput, NatAddInput, PasswordInput, ProxyAddInput};
        let nat: NatAddInput = serde_json::from_value(serde_json::json!({
            "external_port": 20001, "internal_port": 22, "internal_ip": "10.0.0.2", "port_tips": "ssh"
        }))
        .expect("NAT aliases");
        assert_eq!((nat.wan_port, nat.lan_port), (Some(20001), Some(22)));
        assert_eq!(
            (nat.lan_addr.as_str(), nat.nat_tips.as_str()),
            ("10.0.0.2", "ssh")
        );
        let nat: NatAddInput = serde_json::from_value(serde_json::json!({ "description": "web" }))
            .expect("NAT description");
        assert_eq!(nat.nat_tips, "web");
        let ip: IpAddInput = serde_json::from_value(serde_json::json!({
            "type": "pub", "address": "10.0.0.3", "gateway": "10.0.0.1", "netmask": "255.255.255.0"
        }))
        .expect("IP aliases");
        assert_eq!(
            [ip.nic_type, ip.ip4_addr, ip.nic_gate, ip.nic_mask],
            ["pub", "10.0.0.3", "10.0.0.1", "255.255.255.0"]
        );
        let proxy: ProxyAddInput = serde_json::from_value(serde_json::json!({
            "web_addr": "a.example.com", "lan_port": 8080, "lan_addr": "10.0.0.2", "is_https": true, "web_tips": "x"
        }))
        .expect("proxy aliases");
        assert_eq!(proxy.domain, "a.example.com");
        assert_eq!(proxy.backend_port, Some(8080));
        assert!(proxy.ssl_enabled);
        assert_eq!(
            (proxy.backend_ip.as_str(), proxy.description.as_str()),
            ("10.0.0.2", "x")
        );
        let password: PasswordInput =
            serde_json::from_value(serde_json::json!({ "os_pass": "secret" })).expect("os_pass");
        assert_eq!(password.password, "secret");
    }
}
