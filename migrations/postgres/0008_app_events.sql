-- Events for applications (the event stream, event pages, webhooks). Keep in step with
-- ../sqlite/0008_app_events.sql.
--
-- seq: strictly increasing in commit order (appends hold the app-events lock until commit), the
-- stream's event id. at: unix seconds. kind: core's AppEventKind. data: a JSON object, the
-- kind's own fields. Rows older than the retention are deleted.
CREATE TABLE app_events (
    seq       BIGINT  NOT NULL PRIMARY KEY,
    at        BIGINT  NOT NULL,
    kind      TEXT    NOT NULL,
    client_id TEXT,
    model     TEXT,
    data      TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX app_events_device ON app_events (client_id, seq) WHERE client_id IS NOT NULL;
CREATE INDEX app_events_at ON app_events (at);
