//! `GET /api/system/events`, the server-sent event stream, read as any API
//! client reads it: a task goes queued → running → done, a power change
//! follows a start, a sample follows an upload; and each caller sees only
//! what it reaches (a token's hosts, a VM session's VM, filters).

use std::collections::VecDeque;
use std::time::Duration;

use openidcs_tests::{Server, plugin_toml};
use serde_json::{Value, json};

/// One open stream: the response and what was read of it but not taken.
struct Stream {
    response: reqwest::Response,
    buffer: String,
    events: VecDeque<(String, Value)>,
}

impl Stream {
    async fn open(server: &Server, query: &str, credential: Credential<'_>) -> Stream {
        let mut request = server
            .client
            .get(server.url(&format!("/api/system/events{query}")));
        request = match credential {
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::Session(session) => {
                request.header("Cookie", format!("openidcs_session={session}"))
            }
        };
        let response = request.send().await.expect("the stream");
        assert_eq!(response.status(), 200, "the stream opens");
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Stream {
            response,
            buffer: String::new(),
            events: VecDeque::new(),
        }
    }

    /// The next event (kind, data), waiting at most `timeout`.
    async fn next(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("reading the stream")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        kind = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                // Comment lines (keep-alives) carry no event.
                if !kind.is_empty() {
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    self.events.push_back((kind, value));
                }
            }
        }
    }

    /// Events until one matches `wanted`; all of them, that one last.
    async fn until(
        &mut self,
        what: &str,
        wanted: impl Fn(&str, &Value) -> bool,
    ) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        while let Some((kind, data)) = self.next(Duration::from_secs(20)).await {
            let found = wanted(&kind, &data);
            seen.push((kind, data));
            if found {
                return seen;
            }
        }
        panic!("no {what} within 20 s; saw {seen:#?}");
    }
}

const MAC: &str = "52:54:00:e7:00:01";

enum Credential<'a> {
    Bearer(&'a str),
    Session(&'a str),
}

fn vm_task(seen: &[(String, Value)], vm: &str, action: &str) -> Vec<String> {
    seen.iter()
        .filter(|(kind, data)| kind == "task" && data["vm_uuid"] == vm && data["actions"] == action)
        .filter_map(|(_, data)| data["state"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn tasks_power_and_samples_arrive_scoped_to_the_caller() {
    let server = Server::start(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    ));
    for host in ["h1", "h2"] {
        server
            .ok(
                "POST",
                "/api/server/create",
                Some(json!({ "name": host, "type": "libvirt",
                             "config": { "server_addr": "test:///default", "network_nat": "default" } })),
            )
            .await;
    }
    let reader = server
        .ok(
            "POST",
            "/api/system/tokens",
            Some(json!({ "name": "watch-h2", "role": "read-only", "hosts": ["h2"] })),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut admin = Stream::open(&server, "?hs_name=h1", Credential::Bearer(&server.token)).await;
    let mut scoped = Stream::open(&server, "", Credential::Bearer(&reader)).await;

    // A create on h1: queued → running → done, in that order.
    let create = json!({ "vm_uuid": "ev1", "mem_num": 64, "hdd_num": 0,
                         "nic_all": { "nic0": { "nic_type": "nat", "mac_addr": MAC } } });
    server
        .ok("POST", "/api/client/create/h1", Some(create))
        .await;
    let seen = admin
        .until("the create's done", |kind, data| {
            kind == "task" && data["vm_uuid"] == "ev1" && data["state"] == "done"
        })
        .await;
    assert_eq!(
        vm_task(&seen, "ev1", "create"),
        ["queued", "running", "done"],
        "{seen:#?}"
    );
    let task = &seen.last().expect("the done event").1;
    assert_eq!(task["hs_name"], "h1");
    assert_eq!(task["progress"], 100);
    assert!(task["task_id"].as_i64().is_some_and(|id| id > 0), "{task}");

    // A start: the power change, then the task's end.
    server
        .ok(
            "POST",
            "/api/client/powers/h1/ev1",
            Some(json!({ "action": "start" })),
        )
        .await;
    let seen = admin
        .until("the power change", |kind, data| {
            kind == "power" && data["vm_uuid"] == "ev1"
        })
        .await;
    assert_eq!(
        seen.last().expect("power").1["power_status"],
        "running",
        "{seen:#?}"
    );

    // An upload from the VM: its sample.
    let detail = server.ok("GET", "/api/client/detail/h1/ev1", None).await;
    let key = detail["upload_key"].as_str().expect("upload key");
    let (status, answer) = server
        .call_as(
            None,
            "POST",
            &format!("/api/client/upload?nic={MAC}&key={key}"),
            Some(
                json!({ "ac_status": "running", "cpu_total": 1, "cpu_usage": 42.5, "mem_total": 64,
                         "mem_usage": 32, "hdd_total": 0, "hdd_usage": 0, "flu_usage": 1.5,
                         "network_u": 0.5, "network_d": 2.0 }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let seen = admin
        .until("the sample", |kind, data| {
            kind == "sample" && data["vm_uuid"] == "ev1"
        })
        .await;
    let sample = &seen.last().expect("sample").1["sample"];
    assert_eq!(sample["cpu_usage"], 42.5, "{sample}");
    assert_eq!(sample["source"], "upload");

    // The h2 token saw none of that: its first event is h2's own create.
    server
        .ok(
            "POST",
            "/api/client/create/h2",
            Some(json!({ "vm_uuid": "ev2", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    let (kind, first) = scoped
        .next(Duration::from_secs(20))
        .await
        .expect("an event");
    assert_eq!(
        (kind.as_str(), &first["hs_name"], &first["vm_uuid"]),
        ("task", &json!("h2"), &json!("ev2")),
        "{first}"
    );
    // ...and the admin's stream filtered to h1 did not show it.
    server
        .ok(
            "POST",
            "/api/client/powers/h1/ev1",
            Some(json!({ "action": "stop" })),
        )
        .await;
    let seen = admin
        .until("the stop", |kind, data| {
            kind == "power" && data["vm_uuid"] == "ev1"
        })
        .await;
    assert!(
        seen.iter().all(|(_, data)| data["hs_name"] == "h1"),
        "only h1: {seen:#?}"
    );

    // A VM session (templogin) sees its VM only.
    let url = server.ok("GET", "/api/client/temptoken/h2/ev2", None).await["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let path = url
        .split_once("/api/")
        .map(|(_, rest)| format!("/api/{rest}"))
        .expect("a path");
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(server.url(&path))
        .send()
        .await
        .expect("templogin");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .and_then(|pair| pair.strip_prefix("openidcs_session="))
        .expect("the session cookie")
        .to_owned();
    let mut customer = Stream::open(&server, "", Credential::Session(&cookie)).await;
    server
        .ok(
            "POST",
            "/api/client/create/h2",
            Some(json!({ "vm_uuid": "ev3", "mem_num": 64, "hdd_num": 0 })),
        )
        .await;
    server
        .ok(
            "POST",
            "/api/client/powers/h2/ev2",
            Some(json!({ "action": "start" })),
        )
        .await;
    let (kind, first) = customer
        .next(Duration::from_secs(20))
        .await
        .expect("an event");
    assert_eq!(kind, "task", "{first}");
    assert_eq!(first["vm_uuid"], "ev2", "not ev3's create: {first}");
    assert_eq!(first["actions"], "powers:start", "{first}");
}

#[tokio::test]
async fn a_stream_ends_soon_after_its_token_is_revoked() {
    let server = Server::start(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "log"],
        "",
    ));
    let token = server
        .ok(
            "POST",
            "/api/system/tokens",
            Some(json!({ "name": "revoked-soon", "role": "read-only" })),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut stream = Stream::open(&server, "", Credential::Bearer(&token)).await;
    server
        .ok("DELETE", "/api/system/tokens/revoked-soon", None)
        .await;
    let seen = stream
        .until("the end of the stream", |kind, _| kind == "ended")
        .await;
    let (_, why) = seen.last().expect("the ended event");
    assert!(
        why.as_str()
            .is_some_and(|why| why.contains("no longer valid")),
        "{why}"
    );
    assert!(
        stream.next(Duration::from_secs(5)).await.is_none(),
        "nothing follows: the stream is closed"
    );
}
