//! The container engine (`plugins/oci`) on a real dockerd (Debian's
//! docker.io), started by the test inside a network namespace of its own,
//! with an image imported from Debian's busybox-static (no registry). Through
//! the API: create → start → the console's terminal answers `echo` → a NAT
//! forward reaches the container's web server from a client namespace →
//! the poller's stats appear in the status → delete. As root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use openidcs_tests::netns::{self, Namespaces, PUBLIC_ADDRESS};
use openidcs_tests::{
    Server, browser_report, browser_script, browser_skip_reason, plugin_toml, root,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "dk";
const VM: &str = "ct1";
/// The address the panel gives the container (the pool's first).
const CONTAINER_ADDRESS: &str = "10.233.0.10";

/// dockerd of the test; stopped (its mounts and files removed) on drop.
struct Dockerd {
    dir: PathBuf,
}

impl Dockerd {
    fn start(netns: &str) -> Dockerd {
        let dir = std::env::temp_dir().join(format!("oidcs-dockerd-{}", std::process::id()));
        let dockerd = Dockerd { dir };
        let output = Command::new(script())
            .args(["start", netns])
            .arg(&dockerd.dir)
            .output()
            .expect("tests/scripts/dockerd.sh");
        assert!(
            output.status.success(),
            "dockerd did not start: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        dockerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `docker ARGS` against this daemon: (success, stdout).
    fn docker(&self, arguments: &[&str]) -> (bool, String) {
        let output = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(arguments)
            .output()
            .expect("docker");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        )
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dockerd.sh")
}

/// Why the test cannot run here (printed); `None` when it can. Under CI a
/// missing dockerd is a failure: the Makefile installs docker.io.
fn skip_reason() -> Option<String> {
    if !netns::is_root() {
        return Some("needs root (network namespaces, dockerd)".to_owned());
    }
    let found = Command::new("dockerd")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "CI installs docker.io (make setup)"
        );
        return Some("dockerd is not installed (apt-get install docker.io)".to_owned());
    }
    None
}

fn config(namespaces: &Namespaces, dockerd: &Dockerd) -> String {
    format!(
        "[poller]\ninterval_s = 1\n\n{}[libvirt]\napi_sockets = [{:?}]\n\n{}",
        namespaces.nat_config(),
        dockerd.socket().display().to_string(),
        plugin_toml(
            "oci",
            "openidcs_plugin_oci",
            &["http", "nat", "proxy", "log"],
            ""
        )
    )
}

/// `curl -s <arguments>` from the client namespace.
fn curl_from_client(namespaces: &Namespaces, arguments: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &namespaces.client, "curl", "-s"])
        .args(arguments)
        .output()
        .expect("curl")
}

/// Open the VM's console terminal, type `line`, and read until `wanted`.
async fn terminal_answers(server: &Server, line: &str, wanted: &str) -> String {
    let console = server
        .ok("GET", &format!("/api/client/vncons/{HOST}/{VM}"), None)
        .await;
    let url = console["url"].as_str().expect("a console URL");
    let ticket = url.split("ticket=").nth(1).expect("a ticket");
    let session = server
        .client
        .post(server.url("/console/session"))
        .json(&json!({ "ticket": ticket }))
        .send()
        .await
        .expect("session")
        .json::<Value>()
        .await
        .expect("JSON");
    assert_eq!(session["data"]["protocol"], "terminal", "{session}");
    let token = session["data"]["ws_token"].as_str().expect("ws_token");
    let ws_url = format!(
        "{}/console/ws?token={token}",
        server.base.replacen("http", "ws", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("the console websocket");
    // The browser's size first, as the page sends it.
    socket
        .send(Message::Text(r#"{"cols":100,"rows":30}"#.into()))
        .await
        .expect("resize");
    socket
        .send(Message::Binary(line.as_bytes().to_vec().into()))
        .await
        .expect("typing");
    let mut seen = String::new();
    let read = async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Binary(bytes) = message {
                seen.push_str(&String::from_utf8_lossy(&bytes));
                if seen.contains(wanted) {
                    return true;
                }
            }
        }
        false
    };
    let found = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or(false);
    assert!(found, "the terminal answered {wanted:?}: {seen:?}");
    let _ = socket.close(None).await;
    seen
}

/// The console page shows the terminal with xterm.js: typing into it runs
/// the command in the container.
async fn terminal_in_the_browser(server: &Server) {
    if let Some(reason) = browser_skip_reason() {
        println!("SKIPPED the terminal in a browser: {reason}");
        return;
    }
    let console = server
        .ok("GET", &format!("/api/client/vncons/{HOST}/{VM}"), None)
        .await;
    let url = console["url"].as_str().expect("a console URL");
    let screenshot = root().join("tests/artifacts/terminal.png");
    let _ = std::fs::create_dir_all(root().join("tests/artifacts"));
    let mut node = tokio::process::Command::new("node");
    node.arg(browser_script("terminal.mjs"))
        .arg(url)
        .arg("echo typed-$((7*6))")
        .arg("typed-42")
        .arg(&screenshot);
    let (report, output) = browser_report(node, Duration::from_secs(120)).await;
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report["state"], "connected", "{report}");
    assert_eq!(report["protocol"], "terminal", "{report}");
    assert!(
        report["screen"]
            .as_str()
            .is_some_and(|screen| screen.contains("typed-42")),
        "the command ran in the container: {report}"
    );
    let errors: Vec<&Value> = report["log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|line| {
            line.as_str()
                .is_some_and(|line| line.starts_with("error") || line.starts_with("pageerror"))
        })
        .collect();
    assert!(
        errors.is_empty(),
        "no errors in the browser console: {report}"
    );
    // Everything from this origin.
    let base = server.base.replacen("http", "", 1);
    for request in report["requests"].as_array().into_iter().flatten() {
        let request = request.as_str().unwrap_or_default();
        assert!(
            request.contains(&base) || request.starts_with("data:"),
            "a request elsewhere: {request}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_is_created_started_reached_measured_and_deleted() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED a_container_is_created_started_reached_measured_and_deleted: {reason}");
        return;
    }
    let namespaces = Namespaces::create();
    let dockerd = Dockerd::start(&namespaces.host);
    let server = Server::start(&config(&namespaces, &dockerd));
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": HOST, "type": "oci", "config": {
                "server_addr": format!("unix://{}", dockerd.socket().display()),
                "network_nat": "oidcs-nat", "public_addr": [PUBLIC_ADDRESS],
                "ports_start": 20000, "ports_close": 20099,
                "system_maps": { "busybox": ["oidcs-busybox:1", 0] },
                "ipaddr_maps": { "ct": { "vers": "ipv4", "type": "nat", "gate": "10.233.0.1",
                                         "mask": "255.255.255.0", "from": CONTAINER_ADDRESS,
                                         "nums": 20 } } } })),
        )
        .await;
    let images = server
        .ok("GET", &format!("/api/client/os-images/{HOST}"), None)
        .await;
    assert_eq!(images[0]["name"], "busybox", "{images}");

    // Create: a container with the VM's limits at the address the pool gave.
    let created = server
        .ok(
            "POST",
            &format!("/api/client/create/{HOST}"),
            Some(
                json!({ "vm_uuid": VM, "os_name": "busybox", "os_pass": "Container-Pw-1",
                         "cpu_num": 1, "mem_num": 128, "hdd_num": 1024,
                         "nic_all": { "nic0": { "nic_type": "nat" } } }),
            ),
        )
        .await;
    assert_eq!(created["power_status"], "stopped", "{created}");
    let (known, limits) = dockerd.docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{index .Config.Labels \"openidcs.vm\"}}",
        VM,
    ]);
    assert!(known, "dockerd has the container");
    assert_eq!(limits, format!("{} 1000000000 {VM}", 128 << 20));

    // Start; the engine and dockerd agree.
    let started = server
        .ok(
            "POST",
            &format!("/api/client/powers/{HOST}/{VM}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    assert_eq!(started["power_status"], "running", "{started}");
    let (_, address) = dockerd.docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.oidcs-nat.IPAddress}}",
        VM,
    ]);
    let address = if address.contains("<no value>") || address.is_empty() {
        let (_, all) = dockerd.docker(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", VM]);
        all
    } else {
        address
    };
    assert!(
        address.contains(CONTAINER_ADDRESS),
        "the pool's address: {address}"
    );

    // The console is a shell in the container.
    terminal_answers(&server, "echo hello-$((6*7))\n", "hello-42").await;
    let consoles = server.ok("GET", "/api/system/consoles", None).await;
    assert_eq!(consoles["sessions"], 1, "{consoles}");
    terminal_in_the_browser(&server).await;

    // NAT: a client namespace reaches the container's web server.
    let rule = server
        .ok(
            "POST",
            &format!("/api/client/natadd/{HOST}/{VM}"),
            Some(json!({ "protocol": "tcp", "wan_port": 20080, "lan_port": 8080, "nat_tips": "web" })),
        )
        .await;
    assert_eq!(rule["lan_addr"], CONTAINER_ADDRESS, "{rule}");
    let fetched = curl_from_client(
        &namespaces,
        &["-m", "10", &format!("http://{PUBLIC_ADDRESS}:20080/")],
    );
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout).trim(),
        "oidcs-container-ok",
        "the forward reaches the container: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );

    // Speeds: the Docker API has none, so the server polices them on the
    // container's address. 8 Mbit/s up is 1 MB/s; a first download drains
    // the policer's bucket (one second of the rate), the second is measured.
    server
        .ok(
            "PUT",
            &format!("/api/client/update/{HOST}/{VM}"),
            Some(json!({ "speed_u": 8 })),
        )
        .await;
    let table = namespaces.nft(&["list", "table", "inet", "openidcs"]);
    assert!(
        table.contains(&format!(
            "ip saddr {CONTAINER_ADDRESS} limit rate over 1000000 bytes/second"
        )),
        "{table}"
    );
    terminal_answers(
        &server,
        "dd if=/dev/zero of=/www/drain bs=1000000 count=2 2>/dev/null; \
         dd if=/dev/zero of=/www/big bs=1000000 count=5 2>/dev/null; echo made-$((2*3))\n",
        "made-6",
    )
    .await;
    let speeds = curl_from_client(
        &namespaces,
        &[
            "-m",
            "30",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download}\n",
            &format!("http://{PUBLIC_ADDRESS}:20080/drain"),
            &format!("http://{PUBLIC_ADDRESS}:20080/big"),
        ],
    );
    let text = String::from_utf8_lossy(&speeds.stdout);
    let megabits = text
        .lines()
        .nth(1)
        .and_then(|bytes| bytes.trim().parse::<f64>().ok())
        .map(|bytes| bytes * 8.0 / 1e6)
        .unwrap_or_else(|| panic!("two downloads: {text}"));
    println!("from the container with speed_u = 8: {megabits:.2} Mbit/s");
    assert!(
        (3.0..=9.2).contains(&megabits),
        "policed to ~8 Mbit/s: {megabits:.2}"
    );

    // The limit is in the database: a flushed table gets it back from
    // `loader`'s reconcile, with the forward.
    namespaces.nft(&["flush", "table", "inet", "openidcs"]);
    server.ok("POST", "/api/system/loader", None).await;
    let table = namespaces.nft(&["list", "table", "inet", "openidcs"]);
    assert!(
        table.contains(&format!(
            "ip saddr {CONTAINER_ADDRESS} limit rate over 1000000 bytes/second"
        )) && table.contains("dport 20080"),
        "{table}"
    );

    // Stats: the poller's samples (dockerd's numbers) in the status.
    let mut status = Value::Null;
    for _ in 0..60 {
        status = server
            .ok("GET", &format!("/api/client/status/{HOST}/{VM}"), None)
            .await;
        let measured = status["history"].as_array().is_some_and(|history| {
            history
                .iter()
                .any(|sample| sample["mem_usage"].as_f64().unwrap_or(0.0) > 0.0)
        });
        if measured {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let history = status["history"].as_array().cloned().unwrap_or_default();
    let sample = history
        .iter()
        .find(|sample| sample["mem_usage"].as_f64().unwrap_or(0.0) > 0.0)
        .unwrap_or_else(|| panic!("a sample with the container's memory: {status}"));
    assert_eq!(sample["source"], "poller", "{sample}");
    assert_eq!(sample["mem_total"].as_f64(), Some(128.0), "{sample}");

    // Pause and resume, then delete: the container and its forward go.
    for (action, wanted) in [("pause", "paused"), ("resume", "running")] {
        let answer = server
            .ok(
                "POST",
                &format!("/api/client/powers/{HOST}/{VM}"),
                Some(json!({ "action": action })),
            )
            .await;
        assert_eq!(answer["power_status"], wanted, "{action}: {answer}");
    }
    server
        .ok("DELETE", &format!("/api/client/delete/{HOST}/{VM}"), None)
        .await;
    let (still, _) = dockerd.docker(&["inspect", VM]);
    assert!(!still, "the container is gone");
    assert!(
        namespaces.forwarded_ports().is_empty(),
        "no forward is left"
    );
    let table = namespaces.nft(&["list", "table", "inet", "openidcs"]);
    assert!(
        !table.contains("limit rate"),
        "no rate limit is left: {table}"
    );
}
