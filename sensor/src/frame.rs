//! Sensor-to-gateway link frames: one reading per frame, sized for a serial line or CAN FD /
//! ISO-TP, and robust to a noisy line.
//!
//! On the wire a frame is `COBS(body || u32be(CRC-32(body))) || 0x00`. COBS (Consistent
//! Overhead Byte Stuffing) removes every zero byte from the encoded frame, so 0x00 only ever
//! marks a frame's end: a receiver that lost bytes, or started mid-frame, drops what it has at
//! the next 0x00 and is in step again with the frame after it. A sender may send 0x00 at any
//! time (an empty frame is ignored), and sends one before its first frame after a start.
//! CRC-32 is IEEE 802.3 (reflected polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF).
//!
//! The body (integers big-endian):
//!
//! | field | bytes | |
//! | --- | --- | --- |
//! | kind | 1 | `0x01` MAC reading, `0x02` sealed reading |
//! | flags | 1 | bit 0: sensor by index; bit 1: full topic instead of a channel; others 0 |
//! | sensor | 1 or 1 + n | index (u8), or u8 n (1..=23) + the ClientID (`[0-9A-Za-z]`) |
//! | seq | 8 | u64, >= 1 |
//! | channel / topic | 1 + n | u8 n + a channel (1..=32 bytes of printable ASCII without `/`, `+`, `#`), or u8 n (1..=255) + a UTF-8 topic name without `+`, `#` or NUL |
//! | payload | rest | the reading as published (sealed: ciphertext || 16-byte tag) |
//! | mac | 16 | MAC readings only: the publish MAC |
//!
//! A channel names the topic `devices/<ClientID>/<channel>` ([`channel_topic`]). The sensor
//! computes its MAC or seal over that topic; the gateway publishes there.

use crate::{Error, MAC_LEN, TAG_LEN};

/// Frame kind: a reading with its publish MAC.
pub const KIND_MAC: u8 = 0x01;
/// Frame kind: a sealed reading.
pub const KIND_SEALED: u8 = 0x02;
const FLAG_INDEX: u8 = 0x01;
const FLAG_TOPIC: u8 = 0x02;
/// Longest ClientID a frame carries.
pub const ID_MAX: usize = 23;
/// Longest channel.
pub const CHANNEL_MAX: usize = 32;
/// Length of the CRC after the body.
pub const CRC_LEN: usize = 4;

/// Who sent the reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorRef<'a> {
    /// The sensor's ClientID.
    Id(&'a [u8]),
    /// An index the gateway maps to a ClientID (saves bytes on a slow link).
    Index(u8),
}

/// Where the reading goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// `devices/<ClientID>/<channel>`.
    Channel(&'a [u8]),
    /// This topic name.
    Topic(&'a [u8]),
}

/// How the reading is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// `devid-sensor-mac`: the payload is the reading, this is its MAC.
    Mac([u8; MAC_LEN]),
    /// `devid-sensor-seal` = 1: the payload is ciphertext || tag.
    Sealed,
}

/// One reading as a frame carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading<'a> {
    pub sensor: SensorRef<'a>,
    pub seq: u64,
    pub destination: Destination<'a>,
    pub payload: &'a [u8],
    pub protection: Protection,
}

/// `devices/<id>/<channel>` into `buf`.
pub fn channel_topic<'b>(id: &[u8], channel: &[u8], buf: &'b mut [u8]) -> Result<&'b [u8], Error> {
    check_id(id)?;
    check_channel(channel)?;
    let parts: [&[u8]; 4] = [b"devices/", id, b"/", channel];
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let out = buf.get_mut(..n).ok_or(Error::BufferTooSmall)?;
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Ok(out)
}

fn check_id(id: &[u8]) -> Result<(), Error> {
    if id.is_empty() || id.len() > ID_MAX || !id.iter().all(u8::is_ascii_alphanumeric) {
        return Err(Error::BadFrame);
    }
    Ok(())
}

fn check_channel(c: &[u8]) -> Result<(), Error> {
    let ok = |b: &u8| b.is_ascii_graphic() && !matches!(b, b'/' | b'+' | b'#');
    if c.is_empty() || c.len() > CHANNEL_MAX || !c.iter().all(ok) {
        return Err(Error::BadFrame);
    }
    Ok(())
}

fn check_topic(t: &[u8]) -> Result<(), Error> {
    if t.is_empty() || t.len() > 255 || t.iter().any(|b| matches!(b, 0 | b'+' | b'#')) {
        return Err(Error::BadFrame);
    }
    core::str::from_utf8(t).map_err(|_| Error::BadFrame)?;
    Ok(())
}

/// CRC-32 (IEEE 802.3) of `data`, with a 16-entry table.
pub fn crc32(data: &[u8]) -> u32 {
    const T: [u32; 16] = {
        let mut t = [0u32; 16];
        let mut i = 0;
        while i < 16 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 4 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = T[((crc ^ u32::from(b)) & 0xF) as usize] ^ (crc >> 4);
        crc = T[((crc ^ (u32::from(b) >> 4)) & 0xF) as usize] ^ (crc >> 4);
    }
    !crc
}

/// Writes bytes at a cursor, failing with [`Error::BufferTooSmall`].
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.at + bytes.len();
        self.buf
            .get_mut(self.at..end)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }
}

impl Reading<'_> {
    /// The body (without CRC) into `out`; returns its length.
    pub fn encode_body(&self, out: &mut [u8]) -> Result<usize, Error> {
        if self.seq == 0 {
            return Err(Error::BadSeq);
        }
        let (kind, mac) = match &self.protection {
            Protection::Mac(m) => (KIND_MAC, &m[..]),
            Protection::Sealed if self.payload.len() < TAG_LEN => return Err(Error::BadFrame),
            Protection::Sealed => (KIND_SEALED, &[][..]),
        };
        let mut flags = 0;
        let mut w = Writer { buf: out, at: 2 };
        match self.sensor {
            SensorRef::Index(i) => {
                flags |= FLAG_INDEX;
                w.put(&[i])?;
            }
            SensorRef::Id(id) => {
                check_id(id)?;
                w.put(&[id.len() as u8])?;
                w.put(id)?;
            }
        }
        w.put(&self.seq.to_be_bytes())?;
        let dest = match self.destination {
            Destination::Channel(c) => {
                check_channel(c)?;
                c
            }
            Destination::Topic(t) => {
                check_topic(t)?;
                flags |= FLAG_TOPIC;
                t
            }
        };
        w.put(&[dest.len() as u8])?;
        w.put(dest)?;
        w.put(self.payload)?;
        w.put(mac)?;
        let n = w.at;
        let head = w.buf.get_mut(..2).ok_or(Error::BufferTooSmall)?;
        head.copy_from_slice(&[kind, flags]);
        Ok(n)
    }

    /// The whole frame as sent: `COBS(body || CRC) || 0x00` into `out`, using `scratch` for the
    /// unencoded body; returns the frame's length ([`encoded_len_max`] of the body bounds it).
    pub fn encode(&self, scratch: &mut [u8], out: &mut [u8]) -> Result<usize, Error> {
        let n = self.encode_body(scratch)?;
        let crc = crc32(&scratch[..n]);
        scratch
            .get_mut(n..n + CRC_LEN)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(&crc.to_be_bytes());
        let m = cobs_encode(&scratch[..n + CRC_LEN], out)?;
        *out.get_mut(m).ok_or(Error::BufferTooSmall)? = 0;
        Ok(m + 1)
    }

    /// Parses a body (CRC already checked and removed). Every rule of the layout is checked;
    /// nothing may follow the MAC.
    pub fn parse_body(body: &[u8]) -> Result<Reading<'_>, Error> {
        let mut r = Reader { buf: body };
        let [kind, flags] = r.array::<2>()?;
        if flags & !(FLAG_INDEX | FLAG_TOPIC) != 0 {
            return Err(Error::BadFrame);
        }
        let sensor = if flags & FLAG_INDEX != 0 {
            SensorRef::Index(r.array::<1>()?[0])
        } else {
            let n = r.array::<1>()?[0];
            let id = r.take(usize::from(n))?;
            check_id(id)?;
            SensorRef::Id(id)
        };
        let seq = u64::from_be_bytes(r.array::<8>()?);
        if seq == 0 {
            return Err(Error::BadSeq);
        }
        let n = r.array::<1>()?[0];
        let dest = r.take(usize::from(n))?;
        let destination = if flags & FLAG_TOPIC != 0 {
            check_topic(dest)?;
            Destination::Topic(dest)
        } else {
            check_channel(dest)?;
            Destination::Channel(dest)
        };
        let rest = r.buf;
        let (payload, protection) = match kind {
            KIND_MAC => {
                let split = rest.len().checked_sub(MAC_LEN).ok_or(Error::BadFrame)?;
                let (payload, mac) = rest.split_at(split);
                let mut m = [0u8; MAC_LEN];
                m.copy_from_slice(mac);
                (payload, Protection::Mac(m))
            }
            KIND_SEALED if rest.len() >= TAG_LEN => (rest, Protection::Sealed),
            _ => return Err(Error::BadFrame),
        };
        Ok(Reading {
            sensor,
            seq,
            destination,
            payload,
            protection,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::BadFrame);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// The longest COBS encoding of `n` bytes plus the delimiter.
pub const fn encoded_len_max(n: usize) -> usize {
    n + n / 254 + 2
}

/// COBS-encodes `data` into `out` (no delimiter); returns the encoded length.
pub fn cobs_encode(data: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let mut code_at = 0;
    let mut at = 1;
    let mut code = 1u8;
    for &b in data {
        if b == 0 {
            *out.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
            code_at = at;
            at += 1;
            code = 1;
        } else {
            *out.get_mut(at).ok_or(Error::BufferTooSmall)? = b;
            at += 1;
            code += 1;
            if code == 0xFF {
                *out.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
                code_at = at;
                at += 1;
                code = 1;
            }
        }
    }
    *out.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
    Ok(at)
}

/// Decodes COBS in place (the input without its delimiter); returns the decoded length.
/// A zero byte inside, or a code that runs past the end, is [`Error::BadFrame`].
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, Error> {
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        let code = buf[read];
        if code == 0 {
            return Err(Error::BadFrame);
        }
        read += 1;
        let run = usize::from(code) - 1;
        if read + run > buf.len() {
            return Err(Error::BadFrame);
        }
        for i in 0..run {
            let b = buf[read + i];
            if b == 0 {
                return Err(Error::BadFrame);
            }
            buf[write + i] = b;
        }
        read += run;
        write += run;
        // A group shorter than 254 data bytes ends with a zero, unless it ends the frame.
        if code != 0xFF && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Ok(write)
}

/// What one byte did to the [`Decoder`].
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a> {
    /// Inside a frame (or an empty frame ended).
    Pending,
    /// A frame ended and parsed.
    Frame(Reading<'a>),
    /// A frame ended and was dropped: bad COBS, CRC, layout or length ([`Error::BadFrame`],
    /// [`Error::BadSeq`]), or longer than the buffer ([`Error::BufferTooSmall`]).
    Dropped(Error),
}

/// Reassembles frames from a byte stream, `N` bytes of encoded frame at most. Feed it every
/// byte; a bad frame is dropped at its delimiter and the next one decodes normally.
pub struct Decoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    pub const fn new() -> Self {
        Decoder {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Takes one byte from the line.
    pub fn push(&mut self, byte: u8) -> Push<'_> {
        if byte != 0 {
            if self.len < N {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflow = true;
            }
            return Push::Pending;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.len = 0;
        self.overflow = false;
        if overflow {
            return Push::Dropped(Error::BufferTooSmall);
        }
        if len == 0 {
            return Push::Pending;
        }
        match Self::frame(&mut self.buf[..len]) {
            Ok(r) => Push::Frame(r),
            Err(e) => Push::Dropped(e),
        }
    }

    fn frame(buf: &mut [u8]) -> Result<Reading<'_>, Error> {
        let n = cobs_decode_in_place(buf)?;
        let body_len = n.checked_sub(CRC_LEN).ok_or(Error::BadFrame)?;
        let (body, crc) = buf[..n].split_at(body_len);
        let mut want = [0u8; CRC_LEN];
        want.copy_from_slice(crc);
        if crc32(body) != u32::from_be_bytes(want) {
            return Err(Error::BadFrame);
        }
        Reading::parse_body(body)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    const ID: &[u8] = b"TMP0A1B2C3D4E5F6G7H8J9K";

    fn mac_reading<'a>(payload: &'a [u8]) -> Reading<'a> {
        Reading {
            sensor: SensorRef::Id(ID),
            seq: 7,
            destination: Destination::Channel(b"temp"),
            payload,
            protection: Protection::Mac([0xAB; 16]),
        }
    }

    fn encode(r: &Reading<'_>) -> Vec<u8> {
        let mut scratch = [0u8; 600];
        let mut out = [0u8; 700];
        let n = r.encode(&mut scratch, &mut out).expect("encode");
        out[..n].to_vec()
    }

    /// Everything a decoder makes of `bytes`: frames (as their seq) and drops.
    fn feed(bytes: &[u8]) -> (Vec<u64>, Vec<Error>) {
        let mut d = Decoder::<512>::new();
        let (mut frames, mut drops) = (Vec::new(), Vec::new());
        for &b in bytes {
            match d.push(b) {
                Push::Pending => {}
                Push::Frame(r) => frames.push(r.seq),
                Push::Dropped(e) => drops.push(e),
            }
        }
        (frames, drops)
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn cobs_matches_known_encodings_and_round_trips() {
        let cases: [(&[u8], &[u8]); 5] = [
            (&[0x00], &[0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
            (&[], &[0x01]),
        ];
        for (plain, enc) in cases {
            let mut out = [0u8; 16];
            let n = cobs_encode(plain, &mut out).expect("encode");
            assert_eq!(&out[..n], enc, "{plain:?}");
            let mut buf = enc.to_vec();
            let m = cobs_decode_in_place(&mut buf).expect("decode");
            assert_eq!(&buf[..m], plain);
        }
        for len in [253, 254, 255, 508, 600] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            let mut out = [0u8; 700];
            let n = cobs_encode(&plain, &mut out).expect("encode");
            assert!(n < encoded_len_max(len));
            assert!(!out[..n].contains(&0));
            let m = cobs_decode_in_place(&mut out[..n]).expect("decode");
            assert_eq!(&out[..m], &plain[..]);
        }
        assert_eq!(
            cobs_decode_in_place(&mut [0x05, 0x11]),
            Err(Error::BadFrame)
        );
        assert_eq!(
            cobs_decode_in_place(&mut [0x02, 0x00]),
            Err(Error::BadFrame)
        );
    }

    #[test]
    fn readings_round_trip_in_every_form() {
        let sealed = [0x5Au8; 26];
        let forms = [
            mac_reading(br#"{"t":21.5}"#),
            mac_reading(b""),
            Reading {
                sensor: SensorRef::Index(3),
                seq: u64::MAX,
                destination: Destination::Topic(b"plant/7/boiler/t"),
                payload: &sealed,
                protection: Protection::Sealed,
            },
            Reading {
                sensor: SensorRef::Id(b"A"),
                seq: 1,
                destination: Destination::Channel(&[b'c'; CHANNEL_MAX]),
                payload: &[0u8; 200],
                protection: Protection::Mac([0; 16]),
            },
        ];
        for r in forms {
            let wire = encode(&r);
            assert_eq!(wire.last(), Some(&0));
            assert!(!wire[..wire.len() - 1].contains(&0));
            let mut d = Decoder::<512>::new();
            let mut got = None;
            for &b in &wire {
                if let Push::Frame(f) = d.push(b) {
                    assert_eq!(f, r);
                    got = Some(f.seq);
                }
            }
            assert_eq!(got, Some(r.seq));
        }
    }

    #[test]
    fn encoding_refuses_what_the_layout_cannot_carry() {
        let mut scratch = [0u8; 600];
        let mut out = [0u8; 700];
        let bad = [
            Reading {
                seq: 0,
                ..mac_reading(b"x")
            },
            Reading {
                sensor: SensorRef::Id(b"has space"),
                ..mac_reading(b"x")
            },
            Reading {
                sensor: SensorRef::Id(&[b'a'; 24]),
                ..mac_reading(b"x")
            },
            Reading {
                destination: Destination::Channel(b"a/b"),
                ..mac_reading(b"x")
            },
            Reading {
                destination: Destination::Topic(b"devices/#"),
                ..mac_reading(b"x")
            },
            Reading {
                protection: Protection::Sealed,
                ..mac_reading(&[1; 15])
            },
        ];
        for r in bad {
            assert!(r.encode(&mut scratch, &mut out).is_err(), "{r:?}");
        }
        let mut small = [0u8; 20];
        assert_eq!(
            mac_reading(b"x").encode(&mut scratch, &mut small),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn every_single_bit_flip_is_dropped_and_the_next_frame_still_decodes() {
        let good = encode(&mac_reading(br#"{"t":21.5}"#));
        let next = encode(&Reading {
            seq: 8,
            ..mac_reading(br#"{"t":21.6}"#)
        });
        for i in 0..good.len() * 8 {
            let mut wire = good.clone();
            wire[i / 8] ^= 1 << (i % 8);
            wire.extend_from_slice(&next);
            let (frames, drops) = feed(&wire);
            // A flip that makes a 0x00 splits the frame in two; one that removes the final
            // 0x00 merges it with the next frame, which is then lost with it. Never is a
            // changed frame accepted.
            assert!(
                !frames.contains(&7),
                "bit {i}: the altered frame was accepted"
            );
            if i / 8 != good.len() - 1 {
                assert_eq!(frames, [8], "bit {i}: the next frame");
            }
            assert!(!drops.is_empty(), "bit {i}");
        }
    }

    #[test]
    fn truncated_frames_are_dropped() {
        let good = encode(&mac_reading(br#"{"t":21.5}"#));
        for cut in 1..good.len() - 1 {
            let mut wire = good[..cut].to_vec();
            wire.push(0);
            let (frames, drops) = feed(&wire);
            assert!(frames.is_empty(), "cut at {cut}");
            assert_eq!(drops.len(), 1, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_before_between_and_inside_resynchronises() {
        let a = encode(&mac_reading(b"a"));
        let b = encode(&Reading {
            seq: 9,
            ..mac_reading(b"b")
        });
        // Pseudo-random noise (xorshift) without and with zero bytes.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut noise = Vec::new();
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        let mut wire = noise.clone();
        wire.push(0);
        wire.extend_from_slice(&a);
        wire.extend_from_slice(&noise[..37]);
        wire.push(0);
        wire.extend_from_slice(&b);
        wire.extend_from_slice(&[0, 0, 0]);
        wire.extend_from_slice(&a[..5]); // a frame cut off by a sensor reset
        wire.push(0);
        wire.extend_from_slice(&b);
        let (frames, drops) = feed(&wire);
        assert_eq!(frames, [7, 9, 9]);
        assert!(drops.len() >= 3);
        // Noise alone never makes a frame.
        let (frames, _) = feed(&noise);
        assert!(frames.is_empty());
    }

    #[test]
    fn an_overlong_run_is_dropped_at_its_delimiter() {
        let mut wire = [0x41u8; 2000].to_vec();
        wire.push(0);
        wire.extend_from_slice(&encode(&mac_reading(b"a")));
        let (frames, drops) = feed(&wire);
        assert_eq!(frames, [7]);
        assert_eq!(drops, [Error::BufferTooSmall]);
    }

    #[test]
    fn bodies_with_bad_fields_are_refused_even_with_a_good_crc() {
        let mut body = [0u8; 128];
        let n = mac_reading(b"x").encode_body(&mut body).expect("body");
        let good = body[..n].to_vec();
        let cases: [(&str, usize, u8); 5] = [
            ("unknown kind", 0, 0x03),
            ("unknown flag", 1, 0x04),
            ("id length past the end", 2, 200),
            ("id with a bad character", 3, b'/'),
            ("seq 0", 2 + 1 + ID.len() + 7, 0), // with the high bytes already 0
        ];
        for (what, at, v) in cases {
            let mut b = good.clone();
            b[at] = v;
            assert!(Reading::parse_body(&b).is_err(), "{what}");
            let mut framed = b.clone();
            framed.extend_from_slice(&crc32(&b).to_be_bytes());
            let mut wire = [0u8; 200];
            let m = cobs_encode(&framed, &mut wire).expect("cobs");
            let mut stream = wire[..m].to_vec();
            stream.push(0);
            let (frames, drops) = feed(&stream);
            assert!(frames.is_empty() && drops.len() == 1, "{what}");
        }
        assert_eq!(Reading::parse_body(&good[..n - 17]), Err(Error::BadFrame));
    }

    #[test]
    fn channel_topic_names_the_devices_tree() {
        let mut buf = [0u8; 64];
        assert_eq!(
            channel_topic(ID, b"temp", &mut buf),
            Ok(&b"devices/TMP0A1B2C3D4E5F6G7H8J9K/temp"[..])
        );
        assert!(channel_topic(ID, b"a/b", &mut buf).is_err());
        assert_eq!(
            channel_topic(ID, b"temp", &mut [0u8; 10]),
            Err(Error::BufferTooSmall)
        );
    }
}
