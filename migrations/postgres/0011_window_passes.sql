-- Issue 29: kinds purged by time window. The ledger keeps no state per row of them: one row per
-- (kind, target) says who runs its pass, since when and how far it got, and how the last one
-- ended; `org_windows` holds the orgs' own windows (W4). Neither grows with the log tables.
-- Keep the SQLite and PostgreSQL versions of this file identical.
CREATE TABLE window_passes (
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    -- The pass running now. A lease past its end is a crashed pass: the next pass finishes it
    -- and says so in its audit entry.
    owner TEXT,
    lease_until BIGINT,
    started_at BIGINT,
    -- Rows deleted so far by the pass running now, those of a crashed pass it finishes included.
    rows_so_far BIGINT NOT NULL DEFAULT 0,
    resumed_from BIGINT,
    resumed_rows BIGINT,
    last_started_at BIGINT,
    last_finished_at BIGINT,
    last_rows BIGINT,
    last_held_back BIGINT,
    last_error TEXT,
    PRIMARY KEY (kind, target)
);
CREATE TABLE org_windows (
    org TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- The org's own max_age in force (ms); NULL: the kind's.
    max_age BIGINT,
    set_at BIGINT NOT NULL,
    set_by TEXT NOT NULL,
    -- A shortening held back by `[safety] max_newly_due` until `policy accept`: pending = 1,
    -- pending_max_age NULL for a pending --clear.
    pending INTEGER NOT NULL DEFAULT 0,
    pending_max_age BIGINT,
    pending_newly_due BIGINT,
    pending_at BIGINT,
    pending_by TEXT,
    PRIMARY KEY (org, kind)
);
