//! Hand-written declarations of the Mosquitto 2.0.11 plugin API (mosquitto_broker.h,
//! mosquitto_plugin.h, mosquitto.h) and the two OpenSSL functions the broker's own libcrypto
//! provides. Layouts are x86-64/aarch64 LP64, checked against the 2.0.11 headers; the
//! size and offset assertions below cover every struct the plugin reads or writes and fail the
//! build on a mismatch.
//!
//! Host invariants (the rules Mosquitto imposes, relied on by every module of `ffi` and lib.rs):
//! - Every callback runs on the broker's single thread; no `mosquitto_*` function may be called
//!   from any other thread.
//! - `data_out` of the extended-auth events is freed by the broker with `free()`: allocate it
//!   with libc `malloc`.
//! - Strings handed to callbacks (`client_id`, `address`, `topic`, `auth_method`) live only for
//!   the call: copy what is kept.
//! - `mosquitto_kick_client_by_clientid` runs the DISCONNECT callback synchronously, inside the
//!   call. So does `mosquitto_kick_client_by_username`, which walks every connection (not the
//!   ClientID index) and kicks each whose username equals the argument (NULL: those without
//!   one, so never pass NULL).
//! - A connection in its first enhanced-authentication exchange has its ClientID set but is not
//!   in the broker's ClientID index (it is added only once authenticated), so kicking by
//!   ClientID cannot reach it and would hit the authenticated connection of that ClientID.
//!   When such a connection ends, 2.0.11 still removes "its" ClientID from the index, which
//!   takes out the authenticated connection's entry: see `ffi::closing::forget_pending_client_id`.
//! - Mosquitto calls the DISCONNECT callback for a connection before it frees it, so a
//!   `struct mosquitto *` the plugin still holds state for is live.
//! - `mosquitto_client_certificate` returns a new reference: release it with `X509_free`.
//! - `MOSQ_EVT_CONTROL` is registered per topic (the topic is the `event_data` of
//!   `mosquitto_callback_register`/`_unregister`, and must start with `$CONTROL/`). A client
//!   PUBLISH to that exact topic passes the ACL `WRITE` check, then reaches this callback alone:
//!   it is never queued for subscribers, and QoS 1/2 is acknowledged with 0x00 whatever the
//!   callback returns. The event's strings, payload and properties live for the call only.
//! - `mosquitto_broker_publish_copy(client_id, ...)` copies the payload and queues the message;
//!   it is delivered at the start of the next main-loop pass straight into that client's queue:
//!   no subscription needed, no ACL checked (the `READ` check runs on the subscription path,
//!   and when a persisted session is resumed); dropped if that ClientID is not connected. On
//!   success the broker owns (and frees) `properties`; on failure the caller frees them.
//! - `mosquitto_property_read_binary` hands back a `calloc` copy: free it with `free()`.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_long, c_void};

/// Opaque `struct mosquitto` (one client connection).
#[repr(C)]
pub struct mosquitto {
    _private: [u8; 0],
}

/// Opaque `mosquitto_plugin_id_t`.
#[repr(C)]
pub struct mosquitto_plugin_id_t {
    _private: [u8; 0],
}

/// Opaque `mosquitto_property` (a linked list of MQTT v5 properties).
#[repr(C)]
pub struct mosquitto_property {
    _private: [u8; 0],
}

#[repr(C)]
pub struct mosquitto_opt {
    pub key: *mut c_char,
    pub value: *mut c_char,
}

pub const MOSQ_ERR_AUTH_CONTINUE: c_int = -4;
pub const MOSQ_ERR_SUCCESS: c_int = 0;
pub const MOSQ_ERR_NOMEM: c_int = 1;
pub const MOSQ_ERR_INVAL: c_int = 3;
pub const MOSQ_ERR_NOT_SUPPORTED: c_int = 10;
pub const MOSQ_ERR_AUTH: c_int = 11;
pub const MOSQ_ERR_ACL_DENIED: c_int = 12;
pub const MOSQ_ERR_UNKNOWN: c_int = 13;
pub const MOSQ_ERR_PLUGIN_DEFER: c_int = 17;
pub const MOSQ_ERR_ADMINISTRATIVE_ACTION: c_int = 30;

pub const MOSQ_ACL_READ: c_int = 0x01;
pub const MOSQ_ACL_WRITE: c_int = 0x02;
pub const MOSQ_ACL_SUBSCRIBE: c_int = 0x04;

pub const MOSQ_LOG_INFO: c_int = 0x01;
pub const MOSQ_LOG_NOTICE: c_int = 0x02;
pub const MOSQ_LOG_WARNING: c_int = 0x04;
pub const MOSQ_LOG_ERR: c_int = 0x08;

pub const MOSQ_EVT_ACL_CHECK: c_int = 2;
pub const MOSQ_EVT_BASIC_AUTH: c_int = 3;
pub const MOSQ_EVT_EXT_AUTH_START: c_int = 4;
pub const MOSQ_EVT_EXT_AUTH_CONTINUE: c_int = 5;
pub const MOSQ_EVT_CONTROL: c_int = 6;
pub const MOSQ_EVT_MESSAGE: c_int = 7;
pub const MOSQ_EVT_TICK: c_int = 9;
pub const MOSQ_EVT_DISCONNECT: c_int = 10;

pub const MQTT_PROP_CORRELATION_DATA: c_int = 9;
pub const MQTT_PROP_USER_PROPERTY: c_int = 38;

#[repr(C)]
pub struct mosquitto_evt_acl_check {
    pub future: *mut c_void,
    pub client: *mut mosquitto,
    pub topic: *const c_char,
    pub payload: *const c_void,
    pub properties: *mut mosquitto_property,
    pub access: c_int,
    pub payloadlen: u32,
    pub qos: u8,
    pub retain: bool,
    pub future2: [*mut c_void; 4],
}

#[repr(C)]
pub struct mosquitto_evt_basic_auth {
    pub future: *mut c_void,
    pub client: *mut mosquitto,
    pub username: *mut c_char,
    pub password: *mut c_char,
    pub future2: [*mut c_void; 4],
}

#[repr(C)]
pub struct mosquitto_evt_extended_auth {
    pub future: *mut c_void,
    pub client: *mut mosquitto,
    pub data_in: *const c_void,
    pub data_out: *mut c_void,
    pub data_in_len: u16,
    pub data_out_len: u16,
    pub auth_method: *const c_char,
    pub future2: [*mut c_void; 3],
}

#[repr(C)]
pub struct mosquitto_evt_message {
    pub future: *mut c_void,
    pub client: *mut mosquitto,
    pub topic: *mut c_char,
    pub payload: *mut c_void,
    pub properties: *mut mosquitto_property,
    pub reason_string: *mut c_char,
    pub payloadlen: u32,
    pub qos: u8,
    pub reason_code: u8,
    pub retain: bool,
    pub future2: [*mut c_void; 4],
}

#[repr(C)]
pub struct mosquitto_evt_control {
    pub future: *mut c_void,
    pub client: *mut mosquitto,
    pub topic: *const c_char,
    pub payload: *const c_void,
    pub properties: *const mosquitto_property,
    pub reason_string: *mut c_char,
    pub payloadlen: u32,
    pub qos: u8,
    pub reason_code: u8,
    pub retain: bool,
    pub future2: [*mut c_void; 4],
}

#[repr(C)]
pub struct mosquitto_evt_tick {
    pub future: *mut c_void,
    pub now_ns: c_long,
    pub next_ns: c_long,
    pub now_s: libc::time_t,
    pub next_s: libc::time_t,
    pub future2: [*mut c_void; 4],
}

#[repr(C)]
pub struct mosquitto_evt_disconnect {
    pub future: *mut c_void,
    pub client: *mut mosquitto,
    pub reason: c_int,
    pub future2: [*mut c_void; 4],
}

// Every struct the plugin reads or writes, checked against the C layout of the 2.0.11
// declarations in mosquitto_broker.h and mosquitto.h (x86-64/aarch64 LP64, as gcc lays them
// out): a field moved or retyped here fails the build.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<mosquitto_opt>() == 16);
    assert!(offset_of!(mosquitto_opt, value) == 8);
    assert!(size_of::<mosquitto_evt_acl_check>() == 88);
    assert!(offset_of!(mosquitto_evt_acl_check, client) == 8);
    assert!(offset_of!(mosquitto_evt_acl_check, topic) == 16);
    assert!(offset_of!(mosquitto_evt_acl_check, access) == 40);
    assert!(offset_of!(mosquitto_evt_acl_check, payloadlen) == 44);
    assert!(offset_of!(mosquitto_evt_acl_check, qos) == 48);
    assert!(offset_of!(mosquitto_evt_acl_check, retain) == 49);
    assert!(size_of::<mosquitto_evt_basic_auth>() == 64);
    assert!(offset_of!(mosquitto_evt_basic_auth, client) == 8);
    assert!(offset_of!(mosquitto_evt_basic_auth, username) == 16);
    assert!(offset_of!(mosquitto_evt_basic_auth, password) == 24);
    assert!(size_of::<mosquitto_evt_message>() == 88);
    assert!(offset_of!(mosquitto_evt_message, client) == 8);
    assert!(offset_of!(mosquitto_evt_message, topic) == 16);
    assert!(offset_of!(mosquitto_evt_message, payload) == 24);
    assert!(offset_of!(mosquitto_evt_message, properties) == 32);
    assert!(offset_of!(mosquitto_evt_message, reason_string) == 40);
    assert!(offset_of!(mosquitto_evt_message, payloadlen) == 48);
    assert!(offset_of!(mosquitto_evt_message, qos) == 52);
    assert!(offset_of!(mosquitto_evt_message, reason_code) == 53);
    assert!(offset_of!(mosquitto_evt_message, retain) == 54);
    assert!(size_of::<mosquitto_evt_control>() == 88);
    assert!(offset_of!(mosquitto_evt_control, client) == 8);
    assert!(offset_of!(mosquitto_evt_control, topic) == 16);
    assert!(offset_of!(mosquitto_evt_control, payload) == 24);
    assert!(offset_of!(mosquitto_evt_control, properties) == 32);
    assert!(offset_of!(mosquitto_evt_control, payloadlen) == 48);
    assert!(offset_of!(mosquitto_evt_control, qos) == 52);
    assert!(size_of::<mosquitto_evt_tick>() == 72);
    assert!(size_of::<mosquitto_evt_disconnect>() == 56);
    assert!(offset_of!(mosquitto_evt_disconnect, client) == 8);
    assert!(offset_of!(mosquitto_evt_disconnect, reason) == 16);
    assert!(size_of::<mosquitto_evt_extended_auth>() == 72);
    assert!(offset_of!(mosquitto_evt_extended_auth, client) == 8);
    assert!(offset_of!(mosquitto_evt_extended_auth, data_in) == 16);
    assert!(offset_of!(mosquitto_evt_extended_auth, data_out) == 24);
    assert!(offset_of!(mosquitto_evt_extended_auth, data_in_len) == 32);
    assert!(offset_of!(mosquitto_evt_extended_auth, data_out_len) == 34);
    assert!(offset_of!(mosquitto_evt_extended_auth, auth_method) == 40);
};

pub type MOSQ_FUNC_generic_callback =
    unsafe extern "C" fn(event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int;

extern "C" {
    pub fn mosquitto_callback_register(
        identifier: *mut mosquitto_plugin_id_t,
        event: c_int,
        cb_func: MOSQ_FUNC_generic_callback,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int;
    pub fn mosquitto_callback_unregister(
        identifier: *mut mosquitto_plugin_id_t,
        event: c_int,
        cb_func: MOSQ_FUNC_generic_callback,
        event_data: *const c_void,
    ) -> c_int;
    pub fn mosquitto_log_printf(level: c_int, fmt: *const c_char, ...);
    pub fn mosquitto_client_address(client: *const mosquitto) -> *const c_char;
    pub fn mosquitto_client_id(client: *const mosquitto) -> *const c_char;
    /// The CONNECT's User Name (NULL when none), as the broker holds it now.
    pub fn mosquitto_client_username(client: *const mosquitto) -> *const c_char;
    pub fn mosquitto_client_certificate(client: *const mosquitto) -> *mut c_void;
    pub fn mosquitto_client_protocol_version(client: *const mosquitto) -> c_int;
    pub fn mosquitto_set_username(client: *mut mosquitto, username: *const c_char) -> c_int;
    pub fn mosquitto_kick_client_by_clientid(clientid: *const c_char, with_will: bool) -> c_int;
    pub fn mosquitto_kick_client_by_username(username: *const c_char, with_will: bool) -> c_int;

    pub fn mosquitto_property_next(
        proplist: *const mosquitto_property,
    ) -> *const mosquitto_property;
    pub fn mosquitto_property_identifier(property: *const mosquitto_property) -> c_int;
    pub fn mosquitto_property_read_string_pair(
        proplist: *const mosquitto_property,
        identifier: c_int,
        name: *mut *mut c_char,
        value: *mut *mut c_char,
        skip_first: bool,
    ) -> *const mosquitto_property;
    pub fn mosquitto_property_free_all(properties: *mut *mut mosquitto_property);
    pub fn mosquitto_property_add_string_pair(
        proplist: *mut *mut mosquitto_property,
        identifier: c_int,
        name: *const c_char,
        value: *const c_char,
    ) -> c_int;
    pub fn mosquitto_property_read_binary(
        proplist: *const mosquitto_property,
        identifier: c_int,
        value: *mut *mut c_void,
        len: *mut u16,
        skip_first: bool,
    ) -> *const mosquitto_property;
    pub fn mosquitto_property_add_binary(
        proplist: *mut *mut mosquitto_property,
        identifier: c_int,
        value: *const c_void,
        len: u16,
    ) -> c_int;
    pub fn mosquitto_broker_publish_copy(
        clientid: *const c_char,
        topic: *const c_char,
        payloadlen: c_int,
        payload: *const c_void,
        qos: c_int,
        retain: bool,
        properties: *mut mosquitto_property,
    ) -> c_int;
    pub fn mosquitto_free(mem: *mut c_void);
    pub fn mosquitto_malloc(size: usize) -> *mut c_void;

    // From the broker's libcrypto, already loaded in the process: declared here rather than linked,
    // so the plugin has no OpenSSL linkage of its own.
    pub fn i2d_X509(x: *mut c_void, out: *mut *mut u8) -> c_int;
    pub fn X509_free(x: *mut c_void);
    pub fn CRYPTO_free(ptr: *mut c_void, file: *const c_char, line: c_int);
}
