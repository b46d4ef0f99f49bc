//! The text forms of the properties: base64url of the 16-byte MAC and the decimal seq.

use crate::{Error, MAC_LEN};

/// Length of the unpadded base64url encoding of 16 bytes.
pub const B64_LEN: usize = 22;
/// Longest decimal seq (2^64 - 1 has 20 digits).
pub const SEQ_TEXT_MAX: usize = 20;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding of a 16-byte MAC (RFC 4648 section 5): 22 characters.
pub fn encode_b64url(tag: &[u8; MAC_LEN]) -> [u8; B64_LEN] {
    let mut out = [0u8; B64_LEN];
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut o = 0;
    for &b in tag {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out[o] = ALPHABET[((acc >> bits) & 63) as usize];
            o += 1;
        }
    }
    // 128 bits = 21 full characters + 2 bits, padded with 4 zero bits.
    out[o] = ALPHABET[((acc << (6 - bits)) & 63) as usize];
    out
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes exactly 22 characters of unpadded base64url into 16 bytes. Non-canonical text (the
/// last character's 4 unused bits set), padding, other alphabets and other lengths are
/// refused, so each MAC has one text form.
pub fn decode_b64url_16(text: &[u8]) -> Result<[u8; MAC_LEN], Error> {
    if text.len() != B64_LEN {
        return Err(Error::BadBase64);
    }
    let mut out = [0u8; MAC_LEN];
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut o = 0;
    for &c in text {
        acc = (acc << 6) | sextet(c).ok_or(Error::BadBase64)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if o < MAC_LEN {
                out[o] = (acc >> bits) as u8;
            }
            o += 1;
        }
        acc &= (1 << bits) - 1;
    }
    if o != MAC_LEN || acc != 0 {
        return Err(Error::BadBase64);
    }
    Ok(out)
}

/// Parses `devid-sensor-seq`: ASCII digits only, no sign, no leading zero, 1 <= seq < 2^64.
pub fn parse_seq(text: &[u8]) -> Result<u64, Error> {
    if text.is_empty() || text.len() > SEQ_TEXT_MAX || text[0] == b'0' {
        return Err(Error::BadSeq);
    }
    let mut v: u64 = 0;
    for &c in text {
        if !c.is_ascii_digit() {
            return Err(Error::BadSeq);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or(Error::BadSeq)?;
    }
    Ok(v)
}

/// Writes seq in decimal to the end of `buf` and returns the digits ([`parse_seq`]'s form for
/// seq >= 1).
pub fn format_seq(seq: u64, buf: &mut [u8; SEQ_TEXT_MAX]) -> &[u8] {
    let mut i = SEQ_TEXT_MAX;
    let mut v = seq;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}
