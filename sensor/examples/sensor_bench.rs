//! The sensor crate's cost per reading on this CPU, single thread: deriving the keys, the
//! publish MAC and the seal of a 32-byte reading (and the broker's check of each), beside ring's
//! bare HMAC-SHA256 and AES-256-GCM on the same bytes (the floor any implementation pays).
//!
//! `cargo run --release -p devid-sensor --example sensor_bench [-- SECONDS_PER_CASE]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use devid_sensor::*;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hmac;

fn measure(name: &str, secs: f64, mut f: impl FnMut(u64)) -> f64 {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            n += 1;
            f(n);
        }
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    println!("{name:<44} {:>12.0}/s {:>9.3} us", 1.0 / per, per * 1e6);
    1.0 / per
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let k = [7u8; KEY_LEN];
    let id = b"TMP0A1B2C3D4E5F6G7H8J9K";
    let topic = b"devices/TMP0A1B2C3D4E5F6G7H8J9K/temp";
    let reading = [0x5au8; 32];
    let keys = derive(&k, id).expect("derive");

    measure("derive K_mac + K_enc", secs, |_| {
        black_box(derive(black_box(&k), id).expect("derive"));
    });
    let mac = measure("publish_mac, 32 B + base64url", secs, |seq| {
        let tag = publish_mac(&keys.mac, id, seq, topic, black_box(&reading)).expect("mac");
        black_box(encode_b64url(&tag));
    });
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, &keys.mac);
    let input_len = LABEL_PUBLISH.len() + 1 + id.len() + 8 + 2 + topic.len() + reading.len();
    let input = vec![0x33u8; input_len];
    let bare_mac = measure("ring HMAC-SHA256 of the same input (peer)", secs, |_| {
        black_box(hmac::sign(&hkey, black_box(&input)));
    });
    let tag = publish_mac(&keys.mac, id, 1, topic, &reading).expect("mac");
    measure("verify_mac, 32 B", secs, |_| {
        black_box(verify_mac(
            &keys.mac,
            id,
            1,
            topic,
            black_box(&reading),
            &tag,
        ))
        .expect("ok");
    });
    let sk = SensorKeys::from_derived(&keys);
    let keyed_mac = measure("SensorKeys::publish_mac, 32 B (keyed once)", secs, |seq| {
        black_box(
            sk.publish_mac(id, seq, topic, black_box(&reading))
                .expect("mac"),
        );
    });
    measure("SensorKeys::verify_mac (broker), 32 B", secs, |_| {
        black_box(sk.verify_mac(id, 1, topic, black_box(&reading), &tag)).expect("ok");
    });
    let mut buf = [0u8; 48];
    let seal = measure("seal_in_place, 32 B", secs, |seq| {
        buf[..32].copy_from_slice(&reading);
        black_box(seal_in_place(&keys.enc, id, seq, topic, &mut buf, 32).expect("seal"));
    });
    let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &keys.enc).expect("key"));
    let aad = vec![0x44u8; seal_aad_len(id, topic)];
    let bare_seal = measure("ring AES-256-GCM seal, same sizes (peer)", secs, |seq| {
        let mut b = reading;
        let tag = black_box(
            aead.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(seal_nonce(seq)),
                Aad::from(&aad),
                &mut b,
            )
            .expect("seal"),
        );
        let _ = black_box(tag);
    });
    let mut sealed = [0u8; 48];
    sealed[..32].copy_from_slice(&reading);
    seal_in_place(&keys.enc, id, 1, topic, &mut sealed, 32).expect("seal");
    measure("open_in_place, 32 B", secs, |_| {
        let mut b = sealed;
        black_box(open_in_place(&keys.enc, id, 1, topic, &mut b).expect("open"));
    });
    let mut scratch = [0u8; AAD_STACK_LEN];
    let keyed_seal = measure(
        "SensorKeys::seal_in_place, 32 B (keyed once)",
        secs,
        |seq| {
            buf[..32].copy_from_slice(&reading);
            black_box(
                sk.seal_in_place(id, seq, topic, &mut buf, 32, &mut scratch)
                    .expect("seal"),
            );
        },
    );
    measure("SensorKeys::open_in_place (broker), 32 B", secs, |_| {
        let mut b = sealed;
        black_box(
            sk.open_in_place(id, 1, topic, &mut b, &mut scratch)
                .expect("open"),
        );
    });
    println!(
        "ratio to the peer (same run): MAC {:.2} (keyed once {:.2}), seal {:.2} (keyed once {:.2})",
        mac / bare_mac,
        keyed_mac / bare_mac,
        seal / bare_seal,
        keyed_seal / bare_seal
    );
}
