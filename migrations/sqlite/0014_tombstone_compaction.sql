-- Issue 23: a ledger that stays small. Keep the SQLite and PostgreSQL versions of this file
-- identical.

-- Tombstones older than `[ledger] tombstone_retention`, compacted (R9): how many resources of a
-- kind were purged for a cause on a UTC day (`day`: milliseconds at midnight). Each compaction
-- is also an audit entry (`tombstones.compacted`) carrying its counts, so the chain proves them.
CREATE TABLE tombstone_counts (
    day    BIGINT NOT NULL,
    kind   TEXT NOT NULL,
    cause  TEXT NOT NULL,
    count  BIGINT NOT NULL,
    PRIMARY KEY (day, kind, cause)
);

-- Per account and kind, the compacted tombstones: how many, in how many compaction entries, and
-- the first and last of those entries' audit seqs (`audit receipt` shows them). One row per
-- (account, kind) however many compactions there were.
CREATE TABLE compacted_accounts (
    account    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    count      BIGINT NOT NULL,
    entries    BIGINT NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    PRIMARY KEY (account, kind)
);

-- The compaction entries by seq, without reading the rest of the chain (`audit receipt`).
CREATE INDEX audit_compactions ON audit (seq) WHERE action = 'tombstones.compacted';
