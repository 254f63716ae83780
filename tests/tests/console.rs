//! The web console end to end: the real binary, the real libvirt engine.
//!
//! - Tickets and websocket tokens (`test:///default`, no root): single use,
//!   expiry, bound to their VM, refused without any TCP connection to a VNC
//!   port (the proxy's `tcp_connects` stays 0).
//! - The proxy (`test:///default` VMs whose console port is a fake VNC
//!   server in this test): bytes both ways, per-VM and total limits, the
//!   VNC side closing, the idle timeout, one log record per session.
//! - The page and noVNC's files (Debian's `novnc` package).
//! - A real QEMU VM under `qemu:///system` in headless Chromium (root): the
//!   noVNC canvas connects and shows the firmware's screen; stopping the VM
//!   closes a console.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openidcs_tests::{
    DomainCleanup, Server, browser_report, browser_script, kvm_server, plugin_toml,
    qemu_system_skip_reason, root,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NOVNC_DIR: &str = "/usr/share/novnc";

fn config(console: &str) -> String {
    format!(
        "[console]\n{console}\n\n{}",
        plugin_toml(
            "libvirt",
            "openidcs_plugin_libvirt",
            &["libvirt", "nat", "proxy", "log"],
            "",
        )
    )
}

async fn test_host(server: &Server) {
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "local", "type": "libvirt", "config": {
                "server_addr": "test:///default",
                "system_path": "/default-pool",
                "public_addr": ["127.0.0.1"],
            } })),
        )
        .await;
}

/// A running `test:///default` VM whose console is `127.0.0.1:<port>`.
async fn running_vm(server: &Server, vm: &str, port: u16, password: &str) {
    server
        .ok(
            "POST",
            "/api/client/create/local",
            Some(
                json!({ "vm_uuid": vm, "cpu_num": 1, "mem_num": 64, "hdd_num": 0,
                          "vc_port": port, "vc_pass": password }),
            ),
        )
        .await;
    let started = server
        .ok(
            "POST",
            &format!("/api/client/powers/local/{vm}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    assert_eq!(started["power_status"], "running", "{started}");
}

/// `vncons`: the ticket out of the answered URL.
async fn ticket(server: &Server, host: &str, vm: &str) -> String {
    let console = server
        .ok("GET", &format!("/api/client/vncons/{host}/{vm}"), None)
        .await;
    let url = console["url"].as_str().unwrap_or_default();
    let query = url
        .strip_prefix(&format!("{}/console/?", server.base))
        .unwrap_or_else(|| panic!("a console URL on this server: {console}"));
    let ticket = query
        .strip_prefix("ticket=")
        .unwrap_or_else(|| panic!("the URL carries the ticket and nothing else: {url}"));
    assert!(
        !ticket.is_empty() && !ticket.contains('&'),
        "the ticket alone: {url}"
    );
    ticket.to_owned()
}

/// `POST /console/session`: (status, envelope, cache-control).
async fn redeem(server: &Server, body: Value) -> (u16, Value, String) {
    let response = server
        .client
        .post(server.url("/console/session"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let envelope: Value = response.json().await.expect("JSON answer");
    openidcs_tests::check_envelope(status, &envelope);
    (status, envelope, cache)
}

/// A ticket redeemed: the websocket token.
async fn ws_token(server: &Server, ticket: &str) -> String {
    let (status, envelope, _) = redeem(server, json!({ "ticket": ticket })).await;
    assert_eq!(status, 200, "{envelope}");
    envelope["data"]["ws_token"]
        .as_str()
        .expect("ws_token")
        .to_owned()
}

async fn counters(server: &Server) -> Value {
    server.ok("GET", "/api/system/consoles", None).await
}

/// Wait (bounded) until the counter `name` reads `wanted`.
async fn wait_counter(server: &Server, name: &str, wanted: u64) -> Value {
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = counters(server).await;
        if seen[name].as_u64() == Some(wanted) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never became {wanted}: {seen}");
}

async fn console_logs(server: &Server, vm: &str) -> Vec<String> {
    let logs = server
        .ok("GET", "/api/system/logget?limit=1000", None)
        .await;
    logs.as_array()
        .expect("a list of logs")
        .iter()
        .filter(|log| log["actions"] == "console" && log["vm_uuid"] == vm)
        .map(|log| log["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ------------------------------------------------ a minimal websocket client

/// Just enough of RFC 6455 to drive the proxy without a browser.
struct Ws {
    stream: Box<dyn Io>,
    buffer: Vec<u8>,
}

/// A plain or TLS connection to the server.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

enum Frame {
    Binary(Vec<u8>),
    Close(u16, String),
    /// The server dropped the TCP connection without a close frame.
    Eof,
}

/// `GET <path>` as a websocket handshake (`wss` on an HTTPS server): the
/// socket on 101, else the status and the envelope.
async fn ws_open(server: &Server, path: &str) -> Result<Ws, (u16, Value)> {
    let (address, mut stream): (&str, Box<dyn Io>) = match server.base.strip_prefix("https://") {
        Some(address) => (address, Box::new(server.tls_connect().await)),
        None => {
            let address = server
                .base
                .strip_prefix("http://")
                .expect("an http:// base");
            let tcp = TcpStream::connect(address).await.expect("connect");
            (address, Box::new(tcp))
        }
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("handshake");
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
        let mut chunk = [0_u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("an answer to the handshake")
            .expect("read");
        assert!(read > 0, "closed during the handshake: {buffer:?}");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let rest = buffer[head_end..].to_vec();
    if status == 101 {
        return Ok(Ws {
            stream,
            buffer: rest,
        });
    }
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = rest;
    while body.len() < length {
        let mut chunk = [0_u8; 4096];
        let read = stream.read(&mut chunk).await.expect("read body");
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    let envelope: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("a JSON refusal ({status}): {head}"));
    openidcs_tests::check_envelope(status, &envelope);
    Err((status, envelope))
}

async fn ws_refused(server: &Server, path: &str) -> (u16, Value) {
    match ws_open(server, path).await {
        Ok(_) => panic!("{path} was accepted"),
        Err(refusal) => refusal,
    }
}

impl Ws {
    async fn fill(&mut self, wanted: usize) -> bool {
        while self.buffer.len() < wanted {
            let mut chunk = [0_u8; 65536];
            let read = self.stream.read(&mut chunk).await.unwrap_or(0);
            if read == 0 {
                return false;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
        true
    }

    /// The next data or close frame (pings are skipped), within 30 s.
    async fn next(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if !self.fill(2).await {
                    return Frame::Eof;
                }
                let opcode = self.buffer[0] & 0x0f;
                let (length, header) = match self.buffer[1] & 0x7f {
                    126 => {
                        if !self.fill(4).await {
                            return Frame::Eof;
                        }
                        (
                            usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                            4,
                        )
                    }
                    127 => {
                        if !self.fill(10).await {
                            return Frame::Eof;
                        }
                        let mut bytes = [0_u8; 8];
                        bytes.copy_from_slice(&self.buffer[2..10]);
                        (
                            usize::try_from(u64::from_be_bytes(bytes)).expect("size"),
                            10,
                        )
                    }
                    short => (usize::from(short), 2),
                };
                if !self.fill(header + length).await {
                    return Frame::Eof;
                }
                let payload: Vec<u8> = self.buffer.drain(..header + length).skip(header).collect();
                match opcode {
                    0x2 => return Frame::Binary(payload),
                    0x8 => {
                        let code = if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            1005
                        };
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                        return Frame::Close(code, reason.to_string());
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("a frame within 30 s")
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x5a_u8, 0xa5, 0x3c, 0xc3];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            length if length < 126 => frame.push(0x80 | u8::try_from(length).expect("short")),
            length => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(length).expect("< 64 KiB").to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(
            payload
                .iter()
                .enumerate()
                .map(|(index, byte)| byte ^ mask[index % 4]),
        );
        self.stream.write_all(&frame).await.expect("send a frame");
    }

    async fn send_binary(&mut self, payload: &[u8]) {
        self.send(0x2, payload).await;
    }

    async fn close(&mut self) {
        self.send(0x8, &1000_u16.to_be_bytes()).await;
    }
}

// ------------------------------------------------------- a fake VNC server

/// Greets each connection like a VNC server, then echoes; `hang_up` closes
/// every connection as a stopping VM would.
struct FakeVnc {
    port: u16,
    accepted: Arc<AtomicUsize>,
    hang_up: tokio::sync::watch::Sender<bool>,
}

impl FakeVnc {
    async fn start() -> FakeVnc {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (hang_up, hung_up) = tokio::sync::watch::channel(false);
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut hung_up = hung_up.clone();
                tokio::spawn(async move {
                    if socket.write_all(b"RFB 003.008\n").await.is_err() {
                        return;
                    }
                    let mut buffer = [0_u8; 4096];
                    loop {
                        tokio::select! {
                            read = socket.read(&mut buffer) => match read {
                                Ok(0) | Err(_) => return,
                                Ok(count) => {
                                    if socket.write_all(&buffer[..count]).await.is_err() {
                                        return;
                                    }
                                }
                            },
                            () = async { drop(hung_up.wait_for(|hung| *hung).await) } => return,
                        }
                    }
                });
            }
        });
        assert!(port >= 5900, "QEMU console ports start at 5900: {port}");
        FakeVnc {
            port,
            accepted,
            hang_up,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn expect_banner(ws: &mut Ws) {
    match ws.next().await {
        Frame::Binary(bytes) => assert_eq!(bytes, b"RFB 003.008\n", "the VNC greeting"),
        Frame::Close(code, reason) => panic!("closed ({code} {reason}) instead of the greeting"),
        Frame::Eof => panic!("dropped instead of the greeting"),
    }
}

// ------------------------------------------------------------------- tests

#[tokio::test]
async fn tickets_are_single_use_bound_to_their_vm_and_refused_before_any_connection() {
    // Expiry after 2 s; max_total = 0 lets a websocket token be spent (and
    // refused for the limit) without a TCP connection.
    let server = Server::start(&config("ticket_ttl_s = 2\nmax_total = 0"));
    test_host(&server).await;
    running_vm(&server, "vma", 5901, "passA1").await;
    running_vm(&server, "vmb", 5902, "passB2").await;

    // No ticket, an empty one, a made-up one.
    for body in [
        json!({}),
        json!({ "ticket": "" }),
        json!({ "ticket": "guess" }),
    ] {
        let (status, envelope, _) = redeem(&server, body.clone()).await;
        assert_eq!(status, 401, "{body}: {envelope}");
    }
    // No token, a made-up one, and parameters that try to choose a target.
    for path in [
        "/console/ws",
        "/console/ws?token=",
        "/console/ws?token=guess",
    ] {
        let (status, envelope) = ws_refused(&server, path).await;
        assert_eq!(status, 401, "{path}: {envelope}");
    }

    // A's ticket redeems to A, once; the answer is not cacheable.
    let ticket_a = ticket(&server, "local", "vma").await;
    let (status, session, cache) = redeem(&server, json!({ "ticket": ticket_a })).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(cache, "no-store");
    let data = &session["data"];
    assert_eq!(data["vm_uuid"], "vma", "{session}");
    assert_eq!(data["hs_name"], "local");
    assert_eq!(data["password"], "passA1", "the password of A's console");
    assert!(data["expires_in"].as_u64().is_some(), "{session}");
    let token_a = data["ws_token"].as_str().expect("ws_token").to_owned();
    assert_ne!(token_a, ticket_a, "the websocket token is a new secret");
    let (status, envelope, _) = redeem(&server, json!({ "ticket": ticket_a })).await;
    assert_eq!(status, 401, "reuse is refused: {envelope}");
    let (status, _, _) = redeem(&server, json!({ "ticket": token_a })).await;
    assert_eq!(status, 401, "a websocket token is no ticket");

    // Nothing but the secret chooses the console: asking for B is refused.
    let ticket_a2 = ticket(&server, "local", "vma").await;
    let (status, envelope, _) = redeem(
        &server,
        json!({ "ticket": ticket_a2, "vm_uuid": "vmb", "hs_name": "local" }),
    )
    .await;
    assert_eq!(status, 400, "{envelope}");
    for extra in ["vm_uuid=vmb", "port=5902", "host=127.0.0.1"] {
        let (status, envelope) =
            ws_refused(&server, &format!("/console/ws?token={token_a}&{extra}")).await;
        assert_eq!(status, 400, "{extra}: {envelope}");
    }
    let (status, envelope) = ws_refused(&server, &format!("/console/ws?ticket={ticket_a2}")).await;
    assert_eq!(
        status, 400,
        "a ticket is not accepted by the websocket: {envelope}"
    );
    // B's own ticket redeems to B (and its password), never to A.
    let ticket_b = ticket(&server, "local", "vmb").await;
    let (status, session_b, _) = redeem(&server, json!({ "ticket": ticket_b })).await;
    assert_eq!(status, 200, "{session_b}");
    assert_eq!(session_b["data"]["vm_uuid"], "vmb");
    assert_eq!(session_b["data"]["password"], "passB2");
    let token_b = session_b["data"]["ws_token"].as_str().expect("ws_token");
    assert_ne!(token_b, token_a);

    // The websocket token is single use too: its first use is spent (here
    // refused by the limit, before connecting), the second finds nothing.
    let token_a = ws_token(&server, &ticket(&server, "local", "vma").await).await;
    let (status, envelope) = ws_refused(&server, &format!("/console/ws?token={token_a}")).await;
    assert_eq!(status, 429, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{envelope}"
    );
    let (status, envelope) = ws_refused(&server, &format!("/console/ws?token={token_a}")).await;
    assert_eq!(status, 401, "a spent websocket token: {envelope}");

    // Expired: tickets and websocket tokens alike.
    let late_ticket = ticket(&server, "local", "vma").await;
    let late_token = ws_token(&server, &ticket(&server, "local", "vmb").await).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, envelope, _) = redeem(&server, json!({ "ticket": late_ticket })).await;
    assert_eq!(status, 401, "expired ticket: {envelope}");
    let (status, envelope) = ws_refused(&server, &format!("/console/ws?token={late_token}")).await;
    assert_eq!(status, 401, "expired websocket token: {envelope}");

    // Not one TCP connection to a VNC port was attempted.
    let stats = counters(&server).await;
    assert_eq!(stats["tcp_connects"], 0, "{stats}");
    assert_eq!(stats["active"], 0, "{stats}");
    assert_eq!(stats["sessions"], 0, "{stats}");
    assert!(
        stats["refused"].as_u64().unwrap_or_default() >= 12,
        "{stats}"
    );
    assert_eq!(stats["limits"]["max_total"], 0, "{stats}");

    // The counters, like vncons, need the admin token; the console does not.
    let (status, _) = server
        .call_as(None, "GET", "/api/system/consoles", None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_proxy_moves_bytes_within_limits_and_closes_with_either_side() {
    let vnc_a = FakeVnc::start().await;
    let vnc_b = FakeVnc::start().await;
    let server = Server::start(&config("max_per_vm = 2\nmax_total = 3"));
    test_host(&server).await;
    running_vm(&server, "vma", vnc_a.port, "passA1").await;
    running_vm(&server, "vmb", vnc_b.port, "passB2").await;
    let open = |vm: &'static str| {
        let server = &server;
        async move {
            let token = ws_token(server, &ticket(server, "local", vm).await).await;
            ws_open(server, &format!("/console/ws?token={token}")).await
        }
    };

    // A's ticket reaches A's console, and only it; bytes flow both ways.
    let mut a1 = open("vma").await.expect("first console of A");
    expect_banner(&mut a1).await;
    assert_eq!((vnc_a.accepted(), vnc_b.accepted()), (1, 0));
    a1.send_binary(b"RFB 003.008\n").await;
    match a1.next().await {
        Frame::Binary(echo) => assert_eq!(echo, b"RFB 003.008\n", "echoed through the proxy"),
        _ => panic!("no echo"),
    }
    let big: Vec<u8> = (0..60_000_u32).map(|index| (index % 251) as u8).collect();
    a1.send_binary(&big).await;
    let mut echoed = Vec::new();
    while echoed.len() < big.len() {
        match a1.next().await {
            Frame::Binary(bytes) => echoed.extend(bytes),
            _ => panic!("the echo stopped at {} bytes", echoed.len()),
        }
    }
    assert_eq!(echoed, big, "a larger message arrives intact");

    // Limits: two per VM, three in all; a refusal connects nowhere.
    let mut a2 = open("vma").await.expect("second console of A");
    expect_banner(&mut a2).await;
    let (status, envelope) = open("vma").await.err().expect("a third console of A");
    assert_eq!(status, 429, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("max_per_vm"),
        "{envelope}"
    );
    let mut b1 = open("vmb").await.expect("a console of B");
    expect_banner(&mut b1).await;
    let (status, envelope) = open("vmb").await.err().expect("a fourth console");
    assert_eq!(status, 429, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("max_total"),
        "{envelope}"
    );
    let stats = counters(&server).await;
    assert_eq!(stats["active"], 3, "{stats}");
    assert_eq!(stats["tcp_connects"], 3, "{stats}");
    assert_eq!((vnc_a.accepted(), vnc_b.accepted()), (2, 1));

    // The browser closes: the server answers the close and frees the slot.
    a1.close().await;
    match a1.next().await {
        Frame::Close(..) | Frame::Eof => {}
        Frame::Binary(_) => panic!("data after close"),
    }
    wait_counter(&server, "active", 2).await;
    // The VM's side closes (as when the VM stops): the browser is told.
    vnc_a.hang_up.send_replace(true);
    match a2.next().await {
        Frame::Close(code, reason) => {
            assert_eq!(code, 1000, "{reason}");
            assert!(reason.contains("closed"), "{reason}");
        }
        Frame::Eof => panic!("dropped without a close frame"),
        Frame::Binary(_) => panic!("data after the VNC side closed"),
    }
    wait_counter(&server, "active", 1).await;
    b1.close().await;
    let stats = wait_counter(&server, "active", 0).await;
    assert_eq!(stats["sessions"], 3, "{stats}");
    assert!(stats["bytes_to_vm"].as_u64().unwrap_or_default() >= 60_012);

    // One log record per session: who issued the ticket, for how long.
    let logs = console_logs(&server, "vma").await;
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in &logs {
        assert!(log.contains("opened by admin from 127.0.0.1"), "{log}");
        assert!(log.contains(" s, "), "a duration: {log}");
    }
    assert!(
        logs.iter().any(|log| log.contains("the browser closed")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|log| log.contains("the VM's console closed")),
        "{logs:?}"
    );
    assert!(logs.iter().all(|log| !log.contains("passA1")), "{logs:?}");
    assert_eq!(console_logs(&server, "vmb").await.len(), 1);
}

#[tokio::test]
async fn the_console_works_over_wss_on_the_https_server() {
    let vnc = FakeVnc::start().await;
    let server = Server::start_https(&config(""));
    test_host(&server).await;
    running_vm(&server, "secure1", vnc.port, "pw").await;
    let url = server
        .ok("GET", "/api/client/vncons/local/secure1", None)
        .await;
    assert!(
        url["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://"),
        "the console page is on HTTPS, so its socket is wss: {url}"
    );
    let token = ws_token(&server, &ticket(&server, "local", "secure1").await).await;
    let mut ws = ws_open(&server, &format!("/console/ws?token={token}"))
        .await
        .expect("a console over wss");
    expect_banner(&mut ws).await;
    ws.send_binary(b"RFB 003.008\n").await;
    match ws.next().await {
        Frame::Binary(echo) => assert_eq!(echo, b"RFB 003.008\n", "echoed through TLS"),
        _ => panic!("no echo over wss"),
    }
    ws.close().await;
}

#[tokio::test]
async fn an_idle_console_is_closed() {
    let vnc = FakeVnc::start().await;
    let server = Server::start(&config("idle_timeout_s = 1"));
    test_host(&server).await;
    running_vm(&server, "idle1", vnc.port, "pw").await;
    let token = ws_token(&server, &ticket(&server, "local", "idle1").await).await;
    let mut ws = ws_open(&server, &format!("/console/ws?token={token}"))
        .await
        .expect("a console");
    expect_banner(&mut ws).await;
    let started = std::time::Instant::now();
    match ws.next().await {
        Frame::Close(code, reason) => assert_eq!((code, reason.as_str()), (1000, "idle timeout")),
        Frame::Eof => panic!("dropped without a close frame"),
        Frame::Binary(_) => panic!("data while idle"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    wait_counter(&server, "active", 0).await;
    let logs = console_logs(&server, "idle1").await;
    assert!(
        logs.len() == 1 && logs[0].contains("idle for 1 s"),
        "{logs:?}"
    );
}

#[tokio::test]
async fn the_page_and_novnc_files_are_served_without_traversal() {
    if !std::path::Path::new(NOVNC_DIR).join("core/rfb.js").exists() {
        println!("SKIPPED the_page_and_novnc_files: {NOVNC_DIR} is missing (make setup)");
        assert!(std::env::var("CI").is_err(), "CI installs novnc");
        return;
    }
    let server = Server::start("");
    let get = |path: &str| server.client.get(server.url(path)).send();
    let page = get("/console/?ticket=abc").await.expect("page");
    assert_eq!(page.status(), 200);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert!(header(&page, "content-security-policy").contains("script-src 'self'"));
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    assert!(page.text().await.expect("html").contains("console.js"));
    let script = get("/console/console.js").await.expect("script");
    assert!(header(&script, "content-type").starts_with("text/javascript"));
    let script = script.text().await.expect("js");
    assert!(script.contains("./core/rfb.js") && script.contains("session"));
    assert!(
        !script.contains("password=") && !script.contains("&password"),
        "the password is never put in a URL"
    );

    let rfb = get("/console/core/rfb.js").await.expect("rfb.js");
    assert_eq!(rfb.status(), 200);
    assert!(header(&rfb, "content-type").starts_with("text/javascript"));
    assert_eq!(header(&rfb, "x-content-type-options"), "nosniff");
    let on_disk = std::fs::read(format!("{NOVNC_DIR}/core/rfb.js")).expect("rfb.js on disk");
    assert_eq!(
        rfb.bytes().await.expect("body").as_ref(),
        on_disk.as_slice()
    );
    let pako = get("/console/vendor/pako/lib/zlib/inflate.js")
        .await
        .expect("pako");
    assert_eq!(pako.status(), 200);

    // Raw paths (reqwest would normalise `..`): only core/ and vendor/.
    let address = server.base.strip_prefix("http://").expect("http base");
    for path in [
        "/console/core/../vnc.html",
        "/console/core/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/console/%2e%2e/%2e%2e/etc/passwd",
        "/console/core/..%2f..%2fvnc.html",
        "/console/vnc.html",
        "/console/app/ui.js",
        "/console/core/.hidden.js",
        "/console/core/nothing.js",
        "/console/core//rfb.js",
    ] {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("answer");
        let status = answer.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            status == "404" || status == "400",
            "{path} answered {status}: {answer}"
        );
        assert!(!answer.contains("root:"), "{path}: {answer}");
    }
}

// --------------------------------------------- a real VM in a real browser

const REAL_VM: &str = "oidcs-test-console";

/// Why this machine cannot run the browser test, if it cannot.
fn browser_skip_reason() -> Option<String> {
    if let Some(reason) = openidcs_tests::browser_skip_reason() {
        return Some(reason);
    }
    if !std::path::Path::new(NOVNC_DIR).join("core/rfb.js").exists() {
        return Some(format!(
            "{NOVNC_DIR} is missing (make setup installs novnc)"
        ));
    }
    qemu_system_skip_reason()
}

#[tokio::test]
async fn a_real_vm_console_in_headless_chromium() {
    if let Some(reason) = browser_skip_reason() {
        println!("SKIPPED a_real_vm_console_in_headless_chromium: {reason}");
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with libvirtd, chromium and novnc: {reason}"
        );
        return;
    }
    let driver = browser_script("drive.mjs");
    let _cleanup = DomainCleanup(REAL_VM);
    let server = kvm_server().await;
    let password = "pwcons01";
    server
        .ok(
            "POST",
            "/api/client/create/kvm",
            Some(
                json!({ "vm_uuid": REAL_VM, "cpu_num": 1, "mem_num": 64, "hdd_num": 0,
                          "vc_pass": password }),
            ),
        )
        .await;
    let started = server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{REAL_VM}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    assert_eq!(started["power_status"], "running", "{started}");

    let console = server
        .ok("GET", &format!("/api/client/vncons/kvm/{REAL_VM}"), None)
        .await;
    let url = console["url"].as_str().expect("url").to_owned();
    let artifacts = root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("tests/artifacts");
    let screenshot = artifacts.join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut node = tokio::process::Command::new("node");
    node.arg(&driver).arg(&url).arg(&screenshot);
    let (report, output) = browser_report(node, Duration::from_secs(180)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("browser report: {report}");
    assert!(output.status.success(), "{report}\n{stderr}");
    assert_eq!(report["state"], "connected", "noVNC connected: {report}");
    assert!(
        report["distinct"].as_u64().unwrap_or_default() > 1,
        "the VM's screen is not one colour: {report}"
    );
    assert!(
        report["width"].as_u64().unwrap_or_default() >= 320,
        "{report}"
    );
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG"),
        "a PNG in tests/artifacts"
    );
    assert!(
        !report["url_after_load"]
            .as_str()
            .unwrap_or_default()
            .contains("ticket="),
        "the page drops the spent ticket from the address bar: {report}"
    );
    let requests = report["requests"].as_array().expect("requests");
    assert!(
        requests.iter().any(|url| url
            .as_str()
            .unwrap_or_default()
            .contains("/console/ws?token=")),
        "{report}"
    );
    assert!(
        requests
            .iter()
            .all(|url| !url.as_str().unwrap_or_default().contains(password)),
        "the VNC password is in no URL: {report}"
    );

    // The browser closed: the session is over and recorded.
    let stats = wait_counter(&server, "active", 0).await;
    assert!(stats["tcp_connects"].as_u64() >= Some(1), "{stats}");
    assert!(
        stats["bytes_to_browser"].as_u64().unwrap_or_default() > 1000,
        "{stats}"
    );
    let logs = console_logs(&server, REAL_VM).await;
    assert!(
        logs.iter().any(|log| log.contains("opened by admin")),
        "{logs:?}"
    );

    // A console open while the VM stops is closed.
    let token = ws_token(&server, &ticket(&server, "kvm", REAL_VM).await).await;
    let mut ws = ws_open(&server, &format!("/console/ws?token={token}"))
        .await
        .expect("a console of the real VM");
    expect_banner(&mut ws).await;
    server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{REAL_VM}"),
            Some(json!({ "action": "hard_stop" })),
        )
        .await;
    match ws.next().await {
        Frame::Close(..) | Frame::Eof => {}
        Frame::Binary(bytes) => panic!("data from a stopped VM: {bytes:?}"),
    }
    wait_counter(&server, "active", 0).await;
    let logs = console_logs(&server, REAL_VM).await;
    assert!(
        logs.iter()
            .any(|log| log.contains("the VM's console closed")),
        "{logs:?}"
    );
    server
        .ok("DELETE", &format!("/api/client/delete/kvm/{REAL_VM}"), None)
        .await;
}
