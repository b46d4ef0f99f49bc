-- The fleet summary's device counts, kept as devices change instead of counted at each read.
-- Keep in step with ../postgres/0011_device_counts.sql.
--
-- device_counts: how many devices have each status, apart by never_seen (1: last_seen IS NULL).
-- Every pair has a row (zero included); triggers on devices keep them right for every writer.
-- SQLite has one writer at a time, so one row per pair takes no lock from anyone.
CREATE TABLE device_counts (
    status     TEXT    NOT NULL,
    never_seen INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (status, never_seen)
) WITHOUT ROWID;

INSERT INTO device_counts (status, never_seen, n)
SELECT s.status, v.never_seen, 0
FROM (SELECT 'active' AS status UNION ALL SELECT 'suspended' UNION ALL SELECT 'revoked') s,
     (SELECT 0 AS never_seen UNION ALL SELECT 1) v;

UPDATE device_counts SET n = (
    SELECT COUNT(*) FROM devices d
    WHERE d.status = device_counts.status AND (d.last_seen IS NULL) = device_counts.never_seen
);

CREATE TRIGGER device_counts_insert AFTER INSERT ON devices
BEGIN
    UPDATE device_counts SET n = n + 1
    WHERE status = NEW.status AND never_seen = (NEW.last_seen IS NULL);
END;

CREATE TRIGGER device_counts_update AFTER UPDATE OF status, last_seen ON devices
WHEN OLD.status <> NEW.status OR (OLD.last_seen IS NULL) <> (NEW.last_seen IS NULL)
BEGIN
    UPDATE device_counts SET n = n - 1
    WHERE status = OLD.status AND never_seen = (OLD.last_seen IS NULL);
    UPDATE device_counts SET n = n + 1
    WHERE status = NEW.status AND never_seen = (NEW.last_seen IS NULL);
END;

CREATE TRIGGER device_counts_delete AFTER DELETE ON devices
BEGIN
    UPDATE device_counts SET n = n - 1
    WHERE status = OLD.status AND never_seen = (OLD.last_seen IS NULL);
END;
