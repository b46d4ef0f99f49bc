-- Fleet health: what brokers report of each device and of themselves, and the findings of the
-- fleet checks. Keep in step with ../postgres/0009_fleet_health.sql. Times are unix seconds.
--
-- device_health: one row per registered device a broker reported (first_seen: first connect;
-- the last connect and disconnect; sw_version from the last connect that carried one;
-- published/refused: totals of the brokers' per-batch counters). devices.last_seen stays the
-- last connect's time.
CREATE TABLE device_health (
    client_id          TEXT    NOT NULL PRIMARY KEY,
    first_seen         INTEGER,
    connect_at         INTEGER,
    connect_address    TEXT,
    connect_broker     TEXT,
    connect_auth       TEXT,
    disconnect_at      INTEGER,
    disconnect_address TEXT,
    disconnect_broker  TEXT,
    sw_version         TEXT,
    published          INTEGER NOT NULL DEFAULT 0,
    refused            INTEGER NOT NULL DEFAULT 0
);

-- Brokers as their batches describe them. last_batch: when the service received the newest.
CREATE TABLE fleet_brokers (
    name          TEXT    NOT NULL PRIMARY KEY,
    last_batch    INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    max_staleness INTEGER NOT NULL,
    feed_seq      INTEGER NOT NULL,
    connected     INTEGER NOT NULL
);

-- Connections open now: a connect opens one, a disconnect closes it, a broker's new
-- started_at closes every one it reported before. One per (broker, ClientID): MQTT takes a
-- session over on a second connect with the same ClientID.
CREATE TABLE fleet_connections (
    broker    TEXT    NOT NULL,
    client_id TEXT    NOT NULL,
    opened_at INTEGER NOT NULL,
    address   TEXT,
    serial    TEXT,
    PRIMARY KEY (broker, client_id)
);
CREATE INDEX fleet_connections_client ON fleet_connections (client_id);

-- Recent events the event-driven checks count over a window (auth failures per ClientID and
-- per source address, takeovers per ClientID, networks per certificate serial): subject is
-- '<what>:<value>', detail the network for shared certificates. Older rows are deleted.
CREATE TABLE fleet_window (
    subject TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    detail  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX fleet_window_subject ON fleet_window (subject, at);
CREATE INDEX fleet_window_at ON fleet_window (at);

-- Findings of the fleet checks; at most one open per (check, subject).
CREATE TABLE findings (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    check_name TEXT    NOT NULL,
    severity   TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    client_id  TEXT,
    model      TEXT,
    opened_at  INTEGER NOT NULL,
    closed_at  INTEGER,
    detail     TEXT    NOT NULL
);
CREATE UNIQUE INDEX findings_open ON findings (check_name, subject) WHERE closed_at IS NULL;
CREATE INDEX findings_open_by_check ON findings (check_name, severity) WHERE closed_at IS NULL;
CREATE INDEX findings_client ON findings (client_id, id) WHERE client_id IS NOT NULL;

-- Per-model check thresholds (a JSON CheckThresholds; absent fields are the defaults).
CREATE TABLE fleet_checks (
    model      TEXT    NOT NULL PRIMARY KEY,
    thresholds TEXT    NOT NULL
);

-- The sweeper's candidate queries: silent and never-seen devices by time, counts by status.
CREATE INDEX devices_last_seen ON devices (last_seen) WHERE last_seen IS NOT NULL;
CREATE INDEX devices_never_seen ON devices (created_at) WHERE last_seen IS NULL;
-- cert_expiring's candidates: valid certificates by notAfter.
CREATE INDEX certificates_expiry ON certificates (not_after) WHERE status = 'good';
