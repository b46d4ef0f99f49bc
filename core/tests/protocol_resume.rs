//! DEVID-1 resumption and tickets, both halves in memory.
#![allow(clippy::unwrap_used)]

mod protocol_support;

use std::sync::Arc;

use devid_core::protocol::*;
use protocol_support::*;
use ring::rand::SystemRandom;

fn first_session(env: &Env) -> (ClientSession, ServerSession) {
    Run::new(env).go().unwrap()
}

fn no_tamper() -> impl FnMut(usize, &mut Vec<u8>) {
    |_, _| {}
}

#[test]
fn ok_resumption_agrees_on_fresh_keys_and_chains() {
    let env = Env::new();
    let (c0, s0) = first_session(&env);
    let t0 = c0.ticket.as_ref().unwrap();
    let (c1, s1) = resume(&env.server, CLIENT_ID, t0, now(), &mut no_tamper()).unwrap();
    assert_eq!(c1.keys, s1.keys);
    assert!(c1.resumed && s1.resumed);
    assert_ne!(c1.keys.k_c2s, c0.keys.k_c2s);
    assert_ne!(c1.keys.resumption_secret, c0.keys.resumption_secret);
    assert_eq!(s1.client_id, CLIENT_ID);
    assert_eq!(s1.cert_serial, s0.cert_serial);
    // The new ticket resumes again.
    let t1 = c1.ticket.as_ref().unwrap();
    assert_eq!(t1.resumption_secret, c1.keys.resumption_secret);
    let (c2, s2) = resume(&env.server, CLIENT_ID, t1, now(), &mut no_tamper()).unwrap();
    assert_eq!(c2.keys, s2.keys);
}

#[test]
fn ok_pending_resume_shows_ticket_before_any_mac() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let (_, rh) = ClientResume::start(c0.ticket.as_ref().unwrap(), &SystemRandom::new()).unwrap();
    let p = ServerHandshake::read_resume_hello(&env.server, CLIENT_ID, &rh, now()).unwrap();
    let t = p.ticket();
    assert_eq!(t.client_id, CLIENT_ID);
    assert_eq!(t.cert_serial, "8a010203040506");
    assert_eq!(t.issued, NOW);
    assert_eq!(t.expires, NOW + u64::from(DEFAULT_TICKET_LIFETIME));
    assert_eq!(t.resumption_secret, c0.keys.resumption_secret);
}

#[test]
fn fail_every_flipped_byte_of_every_resumption_message() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let t0 = c0.ticket.unwrap();
    for step in 0..4 {
        let mut len = 0;
        resume(&env.server, CLIENT_ID, &t0, now(), &mut |s, m| {
            if s == step {
                len = m.len()
            }
        })
        .unwrap();
        for i in 0..len {
            let r = resume(&env.server, CLIENT_ID, &t0, now(), &mut |s, m| {
                if s == step {
                    m[i] ^= 0x01;
                }
            });
            assert!(r.is_err(), "step {step} byte {i} flip accepted");
        }
    }
}

#[test]
fn fail_every_truncation_and_trailing_byte() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let t0 = c0.ticket.unwrap();
    for step in 0..4 {
        let mut len = 0;
        resume(&env.server, CLIENT_ID, &t0, now(), &mut |s, m| {
            if s == step {
                len = m.len()
            }
        })
        .unwrap();
        for cut in 0..len {
            let r = resume(&env.server, CLIENT_ID, &t0, now(), &mut |s, m| {
                if s == step {
                    m.truncate(cut)
                }
            });
            assert!(
                matches!(r.unwrap_err().error(), Error::Decode(_)),
                "step {step} cut {cut}"
            );
        }
        let r = resume(&env.server, CLIENT_ID, &t0, now(), &mut |s, m| {
            if s == step {
                m.push(0)
            }
        });
        assert_eq!(
            r.unwrap_err().error(),
            &Error::Decode(DecodeError::TrailingBytes),
            "step {step}"
        );
    }
}

#[test]
fn fail_bad_proof_and_bad_finish_mac() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let t0 = c0.ticket.unwrap();
    let r = resume(&env.server, CLIENT_ID, &t0, now(), &mut |s, m| {
        if s == 2 {
            m[5] ^= 1
        }
    });
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::BadMac));
    let r = resume(&env.server, CLIENT_ID, &t0, now(), &mut |s, m| {
        if s == 3 {
            let n = m.len();
            m[n - 1] ^= 1
        }
    });
    assert_eq!(r.unwrap_err(), Refusal::Device(Error::BadMac));
    // A device that lost the right resumption secret cannot prove.
    let mut forged = t0.clone();
    forged.resumption_secret[0] ^= 1;
    let r = resume(&env.server, CLIENT_ID, &forged, now(), &mut no_tamper());
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::BadMac));
}

#[test]
fn fail_expired_ticket() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let t0 = c0.ticket.unwrap();
    let end = NOW + u64::from(DEFAULT_TICKET_LIFETIME);
    assert!(resume(&env.server, CLIENT_ID, &t0, at(end - 1), &mut no_tamper()).is_ok());
    let r = resume(&env.server, CLIENT_ID, &t0, at(end), &mut no_tamper());
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::TicketExpired));
    let r = resume(&env.server, CLIENT_ID, &t0, at(NOW - 1), &mut no_tamper());
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::TicketExpired));
    assert!(!t0.is_usable(at(end)) && t0.is_usable(at(end - 1)));
}

#[test]
fn ok_ticket_lifetime_never_outlives_the_certificate() {
    let env = Env::new();
    let mut leaf = Leaf::device(CLIENT_ID);
    leaf.not_after = NOW + 100;
    let client = env.device(&leaf);
    let (c, _) = Run::with(&client, &env.server).go().unwrap();
    assert_eq!(c.ticket.as_ref().unwrap().lifetime, 100);
    let r = resume(
        &env.server,
        CLIENT_ID,
        c.ticket.as_ref().unwrap(),
        at(NOW + 100),
        &mut no_tamper(),
    );
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::TicketExpired));
}

#[test]
fn fail_other_client_id() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let r = resume(
        &env.server,
        "SOMEONEELSE",
        c0.ticket.as_ref().unwrap(),
        now(),
        &mut no_tamper(),
    );
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::ClientIdMismatch));
    let r = resume(
        &env.server,
        "",
        c0.ticket.as_ref().unwrap(),
        now(),
        &mut no_tamper(),
    );
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::EmptyClientId));
}

fn broker_with_keys(env: &Env, keys: TicketKeys) -> Arc<ServerConfig> {
    let (chain, key) = env.pki.issue(&Leaf::broker(BROKER_NAME));
    Arc::new(
        ServerConfig::new(&env.pki.root_der(), chain, signer(&key))
            .unwrap()
            .with_ticket_keys(keys, 3600),
    )
}

#[test]
fn fail_ticket_of_another_cluster_ok_under_previous_key() {
    let env = Env::new();
    let (c0, _) = first_session(&env); // sealed under key id 7, [0x5a; 32]
    let t0 = c0.ticket.unwrap();
    // Another cluster: same id, other key.
    let other = broker_with_keys(&env, TicketKeys::new(TicketKey::new(7, &[0x11; 32])));
    let r = resume(&other, CLIENT_ID, &t0, now(), &mut no_tamper());
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::BadTicket));
    // Rotated: new current key 8, previous 7 still opens.
    let rotated = broker_with_keys(
        &env,
        TicketKeys::new(TicketKey::new(8, &[0x22; 32]))
            .with_previous(TicketKey::new(7, &[0x5a; 32])),
    );
    let (c1, _) = resume(&rotated, CLIENT_ID, &t0, now(), &mut no_tamper()).unwrap();
    // The new ticket is sealed under key 8: the old cluster no longer opens it.
    assert_eq!(
        &c1.ticket.as_ref().unwrap().ticket[..4],
        &8u32.to_be_bytes()
    );
    let r = resume(
        &env.server,
        CLIENT_ID,
        c1.ticket.as_ref().unwrap(),
        now(),
        &mut no_tamper(),
    );
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::BadTicket));
    // A broker without ticket keys refuses resumption.
    let (chain, key) = env.pki.issue(&Leaf::broker(BROKER_NAME));
    let none = Arc::new(ServerConfig::new(&env.pki.root_der(), chain, signer(&key)).unwrap());
    let r = resume(&none, CLIENT_ID, &t0, now(), &mut no_tamper());
    assert_eq!(r.unwrap_err(), Refusal::Broker(Error::BadTicket));
}

fn contents() -> TicketContents {
    TicketContents {
        client_id: CLIENT_ID.into(),
        cert_serial: "8a01".into(),
        resumption_secret: [9; 32],
        issued: NOW,
        expires: NOW + 10,
        cert_not_after: NOW + 20,
    }
}

#[test]
fn ok_ticket_seal_open_roundtrip_and_fail_on_any_change() {
    let keys = ticket_keys();
    let sealed = keys.seal(&contents(), &SystemRandom::new()).unwrap();
    assert_eq!(keys.open(&sealed).unwrap(), contents());
    for i in 0..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x40;
        assert_eq!(keys.open(&t).unwrap_err(), Error::BadTicket, "byte {i}");
    }
    for cut in 0..sealed.len() {
        assert_eq!(keys.open(&sealed[..cut]).unwrap_err(), Error::BadTicket);
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(keys.open(&longer).unwrap_err(), Error::BadTicket);
}

#[test]
fn fail_sealing_ill_formed_contents_is_refused_on_open() {
    // Authentic tickets with bad contents are refused by the strict parser.
    let keys = ticket_keys();
    let rng = SystemRandom::new();
    let edits: [fn(&mut TicketContents); 6] = [
        |c| c.client_id = "".into(),
        |c| c.client_id = "a/b".into(),
        |c| c.cert_serial = "8A01".into(),
        |c| c.cert_serial = "".into(),
        |c| c.expires = NOW - 1,
        |c| c.cert_not_after = NOW + 5,
    ];
    let bad = edits.map(|edit| {
        let mut c = contents();
        edit(&mut c);
        c
    });
    for c in bad {
        let sealed = keys.seal(&c, &rng).unwrap();
        assert_eq!(keys.open(&sealed).unwrap_err(), Error::BadTicket, "{c:?}");
    }
}

#[test]
fn ok_ticket_key_file_parsing() {
    let text = format!(
        "# cluster keys\n2 {}\n\n1 {}\n",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    let keys = TicketKeys::parse(&text).unwrap();
    assert_eq!(keys.current_id(), 2);
    let old = TicketKeys::new(TicketKey::new(1, &[0xcd; 32]));
    let sealed = old.seal(&contents(), &SystemRandom::new()).unwrap();
    assert_eq!(keys.open(&sealed).unwrap(), contents());
    for bad in [
        "",
        "# only a comment\n",
        "1\n",
        "x 00\n",
        &format!("1 {}\n", "ab".repeat(31)),
        &format!("1 {}\n1 {}\n", "ab".repeat(32), "cd".repeat(32)),
        &format!("1 {} extra\n", "ab".repeat(32)),
    ] {
        assert!(TicketKeys::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn ok_stored_ticket_roundtrip_and_strict_parse() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let t0 = c0.ticket.unwrap();
    let bytes = t0.to_bytes();
    assert_eq!(ResumptionTicket::from_bytes(&bytes).unwrap(), t0);
    for cut in 0..bytes.len() {
        assert!(ResumptionTicket::from_bytes(&bytes[..cut]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(1);
    assert!(ResumptionTicket::from_bytes(&longer).is_err());
    let mut v2 = bytes;
    v2[0] = 2;
    assert!(ResumptionTicket::from_bytes(&v2).is_err());
}

#[test]
fn fail_resume_messages_out_of_order_and_bad_version() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let rng = SystemRandom::new();
    let (dev, rh) = ClientResume::start(c0.ticket.as_ref().unwrap(), &rng).unwrap();
    let mut v2 = rh.clone();
    v2[1] = 2;
    let e = ServerHandshake::start(&env.server, CLIENT_ID, &v2, now())
        .err()
        .unwrap();
    assert_eq!(e, Error::UnsupportedVersion(2));
    assert_eq!(e.reason_code(), 0x8C);
    let ServerStart::Resume(p) =
        ServerHandshake::start(&env.server, CLIENT_ID, &rh, now()).unwrap()
    else {
        panic!("not a resumption")
    };
    let (brk, chal) = p.accept(&rng).unwrap();
    // The broker awaits a ResumeProof: a replayed ResumeHello is refused.
    let e = brk.handle(&rh, now(), &rng).err().unwrap();
    assert!(
        matches!(e, Error::UnexpectedMessage { got: 0x11, .. }),
        "{e:?}"
    );
    // The device awaits the challenge: a ResumeFinish-shaped message is refused.
    let mut fake = vec![0x14];
    fake.extend_from_slice(&chal[1..]);
    let e = dev.handle(&fake).err().unwrap();
    assert!(
        matches!(e, Error::UnexpectedMessage { got: 0x14, .. }),
        "{e:?}"
    );
}

#[test]
fn fail_resume_after_timeout() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let rng = SystemRandom::new();
    let (dev, rh) = ClientResume::start(c0.ticket.as_ref().unwrap(), &rng).unwrap();
    let p = ServerHandshake::read_resume_hello(&env.server, CLIENT_ID, &rh, now()).unwrap();
    let (brk, chal) = p.accept(&rng).unwrap();
    let (_, proof) = dev.handle(&chal).unwrap();
    let e = brk
        .handle(&proof, at(NOW + DEFAULT_TIMEOUT_SECS + 1), &rng)
        .err()
        .unwrap();
    assert_eq!(e, Error::Timeout);
}

#[test]
fn ok_reauthentication_by_resumption_yields_new_keys() {
    // AUTH 0x19 with a ResumeHello on a live connection: same states, finish in AUTH 0x00.
    let env = Env::new();
    let (c0, s0) = first_session(&env);
    let (c1, s1) = resume(
        &env.server,
        CLIENT_ID,
        c0.ticket.as_ref().unwrap(),
        now(),
        &mut no_tamper(),
    )
    .unwrap();
    assert_ne!(s0.keys.k_c2s, s1.keys.k_c2s);
    assert_eq!(c1.keys, s1.keys);
}

#[test]
fn only_a_client_hello_is_a_full_hello() {
    let env = Env::new();
    let (c0, _) = first_session(&env);
    let rng = SystemRandom::new();
    let (_, ch) = ClientHandshake::start(&env.client, &rng).unwrap();
    let (_, rh) = ClientResume::start(c0.ticket.as_ref().unwrap(), &rng).unwrap();
    assert!(ServerHandshake::is_full_hello(&ch));
    assert!(!ServerHandshake::is_full_hello(&rh));
    assert!(!ServerHandshake::is_full_hello(&[]));
    assert!(!ServerHandshake::is_full_hello(&[0x02, 0x01]));
}
