//! Loading and unloading: the options Mosquitto passes to `mosquitto_plugin_init`, the callbacks
//! registered for the plugin's events, and the `userdata` pointer that carries the [`Plugin`]
//! from init to every callback and to cleanup.

use std::ffi::{c_int, c_void};

use super::callbacks::callback;
use super::host::*;
use super::marshal::opt_str;
use crate::plugin::{InitError, Plugin};

/// The events the plugin registers [`callback`] for.
const EVENTS: &[c_int] = &[
    MOSQ_EVT_EXT_AUTH_START,
    MOSQ_EVT_EXT_AUTH_CONTINUE,
    MOSQ_EVT_BASIC_AUTH,
    MOSQ_EVT_ACL_CHECK,
    MOSQ_EVT_MESSAGE,
    MOSQ_EVT_TICK,
    MOSQ_EVT_DISCONNECT,
];

/// Collects `plugin_opt_*` pairs.
///
/// # Safety
/// `opts` points to `n` options with NUL-terminated keys and values (or is NULL with n == 0).
unsafe fn collect_options(
    opts: *const mosquitto_opt,
    n: c_int,
) -> Result<Vec<(String, String)>, InitError> {
    if n <= 0 || opts.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: the broker passes `n` options.
    let opts = unsafe { std::slice::from_raw_parts(opts, n as usize) };
    let mut out = Vec::new();
    for o in opts {
        // SAFETY: NULL-checked inside; strings valid for the call.
        let (k, v) = unsafe { (opt_str(o.key), opt_str(o.value)) };
        match (k, v) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => return Err(InitError::OptionNotUtf8),
        }
    }
    Ok(out)
}

/// Starts the plugin from the broker's options, registers its callbacks and stores it in
/// `*userdata`.
///
/// # Safety
/// Called from `mosquitto_plugin_init` on the broker thread: `id` is the broker's non-NULL
/// identifier, `userdata` a valid out-pointer, and `opts` points to `n` options.
pub(crate) unsafe fn load(
    id: *mut mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    opts: *const mosquitto_opt,
    n: c_int,
) -> Result<(), InitError> {
    // SAFETY: options as the broker passes them.
    let opts = unsafe { collect_options(opts, n) }?;
    let p = Box::into_raw(Box::new(Plugin::start(id, &opts)?));
    for &ev in EVENTS {
        // SAFETY: id comes from the broker; callback and userdata stay valid until cleanup.
        let rc =
            unsafe { mosquitto_callback_register(id, ev, callback, std::ptr::null(), p.cast()) };
        if rc != MOSQ_ERR_SUCCESS {
            // SAFETY: p came from Box::into_raw above and no callback can be running (init runs
            // on the broker thread before any client).
            unsafe { unload(p) };
            return Err(InitError::Register { event: ev, rc });
        }
    }
    // Renewal requests: MOSQ_EVT_CONTROL for the one topic (never delivered to subscribers).
    let topic = super::renewal::topic();
    // SAFETY: as above; the broker copies the topic.
    let rc = unsafe {
        mosquitto_callback_register(
            id,
            MOSQ_EVT_CONTROL,
            callback,
            topic.as_ptr().cast(),
            p.cast(),
        )
    };
    if rc != MOSQ_ERR_SUCCESS {
        // SAFETY: as above.
        unsafe { unload(p) };
        return Err(InitError::Register {
            event: MOSQ_EVT_CONTROL,
            rc,
        });
    }
    // SAFETY: the broker passes a valid out-pointer.
    unsafe { *userdata = p.cast() };
    Ok(())
}

/// Unregisters callbacks, stops the service thread, frees the plugin.
///
/// # Safety
/// `p` came from `Box::into_raw` in [`load`] and is not used afterwards.
pub(crate) unsafe fn unload(p: *mut Plugin) {
    // SAFETY: per the contract.
    let plugin = unsafe { Box::from_raw(p) };
    for &ev in EVENTS {
        // SAFETY: unregistering a callback that may or may not be registered is harmless.
        unsafe { mosquitto_callback_unregister(plugin.id, ev, callback, std::ptr::null()) };
    }
    let topic = super::renewal::topic();
    // SAFETY: as above; the control callback is found by its topic.
    unsafe {
        mosquitto_callback_unregister(plugin.id, MOSQ_EVT_CONTROL, callback, topic.as_ptr().cast())
    };
    plugin.stop();
}

/// The plugin behind a callback's `userdata`.
///
/// # Safety
/// `userdata` is the pointer registered by [`load`] (or NULL).
pub(super) unsafe fn plugin<'a>(userdata: *mut c_void) -> Option<&'a Plugin> {
    // SAFETY: userdata is a leaked Box<Plugin> until cleanup unregisters every callback.
    unsafe { (userdata as *const Plugin).as_ref() }
}
