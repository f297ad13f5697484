-- Batches a purge transaction claimed for the sweep's next batch (issue 7: the claim runs while
-- the targets of the batch before run). Until `started_at` is set — committed just before that
-- batch's own purge transaction begins — no target has touched them, so a hold placed meanwhile
-- does not count them as `in_flight`; once started, a crash leaves them counted, as before.
-- Keep the SQLite and PostgreSQL versions of this file identical.
ALTER TABLE resources ADD COLUMN claim_batch BIGINT;
CREATE TABLE claimed_batches (
    id          BIGINT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    claimed_at  BIGINT NOT NULL,
    started_at  BIGINT
);
