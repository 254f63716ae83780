//! The HTTP listener: the router on hyper, as `axum::serve` runs it, plus
//! what `axum::serve` does not set: a deadline for a request's headers, so a
//! client that trickles them (slowloris) cannot hold a connection and its
//! task for ever. Websocket upgrades (the console) and graceful shutdown
//! work as before; each request carries `ConnectInfo` (the client address,
//! for the auth limiter and the console's log records).

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
use tower::ServiceExt;

/// Serve `router` on `listener` until `shutdown` completes; then stop
/// accepting, let open connections finish their requests, and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
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
        let router = router.clone();
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
        let signal = signal.clone();
        let connection_open = close_receiver.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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
            drop(connection_open);
        });
    }
    drop(signal_receiver);
    drop(close_receiver);
    drop(listener);
    close.closed().await;
}
