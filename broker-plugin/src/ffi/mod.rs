//! The FFI boundary: everything that touches the broker's memory or calls into it. With lib.rs
//! (the exported entry points) these are the only files of the plugin that may contain `unsafe`
//! (`tests/unsafe_boundary.rs`); each unsafe operation states the host rule it relies on, and
//! those rules are written down once, in [`host`].
//!
//! - [`host`]: hand-written declarations of the Mosquitto API, the host's invariants, and the
//!   layout assertions for every struct the plugin reads or writes;
//! - `panic`: the panic boundary every entry point and callback runs behind (fails closed);
//! - `log`: lines to the broker's log;
//! - `marshal`: borrowed and copied C strings, client identity and certificate, buffers
//!   allocated for the broker to free, the host name;
//! - `init`: options in, callbacks registered and unregistered, the `userdata` pointer;
//! - `callbacks`: the one registered callback and its per-event marshalling to the engine;
//! - `props`: the `devid-*` user properties of a PUBLISH, read once and unlinked in place;
//! - `closing`: closing connections whose handshake timed out;
//! - `renewal`: the `$CONTROL/devid/renew/v1` event in, the renewal replies out.
//!
//! What is decided, and the plugin's life cycle, are safe code elsewhere (`crate::plugin`,
//! `crate::engine`); this module only translates.

mod callbacks;
mod closing;
pub mod host;
pub(crate) mod init;
mod log;
mod marshal;
mod panic;
mod props;
mod renewal;

pub(crate) use log::log;
pub(crate) use marshal::host_name;
pub(crate) use panic::guard;
