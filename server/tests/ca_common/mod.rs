//! Helpers shared by the CA tests: temporary dirs, CSRs, and the `openssl` binary as an
//! independent checker.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use devid_core::profile::{ProfileSettings, Validity};

/// Runs `openssl` with `args` in `dir`; panics with its output unless it exits 0.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = openssl_raw(dir, args, None);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// Runs `openssl` and returns its raw output, whatever the exit status.
pub fn openssl_raw(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl binary runs");
    {
        let mut sin = child.stdin.take().expect("stdin");
        if let Some(data) = stdin {
            sin.write_all(data).expect("write stdin");
        }
    }
    child.wait_with_output().expect("openssl output")
}

pub fn write(dir: &Path, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write test file");
    p
}

pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("read test file")
}

/// Makes a key and CSR with the openssl binary. `newkey` is e.g. `ec:p256` (handled via
/// ecparam), `rsa:2048`, `ec:p384`, `ed25519`. Extra args go to `openssl req`.
pub fn openssl_csr(dir: &Path, name: &str, newkey: &str, extra: &[&str]) -> String {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    match newkey {
        "ec:p256" => {
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &key,
                ],
            );
        }
        "ec:p384" => {
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-384",
                    "-out",
                    &key,
                ],
            );
        }
        "ed25519" => {
            openssl(dir, &["genpkey", "-algorithm", "ED25519", "-out", &key]);
        }
        "rsa:2048" => {
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &key,
                ],
            );
        }
        other => panic!("unknown key type {other}"),
    }
    let mut args = vec![
        "req",
        "-new",
        "-key",
        &key,
        "-subj",
        "/CN=requested-by-device",
        "-out",
        &csr,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
    read(dir, &csr)
}

/// A P-256 CSR made with rcgen.
pub fn rcgen_csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

pub fn settings() -> ProfileSettings {
    ProfileSettings {
        organization: Some("Acme Devices".into()),
        validity: Validity::Years(20),
        crl_url: Some("http://127.0.0.1:8080/v1/crl".into()),
    }
}

/// Writes root.pem and issuing.pem for a CA into `dir`.
pub fn write_ca_pems(dir: &Path, ca: &devid_server::ca::Ca) {
    write(dir, "root.pem", ca.root_pem());
    let issuing = pem::encode(&pem::Pem::new("CERTIFICATE", ca.issuing_der().to_vec()));
    write(dir, "issuing.pem", issuing);
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}
