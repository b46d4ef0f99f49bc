//! `devid-agent gateway` and `devid-agent sensor`: relaying sensor readings (DEVID-S1) from a
//! serial line, pty or Unix socket, and a simulated sensor that writes them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use devid_device::gateway::{message_for, sensor_id, IndexTable};
use devid_device::link::{self, LinkEvent, LinkSpec, LinkWriter};
use devid_device::mqtt::QoS;
use devid_device::sensor_sim::{load_sensor_key, CounterFile, FrameOptions, SensorSim};
use devid_device::Event;
use tokio::sync::mpsc;

use crate::Failure;

/// The link: exactly one of a serial device, a pty to create, or a Unix socket.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct LinkArgs {
    /// A serial device (or a pty's terminal side, e.g. a gateway's --pty link).
    #[arg(long)]
    serial: Option<PathBuf>,
    /// Gateway: create a pseudo-terminal and make this path a symlink to its terminal side.
    #[arg(long)]
    pty: Option<PathBuf>,
    /// A Unix socket (the gateway listens, sensors connect).
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl LinkArgs {
    fn spec(&self, baud: Option<u32>) -> LinkSpec {
        match (&self.serial, &self.pty, &self.socket) {
            (Some(path), _, _) => LinkSpec::Serial {
                path: path.clone(),
                baud,
            },
            (_, Some(link), _) => LinkSpec::Pty { link: link.clone() },
            // clap requires exactly one of the three.
            (_, _, socket) => LinkSpec::Socket {
                path: socket.clone().unwrap_or_default(),
            },
        }
    }
}

#[derive(Args)]
pub(crate) struct GatewayArgs {
    #[command(flatten)]
    common: crate::Common,
    #[command(flatten)]
    link: LinkArgs,
    /// Baud rate of the serial device.
    #[arg(long, requires = "serial")]
    baud: Option<u32>,
    /// QoS of the relayed PUBLISHes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// N=CLIENTID: the sensor that names itself by index N on the link (repeatable).
    #[arg(long = "sensor-index")]
    sensor_index: Vec<String>,
    /// Exit after relaying this many readings (default: until the broker disconnects or Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Args)]
pub(crate) struct SensorArgs {
    /// The sensor's ClientID.
    #[arg(long)]
    id: String,
    /// File holding the sensor key (`sensor_key`: 43 characters of base64url).
    #[arg(long)]
    key: PathBuf,
    /// File holding the persisted counter (created when missing).
    #[arg(long)]
    counter: PathBuf,
    /// Seqs reserved per counter write.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    block: u64,
    #[command(flatten)]
    link: LinkArgs,
    /// Baud rate of the serial device.
    #[arg(long, requires = "serial")]
    baud: Option<u32>,
    /// The channel: readings go to devices/<id>/<channel>.
    #[arg(long, default_value = "data", conflicts_with = "topic")]
    channel: String,
    /// Publish to this topic instead of a channel.
    #[arg(long)]
    topic: Option<String>,
    /// Name the sensor by this index in frames (the gateway maps it with --sensor-index).
    #[arg(long)]
    index: Option<u8>,
    /// Seal the reading (devid-sensor-seal) instead of MACing it (devid-sensor-mac).
    #[arg(long)]
    seal: bool,
    /// The reading.
    #[arg(long)]
    message: String,
    /// Send the reading this many times (each with the next seq).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Milliseconds between readings.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Machine-readable output (one JSON object per frame, with its bytes).
    #[arg(long)]
    json: bool,
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::failed(e.to_string())
}

pub(crate) async fn gateway(a: GatewayArgs) -> Result<(), Failure> {
    let mut table = IndexTable::new();
    for e in &a.sensor_index {
        table.add(e).map_err(|e| Failure::usage(e.to_string()))?;
    }
    let qos = QoS::from_u8(a.qos).ok_or_else(|| Failure::usage("--qos 0, 1 or 2"))?;
    let json = a.common.json;
    let s = crate::setup(&a.common)?;
    let mut client = crate::connect(&s, a.common.rotation()).await?;
    let spec = a.link.spec(a.baud);
    let (tx, mut rx) = mpsc::channel(256);
    let listening = link::listen(&spec, tx).await.map_err(failed)?;
    let pty = listening.pty_path.as_ref().map(|p| p.display().to_string());
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "listening", "link": format!("{spec:?}"), "pty": pty})
        );
    } else {
        println!(
            "listening on {spec:?}{}",
            pty.map(|p| format!(" ({p})")).unwrap_or_default()
        );
    }
    let mut relayed = 0u64;
    loop {
        if a.count.is_some_and(|c| relayed >= c) {
            client.disconnect().await?;
            return Ok(());
        }
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(LinkEvent::Reading(r)) => {
                    let msg = match message_for(&r, &table, qos) {
                        Ok(m) => m,
                        Err(e) => {
                            report(json, serde_json::json!({"event": "skipped", "why": e.to_string()}), &e.to_string());
                            continue;
                        }
                    };
                    let topic = msg.topic.clone();
                    let ack = client.publish(msg).await?;
                    relayed += 1;
                    let sensor = sensor_id(&r, &table).unwrap_or_default();
                    let (code, name) = match &ack {
                        Some(a) => (Some(a.reason.0), Some(a.reason.name())),
                        None => (None, None),
                    };
                    report(
                        json,
                        serde_json::json!({
                            "event": "relayed", "sensor": sensor, "seq": r.seq, "topic": topic,
                            "sealed": r.mac.is_none(), "reason": code, "name": name,
                        }),
                        &format!(
                            "relayed sensor={sensor} seq={} topic={topic}{}",
                            r.seq,
                            ack.map(|a| format!(" {}", a.reason)).unwrap_or_default()
                        ),
                    );
                }
                Some(LinkEvent::Dropped(reason)) => report(
                    json,
                    serde_json::json!({"event": "frame_dropped", "reason": reason}),
                    &format!("frame dropped: {reason}"),
                ),
                Some(LinkEvent::Closed(why)) => {
                    report(json, serde_json::json!({"event": "link_closed", "why": why}), &format!("link closed: {why}"));
                    // A socket's connections come and go; a serial line or pty that ends is gone.
                    if !matches!(spec, LinkSpec::Socket { .. }) {
                        return Err(Failure::failed(format!("the link ended: {why}")));
                    }
                }
                None => return Err(Failure::failed("the link ended")),
            },
            ev = client.next_event() => match ev {
                Some(ev @ (Event::Disconnected { .. } | Event::Closed(_))) => {
                    crate::print_event(&ev, json);
                    return Err(Failure::failed("disconnected"));
                }
                Some(ev) => crate::print_event(&ev, json),
                None => return Err(Failure::failed("disconnected")),
            },
            _ = tokio::signal::ctrl_c() => {
                client.disconnect().await?;
                return Ok(());
            }
        }
    }
}

fn report(json: bool, value: serde_json::Value, text: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub(crate) fn sensor(a: SensorArgs) -> Result<(), Failure> {
    let usage = |e: &dyn std::fmt::Display| Failure::usage(e.to_string());
    let k = load_sensor_key(&a.key).map_err(|e| usage(&e))?;
    let counter = CounterFile::open(&a.counter, a.block).map_err(|e| usage(&e))?;
    let mut sim = SensorSim::new(&a.id, &k, counter).map_err(|e| usage(&e))?;
    let opts = FrameOptions {
        index: a.index,
        destination: a.topic.clone().unwrap_or_else(|| a.channel.clone()),
        full_topic: a.topic.is_some(),
        seal: a.seal,
    };
    let mut link = LinkWriter::open(&a.link.spec(a.baud)).map_err(failed)?;
    for i in 0..a.count {
        if i > 0 && a.interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(a.interval_ms));
        }
        let f = sim.frame(a.message.as_bytes(), &opts).map_err(failed)?;
        link.write_frame(&f.wire).map_err(failed)?;
        report(
            a.json,
            serde_json::json!({
                "event": "frame", "sensor": a.id, "seq": f.seq, "topic": f.topic,
                "sealed": a.seal, "frame": hex::encode(&f.wire),
            }),
            &format!(
                "frame seq={} topic={} bytes={}",
                f.seq,
                f.topic,
                f.wire.len()
            ),
        );
    }
    Ok(())
}
