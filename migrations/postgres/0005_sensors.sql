-- Sensors behind gateways (DEVID-S1). Keep in step with ../sqlite/0005_sensors.sql, which says
-- what each column means. (The SQLite side also makes the one-statement registration view
-- again; the PostgreSQL store's statement names the new columns itself.)
ALTER TABLE devices ADD COLUMN kind TEXT NOT NULL DEFAULT 'device'
    CHECK (kind IN ('device', 'sensor'));

CREATE TABLE sensors (
    device_id       BIGINT  PRIMARY KEY REFERENCES devices (id),
    sealed_key      BYTEA   NOT NULL,
    gateway_id      BIGINT  REFERENCES devices (id),
    attached_at     BIGINT,
    seq_floor       BIGINT,
    accepted        BIGINT  NOT NULL DEFAULT 0,
    refused         BIGINT  NOT NULL DEFAULT 0,
    last_refused_at BIGINT
);
CREATE INDEX sensors_gateway ON sensors (gateway_id) WHERE gateway_id IS NOT NULL;

CREATE TABLE sensor_refusals (
    device_id BIGINT  NOT NULL REFERENCES devices (id),
    reason    TEXT    NOT NULL,
    count     BIGINT  NOT NULL,
    PRIMARY KEY (device_id, reason)
);

CREATE TABLE sensor_kek (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    check_value BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL
);
