//! The one codec: a [`Reader`] over borrowed bytes with a sub-reader per length prefix, and
//! writers that patch a length prefix from what was actually written (no hand-written sizes).

use super::error::DecodeError;

/// Reads fields front to back; every read either returns the field or `Truncated`.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Reads a whole message: `f` must consume every byte.
    pub(crate) fn read_all<T>(
        buf: &'a [u8],
        f: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let mut r = Reader::new(buf);
        let v = f(&mut r)?;
        r.expect_empty()?;
        Ok(v)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], DecodeError> {
        let s = self.take(N)?;
        // `take` returned exactly N bytes, so the conversion cannot fail.
        s.try_into().map_err(|_| DecodeError::Truncated)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(*self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(*self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(*self.array()?))
    }

    /// A sub-reader over an `opaque<u16>` body.
    pub(crate) fn sub_u16(&mut self) -> Result<Reader<'a>, DecodeError> {
        let n = usize::from(self.u16()?);
        Ok(Reader::new(self.take(n)?))
    }

    /// A sub-reader over an `opaque<u8>` body.
    pub(crate) fn sub_u8(&mut self) -> Result<Reader<'a>, DecodeError> {
        let n = usize::from(self.u8()?);
        Ok(Reader::new(self.take(n)?))
    }

    /// The rest of the bytes.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn expect_empty(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Writes `f`'s output behind a u16 length prefix computed from what `f` wrote.
///
/// Callers only write values whose size was bounded when they entered the program (parsed
/// messages, checked configuration), so the length fits; a body too long is an encoding bug and
/// yields `BadValue` rather than a silently wrong prefix.
pub(crate) fn put_u16_prefixed(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>),
) -> Result<(), DecodeError> {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    f(out);
    let len = u16::try_from(out.len() - at - 2).map_err(|_| DecodeError::BadValue)?;
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// As [`put_u16_prefixed`] with a u8 prefix.
pub(crate) fn put_u8_prefixed(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>),
) -> Result<(), DecodeError> {
    let at = out.len();
    out.push(0);
    f(out);
    let len = u8::try_from(out.len() - at - 1).map_err(|_| DecodeError::BadValue)?;
    out[at] = len;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sub_reader_confines_reads_to_its_prefix() {
        let mut r = Reader::new(&[0, 2, 7, 8, 9]);
        let mut sub = r.sub_u16().unwrap();
        assert_eq!(sub.u8().unwrap(), 7);
        assert_eq!(sub.u8().unwrap(), 8);
        assert_eq!(sub.u8(), Err(DecodeError::Truncated));
        assert_eq!(r.expect_empty(), Err(DecodeError::TrailingBytes));
        assert_eq!(r.u8().unwrap(), 9);
        assert!(r.expect_empty().is_ok());
    }

    #[test]
    fn prefix_length_comes_from_the_bytes_written() {
        let mut out = vec![0xAA];
        put_u16_prefixed(&mut out, |o| o.extend_from_slice(&[1, 2, 3])).unwrap();
        assert_eq!(out, [0xAA, 0, 3, 1, 2, 3]);
        let mut out = Vec::new();
        assert_eq!(
            put_u8_prefixed(&mut out, |o| o.extend_from_slice(&[0; 256])),
            Err(DecodeError::BadValue)
        );
    }
}
