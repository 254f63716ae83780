//! `openidcs:engine/proxy`: nginx server blocks in the configured directory.
//!
//! Owns, and only ever writes or removes:
//!
//! - `<conf_dir>/openidcs-<id>.conf`, one server file per site, named by the
//!   site's database id (never by a string the plugin passes), and its
//!   temp sibling `.openidcs-<id>.conf.tmp` while it is being written;
//! - `<data_dir>/tls/openidcs-<id>.crt` and `.key` (mode 0600, directory
//!   0700) for HTTPS sites, and their temp siblings.
//!
//! Every call is checked at the door before any file is touched ([`check`]):
//! the domain is an RFC 1123 name that nginx reads as one word, the backend
//! is an IP address inside the host's VM networks (else a plugin could proxy
//! to the host's own services), the port is 1–65535, and TLS material is PEM
//! that parses ([`tls`]). A site id already written for another host is
//! refused, and so is a domain another site serves.
//!
//! Every change is atomic and checked: files are written to a temp sibling
//! and renamed, the previous content (or absence) is kept, `nginx -t` runs,
//! and a refusal restores the previous state exactly before answering
//! `invalid` with nginx's stderr. Then nginx reloads. Changes are serialised
//! by one lock, so concurrent calls never interleave a test with a rollback.
//!
//! It never touches a file whose name is not of its pattern (`keep.conf`,
//! `openidcs-007.conf` and the operator's own files stay as they are), never
//! writes outside those two directories, never creates the conf dir (nginx
//! must include it; it is the operator's), and never runs a shell. Until the
//! operator configures `[proxy]`, every call answers `unsupported` naming the
//! missing section, and nothing is written.

mod check;
mod files;
pub mod managed;
mod nginx;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CapError, HostScope, no_host};
use crate::config::ProxyConfig;
use crate::plugin::bindings::openidcs::engine::proxy::Host;
use crate::plugin::bindings::{PluginError, ProxySite, describe_error};
use check::CheckedSite;
use files::{CONF_MODE, TLS_MODE, Wanted};
use nginx::{Header, Listen, TlsPaths};

/// Why the capability could not do its work (as opposed to a site breaking a
/// rule). Each case names the command or path and what it said.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the reverse proxy is not configured on this server ([proxy] section)")]
    NotConfigured,
    #[error("the reverse proxy is off: {0}")]
    Unusable(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsafe(String),
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {seconds} s")]
    Timeout { command: String, seconds: u64 },
    #[error("`{command}` refused the configuration: {stderr}")]
    Test { command: String, stderr: String },
    #[error("`{command}` failed: {stderr}")]
    Reload { command: String, stderr: String },
    #[error("{failure}; restoring the previous files failed too: {source}")]
    Restore {
        failure: Box<ProxyError>,
        source: Box<ProxyError>,
    },
    #[error("proxy worker failed: {0}")]
    Worker(String),
}

impl ProxyError {
    /// The answer a plugin sees.
    fn into_plugin_error(self) -> PluginError {
        match self {
            ProxyError::NotConfigured | ProxyError::Unusable(_) => {
                PluginError::Unsupported(self.to_string())
            }
            ProxyError::Test { stderr, .. } => {
                PluginError::Invalid(format!("nginx refused the configuration: {stderr}"))
            }
            other => PluginError::Failed(other.to_string()),
        }
    }
}

/// What [`ProxyService::reconcile`] did. Counts are of server files; a site's
/// TLS files follow its server file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Server files written because they were missing or different.
    pub written: usize,
    /// Server files of ours removed because no valid site wants them.
    pub removed: usize,
    /// Sites not written, with the reason (a rule they break, a duplicate).
    pub skipped: Vec<(u64, String)>,
}

/// Why a put or remove was not done: a rule the call broke, or a fault.
enum Refusal {
    Rule(PluginError),
    Fault(ProxyError),
}

impl From<PluginError> for Refusal {
    fn from(error: PluginError) -> Self {
        Refusal::Rule(error)
    }
}

impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Self {
        Refusal::Fault(error)
    }
}

/// Both reach the engine as the WIT `error`: a fault of nginx or of the
/// files is the engine's `failed`, not a trap (the call itself went fine).
impl From<Refusal> for CapError {
    fn from(refusal: Refusal) -> CapError {
        CapError::Refused(match refusal {
            Refusal::Rule(error) => error,
            Refusal::Fault(error) => error.into_plugin_error(),
        })
    }
}

/// The configured side of the service.
struct Settings {
    conf_dir: PathBuf,
    tls_dir: PathBuf,
    nginx_test: Vec<String>,
    nginx_reload: Vec<String>,
    listen: Listen,
}

/// The shared proxy service (conf dir, TLS dir, nginx commands, the lock).
pub struct ProxyService {
    settings: Option<Arc<Settings>>,
    /// Why a configured proxy is off (its managed nginx did not start).
    broken: Option<String>,
    /// Held from the first file read of a change to the end of its reload
    /// (or rollback): two changes never interleave.
    lock: tokio::sync::Mutex<()>,
}

impl ProxyService {
    /// `config`: the `[proxy]` section (`None`: every call answers
    /// `unsupported`). TLS material goes under `<data_dir>/tls/`.
    pub fn new(config: Option<ProxyConfig>, data_dir: &Path) -> ProxyService {
        ProxyService::build(config, data_dir, None)
    }

    /// A service whose server blocks listen on `addr` only (tests bind
    /// loopback; production listens on every address).
    #[cfg(test)]
    pub(crate) fn new_with_listen(
        config: Option<ProxyConfig>,
        data_dir: &Path,
        addr: std::net::IpAddr,
    ) -> ProxyService {
        ProxyService::build(config, data_dir, Some(addr))
    }

    /// The service before the `[proxy]` section is read; same as
    /// `new(None, …)`.
    pub fn unconfigured() -> ProxyService {
        ProxyService::build(None, Path::new(""), None)
    }

    fn build(
        config: Option<ProxyConfig>,
        data_dir: &Path,
        addr: Option<std::net::IpAddr>,
    ) -> ProxyService {
        let settings = config.map(|config| {
            Arc::new(Settings {
                conf_dir: config.conf_dir,
                tls_dir: data_dir.join("tls"),
                nginx_test: config.nginx_test,
                nginx_reload: config.nginx_reload,
                listen: Listen {
                    addr,
                    http_port: config.http_port,
                    https_port: config.https_port,
                },
            })
        });
        ProxyService {
            settings,
            broken: None,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.settings.is_some()
    }

    /// The service of a `[proxy]` section that cannot be used (its managed
    /// nginx did not start): every call answers `reason`.
    pub fn broken(reason: String) -> ProxyService {
        ProxyService {
            settings: None,
            broken: Some(reason),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Why the reverse proxy is off, when it is.
    pub fn unavailable(&self) -> Option<String> {
        match (&self.settings, &self.broken) {
            (Some(_), _) => None,
            (None, Some(reason)) => Some(reason.clone()),
            (None, None) => Some("the config has no [proxy] section".to_owned()),
        }
    }

    fn settings(&self) -> Result<Arc<Settings>, ProxyError> {
        match (&self.settings, &self.broken) {
            (Some(settings), _) => Ok(settings.clone()),
            (None, Some(reason)) => Err(ProxyError::Unusable(reason.clone())),
            (None, None) => Err(ProxyError::NotConfigured),
        }
    }

    /// Make the conf dir hold exactly our files for `sites` (the panel's
    /// database): stray files of ours removed, missing ones written, changed
    /// ones rewritten, files not named by our pattern never touched; then one
    /// `nginx -t` and one reload, both skipped when nothing changed.
    ///
    /// A site that breaks a rule (or repeats an id or a domain) is skipped
    /// and reported, and its old file, if any, is removed like a stray: the
    /// capability serves only what passes its rules. When `nginx -t` refuses
    /// the result, every file is restored and the error answered. When the
    /// reload fails, the files stay (they passed `nginx -t`; nginx reads them
    /// when it next starts) and the error is answered.
    pub async fn reconcile(
        &self,
        sites: Vec<(Arc<HostScope>, ProxySite)>,
    ) -> Result<ReconcileReport, ProxyError> {
        let settings = self.settings()?;
        let mut report = ReconcileReport::default();
        let mut ids = HashSet::new();
        let mut domains: HashMap<String, u64> = HashMap::new();
        let mut checked = Vec::new();
        for (scope, site) in sites {
            let site = match check::check_site(&site, &scope) {
                Ok(site) => site,
                Err(error) => {
                    report.skipped.push((site.id, describe_error(&error)));
                    continue;
                }
            };
            if !ids.insert(site.id) {
                report
                    .skipped
                    .push((site.id, "the id is given more than once".to_owned()));
                continue;
            }
            if let Some(other) = domains.insert(site.domain.to_ascii_lowercase(), site.id) {
                report.skipped.push((
                    site.id,
                    format!("domain {} is also served by site {other}", site.domain),
                ));
                continue;
            }
            checked.push((scope.name.clone(), site));
        }
        let _guard = self.lock.lock().await;
        let plan_settings = settings.clone();
        let wanted = blocking(move || plan_reconcile(&plan_settings, &checked)).await??;
        let replaced = commit(&settings, wanted, AfterReloadFailure::Keep).await?;
        for file in replaced.iter().filter(|file| file.counted) {
            if file.written {
                report.written += 1;
            } else {
                report.removed += 1;
            }
        }
        if report.written + report.removed > 0 {
            tracing::info!(
                written = report.written,
                removed = report.removed,
                skipped = report.skipped.len(),
                "reverse proxy reconciled"
            );
        }
        Ok(report)
    }

    async fn put(&self, host: Option<Arc<HostScope>>, site: ProxySite) -> Result<(), Refusal> {
        let settings = self.settings()?;
        let scope = host.ok_or_else(no_host)?;
        let site = check::check_site(&site, &scope)?;
        let _guard = self.lock.lock().await;
        let plan_settings = settings.clone();
        let host_name = scope.name.clone();
        let plan_site = site.clone();
        let wanted = blocking(move || plan_put(&plan_settings, &host_name, &plan_site)).await??;
        let replaced = commit(&settings, wanted, AfterReloadFailure::Restore).await?;
        if !replaced.is_empty() {
            tracing::info!(host = %scope.name, id = site.id, domain = %site.domain,
                backend = %site.backend, tls = site.tls.is_some(), "reverse proxy site written");
        }
        Ok(())
    }

    async fn remove(&self, host: Option<Arc<HostScope>>, id: u64) -> Result<(), Refusal> {
        let settings = self.settings()?;
        let scope = host.ok_or_else(no_host)?;
        check::check_host_name(&scope.name)?;
        let _guard = self.lock.lock().await;
        let plan_settings = settings.clone();
        let host_name = scope.name.clone();
        let wanted = blocking(move || plan_remove(&plan_settings, &host_name, id)).await??;
        let replaced = commit(&settings, wanted, AfterReloadFailure::Restore).await?;
        if !replaced.is_empty() {
            tracing::info!(host = %scope.name, id, "reverse proxy site removed");
        }
        Ok(())
    }
}

/// What a failed reload does to the files just changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterReloadFailure {
    /// Put back the previous state: the caller (the API) undoes its own
    /// change when the call fails, so disk, nginx and database stay in step.
    Restore,
    /// Keep them: a reconcile writes what the database says.
    Keep,
}

/// Apply `wanted`; when anything changed, `nginx -t` (restoring everything
/// on refusal) and reload. Answers what was replaced.
async fn commit(
    settings: &Settings,
    wanted: Vec<Wanted>,
    after_reload_failure: AfterReloadFailure,
) -> Result<Vec<files::Replaced>, ProxyError> {
    let replaced = blocking(move || files::apply(wanted)).await??;
    if replaced.is_empty() {
        // Nothing changed on disk: nginx already runs this configuration.
        return Ok(replaced);
    }
    let outcome = match nginx::test(&settings.nginx_test).await {
        Ok(()) => nginx::reload(&settings.nginx_reload).await,
        Err(refused) => Err(refused),
    };
    let failure = match outcome {
        Ok(()) => return Ok(replaced),
        Err(failure @ ProxyError::Reload { .. })
            if after_reload_failure == AfterReloadFailure::Keep =>
        {
            return Err(failure);
        }
        Err(failure) => failure,
    };
    tracing::warn!(%failure, "reverse proxy change refused; restoring the previous files");
    match blocking(move || files::restore(&replaced)).await {
        Ok(Ok(())) => Err(failure),
        Ok(Err(source)) | Err(source) => Err(ProxyError::Restore {
            failure: Box::new(failure),
            source: Box::new(source),
        }),
    }
}

/// Run blocking file work off the reactor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProxyError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ProxyError::Worker(error.to_string()))
}

/// The files of one site put by `host`, after the ownership and domain checks.
fn plan_put(settings: &Settings, host: &str, site: &CheckedSite) -> Result<Vec<Wanted>, Refusal> {
    let conf_dir = files::canonical_dir(&settings.conf_dir)?;
    check_owner(&conf_dir, host, site.id)?;
    check_domain_free(&conf_dir, site)?;
    let tls_dir = match site.tls {
        Some(_) => Some(files::private_dir(&settings.tls_dir)?),
        None => files::existing_dir(&settings.tls_dir)?,
    };
    Ok(site_files(
        &settings.listen,
        &conf_dir,
        tls_dir.as_deref(),
        host,
        site,
    )?)
}

/// The absence of site `id`'s files, after the ownership check.
fn plan_remove(settings: &Settings, host: &str, id: u64) -> Result<Vec<Wanted>, Refusal> {
    let conf_dir = files::canonical_dir(&settings.conf_dir)?;
    check_owner(&conf_dir, host, id)?;
    let mut wanted = vec![file(
        &conf_dir,
        &nginx::conf_name(id),
        None,
        CONF_MODE,
        true,
    )?];
    if let Some(tls_dir) = files::existing_dir(&settings.tls_dir)? {
        let (cert, key) = nginx::tls_names(id);
        wanted.push(file(&tls_dir, &cert, None, TLS_MODE, false)?);
        wanted.push(file(&tls_dir, &key, None, TLS_MODE, false)?);
    }
    Ok(wanted)
}

/// Every file of ours as `sites` want it, and the absence of every other
/// file of ours (leftover temp files are removed on the way).
fn plan_reconcile(
    settings: &Settings,
    sites: &[(String, CheckedSite)],
) -> Result<Vec<Wanted>, ProxyError> {
    let conf_dir = files::canonical_dir(&settings.conf_dir)?;
    let tls_dir = if sites.iter().any(|(_, site)| site.tls.is_some()) {
        Some(files::private_dir(&settings.tls_dir)?)
    } else {
        files::existing_dir(&settings.tls_dir)?
    };
    let mut wanted = Vec::new();
    let mut ids = HashSet::new();
    for (host, site) in sites {
        ids.insert(site.id);
        wanted.extend(site_files(
            &settings.listen,
            &conf_dir,
            tls_dir.as_deref(),
            host,
            site,
        )?);
    }
    for name in files::names(&conf_dir)? {
        if nginx::id_of_temp(&name).is_some() {
            files::remove_leftover(&files::check_path(&conf_dir, &name)?)?;
        } else if let Some(id) = nginx::id_of(&name, "conf")
            && !ids.contains(&id)
        {
            wanted.push(file(&conf_dir, &name, None, CONF_MODE, true)?);
        }
    }
    if let Some(tls_dir) = &tls_dir {
        for name in files::names(tls_dir)? {
            if nginx::id_of_temp(&name).is_some() {
                files::remove_leftover(&files::check_path(tls_dir, &name)?)?;
            } else if let Some(id) =
                nginx::id_of(&name, "crt").or_else(|| nginx::id_of(&name, "key"))
                && !ids.contains(&id)
            {
                wanted.push(file(tls_dir, &name, None, TLS_MODE, false)?);
            }
        }
    }
    Ok(wanted)
}

/// A site's files: TLS files first (the server file refers to them), then the
/// server file. Without TLS, the site's TLS files must not exist (a site that
/// went from HTTPS to HTTP leaves no key behind).
fn site_files(
    listen: &Listen,
    conf_dir: &Path,
    tls_dir: Option<&Path>,
    host: &str,
    site: &CheckedSite,
) -> Result<Vec<Wanted>, ProxyError> {
    let mut wanted = Vec::new();
    let (cert_name, key_name) = nginx::tls_names(site.id);
    let text = match (&site.tls, tls_dir) {
        (Some(material), Some(tls_dir)) => {
            let cert = file(
                tls_dir,
                &cert_name,
                Some(material.cert_pem.as_bytes().to_vec()),
                TLS_MODE,
                false,
            )?;
            let key = file(
                tls_dir,
                &key_name,
                Some(material.key_pem.as_bytes().to_vec()),
                TLS_MODE,
                false,
            )?;
            files::check_nginx_path(&cert.path)?;
            files::check_nginx_path(&key.path)?;
            let text = nginx::render(
                site,
                host,
                listen,
                Some(TlsPaths {
                    cert: &cert.path,
                    key: &key.path,
                }),
            );
            wanted.push(cert);
            wanted.push(key);
            text
        }
        (Some(_), None) => {
            return Err(ProxyError::Unsafe(
                "the TLS directory was not prepared".to_owned(),
            ));
        }
        (None, tls_dir) => {
            if let Some(tls_dir) = tls_dir {
                wanted.push(file(tls_dir, &cert_name, None, TLS_MODE, false)?);
                wanted.push(file(tls_dir, &key_name, None, TLS_MODE, false)?);
            }
            nginx::render(site, host, listen, None)
        }
    };
    wanted.push(file(
        conf_dir,
        &nginx::conf_name(site.id),
        Some(text.into_bytes()),
        CONF_MODE,
        true,
    )?);
    Ok(wanted)
}

/// The wanted state of file `name` in `dir`, its paths made by `check_path`.
fn file(
    dir: &Path,
    name: &str,
    content: Option<Vec<u8>>,
    mode: u32,
    counted: bool,
) -> Result<Wanted, ProxyError> {
    Ok(Wanted {
        path: files::check_path(dir, name)?,
        temp: files::check_path(dir, &nginx::temp_name(name))?,
        content,
        mode,
        counted,
    })
}

/// Prevents one host's plugin from replacing or removing a site another
/// host's plugin wrote (ids are global; a file records its host). A file
/// whose first line is not ours (corrupted) may be replaced by anyone.
fn check_owner(conf_dir: &Path, host: &str, id: u64) -> Result<(), Refusal> {
    let path = files::check_path(conf_dir, &nginx::conf_name(id))?;
    if let Some(current) = files::read(&path)?
        && let Some(header) = Header::parse(&current.bytes)
        && header.host != host
    {
        return Err(Refusal::Rule(PluginError::Denied(format!(
            "proxy site {id} belongs to host {}",
            check::shown(&header.host)
        ))));
    }
    Ok(())
}

/// Prevents two sites from claiming one domain (nginx would warn and serve
/// whichever file it read first, so one plugin could take another's traffic).
fn check_domain_free(conf_dir: &Path, site: &CheckedSite) -> Result<(), Refusal> {
    for name in files::names(conf_dir)? {
        let Some(other) = nginx::id_of(&name, "conf").filter(|other| *other != site.id) else {
            continue;
        };
        let path = files::check_path(conf_dir, &name)?;
        let header = match files::read(&path) {
            Ok(Some(content)) => Header::parse(&content.bytes),
            // Vanished meanwhile, or not a regular file: it serves nothing of ours.
            Ok(None) | Err(_) => None,
        };
        if header.is_some_and(|header| header.domain.eq_ignore_ascii_case(&site.domain)) {
            return Err(Refusal::Rule(PluginError::Conflict(format!(
                "domain {} is already served by proxy site {other}",
                site.domain
            ))));
        }
    }
    Ok(())
}

/// Per-call state: the service and the host the call is for.
pub struct ProxyCall {
    service: Arc<ProxyService>,
    host: Option<Arc<HostScope>>,
}

impl ProxyCall {
    pub fn new(service: Arc<ProxyService>, host: Option<Arc<HostScope>>) -> ProxyCall {
        ProxyCall { service, host }
    }
}

type Answer<T> = Result<T, CapError>;

impl Host for ProxyCall {
    async fn put_site(&mut self, site: ProxySite) -> Answer<()> {
        Ok(self.service.put(self.host.clone(), site).await?)
    }

    async fn remove_site(&mut self, id: u64) -> Answer<()> {
        Ok(self.service.remove(self.host.clone(), id).await?)
    }
}
