-- Sensors behind gateways (DEVID-S1). Keep in step with ../postgres/0005_sensors.sql.
--
-- A sensor is a row of `devices` with kind 'sensor': a ClientID, a hardware serial, a model, a
-- status and a topic policy like any device, no certificate. Its 32-byte key K is kept in
-- `sensors.sealed_key` sealed under the sensor key-encryption key (AES-256-GCM; the KEK is a
-- file beside the CA keys, `<data-dir>/ca/sensor.kek`), never in clear.
ALTER TABLE devices ADD COLUMN kind TEXT NOT NULL DEFAULT 'device'
    CHECK (kind IN ('device', 'sensor'));

-- One row per sensor, written with its device row at registration.
-- gateway_id: the device that relays its readings (at most one at a time).
-- seq_floor: the highest seq any broker reported accepting, as an order-preserving i64
-- (u64 minus 2^63, so that comparisons in SQL are numeric); NULL: none reported.
-- accepted, refused: readings counted by brokers; refusals by reason in sensor_refusals.
CREATE TABLE sensors (
    device_id       INTEGER NOT NULL PRIMARY KEY REFERENCES devices (id),
    sealed_key      BLOB    NOT NULL,
    gateway_id      INTEGER REFERENCES devices (id),
    attached_at     INTEGER,
    seq_floor       INTEGER,
    accepted        INTEGER NOT NULL DEFAULT 0,
    refused         INTEGER NOT NULL DEFAULT 0,
    last_refused_at INTEGER
);
CREATE INDEX sensors_gateway ON sensors (gateway_id) WHERE gateway_id IS NOT NULL;

CREATE TABLE sensor_refusals (
    device_id INTEGER NOT NULL REFERENCES devices (id),
    reason    TEXT    NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (device_id, reason)
) WITHOUT ROWID;

-- Which KEK sealed the sensor keys: a check value (HMAC-SHA256 under the KEK of a fixed
-- text), written by the first process that seals a key. A process whose KEK gives another
-- value refuses to start instead of sealing keys no other process can open.
CREATE TABLE sensor_kek (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    check_value BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Registration in one statement, now for both kinds: a device row's certificate and key
-- binding are written when it has a certificate (serial not NULL), a sensor's sealed key when
-- it has one.
DROP TRIGGER register_new_insert;
DROP VIEW register_new;
CREATE VIEW register_new AS SELECT
    NULL AS client_id, NULL AS hardware_serial, NULL AS client_id_generated, NULL AS model,
    NULL AS metadata, NULL AS created_at, NULL AS kind, NULL AS serial, NULL AS fingerprint,
    NULL AS der, NULL AS not_before, NULL AS not_after, NULL AS profile, NULL AS csr_sha256,
    NULL AS spki_sha256, NULL AS sealed_key, NULL AS at, NULL AS actor_id, NULL AS actor_name
WHERE 0;

CREATE TRIGGER register_new_insert INSTEAD OF INSERT ON register_new
BEGIN
    INSERT INTO devices (client_id, hardware_serial, client_id_generated, model, metadata,
                         current_serial, created_at, kind)
    VALUES (NEW.client_id, NEW.hardware_serial, NEW.client_id_generated, NEW.model, NEW.metadata,
            NEW.serial, NEW.created_at, NEW.kind);
    -- A sensor: its sealed key, while last_insert_rowid() is still the device's row.
    INSERT INTO sensors (device_id, sealed_key)
    SELECT last_insert_rowid(), NEW.sealed_key WHERE NEW.sealed_key IS NOT NULL;
    -- A device: its certificate. The sensors insert above wrote nothing for it, so
    -- last_insert_rowid() is still the device's row.
    INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, not_after, profile,
                              csr_sha256, spki_sha256, created_at)
    SELECT NEW.serial, last_insert_rowid(), NEW.fingerprint, NEW.der, NEW.not_before,
           NEW.not_after, NEW.profile, NEW.csr_sha256, NEW.spki_sha256, NEW.created_at
    WHERE NEW.serial IS NOT NULL;
    -- Now the certificate's rowid: its row (just written, in cache) gives the device id.
    INSERT INTO device_keys (spki_sha256, device_id)
    SELECT NEW.spki_sha256, device_id FROM certificates
    WHERE NEW.serial IS NOT NULL AND id = last_insert_rowid();
    INSERT INTO audit (at, actor_id, actor_name, action, target, outcome)
    VALUES (NEW.at, NEW.actor_id, NEW.actor_name, 'device.register', NEW.client_id, 'ok');
END;
