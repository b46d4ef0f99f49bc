//! The registration pipeline, the manufacturing line's hot path:
//!
//! 1. validate each item (cheap checks: fields, ClientID, model permission, batch duplicates);
//! 2. check the CSR signature and sign the certificate: for a batch on every core at once;
//! 3. store: a batch in one all-or-nothing transaction; single registrations are handed to a
//!    group committer that stores whatever arrived meanwhile in one shared transaction, so that
//!    concurrent requests share one commit (and one fsync) instead of paying one each.
//!
//! Nothing is acknowledged before its transaction commits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use devid_core::api::{RegisterRequest, Registered};
use devid_core::clientid;
use devid_core::csr::{parse_csr_pem, CheckedCsr};
use devid_core::profile::{DeviceIdentity, ProfileSettings};
use ring::rand::SystemRandom;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Caller;
use crate::ca::{Ca, IssuedCert, SensorKek};
use crate::domain::registration::{self, Checked, Credentials};
use crate::domain::DomainError;
use crate::metrics::Metrics;
use crate::store::{
    Credential, DeviceWithCerts, NewCert, NewDevice, RegConflict, RegMode, RegOutcome, Store,
    StoreError,
};
use crate::timefmt;

mod group;

pub(crate) use group::spawn_on_own_thread;
use group::{group_committer, spawn_committer_thread, GroupItem, POSTGRES_COMMITTERS};

/// An item with its certificate signed (or, a sensor, its key made and sealed), ready to
/// store, with what its first answer alone carries.
struct Signed {
    device: NewDevice,
    once: Once,
}

/// What only a registration's first answer carries.
#[derive(Default)]
struct Once {
    /// A device's PKCS#8 PEM key, when the service made it.
    private_key: Option<String>,
    /// A sensor's key K, base64url without padding.
    sensor_key: Option<zeroize::Zeroizing<String>>,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ca: Arc<Ca>,
    kek: Arc<SensorKek>,
    profile: ProfileSettings,
    rng: SystemRandom,
    metrics: Arc<Metrics>,
    group: mpsc::Sender<GroupItem>,
    /// Model -> ClientID prefix, with when it was read.
    prefixes: std::sync::Mutex<HashMap<String, (Instant, String)>>,
}

/// Attempts at a registration whose ClientID, made here, another device already has.
const CLIENT_ID_ATTEMPTS: u32 = 3;

/// How long a model's ClientID prefix is used without reading it again (a change made through
/// this process applies at once; through another process within this time).
const PREFIX_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Registry {
    /// Starts the group committer on the current tokio runtime.
    pub fn new(
        store: Store,
        ca: Arc<Ca>,
        kek: Arc<SensorKek>,
        profile: ProfileSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        // SQLite has one writer, so one committer (on its own thread); PostgreSQL runs several
        // transactions at once, so several committers share the queue (uniqueness races
        // between them are retried by the store like those between processes).
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        if store.is_postgres() {
            for _ in 0..POSTGRES_COMMITTERS {
                tokio::spawn(group_committer(store.clone(), rx.clone()));
            }
        } else {
            spawn_committer_thread(store.clone(), rx);
        }
        Registry {
            inner: Arc::new(Inner {
                store,
                ca,
                kek,
                profile,
                rng: SystemRandom::new(),
                metrics,
                group: tx,
                prefixes: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `POST /v1/devices`. Returns the answer and whether the device is new.
    pub async fn register_one(
        &self,
        caller: &Caller,
        req: RegisterRequest,
    ) -> Result<Registered, DomainError> {
        let prefixes = self.prefixes_for([req.model.as_deref()]).await?;
        let mut checked =
            registration::check(caller, req, &prefixes, timefmt::now(), &self.inner.rng)?;
        if checked.with == Credentials::SensorKey {
            crate::domain::sensors::check_kek(&self.inner.store, &self.inner.kek).await?;
        }
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            // Checking and signing take ~100 µs of CPU: short enough to run on this async worker
            // (a hop to the blocking pool and back cost more, measured). The SQLite committer
            // that must not queue behind such work has its own thread.
            let Signed { device, once } = self.sign(checked.clone())?;
            let (reply_tx, reply_rx) = oneshot::channel();
            self.inner
                .group
                .send(GroupItem {
                    actor: caller.actor(),
                    device,
                    reply: reply_tx,
                })
                .await
                .map_err(|_| DomainError::Unavailable("the service is shutting down".into()))?;
            let (device, outcome) = reply_rx
                .await
                .map_err(|_| DomainError::internal("group committer dropped a registration"))??;
            return match outcome {
                Ok(RegOutcome::Created) => {
                    if device.cert().is_some() {
                        self.inner.metrics.issued(1, started.elapsed());
                    }
                    Ok(self.answer_created(device, once))
                }
                Ok(RegOutcome::Existing(existing)) => self.answer_existing(&existing),
                // A ClientID made here that another device already has (48 random bits within
                // one second): make another and sign again.
                Err(RegConflict::ClientIdTaken)
                    if checked.client_id_generated && attempt < CLIENT_ID_ATTEMPTS =>
                {
                    attempt += 1;
                    checked.client_id = self.new_client_id(&checked, &prefixes)?;
                    continue;
                }
                // The conflict names the device that holds the serial or key: the ClientID made
                // for this request belongs to no device.
                Err(conflict) => Err(registration::refusal(&conflict)),
            };
        }
    }

    /// A fresh ClientID for an item whose ClientID is made here.
    fn new_client_id(
        &self,
        item: &Checked,
        prefixes: &HashMap<String, String>,
    ) -> Result<String, DomainError> {
        registration::new_client_id(
            item.model.as_deref(),
            prefixes,
            timefmt::now(),
            &self.inner.rng,
        )
    }

    /// `POST /v1/devices/batch`: all or nothing.
    pub async fn register_batch(
        &self,
        caller: &Caller,
        items: Vec<RegisterRequest>,
    ) -> Result<(Vec<Registered>, usize), DomainError> {
        let prefixes = self
            .prefixes_for(items.iter().map(|i| i.model.as_deref()))
            .await?;
        let mut checked =
            registration::check_batch(caller, items, &prefixes, timefmt::now(), &self.inner.rng)?;
        if checked.iter().any(|c| c.with == Credentials::SensorKey) {
            crate::domain::sensors::check_kek(&self.inner.store, &self.inner.kek).await?;
        }
        let mut attempt = 1;
        let (started, devices, keys, outcomes) = loop {
            let started = Instant::now();
            let this = self.clone();
            let items = checked.clone();
            let signed = tokio::task::spawn_blocking(move || this.sign_parallel(items))
                .await
                .map_err(DomainError::internal)??;
            let (devices, keys): (Vec<NewDevice>, Vec<Once>) =
                signed.into_iter().map(|s| (s.device, s.once)).unzip();
            registration::distinct_keys(&devices)?;
            tracing::info!(items = devices.len(), signed_in = ?started.elapsed(), "batch signed; storing");
            match self
                .inner
                .store
                .register(
                    &devices,
                    RegMode::AllOrNothing,
                    &caller.actor(),
                    timefmt::now(),
                )
                .await
            {
                Ok(outcomes) => break (started, devices, keys, outcomes),
                // A ClientID made here that another device already has (48 random bits within
                // one second): make another, distinct from the batch's, and sign again.
                Err(StoreError::BatchConflict {
                    index,
                    conflict: RegConflict::ClientIdTaken,
                }) if checked[index].client_id_generated && attempt < CLIENT_ID_ATTEMPTS => {
                    attempt += 1;
                    let taken: HashSet<String> =
                        checked.iter().map(|c| c.client_id.clone()).collect();
                    let item = &checked[index];
                    let mut fresh = self.new_client_id(item, &prefixes)?;
                    while taken.contains(&fresh) {
                        fresh = self.new_client_id(item, &prefixes)?;
                    }
                    checked[index].client_id = fresh;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let (mut created, mut certified) = (0, 0);
        let mut answers = Vec::with_capacity(devices.len());
        for (index, ((device, once), outcome)) in
            devices.into_iter().zip(keys).zip(outcomes).enumerate()
        {
            match outcome {
                Ok(RegOutcome::Created) => {
                    created += 1;
                    certified += usize::from(device.cert().is_some());
                    answers.push(self.answer_created(device, once));
                }
                Ok(RegOutcome::Existing(existing)) => {
                    answers.push(self.answer_existing(&existing)?)
                }
                // AllOrNothing reports conflicts as an error; this is a defensive fallback.
                Err(c) => return Err(registration::refusal(&c).at_index(index)),
            }
        }
        self.inner.metrics.issued(certified, started.elapsed());
        Ok((answers, created))
    }

    /// Forgets a model's cached prefix (after its settings change).
    pub fn forget_model(&self, model: &str) {
        if let Ok(mut map) = self.inner.prefixes.lock() {
            map.remove(model);
        }
    }

    /// The ClientID prefix of each model named: its configured prefix, else one derived from
    /// its name.
    async fn prefixes_for<'a>(
        &self,
        models: impl IntoIterator<Item = Option<&'a str>>,
    ) -> Result<HashMap<String, String>, DomainError> {
        let mut wanted: Vec<&str> = models.into_iter().flatten().collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        if let Ok(map) = self.inner.prefixes.lock() {
            for m in wanted {
                match map.get(m) {
                    Some((at, p)) if at.elapsed() < PREFIX_TTL => {
                        out.insert(m.to_string(), p.clone());
                    }
                    _ => missing.push(m),
                }
            }
        }
        for m in missing {
            let prefix = self
                .inner
                .store
                .get_model(m)
                .await?
                .and_then(|row| row.client_id_prefix)
                .unwrap_or_else(|| clientid::default_prefix(m));
            if let Ok(mut map) = self.inner.prefixes.lock() {
                map.insert(m.to_string(), (Instant::now(), prefix.clone()));
            }
            out.insert(m.to_string(), prefix);
        }
        Ok(out)
    }

    /// CSR check and signature for one item (CPU-bound, ~100 µs); for a sensor, its key K
    /// made and sealed under the KEK.
    fn sign(&self, c: Checked) -> Result<Signed, DomainError> {
        let inner = &self.inner;
        let (credential, once) = match &c.with {
            Credentials::SensorKey => {
                let mut k = zeroize::Zeroizing::new([0u8; 32]);
                ring::rand::SecureRandom::fill(&inner.rng, k.as_mut())
                    .map_err(|_| DomainError::internal("rng failure"))?;
                let sealed = inner.kek.seal(&c.client_id, &k, &inner.rng)?;
                let once = Once {
                    private_key: None,
                    sensor_key: Some(zeroize::Zeroizing::new(
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.as_ref()),
                    )),
                };
                (Credential::SensorKey { sealed }, once)
            }
            with => {
                let (cert, private_key) = self.certify(&c, with)?;
                let once = Once {
                    private_key,
                    sensor_key: None,
                };
                (Credential::Certificate(cert), once)
            }
        };
        Ok(Signed {
            device: NewDevice {
                client_id: c.client_id,
                client_id_generated: c.client_id_generated,
                hardware_serial: c.hardware_serial,
                model: c.model,
                metadata: c.metadata,
                created_at: timefmt::now(),
                credential,
            },
            once,
        })
    }

    /// A device's certificate: its CSR checked and signed, or a key pair made and certified
    /// (the PKCS#8 PEM key returned with it).
    fn certify(
        &self,
        c: &Checked,
        with: &Credentials,
    ) -> Result<(NewCert, Option<String>), DomainError> {
        let id = DeviceIdentity {
            client_id: &c.client_id,
            hardware_serial: &c.hardware_serial,
        };
        let now = time::OffsetDateTime::now_utc();
        let inner = &self.inner;
        let (issued, csr_sha256, spki_sha256, private_key): (
            IssuedCert,
            Option<String>,
            [u8; 32],
            Option<String>,
        ) = match with {
            Credentials::Csr(pem) => {
                let csr: CheckedCsr = parse_csr_pem(pem)
                    .map_err(|e| DomainError::invalid_field("csr", format!("csr: {e}")))?;
                let issued = inner
                    .ca
                    .issue_device(&csr, &id, &inner.profile, now, &inner.rng)?;
                let csr_sha256 = Some(hex::encode(csr.csr_sha256()));
                (issued, csr_sha256, csr.spki_sha256(), None)
            }
            Credentials::GenerateKey => {
                let (issued, key) =
                    inner
                        .ca
                        .issue_device_with_new_key(&id, &inner.profile, now, &inner.rng)?;
                let spki = devid_core::csr::certificate_spki_sha256(&issued.der)
                    .ok_or_else(|| DomainError::internal("issued certificate does not parse"))?;
                (issued, None, spki, Some(key))
            }
            Credentials::SensorKey => {
                return Err(DomainError::internal("a sensor has no certificate"))
            }
        };
        let cert = NewCert {
            serial: issued.serial_hex,
            fingerprint: issued.fingerprint_sha256,
            der: issued.der,
            not_before: issued.not_before.unix_timestamp(),
            not_after: issued.not_after.unix_timestamp(),
            csr_sha256,
            spki_sha256,
            profile: "idevid".to_string(),
        };
        Ok((cert, private_key))
    }

    /// Signs a batch on every core; the first failing item (by index) fails the batch.
    fn sign_parallel(&self, items: Vec<Checked>) -> Result<Vec<Signed>, DomainError> {
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
            .clamp(1, 16);
        let n = items.len();
        if n < 32 || threads == 1 {
            return items
                .into_iter()
                .enumerate()
                .map(|(i, c)| self.sign(c).map_err(|e| e.at_index(i)))
                .collect();
        }
        let chunk = n.div_ceil(threads);
        let mut chunks: Vec<Vec<Checked>> = Vec::with_capacity(threads);
        let mut iter = items.into_iter();
        loop {
            let part: Vec<Checked> = iter.by_ref().take(chunk).collect();
            if part.is_empty() {
                break;
            }
            chunks.push(part);
        }
        let results: Vec<Result<Vec<Signed>, DomainError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .enumerate()
                .map(|(k, part)| {
                    scope.spawn(move || {
                        part.into_iter()
                            .enumerate()
                            .map(|(i, c)| self.sign(c).map_err(|e| e.at_index(k * chunk + i)))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(DomainError::internal("signing thread panicked")))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(n);
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    fn answer_created(&self, device: NewDevice, once: Once) -> Registered {
        let kind = device.kind();
        let cert = device.cert();
        let not_after_capped =
            cert.is_some_and(|c| self.inner.ca.ends_with_its_issuer(c.not_after));
        Registered {
            certificate: cert.map(|c| der_to_pem(&c.der)),
            chain: cert.map(|_| self.inner.ca.chain_pem().to_string()),
            serial: cert.map(|c| c.serial.clone()),
            fingerprint_sha256: cert.map(|c| c.fingerprint.clone()),
            not_before: cert.map(|c| timefmt::rfc3339(c.not_before)),
            not_after: cert.map(|c| timefmt::rfc3339(c.not_after)),
            client_id: device.client_id,
            hardware_serial: device.hardware_serial,
            model: device.model,
            kind,
            not_after_capped,
            private_key: once.private_key,
            sensor_key: once.sensor_key.map(|k| k.as_str().to_string()),
            created: true,
            status: devid_core::api::DeviceState::Active,
        }
    }

    /// The answer to a replay: the stored device as it is now. A device's current
    /// certificate; for a sensor no key (it was returned once, by the first answer).
    fn answer_existing(&self, existing: &DeviceWithCerts) -> Result<Registered, DomainError> {
        let d = &existing.device;
        let cert = match d.kind {
            devid_core::api::DeviceKind::Sensor => None,
            devid_core::api::DeviceKind::Device => {
                Some(existing.certs.first().ok_or_else(|| {
                    DomainError::internal("registered device without certificate")
                })?)
            }
        };
        Ok(Registered {
            client_id: d.client_id.clone(),
            hardware_serial: d.hardware_serial.clone(),
            model: d.model.clone(),
            kind: d.kind,
            certificate: cert.map(|c| der_to_pem(&c.der)),
            chain: cert.map(|_| self.inner.ca.chain_pem().to_string()),
            serial: cert.map(|c| c.serial.clone()),
            fingerprint_sha256: cert.map(|c| c.fingerprint.clone()),
            not_before: cert.map(|c| timefmt::rfc3339(c.not_before)),
            not_after: cert.map(|c| timefmt::rfc3339(c.not_after)),
            not_after_capped: cert.is_some_and(|c| self.inner.ca.ends_with_its_issuer(c.not_after)),
            private_key: None,
            sensor_key: None,
            created: false,
            status: d.status,
        })
    }
}

pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
