//! The end-to-end harness: starts the real `openidcs` binary (built by
//! `make build`, release profile) on a loopback port with a temporary data
//! directory and a test config, and talks to it over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

pub mod netns;

use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The server binary; `make test` builds it before running the tests.
pub fn binary() -> PathBuf {
    let path = root().join("target/release/openidcs");
    assert!(
        path.exists(),
        "{} is missing: run `make build` (or `make test`) first",
        path.display()
    );
    path
}

/// A WebAssembly component built for the tests (`make plugins`).
pub fn component(name: &str) -> PathBuf {
    let path = root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    path
}

/// A component built from `examples/` (`make examples`).
pub fn example_component(name: &str) -> PathBuf {
    let path = root().join("target/examples").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make examples` first",
        path.display()
    );
    path
}

/// The `[[plugin]]` table of a component built for the tests, with the
/// given grants.
/// A path template of the document with its parameters filled: `host`,
/// `vm`, index 0, and `ghost` for a token or plan name.
pub fn fill_path(template: &str, host: &str, vm: &str) -> String {
    template
        .replace("{hs_name}", host)
        .replace("{vm_uuid}", vm)
        .replace("{name}", "ghost")
        .replace("{rule_index}", "0")
        .replace("{ip_index}", "0")
        .replace("{proxy_index}", "0")
}

/// The live (not zombie) nginx a server with `[proxy] managed = true` runs
/// for `data_dir`, by its pid file.
pub fn managed_nginx_pid(data_dir: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(data_dir.join("nginx/nginx.pid")).ok()?;
    let pid: u32 = pid.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    (stat.contains("(nginx)") && !stat.contains(") Z")).then_some(pid)
}

/// A self-signed RSA certificate for `CN=<name>` (and `extensions`, such as
/// `subjectAltName=IP:127.0.0.1`) made by openssl in `directory`:
/// (certificate, key) paths.
pub fn openssl_self_signed(
    directory: &Path,
    name: &str,
    extensions: &[&str],
) -> (PathBuf, PathBuf) {
    let (cert, key) = (directory.join("cert.pem"), directory.join("key.pem"));
    let mut command = Command::new("openssl");
    command
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"));
    for extension in extensions {
        command.args(["-addext", extension]);
    }
    let output = command
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// A test-driver host with an image pool (the test driver keeps volumes,
/// not their contents): two images, a pool for VM disks, and the NAT
/// network of the namespaces' VM side. Written to `directory/node.xml`, for
/// `server_addr = "test://<path>"` with `[libvirt] test_files = true`; the
/// pools' paths are `/srv/php-vms` and `/srv/php-images` (`system_maps`:
/// `debian-12.qcow2`, 2 GiB, and `alpine-3.qcow2`, 1 GiB).
pub fn image_node(directory: &Path) -> PathBuf {
    let volume = |name: &str, gib: u64| {
        format!(
            "<volume type='file'><name>{name}</name><capacity unit='bytes'>{}</capacity>\
             <allocation unit='bytes'>0</allocation><target><format type='qcow2'/></target></volume>",
            gib << 30
        )
    };
    let pool = |name: &str, path: &str, volumes: &str| {
        format!(
            "<pool type='dir'><name>{name}</name><capacity unit='bytes'>107374182400</capacity>\
             <allocation unit='bytes'>0</allocation><available unit='bytes'>107374182400</available>\
             <source/><target><path>{path}</path></target>{volumes}</pool>"
        )
    };
    let node = format!(
        "<node><network><name>default</name><bridge name='virbr0'/><forward/>\
         <ip address='10.231.0.1' netmask='255.255.255.0'><dhcp>\
         <range start='10.231.0.100' end='10.231.0.200'/></dhcp></ip></network>{}{}</node>",
        pool("php-vms", "/srv/php-vms", ""),
        pool(
            "php-images",
            "/srv/php-images",
            &(volume("debian-12.qcow2", 2) + &volume("alpine-3.qcow2", 1))
        ),
    );
    let path = directory.join("node.xml");
    std::fs::write(&path, node).expect("node XML");
    path
}

/// The host config of an [`image_node`] at `node`: its URI, NAT network,
/// pools and images (`debian12`, `alpine3`); a test adds what else it needs.
pub fn image_host_config(node: &Path) -> Value {
    serde_json::json!({
        "server_addr": format!("test://{}", node.display()), "network_nat": "default",
        "system_path": "/srv/php-vms", "images_path": "/srv/php-images",
        "system_maps": { "debian12": ["debian-12.qcow2", 2048], "alpine3": ["alpine-3.qcow2", 1024] }
    })
}

/// A TCP port free on loopback now (for servers a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

pub fn plugin_toml(name: &str, file: &str, grants: &[&str], extra: &str) -> String {
    plugin_toml_at(name, &component(file), grants, extra)
}

/// The `[[plugin]]` table of the component at `path`.
pub fn plugin_toml_at(name: &str, path: &Path, grants: &[&str], extra: &str) -> String {
    let grants: Vec<String> = grants.iter().map(|grant| format!("{grant:?}")).collect();
    format!(
        "[[plugin]]\nname = {name:?}\npath = {:?}\ngrants = [{}]\n{extra}\n",
        path.display().to_string(),
        grants.join(", ")
    )
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub token: String,
    pub directory: tempfile::TempDir,
    pub output: mpsc::Receiver<String>,
    pub client: reqwest::Client,
    /// What the last start printed up to its "listening" line.
    pub startup: Vec<String>,
}

/// The client of the API calls: the server closes a connection idle for
/// `header_read_timeout_s` (30 s); a pooled connection reused at that moment
/// loses its request (`IncompleteMessage`), so the pool lets go first.
pub fn api_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_idle_timeout(Duration::from_secs(10))
}

impl Server {
    /// Start a server with `config` (TOML without `[server]`, which the
    /// harness writes) in a fresh data directory.
    pub fn start(config: &str) -> Server {
        Server::start_with(
            "[server]\ndata_dir = \"data\"\nplain_http = true\n\n",
            config,
        )
    }

    /// Start a server on HTTPS with its self-signed certificate (made on
    /// this first start); the client trusts that certificate only.
    pub fn start_https(config: &str) -> Server {
        let mut server = Server::start_with("[server]\ndata_dir = \"data\"\n\n", config);
        let pem = std::fs::read(server.data_dir().join("https/cert.pem")).expect("the certificate");
        server.client = api_client()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
            .build()
            .expect("https client");
        server
    }

    /// A TLS connection to a server started with [`Server::start_https`],
    /// trusting its certificate only (for what reqwest cannot do, such as a
    /// raw websocket).
    pub async fn tls_connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let pem = std::fs::read(self.data_dir().join("https/cert.pem")).expect("the certificate");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&pem).expect("PEM"))
            .expect("a trust anchor");
        // ring, as the server uses (its deprecation is only about post-quantum
        // key exchange).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let address = self
            .base
            .strip_prefix("https://")
            .expect("an https:// base");
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let name = ServerName::try_from(host.to_owned()).expect("a server name");
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("a TLS handshake")
    }

    /// Start a server with this `[server]` section and `config`.
    pub fn start_with(server_section: &str, config: &str) -> Server {
        let directory = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            directory.path().join("openidcs.toml"),
            format!("{server_section}{config}"),
        )
        .expect("writing the test config");
        let mut server = Server {
            child: None,
            base: String::new(),
            token: String::new(),
            startup: Vec::new(),
            directory,
            output: mpsc::channel().1,
            client: api_client().build().expect("http client"),
        };
        server.launch();
        server
    }

    pub fn config_path(&self) -> PathBuf {
        self.directory.path().join("openidcs.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.directory.path().join("data")
    }

    fn launch(&mut self) {
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting openidcs");
        let (sender, receiver) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let line = receiver
                .recv_timeout(remaining)
                .unwrap_or_else(|_| panic!("server did not start; output:\n{}", seen.join("\n")));
            if let Some(token) = line.split("store it now): ").nth(1) {
                self.token = token.trim().to_owned();
            }
            if let Some(address) = line.strip_prefix("openidcs listening on ") {
                self.base = address.trim().to_owned();
                break;
            }
            seen.push(line);
        }
        self.startup = seen;
        self.output = receiver;
        self.child = Some(child);
    }

    /// Stop (SIGKILL when `kill`, else SIGTERM) and start again on the same data.
    pub fn restart(&mut self, kill: bool) {
        self.stop(kill);
        self.launch();
    }

    pub fn stop(&mut self, kill: bool) {
        if let Some(mut child) = self.child.take() {
            if kill {
                let _ = child.kill();
            } else {
                let _ = Command::new("kill").arg(child.id().to_string()).status();
            }
            let _ = child.wait();
        }
    }

    /// Lines the server printed since the last call.
    pub fn drain_output(&self) -> Vec<String> {
        self.output.try_iter().collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send a request with the admin token; answers (HTTP status, envelope).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(Some(&self.token.clone()), method, path, body)
            .await
    }

    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let envelope: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
        check_envelope(status, &envelope);
        (status, envelope)
    }

    /// The status of a GET of a stream (the event stream never ends): the
    /// answer's head only, the body dropped unread.
    pub async fn stream_status(
        &self,
        path: &str,
        token: Option<&str>,
        cookie: Option<&str>,
    ) -> u16 {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            request = request.header("Cookie", format!("openidcs_session={cookie}"));
        }
        request.send().await.expect("request").status().as_u16()
    }

    /// Like `call`, but a refused or cut connection answers None instead of
    /// failing the test (for requests racing a killed server).
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let envelope: Value = response.json().await.ok()?;
        Some((status, envelope))
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send a raw body; answers (HTTP status, envelope).
    pub async fn call_raw(&self, method: &str, path: &str, body: &'static str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let envelope: Value = response.json().await.expect("JSON answer");
        check_envelope(status, &envelope);
        (status, envelope)
    }

    /// Every operation of the served OpenAPI document that takes the Bearer
    /// token (not the document's own routes, not `upload` with its VM key):
    /// (METHOD, path template).
    pub async fn bearer_operations(&self) -> Vec<(String, String)> {
        let document: Value = self
            .client
            .get(self.url("/api/openapi.json"))
            .send()
            .await
            .expect("the document")
            .json()
            .await
            .expect("JSON");
        let mut operations = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let bearer = operation["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|scheme| scheme.get("bearer").is_some());
                if bearer {
                    operations.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        operations
    }

    /// `call` that must answer 200; answers `data`.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, envelope) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path} answered {envelope}");
        envelope["data"].clone()
    }
}

/// Run `virsh -c qemu:///system ARGS`; answers (success, stdout + stderr).
pub fn virsh(arguments: &[&str]) -> (bool, String) {
    match Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(arguments)
        .output()
    {
        Ok(output) => (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ),
        Err(error) => (false, error.to_string()),
    }
}

/// Why this machine cannot run a qemu:///system test, if it cannot.
pub fn qemu_system_skip_reason() -> Option<String> {
    if !netns::is_root() {
        return Some("not root: qemu:///system needs root".to_owned());
    }
    let (answers, output) = virsh(&["version"]);
    if !answers {
        return Some(format!(
            "qemu:///system does not answer (run tests/scripts/libvirt-daemons.sh start): {output}"
        ));
    }
    None
}

/// Why browser scripts cannot run here, if they cannot: Debian's Chromium
/// or node is missing.
pub fn browser_skip_reason() -> Option<String> {
    const CHROMIUM: &str = "/usr/bin/chromium";
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is missing (make setup installs chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is missing".to_owned());
    }
    None
}

/// A script of `tests/browser/` (playwright-core driving Debian's
/// Chromium), after an `npm ci` there when playwright-core is missing.
pub fn browser_script(name: &str) -> PathBuf {
    let directory = root().join("tests/browser");
    if !directory.join("node_modules/playwright-core").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&directory)
            .status()
            .expect("running npm ci");
        assert!(status.success(), "npm ci in {}", directory.display());
    }
    directory.join(name)
}

/// Run a browser script (`node <script> …`, built by the caller) to its end
/// within `timeout`: the JSON report it prints last, and its output.
pub async fn browser_report(
    mut command: tokio::process::Command,
    timeout: Duration,
) -> (Value, std::process::Output) {
    let output = tokio::time::timeout(timeout, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("the browser script finished within {timeout:?}"))
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from the browser script:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (report, output)
}

/// A server with the libvirt engine and the host `kvm` on qemu:///system,
/// managing domains named `oidcs-test-*` (the real-VM tests).
pub async fn kvm_server() -> Server {
    let server = Server::start(&plugin_toml(
        "libvirt",
        "openidcs_plugin_libvirt",
        &["libvirt", "nat", "proxy", "log"],
        "timeout_ms = 60000",
    ));
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(
                serde_json::json!({ "name": "kvm", "type": "libvirt", "config": {
                "server_addr": "qemu:///system", "filter_name": "oidcs-test-",
                "system_path": "/var/lib/libvirt/images" } }),
            ),
        )
        .await;
    server
}

/// Destroys and undefines a qemu:///system domain on drop, whatever the
/// test did.
pub struct DomainCleanup(pub &'static str);

impl Drop for DomainCleanup {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", self.0]);
        let _ = virsh(&["undefine", self.0, "--nvram"]);
    }
}

/// Every answer is `{code, msg, data}` with HTTP status = code.
#[track_caller]
pub fn check_envelope(status: u16, envelope: &Value) {
    assert_eq!(
        envelope["code"].as_u64(),
        Some(u64::from(status)),
        "code must equal HTTP status: {envelope}"
    );
    assert!(
        envelope["msg"].is_string(),
        "msg must be a string: {envelope}"
    );
    assert!(
        envelope.get("data").is_some(),
        "data must be present: {envelope}"
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(true);
        // A managed nginx outlives a killed server; the test's ends here.
        if let Some(pid) = managed_nginx_pid(&self.data_dir()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// Whether this kernel has what libvirt's `<bandwidth>` runs (`tc` htb and
/// sfq qdiscs, an ingress u32 filter with a police action), tried on a veth
/// pair in a throwaway namespace.
pub fn kernel_can_shape() -> Result<(), String> {
    let netns = format!("oidcs-tc-{}", std::process::id());
    let run = |arguments: &[&str]| -> Result<(), String> {
        let output = Command::new(arguments[0])
            .args(&arguments[1..])
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{}`: {}",
                arguments.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    let tried = (|| {
        run(&["ip", "netns", "add", &netns])?;
        run(&[
            "ip", "-n", &netns, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ])?;
        run(&[
            "tc", "-n", &netns, "qdisc", "add", "dev", "d0", "root", "handle", "1:", "htb",
            "default", "1",
        ])?;
        run(&[
            "tc", "-n", &netns, "class", "add", "dev", "d0", "parent", "1:", "classid", "1:1",
            "htb", "rate", "1mbit",
        ])?;
        run(&[
            "tc", "-n", &netns, "qdisc", "add", "dev", "d0", "parent", "1:1", "handle", "2:", "sfq",
        ])?;
        run(&["tc", "-n", &netns, "qdisc", "add", "dev", "d0", "ingress"])?;
        run(&[
            "tc", "-n", &netns, "filter", "add", "dev", "d0", "parent", "ffff:", "protocol", "all",
            "u32", "match", "u32", "0", "0", "police", "rate", "1mbit", "burst", "100k", "drop",
        ])
    })();
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    tried
}
