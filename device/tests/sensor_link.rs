//! The sensor link end to end in one process: simulated sensors write frames to a pty the
//! gateway side created (and to a Unix socket); the gateway side decodes them, drops garbage
//! and turns each reading into the PUBLISH it relays.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use devid_device::gateway::{message_for, IndexTable};
use devid_device::link::{listen, LinkEvent, LinkSpec, LinkWriter};
use devid_device::mqtt::QoS;
use devid_device::sensor_sim::{CounterFile, FrameOptions, SensorSim};
use tokio::sync::mpsc;

fn sim(dir: &Path, id: &str, key: u8) -> SensorSim {
    let counter = CounterFile::open(&dir.join(format!("{id}.counter")), 8).expect("counter");
    SensorSim::new(id, &[key; 32], counter).expect("sim")
}

fn opts(seal: bool, index: Option<u8>) -> FrameOptions {
    FrameOptions {
        index,
        destination: "temp".into(),
        full_topic: false,
        seal,
    }
}

async fn next(rx: &mut mpsc::Receiver<LinkEvent>) -> LinkEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("link open")
}

#[tokio::test]
async fn two_sensors_on_one_pty_with_noise_between_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttyS1");
    let (tx, mut rx) = mpsc::channel(64);
    let listening = listen(&LinkSpec::Pty { link: link.clone() }, tx)
        .await
        .expect("pty");
    assert!(listening
        .pty_path
        .as_ref()
        .is_some_and(|p| p.starts_with("/dev/pts")));
    let spec = LinkSpec::Serial {
        path: link.clone(),
        baud: None,
    };
    let mut a = sim(dir.path(), "SENSORA1", 1);
    let mut b = sim(dir.path(), "SENSORB2", 2);
    let mut wa = LinkWriter::open(&spec).expect("writer a");
    let mut wb = LinkWriter::open(&spec).expect("writer b");
    let fa = a.frame(b"21.5", &opts(false, None)).expect("frame");
    let fb = b
        .frame(b"\n\r\x00\x11\x13", &opts(true, Some(2)))
        .expect("frame");
    wa.write_frame(&fa.wire).expect("write");
    // Noise with bytes a terminal would translate or act on (newline, ^C, ^S, ^Q).
    wb.write_frame(b"\x03\x13\x11\n\r\xff\x7f garbage")
        .expect("noise");
    wb.write_frame(&[0]).expect("delimiter");
    wb.write_frame(&fb.wire).expect("write");

    let mut table = IndexTable::new();
    table.add("2=SENSORB2").expect("index");
    let mut readings = Vec::new();
    let mut dropped = 0;
    while readings.len() < 2 {
        match next(&mut rx).await {
            LinkEvent::Reading(r) => readings.push(r),
            LinkEvent::Dropped(_) => dropped += 1,
            LinkEvent::Closed(why) => panic!("closed: {why}"),
        }
    }
    assert_eq!(dropped, 1, "the noise is one dropped frame");
    let a_msg = message_for(&readings[0], &table, QoS::AtLeastOnce).expect("a");
    assert_eq!(a_msg.topic, "devices/SENSORA1/temp");
    assert_eq!(a_msg.payload, b"21.5");
    assert_eq!(a_msg.user_properties[0].1, "SENSORA1");
    let b_msg = message_for(&readings[1], &table, QoS::AtLeastOnce).expect("b");
    assert_eq!(b_msg.topic, "devices/SENSORB2/temp");
    assert_eq!(b_msg.payload.len(), 5 + 16, "sealed bytes passed unchanged");
    assert_eq!(
        b_msg.user_properties[2],
        ("devid-sensor-seal".to_owned(), "1".to_owned())
    );
    // The pty stays usable after a sensor closes its end and another opens it.
    drop((wa, wb));
    let mut wa = LinkWriter::open(&spec).expect("writer again");
    let f2 = a.frame(b"21.6", &opts(false, None)).expect("frame");
    assert_eq!(f2.seq, fa.seq + 1);
    wa.write_frame(&f2.wire).expect("write");
    match next(&mut rx).await {
        LinkEvent::Reading(r) => assert_eq!(r.seq, f2.seq),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sensors_on_a_unix_socket_each_have_their_own_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("link.sock");
    let (tx, mut rx) = mpsc::channel(64);
    let _listening = listen(&LinkSpec::Socket { path: path.clone() }, tx)
        .await
        .expect("socket");
    let spec = LinkSpec::Socket { path };
    let mut a = sim(dir.path(), "SENSORA1", 1);
    let mut wa = LinkWriter::open(&spec).expect("a");
    let mut wb = LinkWriter::open(&spec).expect("b");
    let f = a.frame(b"1", &opts(false, None)).expect("frame");
    // Half a frame on one connection does not disturb a whole frame on the other.
    wb.write_frame(&f.wire[..10]).expect("half");
    wa.write_frame(&f.wire).expect("whole");
    match next(&mut rx).await {
        LinkEvent::Reading(r) => assert_eq!(r.seq, f.seq),
        other => panic!("{other:?}"),
    }
    drop(wb);
    assert!(matches!(next(&mut rx).await, LinkEvent::Closed(_)));
    let mut raw =
        std::os::unix::net::UnixStream::connect(dir.path().join("link.sock")).expect("connect");
    raw.write_all(&f.wire).expect("replayed bytes");
    // The gateway relays a replay as is: refusing it is the broker's job.
    match next(&mut rx).await {
        LinkEvent::Reading(r) => assert_eq!(r.seq, f.seq),
        other => panic!("{other:?}"),
    }
}
