//! openidcs: a VM control-panel server whose hypervisor engines are
//! WebAssembly component plugins. See ARCHITECTURE.md for the map.

pub mod api;
pub mod auth;
pub mod caps;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod model;
pub mod plugin;
pub mod service;
pub mod sessions;
pub mod state;
pub mod store;
pub mod tasks;
pub mod tls;
