//! The broker's ClientFinish parser and checks, after a genuine ClientHello.
#![no_main]

#[path = "common.rs"]
mod common;

use devid_core::protocol::{ClientHandshake, ServerHandshake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = common::setup();
    let rng = ring::rand::SystemRandom::new();
    let Ok((_, ch)) = ClientHandshake::start(&s.client, &rng) else {
        return;
    };
    let Ok(p) = ServerHandshake::read_client_hello(&s.server, &s.client_id, &ch, s.now) else {
        return;
    };
    let Ok((state, _)) = p.accept(&rng) else {
        return;
    };
    // Random bytes never pass sig_c; the parser and the refusal paths are what is exercised.
    assert!(state.handle(data, s.now, &rng).is_err());
});
