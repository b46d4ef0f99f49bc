//! devid's Mosquitto 2.0 plugin (`libdevid_mosquitto.so`): DEVID-1 enhanced authentication, the
//! mutual-TLS path, topic ACLs from the service's policy, live revocation from the service's feed,
//! and connection events reported to the service.
//!
//! Layout:
//! - this file: the three functions Mosquitto looks up in the library (`mosquitto_plugin_version`,
//!   `_init`, `_cleanup`), each a few lines behind a panic boundary that fails closed;
//! - [`ffi`]: the rest of the FFI boundary: hand-written declarations of the Mosquitto API and
//!   the host's rules, and the marshalling of every callback to the engine;
//! - `plugin`: the plugin instance (start from the options, TICK, stop);
//! - [`engine`]: the broker-thread logic (no FFI), keyed by connection;
//! - [`devid1`]: the adapter to `devid_core::protocol`'s server half, plus the mutual-TLS check;
//! - [`ca_set`]: the CA certificates a mutual-TLS leaf is chained through (the service's set);
//! - [`service`]: the background thread (device feed, device status, events, renewals);
//! - [`relay`]: renewal over MQTT, the service thread's side (request relayed, answer to reply);
//! - [`refusal`]: why a device or a message is refused (reason code, name, log text);
//! - [`state`], [`policy`], [`cidr`], [`config`]: safe building blocks.
//!
//! Only this file and [`ffi`] contain `unsafe`; every other module denies it
//! (`tests/unsafe_boundary.rs`).
//!
//! Configuration: see README / `docs` (`plugin_opt_service_url`, `token_file`, `trust_anchor`,
//! `broker_cert`, `broker_key`, `state_dir`, `max_staleness`, `auth_timeout`, `broker_name`,
//! and the handshake bounds `max_pending_handshakes`, `max_pending_per_address`, `hello_rate`,
//! `hello_burst`).
//! `per_listener_settings` must be `false`: with `true` TICK never fires, so revocations could
//! not be applied; the plugin refuses to load twice and refuses every device when no TICK
//! arrives.

pub mod ca_set;
pub mod cidr;
pub mod config;
pub mod devid1;
pub mod engine;
pub mod ffi;
mod plugin;
pub mod policy;
pub mod refusal;
pub mod relay;
pub mod service;
pub mod state;

use std::ffi::{c_int, c_void};

use crate::ffi::host::*;
use crate::ffi::{guard, log};
use crate::service::LogLevel;

/// # Safety
/// Called by Mosquitto: `versions` points to `count` ints (NULL is refused).
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_version(count: c_int, versions: *const c_int) -> c_int {
    guard(-1, || {
        if versions.is_null() || count <= 0 {
            return -1;
        }
        // SAFETY: the broker passes `count` ints.
        let offered = unsafe { std::slice::from_raw_parts(versions, count as usize) };
        if offered.contains(&5) {
            5
        } else {
            -1
        }
    })
}

/// # Safety
/// Called once by Mosquitto on its thread with valid `id` and `userdata` pointers and `n`
/// options at `opts`.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_init(
    id: *mut mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    opts: *mut mosquitto_opt,
    n: c_int,
) -> c_int {
    guard(MOSQ_ERR_UNKNOWN, || {
        if id.is_null() || userdata.is_null() {
            return MOSQ_ERR_INVAL;
        }
        // SAFETY: non-NULL id and out-pointer, options as the broker passes them.
        match unsafe { ffi::init::load(id, userdata, opts, n) } {
            Ok(()) => {
                log(LogLevel::Info, "devid: plugin loaded");
                MOSQ_ERR_SUCCESS
            }
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("devid: plugin configuration error: {e}. Refusing to start."),
                );
                MOSQ_ERR_INVAL
            }
        }
    })
}

/// # Safety
/// Called once by Mosquitto at shutdown with the `userdata` that init stored.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    userdata: *mut c_void,
    _opts: *mut mosquitto_opt,
    _n: c_int,
) -> c_int {
    guard(MOSQ_ERR_UNKNOWN, || {
        if !userdata.is_null() {
            // SAFETY: userdata is the Box<Plugin> from init; cleanup is the last call.
            unsafe { ffi::init::unload(userdata.cast()) };
        }
        MOSQ_ERR_SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_version_accepts_only_5() {
        // SAFETY: valid arrays of the given lengths.
        unsafe {
            assert_eq!(mosquitto_plugin_version(4, [5, 4, 3, 2].as_ptr()), 5);
            assert_eq!(mosquitto_plugin_version(3, [4, 3, 2].as_ptr()), -1);
            assert_eq!(mosquitto_plugin_version(0, std::ptr::null()), -1);
        }
    }
}
