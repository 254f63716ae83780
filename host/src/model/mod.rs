//! The one typed model: what the store keeps, what services compute, what
//! the API takes and answers, and what its OpenAPI document describes. Each
//! type derives `ToSchema` so that the document is the code; each rule
//! lives once in [`rules`]. This module depends on nothing of the server's
//! own: every layer above imports it.

pub mod console;
pub mod event;
pub mod host;
pub mod network;
pub mod panel;
pub mod rules;
pub mod system;
pub mod task;
pub mod token;
pub mod vm;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use console::{
    ConsoleCounters, ConsoleLimits, ConsoleSessionAnswer, ConsoleSessionInput, ConsoleWsQuery,
};
pub use host::{
    CpuCounters, CpuSetting, HostCreate, HostDetail, HostPowers, HostSettings, HostState,
    HostStatus, HostStatusAnswer, HostUpdate, HostView, ImageMap, IpPool, MASKED, StatusSource,
};
pub use network::{IpAddInput, NatAddInput, NatRule, NicView, ProxyAddInput, ProxyView};
pub use rules::Invalid;
pub use system::{
    EngineView, LogEntry, LogQuery, MAX_PAGE, NatReconciled, ProxyReconciled, Reconciled,
    ReloadAnswer, ReloadedPlugin, SnapshotAnswer, Statistics, TaskEntry, TaskQuery, TokenAnswer,
    TokenInput,
};
pub use task::{Finished, Mutation, Removal, TaskRunning};
pub use token::{Role, TokenCreate, TokenCreated, TokenView};
pub use vm::{
    ConsoleUrl, DiskSettings, NicSettings, OsImageView, PanelStatus, PasswordAnswer,
    PasswordApplied, PasswordInput, PowerAnswer, PowerCommand, PowerStatus, Sample, SampleView,
    ScanAnswer, ScanInput, TempLoginQuery, TempTokenAnswer, UploadAnswer, VmDetail, VmListItem,
    VmPowers, VmSettings, VmStatusAnswer, VmView,
};

/// An update body: the keys present replace the stored values, the others
/// stay (`server/update`'s `config`, `client/update`); also a plan's values.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(value_type = Object)]
pub struct Patch(serde_json::Map<String, serde_json::Value>);

impl Patch {
    /// Remove `key` and answer it when it is a string (`plan` of a create).
    pub fn take_text(&mut self, key: &str) -> Option<String> {
        match self.0.remove(key)? {
            serde_json::Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// `base`'s keys, then this patch's over them.
    pub fn over(self, base: &Patch) -> Patch {
        let mut merged = base.0.clone();
        merged.extend(self.0);
        Patch(merged)
    }

    /// `current` with this patch applied, decoded again (errors name
    /// `prefix.field`); `keep(key, value)` false leaves a key as it is.
    pub fn apply<T: Serialize + DeserializeOwned>(
        self,
        current: &T,
        prefix: &str,
        keep: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> Result<T, Invalid> {
        let mut merged = match serde_json::to_value(current) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => serde_json::Map::new(),
        };
        for (key, value) in self.0 {
            if keep(&key, &value) {
                merged.insert(key, value);
            }
        }
        rules::decode(prefix, serde_json::Value::Object(merged))
    }
}

/// The one answer shape of the API: `{code, msg, data}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    /// The HTTP status (200 on success), unless `always_http_200`.
    #[schema(example = 200)]
    pub code: u16,
    /// `success`, or what went wrong (a bad input names the field and the rule).
    #[schema(example = "success")]
    pub msg: String,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn success(data: T) -> Envelope<T> {
        Envelope {
            code: 200,
            msg: "success".to_owned(),
            data,
        }
    }
}

/// A successful answer encoded once, to be sent many times (a cached
/// listing): cloning it shares the bytes.
#[derive(Clone, Debug)]
pub struct EncodedAnswer(pub bytes::Bytes);

impl EncodedAnswer {
    pub fn encode<T: Serialize>(data: &T) -> Result<EncodedAnswer, serde_json::Error> {
        serde_json::to_vec(&Envelope::success(data)).map(|bytes| EncodedAnswer(bytes.into()))
    }
}
