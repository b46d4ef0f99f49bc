-- The fleet summary's device counts, kept as devices change instead of counted at each read.
-- Keep in step with ../sqlite/0011_device_counts.sql.
--
-- device_counts: changes of the number of devices with each status, apart by never_seen
-- (last_seen IS NULL); a count is the SUM of its rows. Each statement that writes devices adds
-- at most one row per pair it changed (statement triggers over the transition tables), and
-- only inserts: concurrent writers never wait for one another on a counter row. The store
-- folds the rows into one per pair when they pile up (Store::fleet_counts).
CREATE TABLE device_counts (
    status     TEXT    NOT NULL,
    never_seen BOOLEAN NOT NULL,
    n          BIGINT  NOT NULL
);

INSERT INTO device_counts (status, never_seen, n)
SELECT status, last_seen IS NULL, COUNT(*) FROM devices GROUP BY 1, 2;

CREATE FUNCTION device_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO device_counts (status, never_seen, n)
        SELECT status, last_seen IS NULL, COUNT(*) FROM new_rows GROUP BY 1, 2;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO device_counts (status, never_seen, n)
        SELECT status, last_seen IS NULL, -COUNT(*) FROM old_rows GROUP BY 1, 2;
    ELSE
        INSERT INTO device_counts (status, never_seen, n)
        SELECT status, never_seen, SUM(n) FROM (
            SELECT status, last_seen IS NULL AS never_seen, 1 AS n FROM new_rows
            UNION ALL
            SELECT status, last_seen IS NULL, -1 FROM old_rows
        ) c GROUP BY 1, 2 HAVING SUM(n) <> 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER device_counts_insert AFTER INSERT ON devices
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION device_counts_change();
CREATE TRIGGER device_counts_update AFTER UPDATE ON devices
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION device_counts_change();
CREATE TRIGGER device_counts_delete AFTER DELETE ON devices
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION device_counts_change();
