//! The broker's first parser: ClientHello or ResumeHello as CONNECT Authentication Data,
//! through certificate verification (no ECDH: accept is not called).
#![no_main]

#[path = "common.rs"]
mod common;

use devid_core::protocol::ServerHandshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = common::setup();
    let _ = ServerHandshake::start(&s.server, &s.client_id, data, s.now);
});
