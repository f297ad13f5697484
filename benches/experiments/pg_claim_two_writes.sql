-- today: the claim writes each row (state purging, lease), the record writes it again
SET search_path = exp1;
\timing on
DO $$
DECLARE ids text[]; t0 timestamptz; claim interval := '0'; rec interval := '0'; b int;
BEGIN
  FOR b IN 1..20 LOOP
    t0 := clock_timestamp();
    WITH c AS (UPDATE resources SET state = 'purging', lease_owner = 'i1', lease_until = 9e12::bigint, claim_batch = b
      WHERE id IN (SELECT r.id FROM resources r WHERE r.state IN ('live','deleted','interrupted') AND r.held = 0 AND r.purge_after IS NOT NULL
                   AND r.purge_after <= 1e12::bigint ORDER BY r.purge_after LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id)
    SELECT array_agg(id) INTO ids FROM c;
    COMMIT;
    claim := claim + (clock_timestamp() - t0);
    t0 := clock_timestamp();
    UPDATE resources SET state = 'purged', cause = 'manual', purged_at = 5000, lease_owner = NULL, lease_until = NULL, last_error = NULL
      WHERE id = ANY(ids) AND state = 'purging' AND lease_owner = 'i1';
    COMMIT;
    rec := rec + (clock_timestamp() - t0);
  END LOOP;
  RAISE NOTICE 'two writes: claim % record % (20 batches of 1000)', claim, rec;
END $$;
