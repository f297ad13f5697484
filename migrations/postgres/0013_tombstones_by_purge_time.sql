-- Issue 23: tombstones by purge time. Keep the SQLite and PostgreSQL versions of this file
-- identical.

-- `reapply --since` walks tombstones (and purged accounts) in (purged_at, id) order, a page at
-- a time; without these indexes every page read the whole table. Compaction of old tombstones
-- takes the oldest first through the same index. Each now costs what it returns, not what the
-- ledger tracks. Only a purge writes them (once per resource, when it becomes a tombstone).
CREATE INDEX resources_purged ON resources (purged_at, id) WHERE state = 'purged';
CREATE INDEX accounts_purged ON accounts (purged_at, id) WHERE state = 'purged';
