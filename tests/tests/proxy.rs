//! The reverse proxy through the API on a real nginx the test starts on
//! loopback: a site serves the backend's body, HTTPS with SNI, injection
//! attempts change no file, a refused configuration is rolled back while the
//! previous one keeps serving, and a restart rewrites what the database holds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use openidcs_tests::{Server, free_port, openssl_self_signed, plugin_toml};
use serde_json::json;

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false)
}

/// A real nginx under a temporary prefix, stopped on drop by its pid.
struct Nginx {
    directory: tempfile::TempDir,
    http_port: u16,
    https_port: u16,
}

impl Nginx {
    fn start() -> Nginx {
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path();
        for sub in ["conf.d", "tmp", "logs"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        let (http_port, https_port) = (free_port(), free_port());
        let prefix = root.display();
        std::fs::write(
            root.join("nginx.conf"),
            format!(
                "daemon on;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\nevents {{}}\n\
                 http {{\n access_log off;\n client_body_temp_path {prefix}/tmp;\n proxy_temp_path {prefix}/tmp;\n\
                 fastcgi_temp_path {prefix}/tmp;\n uwsgi_temp_path {prefix}/tmp;\n scgi_temp_path {prefix}/tmp;\n\
                 include {prefix}/conf.d/*.conf;\n server {{ listen {http_port} default_server; return 404; }}\n}}\n"
            ),
        )
        .expect("nginx.conf");
        let nginx = Nginx {
            directory,
            http_port,
            https_port,
        };
        let status = Command::new("nginx")
            .args(nginx.arguments())
            .status()
            .expect("nginx");
        assert!(status.success(), "nginx did not start");
        nginx
    }

    fn arguments(&self) -> Vec<String> {
        let root = self.directory.path();
        vec![
            "-c".into(),
            root.join("nginx.conf").display().to_string(),
            "-p".into(),
            root.display().to_string(),
        ]
    }

    fn conf_dir(&self) -> PathBuf {
        self.directory.path().join("conf.d")
    }

    fn proxy_toml(&self) -> String {
        let command = |verb: &[&str]| {
            let mut parts: Vec<String> = vec!["\"nginx\"".into()];
            parts.extend(verb.iter().map(|part| format!("{part:?}")));
            parts.extend(self.arguments().iter().map(|part| format!("{part:?}")));
            format!("[{}]", parts.join(", "))
        };
        format!(
            "[proxy]\nconf_dir = {:?}\nnginx_test = {}\nnginx_reload = {}\nhttp_port = {}\nhttps_port = {}\n\n",
            self.conf_dir().display().to_string(),
            command(&["-t"]),
            command(&["-s", "reload"]),
            self.http_port,
            self.https_port
        )
    }

    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.conf_dir())
            .expect("conf dir")
            .map(|entry| {
                let path = entry.expect("entry").path();
                (
                    path.display().to_string(),
                    std::fs::read(&path).expect("read"),
                )
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.directory.path().join("nginx.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A tiny HTTP backend on 127.0.0.2 (inside the test host's VM network).
fn start_backend(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.2:0").expect("backend");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn curl(arguments: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "3"])
        .args(arguments)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// nginx reloads asynchronously: wait until `check` holds (or 5 s).
fn eventually(check: impl Fn() -> bool) -> bool {
    for _ in 0..50 {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn self_signed(directory: &Path, domain: &str) -> (String, String) {
    let (cert, key) = openssl_self_signed(directory, domain, &[]);
    (
        std::fs::read_to_string(cert).expect("cert"),
        std::fs::read_to_string(key).expect("key"),
    )
}

#[tokio::test]
async fn proxies_on_a_real_nginx() {
    if !(have("nginx") && have("curl") && have("openssl")) {
        println!("SKIPPED proxies_on_a_real_nginx: nginx, curl and openssl are needed");
        assert!(
            std::env::var("CI").is_err(),
            "CI installs nginx, curl and openssl"
        );
        return;
    }
    let nginx = Nginx::start();
    let backend_port = start_backend("hello from the vm");
    let mut config = nginx.proxy_toml();
    config.push_str(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "",
    ));
    let mut server = Server::start(&config);
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "web", "type": "libvirt", "config": {
                "server_addr": "test:///default", "network_pub": "br-oidcs",
                "ipaddr_maps": { "lo": { "vers": "ipv4", "type": "nat", "from": "127.0.0.2", "mask": "255.0.0.0", "nums": 10 } } } })),
        )
        .await;
    // site1 holds 127.0.0.2 (the backend runs there); site2 holds 127.0.0.3.
    for (vm, address) in [("site1", "127.0.0.2"), ("site2", "127.0.0.3")] {
        server
            .ok(
                "POST",
                "/api/client/create/web",
                Some(json!({ "vm_uuid": vm, "mem_num": 64, "hdd_num": 0,
                             "nic_all": { "nic0": { "nic_type": "pub", "ip4_addr": address } } })),
            )
            .await;
    }
    let http = format!("http://127.0.0.1:{}/", nginx.http_port);
    let served = |host: &str| curl(&["-H", &format!("Host: {host}"), &http]);

    // A plain HTTP site (the original's field names), then its removal.
    let entry = server
        .ok(
            "POST",
            "/api/client/pxyadd/web/site1",
            Some(json!({ "web_addr": "App.Test.Example", "lan_port": backend_port, "lan_addr": "127.0.0.2", "web_tips": "app" })),
        )
        .await;
    assert_eq!(entry["domain"], "app.test.example");
    assert!(
        eventually(|| served("app.test.example") == "hello from the vm"),
        "{}",
        served("app.test.example")
    );
    let (status, _) = server
        .call("POST", "/api/client/pxyadd/web/site1", Some(json!({ "domain": "app.test.example", "backend_port": 80, "backend_ip": "127.0.0.2" })))
        .await;
    assert_eq!(status, 409, "a domain is unique across the panel");

    // HTTPS with SNI.
    let (cert, key) = self_signed(nginx.directory.path(), "secure.test.example");
    server
        .ok(
            "POST",
            "/api/client/pxyadd/web/site1",
            Some(json!({ "domain": "secure.test.example", "backend_port": backend_port, "backend_ip": "127.0.0.2",
                         "ssl_enabled": true, "ssl_cert": cert, "ssl_key": key })),
        )
        .await;
    let https = |port: u16| {
        curl(&[
            "-k",
            "--resolve",
            &format!("secure.test.example:{port}:127.0.0.1"),
            &format!("https://secure.test.example:{port}/"),
        ])
    };
    assert!(
        eventually(|| https(nginx.https_port) == "hello from the vm"),
        "{}",
        https(nginx.https_port)
    );
    let listed = server.ok("GET", "/api/client/pxyget/web/site1", None).await;
    assert_eq!(listed[1]["ssl_enabled"], true);
    assert_eq!(listed[0]["description"], "app");

    // Injection attempts and bad input: 400, and no file appears or changes.
    let before = nginx.snapshot();
    let long = format!("{}.example", "a".repeat(250));
    for domain in [
        "a;b.example",
        "a{.example",
        "}.example",
        "a b.example",
        "a\nb.example",
        "$host.example",
        "\"a\".example",
        "a..example",
        "a/b.example",
        long.as_str(),
        "-a.example",
        "10.0.0.5",
        "127.0.0.2",
    ] {
        let (status, envelope) = server
            .call(
                "POST",
                "/api/client/pxyadd/web/site1",
                Some(json!({ "domain": domain, "backend_ip": "127.0.0.2" })),
            )
            .await;
        assert_eq!(status, 400, "{domain:?}: {envelope}");
    }
    for body in [
        json!({ "domain": "x.test.example", "backend_ip": "10.9.9.9" }),
        // Not site1's: another VM's address, an unassigned one, the pool
        // network's own and broadcast addresses.
        json!({ "domain": "x.test.example", "backend_ip": "127.0.0.3" }),
        json!({ "domain": "x.test.example", "backend_ip": "127.0.0.4" }),
        json!({ "domain": "x.test.example", "backend_ip": "127.0.0.0" }),
        json!({ "domain": "x.test.example", "backend_ip": "127.255.255.255" }),
        json!({ "domain": "x.test.example", "backend_ip": "127.0.0.2", "backend_port": 70000 }),
        json!({ "domain": "x.test.example", "backend_ip": "127.0.0.2", "ssl_enabled": true, "ssl_cert": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "ssl_key": "junk" }),
    ] {
        let (status, envelope) = server
            .call("POST", "/api/client/pxyadd/web/site1", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {envelope}");
    }
    assert_eq!(
        nginx.snapshot(),
        before,
        "the conf dir is byte-for-byte unchanged"
    );

    // Rollback: one of our files broken behind the server's back makes nginx
    // refuse the next change; the change is undone and nginx keeps serving
    // the previous configuration.
    let ours = before
        .keys()
        .find(|name| name.ends_with(".conf"))
        .expect("a file of ours")
        .clone();
    std::fs::write(&ours, "server { this is not nginx }").expect("corrupt");
    let broken = nginx.snapshot();
    let (status, envelope) = server
        .call("POST", "/api/client/pxyadd/web/site1", Some(json!({ "domain": "third.test.example", "backend_port": backend_port, "backend_ip": "127.0.0.2" })))
        .await;
    assert_eq!(status, 400, "{envelope}");
    assert!(
        envelope["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("nginx"),
        "{envelope}"
    );
    assert_eq!(
        nginx.snapshot(),
        broken,
        "the refused change left nothing behind"
    );
    assert_eq!(
        served("app.test.example"),
        "hello from the vm",
        "the previous configuration still serves"
    );

    // A restart rewrites our files from the database (and reloads).
    server.restart(false);
    assert!(
        !std::fs::read_to_string(&ours)
            .expect("rewritten")
            .contains("this is not nginx")
    );
    server
        .ok("POST", "/api/client/pxyadd/web/site1", Some(json!({ "domain": "third.test.example", "backend_port": backend_port, "backend_ip": "127.0.0.2" })))
        .await;
    assert!(eventually(
        || served("third.test.example") == "hello from the vm"
    ));

    // pxydel, and deleting the VM, take sites down.
    server
        .ok("DELETE", "/api/client/pxydel/web/site1/0", None)
        .await;
    assert!(eventually(
        || served("app.test.example") != "hello from the vm"
    ));
    let (status, _) = server
        .call("DELETE", "/api/client/pxydel/web/site1/9", None)
        .await;
    assert_eq!(status, 404);
    server
        .ok("DELETE", "/api/client/delete/web/site1", None)
        .await;
    assert!(eventually(
        || served("third.test.example") != "hello from the vm"
    ));
    assert!(
        nginx
            .snapshot()
            .keys()
            .all(|name| !name.contains("openidcs-")),
        "{:?}",
        nginx.snapshot().keys()
    );
}
