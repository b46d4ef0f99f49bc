-- Webhooks: the events for applications POSTed to a URL. Keep in step with
-- ../postgres/0010_webhooks.sql.
--
-- webhooks.scanned_seq: the last app_events seq the worker has turned into deliveries (events after
-- it are still to be looked at). kinds/models: JSON arrays (models NULL: every device).
-- sealed_secret: the signing secret sealed with the sensor KEK (AAD names the webhook).
CREATE TABLE webhooks (
    id             TEXT    NOT NULL PRIMARY KEY,
    url           TEXT    NOT NULL,
    kinds         TEXT    NOT NULL,
    models        TEXT,
    sealed_secret BLOB    NOT NULL,
    scanned_seq   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);

-- One event's delivery to one webhook; delivered in event_seq order per webhook.
-- state: pending | delivered | failed. Times: unix seconds.
CREATE TABLE webhook_deliveries (
    id                INTEGER NOT NULL PRIMARY KEY,
    webhook_id       TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq        INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, state, event_seq);

-- Which process runs the delivery worker: one row, taken while free or expired.
CREATE TABLE webhook_worker (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    holder  TEXT    NOT NULL DEFAULT '',
    expires INTEGER NOT NULL DEFAULT 0
);
INSERT INTO webhook_worker (id) VALUES (1);
