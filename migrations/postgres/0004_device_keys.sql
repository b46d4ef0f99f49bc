-- One key pair belongs to one device, and a key revoked for keyCompromise is never certified
-- again. Keep in step with ../sqlite/0004_device_keys.sql.
--
-- A key is known by spki_sha256: SHA-256 of its SubjectPublicKeyInfo DER. `device_keys` binds
-- each key to the device it was first certified for; its primary key is what refuses a second
-- device the same key, across connections and processes (a registration that collides aborts
-- and is classified again). Rows are never deleted: a revoked device keeps its key. A row's
-- compromised_at is set, in the same transaction, when the device or one of its certificates
-- is revoked with reason keyCompromise.
CREATE TABLE device_keys (
    spki_sha256    BYTEA   PRIMARY KEY,
    device_id      BIGINT  NOT NULL REFERENCES devices (id),
    compromised_at BIGINT
);

-- The key each certificate certifies (for revoking one certificate for keyCompromise).
-- Certificates issued before this migration have NULL here; the server fills them (and their
-- device_keys rows) when it opens the database, reading the key out of the certificate DER.
-- This partial index finds them and stays empty afterwards: new certificates always carry
-- their key's hash.
ALTER TABLE certificates ADD COLUMN spki_sha256 BYTEA;
CREATE INDEX certificates_spki_missing ON certificates (id) WHERE spki_sha256 IS NULL;
