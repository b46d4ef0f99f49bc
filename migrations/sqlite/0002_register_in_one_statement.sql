-- Cheaper registration writes (SQLite). Each registration dirties a leaf page of every index it
-- inserts into, and a commit writes each dirty page whole to the WAL: random keys (ClientID,
-- certificate serial) touch a different page per device. Keep in step with
-- ../postgres/0002_register_in_one_statement.sql.

-- 1. certificates.fingerprint loses its UNIQUE index: nothing looks certificates up by
-- fingerprint, and the fingerprint is the SHA-256 of a DER that contains the (unique) serial,
-- so the index guarded nothing while costing one random page write per registration.
-- SQLite cannot drop a column constraint: rebuild the table (nothing references it).
CREATE TABLE certificates_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    serial      TEXT    NOT NULL UNIQUE,
    device_id   INTEGER NOT NULL REFERENCES devices (id),
    fingerprint TEXT    NOT NULL,
    der         BLOB    NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'good' CHECK (status IN ('good', 'hold', 'revoked')),
    profile     TEXT    NOT NULL,
    csr_sha256  TEXT,
    revoked_at  INTEGER,
    reason      TEXT,
    created_at  INTEGER NOT NULL
);
INSERT INTO certificates_new (id, serial, device_id, fingerprint, der, not_before, not_after,
                              status, profile, csr_sha256, revoked_at, reason, created_at)
SELECT id, serial, device_id, fingerprint, der, not_before, not_after, status, profile,
       csr_sha256, revoked_at, reason, created_at
FROM certificates;
DROP TABLE certificates;
ALTER TABLE certificates_new RENAME TO certificates;
CREATE INDEX certificates_device ON certificates (device_id, id);
-- The CRL lists only revoked and held certificates: keep that scan small.
CREATE INDEX certificates_not_good ON certificates (status) WHERE status <> 'good';

-- 2. Registration in one statement.
--
-- Every statement sqlx sends to SQLite is a round trip to the connection's worker thread, and on a
-- busy machine each one waits far longer than SQLite takes to run it. An INSERT of many rows into
-- this view registers that many new devices: its trigger writes each row's device, certificate
-- and `device.register` audit row. One statement is one atomic, durable transaction in autocommit
-- mode, so a group of new registrations costs one round trip and one commit instead of six round
-- trips. A uniqueness conflict (a replayed or clashing registration) aborts the whole statement
-- and nothing is written; the server then takes its statement-by-statement path, which tells an
-- idempotent replay from a conflict.
CREATE VIEW register_new AS SELECT
    NULL AS client_id, NULL AS hardware_serial, NULL AS client_id_generated, NULL AS model,
    NULL AS metadata, NULL AS created_at, NULL AS serial, NULL AS fingerprint, NULL AS der,
    NULL AS not_before, NULL AS not_after, NULL AS profile, NULL AS csr_sha256,
    NULL AS at, NULL AS actor_id, NULL AS actor_name
WHERE 0;

CREATE TRIGGER register_new_insert INSTEAD OF INSERT ON register_new
BEGIN
    INSERT INTO devices (client_id, hardware_serial, client_id_generated, model, metadata,
                         current_serial, created_at)
    VALUES (NEW.client_id, NEW.hardware_serial, NEW.client_id_generated, NEW.model, NEW.metadata,
            NEW.serial, NEW.created_at);
    -- Inside a trigger, last_insert_rowid() is the row the trigger itself just inserted.
    INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, not_after, profile,
                              csr_sha256, created_at)
    VALUES (NEW.serial, last_insert_rowid(), NEW.fingerprint, NEW.der, NEW.not_before,
            NEW.not_after, NEW.profile, NEW.csr_sha256, NEW.created_at);
    INSERT INTO audit (at, actor_id, actor_name, action, target, outcome)
    VALUES (NEW.at, NEW.actor_id, NEW.actor_name, 'device.register', NEW.client_id, 'ok');
END;
