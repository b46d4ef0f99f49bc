//! Sensor readings relayed by one gateway through Mosquitto with the plugin (DEVID-S1): the same
//! gateway connection publishes the same messages (payload, topic length, QoS, in flight)
//! without sensor properties on its own topics, with `devid-sensor-mac`, and sealed, for many
//! sensors, at QoS 0 and QoS 1, alternating the rows in rounds on one broker. Prints one JSON
//! line per row (messages/s, the broker's CPU per message) and the ratios to the row without
//! sensor properties, and to the row whose messages carry three user properties that are not
//! devid's (what Mosquitto itself costs for the three a reading carries).
//!
//! `cargo build --workspace && cargo build --release -p devid-mosquitto && cargo bench -p
//! devid-e2e --bench sensor_publish [-- SENSORS SECONDS ROUNDS]` (default 200 sensors, 5 s, 2
//! rounds). The broker loads the release build of the plugin; devid-server (used only to set
//! up) and the load client are the debug and bench builds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devid_e2e::devid_device::mqtt::QoS;
use devid_e2e::devid_device::OutgoingMessage;
use devid_e2e::*;
use serde_json::json;

fn ring_random() -> [u8; 32] {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).expect("rng");
    b
}

const PAYLOAD: usize = 64;
const INFLIGHT: usize = 64;

struct Sensor {
    id: String,
    k_mac: [u8; 32],
    k_enc: [u8; 32],
    seq: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// The gateway's own topics, no sensor properties.
    None,
    /// The gateway's own topics with three user properties of the sensor rows' sizes that are
    /// not devid's: what Mosquitto itself costs for three properties, the fair baseline.
    Props3,
    Mac,
    Seal,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Props3 => "none+3 user properties",
            Mode::Mac => "devid-sensor-mac",
            Mode::Seal => "devid-sensor-seal",
        }
    }
}

/// One message as the gateway relays it (what a real gateway does per reading: the sensor's
/// tag comes with the frame; here it is computed by the load client).
fn message(gateway: &str, s: &Sensor, mode: Mode, qos: QoS) -> OutgoingMessage {
    let reading = [0x5au8; PAYLOAD];
    match mode {
        Mode::None => {
            OutgoingMessage::new(format!("devices/{gateway}/{}", s.id), reading.to_vec(), qos)
        }
        Mode::Props3 => {
            let seq = s.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let mut m =
                OutgoingMessage::new(format!("devices/{gateway}/{}", s.id), reading.to_vec(), qos);
            m.user_properties = vec![
                ("x-sensor".to_string(), s.id.clone()),
                ("x-sensor-seq".to_string(), seq.to_string()),
                ("x-sensor-mac".to_string(), "A".repeat(22)),
            ];
            m
        }
        Mode::Mac | Mode::Seal => {
            let seq = s.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let topic = format!("devices/{}/t", s.id);
            let (payload, proof) = if mode == Mode::Mac {
                let tag = devid_sensor::publish_mac(
                    &s.k_mac,
                    s.id.as_bytes(),
                    seq,
                    topic.as_bytes(),
                    &reading,
                )
                .expect("mac");
                let text = devid_sensor::encode_b64url(&tag);
                (
                    reading.to_vec(),
                    (
                        "devid-sensor-mac".to_string(),
                        String::from_utf8(text.to_vec()).expect("ascii"),
                    ),
                )
            } else {
                let mut buf = vec![0u8; PAYLOAD + devid_sensor::TAG_LEN];
                buf[..PAYLOAD].copy_from_slice(&reading);
                devid_sensor::seal_in_place(
                    &s.k_enc,
                    s.id.as_bytes(),
                    seq,
                    topic.as_bytes(),
                    &mut buf,
                    PAYLOAD,
                )
                .expect("seal");
                (buf, ("devid-sensor-seal".to_string(), "1".to_string()))
            };
            let mut m = OutgoingMessage::new(topic, payload, qos);
            m.user_properties = vec![
                ("devid-sensor".to_string(), s.id.clone()),
                ("devid-sensor-seq".to_string(), seq.to_string()),
                proof,
            ];
            m
        }
    }
}

/// Process CPU time (user + system) in seconds, from /proc/PID/stat (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &text[text.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

type Totals = ((u8, Mode), Vec<f64>, Vec<f64>);

struct Row {
    per_second: f64,
    broker_us_per_message: f64,
    errors: u64,
}

async fn run(
    client: &Arc<devid_e2e::devid_device::Client>,
    gateway: &str,
    sensors: &Arc<Vec<Sensor>>,
    mode: Mode,
    qos: QoS,
    seconds: f64,
    broker_pid: u32,
) -> Row {
    let cpu0 = cpu_seconds(broker_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..INFLIGHT)
        .map(|task| {
            let (client, sensors, gateway) = (client.clone(), sensors.clone(), gateway.to_string());
            tokio::spawn(async move {
                // Task i relays sensors i, i + INFLIGHT, ...: each sensor's seqs go out in order.
                let mine: Vec<usize> = (task..sensors.len()).step_by(INFLIGHT).collect();
                let (mut sent, mut errors, mut k) = (0u64, 0u64, 0usize);
                while Instant::now() < deadline && !mine.is_empty() {
                    let s = &sensors[mine[k % mine.len()]];
                    k += 1;
                    match client.publish(message(&gateway, s, mode, qos)).await {
                        Ok(None) => sent += 1,
                        Ok(Some(a)) if a.reason.is_success() => sent += 1,
                        Ok(Some(_)) | Err(_) => errors += 1,
                    }
                }
                (sent, errors)
            })
        })
        .collect();
    let (mut sent, mut errors) = (0u64, 0u64);
    for h in handles {
        let (s, e) = h.await.expect("task");
        sent += s;
        errors += e;
    }
    // The PINGRESP comes after the broker has read every PUBLISH before it.
    client.ping().await.expect("ping");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(broker_pid) - cpu0;
    Row {
        per_second: sent as f64 / elapsed,
        broker_us_per_message: if sent > 0 {
            cpu * 1e6 / sent as f64
        } else {
            0.0
        },
        errors,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200.0) as usize;
    let seconds = args.get(1).copied().unwrap_or(5.0);
    let rounds = args.get(2).copied().unwrap_or(2.0) as usize;
    let service = Service::start().await;
    // The plugin's side alone: the sensor keys come from the proxy (see tests/src/proxy.rs).
    let proxy = ServiceProxy::start(service.url()).await;
    let identity = service.enroll_broker("mqtt.bench.local").await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.service_url = proxy.url();
    settings.plugin_profile = "release".into();
    let broker = Broker::start(settings);
    let root = service.root_der();
    let gw = service.register_device("hw-bench-gw").await;
    let mut sensors = Vec::with_capacity(n);
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let id = new_client_id("s");
        let k: [u8; 32] = ring_random();
        let d = devid_sensor::derive(&k, id.as_bytes()).expect("derive");
        entries.push(SensorEntry {
            client_id: id.clone(),
            status: "active".into(),
            k_mac: d.mac,
            k_enc: d.enc,
            publish: vec!["devices/%c/#".into()],
        });
        sensors.push(Sensor {
            id,
            k_mac: d.mac,
            k_enc: d.enc,
            seq: AtomicU64::new(0),
        });
    }
    proxy.set_sensors(&gw.client_id, entries);
    let sensors = Arc::new(sensors);
    let d = connect(&broker.addr(), &gw, &root, None, Tamper::None)
        .await
        .expect("gateway admitted");
    let line = format!("devid: sensor keys of {}: {n} sensors", gw.client_id);
    wait_until("sensor keys installed", Duration::from_secs(10), || async {
        broker.log().contains(&line)
    })
    .await;
    let client = Arc::new(d.client);
    let pid = broker.pid().expect("broker pid");
    eprintln!(
        "# {} sensors, {PAYLOAD}-byte readings, {INFLIGHT} in flight, {seconds} s per row, {rounds} rounds; {} cores, {}",
        n,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
            .unwrap_or_default()
    );
    // (QoS, mode) -> messages/s and broker µs per message of each round.
    let mut totals: Vec<Totals> = Vec::new();
    for round in 0..rounds {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for mode in [Mode::None, Mode::Props3, Mode::Mac, Mode::Seal] {
                let r = run(&client, &gw.client_id, &sensors, mode, qos, seconds, pid).await;
                let q = if qos == QoS::AtMostOnce { 0 } else { 1 };
                println!(
                    "{}",
                    json!({"round": round, "qos": q, "mode": mode.name(), "per_second": r.per_second.round(),
                           "broker_us_per_message": (r.broker_us_per_message * 100.0).round() / 100.0,
                           "errors": r.errors})
                );
                assert_eq!(r.errors, 0, "refused or failed publishes");
                match totals.iter_mut().find(|(k, _, _)| *k == (q, mode)) {
                    Some((_, rates, cpus)) => {
                        rates.push(r.per_second);
                        cpus.push(r.broker_us_per_message);
                    }
                    None => {
                        totals.push(((q, mode), vec![r.per_second], vec![r.broker_us_per_message]))
                    }
                }
            }
        }
    }
    assert!(
        !broker.log().contains("refused reading"),
        "the broker refused readings (QoS 0 refusals are silent to the client)"
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    for q in [0u8, 1] {
        let base_of = |m: Mode| {
            totals
                .iter()
                .find(|(k, _, _)| *k == (q, m))
                .map(|(_, r, c)| (mean(r), mean(c)))
                .expect("baseline")
        };
        let (base, props3) = (base_of(Mode::None), base_of(Mode::Props3));
        for (k, rates, cpus) in totals.iter().filter(|(k, _, _)| k.0 == q) {
            println!(
                "{}",
                json!({"summary": true, "qos": q, "mode": k.1.name(), "per_second": mean(rates).round(),
                       "vs_none": (mean(rates) / base.0 * 1000.0).round() / 1000.0,
                       "vs_none_3_props": (mean(rates) / props3.0 * 1000.0).round() / 1000.0,
                       "broker_us_per_message": (mean(cpus) * 100.0).round() / 100.0,
                       "extra_broker_us_per_message": ((mean(cpus) - base.1) * 100.0).round() / 100.0})
            );
        }
    }
}
