//! The certificate profiles, checked field by field with x509-parser on real signed output.

use std::time::Duration;

use devid_core::csr::parse_csr_pem;
use devid_core::profile::{
    broker_params, cap_to_issuer, device_params, issuing_ca_params, new_serial, no_expiry,
    root_ca_params, CaCertSettings, DeviceIdentity, Profile, ProfileError, ProfileSettings,
    Validity, BACKDATE_SECS, DEFAULT_ISSUING_YEARS, DEFAULT_ROOT_YEARS, ISSUING_CN, ROOT_CN,
};
use rcgen::{CertificateParams, Issuer, KeyPair};
use ring::rand::SystemRandom;
use time::macros::datetime;
use time::OffsetDateTime;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_CRL_DISTRIBUTION_POINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::{FromDer, X509Certificate};

const NOW: OffsetDateTime = datetime!(2026-11-25 13:00:00.123456 UTC);

struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

fn test_ca() -> TestCa {
    let rng = SystemRandom::new();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let serial = new_serial(NOW.unix_timestamp(), &rng).expect("serial");
    let params = root_ca_params(&root_settings(), &serial, NOW).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let der = cert.der().to_vec();
    let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key).expect("issuer");
    TestCa { issuer, der }
}

fn device_key() -> (KeyPair, devid_core::csr::CheckedCsr) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let checked = parse_csr_pem(&csr).expect("csr checks");
    (key, checked)
}

fn sign(ca: &TestCa, params: &CertificateParams) -> Vec<u8> {
    let (_key, csr) = device_key();
    params
        .signed_by(csr.public_key(), &ca.issuer)
        .expect("sign")
        .der()
        .to_vec()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("parses");
    assert!(rest.is_empty());
    cert
}

fn settings() -> ProfileSettings {
    ProfileSettings {
        organization: Some("Acme Devices".into()),
        validity: Validity::Years(20),
        crl_url: Some("http://127.0.0.1:8080/v1/crl".into()),
    }
}

fn ext_critical(cert: &X509Certificate<'_>, oid: &x509_parser::oid_registry::Oid<'_>) -> bool {
    cert.get_extension_unique(oid)
        .expect("unique")
        .unwrap_or_else(|| panic!("extension {oid} present"))
        .critical
}

#[test]
fn idevid_has_every_profile_field() {
    let ca = test_ca();
    let ca_cert = parse(&ca.der);
    let serial = new_serial(NOW.unix_timestamp(), &SystemRandom::new()).expect("serial");
    let id = DeviceIdentity {
        client_id: "thermo7K3M9Q2XW4HZTB8R5a",
        hardware_serial: "SN-0042/7",
    };
    // 24 characters: one too many for a ClientID.
    assert!(matches!(
        device_params(Profile::IDevId, &id, &settings(), &serial, NOW),
        Err(ProfileError::ClientId(_))
    ));
    let id = DeviceIdentity {
        client_id: "thermo7K3M9Q2XW4HZTB8R5",
        hardware_serial: "SN-0042/7",
    };
    let params = device_params(Profile::IDevId, &id, &settings(), &serial, NOW).expect("params");
    let der = sign(&ca, &params);
    let cert = parse(&der);

    // Subject: CN, serialNumber (PrintableString), O.
    let subject = cert.subject();
    let cn: Vec<_> = subject.iter_common_name().collect();
    assert_eq!(cn.len(), 1);
    assert_eq!(cn[0].as_str().expect("str"), "thermo7K3M9Q2XW4HZTB8R5");
    let sn_oid = x509_parser::oid_registry::Oid::from(&[2, 5, 4, 5]).expect("oid");
    let sns: Vec<_> = subject.iter_by_oid(&sn_oid).collect();
    assert_eq!(sns.len(), 1);
    assert_eq!(sns[0].as_str().expect("str"), "SN-0042/7");
    assert_eq!(sns[0].attr_value().tag(), Tag::PrintableString);
    let o: Vec<_> = subject.iter_organization().collect();
    assert_eq!(o[0].as_str().expect("str"), "Acme Devices");
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());

    // Serial: exactly 16 bytes, positive, as given.
    assert_eq!(cert.raw_serial(), serial.as_slice());
    assert_eq!(cert.raw_serial().len(), 16);
    assert!(cert.raw_serial()[0] & 0x80 == 0 && cert.raw_serial()[0] != 0);

    // Validity: notBefore backdated 60 s (whole seconds), notAfter + 20 years.
    assert_eq!(
        cert.validity().not_before.to_datetime(),
        datetime!(2026-11-25 13:00:00 UTC) - time::Duration::seconds(BACKDATE_SECS)
    );
    assert_eq!(
        cert.validity().not_after.to_datetime(),
        datetime!(2046-11-25 13:00:00 UTC)
    );

    // SAN URI only, non-critical (the subject is not empty).
    let san = cert
        .subject_alternative_name()
        .expect("unique")
        .expect("SAN");
    assert!(!san.critical);
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("urn:devid:thermo7K3M9Q2XW4HZTB8R5")]
    );

    // keyUsage: digitalSignature only, critical.
    let ku = cert.key_usage().expect("unique").expect("KU");
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert_eq!(ku.value.flags, 1, "only digitalSignature");

    // EKU: clientAuth only.
    let eku = cert.extended_key_usage().expect("unique").expect("EKU");
    assert!(eku.value.client_auth);
    assert!(!eku.value.server_auth && !eku.value.any && eku.value.other.is_empty());
    assert!(!ext_critical(&cert, &OID_X509_EXT_EXTENDED_KEY_USAGE));

    // basicConstraints CA:FALSE, critical.
    let bc = cert.basic_constraints().expect("unique").expect("BC");
    assert!(bc.critical);
    assert!(!bc.value.ca);
    assert!(!cert.is_ca());

    // AKI = the CA's SKI; SKI = SHA-256 of the device's SubjectPublicKeyInfo DER, first
    // 160 bits (rcgen's KeyIdMethod::Sha256, RFC 7093 section 2 method 4 style).
    let ca_ski = ca_cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("CA SKI");
    let mut aki = None;
    let mut ski = None;
    let mut crl = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::CRLDistributionPoints(dps) => {
                let names: Vec<String> = dps
                    .points
                    .iter()
                    .flat_map(|p| match &p.distribution_point {
                        Some(DistributionPointName::FullName(names)) => {
                            names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>()
                        }
                        _ => vec![],
                    })
                    .collect();
                crl = Some(names);
            }
            _ => {}
        }
    }
    assert_eq!(aki.expect("AKI"), ca_ski);
    let spki_hash = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    assert_eq!(ski.expect("SKI"), spki_hash.as_ref()[..20].to_vec());
    assert_eq!(
        crl.expect("CRL DP"),
        vec![format!(
            "{:?}",
            GeneralName::URI("http://127.0.0.1:8080/v1/crl")
        )]
    );

    // Exactly these extensions, nothing from the CSR.
    let mut oids: Vec<String> = cert
        .extensions()
        .iter()
        .map(|e| e.oid.to_id_string())
        .collect();
    oids.sort();
    let mut want: Vec<String> = [
        &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
        &OID_X509_EXT_SUBJECT_ALT_NAME,
        &OID_X509_EXT_KEY_USAGE,
        &OID_X509_EXT_EXTENDED_KEY_USAGE,
        &OID_X509_EXT_CRL_DISTRIBUTION_POINTS,
        &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        &OID_X509_EXT_BASIC_CONSTRAINTS,
    ]
    .iter()
    .map(|o| o.to_id_string())
    .collect();
    want.sort();
    assert_eq!(oids, want);

    // The signature verifies under the CA key and is ecdsa-with-SHA256.
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA");
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.2"
    );
}

#[test]
fn no_expiry_is_generalized_time_99991231235959z() {
    let ca = test_ca();
    let serial = new_serial(NOW.unix_timestamp(), &SystemRandom::new()).expect("serial");
    let id = DeviceIdentity {
        client_id: "dev1",
        hardware_serial: "HW1",
    };
    let s = ProfileSettings {
        validity: Validity::NoExpiry,
        ..ProfileSettings::default()
    };
    let der = sign(
        &ca,
        &device_params(Profile::IDevId, &id, &s, &serial, NOW).expect("params"),
    );
    let cert = parse(&der);
    assert_eq!(cert.validity().not_after.to_datetime(), no_expiry());
    // GeneralizedTime (tag 0x18), 15 bytes, "99991231235959Z".
    let mut needle = vec![0x18, 0x0f];
    needle.extend_from_slice(b"99991231235959Z");
    assert!(der.windows(needle.len()).any(|w| w == needle.as_slice()));
    // notBefore in 2026 stays UTCTime (tag 0x17) as RFC 5280 requires before 2050.
    let mut nb = vec![0x17, 0x0d];
    nb.extend_from_slice(b"261125125900Z");
    assert!(der.windows(nb.len()).any(|w| w == nb.as_slice()));
    // No O, no CRL DP when not configured.
    assert_eq!(cert.subject().iter_organization().count(), 0);
    assert!(cert
        .get_extension_unique(&OID_X509_EXT_CRL_DISTRIBUTION_POINTS)
        .expect("unique")
        .is_none());
}

#[test]
fn validity_settings_compute_not_after() {
    assert_eq!(
        Validity::Seconds(3600).not_after(NOW).expect("ok"),
        datetime!(2026-11-25 14:00:00 UTC)
    );
    assert_eq!(
        Validity::Years(2)
            .not_after(datetime!(2028-02-29 10:00:00 UTC))
            .expect("ok"),
        datetime!(2030-02-28 10:00:00 UTC)
    );
    assert_eq!(
        Validity::Years(9000).not_after(NOW).expect("ok"),
        no_expiry()
    );
    assert_eq!(
        Validity::Seconds(u64::MAX).not_after(NOW).expect("ok"),
        no_expiry()
    );
    assert!(matches!(
        Validity::Years(0).not_after(NOW),
        Err(ProfileError::Validity(_))
    ));
    assert!(matches!(
        Validity::Seconds(0).not_after(NOW),
        Err(ProfileError::Validity(_))
    ));
    assert_eq!(Validity::default(), Validity::Years(20));
}

#[test]
fn ldevid_uses_its_own_short_lifetime() {
    let ca = test_ca();
    let serial = new_serial(NOW.unix_timestamp(), &SystemRandom::new()).expect("serial");
    let id = DeviceIdentity {
        client_id: "dev1",
        hardware_serial: "HW1",
    };
    let lifetime = Duration::from_secs(7 * 24 * 3600);
    let params = device_params(Profile::LDevId { lifetime }, &id, &settings(), &serial, NOW)
        .expect("params");
    let cert_der = sign(&ca, &params);
    let cert = parse(&cert_der);
    assert_eq!(
        cert.validity().not_after.to_datetime(),
        datetime!(2026-12-02 13:00:00 UTC)
    );
    assert!(
        cert.extended_key_usage()
            .expect("u")
            .expect("EKU")
            .value
            .client_auth
    );
    for bad in [Duration::ZERO, Duration::from_secs(91 * 24 * 3600)] {
        assert!(matches!(
            device_params(
                Profile::LDevId { lifetime: bad },
                &id,
                &settings(),
                &serial,
                NOW
            ),
            Err(ProfileError::Validity(_))
        ));
    }
}

#[test]
fn broker_profile_has_server_and_client_auth_and_dns_sans() {
    let ca = test_ca();
    let serial = new_serial(NOW.unix_timestamp(), &SystemRandom::new()).expect("serial");
    let params = broker_params(
        &["mqtt.example.com", "mqtt2.example.com"],
        &ProfileSettings {
            crl_url: Some("https://devid.example.com/v1/crl".into()),
            ..ProfileSettings::broker_default()
        },
        &serial,
        NOW,
    )
    .expect("params");
    let der = sign(&ca, &params);
    let cert = parse(&der);
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .expect("CN")
            .as_str()
            .expect("str"),
        "mqtt.example.com"
    );
    let san = cert.subject_alternative_name().expect("u").expect("SAN");
    assert_eq!(
        san.value.general_names,
        vec![
            GeneralName::DNSName("mqtt.example.com"),
            GeneralName::DNSName("mqtt2.example.com")
        ]
    );
    let eku = cert.extended_key_usage().expect("u").expect("EKU").value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = cert.key_usage().expect("u").expect("KU");
    assert!(ku.critical && ku.value.flags == 1);
    assert!(!cert.is_ca());
    assert_eq!(cert.raw_serial(), serial.as_slice());
    assert_eq!(
        cert.validity().not_after.to_datetime(),
        datetime!(2028-11-25 13:00:00 UTC)
    );
    assert!(ext_critical(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS));
    assert!(cert
        .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .expect("u")
        .is_some());
    assert!(cert
        .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .expect("u")
        .is_some());
    assert!(cert
        .get_extension_unique(&OID_X509_EXT_CRL_DISTRIBUTION_POINTS)
        .expect("u")
        .is_some());
}

#[test]
fn refuses_bad_names_and_settings() {
    let serial = [0x40; 16];
    let s = ProfileSettings::default();
    for bad in [
        "",
        "-a.example",
        "a..b",
        "a b.example",
        "*.example.com",
        "10.0.0.1",
        "ex_ample.com",
    ] {
        assert!(
            matches!(
                broker_params(&[bad], &s, &serial, NOW),
                Err(ProfileError::DnsName { .. })
            ),
            "{bad:?} must be refused"
        );
    }
    assert!(matches!(
        broker_params(&[], &s, &serial, NOW),
        Err(ProfileError::DnsName { .. })
    ));
    let id = |c, h| DeviceIdentity {
        client_id: c,
        hardware_serial: h,
    };
    for (c, h) in [("a/b", "x"), ("", "x"), ("a+", "x")] {
        assert!(matches!(
            device_params(Profile::IDevId, &id(c, h), &s, &serial, NOW),
            Err(ProfileError::ClientId(_))
        ));
    }
    let long = "x".repeat(65);
    for h in ["", long.as_str(), "a\nb"] {
        assert!(matches!(
            device_params(Profile::IDevId, &id("dev1", h), &s, &serial, NOW),
            Err(ProfileError::HardwareSerial(_))
        ));
    }
    for url in ["ftp://x/crl", "http://a b/crl", "/v1/crl"] {
        let s = ProfileSettings {
            crl_url: Some(url.into()),
            ..ProfileSettings::default()
        };
        assert!(matches!(s.validate(), Err(ProfileError::CrlUrl(_))));
        assert!(matches!(
            device_params(Profile::IDevId, &id("dev1", "x"), &s, &serial, NOW),
            Err(ProfileError::CrlUrl(_))
        ));
    }
    let s = ProfileSettings {
        organization: Some(String::new()),
        ..ProfileSettings::default()
    };
    assert!(matches!(s.validate(), Err(ProfileError::Organization(_))));
}

#[test]
fn hardware_serial_is_always_a_printable_string() {
    let ca = test_ca();
    let serial = new_serial(NOW.unix_timestamp(), &SystemRandom::new()).expect("serial");
    let sn_oid = x509_parser::oid_registry::Oid::from(&[2, 5, 4, 5]).expect("oid");
    let max = "9".repeat(64);
    for h in ["SN 0008 (rev 2)", "a'b+c,d-e.f/g:h=i", max.as_str()] {
        let id = DeviceIdentity {
            client_id: "dev1",
            hardware_serial: h,
        };
        let params = device_params(
            Profile::IDevId,
            &id,
            &ProfileSettings::default(),
            &serial,
            NOW,
        )
        .expect("params");
        let der = sign(&ca, &params);
        let cert = parse(&der);
        let sn = cert
            .subject()
            .iter_by_oid(&sn_oid)
            .next()
            .expect("serialNumber");
        assert_eq!(sn.attr_value().tag(), Tag::PrintableString, "{h:?}");
        assert_eq!(sn.as_str().expect("str"), h);
    }
    // Outside PrintableString: refused, never carried as a UTF8String.
    for h in [
        "SN_0010@y",
        "SN 0008*",
        "SN\u{d6}11",
        "SN\u{202e}1",
        "SN_42#\u{fc}",
        " SN1",
        "SN?",
    ] {
        let id = DeviceIdentity {
            client_id: "dev1",
            hardware_serial: h,
        };
        assert!(
            matches!(
                device_params(
                    Profile::IDevId,
                    &id,
                    &ProfileSettings::default(),
                    &serial,
                    NOW
                ),
                Err(ProfileError::HardwareSerial(_))
            ),
            "{h:?}"
        );
    }
}

#[test]
fn serials_are_positive_16_bytes_distinct_and_sort_by_time_of_issue() {
    let rng = SystemRandom::new();
    let mut seen = std::collections::HashSet::new();
    let t = NOW.unix_timestamp();
    for _ in 0..1000 {
        let s = new_serial(t, &rng).expect("serial");
        assert_eq!(
            s[0], 0x40,
            "top bit clear, next bit set: positive, 16 bytes in DER"
        );
        assert_eq!(&s[1..5], &(t as u32).to_be_bytes(), "the time of issue");
        assert!(seen.insert(s), "no repeats");
    }
    // Later serials sort after earlier ones, as bytes and as the hex the registry stores.
    let hex = |s: &[u8]| s.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut last = new_serial(t, &rng).expect("serial");
    for dt in [1, 2, 60, 86_400, 86_400 * 3650] {
        let s = new_serial(t + dt, &rng).expect("serial");
        assert!(
            s > last && hex(&s) > hex(&last),
            "{} after {}",
            hex(&s),
            hex(&last)
        );
        last = s;
    }
}

#[test]
fn ca_profiles_are_cas_with_the_right_key_usage() {
    let rng = SystemRandom::new();
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let root_params = root_ca_params(
        &root_settings(),
        &new_serial(NOW.unix_timestamp(), &rng).expect("s"),
        NOW,
    )
    .expect("root");
    let root = root_params.self_signed(&root_key).expect("root");
    let root_der = root.der().to_vec();
    let root_cert = parse(&root_der);
    assert!(root_cert.is_ca());
    let bc = root_cert.basic_constraints().expect("u").expect("BC");
    assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint.is_none());
    let ku = root_cert.key_usage().expect("u").expect("KU");
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    let root_not_after = root_cert.validity().not_after.to_datetime();
    assert_eq!(
        root_not_after,
        datetime!(2056-11-25 13:00:00 UTC),
        "30 years"
    );

    let issuer = Issuer::from_ca_cert_der(&root_der.clone().into(), root_key).expect("issuer");
    let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let int_settings = CaCertSettings {
        common_name: ISSUING_CN,
        validity: Validity::Years(DEFAULT_ISSUING_YEARS),
        crl_url: Some("http://ca.example/v1/crl/root"),
        ..root_settings()
    };
    let int_params = issuing_ca_params(
        &int_settings,
        &new_serial(NOW.unix_timestamp(), &rng).expect("s"),
        NOW,
        root_not_after,
    )
    .expect("int");
    let int = int_params.signed_by(&int_key, &issuer).expect("int");
    let int_der = int.der().to_vec();
    let int_cert = parse(&int_der);
    let bc = int_cert.basic_constraints().expect("u").expect("BC");
    assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint == Some(0));
    let ku = int_cert.key_usage().expect("u").expect("KU");
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
    assert!(int_cert
        .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .expect("u")
        .is_some());
    int_cert
        .verify_signature(Some(root_cert.public_key()))
        .expect("signed by root");
    assert_eq!(
        int_cert.validity().not_after.to_datetime(),
        datetime!(2036-11-25 13:00:00 UTC),
        "10 years"
    );
    let dp = int_cert
        .get_extension_unique(&OID_X509_EXT_CRL_DISTRIBUTION_POINTS)
        .expect("u")
        .expect("the issuing CA names the root's CRL");
    assert!(String::from_utf8_lossy(dp.value).contains("http://ca.example/v1/crl/root"));
}

fn root_settings() -> CaCertSettings<'static> {
    CaCertSettings {
        common_name: ROOT_CN,
        organization: Some("Acme"),
        validity: Validity::Years(DEFAULT_ROOT_YEARS),
        crl_url: None,
    }
}

#[test]
fn an_issuing_ca_never_outlives_its_root() {
    let rng = SystemRandom::new();
    let root_not_after = datetime!(2027-06-01 00:00:00 UTC);
    let settings = CaCertSettings {
        common_name: ISSUING_CN,
        ..root_settings()
    };
    let params = issuing_ca_params(
        &settings,
        &new_serial(NOW.unix_timestamp(), &rng).expect("s"),
        NOW,
        root_not_after,
    )
    .expect("capped, not refused");
    assert_eq!(params.not_after, root_not_after);
    // A root that has already expired cannot have a new issuing CA.
    let err = issuing_ca_params(
        &settings,
        &new_serial(NOW.unix_timestamp(), &rng).expect("s"),
        NOW,
        NOW - time::Duration::days(1),
    )
    .expect_err("expired root");
    assert!(matches!(err, ProfileError::Validity(_)), "{err}");
}

#[test]
fn cap_to_issuer_caps_only_what_outlives_the_issuer() {
    let issuer = datetime!(2030-01-01 00:00:00 UTC);
    assert_eq!(
        cap_to_issuer(datetime!(2044-01-01 00:00:00 UTC), issuer),
        (issuer, true)
    );
    let earlier = datetime!(2029-12-31 23:59:59 UTC);
    assert_eq!(cap_to_issuer(earlier, issuer), (earlier, false));
    assert_eq!(cap_to_issuer(issuer, issuer), (issuer, false));
    // A legacy issuer without expiry caps nothing.
    assert_eq!(cap_to_issuer(earlier, no_expiry()), (earlier, false));
}
