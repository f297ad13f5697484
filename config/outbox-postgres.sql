-- The transactional outbox retentiond reads (PostgreSQL application database).
-- Config:  [sources.app_outbox]  url_env = "APP_DB_URL"  table = "retention_outbox"  poll = "1s"
--
-- The application inserts one lifecycle event per row — the JSON object of one NDJSON line
-- (README "Application integration") — in the SAME transaction as its own change:
--
--   BEGIN;
--   UPDATE conversations SET deleted_at = now() WHERE id = 'c1';
--   INSERT INTO retention_outbox (event) VALUES ('{"type":"resource.deleted","id":"c1"}');
--   COMMIT;
--
-- retentiond applies the rows in id order and deletes them once applied; a row it rejects stays,
-- with failed_at and error set (dead letter), and the queue goes on. To requeue it after fixing
-- the cause:  UPDATE retention_outbox SET failed_at = NULL, error = NULL WHERE id = …;
-- Several retentiond instances may poll one outbox: they take turns (an advisory lock).
CREATE TABLE IF NOT EXISTS retention_outbox (
    -- Identity values are never reused, so the idempotency key retentiond derives from the row
    -- id when event_id is NULL ("outbox:SOURCE:ID") can never repeat (do not reset the sequence).
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Optional idempotency key (e.g. the application's own event or request id).
    event_id    TEXT,
    -- One event object, e.g. {"type":"resource.deleted","id":"c1"}; JSONB rejects malformed
    -- JSON inside the application's transaction.
    event       JSONB NOT NULL,
    -- The event's time when it has no "at": the time of the application's transaction.
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set by retentiond when it rejected the event (dead letter), with the reason.
    failed_at   TIMESTAMPTZ,
    error       TEXT
);
-- retentiond needs: GRANT SELECT, UPDATE, DELETE ON retention_outbox TO retentiond;
