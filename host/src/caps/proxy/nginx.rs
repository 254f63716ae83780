//! What nginx sees: the names of our files, the server blocks written into
//! them, and the two commands (`nginx -t`, reload) run after every change.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::ProxyError;
use super::check::CheckedSite;

/// Prefix of every file this capability owns, in the conf dir and the TLS dir.
const PREFIX: &str = "openidcs-";
/// First line of every server file; [`Header`] reads it back.
const HEADER: &str = "# openidcs proxy site";
/// A stuck nginx must not hold the proxy lock (and every other change) forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Enough of nginx's stderr to name the file and line it refused.
const MAX_STDERR: usize = 4000;

/// Where the server blocks listen.
#[derive(Clone, Debug)]
pub struct Listen {
    /// `None`: every address (`listen 80;`); tests bind loopback only.
    pub addr: Option<IpAddr>,
    pub http_port: u16,
    pub https_port: u16,
}

impl Listen {
    fn on(&self, port: u16) -> String {
        match self.addr {
            Some(addr) => SocketAddr::new(addr, port).to_string(),
            None => port.to_string(),
        }
    }
}

/// The server file of site `id`; nginx includes it (`*.conf`).
pub fn conf_name(id: u64) -> String {
    format!("{PREFIX}{id}.conf")
}

/// The site's certificate chain and key, in the TLS dir.
pub fn tls_names(id: u64) -> (String, String) {
    (format!("{PREFIX}{id}.crt"), format!("{PREFIX}{id}.key"))
}

/// Where a file is written before it is renamed over `name`. It ends in
/// `.tmp`, so an `include …/*.conf` never reads a half-written file, and it
/// is hidden, so it matches no include glob of the usual `*` kind.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// The id of a file name this capability would write with `extension`
/// (`conf`, `crt`, `key`), or `None` for any other name. Exact round trip:
/// `openidcs-007.conf` is not ours (we would write `openidcs-7.conf`), so it
/// is never touched.
pub fn id_of(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(extension)?;
    let digits = digits.strip_suffix('.')?;
    let id: u64 = digits.parse().ok()?;
    (digits == id.to_string()).then_some(id)
}

/// The id of one of our leftover temp files (a write interrupted by a crash).
pub fn id_of_temp(name: &str) -> Option<u64> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    ["conf", "crt", "key"]
        .into_iter()
        .find_map(|extension| id_of(inner, extension))
}

/// Who a server file belongs to, read back from its first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub host: String,
    pub domain: String,
}

impl Header {
    /// `None` for a file whose first line is not ours (edited by hand or
    /// corrupted); such a file is still ours by its name.
    pub fn parse(content: &[u8]) -> Option<Header> {
        let first = content.split(|byte| *byte == b'\n').next()?;
        let rest = std::str::from_utf8(first).ok()?.strip_prefix(HEADER)?;
        let mut host = None;
        let mut domain = None;
        for field in rest.split_whitespace() {
            match field.split_once('=') {
                Some(("host", value)) => host = Some(value.to_owned()),
                Some(("domain", value)) => domain = Some(value.to_owned()),
                _ => {}
            }
        }
        Some(Header {
            host: host?,
            domain: domain?,
        })
    }
}

/// Paths of the site's TLS files as nginx should read them.
pub struct TlsPaths<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The server file of a checked site. Every value in it passed a rule that
/// keeps it one nginx word: the domain (RFC 1123), the backend (a parsed IP
/// address and port), the host name (`[A-Za-z0-9_.-]`), the TLS paths
/// (checked by `files::check_nginx_path`).
pub fn render(
    site: &CheckedSite,
    host: &str,
    listen: &Listen,
    tls: Option<TlsPaths<'_>>,
) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        text,
        "{HEADER} id={} host={host} domain={}",
        site.id, site.domain
    );
    let _ = writeln!(
        text,
        "# Written by openidcs; edits are overwritten and a stray file is removed."
    );
    let _ = writeln!(text, "server {{");
    let _ = writeln!(text, "    listen {};", listen.on(listen.http_port));
    let _ = writeln!(text, "    server_name {};", site.domain);
    location(&mut text, site.backend);
    let _ = writeln!(text, "}}");
    if let Some(tls) = tls {
        let _ = writeln!(text, "server {{");
        let _ = writeln!(text, "    listen {} ssl;", listen.on(listen.https_port));
        let _ = writeln!(text, "    server_name {};", site.domain);
        let _ = writeln!(text, "    ssl_certificate {};", tls.cert.display());
        let _ = writeln!(text, "    ssl_certificate_key {};", tls.key.display());
        location(&mut text, site.backend);
        let _ = writeln!(text, "}}");
    }
    text
}

fn location(text: &mut String, backend: SocketAddr) {
    // SocketAddr's Display puts IPv6 addresses in brackets, as URLs need.
    let _ = writeln!(text, "    location / {{");
    let _ = writeln!(text, "        proxy_pass http://{backend};");
    let _ = writeln!(text, "        proxy_set_header Host $host;");
    let _ = writeln!(text, "        proxy_set_header X-Real-IP $remote_addr;");
    let _ = writeln!(
        text,
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
    );
    let _ = writeln!(text, "        proxy_set_header X-Forwarded-Proto $scheme;");
    // WebSocket upgrades pass through (consoles and dashboards in VMs use them).
    let _ = writeln!(text, "        proxy_http_version 1.1;");
    let _ = writeln!(text, "        proxy_set_header Upgrade $http_upgrade;");
    let _ = writeln!(text, "        proxy_set_header Connection \"upgrade\";");
    let _ = writeln!(text, "    }}");
}

/// Run `nginx -t` (the configured command); its stderr on refusal.
pub async fn test(command: &[String]) -> Result<(), ProxyError> {
    run(command).await?.map_err(|stderr| ProxyError::Test {
        command: command_line(command),
        stderr,
    })
}

/// Run the configured reload command; its stderr on failure.
pub async fn reload(command: &[String]) -> Result<(), ProxyError> {
    run(command).await?.map_err(|stderr| ProxyError::Reload {
        command: command_line(command),
        stderr,
    })
}

/// Run a command off the reactor: `Ok(Ok(()))` when it exits 0,
/// `Ok(Err(stderr))` when it exits otherwise. Nothing goes through a shell:
/// the words are the operator's, passed as arguments.
pub(super) async fn run(command: &[String]) -> Result<Result<(), String>, ProxyError> {
    let Some((program, arguments)) = command.split_first() else {
        return Err(ProxyError::Spawn {
            command: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let child = tokio::process::Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out command is killed rather than left behind.
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Err(_) => {
            return Err(ProxyError::Timeout {
                command: command_line(command),
                seconds: COMMAND_TIMEOUT.as_secs(),
            });
        }
        Ok(Err(source)) => {
            return Err(ProxyError::Spawn {
                command: command_line(command),
                source,
            });
        }
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(Ok(()));
    }
    // nginx reports on stderr; a wrapper script may use stdout instead.
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }
    if stderr.is_empty() {
        stderr = format!("exited with {}", output.status);
    }
    Ok(Err(cut(stderr)))
}

fn cut(mut text: String) -> String {
    if let Some((end, _)) = text.char_indices().nth(MAX_STDERR) {
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The command as the operator wrote it, for messages.
fn command_line(command: &[String]) -> String {
    command.join(" ")
}
