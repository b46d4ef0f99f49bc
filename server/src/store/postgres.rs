//! PostgreSQL backend: one pool of 16 connections; several server processes may share the
//! database. Feed appends and the admin bootstrap are serialized across processes with
//! transaction-scoped advisory locks; each feed append NOTIFYs [`FEED_CHANNEL`] in the same
//! transaction (delivered on commit).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};

use super::*;

type Db = sqlx::Postgres;

/// PostgreSQL's protocol allows at most 65,535 bind parameters per statement.
const MAX_BINDS: usize = 65_000;
/// Generated lists use `$N`.
const NUMBERED_PARAMS: bool = true;
const FOR_UPDATE: &str = " FOR UPDATE";
/// Statements with more rows than this are not kept in sqlx's per-connection statement cache.
const CACHE_MAX_ROWS: usize = 64;

/// Advisory lock keys (arbitrary constants, "devid" + purpose).
const LOCK_FEED: i64 = 0x6465_7669_6401;
const LOCK_BOOTSTRAP: i64 = 0x6465_7669_6402;

pub(super) struct Backend {
    write: PgPool,
    /// The same pool: PostgreSQL needs no reader/writer split.
    read: PgPool,
    url: String,
}

/// How long start-up waits for PostgreSQL to answer, unless the URL's `connect_timeout`
/// parameter (seconds, as in libpq) says otherwise.
pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts while the server refuses connections (it may be starting).
const CONNECT_RETRY: Duration = Duration::from_millis(500);

/// `url` without its `connect_timeout` parameter (which sqlx does not know), and that wait.
pub(super) fn split_connect_timeout(url: &str) -> Result<(String, Duration), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), DEFAULT_CONNECT_WAIT));
    };
    let mut wait = DEFAULT_CONNECT_WAIT;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("connect_timeout=") {
            Some(v) => {
                let secs: u64 = v.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    sqlx::Error::Configuration(
                        format!("connect_timeout={v:?} is not a positive number of seconds").into(),
                    )
                })?;
                wait = Duration::from_secs(secs);
            }
            None => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, wait))
}

/// `host:port/database` (or the socket path) of `url`, never its password.
pub(super) fn address(url: &str) -> String {
    let Ok((url, _)) = split_connect_timeout(url) else {
        return "(invalid URL)".to_string();
    };
    match PgConnectOptions::from_str(&url) {
        Ok(o) => {
            let place = match o.get_socket() {
                Some(socket) => socket.display().to_string(),
                None => format!("{}:{}", o.get_host(), o.get_port()),
            };
            format!("{place}/{}", o.get_database().unwrap_or(o.get_username()))
        }
        Err(_) => "(invalid URL)".to_string(),
    }
}

impl Backend {
    /// Waits (at most the URL's `connect_timeout`, else [`DEFAULT_CONNECT_WAIT`]) until one
    /// connection succeeds, retrying while connections are refused, so that an unreachable
    /// server is reported soon and with its own error; then opens the pool.
    pub(super) async fn connect(url: &str) -> Result<Backend, StoreError> {
        let (url, wait) = split_connect_timeout(url)?;
        let options = PgConnectOptions::from_str(&url)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut last_error = None;
        loop {
            match tokio::time::timeout_at(deadline, options.connect()).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    break;
                }
                // Refused, reset, unreachable: the server may be starting; try again.
                Ok(Err(sqlx::Error::Io(e))) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "PostgreSQL not reachable yet; retrying");
                    last_error = Some(sqlx::Error::Io(e));
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + CONNECT_RETRY),
                    )
                    .await;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(last_error
                        .unwrap_or_else(|| {
                            sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no answer within {} s", wait.as_secs()),
                            ))
                        })
                        .into())
                }
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Backend {
            write: pool.clone(),
            read: pool,
            url,
        })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes an advisory lock, so concurrent starts of several processes are safe.
        sqlx::migrate!("../migrations/postgres")
            .run(&self.write)
            .await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.write.close().await;
    }

    async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(self.write.begin().await?)
    }

    /// Held until commit: appends from all processes are serialized, so max(seq)+1 is
    /// gap-free and seq order is commit order.
    async fn lock_feed(tx: &mut Tx) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_FEED)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn notify_feed(tx: &mut Tx, seq: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(FEED_CHANNEL)
            .bind(seq.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn lock_bootstrap(tx: &mut Tx) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_BOOTSTRAP)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Stores `items` as new devices in one statement (its own transaction): data-modifying
    /// CTEs insert the devices, their certificates (joined on the returned ids) and the audit
    /// rows. One round trip instead of six; a uniqueness violation comes back as the database
    /// error and nothing is written. Rows go in hardware_serial order, like the classifying
    /// path, so that concurrent inserts take their unique-index locks in the same order.
    pub(super) async fn register_new(
        &self,
        items: &[NewDevice],
        actor: &Actor,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut devs: Vec<&NewDevice> = items.iter().collect();
        devs.sort_unstable_by(|a, b| a.hardware_serial.cmp(&b.hardware_serial));
        sqlx::query(
            "WITH input AS ( \
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], \
                 $6::int8[], $7::text[], $8::text[], $9::bytea[], $10::int8[], $11::int8[], \
                 $12::text[], $13::text[], $17::bytea[]) \
               AS t(client_id, hardware_serial, client_id_generated, model, metadata, \
                    created_at, serial, fingerprint, der, not_before, not_after, profile, \
                    csr_sha256, spki_sha256) \
             ), dev AS ( \
               INSERT INTO devices (client_id, hardware_serial, client_id_generated, model, \
                 metadata, current_serial, created_at) \
               SELECT client_id, hardware_serial, client_id_generated, model, metadata, serial, \
                 created_at FROM input \
               RETURNING id, hardware_serial \
             ), cert AS ( \
               INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, \
                 not_after, profile, csr_sha256, spki_sha256, created_at) \
               SELECT i.serial, dev.id, i.fingerprint, i.der, i.not_before, i.not_after, \
                 i.profile, i.csr_sha256, i.spki_sha256, i.created_at \
               FROM input i JOIN dev ON dev.hardware_serial = i.hardware_serial \
             ), keys AS ( \
               INSERT INTO device_keys (spki_sha256, device_id) \
               SELECT i.spki_sha256, dev.id \
               FROM input i JOIN dev ON dev.hardware_serial = i.hardware_serial \
             ) \
             INSERT INTO audit (at, actor_id, actor_name, action, target, outcome) \
             SELECT $14, $15, $16, 'device.register', client_id, 'ok' FROM input",
        )
        .bind(column(&devs, |d| d.client_id.as_str()))
        .bind(column(&devs, |d| d.hardware_serial.as_str()))
        .bind(column(&devs, |d| d.client_id_generated))
        .bind(column(&devs, |d| d.model.as_deref()))
        .bind(column(&devs, |d| d.metadata.as_deref()))
        .bind(column(&devs, |d| d.created_at))
        .bind(column(&devs, |d| d.cert.serial.as_str()))
        .bind(column(&devs, |d| d.cert.fingerprint.as_str()))
        .bind(column(&devs, |d| d.cert.der.as_slice()))
        .bind(column(&devs, |d| d.cert.not_before))
        .bind(column(&devs, |d| d.cert.not_after))
        .bind(column(&devs, |d| d.cert.profile.as_str()))
        .bind(column(&devs, |d| d.cert.csr_sha256.as_deref()))
        .bind(at)
        .bind(&actor.id)
        .bind(&actor.name)
        .bind(column(&devs, |d| d.cert.spki_sha256.as_slice()))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn spawn_feed_listener(
        &self,
        sink: tokio::sync::broadcast::Sender<i64>,
    ) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(FEED_CHANNEL).await?;
        let pool = self.read.clone();
        // After a gap in listening, notifications sent meanwhile are gone: announce the head.
        let announce_head = move |sink: tokio::sync::broadcast::Sender<i64>| {
            let pool = pool.clone();
            async move {
                let head: Result<i64, sqlx::Error> =
                    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM feed")
                        .fetch_one(&pool)
                        .await;
                if let Ok(head) = head {
                    let _ = sink.send(head);
                }
            }
        };
        Ok(tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match n.payload().parse::<i64>() {
                        Ok(seq) => {
                            // No receiver left (the feed was dropped): nobody listens any more.
                            if sink.send(seq).is_err() {
                                break;
                            }
                        }
                        Err(_) => {
                            tracing::warn!(payload = n.payload(), "ignoring bad feed notification")
                        }
                    },
                    Ok(None) => {
                        // The connection was lost; try_recv already reconnected and listens
                        // again (eager reconnect).
                        tracing::warn!("feed listener lost its connection; reconnected");
                        announce_head(sink.clone()).await;
                        if sink.receiver_count() == 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        // Reconnecting failed (or another error). try_recv would reconnect
                        // lazily and then only wait, telling no one what was committed in the
                        // meantime: reconnect here, then announce the head.
                        tracing::warn!(error = %e, "feed listener error; retrying every 1 s");
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            match listener.listen(FEED_CHANNEL).await {
                                Ok(()) => break,
                                Err(e) => tracing::debug!(error = %e, "feed listener still down"),
                            }
                        }
                        tracing::info!("feed listener listening again");
                        announce_head(sink.clone()).await;
                        if sink.receiver_count() == 0 {
                            break;
                        }
                    }
                }
            }
        }))
    }
}

// ---- bulk statements: one fixed statement each, the rows passed as arrays ----
// (one bind per column instead of one per value: no bind limit, no chunking, and the statement
// is prepared once per connection whatever the batch size)

/// One column of `devs`, as the array bound to an UNNEST parameter.
fn column<'a, T>(devs: &[&'a NewDevice], f: impl Fn(&'a NewDevice) -> T) -> Vec<T> {
    devs.iter().map(|&d| f(d)).collect()
}

/// What is stored for the serials and ClientIDs named by `items`.
async fn lookup_existing(
    tx: &mut Tx,
    items: &[NewDevice],
) -> Result<
    (
        HashMap<String, KnownSerial>,
        std::collections::HashSet<String>,
    ),
    StoreError,
> {
    let serials: Vec<&str> = items.iter().map(|i| i.hardware_serial.as_str()).collect();
    let client_ids: Vec<&str> = items.iter().map(|i| i.client_id.as_str()).collect();
    let rows = sqlx::query(
        // Two index lookups driven by the arrays: a plan that does not depend on the table's
        // statistics (`= ANY($1) OR = ANY($2)` became a sequential scan testing every row
        // against the whole array once the cached plan thought the table was small).
        "SELECT d.id, d.hardware_serial, d.client_id, d.model, d.metadata, c.csr_sha256 \
         FROM devices d \
         LEFT JOIN certificates c ON c.serial = d.current_serial \
         WHERE d.id IN ( \
           SELECT d2.id FROM unnest($1::text[]) AS s(v) JOIN devices d2 ON d2.hardware_serial = s.v \
           UNION \
           SELECT d3.id FROM unnest($2::text[]) AS s(v) JOIN devices d3 ON d3.client_id = s.v)",
    )
    .bind(&serials)
    .bind(&client_ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut known = HashMap::with_capacity(rows.len());
    let mut taken = std::collections::HashSet::with_capacity(rows.len());
    for r in rows {
        let client_id: String = r.try_get("client_id")?;
        taken.insert(client_id.clone());
        known.insert(
            r.try_get::<String, _>("hardware_serial")?,
            KnownSerial {
                device_id: r.try_get("id")?,
                client_id,
                model: r.try_get("model")?,
                metadata: r.try_get("metadata")?,
                csr_sha256: r.try_get("csr_sha256")?,
            },
        );
    }
    Ok((known, taken))
}

/// The devices the keys named by `items` are bound to.
async fn lookup_keys(
    tx: &mut Tx,
    items: &[NewDevice],
) -> Result<HashMap<[u8; 32], KnownKey>, StoreError> {
    let hashes: Vec<&[u8]> = items
        .iter()
        .map(|i| i.cert.spki_sha256.as_slice())
        .collect();
    let rows = sqlx::query(
        "SELECT k.spki_sha256, k.compromised_at, d.client_id \
         FROM unnest($1::bytea[]) AS s(v) JOIN device_keys k ON k.spki_sha256 = s.v \
         JOIN devices d ON d.id = k.device_id",
    )
    .bind(&hashes)
    .fetch_all(&mut **tx)
    .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for r in &rows {
        insert_known_key(&mut keys, r)?;
    }
    Ok(keys)
}

/// The ids `insert_devices` gave the devices, in the order of `devs`.
fn device_ids(devs: &[&NewDevice], ids: &HashMap<String, i64>) -> Result<Vec<i64>, StoreError> {
    devs.iter()
        .map(|d| inserted_id(ids, &d.hardware_serial))
        .collect()
}

/// Binds each new device's key to it.
async fn insert_device_keys(
    tx: &mut Tx,
    devs: &[&NewDevice],
    ids: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    let device_ids = device_ids(devs, ids)?;
    sqlx::query(
        "INSERT INTO device_keys (spki_sha256, device_id) \
         SELECT * FROM UNNEST($1::bytea[], $2::int8[])",
    )
    .bind(column(devs, |d| d.cert.spki_sha256.as_slice()))
    .bind(device_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts devices; returns hardware_serial -> new id.
async fn insert_devices(
    tx: &mut Tx,
    devs: &[&NewDevice],
) -> Result<HashMap<String, i64>, StoreError> {
    let rows = sqlx::query(
        "INSERT INTO devices (client_id, hardware_serial, client_id_generated, model, metadata, \
         current_serial, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], \
         $6::text[], $7::int8[]) RETURNING id, hardware_serial",
    )
    .bind(column(devs, |d| d.client_id.as_str()))
    .bind(column(devs, |d| d.hardware_serial.as_str()))
    .bind(column(devs, |d| d.client_id_generated))
    .bind(column(devs, |d| d.model.as_deref()))
    .bind(column(devs, |d| d.metadata.as_deref()))
    .bind(column(devs, |d| d.cert.serial.as_str()))
    .bind(column(devs, |d| d.created_at))
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = HashMap::with_capacity(rows.len());
    for r in rows {
        ids.insert(
            r.try_get::<String, _>("hardware_serial")?,
            r.try_get::<i64, _>("id")?,
        );
    }
    Ok(ids)
}

async fn insert_certificates(
    tx: &mut Tx,
    devs: &[&NewDevice],
    ids: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    let device_ids = device_ids(devs, ids)?;
    sqlx::query(
        "INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, not_after, \
         profile, csr_sha256, created_at, spki_sha256) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::bytea[], $5::int8[], \
         $6::int8[], $7::text[], $8::text[], $9::int8[], $10::bytea[])",
    )
    .bind(column(devs, |d| d.cert.serial.as_str()))
    .bind(device_ids)
    .bind(column(devs, |d| d.cert.fingerprint.as_str()))
    .bind(column(devs, |d| d.cert.der.as_slice()))
    .bind(column(devs, |d| d.cert.not_before))
    .bind(column(devs, |d| d.cert.not_after))
    .bind(column(devs, |d| d.cert.profile.as_str()))
    .bind(column(devs, |d| d.cert.csr_sha256.as_deref()))
    .bind(column(devs, |d| d.created_at))
    .bind(column(devs, |d| d.cert.spki_sha256.as_slice()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One `device.register` audit row per created device.
async fn insert_register_audit(
    tx: &mut Tx,
    devs: &[&NewDevice],
    actor: &Actor,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor_id, actor_name, action, target, outcome) \
         SELECT $1, $2, $3, 'device.register', t, 'ok' FROM UNNEST($4::text[]) AS t",
    )
    .bind(at)
    .bind(&actor.id)
    .bind(&actor.name)
    .bind(column(devs, |d| d.client_id.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Devices (with certificates) by internal id, keyed by id.
async fn load_devices_by_id(
    conn: &mut DbConn,
    ids: &[i64],
) -> Result<HashMap<i64, DeviceWithCerts>, StoreError> {
    let sql = format!(
        "SELECT {DEVICE_COLS}, {CERT_COLS} FROM devices d \
         LEFT JOIN certificates c ON c.device_id = d.id \
         WHERE d.id = ANY($1) ORDER BY d.id, c.id DESC"
    );
    let rows = sqlx::query(&sql).bind(ids).fetch_all(conn).await?;
    Ok(assemble(&rows)?
        .into_iter()
        .map(|d| (d.device.id, d))
        .collect())
}

include!("common.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeout_is_taken_out_of_the_url() {
        let (url, wait) = split_connect_timeout("postgres://u:pw@h:5/db").unwrap_or_default();
        assert_eq!(
            (url.as_str(), wait),
            ("postgres://u:pw@h:5/db", DEFAULT_CONNECT_WAIT)
        );
        let (url, wait) =
            split_connect_timeout("postgres://h/db?sslmode=disable&connect_timeout=3")
                .unwrap_or_default();
        assert_eq!(url, "postgres://h/db?sslmode=disable");
        assert_eq!(wait, Duration::from_secs(3));
        let (url, _) =
            split_connect_timeout("postgres://h/db?connect_timeout=3").unwrap_or_default();
        assert_eq!(url, "postgres://h/db");
        assert!(split_connect_timeout("postgres://h/db?connect_timeout=0").is_err());
        assert!(split_connect_timeout("postgres://h/db?connect_timeout=x").is_err());
    }

    #[test]
    fn the_address_names_no_password() {
        let a = address("postgres://devid:hunter2@db.example:6543/fleet?connect_timeout=2");
        assert_eq!(a, "db.example:6543/fleet");
    }
}
