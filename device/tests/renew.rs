//! devid-agent keeps its LDevID fresh: the real binary against a small EST server (RFC 7030
//! paths over TLS with client certificates, certs-only answers, LDevIDs valid for seconds) and a
//! real Mosquitto that admits only LDevIDs (its client CA is the LDevID CA alone, as a model with
//! `connect_with = ldevid` would), so every connection the broker accepts proves which
//! certificate the agent used.
#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pki::{client_id, Pki};
use common::Mosquitto;
use devid_device::renew::der::{seq, tlv};
use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const AGENT: &str = env!("CARGO_BIN_EXE_devid-agent");
/// Lifetime of the LDevIDs the EST server issues.
const VALIDITY_SECS: i64 = 9;

/// A request's path and the TLS client certificate's leaf.
type Request = (String, Option<Vec<u8>>);

/// What the EST server saw: path, the TLS client certificate's leaf and the CSR's public key;
/// and whether it answers (`hang`: it reads the request and never answers).
#[derive(Default, Clone)]
struct Seen {
    requests: Arc<Mutex<Vec<Request>>>,
    csr_keys: Arc<Mutex<Vec<Vec<u8>>>>,
    hang: Arc<std::sync::atomic::AtomicBool>,
}

/// A certs-only SignedData (RFC 5652 degenerate form) holding `certs`.
fn certs_only(certs: &[&[u8]]) -> Vec<u8> {
    let signed_data_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    let data_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    let sd = seq(&[
        &tlv(0x02, &[1]),
        &tlv(0x31, &[]),
        &seq(&[&tlv(0x06, &data_oid)]),
        &tlv(0xa0, &certs.concat()),
        &tlv(0x31, &[]),
    ]);
    seq(&[&tlv(0x06, &signed_data_oid), &tlv(0xa0, &sd)])
}

/// An EST server on `listener`: TLS with the given server identity, client certificates
/// requested (chained to `client_roots`) not required, LDevIDs issued by `ca`.
async fn est_server(
    listener: TcpListener,
    server_chain: Vec<Vec<u8>>,
    server_key: Vec<u8>,
    client_roots: Vec<Vec<u8>>,
    ca: Arc<Pki>,
    seen: Seen,
) {
    let mut roots = rustls::RootCertStore::empty();
    for r in client_roots {
        roots.add(CertificateDer::from(r)).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            server_chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key)),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, ca, seen) = (acceptor.clone(), ca.clone(), seen.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            let (path, body) = read_request(&mut tls).await;
            seen.requests
                .lock()
                .unwrap()
                .push((path.clone(), peer.clone()));
            if let Some(k) = csr_key(&body) {
                seen.csr_keys.lock().unwrap().push(k);
            }
            if seen.hang.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
            }
            let (status, ctype, answer) = answer(&path, &body, peer, &ca);
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            let _ = tls.write_all(head.as_bytes()).await;
            let _ = tls.write_all(&answer).await;
            let _ = tls.shutdown().await;
        });
    }
}

fn csr_key(body: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    use x509_parser::prelude::FromDer;
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(clean)
        .ok()?;
    let (_, r) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).ok()?;
    Some(
        r.certification_request_info
            .subject_pki
            .subject_public_key
            .data
            .to_vec(),
    )
}

async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await.unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.unwrap();
    (path, body)
}

fn answer(
    path: &str,
    body: &[u8],
    peer: Option<Vec<u8>>,
    ca: &Pki,
) -> (&'static str, &'static str, Vec<u8>) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let enroll = path.ends_with("/simpleenroll") || path.ends_with("/simplereenroll");
    if !enroll || !path.starts_with("/.well-known/est/") {
        return (
            "404 Not Found",
            "text/plain",
            b"no such EST operation".to_vec(),
        );
    }
    let Some(peer) = peer else {
        return (
            "401 Unauthorized",
            "text/plain",
            b"a client certificate is required".to_vec(),
        );
    };
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let csr = b64.decode(clean).unwrap();
    // The subject must be the authenticating certificate's (RFC 7030 4.2.2).
    {
        use x509_parser::prelude::FromDer;
        let (_, p) = x509_parser::parse_x509_certificate(&peer).unwrap();
        let (_, r) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr).unwrap();
        if r.certification_request_info.subject.as_raw() != p.subject().as_raw() {
            return (
                "400 Bad Request",
                "text/plain",
                b"the subject differs".to_vec(),
            );
        }
    }
    let mut req = CertificateSigningRequestParams::from_der(&csr.into()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    req.params.not_before = now - time::Duration::seconds(1);
    req.params.not_after = now + time::Duration::seconds(VALIDITY_SECS);
    req.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    req.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial).unwrap();
    serial[0] = (serial[0] & 0x7f) | 1;
    req.params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = req.signed_by(&ca.root).unwrap();
    let p7 = certs_only(&[cert.der().as_ref(), ca.root.der().as_ref()]);
    (
        "200 OK",
        "application/pkcs7-mime; smime-type=certs-only",
        b64.encode(p7).into_bytes(),
    )
}

async fn next_json<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("agent output in time")
        .unwrap()
        .expect("agent running");
    serde_json::from_str(&line).unwrap_or(Value::String(line))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The serial of the certificate file's leaf (lowercase hex).
fn file_serial(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let der = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .map(|c: Result<CertificateDer<'static>, _>| c.unwrap())
        .unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    hex::encode(c.raw_serial())
        .trim_start_matches("00")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_enrolls_with_its_idevid_renews_when_due_and_connects_with_each_new_ldevid() {
    common::install_ring();
    let dir = tempfile::tempdir().unwrap();
    // Birth PKI (IDevID, broker and EST server certificates) and the LDevID CA, apart.
    let birth = Pki::new("birth root");
    let ldevid_ca = Arc::new(Pki::new("ldevid root"));
    let root = birth.write_root(dir.path());
    let b = birth.broker(dir.path(), "mqtt.test");
    let ldevid_root = dir.path().join("ldevid-root.pem");
    std::fs::write(&ldevid_root, ldevid_ca.root.pem()).unwrap();
    let idevid = birth.device(dir.path(), &client_id("agt"));

    // The broker admits LDevIDs only.
    let tls_port = common::free_port();
    let m = Mosquitto::start(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         use_identity_as_username true\nset_tcp_nodelay true\n",
        ldevid_root.display(),
        b.cert.display(),
        b.key.display()
    ));
    m.wait_listening(tls_port);

    // The EST server is down when the agent starts: it backs off, then enrolls.
    let est_port = common::free_port();
    let seen = Seen::default();
    let ldir = dir.path().join("ldevid");
    let hook_log = dir.path().join("hook.log");
    let mut agent = tokio::process::Command::new(AGENT)
        .args(["connect", "--stay", "--json", "--mtls", "--broker"])
        .arg(format!("127.0.0.1:{tls_port}"))
        .args([
            "--cert",
            &p(&idevid.cert),
            "--key",
            &p(&idevid.key),
            "--root",
            &p(&root),
        ])
        .args(["--broker-name", "mqtt.test", "--renew", "est", "--est-url"])
        .arg(format!("https://127.0.0.1:{est_port}"))
        .args([
            "--ldevid-dir",
            &p(&ldir),
            "--retry-min",
            "1s",
            "--retry-max",
            "2s",
            "--enroll-jitter",
            "1s",
        ])
        .arg("--exec")
        .arg(format!(
            "test -s \"$DEVID_CERT\" && test -s \"$DEVID_KEY\" && echo \"$DEVID_SERIAL\" >> {}",
            hook_log.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    let mut events: Vec<Value> = Vec::new();
    let first = next_json(&mut lines).await;
    assert_eq!(first["event"], "renew_failed", "{first}");
    assert_eq!(first["outcome"], "Unreachable", "{first}");
    assert!(!ldir.join("ldevid.crt").exists());

    let listener = TcpListener::bind(("127.0.0.1", est_port)).await.unwrap();
    let server = tokio::spawn(est_server(
        listener,
        b.chain_der.clone(),
        b.key_pkcs8.clone(),
        vec![birth.root_der(), ldevid_ca.root_der()],
        ldevid_ca.clone(),
        seen.clone(),
    ));

    // Enroll, connect, renew when due, reconnect: twice renewed after the enrollment.
    let mut renewed = Vec::new();
    let mut connects_after = Vec::new();
    while connects_after.len() < 3 {
        let ev = next_json(&mut lines).await;
        events.push(ev.clone());
        match ev["event"].as_str() {
            Some("renewed") => renewed.push(ev["serial"].as_str().unwrap().to_owned()),
            Some("connected") => {
                // Each connection after a renewal: the pair on disk is the new one and the
                // old one is gone (it is kept only until the new one has connected).
                assert!(!renewed.is_empty(), "connected with the IDevID: {ev}");
                connects_after.push(file_serial(&ldir.join("ldevid.crt")));
                assert_eq!(connects_after.last(), renewed.last());
            }
            _ => {}
        }
    }
    // The last connection's confirmation removes the old pair.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ldir.join("ldevid.prev.key").exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.kill().await.unwrap();
    server.abort();

    assert_eq!(renewed.len(), 3, "{events:?}");
    assert_eq!(connects_after, renewed);
    let seen = seen.requests.lock().unwrap().clone();
    assert_eq!(seen[0].0, "/.well-known/est/simpleenroll");
    let idevid_der = idevid.chain_der[0].clone();
    assert_eq!(
        seen[0].1.as_ref(),
        Some(&idevid_der),
        "enrolled with the IDevID"
    );
    assert_eq!(seen[1].0, "/.well-known/est/simplereenroll");
    assert_ne!(
        seen[1].1.as_ref(),
        Some(&idevid_der),
        "re-enrolled with the LDevID"
    );
    // The hook ran once per new pair, in order, with the files in place.
    let hook: Vec<String> = std::fs::read_to_string(&hook_log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(hook, renewed);
    // Mosquitto saw one connection per LDevID and refused none.
    let log = m.log_text();
    assert!(
        log.matches(&format!("as {}", idevid.client_id)).count() >= 3,
        "{log}"
    );
    // The key files are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ldir.join("ldevid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!ldir.join("ldevid.prev.key").exists());
    assert!(!ldir.join("ldevid.next.key").exists());
}

/// The public key of a PKCS#8 PEM key file.
fn key_file_public(path: &Path) -> Vec<u8> {
    let k = devid_device::credentials::load_key(path).unwrap();
    devid_device::renew::csr::public_key(&k).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_made_before_the_agent_was_killed_is_the_key_of_the_retry() {
    common::install_ring();
    let dir = tempfile::tempdir().unwrap();
    let birth = Pki::new("birth root");
    let ldevid_ca = Arc::new(Pki::new("ldevid root"));
    let root = birth.write_root(dir.path());
    let b = birth.broker(dir.path(), "mqtt.test");
    let idevid = birth.device(dir.path(), &client_id("crs"));
    let seen = Seen::default();
    seen.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let est_port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(est_server(
        listener,
        b.chain_der.clone(),
        b.key_pkcs8.clone(),
        vec![birth.root_der(), ldevid_ca.root_der()],
        ldevid_ca.clone(),
        seen.clone(),
    ));
    let ldir = dir.path().join("ldevid");
    let renew = |force: bool| {
        let mut c = tokio::process::Command::new(AGENT);
        c.args(["renew", "--json", "--broker", "127.0.0.1:1"])
            .args([
                "--cert",
                &p(&idevid.cert),
                "--key",
                &p(&idevid.key),
                "--root",
                &p(&root),
            ])
            .args(["--renew", "est", "--est-url"])
            .arg(format!("https://127.0.0.1:{est_port}"))
            .args(["--ldevid-dir", &p(&ldir), "--retry-min", "1s"])
            .args(["--enroll-jitter", "1s"])
            .kill_on_drop(true);
        if force {
            c.arg("--force");
        }
        c
    };
    // The server takes the CSR and never answers; the agent is killed while it waits.
    let mut first = renew(false).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.csr_keys.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no CSR reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let pending = ldir.join("ldevid.next.key");
    assert!(pending.exists(), "the key was on disk before its CSR left");
    let made = key_file_public(&pending);
    assert_eq!(seen.csr_keys.lock().unwrap()[0], made);
    assert!(!ldir.join("ldevid.crt").exists());

    // The next run asks again with the same key, and installs the answer for it.
    seen.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = renew(true).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"event\":\"renewed\""), "{stdout}");
    let keys = seen.csr_keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1], made, "the retry used the key made before the kill");
    assert_eq!(key_file_public(&ldir.join("ldevid.key")), made);
    assert!(!pending.exists());
    // Not due again: a second run does nothing and says so.
    let out = renew(false).output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(seen.csr_keys.lock().unwrap().len(), 2);
    // --status shows the installed LDevID and when it is due, and changes nothing.
    let out = renew(false).arg("--status").output().await.unwrap();
    assert!(out.status.success());
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        st["ldevid"]["serial"].as_str(),
        Some(file_serial(&ldir.join("ldevid.crt")).as_str()),
        "{st}"
    );
    assert!(
        st["next"]["wait_until"].as_u64().unwrap() > st["ldevid"]["not_before"].as_u64().unwrap()
    );
    assert_eq!(st["retry"]["attempts"], 0, "{st}");
    assert_eq!(seen.csr_keys.lock().unwrap().len(), 2);
    server.abort();
}
