//! Settings: flag > environment > `devid.toml` > built-in default.
//!
//! clap resolves flags and environment variables; the file fills in what neither gave. The
//! resolved [`Settings`] is what the rest of the server sees: clap types stay in this module.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use devid_core::duration::{Bare, HumanDuration, Unit};
use devid_core::profile::Validity;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "devid-data";
/// 10,000 CSRs of about 600 bytes each, with JSON around them, fit well inside this.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How long app events (devices' timelines) are kept: 30 days.
pub const DEFAULT_TIMELINE_RETENTION: &str = "30d";

#[derive(Debug, Parser)]
#[command(
    name = "devid-server",
    version,
    about = "devid's certificate authority and device registry"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Run,
    /// Create the data directory, the CA and the admin token, then exit.
    Init,
    /// Import an existing issuing CA (so devid chains under your own root), then exit.
    ImportCa {
        /// Issuing CA certificate, PEM.
        #[arg(long)]
        cert: PathBuf,
        /// Its private key, PKCS#8 PEM (ECDSA P-256).
        #[arg(
            long,
            required_unless_present = "token_key",
            conflicts_with = "token_key"
        )]
        key: Option<PathBuf>,
        /// Instead of --key: the issuing key already in the PKCS#11 token that --pkcs11-* name, by its label or as id:<hex> (its CKA_ID).
        #[arg(long)]
        token_key: Option<String>,
        /// The chain above it up to the root, PEM.
        #[arg(long)]
        chain: PathBuf,
    },
    /// Re-encrypt the CA's private keys under a new passphrase, then exit. The current one comes
    /// from DEVID_CA_PASSPHRASE (unset for unencrypted keys), the new one from
    /// DEVID_CA_NEW_PASSPHRASE (never a flag: it would show in the process list and shell
    /// history). A running server keeps its key in memory; restart it with the new passphrase.
    ChangePassphrase {
        /// Store the keys unencrypted instead (DEVID_CA_NEW_PASSPHRASE must then be unset).
        #[arg(long)]
        remove: bool,
    },
    /// The issuing CAs: rotate to a new one, revoke one. Running servers follow at once.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make a new issuing CA (new key, in the token when --pkcs11-* name one) under the same
    /// root and make it active; the previous one is retired: still trusted, still signing its
    /// CRL while certificates it signed may be valid.
    Rotate,
    /// Revoke a retired issuing CA (its key is compromised): it goes on the root's CRL and into
    /// the device feed, and brokers refuse every certificate under it.
    RevokeIssuing {
        /// The issuing CA's id (as `GET /v1/ca` and `ca rotate` print it) or its certificate's serial (hex).
        id: String,
        /// RFC 5280 reason, by name.
        #[arg(long, default_value = "cACompromise")]
        reason: String,
    },
}

#[derive(Debug, Args, Default)]
pub struct Opts {
    /// Config file (TOML). Default: ./devid.toml when it exists.
    #[arg(long, env = "DEVID_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "DEVID_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Where state lives: the SQLite database, the CA keys, the admin token [default: ./devid-data].
    #[arg(long, env = "DEVID_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// postgres://... to keep the registry in PostgreSQL instead of SQLite.
    #[arg(long, env = "DEVID_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Base URL clients reach this service at; names the CRL in certificates [default: http://<listen>].
    #[arg(long, env = "DEVID_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Organization (O) in issued certificates and the CA's names.
    #[arg(long, env = "DEVID_ORGANIZATION", global = true)]
    pub organization: Option<String>,
    /// Device certificate validity: a duration with a unit (`20y` calendar years, `365d`, `12w`, `3600s`), or `none` (notAfter 99991231235959Z) [default: 20y].
    #[arg(long, env = "DEVID_CERT_VALIDITY", global = true)]
    pub cert_validity: Option<String>,
    /// Root CA validity when the CA is created (first start, `init`), same grammar as --cert-validity [default: 30y].
    #[arg(long, env = "DEVID_ROOT_VALIDITY", global = true)]
    pub root_validity: Option<String>,
    /// Issuing CA validity when one is created (first start, `init`, `ca rotate`), same grammar; never past the root's notAfter [default: 10y].
    #[arg(long, env = "DEVID_ISSUING_VALIDITY", global = true)]
    pub issuing_validity: Option<String>,
    /// Largest request body accepted, in bytes [default: 33554432].
    #[arg(long, env = "DEVID_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so): keep the CA keys in a token. Needs --pkcs11-token and the PIN.
    #[arg(long, env = "DEVID_PKCS11_MODULE", global = true)]
    pub pkcs11_module: Option<PathBuf>,
    /// The token holding the CA keys: its label, or an RFC 7512 pkcs11: URI (token=, serial=, ...).
    #[arg(long, env = "DEVID_PKCS11_TOKEN", global = true)]
    pub pkcs11_token: Option<String>,
    /// File holding the token's user PIN (or set DEVID_PKCS11_PIN; never a flag).
    #[arg(long, env = "DEVID_PKCS11_PIN_FILE", global = true)]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Also serve everything, and EST (/.well-known/est/), over TLS on this address [default: off].
    #[arg(long, env = "DEVID_TLS_LISTEN", global = true)]
    pub tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain, PEM (leaf first); with --tls-key. Without it devid issues its own for the host of --public-url and renews it.
    #[arg(long, env = "DEVID_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM (PKCS#8 or SEC1).
    #[arg(long, env = "DEVID_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// How long devices' timelines (the app events) are kept, a duration with a unit (`30d`, `12w`) [default: 30d].
    #[arg(long, env = "DEVID_TIMELINE_RETENTION", global = true)]
    pub timeline_retention: Option<String>,
}

/// What `devid.toml` may hold: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub organization: Option<String>,
    pub cert_validity: Option<String>,
    pub root_validity: Option<String>,
    pub issuing_validity: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub pkcs11_module: Option<PathBuf>,
    pub pkcs11_token: Option<String>,
    pub pkcs11_pin_file: Option<PathBuf>,
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub timeline_retention: Option<String>,
}

/// The TLS listener: where, and whose certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    /// The operator's certificate chain and key files; None: devid issues its own.
    pub files: Option<(PathBuf, PathBuf)>,
}

/// Where a PKCS#11 token keeps the CA keys. The PIN itself is read when the CA is opened
/// (from `pin_file`, else `DEVID_PKCS11_PIN`) and never kept in the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Settings {
    pub module: PathBuf,
    pub token: String,
    pub pin_file: Option<PathBuf>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// None: `http://<the address actually bound>`.
    pub public_url: Option<String>,
    pub organization: Option<String>,
    pub cert_validity: Validity,
    /// Validity of a new root CA.
    pub root_validity: Validity,
    /// Validity of a new issuing CA.
    pub issuing_validity: Validity,
    pub max_body_bytes: usize,
    /// None: the CA keys are files under `<data_dir>/ca/`.
    pub pkcs11: Option<Pkcs11Settings>,
    /// None: no TLS listener.
    pub tls: Option<TlsSettings>,
    /// App events (devices' timelines) older than this are deleted.
    pub timeline_retention: HumanDuration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid certificate validity: {0}; or none")]
    Validity(String),
    #[error("--database-url must start with postgres:// or postgresql://")]
    DatabaseUrl,
    #[error("a PKCS#11 token needs both --pkcs11-module and --pkcs11-token")]
    Pkcs11Incomplete,
    #[error("--tls-cert and --tls-key go together, and with --tls-listen")]
    TlsIncomplete,
    #[error("invalid timeline retention: {0}")]
    Retention(String),
}

/// Parses a certificate validity: `none`, or a duration in core's grammar with a unit
/// ([`HumanDuration`]: `20y`, `365d`, `12w`, `3600s`; a bare number is refused, as `20` could
/// mean years). Years are calendar years; every other unit counts seconds.
pub fn parse_validity(s: &str) -> Result<Validity, ConfigError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(Validity::NoExpiry);
    }
    let d =
        HumanDuration::parse(s, Bare::Refused).map_err(|e| ConfigError::Validity(e.to_string()))?;
    match d.unit() {
        Unit::Years => {
            Ok(Validity::Years(u32::try_from(d.count()).map_err(|_| {
                ConfigError::Validity(format!("{s:?} is too long"))
            })?))
        }
        _ => Ok(Validity::Seconds(d.as_secs())),
    }
}

impl Opts {
    /// Fills what flags and environment left open from the config file, then the defaults.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None if Path::new("devid.toml").exists() => read_file(Path::new("devid.toml"))?,
            None => FileConfig::default(),
        };
        let listen = self.listen.or(file.listen).unwrap_or_else(|| {
            // A constant that parses.
            DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
        });
        let database_url = self.database_url.or(file.database_url);
        if let Some(url) = &database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::DatabaseUrl);
            }
        }
        let public_url = self
            .public_url
            .or(file.public_url)
            .map(|u| u.trim_end_matches('/').to_string());
        let cert_validity = match self.cert_validity.or(file.cert_validity) {
            Some(v) => parse_validity(&v)?,
            None => Validity::Years(20),
        };
        let ca_validity = |flag: Option<String>, file: Option<String>, years| match flag.or(file) {
            Some(v) => parse_validity(&v),
            None => Ok(Validity::Years(years)),
        };
        let root_validity = ca_validity(
            self.root_validity,
            file.root_validity,
            devid_core::profile::DEFAULT_ROOT_YEARS,
        )?;
        let issuing_validity = ca_validity(
            self.issuing_validity,
            file.issuing_validity,
            devid_core::profile::DEFAULT_ISSUING_YEARS,
        )?;
        let pkcs11 = match (
            self.pkcs11_module.or(file.pkcs11_module),
            self.pkcs11_token.or(file.pkcs11_token),
            self.pkcs11_pin_file.or(file.pkcs11_pin_file),
        ) {
            (Some(module), Some(token), pin_file) => Some(Pkcs11Settings {
                module,
                token,
                pin_file,
            }),
            (None, None, None) => None,
            _ => return Err(ConfigError::Pkcs11Incomplete),
        };
        let tls = match (
            self.tls_listen.or(file.tls_listen),
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(listen), Some(cert), Some(key)) => Some(TlsSettings {
                listen,
                files: Some((cert, key)),
            }),
            (Some(listen), None, None) => Some(TlsSettings {
                listen,
                files: None,
            }),
            (None, None, None) => None,
            _ => return Err(ConfigError::TlsIncomplete),
        };
        let retention = self
            .timeline_retention
            .or(file.timeline_retention)
            .unwrap_or_else(|| DEFAULT_TIMELINE_RETENTION.to_string());
        let timeline_retention = HumanDuration::parse(retention.trim(), Bare::Refused)
            .map_err(|e| ConfigError::Retention(e.to_string()))?;
        Ok(Settings {
            timeline_retention,
            tls,
            pkcs11,
            listen,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database_url,
            public_url,
            organization: self.organization.or(file.organization),
            cert_validity,
            root_validity,
            issuing_validity,
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_forms() {
        assert_eq!(parse_validity("20y").ok(), Some(Validity::Years(20)));
        assert_eq!(parse_validity("2d").ok(), Some(Validity::Seconds(172_800)));
        assert_eq!(parse_validity("none").ok(), Some(Validity::NoExpiry));
        // The one duration grammar: weeks, hours and minutes too.
        assert_eq!(
            parse_validity("10w").ok(),
            Some(Validity::Seconds(6_048_000))
        );
        assert_eq!(parse_validity("90m").ok(), Some(Validity::Seconds(5400)));
        for bad in ["", "y", "0y", "-1d", "+1y", "20", "1y2d", "abc", "1Y"] {
            assert!(parse_validity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("devid.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\norganization = \"Acme\"\ncert_validity = \"none\"\n",
        )
        .expect("write");
        let opts = Opts {
            config: Some(path.clone()),
            organization: Some("Flag Corp".into()),
            ..Opts::default()
        };
        let s = opts.resolve().expect("resolve");
        assert_eq!(s.organization.as_deref(), Some("Flag Corp"));
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.cert_validity, Validity::NoExpiry);
        assert_eq!(s.public_url, None);
        assert_eq!(s.data_dir, PathBuf::from("devid-data"));
        assert_eq!(s.pkcs11, None);
        assert_eq!(s.timeline_retention.as_secs(), 30 * 86_400);
        let s = Opts {
            timeline_retention: Some("12w".into()),
            ..Opts::default()
        }
        .resolve()
        .expect("resolve");
        assert_eq!(s.timeline_retention.to_string(), "12w");
        assert!(Opts {
            timeline_retention: Some("30".into()),
            ..Opts::default()
        }
        .resolve()
        .is_err());

        std::fs::write(&path, "listn = \"x\"\n").expect("write");
        let err = Opts {
            config: Some(path),
            ..Opts::default()
        }
        .resolve()
        .expect_err("unknown key");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn pkcs11_needs_module_and_token() {
        let s = Opts {
            pkcs11_module: Some("/lib/p11.so".into()),
            pkcs11_token: Some("devid".into()),
            ..Opts::default()
        }
        .resolve()
        .expect("resolve");
        assert_eq!(
            s.pkcs11,
            Some(Pkcs11Settings {
                module: "/lib/p11.so".into(),
                token: "devid".into(),
                pin_file: None,
            })
        );
        let err = Opts {
            pkcs11_pin_file: Some("pin".into()),
            ..Opts::default()
        }
        .resolve()
        .expect_err("no module");
        assert!(matches!(err, ConfigError::Pkcs11Incomplete), "{err}");
    }
}
