//! Primitive MQTT v5 data types (section 1.5 of the specification): a bounds-checked reader with a
//! sub-reader per length prefix, and the matching writers.
//!
//! Every length on the wire is derived from the bytes actually written: writers take the value
//! and emit its length prefix themselves, so there is no hand-written `len()` to drift.

use super::DecodeError;

/// The largest value a Variable Byte Integer can carry (268,435,455).
pub const VBI_MAX: u32 = 268_435_455;

/// A cursor over a byte slice. Every read is bounds-checked and fails with
/// [`DecodeError::Truncated`] instead of panicking.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is being read, for error messages.
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes `n` bytes or fails without consuming anything.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// A sub-reader over the next `n` bytes, which are consumed from `self`.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        Ok(Reader::new(self.take(n)?, what))
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A Variable Byte Integer (1.5.5), minimal encoding required.
    pub fn vbi(&mut self) -> Result<u32, DecodeError> {
        match read_vbi(&self.buf[self.pos..])? {
            VbiRead::Complete { value, len } => {
                self.pos += len;
                Ok(value)
            }
            VbiRead::Incomplete => Err(DecodeError::Truncated(self.what)),
        }
    }

    /// Binary Data (1.5.6): u16 length and bytes.
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 Encoded String (1.5.4): valid UTF-8, no U+0000.
    pub fn utf8(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.binary()?;
        let s = std::str::from_utf8(b).map_err(|_| DecodeError::InvalidUtf8(self.what))?;
        if s.contains('\0') {
            return Err(DecodeError::InvalidUtf8(self.what));
        }
        Ok(s)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                what: self.what,
                count: self.remaining(),
            })
        }
    }
}

/// Outcome of reading a Variable Byte Integer from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum VbiRead {
    Complete {
        value: u32,
        len: usize,
    },
    /// The buffer ends before the integer does.
    Incomplete,
}

/// Reads a Variable Byte Integer; rejects a fifth byte and non-minimal encodings.
pub fn read_vbi(buf: &[u8]) -> Result<VbiRead, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(VbiRead::Incomplete);
        };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // A last byte of zero after the first is a non-minimal encoding (e.g. 0x80 0x00).
            if i > 0 && b == 0 {
                return Err(DecodeError::Malformed("non-minimal variable byte integer"));
            }
            return Ok(VbiRead::Complete { value, len: i + 1 });
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than 4 bytes",
    ))
}

/// Errors raised while encoding: a value does not fit the wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} is longer than 65,535 bytes")]
    TooLong(&'static str),
    #[error("{0} contains U+0000, which MQTT forbids")]
    NulInString(&'static str),
    #[error("value {0} exceeds the variable byte integer maximum")]
    VbiTooLarge(usize),
    #[error("the packet is {size} bytes, above the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_vbi(out: &mut Vec<u8>, v: usize) -> Result<(), EncodeError> {
    if v > VBI_MAX as usize {
        return Err(EncodeError::VbiTooLarge(v));
    }
    let mut v = v;
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return Ok(());
        }
    }
}

pub fn put_binary(out: &mut Vec<u8>, b: &[u8], what: &'static str) -> Result<(), EncodeError> {
    let n = u16::try_from(b.len()).map_err(|_| EncodeError::TooLong(what))?;
    put_u16(out, n);
    out.extend_from_slice(b);
    Ok(())
}

pub fn put_utf8(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), EncodeError> {
    if s.contains('\0') {
        return Err(EncodeError::NulInString(what));
    }
    put_binary(out, s.as_bytes(), what)
}

/// Writes `body` produced by `f` preceded by its length as a Variable Byte Integer.
pub fn put_vbi_prefixed(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let mut body = Vec::new();
    f(&mut body)?;
    put_vbi(out, body.len())?;
    out.extend_from_slice(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vbi_roundtrips_at_every_boundary() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            VBI_MAX as usize,
        ] {
            let mut out = Vec::new();
            put_vbi(&mut out, v).unwrap();
            let expect_len = match v {
                0..=127 => 1,
                128..=16_383 => 2,
                16_384..=2_097_151 => 3,
                _ => 4,
            };
            assert_eq!(out.len(), expect_len, "{v}");
            assert_eq!(
                read_vbi(&out).unwrap(),
                VbiRead::Complete {
                    value: v as u32,
                    len: expect_len
                }
            );
            // Every strict prefix is incomplete, never an error.
            for cut in 0..out.len() {
                assert_eq!(read_vbi(&out[..cut]).unwrap(), VbiRead::Incomplete);
            }
        }
    }

    #[test]
    fn vbi_rejects_overlong_and_non_minimal() {
        assert!(put_vbi(&mut Vec::new(), VBI_MAX as usize + 1).is_err());
        assert!(read_vbi(&[0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(read_vbi(&[0x80, 0x00]).is_err());
        assert!(read_vbi(&[0x80, 0x80, 0x00]).is_err());
    }

    #[test]
    fn utf8_rejects_invalid_and_nul() {
        let mut r = Reader::new(&[0, 2, 0xc3, 0x28], "t");
        assert!(matches!(r.utf8(), Err(DecodeError::InvalidUtf8(_))));
        let mut r = Reader::new(&[0, 2, b'a', 0], "t");
        assert!(matches!(r.utf8(), Err(DecodeError::InvalidUtf8(_))));
        let mut r = Reader::new(&[0, 3, b'a'], "t");
        assert!(matches!(r.utf8(), Err(DecodeError::Truncated(_))));
        assert!(put_utf8(&mut Vec::new(), "a\0", "t").is_err());
        assert!(put_binary(&mut Vec::new(), &vec![0; 65_536], "t").is_err());
    }

    #[test]
    fn finish_rejects_trailing_bytes() {
        let mut r = Reader::new(&[1, 2, 3], "t");
        r.u16().unwrap();
        assert!(matches!(
            r.finish(),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
    }
}
