//! What an outsider can do to the disk: 100,000 requests without a valid
//! credential or to unknown routes, with long paths and bodies, must not
//! grow the database by more than a megabyte. They are counted and
//! summarised, not logged one by one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openidcs_tests::Server;

const REQUESTS: usize = 100_000;
const CLIENTS: usize = 32;

fn database_bytes(server: &Server) -> u64 {
    ["openidcs.db", "openidcs.db-wal", "openidcs.db-shm"]
        .iter()
        .filter_map(|name| std::fs::metadata(server.data_dir().join(name)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_floods_do_not_grow_the_database() {
    let server = Server::start("");
    // Let start-up writes settle, then measure.
    server.ok("GET", "/api/system/statis", None).await;
    let before = database_bytes(&server);
    let long_tail = "x".repeat(4_000);
    let body = "y".repeat(10_000);
    let sent = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let mut workers = Vec::new();
    for worker in 0..CLIENTS {
        let (client, base, sent) = (client.clone(), server.base.clone(), sent.clone());
        let (long_tail, body) = (long_tail.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut number = worker;
            while number < REQUESTS {
                let request = match number % 4 {
                    // Wrong token on a mutation (was one record each).
                    0 => client
                        .post(format!("{base}/api/client/create/h{number}"))
                        .bearer_auth(format!("wrong-{number}"))
                        .body(body.clone()),
                    // No token at all.
                    1 => client.delete(format!("{base}/api/server/delete/{long_tail}")),
                    // An unknown route with a long path and a body.
                    2 => client
                        .post(format!("{base}/api/{long_tail}/{number}"))
                        .body(body.clone()),
                    // A wrong method on a known route.
                    _ => client.patch(format!("{base}/api/system/statis")),
                };
                if request.send().await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                number += CLIENTS;
            }
        }));
    }
    let all = async {
        for worker in workers {
            worker.await.expect("worker");
        }
    };
    tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .expect("100,000 requests within 5 minutes");
    assert_eq!(
        sent.load(Ordering::Relaxed),
        REQUESTS,
        "every request answered"
    );
    // The summaries and anything else pending are written by now.
    server.ok("GET", "/api/system/statis", None).await;
    let after = database_bytes(&server);
    let grown = after.saturating_sub(before);
    assert!(
        grown < 1 << 20,
        "the database grew by {grown} bytes ({before} → {after})"
    );
    let logs = server
        .ok("GET", "/api/system/logget?limit=1000", None)
        .await;
    let records = logs.as_array().expect("list");
    assert!(records.len() < 50, "{} records", records.len());
    assert!(
        records
            .iter()
            .any(|record| record["actions"] == "refused-requests"),
        "the refusals are summarised: {logs}"
    );
}
