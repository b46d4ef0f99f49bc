-- The issuing CAs: one active (it signs new certificates), retired ones (they still sign their
-- CRL while certificates they issued may be valid), revoked ones (on the root's CRL). Keep in
-- step with ../sqlite/0006_issuing_cas.sql.
--
-- id is the first 8 bytes of the CA's key identifier (SKI), lowercase hex; it names the CA's
-- CRL (/v1/crl/issuing/<id>) and its files under <data-dir>/ca/ (key_ref). The server inserts
-- the first row, for the issuing CA already on disk, when it opens the database.
CREATE TABLE issuing_cas (
    id         TEXT    PRIMARY KEY,
    serial     TEXT    NOT NULL UNIQUE,     -- lowercase hex, no leading zeros
    der        BYTEA   NOT NULL,
    key_ref    TEXT    NOT NULL,            -- file stem under ca/: 'issuing' or 'issuers/<id>'
    status     TEXT    NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
    not_after  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    revoked_at BIGINT,
    reason     TEXT
);
-- At most one issuing CA is active.
CREATE UNIQUE INDEX issuing_cas_one_active ON issuing_cas (status) WHERE status = 'active';

-- The CRLs: one row per issuing CA (key: its id) and one for the root (key: 'root').
CREATE TABLE crls (
    issuer      TEXT    PRIMARY KEY,
    number      BIGINT NOT NULL,
    feed_head   BIGINT NOT NULL,
    der         BYTEA   NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL
);
