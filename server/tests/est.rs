//! EST over the TLS listener, driven by `curl` and checked by `openssl` (independent
//! implementations of TLS, HTTP, PKCS#10 and CMS), on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{backends, run_ok, write, Backend, Options, Server};

/// A server with the TLS listener on; returns it and the TLS base URL (`https://localhost:P`).
async fn tls_server(backend: &Backend, extra: &[&str]) -> (Server, String) {
    let mut args = vec![
        "--tls-listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--public-url".to_string(),
        "https://localhost".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start_with(
        backend,
        Options {
            extra_args: args,
            ..Options::default()
        },
    )
    .await;
    let url = tls_url(&server);
    (server, url)
}

/// The TLS listener's URL, from what the server printed (with the DNS name it is certified
/// for).
fn tls_url(server: &Server) -> String {
    let printed = server.printed();
    let addr = printed
        .lines()
        .find_map(|l| l.split("TLS (EST and the API) on https://").nth(1))
        .unwrap_or_else(|| panic!("no TLS line in:\n{printed}"))
        .trim()
        .to_string();
    let port = addr.rsplit(':').next().unwrap();
    format!("https://localhost:{port}")
}

/// `curl` against the TLS listener, trusting devid's root; `--resolve` pins localhost to the
/// IPv4 address the listener is bound to. Returns status and body.
fn curl(server: &Server, url: &str, args: &[&str]) -> (u16, Vec<u8>) {
    let port = port_of(url);
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(server.root_pem())
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = out.stdout;
    let nl = body.iter().rposition(|b| *b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&body[nl + 1..]).parse().unwrap();
    body.truncate(nl);
    (status, body)
}

/// The port of `https://localhost:P/...`.
fn port_of(url: &str) -> &str {
    let rest = url.strip_prefix("https://localhost:").unwrap();
    rest.split('/').next().unwrap()
}

/// The PEM certificates of a base64 certs-only CMS answer, as `openssl pkcs7 -print_certs`
/// prints them.
fn print_certs(dir: &Path, b64: &[u8]) -> String {
    let f = dir.join("answer.b64");
    std::fs::write(&f, b64).unwrap();
    let der = dir.join("answer.p7");
    run_ok(
        Command::new("openssl")
            .args(["base64", "-d", "-in"])
            .arg(&f)
            .arg("-out")
            .arg(&der),
    );
    run_ok(
        Command::new("openssl")
            .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
            .arg(&der),
    )
}

/// A P-256 key and a base64 DER CSR made by openssl with `subj`; returns the key file and the
/// CSR file.
fn openssl_csr(dir: &Path, name: &str, subj: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr.der"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", subj, "-outform", "DER", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    let b64 = dir.join(format!("{name}.csr.b64"));
    run_ok(
        Command::new("openssl")
            .args(["base64", "-in"])
            .arg(&csr)
            .arg("-out")
            .arg(&b64),
    );
    (key, b64)
}

fn subject_of(pem: &str, dir: &Path) -> String {
    let f = write(dir, "subject.pem", pem);
    run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(f),
    )
}

async fn audit_has(server: &Server, action: &str, outcome_part: &str) -> bool {
    let (_, v) = server.admin_get("/v1/audit?limit=1000").await;
    v["items"].as_array().into_iter().flatten().any(|r| {
        r["action"] == action && r["outcome"].as_str().unwrap_or("").contains(outcome_part)
    })
}

#[tokio::test]
async fn tls_listener_serves_the_api_and_est_cacerts_and_csrattrs() {
    for backend in backends().await {
        let (server, url) = tls_server(&backend, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        // The REST API on the TLS listener, with a bearer token and no client certificate.
        let auth = format!("Authorization: Bearer {}", server.token);
        let (status, body) = curl(&server, &format!("{url}/v1/devices"), &["-H", &auth]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        // The server's certificate names the public URL's host and chains to devid's root
        // (curl checked both); it is not the root itself.
        let (status, body) = curl(&server, &format!("{url}/.well-known/est/cacerts"), &["-i"]);
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body).to_string();
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/pkcs7-mime"),
            "{text}"
        );
        let (_, b64) = curl(&server, &format!("{url}/.well-known/est/cacerts"), &[]);
        let certs = print_certs(dir.path(), &b64);
        let (_, chain) = server.get("/v1/ca", None).await;
        let chain = chain.as_str().unwrap().to_string();
        assert_eq!(certs.matches("BEGIN CERTIFICATE").count(), 2, "{certs}");
        for block in chain.split_inclusive("-----END CERTIFICATE-----\n") {
            let body: String = block.lines().filter(|l| !l.starts_with("-----")).collect();
            let printed: String = certs.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(printed.contains(&body), "cacerts lacks a chain certificate");
        }
        // Under a label too.
        let (status, b64l) = curl(
            &server,
            &format!("{url}/.well-known/est/thermo/cacerts"),
            &[],
        );
        assert_eq!((status, &b64l), (200, &b64));

        let (status, attrs) = curl(&server, &format!("{url}/.well-known/est/csrattrs"), &[]);
        assert_eq!(status, 200);
        let f = write(dir.path(), "attrs.b64", &String::from_utf8_lossy(&attrs));
        let der = dir.path().join("attrs.der");
        run_ok(
            Command::new("openssl")
                .args(["base64", "-d", "-in"])
                .arg(&f)
                .arg("-out")
                .arg(&der),
        );
        let parsed = run_ok(
            Command::new("openssl")
                .args(["asn1parse", "-inform", "DER", "-in"])
                .arg(&der),
        );
        for want in ["ecdsa-with-SHA256", "id-ecPublicKey", "prime256v1"] {
            assert!(parsed.contains(want), "{parsed}");
        }
        // The plain listener serves EST too (without client certificates).
        let resp = server
            .client
            .get(server.url("/.well-known/est/csrattrs"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", backend.name());
    }
}

#[tokio::test]
async fn simpleenroll_with_a_token_registers_the_device() {
    for backend in backends().await {
        let (server, url) = tls_server(&backend, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let factory = server.token("factory", Some(vec!["thermo"])).await;
        let basic = format!("line3:{factory}");
        let (_, csr) = openssl_csr(dir.path(), "d1", "/CN=ignored/serialNumber=SN-EST-1");
        let csr_arg = format!("@{}", csr.display());
        let post = |path: &str| format!("{url}/.well-known/est/{path}");
        let ct = "Content-Type: application/pkcs10";

        // No credential: 401, plain text, Basic offered; nothing registered; audited.
        let (status, body) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &["-H", ct, "--data-binary", &csr_arg],
        );
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("HTTP Basic"));
        assert!(audit_has(&server, "est.simpleenroll", "401").await);

        // A wrong token: 401. An auditor token: 403.
        let (status, _) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &[
                "-u",
                "x:devid_nope_nope",
                "-H",
                ct,
                "--data-binary",
                &csr_arg,
            ],
        );
        assert_eq!(status, 401);
        let auditor = server.token("auditor", None).await;
        let (status, body) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &[
                "-u",
                &format!("a:{auditor}"),
                "-H",
                ct,
                "--data-binary",
                &csr_arg,
            ],
        );
        assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
        // A model the factory token may not register: 403, and nothing registered.
        let (status, _) = curl(
            &server,
            &post("valve/simpleenroll"),
            &["-u", &basic, "-H", ct, "--data-binary", &csr_arg],
        );
        assert_eq!(status, 403);
        // Not base64: 400 saying so.
        let (status, body) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &["-u", &basic, "-H", ct, "--data-binary", "%%%"],
        );
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("base64"));
        // No serialNumber in the subject: 400 naming it.
        let (_, nosn) = openssl_csr(dir.path(), "d0", "/CN=x");
        let (status, body) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &[
                "-u",
                &basic,
                "-H",
                ct,
                "--data-binary",
                &format!("@{}", nosn.display()),
            ],
        );
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("serialNumber"));
        let (_, list) = server.admin_get("/v1/devices").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

        // Enrolled: the certificate names the serial, the model is the label's.
        let (status, b64) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &["-u", &basic, "-H", ct, "--data-binary", &csr_arg],
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b64));
        let cert = print_certs(dir.path(), &b64);
        assert_eq!(cert.matches("BEGIN CERTIFICATE").count(), 1);
        let subject = subject_of(&cert, dir.path());
        assert!(subject.contains("serialNumber=SN-EST-1"), "{subject}");
        let (_, found) = server
            .admin_get("/v1/devices?hardware_serial=SN-EST-1")
            .await;
        let item = &found["items"][0];
        assert_eq!(item["model"], "thermo", "{found}");
        assert!(subject.contains(&format!("CN={}", item["client_id"].as_str().unwrap())));

        // The same request again: the same certificate (registration's idempotency).
        let (status, again) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &["-u", &basic, "-H", ct, "--data-binary", &csr_arg],
        );
        assert_eq!(status, 200);
        assert_eq!(print_certs(dir.path(), &again), cert);
        // The same serial with another key: a conflict, nothing issued.
        let (_, other) = openssl_csr(dir.path(), "d2", "/serialNumber=SN-EST-1");
        let (status, body) = curl(
            &server,
            &post("thermo/simpleenroll"),
            &[
                "-u",
                &basic,
                "-H",
                ct,
                "--data-binary",
                &format!("@{}", other.display()),
            ],
        );
        assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
        let (_, found) = server
            .admin_get("/v1/devices?hardware_serial=SN-EST-1")
            .await;
        assert_eq!(found["items"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn serverkeygen_returns_the_key_and_its_certificate() {
    for backend in backends().await {
        let (server, url) = tls_server(&backend, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let basic = format!(":{}", server.token);
        let (_, csr) = openssl_csr(dir.path(), "k", "/serialNumber=SN-KEYGEN-1");
        let out = dir.path().join("multipart");
        let port = url.rsplit(':').next().unwrap();
        let resp = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(server.root_pem())
            .args([
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
                "-D",
                "-",
                "-o",
            ])
            .arg(&out)
            .args([
                "-u",
                &basic,
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
            ])
            .arg(format!("@{}", csr.display()))
            .arg(format!("{url}/.well-known/est/serverkeygen"))
            .output()
            .unwrap();
        let headers = String::from_utf8_lossy(&resp.stdout).to_string();
        assert!(
            resp.status.success(),
            "{headers} {}",
            String::from_utf8_lossy(&resp.stderr)
        );
        let boundary = headers
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: multipart/mixed; boundary=")
                    .map(|b| b.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{headers}"));
        let body = std::fs::read_to_string(&out).unwrap();
        let parts: Vec<&str> = body
            .split(&format!("--{boundary}"))
            .filter(|p| p.contains("Content-Type"))
            .collect();
        assert_eq!(parts.len(), 2, "{body}");
        let part_body = |p: &str| p.split("\r\n\r\n").nth(1).unwrap().trim().to_string();
        assert!(parts[0].contains("Content-Type: application/pkcs8"));
        assert!(parts[1].contains("smime-type=certs-only"));
        let key_b64 = write(dir.path(), "key.b64", &part_body(parts[0]));
        let key_der = dir.path().join("key.der");
        run_ok(
            Command::new("openssl")
                .args(["base64", "-d", "-in"])
                .arg(&key_b64)
                .arg("-out")
                .arg(&key_der),
        );
        let key_pub = run_ok(
            Command::new("openssl")
                .args(["pkey", "-inform", "DER", "-pubout", "-in"])
                .arg(&key_der),
        );
        let cert = print_certs(dir.path(), part_body(parts[1]).as_bytes());
        let cert_file = write(dir.path(), "cert.pem", &cert);
        let cert_pub = run_ok(
            Command::new("openssl")
                .args(["x509", "-noout", "-pubkey", "-in"])
                .arg(&cert_file),
        );
        assert_eq!(key_pub, cert_pub, "the key is the certificate's");
        assert!(subject_of(&cert, dir.path()).contains("serialNumber=SN-KEYGEN-1"));
        // The key is returned once: the same request again is refused, not answered keyless.
        let (status, body) = curl(
            &server,
            &format!("{url}/.well-known/est/serverkeygen"),
            &[
                "-u",
                &basic,
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                &format!("@{}", csr.display()),
            ],
        );
        assert_ne!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(body.is_ascii() && !body.is_empty(), "a readable reason");
    }
}

#[tokio::test]
async fn the_operators_certificate_is_served_when_given() {
    let backend = Backend::Sqlite;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_file = write(dir.path(), "tls.crt", &cert.pem());
    let key_file = write(dir.path(), "tls.key", &key.serialize_pem());
    let (server, url) = tls_server(
        &backend,
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    // Devid's root does not vouch for it; the operator's certificate does.
    let port = url.rsplit(':').next().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&cert_file)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("{url}/.well-known/est/csrattrs"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--cacert"])
        .arg(server.root_pem())
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("{url}/.well-known/est/csrattrs"))
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "devid's root must not verify the operator's certificate"
    );
}
