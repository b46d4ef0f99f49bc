//! PostgreSQL: one pool of 16 connections; several server processes may share the database
//! (feed appends and the admin bootstrap are serialized with advisory locks, `sql::Tx::lock`;
//! each feed append NOTIFYs [`FEED_CHANNEL`] in its transaction, delivered on commit). Here:
//! connecting, the feed listener, and the statements of registration, which pass their rows as
//! arrays (one bind per column instead of one per value: no bind limit, no chunking, and the
//! statement is prepared once per connection whatever the batch size).

use std::str::FromStr as _;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};

use super::devices::Joined;
use super::registration::{Get, KnownKeyRow, KnownSerialRow, NewRow, NEW_DEVICE};
use super::sql::Pools;
use super::{NewDevice, StoreError, FEED_CHANNEL};

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

/// Waits (at most the URL's `connect_timeout`, else [`DEFAULT_CONNECT_WAIT`]) until one
/// connection succeeds, retrying while connections are refused, so that an unreachable
/// server is reported soon and with its own error; then opens the pool.
pub(super) async fn connect(url: &str) -> Result<Pools, StoreError> {
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
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + CONNECT_RETRY))
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
    Ok(Pools::Postgres { pool, url })
}

pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    // sqlx takes an advisory lock, so concurrent starts of several processes are safe.
    sqlx::migrate!("../migrations/postgres").run(pool).await?;
    Ok(())
}

/// The registration statement: data-modifying CTEs insert the devices, their certificates
/// (joined on the returned ids), the key bindings, sensors' sealed keys and the audit rows from the arrays of
/// [`NEW_DEVICE`]'s columns.
static INSERT_NEW: LazyLock<String> = LazyLock::new(|| {
    let (mut params, mut names) = (Vec::new(), Vec::new());
    for (i, (name, get)) in NEW_DEVICE.iter().enumerate() {
        let ty = match get {
            Get::Text(_) => "text",
            Get::Int(_) => "int8",
            Get::Bool(_) => "bool",
            Get::Bytes(_) => "bytea",
        };
        params.push(format!("${}::{ty}[]", i + 1));
        names.push(*name);
    }
    format!(
        "WITH input AS ( \
           SELECT * FROM UNNEST({}) AS t({}) \
         ), dev AS ( \
           INSERT INTO devices (client_id, hardware_serial, client_id_generated, model, \
             metadata, current_serial, created_at, kind) \
           SELECT client_id, hardware_serial, client_id_generated, model, metadata, serial, \
             created_at, kind FROM input \
           RETURNING id, hardware_serial \
         ), cert AS ( \
           INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, \
             not_after, profile, csr_sha256, spki_sha256, created_at) \
           SELECT i.serial, dev.id, i.fingerprint, i.der, i.not_before, i.not_after, \
             i.profile, i.csr_sha256, i.spki_sha256, i.created_at \
           FROM input i JOIN dev ON dev.hardware_serial = i.hardware_serial \
           WHERE i.serial IS NOT NULL \
         ), keys AS ( \
           INSERT INTO device_keys (spki_sha256, device_id) \
           SELECT i.spki_sha256, dev.id \
           FROM input i JOIN dev ON dev.hardware_serial = i.hardware_serial \
           WHERE i.spki_sha256 IS NOT NULL \
         ), sensor AS ( \
           INSERT INTO sensors (device_id, sealed_key) \
           SELECT dev.id, i.sealed_key \
           FROM input i JOIN dev ON dev.hardware_serial = i.hardware_serial \
           WHERE i.sealed_key IS NOT NULL \
         ) \
         INSERT INTO audit (at, actor_id, actor_name, action, target, outcome) \
         SELECT at, actor_id, actor_name, 'device.register', client_id, 'ok' FROM input",
        params.join(", "),
        names.join(", ")
    )
});

/// Stores `rows` as new devices with [`INSERT_NEW`]: one statement, one round trip. A
/// uniqueness violation aborts it with nothing of it written. Rows go in hardware_serial order,
/// so that concurrent inserts take their unique-index locks in the same order.
pub(super) async fn insert_new(
    conn: &mut PgConnection,
    rows: &[NewRow<'_>],
) -> Result<(), sqlx::Error> {
    let mut rows = rows.to_vec();
    rows.sort_unstable_by(|a, b| a.device.hardware_serial.cmp(&b.device.hardware_serial));
    let mut q = sqlx::query(&INSERT_NEW);
    for (_, get) in NEW_DEVICE {
        q = match *get {
            Get::Text(f) => q.bind(rows.iter().map(f).collect::<Vec<_>>()),
            Get::Int(f) => q.bind(rows.iter().map(f).collect::<Vec<_>>()),
            Get::Bool(f) => q.bind(rows.iter().map(f).collect::<Vec<_>>()),
            Get::Bytes(f) => q.bind(rows.iter().map(f).collect::<Vec<_>>()),
        };
    }
    q.execute(conn).await?;
    Ok(())
}

/// The devices the keys named by `items` are bound to.
pub(super) async fn lookup_keys(
    conn: &mut PgConnection,
    items: &[NewDevice],
) -> Result<Vec<KnownKeyRow>, sqlx::Error> {
    let hashes: Vec<&[u8]> = items
        .iter()
        .filter_map(|i| i.cert().map(|c| c.spki_sha256.as_slice()))
        .collect();
    sqlx::query_as(
        "SELECT k.spki_sha256, k.compromised_at, d.client_id \
         FROM unnest($1::bytea[]) AS s(v) JOIN device_keys k ON k.spki_sha256 = s.v \
         JOIN devices d ON d.id = k.device_id",
    )
    .bind(&hashes)
    .fetch_all(conn)
    .await
}

/// What is stored for the serials and ClientIDs named by `items`.
pub(super) async fn lookup_serials(
    conn: &mut PgConnection,
    items: &[NewDevice],
) -> Result<Vec<KnownSerialRow>, sqlx::Error> {
    let serials: Vec<&str> = items.iter().map(|i| i.hardware_serial.as_str()).collect();
    let client_ids: Vec<&str> = items.iter().map(|i| i.client_id.as_str()).collect();
    sqlx::query_as(
        // Two index lookups driven by the arrays: a plan that does not depend on the table's
        // statistics (`= ANY($1) OR = ANY($2)` became a sequential scan testing every row
        // against the whole array once the cached plan thought the table was small).
        "SELECT d.id, d.hardware_serial, d.client_id, d.model, d.metadata, d.kind, c.csr_sha256 \
         FROM devices d \
         LEFT JOIN certificates c ON c.serial = d.current_serial \
         WHERE d.id IN ( \
           SELECT d2.id FROM unnest($1::text[]) AS s(v) JOIN devices d2 ON d2.hardware_serial = s.v \
           UNION \
           SELECT d3.id FROM unnest($2::text[]) AS s(v) JOIN devices d3 ON d3.client_id = s.v)",
    )
    .bind(&serials)
    .bind(&client_ids)
    .fetch_all(conn)
    .await
}

/// Devices (with certificates) by hardware serial.
pub(super) async fn load_devices_by_serial(
    conn: &mut PgConnection,
    serials: &[&str],
) -> Result<Vec<Joined>, sqlx::Error> {
    // The ids by an index lookup per serial, as in `lookup_serials`.
    let sql = format!(
        "{} WHERE d.id IN (SELECT d2.id FROM unnest($1::text[]) AS s(v) \
         JOIN devices d2 ON d2.hardware_serial = s.v) ORDER BY d.id, c.id DESC",
        Joined::select()
    );
    sqlx::query_as(&sql).bind(serials).fetch_all(conn).await
}

/// What a listener follows: a NOTIFY channel whose payloads are the newest seq of a table, and
/// the query that reads that table's head (announced after a gap in listening).
#[derive(Debug, Clone, Copy)]
pub(super) struct Channel {
    pub name: &'static str,
    pub head_sql: &'static str,
}

/// The device feed's channel.
pub(super) const FEED: Channel = Channel {
    name: FEED_CHANNEL,
    head_sql: "SELECT COALESCE(MAX(seq), 0) FROM feed",
};

/// The events for applications' channel.
pub(super) const APP_EVENTS: Channel = Channel {
    name: super::APP_EVENTS_CHANNEL,
    head_sql: "SELECT COALESCE(MAX(seq), 0) FROM app_events",
};

/// See `Store::spawn_feed_listener`; the same for any [`Channel`].
pub(super) async fn spawn_listener(
    url: &str,
    pool: PgPool,
    channel: Channel,
    sink: tokio::sync::broadcast::Sender<i64>,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(channel.name).await?;
    // After a gap in listening, notifications sent meanwhile are gone: announce the head.
    let announce_head = move |sink: tokio::sync::broadcast::Sender<i64>| {
        let pool = pool.clone();
        async move {
            let head: Result<i64, sqlx::Error> =
                sqlx::query_scalar(channel.head_sql).fetch_one(&pool).await;
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
                        tracing::warn!(
                            channel = channel.name,
                            payload = n.payload(),
                            "ignoring bad notification"
                        )
                    }
                },
                Ok(None) => {
                    // The connection was lost; try_recv already reconnected and listens
                    // again (eager reconnect).
                    tracing::warn!(
                        channel = channel.name,
                        "listener lost its connection; reconnected"
                    );
                    announce_head(sink.clone()).await;
                    if sink.receiver_count() == 0 {
                        break;
                    }
                }
                Err(e) => {
                    // Reconnecting failed (or another error). try_recv would reconnect
                    // lazily and then only wait, telling no one what was committed in the
                    // meantime: reconnect here, then announce the head.
                    tracing::warn!(
                        channel = channel.name,
                        error = %e,
                        "listener error; retrying every 1 s"
                    );
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match listener.listen(channel.name).await {
                            Ok(()) => break,
                            Err(e) => tracing::debug!(error = %e, "listener still down"),
                        }
                    }
                    tracing::info!(channel = channel.name, "listening again");
                    announce_head(sink.clone()).await;
                    if sink.receiver_count() == 0 {
                        break;
                    }
                }
            }
        }
    }))
}

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
