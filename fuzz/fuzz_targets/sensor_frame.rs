//! The gateway's sensor-link frame decoder (COBS, CRC-32, body layout) on arbitrary line bytes:
//! never a panic, and every frame it accepts re-encodes to bytes that decode to the same
//! reading.
#![no_main]

use devid_sensor::frame::{Decoder, Push};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::<1024>::new();
    for &b in data {
        if let Push::Frame(r) = decoder.push(b) {
            let mut scratch = [0u8; 1100];
            let mut wire = [0u8; 1200];
            let n = r
                .encode(&mut scratch, &mut wire)
                .expect("an accepted frame re-encodes");
            let mut again = Decoder::<1024>::new();
            let mut got = None;
            for &w in &wire[..n] {
                if let Push::Frame(r2) = again.push(w) {
                    got = Some(r2 == r);
                }
            }
            assert_eq!(got, Some(true));
        }
    }
});
