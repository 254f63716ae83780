//! Test engine: `host-status` allocates without bound. The memory cap must
//! fail that call alone.

use openidcs_sdk::{Engine, EngineInfo, HostConfig, HostCounters, Result};

struct MemoryBomb;

impl Engine for MemoryBomb {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "memory-bomb".to_owned(),
            version: "0.0.0".to_owned(),
            description: "test engine whose host-status allocates without bound".to_owned(),
        }
    }

    fn host_status(_host: HostConfig) -> Result<HostCounters> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

openidcs_sdk::export_engine!(MemoryBomb);
