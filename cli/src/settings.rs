//! Where the server, the token and the output format come from: flag > environment > profile >
//! default. Resolution is a pure function of the flags, an environment lookup and the working
//! directory, so the precedence rules are unit-tested without touching the process environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::error::{CliError, Result};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// Used when no token is given and the server is the default local one.
pub const DEFAULT_TOKEN_FILE: &str = "devid-data/admin.token";

/// `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub output: Option<OutputFormat>,
    /// PEM file of the CA(s) to trust for an https:// server (instead of the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Where the token came from (for error hints; never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    None,
    Flag,
    FlagFile(PathBuf),
    Env,
    EnvFile(PathBuf),
    Profile(String),
    ProfileFile(String, PathBuf),
    DefaultFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Without a trailing slash.
    pub server: String,
    pub token: Option<String>,
    pub token_source: TokenSource,
    pub output: OutputFormat,
    /// Trust only the CA certificates in this PEM file (resolved against the working directory).
    pub ca_file: Option<PathBuf>,
}

/// The config file's path: `$DEVID_CONFIG`, else `$XDG_CONFIG_HOME/devid/config.toml`, else
/// `$HOME/.config/devid/config.toml`.
pub fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = nonempty("DEVID_CONFIG") {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = nonempty("XDG_CONFIG_HOME") {
        return Some(Path::new(&x).join("devid").join("config.toml"));
    }
    nonempty("HOME").map(|h| {
        Path::new(&h)
            .join(".config")
            .join("devid")
            .join("config.toml")
    })
}

fn load_config(path: Option<&Path>) -> Result<Option<ConfigFile>> {
    let Some(path) = path else { return Ok(None) };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read config file {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        CliError::usage(format!(
            "config file {}: {}",
            path.display(),
            e.message().replace('\n', " ")
        ))
    })
}

/// `~/x` as `$HOME/x`.
fn expand_home(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (path.strip_prefix("~"), env("HOME")) {
        (Ok(rest), Some(home)) if !home.is_empty() => Path::new(&home).join(rest),
        _ => path.to_path_buf(),
    }
}

fn read_token_file(path: &Path, cwd: &Path) -> Result<String> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let text = std::fs::read_to_string(&full)
        .map_err(|e| CliError::usage(format!("cannot read token file {}: {e}", path.display())))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(CliError::usage(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// Resolves the settings. `env` looks up an environment variable.
pub fn resolve(
    flags: &GlobalArgs,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Settings> {
    let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let config = load_config(config_path(env).as_deref())?;

    let profile_name = flags
        .profile
        .clone()
        .or_else(|| env_nonempty("DEVID_PROFILE"));
    let (profile_name, profile) = match (profile_name, &config) {
        (Some(name), Some(cfg)) => match cfg.profiles.get(&name) {
            Some(p) => (Some(name), p.clone()),
            None => {
                let known: Vec<&str> = cfg.profiles.keys().map(String::as_str).collect();
                return Err(CliError::usage(format!(
                    "no profile {name:?} in the config file (profiles: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        },
        (Some(name), None) => {
            return Err(CliError::usage(format!(
                "profile {name:?} asked for but there is no config file ({})",
                config_path(env)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "neither XDG_CONFIG_HOME nor HOME is set".into())
            )))
        }
        (None, Some(cfg)) => match &cfg.default_profile {
            Some(name) => match cfg.profiles.get(name) {
                Some(p) => (Some(name.clone()), p.clone()),
                None => {
                    return Err(CliError::usage(format!(
                        "default_profile {name:?} is not defined in the config file"
                    )))
                }
            },
            None => (None, Profile::default()),
        },
        (None, None) => (None, Profile::default()),
    };

    let server_given = flags
        .server
        .clone()
        .or_else(|| env_nonempty("DEVID_SERVER"))
        .or_else(|| profile.server.clone());
    let server_is_default = server_given.is_none();
    let server = server_given
        .unwrap_or_else(|| DEFAULT_SERVER.to_string())
        .trim_end_matches('/')
        .to_string();
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(CliError::usage(format!(
            "server URL {server:?} must start with http:// or https://"
        )));
    }

    let pname = profile_name.unwrap_or_default();
    let (token, token_source) = if let Some(t) = &flags.token {
        (Some(t.clone()), TokenSource::Flag)
    } else if let Some(f) = &flags.token_file {
        (
            Some(read_token_file(f, cwd)?),
            TokenSource::FlagFile(f.clone()),
        )
    } else if let Some(t) = env_nonempty("DEVID_TOKEN") {
        (Some(t), TokenSource::Env)
    } else if let Some(f) = env_nonempty("DEVID_TOKEN_FILE") {
        let f = PathBuf::from(f);
        (Some(read_token_file(&f, cwd)?), TokenSource::EnvFile(f))
    } else if let Some(t) = &profile.token {
        (Some(t.clone()), TokenSource::Profile(pname.clone()))
    } else if let Some(f) = &profile.token_file {
        let f = &expand_home(f, env);
        (
            Some(read_token_file(f, cwd)?),
            TokenSource::ProfileFile(pname.clone(), f.clone()),
        )
    } else if server_is_default && cwd.join(DEFAULT_TOKEN_FILE).is_file() {
        let f = PathBuf::from(DEFAULT_TOKEN_FILE);
        (Some(read_token_file(&f, cwd)?), TokenSource::DefaultFile(f))
    } else {
        (None, TokenSource::None)
    };

    let output = match flags.output {
        Some(o) => o,
        None => match env_nonempty("DEVID_OUTPUT").as_deref() {
            Some("json") => OutputFormat::Json,
            Some("table") => OutputFormat::Table,
            Some(other) => {
                return Err(CliError::usage(format!(
                    "DEVID_OUTPUT={other:?}: expected table or json"
                )))
            }
            None => profile.output.unwrap_or(OutputFormat::Table),
        },
    };

    let ca_file = flags
        .ca_file
        .clone()
        .or_else(|| env_nonempty("DEVID_CA_FILE").map(PathBuf::from))
        .or_else(|| profile.ca_file.as_deref().map(|f| expand_home(f, env)))
        .map(|f| if f.is_absolute() { f } else { cwd.join(f) });

    Ok(Settings {
        server,
        token,
        token_source,
        output,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixture {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut env = HashMap::new();
            env.insert(
                "XDG_CONFIG_HOME".to_string(),
                dir.path().join("cfg").display().to_string(),
            );
            Fixture { dir, env }
        }
        fn config(&self, text: &str) {
            let p = self.dir.path().join("cfg/devid");
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("config.toml"), text).expect("write");
        }
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
            p
        }
        fn resolve(&self, flags: &GlobalArgs) -> Result<Settings> {
            let env = self.env.clone();
            resolve(flags, &move |k| env.get(k).cloned(), self.dir.path())
        }
    }

    const PROFILES: &str = r#"
default_profile = "line3"
[profiles.line3]
server = "http://line3:8080"
token = "profile-token"
output = "json"
[profiles.ops]
server = "https://ops.example.com/"
token_file = "ops.token"
"#;

    #[test]
    fn defaults_without_anything() {
        let f = Fixture::new();
        let s = f.resolve(&GlobalArgs::default()).expect("resolve");
        assert_eq!(s.server, DEFAULT_SERVER);
        assert_eq!(s.token, None);
        assert_eq!(s.output, OutputFormat::Table);
    }

    #[test]
    fn default_token_file_only_for_default_server() {
        let mut f = Fixture::new();
        f.file("devid-data/admin.token", "admin-secret\n");
        let s = f.resolve(&GlobalArgs::default()).expect("resolve");
        assert_eq!(s.token.as_deref(), Some("admin-secret"));
        assert!(matches!(s.token_source, TokenSource::DefaultFile(_)));

        f.env
            .insert("DEVID_SERVER".into(), "http://other:8080".into());
        let s = f.resolve(&GlobalArgs::default()).expect("resolve");
        assert_eq!(s.token, None);
    }

    #[test]
    fn default_profile_applies() {
        let f = Fixture::new();
        f.config(PROFILES);
        let s = f.resolve(&GlobalArgs::default()).expect("resolve");
        assert_eq!(s.server, "http://line3:8080");
        assert_eq!(s.token.as_deref(), Some("profile-token"));
        assert_eq!(s.output, OutputFormat::Json);
    }

    #[test]
    fn precedence_flag_over_env_over_profile() {
        let mut f = Fixture::new();
        f.config(PROFILES);
        f.file("ops.token", "ops-secret");
        f.file("env.token", "env-file-secret");
        f.file("flag.token", "flag-file-secret");

        // Profile by flag, token from its token_file, trailing slash trimmed.
        let flags = GlobalArgs {
            profile: Some("ops".into()),
            ..Default::default()
        };
        let s = f.resolve(&flags).expect("resolve");
        assert_eq!(s.server, "https://ops.example.com");
        assert_eq!(s.token.as_deref(), Some("ops-secret"));
        assert_eq!(s.output, OutputFormat::Table);

        // Env beats profile.
        f.env.insert("DEVID_SERVER".into(), "http://env:1".into());
        f.env.insert("DEVID_TOKEN_FILE".into(), "env.token".into());
        f.env.insert("DEVID_OUTPUT".into(), "json".into());
        let s = f.resolve(&flags).expect("resolve");
        assert_eq!(s.server, "http://env:1");
        assert_eq!(s.token.as_deref(), Some("env-file-secret"));
        assert_eq!(s.output, OutputFormat::Json);

        // DEVID_TOKEN beats DEVID_TOKEN_FILE.
        f.env.insert("DEVID_TOKEN".into(), "env-secret".into());
        let s = f.resolve(&flags).expect("resolve");
        assert_eq!(s.token.as_deref(), Some("env-secret"));

        // Flags beat env: a --token-file flag beats DEVID_TOKEN.
        let flags = GlobalArgs {
            profile: Some("ops".into()),
            server: Some("http://flag:2".into()),
            token_file: Some("flag.token".into()),
            output: Some(OutputFormat::Table),
            ..Default::default()
        };
        let s = f.resolve(&flags).expect("resolve");
        assert_eq!(s.server, "http://flag:2");
        assert_eq!(s.token.as_deref(), Some("flag-file-secret"));
        assert_eq!(s.output, OutputFormat::Table);

        let flags = GlobalArgs {
            token: Some("flag-secret".into()),
            token_file: Some("flag.token".into()),
            ..flags
        };
        let s = f.resolve(&flags).expect("resolve");
        assert_eq!(s.token.as_deref(), Some("flag-secret"));
    }

    #[test]
    fn unknown_profile_is_a_usage_error() {
        let f = Fixture::new();
        f.config(PROFILES);
        let flags = GlobalArgs {
            profile: Some("nope".into()),
            ..Default::default()
        };
        let e = f.resolve(&flags).expect_err("must fail");
        assert_eq!(e.exit, crate::error::Exit::Usage);
        assert!(e.message.contains("line3, ops"), "{}", e.message);
    }

    #[test]
    fn profile_token_file_expands_tilde() {
        let mut f = Fixture::new();
        f.file("home/t.token", "tilde-secret");
        f.env.insert(
            "HOME".into(),
            f.dir.path().join("home").display().to_string(),
        );
        f.config("[profiles.p]\ntoken_file = \"~/t.token\"\n");
        let flags = GlobalArgs {
            profile: Some("p".into()),
            ..Default::default()
        };
        let s = f.resolve(&flags).expect("resolve");
        assert_eq!(s.token.as_deref(), Some("tilde-secret"));
    }

    #[test]
    fn ca_file_flag_over_env_over_profile_relative_to_cwd() {
        let mut f = Fixture::new();
        f.env.insert(
            "HOME".into(),
            f.dir.path().join("home").display().to_string(),
        );
        f.config("[profiles.p]\nca_file = \"~/profile-ca.pem\"\n");
        let with_profile = GlobalArgs {
            profile: Some("p".into()),
            ..Default::default()
        };
        let s = f.resolve(&with_profile).expect("resolve");
        assert_eq!(s.ca_file, Some(f.dir.path().join("home/profile-ca.pem")));
        f.env.insert("DEVID_CA_FILE".into(), "env-ca.pem".into());
        let s = f.resolve(&with_profile).expect("resolve");
        assert_eq!(s.ca_file, Some(f.dir.path().join("env-ca.pem")));
        let flag = GlobalArgs {
            ca_file: Some("/etc/flag-ca.pem".into()),
            ..with_profile
        };
        let s = f.resolve(&flag).expect("resolve");
        assert_eq!(s.ca_file, Some(PathBuf::from("/etc/flag-ca.pem")));
        assert_eq!(
            Fixture::new()
                .resolve(&GlobalArgs::default())
                .expect("resolve")
                .ca_file,
            None
        );
    }

    #[test]
    fn home_is_used_without_xdg() {
        let mut env = HashMap::new();
        env.insert("HOME".to_string(), "/home/u".to_string());
        let p = config_path(&move |k| env.get(k).cloned());
        assert_eq!(p, Some(PathBuf::from("/home/u/.config/devid/config.toml")));
    }

    #[test]
    fn unreadable_token_file_is_a_usage_error() {
        let f = Fixture::new();
        let flags = GlobalArgs {
            token_file: Some("missing.token".into()),
            ..Default::default()
        };
        let e = f.resolve(&flags).expect_err("must fail");
        assert_eq!(e.exit, crate::error::Exit::Usage);
        assert!(e.message.contains("missing.token"));
    }
}
