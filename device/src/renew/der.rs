//! Just enough DER for a PKCS#10 request and a certs-only PKCS#7 answer: writing TLVs, and
//! reading them with definite lengths (DER; BER's indefinite length is refused).

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const BOOLEAN: u8 = 0x01;

/// One TLV: `tag`, the DER length of `content`, `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already encoded parts.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

/// Why bytes are not the DER expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DER: {0}")]
pub struct DerError(pub &'static str);

/// A reader over a run of TLVs.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next TLV: its tag, its content and the whole encoding.
    pub fn read(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), DerError> {
        let all = self.rest;
        let [tag, first, rest @ ..] = all else {
            return Err(DerError("truncated header"));
        };
        if tag & 0x1f == 0x1f {
            return Err(DerError("multi-byte tags are not used here"));
        }
        let (len, rest) = match *first {
            n if n < 0x80 => (n as usize, rest),
            0x80 => return Err(DerError("indefinite length")),
            n => {
                let k = (n & 0x7f) as usize;
                if k > 4 || rest.len() < k {
                    return Err(DerError("bad length"));
                }
                let len = rest[..k].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
                (len, &rest[k..])
            }
        };
        if rest.len() < len {
            return Err(DerError("content shorter than its length"));
        }
        let header = all.len() - rest.len();
        self.rest = &rest[len..];
        Ok((*tag, &rest[..len], &all[..header + len]))
    }

    /// The next TLV, which must carry `tag`; its content.
    pub fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        match self.read()? {
            (t, content, _) if t == tag => Ok(content),
            _ => Err(DerError(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip_across_the_short_and_long_forms() {
        for n in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            let content = vec![0xab; n];
            let enc = tlv(OCTET_STRING, &content);
            let mut r = Reader::new(&enc);
            let (tag, got, whole) = r.read().unwrap();
            assert_eq!((tag, got.len(), whole.len()), (OCTET_STRING, n, enc.len()));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn refuses_truncated_and_indefinite_encodings() {
        let cases: &[(&str, &[u8])] = &[
            ("fail/empty", &[]),
            ("fail/one byte", &[0x30]),
            ("fail/short content", &[0x04, 0x03, 1, 2]),
            ("fail/indefinite", &[0x30, 0x80, 0, 0]),
            (
                "fail/length of length too long",
                &[0x04, 0x85, 1, 1, 1, 1, 1],
            ),
            ("fail/multi-byte tag", &[0x1f, 0x01, 0x00]),
        ];
        for (name, bytes) in cases {
            assert!(Reader::new(bytes).read().is_err(), "{name}");
        }
        assert_eq!(
            Reader::new(&[0x02, 0x01, 0x05]).expect(SEQUENCE, "a SEQUENCE"),
            Err(DerError("a SEQUENCE"))
        );
    }
}
