-- The transactional outbox retentiond reads (SQLite application database).
-- Config:  [sources.app_outbox]  url = "sqlite:///var/lib/app/app.db"  table = "retention_outbox"  poll = "1s"
--
-- The application inserts one lifecycle event per row — the JSON object of one NDJSON line
-- (README "Application integration") — in the SAME transaction as its own change:
--
--   BEGIN IMMEDIATE;
--   UPDATE conversations SET deleted_at = CURRENT_TIMESTAMP WHERE id = 'c1';
--   INSERT INTO retention_outbox (event) VALUES ('{"type":"resource.deleted","id":"c1"}');
--   COMMIT;
--
-- retentiond applies the rows in id order and deletes them once applied; a row it rejects stays,
-- with failed_at and error set (dead letter), and the queue goes on. To requeue it after fixing
-- the cause:  UPDATE retention_outbox SET failed_at = NULL, error = NULL WHERE id = …;
CREATE TABLE IF NOT EXISTS retention_outbox (
    -- AUTOINCREMENT: ids are never reused, so the idempotency key retentiond derives from the
    -- row id when event_id is NULL ("outbox:SOURCE:ID") can never repeat.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Optional idempotency key (e.g. the application's own event or request id).
    event_id    TEXT,
    -- One event object, e.g. {"type":"resource.deleted","id":"c1"}.
    event       TEXT NOT NULL,
    -- The event's time when it has no "at": the time of the application's transaction.
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Set by retentiond when it rejected the event (dead letter), with the reason.
    failed_at   TEXT,
    error       TEXT
);
