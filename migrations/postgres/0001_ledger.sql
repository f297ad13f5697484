-- The retentiond ledger (PostgreSQL). Times are milliseconds since the Unix epoch (UTC).
-- Keep migrations/sqlite/0001_ledger.sql in step: tests compare the two schemas.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY NOT NULL,
    plan        TEXT NOT NULL,
    zdr         TEXT NOT NULL DEFAULT 'off',
    zdr_reason  TEXT,
    zdr_by      TEXT,
    zdr_at      BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE accounts (
    id                     TEXT PRIMARY KEY NOT NULL,
    org                    TEXT NOT NULL,
    state                  TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    deletion_requested_at  BIGINT,
    purge_after            BIGINT,
    purged_at              BIGINT
);
CREATE INDEX accounts_org ON accounts (org);
CREATE INDEX accounts_due ON accounts (purge_after) WHERE state = 'deletion_requested';

-- One row per resource the application told us about; a purged row is its tombstone (R9).
CREATE TABLE resources (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    account      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    endpoint     TEXT,
    state        TEXT NOT NULL,
    deleted_at   BIGINT,
    cause        TEXT,
    purge_after  BIGINT,
    rule         TEXT,
    held         BIGINT NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  BIGINT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    purged_at    BIGINT
);
CREATE INDEX resources_account ON resources (account, state);
-- Due work is found through this index alone, so a sweep costs O(due), not O(tracked).
CREATE INDEX resources_due ON resources (purge_after)
    WHERE state IN ('live', 'deleted') AND held = 0 AND purge_after IS NOT NULL;
CREATE INDEX resources_claimed ON resources (lease_until) WHERE state = 'purging';
CREATE INDEX resources_failed ON resources (id) WHERE state = 'failed';
CREATE INDEX resources_held ON resources (purge_after) WHERE held = 1;

CREATE TABLE applied_events (
    event_id    TEXT PRIMARY KEY NOT NULL,
    applied_at  BIGINT NOT NULL
);

CREATE TABLE holds (
    id            BIGSERIAL PRIMARY KEY,
    case_ref      TEXT NOT NULL,
    reason        TEXT,
    placed_by     TEXT NOT NULL,
    placed_at     BIGINT NOT NULL,
    org           TEXT,
    account       TEXT,
    resource      TEXT,
    kind          TEXT,
    created_from  BIGINT,
    created_to    BIGINT,
    released_at   BIGINT,
    released_by   TEXT
);

-- Hold placement and purges serialise on this row (Invariant H, see src/store/mod.rs).
CREATE TABLE hold_epoch (
    id     BIGINT PRIMARY KEY NOT NULL,
    epoch  BIGINT NOT NULL
);
INSERT INTO hold_epoch (id, epoch) VALUES (1, 0);

-- Which hold kept which resource or account from its purge: logged once per pair.
CREATE TABLE hold_blocks (
    subject_type  TEXT NOT NULL,
    subject       TEXT NOT NULL,
    hold          BIGINT NOT NULL,
    blocked_at    BIGINT NOT NULL,
    PRIMARY KEY (subject_type, subject, hold)
);
CREATE INDEX hold_blocks_hold ON hold_blocks (hold);

CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY NOT NULL,
    at         BIGINT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
-- Exactly one purge receipt per resource, enforced by the database.
CREATE UNIQUE INDEX audit_one_receipt ON audit (subject) WHERE action = 'resource.purged';

-- The schedule-relevant policy in force (R10), and a pending one held back by the guard.
CREATE TABLE policy_state (
    id          BIGINT PRIMARY KEY NOT NULL,
    in_force    TEXT NOT NULL,
    pending     TEXT,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE sweep_runs (
    instance         TEXT PRIMARY KEY NOT NULL,
    started_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    purged           BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    held             BIGINT NOT NULL DEFAULT 0,
    accounts_purged  BIGINT NOT NULL DEFAULT 0,
    error            TEXT
);
