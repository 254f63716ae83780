//! Test engine for the `http` grant: `host-status` asks its host's API
//! (`server_addr`) for `/probe` through the SDK's `http::Api`, with an
//! `Authorization` of its own making, then tries another authority with
//! wasi:http directly, and fails with a report of what happened
//! and of every field it was given, so the test can check that the host
//! injected the credential, refused the other authority and never handed
//! the engine `server_pass`.

use openidcs_sdk::http::Api;
use openidcs_sdk::{Engine, EngineInfo, Error, HostConfig, HostCounters, Result};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

struct HttpProbe;

/// `(status, body)` of a GET, or the error the host answered.
fn get(authority: &str, path: &str) -> std::result::Result<(u16, String), String> {
    let headers = Fields::new();
    headers
        .set("authorization", &[b"Bearer made-up-by-the-engine".to_vec()])
        .map_err(|error| format!("headers: {error:?}"))?;
    let request = OutgoingRequest::new(headers);
    request
        .set_scheme(Some(&Scheme::Http))
        .and(request.set_authority(Some(authority)))
        .and(request.set_path_with_query(Some(path)))
        .map_err(|()| "request fields".to_owned())?;
    let body = request.body().map_err(|()| "request body".to_owned())?;
    let pending = outgoing_handler::handle(request, None).map_err(|error| format!("{error:?}"))?;
    OutgoingBody::finish(body, None).map_err(|error| format!("finish: {error:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "consumed")?
        .map_err(|error| format!("{error:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "response body")?;
    let stream = incoming.stream().map_err(|()| "response stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(format!("reading: {}", error.to_debug_string()));
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

impl Engine for HttpProbe {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "http-probe".to_owned(),
            version: "0.0.0".to_owned(),
            description: "test engine for the http grant".to_owned(),
        }
    }

    fn host_status(host: HostConfig) -> Result<HostCounters> {
        // A unix socket API is addressed as http://localhost.
        let own = if host.server_addr.starts_with("unix://") {
            "localhost"
        } else {
            host.server_addr
                .trim_start_matches("http://")
                .trim_end_matches('/')
        };
        let other = match own.rsplit_once(':') {
            Some((address, port)) => format!("{address}:{}", port.parse::<u16>().unwrap_or(80) ^ 1),
            None => "127.0.0.1:1".to_owned(),
        };
        let through_sdk = Api::of(&host).and_then(|api| {
            api.request(
                wasi::http::types::Method::Get,
                "/probe",
                &[("authorization", b"Bearer made-up-by-the-engine")],
                None,
            )
        });
        let own_answer = through_sdk
            .map(|answer| {
                (
                    answer.status,
                    String::from_utf8_lossy(&answer.body).into_owned(),
                )
            })
            .map_err(|error| format!("{error:?}"));
        let report = format!(
            "own={:?} other={:?} given=[{} {} {} {}]",
            own_answer,
            get(&other, "/steal"),
            host.server_addr,
            host.server_user,
            host.extend_data,
            host.filter_name,
        );
        Err(Error::Failed(report))
    }
}

openidcs_sdk::export_engine!(HttpProbe);
