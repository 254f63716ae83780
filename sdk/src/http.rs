//! Requests to the host's own HTTP API, for engines of world `http-engine`
//! (granted `http`): Docker or Podman, Proxmox, LXD.
//!
//! The server lets an engine call reach its host's `server_addr` and
//! nothing else, and adds the host's credential itself: an engine neither
//! knows nor sets it. A `unix:///…` API is addressed as `http://localhost`.
//!
//! ```ignore
//! let api = Api::of(&host)?;
//! let info = api.get("/v1.41/info")?.json()?;
//! api.post_json("/v1.41/containers/create?name=web1", &body)?.expect(201)?;
//! ```

use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

use crate::{Error, HostConfig, Result};

/// Largest write to the request body stream at once (wasi:http's limit is 4 KiB per `write` without `check-write`).
const WRITE_CHUNK: usize = 4096;

/// The host's API, as the engine addresses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    https: bool,
    authority: String,
}

/// An answer of the API.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|error| Error::Failed(format!("the API answered no JSON: {error}")))
    }

    /// This answer if its status is one of `wanted`, else an error with the
    /// API's own message (404 → not-found, 409 → conflict, 4xx → invalid).
    pub fn expect(self, wanted: &[u16]) -> Result<Response> {
        if wanted.contains(&self.status) {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.body);
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|json| json["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        let message = format!("the API answered {}: {message}", self.status);
        Err(match self.status {
            404 => Error::NotFound(message),
            409 => Error::Conflict(message),
            400..=499 => Error::Invalid(message),
            _ => Error::Failed(message),
        })
    }
}

impl Api {
    /// The API of `host` (its `server_addr`).
    pub fn of(host: &HostConfig) -> Result<Api> {
        let address = host.server_addr.trim_end_matches('/');
        if address.starts_with("unix:///") {
            return Ok(Api {
                https: false,
                authority: "localhost".to_owned(),
            });
        }
        let (https, authority) = if let Some(rest) = address.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = address.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(Error::Invalid(format!(
                "server_addr {:?} is not an HTTP API (https://, http:// or unix:///)",
                host.server_addr
            )));
        };
        Ok(Api {
            https,
            authority: authority.to_owned(),
        })
    }

    pub fn get(&self, path: &str) -> Result<Response> {
        self.request(Method::Get, path, &[], None)
    }

    pub fn delete(&self, path: &str) -> Result<Response> {
        self.request(Method::Delete, path, &[], None)
    }

    /// POST with a JSON body (`null` sends none).
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<Response> {
        if body.is_null() {
            return self.request(Method::Post, path, &[], None);
        }
        let bytes = body.to_string().into_bytes();
        self.request(
            Method::Post,
            path,
            &[("content-type", b"application/json")],
            Some(&bytes),
        )
    }

    /// One request with `headers` and `body`; waits for the whole answer.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let failed = |what: &str| Error::Failed(format!("HTTP {what} {path}"));
        let fields = Fields::new();
        for (name, value) in headers {
            fields
                .append(name, value)
                .map_err(|error| Error::Invalid(format!("header {name}: {error:?}")))?;
        }
        // The body's length up front: without it the request goes chunked,
        // which some APIs refuse (Docker's `start` reads any chunked body,
        // even an empty one, as a body).
        if !matches!(method, Method::Get | Method::Head) {
            let length = body.map_or(0, <[u8]>::len).to_string();
            fields
                .append("content-length", length.as_bytes())
                .map_err(|error| Error::Invalid(format!("header content-length: {error:?}")))?;
        }
        let request = OutgoingRequest::new(fields);
        let scheme = if self.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_method(&method)
            .and(request.set_scheme(Some(&scheme)))
            .and(request.set_authority(Some(&self.authority)))
            .and(request.set_path_with_query(Some(path)))
            .map_err(|()| Error::Invalid(format!("not a request path: {path:?}")))?;
        let outgoing = request.body().map_err(|()| failed("body of"))?;
        let pending =
            outgoing_handler::handle(request, None).map_err(|error| refused(path, &error))?;
        if let Some(bytes) = body {
            let stream = outgoing.write().map_err(|()| failed("body stream of"))?;
            for chunk in bytes.chunks(WRITE_CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|_| failed("writing the body of"))?;
            }
            drop(stream);
        }
        OutgoingBody::finish(outgoing, None).map_err(|error| refused(path, &error))?;
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or_else(|| failed("no answer to"))?
            .map_err(|()| failed("answer already taken of"))?
            .map_err(|error| refused(path, &error))?;
        let status = response.status();
        let incoming = response.consume().map_err(|()| failed("answer body of"))?;
        let stream = incoming.stream().map_err(|()| failed("answer stream of"))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => {
                    return Err(Error::Failed(format!(
                        "reading the answer to {path}: {}",
                        error.to_debug_string()
                    )));
                }
            }
        }
        Ok(Response { status, body })
    }
}

/// What the server or the network answered instead of the API.
fn refused(path: &str, error: &ErrorCode) -> Error {
    match error {
        ErrorCode::HttpRequestDenied => Error::Denied(format!(
            "the server refused the request for {path}: an engine reaches its host's server_addr only"
        )),
        other => Error::Failed(format!("HTTP request for {path}: {other:?}")),
    }
}
