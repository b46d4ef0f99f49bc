-- Keep in step with ../sqlite/0002_register_in_one_statement.sql.
--
-- certificates.fingerprint loses its UNIQUE index: nothing looks certificates up by fingerprint,
-- and the fingerprint is the SHA-256 of a DER that contains the (unique) serial, so the index
-- guarded nothing while costing one random index page write per registration.
-- (The SQLite side also adds a view through which one INSERT registers many devices; the
-- PostgreSQL store does the same with one statement of data-modifying CTEs, needing no view.)
ALTER TABLE certificates DROP CONSTRAINT IF EXISTS certificates_fingerprint_key;
