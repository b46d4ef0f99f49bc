//! Renewal over MQTT at the boundary: the `MOSQ_EVT_CONTROL` event of
//! `$CONTROL/devid/renew/v1` read into the engine's request (payload, Correlation Data, the
//! `devid-rekey-proof` property), and the engine's replies published to their client alone.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use devid_core::protocol::renewal::{REKEY_PROOF_PROPERTY, RENEW_RESPONSE_TOPIC, RENEW_TOPIC};

use super::host::*;
use super::marshal::{borrowed_str, client_info};
use crate::engine::{ConnKey, RenewReply};
use crate::plugin::Plugin;

/// The topic registered for `MOSQ_EVT_CONTROL`.
pub(super) fn topic() -> CString {
    CString::new(RENEW_TOPIC).unwrap_or_default()
}

/// A request on the renewal topic: handed to the engine; a reply it gives at once is published.
///
/// # Safety
/// `ev` is the broker's control event for this call.
pub(super) unsafe fn on_control(p: &Plugin, ev: &mosquitto_evt_control) -> c_int {
    // SAFETY: topic is NULL or valid for the call.
    if ev.client.is_null() || unsafe { borrowed_str(ev.topic) } != Some(RENEW_TOPIC) {
        return MOSQ_ERR_SUCCESS;
    }
    // SAFETY: live client; strings valid for the call.
    let (cid, _) = unsafe { client_info(ev.client) };
    let payload: &[u8] = if ev.payload.is_null() || ev.payloadlen == 0 {
        &[]
    } else {
        // SAFETY: the broker passes payloadlen bytes.
        unsafe { std::slice::from_raw_parts(ev.payload.cast(), ev.payloadlen as usize) }
    };
    // SAFETY: the property list belongs to the message for this call.
    let (correlation, proof) = unsafe { (correlation_data(ev.properties), proof(ev.properties)) };
    let reply = match p.engine.try_borrow_mut() {
        Ok(mut e) => e.renewal_request(
            ev.client as ConnKey,
            cid.as_deref(),
            correlation.as_deref(),
            payload,
            proof.as_deref(),
        ),
        Err(_) => return MOSQ_ERR_SUCCESS,
    };
    if let Some(r) = reply {
        publish(&r);
    }
    MOSQ_ERR_SUCCESS
}

/// Publishes each reply on the response topic to its client alone, with its Correlation Data.
/// Broker thread only.
pub(super) fn publish_replies(replies: &[RenewReply]) {
    for r in replies {
        publish(r);
    }
}

fn publish(r: &RenewReply) {
    let (Ok(cid), Ok(topic)) = (
        CString::new(r.client_id.as_str()),
        CString::new(RENEW_RESPONSE_TOPIC),
    ) else {
        return;
    };
    let (Ok(len), Ok(corr_len)) = (
        c_int::try_from(r.payload.len()),
        u16::try_from(r.correlation.len()),
    ) else {
        return;
    };
    let mut props: *mut mosquitto_property = std::ptr::null_mut();
    // SAFETY: broker thread (every caller runs in a callback); the property list is built by
    // the broker's own function; publish_copy copies the payload; on success the broker owns
    // `props`, on failure it is freed here.
    unsafe {
        if mosquitto_property_add_binary(
            &mut props,
            MQTT_PROP_CORRELATION_DATA,
            r.correlation.as_ptr().cast::<c_void>(),
            corr_len,
        ) != MOSQ_ERR_SUCCESS
        {
            mosquitto_property_free_all(&mut props);
            return;
        }
        let rc = mosquitto_broker_publish_copy(
            cid.as_ptr(),
            topic.as_ptr(),
            len,
            r.payload.as_ptr().cast::<c_void>(),
            1,
            false,
            props,
        );
        if rc != MOSQ_ERR_SUCCESS {
            mosquitto_property_free_all(&mut props);
        }
    }
}

/// The Correlation Data of a property list, copied.
///
/// # Safety
/// `list` is NULL or a property list valid for the call.
unsafe fn correlation_data(list: *const mosquitto_property) -> Option<Vec<u8>> {
    if list.is_null() {
        return None;
    }
    let mut value: *mut c_void = std::ptr::null_mut();
    let mut len: u16 = 0;
    // SAFETY: reads the first Correlation Data property; the value is a calloc copy, freed
    // with free() below.
    unsafe {
        let hit = mosquitto_property_read_binary(
            list,
            MQTT_PROP_CORRELATION_DATA,
            &mut value,
            &mut len,
            false,
        );
        if hit.is_null() || value.is_null() {
            return None;
        }
        let out = std::slice::from_raw_parts(value.cast::<u8>(), usize::from(len)).to_vec();
        libc::free(value);
        Some(out)
    }
}

/// The value of the `devid-rekey-proof` user property, if any (the first one).
///
/// # Safety
/// `list` is NULL or a property list valid for the call.
unsafe fn proof(list: *const mosquitto_property) -> Option<String> {
    let mut node = list;
    while !node.is_null() {
        // SAFETY: live node; reads this node only; both strings are mosquitto-allocated copies,
        // freed here.
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
                let found = if hit == node
                    && !name.is_null()
                    && !value.is_null()
                    && CStr::from_ptr(name).to_bytes() == REKEY_PROOF_PROPERTY.as_bytes()
                {
                    Some(CStr::from_ptr(value).to_string_lossy().into_owned())
                } else {
                    None
                };
                mosquitto_free(name.cast());
                mosquitto_free(value.cast());
                if found.is_some() {
                    return found;
                }
            }
            node = mosquitto_property_next(node);
        }
    }
    None
}
