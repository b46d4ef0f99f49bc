//! Counters of public-key operations (ECDH key generation and agreement, ECDSA signing and
//! verification, including the certificate-chain signature checks), so a caller can show that
//! a resumption uses none.
//!
//! Every operation is counted twice: in process-wide relaxed atomics ([`pk_operations`]) and
//! in a per-thread tally from which each handshake state takes the difference over its own
//! (synchronous) work. The per-session counts ([`ServerSession::pk_ops`],
//! [`ClientSession::pk_ops`]) are thus exact even when many handshakes run at once.
//!
//! [`ServerSession::pk_ops`]: super::ServerSession::pk_ops
//! [`ClientSession::pk_ops`]: super::ClientSession::pk_ops

use std::cell::Cell;
use std::ops::{Add, AddAssign};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};

/// Numbers of public-key operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PkOps {
    /// Ephemeral P-256 key pairs generated.
    pub ecdh_keygen: u64,
    /// ECDH agreements.
    pub ecdh_agree: u64,
    /// ECDSA signatures made (by the handshake key).
    pub ecdsa_sign: u64,
    /// ECDSA signatures verified: handshake signatures and certificate-chain signatures.
    pub ecdsa_verify: u64,
}

impl PkOps {
    /// All operations together.
    pub fn total(&self) -> u64 {
        self.ecdh_keygen + self.ecdh_agree + self.ecdsa_sign + self.ecdsa_verify
    }

    fn saturating_sub(self, o: PkOps) -> PkOps {
        PkOps {
            ecdh_keygen: self.ecdh_keygen.saturating_sub(o.ecdh_keygen),
            ecdh_agree: self.ecdh_agree.saturating_sub(o.ecdh_agree),
            ecdsa_sign: self.ecdsa_sign.saturating_sub(o.ecdsa_sign),
            ecdsa_verify: self.ecdsa_verify.saturating_sub(o.ecdsa_verify),
        }
    }
}

impl Add for PkOps {
    type Output = PkOps;
    fn add(self, o: PkOps) -> PkOps {
        PkOps {
            ecdh_keygen: self.ecdh_keygen + o.ecdh_keygen,
            ecdh_agree: self.ecdh_agree + o.ecdh_agree,
            ecdsa_sign: self.ecdsa_sign + o.ecdsa_sign,
            ecdsa_verify: self.ecdsa_verify + o.ecdsa_verify,
        }
    }
}

impl AddAssign for PkOps {
    fn add_assign(&mut self, o: PkOps) {
        *self = *self + o;
    }
}

impl std::fmt::Display for PkOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (keygen {}, ecdh {}, sign {}, verify {})",
            self.total(),
            self.ecdh_keygen,
            self.ecdh_agree,
            self.ecdsa_sign,
            self.ecdsa_verify
        )
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Op {
    Keygen,
    Agree,
    Sign,
    Verify,
}

static KEYGEN: AtomicU64 = AtomicU64::new(0);
static AGREE: AtomicU64 = AtomicU64::new(0);
static SIGN: AtomicU64 = AtomicU64::new(0);
static VERIFY: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static LOCAL: Cell<PkOps> = const { Cell::new(PkOps { ecdh_keygen: 0, ecdh_agree: 0, ecdsa_sign: 0, ecdsa_verify: 0 }) };
}

/// The public-key operations done by DEVID-1 code in this process so far (every thread).
pub fn pk_operations() -> PkOps {
    PkOps {
        ecdh_keygen: KEYGEN.load(Ordering::Relaxed),
        ecdh_agree: AGREE.load(Ordering::Relaxed),
        ecdsa_sign: SIGN.load(Ordering::Relaxed),
        ecdsa_verify: VERIFY.load(Ordering::Relaxed),
    }
}

/// Counts one operation (call it where the operation is attempted).
pub(crate) fn record(op: Op) {
    let (global, one) = match op {
        Op::Keygen => (
            &KEYGEN,
            PkOps {
                ecdh_keygen: 1,
                ..PkOps::default()
            },
        ),
        Op::Agree => (
            &AGREE,
            PkOps {
                ecdh_agree: 1,
                ..PkOps::default()
            },
        ),
        Op::Sign => (
            &SIGN,
            PkOps {
                ecdsa_sign: 1,
                ..PkOps::default()
            },
        ),
        Op::Verify => (
            &VERIFY,
            PkOps {
                ecdsa_verify: 1,
                ..PkOps::default()
            },
        ),
    };
    global.fetch_add(1, Ordering::Relaxed);
    LOCAL.with(|l| l.set(l.get() + one));
}

/// Measures the operations this thread does between `start` and `finish`.
pub(crate) struct Meter(PkOps);

impl Meter {
    pub(crate) fn start() -> Meter {
        Meter(LOCAL.with(Cell::get))
    }

    pub(crate) fn finish(self) -> PkOps {
        LOCAL.with(Cell::get).saturating_sub(self.0)
    }
}

/// webpki's ECDSA P-256/SHA-256 verification, counted: each certificate signature webpki
/// checks while building a path is one verify.
#[derive(Debug)]
pub(crate) struct CountedP256Sha256;

impl SignatureVerificationAlgorithm for CountedP256Sha256 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        record(Op::Verify);
        webpki::ring::ECDSA_P256_SHA256.verify_signature(public_key, message, signature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        webpki::ring::ECDSA_P256_SHA256.public_key_alg_id()
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        webpki::ring::ECDSA_P256_SHA256.signature_alg_id()
    }

    fn fips(&self) -> bool {
        webpki::ring::ECDSA_P256_SHA256.fips()
    }
}
