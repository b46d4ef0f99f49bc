//! The broker's ResumeProof parser after a genuine ResumeHello.
#![no_main]

#[path = "common.rs"]
mod common;

use devid_core::protocol::{ClientResume, ServerHandshake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = common::setup();
    let rng = ring::rand::SystemRandom::new();
    let Ok((_, rh)) = ClientResume::start(&s.ticket, &rng) else {
        return;
    };
    let Ok(p) = ServerHandshake::read_resume_hello(&s.server, &s.client_id, &rh, s.now) else {
        return;
    };
    let Ok((state, _)) = p.accept(&rng) else {
        return;
    };
    assert!(state.handle(data, s.now, &rng).is_err());
});
