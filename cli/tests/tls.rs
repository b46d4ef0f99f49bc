//! The CLI against a devid-server behind TLS whose certificate comes from a private CA (as behind
//! a company's reverse proxy): refused without `--ca-file`, trusted with it (flag or
//! `DEVID_CA_FILE`). Needs `cargo build --workspace` first (see common/mod.rs).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::Server;
use tokio_rustls::rustls;

/// A TLS front on 127.0.0.1 for the server at `target`, its certificate (for `localhost`) issued
/// by a private CA; returns the front's port and the CA's PEM file.
fn tls_front(target: u16, dir: &std::path::Path) -> (u16, PathBuf) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut cp = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    cp.distinguished_name
        .push(rcgen::DnType::CommonName, "Private Test CA");
    cp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    cp.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca = cp.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(cp, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    let ca_file = dir.join("private-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake: nothing to do.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let addr = SocketAddr::from(([127, 0, 0, 1], target));
                    if let Ok(mut up) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
    });
    (port, ca_file)
}

#[test]
fn https_server_with_a_private_ca_is_trusted_through_ca_file_only() {
    let s = Server::start();
    let (port, ca_file) = tls_front(s.port, s.dir.path());
    let url = format!("https://localhost:{port}");
    let ca = ca_file.to_str().expect("utf8");

    let r = s.devid_env(&[("DEVID_SERVER", &url)], &["ca", "show"]);
    assert_eq!(
        r.code, 1,
        "the private CA is not trusted by default: {r:#?}"
    );
    assert!(
        r.stderr.to_lowercase().contains("certificate") || r.stderr.contains("TLS"),
        "{r:#?}"
    );

    let r = s
        .devid_env(&[("DEVID_SERVER", &url)], &["--ca-file", ca, "ca", "show"])
        .ok();
    assert!(r.stdout.contains("role:       issuing"), "{}", r.stdout);
    let r = s
        .devid_env(
            &[("DEVID_SERVER", &url), ("DEVID_CA_FILE", ca)],
            &["-o", "json", "device", "list"],
        )
        .ok();
    assert!(r.json()["items"].is_array(), "{}", r.stdout);

    // A file without a certificate is a usage error, before any connection.
    let empty = s.dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let r = s.devid_env(
        &[("DEVID_SERVER", &url)],
        &["--ca-file", empty.to_str().expect("utf8"), "ca", "show"],
    );
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("no PEM certificate"), "{r:#?}");
}
