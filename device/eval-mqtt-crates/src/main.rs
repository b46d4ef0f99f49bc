//! DEVID-1 through the `rumqttc-v5-next` MQTT v5 client instead of devid-agent's own codec: an
//! evaluation, not a product. Drives devid-core's device-side state machines
//! (`ClientHandshake` -> `ExpectServerHello` -> `ExpectServerFinish` -> `ClientSession`) through
//! the crate's `Authenticator` trait.
//!
//! What the crate does and does not carry:
//! - CONNECT with Authentication Method + Data: `Authenticator::start`.
//! - broker AUTH 0x18, client AUTH with the next message: `Authenticator::continue_auth`.
//! - CONNACK with the final Authentication Data: NOT handed to the authenticator (it only checks
//!   the method); we take it from the `Event::Incoming(ConnAck)` the event loop yields and finish
//!   the handshake there, before any PUBLISH is queued.
//! - re-authentication AUTH 0x19: `AsyncClient::reauth(None)` calls `Authenticator::start` again
//!   (kind Reauthentication); AUTH 0x18 / 0x00 through `continue_auth` / `success`, with the data.
//! - user properties on PUBLISH: `PublishProperties::user_properties`.
//!
//! Subcommands: `connect` (full handshakes per second, as `devid-agent bench connect --mode
//! devid1`), `publish` (as `devid-agent bench publish`), `check` (the capabilities above against a
//! broker, with a device whose policy requires message authentication).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devid_core::protocol::{
    certs_from_pem, BrokerCertCache, ClientConfig, ClientHandshake, ClientSession, EcdsaSigner,
    ExpectServerFinish, ExpectServerHello, MemoryBrokerCertCache, PublishSigner, AUTH_METHOD,
};
use ring::rand::SystemRandom;
use rumqttc::{
    AsyncClient, AuthAction, AuthContext, AuthError, AuthEvent, AuthExchangeKind, AuthProperties,
    Authenticator, Event, EventLoop, MqttOptions, Outgoing, Packet, PublishOptions,
    PublishProperties, QoS,
};
use rustls_pki_types::UnixTime;

type Res<T> = Result<T, String>;

/// A PUBACK reason below 0x80 (the two Mosquitto sends for an accepted message).
fn accepted(reason: &str) -> bool {
    matches!(reason, "Success" | "NoMatchingSubscribers")
}

enum Step {
    Idle,
    ServerHello(ExpectServerHello),
    ServerFinish(ExpectServerFinish),
    /// A re-authentication finished (AUTH 0x00): its session, for the caller to take.
    Done(Box<ClientSession>),
}

/// The device half of a DEVID-1 full handshake as a rumqttc `Authenticator`.
struct Devid1Auth {
    config: Arc<ClientConfig>,
    rng: SystemRandom,
    step: Step,
}

impl std::fmt::Debug for Devid1Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Devid1Auth")
    }
}

fn props(data: Vec<u8>) -> AuthProperties {
    AuthProperties {
        method: Some(AUTH_METHOD.to_owned()),
        data: Some(data.into()),
        reason: None,
        user_properties: Vec::new(),
    }
}

impl Devid1Auth {
    fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            rng: SystemRandom::new(),
            step: Step::Idle,
        }
    }

    /// ClientHello.
    fn hello(&mut self) -> Res<Vec<u8>> {
        let (s, hello) =
            ClientHandshake::start(&self.config, &self.rng).map_err(|e| e.to_string())?;
        self.step = Step::ServerHello(s);
        Ok(hello)
    }

    /// ServerFinish -> the session (broker authenticated, keys derived).
    fn finish(&mut self, data: &[u8]) -> Res<ClientSession> {
        match std::mem::replace(&mut self.step, Step::Idle) {
            Step::ServerFinish(s) => s.handle(data, UnixTime::now()).map_err(|e| e.to_string()),
            _ => Err("DEVID-1: success before the exchange ended".into()),
        }
    }
}

impl Authenticator for Devid1Auth {
    fn start(&mut self, _: AuthContext<'_>) -> Result<Option<AuthProperties>, AuthError> {
        Ok(Some(props(self.hello()?)))
    }

    fn continue_auth(
        &mut self,
        _: AuthContext<'_>,
        incoming: Option<AuthProperties>,
    ) -> Result<AuthAction, AuthError> {
        let data = incoming.and_then(|p| p.data).unwrap_or_default();
        match std::mem::replace(&mut self.step, Step::Idle) {
            Step::ServerHello(s) => {
                let (s, finish) = s
                    .handle(&data, UnixTime::now(), &self.rng)
                    .map_err(|e| AuthError::Failed(e.to_string()))?;
                self.step = Step::ServerFinish(s);
                Ok(AuthAction::Send(props(finish)))
            }
            _ => Err("DEVID-1: unexpected AUTH 0x18".into()),
        }
    }

    fn success(
        &mut self,
        ctx: AuthContext<'_>,
        incoming: Option<AuthProperties>,
    ) -> Result<(), AuthError> {
        // Only a re-authentication ends in AUTH 0x00; a connect ends in CONNACK, which the crate
        // does not pass here.
        if matches!(ctx.kind, AuthExchangeKind::Reauthentication) {
            let data = incoming.and_then(|p| p.data).unwrap_or_default();
            let s = self.finish(&data)?;
            self.step = Step::Done(Box::new(s));
        }
        Ok(())
    }

    fn failure(&mut self, _: AuthContext<'_>, _: AuthError) {
        self.step = Step::Idle;
    }
}

fn lock(a: &Mutex<Devid1Auth>) -> std::sync::MutexGuard<'_, Devid1Auth> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

/// CONNECT .. CONNACK with DEVID-1; returns once the broker's ServerFinish is verified.
async fn connect(
    config: &Arc<ClientConfig>,
    broker: &(String, u16),
    capacity: usize,
    inflight: Option<u16>,
) -> Res<(
    AsyncClient,
    EventLoop,
    Arc<Mutex<Devid1Auth>>,
    ClientSession,
)> {
    let auth = Arc::new(Mutex::new(Devid1Auth::new(config.clone())));
    let mut o = MqttOptions::new(config.client_id(), broker.clone());
    o.set_authentication_method(Some(AUTH_METHOD.to_owned()));
    o.set_authenticator(auth.clone());
    o.set_keep_alive(60);
    if let Some(n) = inflight {
        o.set_outgoing_inflight_upper_limit(n);
    }
    let (client, mut el) = AsyncClient::builder(o).capacity(capacity).build();
    loop {
        match el.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::ConnAck(c)) => {
                let data = c
                    .properties
                    .and_then(|p| p.authentication_data)
                    .ok_or("CONNACK without Authentication Data")?;
                let s = lock(&auth).finish(&data)?;
                return Ok((client, el, auth, s));
            }
            _ => continue,
        }
    }
}

/// DISCONNECT, then wait until it is written.
async fn disconnect(client: &AsyncClient, el: &mut EventLoop) -> Res<()> {
    client.disconnect().await.map_err(|e| e.to_string())?;
    loop {
        match el.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

struct Args(BTreeMap<String, String>);

impl Args {
    fn parse() -> (String, Self) {
        let mut it = std::env::args().skip(1);
        let cmd = it.next().unwrap_or_default();
        let mut m = BTreeMap::new();
        while let Some(k) = it.next() {
            let k = k.trim_start_matches("--").to_owned();
            let v = it.next().unwrap_or_default();
            m.insert(k, v);
        }
        (cmd, Self(m))
    }
    fn get(&self, k: &str) -> Res<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("--{k} is required"))
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Res<T> {
        match self.0.get(k) {
            Some(v) => v.parse().map_err(|_| format!("--{k}: not a number")),
            None => Ok(default),
        }
    }
}

fn broker_addr(s: &str) -> Res<(String, u16)> {
    let (h, p) = s.rsplit_once(':').ok_or("--broker HOST:PORT")?;
    Ok((h.to_owned(), p.parse().map_err(|_| "--broker: bad port")?))
}

fn read(p: &Path) -> Res<String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn load_config(
    crt: &Path,
    key: &Path,
    root: &[u8],
    broker_name: &str,
    cache: &Arc<dyn BrokerCertCache>,
) -> Res<Arc<ClientConfig>> {
    let chain = certs_from_pem(&read(crt)?).map_err(|e| e.to_string())?;
    let k = pem::parse(read(key)?).map_err(|e| format!("{}: {e}", key.display()))?;
    if k.tag() != "PRIVATE KEY" {
        return Err(format!("{}: expected a PKCS#8 PRIVATE KEY", key.display()));
    }
    let signer = EcdsaSigner::from_pkcs8_der(k.contents(), &SystemRandom::new()).map_err(|e| e.to_string())?;
    let c = ClientConfig::new(root, chain, Arc::new(signer))
        .and_then(|c| c.with_broker_name(broker_name))
        .map_err(|e| format!("{}: {e}", crt.display()))?
        .with_broker_cert_cache(cache.clone());
    Ok(Arc::new(c))
}

struct Common {
    broker: (String, u16),
    root: Vec<u8>,
    broker_name: String,
    cache: Arc<dyn BrokerCertCache>,
    broker_pid: Option<u32>,
}

fn common(a: &Args) -> Res<Common> {
    let root = certs_from_pem(&read(Path::new(a.get("root")?))?).map_err(|e| e.to_string())?;
    Ok(Common {
        broker: broker_addr(a.get("broker")?)?,
        root: root.into_iter().next().ok_or("--root: no certificate")?,
        broker_name: a.get("broker-name")?.to_owned(),
        // As devid-agent does by default: verified broker certificates cached by fingerprint.
        cache: Arc::new(MemoryBrokerCertCache::new(16)),
        broker_pid: a.0.get("broker-pid").and_then(|p| p.parse().ok()),
    })
}

/// Process CPU time (user + system) in seconds, from /proc (USER_HZ = 100).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let u: f64 = f.get(11)?.parse().ok()?;
    let s: f64 = f.get(12)?.parse().ok()?;
    Some((u + s) / 100.0)
}

async fn run_connect(a: &Args) -> Res<serde_json::Value> {
    let c = common(a)?;
    let dir = PathBuf::from(a.get("devices")?);
    let mut configs = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    entries.sort();
    for crt in entries {
        let key = crt.with_extension("key");
        configs.push(load_config(&crt, &key, &c.root, &c.broker_name, &c.cache)?);
    }
    let concurrency = a.num("concurrency", 32usize)?.min(configs.len()).max(1);
    let duration = a.num("duration", 10.0f64)?;
    // The crate's default outgoing in-flight bound is 65535 (per-connection tables sized by it).
    let inflight: Option<u16> = a.0.get("inflight").and_then(|v| v.parse().ok());
    let configs = Arc::new(configs);
    let cpu0 = cpu_seconds(None);
    let bcpu0 = c.broker_pid.and_then(|p| cpu_seconds(Some(p)));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(duration);
    let mut handles = Vec::new();
    for i in 0..concurrency {
        let (configs, broker) = (configs.clone(), c.broker.clone());
        handles.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            // Worker i owns devices i, i+N, ...: a ClientID is never used twice at once.
            let mine: Vec<usize> = (i..configs.len()).step_by(concurrency).collect();
            let mut k = 0;
            while Instant::now() < deadline {
                let cfg = &configs[mine[k % mine.len()]];
                k += 1;
                let t = Instant::now();
                let r = match connect(cfg, &broker, 10, inflight).await {
                    Ok((client, mut el, _, _)) => disconnect(&client, &mut el).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => {
                        *errors.entry(e).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let (l, e) = h.await.map_err(|e| e.to_string())?;
        lat.extend(l);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |v| f64::from(*v) / 1000.0)
    };
    Ok(serde_json::json!({
        "client": "rumqttc-v5-next",
        "bench": "connect",
        "mode": "devid1",
        "inflight_limit": inflight,
        "concurrency": concurrency,
        "seconds": secs,
        "connects": lat.len(),
        "per_second": lat.len() as f64 / secs,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": errors,
        "client_cpu_seconds": cpu_seconds(None).zip(cpu0).map(|(a, b)| a - b),
        "broker_cpu_seconds": c.broker_pid.and_then(|p| cpu_seconds(Some(p))).zip(bcpu0).map(|(a, b)| a - b),
    }))
}

/// A PUBLISH's options, MACed with the session's keys when `signer` is given.
fn publish_opts(
    qos: QoS,
    topic: &str,
    payload: &[u8],
    signer: Option<&mut PublishSigner>,
) -> Res<PublishOptions> {
    let mut o = PublishOptions::new(qos);
    if let Some(s) = signer {
        let tag = s.mac(topic, payload).map_err(|e| e.to_string())?;
        let p = PublishProperties {
            user_properties: tag
                .properties
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ..Default::default()
        };
        o = o.properties(p);
    }
    Ok(o)
}

async fn run_publish(a: &Args) -> Res<serde_json::Value> {
    let c = common(a)?;
    let cfg = load_config(
        Path::new(a.get("cert")?),
        Path::new(a.get("key")?),
        &c.root,
        &c.broker_name,
        &c.cache,
    )?;
    let qos = if a.num("qos", 0u8)? == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let size = a.num("size", 256usize)?;
    let inflight = a.num("inflight", 64u16)?;
    let duration = a.num("duration", 10.0f64)?;
    let mac = a.0.get("protect").is_some_and(|p| p == "mac");
    let (client, mut el, _, session) =
        connect(&cfg, &c.broker, usize::from(inflight), Some(inflight)).await?;
    let topic = format!("devices/{}/bench", cfg.client_id());
    let payload = vec![0x5a_u8; size];
    let cpu0 = cpu_seconds(None);
    let bcpu0 = c.broker_pid.and_then(|p| cpu_seconds(Some(p)));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(duration);
    let producer = {
        let (client, topic, payload) = (client.clone(), topic.clone(), payload.clone());
        let mut signer = mac.then(|| PublishSigner::new(&session.keys));
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let o = publish_opts(qos, &topic, &payload, signer.as_mut())?;
                client
                    .publish(topic.clone(), payload.clone(), o)
                    .await
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
            // A QoS 1 barrier: its PUBACK comes after the broker has read everything before it.
            let o = publish_opts(QoS::AtLeastOnce, &topic, &payload, signer.as_mut())?;
            client
                .publish(topic.clone(), payload.clone(), o)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u64, String>(n)
        })
    };
    let mut acked = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent: Option<u64> = None;
    let mut producer = Some(producer);
    loop {
        tokio::select! {
            ev = el.poll() => {
                if let Event::Incoming(Packet::PubAck(p)) = ev.map_err(|e| e.to_string())? {
                    let code = format!("{:?}", p.reason);
                    if !accepted(&code) {
                        *errors.entry(format!("PUBACK {code}")).or_default() += 1;
                    }
                    acked += 1;
                }
            },
            r = async { producer.as_mut().expect("polled only while running").await }, if producer.is_some() => {
                producer = None;
                sent = Some(r.map_err(|e| e.to_string())??);
            }
        }
        if let Some(n) = sent {
            let want = if qos == QoS::AtLeastOnce { n + 1 } else { 1 };
            if acked >= want {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let n = sent.unwrap_or(0);
    disconnect(&client, &mut el).await?;
    Ok(serde_json::json!({
        "client": "rumqttc-v5-next",
        "bench": "publish",
        "qos": if qos == QoS::AtLeastOnce { 1 } else { 0 },
        "size": size,
        "protect": if mac { "mac" } else { "none" },
        "inflight": inflight,
        "seconds": secs,
        "messages": n,
        "per_second": n as f64 / secs,
        "errors": errors,
        "client_cpu_seconds": cpu_seconds(None).zip(cpu0).map(|(a, b)| a - b),
        "broker_cpu_seconds": c.broker_pid.and_then(|p| cpu_seconds(Some(p))).zip(bcpu0).map(|(a, b)| a - b),
    }))
}

/// One QoS 1 PUBLISH; the PUBACK's reason code.
async fn publish_once(
    client: &AsyncClient,
    el: &mut EventLoop,
    topic: &str,
    signer: Option<&mut PublishSigner>,
) -> Res<String> {
    let o = publish_opts(QoS::AtLeastOnce, topic, b"check", signer)?;
    client
        .publish(topic.to_owned(), b"check".to_vec(), o)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if let Event::Incoming(Packet::PubAck(p)) = el.poll().await.map_err(|e| e.to_string())? {
            return Ok(format!("{:?}", p.reason));
        }
    }
}

/// Each capability DEVID-1 needs, against a device whose policy requires message authentication.
async fn run_check(a: &Args) -> Res<serde_json::Value> {
    let c = common(a)?;
    let cfg = load_config(
        Path::new(a.get("cert")?),
        Path::new(a.get("key")?),
        &c.root,
        &c.broker_name,
        &c.cache,
    )?;
    let topic = format!("devices/{}/check", cfg.client_id());
    let (client, mut el, auth, s1) = connect(&cfg, &c.broker, 10, None).await?;
    let id1 = s1.keys.session_id_hex();
    let mut signer = PublishSigner::new(&s1.keys);
    let unsigned = publish_once(&client, &mut el, &topic, None).await?;
    let maced = publish_once(&client, &mut el, &topic, Some(&mut signer)).await?;
    // Re-authentication: AUTH 0x19 with a new ClientHello, 0x18, our AUTH, 0x00 with ServerFinish.
    // With no data given, the crate asks `Authenticator::start` (kind Reauthentication) for it.
    client.reauth(None).await.map_err(|e| e.to_string())?;
    loop {
        match el.poll().await.map_err(|e| e.to_string())? {
            Event::Auth(AuthEvent::Succeeded {
                kind: AuthExchangeKind::Reauthentication,
                ..
            }) => break,
            Event::Auth(AuthEvent::Failed { reason, .. }) => {
                return Err(format!("re-authentication failed: {reason:?}"))
            }
            _ => {}
        }
    }
    let s2 = match std::mem::replace(&mut lock(&auth).step, Step::Idle) {
        Step::Done(s) => *s,
        _ => return Err("re-authentication ended without a session".into()),
    };
    let id2 = s2.keys.session_id_hex();
    let mut signer2 = PublishSigner::new(&s2.keys);
    let maced_new = publish_once(&client, &mut el, &topic, Some(&mut signer2)).await?;
    // The old session's keys must no longer be accepted.
    let maced_old = publish_once(&client, &mut el, &topic, Some(&mut signer)).await?;
    disconnect(&client, &mut el).await?;
    let ok = !accepted(&unsigned)
        && accepted(&maced)
        && id1 != id2
        && accepted(&maced_new)
        && !accepted(&maced_old);
    Ok(serde_json::json!({
        "client": "rumqttc-v5-next",
        "check": if ok { "pass" } else { "FAIL" },
        "connect_full_handshake": "ok",
        "session_id": id1,
        "puback_without_mac": unsigned,
        "puback_with_mac_user_properties": maced,
        "reauth_session_id": id2,
        "puback_after_reauth_new_keys": maced_new,
        "puback_after_reauth_old_keys": maced_old,
    }))
}

#[tokio::main]
async fn main() {
    let (cmd, args) = Args::parse();
    let r = match cmd.as_str() {
        "connect" => run_connect(&args).await,
        "publish" => run_publish(&args).await,
        "check" => run_check(&args).await,
        _ => Err(
            "usage: eval-rumqttc connect|publish|check --broker HOST:PORT --root ROOT.crt \
                  --broker-name NAME [--devices DIR | --cert C --key K] ... (see README.md)"
                .into(),
        ),
    };
    match r {
        Ok(v) => {
            let fail = v.get("check").is_some_and(|c| c != "pass")
                || v.get("errors")
                    .is_some_and(|e| e.as_object().is_some_and(|m| !m.is_empty()));
            println!("{v}");
            if fail {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("eval-rumqttc: {e}");
            std::process::exit(2);
        }
    }
}
