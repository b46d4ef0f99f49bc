//! Start-up, serving and shutdown.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use devid_core::api::Role;
use devid_core::profile::ProfileSettings;
use tokio::sync::watch;

use crate::app::{app, AppState};
use crate::auth::{new_token, TokenCache};
use crate::ca::{Ca, CaKeys, CaOptions, SensorKek, TokenConfig};
use crate::config::{Pkcs11Settings, Settings};
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{Actor, AuditRecord, Lease, Store, Sweeper};
use crate::timefmt;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Logs to stderr; JSON lines when `DEVID_LOG_FORMAT=json`. Level from `RUST_LOG` (default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("DEVID_LOG_FORMAT").is_ok_and(|v| v == "json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Everything a running service needs, made ready.
pub struct Ready {
    pub store: Store,
    pub ca: Arc<Ca>,
    /// Seals and opens sensors' keys.
    pub kek: Arc<SensorKek>,
    /// Where the admin token was written on this start (first start only).
    pub admin_token_file: Option<PathBuf>,
    /// Whether this start created the CA.
    pub ca_created: bool,
}

fn create_private_dir(dir: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict data directory {}: {e}", dir.display()))?;
    Ok(())
}

pub async fn open_store(settings: &Settings) -> Result<Store, BoxError> {
    create_private_dir(&settings.data_dir)?;
    let store = match &settings.database_url {
        Some(url) => {
            let address = Store::postgres_address(url);
            tracing::info!(%address, "connecting to PostgreSQL");
            Store::connect_postgres(url)
                .await
                .map_err(|e| format!("cannot connect to PostgreSQL at {address}: {e}"))?
        }
        None => {
            let path = settings.data_dir.join("devid.db");
            Store::connect_sqlite(&path, true)
                .await
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?
        }
    };
    store
        .migrate()
        .await
        .map_err(|e| format!("database migration failed: {e}"))?;
    Ok(store)
}

fn passphrase() -> Option<String> {
    std::env::var("DEVID_CA_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty())
}

/// Where the CA keys are: a PKCS#11 token when the settings name one, else files (encrypted
/// under DEVID_CA_PASSPHRASE when it is set).
fn ca_keys(settings: &Settings) -> Result<CaKeys, BoxError> {
    let Some(p11) = &settings.pkcs11 else {
        return Ok(CaKeys::Files {
            passphrase: passphrase(),
        });
    };
    if passphrase().is_some() {
        return Err(
            "DEVID_CA_PASSPHRASE is set but the CA keys are in a PKCS#11 token, which \
                    guards them with its PIN; unset it"
                .into(),
        );
    }
    Ok(CaKeys::Token(TokenConfig {
        module: p11.module.clone(),
        token: p11.token.clone(),
        pin: pkcs11_pin(p11)?.into(),
    }))
}

/// The token's user PIN: the first line of the PIN file, else DEVID_PKCS11_PIN.
fn pkcs11_pin(p11: &Pkcs11Settings) -> Result<String, BoxError> {
    if let Some(path) = &p11.pin_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the PKCS#11 PIN file {}: {e}", path.display()))?;
        let pin = text.lines().next().unwrap_or_default().to_string();
        if pin.is_empty() {
            return Err(format!("the PKCS#11 PIN file {} is empty", path.display()).into());
        }
        return Ok(pin);
    }
    std::env::var("DEVID_PKCS11_PIN")
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            "the PKCS#11 token needs its user PIN: give --pkcs11-pin-file or set DEVID_PKCS11_PIN"
                .into()
        })
}

/// The base URL clients reach this service at: `--public-url`, else `http://<--listen>`.
pub fn public_base(settings: &Settings) -> String {
    settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.listen))
}

/// What a new CA or issuing CA is made with, from the settings.
pub fn ca_options(settings: &Settings) -> CaOptions {
    CaOptions {
        organization: settings.organization.clone(),
        root_validity: settings.root_validity,
        issuing_validity: settings.issuing_validity,
        root_crl_url: Some(format!("{}/v1/crl/root", public_base(settings))),
    }
}

/// Opens the store, creates or loads the CA, and on the very first start makes the admin token.
pub async fn init(settings: &Settings) -> Result<Ready, BoxError> {
    let store = open_store(settings).await?;
    let data_dir = settings.data_dir.clone();
    let options = ca_options(settings);
    let keys = ca_keys(settings)?;
    // The sensor KEK is kept like the CA key files: under the CA passphrase when one is set
    // (with keys in a token there is none).
    let kek_passphrase = match &keys {
        CaKeys::Files { passphrase } => passphrase.clone(),
        CaKeys::Token(_) => None,
    };
    let (ca, created, kek) = tokio::task::spawn_blocking(move || {
        let (ca, created) = Ca::init_or_load_with(&data_dir, &keys, &options)?;
        let rng = ring::rand::SystemRandom::new();
        let kek = SensorKek::load_or_create(&data_dir, kek_passphrase.as_deref(), &rng)?;
        Ok::<_, crate::ca::CaError>((ca, created, kek))
    })
    .await??;
    if created {
        let keys_in = match &settings.pkcs11 {
            Some(p11) => format!("PKCS#11 token {:?}", p11.token),
            None => "files".to_string(),
        };
        tracing::info!(
            dir = %settings.data_dir.join("ca").display(),
            keys = %keys_in,
            "created root and issuing CA"
        );
    }
    // Every process sharing the database must seal with the same KEK: say so at once when
    // this one's differs (sensor registrations and sensor keys then fail in this process;
    // devices are unaffected).
    if let Err(e) = crate::domain::sensors::check_kek(&store, &kek).await {
        tracing::warn!(error = %e, "sensor key-encryption key");
    }
    crate::domain::issuers::adopt_and_sync(&store, &ca)
        .await
        .map_err(|e| format!("cannot load the issuing CAs the database names: {e}"))?;
    let admin_token_file = bootstrap_admin(&store, &settings.data_dir).await?;
    Ok(Ready {
        store,
        ca: Arc::new(ca),
        kek: Arc::new(kek),
        admin_token_file,
        ca_created: created,
    })
}

/// `devid-server init`: like the first start, then exit; says so when there was nothing to do.
pub async fn init_command(settings: &Settings) -> Result<(), BoxError> {
    let ready = init(settings).await?;
    if !ready.ca_created && ready.admin_token_file.is_none() {
        let database = match &settings.database_url {
            Some(url) => format!("PostgreSQL at {}", Store::postgres_address(url)),
            None => settings.data_dir.join("devid.db").display().to_string(),
        };
        println!(
            "devid-server: {} is already initialized (CA in {}, database {database}); nothing changed",
            settings.data_dir.display(),
            settings.data_dir.join("ca").display(),
        );
    }
    ready.store.close().await;
    Ok(())
}

/// Creates the admin token when the database has no token at all, and writes it (mode 0600) to
/// `<data-dir>/admin.token`. The token itself never reaches a log.
async fn bootstrap_admin(store: &Store, data_dir: &Path) -> Result<Option<PathBuf>, BoxError> {
    let rng = ring::rand::SystemRandom::new();
    let token =
        new_token(&rng, Role::Admin, "admin (bootstrap)", None, None).map_err(|e| e.to_string())?;
    let path = data_dir.join("admin.token");
    let tmp = data_dir.join(format!("admin.token.{}.tmp", token.row.id));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        writeln!(f, "{}", token.secret)?;
        f.sync_all()?;
    }
    let audit = AuditRecord {
        at: timefmt::now(),
        actor: Actor {
            id: "system".into(),
            name: "devid-server".into(),
        },
        action: "token.create".into(),
        target: format!("{} (admin (bootstrap), admin)", token.row.id),
        outcome: "ok".into(),
        detail: None,
    };
    let inserted = store.bootstrap_admin(&token.row, &audit).await;
    match inserted {
        Ok(true) => {
            std::fs::rename(&tmp, &path)?;
            println!("devid-server: admin token written to {}", path.display());
            tracing::info!(path = %path.display(), "admin token written");
            Ok(Some(path))
        }
        Ok(false) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// The issuing key `import-ca` brings in: a key file, or a key already in the PKCS#11 token
/// (its label, or `id:<hex>`).
pub enum ImportKey {
    File(PathBuf),
    Token(String),
}

pub async fn import_ca(
    settings: &Settings,
    cert: &Path,
    key: ImportKey,
    chain: &Path,
) -> Result<(), BoxError> {
    create_private_dir(&settings.data_dir)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (cert, chain) = (read(cert)?, read(chain)?);
    let ca = match (key, ca_keys(settings)?) {
        (ImportKey::File(key), CaKeys::Files { passphrase }) => Ca::import(
            &settings.data_dir,
            &cert,
            &read(&key)?,
            &chain,
            passphrase.as_deref(),
        )?,
        (ImportKey::Token(key), CaKeys::Token(config)) => {
            Ca::import_token_key(&settings.data_dir, &cert, &chain, &config, &key)?
        }
        (ImportKey::File(_), CaKeys::Token(_)) => {
            return Err(
                "--key is a key file, but the --pkcs11-* options keep the CA keys in \
                        a token: give --token-key with the key's label or id:<hex> instead"
                    .into(),
            )
        }
        (ImportKey::Token(_), CaKeys::Files { .. }) => {
            return Err("--token-key needs --pkcs11-module, --pkcs11-token and the PIN".into())
        }
    };
    println!(
        "devid-server: imported issuing CA into {} ({} bytes of chain)",
        settings.data_dir.join("ca").display(),
        ca.chain_pem().len()
    );
    Ok(())
}

/// `devid-server change-passphrase`: re-encrypts the CA keys (see [`Ca::change_passphrase`]).
pub fn change_passphrase(settings: &Settings, remove: bool) -> Result<(), BoxError> {
    let new = std::env::var("DEVID_CA_NEW_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty());
    let new = match (new, remove) {
        (Some(p), false) => Some(p),
        (None, true) => None,
        (Some(_), true) => {
            return Err("give either --remove or DEVID_CA_NEW_PASSPHRASE, not both".into())
        }
        (None, false) => {
            return Err(
                "set DEVID_CA_NEW_PASSPHRASE to the new passphrase (or pass --remove)".into(),
            )
        }
    };
    let changed =
        Ca::change_passphrase(&settings.data_dir, passphrase().as_deref(), new.as_deref())?;
    for path in &changed {
        println!("devid-server: re-encrypted {}", path.display());
    }
    if changed.is_empty() {
        println!("devid-server: the CA keys already use that passphrase; nothing changed");
    }
    println!(
        "devid-server: restart the server(s) {}",
        if new.is_some() {
            "with DEVID_CA_PASSPHRASE set to the new passphrase"
        } else {
            "without DEVID_CA_PASSPHRASE"
        }
    );
    Ok(())
}

/// Keeps this process's issuing CAs as the store names them: re-read whenever the feed moves
/// (a rotation or an issuing CA's revocation appends an entry, which reaches this process by
/// NOTIFY on PostgreSQL and by the feed poll on SQLite), so new certificates come from the
/// new issuing CA at once. Registration itself never asks the store which CA is active.
fn follow_issuers(store: &Store, ca: &Arc<Ca>, feed: &Arc<Feed>) {
    let mut head = feed.subscribe();
    let (store, ca) = (store.clone(), ca.clone());
    tokio::spawn(async move {
        while head.changed().await.is_ok() {
            match crate::domain::issuers::sync(&store, &ca).await {
                Ok(true) => tracing::info!(active = %ca.active().id(), "issuing CA changed"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot load the issuing CAs"),
            }
        }
    });
}

/// Every 30 s: fresh planner statistics for the fleet's tables where bulk writes outran
/// autovacuum (PostgreSQL; `Store::refresh_statistics`), the time-driven fleet checks (findings
/// open and close by themselves), and the deletion of app events older than the timeline
/// retention (`retention` seconds). With
/// several processes on one PostgreSQL database, the one holding the `fleet_sweep` lease sweeps
/// (it renews the lease each pass; another takes it over once it lapses, or at once when the
/// holder stops). `ca_expiring` covers `ca`'s root as well as the store's issuing CAs. Stops
/// when `shutdown` turns true.
fn sweep_fleet(
    store: &Store,
    ca: &Ca,
    retention: u64,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(30);
    /// Three passes: a holder that misses two in a row keeps the lease.
    const LEASE_SECS: i64 = 90;
    let store = store.clone();
    let mut sweeper =
        Sweeper::default().with_root(&ca.root_id(), ca.root_not_after().unix_timestamp());
    let retention = i64::try_from(retention).unwrap_or(i64::MAX);
    let holder = Lease::new_holder();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            let now = crate::timefmt::now();
            match store
                .take_lease(Lease::FleetSweep, &holder, now, LEASE_SECS)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet sweep: cannot take the lease");
                    continue;
                }
            }
            match store.refresh_statistics().await {
                Ok(tables) if !tables.is_empty() => {
                    tracing::info!(?tables, "planner statistics refreshed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot refresh planner statistics"),
            }
            match store.sweep_fleet(&mut sweeper, now).await {
                Ok(s) if s.opened + s.closed > 0 => {
                    tracing::info!(opened = s.opened, closed = s.closed, "fleet checks")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "fleet sweep failed"),
            }
            if let Err(e) = store
                .delete_app_events_before(now.saturating_sub(retention))
                .await
            {
                tracing::warn!(error = %e, "cannot delete old app events");
            }
        }
        if let Err(e) = store.release_lease(Lease::FleetSweep, &holder).await {
            tracing::warn!(error = %e, "fleet sweep: cannot give the lease up");
        }
    })
}

/// Runs the service until SIGTERM or Ctrl-C, then drains in-flight requests and stops.
pub async fn run(settings: Settings) -> Result<(), BoxError> {
    let ready = init(&settings).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let profile = ProfileSettings {
        organization: settings.organization.clone(),
        validity: settings.cert_validity,
        crl_url: Some(format!(
            "{}/v1/crl",
            settings
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"))
        )),
    };
    let feed = Feed::start(ready.store.clone(), ready.ca.clone(), metrics.clone())
        .await
        .map_err(|e| e.to_string())?;
    follow_issuers(&ready.store, &ready.ca, &feed);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sweeping = sweep_fleet(
        &ready.store,
        &ready.ca,
        settings.timeline_retention.as_secs(),
        shutdown_rx.clone(),
    );
    let state = AppState {
        registry: Registry::new(
            ready.store.clone(),
            ready.ca.clone(),
            ready.kek.clone(),
            profile.clone(),
            metrics.clone(),
        ),
        ldevids: crate::ldevid::LdevidQueue::start(ready.store.clone()),
        store: ready.store,
        ca: ready.ca,
        kek: ready.kek,
        settings: Arc::new(settings),
        profile: Arc::new(profile),
        feed,
        metrics,
        tokens: Arc::new(TokenCache::default()),
        shutdown: shutdown_rx,
    };
    let delivering = crate::webhooks::spawn(
        state.store.clone(),
        state.kek.clone(),
        state.shutdown.clone(),
    );
    let tls = match &state.settings.tls {
        Some(tls) => {
            let config = crate::tls::server_config(
                tls,
                state.ca.clone(),
                state.settings.public_url.as_deref(),
                &state.profile,
            )?;
            let tcp = tokio::net::TcpListener::bind(tls.listen)
                .await
                .map_err(|e| format!("cannot listen on {} (TLS): {e}", tls.listen))?;
            let tls_addr = tcp.local_addr()?;
            println!("devid-server: TLS (EST and the API) on https://{tls_addr}");
            tracing::info!(addr = %tls_addr, "TLS listening");
            Some((tcp, tokio_rustls::TlsAcceptor::from(config)))
        }
        None => None,
    };
    println!("devid-server: listening on http://{addr}");
    tracing::info!(%addr, "listening");
    let router = app(state);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tls_server = tls.map(|(tcp, acceptor)| {
        tokio::spawn(crate::tls::serve(
            tcp,
            acceptor,
            router.clone(),
            shutdown_tx.subscribe(),
        ))
    });
    let rx = shutdown_tx.subscribe();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(stopped(rx))
        .await?;
    if let Some(server) = tls_server {
        server.await?;
    }
    // The background jobs give their leases up as they stop, so that another process on the
    // same database takes them over at once; a job still busy after a few seconds is left to
    // let its lease lapse.
    let jobs = async {
        let _ = sweeping.await;
        if let Some(d) = delivering {
            let _ = d.await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), jobs).await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
