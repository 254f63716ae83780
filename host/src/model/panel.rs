//! The billing panels' routes beyond the 35 (`/api/status`, `/api/info`,
//! `/api/nat/check`, …): they name a VM by its key alone (`hostname`), and
//! answer in the shapes the panels' modules read.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Patch;

/// `?hostname=`: a VM's key, looked up on every enabled host the caller reaches.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ByName {
    /// The VM's key (`vm_uuid`).
    #[serde(default)]
    #[param(example = "ser261202de2b0aa")]
    pub hostname: String,
}

/// `POST /api/password` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordByName {
    /// The VM's key.
    #[serde(default)]
    pub hostname: String,
    /// The new OS password (alias `os_pass`).
    #[serde(default, alias = "os_pass")]
    pub password: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NamedStatus {
    pub hostname: String,
    /// `running`, `stopped` or `paused` (paused and suspended VMs), or the
    /// power state's own word.
    #[schema(example = "running")]
    pub status: String,
}

/// The plan a VM was sold with, as `/api/info` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct InfoConfig {
    pub cpus: u32,
    #[schema(example = "1024 MB")]
    pub memory: String,
    #[schema(example = "10240 MB")]
    pub disk: String,
    /// Monthly traffic quota, MB (0: none).
    pub traffic_limit: u64,
}

/// `/api/info`: the VM with its latest usage; `*_usage` are human sizes,
/// `*_raw` bytes, `*_percent` percentages (0 without a sample yet).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VmInfoAnswer {
    pub hostname: String,
    pub status: String,
    /// The first IPv4 / IPv6 address of the VM's NICs ("" when none).
    pub ipv4: String,
    pub ipv6: String,
    /// The host's engine.
    #[serde(rename = "type")]
    pub engine: String,
    pub created_at: String,
    pub config: InfoConfig,
    pub cpu_usage: String,
    pub memory_usage: String,
    pub memory_usage_raw: u64,
    pub disk_usage: String,
    pub disk_usage_raw: u64,
    pub traffic_usage: String,
    pub traffic_usage_raw: u64,
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub disk_percent: f64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TrafficAnswer {
    /// Bytes used this month.
    pub used: u64,
}

/// `/api/nat/check` and `/api/proxy/check`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Availability {
    pub available: bool,
    /// Why not (empty when available).
    pub reason: String,
}

impl Availability {
    pub fn yes() -> Availability {
        Availability {
            available: true,
            reason: String::new(),
        }
    }

    pub fn no(reason: impl Into<String>) -> Availability {
        Availability {
            available: false,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NatCheckQuery {
    /// The VM's key.
    #[serde(default)]
    pub hostname: String,
    /// tcp (default) or udp.
    #[serde(default)]
    pub protocol: String,
    /// The public port wanted.
    #[serde(default)]
    pub port: u32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProxyCheckQuery {
    #[serde(default)]
    #[param(example = "www.example.com")]
    pub domain: String,
    /// The VM's key: also check its `web_num` (optional).
    #[serde(default)]
    pub hostname: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortsQuery {
    /// tcp (default) or udp.
    #[serde(default)]
    pub protocol: String,
}

/// `/api/server/ports/<hs>`: the host's NAT port range and its use.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PortsAnswer {
    /// `[ports_start, ports_close]`.
    pub range: [u16; 2],
    /// Public ports forwarded now, ascending.
    pub used: Vec<u16>,
    pub free_count: u64,
}

/// `POST /api/server/plan/<hs>` body: a named set of VM config values.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PlanInput {
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "basic-1c1g")]
    #[serde(default)]
    pub name: String,
    /// Any of create's fields but `vm_uuid` and `plan`, e.g.
    /// `{"cpu_num": 1, "mem_num": 1024, "hdd_num": 20480, "nat_num": 10}`.
    #[serde(default)]
    pub config: Patch,
}

/// `12.5 MB`, `1.2 GB`: sizes as panels print them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_as_panels_print_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1 KB");
        assert_eq!(human_size(512 * 1024 * 1024), "512 MB");
        assert_eq!(human_size(1536 * 1024 * 1024), "1.5 GB");
    }
}
