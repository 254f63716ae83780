//! VMs: the stored `config` of a VM (also the body of `client/create` and
//! `client/update`), its NICs and disks, status samples, and the answers of
//! the `client/*` VM endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rules::{self, Invalid, check_name};

/// The `config` of a VM, with the API's defaults. Unknown keys are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct VmSettings {
    /// The VM's key (also its libvirt domain name); required at create.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "vm3")]
    pub vm_uuid: String,
    /// Image key.
    #[schema(pattern = "^[A-Za-z0-9_.-]{0,64}$")]
    pub os_name: String,
    /// root's password: at most 128 characters, no control characters.
    /// Stored and passed on only as a SHA-512 crypt hash; answers show
    /// `******` when one is set, and `******` sent back keeps it.
    #[schema(max_length = 128)]
    pub os_pass: String,
    /// OpenSSH public keys for root, applied with the OS image.
    pub ssh_keys: Vec<String>,
    pub vc_port: u16,
    /// VNC password, up to 8 letters or digits; generated when empty.
    #[schema(pattern = "^[A-Za-z0-9]{0,8}$")]
    pub vc_pass: String,
    /// 1..=256, default 2.
    #[schema(minimum = 1, maximum = 256, example = 1, default = 2)]
    pub cpu_num: u32,
    /// CPU cap in %, 0 = none.
    #[schema(maximum = 100)]
    pub cpu_per: u32,
    /// MB, 16..=4194304, default 2048.
    #[schema(minimum = 16, maximum = 4194304, example = 64, default = 2048)]
    pub mem_num: u64,
    /// System disk MB, default 8192 (0: no system disk).
    #[schema(maximum = 67108864, example = 0, default = 8192)]
    pub hdd_num: u64,
    /// Mbit/s.
    pub speed_u: u32,
    pub speed_d: u32,
    /// Traffic quota per month, MB (0: none). Over it, the VM is throttled
    /// or paused (the host's `flu_over`) until the next period or a reset.
    pub flu_num: u64,
    /// The day of the month the traffic period starts (1 to 31; a short
    /// month starts it on its last day).
    #[schema(minimum = 1, maximum = 31, default = 1)]
    pub flu_rst: u32,
    /// Max NAT rules, default 100.
    #[schema(default = 100)]
    pub nat_num: u32,
    /// Max proxies, default 100.
    #[schema(default = 100)]
    pub web_num: u32,
    #[serde(deserialize_with = "rules::map_or_empty_list")]
    pub nic_all: BTreeMap<String, NicSettings>,
    #[serde(deserialize_with = "rules::map_or_empty_list")]
    pub hdd_all: BTreeMap<String, DiskSettings>,
    /// The host's plan it was created from: create takes the plan's values,
    /// then the body's (`GET /api/server/plans/<hs>`).
    #[schema(pattern = "^[A-Za-z0-9_.-]{0,64}$")]
    pub plan: String,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            vm_uuid: String::new(),
            os_name: String::new(),
            os_pass: String::new(),
            ssh_keys: Vec::new(),
            vc_port: 0,
            vc_pass: String::new(),
            cpu_num: 2,
            cpu_per: 0,
            mem_num: 2048,
            hdd_num: 8192,
            speed_u: 0,
            speed_d: 0,
            flu_num: 0,
            flu_rst: 1,
            nat_num: 100,
            web_num: 100,
            nic_all: BTreeMap::new(),
            hdd_all: BTreeMap::new(),
            plan: String::new(),
        }
    }
}

/// A NIC of a VM.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct NicSettings {
    /// nat or pub (`bridge` is read as pub).
    #[serde(deserialize_with = "rules::nic_type")]
    #[schema(example = "nat", pattern = "^(nat|pub)$")]
    pub nic_type: String,
    /// Generated when empty.
    #[schema(pattern = "^([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5})?$")]
    pub mac_addr: String,
    pub ip4_addr: String,
    pub ip6_addr: String,
    pub nic_gate: String,
    pub nic_mask: String,
    pub dns_addr: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct DiskSettings {
    pub hdd_name: String,
    /// MB, at least 1.
    pub hdd_size: u64,
}

impl VmSettings {
    /// Check every rule; errors name the field.
    pub fn check(&self) -> Result<(), Invalid> {
        check_name("vm_uuid", &self.vm_uuid)?;
        if !(1..=256).contains(&self.cpu_num) {
            return Err(Invalid::new(
                "cpu_num",
                format!("must be 1..=256, got {}", self.cpu_num),
            ));
        }
        if self.cpu_per > 100 {
            return Err(Invalid::new(
                "cpu_per",
                format!("must be 0..=100, got {}", self.cpu_per),
            ));
        }
        if !(16..=4 * 1024 * 1024).contains(&self.mem_num) {
            return Err(Invalid::new(
                "mem_num",
                format!("must be 16..=4194304 MB, got {}", self.mem_num),
            ));
        }
        if self.hdd_num > 64 * 1024 * 1024 {
            return Err(Invalid::new(
                "hdd_num",
                format!("must be at most 67108864 MB, got {}", self.hdd_num),
            ));
        }
        if self.vc_pass.len() > 8
            || !self
                .vc_pass
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric())
        {
            return Err(Invalid::new(
                "vc_pass",
                "must be 1 to 8 letters or digits (VNC's limit)",
            ));
        }
        if self.os_pass.chars().any(char::is_control) || self.os_pass.len() > 128 {
            return Err(Invalid::new(
                "os_pass",
                "must be at most 128 characters, without control characters",
            ));
        }
        if !self.os_name.is_empty() {
            check_name("os_name", &self.os_name)?;
        }
        if !(1..=31).contains(&self.flu_rst) {
            return Err(Invalid::new(
                "flu_rst",
                format!("must be a day of the month, 1..=31, got {}", self.flu_rst),
            ));
        }
        if self.ssh_keys.len() > 16 {
            return Err(Invalid::new("ssh_keys", "at most 16 keys"));
        }
        for (position, key) in self.ssh_keys.iter().enumerate() {
            if !rules::is_ssh_public_key(key) {
                return Err(Invalid::new(
                    format!("ssh_keys[{position}]"),
                    "must be one OpenSSH public key line (ssh-ed25519 AAAA… comment)",
                ));
            }
        }
        for (name, nic) in &self.nic_all {
            check_name(&format!("nic_all.{name}"), name)?;
            nic.check()
                .map_err(|invalid| invalid.within(&format!("nic_all.{name}.")))?;
        }
        for (name, disk) in &self.hdd_all {
            check_name(&format!("hdd_all.{name}"), name)?;
            if disk.hdd_size == 0 {
                return Err(Invalid::new(
                    format!("hdd_all.{name}.hdd_size"),
                    "must be at least 1 MB",
                ));
            }
        }
        Ok(())
    }
}

impl VmSettings {
    /// The settings as answers show them: a set password as `******`.
    pub fn hide_password(&mut self) {
        if !self.os_pass.is_empty() {
            self.os_pass = super::MASKED.to_owned();
        }
    }
}

impl NicSettings {
    /// Check the NIC's rules; fields are named relative to the NIC.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.nic_type != "nat" && self.nic_type != "pub" {
            return Err(Invalid::new(
                "nic_type",
                format!("{:?} must be nat or pub", self.nic_type),
            ));
        }
        if !self.mac_addr.is_empty() && !rules::is_mac(&self.mac_addr) {
            return Err(Invalid::new(
                "mac_addr",
                format!("{:?} is not a MAC address", self.mac_addr),
            ));
        }
        rules::check_optional_address("ip4_addr", &self.ip4_addr)?;
        rules::check_optional_address("ip6_addr", &self.ip6_addr)?;
        rules::check_optional_address("nic_gate", &self.nic_gate)?;
        // A mask reaches the guest's network configuration and the
        // engine's DHCP binding; an IPv4 NIC takes a dotted mask or a
        // prefix length, an IPv6-only NIC a prefix length.
        let is_v6 = self.ip4_addr.is_empty() && !self.ip6_addr.is_empty();
        if !self.nic_mask.is_empty() && rules::prefix_length(&self.nic_mask, is_v6).is_none() {
            return Err(Invalid::new(
                "nic_mask",
                format!(
                    "{:?} must be a network mask (255.255.255.0) or a prefix length (24)",
                    self.nic_mask
                ),
            ));
        }
        for (position, address) in self.dns_addr.iter().enumerate() {
            rules::parse_address(&format!("dns_addr[{position}]"), address)?;
        }
        Ok(())
    }
}

/// A VM's power state as the API shows it; `missing` when the engine does
/// not know the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerStatus {
    Running,
    Stopped,
    Paused,
    Stopping,
    Suspended,
    Crashed,
    Unknown,
    Missing,
}

impl PowerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerStatus::Running => "running",
            PowerStatus::Stopped => "stopped",
            PowerStatus::Paused => "paused",
            PowerStatus::Stopping => "stopping",
            PowerStatus::Suspended => "suspended",
            PowerStatus::Crashed => "crashed",
            PowerStatus::Unknown => "unknown",
            PowerStatus::Missing => "missing",
        }
    }

    /// Running or paused: a guest that exists in memory.
    pub fn is_on(self) -> bool {
        matches!(
            self,
            PowerStatus::Running | PowerStatus::Paused | PowerStatus::Suspended
        )
    }

    /// The state as billing panels read it: `running`, `stopped`, `paused`
    /// (paused and suspended VMs alike), or the state's own word.
    pub fn panel_word(self) -> &'static str {
        match self {
            PowerStatus::Suspended => "paused",
            other => other.as_str(),
        }
    }
}

/// A power action: the API's words, or the original server's names as aliases
/// (S_START, S_CLOSE, H_CLOSE, S_RESET, H_RESET, A_PAUSE, S_PAUSE, A_WAKED).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum PowerCommand {
    #[serde(rename = "start", alias = "S_START")]
    Start,
    #[serde(rename = "stop", alias = "S_CLOSE")]
    Stop,
    #[serde(rename = "hard_stop", alias = "H_CLOSE")]
    HardStop,
    #[serde(rename = "reset", alias = "S_RESET")]
    Reset,
    #[serde(rename = "hard_reset", alias = "H_RESET")]
    HardReset,
    #[serde(rename = "pause", alias = "A_PAUSE", alias = "S_PAUSE")]
    Pause,
    #[serde(rename = "resume", alias = "A_WAKED")]
    Resume,
}

impl PowerCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerCommand::Start => "start",
            PowerCommand::Stop => "stop",
            PowerCommand::HardStop => "hard_stop",
            PowerCommand::Reset => "reset",
            PowerCommand::HardReset => "hard_reset",
            PowerCommand::Pause => "pause",
            PowerCommand::Resume => "resume",
        }
    }
}

/// `client/powers` body.
#[derive(Deserialize, ToSchema)]
#[schema(as = VmPowersBody)]
pub struct VmPowers {
    pub action: PowerCommand,
}

/// `client/password` body.
#[derive(Deserialize, ToSchema)]
pub struct PasswordInput {
    /// The new `os_pass`: 1 to 128 characters, no control characters (alias `os_pass`).
    #[serde(default, alias = "os_pass")]
    pub password: String,
}

/// `client/scaner` body.
#[derive(Deserialize, ToSchema)]
pub struct ScanInput {
    /// Name prefix of the domains to import (default: the host's `filter_name`).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A VM after create or update.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VmView {
    pub uuid: String,
    pub domain_uuid: String,
    pub config: VmSettings,
    pub power_status: PowerStatus,
    pub upload_key: String,
}

/// One VM with its samples.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VmDetail {
    pub uuid: String,
    /// The libvirt UUID (empty when unknown).
    pub domain_uuid: String,
    pub config: VmSettings,
    pub power_status: PowerStatus,
    /// The key the VM uploads its samples with.
    pub upload_key: String,
    /// Traffic used, MB.
    pub flu_usage: f64,
    /// Samples, oldest first.
    pub status: Vec<SampleView>,
    pub created_at: String,
}

/// A VM in `client/listup` (answered by key).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VmListItem<'a> {
    pub uuid: &'a str,
    pub config: &'a VmSettings,
    pub power_status: PowerStatus,
    /// The latest sample, or null.
    #[schema(required)]
    pub status: Option<SampleView>,
}

/// `client/status`: one answer both client families read. ZJMF-style PHP
/// modules read `data[0].vm_status` (PHP decodes the object key `"0"` as
/// array index 0); newer clients read `power_status` and `history`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VmStatusAnswer {
    /// The power state as PHP modules read it.
    #[serde(rename = "0")]
    pub panel: PanelStatus,
    pub power_status: PowerStatus,
    /// Samples, oldest first.
    pub history: Vec<SampleView>,
    /// Traffic used, MB.
    pub flu_usage: f64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PanelStatus {
    /// `RUNNING`, `STOPPED`, `PAUSED` (paused or suspended), or the power
    /// state in capitals (`CRASHED`, `UNKNOWN`, …).
    #[schema(example = "RUNNING")]
    pub vm_status: String,
}

impl PanelStatus {
    pub fn of(power: PowerStatus) -> PanelStatus {
        PanelStatus {
            vm_status: power.panel_word().to_ascii_uppercase(),
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PowerAnswer {
    pub power_status: PowerStatus,
}

/// `client/temptoken`: a single sign-on token for the VM's customer.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TempTokenAnswer {
    /// Single use; modules build `templogin?token=<temp_token>` themselves.
    pub temp_token: String,
    /// When it expires, unix seconds.
    pub expire: u64,
    /// The `templogin` URL with the token.
    pub url: String,
}

/// `client/templogin` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TempLoginQuery {
    /// The token `temptoken` answered.
    #[serde(default)]
    pub token: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PasswordAnswer {
    pub vm_uuid: String,
    /// How the password reaches the guest.
    pub applied: PasswordApplied,
}

/// How a new OS password reaches the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordApplied {
    /// Set at once in the running guest by its agent.
    GuestAgent,
    /// Applied when the guest boots next.
    NextBoot,
    /// The VM has no installed image yet: applied with its next install.
    NextInstall,
}

/// One image of a host's catalogue (`GET /api/client/os-images/<hs>`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OsImageView {
    /// The `os_name` that picks it.
    pub name: String,
    /// Its file in the host's `images_path`.
    pub file: String,
    /// qcow2, raw, ...
    pub format: String,
    /// Its virtual size.
    pub size_mb: u64,
    /// The smallest system disk it needs (from `system_maps`).
    pub min_disk_mb: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsoleUrl {
    /// One-time URL of the web console.
    pub url: String,
    pub expires_in: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScanAnswer {
    /// Domains the engine found with the prefix.
    pub scanned: u64,
    /// Of which new to the panel.
    pub added: u64,
    pub added_vms: Vec<String>,
    pub prefix_filter: String,
}

/// A status sample: sizes in MB, usage in %, network in Mbit/s. The body of
/// `upload` (every field optional) and what the poller stores.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct Sample {
    pub ac_status: String,
    pub cpu_total: f64,
    #[schema(minimum = 0)]
    pub cpu_usage: f64,
    pub mem_total: f64,
    #[schema(minimum = 0)]
    pub mem_usage: f64,
    pub hdd_total: f64,
    #[schema(minimum = 0)]
    pub hdd_usage: f64,
    /// Traffic since the previous sample, MB (accumulated into the VM's `flu_usage`).
    #[schema(minimum = 0)]
    pub flu_usage: f64,
    #[schema(minimum = 0)]
    pub network_u: f64,
    #[schema(minimum = 0)]
    pub network_d: f64,
    /// When it was taken, as the reporter wrote it (answers fill in the
    /// time it was stored when absent).
    pub on_update: Option<serde_json::Value>,
}

/// Largest value a sample field may carry (1e12 MB of traffic is far past
/// any real quota).
pub const MAX_SAMPLE_VALUE: f64 = 1e12;

impl Sample {
    pub fn check(&self) -> Result<(), Invalid> {
        // An empty body would be stored as a sample of zeros, hiding the
        // VM's real usage in the history.
        if self == &Sample::default() {
            return Err(Invalid::new(
                "body",
                "the sample is empty: send at least one of ac_status, cpu_total, cpu_usage, \
                 mem_total, mem_usage, hdd_total, hdd_usage, flu_usage, network_u, network_d, \
                 on_update",
            ));
        }
        for (field, value) in [
            ("cpu_usage", self.cpu_usage),
            ("mem_usage", self.mem_usage),
            ("hdd_usage", self.hdd_usage),
            ("flu_usage", self.flu_usage),
            ("network_u", self.network_u),
            ("network_d", self.network_d),
        ] {
            // Bounded so the accumulated traffic can never overflow to infinity.
            if !value.is_finite() || !(0.0..=MAX_SAMPLE_VALUE).contains(&value) {
                return Err(Invalid::new(
                    field,
                    format!("must be a number from 0 to {MAX_SAMPLE_VALUE:e}"),
                ));
            }
        }
        Ok(())
    }
}

/// A stored sample as answers show it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SampleView {
    #[serde(flatten)]
    pub sample: Sample,
    /// `upload` or `poller`.
    pub source: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UploadAnswer {
    pub hs_name: String,
    pub vm_uuid: String,
}
