//! Test engine: `host-status` never returns. The runtime must interrupt it at
//! the plugin's deadline and keep serving everything else.

use openidcs_sdk::{Engine, EngineInfo, HostConfig, HostCounters, Result};

struct LoopForever;

impl Engine for LoopForever {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "loop-forever".to_owned(),
            version: "0.0.0".to_owned(),
            description: "test engine whose host-status loops forever".to_owned(),
        }
    }

    fn host_status(_host: HostConfig) -> Result<HostCounters> {
        let mut counter: u64 = 0;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

openidcs_sdk::export_engine!(LoopForever);
