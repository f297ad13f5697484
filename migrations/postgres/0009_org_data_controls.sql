-- Issue 28: training opt-out, a control separate from ZDR (§2, §8): whether an org's eligible
-- data may be used to improve models. `GET /v1/data-controls` lists the orgs with ZDR approved
-- or training opted out; the partial index keeps that a range of the few, however many orgs.
-- Keep the SQLite and PostgreSQL versions of this file identical.
ALTER TABLE orgs ADD COLUMN training_opt_out BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX orgs_data_controls ON orgs (id) WHERE zdr = 'approved' OR training_opt_out = TRUE;
