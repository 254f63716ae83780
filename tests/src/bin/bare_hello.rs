//! The benchmark ceiling: a bare axum "hello" on the same runtime settings
//! as openidcs, answering a JSON envelope of the same shape.

use axum::{Json, Router, routing::get};
use serde_json::json;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let router = Router::new().route(
        "/hello",
        get(|| async { Json(json!({ "code": 200, "msg": "success", "data": "hello" })) }),
    );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("bare-hello listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await
}
