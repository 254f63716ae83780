//! Turning a `[[plugin]]` entry into something callable: read, compile (or
//! take the precompiled artifact from the cache), check the component's
//! imports against its grants, link, pre-instantiate.
//!
//! Everything here is blocking and CPU-heavy; the registry runs it on the
//! blocking pool. Every failure becomes the plugin's load error, shown by
//! `GET /api/system/engine`; none stops the server.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::{EnginePre, OLDER_WIT_VERSIONS, WIT_VERSION};
use super::instance::CallState;
use crate::caps;
use crate::config::{Grant, PluginConfig};

/// What loading produced, before `describe` is called.
pub struct Compiled {
    pub pre: EnginePre,
    pub wit_version: String,
    pub imports: Vec<String>,
    pub cache_hit: bool,
    pub compile_ms: u64,
}

/// wasmtime 48 has its own error type; bring it into anyhow to add context.
pub fn into_anyhow<T>(result: wasmtime::Result<T>) -> anyhow::Result<T> {
    result.map_err(anyhow::Error::from)
}

/// What a component file is, as far as its header tells.
#[derive(Debug, PartialEq, Eq)]
pub enum WasmKind {
    Component,
    CoreModule,
    NotWasm,
}

/// `\0asm` then a 4-byte version/layer field: layer 1 is a component.
pub fn sniff(bytes: &[u8]) -> WasmKind {
    match bytes {
        [0x00, 0x61, 0x73, 0x6d, _, _, 0x01, 0x00, ..] => WasmKind::Component,
        [0x00, 0x61, 0x73, 0x6d, _, _, 0x00, 0x00, ..] => WasmKind::CoreModule,
        _ => WasmKind::NotWasm,
    }
}

/// Read and compile a component file, refusing anything that is not one.
pub fn compile_file(engine: &Engine, path: &Path) -> anyhow::Result<(Vec<u8>, Component)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match sniff(&bytes) {
        WasmKind::Component => {}
        WasmKind::CoreModule => bail!(
            "{} is a core WebAssembly module, not a component (build the plugin with --target wasm32-wasip2)",
            path.display()
        ),
        WasmKind::NotWasm => bail!("{} is not a WebAssembly component", path.display()),
    }
    let component = into_anyhow(Component::new(engine, &bytes))
        .with_context(|| format!("compiling {}", path.display()))?;
    Ok((bytes, component))
}

/// Where the precompiled artifact of these bytes lives for this engine
/// configuration: content hash plus the engine's compatibility hash, so a
/// wasmtime upgrade or a config change never loads a stale artifact.
fn cache_path(engine: &Engine, bytes: &[u8], cache_dir: &Path) -> PathBuf {
    let content_hash = Sha256::digest(bytes);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut name = String::with_capacity(80);
    for byte in content_hash {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push_str(&format!("-{:016x}.cwasm", hasher.finish()));
    cache_dir.join(name)
}

fn load_component(
    engine: &Engine,
    path: &Path,
    cache_dir: &Path,
) -> anyhow::Result<(Component, bool)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let cached = cache_path(engine, &bytes, cache_dir);
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of this
        // server into its own data directory, under a name that binds it to
        // these exact bytes and this engine configuration.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok((component, true)),
            Err(error) => tracing::warn!(
                "ignoring unusable cache file {}: {error:#}",
                cached.display()
            ),
        }
    }
    let (_, component) = compile_file(engine, path)?;
    let serialized =
        into_anyhow(component.serialize()).context("serializing the compiled component")?;
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let temporary = cached.with_extension("tmp");
    std::fs::write(&temporary, serialized)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &cached)
        .with_context(|| format!("renaming to {}", cached.display()))?;
    Ok((component, false))
}

/// A version as numbers, for ordering (`"0.2.0"` → `(0, 2, 0)`); missing or
/// unreadable parts count as 0.
pub fn version_key(version: &str) -> (u64, u64, u64) {
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// Is a plugin's `openidcs:engine` version one this server speaks? Its own
/// or one of the older ones it keeps, by semver: same major, and while the
/// major is 0, same minor.
pub fn version_compatible(version: &str) -> bool {
    fn major_minor(version: &str) -> Option<(u64, u64)> {
        let mut parts = version.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
    let Some((major, minor)) = major_minor(version) else {
        return false;
    };
    std::iter::once(WIT_VERSION)
        .chain(OLDER_WIT_VERSIONS.iter().copied())
        .filter_map(major_minor)
        .any(|(known_major, known_minor)| {
            major == known_major && (major != 0 || minor == known_minor)
        })
}

/// The interfaces a component imports and the WIT version of its engine
/// export, checked against what the operator granted. The message names the
/// plugin and the interface, before linking could fail with a bare
/// "missing import".
pub fn check_interfaces(
    engine: &Engine,
    component: &Component,
    plugin_name: &str,
    grants: &[Grant],
) -> anyhow::Result<(String, Vec<String>)> {
    let component_type = component.component_type();
    let mut imports = Vec::new();
    for (name, _) in component_type.imports(engine) {
        imports.push(name.to_owned());
        if name.starts_with("wasi:http/") {
            if !grants.contains(&Grant::Http) {
                bail!(
                    "plugin {plugin_name} imports {name} but is not granted \"http\"; add it to the \
                     plugin's grants in the config to let it reach its hosts' APIs"
                );
            }
            continue;
        }
        if name.starts_with("wasi:") {
            continue;
        }
        let Some(rest) = name.strip_prefix("openidcs:engine/") else {
            bail!("plugin {plugin_name} imports {name}, which this server does not provide");
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if !version_compatible(version) {
            bail!(
                "plugin {plugin_name} imports {name}, but this server speaks openidcs:engine@{WIT_VERSION} \
                 (and loads {})",
                OLDER_WIT_VERSIONS.join(", ")
            );
        }
        if interface == "types" {
            continue;
        }
        match Grant::from_interface(interface) {
            Some(grant) if grants.contains(&grant) => {}
            Some(_) => bail!(
                "plugin {plugin_name} imports openidcs:engine/{interface} but is not granted {interface:?} \
                 (grants: [{}]); add it to the plugin's grants in the config to allow it",
                grants
                    .iter()
                    .map(|grant| grant.interface())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => {
                bail!("plugin {plugin_name} imports {name}, which this server does not provide")
            }
        }
    }
    let exports: Vec<String> = component_type
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let wit_version = exports
        .iter()
        .find_map(|name| name.strip_prefix("openidcs:engine/engine@"))
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow!(
                "plugin {plugin_name} does not export openidcs:engine/engine (exports: [{}])",
                exports.join(", ")
            )
        })?;
    if !version_compatible(&wit_version) {
        bail!(
            "plugin {plugin_name} exports openidcs:engine/engine@{wit_version}, \
             but this server speaks openidcs:engine@{WIT_VERSION}"
        );
    }
    Ok((wit_version, imports))
}

/// Compile (or take from cache), check and pre-instantiate one plugin.
pub fn prepare(
    engine: &Engine,
    config: &PluginConfig,
    cache_dir: &Path,
) -> anyhow::Result<Compiled> {
    let started = Instant::now();
    let (component, cache_hit) = load_component(engine, &config.path, cache_dir)
        .with_context(|| format!("loading plugin {}", config.name))?;
    let (wit_version, imports) =
        check_interfaces(engine, &component, &config.name, &config.grants)?;
    let mut linker: Linker<CallState> = Linker::new(engine);
    into_anyhow(wasmtime_wasi::p2::add_to_linker_async(&mut linker)).context("linking WASI")?;
    into_anyhow(caps::link(&mut linker, &config.grants)).context("linking capabilities")?;
    into_anyhow(super::v0_1::link(&mut linker, &config.grants))
        .context("linking capabilities under their 0.1.0 names")?;
    let instance_pre = into_anyhow(linker.instantiate_pre(&component))
        .with_context(|| format!("pre-instantiating plugin {}", config.name))?;
    let pre = EnginePre::new(instance_pre, &wit_version).map_err(|missing| {
        anyhow::anyhow!(
            "plugin {} does not have the engine-plugin shape: {missing}",
            config.name
        )
    })?;
    Ok(Compiled {
        pre,
        wit_version,
        imports,
        cache_hit,
        compile_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_version(version: &str, expected: bool) {
        assert_eq!(version_compatible(version), expected, "version {version:?}");
    }

    #[test]
    fn versions() {
        check_version("0.1.0", true);
        check_version("0.1.7", true);
        check_version("0.2.0", true);
        check_version("0.2.3", true);
        check_version("0.3.0", false);
        check_version("1.1.0", false);
        check_version("", false);
        check_version("x.y", false);
    }

    #[test]
    fn version_order() {
        assert!(version_key("0.2.0") > version_key("0.1.0"));
        assert!(version_key("0.10.0") > version_key("0.9.1"));
        assert_eq!(version_key("x"), (0, 0, 0));
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"\0asm\x0d\x00\x01\x00rest"), WasmKind::Component);
        assert_eq!(sniff(b"\0asm\x01\x00\x00\x00rest"), WasmKind::CoreModule);
        assert_eq!(sniff(b"#!/bin/sh\n"), WasmKind::NotWasm);
        assert_eq!(sniff(b""), WasmKind::NotWasm);
    }
}
