//! The C ABI of devid-sensor (`sensor/include/devid_sensor.h` declares it): the sensor side of
//! DEVID-S1 for C firmware. Every function checks its pointers (NULL only with a zero length),
//! calls the safe crate, and returns a `DEVID_SENSOR_*` code; a panic is caught and returned as
//! `DEVID_SENSOR_ERR_INTERNAL`, never unwound into C. No function allocates or keeps a pointer.
//!
//! This file is the crate's only `unsafe` code: turning C pointers into slices.
#![allow(
    unsafe_code,
    reason = "the C ABI: pointers from C become slices here and only here"
)]

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use devid_sensor::{
    self as sensor, frame, Counter, Error, B64_LEN, KEY_LEN, MAC_LEN, SEQ_TEXT_MAX,
};

pub const DEVID_SENSOR_OK: i32 = 0;
pub const DEVID_SENSOR_ERR_NULL: i32 = 100;
pub const DEVID_SENSOR_ERR_INTERNAL: i32 = 101;

/// The C code of an error (the header's `DEVID_SENSOR_ERR_*`).
pub fn error_code(e: Error) -> i32 {
    match e {
        Error::BadId => 1,
        Error::BadTopic => 2,
        Error::BadSeq => 3,
        Error::BadMac => 4,
        Error::BadSeal => 5,
        Error::Replayed => 6,
        Error::TooOld => 7,
        Error::BufferTooSmall => 8,
        Error::BadBase64 => 9,
        Error::PersistFirst => 10,
        Error::CounterExhausted => 11,
        Error::BadFrame => 12,
        _ => DEVID_SENSOR_ERR_INTERNAL,
    }
}

// C keeps a counter as `uint64_t _opaque[3]`.
const _: () = assert!(std::mem::size_of::<Counter>() == 24);
const _: () = assert!(std::mem::align_of::<Counter>() == 8);

type Code = Result<(), i32>;

/// Runs `f` behind a panic boundary and turns its outcome into a C code.
fn guard(f: impl FnOnce() -> Code) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => DEVID_SENSOR_OK,
        Ok(Err(code)) => code,
        Err(_) => DEVID_SENSOR_ERR_INTERNAL,
    }
}

fn check<T>(r: Result<T, Error>) -> Result<T, i32> {
    r.map_err(error_code)
}

/// `len` bytes at `p`; NULL is allowed only for an empty slice.
///
/// # Safety
/// A non-NULL `p` points to `len` readable bytes that stay valid and unchanged for `'a`.
unsafe fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], i32> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(DEVID_SENSOR_ERR_NULL);
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// # Safety
/// A non-NULL `p` points to `len` writable bytes that nothing else uses for `'a`.
unsafe fn bytes_mut<'a>(p: *mut u8, len: usize) -> Result<&'a mut [u8], i32> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(DEVID_SENSOR_ERR_NULL);
    }
    // SAFETY: non-NULL, and the caller promises `len` writable, unaliased bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// # Safety
/// A non-NULL `p` points to `N` readable bytes.
unsafe fn array<'a, const N: usize>(p: *const u8) -> Result<&'a [u8; N], i32> {
    if p.is_null() {
        return Err(DEVID_SENSOR_ERR_NULL);
    }
    // SAFETY: non-NULL, `[u8; N]` has alignment 1, and the caller promises `N` bytes.
    Ok(unsafe { &*p.cast::<[u8; N]>() })
}

/// # Safety
/// A non-NULL `p` points to a valid, writable `T` that nothing else uses for `'a`.
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T, i32> {
    // SAFETY: the caller promises a valid, aligned, unaliased `T` when non-NULL.
    unsafe { p.as_mut() }.ok_or(DEVID_SENSOR_ERR_NULL)
}

/// # Safety
/// See `devid_sensor_derive` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_derive(
    k: *const u8,
    id: *const u8,
    id_len: usize,
    k_mac: *mut u8,
    k_enc: *mut u8,
) -> i32 {
    guard(|| {
        // SAFETY: the header's contract: k is 32 bytes, id id_len bytes, k_mac and k_enc 32
        // writable bytes each.
        let (k, id) = unsafe { (array::<KEY_LEN>(k)?, bytes(id, id_len)?) };
        let keys = check(sensor::derive(k, id))?;
        // SAFETY: as above.
        let (mac, enc) = unsafe { (bytes_mut(k_mac, KEY_LEN)?, bytes_mut(k_enc, KEY_LEN)?) };
        mac.copy_from_slice(&keys.mac);
        enc.copy_from_slice(&keys.enc);
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_publish_mac` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_publish_mac(
    k_mac: *const u8,
    id: *const u8,
    id_len: usize,
    seq: u64,
    topic: *const u8,
    topic_len: usize,
    payload: *const u8,
    payload_len: usize,
    mac_out: *mut u8,
) -> i32 {
    guard(|| {
        // SAFETY: the header's contract on each pointer and length.
        let (k, id, topic, payload, o) = unsafe {
            (
                array::<KEY_LEN>(k_mac)?,
                bytes(id, id_len)?,
                bytes(topic, topic_len)?,
                bytes(payload, payload_len)?,
                bytes_mut(mac_out, MAC_LEN)?,
            )
        };
        o.copy_from_slice(&check(sensor::publish_mac(k, id, seq, topic, payload))?);
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_encode_b64url` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_encode_b64url(mac: *const u8, out_text: *mut c_char) -> i32 {
    guard(|| {
        // SAFETY: mac is 16 bytes, out_text 23 writable bytes.
        let (mac, o) = unsafe {
            (
                array::<MAC_LEN>(mac)?,
                bytes_mut(out_text.cast(), B64_LEN + 1)?,
            )
        };
        o[..B64_LEN].copy_from_slice(&sensor::encode_b64url(mac));
        o[B64_LEN] = 0;
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_seal` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_seal(
    k_enc: *const u8,
    id: *const u8,
    id_len: usize,
    seq: u64,
    topic: *const u8,
    topic_len: usize,
    buf: *mut u8,
    buf_len: usize,
    plain_len: usize,
    sealed_len: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: the header's contract on each pointer and length.
        let (k, id, topic, buf, n) = unsafe {
            (
                array::<KEY_LEN>(k_enc)?,
                bytes(id, id_len)?,
                bytes(topic, topic_len)?,
                bytes_mut(buf, buf_len)?,
                out(sealed_len)?,
            )
        };
        *n = check(sensor::seal_in_place(k, id, seq, topic, buf, plain_len))?;
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_open` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_open(
    k_enc: *const u8,
    id: *const u8,
    id_len: usize,
    seq: u64,
    topic: *const u8,
    topic_len: usize,
    sealed: *mut u8,
    sealed_len: usize,
    plain_len: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: the header's contract on each pointer and length.
        let (k, id, topic, sealed, n) = unsafe {
            (
                array::<KEY_LEN>(k_enc)?,
                bytes(id, id_len)?,
                bytes(topic, topic_len)?,
                bytes_mut(sealed, sealed_len)?,
                out(plain_len)?,
            )
        };
        *n = check(sensor::open_in_place(k, id, seq, topic, sealed))?;
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_format_seq` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_format_seq(
    seq: u64,
    out_text: *mut c_char,
    text_len: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: out_text is 21 writable bytes, text_len a valid size_t.
        let (o, len) = unsafe {
            (
                bytes_mut(out_text.cast(), SEQ_TEXT_MAX + 1)?,
                out(text_len)?,
            )
        };
        let mut tmp = [0u8; SEQ_TEXT_MAX];
        let digits = sensor::format_seq(seq, &mut tmp);
        o[..digits.len()].copy_from_slice(digits);
        o[digits.len()] = 0;
        *len = digits.len();
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_parse_seq` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_parse_seq(
    text: *const c_char,
    text_len: usize,
    seq: *mut u64,
) -> i32 {
    guard(|| {
        // SAFETY: text is text_len readable bytes, seq a valid uint64_t.
        let (t, s) = unsafe { (bytes(text.cast(), text_len)?, out(seq)?) };
        *s = check(sensor::parse_seq(t))?;
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_counter_resume` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_counter_resume(
    counter: *mut Counter,
    persisted: u64,
    block: u64,
) -> i32 {
    guard(|| {
        // SAFETY: counter points to a devid_sensor_counter (any bytes: it is overwritten
        // with `write`, never read).
        let c = unsafe { out(counter.cast::<std::mem::MaybeUninit<Counter>>())? };
        c.write(Counter::resume(persisted, block));
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_counter_to_persist` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_counter_to_persist(
    counter: *const Counter,
    value: *mut u64,
) -> i32 {
    guard(|| {
        // SAFETY: counter was set by devid_sensor_counter_resume; value is a valid uint64_t.
        let (c, v) = unsafe { (counter.as_ref().ok_or(DEVID_SENSOR_ERR_NULL)?, out(value)?) };
        *v = c.to_persist().unwrap_or(0);
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_counter_persisted` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_counter_persisted(counter: *mut Counter, value: u64) -> i32 {
    guard(|| {
        // SAFETY: counter was set by devid_sensor_counter_resume.
        unsafe { out(counter)? }.persisted(value);
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_counter_next` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_counter_next(counter: *mut Counter, seq: *mut u64) -> i32 {
    guard(|| {
        // SAFETY: counter was set by devid_sensor_counter_resume; seq is a valid uint64_t.
        let (c, s) = unsafe { (out(counter)?, out(seq)?) };
        *s = check(c.next_seq())?;
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_channel_topic` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_channel_topic(
    id: *const u8,
    id_len: usize,
    channel: *const u8,
    channel_len: usize,
    out_topic: *mut u8,
    out_len: usize,
    topic_len: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: the header's contract on each pointer and length.
        let (id, channel, o, n) = unsafe {
            (
                bytes(id, id_len)?,
                bytes(channel, channel_len)?,
                bytes_mut(out_topic, out_len)?,
                out(topic_len)?,
            )
        };
        *n = check(frame::channel_topic(id, channel, o))?.len();
        Ok(())
    })
}

/// # Safety
/// See `devid_sensor_frame_encode` in the header.
#[no_mangle]
pub unsafe extern "C" fn devid_sensor_frame_encode(
    id: *const u8,
    id_len: usize,
    index: u8,
    seq: u64,
    dest: *const u8,
    dest_len: usize,
    dest_is_topic: i32,
    payload: *const u8,
    payload_len: usize,
    mac: *const u8,
    scratch: *mut u8,
    scratch_len: usize,
    out_frame: *mut u8,
    out_len: usize,
    frame_len: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: the header's contract on each pointer and length; mac is 16 bytes when
        // not NULL; scratch and out_frame do not overlap the inputs.
        let (idb, dest, payload, scratch, o, n) = unsafe {
            (
                bytes(id, id_len)?,
                bytes(dest, dest_len)?,
                bytes(payload, payload_len)?,
                bytes_mut(scratch, scratch_len)?,
                bytes_mut(out_frame, out_len)?,
                out(frame_len)?,
            )
        };
        let protection = if mac.is_null() {
            frame::Protection::Sealed
        } else {
            // SAFETY: non-NULL mac is 16 readable bytes.
            frame::Protection::Mac(*unsafe { array::<MAC_LEN>(mac)? })
        };
        let reading = frame::Reading {
            sensor: if id.is_null() {
                frame::SensorRef::Index(index)
            } else {
                frame::SensorRef::Id(idb)
            },
            seq,
            destination: if dest_is_topic != 0 {
                frame::Destination::Topic(dest)
            } else {
                frame::Destination::Channel(dest)
            },
            payload,
            protection,
        };
        *n = check(reading.encode(scratch, o))?;
        Ok(())
    })
}

/// The name of a `DEVID_SENSOR_*` code (a static NUL-terminated string).
#[no_mangle]
pub extern "C" fn devid_sensor_error_name(code: i32) -> *const c_char {
    let name: &'static [u8] = match code {
        DEVID_SENSOR_OK => b"ok\0",
        1 => b"bad_id\0",
        2 => b"bad_topic\0",
        3 => b"bad_seq\0",
        4 => b"bad_mac\0",
        5 => b"bad_seal\0",
        6 => b"replayed\0",
        7 => b"too_old\0",
        8 => b"buffer_too_small\0",
        9 => b"bad_base64\0",
        10 => b"persist_first\0",
        11 => b"counter_exhausted\0",
        12 => b"bad_frame\0",
        DEVID_SENSOR_ERR_NULL => b"null_argument\0",
        DEVID_SENSOR_ERR_INTERNAL => b"internal\0",
        _ => b"unknown\0",
    };
    name.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    #[test]
    fn each_error_has_its_own_code_and_the_crates_name() {
        let all = [
            Error::BadId,
            Error::BadTopic,
            Error::BadSeq,
            Error::BadMac,
            Error::BadSeal,
            Error::Replayed,
            Error::TooOld,
            Error::BufferTooSmall,
            Error::BadBase64,
            Error::PersistFirst,
            Error::CounterExhausted,
            Error::BadFrame,
        ];
        let mut codes: Vec<i32> = all.iter().map(|e| error_code(*e)).collect();
        for (e, code) in all.iter().zip(&codes) {
            // SAFETY: devid_sensor_error_name returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(devid_sensor_error_name(*code)) };
            assert_eq!(name.to_str(), Ok(e.as_str()), "{e:?}");
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&DEVID_SENSOR_OK));
        assert!(!codes.contains(&DEVID_SENSOR_ERR_INTERNAL));
    }
}
