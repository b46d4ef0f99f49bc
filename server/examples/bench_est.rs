//! EST re-enrollment benchmark, with its peer in the same run: registers `--count` devices with
//! `POST /v1/devices` (bearer token, plain listener) at `--concurrency`, then re-enrolls each of
//! them over the TLS listener (`POST /.well-known/est/simplereenroll`, the device's certificate
//! as TLS client certificate, same key, CSR with the certificate's subject and SAN) at the same
//! concurrency. Each re-enrollment is one new TCP and TLS connection with client
//! authentication, closed after the answer, as a device renewing once would make: its client
//! certificate is its identity, so connections cannot be pooled across devices, and a device
//! renewing every few months has no TLS session left to resume. The load generator shares only
//! what is not per device (the crypto provider, the root store), and each device's CSR and TLS
//! configuration are made before the clock starts (a device makes them on its own CPU, while
//! this load generator shares the server's cores). Prints one JSON line per phase and the
//! ratio.
//!
//! ```text
//! cargo run --release -p devid-server --example bench_est -- \
//!     --url http://127.0.0.1:8080 --tls-url https://localhost:8443 \
//!     --root devid-data/ca/root.crt --token-file devid-data/admin.token \
//!     --count 5000 --concurrency 16
//! ```
//! `scripts/bench_est.sh` starts release servers on SQLite and PostgreSQL and runs it.
#![allow(clippy::unwrap_used)] // a benchmark tool: failing loudly is the right behaviour

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

struct Args {
    url: String,
    tls_url: String,
    root: String,
    token: String,
    count: usize,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        tls_url: "https://localhost:8443".into(),
        root: "devid-data/ca/root.crt".into(),
        token: String::new(),
        count: 2000,
        concurrency: 16,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => a.url = v,
            "--tls-url" => a.tls_url = v,
            "--root" => a.root = v,
            "--token-file" => a.token = std::fs::read_to_string(v).unwrap().trim().to_string(),
            "--count" => a.count = v.parse().unwrap(),
            "--concurrency" => a.concurrency = v.parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.token.is_empty(), "--token-file is required");
    a
}

/// A device: its key (PKCS#8 DER) and, once registered, its certificate.
struct Device {
    key: rcgen::KeyPair,
    csr_pem: String,
    cert_der: Vec<u8>,
}

/// Runs `job(i)` for every `i < n` over `workers` tasks; returns each call's latency.
async fn drive<F, Fut>(n: usize, workers: usize, job: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (job, next) = (job.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                job(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

/// A CSR for `key` with the subject and SAN of `cert_der`, encoded as devid's profile encodes
/// them (CN and O UTF8String, serialNumber PrintableString, SAN URI): a renewal request.
fn renewal_csr(cert_der: &[u8], key: &rcgen::KeyPair) -> rcgen::CertificateSigningRequest {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    let mut params = rcgen::CertificateParams::default();
    for rdn in cert.subject().iter() {
        for attr in rdn.iter() {
            let value = attr.as_str().unwrap().to_string();
            let oid = attr.attr_type();
            if *oid == x509_parser::oid_registry::OID_X509_COMMON_NAME {
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, value);
            } else if *oid == x509_parser::oid_registry::OID_X509_SERIALNUMBER {
                params.distinguished_name.push(
                    rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
                    rcgen::DnValue::PrintableString(value.as_str().try_into().unwrap()),
                );
            } else if *oid == x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME {
                params
                    .distinguished_name
                    .push(rcgen::DnType::OrganizationName, value);
            }
        }
    }
    let san = cert.subject_alternative_name().unwrap().unwrap();
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
    }
    params.serialize_request(key).unwrap()
}

/// A device's re-enrollment, ready to send: its TLS configuration (its certificate and key as
/// client certificate) and the request body (the CSR, base64).
type Request = (Arc<rustls::ClientConfig>, String);

/// The re-enrollment's path on the TLS listener.
const EST_PATH: &str = "/.well-known/est/simplereenroll";

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len().max(1) as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn report(phase: &str, n: usize, elapsed: Duration, lat: &[Duration]) -> f64 {
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{{\"phase\":\"{phase}\",\"count\":{n},\"seconds\":{:.3},\"per_s\":{rate:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        elapsed.as_secs_f64(),
        percentile_ms(lat, 0.5),
        percentile_ms(lat, 0.99),
    );
    rate
}

#[tokio::main]
async fn main() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = parse_args();
    eprintln!("making {} keys and CSRs...", args.count);
    let devices: Vec<std::sync::Mutex<Device>> = (0..args.count)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let csr_pem = rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            std::sync::Mutex::new(Device {
                key,
                csr_pem,
                cert_der: Vec::new(),
            })
        })
        .collect();
    let devices = Arc::new(devices);
    let prefix = format!("est{}", std::process::id());

    // Phase 1, the peer: POST /v1/devices with a bearer token.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()
        .unwrap();
    let started = Instant::now();
    let lat = {
        let (devices, url, token) = (devices.clone(), args.url.clone(), args.token.clone());
        drive(args.count, args.concurrency, move |i| {
            let (client, devices, url, token) =
                (client.clone(), devices.clone(), url.clone(), token.clone());
            let prefix = prefix.clone();
            async move {
                let csr = devices[i].lock().unwrap().csr_pem.clone();
                let body = json!({"hardware_serial": format!("{prefix}-{i}"), "model": "bench", "csr": csr});
                let resp = client
                    .post(format!("{url}/v1/devices"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "HTTP {}", resp.status());
                let v: serde_json::Value = resp.json().await.unwrap();
                let pem = pem::parse(v["certificate"].as_str().unwrap()).unwrap();
                devices[i].lock().unwrap().cert_der = pem.into_contents();
            }
        })
        .await
    };
    let register_rate = report("register", args.count, started.elapsed(), &lat);

    // Phase 2: EST re-enrollment, one TLS connection with client authentication per device.
    let mut roots = rustls::RootCertStore::empty();
    let root_pem = std::fs::read_to_string(&args.root).unwrap();
    roots
        .add(CertificateDer::from(
            pem::parse(root_pem).unwrap().into_contents(),
        ))
        .unwrap();
    let roots = Arc::new(roots);
    let host = args
        .tls_url
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap()
        .to_string();
    let port: u16 = args.tls_url.rsplit(':').next().unwrap().parse().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // What each device brings along is made before the clock starts (a device makes its CSR
    // on its own CPU, not the server's): its client configuration and the renewal request.
    let requests: Vec<std::sync::Mutex<Option<Request>>> = devices
        .iter()
        .map(|d| {
            let d = d.lock().unwrap();
            let csr = renewal_csr(&d.cert_der, &d.key);
            let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(
                    vec![CertificateDer::from(d.cert_der.clone())],
                    PrivateKeyDer::from(PrivatePkcs8KeyDer::from(d.key.serialize_der())),
                )
                .unwrap();
            let body = base64::engine::general_purpose::STANDARD.encode(csr.der());
            std::sync::Mutex::new(Some((Arc::new(tls), body)))
        })
        .collect();
    let configs: Vec<Arc<rustls::ClientConfig>> = requests
        .iter()
        .map(|r| r.lock().unwrap().as_ref().unwrap().0.clone())
        .collect();
    let requests = Arc::new(requests);
    let target = Target { addr, host, port };
    let started = Instant::now();
    let lat = {
        let target = target.clone();
        drive(args.count, args.concurrency, move |i| {
            let (requests, target) = (requests.clone(), target.clone());
            async move {
                let (tls, body) = requests[i].lock().unwrap().take().unwrap();
                let req = hyper::Request::post(EST_PATH)
                    .header("content-type", "application/pkcs10")
                    .body(body)
                    .unwrap();
                target.once(tls, req).await;
            }
        })
        .await
    };
    let reenroll_rate = report("est_simplereenroll", args.count, started.elapsed(), &lat);
    println!(
        "{{\"ratio_reenroll_to_register\":{:.2}}}",
        reenroll_rate / register_rate
    );

    // Phase 3, the floor: the same connection per device (TLS 1.3, full handshake, client
    // certificate checked) for `GET /.well-known/est/cacerts`, which issues nothing: what a
    // re-enrollment costs before the service does any of its own work.
    let configs = Arc::new(configs);
    let started = Instant::now();
    let lat = drive(args.count, args.concurrency, move |i| {
        let (configs, target) = (configs.clone(), target.clone());
        async move {
            let req = hyper::Request::get("/.well-known/est/cacerts")
                .body(String::new())
                .unwrap();
            target.once(configs[i].clone(), req).await;
        }
    })
    .await;
    let floor_rate = report(
        "tls_client_auth_cacerts",
        args.count,
        started.elapsed(),
        &lat,
    );
    println!(
        "{{\"ratio_handshake_floor_to_register\":{:.2},\"ratio_reenroll_to_floor\":{:.2}}}",
        floor_rate / register_rate,
        reenroll_rate / floor_rate
    );
}

/// The TLS listener as one device sees it.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    port: u16,
}

impl Target {
    /// One request on its own TCP and TLS connection, closed after the answer: a device
    /// renews once in months, and its client certificate is its identity, so nothing is
    /// shared between devices (no pooled connection, no resumed session). Panics unless the
    /// answer is a success.
    async fn once(&self, tls: Arc<rustls::ClientConfig>, mut req: hyper::Request<String>) {
        let host_name = rustls::pki_types::ServerName::try_from(self.host.clone()).unwrap();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(host_name, tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let headers = req.headers_mut();
        headers.insert(
            "host",
            format!("{}:{}", self.host, self.port).parse().unwrap(),
        );
        headers.insert("connection", "close".parse().unwrap());
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status();
        let answer = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(status.is_success(), "HTTP {status}: {answer:?}");
        drop(send);
        let _ = conn.await;
    }
}
