-- Operational certificates (LDevID): per-model settings. Keep in step with
-- ../postgres/0007_ldevid.sql.
--
-- Each is stored as its text form and NULL means the default: ldevid_validity '90d' (at most
-- 90 days), renewal_grace '30d' ('0' = never), connect_with 'any' ('any' or 'ldevid').
-- LDevIDs themselves are rows of `certificates` with profile 'ldevid'; a device may hold
-- several valid certificates at once.
ALTER TABLE models ADD COLUMN ldevid_validity TEXT;
ALTER TABLE models ADD COLUMN renewal_grace TEXT;
ALTER TABLE models ADD COLUMN connect_with TEXT
    CHECK (connect_with IS NULL OR connect_with IN ('any', 'ldevid'));
