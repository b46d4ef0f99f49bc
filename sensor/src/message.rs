//! The DEVID-S1 message: the publish MAC and the AES-256-GCM seal.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::keys::{DerivedKeys, LABEL_SEAL};
use crate::{id_len, Error, KEY_LEN, MAC_LEN, TAG_LEN};

/// The first bytes of the MAC input.
pub const LABEL_PUBLISH: &[u8] = b"DEVID-S1 publish";

/// Longest id + topic that [`seal_in_place`] and [`open_in_place`] take with their own stack
/// buffer for the associated data; longer ones need the `_with_scratch` forms.
pub const AAD_STACK_LEN: usize = 320;

fn topic_len(topic: &[u8]) -> Result<[u8; 2], Error> {
    u16::try_from(topic.len())
        .map(u16::to_be_bytes)
        .map_err(|_| Error::BadTopic)
}

/// The first 16 bytes of `HMAC-SHA256(K_mac, "DEVID-S1 publish" || u8(len(id)) || id ||
/// u64be(seq) || u16be(len(topic)) || topic || payload)`.
pub fn publish_mac(
    k_mac: &[u8; KEY_LEN],
    id: &[u8],
    seq: u64,
    topic: &[u8],
    payload: &[u8],
) -> Result<[u8; MAC_LEN], Error> {
    mac_with(
        &hmac::Key::new(hmac::HMAC_SHA256, k_mac),
        id,
        seq,
        topic,
        payload,
    )
}

fn mac_with(
    key: &hmac::Key,
    id: &[u8],
    seq: u64,
    topic: &[u8],
    payload: &[u8],
) -> Result<[u8; MAC_LEN], Error> {
    let idl = id_len(id)?;
    let tl = topic_len(topic)?;
    if seq == 0 {
        return Err(Error::BadSeq);
    }
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(LABEL_PUBLISH);
    ctx.update(&[idl]);
    ctx.update(id);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&tl);
    ctx.update(topic);
    ctx.update(payload);
    let tag = ctx.sign();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
    Ok(out)
}

/// Checks a publish MAC in constant time ([`Error::BadMac`] when `tag` is not the 16 bytes
/// [`publish_mac`] gives).
pub fn verify_mac(
    k_mac: &[u8; KEY_LEN],
    id: &[u8],
    seq: u64,
    topic: &[u8],
    payload: &[u8],
    tag: &[u8],
) -> Result<(), Error> {
    verify_with(
        &hmac::Key::new(hmac::HMAC_SHA256, k_mac),
        id,
        seq,
        topic,
        payload,
        tag,
    )
}

fn verify_with(
    key: &hmac::Key,
    id: &[u8],
    seq: u64,
    topic: &[u8],
    payload: &[u8],
    tag: &[u8],
) -> Result<(), Error> {
    let want = mac_with(key, id, seq, topic, payload)?;
    if tag.len() == MAC_LEN && bool::from(want.ct_eq(tag)) {
        Ok(())
    } else {
        Err(Error::BadMac)
    }
}

/// The seal nonce: `00000000 || u64be(seq)`.
pub fn seal_nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Length of the seal's associated data for this id and topic.
pub fn seal_aad_len(id: &[u8], topic: &[u8]) -> usize {
    LABEL_SEAL.len() + 1 + id.len() + 2 + topic.len()
}

/// Writes the seal's associated data, `"DEVID-S1 seal" || u8(len(id)) || id ||
/// u16be(len(topic)) || topic`, to the front of `out` and returns it.
pub fn seal_aad<'o>(id: &[u8], topic: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], Error> {
    let idl = id_len(id)?;
    let tl = topic_len(topic)?;
    let n = seal_aad_len(id, topic);
    let out = out.get_mut(..n).ok_or(Error::BadTopic)?;
    let (label, rest) = out.split_at_mut(LABEL_SEAL.len());
    label.copy_from_slice(LABEL_SEAL);
    rest[0] = idl;
    let (idb, rest) = rest[1..].split_at_mut(id.len());
    idb.copy_from_slice(id);
    rest[..2].copy_from_slice(&tl);
    rest[2..].copy_from_slice(topic);
    Ok(out)
}

fn aead_key(k_enc: &[u8; KEY_LEN]) -> LessSafeKey {
    // AES-256-GCM takes exactly 32 key bytes, which the array guarantees.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k_enc).unwrap_or_else(|_| unreachable!()))
}

/// Seals the reading in `buf[..plain_len]` in place: afterwards `buf[..plain_len + 16]` is the
/// ciphertext followed by the 16-byte tag, whose length is returned. `buf` must have room for
/// the tag. Ids and topics together up to [`AAD_STACK_LEN`] - 16 bytes.
pub fn seal_in_place(
    k_enc: &[u8; KEY_LEN],
    id: &[u8],
    seq: u64,
    topic: &[u8],
    buf: &mut [u8],
    plain_len: usize,
) -> Result<usize, Error> {
    let mut scratch = [0u8; AAD_STACK_LEN];
    seal_in_place_with_scratch(k_enc, id, seq, topic, buf, plain_len, &mut scratch)
}

/// [`seal_in_place`] with the associated data built in `scratch` (at least
/// [`seal_aad_len`] bytes), for any topic length.
pub fn seal_in_place_with_scratch(
    k_enc: &[u8; KEY_LEN],
    id: &[u8],
    seq: u64,
    topic: &[u8],
    buf: &mut [u8],
    plain_len: usize,
    scratch: &mut [u8],
) -> Result<usize, Error> {
    seal_with(&aead_key(k_enc), id, seq, topic, buf, plain_len, scratch)
}

fn seal_with(
    key: &LessSafeKey,
    id: &[u8],
    seq: u64,
    topic: &[u8],
    buf: &mut [u8],
    plain_len: usize,
    scratch: &mut [u8],
) -> Result<usize, Error> {
    if seq == 0 {
        return Err(Error::BadSeq);
    }
    let aad = seal_aad(id, topic, scratch)?;
    let total = plain_len
        .checked_add(TAG_LEN)
        .ok_or(Error::BufferTooSmall)?;
    let buf = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    let (plain, tag_out) = buf.split_at_mut(plain_len);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(seal_nonce(seq)),
            Aad::from(aad),
            plain,
        )
        // Only a reading beyond AES-GCM's ~64 GiB limit fails.
        .map_err(|_| Error::BufferTooSmall)?;
    tag_out.copy_from_slice(tag.as_ref());
    Ok(total)
}

/// Opens a sealed payload (ciphertext || tag) in place: afterwards `sealed[..n]` is the reading,
/// where `n` (the sealed length - 16) is returned. On failure [`Error::BadSeal`], and the
/// ciphertext in `sealed` has been overwritten: keep a copy if it is still needed.
pub fn open_in_place(
    k_enc: &[u8; KEY_LEN],
    id: &[u8],
    seq: u64,
    topic: &[u8],
    sealed: &mut [u8],
) -> Result<usize, Error> {
    let mut scratch = [0u8; AAD_STACK_LEN];
    open_in_place_with_scratch(k_enc, id, seq, topic, sealed, &mut scratch)
}

/// [`open_in_place`] with the associated data built in `scratch` (at least [`seal_aad_len`]
/// bytes), for any topic length.
pub fn open_in_place_with_scratch(
    k_enc: &[u8; KEY_LEN],
    id: &[u8],
    seq: u64,
    topic: &[u8],
    sealed: &mut [u8],
    scratch: &mut [u8],
) -> Result<usize, Error> {
    open_with(&aead_key(k_enc), id, seq, topic, sealed, scratch)
}

fn open_with(
    key: &LessSafeKey,
    id: &[u8],
    seq: u64,
    topic: &[u8],
    sealed: &mut [u8],
    scratch: &mut [u8],
) -> Result<usize, Error> {
    if seq == 0 {
        return Err(Error::BadSeq);
    }
    let aad = seal_aad(id, topic, scratch)?;
    if sealed.len() < TAG_LEN {
        return Err(Error::BadSeal);
    }
    key.open_in_place(
        Nonce::assume_unique_for_key(seal_nonce(seq)),
        Aad::from(aad),
        sealed,
    )
    .map(|plain| plain.len())
    .map_err(|_| Error::BadSeal)
}

/// K_mac and K_enc with their key schedules done once (HMAC pads, AES round keys and GHASH
/// table): for a broker or gateway that checks or makes many readings of one sensor. The free
/// functions redo that work on every call, which suits a sensor short of RAM.
#[derive(Clone)]
pub struct SensorKeys {
    mac: hmac::Key,
    seal: LessSafeKey,
}

impl SensorKeys {
    /// From K_mac and K_enc (as a broker gets them from devid-server).
    pub fn new(k_mac: &[u8; KEY_LEN], k_enc: &[u8; KEY_LEN]) -> Self {
        SensorKeys {
            mac: hmac::Key::new(hmac::HMAC_SHA256, k_mac),
            seal: aead_key(k_enc),
        }
    }

    /// From a sensor's derived keys.
    pub fn from_derived(keys: &DerivedKeys) -> Self {
        Self::new(&keys.mac, &keys.enc)
    }

    /// [`publish_mac`] with this key.
    pub fn publish_mac(
        &self,
        id: &[u8],
        seq: u64,
        topic: &[u8],
        payload: &[u8],
    ) -> Result<[u8; MAC_LEN], Error> {
        mac_with(&self.mac, id, seq, topic, payload)
    }

    /// [`verify_mac`] with this key.
    pub fn verify_mac(
        &self,
        id: &[u8],
        seq: u64,
        topic: &[u8],
        payload: &[u8],
        tag: &[u8],
    ) -> Result<(), Error> {
        verify_with(&self.mac, id, seq, topic, payload, tag)
    }

    /// [`seal_in_place_with_scratch`] with this key.
    pub fn seal_in_place(
        &self,
        id: &[u8],
        seq: u64,
        topic: &[u8],
        buf: &mut [u8],
        plain_len: usize,
        scratch: &mut [u8],
    ) -> Result<usize, Error> {
        seal_with(&self.seal, id, seq, topic, buf, plain_len, scratch)
    }

    /// [`open_in_place_with_scratch`] with this key.
    pub fn open_in_place(
        &self,
        id: &[u8],
        seq: u64,
        topic: &[u8],
        sealed: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<usize, Error> {
        open_with(&self.seal, id, seq, topic, sealed, scratch)
    }
}

impl core::fmt::Debug for SensorKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SensorKeys(..)")
    }
}
