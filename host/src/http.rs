//! The HTTP listener: the router on hyper, as `axum::serve` runs it, plus
//! what `axum::serve` does not set: a deadline for a request's headers, so a
//! client that trickles them (slowloris) cannot hold a connection and its
//! task for ever. Websocket upgrades (the console) and graceful shutdown
//! work as before; each request carries `ConnectInfo` (the client address,
//! for the auth limiter and the console's log records). HTTPS is served
//! here too (rustls), so the console's websocket is `wss` on the same port.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Serve `router` on `listener` until `shutdown` completes; then stop
/// accepting, let open connections finish their requests, and return. With
/// `tls`, every connection is a TLS one (HTTP/1.1 or HTTP/2 by ALPN); its
/// handshake counts against the header deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    // As in `axum::serve`: dropping `signal_receiver` tells every
    // connection to finish (their senders see no receiver left); each
    // connection holds a `close_receiver`, so `close.closed()` waits for
    // the last one.
    let (signal, signal_receiver) = tokio::sync::watch::channel(());
    let (close, close_receiver) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            router: router.clone(),
            remote,
            header_read_timeout,
            signal: signal.clone(),
        };
        let connection_open = close_receiver.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(error)) => tracing::debug!("TLS from {remote}: {error}"),
                        Err(_) => tracing::debug!("TLS from {remote}: no handshake in time"),
                    }
                }
            }
            drop(connection_open);
        });
    }
    drop(signal_receiver);
    drop(close_receiver);
    drop(listener);
    close.closed().await;
}

/// One accepted connection, before its transport is known.
struct Connection {
    router: Router,
    remote: SocketAddr,
    header_read_timeout: Duration,
    /// Closed when the server stops: finish the request in flight, then close.
    signal: tokio::sync::watch::Sender<()>,
}

impl Connection {
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            router,
            remote,
            header_read_timeout,
            signal,
        } = self;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            let request = request.map(Body::new);
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    router
                        .oneshot(request)
                        .await
                        .unwrap_or_else(|never| match never {}),
                )
            }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let mut stopping = std::pin::pin!(signal.closed());
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!("connection from {remote}: {error}");
                    }
                    break;
                }
                () = &mut stopping => connection.as_mut().graceful_shutdown(),
            }
        }
    }
}
