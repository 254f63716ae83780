//! Services: the panel's logic between the handlers and the store/plugins.
//! They take and answer the model's types and fail with [`ServiceError`];
//! nothing here knows HTTP.

pub mod console;
pub mod convert;
pub mod error;
pub mod hosts;
pub mod listup;
pub mod network;
pub mod panel;
pub mod poller;
pub mod provision;
pub mod signon;
pub mod system;
pub mod tokens;
pub mod traffic;
pub mod vms;

pub use error::{ErrorKind, ServiceError, ServiceResult};
