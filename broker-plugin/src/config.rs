//! The plugin's options (`plugin_opt_<key> <value>` lines in mosquitto.conf), parsed and checked
//! before the broker starts serving. Any error here stops the broker with a clear log line.

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devid_core::duration::{Bare, HumanDuration};

/// Every key the plugin understands. Unknown keys are refused (a typo must not silently drop a
/// setting).
pub const KNOWN_KEYS: &[&str] = &[
    "service_url",
    "token_file",
    "trust_anchor",
    "broker_cert",
    "broker_key",
    "state_dir",
    "max_staleness",
    "auth_timeout",
    "broker_name",
    "ticket_key_file",
    "ticket_lifetime",
    "max_refused_messages",
    "max_pending_handshakes",
    "max_pending_per_address",
    "hello_rate",
    "hello_burst",
];

/// The checked configuration. File contents are read at start; the files are not re-read.
#[derive(Clone)]
pub struct Config {
    /// Base URL of devid-server, without a trailing slash.
    pub service_url: String,
    /// The broker-role bearer token (read from `token_file`).
    pub token: String,
    /// The devid root certificate (DER), the only trust anchor for device certificates.
    pub trust_anchor_der: Vec<u8>,
    /// The broker's certificate chain (DER, leaf first, root excluded).
    pub broker_chain_der: Vec<Vec<u8>>,
    /// The broker's PKCS#8 private key (DER).
    pub broker_key_der: Vec<u8>,
    /// Where the revocation state is cached.
    pub state_dir: PathBuf,
    /// How long the plugin keeps admitting devices while the service is unreachable.
    pub max_staleness: Duration,
    /// How long a DEVID-1 exchange may take from CONNECT to the last AUTH.
    pub auth_timeout: Duration,
    /// A name for events and the heartbeat (`broker` fields); the host name when unset.
    pub broker_name: Option<String>,
    /// Ticket keys (the file's text, checked at start): enables resumption and tickets.
    pub ticket_keys: Option<String>,
    /// Lifetime of issued tickets.
    pub ticket_lifetime: u32,
    /// Refused PUBLISHes in a row after which the connection is dropped.
    pub max_refused_messages: u32,
    /// Bounds on unfinished DEVID-1 handshakes and on ClientHellos per source address.
    pub guard: HandshakeGuard,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token or the key.
        f.debug_struct("Config")
            .field("service_url", &self.service_url)
            .field("state_dir", &self.state_dir)
            .field("max_staleness", &self.max_staleness)
            .field("auth_timeout", &self.auth_timeout)
            .field("broker_name", &self.broker_name)
            .finish_non_exhaustive()
    }
}

/// Why the options were refused; the message names the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn required<'a>(opts: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, ConfigError> {
    match opts.get(key).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(err(format!("plugin_opt_{key} is required"))),
    }
}

fn read_file(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| err(format!("plugin_opt_{key}: cannot read {path}: {e}")))
}

/// The file at `path` (named by option `key`) as text.
fn read_text(key: &str, path: &str) -> Result<String, ConfigError> {
    String::from_utf8(read_file(key, path)?)
        .map_err(|_| err(format!("plugin_opt_{key}: {path} is not UTF-8")))
}

/// A duration option in core's one grammar ([`HumanDuration`]: `90`, `90s`, `15m`, `12h`, `7d`,
/// `2w`, `1y`; a bare number is seconds, as these options always took), at least one second and
/// at most `max` seconds; `default` seconds when the option is absent.
fn seconds(
    opts: &BTreeMap<String, String>,
    key: &str,
    default: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    let Some(v) = opts.get(key) else {
        return Ok(Duration::from_secs(default));
    };
    let d = HumanDuration::parse(v.trim(), Bare::Seconds)
        .map_err(|e| err(format!("plugin_opt_{key}: {e}")))?;
    if d.as_secs() > max {
        return Err(err(format!(
            "plugin_opt_{key}: {d} is out of range (1s to {max}s)"
        )));
    }
    Ok(d.to_std())
}

/// The PEM blocks with the given tag, as DER, in the file that the required option `key`
/// names; with that file's path.
fn pem_file<'a>(
    opts: &'a BTreeMap<String, String>,
    key: &str,
    tag: &str,
) -> Result<(&'a str, Vec<Vec<u8>>), ConfigError> {
    let path = required(opts, key)?;
    let blocks = pem::parse_many(read_file(key, path)?)
        .map_err(|e| err(format!("plugin_opt_{key}: {path} is not PEM: {e}")))?;
    let ders: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == tag)
        .map(|b| b.into_contents())
        .collect();
    if ders.is_empty() {
        return Err(err(format!(
            "plugin_opt_{key}: {path} holds no {tag} block"
        )));
    }
    Ok((path, ders))
}

impl Config {
    /// Parses and checks the options, reading the files they name.
    pub fn from_options(opts: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut map = BTreeMap::new();
        for (k, v) in opts {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                return Err(err(format!(
                    "unknown option plugin_opt_{k} (known: {})",
                    KNOWN_KEYS.join(", ")
                )));
            }
            if map.insert(k.clone(), v.clone()).is_some() {
                return Err(err(format!("plugin_opt_{k} is given twice")));
            }
        }

        let service_url = required(&map, "service_url")?
            .trim_end_matches('/')
            .to_string();
        if !(service_url.starts_with("http://") || service_url.starts_with("https://")) {
            return Err(err(format!(
                "plugin_opt_service_url: {service_url:?} must start with http:// or https://"
            )));
        }

        let token_file = required(&map, "token_file")?;
        let token = read_text("token_file", token_file)?.trim().to_string();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(err(format!(
                "plugin_opt_token_file: {token_file} must hold one token"
            )));
        }

        let (anchor_path, anchors) = pem_file(&map, "trust_anchor", "CERTIFICATE")?;
        if anchors.len() != 1 {
            return Err(err(format!(
                "plugin_opt_trust_anchor: {anchor_path} must hold exactly one certificate (the devid root), found {}",
                anchors.len()
            )));
        }
        let trust_anchor_der = anchors.into_iter().next().unwrap_or_default();

        let (chain_path, mut broker_chain_der) = pem_file(&map, "broker_cert", "CERTIFICATE")?;
        // The chain sent to devices never includes the root: they have it.
        broker_chain_der.retain(|c| *c != trust_anchor_der);
        if broker_chain_der.is_empty() {
            return Err(err(format!(
                "plugin_opt_broker_cert: {chain_path} holds only the root"
            )));
        }

        let (key_path, keys) = pem_file(&map, "broker_key", "PRIVATE KEY")?;
        let broker_key_der = keys.into_iter().next().unwrap_or_default();
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &broker_key_der,
            &rng,
        )
        .map_err(|_| {
            err(format!(
                "plugin_opt_broker_key: {key_path} is not a P-256 PKCS#8 private key"
            ))
        })?;

        let state_dir = PathBuf::from(required(&map, "state_dir")?);
        check_state_dir(&state_dir)?;

        let ticket_keys = match map.get("ticket_key_file") {
            None => None,
            Some(path) => {
                let path = path.trim();
                let text = read_text("ticket_key_file", path)?;
                devid_core::protocol::TicketKeys::parse(&text)
                    .map_err(|e| err(format!("plugin_opt_ticket_key_file: {path}: {e}")))?;
                Some(text)
            }
        };
        let ticket_lifetime = seconds(&map, "ticket_lifetime", 86_400, 30 * 86_400)?;
        if map.contains_key("ticket_lifetime") && ticket_keys.is_none() {
            return Err(err(
                "plugin_opt_ticket_lifetime needs plugin_opt_ticket_key_file",
            ));
        }

        let max_refused_messages = count(&map, "max_refused_messages", 10, 1_000_000)?;

        Ok(Config {
            max_refused_messages,
            ticket_keys,
            // At most 30 days: fits a u32.
            ticket_lifetime: u32::try_from(ticket_lifetime.as_secs()).unwrap_or(u32::MAX),
            service_url,
            token,
            trust_anchor_der,
            broker_chain_der,
            broker_key_der,
            state_dir,
            max_staleness: seconds(&map, "max_staleness", 300, 7 * 86400)?,
            auth_timeout: seconds(&map, "auth_timeout", 10, 600)?,
            broker_name: map.get("broker_name").map(|s| s.trim().to_string()),
            guard: HandshakeGuard::from_map(&map)?,
        })
    }
}

/// Bounds on DEVID-1 handshakes that protect the broker's only thread: how many may be
/// unfinished at once (in total and per source address), and how many ClientHellos a source
/// address may send (a token bucket checked before any certificate check or other public-key
/// work). A source address is an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeGuard {
    /// `max_pending_handshakes`: unfinished handshakes in total (default 1000).
    pub max_pending: usize,
    /// `max_pending_per_address`: unfinished handshakes per source address (default 32).
    pub max_pending_per_address: usize,
    /// `hello_rate`: ClientHellos per second per source address (default 10).
    pub hello_rate: u32,
    /// `hello_burst`: ClientHellos a source address may send at once (default 20).
    pub hello_burst: u32,
}

impl Default for HandshakeGuard {
    fn default() -> Self {
        HandshakeGuard {
            max_pending: 1000,
            max_pending_per_address: 32,
            hello_rate: 10,
            hello_burst: 20,
        }
    }
}

/// A whole number option in `1..=max`, or `default` when absent.
fn count(
    opts: &BTreeMap<String, String>,
    key: &str,
    default: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let Some(v) = opts.get(key) else {
        return Ok(default);
    };
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(err(format!(
            "plugin_opt_{key}: {v:?} is not a number in 1..={max}"
        ))),
    }
}

impl HandshakeGuard {
    fn from_map(map: &BTreeMap<String, String>) -> Result<HandshakeGuard, ConfigError> {
        let d = HandshakeGuard::default();
        let g = HandshakeGuard {
            max_pending: count(
                map,
                "max_pending_handshakes",
                d.max_pending as u32,
                1_000_000,
            )? as usize,
            max_pending_per_address: count(
                map,
                "max_pending_per_address",
                d.max_pending_per_address as u32,
                1_000_000,
            )? as usize,
            hello_rate: count(map, "hello_rate", d.hello_rate, 100_000)?,
            hello_burst: count(map, "hello_burst", d.hello_burst, 1_000_000)?,
        };
        if g.max_pending_per_address > g.max_pending {
            return Err(err(format!(
                "plugin_opt_max_pending_per_address ({}) exceeds plugin_opt_max_pending_handshakes ({})",
                g.max_pending_per_address, g.max_pending
            )));
        }
        Ok(g)
    }
}

fn check_state_dir(dir: &Path) -> Result<(), ConfigError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        err(format!(
            "plugin_opt_state_dir: cannot create {}: {e}",
            dir.display()
        ))
    })?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok").map_err(|e| {
        err(format!(
            "plugin_opt_state_dir: {} is not writable: {e}",
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    fn self_signed() -> (String, String) {
        // A P-256 key pair and a self-signed certificate made with rcgen-free PEM: the config
        // checks only PEM framing and the key's type, so a fixed DER body is enough for the chain.
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("keygen");
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x03, 1, 2, 3]));
        (cert, key)
    }

    fn setup() -> (Files, Vec<(String, String)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed();
        let root = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x03, 9, 9, 9]));
        std::fs::write(dir.path().join("token"), "devid_abc_def\n").expect("w");
        std::fs::write(dir.path().join("root.pem"), &root).expect("w");
        std::fs::write(dir.path().join("chain.pem"), format!("{cert}{root}")).expect("w");
        std::fs::write(dir.path().join("key.pem"), key).expect("w");
        let p = |n: &str| dir.path().join(n).display().to_string();
        let opts = vec![
            ("service_url".into(), "http://127.0.0.1:1/".into()),
            ("token_file".into(), p("token")),
            ("trust_anchor".into(), p("root.pem")),
            ("broker_cert".into(), p("chain.pem")),
            ("broker_key".into(), p("key.pem")),
            ("state_dir".into(), p("state")),
        ];
        (Files { dir }, opts)
    }

    #[test]
    fn ok_minimal_options_with_defaults() {
        let (_f, opts) = setup();
        let c = Config::from_options(&opts).expect("valid");
        assert_eq!(c.service_url, "http://127.0.0.1:1");
        assert_eq!(c.token, "devid_abc_def");
        assert_eq!(c.max_staleness, Duration::from_secs(300));
        assert_eq!(c.auth_timeout, Duration::from_secs(10));
        // The root is dropped from the chain sent to devices.
        assert_eq!(c.broker_chain_der, vec![vec![0x30, 0x03, 1, 2, 3]]);
        assert!(c.state_dir.is_dir());
        assert!(!format!("{c:?}").contains("devid_abc_def"));
    }

    #[test]
    fn fail_each_missing_required_option() {
        let (_f, opts) = setup();
        for skip in [
            "service_url",
            "token_file",
            "trust_anchor",
            "broker_cert",
            "broker_key",
            "state_dir",
        ] {
            let o: Vec<_> = opts.iter().filter(|(k, _)| k != skip).cloned().collect();
            let e = Config::from_options(&o).expect_err(skip);
            assert!(e.0.contains(skip), "{skip}: {e}");
        }
    }

    #[test]
    fn ticket_keys_are_checked() {
        let (f, mut opts) = setup();
        let c = Config::from_options(&opts).expect("valid");
        assert!(c.ticket_keys.is_none());
        let path = f.dir.path().join("tickets");
        std::fs::write(&path, format!("1 {}\n", "ab".repeat(32))).expect("w");
        opts.push(("ticket_key_file".into(), path.display().to_string()));
        let c = Config::from_options(&opts).expect("valid");
        assert!(c.ticket_keys.is_some());
        assert_eq!(c.ticket_lifetime, 86_400);
        std::fs::write(&path, "1 abc\n").expect("w");
        let e = Config::from_options(&opts).expect_err("bad key");
        assert!(e.0.contains("ticket_key_file"), "{e}");
        let (_f, mut opts) = setup();
        opts.push(("ticket_lifetime".into(), "60".into()));
        assert!(
            Config::from_options(&opts).is_err(),
            "lifetime without keys"
        );
    }

    #[test]
    fn fail_bad_values() {
        let (f, opts) = setup();
        let with = |k: &str, v: &str| {
            let mut o: Vec<_> = opts.iter().filter(|(kk, _)| kk != k).cloned().collect();
            o.push((k.to_string(), v.to_string()));
            Config::from_options(&o)
        };
        assert!(with("max_staleness", "abc").is_err());
        assert!(with("max_staleness", "0").is_err());
        assert!(with("max_staleness", "-5").is_err());
        assert_eq!(
            with("max_staleness", "7").expect("ok").max_staleness,
            Duration::from_secs(7)
        );
        // Core's duration grammar, as for every duration flag and option.
        assert_eq!(
            with("max_staleness", "15m").expect("ok").max_staleness,
            Duration::from_secs(900)
        );
        assert_eq!(
            with("max_staleness", "1w").expect("ok").max_staleness,
            Duration::from_secs(7 * 86_400)
        );
        assert!(with("max_staleness", "8d").is_err(), "over 7 days");
        assert!(with("max_staleness", "+5").is_err());
        assert!(with("auth_timeout", "1h30m").is_err());
        assert!(with("auth_timeout", "100000").is_err());
        assert!(with("service_url", "ftp://x").is_err());
        assert!(with("token_file", "/nonexistent/token").is_err());
        // A certificate where the key should be.
        let root = f.dir.path().join("root.pem").display().to_string();
        assert!(with("broker_key", &root).is_err());
        // A key where the trust anchor should be.
        let key = f.dir.path().join("key.pem").display().to_string();
        assert!(with("trust_anchor", &key).is_err());
        let mut o = opts.clone();
        o.push(("sevice_url".into(), "x".into()));
        assert!(Config::from_options(&o)
            .expect_err("typo")
            .0
            .contains("unknown option"));
        let mut o = opts.clone();
        o.push(("service_url".into(), "http://x".into()));
        assert!(Config::from_options(&o).is_err());
        std::fs::write(f.dir.path().join("token"), "two words").expect("w");
        assert!(Config::from_options(&opts).is_err());
    }

    #[test]
    fn handshake_guard_defaults_and_bad_values() {
        let (_f, opts) = setup();
        let c = Config::from_options(&opts).expect("valid");
        assert_eq!(c.guard, HandshakeGuard::default());
        assert_eq!(
            (c.guard.max_pending, c.guard.max_pending_per_address),
            (1000, 32)
        );
        assert_eq!((c.guard.hello_rate, c.guard.hello_burst), (10, 20));
        let with = |pairs: &[(&str, &str)]| {
            let mut o = opts.clone();
            o.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Config::from_options(&o)
        };
        let c = with(&[
            ("max_pending_handshakes", "500"),
            ("max_pending_per_address", "5"),
            ("hello_rate", "2"),
            ("hello_burst", "3"),
        ])
        .expect("valid");
        assert_eq!(
            c.guard,
            HandshakeGuard {
                max_pending: 500,
                max_pending_per_address: 5,
                hello_rate: 2,
                hello_burst: 3
            }
        );
        for (k, v) in [
            ("max_pending_handshakes", "0"),
            ("max_pending_per_address", "-1"),
            ("hello_rate", "fast"),
            ("hello_burst", "0"),
            ("hello_rate", "100001"),
        ] {
            let e = with(&[(k, v)]).expect_err(k);
            assert!(e.0.contains(k), "{e}");
        }
        let e = with(&[
            ("max_pending_handshakes", "10"),
            ("max_pending_per_address", "11"),
        ])
        .expect_err("per address above total");
        assert!(e.0.contains("exceeds"), "{e}");
    }

    #[test]
    fn max_refused_messages_default_and_bounds() {
        let (_f, opts) = setup();
        let with = |v: &str| {
            let mut o = opts.clone();
            o.push(("max_refused_messages".into(), v.into()));
            Config::from_options(&o)
        };
        let c = Config::from_options(&opts).expect("valid");
        assert_eq!(c.max_refused_messages, 10);
        assert_eq!(with(" 3 ").expect("valid").max_refused_messages, 3);
        assert_eq!(
            with("1000000").expect("valid").max_refused_messages,
            1_000_000
        );
        for bad in ["0", "1000001", "-1", "many"] {
            let e = with(bad).expect_err(bad);
            assert_eq!(
                e.0,
                format!("plugin_opt_max_refused_messages: {bad:?} is not a number in 1..=1000000")
            );
        }
    }
}
