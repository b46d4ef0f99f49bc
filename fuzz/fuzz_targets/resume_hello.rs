//! The broker's ResumeHello parser and ticket opening.
#![no_main]

#[path = "common.rs"]
mod common;

use devid_core::protocol::ServerHandshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = common::setup();
    let _ = ServerHandshake::read_resume_hello(&s.server, &s.client_id, data, s.now);
});
