-- devid schema, PostgreSQL flavour. Times are unix seconds (UTC). Never edit once applied: add 0002_...
-- Keep in step with ../sqlite/0001_init.sql (same tables, columns and meaning).

CREATE TABLE devices (
    id                  BIGSERIAL PRIMARY KEY,
    client_id           TEXT    NOT NULL UNIQUE,
    hardware_serial     TEXT    NOT NULL UNIQUE,
    client_id_generated BOOLEAN NOT NULL DEFAULT FALSE,
    model               TEXT,
    metadata            TEXT,             -- JSON object
    status              TEXT    NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'suspended', 'revoked')),
    current_serial      TEXT,             -- serial of the device's current certificate
    created_at          BIGINT  NOT NULL,
    revoked_at          BIGINT,
    reason              TEXT,
    -- connection events (issue 4)
    last_seen           BIGINT,
    last_address        TEXT,
    connect_count       BIGINT  NOT NULL DEFAULT 0,
    auth_failure_count  BIGINT  NOT NULL DEFAULT 0,
    last_auth_failure   BIGINT,
    -- per-device policy (issues 4 and 5); NULL = the model's setting
    allowed_cidrs       TEXT,             -- JSON array of CIDRs
    topic_policy        TEXT,             -- JSON TopicPolicy
    message_auth        TEXT
);
CREATE INDEX devices_status_id ON devices (status, id);
CREATE INDEX devices_model_id ON devices (model, id);
CREATE INDEX devices_created_at ON devices (created_at);

CREATE TABLE certificates (
    id          BIGSERIAL PRIMARY KEY,
    serial      TEXT    NOT NULL UNIQUE,
    device_id   BIGINT  NOT NULL REFERENCES devices (id),
    fingerprint TEXT    NOT NULL UNIQUE,
    der         BYTEA   NOT NULL,
    not_before  BIGINT  NOT NULL,
    not_after   BIGINT  NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'good' CHECK (status IN ('good', 'hold', 'revoked')),
    profile     TEXT    NOT NULL,
    csr_sha256  TEXT,
    revoked_at  BIGINT,
    reason      TEXT,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX certificates_device ON certificates (device_id, id);
-- The CRL lists only revoked and held certificates: keep that scan small.
CREATE INDEX certificates_not_good ON certificates (status) WHERE status <> 'good';

-- Revocation feed: seq is gap-free and increasing in commit order (appends are serialized).
CREATE TABLE feed (
    seq       BIGINT  PRIMARY KEY,
    scope     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    client_id TEXT    NOT NULL,
    serials   TEXT    NOT NULL,           -- JSON array of lowercase hex serials
    reason    TEXT,
    at        BIGINT  NOT NULL
);

-- The current CRL: one row.
CREATE TABLE crl (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    number      BIGINT  NOT NULL,
    feed_head   BIGINT  NOT NULL,
    der         BYTEA   NOT NULL,
    this_update BIGINT  NOT NULL,
    next_update BIGINT  NOT NULL
);

CREATE TABLE tokens (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    models     TEXT,                      -- JSON array; NULL = any model
    hash       BYTEA   NOT NULL UNIQUE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE audit (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT  NOT NULL,
    actor_id   TEXT    NOT NULL,
    actor_name TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_actor_id ON audit (actor_id, id);
CREATE INDEX audit_actor_name ON audit (actor_name, id);

-- Per-model settings (issues 3-5).
CREATE TABLE models (
    name             TEXT PRIMARY KEY,
    client_id_prefix TEXT,
    topic_policy     TEXT,                -- JSON TopicPolicy
    message_auth     TEXT,
    updated_at       BIGINT  NOT NULL
);
