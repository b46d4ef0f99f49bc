//! The broker's parsing of devid-* user properties and the MAC/seal check.
//! Input: `topic_len (u8) || topic || payload_len (u8) || payload || name=value \0 name=value ...`.
#![no_main]

#[path = "common.rs"]
mod common;

use devid_core::protocol::{PublishAuth, PublishVerifier, SessionKeys};
use libfuzzer_sys::fuzz_target;

fn split(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = data.split_first()?;
    (rest.len() >= usize::from(n)).then(|| rest.split_at(usize::from(n)))
}

fuzz_target!(|data: &[u8]| {
    let Some((topic, rest)) = split(data) else {
        return;
    };
    let Some((payload, props)) = split(rest) else {
        return;
    };
    let (Ok(topic), Ok(props)) = (std::str::from_utf8(topic), std::str::from_utf8(props)) else {
        return;
    };
    let props: Vec<(&str, &str)> = props.split('\0').filter_map(|p| p.split_once('=')).collect();
    let keys = SessionKeys {
        k_c2s: common::k_c2s(),
        k_s2c: [2; 32],
        resumption_secret: [3; 32],
        session_id: [4; 16],
    };
    let mut verifier = PublishVerifier::new(&keys);
    if let Ok(Some(auth)) = PublishAuth::from_properties(props.iter().copied()) {
        let mut p = payload.to_vec();
        if verifier.verify(&auth, topic, &mut p).is_err() {
            assert_eq!(p, payload, "a refused message must be unchanged");
            assert_eq!(verifier.last_seq(), 0);
        }
    }
});
