-- Issue 30: after a crash, the ledger never says that held data exists when it is gone.
-- Keep the SQLite and PostgreSQL versions of this file identical.

-- A purge that may have run part of its target deletes before its instance died, whose claim
-- was taken over while a hold kept it (or it was no longer due), and whose targets neither all
-- confirmed the data gone nor all confirmed it there: the resource is `interrupted` until a
-- purge finishes it. `targets` is a JSON array of {"target", "data": gone|present|unknown}.
CREATE TABLE purge_interruptions (
    resource  TEXT PRIMARY KEY NOT NULL,
    found_at  BIGINT NOT NULL,
    targets   TEXT NOT NULL
);

-- What each hold's answer called `in_flight` (a purge that may have started, never recorded)
-- and how each ended: `purged` (found gone: destroyed before the hold), `kept` (found intact),
-- `interrupted`, `purged_after_release`; NULL while not found out yet.
CREATE TABLE hold_in_flight (
    hold         BIGINT NOT NULL,
    resource     TEXT NOT NULL,
    outcome      TEXT,
    resolved_at  BIGINT,
    PRIMARY KEY (hold, resource)
);
CREATE INDEX hold_in_flight_open ON hold_in_flight (resource) WHERE outcome IS NULL;

-- A hold's answer at placement (NULL for holds placed before this migration).
ALTER TABLE holds ADD COLUMN placed_already_purged BIGINT;
ALTER TABLE holds ADD COLUMN placed_in_flight BIGINT;

-- An interrupted resource is due again once no hold keeps it: it joins the due index.
DROP INDEX resources_due;
CREATE INDEX resources_due ON resources (purge_after)
    WHERE state IN ('live', 'deleted', 'interrupted') AND held = 0 AND purge_after IS NOT NULL;
