//! Handshakes that never finish and floods of replayed ClientHellos: a stalled DEVID-1
//! handshake is closed at `auth_timeout` without touching the authenticated connection of the
//! same ClientID, and ClientHellos are rate-limited per source address before any public-key
//! work. Every connection stays on the loopback interface (sources 127.0.x.y, broker on
//! 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devid_e2e::devid_device::connection::Authenticator;
use devid_e2e::devid_device::mqtt::{decode, Connect, Packet, Properties, Property, ReasonCode};
use devid_e2e::devid_device::Event;
use devid_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const NAME: &str = "mqtt.test.local";
const AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Mosquitto runs TICK at least this often.
const TICK: Duration = Duration::from_millis(100);
/// Scheduling slack for 300 client tasks on a shared machine.
const SLACK: Duration = Duration::from_millis(400);
const RATE: u32 = 5;
const BURST: u32 = 20;
const PER_ADDRESS: usize = 40;
const STALLED: usize = 300;
const FLOOD_FOR: Duration = Duration::from_millis(1500);

/// CONNECT with keep-alive 0 (so Mosquitto's own keep-alive check never fires) and the
/// ClientHello as Authentication Data.
fn connect_packet(client_id: &str, hello: &[u8]) -> Vec<u8> {
    Packet::Connect(Connect {
        client_id: client_id.into(),
        clean_start: true,
        keep_alive: 0,
        properties: Properties(vec![
            Property::AuthenticationMethod("DEVID-1".into()),
            Property::AuthenticationData(hello.to_vec()),
        ]),
        will: None,
        username: None,
        password: None,
    })
    .to_bytes()
    .expect("encode CONNECT")
}

async fn read_packet(s: &mut TcpStream, timeout: Duration) -> Option<Packet> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(d)) = decode(&buf, 1 << 20) {
            return Some(d.packet);
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Opens a connection from `source`, sends `connect` and returns the stream with the broker's
/// first answer.
async fn hello_from(source: Ipv4Addr, broker: SocketAddr, connect: &[u8]) -> (TcpStream, Packet) {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind a loopback source");
    let mut s = sock.connect(broker).await.expect("connect");
    s.write_all(connect).await.expect("send CONNECT");
    let p = read_packet(&mut s, Duration::from_secs(10))
        .await
        .expect("an answer to CONNECT");
    (s, p)
}

fn is_server_hello(p: &Packet) -> bool {
    matches!(p, Packet::Auth(a) if a.reason == ReasonCode::CONTINUE_AUTHENTICATION)
}

/// Waits (at most `limit`) until the broker closes the connection; the stalled side never sends
/// anything again. Returns when it was closed, or None if it is still open.
async fn closed_at(mut s: TcpStream, limit: Duration) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            // The DISCONNECT 0x98 before the end of stream.
            Ok(Ok(_)) => {}
        }
    }
}

/// The public-key operations the broker reported in its last line about closed handshakes.
fn last_reported_pk_ops(log: &str) -> Option<u64> {
    let marker = "public-key operations since start: ";
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_closed_and_client_hello_floods_are_rate_limited() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.hello_rate = (RATE, BURST);
    settings.extra.extend([
        format!("plugin_opt_auth_timeout {}", AUTH_TIMEOUT.as_secs()),
        format!("plugin_opt_max_pending_per_address {PER_ADDRESS}"),
    ]);
    let broker = Broker::start(settings);
    let broker_addr: SocketAddr = broker.addr().parse().expect("addr");
    let root = service.root_der();
    let dev = service.register_device("hw-guard").await;
    let cid = dev.client_id.clone();
    // A device certificate is public: anyone can replay a ClientHello carrying it.
    let hello = authenticator(&dev, &root, Tamper::None)
        .start()
        .expect("ClientHello");
    let connect_bytes = Arc::new(connect_packet(&cid, &hello));

    // 300 stalled handshakes with the device's ClientID, 20 per source address (within the
    // burst and the per-address bound), opened 50 at a time.
    let opening = Arc::new(tokio::sync::Semaphore::new(50));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(STALLED);
    let mut stalled = tokio::task::JoinSet::new();
    for i in 0..STALLED {
        let source = Ipv4Addr::new(127, 0, 1, 1 + (i / 20) as u8);
        let (opening, opened_tx, connect_bytes) =
            (opening.clone(), opened_tx.clone(), connect_bytes.clone());
        stalled.spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let (s, answer) = hello_from(source, broker_addr, &connect_bytes).await;
            let server_hello_at = Instant::now();
            drop(permit);
            assert!(is_server_hello(&answer), "stalled #{i}: {answer:?}");
            let _ = opened_tx.send(()).await;
            let closed = closed_at(s, AUTH_TIMEOUT + Duration::from_secs(3)).await;
            (server_hello_at, closed)
        });
    }
    drop(opened_tx);
    for _ in 0..STALLED {
        opened_rx
            .recv()
            .await
            .expect("every stalled handshake got its ServerHello");
    }

    // A flood of the same ClientHello from one address while they are pending; the ones
    // answered with a ServerHello stall as well.
    let flood_bytes = connect_bytes.clone();
    let flood = tokio::spawn(async move {
        let source = Ipv4Addr::new(127, 0, 2, 1);
        let started = Instant::now();
        let (mut attempts, mut refused) = (0u32, 0u32);
        let mut answered = Vec::new();
        while started.elapsed() < FLOOD_FOR {
            attempts += 1;
            let (s, answer) = hello_from(source, broker_addr, &flood_bytes).await;
            match answer {
                p if is_server_hello(&p) => answered.push(s),
                Packet::ConnAck(c) if c.reason == ReasonCode::NOT_AUTHORIZED => refused += 1,
                other => panic!("flood: unexpected answer {other:?}"),
            }
        }
        (attempts, refused, answered, started.elapsed())
    });

    // The good device connects promptly meanwhile.
    let t = Instant::now();
    let mut good = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("the good device is admitted during the attack");
    let connect_time = t.elapsed();
    eprintln!("good device connected in {connect_time:?}");
    assert!(
        connect_time < Duration::from_secs(2),
        "slow connect: {connect_time:?}"
    );

    let (attempts, refused, answered, flood_time) = flood.await.expect("flood task");
    let accepted = answered.len() as u32;
    eprintln!(
        "flood: {attempts} ClientHellos in {flood_time:?}, {accepted} answered, {refused} refused"
    );
    assert!(attempts >= 100, "not much of a flood: {attempts}");
    assert_eq!(accepted + refused, attempts);
    let allowed = BURST + (RATE as f64 * flood_time.as_secs_f64()).ceil() as u32;
    assert!(
        accepted <= allowed,
        "{accepted} ClientHellos got public-key work, the rate allows {allowed}"
    );

    // Every stalled handshake is closed within auth_timeout plus one tick.
    let mut worst = Duration::ZERO;
    let mut open = 0;
    while let Some(r) = stalled.join_next().await {
        let (server_hello_at, closed) = r.expect("stalled task");
        match closed {
            None => open += 1,
            Some(at) => {
                let d = at.duration_since(server_hello_at);
                assert!(
                    d + Duration::from_millis(500) >= AUTH_TIMEOUT,
                    "closed early: {d:?}"
                );
                worst = worst.max(d);
            }
        }
    }
    eprintln!("stalled handshakes closed after at most {worst:?}");
    assert_eq!(open, 0, "{open} stalled handshakes still open");
    assert!(
        worst <= AUTH_TIMEOUT + TICK + SLACK,
        "a stalled handshake was closed only after {worst:?}"
    );
    for s in answered {
        assert!(
            closed_at(s, AUTH_TIMEOUT + Duration::from_secs(3))
                .await
                .is_some(),
            "a flood connection is still open"
        );
    }

    // The broker's public-key work: three operations (key generation, ECDH, signature) per
    // ServerHello sent, a few for the certificate path (verified once, then cached) and the
    // good device's handshake; none for a refused ClientHello.
    let mut pk = None;
    eventually(Duration::from_secs(2), || {
        pk = last_reported_pk_ops(&broker.log());
        pk.is_some()
    })
    .await;
    let pk = pk.expect("the broker reports its public-key operations");
    let bound = 3 * (STALLED as u64 + u64::from(accepted) + 1) + 10;
    eprintln!("broker public-key operations: {pk} (bound {bound})");
    assert!(
        pk <= bound,
        "{pk} public-key operations, at most {bound} expected"
    );
    let log = broker.log();
    assert!(log.contains("authentication timed out"));
    assert!(log.contains("ClientHello rate from 127.0.2.1"));

    // The authenticated connection of the same ClientID was never touched: it still works, and
    // the broker can still find it to kick it on revocation.
    assert!(good
        .publish(&format!("devices/{cid}/still-here"), b"1")
        .await
        .is_success());
    service.revoke(&cid).await;
    match good.event(Duration::from_secs(2)).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("revoked device not disconnected within 2 s: {other:?}\n{log}"),
    }
}

/// Mosquitto 2.0.11 removes a ClientID from its index whenever a connection carrying it ends,
/// even one that never authenticated; the plugin blanks that ClientID first. Without that, a
/// replayed ClientHello followed by a hang-up would leave the device's live connection out of
/// the index, so its revocation could no longer kick it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_handshake_leaves_the_live_connection_of_its_client_id_kickable() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let broker_addr: SocketAddr = broker.addr().parse().expect("addr");
    let root = service.root_der();
    let dev = service.register_device("hw-abandon").await;
    let cid = dev.client_id.clone();
    let mut good = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    let hello = authenticator(&dev, &root, Tamper::None)
        .start()
        .expect("ClientHello");
    for _ in 0..3 {
        let (s, answer) = hello_from(
            Ipv4Addr::new(127, 0, 3, 1),
            broker_addr,
            &connect_packet(&cid, &hello),
        )
        .await;
        assert!(is_server_hello(&answer), "{answer:?}");
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(good
        .publish(&format!("devices/{cid}/still-here"), b"1")
        .await
        .is_success());
    service.revoke(&cid).await;
    match good.event(Duration::from_secs(2)).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!(
            "revoked device not disconnected within 2 s: {other:?}\n{}",
            broker.log()
        ),
    }
}
