//! Test engine: `host-status` panics (a trap). The call fails with the panic
//! message; the next call works (a fresh instance per call).

use openidcs_sdk::{Engine, EngineInfo, HostConfig, HostCounters, Result};

struct Panics;

impl Engine for Panics {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "panic".to_owned(),
            version: "0.0.0".to_owned(),
            description: "test engine whose host-status panics".to_owned(),
        }
    }

    fn host_status(host: HostConfig) -> Result<HostCounters> {
        println!("about to fail for host {}", host.name);
        panic!("deliberate test panic for host {}", host.name);
    }
}

openidcs_sdk::export_engine!(Panics);
