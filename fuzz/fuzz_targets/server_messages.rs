//! The device's parsers of broker bytes: ServerHello, ResumeChallenge.
#![no_main]

#[path = "common.rs"]
mod common;

use devid_core::protocol::{ClientHandshake, ClientResume};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = common::setup();
    let rng = ring::rand::SystemRandom::new();
    if let Ok((state, _)) = ClientHandshake::start(&s.client, &rng) {
        assert!(state.handle(data, s.now, &rng).is_err());
    }
    if let Ok((state, _)) = ClientResume::start(&s.ticket, &rng) {
        let _ = state.handle(data);
    }
});
