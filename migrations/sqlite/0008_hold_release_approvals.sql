-- Issue 28: `[holds] release_approvals = N` — a hold is released only when N different people
-- have asked. Each ask waiting for the others is a row here; the release itself is still
-- `holds.released_at`/`released_by` (the ask that completed it). Asks of a released hold stay
-- as its history. Keep the SQLite and PostgreSQL versions of this file identical.
CREATE TABLE hold_release_approvals (
    hold       BIGINT NOT NULL,
    asked_by   TEXT NOT NULL,
    asked_at   BIGINT NOT NULL,
    via        TEXT,
    PRIMARY KEY (hold, asked_by)
);
