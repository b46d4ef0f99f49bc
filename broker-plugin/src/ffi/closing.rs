//! Closing connections from the plugin's side: handshakes that outlived `auth_timeout`, and the
//! ClientID of a connection that ends in its first DEVID-1 exchange.

use std::ffi::CString;

use super::host::*;
use super::log;
use crate::engine::Expired;
use crate::service::LogLevel;

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
pub(super) unsafe fn close_connections(expired: &[Expired]) {
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
pub(super) unsafe fn forget_pending_client_id(client: *const mosquitto) {
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
