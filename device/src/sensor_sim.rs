//! A simulated DEVID-S1 sensor: its key file, its persisted counter, and the frames it sends.
//! It does what sensor firmware does with `devid-sensor` (or the C library): derive K_mac and
//! K_enc once, take each seq from a counter persisted before use, MAC or seal each reading over
//! the topic the gateway will publish to, and frame it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use devid_sensor::frame::{self, Destination, Protection, Reading, SensorRef};
use devid_sensor::{
    derive, Counter, Error as S1Error, SensorKeys, AAD_STACK_LEN, KEY_LEN, TAG_LEN,
};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("sensor key {path}: {why}")]
    Key { path: String, why: String },
    #[error("counter file {path}: {why}")]
    Counter { path: String, why: String },
    #[error("{0}")]
    Sensor(#[from] S1Error),
}

/// Reads a sensor key file: the 43-character base64url `sensor_key` (no padding; surrounding
/// whitespace ignored).
pub fn load_sensor_key(path: &Path) -> Result<[u8; KEY_LEN], SimError> {
    let err = |why: String| SimError::Key {
        path: path.display().to_string(),
        why,
    };
    let text = fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let text = text.trim();
    if text.len() != 43 {
        return Err(err(format!(
            "{} characters; a sensor key is 43 of base64url",
            text.len()
        )));
    }
    let mut k = [0u8; KEY_LEN];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut k) {
        Ok(KEY_LEN) => Ok(k),
        _ => Err(err("not 32 bytes of unpadded base64url".into())),
    }
}

/// The sensor's counter, persisted in a file (one decimal line) before any seq up to the
/// persisted value is used, and written atomically (temporary file, fsync, rename, fsync of
/// the directory), so a crash at any point never lets a seq be used twice.
pub struct CounterFile {
    path: PathBuf,
    counter: Counter,
}

impl CounterFile {
    /// Opens the counter (a missing file is 0: nothing used yet); `block` seqs are reserved
    /// per write.
    pub fn open(path: &Path, block: u64) -> Result<Self, SimError> {
        let persisted = match fs::read_to_string(path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| SimError::Counter {
                path: path.display().to_string(),
                why: format!("{:?} is not a decimal u64", text.trim()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(SimError::Counter {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })
            }
        };
        Ok(CounterFile {
            path: path.to_owned(),
            counter: Counter::resume(persisted, block),
        })
    }

    /// The next seq, persisting a new limit first when the counter asks for one.
    pub fn next_seq(&mut self) -> Result<u64, SimError> {
        if let Some(limit) = self.counter.to_persist() {
            persist_atomically(&self.path, limit).map_err(|e| SimError::Counter {
                path: self.path.display().to_string(),
                why: e.to_string(),
            })?;
            self.counter.persisted(limit);
        }
        Ok(self.counter.next_seq()?)
    }
}

fn persist_atomically(path: &Path, value: u64) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = File::create(&tmp)?;
    writeln!(f, "{value}")?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(&dir)?.sync_all()
}

/// How a frame names its sensor and destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameOptions {
    /// Name the sensor by this index instead of its ClientID.
    pub index: Option<u8>,
    /// The channel (`devices/<id>/<channel>`) or, with `full_topic`, the topic.
    pub destination: String,
    pub full_topic: bool,
    /// Seal the reading instead of MACing it.
    pub seal: bool,
}

/// One frame made by the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFrame {
    pub seq: u64,
    pub topic: String,
    /// The bytes to write to the link (`COBS(..) || 0x00`).
    pub wire: Vec<u8>,
}

/// A simulated sensor.
pub struct SensorSim {
    id: String,
    keys: SensorKeys,
    counter: CounterFile,
}

impl SensorSim {
    pub fn new(id: &str, k: &[u8; KEY_LEN], counter: CounterFile) -> Result<Self, SimError> {
        let derived = derive(k, id.as_bytes())?;
        Ok(SensorSim {
            id: id.to_owned(),
            keys: SensorKeys::from_derived(&derived),
            counter,
        })
    }

    /// Makes the frame of one reading, taking the next seq.
    pub fn frame(&mut self, reading: &[u8], opts: &FrameOptions) -> Result<SimFrame, SimError> {
        let id = self.id.as_bytes();
        let mut topic_buf = [0u8; 320];
        let topic: &[u8] = if opts.full_topic {
            opts.destination.as_bytes()
        } else {
            frame::channel_topic(id, opts.destination.as_bytes(), &mut topic_buf)?
        };
        let seq = self.counter.next_seq()?;
        let mut payload = reading.to_vec();
        let protection = if opts.seal {
            let n = payload.len();
            payload.resize(n + TAG_LEN, 0);
            let mut scratch = [0u8; AAD_STACK_LEN];
            self.keys
                .seal_in_place(id, seq, topic, &mut payload, n, &mut scratch)?;
            Protection::Sealed
        } else {
            Protection::Mac(self.keys.publish_mac(id, seq, topic, &payload)?)
        };
        let r = Reading {
            sensor: match opts.index {
                Some(i) => SensorRef::Index(i),
                None => SensorRef::Id(id),
            },
            seq,
            destination: if opts.full_topic {
                Destination::Topic(topic)
            } else {
                Destination::Channel(opts.destination.as_bytes())
            },
            payload: &payload,
            protection,
        };
        let body_max = 64 + id.len() + topic.len() + payload.len();
        let mut scratch = vec![0u8; body_max];
        let mut wire = vec![0u8; frame::encoded_len_max(body_max)];
        let n = r.encode(&mut scratch, &mut wire)?;
        wire.truncate(n);
        Ok(SimFrame {
            seq,
            topic: String::from_utf8_lossy(topic).into_owned(),
            wire,
        })
    }
}

#[cfg(test)]
mod tests {
    use devid_sensor::frame::{Decoder, Push};

    use super::*;

    #[test]
    fn the_counter_is_persisted_before_use_and_never_reused_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("counter");
        let mut c = CounterFile::open(&path, 4).expect("open");
        assert_eq!(c.next_seq().expect("seq"), 1);
        assert_eq!(fs::read_to_string(&path).expect("read"), "4\n");
        for want in 2..=5 {
            assert_eq!(c.next_seq().expect("seq"), want);
        }
        assert_eq!(fs::read_to_string(&path).expect("read"), "8\n");
        // A restart after seq 5: 6..=8 may have been used; the next is 9.
        let mut again = CounterFile::open(&path, 4).expect("open");
        assert_eq!(again.next_seq().expect("seq"), 9);
        assert!(!dir.path().join("counter.tmp").exists());
        fs::write(&path, "junk").expect("write");
        assert!(CounterFile::open(&path, 4).is_err());
    }

    #[test]
    fn key_files_hold_43_characters_of_base64url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        fs::write(&path, format!("{}\n", URL_SAFE_NO_PAD.encode([9u8; 32]))).expect("write");
        assert_eq!(load_sensor_key(&path).expect("key"), [9u8; 32]);
        let good = URL_SAFE_NO_PAD.encode([9u8; 32]);
        let trailing_bits = format!("{}B", &good[..42]);
        for bad in [
            "short",
            &trailing_bits,
            &"+".repeat(43),
            &format!("{good}="),
        ] {
            fs::write(&path, bad).expect("write");
            assert!(load_sensor_key(&path).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_carry_a_reading_the_crate_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counter = CounterFile::open(&dir.path().join("c"), 16).expect("counter");
        let k = [3u8; 32];
        let mut sim = SensorSim::new("TMP0A1B2C3", &k, counter).expect("sim");
        let keys = derive(&k, b"TMP0A1B2C3").expect("derive");
        for seal in [false, true] {
            let opts = FrameOptions {
                index: None,
                destination: "temp".into(),
                full_topic: false,
                seal,
            };
            let f = sim.frame(b"21.5", &opts).expect("frame");
            assert_eq!(f.topic, "devices/TMP0A1B2C3/temp");
            let mut d = Decoder::<512>::new();
            let mut seen = 0;
            for &b in &f.wire {
                if let Push::Frame(r) = d.push(b) {
                    seen += 1;
                    assert_eq!(r.seq, f.seq);
                    match r.protection {
                        Protection::Mac(mac) => devid_sensor::verify_mac(
                            &keys.mac,
                            b"TMP0A1B2C3",
                            r.seq,
                            f.topic.as_bytes(),
                            r.payload,
                            &mac,
                        )
                        .expect("mac verifies"),
                        Protection::Sealed => {
                            let mut p = r.payload.to_vec();
                            let n = devid_sensor::open_in_place(
                                &keys.enc,
                                b"TMP0A1B2C3",
                                r.seq,
                                f.topic.as_bytes(),
                                &mut p,
                            )
                            .expect("opens");
                            assert_eq!(&p[..n], b"21.5");
                        }
                    }
                }
            }
            assert_eq!(seen, 1);
        }
    }
}
