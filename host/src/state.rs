//! `AppState`: the services every handler reaches, behind one `Arc`.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::auth::AuthGuard;
use crate::caps::proxy::managed::ManagedNginx;
use crate::caps::{self, Capabilities};
use crate::config::{Config, Overrides, ProxyConfig};
use crate::events::Events;
use crate::plugin::PluginRuntime;
use crate::service::console::ConsoleTickets;
use crate::service::hosts::HostListCache;
use crate::service::listup::ListupCache;
use crate::service::system::RefusalTally;
use crate::sessions::Sessions;
use crate::store::{LogLevel, NewLog, Store};
use crate::tasks::Tasks;

pub struct AppState {
    config: RwLock<Arc<Config>>,
    pub config_path: PathBuf,
    pub overrides: Overrides,
    pub store: Arc<Store>,
    pub plugins: PluginRuntime,
    /// The capabilities' shared services, for what the core itself asks of
    /// them (re-applying NAT rules and proxy files from the database).
    pub capabilities: Arc<Capabilities>,
    pub tasks: Tasks,
    pub auth: AuthGuard,
    pub consoles: ConsoleTickets,
    /// Panels' single sign-on tokens and the VM sessions they open.
    pub sessions: Sessions,
    /// What changed, for the event streams (`GET /api/system/events`).
    pub events: Events,
    /// Refused unauthenticated requests, counted (see `service::system`).
    pub refusals: RefusalTally,
    pub listups: ListupCache,
    /// The `server/listup` answer, kept until the next write.
    pub host_list: HostListCache,
    pub started_at: Instant,
    /// The address the listener actually bound (the config may say port 0).
    pub bound_address: std::sync::OnceLock<std::net::SocketAddr>,
    /// The nginx this server started (`[proxy] managed = true`), stopped
    /// with it.
    pub managed_nginx: Option<ManagedNginx>,
}

/// The proxy service of `[proxy]`; with `managed = true`, the nginx of this
/// data dir is started first, and a proxy whose nginx cannot start is off
/// (with the reason) rather than stopping the server.
async fn start_proxy(config: &Config) -> (caps::proxy::ProxyService, Option<ManagedNginx>) {
    let data_dir = &config.server.data_dir;
    let Some(proxy) = config.proxy.clone().filter(|proxy| proxy.managed) else {
        return (
            caps::proxy::ProxyService::new(config.proxy.clone(), data_dir),
            None,
        );
    };
    let nginx = ManagedNginx::in_data_dir(data_dir);
    if let Err(error) = nginx.start(proxy.http_port, proxy.https_port).await {
        let reason = format!("its nginx did not start: {error}");
        tracing::error!("[proxy] is off: {reason}");
        return (caps::proxy::ProxyService::broken(reason), None);
    }
    let proxy = ProxyConfig {
        conf_dir: nginx.sites_dir(),
        nginx_test: nginx.test_command(),
        nginx_reload: nginx.reload_command(),
        ..proxy
    };
    (
        caps::proxy::ProxyService::new(Some(proxy), data_dir),
        Some(nginx),
    )
}

impl AppState {
    /// Open the database, build the capabilities and load the plugins. Only
    /// a database that cannot be opened stops the start; a broken plugin is
    /// listed with its error.
    pub async fn start(
        config: Config,
        config_path: PathBuf,
        overrides: Overrides,
    ) -> anyhow::Result<Arc<AppState>> {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
        let store = Arc::new(Store::open(&config.database_path()).context("opening the database")?);
        let interrupted = store.task_fail_unfinished()?;
        if interrupted > 0 {
            store.log_insert(&NewLog::new(
                LogLevel::Warn,
                "startup",
                format!("{interrupted} tasks were interrupted by the previous stop and are marked failed"),
            ))?;
        }
        let hashed = crate::service::provision::hash_stored_passwords(&store)
            .context("hashing OS passwords stored in plain text")?;
        if hashed > 0 {
            store.log_insert(&NewLog::new(
                LogLevel::Info,
                "startup",
                format!(
                    "{hashed} OS passwords stored by an older version in plain text are now hashes"
                ),
            ))?;
        }
        let (proxy, managed_nginx) = start_proxy(&config).await;
        let capabilities = Arc::new(Capabilities {
            store: store.clone(),
            http: Arc::new(caps::http::HttpService::new(config.http.clone())),
            libvirt: Arc::new(caps::libvirt::LibvirtService::new()),
            nat: Arc::new(
                caps::nat::NatService::new(config.nat.clone())
                    .probed()
                    .await,
            ),
            proxy: Arc::new(proxy),
        });
        capabilities.libvirt.set_policy(config.libvirt.clone());
        let plugins =
            PluginRuntime::new(capabilities.clone(), config.server.data_dir.join("cache"))?;
        plugins.load_all(&config.plugins).await;
        let events = Events::default();
        let state = Arc::new(AppState {
            tasks: Tasks::new(
                store.clone(),
                events.clone(),
                Duration::from_millis(config.tasks.wait_ms),
            ),
            events,
            auth: AuthGuard::new(
                config.auth.max_failures,
                Duration::from_secs(config.auth.failure_window_s),
            ),
            consoles: ConsoleTickets::new(Duration::from_secs(config.console.ticket_ttl_s)),
            sessions: Sessions::new(
                Duration::from_secs(config.auth.temp_token_ttl_s),
                Duration::from_secs(config.auth.session_ttl_s),
            ),
            refusals: RefusalTally::default(),
            listups: ListupCache::default(),
            host_list: HostListCache::default(),
            config: RwLock::new(Arc::new(config)),
            config_path,
            overrides,
            store,
            plugins,
            capabilities,
            started_at: Instant::now(),
            bound_address: std::sync::OnceLock::new(),
            managed_nginx,
        });
        crate::service::system::seed_hosts(&state)?;
        // A reboot or a flushed ruleset loses nothing: the database is the truth.
        crate::service::network::repair_half_done(&state);
        crate::service::network::reconcile(&state).await;
        Ok(state)
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    pub fn replace_config(&self, config: Config) {
        *self.config.write() = Arc::new(config);
    }
}

impl AppState {
    /// Base URL browsers use to reach this server: `public_url`, else the
    /// bound address (https unless `plain_http`).
    pub fn public_base_url(&self) -> String {
        let config = self.config();
        match &config.server.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!(
                "{}://{}",
                if config.server.plain_http {
                    "http"
                } else {
                    "https"
                },
                self.bound_address
                    .get()
                    .copied()
                    .unwrap_or(config.server.listen)
            ),
        }
    }
}
