//! The agent's renewal: its flags, `devid-agent renew` (one attempt) and the renewal loop of
//! `devid-agent connect --stay --renew est|mqtt`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use devid_core::HumanDuration;
use devid_device::credentials::{load_certs, load_key};
use devid_device::renew::engine::{self, Credential, Decision, Outcome, Policy};
use devid_device::renew::est::EstClient;
use devid_device::renew::files::Pair;
use devid_device::renew::mqtt::MqttRenewal;
use devid_device::renew::{unix_now, RenewTransport, Renewer, Report, Settings};
use devid_device::{Client, Event, Rotation};

use crate::{connect, print_event, setup, Common, Failure};

/// How the LDevID is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Via {
    /// EST (RFC 7030) over HTTPS: simpleenroll with the IDevID, simplereenroll with the LDevID.
    Est,
    /// In band, over the agent's MQTT connection.
    Mqtt,
    /// Never: the agent connects with --cert/--key as given.
    Off,
}

/// Renewal of the operational certificate (LDevID).
#[derive(Args, Clone, Debug)]
pub(crate) struct RenewArgs {
    /// How to get and renew the LDevID. With est or mqtt, --cert/--key are the IDevID (birth
    /// certificate, never modified) and the agent connects with its LDevID while it is valid.
    #[arg(long, value_enum, default_value_t = Via::Off)]
    renew: Via,
    /// Where the LDevID lives (ldevid.crt, ldevid.key, renew.state); default: `ldevid/` next to
    /// --key.
    #[arg(long)]
    ldevid_dir: Option<PathBuf>,
    /// The EST server: https://HOST:PORT (paths under /.well-known/est/ are added).
    #[arg(long)]
    est_url: Option<String>,
    /// EST label (/.well-known/est/LABEL/...), e.g. the device's model.
    #[arg(long)]
    est_label: Option<String>,
    /// Trust anchors for the EST server's TLS certificate (default: --root).
    #[arg(long)]
    est_ca: Option<PathBuf>,
    /// Run this shell command after each new LDevID is installed, with DEVID_CERT, DEVID_KEY,
    /// DEVID_SERIAL and DEVID_NOT_AFTER set.
    #[arg(long)]
    exec: Option<String>,
    /// How long after expiry the server accepts the LDevID for a re-enroll (the model's
    /// renewal_grace); past it the agent enrolls with the IDevID.
    #[arg(long, default_value = "30d")]
    renewal_grace: HumanDuration,
    /// First retry delay while the server is unreachable (doubles, with jitter).
    #[arg(long, default_value = "30s")]
    retry_min: HumanDuration,
    /// Longest retry delay.
    #[arg(long, default_value = "1h")]
    retry_max: HumanDuration,
    /// The first enrollment waits a delay drawn uniformly from [0, this), once per device, so
    /// that devices switched on together do not enroll in the same second (whole seconds: 1s
    /// enrolls at once).
    #[arg(long, default_value = "60s")]
    enroll_jitter: HumanDuration,
    /// Renew with the current key instead of a new key each time.
    #[arg(long)]
    keep_key: bool,
}

impl RenewArgs {
    pub(crate) fn enabled(&self) -> bool {
        self.renew != Via::Off
    }

    fn dir(&self, common: &Common) -> PathBuf {
        self.ldevid_dir.clone().unwrap_or_else(|| {
            common
                .key
                .parent()
                .map(|p| p.join("ldevid"))
                .unwrap_or_else(|| PathBuf::from("ldevid"))
        })
    }

    fn settings(&self) -> Settings {
        Settings {
            policy: Policy {
                renewal_grace: self.renewal_grace.to_std(),
                retry_min: self.retry_min.to_std().max(Duration::from_secs(1)),
                retry_max: self.retry_max.to_std().max(Duration::from_secs(1)),
                enroll_jitter: self.enroll_jitter.to_std(),
            },
            rekey: !self.keep_key,
            exec: self.exec.clone(),
        }
    }

    fn est(&self, common: &Common) -> Result<EstClient, Failure> {
        let url = self
            .est_url
            .as_deref()
            .ok_or_else(|| Failure::usage("--renew est needs --est-url"))?;
        let ca = self.est_ca.as_ref().unwrap_or(&common.root);
        let roots = load_certs(ca).map_err(|e| Failure::usage(e.to_string()))?;
        EstClient::new(url, self.est_label.as_deref(), roots).map_err(Failure::usage)
    }
}

/// The renewer over the IDevID in --cert/--key.
fn open(common: &Common, args: &RenewArgs) -> Result<Renewer, Failure> {
    let idevid = Pair {
        chain: load_certs(&common.cert).map_err(|e| Failure::usage(e.to_string()))?,
        key: load_key(&common.key).map_err(|e| Failure::usage(e.to_string()))?,
    };
    Renewer::open(&args.dir(common), idevid, args.settings())
        .map_err(|e| Failure::failed(e.to_string()))
}

/// `Common` pointing at the pair to connect with.
fn common_for(common: &Common, renewer: &Renewer) -> Result<(Credential, Common), Failure> {
    let (cred, _) = renewer
        .connect_pair(unix_now())
        .map_err(|e| Failure::failed(e.to_string()))?;
    let mut c = common.clone();
    if cred == Credential::Ldevid {
        let (cert, key) = renewer.paths();
        c.cert = cert;
        c.key = key;
    }
    Ok((cred, c))
}

fn print_report(r: &Report, renewer: &Renewer, json: bool) {
    let name = |c: Credential| match c {
        Credential::Idevid => "idevid",
        Credential::Ldevid => "ldevid",
    };
    let call = match r.call {
        engine::Call::Enroll => "simpleenroll",
        engine::Call::Reenroll => "simplereenroll",
    };
    if r.outcome == Outcome::Issued {
        let not_after = renewer.ldevid().ok().flatten().map(|(_, _, v)| v.not_after);
        if json {
            println!(
                "{}",
                serde_json::json!({"event": "renewed", "with": name(r.with), "call": call,
                    "serial": r.serial, "not_after": not_after})
            );
        } else {
            println!(
                "renewed serial={} with={} call={call} not_after={}",
                r.serial.as_deref().unwrap_or("?"),
                name(r.with),
                not_after.unwrap_or(0)
            );
        }
    } else {
        let next = renewer.state.retry.next_try;
        let err = r.error.as_deref().unwrap_or("");
        if json {
            println!(
                "{}",
                serde_json::json!({"event": "renew_failed", "with": name(r.with), "call": call,
                    "outcome": format!("{:?}", r.outcome), "error": err, "next_try": next,
                    "attempts": renewer.state.retry.attempts})
            );
        } else {
            println!(
                "renewal failed with={} call={call}: {err} (attempt {}, next try in {} s)",
                name(r.with),
                renewer.state.retry.attempts,
                next.saturating_sub(unix_now())
            );
        }
    }
}

/// Attempts while the decision is "now", at most a few in a row (a refused LDevID is followed
/// at once by the IDevID). Returns whether a new pair was installed.
async fn renew_due<T: RenewTransport>(
    renewer: &mut Renewer,
    transport: &T,
    force: bool,
    json: bool,
) -> Result<bool, Failure> {
    let fail = |e: devid_device::renew::RenewError| Failure::failed(e.to_string());
    for i in 0..3 {
        let decision = renewer.plan(unix_now()).map_err(fail)?;
        let (with, call) = match decision {
            Decision::Renew { with, call } => (with, call),
            Decision::Wait { .. } if force && i == 0 => {
                let with = renewer.connect_pair(unix_now()).map_err(fail)?.0;
                (with, engine::Call::Reenroll)
            }
            Decision::Wait { .. } => return Ok(false),
        };
        let report = renewer.attempt(transport, with, call).await.map_err(fail)?;
        print_report(&report, renewer, json);
        match report.outcome {
            Outcome::Issued => return Ok(true),
            Outcome::Refused(Credential::Ldevid) => continue,
            _ => return Ok(false),
        }
    }
    Ok(false)
}

/// `devid-agent renew`.
#[derive(Args)]
pub(crate) struct RenewCmd {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    renew: RenewArgs,
    /// Renew even if not due yet.
    #[arg(long)]
    force: bool,
    /// Only show the LDevID, when it is due and the retry state (JSON); change nothing.
    #[arg(long)]
    status: bool,
}

/// What `renew --status` shows.
fn status(renewer: &mut Renewer) -> Result<serde_json::Value, Failure> {
    let fail = |e: devid_device::renew::RenewError| Failure::failed(e.to_string());
    let decision = renewer.plan(unix_now()).map_err(fail)?;
    let ldevid = renewer.ldevid().map_err(fail)?;
    let previous = renewer
        .store
        .previous()
        .map_err(|e| Failure::failed(e.to_string()))?
        .is_some();
    let s = &renewer.state;
    let next = match decision {
        Decision::Wait { until } => serde_json::json!({"wait_until": until}),
        Decision::Renew { with, call } => {
            serde_json::json!({"renew_now": {"with": format!("{with:?}"), "call": format!("{call:?}")}})
        }
    };
    Ok(serde_json::json!({
        "ldevid": ldevid.map(|(_, serial, v)| serde_json::json!({
            "serial": serial, "not_before": v.not_before, "not_after": v.not_after})),
        "due": s.due,
        "enroll_at": s.enroll_at,
        "next": next,
        "retry": {"attempts": s.retry.attempts, "next_try": s.retry.next_try,
                  "ldevid_refused": s.retry.ldevid_refused},
        "phase": s.phase,
        "previous_pair_kept": previous,
    }))
}

/// `devid-agent renew`: one renewal now if due (or with --force), then exit (0 if the LDevID
/// is current afterwards).
pub(crate) async fn renew_once(cmd: RenewCmd) -> Result<(), Failure> {
    let RenewCmd {
        common,
        renew: args,
        force,
        status: only_status,
    } = cmd;
    let mut renewer = open(&common, &args)?;
    if only_status {
        println!("{}", status(&mut renewer)?);
        return Ok(());
    }
    renewer.run_hook().await;
    let installed = match args.renew {
        Via::Off => return Err(Failure::usage("renew needs --renew est or --renew mqtt")),
        Via::Est => renew_due(&mut renewer, &args.est(&common)?, force, common.json).await?,
        Via::Mqtt => {
            let (_, c) = common_for(&common, &renewer)?;
            let s = setup(&c)?;
            let client = connect(&s, Rotation::default()).await?;
            let r = renew_due(&mut renewer, &mqtt_transport(&client), force, common.json).await;
            client.disconnect().await?;
            r?
        }
    };
    let status = renewer
        .plan(unix_now())
        .map_err(|e| Failure::failed(e.to_string()))?;
    match status {
        Decision::Wait { until } if renewer.state.retry.attempts == 0 => {
            if !installed && !common.json {
                println!("not due; next renewal at {until} (unix)");
            }
            Ok(())
        }
        _ if installed => Ok(()),
        _ => Err(Failure::failed("the LDevID was not renewed")),
    }
}

/// The MQTT in-band transport over an open connection.
fn mqtt_transport(client: &Client) -> MqttRenewal<'_> {
    MqttRenewal {
        client,
        timeout: Duration::from_secs(60),
    }
}

/// `devid-agent connect --stay --renew est|mqtt`: stays connected, renews when due, reconnects
/// with the new certificate, backs off while the broker or the server is unreachable.
pub(crate) async fn stay(common: Common, args: RenewArgs) -> Result<(), Failure> {
    let mut renewer = open(&common, &args)?;
    renewer.run_hook().await;
    let est = match args.renew {
        Via::Est => Some(args.est(&common)?),
        _ => None,
    };
    let policy = args.settings().policy;
    let mut failures = 0u32;
    loop {
        // EST needs no connection: a due renewal (a first enrollment above all, which a model
        // with connect_with = ldevid requires) happens before connecting.
        if let Some(est) = &est {
            renew_due(&mut renewer, est, false, common.json).await?;
        }
        let (cred, c) = common_for(&common, &renewer)?;
        let client = match setup(&c) {
            Ok(s) => connect(&s, common.rotation()).await,
            Err(f) => Err(f),
        };
        let mut client = match client {
            Ok(client) => client,
            Err(f) => {
                failures += 1;
                let wait = engine::backoff(&policy, failures, jitter());
                eprintln!(
                    "devid-agent: {} (with the {}); retrying in {:.0} s",
                    f.msg,
                    if cred == Credential::Ldevid {
                        "LDevID"
                    } else {
                        "IDevID"
                    },
                    wait.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        };
        failures = 0;
        if cred == Credential::Ldevid {
            renewer
                .confirm()
                .map_err(|e| Failure::failed(e.to_string()))?;
        }
        loop {
            let now = unix_now();
            let decision = renewer
                .plan(now)
                .map_err(|e| Failure::failed(e.to_string()))?;
            let wait = match decision {
                // Re-checked at least hourly (a suspended device's clock jumps).
                Decision::Wait { until } => {
                    Renewer::wait(now, until).min(Duration::from_secs(3_600))
                }
                Decision::Renew { .. } => Duration::ZERO,
            };
            let next = tokio::select! {
                ev = client.next_event() => Next::Event(ev),
                _ = tokio::time::sleep(wait) => Next::Due,
                _ = tokio::signal::ctrl_c() => Next::Quit,
            };
            match next {
                Next::Event(Some(ev @ (Event::Disconnected { .. } | Event::Closed(_)))) => {
                    print_event(&ev, common.json);
                    break;
                }
                Next::Event(Some(ev)) => print_event(&ev, common.json),
                Next::Event(None) => break,
                Next::Quit => {
                    let _ = client.disconnect().await;
                    return Ok(());
                }
                Next::Due => {
                    let installed = match &est {
                        Some(est) => renew_due(&mut renewer, est, false, common.json).await?,
                        None => {
                            let t = mqtt_transport(&client);
                            renew_due(&mut renewer, &t, false, common.json).await?
                        }
                    };
                    if installed {
                        // Reconnect with the new pair; the old one stays until that works.
                        let _ = client.disconnect().await;
                        break;
                    }
                }
            }
        }
    }
}

/// What woke the connected loop.
enum Next {
    Event(Option<Event>),
    Due,
    Quit,
}

fn jitter() -> engine::Unit {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    engine::Unit::from_bits(u64::from_be_bytes(b))
}
