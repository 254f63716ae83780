//! The model and the WIT types, joined in one place: what an engine is
//! told (`HostConfig`, `VmSpec`, `Nic`, `PortForward`, `ProxySite`) and what
//! its answers become. A change of either side shows here, and only here.

use crate::model::{DiskSettings, NicSettings, OsImageView, PowerCommand, PowerStatus, VmSettings};
use crate::plugin::bindings::{
    Disk, HostConfig, IpPool, IpVersion, Nic, NicKind, OsImage, PortForward, PowerAction,
    PowerState, Protocol, ProxySite, TlsPair, VmSpec,
};
use crate::store::{HostRecord, NatRuleRecord, ProxyRecord};

/// What engines see of a host: everything but the password.
impl From<&HostRecord> for HostConfig {
    fn from(host: &HostRecord) -> HostConfig {
        let settings = &host.config;
        HostConfig {
            name: host.name.clone(),
            engine: host.engine.clone(),
            server_addr: settings.server_addr.clone(),
            server_user: settings.server_user.clone(),
            filter_name: settings.filter_name.clone(),
            images_path: settings.images_path.clone(),
            system_path: settings.system_path.clone(),
            network_nat: settings.network_nat.clone(),
            network_pub: settings.network_pub.clone(),
            ports_start: settings.ports_start,
            ports_close: settings.ports_close,
            public_addr: settings.public_addr.clone(),
            ip_pools: settings
                .ipaddr_maps
                .iter()
                .map(|(name, pool)| IpPool {
                    name: name.clone(),
                    version: if pool.is_v6() {
                        IpVersion::Ipv6
                    } else {
                        IpVersion::Ipv4
                    },
                    kind: nic_kind(&pool.kind),
                    gate: pool.gate.clone(),
                    mask: pool.mask.clone(),
                    from: pool.from.clone(),
                    nums: pool.nums,
                    dns: pool.dnss.clone(),
                })
                .collect(),
            extend_data: engine_options(host),
        }
    }
}

/// The host's engine options (`extend_data`) with its CPU choice in them
/// (`cpu_mode`, `cpu_model`, `cpu_features`): the CPU is a libvirt engine's
/// matter, passed the way engine-specific options are.
fn engine_options(host: &HostRecord) -> String {
    let mut options = host.config.extend_data.clone();
    if let Some(cpu) = host.cpu_choice() {
        options.insert("cpu_mode".into(), cpu.mode.into());
        if !cpu.model.is_empty() {
            options.insert("cpu_model".into(), cpu.model.into());
        }
        let features: Vec<serde_json::Value> = cpu
            .disabled_features
            .iter()
            .map(|feature| format!("-{feature}").into())
            .collect();
        options.insert("cpu_features".into(), features.into());
    }
    serde_json::Value::Object(options).to_string()
}

fn nic_kind(text: &str) -> NicKind {
    if text == "pub" {
        NicKind::Pub
    } else {
        NicKind::Nat
    }
}

impl From<&VmSettings> for VmSpec {
    fn from(settings: &VmSettings) -> VmSpec {
        VmSpec {
            vm_uuid: settings.vm_uuid.clone(),
            os_name: settings.os_name.clone(),
            os_pass: settings.os_pass.clone(),
            vc_port: settings.vc_port,
            vc_pass: settings.vc_pass.clone(),
            cpu_num: settings.cpu_num,
            cpu_per: settings.cpu_per,
            mem_mb: settings.mem_num,
            hdd_mb: settings.hdd_num,
            speed_up: settings.speed_u,
            speed_down: settings.speed_d,
            nics: settings
                .nic_all
                .iter()
                .map(|(name, nic)| nic_of(name, nic))
                .collect(),
            disks: settings
                .hdd_all
                .iter()
                .map(|(name, disk)| Disk {
                    name: name.clone(),
                    size_mb: disk.hdd_size,
                })
                .collect(),
        }
    }
}

/// Settings for a VM found on the hypervisor by `scaner`.
impl From<&VmSpec> for VmSettings {
    fn from(spec: &VmSpec) -> VmSettings {
        VmSettings {
            vm_uuid: spec.vm_uuid.clone(),
            os_name: spec.os_name.clone(),
            os_pass: String::new(),
            vc_port: spec.vc_port,
            vc_pass: spec.vc_pass.clone(),
            cpu_num: spec.cpu_num.max(1),
            cpu_per: spec.cpu_per,
            mem_num: spec.mem_mb.max(16),
            hdd_num: spec.hdd_mb,
            speed_u: spec.speed_up,
            speed_d: spec.speed_down,
            nic_all: spec
                .nics
                .iter()
                .map(|nic| (nic.name.clone(), NicSettings::from(nic)))
                .collect(),
            hdd_all: spec
                .disks
                .iter()
                .map(|disk| {
                    (
                        disk.name.clone(),
                        DiskSettings {
                            hdd_name: disk.name.clone(),
                            hdd_size: disk.size_mb,
                        },
                    )
                })
                .collect(),
            ..VmSettings::default()
        }
    }
}

/// The NIC `name` as engines see it.
pub fn nic_of(name: &str, nic: &NicSettings) -> Nic {
    Nic {
        name: name.to_owned(),
        kind: nic_kind(&nic.nic_type),
        mac_addr: nic.mac_addr.clone(),
        ip4_addr: nic.ip4_addr.clone(),
        ip6_addr: nic.ip6_addr.clone(),
        gate: nic.nic_gate.clone(),
        mask: nic.nic_mask.clone(),
        dns: nic.dns_addr.clone(),
    }
}

impl From<&Nic> for NicSettings {
    fn from(nic: &Nic) -> NicSettings {
        NicSettings {
            nic_type: if nic.kind == NicKind::Pub {
                "pub"
            } else {
                "nat"
            }
            .to_owned(),
            mac_addr: nic.mac_addr.clone(),
            ip4_addr: nic.ip4_addr.clone(),
            ip6_addr: nic.ip6_addr.clone(),
            nic_gate: nic.gate.clone(),
            nic_mask: nic.mask.clone(),
            dns_addr: nic.dns.clone(),
        }
    }
}

impl From<PowerState> for PowerStatus {
    fn from(power: PowerState) -> PowerStatus {
        match power {
            PowerState::Running => PowerStatus::Running,
            PowerState::Stopped => PowerStatus::Stopped,
            PowerState::Paused => PowerStatus::Paused,
            PowerState::Stopping => PowerStatus::Stopping,
            PowerState::Suspended => PowerStatus::Suspended,
            PowerState::Crashed => PowerStatus::Crashed,
            PowerState::Unknown => PowerStatus::Unknown,
        }
    }
}

impl From<PowerCommand> for PowerAction {
    fn from(command: PowerCommand) -> PowerAction {
        match command {
            PowerCommand::Start => PowerAction::Start,
            PowerCommand::Stop => PowerAction::Stop,
            PowerCommand::HardStop => PowerAction::HardStop,
            PowerCommand::Reset => PowerAction::Reset,
            PowerCommand::HardReset => PowerAction::HardReset,
            PowerCommand::Pause => PowerAction::Pause,
            PowerCommand::Resume => PowerAction::Resume,
        }
    }
}

impl From<&NatRuleRecord> for PortForward {
    fn from(rule: &NatRuleRecord) -> PortForward {
        PortForward {
            id: rule.id as u64,
            protocol: if rule.protocol == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            public_port: rule.wan_port,
            target_addr: rule.lan_addr.clone(),
            target_port: rule.lan_port,
        }
    }
}

impl From<&ProxyRecord> for ProxySite {
    fn from(entry: &ProxyRecord) -> ProxySite {
        ProxySite {
            id: entry.id as u64,
            domain: entry.domain.clone(),
            backend_addr: entry.backend_ip.clone(),
            backend_port: entry.backend_port,
            tls: entry.ssl_enabled.then(|| TlsPair {
                cert_pem: entry.ssl_cert.clone(),
                key_pem: entry.ssl_key.clone(),
            }),
        }
    }
}

impl From<OsImage> for OsImageView {
    fn from(image: OsImage) -> OsImageView {
        OsImageView {
            name: image.name,
            file: image.file,
            format: image.format,
            size_mb: image.size_mb,
            min_disk_mb: image.min_disk_mb,
        }
    }
}
