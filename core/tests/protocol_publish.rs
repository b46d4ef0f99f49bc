//! Per-message authentication: devid-mac and devid-seal with the replay window.
#![allow(clippy::unwrap_used)]

mod protocol_support;

use devid_core::protocol::*;
use protocol_support::*;

fn pair() -> (PublishSigner, PublishVerifier, SessionKeys) {
    let env = Env::new();
    let (c, s) = Run::new(&env).go().unwrap();
    (
        PublishSigner::new(&c.keys),
        PublishVerifier::new(&s.keys),
        c.keys.clone(),
    )
}

fn props(tag: &PublishTag) -> Vec<(&str, &str)> {
    tag.properties
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect()
}

fn auth(tag: &PublishTag) -> PublishAuth {
    PublishAuth::from_properties(props(tag)).unwrap().unwrap()
}

const TOPIC: &str = "devices/DEV0123456789ABCDEFGH/temp";

#[test]
fn ok_mac_and_seal_verify_in_order() {
    let (mut dev, mut brk, _) = pair();
    let t1 = dev.mac(TOPIC, b"21.5").unwrap();
    assert_eq!(t1.seq, 1);
    let mut p = b"21.5".to_vec();
    brk.verify(&auth(&t1), TOPIC, &mut p).unwrap();
    assert_eq!(p, b"21.5");
    let mut sealed = b"secret".to_vec();
    let t2 = dev.seal(TOPIC, &mut sealed).unwrap();
    assert_eq!(t2.seq, 2);
    assert_eq!(sealed.len(), 6 + SEAL_TAG_LEN);
    assert_ne!(&sealed[..6], b"secret");
    brk.verify(&auth(&t2), TOPIC, &mut sealed).unwrap();
    assert_eq!(sealed, b"secret");
    assert_eq!(brk.last_seq(), 2);
    // Empty payloads work too.
    let t3 = dev.mac(TOPIC, b"").unwrap();
    brk.verify(&auth(&t3), TOPIC, &mut Vec::new()).unwrap();
}

#[test]
fn fail_replayed_message() {
    let (mut dev, mut brk, _) = pair();
    let t1 = dev.mac(TOPIC, b"x").unwrap();
    brk.verify(&auth(&t1), TOPIC, &mut b"x".to_vec()).unwrap();
    let e = brk
        .verify(&auth(&t1), TOPIC, &mut b"x".to_vec())
        .unwrap_err();
    assert_eq!(e, Error::Replay { seq: 1, last: 1 });
    assert_eq!(e.reason_code(), 0x87);
}

#[test]
fn fail_reordered_message_but_gaps_are_fine() {
    let (mut dev, mut brk, _) = pair();
    let t1 = dev.mac(TOPIC, b"a").unwrap();
    let t2 = dev.mac(TOPIC, b"b").unwrap();
    let t3 = dev.mac(TOPIC, b"c").unwrap();
    brk.verify(&auth(&t2), TOPIC, &mut b"b".to_vec()).unwrap();
    assert!(matches!(
        brk.verify(&auth(&t1), TOPIC, &mut b"a".to_vec()),
        Err(Error::Replay { seq: 1, last: 2 })
    ));
    brk.verify(&auth(&t3), TOPIC, &mut b"c".to_vec()).unwrap();
}

#[test]
fn fail_retargeted_message() {
    let (mut dev, mut brk, _) = pair();
    let t = dev.mac(TOPIC, b"x").unwrap();
    assert_eq!(
        brk.verify(&auth(&t), "devices/OTHER/temp", &mut b"x".to_vec()),
        Err(Error::BadMac)
    );
    let mut sealed = b"x".to_vec();
    let t = dev.seal(TOPIC, &mut sealed).unwrap();
    assert_eq!(
        brk.verify(&auth(&t), "devices/OTHER/temp", &mut sealed.clone()),
        Err(Error::BadMac)
    );
    // A refused message leaves the window where it was: the genuine one still passes.
    assert_eq!(brk.last_seq(), 0);
    brk.verify(&auth(&t), TOPIC, &mut sealed).unwrap();
}

#[test]
fn fail_tampered_payload_seq_or_mac() {
    let (mut dev, mut brk, _) = pair();
    let payload = b"0123456789".to_vec();
    let t = dev.mac(TOPIC, &payload).unwrap();
    for i in 0..payload.len() {
        let mut p = payload.clone();
        p[i] ^= 1;
        assert_eq!(brk.verify(&auth(&t), TOPIC, &mut p), Err(Error::BadMac));
    }
    // truncated and extended payloads
    for cut in 0..payload.len() {
        assert_eq!(
            brk.verify(&auth(&t), TOPIC, &mut payload[..cut].to_vec()),
            Err(Error::BadMac)
        );
    }
    let mut longer = payload.clone();
    longer.push(0);
    assert_eq!(
        brk.verify(&auth(&t), TOPIC, &mut longer),
        Err(Error::BadMac)
    );
    // another seq
    let mut a = auth(&t);
    a.seq += 1;
    assert_eq!(
        brk.verify(&a, TOPIC, &mut payload.clone()),
        Err(Error::BadMac)
    );
    // every bit of the MAC
    let Protection::Mac(mac) = auth(&t).protection else {
        panic!()
    };
    for i in 0..MESSAGE_MAC_LEN * 8 {
        let mut m = mac;
        m[i / 8] ^= 1 << (i % 8);
        let a = PublishAuth {
            seq: t.seq,
            protection: Protection::Mac(m),
        };
        assert_eq!(
            brk.verify(&a, TOPIC, &mut payload.clone()),
            Err(Error::BadMac)
        );
    }
    brk.verify(&auth(&t), TOPIC, &mut payload.clone()).unwrap();
}

#[test]
fn fail_sealed_payload_with_any_flipped_bit_or_truncation() {
    let (mut dev, mut brk, _) = pair();
    let mut sealed = b"hello world".to_vec();
    let t = dev.seal(TOPIC, &mut sealed).unwrap();
    for i in 0..sealed.len() * 8 {
        let mut p = sealed.clone();
        p[i / 8] ^= 1 << (i % 8);
        let before = p.clone();
        assert_eq!(brk.verify(&auth(&t), TOPIC, &mut p), Err(Error::BadMac));
        assert_eq!(p, before, "a refused message must be left unchanged");
    }
    for cut in 0..sealed.len() {
        assert_eq!(
            brk.verify(&auth(&t), TOPIC, &mut sealed[..cut].to_vec()),
            Err(Error::BadMac)
        );
    }
    // A sealed payload presented as MACed (or the reverse) fails.
    let mac_claim = PublishAuth {
        seq: t.seq,
        protection: Protection::Mac([0; 16]),
    };
    assert_eq!(
        brk.verify(&mac_claim, TOPIC, &mut sealed.clone()),
        Err(Error::BadMac)
    );
    brk.verify(&auth(&t), TOPIC, &mut sealed).unwrap();
    assert_eq!(sealed, b"hello world");
}

#[test]
fn fail_old_session_keys_after_reauthentication() {
    let (mut old_dev, _, _) = pair();
    let env = Env::new();
    let (_, s_new) = Run::new(&env).go().unwrap();
    let mut brk = PublishVerifier::new(&s_new.keys);
    let t = old_dev.mac(TOPIC, b"x").unwrap();
    assert_eq!(
        brk.verify(&auth(&t), TOPIC, &mut b"x".to_vec()),
        Err(Error::BadMac)
    );
}

#[test]
fn properties_parse_strictly() {
    let ok_mac = "AAAAAAAAAAAAAAAAAAAAAA";
    let p = |v: &[(&str, &str)]| PublishAuth::from_properties(v.iter().copied());
    assert_eq!(p(&[("other", "x")]).unwrap(), None);
    assert_eq!(
        p(&[
            ("devid-seq", "18446744073709551615"),
            ("devid-mac", ok_mac),
            ("x", "y")
        ])
        .unwrap()
        .unwrap(),
        PublishAuth {
            seq: u64::MAX,
            protection: Protection::Mac([0; 16])
        }
    );
    assert_eq!(
        p(&[("devid-seal", "1"), ("devid-seq", "7")])
            .unwrap()
            .unwrap(),
        PublishAuth {
            seq: 7,
            protection: Protection::Seal
        }
    );
    let bad: &[&[(&str, &str)]] = &[
        &[("devid-mac", ok_mac)],
        &[("devid-seq", "1")],
        &[("devid-seq", "0"), ("devid-mac", ok_mac)],
        &[("devid-seq", "01"), ("devid-mac", ok_mac)],
        &[("devid-seq", "+1"), ("devid-mac", ok_mac)],
        &[("devid-seq", " 1"), ("devid-mac", ok_mac)],
        &[("devid-seq", "18446744073709551616"), ("devid-mac", ok_mac)],
        &[
            ("devid-seq", "1"),
            ("devid-seq", "2"),
            ("devid-mac", ok_mac),
        ],
        &[
            ("devid-seq", "1"),
            ("devid-mac", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ],
        &[("devid-seq", "1"), ("devid-mac", "AAAAAAAAAAAAAAAAAAAAA")],
        &[("devid-seq", "1"), ("devid-mac", "AAAAAAAAAAAAAAAAAAAAAB")],
        &[("devid-seq", "1"), ("devid-mac", "AAAAAAAAAAAAAAAAAAAA+A")],
        &[
            ("devid-seq", "1"),
            ("devid-mac", ok_mac),
            ("devid-mac", ok_mac),
        ],
        &[
            ("devid-seq", "1"),
            ("devid-mac", ok_mac),
            ("devid-seal", "1"),
        ],
        &[("devid-seq", "1"), ("devid-seal", "true")],
        &[("devid-seq", "1"), ("devid-seal", "1"), ("devid-seal", "1")],
        &[
            ("devid-seq", "1"),
            ("devid-mac", ok_mac),
            ("devid-verified", "X"),
        ],
    ];
    for case in bad {
        assert!(
            matches!(p(case), Err(Error::BadProperty(_))),
            "{case:?} -> {:?}",
            p(case)
        );
    }
    assert!(is_devid_property(PROP_VERIFIED) && !is_devid_property("devidseq"));
}

#[test]
fn signer_properties_are_what_the_parser_reads() {
    let (mut dev, _, _) = pair();
    let t = dev.mac(TOPIC, b"x").unwrap();
    assert_eq!(t.properties[0], (PROP_SEQ, "1".to_string()));
    assert_eq!(t.properties[1].0, PROP_MAC);
    assert_eq!(t.properties[1].1.len(), 22);
    let mut p = b"y".to_vec();
    let t = dev.seal(TOPIC, &mut p).unwrap();
    assert_eq!(
        t.properties,
        vec![(PROP_SEQ, "2".to_string()), (PROP_SEAL, "1".to_string())]
    );
}
