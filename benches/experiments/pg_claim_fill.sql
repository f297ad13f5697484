-- The one-write experiment of BENCHMARKS.md ("One row write per purged item"). Make the schema
-- with `retentiond migrate` on a config whose database url ends in ?options[search_path]=exp1
-- (after CREATE SCHEMA exp1), then: psql -f pg_claim_fill.sql; psql -f pg_claim_two_writes.sql;
-- reset the rows (UPDATE resources SET state = 'deleted', purged_at = NULL, lease_owner = NULL,
-- lease_until = NULL, claim_batch = NULL; VACUUM FULL resources; ANALYZE resources) and run
-- psql -f pg_claim_one_write.sql.
SET search_path = exp1;
INSERT INTO orgs (id, plan, zdr, zdr_reason, zdr_by, zdr_at, created_at, updated_at) VALUES ('o1','scale','off',NULL,NULL,NULL,0,0);
INSERT INTO accounts (id, org, state, created_at, deletion_requested_at, purge_after, purged_at)
  SELECT 'a' || i, 'o1', 'active', 0, NULL, NULL, NULL FROM generate_series(0, 9999) g(i);
INSERT INTO resources (id, kind, account, created_at, endpoint, state, deleted_at, cause, purge_after, rule, held, lease_owner, lease_until, attempts, last_error, purged_at)
  SELECT 'c' || lpad(i::text, 8, '0'), 'conversation', 'a' || (i / 10), 1000, NULL, 'deleted', 2000, 'manual', 3000 + i, 'R1', 0, NULL, NULL, 0, NULL, NULL
  FROM generate_series(0, 99999) g(i);
VACUUM ANALYZE resources;
