//! Real nftables: every test runs nft in its own throwaway network namespace
//! (`ip netns add oidcs-nat-…`, deleted by a Drop guard), so nothing here
//! touches this machine's own ruleset, and traffic only ever goes to
//! addresses inside namespaces the test created. They need root; without it
//! they print `SKIPPED` and pass, unless `CI` is set.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use super::tests::{TestStore, forward, rate_limit, scope_of, test_store};
use super::*;
use crate::caps::NoTrap;
use crate::plugin::bindings::Protocol;

const TABLE: &str = "openidcs";

/// True when running as root; otherwise says the test is skipped (or fails
/// under CI, where skipping would hide a broken setup).
fn running_as_root(test: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok());
    if uid.as_deref().map(str::trim) == Some("0") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI is set: refusing to skip"
    );
    println!("SKIPPED {test}: needs root");
    false
}

#[track_caller]
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program} {args:?}: {error}"));
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        pipe.write_all(input.as_bytes()).expect("feeding stdin");
    }
    child.wait_with_output().expect("waiting")
}

#[track_caller]
fn ok(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = run(program, args, stdin);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A network namespace that exists for one test.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("oidcs-nat-{role}-{:08x}", rand::random::<u32>());
        ok("ip", &["netns", "add", &name], None);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    #[track_caller]
    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ok("ip", &full, None);
    }

    fn exec_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        full
    }

    #[track_caller]
    fn nft(&self, args: &[&str]) -> String {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        ok("ip", &self.exec_args(&full), None)
    }

    /// Apply an nft script (text syntax), as an operator would by hand.
    #[track_caller]
    fn nft_script(&self, script: &str) {
        ok("ip", &self.exec_args(&["nft", "-f", "-"]), Some(script));
    }

    fn table_text(&self, table: &str) -> String {
        self.nft(&["list", "table", "inet", table])
    }

    /// A NAT service whose nft runs in this namespace.
    fn service(&self) -> Arc<NatService> {
        Arc::new(NatService::new(Some(NatConfig {
            table: TABLE.to_owned(),
            nft_command: ["ip", "netns", "exec", self.name.as_str(), "nft"]
                .map(str::to_owned)
                .to_vec(),
        })))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        if !deleted.is_ok_and(|status| status.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}

/// A process a test started, killed (by its pid) when the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn row(forward: &PortForward) -> String {
    format!(
        "{} {} {} -> {}:{}",
        forward.id,
        scope::protocol(forward.protocol).as_str(),
        forward.public_port,
        forward.target_addr,
        forward.target_port
    )
}

fn rows(forwards: &[PortForward]) -> Vec<String> {
    forwards.iter().map(row).collect()
}

async fn listed(call: &mut NatCall) -> Vec<String> {
    rows(&call.list_rules().await.no_trap().expect("listed"))
}

#[track_caller]
fn accepted(answer: Result<(), CapError>) {
    if let Err(refusal) = answer.no_trap() {
        panic!("refused: {refusal:?}");
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test]
async fn add_list_remove_round_trip() {
    let db = test_store();
    if !running_as_root("add_list_remove_round_trip") {
        return;
    }
    let netns = Netns::new("rt");
    let service = netns.service();
    let mut h1 = db.call(
        service.clone(),
        Some(Arc::new(scope_of("h1", 20000..=20999))),
    );
    let mut h2 = db.call(
        service.clone(),
        Some(Arc::new(scope_of("h2", 20000..=20999))),
    );
    let ssh = forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22);
    let dns = forward(2, Protocol::Udp, 20053, "fd00:231::5", 53);

    assert!(
        listed(&mut h1).await.is_empty(),
        "no table yet: nothing listed"
    );
    accepted(h1.add_rule(ssh.clone()).await);
    accepted(h1.add_rule(dns.clone()).await);
    assert_eq!(listed(&mut h1).await, rows(&[ssh.clone(), dns.clone()]));
    println!("{}", netns.table_text(TABLE));

    // Another host sees none of them and cannot remove them.
    assert!(listed(&mut h2).await.is_empty());
    accepted(h2.remove_rule(1).await);
    assert_eq!(listed(&mut h1).await.len(), 2);

    // The same id again replaces the forward (all four of its rules).
    let moved = forward(1, Protocol::Tcp, 20022, "10.231.0.3", 2222);
    accepted(h1.add_rule(moved.clone()).await);
    accepted(h1.add_rule(moved.clone()).await);
    assert_eq!(listed(&mut h1).await, rows(&[moved.clone(), dns.clone()]));
    let text = netns.table_text(TABLE);
    assert_eq!(count(&text, "\"openidcs:h1:1\""), 4, "{text}");
    assert_eq!(count(&text, "\"openidcs:established\""), 1, "{text}");
    assert!(!text.contains("10.231.0.2"), "{text}");

    // Another id on the same protocol and public port: conflict, whoever asks.
    match h1
        .add_rule(forward(3, Protocol::Tcp, 20022, "10.231.0.4", 22))
        .await
        .no_trap()
    {
        Err(PluginError::Conflict(message)) => {
            assert!(
                message.contains("tcp port 20022") && message.contains("forward 1"),
                "{message}"
            );
        }
        other => panic!("expected a conflict: {other:?}"),
    }
    match h2
        .add_rule(forward(9, Protocol::Tcp, 20022, "10.231.0.4", 22))
        .await
        .no_trap()
    {
        Err(PluginError::Conflict(message)) => {
            assert!(message.contains("another host"), "{message}")
        }
        other => panic!("expected a conflict: {other:?}"),
    }
    // The other protocol on that port is free.
    let udp = forward(3, Protocol::Udp, 20022, "10.231.0.4", 22);
    accepted(h1.add_rule(udp.clone()).await);

    // Out of scope: refused, nothing written.
    assert!(matches!(
        h1.add_rule(forward(4, Protocol::Tcp, 20022, "10.232.0.1", 22))
            .await
            .no_trap(),
        Err(PluginError::Denied(_))
    ));

    accepted(h1.remove_rule(1).await);
    accepted(h1.remove_rule(1).await);
    accepted(h1.remove_rule(424242).await);
    assert_eq!(listed(&mut h1).await, rows(&[dns, udp]));
    let text = netns.table_text(TABLE);
    assert_eq!(count(&text, "openidcs:h1:1\""), 0, "{text}");
}

#[tokio::test]
async fn reconcile_restores_a_flushed_or_deleted_table() {
    let db = test_store();
    if !running_as_root("reconcile_restores_a_flushed_or_deleted_table") {
        return;
    }
    let netns = Netns::new("flush");
    let service = netns.service();
    let h1 = Arc::new(scope_of("h1", 20000..=20999));
    let mut call = db.call(service.clone(), Some(h1.clone()));
    let ssh = forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22);
    let web = forward(2, Protocol::Tcp, 20080, "10.231.0.3", 80);
    let database = vec![(h1.clone(), ssh.clone()), (h1.clone(), web.clone())];

    accepted(call.add_rule(ssh.clone()).await);
    accepted(call.add_rule(web.clone()).await);
    netns.nft(&["flush", "table", "inet", TABLE]);
    assert!(listed(&mut call).await.is_empty());

    let report = service
        .reconcile(database.clone(), Vec::new())
        .await
        .expect("reconciled");
    assert_eq!(
        report,
        ReconcileReport {
            added: 2,
            ..ReconcileReport::default()
        }
    );
    assert_eq!(listed(&mut call).await, rows(&[ssh.clone(), web.clone()]));

    // Nothing to do: nothing counted, the table is the same.
    let before = netns.table_text(TABLE);
    let report = service
        .reconcile(database.clone(), Vec::new())
        .await
        .expect("reconciled");
    assert_eq!(report, ReconcileReport::default());
    assert_eq!(netns.table_text(TABLE), before);

    // The table gone altogether (a reboot).
    netns.nft(&["delete", "table", "inet", TABLE]);
    let report = service
        .reconcile(database, Vec::new())
        .await
        .expect("reconciled");
    assert_eq!((report.added, report.removed), (2, 0));
    assert_eq!(listed(&mut call).await, rows(&[ssh, web]));

    // A forward gone from the database is removed; one out of scope is
    // skipped and reported.
    let report = service
        .reconcile(
            vec![
                (
                    h1.clone(),
                    forward(2, Protocol::Tcp, 20080, "10.231.0.3", 80),
                ),
                (
                    h1.clone(),
                    forward(5, Protocol::Tcp, 8080, "10.231.0.3", 80),
                ),
            ],
            Vec::new(),
        )
        .await
        .expect("reconciled");
    assert_eq!((report.added, report.removed), (0, 1));
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, 5);
    assert!(report.skipped[0].1.contains("8080"), "{:?}", report.skipped);
    assert_eq!(listed(&mut call).await.len(), 1);
}

#[tokio::test]
async fn reconcile_removes_stray_rules_in_our_table() {
    if !running_as_root("reconcile_removes_stray_rules_in_our_table") {
        return;
    }
    let netns = Netns::new("stray");
    let service = netns.service();
    let h1 = Arc::new(scope_of("h1", 20000..=20999));
    let ssh = forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22);
    let report = service
        .reconcile(vec![(h1.clone(), ssh.clone())], Vec::new())
        .await
        .expect("reconciled");
    assert_eq!((report.added, report.removed), (1, 0));

    netns.nft_script(&format!(
        "add rule inet {TABLE} prerouting tcp dport 20500 dnat ip to 10.231.0.9:80\n\
         add rule inet {TABLE} forward ip daddr 10.231.0.9 accept comment \"openidcs:h1:999\"\n"
    ));
    let report = service
        .reconcile(vec![(h1.clone(), ssh)], Vec::new())
        .await
        .expect("reconciled");
    assert_eq!((report.added, report.removed), (0, 2));
    let text = netns.table_text(TABLE);
    assert!(!text.contains("20500") && !text.contains("999"), "{text}");
    assert_eq!(count(&text, "\"openidcs:h1:1\""), 4, "{text}");
}

#[tokio::test]
async fn other_tables_are_never_touched() {
    let db = test_store();
    if !running_as_root("other_tables_are_never_touched") {
        return;
    }
    let netns = Netns::new("other");
    // Same chain names, the same port, even our comment: still not ours.
    netns.nft_script(
        "table inet other {\n\
           chain prerouting { type nat hook prerouting priority dstnat - 1; policy accept;\n\
             tcp dport 20022 dnat ip to 10.9.9.9:22 comment \"openidcs:h1:1\"\n\
           }\n\
           chain forward { type filter hook forward priority filter; policy accept;\n\
             ip daddr 10.9.9.9 counter accept\n\
           }\n\
         }\n\
         table ip legacy {\n\
           chain input { type filter hook input priority 0; policy accept; counter; }\n\
         }\n",
    );
    let other = netns.table_text("other");
    let legacy = netns.nft(&["list", "table", "ip", "legacy"]);

    let service = netns.service();
    let h1 = Arc::new(scope_of("h1", 20000..=20999));
    let mut call = db.call(service.clone(), Some(h1.clone()));
    assert!(
        listed(&mut call).await.is_empty(),
        "another table's rules are not listed"
    );
    accepted(
        call.add_rule(forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22))
            .await,
    );
    accepted(
        call.add_rule(forward(2, Protocol::Udp, 20053, "10.231.0.2", 53))
            .await,
    );
    assert_eq!(listed(&mut call).await.len(), 2);
    accepted(call.remove_rule(1).await);
    service
        .reconcile(vec![], Vec::new())
        .await
        .expect("reconciled");
    service
        .reconcile(
            vec![(
                h1.clone(),
                forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22),
            )],
            Vec::new(),
        )
        .await
        .expect("reconciled");

    assert_eq!(netns.table_text("other"), other);
    assert_eq!(netns.nft(&["list", "table", "ip", "legacy"]), legacy);
    let tables = netns.nft(&["list", "tables"]);
    assert_eq!(
        tables.lines().collect::<Vec<_>>(),
        ["table inet other", "table ip legacy", "table inet openidcs"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_adds_make_fifty_forwards() {
    if !running_as_root("fifty_concurrent_adds_make_fifty_forwards") {
        return;
    }
    let db = test_store();
    let netns = Netns::new("many");
    let service = netns.service();
    let h1 = Arc::new(scope_of("h1", 20000..=20999));
    let mut tasks = Vec::new();
    for id in 1..=50u16 {
        let mut call = db.call(service.clone(), Some(h1.clone()));
        let target = format!("10.231.0.{}", 1 + id);
        tasks.push(tokio::spawn(async move {
            call.add_rule(forward(
                u64::from(id),
                Protocol::Tcp,
                20000 + id,
                &target,
                22,
            ))
            .await
        }));
    }
    for task in tasks {
        accepted(task.await.expect("task ran"));
    }
    let mut call = db.call(service.clone(), Some(h1));
    let forwards = listed(&mut call).await;
    assert_eq!(forwards.len(), 50);
    assert_eq!(forwards[49], "50 tcp 20050 -> 10.231.0.51:22");
    let text = netns.table_text(TABLE);
    assert_eq!(
        count(&text, "comment \"openidcs:h1:"),
        200,
        "4 rules per forward"
    );
    assert_eq!(count(&text, "openidcs:established"), 1, "{text}");
}

// ------------------------------------------------------------ traffic

/// Echo on TCP and UDP port 22 until killed; prints `ready` once bound.
const ECHO_SERVER: &str = r#"
import socket, threading
def udp(sock):
    while True:
        data, peer = sock.recvfrom(4096)
        sock.sendto(data, peer)
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 22))
tcp.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 22))
threading.Thread(target=udp, args=(u,), daemon=True).start()
print("ready", flush=True)
while True:
    conn, _ = tcp.accept()
    conn.settimeout(2)
    try:
        conn.sendall(conn.recv(4096))
    except OSError:
        pass
    finally:
        conn.close()
"#;

/// `client.py PROTO HOST PORT TEXT`: prints what came back; exit 1 on any
/// error (refused, timeout).
const CLIENT: &str = r#"
import socket, sys
proto, host, port, text = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=1)
        s.sendall(text)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        s.connect((host, port))
        s.send(text)
    sys.stdout.write(s.recv(4096).decode())
except OSError as error:
    print(error, file=sys.stderr)
    sys.exit(1)
"#;

/// Whether `text` comes back from `addr:port` over `proto`, sent from `from`.
fn echoes(from: &Netns, proto: &str, addr: &str, port: u16, text: &str) -> bool {
    let port = port.to_string();
    let output = run(
        "ip",
        &from.exec_args(&["python3", "-c", CLIENT, proto, addr, &port, text]),
        None,
    );
    if output.status.success() {
        assert_eq!(String::from_utf8_lossy(&output.stdout), text);
    }
    output.status.success()
}

/// client 10.232.0.2 ── 10.232.0.1 host 10.231.0.1 ── 10.231.0.2 vm: three
/// namespaces, the host forwarding between its two veths.
struct Topology {
    host: Netns,
    vm: Netns,
    client: Netns,
    db: TestStore,
}

impl Topology {
    fn new() -> Topology {
        let host = Netns::new("host");
        let vm = Netns::new("vm");
        let client = Netns::new("client");
        host.ip(&[
            "link", "add", "vm0", "type", "veth", "peer", "name", "eth0", "netns", &vm.name,
        ]);
        host.ip(&[
            "link",
            "add",
            "cl0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &client.name,
        ]);
        host.ip(&["addr", "add", "10.231.0.1/24", "dev", "vm0"]);
        host.ip(&["addr", "add", "10.232.0.1/24", "dev", "cl0"]);
        host.ip(&["link", "set", "vm0", "up"]);
        host.ip(&["link", "set", "cl0", "up"]);
        // The VM gets no default route: only the masquerade brings replies back.
        vm.ip(&["addr", "add", "10.231.0.2/24", "dev", "eth0"]);
        vm.ip(&["link", "set", "eth0", "up"]);
        client.ip(&["addr", "add", "10.232.0.2/24", "dev", "eth0"]);
        client.ip(&["link", "set", "eth0", "up"]);
        client.ip(&["route", "add", "default", "via", "10.232.0.1"]);
        ok(
            "ip",
            &host.exec_args(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
            None,
        );
        Topology {
            host,
            vm,
            client,
            db: test_store(),
        }
    }

    /// Host `h1`, whose VM network is the VM's.
    fn scope(&self) -> Arc<HostScope> {
        Arc::new(HostScope {
            vm_networks: vec!["10.231.0.0/24".parse().expect("literal")],
            public_addr: Some("10.232.0.1".parse().expect("literal")),
            ..scope_of("h1", 20000..=20999)
        })
    }

    /// The host's NAT call for `h1`.
    fn call(&self) -> NatCall {
        self.db.call(self.host.service(), Some(self.scope()))
    }

    /// Run `script` in the VM until the test ends, once it printed `ready`.
    fn serve(&self, script: &str) -> Process {
        let mut server = Process(
            Command::new("ip")
                .args(self.vm.exec_args(&["python3", "-u", "-c", script]))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("starting the VM's server"),
        );
        let mut ready = String::new();
        if let Some(stdout) = server.0.stdout.take() {
            BufReader::new(stdout)
                .read_line(&mut ready)
                .expect("reading the VM's server");
        }
        assert_eq!(ready.trim(), "ready", "the VM's server did not start");
        server
    }
}

#[tokio::test]
async fn forwarded_traffic_reaches_the_vm_and_echoes_back() {
    if !running_as_root("forwarded_traffic_reaches_the_vm_and_echoes_back") {
        return;
    }
    let topology = Topology::new();
    let Topology { host, client, .. } = &topology;
    let server = topology.serve(ECHO_SERVER);
    let mut call = topology.call();

    assert!(
        !echoes(client, "tcp", "10.232.0.1", 20022, "before"),
        "no forward yet"
    );
    accepted(
        call.add_rule(forward(1, Protocol::Tcp, 20022, "10.231.0.2", 22))
            .await,
    );
    accepted(
        call.add_rule(forward(2, Protocol::Udp, 20022, "10.231.0.2", 22))
            .await,
    );
    assert!(echoes(client, "tcp", "10.232.0.1", 20022, "hello over tcp"));
    assert!(echoes(client, "udp", "10.232.0.1", 20022, "hello over udp"));
    // The server itself reaches its forwarded port too (the output chain).
    assert!(echoes(host, "tcp", "10.232.0.1", 20022, "from the host"));

    accepted(call.remove_rule(1).await);
    accepted(call.remove_rule(2).await);
    assert!(!echoes(client, "tcp", "10.232.0.1", 20022, "after"));
    assert!(!echoes(client, "udp", "10.232.0.1", 20022, "after"));
    drop(server);
}

/// Sends as many bytes as the client asks for (a decimal line), then
/// closes; prints `ready` once bound.
const BULK_SERVER: &str = r#"
import socket
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 8080))
tcp.listen(4)
print("ready", flush=True)
block = bytes(65536)
while True:
    conn, _ = tcp.accept()
    try:
        left = int(conn.makefile().readline())
        while left > 0:
            left -= conn.send(block[:min(left, len(block))])
    except OSError:
        pass
    finally:
        conn.close()
"#;

/// `bulk.py HOST PORT BYTES SKIP`: fetches BYTES and prints the Mbit/s of
/// what came after the first SKIP bytes (past a token bucket's first
/// second); exit 1 on any error.
const BULK_CLIENT: &str = r#"
import socket, sys, time
host, port, total, skip = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, port), timeout=10)
s.sendall(b"%d\n" % total)
got, mark = 0, None
while got < total:
    data = s.recv(262144)
    if not data:
        sys.exit("closed after %d bytes" % got)
    got += len(data)
    if mark is None and got >= skip:
        mark = (got, time.monotonic())
print((got - mark[0]) * 8 / (time.monotonic() - mark[1]) / 1e6)
"#;

/// Mbit/s of a transfer from the VM to the client through the forward,
/// measured after the first `skip` bytes.
fn transfer_mbit(client: &Netns, total: u64, skip: u64) -> f64 {
    let output = ok(
        "ip",
        &client.exec_args(&[
            "python3",
            "-c",
            BULK_CLIENT,
            "10.232.0.1",
            "20080",
            &total.to_string(),
            &skip.to_string(),
        ]),
        None,
    );
    output.trim().parse().expect("a rate")
}

#[tokio::test]
async fn a_rate_limit_polices_what_the_vm_sends() {
    if !running_as_root("a_rate_limit_polices_what_the_vm_sends") {
        return;
    }
    let topology = Topology::new();
    let server = topology.serve(BULK_SERVER);
    let mut call = topology.call();
    accepted(
        call.add_rule(forward(1, Protocol::Tcp, 20080, "10.231.0.2", 8080))
            .await,
    );
    let unlimited = transfer_mbit(&topology.client, 8_000_000, 1_000_000);

    // 8 Mbit/s up (1 MB/s): the bucket holds one second of it, so the rate
    // is measured after the first 2 MB.
    accepted(
        call.set_rate_limit(rate_limit("vm1", &["10.231.0.2"], 8_000, 0))
            .await,
    );
    let text = topology.host.table_text(TABLE);
    assert!(
        text.contains("ip saddr 10.231.0.2 limit rate over 1000000 bytes/second"),
        "{text}"
    );
    let limited = transfer_mbit(&topology.client, 6_000_000, 2_000_000);
    println!("from the VM: {unlimited:.0} Mbit/s unlimited, {limited:.2} Mbit/s at 8 Mbit/s");
    assert!(
        (4.0..=8.8).contains(&limited),
        "policed to at most ~8 Mbit/s, measured {limited:.2}"
    );
    assert!(
        unlimited > 40.0,
        "unlimited, the veths carry far more: {unlimited:.0}"
    );
    assert!(
        topology
            .host
            .table_text(TABLE)
            .contains("comment \"openidcs:rate:h1:vm1\""),
        "tagged with host and VM"
    );

    // Recorded in the database, from which a reconcile restores it after
    // the table was flushed; a reconcile without it removes it.
    let recorded = topology.db.store.rate_limit_list("h1").expect("listed");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        (recorded[0].vm_uuid.as_str(), recorded[0].upload_kbps),
        ("vm1", 8_000)
    );
    topology.host.nft(&["flush", "table", "inet", TABLE]);
    let service = topology.host.service();
    let scope = topology.scope();
    let ssh = forward(1, Protocol::Tcp, 20080, "10.231.0.2", 8080);
    let with_limits = || {
        recorded
            .iter()
            .map(|record| (scope.clone(), record.clone()))
            .collect::<Vec<_>>()
    };
    let report = service
        .reconcile(vec![(scope.clone(), ssh.clone())], with_limits())
        .await
        .expect("reconciled");
    assert_eq!((report.added, report.limits), (1, 1), "{report:?}");
    assert_eq!(
        count(&topology.host.table_text(TABLE), "openidcs:rate:h1:vm1"),
        1
    );
    let report = service
        .reconcile(vec![(scope.clone(), ssh.clone())], Vec::new())
        .await
        .expect("reconciled");
    assert_eq!(report.removed, 1, "the unrecorded limit: {report:?}");
    assert!(!topology.host.table_text(TABLE).contains("openidcs:rate:"));
    service
        .reconcile(vec![(scope.clone(), ssh)], with_limits())
        .await
        .expect("reconciled");

    // Another host cannot remove it; its VM's can, record and rules.
    let mut other = topology.db.call(
        topology.host.service(),
        Some(Arc::new(scope_of("h2", 20000..=20999))),
    );
    accepted(other.remove_rate_limit("vm1".to_owned()).await);
    assert_eq!(
        count(&topology.host.table_text(TABLE), "openidcs:rate:h1:vm1"),
        1
    );
    accepted(call.remove_rate_limit("vm1".to_owned()).await);
    accepted(call.remove_rate_limit("vm1".to_owned()).await);
    assert!(!topology.host.table_text(TABLE).contains("openidcs:rate:"));
    assert!(
        topology
            .db
            .store
            .rate_limit_list("h1")
            .expect("listed")
            .is_empty()
    );
    let lifted = transfer_mbit(&topology.client, 8_000_000, 1_000_000);
    assert!(lifted > 40.0, "the limit is gone: {lifted:.0} Mbit/s");
    drop(server);
}
