//! Services: the panel's logic between the handlers and the store/plugins.

pub mod console;
pub mod hosts;
pub mod listup;
pub mod network;
pub mod poller;
pub mod system;
pub mod validate;
pub mod vms;
