-- Webhooks: the events for applications POSTed to a URL. Keep in step with
-- ../sqlite/0010_webhooks.sql.
--
-- webhooks.scanned_seq: the last app_events seq the worker has turned into deliveries (events after
-- it are still to be looked at). kinds/models: JSON arrays (models NULL: every device).
-- sealed_secret: the signing secret sealed with the sensor KEK (AAD names the webhook).
CREATE TABLE webhooks (
    id             TEXT    NOT NULL PRIMARY KEY,
    url           TEXT    NOT NULL,
    kinds         TEXT    NOT NULL,
    models        TEXT,
    sealed_secret BYTEA   NOT NULL,
    scanned_seq   BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- One event's delivery to one webhook; delivered in event_seq order per webhook.
-- state: pending | delivered | failed. Times: unix seconds.
CREATE TABLE webhook_deliveries (
    id                BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq        BIGINT  NOT NULL,
    state            TEXT    NOT NULL,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    first_attempt_at BIGINT,
    last_attempt_at  BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, state, event_seq);

-- Which process runs the delivery worker: one row, taken while free or expired.
CREATE TABLE webhook_worker (
    id      BIGINT  NOT NULL PRIMARY KEY CHECK (id = 1),
    holder  TEXT    NOT NULL DEFAULT '',
    expires BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO webhook_worker (id) VALUES (1);
