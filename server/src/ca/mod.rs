//! The certificate authority: CA keys on disk, certificate issuance and CRL signing.
//!
//! Files under `<data_dir>/ca/` (directory mode 0700, files 0600):
//!
//! | file          | content                                                          |
//! |---------------|------------------------------------------------------------------|
//! | `root.crt`    | the root CA certificate (PEM)                                    |
//! | `root.key`    | the root key (only when devid made the root; see [`keystore`])   |
//! | `issuing.crt` | the online issuing CA certificate (PEM)                          |
//! | `issuing.key` | the issuing key, PKCS#8 PEM or devid's encrypted format          |
//! | `chain.pem`   | issuing CA first, then any intermediates, root last              |
//!
//! Creation is atomic and safe for concurrent first starts: everything is written and synced
//! into a private temporary directory, which is then renamed to `ca/`. `rename(2)` onto an
//! existing non-empty directory fails, so when two processes race exactly one CA wins and the
//! loser discards its own and loads the winner's. No lock file, so nothing goes stale after a
//! crash: `ca/` is either absent or complete.
//!
//! Issuance works on `&self` without locks: the issuing key, its rcgen `Issuer` (name and key
//! identifier) and the chain are parsed once at load time.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use devid_core::csr::{CheckedCsr, P256PublicKey};
use devid_core::profile::{
    self, broker_params, device_params, DeviceIdentity, Profile, ProfileError, ProfileSettings,
};
use rcgen::{
    CertificateParams, CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair,
    PublicKeyData, RevocationReason, RevokedCertParams, SerialNumber,
};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

pub mod keystore;

use keystore::KeystoreError;

/// Name of the CA directory under the data directory.
pub const CA_DIR: &str = "ca";
const ROOT_CRT: &str = "root.crt";
const ROOT_KEY: &str = "root.key";
const ISSUING_CRT: &str = "issuing.crt";
const ISSUING_KEY: &str = "issuing.key";
const CHAIN_PEM: &str = "chain.pem";
const TMP_PREFIX: &str = ".ca-tmp-";
/// Temporary CA directories older than this are leftovers of a crash and are removed.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// Why a CA operation failed. Only [`CaError::Profile`] is caused by a client's input (a
/// hardware serial or DNS name that cannot go into a certificate); see
/// [`CaError::is_client_error`].
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("CA key {} is encrypted: set DEVID_CA_PASSPHRASE", path.display())]
    PassphraseRequired { path: PathBuf },
    #[error("wrong CA passphrase for {} (or the key file is corrupted)", path.display())]
    WrongPassphrase { path: PathBuf },
    #[error(
        "CA key {} is not encrypted but a passphrase was given; unset DEVID_CA_PASSPHRASE \
         (`devid-server change-passphrase` encrypts existing keys)",
        path.display()
    )]
    UnexpectedPassphrase { path: PathBuf },
    #[error("CA key {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "CA key {} has mode {mode:04o}; it must not be readable by group or others (chmod 600)",
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("a CA already exists in {}; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("CA files in {} are incomplete or unreadable: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// An imported CA (or a stored one) does not meet devid's rules.
    #[error("invalid CA: {0}")]
    InvalidCa(String),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("invalid CRL request: {0}")]
    InvalidCrl(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("the CA passphrase is empty")]
    EmptyPassphrase,
    #[error("the random number generator failed")]
    Rng,
}

impl CaError {
    /// True when the error comes from the request's content (show it to the client, 422);
    /// everything else is an internal error.
    pub fn is_client_error(&self) -> bool {
        matches!(self, CaError::Profile(e) if !matches!(e, ProfileError::Rng))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn signing(e: rcgen::Error) -> CaError {
    CaError::Signing(e.to_string())
}

/// A certificate devid issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub der: Vec<u8>,
    pub pem: String,
    /// Lowercase hex, no colons, no leading `00` (as `openssl x509 -serial` prints it, in
    /// lowercase). Always 32 characters for devid's serials.
    pub serial_hex: String,
    /// SHA-256 of the DER, lowercase hex, no colons.
    pub fingerprint_sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// One revoked (or held) certificate for [`Ca::sign_crl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// The serial number's bytes (big-endian, as issued).
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 CRLReason: 0-6 or 8-10 (6 = certificateHold). 0 (unspecified) is written as
    /// no reason code, as RFC 5280 5.3.1 asks.
    pub reason_code: u8,
}

/// The certificate authority: the issuing key in memory, the chain, and the pre-parsed issuer.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The key identifier written as AKI into certificates and CRLs (the issuing CA's SKI).
    issuing_key_id: Vec<u8>,
    issuing_der: Vec<u8>,
    root_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    chain_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("issuing_key_id", &hex::encode(&self.issuing_key_id))
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// First start: create a root CA and an issuing CA under `<data_dir>/ca/`. Later starts:
    /// load it. Returns the CA and whether it was created now.
    ///
    /// With a passphrase, new keys are written encrypted and existing keys must be encrypted.
    pub fn init_or_load(
        data_dir: &Path,
        passphrase: Option<&str>,
        organization: Option<&str>,
    ) -> Result<(Ca, bool), CaError> {
        check_passphrase(passphrase)?;
        let ca_dir = data_dir.join(CA_DIR);
        if ca_dir.join(ISSUING_CRT).exists() {
            return Ok((Ca::load(&ca_dir, passphrase)?, false));
        }
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        remove_stale_tmp_dirs(data_dir);

        let rng = SystemRandom::new();
        let now = OffsetDateTime::now_utc();
        let files = new_ca_files(organization, passphrase, now, &rng)?;
        match install(data_dir, &ca_dir, &files, &rng)? {
            Installed::Ours => {
                let ca = Ca::from_parts(files.issuing_der, files.issuing_key, files.chain_der)?;
                Ok((ca, true))
            }
            // Another process created the CA first: use theirs.
            Installed::SomeoneElses => Ok((Ca::load(&ca_dir, passphrase)?, false)),
        }
    }

    /// Re-encrypts the CA's private keys (issuing, and root when present) under `new`
    /// (`None`: store them unencrypted), after decrypting them with `old`. Every key is decoded
    /// and re-encoded before any file is replaced; each file is then replaced atomically
    /// (a private temporary file, fsynced, renamed over it). A key that already opens with
    /// `new` is left as it is, so a run cut short can simply be repeated. Finally the CA is
    /// loaded with `new`. Returns the key files rewritten.
    pub fn change_passphrase(
        data_dir: &Path,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<Vec<PathBuf>, CaError> {
        check_passphrase(old)?;
        check_passphrase(new)?;
        let ca_dir = data_dir.join(CA_DIR);
        if !ca_dir.join(ISSUING_CRT).exists() {
            return Err(CaError::Corrupt {
                path: ca_dir,
                reason: format!("no {ISSUING_CRT}: there is no CA to change"),
            });
        }
        let rng = SystemRandom::new();
        let mut plan: Vec<(PathBuf, String)> = Vec::new();
        for name in [ISSUING_KEY, ROOT_KEY] {
            let path = ca_dir.join(name);
            if name == ROOT_KEY && !path.exists() {
                continue; // an imported CA has no root key here
            }
            let text = read_key_file(&path)?;
            if opens_with(&text, new) {
                continue;
            }
            let (pkcs8_der, _) = decode_key_file(&path, &text, old)?;
            let text =
                keystore::encode_key(&pkcs8_der, new, &rng).map_err(|e| keystore_err(e, &path))?;
            plan.push((path, text));
        }
        let mut tag = [0u8; 8];
        for (path, text) in &plan {
            rng.fill(&mut tag).map_err(|_| CaError::Rng)?;
            let tmp = path.with_extension(format!("key.{}.tmp", hex::encode(tag)));
            let written = write_private(&tmp, text.as_bytes())
                .and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            sync_dir(&ca_dir)?;
        }
        Ca::load(&ca_dir, new)?;
        Ok(plan.into_iter().map(|(p, _)| p).collect())
    }

    /// Loads the CA from `<data_dir>/ca/` without creating one.
    pub fn load_from(data_dir: &Path, passphrase: Option<&str>) -> Result<Ca, CaError> {
        check_passphrase(passphrase)?;
        Ca::load(&data_dir.join(CA_DIR), passphrase)
    }

    /// Imports an existing issuing CA so devid chains under a company root. `chain_pem` holds
    /// the certificates above the issuing CA up to and including the self-signed root (it may
    /// start with the issuing certificate itself). Refuses a key that does not match the
    /// certificate, a certificate that is not a CA (or may not sign certificates and CRLs),
    /// a non-P-256 key anywhere in the chain, a chain that does not link, an expired issuing
    /// certificate, and an existing CA.
    pub fn import(
        data_dir: &Path,
        cert_pem: &str,
        key_pem: &str,
        chain_pem: &str,
        passphrase: Option<&str>,
    ) -> Result<Ca, CaError> {
        check_passphrase(passphrase)?;
        let ca_dir = data_dir.join(CA_DIR);
        if ca_dir.join(ISSUING_CRT).exists() {
            return Err(CaError::AlreadyExists { path: ca_dir });
        }
        let mut certs = pem_certificates(cert_pem, "certificate")?;
        if certs.len() != 1 {
            return Err(CaError::InvalidCa(format!(
                "the certificate PEM must hold exactly one certificate, found {}",
                certs.len()
            )));
        }
        let issuing_der = certs.remove(0);
        let mut chain = pem_certificates(chain_pem, "chain")?;
        if chain.first() == Some(&issuing_der) {
            chain.remove(0);
        }
        let mut chain_der = vec![issuing_der.clone()];
        chain_der.extend(chain);

        let key_pkcs8 = import_key_pkcs8(key_pem)?;
        let key = p256_key_pair(&key_pkcs8).map_err(CaError::InvalidCa)?;
        check_not_expired(&issuing_der, OffsetDateTime::now_utc())?;
        // Validate everything before anything is written.
        let ca = Ca::from_parts(issuing_der.clone(), key, chain_der.clone())?;

        let rng = SystemRandom::new();
        let root_der = ca.root_der.clone();
        let files = CaFiles {
            root_der,
            root_key_text: None,
            issuing_der,
            issuing_key_text: keystore::encode_key(&key_pkcs8, passphrase, &rng)
                .map_err(|e| keystore_err(e, Path::new(ISSUING_KEY)))?,
            issuing_key: p256_key_pair(&key_pkcs8).map_err(CaError::InvalidCa)?,
            chain_der,
        };
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        match install(data_dir, &ca_dir, &files, &rng)? {
            Installed::Ours => Ok(ca),
            Installed::SomeoneElses => Err(CaError::AlreadyExists { path: ca_dir }),
        }
    }

    /// The chain as PEM: issuing CA first, root last.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The chain as DER: issuing CA first, root last.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root certificate (PEM).
    pub fn root_pem(&self) -> String {
        pem_cert(&self.root_der)
    }

    /// The issuing CA certificate (DER).
    pub fn issuing_der(&self) -> &[u8] {
        &self.issuing_der
    }

    /// The issuing CA's key identifier (its SKI; the AKI of everything it signs).
    pub fn issuing_key_id(&self) -> &[u8] {
        &self.issuing_key_id
    }

    /// Issues a device birth certificate (IDevID) for a checked CSR. Whatever the CSR asked
    /// for besides its key is ignored.
    pub fn issue_device(
        &self,
        csr: &CheckedCsr,
        id: &DeviceIdentity<'_>,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<IssuedCert, CaError> {
        self.issue_device_profile(Profile::IDevId, csr.public_key(), id, settings, now, rng)
    }

    /// Issues a device certificate of any device profile (IDevID, LDevID) for a public key.
    pub fn issue_device_profile(
        &self,
        profile: Profile,
        key: &P256PublicKey,
        id: &DeviceIdentity<'_>,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<IssuedCert, CaError> {
        let serial = profile::random_serial(rng)?;
        let params = device_params(profile, id, settings, &serial, now)?;
        self.sign(&params, key)
    }

    /// For devices that cannot make keys: makes a P-256 key pair here and issues an IDevID for
    /// it. Returns the certificate and the PKCS#8 private key as PEM (`PRIVATE KEY`).
    pub fn issue_device_with_new_key(
        &self,
        id: &DeviceIdentity<'_>,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<(IssuedCert, String), CaError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
            .map_err(|_| CaError::Rng)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), rng)
            .map_err(|e| CaError::Signing(format!("generated key rejected: {e}")))?;
        let key = P256PublicKey::from_uncompressed(pair.public_key().as_ref())
            .ok_or_else(|| CaError::Signing("generated key is not an uncompressed point".into()))?;
        let issued = self.issue_device_profile(Profile::IDevId, &key, id, settings, now, rng)?;
        let key_pem = pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()),
            pem_config(),
        );
        Ok((issued, key_pem))
    }

    /// Issues an MQTT broker certificate (EKU serverAuth + clientAuth, SAN DNS = `dns_name`).
    pub fn issue_broker(
        &self,
        csr: &CheckedCsr,
        dns_name: &str,
        settings: &ProfileSettings,
        now: OffsetDateTime,
        rng: &dyn SecureRandom,
    ) -> Result<IssuedCert, CaError> {
        let serial = profile::random_serial(rng)?;
        let params = broker_params(&[dns_name], settings, &serial, now)?;
        self.sign(&params, csr.public_key())
    }

    /// A DER CRL (v2) signed by the issuing CA, with AKI and CRL number. Serials are written
    /// as given; reason 0 (unspecified) is written as no reason code.
    pub fn sign_crl(
        &self,
        entries: &[CrlEntry],
        crl_number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        if next_update <= this_update {
            return Err(CaError::InvalidCrl(
                "nextUpdate must be after thisUpdate".into(),
            ));
        }
        let mut revoked_certs = Vec::with_capacity(entries.len());
        for e in entries {
            let significant = e.serial.iter().skip_while(|b| **b == 0).count();
            if significant == 0 || e.serial.len() > 21 || significant > 20 {
                return Err(CaError::InvalidCrl(format!(
                    "serial {} is not a positive number of at most 20 bytes",
                    hex::encode(&e.serial)
                )));
            }
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&e.serial),
                revocation_time: e.revoked_at,
                reason_code: Some(revocation_reason(e.reason_code)?),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.issuing_key_id.clone()),
        };
        let crl = params.signed_by(&self.issuer).map_err(signing)?;
        Ok(crl.der().to_vec())
    }

    fn sign(
        &self,
        params: &CertificateParams,
        key: &impl PublicKeyData,
    ) -> Result<IssuedCert, CaError> {
        let cert = params.signed_by(key, &self.issuer).map_err(signing)?;
        let der = cert.der().to_vec();
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| s.to_bytes())
            .unwrap_or_default();
        let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
        Ok(IssuedCert {
            pem: pem_cert(&der),
            serial_hex: hex::encode(&serial[first..]),
            fingerprint_sha256: hex::encode(digest::digest(&digest::SHA256, &der)),
            not_before: params.not_before,
            not_after: params.not_after,
            der,
        })
    }

    fn load(ca_dir: &Path, passphrase: Option<&str>) -> Result<Ca, CaError> {
        let corrupt = |reason: String| CaError::Corrupt {
            path: ca_dir.to_path_buf(),
            reason,
        };
        let read = |name: &str| -> Result<String, CaError> {
            let p = ca_dir.join(name);
            fs::read_to_string(&p).map_err(|e| corrupt(format!("{name}: {e}")))
        };
        let issuing = pem_certificates(&read(ISSUING_CRT)?, ISSUING_CRT)?;
        let [issuing_der] = <[Vec<u8>; 1]>::try_from(issuing)
            .map_err(|v| corrupt(format!("{ISSUING_CRT} holds {} certificates", v.len())))?;
        let chain_der = pem_certificates(&read(CHAIN_PEM)?, CHAIN_PEM)?;

        let key_path = ca_dir.join(ISSUING_KEY);
        let (_, key) = decode_key_file(&key_path, &read_key_file(&key_path)?, passphrase)?;
        if chain_der.first() != Some(&issuing_der) {
            return Err(corrupt(format!(
                "{CHAIN_PEM} does not start with {ISSUING_CRT}"
            )));
        }
        Ca::from_parts(issuing_der, key, chain_der)
    }

    /// Builds the CA from its parts after checking every rule (see [`Ca::import`]) and issuing
    /// a probe certificate to prove that rcgen reproduces the issuer name and key identifier
    /// exactly.
    fn from_parts(
        issuing_der: Vec<u8>,
        key: KeyPair,
        chain_der: Vec<Vec<u8>>,
    ) -> Result<Ca, CaError> {
        let invalid = CaError::InvalidCa;
        let parsed: Vec<X509Certificate<'_>> = chain_der
            .iter()
            .enumerate()
            .map(|(i, der)| parse_cert(der).map_err(|e| invalid(format!("chain[{i}]: {e}"))))
            .collect::<Result<_, _>>()?;
        let issuing = parse_cert(&issuing_der).map_err(invalid)?;
        if chain_der.first() != Some(&issuing_der) {
            return Err(invalid(
                "the chain must start with the issuing certificate".into(),
            ));
        }

        // The issuing certificate: a CA that may sign certificates and CRLs, with our key.
        let bc = issuing
            .basic_constraints()
            .map_err(|e| invalid(format!("basicConstraints: {e}")))?;
        if !bc.is_some_and(|bc| bc.value.ca) {
            return Err(invalid(
                "the issuing certificate is not a CA (basicConstraints CA:TRUE missing)".into(),
            ));
        }
        if let Some(ku) = issuing
            .key_usage()
            .map_err(|e| invalid(format!("keyUsage: {e}")))?
        {
            if !ku.value.key_cert_sign() || !ku.value.crl_sign() {
                return Err(invalid(
                    "the issuing certificate's keyUsage must include keyCertSign and cRLSign"
                        .into(),
                ));
            }
        }
        check_p256_spki(&issuing, "the issuing certificate")?;
        if issuing.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(
                "the private key does not match the issuing certificate".into(),
            ));
        }

        // The chain: each certificate signed (ECDSA P-256 with SHA-256) by the next, ending in
        // a self-signed root.
        for (i, pair) in parsed.windows(2).enumerate() {
            let (child, parent) = (&pair[0], &pair[1]);
            check_p256_spki(parent, &format!("chain[{}]", i + 1))?;
            if !parent.is_ca() {
                return Err(invalid(format!("chain[{}] is not a CA", i + 1)));
            }
            if child.issuer().as_raw() != parent.subject().as_raw() {
                return Err(invalid(format!(
                    "the chain does not link: chain[{i}] was issued by \"{}\", but chain[{}] is \"{}\"",
                    child.issuer(),
                    i + 1,
                    parent.subject()
                )));
            }
            if child.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
                return Err(invalid(format!(
                    "chain[{i}] is not signed with ecdsa-with-SHA256 (devid uses ECDSA P-256 \
                     with SHA-256 throughout)"
                )));
            }
            child
                .verify_signature(Some(parent.public_key()))
                .map_err(|_| {
                    invalid(format!(
                        "the chain does not link: chain[{i}]'s signature does not verify under chain[{}]'s key",
                        i + 1
                    ))
                })?;
        }
        let root = parsed.last().ok_or_else(|| invalid("empty chain".into()))?;
        let root_sig = &root.signature_algorithm.algorithm;
        if root.issuer().as_raw() != root.subject().as_raw()
            || !(*root_sig == OID_SIG_ECDSA_WITH_SHA256 || *root_sig == OID_SIG_ECDSA_WITH_SHA384)
            || root.verify_signature(None).is_err()
        {
            return Err(invalid(
                "the chain must end with the self-signed root certificate".into(),
            ));
        }

        let issuer = Issuer::from_ca_cert_der(&issuing_der.as_slice().into(), key)
            .map_err(|e| invalid(format!("cannot use the issuing certificate's name: {e}")))?;
        let issuing_key_id = issuing
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| sha256_key_id(issuing.public_key().raw));
        let chain_pem: String = chain_der.iter().map(|d| pem_cert(d)).collect();
        let root_der = chain_der
            .last()
            .cloned()
            .ok_or_else(|| invalid("empty chain".into()))?;
        let issuing_subject = issuing.subject().as_raw().to_vec();
        let issuing_spki = issuing.public_key().raw.to_vec();
        drop(parsed);
        drop(issuing);

        let ca = Ca {
            issuer,
            issuing_key_id,
            issuing_der,
            root_der,
            chain_der,
            chain_pem,
        };
        ca.probe(&issuing_subject, &issuing_spki)?;
        Ok(ca)
    }

    /// Issues a throw-away certificate and checks its issuer name, AKI and signature against
    /// the issuing certificate. rcgen re-encodes the issuer name from its own model, which
    /// cannot hold multi-valued RDNs or repeated attribute types.
    fn probe(&self, issuing_subject: &[u8], issuing_spki: &[u8]) -> Result<(), CaError> {
        let rng = SystemRandom::new();
        let id = DeviceIdentity {
            client_id: "probe",
            hardware_serial: "probe",
        };
        let key = P256PublicKey::from_uncompressed(self.issuer.key().public_key_raw())
            .ok_or_else(|| CaError::InvalidCa("the issuing key is not a P-256 point".into()))?;
        let issued = self.issue_device_profile(
            Profile::IDevId,
            &key,
            &id,
            &ProfileSettings::default(),
            OffsetDateTime::now_utc(),
            &rng,
        )?;
        let cert = parse_cert(&issued.der).map_err(CaError::InvalidCa)?;
        if cert.issuer().as_raw() != issuing_subject {
            return Err(CaError::InvalidCa(
                "the issuing certificate's subject name cannot be reproduced exactly (devid \
                 supports names with one attribute per RDN and no repeated attribute types)"
                    .into(),
            ));
        }
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(issuing_spki)
            .map_err(|_| CaError::InvalidCa("issuing public key does not parse".into()))?;
        cert.verify_signature(Some(&spki))
            .map_err(|_| CaError::InvalidCa("probe certificate does not verify".into()))?;
        let aki = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        if aki.as_deref() != Some(self.issuing_key_id.as_slice()) {
            return Err(CaError::InvalidCa(
                "the issued AKI does not match the issuing certificate's key identifier".into(),
            ));
        }
        Ok(())
    }
}

/// rcgen's `KeyIdMethod::Sha256` (first 160 bits of SHA-256 over the SubjectPublicKeyInfo
/// DER), for an issuing certificate that carries no SKI of its own.
fn sha256_key_id(spki_der: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, spki_der).as_ref()[..20].to_vec()
}

/// Everything a new or imported CA writes to disk.
struct CaFiles {
    root_der: Vec<u8>,
    root_key_text: Option<String>,
    issuing_der: Vec<u8>,
    issuing_key_text: String,
    issuing_key: KeyPair,
    chain_der: Vec<Vec<u8>>,
}

fn new_ca_files(
    organization: Option<&str>,
    passphrase: Option<&str>,
    now: OffsetDateTime,
    rng: &SystemRandom,
) -> Result<CaFiles, CaError> {
    let root_pkcs8 = new_p256_pkcs8(rng)?;
    let issuing_pkcs8 = new_p256_pkcs8(rng)?;
    let root_key = p256_key_pair(&root_pkcs8).map_err(CaError::Signing)?;
    let issuing_key = p256_key_pair(&issuing_pkcs8).map_err(CaError::Signing)?;

    let root_params = profile::root_ca_params(organization, &profile::random_serial(rng)?, now)?;
    let root_cert = root_params.self_signed(&root_key).map_err(signing)?;
    let root_issuer = Issuer::new(root_params, root_key);
    let issuing_params =
        profile::issuing_ca_params(organization, &profile::random_serial(rng)?, now)?;
    let issuing_cert = issuing_params
        .signed_by(&issuing_key, &root_issuer)
        .map_err(signing)?;

    let encode = |der: &[u8], name: &str| {
        keystore::encode_key(der, passphrase, rng).map_err(|e| keystore_err(e, Path::new(name)))
    };
    let root_der = root_cert.der().to_vec();
    let issuing_der = issuing_cert.der().to_vec();
    Ok(CaFiles {
        root_key_text: Some(encode(&root_pkcs8, ROOT_KEY)?),
        issuing_key_text: encode(&issuing_pkcs8, ISSUING_KEY)?,
        chain_der: vec![issuing_der.clone(), root_der.clone()],
        root_der,
        issuing_der,
        issuing_key,
    })
}

enum Installed {
    Ours,
    SomeoneElses,
}

/// Writes the files into a fresh private temporary directory and renames it to `ca_dir`.
fn install(
    data_dir: &Path,
    ca_dir: &Path,
    files: &CaFiles,
    rng: &dyn SecureRandom,
) -> Result<Installed, CaError> {
    let mut tag = [0u8; 8];
    rng.fill(&mut tag).map_err(|_| CaError::Rng)?;
    let tmp = data_dir.join(format!(
        "{TMP_PREFIX}{}-{}",
        std::process::id(),
        hex::encode(tag)
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io_err(&tmp))?;
    let result = (|| {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).map_err(io_err(&tmp))?;
        write_private(&tmp.join(ROOT_CRT), pem_cert(&files.root_der).as_bytes())?;
        if let Some(k) = &files.root_key_text {
            write_private(&tmp.join(ROOT_KEY), k.as_bytes())?;
        }
        write_private(
            &tmp.join(ISSUING_CRT),
            pem_cert(&files.issuing_der).as_bytes(),
        )?;
        write_private(&tmp.join(ISSUING_KEY), files.issuing_key_text.as_bytes())?;
        let chain: String = files.chain_der.iter().map(|d| pem_cert(d)).collect();
        write_private(&tmp.join(CHAIN_PEM), chain.as_bytes())?;
        sync_dir(&tmp)
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, ca_dir) {
        Ok(()) => {
            sync_dir(data_dir)?;
            Ok(Installed::Ours)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            // ENOTEMPTY / EEXIST: another process (or an earlier run) got there first.
            if ca_dir.join(ISSUING_CRT).exists() {
                Ok(Installed::SomeoneElses)
            } else if ca_dir.exists() {
                Err(CaError::Corrupt {
                    path: ca_dir.to_path_buf(),
                    reason: format!(
                        "the directory exists but holds no {ISSUING_CRT}; move it away to \
                         create a new CA"
                    ),
                })
            } else {
                Err(CaError::Io {
                    path: ca_dir.to_path_buf(),
                    source: e,
                })
            }
        }
    }
}

/// Best effort: removes temporary CA directories left by a crash long ago.
fn remove_stale_tmp_dirs(data_dir: &Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TMP_AGE);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), CaError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), CaError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

fn check_key_permissions(path: &Path) -> Result<(), CaError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// A CA key file's text, after checking that only its owner can read it.
fn read_key_file(path: &Path) -> Result<String, CaError> {
    check_key_permissions(path)?;
    fs::read_to_string(path).map_err(io_err(path))
}

/// Decrypts a CA key file's text with `passphrase` (refused for an unencrypted key, so a
/// passphrase never silently protects nothing) and insists on ECDSA P-256. Returns the PKCS#8
/// DER and the key.
fn decode_key_file(
    path: &Path,
    text: &str,
    passphrase: Option<&str>,
) -> Result<(Vec<u8>, KeyPair), CaError> {
    let decoded = keystore::decode_key(text, passphrase).map_err(|e| keystore_err(e, path))?;
    if passphrase.is_some() && !decoded.encrypted {
        return Err(CaError::UnexpectedPassphrase {
            path: path.to_path_buf(),
        });
    }
    let key = p256_key_pair(&decoded.pkcs8_der).map_err(|reason| CaError::KeyFile {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok((decoded.pkcs8_der, key))
}

/// Whether a key file's text already decodes as intended for `passphrase` (encrypted under it,
/// or unencrypted when it is None).
fn opens_with(text: &str, passphrase: Option<&str>) -> bool {
    keystore::decode_key(text, passphrase).is_ok_and(|d| d.encrypted == passphrase.is_some())
}

fn check_passphrase(passphrase: Option<&str>) -> Result<(), CaError> {
    if passphrase == Some("") {
        return Err(CaError::EmptyPassphrase);
    }
    Ok(())
}

fn keystore_err(e: KeystoreError, path: &Path) -> CaError {
    let path = path.to_path_buf();
    match e {
        KeystoreError::PassphraseRequired => CaError::PassphraseRequired { path },
        KeystoreError::WrongPassphrase => CaError::WrongPassphrase { path },
        KeystoreError::EmptyPassphrase => CaError::EmptyPassphrase,
        KeystoreError::Rng => CaError::Rng,
        KeystoreError::Malformed(reason) => CaError::KeyFile { path, reason },
    }
}

fn new_p256_pkcs8(rng: &dyn SecureRandom) -> Result<Vec<u8>, CaError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| CaError::Rng)
}

/// Reads a PKCS#8 key and insists on ECDSA P-256, naming what it found otherwise.
fn p256_key_pair(pkcs8_der: &[u8]) -> Result<KeyPair, String> {
    let key = KeyPair::try_from(pkcs8_der)
        .map_err(|_| "the key is not an unencrypted PKCS#8 ECDSA P-256 private key".to_string())?;
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Ok(key);
    }
    let found = if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA P-384"
    } else if alg == &rcgen::PKCS_ED25519 {
        "Ed25519"
    } else {
        "RSA"
    };
    Err(format!(
        "the key is {found}; devid accepts ECDSA P-256 only"
    ))
}

/// The PKCS#8 DER of an imported key PEM, with clear errors for other encodings.
fn import_key_pkcs8(key_pem: &str) -> Result<Vec<u8>, CaError> {
    let block = pem::parse(key_pem).map_err(|_| CaError::InvalidCa("the key is not PEM".into()))?;
    match block.tag() {
        "PRIVATE KEY" => Ok(block.into_contents()),
        "EC PRIVATE KEY" => Err(CaError::InvalidCa(
            "the key is SEC1 (EC PRIVATE KEY); convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt`"
                .into(),
        )),
        "ENCRYPTED PRIVATE KEY" => Err(CaError::InvalidCa(
            "the key is an encrypted PKCS#8 key; decrypt it first (devid encrypts it again \
             with DEVID_CA_PASSPHRASE)"
                .into(),
        )),
        other => Err(CaError::InvalidCa(format!(
            "expected a PRIVATE KEY (PKCS#8) PEM block, found {other}"
        ))),
    }
}

fn pem_certificates(text: &str, what: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let blocks =
        pem::parse_many(text).map_err(|e| CaError::InvalidCa(format!("{what}: not PEM: {e}")))?;
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        if b.tag() != "CERTIFICATE" {
            return Err(CaError::InvalidCa(format!(
                "{what}: expected CERTIFICATE blocks, found {}",
                b.tag()
            )));
        }
        out.push(b.into_contents());
    }
    Ok(out)
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(format!("not an X.509 certificate: {e}")),
    }
}

fn check_p256_spki(cert: &X509Certificate<'_>, what: &str) -> Result<(), CaError> {
    let alg = &cert.public_key().algorithm;
    let is_p256 = alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|c| c == OID_EC_P256);
    if is_p256 {
        Ok(())
    } else {
        Err(CaError::InvalidCa(format!(
            "{what} has a key other than ECDSA P-256 (algorithm {}); devid uses ECDSA P-256 \
             throughout",
            alg.algorithm.to_id_string()
        )))
    }
}

fn check_not_expired(der: &[u8], now: OffsetDateTime) -> Result<(), CaError> {
    let cert = parse_cert(der).map_err(CaError::InvalidCa)?;
    let v = cert.validity();
    if now < v.not_before.to_datetime() || now > v.not_after.to_datetime() {
        return Err(CaError::InvalidCa(format!(
            "the issuing certificate is not valid now (valid {} to {})",
            v.not_before, v.not_after
        )));
    }
    Ok(())
}

fn revocation_reason(code: u8) -> Result<RevocationReason, CaError> {
    Ok(match code {
        0 => RevocationReason::Unspecified,
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        other => {
            return Err(CaError::InvalidCrl(format!(
                "{other} is not an RFC 5280 reason code"
            )))
        }
    })
}

fn pem_config() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}

fn pem_cert(der: &[u8]) -> String {
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), pem_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ca>();
    }

    #[test]
    fn reason_codes_map_and_7_is_refused() {
        assert_eq!(
            revocation_reason(6).expect("hold"),
            RevocationReason::CertificateHold
        );
        assert!(matches!(revocation_reason(7), Err(CaError::InvalidCrl(_))));
        assert!(matches!(revocation_reason(11), Err(CaError::InvalidCrl(_))));
    }
}
