-- Leases that make one process of several on one database do a job: the webhook deliveries
-- (formerly the one-row webhook_worker) and the fleet sweep. A process holds a lease while it
-- renews it before `expires` (unix seconds); any process may take one that has expired.
CREATE TABLE leases (
    name    TEXT   NOT NULL PRIMARY KEY,
    holder  TEXT   NOT NULL DEFAULT '',
    expires BIGINT NOT NULL DEFAULT 0
);
INSERT INTO leases (name, holder, expires) SELECT 'webhooks', holder, expires FROM webhook_worker;
INSERT INTO leases (name) VALUES ('fleet_sweep');
DROP TABLE webhook_worker;
