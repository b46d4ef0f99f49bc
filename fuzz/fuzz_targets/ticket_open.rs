//! Ticket opening: the sealed envelope, and the strict plaintext parser behind it (which random
//! bytes never reach through AES-GCM, so it is fuzzed directly too). Also the device's stored
//! ticket format.
#![no_main]

#[path = "common.rs"]
mod common;

use devid_core::protocol::{fuzzing, ResumptionTicket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = common::ticket_keys();
    let _ = keys.open(data);
    if let Ok(c) = fuzzing::parse_ticket_plaintext(data) {
        // What parses, seals and opens to the same contents.
        let rng = ring::rand::SystemRandom::new();
        let sealed = keys.seal(&c, &rng).expect("seal");
        assert_eq!(keys.open(&sealed).expect("open"), c);
    }
    if let Ok(t) = ResumptionTicket::from_bytes(data) {
        assert_eq!(t.to_bytes(), data);
    }
});
