//! Per-message authentication of device PUBLISHes: `devid-mac` (truncated HMAC) or
//! `devid-seal` (AES-256-GCM), both under keys derived from k_c2s, with a strictly increasing
//! `devid-seq`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hmac;

use super::codec::put_u16_prefixed;
use super::keys::{ct_eq, Secret, SessionKeys};
use super::Error;

/// User property: the sequence number, decimal.
pub const PROP_SEQ: &str = "devid-seq";
/// User property: base64url (no padding) of the 16-byte truncated MAC.
pub const PROP_MAC: &str = "devid-mac";
/// User property: `1` when the payload is sealed.
pub const PROP_SEAL: &str = "devid-seal";
/// User property the broker adds to accepted messages: the ClientID.
pub const PROP_VERIFIED: &str = "devid-verified";
/// Prefix of every devid property; the broker strips all of them from what clients send.
pub const PROP_PREFIX: &str = "devid-";

const LABEL_MAC_KEY: &[u8] = b"DEVID-1 mac key";
const LABEL_SEAL_KEY: &[u8] = b"DEVID-1 seal key";
const LABEL_PUBLISH: &[u8] = b"DEVID-1 publish";
const LABEL_SEAL_AAD: &[u8] = b"DEVID-1 seal";
/// Length of the truncated message MAC.
pub const MESSAGE_MAC_LEN: usize = 16;
/// AES-GCM tag length appended to a sealed payload.
pub const SEAL_TAG_LEN: usize = 16;

/// True for a property name the devid plugin owns (`devid-*`).
pub fn is_devid_property(name: &str) -> bool {
    name.starts_with(PROP_PREFIX)
}

/// How a PUBLISH is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// `devid-mac`: the 16-byte truncated MAC.
    Mac([u8; MESSAGE_MAC_LEN]),
    /// `devid-seal = 1`: the payload is ciphertext || tag.
    Seal,
}

/// The devid properties of one PUBLISH, parsed strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAuth {
    /// `devid-seq`.
    pub seq: u64,
    /// `devid-mac` or `devid-seal`.
    pub protection: Protection,
}

impl PublishAuth {
    /// Parses the `devid-*` user properties of a PUBLISH (others are ignored). `Ok(None)` when
    /// there are none; an error when one is duplicated, malformed or unknown, when `devid-seq`
    /// is missing, or when not exactly one of `devid-mac` and `devid-seal` is present.
    pub fn from_properties<'p, I>(props: I) -> Result<Option<PublishAuth>, Error>
    where
        I: IntoIterator<Item = (&'p str, &'p str)>,
    {
        let (mut seq, mut mac, mut seal, mut any) = (None, None, false, false);
        for (name, value) in props {
            if !is_devid_property(name) {
                continue;
            }
            any = true;
            match name {
                PROP_SEQ => {
                    if seq.replace(parse_seq(value)?).is_some() {
                        return Err(Error::BadProperty("devid-seq repeated"));
                    }
                }
                PROP_MAC => {
                    if mac.replace(parse_mac(value)?).is_some() {
                        return Err(Error::BadProperty("devid-mac repeated"));
                    }
                }
                PROP_SEAL => {
                    if value != "1" {
                        return Err(Error::BadProperty("devid-seal is not 1"));
                    }
                    if seal {
                        return Err(Error::BadProperty("devid-seal repeated"));
                    }
                    seal = true;
                }
                _ => return Err(Error::BadProperty("unknown devid property")),
            }
        }
        if !any {
            return Ok(None);
        }
        let seq = seq.ok_or(Error::BadProperty("devid-seq missing"))?;
        let protection = match (mac, seal) {
            (Some(m), false) => Protection::Mac(m),
            (None, true) => Protection::Seal,
            (Some(_), true) => return Err(Error::BadProperty("both devid-mac and devid-seal")),
            (None, false) => return Err(Error::BadProperty("neither devid-mac nor devid-seal")),
        };
        Ok(Some(PublishAuth { seq, protection }))
    }
}

/// A decimal u64 >= 1, digits only, no leading zero.
fn parse_seq(v: &str) -> Result<u64, Error> {
    let bad = Error::BadProperty("devid-seq is not a decimal u64 >= 1");
    if v.is_empty() || v.len() > 20 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad);
    }
    v.parse().map_err(|_| bad)
}

fn parse_mac(v: &str) -> Result<[u8; MESSAGE_MAC_LEN], Error> {
    let bad = Error::BadProperty("devid-mac is not 16 bytes of unpadded base64url");
    // 16 bytes are 22 characters; the decoder rejects non-canonical trailing bits.
    if v.len() != 22 {
        return Err(bad);
    }
    let mut out = [0u8; MESSAGE_MAC_LEN];
    match URL_SAFE_NO_PAD.decode_slice(v, &mut out) {
        Ok(MESSAGE_MAC_LEN) => Ok(out),
        _ => Err(bad),
    }
}

/// k_mac and k_seal, derived from k_c2s.
struct MessageKeys {
    mac: hmac::Key,
    seal: LessSafeKey,
}

impl MessageKeys {
    fn new(k_c2s: &[u8; 32]) -> Self {
        let prk = Secret(*k_c2s);
        let k_mac: [u8; 32] = prk.expand(LABEL_MAC_KEY, &[]);
        let mut k_seal: [u8; 32] = prk.expand(LABEL_SEAL_KEY, &[]);
        // AES-256-GCM takes exactly 32 key bytes, which the array guarantees.
        let unbound = UnboundKey::new(&AES_256_GCM, &k_seal).unwrap_or_else(|_| unreachable!());
        zeroize::Zeroize::zeroize(&mut k_seal);
        MessageKeys {
            mac: hmac::Key::new(hmac::HMAC_SHA256, &k_mac),
            seal: LessSafeKey::new(unbound),
        }
    }

    fn mac(&self, seq: u64, topic: &str, payload: &[u8]) -> Result<[u8; MESSAGE_MAC_LEN], Error> {
        let topic_len =
            u16::try_from(topic.len()).map_err(|_| Error::BadProperty("topic too long"))?;
        let payload_len =
            u32::try_from(payload.len()).map_err(|_| Error::BadProperty("payload too long"))?;
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(LABEL_PUBLISH);
        ctx.update(&seq.to_be_bytes());
        ctx.update(&topic_len.to_be_bytes());
        ctx.update(topic.as_bytes());
        ctx.update(&payload_len.to_be_bytes());
        ctx.update(payload);
        let tag = ctx.sign();
        let mut out = [0u8; MESSAGE_MAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..MESSAGE_MAC_LEN]);
        Ok(out)
    }

    fn nonce(seq: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&seq.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(topic: &str) -> Result<Vec<u8>, Error> {
        let mut aad = Vec::with_capacity(LABEL_SEAL_AAD.len() + 2 + topic.len());
        aad.extend_from_slice(LABEL_SEAL_AAD);
        put_u16_prefixed(&mut aad, |o| o.extend_from_slice(topic.as_bytes()))
            .map_err(|_| Error::BadProperty("topic too long"))?;
        Ok(aad)
    }
}

/// Device side: numbers, MACs and seals outgoing PUBLISHes.
pub struct PublishSigner {
    keys: MessageKeys,
    last_seq: u64,
}

/// The properties to attach to one outgoing PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTag {
    /// The sequence number used.
    pub seq: u64,
    /// `(name, value)` user properties to add, in order.
    pub properties: Vec<(&'static str, String)>,
}

impl PublishSigner {
    /// A signer for the session with these keys; seq starts at 1.
    pub fn new(keys: &SessionKeys) -> Self {
        PublishSigner {
            keys: MessageKeys::new(&keys.k_c2s),
            last_seq: 0,
        }
    }

    fn next_seq(&mut self) -> Result<u64, Error> {
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or(Error::SequenceExhausted)?;
        self.last_seq = seq;
        Ok(seq)
    }

    /// `devid-seq` and `devid-mac` for a PUBLISH of `payload` on `topic`.
    pub fn mac(&mut self, topic: &str, payload: &[u8]) -> Result<PublishTag, Error> {
        let seq = self.next_seq()?;
        let mac = self.keys.mac(seq, topic, payload)?;
        Ok(PublishTag {
            seq,
            properties: vec![
                (PROP_SEQ, seq.to_string()),
                (PROP_MAC, URL_SAFE_NO_PAD.encode(mac)),
            ],
        })
    }

    /// Seals `payload` in place (ciphertext || 16-byte tag) and returns `devid-seq` and
    /// `devid-seal`.
    pub fn seal(&mut self, topic: &str, payload: &mut Vec<u8>) -> Result<PublishTag, Error> {
        let aad = MessageKeys::aad(topic)?;
        let seq = self.next_seq()?;
        self.keys
            .seal
            .seal_in_place_append_tag(MessageKeys::nonce(seq), Aad::from(&aad), payload)
            .map_err(|_| Error::Internal("sealing failed"))?;
        Ok(PublishTag {
            seq,
            properties: vec![(PROP_SEQ, seq.to_string()), (PROP_SEAL, "1".to_string())],
        })
    }
}

/// Broker side: checks incoming PUBLISHes of one session, with the replay window.
pub struct PublishVerifier {
    keys: MessageKeys,
    last_seq: u64,
}

impl PublishVerifier {
    /// A verifier for the session with these keys; the first accepted seq must be >= 1.
    pub fn new(keys: &SessionKeys) -> Self {
        PublishVerifier {
            keys: MessageKeys::new(&keys.k_c2s),
            last_seq: 0,
        }
    }

    /// The last accepted sequence number (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Checks one PUBLISH. For a sealed message `payload` is decrypted in place (the tag is
    /// removed). On failure nothing changes: neither the payload nor the replay window.
    pub fn verify(
        &mut self,
        auth: &PublishAuth,
        topic: &str,
        payload: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if let Some(plain) = self.check(auth, topic, payload)? {
            *payload = plain;
        }
        Ok(())
    }

    /// Checks one PUBLISH without copying it: `Some(plaintext)` for a sealed message, `None`
    /// for a MAC'd one (its payload stands as sent). On failure the replay window is unchanged.
    pub fn check(
        &mut self,
        auth: &PublishAuth,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        if auth.seq <= self.last_seq {
            return Err(Error::Replay {
                seq: auth.seq,
                last: self.last_seq,
            });
        }
        let plain = match auth.protection {
            Protection::Mac(mac) => {
                ct_eq(&self.keys.mac(auth.seq, topic, payload)?, &mac)?;
                None
            }
            Protection::Seal => {
                let aad = MessageKeys::aad(topic)?;
                let mut buf = payload.to_vec();
                let plain_len = self
                    .keys
                    .seal
                    .open_in_place(MessageKeys::nonce(auth.seq), Aad::from(&aad), &mut buf)
                    .map_err(|_| Error::BadMac)?
                    .len();
                buf.truncate(plain_len);
                Some(buf)
            }
        };
        self.last_seq = auth.seq;
        Ok(plain)
    }
}
