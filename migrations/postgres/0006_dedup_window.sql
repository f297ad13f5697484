-- Issue 22: idempotency ids are kept for `ingest.dedup_window`, and the policy guard's counts
-- are kept with the change it holds back. Keep the SQLite and PostgreSQL versions identical.

-- The event's own time (its `at`, else when it was applied): a record is forgotten once the
-- event is older than the window, and an older replay is refused at ingest, so forgetting one
-- can never let a replay through. Rows from before this migration take their applied_at.
ALTER TABLE applied_events ADD COLUMN event_at BIGINT;
UPDATE applied_events SET event_at = applied_at;
CREATE INDEX applied_events_event_at ON applied_events (event_at);

-- `{item: count}` of purges the pending policy change would bring forward into the next 24 h.
ALTER TABLE policy_state ADD COLUMN pending_newly_due TEXT;
