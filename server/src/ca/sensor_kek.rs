//! The sensor key-encryption key (KEK). A sensor's 32-byte key K is returned once at
//! registration and kept in the database only sealed under the KEK (AES-256-GCM), so that a
//! copy of the database alone gives no sensor key.
//!
//! The KEK is 32 random bytes in `<data-dir>/ca/sensor.kek`, beside the CA keys and kept like
//! them: mode 0600 in the 0700 `ca/` directory, checked at load, and encrypted with the CA
//! passphrase (`DEVID_CA_PASSPHRASE`, devid's encrypted key format, [`super::keystore`]) when
//! one is set; `devid-server change-passphrase` re-encrypts it with the CA keys. With the CA
//! keys in a PKCS#11 token there is no passphrase and the file is plain (PEM `DEVID SENSOR
//! KEK`). The first start after this file was introduced makes it (created atomically, so
//! concurrent first starts agree on one). Every process of a PostgreSQL scale-out needs the
//! same KEK, exactly as it needs the same CA files (a shared data directory, or copies of
//! `ca/`): the database records a check value of the KEK that sealed its keys
//! ([`SensorKek::check_value`]), and a process whose KEK differs says so at start and refuses
//! to seal or open sensor keys (its devices are unaffected) until its `ca/sensor.kek` is the
//! others'.
//!
//! A sealed key is `version (1) || nonce (12) || AES-256-GCM(KEK, nonce, aad, K) || tag (16)`,
//! 61 bytes, with `aad = "devid sensor key" || client_id`: a sealed key moved to another
//! sensor's row does not open.

use std::fs;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::SecureRandom;

use super::error::{io_err, CaError};
use super::keys::{check_passphrase, read_key_file};
use super::keystore::{self, KeystoreError};
use super::layout::{pem_block, CA_DIR};

/// The KEK's file name under `<data-dir>/ca/`.
pub const SENSOR_KEK_FILE: &str = "sensor.kek";
/// PEM label of an unencrypted KEK file.
const PLAIN_LABEL: &str = "DEVID SENSOR KEK";
const KEK_LEN: usize = 32;
const SEALED_VERSION: u8 = 1;
/// Length of a sealed sensor key.
pub const SEALED_LEN: usize = 1 + NONCE_LEN + KEK_LEN + 16;
const AAD_PREFIX: &[u8] = b"devid sensor key";

/// The sensor KEK, loaded.
pub struct SensorKek {
    key: LessSafeKey,
    check: [u8; 32],
    /// Set once the database's record of the KEK was found to match (or written).
    matched: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SensorKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorKek")
            .field("check", &hex::encode(&self.check[..8]))
            .finish_non_exhaustive()
    }
}

/// Why a sealed sensor key does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the sealed sensor key does not open under this KEK (or was moved from another sensor)")]
pub struct SealError;

impl SensorKek {
    /// Loads `<data_dir>/ca/sensor.kek`, first making it when it is absent (32 random bytes,
    /// encrypted under `passphrase` when one is given). `ca/` must exist (the CA is made or
    /// loaded first). A file that exists must open with exactly this passphrase (encrypted
    /// when one is given, plain when not), as the CA keys must.
    pub fn load_or_create(
        data_dir: &Path,
        passphrase: Option<&str>,
        rng: &dyn SecureRandom,
    ) -> Result<SensorKek, CaError> {
        check_passphrase(passphrase)?;
        let path = data_dir.join(CA_DIR).join(SENSOR_KEK_FILE);
        if !path.exists() {
            create(&path, passphrase, rng)?;
        }
        let text = read_key_file(&path)?;
        let bytes = decode(&path, &text, passphrase)?;
        Ok(SensorKek::from_bytes(&bytes))
    }

    /// The KEK from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEK_LEN]) -> SensorKek {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes),
            b"devid sensor kek check value",
        );
        let mut check = [0u8; 32];
        check.copy_from_slice(tag.as_ref());
        // AES-256 takes any 32 bytes as a key.
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_or_else(
            |_| unreachable!("a 32-byte AES-256 key is always accepted"),
            LessSafeKey::new,
        );
        SensorKek {
            key,
            check,
            matched: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the database's record of the KEK was found to match this one.
    pub fn matched(&self) -> bool {
        self.matched.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Remembers that the database's record of the KEK matches this one.
    pub fn set_matched(&self) {
        self.matched
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// HMAC-SHA256(KEK, "devid sensor kek check value"): names the KEK without revealing it.
    pub fn check_value(&self) -> [u8; 32] {
        self.check
    }

    /// Seals sensor `client_id`'s key `k` (see the module docs for the format).
    pub fn seal(
        &self,
        client_id: &str,
        k: &[u8; 32],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, CaError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| CaError::Rng)?;
        let mut body = k.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(client_id)),
                &mut body,
            )
            .map_err(|_| CaError::Signing("sealing a sensor key failed".into()))?;
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens sensor `client_id`'s sealed key.
    pub fn open(
        &self,
        client_id: &str,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, SealError> {
        if sealed.len() != SEALED_LEN || sealed[0] != SEALED_VERSION {
            return Err(SealError);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let mut body = zeroize::Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(client_id)),
                &mut body,
            )
            .map_err(|_| SealError)?;
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        k.copy_from_slice(plain);
        Ok(k)
    }
}

fn aad(client_id: &str) -> Vec<u8> {
    [AAD_PREFIX, client_id.as_bytes()].concat()
}

/// The KEK file's text for `bytes`: encrypted under `passphrase`, or plain.
fn encode(
    bytes: &[u8],
    passphrase: Option<&str>,
    rng: &dyn SecureRandom,
    path: &Path,
) -> Result<String, CaError> {
    match passphrase {
        None => Ok(pem_block(PLAIN_LABEL, bytes)),
        Some(p) => keystore::encrypt(bytes, p, keystore::PBKDF2_ITERATIONS, rng)
            .map_err(|e| kek_err(e, path)),
    }
}

/// The KEK bytes of a KEK file's text, which must be encrypted exactly when a passphrase is
/// given.
fn decode(path: &Path, text: &str, passphrase: Option<&str>) -> Result<[u8; KEK_LEN], CaError> {
    let bad = |reason: String| CaError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let block = pem::parse(text).map_err(|_| bad("no PEM block".into()))?;
    let bytes = if block.tag() == PLAIN_LABEL {
        if passphrase.is_some() {
            return Err(CaError::UnexpectedPassphrase {
                path: path.to_path_buf(),
            });
        }
        block.into_contents()
    } else if block.tag() == keystore::ENCRYPTED_LABEL {
        keystore::decode_key(text, passphrase)
            .map_err(|e| kek_err(e, path))?
            .pkcs8_der
    } else {
        return Err(bad(format!("unexpected PEM label {:?}", block.tag())));
    };
    <[u8; KEK_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| bad(format!("the KEK is {} bytes, not {KEK_LEN}", bytes.len())))
}

/// Makes the KEK file unless another process made it first: the new file is written and synced
/// under a private temporary name, then hard-linked to its name, which fails when the name
/// exists (unlike a rename), so every process ends up with the first one made.
fn create(path: &Path, passphrase: Option<&str>, rng: &dyn SecureRandom) -> Result<(), CaError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; KEK_LEN]);
    rng.fill(bytes.as_mut()).map_err(|_| CaError::Rng)?;
    let text = encode(bytes.as_ref(), passphrase, rng, path)?;
    let mut tag = [0u8; 8];
    rng.fill(&mut tag).map_err(|_| CaError::Rng)?;
    let tmp: PathBuf = path.with_extension(format!("kek.{}.tmp", hex::encode(tag)));
    super::layout::write_private(&tmp, text.as_bytes())?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the sensor key-encryption key");
            match path.parent() {
                Some(dir) => super::layout::sync_dir(dir),
                None => Ok(()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// For `change-passphrase`: the KEK file's text re-encoded under `new` after opening it with
/// `old`, or None when it already opens with `new` (or there is no KEK file).
pub(super) fn reencode(
    ca_dir: &Path,
    old: Option<&str>,
    new: Option<&str>,
    rng: &dyn SecureRandom,
) -> Result<Option<(PathBuf, String)>, CaError> {
    let path = ca_dir.join(SENSOR_KEK_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_key_file(&path)?;
    if decode(&path, &text, new).is_ok() {
        return Ok(None);
    }
    let bytes = zeroize::Zeroizing::new(decode(&path, &text, old)?);
    Ok(Some((
        path.clone(),
        encode(bytes.as_ref(), new, rng, &path)?,
    )))
}

fn kek_err(e: KeystoreError, path: &Path) -> CaError {
    let path = path.to_path_buf();
    match e {
        KeystoreError::PassphraseRequired => CaError::PassphraseRequired { path },
        KeystoreError::WrongPassphrase => CaError::WrongPassphrase { path },
        KeystoreError::EmptyPassphrase => CaError::EmptyPassphrase,
        KeystoreError::Rng => CaError::Rng,
        KeystoreError::Malformed(reason) => CaError::KeyFile { path, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn a_sealed_key_opens_only_under_its_kek_and_for_its_sensor() {
        let rng = SystemRandom::new();
        let kek = SensorKek::from_bytes(&[7; 32]);
        let k = [42u8; 32];
        let sealed = kek.seal("S1", &k, &rng).expect("seal");
        assert_eq!(sealed.len(), SEALED_LEN);
        assert!(!sealed.windows(32).any(|w| w == k), "K is not in clear");
        assert_eq!(*kek.open("S1", &sealed).expect("open"), k);
        assert_eq!(kek.open("S2", &sealed), Err(SealError));
        assert_eq!(
            SensorKek::from_bytes(&[8; 32]).open("S1", &sealed),
            Err(SealError)
        );
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(kek.open("S1", &flipped), Err(SealError));
        assert_ne!(
            kek.check_value(),
            SensorKek::from_bytes(&[8; 32]).check_value()
        );
    }

    #[test]
    fn the_kek_file_is_made_once_private_and_encrypted_under_the_passphrase() {
        let rng = SystemRandom::new();
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join(CA_DIR)).expect("ca dir");
        let kek = SensorKek::load_or_create(tmp.path(), Some("pw"), &rng).expect("create");
        let path = tmp.path().join(CA_DIR).join(SENSOR_KEK_FILE);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("-----BEGIN DEVID ENCRYPTED PRIVATE KEY-----"));
        let again = SensorKek::load_or_create(tmp.path(), Some("pw"), &rng).expect("load");
        assert_eq!(again.check_value(), kek.check_value());
        assert!(matches!(
            SensorKek::load_or_create(tmp.path(), Some("other"), &rng),
            Err(CaError::WrongPassphrase { .. })
        ));
        assert!(matches!(
            SensorKek::load_or_create(tmp.path(), None, &rng),
            Err(CaError::PassphraseRequired { .. })
        ));
        // Re-encrypted without a passphrase, it is the same KEK.
        let (p, plain) = reencode(&tmp.path().join(CA_DIR), Some("pw"), None, &rng)
            .expect("reencode")
            .expect("changed");
        fs::write(&p, plain).expect("write");
        let plain = SensorKek::load_or_create(tmp.path(), None, &rng).expect("plain");
        assert_eq!(plain.check_value(), kek.check_value());
        assert!(reencode(&tmp.path().join(CA_DIR), Some("pw"), None, &rng)
            .expect("nothing to do")
            .is_none());
    }
}
