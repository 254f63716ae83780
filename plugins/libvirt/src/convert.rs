//! Pure translation between the panel's records (WIT types) and libvirt's.
//!
//! This module owns the engine's decisions that need no capability call:
//! validating a spec, naming volumes and DHCP hosts, planning disks and
//! MACs, building the [`DomainXml`] of a spec and reading a spec back from
//! one, mapping power actions and counters, and finding a VM's NAT address.
//! It never calls an import, so all of it is unit-tested natively; the
//! sequencing of calls lives in [`crate::ops`].

use openidcs_sdk::domain::xmltree;
use openidcs_sdk::domain::{
    Bandwidth, CpuModel, DiskFormat, DiskXml, DomainType, DomainXml, InterfaceXml, NetSource,
    NicMeta, VmMetadata, VncXml, VolumeMeta, cpu_element, disk_target,
};
use openidcs_sdk::libvirt::{Domain, DomainStats, LifecycleOp, NodeSummary};
use openidcs_sdk::{
    ConsoleEndpoint, CpuChoice, Disk, Error, HostConfig, HostCounters, Nic, NicKind, PowerAction,
    PowerState, Result, VmCounters, VmSpec,
};

/// The panel's name of the system disk; its volume is `<vm>-system`.
pub const SYSTEM_DISK: &str = "system";
/// Where VNC consoles listen: only the server (or a tunnel) reaches them.
pub const CONSOLE_LISTEN: &str = "127.0.0.1";
/// libvirt's and the capability's limit on domain and volume names.
const MAX_NAME_LEN: usize = 64;
/// QEMU numbers VNC displays from 5900; lower ports cannot be asked for.
const VNC_FIRST_PORT: u16 = 5900;
const BYTES_PER_MB: u64 = 1 << 20;

/// Add what was being done to an error's message, keeping its kind (so a
/// `not-found` stays a 404 and a `denied` a 403).
pub fn with_context(error: Error, what: &str) -> Error {
    match error {
        Error::NotFound(message) => Error::NotFound(format!("{what}: {message}")),
        Error::Invalid(message) => Error::Invalid(format!("{what}: {message}")),
        Error::Conflict(message) => Error::Conflict(format!("{what}: {message}")),
        Error::Denied(message) => Error::Denied(format!("{what}: {message}")),
        Error::Unsupported(message) => Error::Unsupported(format!("{what}: {message}")),
        Error::Failed(message) => Error::Failed(format!("{what}: {message}")),
    }
}

/// [`with_context`] for results: `.context(|| format!("creating volume {name}"))`.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| with_context(error, &what()))
    }
}

pub use openidcs_sdk::message_of;

/// The domain type this host's connection runs: from the URI, and for a
/// QEMU host `extend_data.virt_type = "qemu"` asks for software emulation
/// (TCG) instead of KVM, for a host whose KVM cannot run guests.
pub fn domain_type(host: &HostConfig) -> Result<DomainType> {
    let from_uri = DomainType::for_uri(&host.server_addr).ok_or_else(|| {
        Error::Unsupported(format!(
            "the libvirt engine builds domains for qemu, lxc and test connections, not {:?}",
            host.server_addr
        ))
    })?;
    let software = host_options(host)
        .get("virt_type")
        .and_then(|value| value.as_str())
        == Some("qemu");
    Ok(if from_uri == DomainType::Kvm && software {
        DomainType::Qemu
    } else {
        from_uri
    })
}

/// The host's engine options (`extend-data`, a JSON object); unreadable
/// text reads as none.
fn host_options(host: &HostConfig) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(&host.extend_data).unwrap_or_default()
}

/// Whether this panel manages the domain (its name has the host's prefix).
pub fn is_managed(host: &HostConfig, name: &str) -> bool {
    name.starts_with(host.filter_name.as_str())
}

/// The capability's name rule for domains, volumes and DHCP hosts:
/// `[A-Za-z0-9_.-]{1,64}`, not only dots. Checked here too so the operator
/// gets a 400 naming the field instead of a refusal from deep inside.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte))
        && !name.bytes().all(|byte| byte == b'.')
}

/// Check a VM key (it is the domain name and the prefix of its volumes).
pub fn check_vm_name(vm: &str) -> Result<()> {
    if valid_name(vm) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "vm_uuid {vm:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -"
        )))
    }
}

/// The volume of a VM's first-boot seed. The `.` keeps it apart from any
/// disk's volume: disk names are letters, digits and `_` only.
pub fn seed_volume(vm: &str) -> String {
    format!("{vm}-seed.img")
}

/// The CPU choice a fallback model stands for.
pub fn cpu_choice_of(model: CpuModel) -> CpuChoice {
    let (mode, name, disabled): (&str, &str, &[&str]) = match model {
        CpuModel::Passthrough => ("host-passthrough", "", &[]),
        CpuModel::PassthroughWithoutArchCapabilities => {
            ("host-passthrough", "", &["arch-capabilities"])
        }
        CpuModel::HostModel => ("host-model", "", &[]),
        CpuModel::Baseline => ("custom", "qemu64", &[]),
    };
    CpuChoice {
        mode: mode.to_owned(),
        model: name.to_owned(),
        disabled_features: disabled
            .iter()
            .map(|feature| (*feature).to_owned())
            .collect(),
    }
}

/// The CPU models worth trying on a host, best first, from its domain
/// capabilities (`None`: unreadable or none, the plain fallback order).
///
/// Modes libvirt says are unsupported, and `qemu64` when it is not usable,
/// are left out. An AMD host whose host model requires `arch-capabilities`
/// (an Intel MSR that KVM emulates on AMD; with nested KVM QEMU cannot set
/// it, so passthrough and host-model both abort) starts with passthrough
/// without that feature. The probe still starts each candidate once.
pub fn cpu_candidates(domain_capabilities: Option<&str>) -> Vec<CpuModel> {
    let Some(cpu) = domain_capabilities
        .and_then(|xml| xmltree::parse(xml).ok())
        .and_then(|root| root.child("cpu").cloned())
    else {
        return CpuModel::FALLBACK.to_vec();
    };
    let mode = |name: &str| {
        cpu.children_named("mode")
            .find(|mode| mode.attr("name") == Some(name))
    };
    let supported =
        |name: &str| mode(name).is_some_and(|mode| mode.attr("supported") == Some("yes"));
    let host_model = mode("host-model");
    let vendor = host_model
        .and_then(|model| model.child("vendor"))
        .map(|vendor| vendor.text())
        .unwrap_or_default();
    let requires_arch_capabilities = host_model.is_some_and(|model| {
        model.children_named("feature").any(|feature| {
            feature.attr("name") == Some("arch-capabilities")
                && feature.attr("policy") == Some("require")
        })
    });
    let qemu64_usable = mode("custom").is_none_or(|custom| {
        custom
            .children_named("model")
            .find(|model| model.text() == "qemu64")
            .is_none_or(|model| model.attr("usable") != Some("no"))
    });
    let order: &[CpuModel] = if vendor == "AMD" && requires_arch_capabilities {
        &[
            CpuModel::PassthroughWithoutArchCapabilities,
            CpuModel::Baseline,
            CpuModel::Passthrough,
            CpuModel::HostModel,
        ]
    } else {
        &CpuModel::FALLBACK
    };
    order
        .iter()
        .copied()
        .filter(|model| match model {
            CpuModel::Passthrough | CpuModel::PassthroughWithoutArchCapabilities => {
                supported("host-passthrough")
            }
            CpuModel::HostModel => supported("host-model"),
            CpuModel::Baseline => qemu64_usable,
        })
        .collect()
}

/// A CPU choice as logs and errors show it.
pub fn describe_cpu(choice: &CpuChoice) -> String {
    let mut text = choice.mode.clone();
    if !choice.model.is_empty() {
        text.push_str(&format!(" {}", choice.model));
    }
    for feature in &choice.disabled_features {
        text.push_str(&format!(" -{feature}"));
    }
    text
}

/// The host's CPU choice from its options (`extend-data`): `cpu_mode`,
/// `cpu_model` (for `custom`) and `cpu_features` (`-name` disables a
/// feature). The operator's setting, or what the core's probe found;
/// `None`: the fallback chain at start.
pub fn host_cpu(host: &HostConfig) -> Option<CpuChoice> {
    let options = host_options(host);
    let mode = options.get("cpu_mode")?.as_str()?.to_owned();
    let model = options
        .get("cpu_model")
        .and_then(|model| model.as_str())
        .unwrap_or_default()
        .to_owned();
    let disabled_features = options
        .get("cpu_features")
        .and_then(|features| features.as_array())
        .map(|features| {
            features
                .iter()
                .filter_map(|feature| feature.as_str()?.strip_prefix('-'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(CpuChoice {
        mode,
        model,
        disabled_features,
    })
}

/// The throwaway domain a CPU probe starts: no disk, no NIC, 32 MiB.
pub fn probe_domain(host: &HostConfig, choice: &CpuChoice, suffix: &str) -> DomainXml {
    let mut probe = DomainXml::new(
        &format!("{}openidcs-cpu-probe-{suffix}", host.filter_name),
        DomainType::Kvm,
    )
    .memory_mib(32)
    .vcpus(1);
    probe.cpu = Some(cpu_element(choice));
    probe
}

/// The storage volume of a VM's disk.
pub fn volume_name(vm: &str, disk: &str) -> String {
    format!("{vm}-{disk}")
}

/// A MAC as libvirt writes it (lower case).
pub fn normalize_mac(mac: &str) -> String {
    mac.trim().to_ascii_lowercase()
}

/// Six colon-separated hex pairs, unicast (a multicast MAC breaks the NIC).
pub fn check_mac(mac: &str) -> Result<()> {
    let octets: Vec<&str> = mac.split(':').collect();
    let well_formed = octets.len() == 6
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.bytes().all(|byte| byte.is_ascii_hexdigit()));
    let unicast = octets
        .first()
        .and_then(|first| u8::from_str_radix(first, 16).ok())
        .is_some_and(|first| first & 1 == 0);
    if well_formed && unicast {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "mac_addr {mac:?} must be a unicast MAC like 52:54:00:12:34:56"
        )))
    }
}

/// The panel's name of a NIC, `nic<index>` when it has none.
pub fn nic_name(nic: &Nic, index: usize) -> String {
    if nic.name.is_empty() {
        format!("nic{index}")
    } else {
        nic.name.clone()
    }
}

/// What a NIC of `kind` plugs into on this host.
pub fn net_source(host: &HostConfig, kind: NicKind) -> Result<NetSource> {
    match kind {
        NicKind::Nat if !host.network_nat.is_empty() => {
            Ok(NetSource::Network(host.network_nat.clone()))
        }
        NicKind::Pub if !host.network_pub.is_empty() => {
            Ok(NetSource::Bridge(host.network_pub.clone()))
        }
        NicKind::Nat => Err(Error::Invalid(format!(
            "host {} has no NAT network (network_nat) for a nat NIC",
            host.name
        ))),
        NicKind::Pub => Err(Error::Invalid(format!(
            "host {} has no public bridge (network_pub) for a pub NIC",
            host.name
        ))),
    }
}

/// The panel's kind of a NIC plugged into `source`.
pub fn nic_kind(source: &NetSource) -> NicKind {
    match source {
        NetSource::Network(_) => NicKind::Nat,
        NetSource::Bridge(_) => NicKind::Pub,
    }
}

fn check_disk(vm: &str, disk: &Disk) -> Result<()> {
    // No `-` or `.`: `<vm>-<disk>` must not read as another VM's volume
    // (VM `web1` disk `data-system` vs VM `web1-data`'s system disk).
    let simple = !disk.name.is_empty()
        && disk
            .name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if !simple {
        return Err(Error::Invalid(format!(
            "disk name {:?} must be letters, digits and _ only",
            disk.name
        )));
    }
    if disk.name == SYSTEM_DISK {
        return Err(Error::Invalid(
            "disk name \"system\" is the system disk's (hdd_num)".to_owned(),
        ));
    }
    if disk.size_mb == 0 {
        return Err(Error::Invalid(format!(
            "disk {} needs a size above 0 MB",
            disk.name
        )));
    }
    check_volume_name(&volume_name(vm, &disk.name))
}

fn check_volume_name(volume: &str) -> Result<()> {
    if valid_name(volume) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "volume name {volume:?} (vm_uuid-disk) would be over 64 characters"
        )))
    }
}

/// What only a new VM must satisfy (an imported container may lack a
/// recorded system disk and still be updated).
pub fn validate_new(spec: &VmSpec, domain_type: DomainType) -> Result<()> {
    if domain_type == DomainType::Lxc && spec.hdd_mb == 0 {
        return Err(Error::Invalid(
            "an LXC container needs a system disk (hdd_num above 0); without one it would \
             share the host's root filesystem"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Check a spec against this host before anything is created or changed.
pub fn validate_spec(host: &HostConfig, spec: &VmSpec) -> Result<()> {
    check_vm_name(&spec.vm_uuid)?;
    if spec.cpu_num == 0 {
        return Err(Error::Invalid("cpu_num must be at least 1".to_owned()));
    }
    if spec.mem_mb == 0 {
        return Err(Error::Invalid("mem_num must be at least 1 MB".to_owned()));
    }
    if spec.vc_port != 0 && spec.vc_port < VNC_FIRST_PORT {
        return Err(Error::Invalid(format!(
            "vc_port {} must be 0 (automatic) or from {VNC_FIRST_PORT}",
            spec.vc_port
        )));
    }
    if spec.hdd_mb > 0 {
        check_volume_name(&volume_name(&spec.vm_uuid, SYSTEM_DISK))?;
    }
    let mut disk_names: Vec<&str> = Vec::new();
    for disk in &spec.disks {
        check_disk(&spec.vm_uuid, disk)?;
        if disk_names.contains(&disk.name.as_str()) {
            return Err(Error::Invalid(format!(
                "disk {} is listed twice",
                disk.name
            )));
        }
        disk_names.push(&disk.name);
    }
    let mut macs: Vec<String> = Vec::new();
    let mut nic_names: Vec<String> = Vec::new();
    for (index, nic) in spec.nics.iter().enumerate() {
        net_source(host, nic.kind)?;
        let name = nic_name(nic, index);
        if nic_names.contains(&name) {
            return Err(Error::Invalid(format!("NIC {name} is listed twice")));
        }
        nic_names.push(name);
        if !nic.mac_addr.is_empty() {
            check_mac(&nic.mac_addr)?;
            let mac = normalize_mac(&nic.mac_addr);
            if macs.contains(&mac) {
                return Err(Error::Invalid(format!("MAC {mac} is given to two NICs")));
            }
            macs.push(mac);
        }
    }
    Ok(())
}

/// A disk of a VM: the panel's name, its volume, its size and (once the
/// volume exists) its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDisk {
    pub name: String,
    pub volume: String,
    pub size_mb: u64,
    pub path: String,
}

/// The volumes a new VM needs: the system disk (when `hdd-mb` > 0) first,
/// then the data disks in order. Paths are filled in once created.
pub fn planned_disks(spec: &VmSpec) -> Vec<PlannedDisk> {
    let system = (spec.hdd_mb > 0).then(|| PlannedDisk {
        name: SYSTEM_DISK.to_owned(),
        volume: volume_name(&spec.vm_uuid, SYSTEM_DISK),
        size_mb: spec.hdd_mb,
        path: String::new(),
    });
    let data = spec.disks.iter().map(|disk| PlannedDisk {
        name: disk.name.clone(),
        volume: volume_name(&spec.vm_uuid, &disk.name),
        size_mb: disk.size_mb,
        path: String::new(),
    });
    system.into_iter().chain(data).collect()
}

/// A MAC from `new_mac` that none of `taken` has (a clash is a 1 in 16M
/// chance per pair; a few tries make it vanish).
fn fresh_mac(taken: &[String], new_mac: &mut dyn FnMut() -> String) -> String {
    let mut mac = normalize_mac(&new_mac());
    for _ in 0..8 {
        if !taken.contains(&mac) {
            break;
        }
        mac = normalize_mac(&new_mac());
    }
    mac
}

/// The MAC of each NIC of a new VM: as given, or fresh.
pub fn create_macs(spec: &VmSpec, new_mac: &mut dyn FnMut() -> String) -> Vec<String> {
    let mut macs: Vec<String> = spec
        .nics
        .iter()
        .map(|nic| normalize_mac(&nic.mac_addr))
        .collect();
    for index in 0..macs.len() {
        if macs[index].is_empty() {
            macs[index] = fresh_mac(&macs, new_mac);
        }
    }
    macs
}

/// The MAC of each NIC after an update: as given; else that of the current
/// NIC of the same name; else fresh.
pub fn update_macs(
    spec: &VmSpec,
    current: &DomainXml,
    new_mac: &mut dyn FnMut() -> String,
) -> Vec<String> {
    let current_nics = nics_of(current);
    let mut macs: Vec<String> = spec
        .nics
        .iter()
        .map(|nic| normalize_mac(&nic.mac_addr))
        .collect();
    for (index, nic) in spec.nics.iter().enumerate() {
        if !macs[index].is_empty() {
            continue;
        }
        let name = nic_name(nic, index);
        let kept = current_nics
            .iter()
            .find(|current| current.name == name && !macs.contains(&current.mac_addr))
            .map(|current| current.mac_addr.clone());
        macs[index] = match kept {
            Some(mac) => mac,
            None => fresh_mac(&macs, new_mac),
        };
    }
    macs
}

fn disk_target_for(domain_type: DomainType, disk: &PlannedDisk, taken: &[String]) -> String {
    if domain_type == DomainType::Lxc {
        return if disk.name == SYSTEM_DISK {
            "/".to_owned()
        } else {
            format!("/mnt/{}", disk.name)
        };
    }
    (0..)
        .map(disk_target)
        .find(|target| !taken.contains(target))
        .unwrap_or_default()
}

/// The console of a spec: a fixed port or libvirt's pick, on `listen`.
pub fn vnc_for(spec: &VmSpec, listen: &str) -> VncXml {
    if spec.vc_port == 0 {
        VncXml::autoport(listen, &spec.vc_pass)
    } else {
        VncXml::fixed(spec.vc_port, listen, &spec.vc_pass)
    }
}

/// What the panel knows of a VM that libvirt's XML cannot hold.
pub fn metadata_for(spec: &VmSpec, disks: &[PlannedDisk], macs: &[String]) -> VmMetadata {
    let volume = |disk: &PlannedDisk| VolumeMeta {
        name: disk.name.clone(),
        volume: disk.volume.clone(),
        size_mb: disk.size_mb,
    };
    VmMetadata {
        os_name: spec.os_name.clone(),
        system: disks
            .iter()
            .find(|disk| disk.name == SYSTEM_DISK)
            .map(volume),
        disks: disks
            .iter()
            .filter(|disk| disk.name != SYSTEM_DISK)
            .map(volume)
            .collect(),
        nics: spec
            .nics
            .iter()
            .zip(macs)
            .enumerate()
            .map(|(index, (nic, mac))| nic_meta(nic, &nic_name(nic, index), mac))
            .collect(),
    }
}

/// A NIC's addressing for the metadata.
pub fn nic_meta(nic: &Nic, name: &str, mac: &str) -> NicMeta {
    NicMeta {
        name: name.to_owned(),
        mac: mac.to_owned(),
        ip4: nic.ip4_addr.clone(),
        ip6: nic.ip6_addr.clone(),
        gate: nic.gate.clone(),
        mask: nic.mask.clone(),
        dns: nic.dns.clone(),
    }
}

/// The domain of a new VM whose volumes exist (`disks` have paths).
pub fn create_domain(
    host: &HostConfig,
    spec: &VmSpec,
    domain_type: DomainType,
    disks: &[PlannedDisk],
    macs: &[String],
) -> Result<DomainXml> {
    let mut model = DomainXml::new(&spec.vm_uuid, domain_type)
        .memory_mib(spec.mem_mb)
        .vcpus(spec.cpu_num)
        .cpu_cap_percent(spec.cpu_per);
    model.cpu = host_cpu(host).map(|choice| cpu_element(&choice));
    let mut targets = Vec::new();
    for disk in disks {
        let target = disk_target_for(domain_type, disk, &targets);
        model = model.disk(&disk.path, &target);
        targets.push(target);
    }
    model.interfaces = interfaces_for(host, spec, macs)?;
    if domain_type != DomainType::Lxc {
        model.vnc = Some(vnc_for(spec, CONSOLE_LISTEN));
    }
    model.metadata = Some(metadata_for(spec, disks, macs));
    Ok(model)
}

fn interfaces_for(host: &HostConfig, spec: &VmSpec, macs: &[String]) -> Result<Vec<InterfaceXml>> {
    let bandwidth = Bandwidth::from_mbit(spec.speed_down, spec.speed_up);
    spec.nics
        .iter()
        .zip(macs)
        .map(|(nic, mac)| {
            Ok(InterfaceXml {
                source: net_source(host, nic.kind)?,
                mac: mac.clone(),
                bandwidth,
            })
        })
        .collect()
}

/// The domain after an update: `current` with the spec's CPU, memory,
/// console, NICs and metadata, and the new disks of `disks` (those whose
/// path `current` lacks) appended with free targets.
pub fn update_domain(
    host: &HostConfig,
    spec: &VmSpec,
    current: &DomainXml,
    disks: &[PlannedDisk],
    macs: &[String],
) -> Result<DomainXml> {
    let domain_type = current.domain_type;
    let mut model = current.clone();
    model.memory_mib = spec.mem_mb;
    model.vcpus = spec.cpu_num;
    model.cpu_cap_percent = spec.cpu_per;
    let mut targets: Vec<String> = model.disks.iter().map(|disk| disk.target.clone()).collect();
    for disk in disks {
        if current.disk_by_path(&disk.path).is_none() {
            let target = disk_target_for(domain_type, disk, &targets);
            model.disks.push(DiskXml {
                path: disk.path.clone(),
                target: target.clone(),
                format: DiskFormat::Raw,
            });
            targets.push(target);
        }
    }
    model.interfaces = interfaces_for(host, spec, macs)?;
    if domain_type != DomainType::Lxc {
        let listen = current
            .vnc
            .as_ref()
            .map(|vnc| vnc.listen.clone())
            .filter(|listen| !listen.is_empty())
            .unwrap_or_else(|| CONSOLE_LISTEN.to_owned());
        model.vnc = Some(vnc_for(spec, &listen));
    }
    model.metadata = Some(metadata_for(spec, disks, macs));
    Ok(model)
}

/// What an update does to the disks: the disks after it (existing ones with
/// their paths, new ones with empty paths), and the volumes to grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskUpdate {
    pub disks: Vec<PlannedDisk>,
    pub grow: Vec<(String, u64)>,
}

/// Plan the disks of an update: sizes only grow, disks are never removed.
pub fn plan_disk_update(vm: &str, spec: &VmSpec, current: &DomainXml) -> Result<DiskUpdate> {
    let mut disks = disks_of(vm, current);
    let mut grow = Vec::new();
    let mut resize = |disk: &mut PlannedDisk, wanted_mb: u64| -> Result<()> {
        if wanted_mb < disk.size_mb {
            return Err(Error::Invalid(format!(
                "disk {} has {} MB and cannot shrink to {wanted_mb} MB: disks only grow",
                disk.name, disk.size_mb
            )));
        }
        if wanted_mb > disk.size_mb {
            grow.push((disk.volume.clone(), wanted_mb));
            disk.size_mb = wanted_mb;
        }
        Ok(())
    };

    match disks.iter().position(|disk| disk.name == SYSTEM_DISK) {
        // A system disk of unknown size (an imported VM) stays as it is.
        Some(index) if spec.hdd_mb == 0 && disks[index].size_mb == 0 => {}
        Some(index) => resize(&mut disks[index], spec.hdd_mb)?,
        None if spec.hdd_mb > 0 => disks.push(PlannedDisk {
            name: SYSTEM_DISK.to_owned(),
            volume: volume_name(vm, SYSTEM_DISK),
            size_mb: spec.hdd_mb,
            path: String::new(),
        }),
        None => {}
    }
    if let Some(removed) = disks
        .iter()
        .filter(|disk| disk.name != SYSTEM_DISK)
        .find(|disk| !spec.disks.iter().any(|wanted| wanted.name == disk.name))
    {
        return Err(Error::Invalid(format!(
            "disk {} is missing from the new configuration; vm-update never removes disks",
            removed.name
        )));
    }
    for wanted in &spec.disks {
        match disks.iter().position(|disk| disk.name == wanted.name) {
            Some(index) => resize(&mut disks[index], wanted.size_mb)?,
            None => disks.push(PlannedDisk {
                name: wanted.name.clone(),
                volume: volume_name(vm, &wanted.name),
                size_mb: wanted.size_mb,
                path: String::new(),
            }),
        }
    }
    Ok(DiskUpdate { disks, grow })
}

/// The last component of a path (a volume's name in its pool).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The disks of a domain as the panel names them: the system disk first,
/// then the data disks; sizes from the metadata, 0 when unknown. With
/// openidcs metadata, the system disk is the one it records (none when it
/// records none); without (a VM this engine did not create), it is the
/// `<vm>-system` volume or else the first boot disk.
pub fn disks_of(vm: &str, domain: &DomainXml) -> Vec<PlannedDisk> {
    let metadata = domain.metadata.as_ref();
    let system_index = match metadata {
        Some(metadata) => metadata.system.as_ref().and_then(|system| {
            domain
                .disks
                .iter()
                .position(|disk| file_name(&disk.path) == system.volume)
        }),
        None => {
            let system_volume = volume_name(vm, SYSTEM_DISK);
            domain
                .disks
                .iter()
                .position(|disk| file_name(&disk.path) == system_volume)
                .or_else(|| {
                    domain.disks.iter().position(|disk| {
                        matches!(disk.target.as_str(), "vda" | "sda" | "hda" | "xvda" | "/")
                    })
                })
        }
    };
    let prefix = format!("{vm}-");
    let mut system = None;
    let mut data = Vec::new();
    for (index, disk) in domain.disks.iter().enumerate() {
        let volume = file_name(&disk.path).to_owned();
        if Some(index) == system_index {
            system = Some(PlannedDisk {
                name: SYSTEM_DISK.to_owned(),
                size_mb: metadata
                    .and_then(|metadata| metadata.system.as_ref())
                    .map(|system| system.size_mb)
                    .unwrap_or(0),
                volume,
                path: disk.path.clone(),
            });
            continue;
        }
        let recorded = metadata.and_then(|metadata| {
            metadata
                .disks
                .iter()
                .find(|recorded| recorded.volume == volume)
        });
        let name = match recorded {
            Some(recorded) => recorded.name.clone(),
            None => volume.strip_prefix(&prefix).unwrap_or(&volume).to_owned(),
        };
        data.push(PlannedDisk {
            name,
            size_mb: recorded.map(|recorded| recorded.size_mb).unwrap_or(0),
            volume,
            path: disk.path.clone(),
        });
    }
    system.into_iter().chain(data).collect()
}

/// The domain's openidcs metadata, or for a domain without any, metadata
/// seeded from what its XML shows (so that recording one NIC does not make
/// the system disk of an imported VM read as a data disk).
pub fn metadata_of(vm: &str, domain: &DomainXml) -> VmMetadata {
    if let Some(metadata) = &domain.metadata {
        return metadata.clone();
    }
    let volume = |disk: PlannedDisk| VolumeMeta {
        name: disk.name,
        volume: disk.volume,
        size_mb: disk.size_mb,
    };
    let (system, data): (Vec<PlannedDisk>, Vec<PlannedDisk>) = disks_of(vm, domain)
        .into_iter()
        .partition(|disk| disk.name == SYSTEM_DISK);
    VmMetadata {
        os_name: String::new(),
        system: system.into_iter().next().map(volume),
        disks: data.into_iter().map(volume).collect(),
        nics: nics_of(domain)
            .iter()
            .map(|nic| nic_meta(nic, &nic.name, &nic.mac_addr))
            .collect(),
    }
}

/// The volumes a VM owns, to delete with it: those of its disks (and of
/// its metadata) named `<vm>-…`. A disk named otherwise (an imported VM's,
/// a shared image) is never deleted.
pub fn owned_volumes(vm: &str, domain: &DomainXml) -> Vec<String> {
    let prefix = format!("{vm}-");
    let from_disks = disks_of(vm, domain).into_iter().map(|disk| disk.volume);
    let from_metadata = domain.metadata.iter().flat_map(|metadata| {
        metadata
            .system
            .iter()
            .chain(metadata.disks.iter())
            .map(|volume| volume.volume.clone())
    });
    let seed = domain
        .seed
        .as_deref()
        .map(|path| file_name(path).to_owned());
    let mut volumes: Vec<String> = Vec::new();
    for volume in from_disks.chain(from_metadata).chain(seed) {
        if volume.starts_with(&prefix) && !volumes.contains(&volume) {
            volumes.push(volume);
        }
    }
    volumes
}

/// The NICs of a domain, in order, with the addressing its metadata records.
pub fn nics_of(domain: &DomainXml) -> Vec<Nic> {
    domain
        .interfaces
        .iter()
        .enumerate()
        .map(|(index, interface)| {
            let recorded = domain
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.nic_by_mac(&interface.mac));
            let field = |pick: fn(&NicMeta) -> &String| {
                recorded.map(|nic| pick(nic).clone()).unwrap_or_default()
            };
            let name = field(|nic| &nic.name);
            Nic {
                name: if name.is_empty() {
                    format!("nic{index}")
                } else {
                    name
                },
                kind: nic_kind(&interface.source),
                mac_addr: normalize_mac(&interface.mac),
                ip4_addr: field(|nic| &nic.ip4),
                ip6_addr: field(|nic| &nic.ip6),
                gate: field(|nic| &nic.gate),
                mask: field(|nic| &nic.mask),
                dns: recorded.map(|nic| nic.dns.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// A spec with only its key filled (what `vm-list` answers).
pub fn empty_spec(vm: &str) -> VmSpec {
    VmSpec {
        vm_uuid: vm.to_owned(),
        os_name: String::new(),
        os_pass: String::new(),
        vc_port: 0,
        vc_pass: String::new(),
        cpu_num: 0,
        cpu_per: 0,
        mem_mb: 0,
        hdd_mb: 0,
        speed_up: 0,
        speed_down: 0,
        nics: Vec::new(),
        disks: Vec::new(),
    }
}

/// Read a spec back from a domain's (inactive) definition. The OS password
/// is never stored, so it reads empty.
pub fn spec_from_domain(vm: &str, domain: &DomainXml) -> VmSpec {
    let disks = disks_of(vm, domain);
    let bandwidth = domain
        .interfaces
        .first()
        .map(|interface| interface.bandwidth)
        .unwrap_or_default();
    let vnc = domain.vnc.as_ref();
    VmSpec {
        vm_uuid: vm.to_owned(),
        os_name: domain
            .metadata
            .as_ref()
            .map(|metadata| metadata.os_name.clone())
            .unwrap_or_default(),
        os_pass: String::new(),
        vc_port: vnc
            .filter(|vnc| !vnc.autoport)
            .and_then(|vnc| vnc.port)
            .unwrap_or(0),
        vc_pass: vnc.map(|vnc| vnc.passwd.clone()).unwrap_or_default(),
        cpu_num: domain.vcpus,
        cpu_per: domain.cpu_cap_percent,
        mem_mb: domain.memory_mib,
        hdd_mb: disks
            .iter()
            .find(|disk| disk.name == SYSTEM_DISK)
            .map(|disk| disk.size_mb)
            .unwrap_or(0),
        speed_up: bandwidth.up_mbit(),
        speed_down: bandwidth.down_mbit(),
        nics: nics_of(domain),
        disks: disks
            .into_iter()
            .filter(|disk| disk.name != SYSTEM_DISK)
            .map(|disk| Disk {
                name: disk.name,
                size_mb: disk.size_mb,
            })
            .collect(),
    }
}

/// The libvirt operation of a power action.
pub fn lifecycle_for(action: PowerAction) -> LifecycleOp {
    match action {
        PowerAction::Start => LifecycleOp::Start,
        PowerAction::Stop => LifecycleOp::Shutdown,
        PowerAction::HardStop => LifecycleOp::Destroy,
        PowerAction::Reset => LifecycleOp::Reboot,
        PowerAction::HardReset => LifecycleOp::Reset,
        PowerAction::Pause => LifecycleOp::Suspend,
        PowerAction::Resume => LifecycleOp::Resume,
    }
}

/// Whether a domain in this state has a running process (and so live
/// devices and a console port).
pub fn is_active(state: PowerState) -> bool {
    matches!(
        state,
        PowerState::Running | PowerState::Paused | PowerState::Stopping | PowerState::Suspended
    )
}

/// A VM's counters from libvirt's bulk statistics.
pub fn vm_counters(stats: &DomainStats) -> VmCounters {
    VmCounters {
        vm_uuid: stats.name.clone(),
        power: stats.state,
        cpu_num: stats.vcpus,
        cpu_time_ns: stats.cpu_time_ns,
        mem_total_mb: stats.mem_max_kib / 1024,
        mem_used_mb: stats.mem_used_kib / 1024,
        hdd_total_mb: stats.disk_capacity_bytes / BYTES_PER_MB,
        hdd_used_mb: stats.disk_allocation_bytes / BYTES_PER_MB,
        net_rx_bytes: stats.net_rx_bytes,
        net_tx_bytes: stats.net_tx_bytes,
    }
}

/// A host's counters from the node summary and its managed domains.
pub fn host_counters(node: &NodeSummary, managed: &[Domain]) -> HostCounters {
    let count = |domains: usize| u32::try_from(domains).unwrap_or(u32::MAX);
    HostCounters {
        hostname: node.hostname.clone(),
        hypervisor: node.hypervisor.clone(),
        hypervisor_version: node.hypervisor_version.clone(),
        cpu_total: node.cpus,
        cpu_busy_ns: node.cpu_busy_ns,
        cpu_idle_ns: node.cpu_idle_ns,
        mem_total_mb: node.mem_total_kib / 1024,
        mem_used_mb: node.mem_total_kib.saturating_sub(node.mem_free_kib) / 1024,
        hdd_total_mb: node.storage_capacity_bytes / BYTES_PER_MB,
        hdd_used_mb: node.storage_allocation_bytes / BYTES_PER_MB,
        vm_count: count(managed.len()),
        vm_running: count(
            managed
                .iter()
                .filter(|domain| domain.state == PowerState::Running)
                .count(),
        ),
    }
}

/// The first IPv4 address of a NAT NIC of the spec.
pub fn first_nat_address(spec: &VmSpec) -> Option<String> {
    spec.nics
        .iter()
        .find(|nic| nic.kind == NicKind::Nat && !nic.ip4_addr.is_empty())
        .map(|nic| nic.ip4_addr.clone())
}

/// The error when a forward or site names no address and the VM has none.
pub fn no_nat_address(vm: &str) -> Error {
    Error::Invalid(format!("the VM {vm} has no NAT address; give lan_addr"))
}

/// One `<host>` of a libvirt network's DHCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: String,
    pub name: String,
}

/// The static DHCP bindings of a network's XML (unreadable XML: none).
pub fn dhcp_hosts(network_xml: &str) -> Vec<DhcpHost> {
    let Ok(network) = xmltree::parse(network_xml) else {
        return Vec::new();
    };
    network
        .children_named("ip")
        .filter_map(|ip| ip.child("dhcp"))
        .flat_map(|dhcp| dhcp.children_named("host"))
        .map(|host| DhcpHost {
            mac: normalize_mac(host.attr("mac").unwrap_or_default()),
            ip: host.attr("ip").unwrap_or_default().to_owned(),
            name: host.attr("name").unwrap_or_default().to_owned(),
        })
        .collect()
}

/// A binding the engine keeps in the NAT network's DHCP for a NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub mac: String,
    pub ip: String,
    pub name: String,
}

/// The DHCP host name of a VM's NIC: the VM's key for its first NIC, else
/// `<vm>-<nic>` (libvirt refuses two bindings of one name in a network).
pub fn dhcp_host_name(vm: &str, nic: &str) -> String {
    let name = format!("{vm}-{nic}");
    if nic.is_empty() || nic == "nic0" || !valid_name(&name) {
        vm.to_owned()
    } else {
        name
    }
}

/// The DHCP bindings a VM's NICs need: NAT NICs with an IPv4 address.
pub fn bindings_of(vm: &str, nics: &[Nic]) -> Vec<Binding> {
    nics.iter()
        .filter(|nic| {
            nic.kind == NicKind::Nat && !nic.ip4_addr.is_empty() && !nic.mac_addr.is_empty()
        })
        .map(|nic| Binding {
            mac: normalize_mac(&nic.mac_addr),
            ip: nic.ip4_addr.clone(),
            name: dhcp_host_name(vm, &nic.name),
        })
        .collect()
}

/// Which bindings to remove and which to add to go from `old` to `new`
/// (matched by MAC and address; a binding present in both is left alone).
pub fn binding_changes(old: &[Binding], new: &[Binding]) -> (Vec<Binding>, Vec<Binding>) {
    let same = |a: &Binding, b: &Binding| a.mac == b.mac && a.ip == b.ip;
    let remove = old
        .iter()
        .filter(|binding| !new.iter().any(|wanted| same(binding, wanted)))
        .cloned()
        .collect();
    let add = new
        .iter()
        .filter(|binding| !old.iter().any(|had| same(binding, had)))
        .cloned()
        .collect();
    (remove, add)
}

/// The host part of a connection URI (`qemu+ssh://root@10.0.0.2:22/system`
/// → `10.0.0.2`); `None` for a local URI.
pub fn uri_host(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some(host)
}

/// Where the server reaches a console listening on `listen`: that address,
/// or for a wildcard the connection's host (127.0.0.1 when local).
pub fn console_host(host: &HostConfig, listen: &str) -> String {
    if matches!(listen, "" | "0.0.0.0" | "::" | "[::]") {
        uri_host(&host.server_addr)
            .unwrap_or(CONSOLE_LISTEN)
            .to_owned()
    } else {
        listen.to_owned()
    }
}

/// The console of a running VM from its live definition (which has the
/// port libvirt picked) and its inactive one (which has the password).
pub fn console_endpoint(
    host: &HostConfig,
    vm: &str,
    live: &DomainXml,
    inactive: &DomainXml,
) -> Result<ConsoleEndpoint> {
    let Some(vnc) = live.vnc.as_ref() else {
        return Err(Error::NotFound(format!("vm {vm} has no VNC console")));
    };
    let Some(port) = vnc.port else {
        return Err(Error::Invalid(format!(
            "vm {vm} has no VNC port: libvirt assigns one when the VM runs, and a driver \
             without displays (libvirt's test driver) never does"
        )));
    };
    let password = inactive
        .vnc
        .as_ref()
        .map(|vnc| vnc.passwd.clone())
        .filter(|passwd| !passwd.is_empty())
        .unwrap_or_else(|| vnc.passwd.clone());
    Ok(ConsoleEndpoint {
        protocol: "vnc".to_owned(),
        host: console_host(host, &vnc.listen),
        port,
        password,
    })
}

#[cfg(test)]
mod tests;
