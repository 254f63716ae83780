//! `openidcs:engine/libvirt`: libvirt, scoped to the host the call is for.
//!
//! Owns one libvirt connection per host for the server's life (opened on
//! first use for the host's URI, re-opened when that URI changes or the
//! connection breaks), the scope checks of every call, and the `Host` impl of
//! the WIT interface. Scope comes from [`HostScope`], never from arguments:
//!
//! - only the host's own URI is opened, and only `test`, `qemu`, `qemu+ssh`,
//!   `qemu+tls` and `lxc` schemes;
//! - domain and device XML pass [`xml_check`] before libvirt sees them (no
//!   driver namespaces such as `<qemu:commandline>`, no `<hostdev>` unless the
//!   host allows it, no network disks, host paths only under the storage
//!   directory, no `<script>`, no `<seclabel>` override, known emulators only);
//! - domains and volumes are only touched when their name passes the name
//!   rule (`[A-Za-z0-9_.-]{1,64}`, starting with the host's prefix), so a
//!   plugin cannot see or touch other domains of a shared hypervisor;
//! - volumes live only in the storage pool whose target is the storage
//!   directory; DHCP bindings only for addresses inside the host's VM networks.
//!
//! It never blocks the reactor (every libvirt call runs on a blocking thread),
//! never passes a password to a plugin, and never opens a URI a plugin chose.

mod convert;
mod ffi;
#[cfg(test)]
mod tests;
mod xml_check;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use virt::connect::Connect;
use virt::domain::Domain as VirtDomain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::network::Network;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use super::{CapError, HostScope, no_host};
use crate::model::rules::{self, UriPolicy};
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::PowerState;
use crate::plugin::bindings::openidcs::engine::libvirt::{
    Domain, DomainStats, Host, ImageVolume, LifecycleOp, NodeSummary,
};
use convert::Fail;
use xml_check::{check_name, clean_absolute, shown, valid_name};

const MIB: u64 = 1024 * 1024;
/// The bulk statistics all-domain-stats asks for, in its one call.
const DOMAIN_STATS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

/// An open connection and the URI it was opened for.
struct Connection {
    uri: String,
    connect: Connect,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // `virt` 0.4.3's Connect has no Drop: without this the socket (and a
        // test driver's whole state) would leak.
        if let Err(error) = self.connect.close() {
            tracing::debug!(uri = %self.uri, %error, "closing libvirt connection failed");
        }
    }
}

/// The shared libvirt service: one connection per host name.
pub struct LibvirtService {
    // `virt::connect::Connect` is Send + Sync (libvirt connections are
    // thread-safe), so one connection serves concurrent calls of a host.
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// The config's `[libvirt]` rules for host URIs, checked again at every
    /// connection: a URI reaches libvirt only as the API would take it.
    policy: parking_lot::RwLock<UriPolicy>,
}

impl LibvirtService {
    /// Apply the config's `[libvirt]` rules (at start and at every reload).
    pub fn set_policy(&self, policy: UriPolicy) {
        *self.policy.write() = policy;
    }

    pub fn new() -> LibvirtService {
        // libvirt's default error handler prints every error to stderr; errors
        // are answered to the engine instead.
        virt::error::clear_error_callback();
        LibvirtService {
            connections: Mutex::new(HashMap::new()),
            policy: parking_lot::RwLock::new(UriPolicy::default()),
        }
    }

    /// Forget the host's connection (host deleted or its URI edited); it
    /// closes once calls still using it finish.
    pub fn close_host(&self, host_name: &str) {
        let removed = self.lock().remove(host_name);
        if let Some(connection) = removed {
            release(connection);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Connection>>> {
        // No poisoning to recover from: the map stays consistent even if a
        // holder panicked, as every update is one insert or remove.
        self.connections.lock()
    }

    /// The host's connection, opened now if there is none or its URI changed.
    /// Blocking: call from a blocking thread.
    fn connection(&self, scope: &HostScope) -> Result<Arc<Connection>, Fail> {
        check_uri(&scope.uri, &self.policy.read())?;
        if let Some(connection) = self.lock().get(&scope.name)
            && connection.uri == scope.uri
        {
            return Ok(connection.clone());
        }
        // Opened outside the lock: a slow remote host must not stall the others.
        let opened = Arc::new(Connection {
            uri: scope.uri.clone(),
            connect: Connect::open(Some(&scope.uri))?,
        });
        let mut connections = self.lock();
        if let Some(existing) = connections.get(&scope.name)
            && existing.uri == scope.uri
        {
            // Another call opened one meanwhile: keep that one (a test
            // driver's state may live in it) and close ours.
            return Ok(existing.clone());
        }
        let replaced = connections.insert(scope.name.clone(), opened.clone());
        drop(connections);
        drop(replaced);
        Ok(opened)
    }

    /// Drop the host's connection if it is still `failed`.
    fn evict(&self, host_name: &str, failed: &Arc<Connection>) {
        let mut connections = self.lock();
        if connections
            .get(host_name)
            .is_some_and(|current| Arc::ptr_eq(current, failed))
        {
            connections.remove(host_name);
        }
    }

    /// Run `operation` on the host's connection; when the connection turns
    /// out to be broken, re-open it and try once more. Blocking.
    fn with_connection<T>(
        &self,
        scope: &HostScope,
        operation: impl Fn(&Connect) -> Result<T, Fail>,
    ) -> Result<T, PluginError> {
        let mut retried = false;
        loop {
            let connection = self.connection(scope).map_err(Fail::into_plugin_error)?;
            match operation(&connection.connect) {
                Err(Fail::Libvirt(error)) if !retried && convert::is_connection_error(&error) => {
                    tracing::warn!(host = %scope.name, %error, "libvirt connection broken; re-opening");
                    self.evict(&scope.name, &connection);
                    retried = true;
                }
                answer => return answer.map_err(Fail::into_plugin_error),
            }
        }
    }
}

impl Default for LibvirtService {
    fn default() -> Self {
        LibvirtService::new()
    }
}

/// Drop a connection off the reactor: closing a remote one is a round trip.
fn release(connection: Arc<Connection>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(connection));
        }
        Err(_) => drop(connection),
    }
}

/// Only the host's configured URI, and only in a form the API takes
/// ([`rules::check_host_uri`] under the config's `[libvirt]` rules): a host
/// row that got past the API some other way still cannot make libvirt run a
/// program or read a file.
fn check_uri(uri: &str, policy: &UriPolicy) -> Result<(), PluginError> {
    if uri.is_empty() {
        return Err(PluginError::Denied("host has no server_addr".to_owned()));
    }
    rules::check_host_uri("server_addr", uri, policy, false)
        .map_err(|invalid| PluginError::Denied(invalid.to_string()))
}

/// Per-call state: the service and the host the call is for.
pub struct LibvirtCall {
    service: Arc<LibvirtService>,
    host: Option<Arc<HostScope>>,
}

type Answer<T> = Result<T, CapError>;

impl LibvirtCall {
    pub fn new(service: Arc<LibvirtService>, host: Option<Arc<HostScope>>) -> LibvirtCall {
        LibvirtCall { service, host }
    }

    fn scope(&self) -> Result<&HostScope, PluginError> {
        self.host.as_deref().ok_or_else(no_host)
    }

    /// Run `operation` with the host's connection on a blocking thread.
    /// A refusal or libvirt error is answered to the engine; only a panic in
    /// the worker (a host bug) becomes a trap.
    async fn run<T, F>(&self, operation: F) -> Answer<T>
    where
        T: Send + 'static,
        F: Fn(&Connect, &HostScope) -> Result<T, Fail> + Send + 'static,
    {
        let scope = self.host.clone().ok_or_else(no_host)?;
        let service = self.service.clone();
        let worker = tokio::task::spawn_blocking(move || {
            service.with_connection(&scope, |connect| operation(connect, &scope))
        });
        match worker.await {
            Ok(answer) => Ok(answer?),
            Err(error) => Err(CapError::trap(anyhow::anyhow!(
                "libvirt worker failed: {error}"
            ))),
        }
    }

    /// The name rule for a domain the plugin names.
    fn domain_in_scope(&self, name: &str) -> Result<(), PluginError> {
        check_name("domain", name, &self.scope()?.name_prefix)
    }

    /// The scope checks of a volume call: a storage directory, the name rule,
    /// and a size in bytes.
    fn volume_in_scope(&self, name: &str, capacity_mb: Option<u64>) -> Result<u64, PluginError> {
        let scope = self.scope()?;
        if scope.storage_dir.is_empty() {
            return Err(PluginError::Denied(
                "host has no storage directory".to_owned(),
            ));
        }
        check_name("volume", name, &scope.name_prefix)?;
        let Some(capacity_mb) = capacity_mb else {
            return Ok(0);
        };
        if capacity_mb == 0 {
            return Err(PluginError::Invalid(
                "a volume needs at least 1 MB".to_owned(),
            ));
        }
        capacity_mb
            .checked_mul(MIB)
            .ok_or_else(|| PluginError::Invalid(format!("{capacity_mb} MB is too large")))
    }

    /// Image calls need the host's image storage.
    fn images_in_scope(&self) -> Result<(), PluginError> {
        if self.scope()?.images.is_empty() {
            return Err(PluginError::Denied(
                "host has no images_path (image storage)".to_owned(),
            ));
        }
        Ok(())
    }

    /// The checks of a DHCP binding: network name, MAC, and an address
    /// inside the host's VM networks.
    fn dhcp_in_scope(
        &self,
        network: &str,
        mac: &str,
        ip: &str,
    ) -> Result<(String, std::net::IpAddr), PluginError> {
        let scope = self.scope()?;
        network_name(network)?;
        let mac = convert::parse_mac(mac)?;
        let ip = convert::parse_ip(ip)?;
        if !scope.in_vm_networks(ip) {
            return Err(PluginError::Denied(format!(
                "address {ip} is outside the host's VM networks"
            )));
        }
        Ok((mac, ip))
    }
}

/// The largest volume `upload-volume` writes (a first-boot seed is 1 MiB).
const MAX_UPLOAD_BYTES: usize = 16 << 20;

/// The host's image storage: the pool whose directory `images` is, or the
/// pool named `images`.
fn images_pool(connect: &Connect, images: &str) -> Result<StoragePool, Fail> {
    let pool = if images.starts_with('/') {
        pool_at(connect, images)?
    } else {
        StoragePool::lookup_by_name(connect, images).ok()
    };
    pool.ok_or_else(|| {
        Fail::Refused(PluginError::Failed(format!(
            "no libvirt storage pool of this host is {} (the host's images_path)",
            shown(images)
        )))
    })
}

/// The `<target><format type=…>` of a volume's XML (`raw` when absent).
fn volume_format(xml: &str) -> String {
    roxmltree::Document::parse(xml)
        .ok()
        .and_then(|document| {
            document
                .root_element()
                .children()
                .find(|node| node.has_tag_name("target"))?
                .children()
                .find(|node| node.has_tag_name("format"))?
                .attribute("type")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "raw".to_owned())
}

/// `$6$[rounds=N$]salt$hash` with crypt's alphabet: what `sha512_crypt`
/// makes, and nothing a plain password is likely to be.
pub fn is_sha512_crypt(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("$6$") else {
        return false;
    };
    let rest = rest
        .strip_prefix("rounds=")
        .and_then(|rounds| rounds.split_once('$').map(|(_, rest)| rest))
        .unwrap_or(rest);
    let crypt_alphabet = |part: &str| {
        part.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"./".contains(&byte))
    };
    matches!(rest.split_once('$'), Some((salt, hash))
        if !salt.is_empty() && salt.len() <= 16 && hash.len() == 86
            && crypt_alphabet(salt) && crypt_alphabet(hash))
}

/// Network names pass the same character rule as domain names.
fn network_name(network: &str) -> Result<(), PluginError> {
    if valid_name(network) {
        Ok(())
    } else {
        Err(PluginError::Invalid(format!(
            "network name {} is not a libvirt network name",
            shown(network)
        )))
    }
}

/// A domain as the WIT describes it.
fn describe(domain: &VirtDomain) -> Result<Domain, Fail> {
    let (state, _reason) = domain.get_state()?;
    Ok(Domain {
        name: domain.get_name()?,
        uuid: domain.get_uuid_string()?,
        state: convert::power_state(u64::from(state)),
    })
}

fn power_of(domain: &VirtDomain) -> Result<PowerState, Fail> {
    let (state, _reason) = domain.get_state()?;
    Ok(convert::power_state(u64::from(state)))
}

/// Look a domain up by a name already checked against the name rule.
fn lookup_domain(connect: &Connect, name: &str) -> Result<VirtDomain, Fail> {
    Ok(VirtDomain::lookup_by_name(connect, name)?)
}

/// The storage pool whose target path is `storage_dir`, among all pools of
/// the connection (`virStoragePoolLookupByTargetPath` is missing in some
/// drivers, the test driver among them).
fn pool_at(connect: &Connect, storage_dir: &str) -> Result<Option<StoragePool>, Fail> {
    let Some(wanted) = clean_absolute(storage_dir) else {
        return Ok(None);
    };
    for pool in connect.list_all_storage_pools(0)? {
        let xml = pool.get_xml_desc(0)?;
        let Ok(document) = roxmltree::Document::parse(&xml) else {
            continue;
        };
        let target = document
            .root_element()
            .children()
            .find(|node| node.has_tag_name("target"))
            .and_then(|target| target.children().find(|node| node.has_tag_name("path")))
            .and_then(|path| path.text());
        if target
            .and_then(|path| clean_absolute(path.trim()))
            .is_some_and(|path| path == wanted)
        {
            return Ok(Some(pool));
        }
    }
    Ok(None)
}

/// The host's storage pool, where no volume `name` is yet (`conflict` when
/// one is).
fn storage_pool_without(
    connect: &Connect,
    storage_dir: &str,
    name: &str,
) -> Result<StoragePool, Fail> {
    let pool = storage_pool(connect, storage_dir)?;
    if StorageVol::lookup_by_name(&pool, name).is_ok() {
        return Err(Fail::Refused(PluginError::Conflict(format!(
            "volume {} already exists in the host's storage",
            shown(name)
        ))));
    }
    Ok(pool)
}

fn storage_pool(connect: &Connect, storage_dir: &str) -> Result<StoragePool, Fail> {
    pool_at(connect, storage_dir)?.ok_or_else(|| {
        Fail::Refused(PluginError::Failed(format!(
            "no libvirt storage pool of this host has the target path {} (the host's storage directory)",
            shown(storage_dir)
        )))
    })
}

/// Undefine, removing what libvirt keeps beside the definition (managed
/// save, snapshot/checkpoint metadata, NVRAM) with as many of those flags as
/// the driver supports; an unsupported flag changes nothing, so retrying is safe.
fn undefine(domain: &VirtDomain) -> Result<(), Fail> {
    let everything = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
    let basic = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
    for flags in [everything, basic] {
        match domain.undefine_flags(flags) {
            Err(error)
                if matches!(
                    error.code(),
                    ErrorNumber::InvalidArg | ErrorNumber::NoSupport
                ) => {}
            answer => return Ok(answer?),
        }
    }
    Ok(domain.undefine()?)
}

/// Refuse (conflict) an operation the domain's state does not allow, before
/// libvirt does: some drivers report that as an internal error.
fn check_lifecycle(op: LifecycleOp, state: PowerState, name: &str) -> Result<(), Fail> {
    let allowed = match op {
        LifecycleOp::Start => !matches!(state, PowerState::Running | PowerState::Paused),
        LifecycleOp::Shutdown | LifecycleOp::Reboot | LifecycleOp::Reset | LifecycleOp::Suspend => {
            matches!(state, PowerState::Running)
        }
        LifecycleOp::Destroy => !matches!(state, PowerState::Stopped),
        LifecycleOp::Resume => matches!(state, PowerState::Paused),
    };
    if allowed {
        Ok(())
    } else {
        Err(Fail::Refused(PluginError::Conflict(format!(
            "domain {name} is {}; {op:?} does not apply",
            state.as_str()
        ))))
    }
}

/// How a persistent-only device change is made by redefinition instead.
type DefinitionEdit = fn(&str, &str) -> Result<String, Fail>;

#[derive(Clone, Copy)]
enum DeviceChange {
    Attach,
    Detach,
    Update,
}

impl LibvirtCall {
    /// Attach, detach or update a checked device; a driver without
    /// hot-plug takes a persistent-only attach or detach as a redefinition
    /// of the inactive XML (an update it cannot do is answered as it is).
    async fn change_device(
        &self,
        domain: String,
        xml: String,
        live: bool,
        change: DeviceChange,
    ) -> Answer<()> {
        self.domain_in_scope(&domain)?;
        xml_check::check_device_xml(&xml, self.scope()?)?;
        self.run(move |connect, scope| {
            let target = lookup_domain(connect, &domain)?;
            let flags = device_flags(&target, live)?;
            let (answer, redefinition): (_, Option<DefinitionEdit>) = match change {
                DeviceChange::Attach => {
                    (target.attach_device_flags(&xml, flags), Some(insert_device))
                }
                DeviceChange::Detach => (
                    target.detach_device_flags(&xml, flags),
                    Some(remove_interface),
                ),
                DeviceChange::Update => (target.update_device_flags(&xml, flags), None),
            };
            match (answer, redefinition) {
                (Err(error), Some(edit))
                    if persistent_only(&target, flags) && unsupported(&error) =>
                {
                    redefine_with(connect, &target, scope, |definition| edit(definition, &xml))
                }
                (answer, _) => Ok(answer.map(|_| ())?),
            }
        })
        .await
    }
}

/// The change touches only the persistent definition (the domain is not
/// running, or the caller did not ask for a live change).
fn persistent_only(domain: &VirtDomain, flags: u32) -> bool {
    flags & sys::VIR_DOMAIN_AFFECT_LIVE == 0 && domain.is_persistent().unwrap_or(false)
}

fn unsupported(error: &VirtError) -> bool {
    matches!(
        error.code(),
        ErrorNumber::NoSupport
            | ErrorNumber::ArgumentUnsupported
            | ErrorNumber::OperationUnsupported
    )
}

/// Drivers without device hot-plug (libvirt's test driver) still take a
/// persistent device change as a redefinition: edit the inactive XML, check
/// the whole domain again, define it.
fn redefine_with(
    connect: &Connect,
    domain: &VirtDomain,
    scope: &HostScope,
    edit: impl FnOnce(&str) -> Result<String, Fail>,
) -> Result<(), Fail> {
    let flags = sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE;
    let definition = domain.get_xml_desc(flags)?;
    let edited = edit(&definition)?;
    xml_check::check_domain_xml(&edited, scope)?;
    VirtDomain::define_xml_flags(connect, &edited, sys::VIR_DOMAIN_DEFINE_VALIDATE)?;
    Ok(())
}

/// `device` appended to the domain's `<devices>`.
fn insert_device(definition: &str, device: &str) -> Result<String, Fail> {
    let position = definition.rfind("</devices>").ok_or_else(|| {
        Fail::Refused(PluginError::Invalid(
            "the domain has no <devices> element".to_owned(),
        ))
    })?;
    Ok(format!(
        "{}{device}{}",
        &definition[..position],
        &definition[position..]
    ))
}

/// The domain without the `<interface>` whose MAC is the one in `device`.
fn remove_interface(definition: &str, device: &str) -> Result<String, Fail> {
    let invalid = |message: String| Fail::Refused(PluginError::Invalid(message));
    let parsed = roxmltree::Document::parse(device)
        .map_err(|error| invalid(format!("device XML: {error}")))?;
    let mac_of = |node: roxmltree::Node| {
        node.children()
            .find(|child| child.has_tag_name("mac"))
            .and_then(|mac| mac.attribute("address"))
            .map(str::to_ascii_lowercase)
    };
    let wanted = mac_of(parsed.root_element()).ok_or_else(|| {
        invalid("only an <interface> with a <mac address> can be detached here".to_owned())
    })?;
    let document = roxmltree::Document::parse(definition)
        .map_err(|error| invalid(format!("domain XML: {error}")))?;
    let found = document
        .descendants()
        .find(|node| {
            node.has_tag_name("interface") && mac_of(*node).as_deref() == Some(wanted.as_str())
        })
        .ok_or_else(|| {
            Fail::Refused(PluginError::NotFound(format!(
                "no interface with MAC {wanted}"
            )))
        })?;
    let range = found.range();
    Ok(format!(
        "{}{}",
        &definition[..range.start],
        &definition[range.end..]
    ))
}

/// Flags of a device change: the persistent definition when there is one,
/// the running domain when asked and running.
fn device_flags(domain: &VirtDomain, live: bool) -> Result<u32, Fail> {
    let mut flags = 0;
    if domain.is_persistent()? {
        flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    if live && domain.is_active()? {
        flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    if flags == 0 {
        return Err(Fail::Refused(PluginError::Invalid(
            "the domain is transient; only a live change is possible".to_owned(),
        )));
    }
    Ok(flags)
}

/// Apply a DHCP host change to the persistent and (when running) live
/// network; a driver that cannot change the live network gets config only.
fn update_dhcp(
    network: &Network,
    command: sys::virNetworkUpdateCommand,
    xml: &str,
) -> Result<(), Fail> {
    let persistent = network.is_persistent()?;
    let mut flags = 0;
    if persistent {
        flags |= sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
    }
    if network.is_active()? {
        flags |= sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
    }
    let section = sys::VIR_NETWORK_SECTION_IP_DHCP_HOST;
    match network.update(command, section, -1, xml, flags) {
        Err(error)
            if persistent
                && flags & sys::VIR_NETWORK_UPDATE_AFFECT_LIVE != 0
                && matches!(
                    error.code(),
                    ErrorNumber::NoSupport
                        | ErrorNumber::ArgumentUnsupported
                        | ErrorNumber::OperationUnsupported
                ) =>
        {
            Ok(network.update(
                command,
                section,
                -1,
                xml,
                sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG,
            )?)
        }
        answer => Ok(answer?),
    }
}

impl Host for LibvirtCall {
    async fn list_domains(&mut self) -> Answer<Vec<Domain>> {
        // One call for every domain's state (a per-domain virDomainGetState
        // is an RPC each on qemu:///system; 10,000 domains took seconds).
        self.run(|connect, scope| {
            let mut domains = Vec::new();
            for record in ffi::all_domain_stats(connect, sys::VIR_DOMAIN_STATS_STATE)? {
                if check_name("domain", &record.name, &scope.name_prefix).is_err() {
                    continue;
                }
                let state = record
                    .fields
                    .iter()
                    .find(|(field, _)| field == "state.state")
                    .map(|(_, value)| *value)
                    .unwrap_or(0);
                domains.push(Domain {
                    name: record.name,
                    uuid: record.uuid,
                    state: convert::power_state(state),
                });
            }
            Ok(domains)
        })
        .await
    }

    async fn get_domain(&mut self, name: String) -> Answer<Domain> {
        self.domain_in_scope(&name)?;
        self.run(move |connect, _| describe(&lookup_domain(connect, &name)?))
            .await
    }

    async fn domain_xml(&mut self, name: String, inactive: bool) -> Answer<String> {
        self.domain_in_scope(&name)?;
        // SECURE keeps the VNC password in, so that a read-modify-define
        // round trip does not silently drop it.
        let flags = sys::VIR_DOMAIN_XML_SECURE
            | if inactive {
                sys::VIR_DOMAIN_XML_INACTIVE
            } else {
                0
            };
        self.run(move |connect, _| Ok(lookup_domain(connect, &name)?.get_xml_desc(flags)?))
            .await
    }

    async fn define_domain(&mut self, xml: String) -> Answer<Domain> {
        xml_check::check_domain_xml(&xml, self.scope()?)?;
        // VALIDATE: libvirt also checks the XML against its schema, so an
        // element this module does not know about cannot slip through unread.
        self.run(move |connect, _| {
            describe(&VirtDomain::define_xml_flags(
                connect,
                &xml,
                sys::VIR_DOMAIN_DEFINE_VALIDATE,
            )?)
        })
        .await
    }

    async fn undefine_domain(&mut self, name: String) -> Answer<()> {
        self.domain_in_scope(&name)?;
        self.run(move |connect, _| undefine(&lookup_domain(connect, &name)?))
            .await
    }

    async fn lifecycle(&mut self, name: String, op: LifecycleOp) -> Answer<PowerState> {
        self.domain_in_scope(&name)?;
        self.run(move |connect, _| {
            let domain = lookup_domain(connect, &name)?;
            check_lifecycle(op, power_of(&domain)?, &name)?;
            match op {
                LifecycleOp::Start => {
                    domain.create()?;
                }
                LifecycleOp::Shutdown => {
                    domain.shutdown()?;
                }
                LifecycleOp::Destroy => domain.destroy()?,
                LifecycleOp::Reboot => domain.reboot(0)?,
                LifecycleOp::Reset => {
                    domain.reset()?;
                }
                LifecycleOp::Suspend => {
                    domain.suspend()?;
                }
                LifecycleOp::Resume => {
                    domain.resume()?;
                }
            }
            power_of(&domain)
        })
        .await
    }

    async fn all_domain_stats(&mut self) -> Answer<Vec<DomainStats>> {
        self.run(|connect, scope| {
            let records = ffi::all_domain_stats(connect, DOMAIN_STATS)?;
            Ok(records
                .into_iter()
                .filter(|record| check_name("domain", &record.name, &scope.name_prefix).is_ok())
                .map(convert::domain_stats)
                .collect())
        })
        .await
    }

    async fn node_info(&mut self) -> Answer<NodeSummary> {
        self.run(|connect, scope| {
            let node = connect.get_node_info()?;
            // Free memory and CPU times are optional in some drivers: zero then.
            let free_bytes = connect.get_free_memory().unwrap_or(0);
            let (cpu_busy_ns, cpu_idle_ns) = ffi::node_cpu_stats(connect)
                .map(|fields| convert::cpu_busy_idle(&fields))
                .unwrap_or((0, 0));
            let (storage_capacity_bytes, storage_allocation_bytes) =
                match pool_at(connect, &scope.storage_dir)? {
                    Some(pool) => {
                        let info = pool.get_info()?;
                        (info.capacity, info.allocation)
                    }
                    None => (0, 0),
                };
            Ok(NodeSummary {
                hostname: connect.get_hostname()?,
                hypervisor: connect.get_type()?,
                hypervisor_version: convert::version_string(connect.get_hyp_version()?),
                cpus: node.cpus,
                cpu_busy_ns,
                cpu_idle_ns,
                mem_total_kib: node.memory,
                mem_free_kib: free_bytes / 1024,
                storage_capacity_bytes,
                storage_allocation_bytes,
            })
        })
        .await
    }

    async fn create_volume(&mut self, name: String, capacity_mb: u64) -> Answer<String> {
        let bytes = self.volume_in_scope(&name, Some(capacity_mb))?;
        self.run(move |connect, scope| {
            let pool = storage_pool_without(connect, &scope.storage_dir, &name)?;
            // The name passed the name rule, so it needs no escaping.
            let xml = format!(
                "<volume><name>{name}</name><capacity unit='bytes'>{bytes}</capacity>\
                 <allocation unit='bytes'>0</allocation><target><format type='raw'/></target></volume>"
            );
            Ok(StorageVol::create_xml(&pool, &xml, 0)?.get_path()?)
        })
        .await
    }

    async fn resize_volume(&mut self, name: String, capacity_mb: u64) -> Answer<()> {
        let bytes = self.volume_in_scope(&name, Some(capacity_mb))?;
        self.run(move |connect, scope| {
            let volume =
                StorageVol::lookup_by_name(&storage_pool(connect, &scope.storage_dir)?, &name)?;
            let current = volume.get_info()?.capacity;
            if bytes < current {
                return Err(Fail::Refused(PluginError::Invalid(format!(
                    "volume {} has {current} bytes and never shrinks (asked for {bytes})",
                    shown(&name)
                ))));
            }
            if bytes > current {
                volume.resize(bytes, 0)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_volume(&mut self, name: String) -> Answer<()> {
        self.volume_in_scope(&name, None)?;
        self.run(move |connect, scope| {
            let volume =
                StorageVol::lookup_by_name(&storage_pool(connect, &scope.storage_dir)?, &name)?;
            Ok(volume.delete(0)?)
        })
        .await
    }

    async fn attach_device(&mut self, domain: String, xml: String, live: bool) -> Answer<()> {
        self.change_device(domain, xml, live, DeviceChange::Attach)
            .await
    }

    async fn detach_device(&mut self, domain: String, xml: String, live: bool) -> Answer<()> {
        self.change_device(domain, xml, live, DeviceChange::Detach)
            .await
    }

    async fn update_device(&mut self, domain: String, xml: String, live: bool) -> Answer<()> {
        self.change_device(domain, xml, live, DeviceChange::Update)
            .await
    }

    async fn network_xml(&mut self, network: String) -> Answer<String> {
        self.scope()?;
        network_name(&network)?;
        self.run(move |connect, _| Ok(Network::lookup_by_name(connect, &network)?.get_xml_desc(0)?))
            .await
    }

    async fn dhcp_host_add(
        &mut self,
        network: String,
        mac: String,
        ip: String,
        name: String,
    ) -> Answer<()> {
        let (mac, ip) = self.dhcp_in_scope(&network, &mac, &ip)?;
        if !valid_name(&name) {
            return Err(PluginError::Invalid(format!(
                "DHCP host name {} is not [A-Za-z0-9_.-]{{1,64}}",
                shown(&name)
            ))
            .into());
        }
        self.run(move |connect, _| {
            let net = Network::lookup_by_name(connect, &network)?;
            for host in convert::dhcp_hosts(&net.get_xml_desc(0)?)? {
                if host.mac == mac && host.ip == Some(ip) && host.name == name {
                    return Ok(()); // Already bound exactly so: adding again is a no-op.
                }
                if host.mac == mac || host.ip == Some(ip) {
                    return Err(Fail::Refused(PluginError::Conflict(format!(
                        "network {} already has a DHCP entry for MAC {} or address {ip}",
                        shown(&network),
                        shown(&mac)
                    ))));
                }
            }
            update_dhcp(
                &net,
                sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                &convert::dhcp_host_xml(&mac, &ip, &name),
            )
        })
        .await
    }

    async fn list_images(&mut self) -> Answer<Vec<ImageVolume>> {
        self.images_in_scope()?;
        self.run(|connect, scope| {
            let pool = images_pool(connect, &scope.images)?;
            // Files copied into the directory since the pool was last read.
            let _ = pool.refresh(0);
            let mut images = Vec::new();
            for volume in pool.list_all_volumes(0)? {
                let info = volume.get_info()?;
                images.push(ImageVolume {
                    name: volume.get_name()?,
                    path: volume.get_path()?,
                    format: volume_format(&volume.get_xml_desc(0)?),
                    capacity_bytes: info.capacity,
                });
            }
            images.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(images)
        })
        .await
    }

    async fn create_volume_from_image(
        &mut self,
        name: String,
        image: String,
        capacity_mb: u64,
        linked: bool,
    ) -> Answer<String> {
        let bytes = self.volume_in_scope(&name, Some(capacity_mb))?;
        self.images_in_scope()?;
        if !valid_name(&image) {
            return Err(PluginError::Invalid(format!(
                "image name {} is not a volume name",
                shown(&image)
            ))
            .into());
        }
        self.run(move |connect, scope| {
            let source = StorageVol::lookup_by_name(&images_pool(connect, &scope.images)?, &image)
                .map_err(|_| {
                    Fail::Refused(PluginError::NotFound(format!(
                        "image {} is not in the host's image storage",
                        shown(&image)
                    )))
                })?;
            let pool = storage_pool_without(connect, &scope.storage_dir, &name)?;
            let source_bytes = source.get_info()?.capacity;
            let capacity = bytes.max(source_bytes);
            // The name passed the name rule; the image's path comes from
            // libvirt and is escaped.
            let volume = if linked {
                let xml = format!(
                    "<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>\
                     <target><format type='qcow2'/></target><backingStore><path>{}</path>\
                     <format type='{}'/></backingStore></volume>",
                    convert::escape(&source.get_path()?),
                    volume_format(&source.get_xml_desc(0)?)
                );
                StorageVol::create_xml(&pool, &xml, 0)?
            } else {
                let xml = format!(
                    "<volume><name>{name}</name><capacity unit='bytes'>{source_bytes}</capacity>\
                     <target><format type='qcow2'/></target></volume>"
                );
                StorageVol::create_xml_from(&pool, &xml, &source, 0)?
            };
            if volume.get_info()?.capacity < capacity
                && let Err(error) = volume.resize(capacity, 0)
            {
                let _ = volume.delete(0);
                return Err(error.into());
            }
            Ok(volume.get_path()?)
        })
        .await
    }

    async fn upload_volume(&mut self, name: String, content: Vec<u8>) -> Answer<String> {
        if content.is_empty() || content.len() > MAX_UPLOAD_BYTES {
            return Err(PluginError::Invalid(format!(
                "an uploaded volume holds 1 byte to {} MiB, not {} bytes",
                MAX_UPLOAD_BYTES / MIB as usize,
                content.len()
            ))
            .into());
        }
        self.volume_in_scope(&name, Some((content.len() as u64).div_ceil(MIB)))?;
        self.run(move |connect, scope| {
            let pool = storage_pool_without(connect, &scope.storage_dir, &name)?;
            let length = content.len() as u64;
            let xml = format!(
                "<volume><name>{name}</name><capacity unit='bytes'>{length}</capacity>\
                 <target><format type='raw'/></target></volume>"
            );
            let volume = StorageVol::create_xml(&pool, &xml, 0)?;
            let written = (|| -> Result<(), VirtError> {
                let stream = Stream::new(connect, 0)?;
                volume.upload(&stream, 0, length, 0)?;
                let mut rest = content.as_slice();
                while !rest.is_empty() {
                    let sent = stream.send(rest)?;
                    rest = &rest[sent.min(rest.len())..];
                }
                stream.finish()
            })();
            match written {
                // libvirt's test driver keeps no volume contents, so it has
                // no upload; its volumes are as empty as every other.
                Err(error) if scope.uri.starts_with("test:") && unsupported(&error) => {}
                Err(error) => {
                    let _ = volume.delete(0);
                    return Err(error.into());
                }
                Ok(()) => {}
            }
            Ok(volume.get_path()?)
        })
        .await
    }

    async fn guest_set_password(
        &mut self,
        domain: String,
        user: String,
        crypt_hash: String,
    ) -> Answer<()> {
        self.domain_in_scope(&domain)?;
        let user_ok = !user.is_empty()
            && user.len() <= 32
            && user
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"_-.".contains(&byte));
        if !user_ok {
            return Err(
                PluginError::Invalid(format!("user {} is not a user name", shown(&user))).into(),
            );
        }
        // Only hashes cross this door, so a password is never handed to
        // libvirt (or its logs) in plain text.
        if !is_sha512_crypt(&crypt_hash) {
            return Err(PluginError::Invalid(
                "the password must be a SHA-512 crypt hash ($6$…)".to_owned(),
            )
            .into());
        }
        self.run(move |connect, _| {
            let target = lookup_domain(connect, &domain)?;
            target
                .set_user_password(&user, &crypt_hash, sys::VIR_DOMAIN_PASSWORD_ENCRYPTED)
                .map_err(|error| {
                    Fail::Refused(PluginError::Failed(format!(
                        "the guest agent of {domain} did not set the password: {}",
                        error.message()
                    )))
                })?;
            Ok(())
        })
        .await
    }

    async fn domain_capabilities(&mut self) -> Answer<String> {
        self.run(|connect, _| {
            Ok(connect.get_domain_capabilities(None, None, None, Some("kvm"), 0)?)
        })
        .await
    }

    async fn try_domain(&mut self, xml: String) -> Answer<()> {
        let name = xml_check::check_domain_xml(&xml, self.scope()?)?;
        self.run(move |connect, _| {
            if VirtDomain::lookup_by_name(connect, &name).is_ok() {
                return Err(Fail::Refused(PluginError::Conflict(format!(
                    "a domain named {} exists; a probe needs a free name",
                    shown(&name)
                ))));
            }
            let domain = VirtDomain::create_xml(connect, &xml, sys::VIR_DOMAIN_START_AUTODESTROY)?;
            // Gone at once; AUTODESTROY covers a failed destroy.
            let _ = domain.destroy();
            Ok(())
        })
        .await
    }

    async fn dhcp_host_remove(&mut self, network: String, mac: String, ip: String) -> Answer<()> {
        let (mac, ip) = self.dhcp_in_scope(&network, &mac, &ip)?;
        self.run(move |connect, _| {
            let net = Network::lookup_by_name(connect, &network)?;
            let hosts = convert::dhcp_hosts(&net.get_xml_desc(0)?)?;
            if !hosts
                .iter()
                .any(|host| host.mac == mac && host.ip == Some(ip))
            {
                return Ok(()); // Removing an absent binding is not an error.
            }
            update_dhcp(
                &net,
                sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
                &convert::dhcp_host_xml(&mac, &ip, ""),
            )
        })
        .await
    }
}
