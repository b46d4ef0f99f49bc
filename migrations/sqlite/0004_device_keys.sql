-- One key pair belongs to one device, and a key revoked for keyCompromise is never certified
-- again. Keep in step with ../postgres/0004_device_keys.sql.
--
-- A key is known by spki_sha256: SHA-256 of its SubjectPublicKeyInfo DER. `device_keys` binds
-- each key to the device it was first certified for; its primary key is what refuses a second
-- device the same key, across connections and processes (a registration that collides aborts
-- and is classified again). Rows are never deleted: a revoked device keeps its key. A row's
-- compromised_at is set, in the same transaction, when the device or one of its certificates
-- is revoked with reason keyCompromise. WITHOUT ROWID: the table is its primary key's b-tree,
-- so binding a key costs one index insert per registration.
CREATE TABLE device_keys (
    spki_sha256    BLOB    NOT NULL PRIMARY KEY,
    device_id      INTEGER NOT NULL REFERENCES devices (id),
    compromised_at INTEGER
) WITHOUT ROWID;

-- The key each certificate certifies (for revoking one certificate for keyCompromise).
-- Certificates issued before this migration have NULL here; SQL cannot read a key out of a
-- certificate, so the server fills them (and their device_keys rows) when it opens the
-- database. This partial index finds them and stays empty afterwards: new certificates always
-- carry their key's hash.
ALTER TABLE certificates ADD COLUMN spki_sha256 BLOB;
CREATE INDEX certificates_spki_missing ON certificates (id) WHERE spki_sha256 IS NULL;

-- The one-statement registration also binds the key.
DROP TRIGGER register_new_insert;
DROP VIEW register_new;
CREATE VIEW register_new AS SELECT
    NULL AS client_id, NULL AS hardware_serial, NULL AS client_id_generated, NULL AS model,
    NULL AS metadata, NULL AS created_at, NULL AS serial, NULL AS fingerprint, NULL AS der,
    NULL AS not_before, NULL AS not_after, NULL AS profile, NULL AS csr_sha256,
    NULL AS spki_sha256, NULL AS at, NULL AS actor_id, NULL AS actor_name
WHERE 0;

CREATE TRIGGER register_new_insert INSTEAD OF INSERT ON register_new
BEGIN
    INSERT INTO devices (client_id, hardware_serial, client_id_generated, model, metadata,
                         current_serial, created_at)
    VALUES (NEW.client_id, NEW.hardware_serial, NEW.client_id_generated, NEW.model, NEW.metadata,
            NEW.serial, NEW.created_at);
    -- Inside a trigger, last_insert_rowid() is the row the trigger itself just inserted.
    INSERT INTO certificates (serial, device_id, fingerprint, der, not_before, not_after, profile,
                              csr_sha256, spki_sha256, created_at)
    VALUES (NEW.serial, last_insert_rowid(), NEW.fingerprint, NEW.der, NEW.not_before,
            NEW.not_after, NEW.profile, NEW.csr_sha256, NEW.spki_sha256, NEW.created_at);
    -- Now the certificate's rowid: its row (just written, in cache) gives the device id.
    INSERT INTO device_keys (spki_sha256, device_id)
    SELECT NEW.spki_sha256, device_id FROM certificates WHERE id = last_insert_rowid();
    INSERT INTO audit (at, actor_id, actor_name, action, target, outcome)
    VALUES (NEW.at, NEW.actor_id, NEW.actor_name, 'device.register', NEW.client_id, 'ok');
END;
