//! The renewer step by step against an in-memory CA, with restarts (a new `Renewer` on the same
//! directory) between the steps.

use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::engine::{Call, Credential, Decision, Outcome, Policy};
use super::files::{Pair, Phase};
use super::*;

/// What the fake server answers next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Issue,
    Down,
    Refuse,
    Busy,
}

/// A CA in memory playing the server: root -> issuing -> device certificates.
struct FakeCa {
    root_der: CertificateDer<'static>,
    issuing_der: CertificateDer<'static>,
    issuing: Issuer<'static, KeyPair>,
    mode: Mutex<Mode>,
    /// Every request: (authenticating leaf, call, CSR public key).
    seen: Mutex<Vec<(CertificateDer<'static>, Call, Vec<u8>)>>,
    validity_secs: i64,
    /// Answer with the leaf alone (the chain comes from `ca_certs`).
    leaf_only: bool,
    /// How far notBefore is set back from now.
    backdate_secs: i64,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

impl FakeCa {
    fn new(validity_secs: i64, leaf_only: bool) -> FakeCa {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root_params = ca_params("test root");
        let root_der = root_params.self_signed(&root_key).unwrap().der().clone();
        let root = Issuer::new(root_params, root_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params("test issuing");
        let issuing_der = params.signed_by(&key, &root).unwrap().der().clone();
        FakeCa {
            root_der,
            issuing_der,
            issuing: Issuer::new(params, key),
            mode: Mutex::new(Mode::Issue),
            seen: Mutex::new(Vec::new()),
            validity_secs,
            leaf_only,
            backdate_secs: 1,
        }
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    /// An IDevID for the device "dev1", on disk-independent terms.
    fn idevid(&self) -> Pair {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "dev1");
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), "HW-1");
        p.subject_alt_names = vec![rcgen::SanType::URI("urn:devid:dev1".try_into().unwrap())];
        let cert = p.signed_by(&key, &self.issuing).unwrap();
        Pair {
            chain: vec![cert.der().clone(), self.issuing_der.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    fn issue(&self, csr: &[u8]) -> CertificateDer<'static> {
        let mut req = CertificateSigningRequestParams::from_der(&csr.to_vec().into()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        req.params.not_before = now - time::Duration::seconds(self.backdate_secs);
        req.params.not_after = now + time::Duration::seconds(self.validity_secs);
        req.params.serial_number = Some(rand_serial());
        req.signed_by(&self.issuing).unwrap().der().clone()
    }
}

fn rand_serial() -> rcgen::SerialNumber {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&b)
}

impl RenewTransport for FakeCa {
    async fn request(
        &self,
        auth: &Pair,
        call: Call,
        csr: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr).unwrap();
        let pk = req
            .certification_request_info
            .subject_pki
            .subject_public_key
            .data
            .to_vec();
        self.seen
            .lock()
            .unwrap()
            .push((auth.chain[0].clone(), call, pk));
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Down => Err(TransportError::Unreachable("connection refused".into())),
            Mode::Refuse => Err(TransportError::Refused("HTTP 403: expired".into())),
            Mode::Busy => Err(TransportError::RetryAfter(120, "HTTP 503".into())),
            Mode::Issue => {
                let leaf = self.issue(csr);
                Ok(if self.leaf_only {
                    vec![leaf]
                } else {
                    vec![leaf, self.issuing_der.clone(), self.root_der.clone()]
                })
            }
        }
    }

    async fn ca_certs(&self) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        Ok(vec![self.issuing_der.clone(), self.root_der.clone()])
    }
}

/// The defaults, with the first enrollment at once (its jitter has a test of its own).
fn settings(exec: Option<String>) -> Settings {
    Settings {
        policy: Policy {
            enroll_jitter: std::time::Duration::ZERO,
            ..Policy::default()
        },
        rekey: true,
        exec,
    }
}

fn pk(p: &Pair) -> Vec<u8> {
    csr::public_key(&p.key).unwrap()
}

use x509_parser::prelude::FromDer;

#[tokio::test]
async fn enrolls_with_the_idevid_then_renews_with_the_ldevid_keeping_the_old_pair_until_confirmed()
{
    let dir = tempfile::tempdir().unwrap();
    let ca = FakeCa::new(90 * 86_400, false);
    let idevid = ca.idevid();
    let marker = dir.path().join("hook.out");
    let hook = format!(
        "echo \"$DEVID_SERIAL $DEVID_CERT $DEVID_KEY\" >> {}",
        marker.display()
    );
    let ldir = dir.path().join("ldevid");
    let mut r = Renewer::open(&ldir, idevid.clone(), settings(Some(hook))).unwrap();

    // No LDevID: enroll with the IDevID, at once.
    let d = r.plan(unix_now()).unwrap();
    assert_eq!(
        d,
        Decision::Renew {
            with: Credential::Idevid,
            call: Call::Enroll
        }
    );
    let rep = r
        .attempt(&ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::Issued, "{rep:?}");
    let first = r.store.current().unwrap().expect("an LDevID");
    assert_eq!(first.chain.len(), 2, "leaf + issuing CA, no root");
    assert_eq!(first.chain[1], ca.issuing_der);
    assert_ne!(pk(&first), pk(&idevid), "the LDevID has its own key");
    assert_eq!(ca.seen.lock().unwrap()[0].0, idevid.chain[0]);
    assert_eq!(r.state.phase, Phase::Unconfirmed);
    assert!(r.store.previous().unwrap().is_none(), "nothing before it");
    let hook_out = std::fs::read_to_string(&marker).unwrap();
    assert!(
        hook_out.starts_with(rep.serial.as_deref().unwrap()),
        "{hook_out}"
    );
    assert!(hook_out.contains("ldevid.crt") && hook_out.contains("ldevid.key"));
    r.confirm().unwrap();
    assert_eq!(r.state.phase, Phase::Idle);

    // Fresh LDevID: the agent waits until 2/3..5/6 of its lifetime.
    let now = unix_now();
    match r.plan(now).unwrap() {
        Decision::Wait { until } => {
            let (_, v) = first.leaf_info().unwrap();
            let life = v.lifetime();
            assert!(
                until >= v.not_before + life * 2 / 3 && until < v.not_before + life * 5 / 6 + 1
            );
        }
        d => panic!("{d:?}"),
    }
    // The due time is drawn once per certificate: a restart keeps it.
    let due = r.state.due;
    let r2 = Renewer::open(&ldir, idevid.clone(), settings(None)).unwrap();
    assert_eq!(r2.state.due, due);
    drop(r2);

    // Due: re-enroll with the LDevID; the old pair stays as prev until the new one connects.
    // The old LDevID's resumption ticket goes with it.
    let ticket = crate::devid1::ticket_path_for_key(&r.store.key_path());
    std::fs::write(&ticket, b"ticket of the old session").unwrap();
    let rep = r
        .attempt(&ca, Credential::Ldevid, Call::Reenroll)
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::Issued);
    let seen = ca.seen.lock().unwrap().clone();
    assert_eq!(
        seen[1].0, first.chain[0],
        "authenticated by the current LDevID"
    );
    assert_eq!(seen[1].1, Call::Reenroll);
    let second = r.store.current().unwrap().unwrap();
    assert_ne!(pk(&second), pk(&first), "re-keyed");
    assert!(
        !ticket.exists(),
        "the old session's ticket outlived its certificate"
    );
    let prev = r.store.previous().unwrap().expect("old pair kept");
    assert_eq!(prev.chain[0], first.chain[0]);
    assert_eq!(pk(&prev), pk(&first));
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 2);
    r.confirm().unwrap();
    assert!(r.store.previous().unwrap().is_none());
}

#[tokio::test]
async fn a_key_made_before_a_crash_is_reused_and_the_server_down_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FakeCa::new(3_600, true);
    let idevid = ca.idevid();
    let mut r = Renewer::open(dir.path(), idevid.clone(), settings(None)).unwrap();
    ca.set(Mode::Down);
    let before = unix_now();
    let rep = r
        .attempt(&ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::Unreachable);
    assert!(r.store.current().unwrap().is_none());
    let retry = r.state.retry;
    assert_eq!(retry.attempts, 1);
    assert!(retry.next_try >= before + 15 && retry.next_try <= unix_now() + 30);
    // The process dies; the next one waits out the backoff, then uses the same key.
    drop(r);
    let mut r = Renewer::open(dir.path(), idevid.clone(), settings(None)).unwrap();
    assert_eq!(r.state.retry, retry);
    assert_eq!(
        r.plan(unix_now()).unwrap(),
        Decision::Wait {
            until: retry.next_try
        }
    );
    ca.set(Mode::Busy);
    let rep = r
        .attempt(&ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::RetryAfter(120));
    assert_eq!(r.state.retry.attempts, 2);
    ca.set(Mode::Issue);
    let rep = r
        .attempt(&ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::Issued);
    let seen = ca.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|s| s.2 == seen[0].2),
        "one key for every retry"
    );
    let cur = r.store.current().unwrap().unwrap();
    assert_eq!(pk(&cur), seen[0].2);
    // The answer held the leaf alone: the chain was completed from cacerts.
    assert_eq!(cur.chain.len(), 2);
    assert_eq!(r.state.retry, engine::Retry::default());
}

#[tokio::test]
async fn a_refused_ldevid_falls_back_to_the_idevid() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FakeCa::new(3_600, false);
    let idevid = ca.idevid();
    let mut r = Renewer::open(dir.path(), idevid.clone(), settings(None)).unwrap();
    r.attempt(&ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    r.confirm().unwrap();
    ca.set(Mode::Refuse);
    let rep = r
        .attempt(&ca, Credential::Ldevid, Call::Reenroll)
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::Refused(Credential::Ldevid));
    assert!(r.state.retry.ldevid_refused);
    // Make it due and ask again: the IDevID now, at once.
    r.plan(unix_now()).unwrap();
    r.state.due = Some(0);
    assert_eq!(
        r.plan(unix_now()).unwrap(),
        Decision::Renew {
            with: Credential::Idevid,
            call: Call::Enroll
        }
    );
    ca.set(Mode::Issue);
    let rep = r
        .attempt(&ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::Issued);
    assert_eq!(ca.seen.lock().unwrap()[2].0, idevid.chain[0]);
    assert!(!r.state.retry.ldevid_refused);
}

/// Runs the steps of an attempt by hand so a "crash" can fall between any two.
async fn staged(dir: &std::path::Path, ca: &FakeCa, idevid: &Pair) -> (Pair, Pair) {
    let mut r = Renewer::open(dir, idevid.clone(), settings(None)).unwrap();
    r.attempt(ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    r.confirm().unwrap();
    let old = r.store.current().unwrap().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = r
        .store
        .next_key(|| csr::generate_key(&rng).map_err(|e| e.to_string()))
        .unwrap();
    let csr = csr::build_csr(&key, &old.chain[0], &rng).unwrap();
    let leaf = ca.issue(&csr);
    let new = Pair {
        chain: vec![leaf, ca.issuing_der.clone()],
        key,
    };
    r.store.stage(&new.chain).unwrap();
    (old, new)
}

#[tokio::test]
async fn a_restart_after_the_certificate_was_staged_installs_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FakeCa::new(3_600, false);
    let idevid = ca.idevid();
    let (old, new) = staged(dir.path(), &ca, &idevid).await;
    // Crash: nothing installed yet.
    assert_eq!(
        pk(&Store::open(dir.path()).unwrap().current().unwrap().unwrap()),
        pk(&old)
    );
    let mut r = Renewer::open(dir.path(), idevid, settings(Some("true".into()))).unwrap();
    let cur = r.store.current().unwrap().unwrap();
    assert_eq!(cur.chain, new.chain);
    assert_eq!(pk(&cur), pk(&new));
    assert_eq!(pk(&r.store.previous().unwrap().unwrap()), pk(&old));
    assert!(
        r.state.hook_pending,
        "the hook runs after a recovered install too"
    );
    r.run_hook().await;
    assert!(!r.state.hook_pending);
    assert!(!r.store.path("ldevid.next.key").exists());
}

#[tokio::test]
async fn a_restart_in_the_middle_of_the_switch_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FakeCa::new(3_600, false);
    let idevid = ca.idevid();
    let (old, new) = staged(dir.path(), &ca, &idevid).await;
    // The switch's first half by hand: prev written, phase recorded, the key overwritten, and
    // then the crash (the certificate still the old one: a mismatched current pair).
    let store = Store::open(dir.path()).unwrap();
    let mut state = store.load_state().unwrap();
    files::write_atomic(
        &store.path("ldevid.prev.key"),
        csr::pem("PRIVATE KEY", old.key.secret_pkcs8_der()).as_bytes(),
        0o600,
    )
    .unwrap();
    files::write_atomic(
        &store.path("ldevid.prev.crt"),
        files::chain_pem(&old.chain).as_bytes(),
        0o644,
    )
    .unwrap();
    state.phase = Phase::Installing;
    store.save_state(&state).unwrap();
    std::fs::copy(store.path("ldevid.next.key"), store.key_path()).unwrap();
    assert!(store.current().is_err(), "the crash left a mismatched pair");
    let r = Renewer::open(dir.path(), idevid, settings(None)).unwrap();
    let cur = r.store.current().unwrap().unwrap();
    assert_eq!(cur.chain, new.chain);
    assert_eq!(pk(&r.store.previous().unwrap().unwrap()), pk(&old));
    assert_eq!(r.state.phase, Phase::Unconfirmed);
}

#[tokio::test]
async fn a_certificate_for_another_key_is_never_installed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FakeCa::new(3_600, false);
    let idevid = ca.idevid();
    let mut r = Renewer::open(dir.path(), idevid.clone(), settings(None)).unwrap();
    r.store
        .next_key(|| csr::generate_key(&ring::rand::SystemRandom::new()).map_err(|e| e.to_string()))
        .unwrap();
    // The IDevID's own certificate is not for the pending key.
    assert!(r.store.stage(&idevid.chain).is_err());
    assert!(!r.store.path("ldevid.next.crt").exists());
    assert!(r.store.current().unwrap().is_none());
    // And through an attempt: an answer without our certificate is not installed.
    struct Wrong(Vec<CertificateDer<'static>>);
    impl RenewTransport for Wrong {
        async fn request(
            &self,
            _: &Pair,
            _: Call,
            _: &[u8],
        ) -> Result<Vec<CertificateDer<'static>>, TransportError> {
            Ok(self.0.clone())
        }
    }
    let rep = r
        .attempt(
            &Wrong(idevid.chain.clone()),
            Credential::Idevid,
            Call::Enroll,
        )
        .await
        .unwrap();
    assert_eq!(rep.outcome, Outcome::Unreachable);
    assert!(rep.error.unwrap().contains("for our key"));
    assert!(r.store.current().unwrap().is_none());
}

#[test]
fn atomic_writes_leave_no_temporary_file_and_set_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    files::write_atomic(&p, b"one", 0o600).unwrap();
    files::write_atomic(&p, b"two", 0o600).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test]
async fn a_backdated_not_before_does_not_make_a_new_ldevid_due_at_once() {
    // notBefore 10 minutes back, 60 s of validity: measured from notBefore, 2/3 of the
    // lifetime is long past; measured from the installation it is 40 to 50 s away.
    let dir = tempfile::tempdir().unwrap();
    let mut ca = FakeCa::new(60, false);
    ca.backdate_secs = 600;
    let idevid = ca.idevid();
    let mut r = Renewer::open(dir.path(), idevid, settings(None)).unwrap();
    r.attempt(&ca, Credential::Idevid, Call::Enroll)
        .await
        .unwrap();
    let installed = r.state.installed_at.expect("installation time recorded");
    let (_, v) = r.store.current().unwrap().unwrap().leaf_info().unwrap();
    assert!(v.not_before + 500 < installed);
    match r.plan(installed).unwrap() {
        Decision::Wait { until } => {
            let held = v.not_after - installed;
            assert!(
                until >= installed + held * 2 / 3,
                "{until} {installed} {held}"
            );
            assert!(
                until <= installed + held * 5 / 6 + 1,
                "{until} {installed} {held}"
            );
        }
        d => panic!("due at once: {d:?}"),
    }
}

#[test]
fn the_first_enrollment_waits_for_a_time_drawn_once_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FakeCa::new(90 * 86_400, false);
    let ldir = dir.path().join("ldevid");
    let mut s = settings(None);
    s.policy.enroll_jitter = std::time::Duration::from_secs(3_600);
    let start = 1_000_000;
    let mut r = Renewer::open(&ldir, ca.idevid(), s.clone()).unwrap();
    let at = match r.plan(start).unwrap() {
        Decision::Wait { until } => until,
        // A draw of exactly 0 (one chance in 3,600) enrolls at once.
        Decision::Renew { .. } => start,
    };
    assert!((start..start + 3_600).contains(&at), "{at}");
    assert_eq!(r.state.enroll_at, Some(at));
    // A restart later in the window keeps the draw; at that time, enroll.
    let mut r = Renewer::open(&ldir, ca.idevid(), s).unwrap();
    assert_eq!(r.state.enroll_at, Some(at));
    if at > start + 1 {
        assert_eq!(r.plan(start + 1).unwrap(), Decision::Wait { until: at });
    }
    assert_eq!(
        r.plan(at).unwrap(),
        Decision::Renew {
            with: Credential::Idevid,
            call: Call::Enroll
        }
    );
}
