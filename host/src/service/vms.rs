//! VMs: the operator's configuration (stored) and the hypervisor's truth
//! (through the host's engine). Every mutation here runs inside a task.

use std::sync::Arc;

use super::error::{ErrorKind, ServiceError, ServiceResult};
use super::hosts::{self, Host};
use super::{provision, traffic};
use crate::model::event::{Event, PowerEvent, SampleEvent};
use crate::model::{
    ConsoleUrl, PanelStatus, Patch, PowerAnswer, PowerCommand, PowerStatus, Sample, SampleView,
    ScanAnswer, VmDetail, VmSettings, VmStatusAnswer, VmView, rules,
};
use crate::plugin::bindings::{PowerState, VmInfo, VmSpec};
use crate::state::AppState;
use crate::store::{
    LogLevel, NewLog, NewTask, SampleRecord, StoreError, VmRecord, format_ms, now_ms,
};
use crate::tasks;

/// A VM addressed by an API path: its enabled host and its record.
#[derive(Clone, Debug)]
pub struct VmRef {
    pub host: Host,
    pub record: VmRecord,
}

impl VmRef {
    /// The task record of a mutation of this VM.
    pub fn task(&self, actions: &str) -> NewTask {
        task(actions, &self.host.name, &self.record.vm_uuid)
    }

    pub fn key(&self) -> &str {
        &self.record.vm_uuid
    }
}

/// The task record of a VM mutation.
pub fn task(actions: &str, host: &str, vm_uuid: &str) -> NewTask {
    NewTask {
        actions: actions.to_owned(),
        host: host.to_owned(),
        vm_uuid: vm_uuid.to_owned(),
    }
}

/// The VM `vm` (its key or its libvirt UUID) of the enabled host `host`.
pub fn vm_ref(state: &AppState, host: &str, vm: &str) -> ServiceResult<VmRef> {
    let host = hosts::get_enabled(state, host)?;
    let record = find(state, &host.name, vm)?;
    Ok(VmRef { host, record })
}

/// Find a VM of the host by its key or by its libvirt UUID.
pub fn find(state: &AppState, host: &str, vm: &str) -> ServiceResult<VmRecord> {
    match state.store.vm_get(host, vm) {
        Ok(record) => Ok(record),
        Err(StoreError::NotFound(message)) => state
            .store
            .vm_list(host)?
            .into_iter()
            .find(|record| record.domain_uuid == vm)
            .ok_or(ServiceError::NotFound(message)),
        Err(other) => Err(other.into()),
    }
}

/// A random password for VNC: 8 characters, the most VNC accepts.
fn generate_vnc_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut generator = rand::rng();
    (0..8)
        .map(|_| ALPHABET[generator.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Settings a VM is created or updated with: a VNC password when none is
/// given, and every rule checked.
pub fn checked(mut settings: VmSettings) -> ServiceResult<VmSettings> {
    if settings.vc_pass.is_empty() {
        settings.vc_pass = generate_vnc_password();
    }
    // Panels send their own (longer) password as vc_pass; VNC reads only
    // the first 8 characters, so those are the VNC password.
    if let Some((end, _)) = settings.vc_pass.char_indices().nth(8) {
        settings.vc_pass.truncate(end);
    }
    settings.check()?;
    Ok(settings)
}

pub fn sample_view(record: SampleRecord) -> SampleView {
    let mut sample = record.sample;
    if sample.on_update.is_none() {
        sample.on_update = Some(format_ms(record.created_at).into());
    }
    SampleView {
        sample,
        source: record.source,
    }
}

fn view(record: &VmRecord, info: &VmInfo) -> VmView {
    let mut config = record.config.clone();
    config.hide_password();
    VmView {
        uuid: record.vm_uuid.clone(),
        domain_uuid: info.domain_uuid.clone(),
        config,
        power_status: info.power.into(),
        upload_key: record.upload_key.clone(),
    }
}

/// The VM's power state from its engine; `missing` when the engine does not know it.
pub async fn power_of(
    state: &AppState,
    vm: &VmRef,
) -> ServiceResult<(PowerStatus, Option<VmInfo>)> {
    match state.plugins.vm_get(&vm.host.target(), vm.key()).await {
        Ok(info) => Ok((info.power.into(), Some(info))),
        Err(error) => {
            let error = ServiceError::from(error);
            if error.not_found() {
                Ok((PowerStatus::Missing, None))
            } else {
                Err(error)
            }
        }
    }
}

const DETAIL_HISTORY: u32 = 100;

pub async fn detail(state: &AppState, vm: &VmRef) -> ServiceResult<VmDetail> {
    let (power_status, info) = match power_of(state, vm).await {
        Ok(found) => found,
        Err(_) => (PowerStatus::Unknown, None),
    };
    let record = &vm.record;
    let status = state
        .store
        .sample_history(&record.host, &record.vm_uuid, 0, DETAIL_HISTORY)?
        .into_iter()
        .map(sample_view)
        .collect();
    let mut config = record.config.clone();
    config.hide_password();
    Ok(VmDetail {
        uuid: record.vm_uuid.clone(),
        domain_uuid: info.map(|info| info.domain_uuid).unwrap_or_default(),
        config,
        power_status,
        upload_key: record.upload_key.clone(),
        flu_usage: record.flu_usage,
        status,
        created_at: format_ms(record.created_at),
    })
}

/// The unicast form of `mac` in place when it is multicast, with a log
/// record naming `field` (panels make MACs from random bytes; see
/// [`rules::unicast_mac`]).
pub fn make_unicast(
    state: &AppState,
    (host, vm): (&str, &str),
    action: &str,
    field: &str,
    mac: &mut String,
) {
    let Some(unicast) = rules::unicast_mac(mac) else {
        return;
    };
    let message = format!("{field} {mac} is a multicast address; {unicast} is used");
    let record = NewLog::new(LogLevel::Warn, action, message)
        .host(host)
        .vm(vm);
    if let Err(error) = state.store.log_insert(&record) {
        tracing::warn!("logging a MAC change: {error}");
    }
    *mac = unicast;
}

fn unicast_macs(state: &AppState, host: &str, settings: &mut VmSettings, action: &str) {
    let vm = settings.vm_uuid.clone();
    for (name, nic) in &mut settings.nic_all {
        let field = format!("nic_all.{name}.mac_addr");
        make_unicast(state, (host, &vm), action, &field, &mut nic.mac_addr);
    }
}

/// Create: reserve the key (and the host's VM limit) in the database first,
/// then ask the engine to define the VM and, with an `os_name`, to install
/// its image; if the engine fails, the VM and the reservation are removed.
pub async fn create(
    state: Arc<AppState>,
    host: Host,
    mut settings: VmSettings,
) -> ServiceResult<VmView> {
    let image = provision::image_for(&host.config, &settings.os_name)?;
    provision::protect_password(&mut settings, "")?;
    unicast_macs(&state, &host.name, &mut settings, "create");
    let record = state.store.vm_insert(
        &host.name,
        &settings.vm_uuid,
        &settings,
        "",
        &crate::auth::generate_token(),
        host.config.limits_nums,
    )?;
    // Addresses from the host's pools, as the original gave them, inside
    // the store's write lock so two creates never take the same one.
    let settings = state
        .store
        .vm_change_config(&host.name, &record.vm_uuid, |config, others| {
            super::network::allocate_addresses(&host, config, others)?;
            Ok(config.clone())
        });
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => {
            state.store.vm_delete(&host.name, &record.vm_uuid)?;
            return Err(error.into());
        }
    };
    let mut host = host;
    match provision::ensure_cpu(&state, &host).await {
        // The engine learns the host's CPU from the host record.
        Ok(cpu) if host.cpu.is_none() => host.cpu = cpu,
        Ok(_) => {}
        Err(error) => tracing::warn!(host = %host.name, "CPU probe: {}", error.message()),
    }
    let created: ServiceResult<VmInfo> = match state
        .plugins
        .vm_create(&host.target(), &VmSpec::from(&settings))
        .await
    {
        Ok(info) => match image {
            Some(image) => {
                tasks::progress(40, "writing the system disk from the image");
                let installed = provision::install(&state, &host, &settings, image).await;
                if installed.is_err()
                    && let Err(error) = state
                        .plugins
                        .vm_delete(&host.target(), &settings.vm_uuid)
                        .await
                {
                    tracing::warn!(vm = %settings.vm_uuid, "removing a VM whose install failed: {error}");
                }
                installed
            }
            None => Ok(info),
        },
        Err(error) => Err(error.into()),
    };
    match created {
        Ok(info) => {
            let mut stored = settings;
            adopt_engine_view(&mut stored, &info);
            let record = state.store.vm_update_config(
                &host.name,
                &record.vm_uuid,
                &stored,
                &info.domain_uuid,
            )?;
            record_power(&state, &host.name, &record.vm_uuid, info.power.into())?;
            Ok(view(&record, &info))
        }
        Err(error) => {
            state.store.vm_delete(&host.name, &record.vm_uuid)?;
            Err(error)
        }
    }
}

/// Keep what the engine decided (generated MACs, the VNC port, a system
/// disk an image made larger than `hdd_num`) in the stored config, so that
/// the config says what the VM has and a later update asks for no shrink.
fn adopt_engine_view(settings: &mut VmSettings, info: &VmInfo) {
    // An install sizes the disk max(hdd_num, image size, image minimum).
    settings.hdd_num = settings.hdd_num.max(info.spec.hdd_mb);
    for nic in &info.spec.nics {
        if let Some(stored) = settings.nic_all.get_mut(&nic.name)
            && stored.mac_addr.is_empty()
        {
            stored.mac_addr = nic.mac_addr.clone();
        }
    }
    if settings.vc_port == 0 && info.spec.vc_port != 0 {
        settings.vc_port = info.spec.vc_port;
    }
}

/// The settings an update asks for: absent fields keep their value, the key
/// stays, a new password is hashed.
pub fn merged(vm: &VmRef, changes: Patch) -> ServiceResult<VmSettings> {
    let mut settings = checked(changes.apply(&vm.record.config, "", |key, _| key != "vm_uuid")?)?;
    provision::protect_password(&mut settings, &vm.record.config.os_pass)?;
    Ok(settings)
}

/// Update: the engine gets the merged config. A new `os_name` (or
/// `reinstall`) reinstalls the system disk from its image.
pub async fn update(
    state: Arc<AppState>,
    vm: VmRef,
    mut settings: VmSettings,
    reinstall: bool,
) -> ServiceResult<VmView> {
    unicast_macs(&state, &vm.host.name, &mut settings, "update");
    let image = if reinstall || settings.os_name != vm.record.config.os_name {
        provision::image_for(&vm.host.config, &settings.os_name)?
    } else {
        None
    };
    if reinstall && image.is_none() {
        return Err(crate::model::rules::Invalid::new(
            "os_name",
            "a reinstall needs the os_name of an image of this host",
        )
        .into());
    }
    let info = match image {
        Some(image) => {
            provision::reinstall(state.clone(), vm.clone(), settings.clone(), image).await?
        }
        None => {
            let spec = traffic::engine_spec(&state, &settings, &vm.record.flu_limited);
            state.plugins.vm_update(&vm.host.target(), &spec).await?
        }
    };
    adopt_engine_view(&mut settings, &info);
    let record =
        state
            .store
            .vm_update_config(&vm.host.name, vm.key(), &settings, &info.domain_uuid)?;
    Ok(view(&record, &info))
}

/// Delete: the engine removes the domain and its volumes; the database
/// removes the record with its NAT rules, IPs and proxies (foreign keys).
pub async fn delete(state: Arc<AppState>, vm: VmRef) -> ServiceResult<()> {
    // Forwards and proxy sites go down first: a rule must never outlive its VM.
    super::network::remove_all(&state, &vm).await?;
    if let Err(error) = state.plugins.vm_delete(&vm.host.target(), vm.key()).await {
        let error = ServiceError::from(error);
        // Already gone on the hypervisor: the panel's record goes too.
        if !error.not_found() {
            return Err(error);
        }
    }
    Ok(state.store.vm_delete(&vm.host.name, vm.key())?)
}

pub async fn power(
    state: Arc<AppState>,
    vm: VmRef,
    command: PowerCommand,
) -> ServiceResult<PowerAnswer> {
    let target = vm.host.target();
    let power = match state
        .plugins
        .vm_power(&target, vm.key(), command.into())
        .await
    {
        Ok(power) => power,
        Err(error) => {
            let error = ServiceError::from(error);
            // Billing panels unsuspend with S_START: a paused VM resumes.
            let paused = command == PowerCommand::Start
                && error.kind() == ErrorKind::Conflict
                && state
                    .plugins
                    .vm_get(&target, vm.key())
                    .await
                    .is_ok_and(|info| info.power == PowerState::Paused);
            if !paused {
                return Err(error);
            }
            state
                .plugins
                .vm_power(&target, vm.key(), PowerCommand::Resume.into())
                .await?
        }
    };
    record_power(&state, &vm.host.name, vm.key(), power.into())?;
    Ok(PowerAnswer {
        power_status: power.into(),
    })
}

/// Power state and history; `minutes` is a window (0 = all kept).
pub async fn status(state: &AppState, vm: &VmRef, minutes: u32) -> ServiceResult<VmStatusAnswer> {
    let (power_status, _) = power_of(state, vm).await?;
    let since = if minutes == 0 {
        0
    } else {
        now_ms() - i64::from(minutes) * 60_000
    };
    let history = state
        .store
        .sample_history(&vm.host.name, vm.key(), since, 10_000)?
        .into_iter()
        .map(sample_view)
        .collect();
    Ok(VmStatusAnswer {
        panel: PanelStatus::of(power_status),
        power_status,
        history,
        flu_usage: vm.record.flu_usage,
    })
}

/// A one-time URL of the VM's web console.
pub async fn console_url(state: &AppState, vm: &VmRef) -> ServiceResult<ConsoleUrl> {
    let endpoint = state
        .plugins
        .vm_console(&vm.host.target(), vm.key())
        .await?;
    let ticket = state
        .consoles
        .issue(&vm.host.name, vm.key(), endpoint, Some(vm.host.target()));
    Ok(ConsoleUrl {
        url: format!("{}/console/?ticket={ticket}", state.public_base_url()),
        expires_in: state.consoles.lifetime().as_secs(),
    })
}

/// The scan prefix: the one asked for, else the host's `filter_name`.
pub fn scan_prefix(host: &Host, prefix: Option<String>) -> ServiceResult<String> {
    let prefix = prefix.unwrap_or_else(|| host.config.filter_name.clone());
    if !prefix.is_empty() {
        rules::check_name("prefix", &prefix)?;
    }
    Ok(prefix)
}

/// Import the domains whose name starts with `prefix` that the panel lacks.
pub async fn scan(state: Arc<AppState>, host: Host, prefix: String) -> ServiceResult<ScanAnswer> {
    let found = state.plugins.vm_scan(&host.target(), &prefix).await?;
    let scanned = found.len() as u64;
    let mut added = Vec::new();
    for info in found {
        if !info.vm_uuid.starts_with(&prefix) || !rules::is_name(&info.vm_uuid) {
            continue;
        }
        let mut settings = VmSettings::from(&info.spec);
        settings.vm_uuid = info.vm_uuid.clone();
        let inserted = state.store.vm_insert(
            &host.name,
            &info.vm_uuid,
            &settings,
            &info.domain_uuid,
            &crate::auth::generate_token(),
            0,
        );
        match inserted {
            Ok(_) => {
                record_power(&state, &host.name, &info.vm_uuid, info.power.into())?;
                added.push(info.vm_uuid);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(ScanAnswer {
        scanned,
        added: added.len() as u64,
        added_vms: added,
        prefix_filter: prefix,
    })
}

/// Store a VM's power state; a change is published to the event streams.
pub fn record_power(
    state: &AppState,
    host: &str,
    vm_uuid: &str,
    power: PowerStatus,
) -> ServiceResult<()> {
    if state.store.vm_set_power(host, vm_uuid, power.as_str())? {
        state.events.publish(Event::Power(PowerEvent {
            hs_name: host.to_owned(),
            vm_uuid: vm_uuid.to_owned(),
            power_status: power,
        }));
    }
    Ok(())
}

/// Store a VM's new sample and publish it to the event streams.
pub fn record_sample(
    state: &AppState,
    host: &str,
    vm_uuid: &str,
    source: &str,
    sample: &Sample,
) -> ServiceResult<()> {
    state.store.sample_insert(host, vm_uuid, source, sample)?;
    state.events.publish(Event::Sample(SampleEvent {
        hs_name: host.to_owned(),
        vm_uuid: vm_uuid.to_owned(),
        sample: SampleView {
            sample: sample.clone(),
            source: source.to_owned(),
        },
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::checked;
    use crate::model::VmSettings;

    /// What a PHP billing module sends: `[]` for empty maps, its own
    /// 12-character password as vc_pass, `bridge` for a public NIC.
    #[test]
    fn checked_takes_what_panels_send() {
        let settings: VmSettings = serde_json::from_str(
            r#"{"vm_uuid": "php1", "vc_pass": "Abcdefgh1234", "hdd_all": [],
                "nic_all": {"nic0": {"nic_type": "bridge"}}}"#,
        )
        .expect("[] is an empty map");
        let settings = checked(settings).expect("accepted");
        assert_eq!(settings.vc_pass, "Abcdefgh", "VNC reads the first 8");
        assert_eq!(settings.nic_all["nic0"].nic_type, "pub");
        let ipadd: crate::model::IpAddInput =
            serde_json::from_str(r#"{"type": "bridge"}"#).expect("an ipadd body");
        assert_eq!(ipadd.nic_type, "pub", "ipadd reads bridge the same way");
        assert!(settings.hdd_all.is_empty());
        let empty: VmSettings = serde_json::from_str(r#"{"vm_uuid": "php2", "nic_all": []}"#)
            .expect("[] is an empty map");
        assert!(empty.nic_all.is_empty());
        let error = serde_json::from_str::<VmSettings>(r#"{"vm_uuid": "x", "nic_all": [1]}"#)
            .expect_err("a non-empty list is not a map");
        assert!(error.to_string().contains("a map"), "{error}");
        let error = serde_json::from_str::<VmSettings>(
            r#"{"vm_uuid": "x", "nic_all": {"nic0": {"ip4_addr": 5}}}"#,
        )
        .expect_err("errors inside the map still show");
        assert!(error.to_string().contains("invalid type"), "{error}");
    }
}
