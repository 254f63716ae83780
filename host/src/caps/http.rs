//! `wasi:http` outgoing requests, for engines granted `http` (engines of
//! hypervisors with a network API: Docker/Podman, Proxmox, LXD, …).
//!
//! Scoped per call to the host the call is for: the only reachable API is
//! that host's `server_addr` — `https://host:port`, `http://host:port`, or
//! `unix:///path/to.sock` (addressed by the engine as `http://localhost`).
//! A request anywhere else answers the guest `HTTP-request-denied` and
//! writes a log record. The credentials stay with the host: `server_user`
//! and `server_pass` become `Authorization: Basic`, `server_pass` alone
//! `Authorization: Bearer`, added here (an engine never sees
//! `server_pass`; whatever `Authorization` it sets is replaced). An `https`
//! API is trusted by its certificate's SHA-256 fingerprint, pinned in the
//! host's `extend_data.tls_fingerprint` (hypervisors' certificates are
//! self-signed); without a pin, `https` is refused. Budgets per call (`[http]`):
//! concurrent requests, response bytes, time.
//!
//! Connections are kept open between calls, in one pool per API scope (the
//! address, pin and credential together, [`ApiScope`]): a poll of a host's
//! containers reuses one TLS session instead of a handshake per request, and
//! a connection never carries another scope's requests.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::HostScope;
use crate::config::HttpConfig;
use crate::plugin::bindings::TerminalRequest;
use crate::store::{LogLevel, NewLog, Store};

type SendResult = Result<(http::Response<WasiBody>, IoDriver), Error>;
type IoDriver = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Where a host's API is, as `server_addr` names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ApiAddress {
    /// `http(s)://host:port`: the authority the engine must use, and
    /// whether it is TLS.
    Tcp { authority: String, tls: bool },
    /// `unix:///path`: the engine uses `http://localhost`.
    Unix(PathBuf),
}

impl ApiAddress {
    /// `server_addr` as an HTTP API address; `None` for other forms (a
    /// libvirt URI: such a host has no HTTP API).
    pub fn parse(server_addr: &str) -> Option<ApiAddress> {
        if let Some(path) = server_addr.strip_prefix("unix://") {
            return path
                .starts_with('/')
                .then(|| ApiAddress::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = if let Some(rest) = server_addr.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, server_addr.strip_prefix("http://")?)
        };
        let authority: http::uri::Authority = rest.trim_end_matches('/').parse().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Some(ApiAddress::Tcp {
            authority: format!("{}:{port}", authority.host().to_ascii_lowercase()),
            tls,
        })
    }

    /// Whether a request to `scheme://authority` is for this API.
    fn admits(
        &self,
        scheme: Option<&http::uri::Scheme>,
        authority: Option<&http::uri::Authority>,
    ) -> bool {
        let Some(authority) = authority else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        let https = scheme == Some(&http::uri::Scheme::HTTPS);
        match self {
            ApiAddress::Unix(_) => !https && authority.host().eq_ignore_ascii_case("localhost"),
            ApiAddress::Tcp {
                authority: own,
                tls,
            } => {
                let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
                *tls == https && format!("{}:{port}", authority.host().to_ascii_lowercase()) == *own
            }
        }
    }

    /// The `Host` header the API expects.
    fn host_header(&self) -> String {
        match self {
            ApiAddress::Unix(_) => "localhost".to_owned(),
            ApiAddress::Tcp { authority, .. } => authority.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            ApiAddress::Unix(path) => format!("http://localhost (unix:{})", path.display()),
            ApiAddress::Tcp { authority, tls } => {
                format!("{}://{authority}", if *tls { "https" } else { "http" })
            }
        }
    }
}

/// The credential the host adds to each request (its `Debug` shows the
/// kind, never the secret).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum ApiCredential {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// A client certificate presented in the TLS handshake (PEM chain and
    /// key), for an `https` API that verifies its clients.
    ClientCertificate {
        chain_pem: String,
        key_pem: String,
    },
}

impl std::fmt::Debug for ApiCredential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            ApiCredential::None => "None",
            ApiCredential::Basic { .. } => "Basic(…)",
            ApiCredential::Bearer(_) => "Bearer(…)",
            ApiCredential::ClientCertificate { .. } => "ClientCertificate(…)",
        })
    }
}

impl ApiCredential {
    /// From `server_user`/`server_pass`: both → Basic, the password alone →
    /// Bearer; with `extend_data.tls_client_cert`, the password is that
    /// certificate's key.
    pub fn from_settings(user: &str, password: &str, client_cert: Option<&str>) -> ApiCredential {
        if let Some(chain) = client_cert {
            return ApiCredential::ClientCertificate {
                chain_pem: chain.to_owned(),
                key_pem: password.to_owned(),
            };
        }
        match (user.is_empty(), password.is_empty()) {
            (_, true) => ApiCredential::None,
            (true, false) => ApiCredential::Bearer(password.to_owned()),
            (false, false) => ApiCredential::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            },
        }
    }

    fn header(&self) -> Option<http::HeaderValue> {
        let value = match self {
            ApiCredential::None | ApiCredential::ClientCertificate { .. } => return None,
            ApiCredential::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            ApiCredential::Bearer(token) => format!("Bearer {token}"),
        };
        let mut value = http::HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// How long an idle connection to a host's API stays open.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);
/// Pools kept at once; more (host settings changed that often) start over.
const MAX_SCOPES: usize = 64;

/// What the connections to a host's API are for: its address, the pin that
/// trusts it and the credential its requests carry. A pooled connection
/// serves one scope only (a client certificate is part of the handshake; a
/// changed pin or password is a new scope).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ApiScope {
    address: ApiAddress,
    pin: Option<[u8; 32]>,
    credential: ApiCredential,
}

/// A pooled client of one scope.
type ApiClient = Client<ScopeConnector, WasiBody>;

/// The `http` grant's side shared by every call: the budgets, and the
/// connections kept open to the hosts' APIs (one pool per [`ApiScope`]).
pub struct HttpService {
    limits: HttpConfig,
    clients: parking_lot::Mutex<HashMap<ApiScope, ApiClient>>,
}

impl HttpService {
    pub fn new(limits: HttpConfig) -> HttpService {
        HttpService {
            limits,
            clients: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The client of `scope`, made at its first request.
    fn client(&self, scope: &ApiScope) -> ApiClient {
        let mut clients = self.clients.lock();
        if let Some(client) = clients.get(scope) {
            return client.clone();
        }
        if clients.len() >= MAX_SCOPES {
            // Dropping a client closes its idle connections; requests in
            // flight keep theirs.
            clients.clear();
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_CONNECTION)
            .pool_max_idle_per_host(self.limits.max_concurrent.max(1))
            // The Host header is the API's (set by `send`), not the URI's.
            .set_host(false)
            .build(ScopeConnector {
                scope: scope.clone(),
                timeout: Duration::from_millis(self.limits.timeout_ms),
            });
        clients.insert(scope.clone(), client.clone());
        client
    }

    /// Send an engine's request on a pooled connection of `scope`: the
    /// `Host` the API expects and the scope's credential; the answer's body
    /// within the response budget, holding the call's slot until read.
    async fn send(
        &self,
        scope: ApiScope,
        mut request: http::Request<WasiBody>,
        options: RequestOptions,
        permit: OwnedSemaphorePermit,
    ) -> SendResult {
        let client = self.client(&scope);
        set_api_headers(request.headers_mut(), &scope.address, &scope.credential);
        // The connect timeout is the connector's (the ceiling); the first
        // byte's, as asked, bounds the whole exchange.
        let first_byte = options
            .first_byte_timeout
            .unwrap_or(Duration::from_millis(self.limits.timeout_ms));
        let response = tokio::time::timeout(first_byte, client.request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(|error| client_error(&error))?;
        let budget = self.limits.max_response_bytes;
        let response = response.map(|incoming| {
            Budgeted {
                inner: incoming.map_err(Error::from).boxed_unsync(),
                remaining: budget,
                limit: budget,
                _permit: permit,
            }
            .boxed_unsync()
        });
        // The pool drives its connections; nothing to await here.
        let io: IoDriver = Box::new(async { Ok(()) });
        Ok((response, io))
    }
}

/// The `Host` the API at `address` expects, and the host's credential.
fn set_api_headers(
    headers: &mut http::HeaderMap,
    address: &ApiAddress,
    credential: &ApiCredential,
) {
    if let Ok(value) = http::HeaderValue::from_str(&address.host_header()) {
        headers.insert(http::header::HOST, value);
    }
    if let Some(value) = credential.header() {
        headers.insert(http::header::AUTHORIZATION, value);
    }
}

/// The guest's error for a failed pooled request: the connector's own
/// (kept by kind), else what hyper says of the connection.
fn client_error(error: &hyper_util::client::legacy::Error) -> Error {
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(own) = current.downcast_ref::<Error>() {
            return match own {
                Error::Connect(io) => {
                    Error::Connect(std::io::Error::new(io.kind(), io.to_string()))
                }
                Error::Tls(io) => Error::Tls(std::io::Error::new(io.kind(), io.to_string())),
                Error::ConnectionTimeout => Error::ConnectionTimeout,
                Error::TlsCertificateError => Error::TlsCertificateError,
                Error::TlsProtocolError => Error::TlsProtocolError,
                other => Error::InternalError(Some(other.to_string())),
            };
        }
        if let Some(hyper) = current.downcast_ref::<hyper::Error>() {
            return if hyper.is_incomplete_message() {
                Error::HttpResponseIncomplete
            } else if hyper.is_closed() || hyper.is_canceled() {
                Error::ConnectionTerminated
            } else if hyper.is_timeout() {
                Error::ConnectionReadTimeout
            } else {
                Error::HttpProtocolError
            };
        }
        cause = current.source();
    }
    if error.is_connect() {
        Error::ConnectionRefused
    } else {
        Error::HttpProtocolError
    }
}

/// Opens the connections of one scope's pool.
#[derive(Clone)]
struct ScopeConnector {
    scope: ApiScope,
    timeout: Duration,
}

impl tower::Service<http::Uri> for ScopeConnector {
    type Response = ApiConnection;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<ApiConnection, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    /// The URI is the engine's (already admitted for this scope): the
    /// connection goes to the scope's address whatever it says.
    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let ApiScope {
                address,
                pin,
                credential,
            } = &connector.scope;
            connect(address, *pin, credential, connector.timeout)
                .await
                .map(|stream| ApiConnection(TokioIo::new(stream)))
        })
    }
}

/// A pooled connection: TCP, TLS or a unix socket.
struct ApiConnection(TokioIo<Box<dyn Stream>>);

impl Connection for ApiConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for ApiConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl hyper::rt::Write for ApiConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}

/// Per-call state of the `http` grant.
pub struct HttpCall {
    service: Arc<HttpService>,
    store: Arc<Store>,
    plugin: Arc<str>,
    host: Option<Arc<HostScope>>,
    /// The call's concurrent-request budget, made at its first request
    /// (most engine calls make none).
    slots: Option<Arc<Semaphore>>,
}

impl HttpCall {
    pub fn new(
        service: Arc<HttpService>,
        store: Arc<Store>,
        plugin: Arc<str>,
        host: Option<Arc<HostScope>>,
    ) -> HttpCall {
        HttpCall {
            service,
            store,
            plugin,
            host,
            slots: None,
        }
    }

    /// Refuse a request: a log record, and the error the guest sees.
    fn deny(&self, why: &str, error: Error) -> Box<dyn Future<Output = SendResult> + Send> {
        let message = format!("plugin {}: HTTP request denied: {why}", self.plugin);
        tracing::warn!("{message}");
        let mut record = NewLog::new(LogLevel::Warn, format!("plugin:{}", self.plugin), message);
        if let Some(host) = &self.host {
            record = record.host(host.name.clone());
        }
        if let Err(store_error) = self.store.log_insert(&record) {
            tracing::error!("cannot store a log record: {store_error}");
        }
        Box::new(async move { Err(error) })
    }
}

impl WasiHttpHooks for HttpCall {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let Some(host) = self.host.clone() else {
            return self.deny("the call is for no host", Error::HttpRequestDenied);
        };
        let (address, pin) = match api_of(&host) {
            Ok(api) => api,
            Err((why, error)) => return self.deny(&why, error),
        };
        let uri = request.uri();
        if !address.admits(uri.scheme(), uri.authority()) {
            let asked = format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("?"),
                uri.authority().map_or("?", |authority| authority.as_str())
            );
            return self.deny(
                &format!(
                    "{asked} is outside host {}, which reaches {} only",
                    host.name,
                    address.describe()
                ),
                Error::HttpRequestDenied,
            );
        }
        let limits = &self.service.limits;
        let slots = self
            .slots
            .get_or_insert_with(|| Arc::new(Semaphore::new(limits.max_concurrent.max(1))))
            .clone();
        let Ok(permit) = slots.try_acquire_owned() else {
            return self.deny(
                &format!("more than {} requests at once", limits.max_concurrent),
                Error::ConnectionLimitReached,
            );
        };
        // The credential is the host's (added by the service): whatever
        // the engine set is dropped.
        let headers = request.headers_mut();
        headers.remove(http::header::AUTHORIZATION);
        headers.remove(http::header::PROXY_AUTHORIZATION);
        let options = request_options(limits, options);
        let scope = ApiScope {
            address,
            pin,
            credential: host.api_credential.clone(),
        };
        let service = self.service.clone();
        Box::new(async move { service.send(scope, request, options, permit).await })
    }
}

/// The timeouts of a request: what was asked, within `[http] timeout_ms`
/// (which is also the default).
fn request_options(limits: &HttpConfig, asked: Option<RequestOptions>) -> RequestOptions {
    let ceiling = Duration::from_millis(limits.timeout_ms);
    let within =
        |wanted: Option<Duration>| Some(wanted.map_or(ceiling, |wanted| wanted.min(ceiling)));
    let asked = asked.unwrap_or_default();
    RequestOptions {
        connect_timeout: within(asked.connect_timeout),
        first_byte_timeout: within(asked.first_byte_timeout),
        between_bytes_timeout: within(asked.between_bytes_timeout),
    }
}

/// Why a host's API cannot be reached: the text names the host (log
/// records), the error is what the guest sees.
type Unreachable = (String, Error);

/// The host's API and the certificate pin that trusts it.
fn api_of(host: &HostScope) -> Result<(ApiAddress, Option<[u8; 32]>), Unreachable> {
    let Some(address) = ApiAddress::parse(&host.uri) else {
        return Err((
            format!(
                "host {} has no HTTP API (server_addr {:?})",
                host.name, host.uri
            ),
            Error::HttpRequestDenied,
        ));
    };
    let pin = match &address {
        ApiAddress::Tcp { tls: true, .. } => match host.tls_pin {
            Some(pin) => Some(pin),
            None => {
                return Err((
                    format!(
                        "host {} is https without a pinned certificate (extend_data.tls_fingerprint)",
                        host.name
                    ),
                    Error::TlsCertificateError,
                ));
            }
        },
        _ => None,
    };
    Ok((address, pin))
}

/// A terminal's byte stream: the host's API connection after its `101`.
pub type TerminalStream = TokioIo<hyper::upgrade::Upgraded>;

/// Open a terminal for a console (an engine's `terminal-request`): the
/// request goes to the host's own API with its pin and credential, like the
/// engine's requests; only the path, method and body are the engine's. The
/// API must switch the connection to a raw stream (`101`, `Upgrade: tcp`).
pub async fn open_terminal(
    host: &HostScope,
    limits: &HttpConfig,
    request: &TerminalRequest,
) -> Result<TerminalStream, String> {
    let method = http::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
        format!(
            "the engine's terminal method {:?} is not one",
            request.method
        )
    })?;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(api_path(&request.path)?)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "tcp");
    if !request.body.is_empty() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(request.body.clone())))
        .map_err(|error| format!("the terminal request: {error}"))?;
    let response = Exchange::for_host(host, limits)?.open(request).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(answered(response).await);
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|error| format!("the API's terminal stream: {error}"))?;
    Ok(TokioIo::new(upgraded))
}

/// `POST <path>` on the host's API, answered 2xx (a terminal's resize).
pub async fn post_to_api(host: &HostScope, limits: &HttpConfig, path: &str) -> Result<(), String> {
    let request = http::Request::post(api_path(path)?)
        .body(Full::new(Bytes::new()))
        .map_err(|error| format!("the request: {error}"))?;
    let response = Exchange::for_host(host, limits)?.open(request).await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(answered(response).await)
    }
}

/// A path and query on the API (never an authority: the API is the host's).
fn api_path(path: &str) -> Result<http::Uri, String> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(format!("{path:?} is not a path on the host's API"));
    }
    let path: http::uri::PathAndQuery = path
        .parse()
        .map_err(|_| format!("{path:?} is not a path on the host's API"))?;
    Ok(http::Uri::from(path))
}

/// An unexpected answer of the API, with the start of its body.
async fn answered(response: http::Response<hyper::body::Incoming>) -> String {
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), 4096)
        .collect()
        .await
        .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
        .unwrap_or_default();
    format!("the API answered {status}: {body}")
}

/// One request of the server's own (a console's terminal, its resize) on a
/// connection of its own, which the answer may upgrade.
struct Exchange {
    address: ApiAddress,
    pin: Option<[u8; 32]>,
    options: RequestOptions,
    credential: ApiCredential,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Exchange {
    /// A request of the server's own (a console's terminal) to the host's API.
    fn for_host(host: &HostScope, limits: &HttpConfig) -> Result<Exchange, String> {
        let (address, pin) = api_of(host).map_err(|(why, _)| why)?;
        Ok(Exchange {
            address,
            pin,
            options: request_options(limits, None),
            credential: host.api_credential.clone(),
        })
    }

    /// Send `request` on a connection of its own: on the wire the path
    /// only, the `Host` the API expects and the host's credential. The
    /// connection may be upgraded by the answer (a terminal).
    async fn roundtrip(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let connect_timeout = self
            .options
            .connect_timeout
            .unwrap_or(Duration::from_secs(30));
        let stream = connect(&self.address, self.pin, &self.credential, connect_timeout).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::from)?;
        // The connection ends with the request, or lives on upgraded.
        tokio::spawn(connection.with_upgrades());
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
        set_api_headers(request.headers_mut(), &self.address, &self.credential);
        let first_byte = self
            .options
            .first_byte_timeout
            .unwrap_or(Duration::from_secs(30));
        let response = tokio::time::timeout(first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)?;
        Ok(response)
    }

    /// [`Exchange::roundtrip`] for the server's own requests, its error as
    /// text naming the API.
    async fn open(
        self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        self.roundtrip(request)
            .await
            .map_err(|error| format!("{}: {error}", self.address.describe()))
    }
}

/// A connection to the API at `address` within `timeout`: TLS trusted by
/// `pin` (presenting the credential's client certificate, if it is one),
/// plain TCP, or a unix socket.
async fn connect(
    address: &ApiAddress,
    pin: Option<[u8; 32]>,
    credential: &ApiCredential,
    timeout: Duration,
) -> Result<Box<dyn Stream>, Error> {
    let connect = async {
        match address {
            ApiAddress::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(|stream| Box::new(stream) as Box<dyn Stream>)
                .map_err(Error::Connect),
            ApiAddress::Tcp { authority, tls } => {
                let tcp = tokio::net::TcpStream::connect(authority)
                    .await
                    .map_err(Error::Connect)?;
                if !tls {
                    return Ok(Box::new(tcp) as Box<dyn Stream>);
                }
                let pin = pin.ok_or(Error::TlsCertificateError)?;
                let connector = tokio_rustls::TlsConnector::from(pinned_tls(pin, credential)?);
                // The pin is the trust; the name only has to be well formed.
                let name = rustls::pki_types::ServerName::try_from("api.openidcs.invalid")
                    .map_err(|_| Error::TlsProtocolError)?;
                let stream = connector.connect(name, tcp).await.map_err(Error::Tls)?;
                Ok(Box::new(stream) as Box<dyn Stream>)
            }
        }
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| Error::ConnectionTimeout)?
}

/// A response body that fails past `limit` bytes, and holds the call's
/// request slot until it is read or dropped.
struct Budgeted {
    inner: WasiBody,
    remaining: u64,
    limit: u64,
    _permit: OwnedSemaphorePermit,
}

impl Body for Budgeted {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(context);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let length = data.len() as u64;
            if length > self.remaining {
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.limit)))));
            }
            self.remaining -= length;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A TLS client that trusts exactly the certificate whose SHA-256 is `pin`,
/// presenting the host's client certificate when it has one.
fn pinned_tls(
    pin: [u8; 32],
    credential: &ApiCredential,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate {
        pin,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| Error::TlsProtocolError)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match credential {
        ApiCredential::ClientCertificate { chain_pem, key_pem } => {
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| Error::TlsCertificateError)?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|_| Error::TlsCertificateError)?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|_| Error::TlsCertificateError)?
        }
        _ => config.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &self.pin[..])) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_own_authority_is_admitted() {
        let api = ApiAddress::parse("https://10.0.0.5:8006/").expect("https");
        let check = |uri: &str| {
            let uri: http::Uri = uri.parse().expect("uri");
            api.admits(uri.scheme(), uri.authority())
        };
        assert!(check("https://10.0.0.5:8006/api2/json/nodes"));
        assert!(check("https://10.0.0.5:8006"));
        assert!(!check("http://10.0.0.5:8006/"), "the scheme counts");
        assert!(!check("https://10.0.0.5/"), "so does the port (443)");
        assert!(!check("https://10.0.0.6:8006/"));
        assert!(!check("https://user@10.0.0.5:8006/"), "no userinfo tricks");
        let plain = ApiAddress::parse("http://Docker.Local").expect("http");
        let uri: http::Uri = "http://docker.local:80/v1.41/info".parse().expect("uri");
        assert!(plain.admits(uri.scheme(), uri.authority()));
        let unix = ApiAddress::parse("unix:///run/docker.sock").expect("unix");
        for (uri, admitted) in [
            ("http://localhost/v1.41/containers/json", true),
            ("https://localhost/", false),
            ("http://127.0.0.1/", false),
            ("http://example.com/", false),
        ] {
            let uri: http::Uri = uri.parse().expect("uri");
            assert_eq!(
                unix.admits(uri.scheme(), uri.authority()),
                admitted,
                "{uri}"
            );
        }
        for no_api in [
            "qemu:///system",
            "test:///default",
            "unix://relative.sock",
            "https://u:p@h/",
        ] {
            assert_eq!(ApiAddress::parse(no_api), None, "{no_api}");
        }
    }

    #[test]
    fn credentials_come_from_the_host_settings() {
        assert_eq!(
            ApiCredential::from_settings("", "", None),
            ApiCredential::None
        );
        assert_eq!(
            ApiCredential::from_settings("root", "", None),
            ApiCredential::None
        );
        let basic = ApiCredential::from_settings("root", "secret", None)
            .header()
            .expect("basic");
        assert_eq!(basic, "Basic cm9vdDpzZWNyZXQ=");
        assert!(basic.is_sensitive());
        let bearer = ApiCredential::from_settings("", "tok", None)
            .header()
            .expect("bearer");
        assert_eq!(bearer, "Bearer tok");
    }

    /// A TLS API on loopback with a fresh self-signed certificate; answers
    /// one request per connection with 200 `pinned`. With `client_ca`, it
    /// accepts only clients with a certificate that CA signed.
    async fn tls_api(
        client_ca: Option<rustls::pki_types::CertificateDer<'static>>,
    ) -> (u16, [u8; 32]) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let der = made.cert.der().clone();
        let pin: [u8; 32] = Sha256::digest(der.as_ref()).into();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).expect("CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(vec![der], key).expect("pair");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\npinned")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (port, pin)
    }

    /// A GET of `/version` through the service (its pool) for `scope`.
    async fn get(service: &HttpService, scope: &ApiScope) -> Result<String, Error> {
        let (scheme, authority) = match &scope.address {
            ApiAddress::Tcp { authority, tls } => {
                (if *tls { "https" } else { "http" }, authority.clone())
            }
            ApiAddress::Unix(_) => ("http", "localhost".to_owned()),
        };
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = http::Request::get(format!("{scheme}://{authority}/version"))
            .body(body)
            .expect("request");
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("slot");
        let options = request_options(&service.limits, None);
        let (response, _io) = service
            .send(scope.clone(), request, options, permit)
            .await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn service(max_response_bytes: u64) -> HttpService {
        HttpService::new(HttpConfig {
            max_concurrent: 2,
            max_response_bytes,
            timeout_ms: 5000,
        })
    }

    async fn get_over_tls(
        port: u16,
        pin: [u8; 32],
        max_response_bytes: u64,
        credential: ApiCredential,
    ) -> Result<String, Error> {
        let scope = ApiScope {
            address: ApiAddress::Tcp {
                authority: format!("127.0.0.1:{port}"),
                tls: true,
            },
            pin: Some(pin),
            credential,
        };
        get(&service(max_response_bytes), &scope).await
    }

    /// A keep-alive HTTP API on loopback that answers each request with the
    /// number of its connection and the request's `Authorization`.
    async fn counting_api() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let connection = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let credential = request
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or("none")
                            .to_owned();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(format!("{connection} {credential}")),
                            )))
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn requests_of_one_scope_reuse_a_connection_and_scopes_never_share_one() {
        let (port, accepted) = counting_api().await;
        let service = service(1024);
        let address = ApiAddress::Tcp {
            authority: format!("127.0.0.1:{port}"),
            tls: false,
        };
        let scope = |credential: ApiCredential| ApiScope {
            address: address.clone(),
            pin: None,
            credential,
        };
        let alice = scope(ApiCredential::Bearer("alice".to_owned()));
        for _ in 0..3 {
            assert_eq!(
                get(&service, &alice).await.expect("alice"),
                "1 Bearer alice"
            );
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another credential is another scope: its own connection, its own header.
        let bob = scope(ApiCredential::Bearer("bob".to_owned()));
        assert_eq!(get(&service, &bob).await.expect("bob"), "2 Bearer bob");
        assert_eq!(
            get(&service, &alice).await.expect("alice"),
            "1 Bearer alice"
        );
        assert_eq!(
            get(&service, &scope(ApiCredential::None))
                .await
                .expect("none"),
            "3 none"
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_the_guests_connect_error() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let scope = ApiScope {
            address: ApiAddress::Tcp {
                authority: format!("127.0.0.1:{port}"),
                tls: false,
            },
            pin: None,
            credential: ApiCredential::None,
        };
        let refused = get(&service(1024), &scope)
            .await
            .expect_err("nobody listens");
        assert!(
            matches!(&refused, Error::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn an_https_api_is_trusted_by_its_pinned_certificate_only() {
        let (port, pin) = tls_api(None).await;
        let none = || ApiCredential::None;
        assert_eq!(
            get_over_tls(port, pin, 1024, none()).await.expect("pinned"),
            "pinned"
        );
        let mut wrong = pin;
        wrong[0] ^= 1;
        let refused = get_over_tls(port, wrong, 1024, none())
            .await
            .expect_err("another certificate");
        assert!(matches!(refused, Error::Tls(_)), "{refused:?}");
        // The response budget: 6 bytes do not fit in 4.
        let cut = get_over_tls(port, pin, 4, none())
            .await
            .expect_err("over budget");
        assert!(
            matches!(cut, Error::HttpResponseBodySize(Some(4))),
            "{cut:?}"
        );
    }

    /// A CA and a client certificate it signed, as PEM (chain, key).
    fn client_identity() -> (rustls::pki_types::CertificateDer<'static>, String, String) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("key"),
        )
        .expect("CA");
        let client_key = rcgen::KeyPair::generate().expect("key");
        let client = rcgen::CertificateParams::new(vec!["panel".to_owned()])
            .expect("params")
            .signed_by(&client_key, &ca)
            .expect("client certificate");
        (ca.der().clone(), client.pem(), client_key.serialize_pem())
    }

    #[tokio::test]
    async fn an_api_that_verifies_clients_gets_the_hosts_certificate() {
        let (ca, chain_pem, key_pem) = client_identity();
        let (port, pin) = tls_api(Some(ca)).await;
        let answer = get_over_tls(
            port,
            pin,
            1024,
            ApiCredential::ClientCertificate {
                chain_pem: chain_pem.clone(),
                key_pem,
            },
        )
        .await
        .expect("the client certificate is accepted");
        assert_eq!(answer, "pinned");
        // No certificate, or one the API's CA did not sign: no answer.
        assert!(
            get_over_tls(port, pin, 1024, ApiCredential::None)
                .await
                .is_err()
        );
        let (_, stranger_pem, stranger_key) = client_identity();
        assert!(
            get_over_tls(
                port,
                pin,
                1024,
                ApiCredential::ClientCertificate {
                    chain_pem: stranger_pem,
                    key_pem: stranger_key,
                },
            )
            .await
            .is_err()
        );
        // The credential shows its kind, never the key.
        let shown = format!(
            "{:?}",
            ApiCredential::from_settings("", "secret-key", Some(&chain_pem))
        );
        assert_eq!(shown, "ClientCertificate(…)");
    }
}
