//! Rules (table-driven, no nginx), file handling with stand-in commands, and
//! end-to-end tests against a real nginx started on loopback by each test and
//! stopped by its guard. The end-to-end tests skip with a printed reason when
//! nginx (or openssl, curl for HTTPS) is missing, unless `CI` is set: then
//! they fail, so a CI machine without nginx cannot pass silently.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::caps::NoTrap;
use crate::plugin::bindings::TlsPair;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The test backends' address: loopback, and inside the test scope's network.
const BACKEND_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---------------------------------------------------------------- helpers

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "openidcs-proxy-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scope_named(name: &str) -> Arc<HostScope> {
    Arc::new(HostScope {
        name: name.to_owned(),
        uri: "test:///default".to_owned(),
        storage_dir: String::new(),
        ports: 20000..=20100,
        vm_networks: vec![
            "127.0.0.0/8".parse().expect("literal"),
            "fd00::/64".parse().expect("literal"),
        ],
        public_addr: None,
        name_prefix: "oid-".to_owned(),
        allow_hostdev: false,
        images: String::new(),
        api_credential: Default::default(),
        tls_pin: None,
    })
}

fn scope() -> Arc<HostScope> {
    scope_named("h1")
}

fn site(id: u64, domain: &str, backend: SocketAddr, tls: Option<TlsPair>) -> ProxySite {
    ProxySite {
        id,
        domain: domain.to_owned(),
        backend_addr: backend.ip().to_string(),
        backend_port: backend.port(),
        tls,
    }
}

/// A backend that is never connected to (rule and file tests).
fn nowhere() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(BACKEND_IP), 8080)
}

fn call(service: &Arc<ProxyService>, host: &Arc<HostScope>) -> ProxyCall {
    ProxyCall::new(service.clone(), Some(host.clone()))
}

async fn put(call: &mut ProxyCall, site: ProxySite) -> Result<(), PluginError> {
    call.put_site(site).await.no_trap()
}

async fn remove(call: &mut ProxyCall, id: u64) -> Result<(), PluginError> {
    call.remove_site(id).await.no_trap()
}

/// Names and contents of every file under `dir`, for before/after equality.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() {
                for (inner, content) in snapshot(&entry.path()) {
                    files.insert(format!("{name}/{inner}"), content);
                }
            } else {
                files.insert(name, std::fs::read(entry.path()).unwrap_or_default());
            }
        }
    }
    files
}

fn sh(script: String) -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned(), script]
}

/// A configured service whose "nginx" commands are shell stand-ins.
struct Staged {
    dir: TempDir,
    service: Arc<ProxyService>,
}

impl Staged {
    /// `commands` gets the test's directory and answers the test and
    /// reload commands.
    fn new(tag: &str, commands: impl FnOnce(&Path) -> (Vec<String>, Vec<String>)) -> Staged {
        let dir = TempDir::new(tag);
        std::fs::create_dir(dir.path().join("conf.d")).expect("conf.d");
        let (nginx_test, nginx_reload) = commands(dir.path());
        let config = ProxyConfig {
            managed: false,
            conf_dir: dir.path().join("conf.d"),
            nginx_test,
            nginx_reload,
            http_port: 8080,
            https_port: 8443,
        };
        let service = Arc::new(ProxyService::new_with_listen(
            Some(config),
            &dir.path().join("data"),
            LOOPBACK,
        ));
        Staged { dir, service }
    }

    /// Stand-ins that succeed and count their runs in `<dir>/tests` and
    /// `<dir>/reloads`.
    fn counting(tag: &str) -> Staged {
        Staged::new(tag, |dir| {
            let root = dir.display();
            (
                sh(format!("echo t >> {root}/tests")),
                sh(format!("echo r >> {root}/reloads")),
            )
        })
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    fn runs(&self, what: &str) -> usize {
        runs(&self.dir.path().join(what))
    }
}

/// Runs of a counting stand-in (lines in its file).
fn runs(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Whether a tool the end-to-end tests need is here; without it the test
/// skips with a reason, or fails when `CI` is set.
fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    let found = dirs
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required on CI (apt-get install nginx-light openssl curl)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind((LOOPBACK, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A tiny HTTP backend on 127.0.0.2 answering `body` to every request. Its
/// thread blocks in `accept` until the test process exits.
fn backend(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((BACKEND_IP, 0)).expect("binding the backend");
    let address = listener.local_addr().expect("backend address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

/// `GET /` through nginx with this `Host`: status and body.
fn get(port: u16, host: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect((LOOPBACK, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Poll until `check` holds: a reload is asynchronous (nginx starts new
/// workers after `nginx -s reload` returns).
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A real nginx: master and worker on loopback, stopped by the pid in its
/// pid file when dropped.
struct Nginx {
    dir: TempDir,
    binary: PathBuf,
    conf: PathBuf,
    port: u16,
    tls_port: u16,
}

impl Nginx {
    fn start(tag: &str) -> Option<Nginx> {
        let binary = tool("nginx")?;
        let dir = TempDir::new(tag);
        let root = dir.path().display().to_string();
        for sub in ["conf.d", "tmp", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("nginx test dirs");
        }
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon on;\n\
                 worker_processes 1;\n\
                 pid {root}/nginx.pid;\n\
                 error_log {root}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n\
                 \x20   access_log off;\n\
                 \x20   client_body_temp_path {root}/tmp/body;\n\
                 \x20   proxy_temp_path {root}/tmp/proxy;\n\
                 \x20   fastcgi_temp_path {root}/tmp/fastcgi;\n\
                 \x20   uwsgi_temp_path {root}/tmp/uwsgi;\n\
                 \x20   scgi_temp_path {root}/tmp/scgi;\n\
                 \x20   include {root}/conf.d/*.conf;\n\
                 \x20   server {{ listen 127.0.0.1:{port} default_server; return 404; }}\n\
                 }}\n"
            ),
        )
        .expect("writing nginx.conf");
        let nginx = Nginx {
            dir,
            binary,
            conf,
            port,
            tls_port: free_port(),
        };
        let status = Command::new(&nginx.binary)
            .args(nginx.args())
            .status()
            .expect("starting nginx");
        assert!(
            status.success(),
            "nginx did not start: {}",
            std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
        );
        eventually("nginx's pid file", || nginx.pid().is_some());
        eventually("nginx's default server", || {
            get(nginx.port, "unknown.example").is_some_and(|(status, _)| status == 404)
        });
        Some(nginx)
    }

    fn args(&self) -> Vec<String> {
        vec![
            "-c".to_owned(),
            self.conf.display().to_string(),
            "-p".to_owned(),
            self.dir.path().display().to_string(),
        ]
    }

    fn command(&self, words: &[&str]) -> Vec<String> {
        let mut command = vec![self.binary.display().to_string()];
        command.extend(words.iter().map(|word| (*word).to_owned()));
        command.extend(self.args());
        command
    }

    fn config(&self) -> ProxyConfig {
        ProxyConfig {
            managed: false,
            conf_dir: self.conf_dir(),
            nginx_test: self.command(&["-t"]),
            nginx_reload: self.command(&["-s", "reload"]),
            http_port: self.port,
            https_port: self.tls_port,
        }
    }

    fn service_with(&self, config: ProxyConfig) -> Arc<ProxyService> {
        Arc::new(ProxyService::new_with_listen(
            Some(config),
            &self.data_dir(),
            LOOPBACK,
        ))
    }

    fn service(&self) -> Arc<ProxyService> {
        self.service_with(self.config())
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether a reload has finished: old workers keep accepting until the
    /// master tells them to stop, so until then a request may still see the
    /// previous configuration. The test config runs one worker.
    fn settled(&self) -> bool {
        let Some(master) = self.pid() else {
            return false;
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return false;
        };
        let children = entries
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
            .filter(|stat| {
                // Fields after the command: state, then the parent's pid.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(master)
            })
            .count();
        children == 1
    }

    /// Wait until the last reload has settled and `check` holds.
    #[track_caller]
    fn until(&self, what: &str, mut check: impl FnMut(&Nginx) -> bool) {
        eventually(what, || self.settled() && check(self));
    }

    fn body(&self, host: &str) -> Option<String> {
        get(self.port, host)
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    }

    fn status(&self, host: &str) -> Option<u16> {
        get(self.port, host).map(|(status, _)| status)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        // The master stops its workers, then exits; wait so no test leaves
        // nginx behind (a zombie awaiting its reaper counts as gone).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z')) =>
                {
                    return;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// A self-signed certificate for `domain` and its key, as openssl writes
/// them; `None` (skipped) without openssl.
fn self_signed(dir: &Path, domain: &str, key_type: &str) -> Option<TlsPair> {
    let openssl = tool("openssl")?;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let key = dir.join(format!("key-{n}.pem"));
    let cert = dir.join(format!("cert-{n}.pem"));
    let mut command = Command::new(openssl);
    command.args(["req", "-x509", "-nodes", "-days", "2", "-subj"]);
    command.arg(format!("/CN={domain}"));
    match key_type {
        "ec" => command.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]),
        _ => command.args(["-newkey", "rsa:2048"]),
    };
    let output = command
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(TlsPair {
        cert_pem: std::fs::read_to_string(cert).expect("reading the certificate"),
        key_pem: std::fs::read_to_string(key).expect("reading the key"),
    })
}

/// Run openssl with `args` and answer its stdout (a PEM); `None` without openssl.
fn openssl(args: &[&str]) -> Option<String> {
    let output = Command::new(tool("openssl")?)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("PEM is text"))
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------- rules

#[test]
fn domain_rule_accepts_rfc1123_names() {
    let longest = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(longest.len(), 253);
    for good in [
        "example.com",
        "www.example.com",
        "*.example.com",
        "xn--bcher-kva.example",
        "a-b.c0m",
        "A.Example.COM",
        longest.as_str(),
    ] {
        assert!(check::check_domain(good).is_ok(), "{good} should pass");
    }
}

#[test]
fn domain_rule_refuses_everything_else() {
    let too_long = format!("{}.com", "a.".repeat(125));
    assert!(too_long.len() > 253);
    let long_label = format!("{}.com", "a".repeat(64));
    for bad in [
        "",
        "1.2.3.4",
        "10.0.0.1",
        "com",
        "*.com",
        "*",
        "a;b.com",
        "a{.com",
        "}.com",
        "a b.com",
        "a\nb.com",
        "a\rb.com",
        "$host.com",
        "\"a\".com",
        "'a'.com",
        "a..com",
        ".a.com",
        "a.com.",
        "a/b.com",
        "a\\b.com",
        "a#b.com",
        "-a.com",
        "a-.com",
        "a.*.com",
        "**.a.com",
        "a_b.com",
        "exämple.com",
        "a.com\0",
        too_long.as_str(),
        long_label.as_str(),
    ] {
        match check::check_domain(bad) {
            Err(PluginError::Invalid(message)) => assert!(message.contains("domain"), "{message}"),
            other => panic!("{bad:?} should be invalid, got {other:?}"),
        }
    }
}

#[test]
fn backend_rules() {
    let scope = scope();
    let with = |addr: &str, port: u16| {
        check::check_site(
            &ProxySite {
                id: 1,
                domain: "a.example".to_owned(),
                backend_addr: addr.to_owned(),
                backend_port: port,
                tls: None,
            },
            &scope,
        )
    };
    assert!(with("127.0.0.2", 80).is_ok());
    assert!(with("fd00::5", 8080).is_ok());
    for outside in [
        "10.0.0.1",
        "192.168.1.1",
        "::1",
        "fd01::5",
        "::ffff:127.0.0.2",
        "0.0.0.0",
    ] {
        match with(outside, 80) {
            Err(PluginError::Denied(message)) => {
                assert!(
                    message.contains("outside the host's VM networks"),
                    "{message}"
                )
            }
            other => panic!("{outside} should be denied, got {other:?}"),
        }
    }
    for not_ip in [
        "",
        "localhost",
        "example.com",
        "127.0.0.2:80",
        "fe80::1%eth0",
        "127.0.0.2; x",
    ] {
        assert!(
            matches!(with(not_ip, 80), Err(PluginError::Invalid(_))),
            "{not_ip:?} should be invalid"
        );
    }
    assert!(matches!(with("127.0.0.2", 0), Err(PluginError::Invalid(_))));
    assert!(with("127.0.0.2", 65535).is_ok());
}

#[test]
fn host_name_rule() {
    assert!(check::check_host_name("hv-1.example_a").is_ok());
    for bad in ["", "a b", "a\nb", "a=b", &"a".repeat(65)] {
        assert!(check::check_host_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn file_names_are_ours_only_by_exact_pattern() {
    assert_eq!(nginx::conf_name(7), "openidcs-7.conf");
    assert_eq!(nginx::id_of("openidcs-7.conf", "conf"), Some(7));
    assert_eq!(
        nginx::id_of("openidcs-18446744073709551615.conf", "conf"),
        Some(u64::MAX)
    );
    for not_ours in [
        "openidcs-007.conf",
        "openidcs-+7.conf",
        "openidcs-.conf",
        "openidcs-7.conf.tmp",
        "openidcs-7.crt",
        "openidcs-18446744073709551616.conf",
        "keep.conf",
        "xopenidcs-7.conf",
        "openidcs-7a.conf",
    ] {
        assert_eq!(nginx::id_of(not_ours, "conf"), None, "{not_ours}");
    }
    let temp = nginx::temp_name(&nginx::conf_name(7));
    assert!(
        !temp.ends_with(".conf"),
        "{temp} would be included by nginx"
    );
    assert_eq!(nginx::id_of_temp(&temp), Some(7));
    assert_eq!(nginx::id_of_temp(".openidcs-7.crt.tmp"), Some(7));
    assert_eq!(nginx::id_of_temp(".keep.conf.tmp"), None);
}

#[test]
fn check_path_stays_in_the_directory() {
    let dir = Path::new("/srv/nginx/conf.d");
    assert_eq!(
        files::check_path(dir, "openidcs-1.conf").expect("inside"),
        dir.join("openidcs-1.conf")
    );
    for escape in ["../x.conf", "/etc/passwd", "a/b.conf", "..", ""] {
        assert!(files::check_path(dir, escape).is_err(), "{escape:?}");
    }
    assert!(files::check_nginx_path(Path::new("/var/lib/openidcs/tls/openidcs-1.key")).is_ok());
    for unsafe_path in ["/a b/k", "/a;b/k", "/$x/k", "/a{/k", "/a\"/k", "/a#b/k"] {
        assert!(
            files::check_nginx_path(Path::new(unsafe_path)).is_err(),
            "{unsafe_path:?}"
        );
    }
}

#[test]
fn server_blocks_as_written() {
    let checked = CheckedSite {
        id: 12,
        domain: "app.example.com".to_owned(),
        backend: SocketAddr::new(IpAddr::V6("fd00::5".parse::<Ipv6Addr>().expect("v6")), 8080),
        tls: None,
    };
    let everywhere = Listen {
        addr: None,
        http_port: 80,
        https_port: 443,
    };
    let cert = PathBuf::from("/var/lib/openidcs/tls/openidcs-12.crt");
    let key = PathBuf::from("/var/lib/openidcs/tls/openidcs-12.key");
    let text = nginx::render(
        &checked,
        "hv1",
        &everywhere,
        Some(TlsPaths {
            cert: &cert,
            key: &key,
        }),
    );
    let location = "    location / {
        proxy_pass http://[fd00::5]:8080;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection \"upgrade\";
    }
";
    let expected = format!(
        "# openidcs proxy site id=12 host=hv1 domain=app.example.com
# Written by openidcs; edits are overwritten and a stray file is removed.
server {{
    listen 80;
    server_name app.example.com;
{location}}}
server {{
    listen 443 ssl;
    server_name app.example.com;
    ssl_certificate /var/lib/openidcs/tls/openidcs-12.crt;
    ssl_certificate_key /var/lib/openidcs/tls/openidcs-12.key;
{location}}}
"
    );
    assert_eq!(text, expected);
    assert_eq!(
        Header::parse(text.as_bytes()),
        Some(Header {
            host: "hv1".to_owned(),
            domain: "app.example.com".to_owned()
        })
    );
    assert_eq!(Header::parse(b"garbage {\n"), None);

    let loopback = Listen {
        addr: Some(LOOPBACK),
        http_port: 8080,
        https_port: 8443,
    };
    let text = nginx::render(&checked, "hv1", &loopback, None);
    assert!(text.contains("    listen 127.0.0.1:8080;\n"), "{text}");
    assert!(!text.contains("ssl"), "{text}");
}

#[test]
fn pem_rules() {
    let dir = TempDir::new("pem");
    let Some(rsa) = self_signed(dir.path(), "a.example", "rsa") else {
        return;
    };
    let Some(ec) = self_signed(dir.path(), "a.example", "ec") else {
        return;
    };
    let check = |cert: &str, key: &str| {
        tls::check_pair(&TlsPair {
            cert_pem: cert.to_owned(),
            key_pem: key.to_owned(),
        })
    };
    // PKCS#8 keys (openssl 3's default), RSA and EC.
    let material = check(&rsa.cert_pem, &rsa.key_pem).expect("RSA PKCS#8");
    assert!(
        material
            .key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    check(&ec.cert_pem, &ec.key_pem).expect("EC PKCS#8");
    // Traditional PKCS#1 RSA and SEC1 EC keys (with the EC PARAMETERS block
    // `openssl ecparam -genkey` writes first).
    let Some(pkcs1) = openssl(&["genrsa", "-traditional", "2048"]) else {
        return;
    };
    let material = check(&rsa.cert_pem, &pkcs1).expect("PKCS#1");
    assert!(
        material
            .key_pem
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
    );
    let Some(sec1) = openssl(&["ecparam", "-genkey", "-name", "prime256v1"]) else {
        return;
    };
    assert!(sec1.contains("EC PARAMETERS"));
    let material = check(&ec.cert_pem, &sec1).expect("SEC1");
    assert!(
        !material.key_pem.contains("PARAMETERS"),
        "parameters dropped"
    );
    // A chain of two, with text around the blocks (dropped) and CRLF endings.
    let chain = format!(
        "subject=CN=a.example\r\n{}\r\nissuer text\n{}",
        rsa.cert_pem.replace('\n', "\r\n"),
        ec.cert_pem
    );
    let material = check(&chain, &rsa.key_pem).expect("chain");
    assert_eq!(material.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(!material.cert_pem.contains("subject=") && !material.cert_pem.contains('\r'));

    let plain_key = dir.path().join("plain.key");
    std::fs::write(&plain_key, &rsa.key_pem).expect("writing the key");
    let Some(encrypted) = openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-passout",
        "pass:x",
        "-in",
        &plain_key.display().to_string(),
    ]) else {
        return;
    };
    let truncated_cert = rsa.cert_pem.replacen("\n", "\nAAAA", 2);
    let garbage_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let garbage_key = "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n";
    let unterminated = rsa.cert_pem.replace("-----END CERTIFICATE-----", "");
    let cases: [(&str, &str, &str); 10] = [
        ("", &rsa.key_pem, "has no PEM block"),
        ("not pem at all", &rsa.key_pem, "has no PEM block"),
        (garbage_der, &rsa.key_pem, "not an X.509 certificate"),
        (&unterminated, &rsa.key_pem, "without its END"),
        (&truncated_cert, &rsa.key_pem, "not valid PEM"),
        (&rsa.key_pem, &rsa.key_pem, "not CERTIFICATE"),
        (&rsa.cert_pem, &rsa.cert_pem, "not a private key"),
        (&rsa.cert_pem, garbage_key, "does not parse"),
        (&rsa.cert_pem, &encrypted, "encrypted"),
        (
            &rsa.cert_pem,
            &format!("{}{}", rsa.key_pem, ec.key_pem),
            "more than one",
        ),
    ];
    for (cert, key, part) in cases {
        match check(cert, key) {
            Err(PluginError::Invalid(message)) => {
                assert!(message.contains(part), "{message:?} lacks {part:?}")
            }
            other => panic!("expected invalid ({part}), got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- without nginx

#[tokio::test]
async fn unconfigured_answers_unsupported_and_writes_nothing() {
    let dir = TempDir::new("unconfigured");
    let service = Arc::new(ProxyService::new(None, dir.path()));
    assert!(!service.is_configured());
    let mut call = call(&service, &scope());
    let expected = PluginError::Unsupported(
        "the reverse proxy is not configured on this server ([proxy] section)".to_owned(),
    );
    let answer = put(&mut call, site(1, "a.example", nowhere(), None)).await;
    assert_eq!(
        format!("{answer:?}"),
        format!("{:?}", Err::<(), _>(expected.clone()))
    );
    let answer = remove(&mut call, 1).await;
    assert_eq!(
        format!("{answer:?}"),
        format!("{:?}", Err::<(), _>(expected))
    );
    let mut no_host = ProxyCall::new(service.clone(), None);
    assert!(matches!(
        no_host
            .put_site(site(1, "a.example", nowhere(), None))
            .await
            .no_trap(),
        Err(PluginError::Unsupported(_))
    ));
    assert!(matches!(
        service
            .reconcile(vec![(scope(), site(1, "a.example", nowhere(), None))])
            .await,
        Err(ProxyError::NotConfigured)
    ));
    assert!(snapshot(dir.path()).is_empty(), "nothing may be written");
    assert!(!dir.path().join("tls").exists());
}

#[tokio::test]
async fn a_call_without_a_host_is_denied() {
    let staged = Staged::counting("nohost");
    let mut call = ProxyCall::new(staged.service.clone(), None);
    let answer = call
        .put_site(site(1, "a.example", nowhere(), None))
        .await
        .no_trap();
    assert_eq!(
        format!("{answer:?}"),
        format!("{:?}", Err::<(), _>(no_host()))
    );
    let answer = call.remove_site(1).await.no_trap();
    assert_eq!(
        format!("{answer:?}"),
        format!("{:?}", Err::<(), _>(no_host()))
    );
    assert!(snapshot(&staged.conf_dir()).is_empty());
}

#[tokio::test]
async fn bad_input_leaves_every_file_unchanged() {
    let staged = Staged::counting("inject");
    let host = scope();
    let mut call = call(&staged.service, &host);
    put(&mut call, site(1, "taken.example", nowhere(), None))
        .await
        .expect("a good site");
    assert_eq!(staged.runs("tests"), 1);
    let before = snapshot(staged.dir.path());
    let pem_dir = TempDir::new("inject-pem");
    let good_tls = self_signed(pem_dir.path(), "a.example", "ec");
    let bad_cert = TlsPair {
        cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        key_pem: good_tls
            .as_ref()
            .map(|pair| pair.key_pem.clone())
            .unwrap_or_default(),
    };
    let bad_key = TlsPair {
        cert_pem: good_tls
            .as_ref()
            .map(|pair| pair.cert_pem.clone())
            .unwrap_or_default(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
    };
    let too_long = format!("{}.com", "a.".repeat(126));
    let outside = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 80);
    let mut cases: Vec<(ProxySite, &str)> = [
        "a;b.com",
        "a{.com",
        "}.com",
        "a b.com",
        "a\nb.com",
        "$host.com",
        "\"a\".com",
        "a..com",
        "a/b.com",
        too_long.as_str(),
        "-a.com",
        "a.com;include /etc/shadow",
    ]
    .into_iter()
    .map(|domain| (site(2, domain, nowhere(), None), "invalid"))
    .collect();
    cases.push((site(2, "b.example", outside, None), "denied"));
    let mut hostname = site(2, "b.example", nowhere(), None);
    hostname.backend_addr = "localhost".to_owned();
    cases.push((hostname, "invalid"));
    cases.push((
        site(
            2,
            "b.example",
            SocketAddr::new(IpAddr::V4(BACKEND_IP), 0),
            None,
        ),
        "invalid",
    ));
    cases.push((site(2, "b.example", nowhere(), Some(bad_cert)), "invalid"));
    cases.push((site(2, "b.example", nowhere(), Some(bad_key)), "invalid"));
    // Checked after the lock, still before any write: a domain another site
    // serves, and a site id another host wrote.
    cases.push((site(2, "TAKEN.example", nowhere(), None), "conflict"));
    for (bad, kind) in cases {
        let shown = format!("{bad:?}");
        let answer = put(&mut call, bad).await;
        let error = answer.expect_err(&shown);
        assert!(
            crate::plugin::bindings::describe_error(&error).starts_with(kind),
            "{shown}: expected {kind}, got {error:?}"
        );
        assert_eq!(
            snapshot(staged.dir.path()),
            before,
            "{shown} changed a file"
        );
    }
    let mut other_host = call_for(&staged.service, "h2");
    let answer = put(&mut other_host, site(1, "other.example", nowhere(), None)).await;
    assert!(
        matches!(answer, Err(PluginError::Denied(ref message)) if message.contains("belongs to host \"h1\"")),
        "{answer:?}"
    );
    let answer = remove(&mut other_host, 1).await;
    assert!(matches!(answer, Err(PluginError::Denied(_))), "{answer:?}");
    assert_eq!(snapshot(staged.dir.path()), before);
    assert_eq!(staged.runs("tests"), 1, "no bad call may reach nginx -t");
}

fn call_for(service: &Arc<ProxyService>, host: &str) -> ProxyCall {
    ProxyCall::new(service.clone(), Some(scope_named(host)))
}

#[tokio::test]
async fn unchanged_sites_and_absent_removals_run_nothing() {
    let staged = Staged::counting("idem");
    let mut call = call(&staged.service, &scope());
    put(&mut call, site(3, "a.example", nowhere(), None))
        .await
        .expect("put");
    put(&mut call, site(3, "a.example", nowhere(), None))
        .await
        .expect("same again");
    remove(&mut call, 99).await.expect("absent id");
    assert_eq!((staged.runs("tests"), staged.runs("reloads")), (1, 1));
    let conf = staged.conf_dir().join("openidcs-3.conf");
    assert_eq!(mode_of(&conf), 0o644);
    remove(&mut call, 3).await.expect("remove");
    assert!(!conf.exists());
    assert_eq!((staged.runs("tests"), staged.runs("reloads")), (2, 2));
}

#[tokio::test]
async fn a_failed_reload_restores_the_previous_files() {
    let staged = Staged::new("reload", |_| {
        (
            sh("true".to_owned()),
            sh("echo 'no nginx master' >&2; exit 1".to_owned()),
        )
    });
    let mut call = call(&staged.service, &scope());
    let answer = put(&mut call, site(4, "a.example", nowhere(), None)).await;
    match answer {
        Err(PluginError::Failed(message)) => {
            assert!(message.contains("no nginx master"), "{message}")
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(snapshot(&staged.conf_dir()).is_empty());
}

#[tokio::test]
async fn a_refused_test_restores_and_names_stderr() {
    let staged = Staged::new("refused", |_| {
        (
            sh("echo 'nginx: [emerg] nope' >&2; exit 1".to_owned()),
            sh("exit 1".to_owned()),
        )
    });
    std::fs::write(staged.conf_dir().join("openidcs-5.conf"), b"old bytes").expect("seed");
    let before = snapshot(&staged.conf_dir());
    let mut call = call(&staged.service, &scope());
    let answer = put(&mut call, site(5, "a.example", nowhere(), None)).await;
    match answer {
        Err(PluginError::Invalid(message)) => {
            assert_eq!(
                message,
                "nginx refused the configuration: nginx: [emerg] nope"
            )
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(snapshot(&staged.conf_dir()), before);
    let answer = remove(&mut call, 5).await;
    assert!(matches!(answer, Err(PluginError::Invalid(_))), "{answer:?}");
    assert_eq!(snapshot(&staged.conf_dir()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_never_interleave() {
    // The test command fails if another one is running: `mkdir` is atomic.
    let staged = Staged::new("concurrent", |dir| {
        (
            sh(format!(
                "mkdir {0} || {{ echo interleaved >&2; exit 1; }}; sleep 0.05; rmdir {0}",
                dir.join("busy").display()
            )),
            sh("true".to_owned()),
        )
    });
    let host = scope();
    let mut tasks = Vec::new();
    for id in 1..=8u64 {
        let mut call = call(&staged.service, &host);
        tasks.push(tokio::spawn(async move {
            put(
                &mut call,
                site(id, &format!("s{id}.example"), nowhere(), None),
            )
            .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("no interleaving");
    }
    assert_eq!(snapshot(&staged.conf_dir()).len(), 8);
}

// ---------------------------------------------------------------- real nginx

#[tokio::test]
async fn serves_a_site_then_stops_serving_it() {
    let Some(nginx) = Nginx::start("serve") else {
        return;
    };
    let backend = backend("hello from the VM");
    let service = nginx.service();
    let mut call = call(&service, &scope());
    put(&mut call, site(21, "app.example", backend, None))
        .await
        .expect("put_site");
    nginx.until("the site to answer", |nginx| {
        nginx.body("app.example").as_deref() == Some("hello from the VM")
    });
    assert_eq!(nginx.status("other.example"), Some(404));
    let conf = std::fs::read_to_string(nginx.conf_dir().join("openidcs-21.conf")).expect("file");
    assert!(
        conf.contains(&format!("proxy_pass http://{backend};")),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("listen 127.0.0.1:{};", nginx.port)),
        "{conf}"
    );
    remove(&mut call, 21).await.expect("remove_site");
    nginx.until("the site to be gone", |nginx| {
        nginx.status("app.example") == Some(404)
    });
    assert!(snapshot(&nginx.conf_dir()).is_empty());
    remove(&mut call, 21).await.expect("removing again");
}

#[tokio::test]
async fn serves_https_with_sni() {
    let Some(nginx) = Nginx::start("https") else {
        return;
    };
    let Some(pair) = self_signed(nginx.dir.path(), "secure.example", "rsa") else {
        return;
    };
    let Some(curl) = tool("curl") else {
        return;
    };
    let backend = backend("hello over TLS");
    let service = nginx.service();
    let mut call = call(&service, &scope());
    put(&mut call, site(31, "secure.example", backend, Some(pair)))
        .await
        .expect("put_site with TLS");
    let tls_dir = nginx.data_dir().join("tls");
    assert_eq!(mode_of(&tls_dir), 0o700);
    for name in ["openidcs-31.crt", "openidcs-31.key"] {
        assert_eq!(mode_of(&tls_dir.join(name)), 0o600, "{name}");
    }
    let url = format!("https://secure.example:{}/", nginx.tls_port);
    let resolve = format!("secure.example:{}:127.0.0.1", nginx.tls_port);
    nginx.until("the HTTPS site to answer", |_| {
        Command::new(&curl)
            .args(["-sk", "--max-time", "5", "--resolve", &resolve, &url])
            .output()
            .is_ok_and(|output| output.stdout == b"hello over TLS")
    });
    // Plain HTTP serves too.
    nginx.until("the HTTP side", |nginx| {
        nginx.body("secure.example").as_deref() == Some("hello over TLS")
    });
    // Back to plain HTTP: the key does not stay behind.
    put(&mut call, site(31, "secure.example", backend, None))
        .await
        .expect("put_site without TLS");
    assert!(
        snapshot(&tls_dir).is_empty(),
        "{:?}",
        snapshot(&tls_dir).keys()
    );
    nginx.until("HTTPS to stop", |_| {
        !Command::new(&curl)
            .args(["-sk", "--max-time", "2", "--resolve", &resolve, &url])
            .output()
            .is_ok_and(|output| output.status.success())
    });
}

#[tokio::test]
async fn nginx_refusals_roll_back_and_the_previous_config_still_serves() {
    let Some(nginx) = Nginx::start("rollback") else {
        return;
    };
    // A certificate with another key's private key parses, and nginx -t
    // refuses it ("key values mismatch").
    let (Some(first), Some(second)) = (
        self_signed(nginx.dir.path(), "a.example", "ec"),
        self_signed(nginx.dir.path(), "a.example", "ec"),
    ) else {
        return;
    };
    let mismatched = TlsPair {
        cert_pem: first.cert_pem,
        key_pem: second.key_pem,
    };
    let backend = backend("still here");
    let service = nginx.service();
    let mut call = call(&service, &scope());
    put(&mut call, site(41, "a.example", backend, None))
        .await
        .expect("a good site");
    nginx.until("the site to answer", |nginx| {
        nginx.body("a.example").as_deref() == Some("still here")
    });
    let conf_dir = nginx.conf_dir();
    let before = snapshot(&conf_dir);

    // Updating the site with a mismatched pair: refused, restored exactly.
    let answer = put(
        &mut call,
        site(41, "a.example", backend, Some(mismatched.clone())),
    )
    .await;
    match &answer {
        Err(PluginError::Invalid(message)) => assert!(
            message.starts_with("nginx refused the configuration: ")
                && message.contains("openidcs-41"),
            "{message}"
        ),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(snapshot(&conf_dir), before);
    assert_eq!(snapshot(&nginx.data_dir().join("tls")), BTreeMap::new());

    // A new site with the mismatched pair: refused, its files gone.
    let answer = put(&mut call, site(42, "b.example", backend, Some(mismatched))).await;
    assert!(matches!(answer, Err(PluginError::Invalid(_))), "{answer:?}");
    assert_eq!(snapshot(&conf_dir), before);
    assert_eq!(snapshot(&nginx.data_dir().join("tls")), BTreeMap::new());
    // (Polled: under load a reload's old workers may still be draining.)
    nginx.until("the previous config to serve", |nginx| {
        nginx.body("a.example").as_deref() == Some("still here")
    });

    // One of our files corrupted behind the service's back: the next change
    // fails nginx -t, the new file is gone and the corrupt one untouched.
    let corrupt = b"this is { not nginx".to_vec();
    std::fs::write(conf_dir.join("openidcs-41.conf"), &corrupt).expect("corrupting");
    let before = snapshot(&conf_dir);
    let answer = put(&mut call, site(43, "c.example", backend, None)).await;
    assert!(matches!(answer, Err(PluginError::Invalid(_))), "{answer:?}");
    assert_eq!(snapshot(&conf_dir), before);
    assert_eq!(
        std::fs::read(conf_dir.join("openidcs-41.conf")).expect("corrupt file"),
        corrupt
    );
    // nginx was never reloaded with it: the last good config still serves.
    nginx.until("the last good config to serve", |nginx| {
        nginx.body("a.example").as_deref() == Some("still here")
            && nginx.status("c.example") == Some(404)
    });
}

#[tokio::test]
async fn reconcile_makes_the_directory_exactly_ours() {
    let Some(nginx) = Nginx::start("reconcile") else {
        return;
    };
    let root = nginx.dir.path().display().to_string();
    let mut config = nginx.config();
    // Count the runs, then run the real command.
    config.nginx_test = sh(format!(
        "echo t >> {root}/tests && exec {}",
        nginx.command(&["-t"]).join(" ")
    ));
    config.nginx_reload = sh(format!(
        "echo r >> {root}/reloads && exec {}",
        nginx.command(&["-s", "reload"]).join(" ")
    ));
    let service = nginx.service_with(config);
    let conf_dir = nginx.conf_dir();
    let tls_dir = nginx.data_dir().join("tls");
    std::fs::write(conf_dir.join("keep.conf"), b"# the operator's\n").expect("keep.conf");
    std::fs::write(conf_dir.join("openidcs-007.conf"), b"# not our name\n").expect("007");
    std::fs::write(conf_dir.join("openidcs-999.conf"), b"# a stray of ours\n").expect("999");
    std::fs::write(conf_dir.join(".openidcs-5.conf.tmp"), b"half").expect("tmp");
    std::fs::create_dir(&tls_dir).expect("tls dir");
    std::fs::write(tls_dir.join("openidcs-999.key"), b"old key").expect("stray key");
    let not_ours = ["keep.conf", "openidcs-007.conf"]
        .map(|name| (name, std::fs::read(conf_dir.join(name)).expect("not ours")));

    let first = backend("first");
    let second = backend("second");
    let host = scope();
    let mut sites = vec![
        (host.clone(), site(1, "one.example", first, None)),
        (host.clone(), site(2, "two.example", second, None)),
        (host.clone(), site(3, "bad;domain.example", first, None)),
        (
            host.clone(),
            site(
                4,
                "four.example",
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80),
                None,
            ),
        ),
        (host.clone(), site(5, "one.example", first, None)),
    ];
    if let Some(pair) = self_signed(nginx.dir.path(), "two.example", "ec") {
        sites[1].1.tls = Some(pair);
    }
    let report = service.reconcile(sites.clone()).await.expect("reconcile");
    assert_eq!((report.written, report.removed), (2, 1), "{report:?}");
    let skipped: Vec<u64> = report.skipped.iter().map(|(id, _)| *id).collect();
    assert_eq!(skipped, vec![3, 4, 5], "{report:?}");
    assert!(
        report.skipped[0].1.starts_with("invalid: domain"),
        "{report:?}"
    );
    assert!(report.skipped[1].1.starts_with("denied: "), "{report:?}");
    let mut names: Vec<String> = snapshot(&conf_dir).into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "keep.conf",
            "openidcs-007.conf",
            "openidcs-1.conf",
            "openidcs-2.conf"
        ]
    );
    for (name, content) in &not_ours {
        assert_eq!(
            &std::fs::read(conf_dir.join(name)).expect("still there"),
            content,
            "{name}"
        );
    }
    let tls_names: Vec<String> = snapshot(&tls_dir).into_keys().collect();
    if sites[1].1.tls.is_some() {
        assert_eq!(tls_names, ["openidcs-2.crt", "openidcs-2.key"]);
    } else {
        assert!(tls_names.is_empty(), "{tls_names:?}");
    }
    assert_eq!(runs(&nginx.dir.path().join("tests")), 1);
    assert_eq!(runs(&nginx.dir.path().join("reloads")), 1);
    nginx.until("both sites", |nginx| {
        nginx.body("one.example").as_deref() == Some("first")
            && nginx.body("two.example").as_deref() == Some("second")
    });

    // Again with the same sites: nothing to do, no test, no reload.
    let report = service
        .reconcile(sites.clone())
        .await
        .expect("reconcile again");
    assert_eq!(
        (report.written, report.removed, report.skipped.len()),
        (0, 0, 3)
    );
    assert_eq!(runs(&nginx.dir.path().join("reloads")), 1);
    assert_eq!(runs(&nginx.dir.path().join("tests")), 1);

    // A refused result is rolled back whole: the operator's file breaks the
    // configuration, so dropping site 2 and changing site 1 are both undone.
    std::fs::write(conf_dir.join("keep.conf"), b"broken {\n").expect("breaking keep.conf");
    let before = snapshot(&conf_dir);
    let tls_before = snapshot(&tls_dir);
    let answer = service
        .reconcile(vec![(host.clone(), site(1, "one.example", second, None))])
        .await;
    assert!(matches!(answer, Err(ProxyError::Test { .. })), "{answer:?}");
    assert_eq!(snapshot(&conf_dir), before);
    assert_eq!(snapshot(&tls_dir), tls_before);
    assert_eq!(runs(&nginx.dir.path().join("reloads")), 1);
}
