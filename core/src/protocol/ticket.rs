//! Resumption tickets: sealing and strict opening on the broker, storage on the device.
//!
//! Sealed ticket = `key_id (u32) || nonce[12] || AES-256-GCM(ticket key, nonce,
//! aad = "DEVID-1 ticket" || key_id, plaintext)`, where plaintext =
//! `0x01 (format) || client_id (opaque<u8>) || cert_serial (opaque<u8>, lowercase hex) ||
//! resumption_secret[32] || issued (u64) || expires (u64) || cert_not_after (u64)`.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::SecureRandom;
use rustls_pki_types::UnixTime;
use zeroize::Zeroize;

use super::codec::{put_u16_prefixed, put_u8_prefixed, Reader};
use super::error::{ConfigError, DecodeError, Error};
use super::unix_secs;

const TICKET_AAD_LABEL: &[u8] = b"DEVID-1 ticket";
const TICKET_FORMAT: u8 = 0x01;
const TAG_LEN: usize = 16;
/// Longest certificate serial in hex (20 bytes, RFC 5280).
const MAX_SERIAL_HEX: usize = 40;

/// One AES-256-GCM ticket key with its id.
pub struct TicketKey {
    id: u32,
    key: LessSafeKey,
}

impl TicketKey {
    /// A ticket key from its id and 32 secret bytes.
    pub fn new(id: u32, secret: &[u8; 32]) -> Self {
        // AES-256-GCM takes exactly 32 key bytes, which the type guarantees.
        let unbound = UnboundKey::new(&AES_256_GCM, secret).unwrap_or_else(|_| unreachable!());
        TicketKey {
            id,
            key: LessSafeKey::new(unbound),
        }
    }

    /// The key id carried in every ticket sealed under this key.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The current ticket key (seals and opens) and previous ones (open only, until their
/// tickets expire).
#[derive(Debug)]
pub struct TicketKeys {
    current: TicketKey,
    previous: Vec<TicketKey>,
}

/// What a ticket says.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketContents {
    /// The device's ClientID.
    pub client_id: String,
    /// The device certificate's serial, lowercase hex.
    pub cert_serial: String,
    /// The resumption secret of the session that issued the ticket.
    pub resumption_secret: [u8; 32],
    /// Issue time, Unix seconds.
    pub issued: u64,
    /// Expiry time, Unix seconds (never after `cert_not_after`).
    pub expires: u64,
    /// The device certificate's notAfter, so that tickets issued on resumption never outlive it.
    pub cert_not_after: u64,
}

impl Drop for TicketContents {
    fn drop(&mut self) {
        self.resumption_secret.zeroize();
    }
}

impl fmt::Debug for TicketContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketContents")
            .field("client_id", &self.client_id)
            .field("cert_serial", &self.cert_serial)
            .field("issued", &self.issued)
            .field("expires", &self.expires)
            .field("cert_not_after", &self.cert_not_after)
            .finish_non_exhaustive()
    }
}

fn aad(id: u32) -> [u8; 18] {
    let mut a = [0u8; 18];
    a[..14].copy_from_slice(TICKET_AAD_LABEL);
    a[14..].copy_from_slice(&id.to_be_bytes());
    a
}

impl TicketKeys {
    /// Keys with `current` only.
    pub fn new(current: TicketKey) -> Self {
        TicketKeys {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a previous key, still accepted for opening.
    pub fn with_previous(mut self, key: TicketKey) -> Self {
        self.previous.push(key);
        self
    }

    /// Parses a ticket key file: one key per line, `<id (decimal u32)> <64 hex digits>`, the
    /// first line the current key, later lines previous keys; blank lines and `#` comments are
    /// ignored. Ids must be distinct.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| ConfigError(format!("ticket key file line {}: {why}", n + 1));
            let mut parts = line.split_whitespace();
            let (Some(id), Some(hexkey), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `<id> <64 hex digits>`"));
            };
            let id: u32 = id.parse().map_err(|_| bad("id is not a decimal u32"))?;
            let mut secret = [0u8; 32];
            hex::decode_to_slice(hexkey, &mut secret)
                .map_err(|_| bad("key is not 64 hex digits"))?;
            if keys.iter().any(|k: &TicketKey| k.id == id) {
                return Err(bad("duplicate key id"));
            }
            keys.push(TicketKey::new(id, &secret));
            secret.zeroize();
        }
        let mut it = keys.into_iter();
        let current = it
            .next()
            .ok_or_else(|| ConfigError("ticket key file has no key".into()))?;
        Ok(TicketKeys {
            current,
            previous: it.collect(),
        })
    }

    /// The current key's id.
    pub fn current_id(&self) -> u32 {
        self.current.id
    }

    /// Seals `contents` under the current key.
    pub fn seal(
        &self,
        contents: &TicketContents,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)
            .map_err(|_| Error::Internal("random number generator failed"))?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + 120 + TAG_LEN);
        out.extend_from_slice(&self.current.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.push(TICKET_FORMAT);
        put_u8_prefixed(&mut out, |o| {
            o.extend_from_slice(contents.client_id.as_bytes())
        })?;
        put_u8_prefixed(&mut out, |o| {
            o.extend_from_slice(contents.cert_serial.as_bytes())
        })?;
        out.extend_from_slice(&contents.resumption_secret);
        out.extend_from_slice(&contents.issued.to_be_bytes());
        out.extend_from_slice(&contents.expires.to_be_bytes());
        out.extend_from_slice(&contents.cert_not_after.to_be_bytes());
        let tag = self
            .current
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(self.current.id)),
                &mut out[start..],
            )
            .map_err(|_| Error::Internal("ticket sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a ticket: authentic under the current or a previous key, and strictly well formed.
    /// Expiry is the caller's to check (the handshake does).
    pub fn open(&self, ticket: &[u8]) -> Result<TicketContents, Error> {
        let mut r = Reader::new(ticket);
        let id = r.u32().map_err(|_| Error::BadTicket)?;
        let nonce = *r.array::<NONCE_LEN>().map_err(|_| Error::BadTicket)?;
        let sealed = r.rest();
        if sealed.len() < TAG_LEN {
            return Err(Error::BadTicket);
        }
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or(Error::BadTicket)?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(id)),
                &mut buf,
            )
            .map_err(|_| Error::BadTicket)?;
        let parsed = parse_plaintext(plain).map_err(|_| Error::BadTicket);
        buf.zeroize();
        parsed
    }
}

pub(crate) fn parse_plaintext(plain: &[u8]) -> Result<TicketContents, DecodeError> {
    Reader::read_all(plain, |r| {
        if r.u8()? != TICKET_FORMAT {
            return Err(DecodeError::BadValue);
        }
        let client_id =
            std::str::from_utf8(r.sub_u8()?.rest()).map_err(|_| DecodeError::BadValue)?;
        crate::clientid::validate(client_id).map_err(|_| DecodeError::BadValue)?;
        let serial = std::str::from_utf8(r.sub_u8()?.rest()).map_err(|_| DecodeError::BadValue)?;
        if serial.is_empty()
            || serial.len() > MAX_SERIAL_HEX
            || !serial
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DecodeError::BadValue);
        }
        let resumption_secret = *r.array::<32>()?;
        let issued = r.u64()?;
        let expires = r.u64()?;
        let cert_not_after = r.u64()?;
        if issued > expires || expires > cert_not_after {
            return Err(DecodeError::BadValue);
        }
        Ok(TicketContents {
            client_id: client_id.to_string(),
            cert_serial: serial.to_string(),
            resumption_secret,
            issued,
            expires,
            cert_not_after,
        })
    })
}

/// A ticket as the device keeps it: opaque bytes, the resumption secret, and when it expires
/// by the device's clock.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumptionTicket {
    /// The sealed ticket, opaque to the device.
    pub ticket: Vec<u8>,
    /// The resumption secret of the session that received the ticket.
    pub resumption_secret: [u8; 32],
    /// The lifetime the broker gave, in seconds.
    pub lifetime: u32,
    /// When the device received it, Unix seconds.
    pub received_at: u64,
}

impl Drop for ResumptionTicket {
    fn drop(&mut self) {
        self.resumption_secret.zeroize();
    }
}

impl fmt::Debug for ResumptionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumptionTicket")
            .field("len", &self.ticket.len())
            .field("lifetime", &self.lifetime)
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

const STORED_FORMAT: u8 = 0x01;

impl ResumptionTicket {
    /// Expiry by the device's clock, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.received_at.saturating_add(u64::from(self.lifetime))
    }

    /// True when the ticket has not expired at `now` (the broker has the last word).
    pub fn is_usable(&self, now: UnixTime) -> bool {
        unix_secs(now) < self.expires_at()
    }

    /// The storage form: `0x01 || received_at (u64) || lifetime (u32) || resumption_secret[32]
    /// || ticket (opaque<u16>)`. It holds a secret: store it with mode 0600.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + 4 + 32 + 2 + self.ticket.len());
        out.push(STORED_FORMAT);
        out.extend_from_slice(&self.received_at.to_be_bytes());
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.resumption_secret);
        // Tickets come from a u16-prefixed field, so they fit; a longer one would be truncated
        // to an empty field and refused by from_bytes.
        if put_u16_prefixed(&mut out, |o| o.extend_from_slice(&self.ticket)).is_err() {
            out.truncate(1 + 8 + 4 + 32);
            out.extend_from_slice(&[0, 0]);
        }
        out
    }

    /// Parses the storage form strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Ok(Reader::read_all(bytes, |r| {
            if r.u8()? != STORED_FORMAT {
                return Err(DecodeError::BadValue);
            }
            let received_at = r.u64()?;
            let lifetime = r.u32()?;
            let resumption_secret = *r.array::<32>()?;
            let ticket = r.sub_u16()?.rest().to_vec();
            if ticket.is_empty() || lifetime == 0 {
                return Err(DecodeError::BadValue);
            }
            Ok(ResumptionTicket {
                ticket,
                resumption_secret,
                lifetime,
                received_at,
            })
        })?)
    }
}
