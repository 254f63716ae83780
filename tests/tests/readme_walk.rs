//! The README's first walk, as README.md has it, against the default config
//! (`examples/openidcs.toml`, as `make run` starts it): every endpoint
//! answers success, port forwarding and the managed nginx included, except
//! `vncons` on the test driver, which says why. The server runs in a network
//! namespace of its own, so its nftables table and nginx ports are that
//! namespace's and nothing of the machine's is touched.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use openidcs_tests::{binary, managed_nginx_pid, netns, root};
use serde_json::Value;

/// The 35 endpoints (and `password`) the walk must call.
const ENDPOINTS: &[&str] = &[
    "/api/system/treset",
    "/api/system/tsetup",
    "/api/system/tquery",
    "/api/system/saving",
    "/api/system/loader",
    "/api/system/statis",
    "/api/system/engine",
    "/api/system/logget",
    "/api/system/tasget",
    "/api/server/listup",
    "/api/server/detail/",
    "/api/server/create",
    "/api/server/update/",
    "/api/server/delete/",
    "/api/server/powers/",
    "/api/server/status/",
    "/api/client/listup/",
    "/api/client/detail/",
    "/api/client/create/",
    "/api/client/update/",
    "/api/client/delete/",
    "/api/client/powers/",
    "/api/client/status/",
    "/api/client/vncons/",
    "/api/client/scaner/",
    "/api/client/natget/",
    "/api/client/natadd/",
    "/api/client/natdel/",
    "/api/client/iplist/",
    "/api/client/ipadd_/",
    "/api/client/ipdel_/",
    "/api/client/pxyget/",
    "/api/client/pxyadd/",
    "/api/client/pxydel/",
    "/api/client/upload",
    "/api/client/password/",
];

/// The first ```sh block after the walk's heading.
fn walk_script() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = &readme[readme
        .find("## A first walk with curl")
        .expect("the walk's heading")..];
    let start = section.find("```sh\n").expect("the walk's script") + "```sh\n".len();
    let length = section[start..].find("```").expect("the script's end");
    section[start..start + length].to_owned()
}

/// A server in its own namespace; on drop it, its nginx and the namespace go.
struct Walk {
    namespace: String,
    server: Option<Child>,
    data: tempfile::TempDir,
}

impl Walk {
    fn in_namespace(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace, program]);
        command
    }

    fn nginx_pid(&self) -> Option<u32> {
        managed_nginx_pid(self.data.path())
    }

    fn stop_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill").arg(server.id().to_string()).status();
            let _ = server.wait();
        }
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        self.stop_server();
        if let Some(pid) = self.nginx_pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.namespace])
            .status();
    }
}

#[test]
fn the_readme_walk_answers_success_on_every_endpoint() {
    if !netns::require_root("the_readme_walk_answers_success_on_every_endpoint") {
        return;
    }
    let script = walk_script();
    for endpoint in ENDPOINTS {
        assert!(
            script.contains(endpoint),
            "the walk does not call {endpoint}"
        );
    }

    let namespace = format!("oidcs-walk-{}", std::process::id());
    let created = Command::new("ip")
        .args(["netns", "add", &namespace])
        .status();
    assert!(created.is_ok_and(|status| status.success()), "ip netns add");
    let mut walk = Walk {
        namespace,
        server: None,
        data: tempfile::tempdir().expect("data dir"),
    };
    let up = Command::new("ip")
        .args(["-n", &walk.namespace, "link", "set", "lo", "up"])
        .status();
    assert!(up.is_ok_and(|status| status.success()), "lo up");

    let mut server = walk
        .in_namespace(&binary().display().to_string())
        .arg("serve")
        .arg("--config")
        .arg(root().join("examples/openidcs.toml"))
        .arg("--data-dir")
        .arg(walk.data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("openidcs serve");
    let stdout = server.stdout.take().expect("stdout");
    walk.server = Some(server);
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut token = None;
    let mut printed = Vec::new();
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {printed:?}"));
        if let Some(value) = line.strip_prefix("admin token (shown once, store it now): ") {
            token = Some(value.to_owned());
        }
        let listening = line.starts_with("openidcs listening on");
        printed.push(line);
        if listening {
            break;
        }
    }
    let token = token.expect("the first start prints the token");
    // Give the "off:" lines, printed right after, a moment.
    std::thread::sleep(Duration::from_millis(300));
    printed.extend(received.try_iter());
    assert!(
        !printed.iter().any(|line| line.starts_with("off:")),
        "the default serves every endpoint as root: {printed:?}"
    );

    let script: String = script
        .lines()
        .map(|line| {
            if line.starts_with("export T=") {
                format!("export T={token}")
            } else if line.starts_with("CERT=") {
                format!("CERT={}", walk.data.path().join("https/cert.pem").display())
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut bash = walk
        .in_namespace("bash")
        .args(["-eu"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    bash.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("the script");
    let output = bash.wait_with_output().expect("the walk");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the walk failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut answers = 0;
    let mut no_display = 0;
    let mut nginx_checked = false;
    let mut nic_warned = false;
    for line in stdout.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(code) = line.strip_prefix("nginx for web1.example.test: ") {
            // nginx answered for the site (its proxy found no server in the
            // test VM): not its 404 for unknown names, not a refused connection.
            assert!(["502", "504"].contains(&code), "{line}");
            nginx_checked = true;
            continue;
        }
        let answer: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not an answer: {line}"));
        answers += 1;
        let message = answer["msg"].as_str().unwrap_or_default();
        if message.contains("no VNC port") {
            no_display += 1;
            continue;
        }
        assert_eq!(answer["code"], 200, "{line}");
        // The second NIC of the running test-driver VM: added to its
        // definition, and the answer says it applies from the next start.
        if answer["data"]["nic_name"] == "nic1" && answer["data"]["task_id"].is_i64() {
            let warnings = answer["data"]["warnings"].to_string();
            assert!(warnings.contains("next start"), "{line}");
            nic_warned = true;
        }
    }
    assert!(nic_warned, "no ipadd answer in {stdout}");
    assert!(nginx_checked, "{stdout}");
    assert_eq!(no_display, 1, "only vncons may answer an error: {stdout}");
    // One answer per `api` line and one for the VM's own upload.
    let calls = script
        .lines()
        .filter(|line| line.starts_with("api "))
        .count()
        + 1;
    assert_eq!(answers, calls, "{stdout}");

    // A stop takes the managed nginx with it.
    assert!(walk.nginx_pid().is_some(), "the managed nginx runs");
    walk.stop_server();
    for _ in 0..50 {
        if walk.nginx_pid().is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the managed nginx outlived the server");
}

/// Where nft cannot run (a normal user has no nftables), the server starts
/// anyway and says which endpoints are off and why; they answer the reason.
#[tokio::test]
async fn endpoints_that_are_off_are_named_at_start() {
    let server = openidcs_tests::Server::start("[nat]\nnft_command = [\"false\"]\n");
    // Printed right after the "listening" line the harness waits for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = server.drain_output().join("\n");
    assert!(
        output.contains("off: natadd, natdel (port forwarding) (nft does not answer"),
        "{output}"
    );
    assert!(
        output.contains("off: pxyadd, pxydel (reverse proxy) (the config has no [proxy] section)"),
        "{output}"
    );
    assert!(!output.contains("reconcile failed"), "{output}");
}
