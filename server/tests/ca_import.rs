//! Importing an issuing CA that chains to a company root; every refusal case.

mod ca_common;

use ca_common::{openssl, read, settings, write};
use devid_core::csr::parse_csr_pem;
use devid_core::profile::DeviceIdentity;
use devid_server::ca::{Ca, CaError, CrlEntry};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ring::rand::SystemRandom;

struct Cert {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca_params(cn: &str, path_len: Option<u8>, usages: Vec<KeyUsagePurpose>) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "DE");
    dn.push(DnType::OrganizationName, "Acme Corp");
    dn.push(DnType::CommonName, cn);
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = usages;
    p.use_authority_key_identifier_extension = path_len.is_some();
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    p
}

fn ca_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ]
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen")
}

fn self_signed(cn: &str) -> Cert {
    let key = p256();
    let params = ca_params(
        cn,
        None,
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
    );
    let pem = params.self_signed(&key).expect("root").pem();
    Cert { params, key, pem }
}

fn signed(params: CertificateParams, key: KeyPair, by: &Cert) -> Cert {
    let issuer = Issuer::from_params(&by.params, &by.key);
    let pem = params.signed_by(&key, &issuer).expect("sign").pem();
    Cert { params, key, pem }
}

/// Company root -> company policy CA -> issuing CA for devid.
fn company() -> (Cert, Cert, Cert) {
    let root = self_signed("Acme Corp Root");
    let policy = signed(
        ca_params("Acme Policy CA", Some(1), ca_usages()),
        p256(),
        &root,
    );
    let issuing = signed(
        ca_params("Acme devid Issuing CA", Some(0), ca_usages()),
        p256(),
        &policy,
    );
    (root, policy, issuing)
}

fn issue(ca: &Ca, client: &str) -> String {
    let csr = parse_csr_pem(&ca_common::rcgen_csr()).expect("csr");
    ca.issue_device(
        &csr,
        &DeviceIdentity {
            client_id: client,
            hardware_serial: "HW-1",
        },
        &settings(),
        time::OffsetDateTime::now_utc(),
        &SystemRandom::new(),
    )
    .expect("issue")
    .pem
}

fn assert_invalid(err: CaError, needle: &str) {
    assert!(matches!(err, CaError::InvalidCa(_)), "{err:?}");
    assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
}

#[test]
fn imported_ca_chains_device_certs_to_the_company_root() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let data = dir.join("data");
    let (root, policy, issuing) = company();
    let chain = format!("{}{}", policy.pem, root.pem);
    let ca = Ca::import(
        &data,
        &issuing.pem,
        &issuing.key.serialize_pem(),
        &chain,
        Some("pw"),
    )
    .expect("import");
    assert_eq!(
        ca.root_der(),
        pem::parse(&root.pem).expect("pem").contents()
    );
    assert_eq!(ca.chain_der().len(), 3);
    let ca_dir = data.join("ca");
    assert!(
        !ca_dir.join("root.key").exists(),
        "devid never had the company root key"
    );
    assert!(read(&ca_dir, "issuing.key").starts_with("-----BEGIN DEVID ENCRYPTED PRIVATE KEY-----"));
    assert_eq!(ca_common::mode(&ca_dir), 0o700);
    for f in ["root.crt", "issuing.crt", "issuing.key", "chain.pem"] {
        assert_eq!(ca_common::mode(&ca_dir.join(f)), 0o600, "{f}");
    }

    write(dir, "companyroot.pem", &root.pem);
    write(dir, "chain.pem", ca.chain_pem());
    write(dir, "dev.pem", issue(&ca, "dev1"));
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "companyroot.pem",
            "-untrusted",
            "chain.pem",
            "-purpose",
            "sslclient",
            "dev.pem",
        ],
    );
    assert!(out.contains("dev.pem: OK"), "{out}");
    let text = openssl(dir, &["x509", "-in", "dev.pem", "-noout", "-issuer"]);
    assert_eq!(
        text.trim(),
        "issuer=C = DE, O = Acme Corp, CN = Acme devid Issuing CA"
    );

    // The next start loads it (with the passphrase) and issues the same way.
    let (again, created) = Ca::init_or_load(&data, Some("pw"), None).expect("load");
    assert!(!created);
    assert_eq!(again.chain_pem(), ca.chain_pem());
    write(dir, "dev2.pem", issue(&again, "dev2"));
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "companyroot.pem",
            "-untrusted",
            "chain.pem",
            "dev2.pem",
        ],
    );
    assert!(out.contains("dev2.pem: OK"), "{out}");

    // A second import is refused and changes nothing.
    let before = read(&ca_dir, "chain.pem");
    let (_, _, other) = company();
    let err = Ca::import(&data, &other.pem, &other.key.serialize_pem(), &chain, None)
        .expect_err("exists");
    assert!(matches!(err, CaError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(read(&ca_dir, "chain.pem"), before);
}

#[test]
fn an_issuing_ca_made_by_openssl_with_sha1_key_ids_works() {
    // openssl's subjectKeyIdentifier=hash is SHA-1 based: devid must copy it into the AKI of
    // what it signs rather than compute its own.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let root = self_signed("Acme Corp Root");
    write(dir, "root.pem", &root.pem);
    write(dir, "root.key", root.key.serialize_pem());
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "issuing.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "issuing.key",
            "-subj",
            "/C=DE/O=Acme Corp/OU=Devices/CN=Acme openssl Issuing",
            "-out",
            "issuing.csr",
        ],
    );
    write(
        dir,
        "ext.cnf",
        "[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "issuing.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-sha256",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "v3",
            "-out",
            "issuing.pem",
        ],
    );
    let ca = Ca::import(
        &dir.join("data"),
        &read(dir, "issuing.pem"),
        &read(dir, "issuing.key"),
        &root.pem,
        None,
    )
    .expect("import");
    write(dir, "dev.pem", issue(&ca, "dev1"));
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "dev.pem",
        ],
    );
    assert!(out.contains("dev.pem: OK"), "{out}");
    let ski = openssl(
        dir,
        &[
            "x509",
            "-in",
            "issuing.pem",
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ],
    );
    let aki = openssl(
        dir,
        &[
            "x509",
            "-in",
            "dev.pem",
            "-noout",
            "-ext",
            "authorityKeyIdentifier",
        ],
    );
    let ski_value = ski.lines().nth(1).expect("SKI value").trim().to_string();
    assert!(
        aki.contains(&ski_value),
        "AKI {aki} must equal SKI {ski_value}"
    );

    // Its CRLs verify too.
    let crl = ca
        .sign_crl(
            &[CrlEntry {
                serial: vec![0x42; 16],
                revoked_at: time::OffsetDateTime::now_utc(),
                reason_code: 1,
            }],
            1,
            time::OffsetDateTime::now_utc(),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        )
        .expect("crl");
    write(dir, "crl.der", crl);
    let out = openssl(
        dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            "issuing.pem",
            "-verify",
            "-noout",
        ],
    );
    assert!(out.contains("verify OK"), "{out}");
}

#[test]
fn import_refusals_are_clear_and_write_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let data = dir.join("data");
    let (root, policy, issuing) = company();
    let chain = format!("{}{}", policy.pem, root.pem);
    let key = issuing.key.serialize_pem();

    // The key belongs to another certificate.
    let err = Ca::import(&data, &issuing.pem, &p256().serialize_pem(), &chain, None)
        .expect_err("mismatch");
    assert_invalid(err, "does not match");

    // A certificate that is not a CA.
    let mut leaf_params = ca_params("Not a CA", None, vec![KeyUsagePurpose::DigitalSignature]);
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    let leaf = signed(leaf_params, p256(), &policy);
    let err =
        Ca::import(&data, &leaf.pem, &leaf.key.serialize_pem(), &chain, None).expect_err("leaf");
    assert_invalid(err, "not a CA");

    // A CA that may not sign CRLs.
    let no_crl = signed(
        ca_params("No CRL CA", Some(0), vec![KeyUsagePurpose::KeyCertSign]),
        p256(),
        &policy,
    );
    let err = Ca::import(
        &data,
        &no_crl.pem,
        &no_crl.key.serialize_pem(),
        &chain,
        None,
    )
    .expect_err("no cRLSign");
    assert_invalid(err, "cRLSign");

    // A P-384 issuing key.
    let p384 = signed(
        ca_params("P384 CA", Some(0), ca_usages()),
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("keygen"),
        &policy,
    );
    let err =
        Ca::import(&data, &p384.pem, &p384.key.serialize_pem(), &chain, None).expect_err("p384");
    assert_invalid(err, "ECDSA P-384; devid accepts ECDSA P-256 only");

    // An RSA key made by openssl.
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.key",
        ],
    );
    let err =
        Ca::import(&data, &issuing.pem, &read(dir, "rsa.key"), &chain, None).expect_err("rsa");
    assert_invalid(err, "RSA");

    // A SEC1 key gets a hint.
    let err = Ca::import(
        &data,
        &issuing.pem,
        "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n",
        &chain,
        None,
    )
    .expect_err("sec1");
    assert_invalid(err, "openssl pkcs8 -topk8");

    // A chain that does not link: another company's root.
    let other_root = self_signed("Other Root");
    let err = Ca::import(
        &data,
        &issuing.pem,
        &key,
        &format!("{}{}", policy.pem, other_root.pem),
        None,
    )
    .expect_err("unlinked");
    assert_invalid(err, "does not link");
    // Same name, different key: the name links, the signature does not.
    let impostor = self_signed("Acme Corp Root");
    let err = Ca::import(
        &data,
        &issuing.pem,
        &key,
        &format!("{}{}", policy.pem, impostor.pem),
        None,
    )
    .expect_err("impostor");
    assert_invalid(err, "signature does not verify");
    // A chain without its root.
    let err = Ca::import(&data, &issuing.pem, &key, &policy.pem, None).expect_err("no root");
    assert_invalid(err, "self-signed root");
    // Garbage chain.
    let err = Ca::import(&data, &issuing.pem, &key, "nope", None).expect_err("garbage");
    assert!(matches!(err, CaError::InvalidCa(_)), "{err:?}");

    // An expired issuing certificate.
    let mut old = ca_params("Old CA", Some(0), ca_usages());
    old.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    old.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let old = signed(old, p256(), &policy);
    let err =
        Ca::import(&data, &old.pem, &old.key.serialize_pem(), &chain, None).expect_err("expired");
    assert_invalid(err, "not valid now");

    assert!(!data.join("ca").exists(), "refused imports write nothing");

    // And the good one still imports; the chain may also start with the issuing certificate.
    Ca::import(
        &data,
        &issuing.pem,
        &key,
        &format!("{}{chain}", issuing.pem),
        None,
    )
    .expect("import");
    assert!(data.join("ca/issuing.crt").exists());
}

#[test]
fn a_second_server_can_import_the_first_servers_ca() {
    // Scale-out with separate data directories: copy the issuing CA over by import.
    let tmp = tempfile::tempdir().expect("tmp");
    let (first, _) = Ca::init_or_load(&tmp.path().join("a"), None, Some("Acme")).expect("init");
    let ca_dir = tmp.path().join("a/ca");
    let second = Ca::import(
        &tmp.path().join("b"),
        &read(&ca_dir, "issuing.crt"),
        &read(&ca_dir, "issuing.key"),
        &read(&ca_dir, "chain.pem"),
        None,
    )
    .expect("import");
    assert_eq!(second.chain_pem(), first.chain_pem());
    assert_eq!(second.issuing_key_id(), first.issuing_key_id());
    let dir = tmp.path();
    ca_common::write_ca_pems(dir, &first);
    write(dir, "dev.pem", issue(&second, "dev1"));
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "dev.pem",
        ],
    );
    assert!(out.contains("dev.pem: OK"), "{out}");
}
