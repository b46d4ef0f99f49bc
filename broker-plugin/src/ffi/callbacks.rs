//! The one callback registered for every event, and the marshalling of each event between the
//! broker's structs and the engine: what comes in is read (and copied where kept), the engine
//! decides, and its answer is written back in the form the broker expects.

use std::ffi::{c_int, c_void, CString};

use super::closing::{close_connections, forget_pending_client_id};
use super::guard;
use super::host::*;
use super::init::plugin;
use super::marshal::{borrowed_str, client_certificate_der, client_info, host_copy, opt_str};
use super::props::DevidProperties;
use super::renewal;
use crate::engine::{AuthOutcome, ConnKey, MessageVerdict};
use crate::plugin::{Plugin, Tick};
use crate::policy::Access;

/// The single registered callback; dispatches on the event.
pub(super) unsafe extern "C" fn callback(
    event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    let fail = match event {
        MOSQ_EVT_ACL_CHECK | MOSQ_EVT_MESSAGE => MOSQ_ERR_ACL_DENIED,
        MOSQ_EVT_TICK | MOSQ_EVT_DISCONNECT | MOSQ_EVT_CONTROL => MOSQ_ERR_SUCCESS,
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
                MOSQ_EVT_CONTROL => renewal::on_control(p, &*event_data.cast()),
                _ => fail,
            }
        };
        p.flush_logs();
        rc
    })
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
            // SAFETY: live client; the username is NULL or valid for the call.
            let username = unsafe { borrowed_str(mosquitto_client_username(ev.client)) };
            engine.connecting_with(cid.as_deref(), username);
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
        // SAFETY: username is NULL or a string valid for the call.
        engine.connecting_with(cid.as_deref(), unsafe { borrowed_str(ev.username) });
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
/// authentication decides; `devid-*` user properties a client sent itself (`devid-verified`
/// and `devid-via` among them) are always stripped, and `devid-verified` = ClientID is added
/// to verified messages, with `devid-via` = the gateway's ClientID for a sensor's reading, so
/// subscribers can trust them.
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
        MessageVerdict::Accept {
            verified,
            via,
            payload,
        } => {
            // SAFETY: the nodes were read from this very list during this call.
            unsafe { devid.unlink_from(&mut ev.properties) };
            if let Some(new) = payload {
                // SAFETY: see replace_payload.
                if unsafe { replace_payload(ev, &new) }.is_err() {
                    return MOSQ_ERR_ACL_DENIED;
                }
            }
            for (name, value) in [(c"devid-verified", verified), (c"devid-via", via)] {
                let Some(value) = value else { continue };
                let Ok(value) = CString::new(value) else {
                    return MOSQ_ERR_ACL_DENIED;
                };
                // SAFETY: appends a copy of both strings to the message's list.
                let rc = unsafe {
                    mosquitto_property_add_string_pair(
                        &mut ev.properties,
                        MQTT_PROP_USER_PROPERTY,
                        name.as_ptr(),
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

fn on_tick(p: &Plugin) -> c_int {
    let Some(Tick {
        kicks,
        expired,
        replies,
    }) = p.tick()
    else {
        return MOSQ_ERR_SUCCESS;
    };
    renewal::publish_replies(&replies);
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
}
