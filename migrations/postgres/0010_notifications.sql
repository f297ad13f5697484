-- Issue 28: signed notifications (`[notify.NAME]`). A decision's audit entry, written in the
-- decision's own transaction, is the queue's source: for each receiver a cursor over the audit
-- chain turns the entries of the types it subscribes to into rows here, in one transaction with
-- the cursor's advance, so a crash between a decision and its delivery never loses one. Each
-- row is delivered at least once (receivers dedup by `id`), retried with backoff until
-- `expires_at`, then dead-lettered (`dead_at`) until `retentiond notify retry`.
-- Keep the SQLite and PostgreSQL versions of this file identical.
CREATE TABLE notify_cursors (
    receiver  TEXT PRIMARY KEY NOT NULL,
    seq       BIGINT NOT NULL
);
CREATE TABLE notifications (
    id               TEXT PRIMARY KEY NOT NULL,
    receiver         TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,
    delivered_at     BIGINT,
    dead_at          BIGINT
);
CREATE UNIQUE INDEX notifications_receiver_seq ON notifications (receiver, seq);
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX notifications_dead ON notifications (dead_at) WHERE dead_at IS NOT NULL;
-- The decisions a receiver can subscribe to; the cursor reads them by this index, however many
-- purge receipts lie between them. The list is `notify::TYPES`: change both together.
CREATE INDEX audit_notifiable ON audit (seq) WHERE action IN
    ('account.purged', 'hold.placed', 'hold.released', 'zdr.approved', 'zdr.denied', 'zdr.requested', 'zdr.revoked');
