//! The plugin runtime: one wasmtime `Engine` for all plugins, a registry of
//! pre-instantiated engine components, and the per-call machinery.
//!
//! Services call an engine through the typed methods of [`PluginRuntime`]
//! (`vm_get`, `nat_apply`, …, generated in [`bindings`] from the one table of
//! the `engine` export), each given an [`EngineTarget`]: the plugin, the
//! host's scope and what the engine sees of the host.
//!
//! Each engine call gets a new `Store` with fresh capability state, the
//! plugin's memory cap and a deadline, instantiates from the `InstancePre`
//! built at load, calls one export and drops everything. A trap, a panic, a
//! runaway loop or a memory bomb fails that one call and nothing else.

pub mod bindings;
pub mod instance;
pub mod loader;
pub mod v0_1;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::RwLock;
use tokio::sync::Semaphore;
use wasmtime::{
    Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use crate::caps::{CallCaps, Capabilities, HostScope};
use crate::config::PluginConfig;
use crate::store::{LogLevel, NewLog};
use bindings::{EngineCall, EngineInfo, EnginePre, HostConfig, PluginError};
use instance::CallState;

/// Engine calls running at once; more wait for a slot instead of failing
/// when the instance pool is full.
const MAX_CONCURRENT_CALLS: usize = 128;
/// Extra time a call gets, beyond its deadline, to finish a host function
/// before it is abandoned (epochs only interrupt WebAssembly code).
const HOST_GRACE: Duration = Duration::from_secs(2);
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bytes of each pooled linear memory kept mapped between calls; a plugin
/// call rarely dirties more than a few MiB.
const KEEP_RESIDENT_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown engine {0:?}: no plugin of that name is configured")]
    UnknownEngine(String),
    #[error("engine {plugin} is not loaded: {reason}")]
    NotLoaded { plugin: String, reason: String },
    #[error("from engine {plugin} {version}: {}", bindings::describe_error(error))]
    Plugin {
        plugin: String,
        version: String,
        error: PluginError,
    },
    #[error("engine {plugin} trapped in {operation}: {reason}")]
    Trap {
        plugin: String,
        operation: &'static str,
        reason: String,
    },
    #[error("engine {plugin} exceeded its {timeout_ms} ms deadline in {operation}")]
    Timeout {
        plugin: String,
        operation: &'static str,
        timeout_ms: u64,
    },
    #[error("engine {plugin} exceeded its {memory_mb} MiB memory limit in {operation}")]
    MemoryLimit {
        plugin: String,
        operation: &'static str,
        memory_mb: u64,
    },
    #[error("engine {plugin} cannot take calls: the runtime is shutting down")]
    Busy { plugin: String },
}

/// Everything one engine call needs to know about the host it is for.
#[derive(Clone, Debug)]
pub struct EngineTarget {
    /// The plugin (engine) name the host uses.
    pub engine: String,
    /// What capabilities may know about the host (scope checks).
    pub scope: Arc<HostScope>,
    /// What the engine sees of the host (no password).
    pub config: HostConfig,
}

/// One `[[plugin]]` after loading: callable, or with the reason it is not.
pub struct LoadedPlugin {
    pub config: PluginConfig,
    pub name: Arc<str>,
    pub pre: Option<EnginePre>,
    pub info: Option<EngineInfo>,
    pub wit_version: Option<String>,
    pub imports: Vec<String>,
    pub error: Option<String>,
    pub cache_hit: bool,
    pub load_ms: u64,
}

/// A boxed engine invocation: given the export and the store, call one function.
pub type Invocation<'a, R> =
    Pin<Box<dyn Future<Output = wasmtime::Result<Result<R, PluginError>>> + Send + 'a>>;

pub struct PluginRuntime {
    engine: Engine,
    capabilities: Arc<Capabilities>,
    cache_dir: PathBuf,
    plugins: RwLock<Arc<BTreeMap<String, Arc<LoadedPlugin>>>>,
    call_slots: Semaphore,
}

fn base_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Epochs let a runaway guest be interrupted, and let a busy guest give
    // its tokio worker back every tick (see `call`).
    config.epoch_interruption(true);
    config
}

/// The pooling allocator makes a new instance per call cheap (~40 µs vs
/// ~60 µs); it reserves virtual memory up front, so fall back to on-demand
/// allocation where that reservation is refused.
fn build_engine() -> anyhow::Result<Engine> {
    let mut pooling = PoolingAllocationConfig::default();
    let slots = (MAX_CONCURRENT_CALLS + 16) as u32;
    pooling
        .total_component_instances(slots)
        .total_core_instances(slots * 8)
        .total_memories(slots * 2)
        .total_tables(slots * 8)
        .total_stacks(slots)
        .max_memory_size(4 << 30)
        // Reset a freed slot by rewriting only its dirtied pages (Linux
        // PAGEMAP_SCAN, 6.7+; plain memset of the low bytes elsewhere)
        // instead of madvise: no TLB shoot-down on every call and no page
        // faults on the next one. Halves the cost of a fresh instance.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES / 16);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            tracing::warn!("pooling allocator unavailable ({error:#}); using on-demand allocation");
            loader::into_anyhow(Engine::new(&base_config())).context("creating the wasmtime engine")
        }
    }
}

/// One ticker per engine; it holds a weak reference so it ends with the engine.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
        .unwrap_or_else(|error| tracing::error!("cannot start the epoch ticker: {error}"));
}

impl PluginRuntime {
    pub fn new(
        capabilities: Arc<Capabilities>,
        cache_dir: PathBuf,
    ) -> anyhow::Result<PluginRuntime> {
        let engine = build_engine()?;
        start_epoch_ticker(&engine);
        Ok(PluginRuntime {
            engine,
            capabilities,
            cache_dir,
            plugins: RwLock::new(Arc::new(BTreeMap::new())),
            call_slots: Semaphore::new(MAX_CONCURRENT_CALLS),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Load every configured plugin and replace the registry with the result.
    /// A broken plugin is kept with its error; the others load regardless.
    pub async fn load_all(&self, configs: &[PluginConfig]) {
        let mut loaded = BTreeMap::new();
        for config in configs {
            let plugin = self.load_one(config.clone()).await;
            let record = match &plugin.error {
                None => NewLog::new(
                    LogLevel::Info,
                    "plugin-load",
                    format!(
                        "plugin {} loaded ({}, {} ms)",
                        plugin.name,
                        if plugin.cache_hit {
                            "from the precompiled cache"
                        } else {
                            "compiled"
                        },
                        plugin.load_ms
                    ),
                ),
                Some(error) => NewLog::new(
                    LogLevel::Error,
                    "plugin-load",
                    format!("plugin {} refused: {error}", plugin.name),
                ),
            };
            match &plugin.error {
                None => tracing::info!("{}", record.message),
                Some(_) => tracing::error!("{}", record.message),
            }
            if let Err(error) = self.capabilities.store.log_insert(&record) {
                tracing::error!("cannot store a log record: {error}");
            }
            loaded.insert(config.name.clone(), Arc::new(plugin));
        }
        *self.plugins.write() = Arc::new(loaded);
    }

    async fn load_one(&self, config: PluginConfig) -> LoadedPlugin {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let engine = self.engine.clone();
        let cache_dir = self.cache_dir.clone();
        let prepare_config = config.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            loader::prepare(&engine, &prepare_config, &cache_dir)
        })
        .await
        .map_err(|error| anyhow::anyhow!("loader task failed: {error}"))
        .and_then(|result| result);
        let mut plugin = LoadedPlugin {
            config,
            name,
            pre: None,
            info: None,
            wit_version: None,
            imports: Vec::new(),
            error: None,
            cache_hit: false,
            load_ms: 0,
        };
        match prepared {
            Ok(compiled) => {
                plugin.wit_version = Some(compiled.wit_version);
                plugin.imports = compiled.imports;
                plugin.cache_hit = compiled.cache_hit;
                plugin.load_ms = compiled.compile_ms;
                plugin.pre = Some(compiled.pre);
                let describe = self
                    .invoke(&plugin, None, "describe", async |export, store| {
                        // Every function's types are checked once, here;
                        // calls check only the function they make.
                        export.check_types(store)?;
                        export.describe(store).await.map(Ok)
                    })
                    .await;
                match describe {
                    Ok(info) => plugin.info = Some(info),
                    Err(error) => {
                        plugin.pre = None;
                        plugin.error = Some(error.to_string());
                    }
                }
            }
            Err(error) => plugin.error = Some(format!("{error:#}")),
        }
        plugin
    }

    /// The plugins as last loaded, by name.
    pub fn plugins(&self) -> Arc<BTreeMap<String, Arc<LoadedPlugin>>> {
        self.plugins.read().clone()
    }

    pub fn plugin(&self, name: &str) -> Result<Arc<LoadedPlugin>, EngineError> {
        self.plugins()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownEngine(name.to_owned()))
    }

    /// Call one export of engine `engine_name` for `host` in a fresh instance.
    pub async fn call<R>(
        &self,
        engine_name: &str,
        host: Arc<HostScope>,
        operation: &'static str,
        invocation: impl for<'a> FnOnce(&'a EngineCall, &'a mut Store<CallState>) -> Invocation<'a, R>
        + Send,
    ) -> Result<R, EngineError> {
        let plugin = self.plugin(engine_name)?;
        self.invoke(
            &plugin,
            Some(host),
            operation,
            async move |engine, store| invocation(engine, store).await,
        )
        .await
    }

    /// A store for one call of `plugin`: fresh capability state, the
    /// plugin's memory cap, and a deadline `timeout` from now.
    fn new_store(
        &self,
        plugin: &LoadedPlugin,
        host: Option<Arc<HostScope>>,
        timeout: Duration,
    ) -> Store<CallState> {
        let caps = CallCaps::new(&self.capabilities, &plugin.name, host);
        let memory_bytes = (plugin.config.memory_mb as usize) << 20;
        let mut store = Store::new(&self.engine, CallState::new(caps, memory_bytes));
        store.limiter(|state| &mut state.limits);
        let deadline = Instant::now() + timeout;
        // Yield to the executor every tick so a busy guest never holds a
        // tokio worker; interrupt once the call's own deadline has passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// A live instance kept outside the one-call discipline, for the
    /// benchmark of the warm path only (the server never reuses instances).
    #[doc(hidden)]
    pub async fn bench_instance(
        &self,
        engine_name: &str,
        host: Arc<HostScope>,
    ) -> anyhow::Result<(Store<CallState>, EngineCall)> {
        let plugin = self.plugin(engine_name)?;
        let pre = plugin
            .pre
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{engine_name} is not loaded"))?;
        let mut store = self.new_store(&plugin, Some(host), Duration::from_secs(3600));
        let instance = loader::into_anyhow(pre.instantiate(&mut store).await)?;
        Ok((store, instance))
    }

    /// `describe` in a fresh instance, as a host call would pay for it: the
    /// benchmark of the fresh path without a capability call (the server
    /// calls `describe` only at load).
    #[doc(hidden)]
    pub async fn bench_describe(&self, target: &EngineTarget) -> Result<EngineInfo, EngineError> {
        let plugin = self.plugin(&target.engine)?;
        self.invoke(
            &plugin,
            Some(target.scope.clone()),
            "describe",
            async |engine, store| engine.describe(store).await.map(Ok),
        )
        .await
    }

    /// Make one call of `plugin` for `host` in a fresh instance and map
    /// every way it can fail to an [`EngineError`] naming `operation`.
    ///
    /// `invocation` is an async closure so that it may borrow the caller's
    /// arguments (no copies of the host config or the spec per call).
    async fn invoke<R>(
        &self,
        plugin: &LoadedPlugin,
        host: Option<Arc<HostScope>>,
        operation: &'static str,
        invocation: impl AsyncFnOnce(
            &EngineCall,
            &mut Store<CallState>,
        ) -> wasmtime::Result<Result<R, PluginError>>
        + Send,
    ) -> Result<R, EngineError> {
        let plugin_name = plugin.name.to_string();
        let Some(pre) = &plugin.pre else {
            return Err(EngineError::NotLoaded {
                plugin: plugin_name,
                reason: plugin
                    .error
                    .clone()
                    .unwrap_or_else(|| "not loaded".to_owned()),
            });
        };
        let _slot = self
            .call_slots
            .acquire()
            .await
            .map_err(|_| EngineError::Busy {
                plugin: plugin_name.clone(),
            })?;
        let timeout = Duration::from_millis(plugin.config.timeout_ms);
        let mut store = self.new_store(plugin, host, timeout);
        let outcome = tokio::time::timeout(timeout + HOST_GRACE, async {
            let engine = pre.instantiate(&mut store).await?;
            invocation(&engine, &mut store).await
        })
        .await;
        let memory_denied = store.data().limits.denied;
        let mut state = store.into_data();
        for line in state.stdout.lines() {
            state.caps.log.write(LogLevel::Info, &line);
        }
        let stderr_lines = state.stderr.lines();
        for line in &stderr_lines {
            state.caps.log.write(LogLevel::Warn, line);
        }
        state.caps.log.finish();
        let timed_out = || EngineError::Timeout {
            plugin: plugin_name.clone(),
            operation,
            timeout_ms: plugin.config.timeout_ms,
        };
        match outcome {
            Err(_elapsed) => Err(timed_out()),
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => Err(EngineError::Plugin {
                plugin: plugin_name,
                version: plugin
                    .info
                    .as_ref()
                    .map(|info| info.version.clone())
                    .unwrap_or_default(),
                error,
            }),
            Ok(Err(_)) if memory_denied => Err(EngineError::MemoryLimit {
                plugin: plugin_name,
                operation,
                memory_mb: plugin.config.memory_mb,
            }),
            Ok(Err(error)) if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(timed_out())
            }
            Ok(Err(error)) => {
                let mut reason = error.root_cause().to_string();
                // A Rust panic prints "thread ... panicked at FILE:LINE:" and
                // then its message on stderr before aborting.
                if let Some(position) = stderr_lines
                    .iter()
                    .position(|line| line.contains("panicked at"))
                {
                    let message = stderr_lines
                        .get(position + 1)
                        .map(String::as_str)
                        .unwrap_or_default();
                    reason = format!("{reason} ({} {message})", stderr_lines[position]);
                }
                Err(EngineError::Trap {
                    plugin: plugin_name,
                    operation,
                    reason,
                })
            }
        }
    }
}

/// Report what a component file is and what it imports and exports, or why
/// it would be refused (`openidcs plugin check`).
pub fn check_file(path: &std::path::Path) -> anyhow::Result<String> {
    let engine =
        loader::into_anyhow(Engine::new(&base_config())).context("creating the wasmtime engine")?;
    let (_, component) = loader::compile_file(&engine, path)?;
    let component_type = component.component_type();
    let mut report = String::new();
    report.push_str(&format!("component: {}\n", path.display()));
    for (name, _) in component_type.exports(&engine) {
        report.push_str(&format!("export: {name}\n"));
    }
    for (name, _) in component_type.imports(&engine) {
        report.push_str(&format!("import: {name}\n"));
    }
    let all_grants = crate::config::Grant::ALL;
    let (wit_version, _) = loader::check_interfaces(&engine, &component, "(checked)", &all_grants)?;
    let mut needed: Vec<&str> = component_type
        .imports(&engine)
        .filter_map(|(name, _)| name.strip_prefix("openidcs:engine/"))
        .filter_map(|rest| rest.split('@').next())
        .filter(|interface| *interface != "types")
        .collect();
    if component_type
        .imports(&engine)
        .any(|(name, _)| name.starts_with("wasi:http/"))
    {
        needed.push(crate::config::Grant::Http.interface());
    }
    report.push_str(&format!("wit version: {wit_version}\n"));
    report.push_str(&format!("grants needed: [{}]\n", needed.join(", ")));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::bindings::{Nic, PortForward, PowerAction, ProxySite, VmSpec};
    use super::*;

    fn send<T: Send>(_: T) {}

    /// Services await engine calls in spawned tasks and axum handlers, so
    /// every call's future must be `Send` (checked by compiling this).
    #[test]
    fn engine_calls_are_send() {
        let _ = |runtime: &PluginRuntime,
                 target: &EngineTarget,
                 spec: &VmSpec,
                 forward: &PortForward,
                 nic: &Nic,
                 site: &ProxySite| {
            send(runtime.host_status(target));
            send(runtime.vm_list(target));
            send(runtime.vm_get(target, "vm"));
            send(runtime.vm_create(target, spec));
            send(runtime.vm_update(target, spec));
            send(runtime.vm_delete(target, "vm"));
            send(runtime.vm_power(target, "vm", PowerAction::Start));
            send(runtime.vm_usage(target));
            send(runtime.vm_console(target, "vm"));
            send(runtime.vm_scan(target, "vm"));
            send(runtime.nat_apply(target, "vm", forward));
            send(runtime.nat_remove(target, "vm", forward));
            send(runtime.ip_apply(target, "vm", nic));
            send(runtime.ip_remove(target, "vm", nic));
            send(runtime.proxy_apply(target, "vm", site));
            send(runtime.proxy_remove(target, "vm", site));
            send(runtime.bench_describe(target));
        };
    }
}
