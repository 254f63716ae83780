//! The one place `bindgen!` runs for the `openidcs:engine@0.1.0` world.
//! Everything else imports the generated types from here, so the macro's
//! options are the same for every user and the expansion is compiled once.
//!
//! Imports are `async` (capabilities do I/O off the reactor) and `trappable`:
//! a host function answers the WIT `error` inside `Ok` for a refusal the
//! engine should see, and reserves the outer `Err` (a trap) for host faults.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "engine-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::exports::openidcs::engine::engine::Guest as EngineExport;
pub use self::openidcs::engine::types::Error as PluginError;
pub use self::openidcs::engine::types::{
    ConsoleEndpoint, Disk, EngineInfo, HostConfig, HostCounters, IpPool, IpVersion, Nic, NicKind,
    PortForward, PowerAction, PowerState, Protocol, ProxySite, TlsPair, VmCounters, VmInfo, VmSpec,
};

/// The WIT package version this server speaks; plugins must export a
/// compatible `openidcs:engine/engine` (same major, and same minor while 0.x).
pub const WIT_VERSION: &str = "0.1.0";

/// The operator-facing text of an engine error: its kind and message.
pub fn describe_error(error: &PluginError) -> String {
    match error {
        PluginError::NotFound(message) => format!("not found: {message}"),
        PluginError::Invalid(message) => format!("invalid: {message}"),
        PluginError::Conflict(message) => format!("conflict: {message}"),
        PluginError::Denied(message) => format!("denied: {message}"),
        PluginError::Unsupported(message) => format!("unsupported: {message}"),
        PluginError::Failed(message) => format!("failed: {message}"),
    }
}

impl PowerState {
    /// The API's spelling of a power state.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Paused => "paused",
            PowerState::Stopping => "stopping",
            PowerState::Suspended => "suspended",
            PowerState::Crashed => "crashed",
            PowerState::Unknown => "unknown",
        }
    }
}
