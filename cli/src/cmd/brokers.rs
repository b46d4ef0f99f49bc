//! Broker enrolment, per-model settings and per-device broker settings: `devid broker`,
//! `devid model`, and `devid device status|policy|allowlist`.

use std::process::ExitCode;

use devid_core::api::{
    AllowList, BrokerCertificate, BrokerEnrollRequest, DeviceStatus, ModelList, ModelSettings,
    PolicyUpdate, TopicPolicy,
};
use devid_core::{Cidr, MessageAuth, TopicFilter};

use crate::cli::{BrokerCommand, ModelCommand, OutputFormat};
use crate::client::{seg, Api};
use crate::error::{CliError, Exit, Result};
use crate::table::{self, Table};

pub fn status_text(s: &DeviceStatus) -> String {
    let p = s.policy.clone().unwrap_or_default();
    table::fields(&[
        ("client_id", s.client_id.clone()),
        ("status", s.status.as_str().to_string()),
        ("model", table::opt(&s.model)),
        ("revoked_serials", list(&s.revoked_serials)),
        ("publish", list(&p.publish)),
        ("subscribe", list(&p.subscribe)),
        (
            "allowed_cidrs",
            if s.allowed_cidrs.is_empty() {
                "any".into()
            } else {
                s.allowed_cidrs.join(",")
            },
        ),
        ("message_auth", s.message_auth.to_string()),
    ])
}

/// The filters as the API carries them: core's text of each.
fn texts(filters: Option<Vec<TopicFilter>>) -> Option<Vec<String>> {
    filters.map(|v| v.into_iter().map(TopicFilter::into_string).collect())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

fn print_status(out: OutputFormat, s: &DeviceStatus) -> Result<ExitCode> {
    match out {
        OutputFormat::Json => super::print_json(s),
        OutputFormat::Table => super::print_text(&status_text(s)),
    }
}

pub async fn status(api: &Api, out: OutputFormat, id: &str) -> Result<ExitCode> {
    let s: DeviceStatus = api.get(&format!("/v1/devices/{}/status", seg(id))).await?;
    print_status(out, &s)
}

pub async fn policy(
    api: &Api,
    out: OutputFormat,
    id: &str,
    publish: Option<Vec<TopicFilter>>,
    subscribe: Option<Vec<TopicFilter>>,
    message_auth: Option<MessageAuth>,
) -> Result<ExitCode> {
    let (publish, subscribe) = (texts(publish), texts(subscribe));
    if publish.is_none() && subscribe.is_none() && message_auth.is_none() {
        return Err(CliError::usage(
            "give --publish, --subscribe or --message-auth",
        ));
    }
    let topics = if publish.is_some() || subscribe.is_some() {
        // The API takes both lists; the one not named keeps its current value.
        let current: DeviceStatus = api.get(&format!("/v1/devices/{}/status", seg(id))).await?;
        let cur = current.policy.unwrap_or_default();
        Some(TopicPolicy {
            publish: publish.unwrap_or(cur.publish),
            subscribe: subscribe.unwrap_or(cur.subscribe),
        })
    } else {
        None
    };
    let s: DeviceStatus = api
        .put(
            &format!("/v1/devices/{}/policy", seg(id)),
            &PolicyUpdate {
                topics,
                message_auth: message_auth.map(|m| m.to_string()),
            },
        )
        .await?;
    print_status(out, &s)
}

pub async fn allowlist(
    api: &Api,
    out: OutputFormat,
    id: &str,
    cidrs: Vec<Cidr>,
) -> Result<ExitCode> {
    // Checked by core's CIDR rule when the command line was read; the canonical form is sent.
    let cidrs = cidrs.iter().map(Cidr::to_string).collect();
    let s: DeviceStatus = api
        .put(
            &format!("/v1/devices/{}/allowlist", seg(id)),
            &AllowList { cidrs },
        )
        .await?;
    print_status(out, &s)
}

fn model_fields(m: &ModelSettings) -> Vec<(&'static str, String)> {
    let t = m.topics.clone().unwrap_or_default();
    vec![
        ("name", m.name.clone()),
        (
            "client_id_prefix",
            m.client_id_prefix.clone().unwrap_or_else(|| {
                format!(
                    "{} (derived)",
                    devid_core::clientid::default_prefix(&m.name)
                )
            }),
        ),
        ("publish", list(&t.publish)),
        ("subscribe", list(&t.subscribe)),
        (
            "message_auth",
            m.message_auth
                .clone()
                .unwrap_or_else(|| MessageAuth::default().to_string()),
        ),
        (
            "ldevid_validity",
            m.ldevid_validity.unwrap_or_default().to_string(),
        ),
        (
            "renewal_grace",
            m.renewal_grace.unwrap_or_default().to_string(),
        ),
        (
            "connect_with",
            m.connect_with.unwrap_or_default().to_string(),
        ),
    ]
}

pub async fn model(api: &Api, out: OutputFormat, c: ModelCommand) -> Result<ExitCode> {
    match c {
        ModelCommand::List => {
            let l: ModelList = api.get("/v1/models").await?;
            match out {
                OutputFormat::Json => super::print_json(&l),
                OutputFormat::Table => {
                    let mut t = Table::new(&[
                        "name",
                        "client_id_prefix",
                        "message_auth",
                        "publish",
                        "subscribe",
                    ]);
                    for m in &l.items {
                        let f = model_fields(m);
                        t.row(vec![
                            f[0].1.clone(),
                            f[1].1.clone(),
                            f[4].1.clone(),
                            f[2].1.clone(),
                            f[3].1.clone(),
                        ]);
                    }
                    super::print_text(&t.render())
                }
            }
        }
        ModelCommand::Show { model } => {
            let m: ModelSettings = api
                .get(&format!("/v1/models/{}", seg(model.as_str())))
                .await?;
            match out {
                OutputFormat::Json => super::print_json(&m),
                OutputFormat::Table => super::print_text(&table::fields(&model_fields(&m))),
            }
        }
        ModelCommand::Set {
            model,
            prefix,
            publish,
            subscribe,
            message_auth: ma,
            ldevid_validity,
            renewal_grace,
            connect_with,
        } => {
            if let Some(p) = &prefix {
                devid_core::clientid::validate_prefix(p)
                    .map_err(|e| CliError::usage(format!("--prefix {p:?}: {e}")))?;
            }
            // Unnamed settings keep their values: start from the current ones, if any.
            let mut m = match api
                .get::<ModelSettings>(&format!("/v1/models/{}", seg(model.as_str())))
                .await
            {
                Ok(m) => m,
                Err(e) if e.exit == Exit::NotFound => ModelSettings {
                    name: model.to_string(),
                    client_id_prefix: None,
                    topics: None,
                    message_auth: None,
                    ldevid_validity: None,
                    renewal_grace: None,
                    connect_with: None,
                },
                Err(e) => return Err(e),
            };
            m.name = model.to_string();
            if prefix.is_some() {
                m.client_id_prefix = prefix;
            }
            let (publish, subscribe) = (texts(publish), texts(subscribe));
            if publish.is_some() || subscribe.is_some() {
                let cur = m.topics.clone().unwrap_or_default();
                m.topics = Some(TopicPolicy {
                    publish: publish.unwrap_or(cur.publish),
                    subscribe: subscribe.unwrap_or(cur.subscribe),
                });
            }
            if let Some(ma) = ma {
                m.message_auth = Some(ma.to_string());
            }
            m.ldevid_validity = ldevid_validity.or(m.ldevid_validity);
            m.renewal_grace = renewal_grace.or(m.renewal_grace);
            m.connect_with = connect_with.or(m.connect_with);
            let m: ModelSettings = api
                .put(&format!("/v1/models/{}", seg(model.as_str())), &m)
                .await?;
            match out {
                OutputFormat::Json => super::print_json(&m),
                OutputFormat::Table => super::print_text(&table::fields(&model_fields(&m))),
            }
        }
    }
}

pub async fn broker(api: &Api, out: OutputFormat, c: BrokerCommand) -> Result<ExitCode> {
    let BrokerCommand::Enroll { name, out: dir } = c;
    // Checked by core's DNS-name rule when the command line was read.
    let name = name.into_string();
    super::create_dir(&dir)?;
    let key_path = dir.join(format!("{name}.key"));
    // The key is written (0600) before its CSR is sent; an existing key is reused.
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| {
            CliError::failed(format!("{} is not a usable key: {e}", key_path.display()))
        })?,
        Err(_) => {
            let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| CliError::failed(format!("cannot make a key pair: {e}")))?;
            super::write_private(&key_path, k.serialize_pem().as_bytes())?;
            k
        }
    };
    let mut params = rcgen::CertificateParams::new(vec![name.clone()])
        .map_err(|e| CliError::usage(format!("--name {name:?}: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.as_str());
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| CliError::failed(format!("cannot make a CSR: {e}")))?;
    let cert: BrokerCertificate = api
        .post(
            "/v1/brokers",
            &BrokerEnrollRequest {
                name: name.clone(),
                csr,
            },
        )
        .await?;
    super::write_public(
        &dir.join(format!("{name}.crt")),
        cert.certificate.as_bytes(),
    )?;
    super::write_public(&dir.join("chain.pem"), cert.chain.as_bytes())?;
    match out {
        OutputFormat::Json => super::print_json(&cert),
        OutputFormat::Table => super::print_text(&table::fields(&[
            ("name", cert.name.clone()),
            ("serial", cert.serial.clone()),
            ("not_before", cert.not_before.clone()),
            ("not_after", cert.not_after.clone()),
            ("fingerprint_sha256", cert.fingerprint_sha256.clone()),
            ("key", key_path.display().to_string()),
            (
                "certificate",
                dir.join(format!("{name}.crt")).display().to_string(),
            ),
            ("chain", dir.join("chain.pem").display().to_string()),
        ])),
    }
}
