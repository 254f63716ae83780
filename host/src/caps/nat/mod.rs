//! `openidcs:engine/nat`: port forwards and VM rate limits in the one
//! nftables table openidcs owns (`table inet <[nat].table>`, default
//! `openidcs`).
//!
//! Owns that table and everything in it: five base chains (`prerouting` and
//! `output` DNAT, `postrouting` masquerade, `forward` accept, `police` drop
//! over a rate limit, all policy accept) and, per forward, one rule in each
//! of the first four tagged with the comment `openidcs:<host>:<id>`, plus one
//! shared `ct state established,related accept`; per rate limit, a police
//! rule per family and direction tagged `openidcs:rate:<host>:<vm>`. Rate
//! limits are for hosts whose kernel cannot shape (libvirt's `<bandwidth>`
//! needs qdiscs some kernels lack) and engines without limits of their own
//! (containers); the engine asks for them, this capability records them in
//! the database first (table `rate_limits`), and a reconcile restores them
//! from there with the forwards.
//!
//! Changes are single JSON batches through `nft -j -f -` (nft applies a
//! batch atomically), serialised by one lock; reads are `nft -j list table
//! inet <table>`, compared by meaning, not by text.
//!
//! Scope is checked before any nft command (see [`scope`]): the public port
//! inside the host's range, the target a unicast address inside one of the
//! host's VM networks, a real target port, a host name that tags rules
//! unambiguously. A plugin sees, lists and removes only its host's forwards.
//!
//! It never names another table or family in any command (no `flush
//! ruleset`, no `-f` of a file), never runs a shell, and never changes
//! sysctls (IP forwarding is the operator's). Until the operator configures
//! `[nat]`, every call answers `unsupported` and nothing runs.

#[cfg(test)]
mod live_tests;
mod nft;
mod ruleset;
mod scope;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{CapError, HostScope, no_host};
use crate::config::NatConfig;
use crate::plugin::bindings::openidcs::engine::nat::Host;
use crate::plugin::bindings::{PluginError, PortForward, RateLimit, describe_error};
use crate::store::{RateLimitRecord, Store};
use nft::Nft;
use ruleset::{Batch, Forward, Police, RateKey, RuleKey};

/// Why nft could not be read or written (the reconcile's error; a plugin
/// sees it as `failed` with this text).
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("port forwarding is not configured on this server ([nat] section)")]
    NotConfigured,
    #[error("the [nat] section is unusable: {0}")]
    Config(String),
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {seconds} s")]
    Timeout { command: String, seconds: u64 },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not read the output of `{command}`: {message}")]
    Parse { command: String, message: String },
}

impl From<NatError> for PluginError {
    fn from(error: NatError) -> PluginError {
        match error {
            NatError::NotConfigured => not_configured(),
            error => PluginError::Failed(error.to_string()),
        }
    }
}

/// What a reconcile changed, counted in forwards (not nft rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Forwards of the list that were not live as listed (missing, or live
    /// with other content) and are now.
    pub added: usize,
    /// Forwards live but not in the list (or skipped), plus rules in our
    /// table that belong to no forward (written by hand), and rate limits
    /// live but not in the list; all gone now.
    pub removed: usize,
    /// Forwards of the list not written, with the reason (out of scope, a
    /// duplicate id, the same public port as an earlier one).
    pub skipped: Vec<(u64, String)>,
    /// Rate limits written.
    pub limits: usize,
    /// Rate limits of the list not written (VM, reason: out of scope).
    pub skipped_limits: Vec<(String, String)>,
}

/// The shared NAT service: the `nft` runner and the lock every change takes.
pub struct NatService {
    state: State,
}

enum State {
    /// No `[nat]` section.
    Unconfigured,
    /// A `[nat]` section this service cannot use (the reason).
    Broken(String),
    Ready {
        nft: Nft,
        /// Held from the read of the live table to the end of the write, so
        /// that concurrent changes never decide on a stale table.
        changes: tokio::sync::Mutex<()>,
    },
}

impl NatService {
    pub fn new(config: Option<NatConfig>) -> NatService {
        let state = match config {
            None => State::Unconfigured,
            Some(config) => match Nft::new(config.nft_command, config.table) {
                Ok(nft) => State::Ready {
                    nft,
                    changes: tokio::sync::Mutex::new(()),
                },
                Err(reason) => {
                    tracing::error!(%reason, "[nat] is unusable; port forwarding calls will fail");
                    State::Broken(reason)
                }
            },
        };
        NatService { state }
    }

    /// The service without a `[nat]` section.
    pub fn unconfigured() -> NatService {
        NatService::new(None)
    }

    pub fn is_configured(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// Check once at start that nft answers (it needs root or
    /// CAP_NET_ADMIN): a service that cannot use it is `Broken` with nft's
    /// answer, which every call and the start-up message then give.
    pub async fn probed(self) -> NatService {
        if let State::Ready { nft, .. } = &self.state
            && let Err(error) = nft.read().await
        {
            return NatService {
                state: State::Broken(format!("nft does not answer: {error}")),
            };
        }
        self
    }

    /// Why port forwarding is off, when it is.
    pub fn unavailable(&self) -> Option<String> {
        match &self.state {
            State::Unconfigured => Some("the config has no [nat] section".to_owned()),
            State::Broken(reason) => Some(reason.clone()),
            State::Ready { .. } => None,
        }
    }

    fn ready(&self) -> Result<(&Nft, &tokio::sync::Mutex<()>), NatError> {
        match &self.state {
            State::Unconfigured => Err(NatError::NotConfigured),
            State::Broken(reason) => Err(NatError::Config(reason.clone())),
            State::Ready { nft, changes } => Ok((nft, changes)),
        }
    }

    /// Install (or replace, same id) a forward of the host `scope`.
    pub async fn add_rule(
        &self,
        scope: &HostScope,
        forward: PortForward,
    ) -> Result<(), PluginError> {
        let (nft, changes) = self.ready()?;
        let (key, wanted) = scope::checked(scope, &forward)?;
        let _change = changes.lock().await;
        let live = nft.read().await?;
        if let Some((other, _)) = live
            .forwards()
            .find(|(other, forward)| *other != Some(&key) && forward.overlaps(&wanted))
        {
            return Err(PluginError::Conflict(format!(
                "{} port {} is already forwarded ({})",
                wanted.protocol.as_str(),
                wanted.public_port,
                match other {
                    Some(other) if other.host == key.host => format!("forward {}", other.id),
                    Some(_) => "by another host".to_owned(),
                    None => "by a rule openidcs did not write; a reconcile removes it".to_owned(),
                }
            )));
        }
        let mut batch = Batch::new(nft.table());
        batch.ensure_table();
        if !live.has_established() {
            batch.add_established();
        }
        // Same id: the old rules go in the same batch the new ones come in.
        for rule in live.rules_of(&key) {
            batch.delete_rule(&rule.chain, rule.handle);
        }
        batch.add_forward(&key, &wanted);
        nft.apply(&batch.to_json()).await?;
        tracing::info!(host = %key.host, id = key.id, ?wanted, "port forward installed");
        Ok(())
    }

    /// Remove the host's forward `id`; an absent one is not an error.
    pub async fn remove_rule(&self, scope: &HostScope, id: u64) -> Result<(), PluginError> {
        let (nft, changes) = self.ready()?;
        let key = RuleKey {
            host: scope::check_host_name(&scope.name)?.to_owned(),
            id,
        };
        let _change = changes.lock().await;
        let live = nft.read().await?;
        let mut batch = Batch::new(nft.table());
        for rule in live.rules_of(&key) {
            batch.delete_rule(&rule.chain, rule.handle);
        }
        if batch.is_empty() {
            return Ok(());
        }
        nft.apply(&batch.to_json()).await?;
        tracing::info!(host = %key.host, id, "port forward removed");
        Ok(())
    }

    /// Police (or police anew) a VM of the host `scope`: recorded in
    /// `store` first, then its old rules go in the same batch the new ones
    /// come in; the record is put back when nft fails.
    pub async fn set_rate_limit(
        &self,
        store: &Store,
        scope: &HostScope,
        limit: RateLimit,
    ) -> Result<(), PluginError> {
        let (nft, changes) = self.ready()?;
        let (key, rules) = scope::checked_rate_limit(scope, &limit)?;
        let _change = changes.lock().await;
        let record = RateLimitRecord {
            host: key.host.clone(),
            vm_uuid: key.vm.clone(),
            addresses: limit.addresses.clone(),
            upload_kbps: limit.upload_kbps,
            download_kbps: limit.download_kbps,
        };
        let previous = store.rate_limit_put(&record).map_err(unrecorded)?;
        let applied = async {
            let live = nft.read().await?;
            let mut batch = Batch::new(nft.table());
            batch.ensure_table();
            for rule in live.rate_rules_of(&key) {
                batch.delete_rule(&rule.chain, rule.handle);
            }
            batch.add_police(&key, &rules);
            nft.apply(&batch.to_json()).await
        }
        .await;
        if let Err(error) = applied {
            restore_record(store, &key, previous);
            return Err(error.into());
        }
        tracing::info!(host = %key.host, vm = %key.vm, up_kbps = limit.upload_kbps,
            down_kbps = limit.download_kbps, "rate limit installed");
        Ok(())
    }

    /// Remove a VM's rate limit (record and rules); an absent one is not
    /// an error, and costs no nft run (engines lift limits on every update
    /// without speeds). The record comes back when nft fails.
    pub async fn remove_rate_limit(
        &self,
        store: &Store,
        scope: &HostScope,
        vm: &str,
    ) -> Result<(), PluginError> {
        let (nft, changes) = self.ready()?;
        let key = scope::rate_key(scope, vm)?;
        let _change = changes.lock().await;
        let Some(previous) = store
            .rate_limit_delete(&key.host, &key.vm)
            .map_err(unrecorded)?
        else {
            return Ok(());
        };
        let applied = async {
            let live = nft.read().await?;
            let mut batch = Batch::new(nft.table());
            for rule in live.rate_rules_of(&key) {
                batch.delete_rule(&rule.chain, rule.handle);
            }
            if !batch.is_empty() {
                nft.apply(&batch.to_json()).await?;
            }
            Ok::<(), NatError>(())
        }
        .await;
        if let Err(error) = applied {
            restore_record(store, &key, Some(previous));
            return Err(error.into());
        }
        tracing::info!(host = %key.host, vm = %key.vm, "rate limit removed");
        Ok(())
    }

    /// The host's forwards live in the prerouting chain, by id.
    pub async fn list_rules(&self, scope: &HostScope) -> Result<Vec<PortForward>, PluginError> {
        let (nft, _) = self.ready()?;
        let host = scope::check_host_name(&scope.name)?;
        // No lock: nft applies each batch atomically, so a read sees the
        // table before or after a change, never in between.
        let live = nft.read().await?;
        let mut forwards: Vec<PortForward> = live
            .forwards()
            .filter_map(|(key, forward)| {
                key.filter(|key| key.host == host).map(|key| (key, forward))
            })
            .map(|(key, forward)| PortForward {
                id: key.id,
                protocol: scope::wit_protocol(forward.protocol),
                public_port: forward.public_port,
                target_addr: forward.target.to_string(),
                target_port: forward.target_port,
            })
            .collect();
        forwards.sort_by_key(|forward| forward.id);
        Ok(forwards)
    }

    /// Rebuild the whole table from the database's forwards and rate limits
    /// in one batch (at start and on `loader`, so a reboot or a flushed
    /// ruleset loses nothing). Those that fail their host's scope are
    /// skipped and reported. Without `[nat]`, an empty list is trivially in place and any
    /// other is [`NatError::NotConfigured`].
    pub async fn reconcile(
        &self,
        forwards: Vec<(Arc<HostScope>, PortForward)>,
        limits: Vec<(Arc<HostScope>, RateLimitRecord)>,
    ) -> Result<ReconcileReport, NatError> {
        let (nft, changes) = match self.ready() {
            Err(NatError::NotConfigured) if forwards.is_empty() && limits.is_empty() => {
                return Ok(ReconcileReport::default());
            }
            answer => answer?,
        };
        let mut report = ReconcileReport::default();
        let wanted = wanted_forwards(&forwards, &mut report.skipped);
        for (id, reason) in &report.skipped {
            tracing::warn!(id, %reason, "port forward skipped by reconcile");
        }
        let mut police: Vec<(RateKey, Vec<Police>)> = Vec::with_capacity(limits.len());
        for (scope, record) in &limits {
            match scope::checked_rate_limit(scope, &RateLimit::from(record)) {
                Ok(checked) => police.push(checked),
                Err(refusal) => {
                    let reason = describe_error(&refusal);
                    tracing::warn!(vm = %record.vm_uuid, %reason, "rate limit skipped by reconcile");
                    report.skipped_limits.push((record.vm_uuid.clone(), reason));
                }
            }
        }
        report.limits = police.len();

        let _change = changes.lock().await;
        let live = nft.read().await?;
        let live_forwards: HashMap<&RuleKey, &Forward> = live
            .forwards()
            .filter_map(|(key, forward)| key.map(|key| (key, forward)))
            .collect();
        report.added = wanted
            .iter()
            .filter(|(key, forward)| live_forwards.get(key) != Some(&forward))
            .count();
        let wanted_keys: HashSet<&RuleKey> = wanted.iter().map(|(key, _)| key).collect();
        report.removed = live
            .keys()
            .into_iter()
            .filter(|key| !wanted_keys.contains(key))
            .count()
            + live.strays();
        // Rate limits live but no longer recorded (their VM went while the
        // server was down, or written by hand with our tag).
        let wanted_limits: HashSet<&RateKey> = police.iter().map(|(key, _)| key).collect();
        report.removed += live
            .police()
            .map(|(key, _)| key)
            .filter(|key| !wanted_limits.contains(key))
            .collect::<HashSet<_>>()
            .len();

        nft.apply(&reconcile_batch(nft.table(), &wanted, &police).to_json())
            .await?;
        tracing::info!(
            added = report.added,
            removed = report.removed,
            skipped = report.skipped.len(),
            limits = report.limits,
            "port forwards and rate limits reconciled"
        );
        Ok(report)
    }
}

/// The forwards of a reconcile that pass their scope, without duplicate ids
/// or overlapping public ports (the first one wins); the rest into `skipped`.
fn wanted_forwards(
    forwards: &[(Arc<HostScope>, PortForward)],
    skipped: &mut Vec<(u64, String)>,
) -> Vec<(RuleKey, Forward)> {
    let mut wanted: Vec<(RuleKey, Forward)> = Vec::with_capacity(forwards.len());
    let mut seen = HashSet::new();
    // Overlap needs the same protocol and port: index by them.
    let mut by_port: HashMap<(ruleset::Proto, u16), Vec<usize>> = HashMap::new();
    for (scope, forward) in forwards {
        let (key, rule) = match scope::checked(scope, forward) {
            Ok(checked) => checked,
            Err(refusal) => {
                skipped.push((forward.id, describe_error(&refusal)));
                continue;
            }
        };
        if seen.contains(&key) {
            skipped.push((forward.id, format!("{key} is listed twice")));
            continue;
        }
        let same_port = by_port
            .entry((rule.protocol, rule.public_port))
            .or_default();
        if let Some(&earlier) = same_port
            .iter()
            .find(|&&index| wanted[index].1.overlaps(&rule))
        {
            skipped.push((
                forward.id,
                format!(
                    "{} port {} is already forwarded by {}",
                    rule.protocol.as_str(),
                    rule.public_port,
                    wanted[earlier].0
                ),
            ));
            continue;
        }
        same_port.push(wanted.len());
        seen.insert(key.clone());
        wanted.push((key, rule));
    }
    wanted
}

/// The one batch of a reconcile: the table from scratch with every forward
/// and every rate limit.
fn reconcile_batch<'t>(
    table: &'t str,
    wanted: &[(RuleKey, Forward)],
    limits: &[(RateKey, Vec<Police>)],
) -> Batch<'t> {
    let mut batch = Batch::new(table);
    batch.recreate_table();
    batch.add_established();
    for (key, forward) in wanted {
        batch.add_forward(key, forward);
    }
    for (key, rules) in limits {
        batch.add_police(key, rules);
    }
    batch
}

impl From<&RateLimitRecord> for RateLimit {
    fn from(record: &RateLimitRecord) -> RateLimit {
        RateLimit {
            vm_uuid: record.vm_uuid.clone(),
            addresses: record.addresses.clone(),
            upload_kbps: record.upload_kbps,
            download_kbps: record.download_kbps,
        }
    }
}

/// Put a VM's rate limit record back as it was before a change nft then
/// refused: the previous one, or none.
fn restore_record(store: &Store, key: &RateKey, previous: Option<RateLimitRecord>) {
    let restored = match previous {
        Some(previous) => store.rate_limit_put(&previous).map(drop),
        None => store.rate_limit_delete(&key.host, &key.vm).map(drop),
    };
    if let Err(error) = restored {
        tracing::error!(vm = %key.vm, "cannot put back the rate limit record: {error}");
    }
}

/// A rate limit the database could not record is not installed: a
/// reconcile would drop it.
fn unrecorded(error: crate::store::StoreError) -> PluginError {
    PluginError::Failed(format!("cannot record the rate limit: {error}"))
}

fn not_configured() -> PluginError {
    PluginError::Unsupported(
        "port forwarding is not configured on this server ([nat] section)".to_owned(),
    )
}

/// Per-call state: the service, the store its rate limits are recorded
/// in, and the host the call is for.
pub struct NatCall {
    service: Arc<NatService>,
    store: Arc<Store>,
    host: Option<Arc<HostScope>>,
}

type Answer<T> = Result<T, CapError>;

impl NatCall {
    pub fn new(
        service: Arc<NatService>,
        store: Arc<Store>,
        host: Option<Arc<HostScope>>,
    ) -> NatCall {
        NatCall {
            service,
            store,
            host,
        }
    }

    /// The host the call is for, once the service is usable at all (an
    /// unconfigured server answers `unsupported` whatever the call).
    fn scope(&self) -> Result<Arc<HostScope>, PluginError> {
        self.service.ready()?;
        self.host.clone().ok_or_else(no_host)
    }
}

impl Host for NatCall {
    async fn add_rule(&mut self, forward: PortForward) -> Answer<()> {
        let scope = self.scope()?;
        Ok(self.service.add_rule(&scope, forward).await?)
    }

    async fn remove_rule(&mut self, id: u64) -> Answer<()> {
        let scope = self.scope()?;
        Ok(self.service.remove_rule(&scope, id).await?)
    }

    async fn list_rules(&mut self) -> Answer<Vec<PortForward>> {
        let scope = self.scope()?;
        Ok(self.service.list_rules(&scope).await?)
    }

    async fn set_rate_limit(&mut self, limit: RateLimit) -> Answer<()> {
        let scope = self.scope()?;
        Ok(self
            .service
            .set_rate_limit(&self.store, &scope, limit)
            .await?)
    }

    async fn remove_rate_limit(&mut self, vm_uuid: String) -> Answer<()> {
        let scope = self.scope()?;
        Ok(self
            .service
            .remove_rate_limit(&self.store, &scope, &vm_uuid)
            .await?)
    }
}
