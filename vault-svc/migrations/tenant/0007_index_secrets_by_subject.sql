-- A secret labelled `subject` belongs to that data subject (docs/privacy.md, "Access"): a
-- subject's access export lists them without reading every secret of the tenant.
CREATE INDEX secrets_by_subject ON secrets (tenant_id, (labels ->> 'subject')) WHERE labels ? 'subject';
