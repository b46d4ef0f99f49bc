//! Test support for the engine's modules: a fake DEVID-1 server side and an engine around it
//! whose service channel the tests read.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devid_core::protocol::{DecodeError, Error as ProtoError, PkOps};
use tokio::sync::mpsc;

use super::*;
use crate::config::{Config, HandshakeGuard};
use crate::service::{Shared, ToService};
use crate::state;

fn malformed() -> Refusal {
    ProtoError::Decode(DecodeError::BadValue).into()
}

thread_local! {
    /// How many first messages the fake read (stands for the public-key work).
    pub(super) static HELLO_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A fake DEVID-1: the ClientHello is `hello:<client_id>:<serial>` (`resume:...` stands for
/// a ResumeHello), the ClientFinish must be `finish`.
pub(super) struct Fake;
impl ServerSide for Fake {
    type Hello = Verified;
    type Pending = ();
    type Keys = [u8; 4];
    fn is_full_hello(&self, data: &[u8]) -> bool {
        data.starts_with(b"hello:")
    }
    fn hello(&self, data: &[u8], _cid: &str, _now: u64) -> Result<(Verified, Verified), Refusal> {
        if data.first() == Some(&0x01) && data.get(1) == Some(&0x02) {
            return Err(ProtoError::UnsupportedVersion(2).into());
        }
        HELLO_CALLS.with(|c| c.set(c.get() + 1));
        let s = std::str::from_utf8(data).map_err(|_| malformed())?;
        let mut parts = s.split(':');
        let resumed = match parts.next() {
            Some("hello") => false,
            Some("resume") => true,
            _ => return Err(malformed()),
        };
        let client_id = parts.next().ok_or_else(malformed)?.into();
        let serial = parts.next().ok_or_else(malformed)?.into();
        // After the serial: `ldevid` (the certificate is an LDevID; a resumption does not know)
        // and the issuing CA's id, in any order.
        let rest: Vec<&str> = parts.collect();
        let ldevid = (!resumed).then_some(rest.contains(&"ldevid"));
        let issuer = rest.iter().find(|p| **p != "ldevid").map(|p| p.to_string());
        let v = Verified {
            client_id,
            serial,
            fingerprint: "ff".into(),
            not_after: u64::MAX,
            resumed,
            ldevid,
            issuer,
            verified_at: 0,
        };
        Ok((v.clone(), v))
    }
    fn accept(&self, _h: Verified, _now: u64) -> Result<((), Vec<u8>), Refusal> {
        Ok(((), b"server-hello".to_vec()))
    }
    fn finish(&self, _p: (), data: &[u8], _now: u64) -> Result<([u8; 4], Vec<u8>, PkOps), Refusal> {
        if data == b"finish" {
            Ok(([1; 4], b"server-finish".to_vec(), PkOps::default()))
        } else {
            Err(ProtoError::BadMac.into())
        }
    }
    type Verifier = u64;
    fn verifier(&self, _k: &[u8; 4]) -> u64 {
        0
    }
    /// `devid-seq` = n and `devid-mac` = "good"; `devid-seal` = 1 reverses the payload.
    fn verify_message(
        &self,
        last: &mut u64,
        props: &[(&str, &str)],
        _topic: &str,
        payload: &[u8],
    ) -> Result<MessageCheck, MessageRefusal> {
        let get = |n: &str| props.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let Some(seq) = get("devid-seq") else {
            return Ok(MessageCheck::Unclaimed);
        };
        let seq: u64 = seq
            .parse()
            .map_err(|_| MessageRefusal::Invalid(ProtoError::BadProperty("devid-seq")))?;
        if seq <= *last {
            return Err(MessageRefusal::Invalid(ProtoError::Replay {
                seq,
                last: *last,
            }));
        }
        let plaintext = match (get("devid-mac"), get("devid-seal")) {
            (Some("good"), None) => None,
            (None, Some("1")) => Some(payload.iter().rev().copied().collect()),
            _ => return Err(MessageRefusal::Invalid(ProtoError::BadMac)),
        };
        *last = seq;
        Ok(MessageCheck::Verified { plaintext })
    }
    fn verify_tls_client(&self, der: &[u8], cid: &str, now: u64) -> Result<Verified, Refusal> {
        self.hello(der, cid, now).map(|(v, _)| v)
    }
    fn use_ca_set(&mut self, _set: crate::ca_set::CaSet) {}
}

pub(super) fn engine() -> (Engine<Fake>, Arc<Mutex<Shared>>, mpsc::Receiver<ToService>) {
    engine_with(|_| {})
}

pub(super) fn engine_with(
    adjust: impl FnOnce(&mut Config),
) -> (Engine<Fake>, Arc<Mutex<Shared>>, mpsc::Receiver<ToService>) {
    engine_full(adjust, 1000)
}

/// An engine whose service queue holds `capacity` messages.
pub(super) fn engine_queue(
    capacity: usize,
) -> (Engine<Fake>, Arc<Mutex<Shared>>, mpsc::Receiver<ToService>) {
    engine_full(|_| {}, capacity)
}

fn engine_full(
    adjust: impl FnOnce(&mut Config),
    capacity: usize,
) -> (Engine<Fake>, Arc<Mutex<Shared>>, mpsc::Receiver<ToService>) {
    let mut config = Config {
        service_url: "http://127.0.0.1:1".into(),
        token: "t".into(),
        trust_anchor_der: vec![],
        broker_chain_der: vec![],
        broker_key_der: vec![],
        state_dir: PathBuf::from("/nonexistent"),
        max_staleness: Duration::from_secs(60),
        auth_timeout: Duration::from_secs(10),
        broker_name: None,
        ticket_keys: None,
        ticket_lifetime: 0,
        max_refused_messages: 3,
        guard: HandshakeGuard {
            max_pending: 1000,
            max_pending_per_address: 100,
            hello_rate: 1000,
            hello_burst: 1000,
        },
    };
    adjust(&mut config);
    let shared = Arc::new(Mutex::new(Shared {
        last_contact: Some(state::unix_now()),
        ..Shared::default()
    }));
    let (tx, rx) = mpsc::channel(capacity);
    let mut e = Engine::new(config, Fake, shared.clone(), Some(tx));
    e.tick(Vec::new());
    (e, shared, rx)
}

pub(super) fn connect(e: &mut Engine<Fake>, key: ConnKey, cid: &str, serial: &str) -> AuthOutcome {
    let hello = format!("hello:{cid}:{serial}");
    match e.auth_start(
        key,
        Some(METHOD),
        hello.as_bytes(),
        Some(cid),
        Some("127.0.0.1"),
    ) {
        AuthOutcome::Continue(sh) => {
            assert_eq!(sh, b"server-hello");
            e.auth_continue(key, b"finish", Some(cid), Some("127.0.0.1"))
        }
        other => other,
    }
}

pub(super) fn drain(rx: &mut mpsc::Receiver<ToService>) -> Vec<ToService> {
    let mut v = Vec::new();
    while let Ok(m) = rx.try_recv() {
        v.push(m);
    }
    v
}
