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
        // The same serial with another key: a conflict (400 in EST), nothing issued.
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
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("already registered"));
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

/// Cisco libest's `estclient` (installed by scripts/setup.sh under target/tools/libest), run
/// against the TLS listener with `args`; returns its exit status (0 even when a request failed)
/// and what it printed.
fn estclient(server: &Server, url: &str, out_dir: &Path, args: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/libest");
    let bin = root.join("usr/bin/estclient");
    let lib = std::fs::read_dir(root.join("usr/lib"))
        .ok()
        .and_then(|mut d| d.next())
        .map(|e| e.unwrap().path());
    assert!(
        bin.exists() && lib.is_some(),
        "libest's estclient is not installed under {}: run scripts/setup.sh",
        root.display()
    );
    let out = Command::new(&bin)
        .env("LD_LIBRARY_PATH", lib.unwrap())
        .env("EST_OPENSSL_CACERT", server.root_pem())
        .args(["-s", "localhost", "-p", port_of(url), "-o"])
        .arg(out_dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn libest_estclient_gets_cacerts_and_enrolls_with_a_token() {
    for backend in backends().await {
        let (server, url) = tls_server(&backend, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let (ok, text) = estclient(&server, &url, dir.path(), &["-g"]);
        assert!(ok, "{text}");
        let cacerts = std::fs::read(dir.path().join("cacert-0-0.pkcs7")).unwrap();
        assert_eq!(
            print_certs(dir.path(), &cacerts)
                .matches("BEGIN CERTIFICATE")
                .count(),
            2
        );

        // A PEM CSR made by openssl, with the hardware serial in the subject.
        let key = dir.path().join("dev.key");
        let csr = dir.path().join("dev.csr");
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
                .args(["-nodes", "-subj", "/serialNumber=SN-LIBEST-1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        let csr = csr.to_str().unwrap();
        // A wrong token: refused, nothing written.
        let (ok, text) = estclient(
            &server,
            &url,
            dir.path(),
            &["-e", "-u", "line", "-h", "devid_x_y", "-y", csr],
        );
        // estclient exits 0 whatever happened: what it wrote and said is the verdict.
        let _ = ok;
        assert!(text.contains("EST_ERR_AUTH_FAIL"), "{text}");
        assert!(!dir.path().join("cert-0-0.pkcs7").exists());
        // The admin token as the Basic password: enrolled (estclient answers the 401 challenge).
        let (ok, text) = estclient(
            &server,
            &url,
            dir.path(),
            &["-e", "-u", "line", "-h", &server.token, "-y", csr],
        );
        assert!(ok, "{text}");
        let cert = std::fs::read(dir.path().join("cert-0-0.pkcs7")).unwrap();
        let cert = print_certs(dir.path(), &cert);
        assert!(
            subject_of(&cert, dir.path()).contains("serialNumber=SN-LIBEST-1"),
            "{cert}"
        );
        let (_, found) = server
            .admin_get("/v1/devices?hardware_serial=SN-LIBEST-1")
            .await;
        assert_eq!(
            found["items"].as_array().unwrap().len(),
            1,
            "{}",
            backend.name()
        );

        // The device enrolls its LDevID with that certificate (TLS client authentication), for
        // a new P-256 key ...
        let idevid = write(dir.path(), "idevid.pem", &cert);
        let k1 = dir.path().join("k1.key");
        run_ok(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                ])
                .arg(&k1),
        );
        let out = dir.path().join("ldevid");
        std::fs::create_dir_all(&out).unwrap();
        let (_, text) = estclient(
            &server,
            &url,
            &out,
            &[
                "-e",
                "-c",
                idevid.to_str().unwrap(),
                "-k",
                key.to_str().unwrap(),
                "-x",
                k1.to_str().unwrap(),
            ],
        );
        let l1 = std::fs::read(out.join("cert-0-0.pkcs7")).unwrap_or_else(|_| panic!("{text}"));
        let l1 = write(dir.path(), "l1.pem", &print_certs(dir.path(), &l1));
        assert_eq!(
            pubkey(&l1),
            run_ok(
                Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&k1)
            )
        );
        // ... and re-enrolls with it: estclient builds the CSR from the certificate's names.
        let out = dir.path().join("renewed");
        std::fs::create_dir_all(&out).unwrap();
        let (_, text) = estclient(
            &server,
            &url,
            &out,
            &["-r", "-c", l1.to_str().unwrap(), "-k", k1.to_str().unwrap()],
        );
        let l2 = std::fs::read(out.join("cert-0-0.pkcs7")).unwrap_or_else(|_| panic!("{text}"));
        let l2 = write(dir.path(), "l2.pem", &print_certs(dir.path(), &l2));
        assert_eq!(pubkey(&l2), pubkey(&l1));
        assert_ne!(std::fs::read(&l2).unwrap(), std::fs::read(&l1).unwrap());
    }
}

/// Registers a device with a key made by openssl (its IDevID); returns its ClientID and the
/// files of its certificate and key.
async fn register_device(
    server: &Server,
    dir: &Path,
    serial: &str,
    model: Option<&str>,
) -> (String, PathBuf, PathBuf) {
    let key = dir.join(format!("{serial}.idevid.key"));
    let csr = dir.join(format!("{serial}.idevid.csr"));
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
            .args(["-nodes", "-subj", "/CN=x", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    let mut body = serde_json::json!({
        "hardware_serial": serial,
        "csr": std::fs::read_to_string(&csr).unwrap(),
    });
    if let Some(m) = model {
        body["model"] = serde_json::json!(m);
    }
    let (status, v) = server.admin_post("/v1/devices", &body).await;
    assert_eq!(status, 201, "{v}");
    let cert = write(
        dir,
        &format!("{serial}.idevid.pem"),
        v["certificate"].as_str().unwrap(),
    );
    (v["client_id"].as_str().unwrap().to_string(), cert, key)
}

/// `curl` as the device holding `cert` and `key`, posting the base64 CSR in `csr`.
fn curl_as(server: &Server, url: &str, cert: &Path, key: &Path, csr: &Path) -> (u16, Vec<u8>) {
    curl(
        server,
        url,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &format!("@{}", csr.display()),
        ],
    )
}

/// The certificate of a certs-only answer, written to `name`.
fn answer_cert(dir: &Path, name: &str, b64: &[u8]) -> PathBuf {
    write(dir, name, &print_certs(dir, b64))
}

fn pubkey(cert: &Path) -> String {
    run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(cert),
    )
}

#[tokio::test]
async fn a_device_enrolls_renews_and_rekeys_with_its_certificate() {
    for backend in backends().await {
        let (server, url) = tls_server(&backend, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (id, idevid, k0) = register_device(&server, d, "SN-DEV-1", None).await;
        let est = |op: &str| format!("{url}/.well-known/est/{op}");
        let subj = format!("/CN={id}/serialNumber=SN-DEV-1");
        let san = format!("subjectAltName=URI:urn:devid:{id}");
        let csr_with = |name: &str, subj: &str, key: Option<&Path>| -> (PathBuf, PathBuf) {
            let der = d.join(format!("{name}.csr.der"));
            let keyfile = key.map_or_else(|| d.join(format!("{name}.key")), Path::to_path_buf);
            let mut cmd = Command::new("openssl");
            cmd.args([
                "req", "-new", "-nodes", "-subj", subj, "-addext", &san, "-outform", "DER",
            ]);
            match key {
                Some(k) => cmd.arg("-key").arg(k),
                None => cmd
                    .args([
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-keyout",
                    ])
                    .arg(&keyfile),
            };
            run_ok(cmd.arg("-out").arg(&der));
            let b64 = d.join(format!("{name}.csr.b64"));
            run_ok(
                Command::new("openssl")
                    .args(["base64", "-in"])
                    .arg(&der)
                    .arg("-out")
                    .arg(&b64),
            );
            (b64, keyfile)
        };

        // Enroll with the IDevID: an LDevID for a new key, with the device's names.
        let (csr1, k1) = csr_with("l1", "/CN=anything", None);
        let (status, b64) = curl_as(&server, &est("simpleenroll"), &idevid, &k0, &csr1);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b64));
        let l1 = answer_cert(d, "l1.pem", &b64);
        let subject = subject_of(&std::fs::read_to_string(&l1).unwrap(), d);
        assert!(
            subject.contains(&format!("CN={id}")) && subject.contains("serialNumber=SN-DEV-1"),
            "{subject}"
        );
        // The model's default LDevID validity, 90 days: valid in 89, not in 91.
        let checkend = |days: u64| {
            Command::new("openssl")
                .args([
                    "x509",
                    "-noout",
                    "-checkend",
                    &(days * 86_400).to_string(),
                    "-in",
                ])
                .arg(&l1)
                .status()
                .unwrap()
                .success()
        };
        assert!(checkend(89) && !checkend(91));
        run_ok(
            Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(server.root_pem())
                .arg("-untrusted")
                .arg(write(
                    d,
                    "issuing.pem",
                    server.get("/v1/ca", None).await.1.as_str().unwrap(),
                ))
                .arg(&l1),
        );

        // Re-enroll with the LDevID, same key: renewed.
        let (csr2, _) = csr_with("l2", &subj, Some(&k1));
        let (status, b64) = curl_as(&server, &est("simplereenroll"), &l1, &k1, &csr2);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b64));
        let l2 = answer_cert(d, "l2.pem", &b64);
        assert_eq!(pubkey(&l2), pubkey(&l1));
        // Re-enroll with a new key: re-keyed.
        let (csr3, k3) = csr_with("l3", &subj, None);
        let (status, b64) = curl_as(&server, &est("simplereenroll"), &l2, &k1, &csr3);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b64));
        let l3 = answer_cert(d, "l3.pem", &b64);
        assert_ne!(pubkey(&l3), pubkey(&l2));

        // A subject that is not the certificate's: 400 saying so, nothing issued.
        let (bad, _) = csr_with("bad", &format!("/CN={id}/serialNumber=SN-OTHER"), Some(&k3));
        let (status, body) = curl_as(&server, &est("simplereenroll"), &l3, &k3, &bad);
        assert_eq!(status, 400);
        assert!(
            String::from_utf8_lossy(&body).contains("subject"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        // No certificate: 401, on the TLS listener and on the plain one.
        let (status, _) = curl(
            &server,
            &est("simplereenroll"),
            &[
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                &format!("@{}", csr3.display()),
            ],
        );
        assert_eq!(status, 401);
        let resp = server
            .client
            .post(server.url("/.well-known/est/simplereenroll"))
            .body(std::fs::read(&csr3).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);

        // Server-side key generation with the current certificate: a key and an LDevID for it.
        let (status, body) = curl_as(&server, &est("serverkeygen"), &l3, &k3, &csr3);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("application/pkcs8"));

        // Issuances and refusals are audited.
        assert!(audit_has(&server, "ldevid.issue", "ok").await);
        assert!(audit_has(&server, "ldevid.issue", "subject").await);

        // The device is revoked: its certificates no longer enroll anything.
        let (status, v) = server
            .admin_post(
                &format!("/v1/devices/{id}/revoke"),
                &serde_json::json!({"reason": "keyCompromise"}),
            )
            .await;
        assert!(status.is_success(), "{v}");
        let (csr4, _) = csr_with("l4", &subj, Some(&k3));
        for (op, cert, key) in [("simplereenroll", &l3, &k3), ("simpleenroll", &idevid, &k0)] {
            let (status, body) = curl_as(&server, &est(op), cert, key, &csr4);
            assert!(
                status == 403 || status == 400,
                "{op}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let (_, dev) = server.admin_get(&format!("/v1/devices/{id}")).await;
        let certs = dev["certificates"].as_array().map_or(0, Vec::len);
        assert_eq!(certs, 5, "IDevID and four LDevIDs, no more: {dev}");
    }
}

#[tokio::test]
async fn an_expired_ldevid_renews_within_the_grace_and_counts_for_nothing_else() {
    for backend in backends().await {
        let (server, url) = tls_server(&backend, &[]).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (status, v) = server
            .send(
                reqwest::Method::PUT,
                "/v1/models/shortlived",
                Some(&server.token.clone()),
                Some(&serde_json::json!({"ldevid_validity": "2s", "renewal_grace": "1h"})),
            )
            .await;
        assert!(status.is_success(), "{v}");
        let (id, idevid, k0) = register_device(&server, d, "SN-EXP-1", Some("shortlived")).await;
        let est = |op: &str| format!("{url}/.well-known/est/{op}");
        let (lkey, csr) = openssl_csr(d, "any", "/CN=x");
        let (status, b64) = curl_as(&server, &est("simpleenroll"), &idevid, &k0, &csr);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b64));
        let ldevid = answer_cert(d, "l.pem", &b64);
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        let expired = !Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "0", "-in"])
            .arg(&ldevid)
            .status()
            .unwrap()
            .success();
        assert!(expired, "the LDevID should have expired");

        // Expired: no certificate for simpleenroll (401) ...
        let (status, _) = curl_as(&server, &est("simpleenroll"), &ldevid, &lkey, &csr);
        assert_eq!(status, 401, "{}", backend.name());
        // ... but a bearer-token route on the same listener still works with it presented.
        let auth = format!("Authorization: Bearer {}", server.token);
        let (status, _) = curl(
            &server,
            &format!("{url}/v1/devices"),
            &[
                "--cert",
                ldevid.to_str().unwrap(),
                "--key",
                lkey.to_str().unwrap(),
                "-H",
                &auth,
            ],
        );
        assert_eq!(status, 200);
        // ... and simplereenroll accepts it within the model's renewal grace.
        let subj = format!("/CN={id}/serialNumber=SN-EXP-1");
        let der = d.join("renew.csr.der");
        run_ok(
            Command::new("openssl")
                .args(["req", "-new", "-key"])
                .arg(&lkey)
                .args([
                    "-subj",
                    &subj,
                    "-addext",
                    &format!("subjectAltName=URI:urn:devid:{id}"),
                ])
                .args(["-outform", "DER", "-out"])
                .arg(&der),
        );
        let b64 = d.join("renew.csr.b64");
        run_ok(
            Command::new("openssl")
                .args(["base64", "-in"])
                .arg(&der)
                .arg("-out")
                .arg(&b64),
        );
        let (status, body) = curl_as(&server, &est("simplereenroll"), &ldevid, &lkey, &b64);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}
