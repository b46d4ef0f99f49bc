-- Audit rows may carry a detail the caller gave, e.g. why a device was suspended.
-- Keep in step with ../postgres/0003_audit_detail.sql.
ALTER TABLE audit ADD COLUMN detail TEXT;
