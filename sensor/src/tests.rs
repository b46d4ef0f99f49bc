//! Unit tests. The vector values were computed with an independent implementation (Python's
//! `hmac` and the `cryptography` package's HKDF and AESGCM).

use super::*;

fn h(s: &str) -> [u8; 32] {
    let v = hex::decode(s).expect("hex");
    v.try_into().expect("32 bytes")
}

const K: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const ID: &[u8] = b"TMP0A1B2C3D4E5F6G7H8J9K";
const K_MAC: &str = "1e0aea8ecc43911ccf50cd23ba031b6c44751b1ab2a50b5939ba8f7cac879190";
const K_ENC: &str = "24920a7cc77c721bae3a7a50768515909e73a5197244d9843c6f3b5e97ce782b";
const TOPIC: &[u8] = b"devices/TMP0A1B2C3D4E5F6G7H8J9K/temp";
const MAC_PROP: &str = "lBN_f0v27Tmhua2imcmy-A";
const SEALED: &str = "db0a9152e81dc4506636a4c312f3e99db734d3ed16708d607b1f";

fn keys() -> DerivedKeys {
    derive(&h(K), ID).expect("derive")
}

#[test]
fn derive_matches_the_vector() {
    let k = keys();
    assert_eq!(k.mac, h(K_MAC));
    assert_eq!(k.enc, h(K_ENC));
}

#[test]
fn derive_depends_on_the_id_and_refuses_bad_ids() {
    let other = derive(&h(K), b"TMP0A1B2C3D4E5F6G7H8J9L").expect("derive");
    assert_ne!(other.mac, keys().mac);
    assert_ne!(other.enc, keys().enc);
    assert_eq!(derive(&h(K), b"").err(), Some(Error::BadId));
    assert_eq!(derive(&h(K), &[b'a'; 256]).err(), Some(Error::BadId));
    assert!(derive(&h(K), &[b'a'; 255]).is_ok());
}

#[test]
fn publish_mac_matches_the_vector() {
    let tag = publish_mac(&keys().mac, ID, 1, TOPIC, br#"{"t":21.5}"#).expect("mac");
    assert_eq!(&encode_b64url(&tag), MAC_PROP.as_bytes());
    assert_eq!(decode_b64url_16(MAC_PROP.as_bytes()), Ok(tag));
    assert_eq!(
        verify_mac(&keys().mac, ID, 1, TOPIC, br#"{"t":21.5}"#, &tag),
        Ok(())
    );
}

#[test]
fn verify_mac_refuses_any_change() {
    let k = keys();
    let p = br#"{"t":21.5}"#;
    let tag = publish_mac(&k.mac, ID, 7, TOPIC, p).expect("mac");
    let cases: [(&str, Result<(), Error>); 7] = [
        ("seq", verify_mac(&k.mac, ID, 8, TOPIC, p, &tag)),
        ("id", verify_mac(&k.mac, b"TMP0", 7, TOPIC, p, &tag)),
        (
            "topic",
            verify_mac(&k.mac, ID, 7, b"devices/x/temp", p, &tag),
        ),
        (
            "payload",
            verify_mac(&k.mac, ID, 7, TOPIC, br#"{"t":21.6}"#, &tag),
        ),
        ("key", verify_mac(&k.enc, ID, 7, TOPIC, p, &tag)),
        ("short tag", verify_mac(&k.mac, ID, 7, TOPIC, p, &tag[..15])),
        ("seq 0", verify_mac(&k.mac, ID, 0, TOPIC, p, &tag)),
    ];
    for (what, got) in cases {
        assert!(got.is_err(), "fail/{what}");
    }
    let mut bad = tag;
    bad[15] ^= 1;
    assert_eq!(
        verify_mac(&k.mac, ID, 7, TOPIC, p, &bad),
        Err(Error::BadMac)
    );
}

#[test]
fn seal_matches_the_vector_and_opens() {
    let k = keys();
    let reading = br#"{"t":21.6}"#;
    let mut buf = [0u8; 64];
    buf[..reading.len()].copy_from_slice(reading);
    let n = seal_in_place(&k.enc, ID, 2, TOPIC, &mut buf, reading.len()).expect("seal");
    assert_eq!(n, reading.len() + TAG_LEN);
    assert_eq!(hex::encode(&buf[..n]), SEALED);
    let m = open_in_place(&k.enc, ID, 2, TOPIC, &mut buf[..n]).expect("open");
    assert_eq!(&buf[..m], reading);
}

#[test]
fn seal_aad_and_nonce_match_the_vector() {
    let mut scratch = [0u8; 128];
    let aad = seal_aad(ID, TOPIC, &mut scratch).expect("aad");
    assert_eq!(
        hex::encode(aad),
        "44455649442d5331207365616c17544d5030413142324333443445354636473748384a394b0024\
         646576696365732f544d5030413142324333443445354636473748384a394b2f74656d70"
    );
    assert_eq!(hex::encode(seal_nonce(2)), "000000000000000000000002");
}

#[test]
fn open_refuses_altered_or_misbound_seals() {
    let k = keys();
    let sealed = hex::decode(SEALED).expect("hex");
    let attempt = |key: &[u8; 32], id: &[u8], seq: u64, topic: &[u8], flip: Option<usize>| {
        let mut b = sealed.clone();
        if let Some(i) = flip {
            b[i] ^= 0x80;
        }
        open_in_place(key, id, seq, topic, &mut b)
    };
    assert_eq!(attempt(&k.enc, ID, 2, TOPIC, None), Ok(10));
    assert_eq!(attempt(&k.enc, ID, 3, TOPIC, None), Err(Error::BadSeal));
    assert_eq!(
        attempt(&k.enc, b"TMP1", 2, TOPIC, None),
        Err(Error::BadSeal)
    );
    assert_eq!(
        attempt(&k.enc, ID, 2, b"devices/x", None),
        Err(Error::BadSeal)
    );
    assert_eq!(attempt(&k.mac, ID, 2, TOPIC, None), Err(Error::BadSeal));
    assert_eq!(attempt(&k.enc, ID, 2, TOPIC, Some(0)), Err(Error::BadSeal));
    assert_eq!(attempt(&k.enc, ID, 2, TOPIC, Some(25)), Err(Error::BadSeal));
    let mut short = [0u8; 15];
    assert_eq!(
        open_in_place(&k.enc, ID, 2, TOPIC, &mut short),
        Err(Error::BadSeal)
    );
}

#[test]
fn seal_needs_room_for_the_tag_and_long_topics_need_scratch() {
    let k = keys();
    let mut buf = [0u8; 25];
    assert_eq!(
        seal_in_place(&k.enc, ID, 2, TOPIC, &mut buf, 10),
        Err(Error::BufferTooSmall)
    );
    let long = [b'a'; 400];
    let mut buf = [0u8; 26];
    assert_eq!(
        seal_in_place(&k.enc, ID, 2, &long, &mut buf, 10),
        Err(Error::BadTopic)
    );
    let mut scratch = [0u8; 512];
    let n =
        seal_in_place_with_scratch(&k.enc, ID, 2, &long, &mut buf, 10, &mut scratch).expect("seal");
    assert_eq!(
        open_in_place_with_scratch(&k.enc, ID, 2, &long, &mut buf[..n], &mut scratch),
        Ok(10)
    );
    let huge = [b'a'; 65536];
    assert_eq!(publish_mac(&k.mac, ID, 1, &huge, b""), Err(Error::BadTopic));
}

#[test]
fn base64url_is_canonical_and_strict() {
    let all: [u8; 16] = core::array::from_fn(|i| (i as u8) * 17);
    let text = encode_b64url(&all);
    assert_eq!(decode_b64url_16(&text), Ok(all));
    assert_eq!(&encode_b64url(&[0xff; 16]), b"_____________________w");
    assert_eq!(&encode_b64url(&[0; 16]), b"AAAAAAAAAAAAAAAAAAAAAA");
    for bad in [
        &b"_____________________x"[..], // unused bits set
        b"_____________________w=",     // padding
        b"____________________w",       // short
        b"/////////////////////w",      // standard alphabet
        b"_____________________ ",
        b"",
    ] {
        assert_eq!(decode_b64url_16(bad), Err(Error::BadBase64), "{bad:?}");
    }
}

#[test]
fn seq_parsing_takes_exactly_1_to_2_pow_64_minus_1() {
    let ok: [(&[u8], u64); 4] = [
        (b"1", 1),
        (b"42", 42),
        (b"18446744073709551615", u64::MAX),
        (b"10", 10),
    ];
    for (text, v) in ok {
        assert_eq!(parse_seq(text), Ok(v));
        let mut buf = [0u8; SEQ_TEXT_MAX];
        assert_eq!(format_seq(v, &mut buf), text);
    }
    for bad in [
        &b""[..],
        b"0",
        b"01",
        b"+1",
        b"-1",
        b" 1",
        b"1 ",
        b"1a",
        b"18446744073709551616",
        b"99999999999999999999",
        b"100000000000000000000",
    ] {
        assert_eq!(parse_seq(bad), Err(Error::BadSeq), "{bad:?}");
    }
}

#[test]
fn replay_window_accepts_new_and_late_once_and_refuses_old() {
    let mut w = ReplayWindow::new(0);
    assert_eq!(w.check(0), Err(Error::BadSeq));
    for s in [1, 3, 2, 100] {
        assert_eq!(w.check(s), Ok(()), "ok/{s}");
        w.accept(s);
    }
    assert_eq!(w.highest(), 100);
    assert_eq!(w.check(100), Err(Error::Replayed));
    assert_eq!(w.check(3), Err(Error::TooOld));
    assert_eq!(w.check(35), Err(Error::TooOld)); // 65 below
    assert_eq!(w.check(36), Ok(())); // 64 below, never accepted
    w.accept(36);
    assert_eq!(w.check(36), Err(Error::Replayed));
    assert_eq!(w.check(99), Ok(()));
    w.accept(99);
    assert_eq!(w.check(99), Err(Error::Replayed));
    assert_eq!(w.check(101), Ok(()));
    // A jump of exactly 64 keeps the old highest at the window's far end.
    w.accept(164);
    assert_eq!(w.check(100), Err(Error::Replayed));
    assert_eq!(w.check(99), Err(Error::TooOld));
    assert_eq!(w.check(101), Ok(()));
    // A larger jump forgets everything below.
    w.accept(1000);
    assert_eq!(w.check(999), Ok(()));
    assert_eq!(w.check(936), Ok(()));
    assert_eq!(w.check(935), Err(Error::TooOld));
    assert_eq!(w.check(u64::MAX), Ok(()));
}

#[test]
fn replay_window_from_a_floor_refuses_everything_up_to_it() {
    let w = ReplayWindow::new(500);
    assert_eq!(w.check(500), Err(Error::Replayed));
    assert_eq!(w.check(499), Err(Error::Replayed));
    assert_eq!(w.check(436), Err(Error::Replayed));
    assert_eq!(w.check(435), Err(Error::TooOld));
    assert_eq!(w.check(501), Ok(()));
    let saved = ReplayWindow::from_parts(w.highest(), w.below());
    assert_eq!(saved, w);
    let mut fresh = ReplayWindow::new(0);
    fresh.accept(5);
    assert_eq!(
        fresh.check(4),
        Ok(()),
        "below the first reading, above the floor 0"
    );
}

#[test]
fn counter_uses_a_seq_only_after_persisting_a_limit() {
    let mut c = Counter::resume(0, 3);
    assert_eq!(c.next_seq(), Err(Error::PersistFirst));
    assert_eq!(c.to_persist(), Some(3));
    c.persisted(3);
    assert_eq!(c.to_persist(), None);
    assert_eq!(
        (c.next_seq(), c.next_seq(), c.next_seq()),
        (Ok(1), Ok(2), Ok(3))
    );
    assert_eq!(c.next_seq(), Err(Error::PersistFirst));
    assert_eq!(c.to_persist(), Some(6));
    c.persisted(6);
    assert_eq!(c.next_seq(), Ok(4));
    // A restart resumes after the persisted limit: 5 and 6 are skipped, never reused.
    let mut r = Counter::resume(6, 3);
    assert_eq!(r.next_seq(), Err(Error::PersistFirst));
    r.persisted(r.to_persist().expect("limit"));
    assert_eq!(r.next_seq(), Ok(7));
    // The end of the range.
    let mut e = Counter::resume(u64::MAX - 1, 10);
    assert_eq!(e.to_persist(), Some(u64::MAX));
    e.persisted(u64::MAX);
    assert_eq!(e.next_seq(), Ok(u64::MAX));
    assert_eq!(e.next_seq(), Err(Error::CounterExhausted));
    assert_eq!(e.to_persist(), None);
}

#[test]
fn sensor_keys_give_what_the_free_functions_give() {
    let k = keys();
    let sk = SensorKeys::from_derived(&k);
    let p = br#"{"t":21.5}"#;
    let tag = sk.publish_mac(ID, 1, TOPIC, p).expect("mac");
    assert_eq!(&encode_b64url(&tag), MAC_PROP.as_bytes());
    assert_eq!(sk.verify_mac(ID, 1, TOPIC, p, &tag), Ok(()));
    assert_eq!(sk.verify_mac(ID, 2, TOPIC, p, &tag), Err(Error::BadMac));
    let mut scratch = [0u8; AAD_STACK_LEN];
    let mut buf = [0u8; 26];
    buf[..10].copy_from_slice(br#"{"t":21.6}"#);
    let n = sk
        .seal_in_place(ID, 2, TOPIC, &mut buf, 10, &mut scratch)
        .expect("seal");
    assert_eq!(hex::encode(&buf[..n]), SEALED);
    assert_eq!(
        sk.open_in_place(ID, 2, TOPIC, &mut buf, &mut scratch),
        Ok(10)
    );
    let mut again = [0u8; 26];
    again.copy_from_slice(&hex::decode(SEALED).expect("hex"));
    assert_eq!(
        sk.open_in_place(ID, 3, TOPIC, &mut again, &mut scratch),
        Err(Error::BadSeal)
    );
}
