//! Test engine: imports `nat` (it calls it). Loaded without the `nat` grant
//! it must be refused at load with a message naming plugin and interface.

use openidcs_sdk::{Engine, EngineInfo, HostConfig, HostCounters, Result, nat};

struct NatUser;

impl Engine for NatUser {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "nat-ungranted".to_owned(),
            version: "0.0.0".to_owned(),
            description: "test engine that imports nat".to_owned(),
        }
    }

    fn host_status(_host: HostConfig) -> Result<HostCounters> {
        let rules = nat::list_rules()?;
        Err(openidcs_sdk::Error::Failed(format!(
            "{} rules",
            rules.len()
        )))
    }
}

openidcs_sdk::export_engine!(NatUser);
