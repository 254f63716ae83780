//! `openidcs.toml`: one tree mirroring the file, validated once at load.
//!
//! Every table denies unknown keys so that a typo fails at start instead of
//! silently using a default. Paths are resolved against the config file's
//! directory here, and code after load never re-checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tasks: TasksConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub poller: PollerConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub traffic: TrafficConfig,
    /// Budgets of the `http` grant's requests (per engine call).
    #[serde(default)]
    pub http: HttpConfig,
    /// Port forwarding; absent: the nat capability answers `unsupported`.
    #[serde(default)]
    pub nat: Option<NatConfig>,
    /// Reverse proxy; absent: the proxy capability answers `unsupported`.
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// What a host's `server_addr` may use beyond the base allow-list.
    #[serde(default)]
    pub libvirt: crate::model::rules::UriPolicy,
    /// Hosts created at start when the database does not know them yet.
    #[serde(default, rename = "host")]
    pub hosts: Vec<SeedHost>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Answer HTTP 200 with the code only in the body, as the original did.
    #[serde(default)]
    pub always_http_200: bool,
    /// Base URL of this server as browsers reach it (console links).
    #[serde(default)]
    pub public_url: Option<String>,
    /// `system/saving` keeps this many snapshots; older ones are removed.
    #[serde(default = "default_snapshots_kept")]
    pub snapshots_kept: u32,
    /// A client has this long to send a request's headers (slowloris).
    #[serde(default = "default_header_read_timeout_s")]
    pub header_read_timeout_s: u64,
    /// Serve plain HTTP instead of HTTPS (behind a TLS front, or for tests).
    #[serde(default)]
    pub plain_http: bool,
    /// The HTTPS certificate chain and key (PEM), relative to the config
    /// file; without them a self-signed pair is made in `<data_dir>/https`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            data_dir: default_data_dir(),
            always_http_200: false,
            public_url: None,
            snapshots_kept: default_snapshots_kept(),
            header_read_timeout_s: default_header_read_timeout_s(),
            plain_http: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn default_header_read_timeout_s() -> u64 {
    30
}

fn default_snapshots_kept() -> u32 {
    10
}

/// Log retention, and how refused requests are recorded: nothing an
/// unauthenticated caller sends may grow the database without bound.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Records older than this are removed by the poller.
    #[serde(default = "default_log_max_age_days")]
    pub max_age_days: u64,
    /// At most this many records are kept (the newest).
    #[serde(default = "default_log_max_rows")]
    pub max_rows: u64,
    /// Requests refused without a valid credential, or to unknown routes,
    /// are counted and written as one summary record per this many seconds,
    /// not one record each.
    #[serde(default = "default_refusal_summary_s")]
    pub refusal_summary_s: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            max_age_days: default_log_max_age_days(),
            max_rows: default_log_max_rows(),
            refusal_summary_s: default_refusal_summary_s(),
        }
    }
}

fn default_log_max_age_days() -> u64 {
    30
}

fn default_log_max_rows() -> u64 {
    100_000
}

fn default_refusal_summary_s() -> u64 {
    60
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1880))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Wrong tokens allowed from one client address per window before 429.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_failure_window_s")]
    pub failure_window_s: u64,
    /// How long a panel's single sign-on token (`temptoken`) may be used.
    #[serde(default = "default_temp_token_ttl_s")]
    pub temp_token_ttl_s: u64,
    /// How long a VM session (what `templogin` opens) lasts.
    #[serde(default = "default_session_ttl_s")]
    pub session_ttl_s: u64,
}

fn default_temp_token_ttl_s() -> u64 {
    300
}

fn default_session_ttl_s() -> u64 {
    8 * 3600
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_failures: default_max_failures(),
            failure_window_s: default_failure_window_s(),
            temp_token_ttl_s: default_temp_token_ttl_s(),
            session_ttl_s: default_session_ttl_s(),
        }
    }
}

fn default_max_failures() -> u32 {
    10
}

fn default_failure_window_s() -> u64 {
    60
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// How long a handler waits for its task before answering with the
    /// task id only (the task goes on).
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            wait_ms: default_wait_ms(),
        }
    }
}

fn default_wait_ms() -> u64 {
    120_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// The one nftables table (family inet) openidcs owns.
    #[serde(default = "default_nat_table")]
    pub table: String,
    /// How to run nft; a prefix such as `["ip", "netns", "exec", "ns1", "nft"]`
    /// runs it in another network namespace.
    #[serde(default = "default_nft_command")]
    pub nft_command: Vec<String>,
}

fn default_nat_table() -> String {
    "openidcs".to_owned()
}

fn default_nft_command() -> Vec<String> {
    vec!["nft".to_owned()]
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Run an nginx of openidcs' own under `<data_dir>/nginx` (started and
    /// stopped with the server); `conf_dir`, `nginx_test` and
    /// `nginx_reload` are then its own and must not be set.
    #[serde(default)]
    pub managed: bool,
    /// The directory of server blocks nginx includes; relative to the config
    /// file. openidcs writes only its own files here. Required unless
    /// `managed`.
    #[serde(default)]
    pub conf_dir: PathBuf,
    /// Validates the whole nginx configuration.
    #[serde(default = "default_nginx_test")]
    pub nginx_test: Vec<String>,
    /// Applies it.
    #[serde(default = "default_nginx_reload")]
    pub nginx_reload: Vec<String>,
    /// Port the server blocks listen on for HTTP, and for HTTPS.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    #[serde(default = "default_https_port")]
    pub https_port: u16,
}

fn default_nginx_test() -> Vec<String> {
    vec!["nginx".to_owned(), "-t".to_owned()]
}

fn default_nginx_reload() -> Vec<String> {
    vec!["nginx".to_owned(), "-s".to_owned(), "reload".to_owned()]
}

fn default_http_port() -> u16 {
    80
}

fn default_https_port() -> u16 {
    443
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// What a VM over its traffic quota (`flu_num`) is throttled to, in
    /// Mbit/s each way, on hosts whose `flu_over` is `throttle` (the default).
    #[serde(default = "default_over_quota_mbps")]
    pub over_quota_mbps: u32,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            over_quota_mbps: default_over_quota_mbps(),
        }
    }
}

fn default_over_quota_mbps() -> u32 {
    1
}

/// What one engine call granted `http` may ask of its host's API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Requests in flight at once; one more is refused (`connection-limit-reached`).
    #[serde(default = "default_http_concurrent")]
    pub max_concurrent: usize,
    /// Bytes of one response body; past it the body fails.
    #[serde(default = "default_http_response_bytes")]
    pub max_response_bytes: u64,
    /// Ceiling of the connect, first-byte and between-bytes timeouts.
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_concurrent: default_http_concurrent(),
            max_response_bytes: default_http_response_bytes(),
            timeout_ms: default_http_timeout_ms(),
        }
    }
}

fn default_http_concurrent() -> usize {
    4
}

fn default_http_response_bytes() -> u64 {
    16 << 20
}

fn default_http_timeout_ms() -> u64 {
    30_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollerConfig {
    /// Seconds between two rounds (one bulk engine call per host per round).
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
    /// Samples older than this are dropped.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// At most this many samples are kept per VM.
    #[serde(default = "default_retention_count")]
    pub retention_count: u32,
    /// How old the power states in a `listup` answer may be. Changes made
    /// through the API show at once; this bounds changes made outside it.
    #[serde(default = "default_listup_max_age_ms")]
    pub listup_max_age_ms: u64,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            interval_s: default_interval_s(),
            retention_hours: default_retention_hours(),
            retention_count: default_retention_count(),
            listup_max_age_ms: default_listup_max_age_ms(),
        }
    }
}

fn default_interval_s() -> u64 {
    60
}

fn default_listup_max_age_ms() -> u64 {
    2000
}

fn default_retention_hours() -> u64 {
    24
}

fn default_retention_count() -> u32 {
    1440
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// How long a `vncons` ticket may wait to be redeemed.
    #[serde(default = "default_ticket_ttl_s")]
    pub ticket_ttl_s: u64,
    /// Open web consoles allowed per VM (0: consoles disabled).
    #[serde(default = "default_console_max_per_vm")]
    pub max_per_vm: u32,
    /// Open web consoles allowed in total (0: consoles disabled).
    #[serde(default = "default_console_max_total")]
    pub max_total: u32,
    /// A console with no byte either way for this long is closed.
    #[serde(default = "default_console_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Where noVNC lives (Debian's `novnc` package); relative to the config
    /// file.
    #[serde(default = "default_novnc_dir")]
    pub novnc_dir: PathBuf,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            ticket_ttl_s: default_ticket_ttl_s(),
            max_per_vm: default_console_max_per_vm(),
            max_total: default_console_max_total(),
            idle_timeout_s: default_console_idle_timeout_s(),
            novnc_dir: default_novnc_dir(),
        }
    }
}

fn default_ticket_ttl_s() -> u64 {
    60
}

fn default_console_max_per_vm() -> u32 {
    2
}

fn default_console_max_total() -> u32 {
    50
}

fn default_console_idle_timeout_s() -> u64 {
    600
}

fn default_novnc_dir() -> PathBuf {
    PathBuf::from("/usr/share/novnc")
}

/// The doors a plugin may be granted; one per WIT import interface.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    Libvirt,
    Nat,
    Proxy,
    Log,
    /// `wasi:http` outgoing requests to the host's own API (`caps::http`).
    Http,
}

impl Grant {
    pub const ALL: [Grant; 5] = [
        Grant::Libvirt,
        Grant::Nat,
        Grant::Proxy,
        Grant::Log,
        Grant::Http,
    ];

    /// The WIT interface name this grant opens (`openidcs:engine/<name>`).
    pub fn interface(self) -> &'static str {
        match self {
            Grant::Libvirt => "libvirt",
            Grant::Nat => "nat",
            Grant::Proxy => "proxy",
            Grant::Log => "log",
            Grant::Http => "http",
        }
    }

    pub fn from_interface(name: &str) -> Option<Grant> {
        Grant::ALL
            .into_iter()
            .find(|grant| grant.interface() == name)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    /// Relative to the config file; absolute after load.
    pub path: PathBuf,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub description: Option<String>,
}

fn default_memory_mb() -> u64 {
    64
}

fn default_timeout_ms() -> u64 {
    30_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedHost {
    pub name: String,
    #[serde(rename = "type")]
    pub engine: String,
    #[serde(default)]
    pub config: crate::model::HostSettings,
}

/// Overrides from the command line; they win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Read, parse and validate the config file. A missing file is an error
    /// only when the operator named it; the default path may be absent.
    pub fn load(path: &Path, must_exist: bool, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<Config>(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                toml::from_str::<Config>("").context("building the default config")?
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("reading config file {}", path.display()));
            }
        };
        let base = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        match &overrides.data_dir {
            Some(data_dir) => config.server.data_dir = data_dir.clone(),
            None => config.server.data_dir = base.join(&config.server.data_dir),
        }
        for plugin in &mut config.plugins {
            plugin.path = base.join(&plugin.path);
        }
        for path in [&mut config.server.tls_cert, &mut config.server.tls_key]
            .into_iter()
            .flatten()
        {
            *path = base.join(&*path);
        }
        if let Some(proxy) = &mut config.proxy
            && !proxy.conf_dir.as_os_str().is_empty()
        {
            proxy.conf_dir = base.join(&proxy.conf_dir);
        }
        config.console.novnc_dir = base.join(&config.console.novnc_dir);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (position, plugin) in self.plugins.iter().enumerate() {
            let key = format!("plugin[{position}]");
            if !crate::model::rules::is_name(&plugin.name) {
                problems.push(format!(
                    "{key}.name: {:?} must match [A-Za-z0-9_.-]{{1,64}}",
                    plugin.name
                ));
            }
            if !names.insert(plugin.name.as_str()) {
                problems.push(format!("{key}.name: {:?} is declared twice", plugin.name));
            }
            if plugin.memory_mb == 0 || plugin.memory_mb > 4096 {
                problems.push(format!(
                    "{key}.memory_mb: must be 1..=4096, got {}",
                    plugin.memory_mb
                ));
            }
            if plugin.timeout_ms == 0 {
                problems.push(format!("{key}.timeout_ms: must be > 0"));
            }
        }
        for (position, host) in self.hosts.iter().enumerate() {
            if !crate::model::rules::is_name(&host.name) {
                problems.push(format!(
                    "host[{position}].name: {:?} must match [A-Za-z0-9_.-]{{1,64}}",
                    host.name
                ));
            }
        }
        if let Some(nat) = &self.nat {
            if let Err(invalid) = crate::model::rules::check_table_name("nat.table", &nat.table) {
                problems.push(invalid.to_string());
            }
            if nat.nft_command.is_empty() {
                problems.push("nat.nft_command: must name a program".to_owned());
            }
        }
        if let Some(proxy) = &self.proxy
            && (proxy.nginx_test.is_empty() || proxy.nginx_reload.is_empty())
        {
            problems.push("proxy.nginx_test, proxy.nginx_reload: must name a program".to_owned());
        }
        if self.poller.interval_s == 0 {
            problems.push("poller.interval_s: must be > 0".to_owned());
        }
        if self.console.idle_timeout_s == 0 {
            problems.push("console.idle_timeout_s: must be > 0".to_owned());
        }
        if self.auth.failure_window_s == 0 {
            problems.push("auth.failure_window_s: must be > 0".to_owned());
        }
        if let Some(proxy) = &self.proxy {
            let has_conf_dir = !proxy.conf_dir.as_os_str().is_empty();
            if proxy.managed && has_conf_dir {
                problems.push(
                    "proxy.conf_dir: a managed nginx keeps its sites under <data_dir>/nginx; remove conf_dir or managed".to_owned(),
                );
            } else if !proxy.managed && !has_conf_dir {
                problems.push("proxy.conf_dir: required unless managed = true".to_owned());
            }
        }
        if !problems.is_empty() {
            bail!("invalid config:\n  {}", problems.join("\n  "));
        }
        Ok(())
    }

    pub fn database_path(&self) -> PathBuf {
        self.server.data_dir.join("openidcs.db")
    }
}
