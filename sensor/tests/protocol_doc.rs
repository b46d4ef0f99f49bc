//! The DEVID-S1 test vector in docs/protocol.md, parsed from the page and checked against the
//! crate, so the page cannot drift from the code.

use std::collections::HashMap;

use devid_sensor::*;
use ring::hmac;

/// The DEVID-S1 part of docs/protocol.md: from its heading to the next top-level heading.
fn section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("docs/protocol.md");
    let start = text
        .find("\n# DEVID-S1")
        .expect("a top-level DEVID-S1 heading");
    let rest = &text[start + 1..];
    let end = rest[1..].find("\n# ").map_or(rest.len(), |i| i + 1);
    rest[..end].to_string()
}

/// Every `label (N bytes):` line followed by a fenced block of hex, as label -> bytes; the
/// stated length must match.
fn hex_values(section: &str) -> HashMap<String, Vec<u8>> {
    let lines: Vec<&str> = section.lines().collect();
    let mut out = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(head) = line.strip_suffix(" bytes):") else {
            continue;
        };
        let (label, n) = head.rsplit_once(" (").expect("label (N bytes):");
        let n: usize = n.parse().expect("byte count");
        assert_eq!(lines.get(i + 1), Some(&"```"), "fence after {label}");
        let hex: String = lines[i + 2..]
            .iter()
            .take_while(|l| **l != "```")
            .copied()
            .collect();
        let bytes = hex::decode(&hex).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(bytes.len(), n, "{label}: stated length");
        assert!(
            out.insert(label.to_string(), bytes).is_none(),
            "{label} twice"
        );
    }
    out
}

/// The `` `name` = `value` `` (or `` name = `value` ``) pairs of one line, in order.
fn pairs(line: &str) -> Vec<(String, String)> {
    line.split(", ")
        .map(|pair| {
            let (k, v) = pair.split_once(" = ").expect("name = value");
            let unquote = |s: &str| s.trim_matches('`').to_string();
            (unquote(k), unquote(v))
        })
        .collect()
}

/// The pairs of every line that starts with `prefix`, in order.
fn lines_of_pairs(section: &str, prefix: &str) -> Vec<Vec<(String, String)>> {
    section
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(pairs)
        .collect()
}

struct Vector {
    hex: HashMap<String, Vec<u8>>,
    id: Vec<u8>,
    topic: Vec<u8>,
    props: Vec<Vec<(String, String)>>,
}

impl Vector {
    fn load() -> Self {
        let s = section();
        let line = s
            .lines()
            .find(|l| l.starts_with("id = `"))
            .expect("the id = .., topic = .. line");
        let inputs = pairs(line);
        let get = |name: &str| {
            inputs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_bytes().to_vec())
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        Vector {
            hex: hex_values(&s),
            id: get("id"),
            topic: get("topic"),
            props: lines_of_pairs(&s, "Properties: "),
        }
    }

    fn get(&self, label: &str) -> &[u8] {
        self.hex
            .get(label)
            .unwrap_or_else(|| panic!("{label} missing from the vector"))
    }

    fn key(&self, label: &str) -> [u8; 32] {
        self.get(label).try_into().expect("32 bytes")
    }
}

fn id_prefixed(label: &[u8], id: &[u8]) -> Vec<u8> {
    [label, &[id.len() as u8], id].concat()
}

#[test]
fn the_documented_keys_are_the_crates() {
    let v = Vector::load();
    assert_eq!(v.get("info_mac"), id_prefixed(LABEL_MAC, &v.id));
    assert_eq!(v.get("info_enc"), id_prefixed(LABEL_SEAL, &v.id));
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[]), v.get("K"));
    assert_eq!(v.get("PRK = HKDF-Extract(salt = empty, K)"), prk.as_ref());
    // HKDF-Expand for L = 32 is one block: HMAC(PRK, info || 0x01).
    let prk_key = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
    for (label, info) in [("K_mac", "info_mac"), ("K_enc", "info_enc")] {
        let t1 = hmac::sign(&prk_key, &[v.get(info), &[1]].concat());
        assert_eq!(v.get(label), t1.as_ref(), "{label} by hand");
    }
    let keys = derive(&v.key("K"), &v.id).expect("derive");
    assert_eq!(keys.mac, v.key("K_mac"));
    assert_eq!(keys.enc, v.key("K_enc"));
}

#[test]
fn the_documented_mac_is_the_crates() {
    let v = Vector::load();
    let seq = 1u64;
    let payload = v.get("payload");
    let input = [
        id_prefixed(LABEL_PUBLISH, &v.id),
        seq.to_be_bytes().to_vec(),
        (v.topic.len() as u16).to_be_bytes().to_vec(),
        v.topic.clone(),
        payload.to_vec(),
    ]
    .concat();
    assert_eq!(v.get("MAC input"), input);
    let full = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, v.get("K_mac")),
        v.get("MAC input"),
    );
    assert_eq!(v.get("HMAC-SHA256"), full.as_ref());
    let tag = publish_mac(&v.key("K_mac"), &v.id, seq, &v.topic, payload).expect("mac");
    assert_eq!(&tag[..], &v.get("HMAC-SHA256")[..MAC_LEN]);
    let id = String::from_utf8(v.id.clone()).expect("ascii");
    let b64 = encode_b64url(&tag);
    let want = [
        (PROP_SENSOR, id.as_str()),
        (PROP_SEQ, "1"),
        (PROP_MAC, std::str::from_utf8(&b64).expect("ascii")),
    ];
    assert_props(&v.props[0], &want);
    let text = &v.props[0][2].1;
    assert_eq!(decode_b64url_16(text.as_bytes()), Ok(tag));
    assert_eq!(parse_seq(v.props[0][1].1.as_bytes()), Ok(seq));
}

#[test]
fn the_documented_seal_is_the_crates() {
    let v = Vector::load();
    let seq = 2u64;
    assert_eq!(v.get("nonce"), seal_nonce(seq));
    let mut scratch = [0u8; 128];
    assert_eq!(
        v.get("aad"),
        seal_aad(&v.id, &v.topic, &mut scratch).expect("aad")
    );
    let reading = v.get("reading");
    let mut buf = reading.to_vec();
    buf.resize(reading.len() + TAG_LEN, 0);
    let n = seal_in_place(
        &v.key("K_enc"),
        &v.id,
        seq,
        &v.topic,
        &mut buf,
        reading.len(),
    )
    .expect("seal");
    assert_eq!(&buf[..n], v.get("sealed payload"));
    assert_eq!(
        v.get("sealed payload"),
        [v.get("ciphertext"), v.get("tag")].concat()
    );
    let m = open_in_place(&v.key("K_enc"), &v.id, seq, &v.topic, &mut buf).expect("open");
    assert_eq!(&buf[..m], reading);
    let id = String::from_utf8(v.id.clone()).expect("ascii");
    assert_props(
        &v.props[1],
        &[
            (PROP_SENSOR, id.as_str()),
            (PROP_SEQ, "2"),
            (PROP_SEAL, "1"),
        ],
    );
}

fn assert_props(got: &[(String, String)], want: &[(&str, &str)]) {
    let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn the_documented_frame_is_the_crates() {
    let v = Vector::load();
    let mac = publish_mac(&v.key("K_mac"), &v.id, 1, &v.topic, v.get("payload")).expect("mac");
    let reading = frame::Reading {
        sensor: frame::SensorRef::Id(&v.id),
        seq: 1,
        destination: frame::Destination::Channel(b"temp"),
        payload: v.get("payload"),
        protection: frame::Protection::Mac(mac),
    };
    let mut body = [0u8; 256];
    let n = reading.encode_body(&mut body).expect("body");
    assert_eq!(&body[..n], v.get("frame body"));
    assert_eq!(
        frame::crc32(v.get("frame body")).to_be_bytes(),
        v.get("frame CRC-32")
    );
    let mut out = [0u8; 256];
    let m = reading.encode(&mut body, &mut out).expect("frame");
    assert_eq!(&out[..m], v.get("frame"));
    let mut topic = [0u8; 64];
    assert_eq!(
        frame::channel_topic(&v.id, b"temp", &mut topic),
        Ok(&v.topic[..])
    );
    let mut decoder = frame::Decoder::<256>::new();
    let mut got = Vec::new();
    for &b in v.get("frame") {
        if let frame::Push::Frame(r) = decoder.push(b) {
            got.push(r == reading);
        }
    }
    assert_eq!(got, [true]);
}

#[test]
fn a_32_byte_reading_with_an_index_takes_70_bytes_on_the_line() {
    let reading = [7u8; 32];
    let sealed = [7u8; 48];
    let mut scratch = [0u8; 128];
    let mut out = [0u8; 128];
    for (payload, protection) in [
        (&reading[..], frame::Protection::Mac([1; 16])),
        (&sealed[..], frame::Protection::Sealed),
    ] {
        let r = frame::Reading {
            sensor: frame::SensorRef::Index(1),
            seq: 1,
            destination: frame::Destination::Channel(b"temp"),
            payload,
            protection,
        };
        assert_eq!(r.encode(&mut scratch, &mut out), Ok(70));
    }
    let text = section().split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("takes 70 bytes on the line"),
        "the page states the size"
    );
}
