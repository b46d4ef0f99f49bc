//! devid's Mosquitto 2.0 plugin (`libdevid_mosquitto.so`): DEVID-1 enhanced authentication, the
//! mutual-TLS path, topic ACLs from the service's policy, live revocation from the service's feed,
//! and connection events reported to the service.
//!
//! Layout:
//! - [`ffi`]: hand-written declarations of the Mosquitto API and the host's rules;
//! - this file: the exported entry points and callbacks, each a few lines behind a panic
//!   boundary that fails closed, marshalling to [`engine`];
//! - [`engine`]: the broker-thread logic (no FFI), keyed by connection;
//! - [`devid1`]: the adapter to `devid_core::protocol`'s server half, plus the mutual-TLS check;
//! - [`service`]: the background thread (device feed, device status, events);
//! - [`refusal`]: why a device or a message is refused (reason code, name, log text);
//! - [`state`], [`policy`], [`cidr`], [`config`]: safe building blocks.
//!
//! Configuration: see README / `docs` (`plugin_opt_service_url`, `token_file`, `trust_anchor`,
//! `broker_cert`, `broker_key`, `state_dir`, `max_staleness`, `auth_timeout`, `broker_name`,
//! and the handshake bounds `max_pending_handshakes`, `max_pending_per_address`, `hello_rate`,
//! `hello_burst`).
//! `per_listener_settings` must be `false`: with `true` TICK never fires, so revocations could
//! not be applied; the plugin refuses to load twice and refuses every device when no TICK
//! arrives.

pub mod cidr;
pub mod config;
pub mod devid1;
pub mod engine;
pub mod ffi;
pub mod policy;
pub mod refusal;
pub mod service;
pub mod state;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::engine::{AuthOutcome, ConnKey, Engine, Expired, MessageVerdict};
use crate::ffi::*;
use crate::policy::Access;
use crate::service::{FromService, LogLevel, Shared};

/// Everything the plugin holds, behind the `userdata` pointer. Only the broker thread touches
/// it (the service thread has its own `Arc`s).
struct Plugin {
    id: *mut mosquitto_plugin_id_t,
    engine: RefCell<Engine<devid1::Devid1Server>>,
    service: RefCell<service::Handle>,
}

/// One instance per process: a second `mosquitto_plugin_init` means the plugin is configured
/// per listener (`per_listener_settings true`) or listed twice.
static LOADED: AtomicBool = AtomicBool::new(false);

const EVENTS: &[c_int] = &[
    MOSQ_EVT_EXT_AUTH_START,
    MOSQ_EVT_EXT_AUTH_CONTINUE,
    MOSQ_EVT_BASIC_AUTH,
    MOSQ_EVT_ACL_CHECK,
    MOSQ_EVT_MESSAGE,
    MOSQ_EVT_TICK,
    MOSQ_EVT_DISCONNECT,
];

#[cfg(not(test))]
fn log(level: LogLevel, msg: &str) {
    let level = match level {
        LogLevel::Info => MOSQ_LOG_INFO,
        LogLevel::Notice => MOSQ_LOG_NOTICE,
        LogLevel::Warning => MOSQ_LOG_WARNING,
        LogLevel::Error => MOSQ_LOG_ERR,
    };
    let line = CString::new(msg.replace('\0', "?")).unwrap_or_default();
    // SAFETY: a "%s" format with one NUL-terminated string argument; broker thread only.
    unsafe { mosquitto_log_printf(level, c"%s".as_ptr(), line.as_ptr()) };
}

/// Unit tests run without a broker: lines go to a thread-local list instead.
#[cfg(test)]
fn log(level: LogLevel, msg: &str) {
    tests::LOGS.with(|l| l.borrow_mut().push((level, msg.to_string())));
}

/// A borrowed view of a NUL-terminated UTF-8 string (None for NULL or non-UTF-8).
///
/// # Safety
/// `p` is NULL or NUL-terminated and stays valid and unchanged for `'a`.
unsafe fn borrowed_str<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated and alive for 'a by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Copies a C string the broker lends us; None for NULL or non-UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn opt_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .ok()
        .map(str::to_string)
}

/// # Safety
/// `client` is a live connection handed to a callback.
unsafe fn client_info(client: *const mosquitto) -> (Option<String>, Option<String>) {
    // SAFETY: the broker's accessors accept any live client.
    unsafe {
        (
            opt_str(mosquitto_client_id(client)),
            opt_str(mosquitto_client_address(client)),
        )
    }
}

/// Runs `f` behind a panic boundary; a panic yields `on_panic` (fail closed).
fn guard(on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(_) => {
            // Logging itself could be what panicked; keep this minimal.
            let _ = catch_unwind(|| {
                log(
                    LogLevel::Error,
                    "devid: internal error (panic) in a callback; failing closed",
                )
            });
            on_panic
        }
    }
}

/// # Safety
/// `userdata` is the pointer registered by `mosquitto_plugin_init` (or NULL).
unsafe fn plugin<'a>(userdata: *mut c_void) -> Option<&'a Plugin> {
    // SAFETY: userdata is a leaked Box<Plugin> until cleanup unregisters every callback.
    unsafe { (userdata as *const Plugin).as_ref() }
}

fn flush_logs(p: &Plugin) {
    let logs = match p.engine.try_borrow_mut() {
        Ok(mut e) => e.take_logs(),
        Err(_) => return,
    };
    for (level, line) in logs {
        log(level, &line);
    }
}

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

/// Why `mosquitto_plugin_init` refuses to load the plugin (logged as a configuration error).
#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("the plugin is loaded twice: set `per_listener_settings false` and list it once")]
    LoadedTwice,
    #[error("an option key or value is not UTF-8")]
    OptionNotUtf8,
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Start(#[from] service::StartError),
    #[error("cannot register callback for event {event}: error {rc}")]
    Register { event: c_int, rc: c_int },
}

fn init(
    id: *mut mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    opts: Vec<(String, String)>,
) -> Result<(), InitError> {
    if LOADED.swap(true, Ordering::SeqCst) {
        return Err(InitError::LoadedTwice);
    }
    let result = init_once(id, userdata, opts);
    if result.is_err() {
        LOADED.store(false, Ordering::SeqCst);
    }
    result
}

fn init_once(
    id: *mut mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    opts: Vec<(String, String)>,
) -> Result<(), InitError> {
    let config = config::Config::from_options(&opts)?;
    let server = devid1::Devid1Server::new(&config)?;
    // A cache that cannot be read is not trusted at all: start empty and forget the contact
    // time, so every device is refused until the feed has caught up from the beginning.
    let (cached, contact) = match state::RevocationState::load(&config.state_dir) {
        Ok(cached) => (cached, state::load_contact(&config.state_dir)),
        Err(e) => {
            log(
                LogLevel::Error,
                &format!("devid: revocation cache unusable ({e}); starting empty and refusing every device until the service is reached"),
            );
            (None, None)
        }
    };
    log(
        LogLevel::Info,
        &format!(
            "devid: plugin starting; service {}, cached revocation state: {}",
            config.service_url,
            match &cached {
                Some(s) => format!(
                    "seq {}, {} serials, {} devices",
                    s.seq,
                    s.serials.len(),
                    s.devices.len()
                ),
                None => "none".into(),
            }
        ),
    );
    let shared = Arc::new(Mutex::new(Shared {
        revocations: cached.unwrap_or_default(),
        last_contact: contact,
    }));
    let handle = service::start(config.clone(), shared.clone())?;
    let engine = Engine::new(config, server, shared, Some(handle.to_service.clone()));
    let p = Box::into_raw(Box::new(Plugin {
        id,
        engine: RefCell::new(engine),
        service: RefCell::new(handle),
    }));
    for &ev in EVENTS {
        // SAFETY: id comes from the broker; callback and userdata stay valid until cleanup.
        let rc =
            unsafe { mosquitto_callback_register(id, ev, callback, std::ptr::null(), p.cast()) };
        if rc != MOSQ_ERR_SUCCESS {
            // SAFETY: p came from Box::into_raw above and no callback can be running (init runs
            // on the broker thread before any client).
            unsafe { teardown(p) };
            return Err(InitError::Register { event: ev, rc });
        }
    }
    // SAFETY: the broker passes a valid out-pointer.
    unsafe { *userdata = p.cast() };
    Ok(())
}

/// Unregisters callbacks, stops the service thread, frees the plugin.
///
/// # Safety
/// `p` came from `Box::into_raw` in `init` and is not used afterwards.
unsafe fn teardown(p: *mut Plugin) {
    // SAFETY: per the contract.
    let plugin = unsafe { Box::from_raw(p) };
    for &ev in EVENTS {
        // SAFETY: unregistering a callback that may or may not be registered is harmless.
        unsafe { mosquitto_callback_unregister(plugin.id, ev, callback, std::ptr::null()) };
    }
    plugin.service.borrow_mut().stop();
    // Lines the service thread produced while stopping.
    let late: Vec<FromService> = plugin.service.borrow().from_service.try_iter().collect();
    for m in late {
        if let FromService::Log(level, line) = m {
            log(level, &line);
        }
    }
    drop(plugin);
    LOADED.store(false, Ordering::SeqCst);
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
        // SAFETY: options as the broker passes them.
        let result = unsafe { collect_options(opts, n) }.and_then(|o| init(id, userdata, o));
        match result {
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
            unsafe { teardown(userdata.cast()) };
        }
        MOSQ_ERR_SUCCESS
    })
}

/// The single registered callback; dispatches on the event.
unsafe extern "C" fn callback(
    event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    let fail = match event {
        MOSQ_EVT_ACL_CHECK | MOSQ_EVT_MESSAGE => MOSQ_ERR_ACL_DENIED,
        MOSQ_EVT_TICK | MOSQ_EVT_DISCONNECT => MOSQ_ERR_SUCCESS,
        _ => MOSQ_ERR_AUTH,
    };
    guard(fail, || {
        // SAFETY: userdata registered by init.
        let Some(p) = (unsafe { plugin(userdata) }) else {
            return fail;
        };
        if event_data.is_null() {
            return fail;
        }
        // SAFETY (all arms): event_data points to the struct that matches `event`.
        let rc = unsafe {
            match event {
                MOSQ_EVT_EXT_AUTH_START => on_ext_auth(p, &mut *event_data.cast(), true),
                MOSQ_EVT_EXT_AUTH_CONTINUE => on_ext_auth(p, &mut *event_data.cast(), false),
                MOSQ_EVT_BASIC_AUTH => on_basic_auth(p, &*event_data.cast()),
                MOSQ_EVT_ACL_CHECK => on_acl(p, &*event_data.cast()),
                MOSQ_EVT_MESSAGE => on_message(p, &mut *event_data.cast()),
                MOSQ_EVT_TICK => on_tick(p),
                MOSQ_EVT_DISCONNECT => on_disconnect(p, &*event_data.cast()),
                _ => fail,
            }
        };
        flush_logs(p);
        rc
    })
}

/// A host allocator: the broker frees what it returns (`libc::malloc`, `mosquitto_malloc`).
type HostAlloc = unsafe extern "C" fn(usize) -> *mut c_void;

/// Copies `bytes` into a fresh buffer of at least one byte from `alloc`, for the broker to free;
/// Err when the allocation fails.
fn host_copy(alloc: HostAlloc, bytes: &[u8]) -> Result<*mut c_void, ()> {
    // SAFETY: an allocation of a non-zero size, checked for NULL, filled before handing it over.
    unsafe {
        let buf = alloc(bytes.len().max(1)).cast::<u8>();
        if buf.is_null() {
            return Err(());
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
        Ok(buf.cast())
    }
}

/// Copies `bytes` into a libc-malloc'd buffer for `data_out` (the broker frees it with free()).
fn set_data_out(ev: &mut mosquitto_evt_extended_auth, bytes: &[u8]) -> Result<(), ()> {
    ev.data_out = std::ptr::null_mut();
    ev.data_out_len = 0;
    if bytes.is_empty() {
        return Ok(());
    }
    let len = u16::try_from(bytes.len()).map_err(|_| ())?;
    ev.data_out = host_copy(libc::malloc, bytes)?;
    ev.data_out_len = len;
    Ok(())
}

/// # Safety
/// `ev` is the broker's extended-auth event for this call.
unsafe fn on_ext_auth(p: &Plugin, ev: &mut mosquitto_evt_extended_auth, start: bool) -> c_int {
    let key = ev.client as ConnKey;
    if ev.client.is_null() {
        return MOSQ_ERR_AUTH;
    }
    // SAFETY: live client; strings valid for the call.
    let (cid, addr) = unsafe { client_info(ev.client) };
    let data: &[u8] = if ev.data_in.is_null() || ev.data_in_len == 0 {
        &[]
    } else {
        // SAFETY: the broker passes data_in_len bytes.
        unsafe { std::slice::from_raw_parts(ev.data_in.cast(), usize::from(ev.data_in_len)) }
    };
    let outcome = {
        let Ok(mut engine) = p.engine.try_borrow_mut() else {
            return MOSQ_ERR_AUTH;
        };
        if start {
            // SAFETY: auth_method is NULL or a string valid for the call.
            let method = unsafe { opt_str(ev.auth_method) };
            engine.auth_start(
                key,
                method.as_deref(),
                data,
                cid.as_deref(),
                addr.as_deref(),
            )
        } else {
            engine.auth_continue(key, data, cid.as_deref(), addr.as_deref())
        }
    };
    match outcome {
        AuthOutcome::Continue(out) => match set_data_out(ev, &out) {
            Ok(()) => MOSQ_ERR_AUTH_CONTINUE,
            Err(()) => MOSQ_ERR_AUTH,
        },
        AuthOutcome::Success(out) => {
            if set_data_out(ev, &out).is_err() {
                return MOSQ_ERR_AUTH;
            }
            // The CONNECT username is never checked on this path: clear it so nothing trusts it.
            // SAFETY: live client; NULL clears.
            unsafe { mosquitto_set_username(ev.client, std::ptr::null()) };
            MOSQ_ERR_SUCCESS
        }
        AuthOutcome::Deny => MOSQ_ERR_AUTH,
        AuthOutcome::Defer => MOSQ_ERR_PLUGIN_DEFER,
    }
}

/// The client certificate of a TLS connection, as DER.
///
/// # Safety
/// `client` is a live connection.
unsafe fn client_certificate_der(client: *const mosquitto) -> Option<Vec<u8>> {
    // SAFETY: returns NULL or a new X509 reference that we free below.
    let x509 = unsafe { mosquitto_client_certificate(client) };
    if x509.is_null() {
        return None;
    }
    // SAFETY: x509 is valid until X509_free; i2d_X509 with NULL out returns the length, then
    // writes exactly that many bytes and advances the pointer.
    unsafe {
        let len = i2d_X509(x509, std::ptr::null_mut());
        let der = if len > 0 {
            let mut buf = vec![0u8; len as usize];
            let mut ptr = buf.as_mut_ptr();
            let written = i2d_X509(x509, &mut ptr);
            (written == len).then_some(buf)
        } else {
            None
        };
        X509_free(x509);
        der
    }
}

/// # Safety
/// `ev` is the broker's basic-auth event for this call.
unsafe fn on_basic_auth(p: &Plugin, ev: &mosquitto_evt_basic_auth) -> c_int {
    if ev.client.is_null() {
        return MOSQ_ERR_AUTH;
    }
    // SAFETY: live client.
    let (cid, addr) = unsafe { client_info(ev.client) };
    // SAFETY: live client.
    let cert = unsafe { client_certificate_der(ev.client) };
    let outcome = {
        let Ok(mut engine) = p.engine.try_borrow_mut() else {
            return MOSQ_ERR_AUTH;
        };
        engine.basic_auth(
            ev.client as ConnKey,
            cert.as_deref(),
            cid.as_deref(),
            addr.as_deref(),
        )
    };
    match outcome {
        AuthOutcome::Success(_) => MOSQ_ERR_SUCCESS,
        _ => MOSQ_ERR_AUTH,
    }
}

/// # Safety
/// `ev` is the broker's ACL event for this call.
unsafe fn on_acl(p: &Plugin, ev: &mosquitto_evt_acl_check) -> c_int {
    let access = match ev.access {
        MOSQ_ACL_WRITE => Access::Publish,
        MOSQ_ACL_SUBSCRIBE => Access::Subscribe,
        MOSQ_ACL_READ => Access::Deliver,
        _ => return MOSQ_ERR_ACL_DENIED,
    };
    // SAFETY: topic is NULL or valid for the call.
    let Some(topic) = (unsafe { opt_str(ev.topic) }) else {
        return MOSQ_ERR_ACL_DENIED;
    };
    let Ok(engine) = p.engine.try_borrow() else {
        return MOSQ_ERR_ACL_DENIED;
    };
    if engine.acl(ev.client as ConnKey, access, &topic) {
        MOSQ_ERR_SUCCESS
    } else {
        MOSQ_ERR_ACL_DENIED
    }
}

/// Incoming PUBLISH: only devid-authenticated clients may publish at all; per-message
/// authentication decides; `devid-*` user properties a client sent itself are always
/// stripped, and `devid-verified` = ClientID is added to verified messages, so subscribers can
/// trust it.
///
/// This runs on the broker's only thread for every message, so the property list is read once:
/// the same pass collects the `devid-*` pairs for the check and remembers their nodes to unlink.
///
/// # Safety
/// `ev` is the broker's message event for this call.
unsafe fn on_message(p: &Plugin, ev: &mut mosquitto_evt_message) -> c_int {
    // SAFETY: the property list belongs to the message for this call.
    let devid = unsafe { DevidProperties::read(ev.properties) };
    let payload: &[u8] = if ev.payload.is_null() || ev.payloadlen == 0 {
        &[]
    } else {
        // SAFETY: the broker passes payloadlen bytes.
        unsafe { std::slice::from_raw_parts(ev.payload.cast(), ev.payloadlen as usize) }
    };
    // SAFETY: topic is NULL or valid for the call.
    let topic = unsafe { borrowed_str(ev.topic) }.unwrap_or_default();
    let verdict = match p.engine.try_borrow_mut() {
        Ok(mut engine) => engine.message(ev.client as ConnKey, topic, &devid.pairs(), payload),
        Err(_) => return MOSQ_ERR_ACL_DENIED,
    };
    match verdict {
        MessageVerdict::Refuse => MOSQ_ERR_ACL_DENIED,
        MessageVerdict::Disconnect => MOSQ_ERR_ADMINISTRATIVE_ACTION,
        MessageVerdict::Accept { verified, payload } => {
            // SAFETY: the nodes were read from this very list during this call.
            unsafe { devid.unlink_from(&mut ev.properties) };
            if let Some(new) = payload {
                // SAFETY: see replace_payload.
                if unsafe { replace_payload(ev, &new) }.is_err() {
                    return MOSQ_ERR_ACL_DENIED;
                }
            }
            if let Some(cid) = verified {
                let Ok(value) = CString::new(cid) else {
                    return MOSQ_ERR_ACL_DENIED;
                };
                // SAFETY: appends a copy of both strings to the message's list.
                let rc = unsafe {
                    mosquitto_property_add_string_pair(
                        &mut ev.properties,
                        MQTT_PROP_USER_PROPERTY,
                        c"devid-verified".as_ptr(),
                        value.as_ptr(),
                    )
                };
                if rc != MOSQ_ERR_SUCCESS {
                    return MOSQ_ERR_ACL_DENIED;
                }
            }
            MOSQ_ERR_SUCCESS
        }
    }
}

/// Replaces the payload with a `mosquitto_malloc` copy (the broker frees the old one).
///
/// # Safety
/// `ev` is the broker's message event for this call.
unsafe fn replace_payload(ev: &mut mosquitto_evt_message, new: &[u8]) -> Result<(), ()> {
    let len = u32::try_from(new.len()).map_err(|_| ())?;
    ev.payload = host_copy(mosquitto_malloc, new)?;
    ev.payloadlen = len;
    Ok(())
}

/// The `devid-*` user properties of one message: their name/value copies (made by
/// `mosquitto_property_read_string_pair`, freed on drop) and their nodes in the list.
struct DevidProperties {
    /// (node, name, value); name and value are NUL-terminated mosquitto allocations.
    found: Vec<(*mut mosquitto_property, *mut c_char, *mut c_char)>,
}

impl DevidProperties {
    /// One pass over `list`. A pair whose name is not UTF-8 cannot be a `devid-*` name; one
    /// whose value is not UTF-8 is kept for stripping and passed on as an empty value (which
    /// no check accepts).
    ///
    /// # Safety
    /// `list` is NULL or a live property list that stays unchanged while `self` lives, except
    /// through `unlink_from`.
    unsafe fn read(list: *mut mosquitto_property) -> DevidProperties {
        let mut found = Vec::new();
        let mut node = list;
        while !node.is_null() {
            // SAFETY: live node; reads this node only (skip_first false; the answer must be this
            // node); both strings are mosquitto-allocated copies, kept or freed below.
            unsafe {
                if mosquitto_property_identifier(node) == MQTT_PROP_USER_PROPERTY {
                    let mut name: *mut c_char = std::ptr::null_mut();
                    let mut value: *mut c_char = std::ptr::null_mut();
                    let hit = mosquitto_property_read_string_pair(
                        node,
                        MQTT_PROP_USER_PROPERTY,
                        &mut name,
                        &mut value,
                        false,
                    );
                    if hit == node
                        && !name.is_null()
                        && CStr::from_ptr(name).to_bytes().starts_with(b"devid-")
                    {
                        found.push((node, name, value));
                    } else {
                        mosquitto_free(name.cast());
                        mosquitto_free(value.cast());
                    }
                }
                node = mosquitto_property_next(node).cast_mut();
            }
        }
        DevidProperties { found }
    }

    /// (name, value) pairs borrowed from the copies.
    fn pairs(&self) -> Vec<(&str, &str)> {
        self.found
            .iter()
            .filter_map(|&(_, name, value)| {
                // SAFETY: NUL-terminated copies owned by self (value may be NULL).
                let name = unsafe { borrowed_str(name) }?;
                let value = unsafe { borrowed_str(value) }.unwrap_or_default();
                Some((name, value))
            })
            .collect()
    }

    /// Unlinks the found nodes from the list and frees them.
    ///
    /// The list is Mosquitto's `struct mqtt5__property`, a singly linked list whose first field
    /// is `next` (lib/property_mosq.h, stable since 1.6); it is relinked in place and each
    /// removed node freed with the broker's own `mosquitto_property_free_all` on a one-node list.
    ///
    /// # Safety
    /// `head` is the list `read` walked, unchanged since.
    unsafe fn unlink_from(&self, head: &mut *mut mosquitto_property) {
        if self.found.is_empty() {
            return;
        }
        let mut link: *mut *mut mosquitto_property = head;
        // SAFETY: every node comes from the broker's list; `next` is the first field.
        unsafe {
            while !(*link).is_null() {
                let node = *link;
                if self.found.iter().any(|&(n, _, _)| n == node) {
                    let next_field = node.cast::<*mut mosquitto_property>();
                    *link = *next_field;
                    *next_field = std::ptr::null_mut();
                    let mut single = node;
                    mosquitto_property_free_all(&mut single);
                } else {
                    link = node.cast::<*mut mosquitto_property>();
                }
            }
        }
    }
}

impl Drop for DevidProperties {
    fn drop(&mut self) {
        for &(_, name, value) in &self.found {
            // SAFETY: both were allocated by mosquitto for this struct (or are NULL), freed once.
            unsafe {
                mosquitto_free(name.cast());
                mosquitto_free(value.cast());
            }
        }
    }
}

fn on_tick(p: &Plugin) -> c_int {
    let inbox: Vec<FromService> = match p.service.try_borrow() {
        Ok(s) => s.from_service.try_iter().collect(),
        Err(_) => return MOSQ_ERR_SUCCESS,
    };
    let (kicks, expired) = match p.engine.try_borrow_mut() {
        Ok(mut e) => {
            let kicks = e.tick(inbox);
            (kicks, e.expired_handshakes())
        }
        Err(_) => return MOSQ_ERR_SUCCESS,
    };
    flush_logs(p);
    // SAFETY: broker thread; every key is a live connection (see close_connections).
    unsafe { close_connections(&expired) };
    // No borrow is held here: a kick re-enters DISCONNECT synchronously.
    for cid in kicks {
        if let Ok(c) = CString::new(cid) {
            // SAFETY: broker thread, NUL-terminated id.
            unsafe { mosquitto_kick_client_by_clientid(c.as_ptr(), false) };
        }
    }
    MOSQ_ERR_SUCCESS
}

/// Closes connections whose handshake did not finish in time. Mosquitto 2.0.11 has no call to
/// close one given connection, and kicking by ClientID is out of the question (an unfinished
/// connection is not in the ClientID index, so the kick would hit the authenticated connection
/// of that ClientID, if any). So each connection gets the same fresh random username (128 bits:
/// no other connection can carry it; DEVID-1 connections have none once authenticated) and one
/// `mosquitto_kick_client_by_username` pass closes exactly those (DISCONNECT 0x98 for MQTT v5).
///
/// # Safety
/// Broker thread, no borrow of the engine held; every key is a live connection: the engine
/// keeps a key only until that connection's DISCONNECT, which Mosquitto runs before freeing it.
unsafe fn close_connections(expired: &[Expired]) {
    if expired.is_empty() {
        return;
    }
    let mut bytes = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        log(
            LogLevel::Error,
            "devid: no randomness to close timed-out handshakes; they stay open",
        );
        return;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let Ok(mark) = CString::new(format!("devid-closing-{hex}")) else {
        return;
    };
    let mut marked = 0usize;
    for e in expired {
        let client = e.key as *mut mosquitto;
        if !e.reauth {
            // SAFETY: live connection in its first exchange (per the contract).
            unsafe { forget_pending_client_id(client) };
        }
        // SAFETY: live connection; the broker copies the string.
        if unsafe { mosquitto_set_username(client, mark.as_ptr()) } == MOSQ_ERR_SUCCESS {
            marked += 1;
        } else {
            log(
                LogLevel::Error,
                "devid: cannot mark a timed-out handshake for closing; it stays open",
            );
        }
    }
    if marked > 0 {
        // SAFETY: broker thread, non-NULL username; re-enters DISCONNECT for each (no borrow
        // is held).
        unsafe { mosquitto_kick_client_by_username(mark.as_ptr(), false) };
    }
}

/// Blanks the ClientID of a connection that ends in its first DEVID-1 exchange.
///
/// Mosquitto 2.0.11 sets a connection's ClientID at CONNECT but adds it to its ClientID index
/// only once authenticated; yet when any connection ends, the broker looks its ClientID up in
/// the index and removes what it finds (`context__remove_from_by_id`). For an unfinished
/// exchange that is the *authenticated* connection of the same ClientID, which then can no
/// longer be kicked (revocation) nor taken over. A device certificate is public, so anyone
/// could do that by sending a replayed ClientHello with a victim's ClientID and hanging up.
/// Overwriting the unfinished connection's ClientID in place (same length, all `#`, which no
/// admitted ClientID contains) before the broker's lookup makes the lookup miss. The broker's
/// own log line for that connection then shows the `#`s; the plugin's lines name the ClientID.
///
/// # Safety
/// Broker thread; `client` is live and in its first exchange (not in the ClientID index),
/// about to end.
unsafe fn forget_pending_client_id(client: *const mosquitto) {
    // SAFETY: live client; the id is NULL or the broker's own NUL-terminated heap copy, which
    // is overwritten in place without changing its length.
    unsafe {
        let id = mosquitto_client_id(client).cast_mut();
        if !id.is_null() {
            let len = libc::strlen(id);
            std::ptr::write_bytes(id.cast::<u8>(), b'#', len);
        }
    }
}

fn on_disconnect(p: &Plugin, ev: &mosquitto_evt_disconnect) -> c_int {
    if let Ok(mut e) = p.engine.try_borrow_mut() {
        let key = ev.client as ConnKey;
        if !ev.client.is_null() && e.in_first_handshake(key) {
            // The broker removes this connection's ClientID from its index right after this
            // callback: see forget_pending_client_id.
            // SAFETY: DISCONNECT runs on the broker thread for a live connection that ends.
            unsafe { forget_pending_client_id(ev.client) };
        }
        e.disconnect(key);
    }
    MOSQ_ERR_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        pub(super) static LOGS: RefCell<Vec<(LogLevel, String)>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn panic_in_a_callback_fails_closed_and_is_logged() {
        let rc = guard(MOSQ_ERR_AUTH, || panic!("boom"));
        assert_eq!(rc, MOSQ_ERR_AUTH);
        let rc = guard(MOSQ_ERR_ACL_DENIED, || panic!("boom"));
        assert_eq!(rc, MOSQ_ERR_ACL_DENIED);
        assert_eq!(guard(MOSQ_ERR_AUTH, || MOSQ_ERR_SUCCESS), MOSQ_ERR_SUCCESS);
        LOGS.with(|l| {
            let l = l.borrow();
            assert_eq!(l.len(), 2);
            assert!(l[0].1.contains("failing closed"));
        });
    }

    #[test]
    fn data_out_is_a_libc_malloc_copy() {
        let mut ev = mosquitto_evt_extended_auth {
            future: std::ptr::null_mut(),
            client: std::ptr::null_mut(),
            data_in: std::ptr::null(),
            data_out: std::ptr::null_mut(),
            data_in_len: 0,
            data_out_len: 0,
            auth_method: std::ptr::null(),
            future2: [std::ptr::null_mut(); 3],
        };
        set_data_out(&mut ev, b"server hello").expect("alloc");
        assert_eq!(ev.data_out_len, 12);
        // SAFETY: data_out holds data_out_len bytes from libc malloc; freed the way the broker
        // frees it.
        unsafe {
            let got = std::slice::from_raw_parts(ev.data_out.cast::<u8>(), 12);
            assert_eq!(got, b"server hello");
            libc::free(ev.data_out);
        }
        set_data_out(&mut ev, b"").expect("empty");
        assert!(ev.data_out.is_null());
        assert_eq!(ev.data_out_len, 0);
        assert!(
            set_data_out(&mut ev, &vec![0u8; 65_536]).is_err(),
            "over 65535 bytes"
        );
        assert!(ev.data_out.is_null());
    }

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
