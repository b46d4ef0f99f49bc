//! Data across the boundary: C strings the broker lends (borrowed or copied), a connection's
//! ClientID, address and TLS certificate, and buffers allocated for the broker to free.

use std::ffi::{c_char, c_void, CStr};

use super::host::*;

/// A borrowed view of a NUL-terminated UTF-8 string (None for NULL or non-UTF-8).
///
/// # Safety
/// `p` is NULL or NUL-terminated and stays valid and unchanged for `'a`.
pub(super) unsafe fn borrowed_str<'a>(p: *const c_char) -> Option<&'a str> {
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
pub(super) unsafe fn opt_str(p: *const c_char) -> Option<String> {
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
pub(super) unsafe fn client_info(client: *const mosquitto) -> (Option<String>, Option<String>) {
    // SAFETY: the broker's accessors accept any live client.
    unsafe {
        (
            opt_str(mosquitto_client_id(client)),
            opt_str(mosquitto_client_address(client)),
        )
    }
}

/// The client certificate of a TLS connection, as DER.
///
/// # Safety
/// `client` is a live connection.
pub(super) unsafe fn client_certificate_der(client: *const mosquitto) -> Option<Vec<u8>> {
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

/// A host allocator: the broker frees what it returns (`libc::malloc`, `mosquitto_malloc`).
pub(super) type HostAlloc = unsafe extern "C" fn(usize) -> *mut c_void;

/// Copies `bytes` into a fresh buffer of at least one byte from `alloc`, for the broker to free;
/// Err when the allocation fails.
pub(super) fn host_copy(alloc: HostAlloc, bytes: &[u8]) -> Result<*mut c_void, ()> {
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

/// This machine's host name (`gethostname`), the broker's name when the `broker_name` option
/// is not given; `unknown` when it cannot be read as UTF-8.
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => "unknown".into(),
    }
}
