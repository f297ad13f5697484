-- one write: the batch is locked (FOR UPDATE SKIP LOCKED, no row written), the record is the only write
SET search_path = exp1;
DO $$
DECLARE ids text[]; t0 timestamptz; claim interval := '0'; rec interval := '0'; b int;
BEGIN
  FOR b IN 1..20 LOOP
    t0 := clock_timestamp();
    SELECT array_agg(id) INTO ids FROM (SELECT r.id FROM resources r WHERE r.state IN ('live','deleted','interrupted') AND r.held = 0 AND r.purge_after IS NOT NULL
                   AND r.purge_after <= 1e12::bigint ORDER BY r.purge_after LIMIT 1000 FOR UPDATE SKIP LOCKED) x;
    claim := claim + (clock_timestamp() - t0);
    t0 := clock_timestamp();
    UPDATE resources SET state = 'purged', cause = 'manual', purged_at = 5000, lease_owner = NULL, lease_until = NULL, last_error = NULL
      WHERE id = ANY(ids);
    COMMIT;
    rec := rec + (clock_timestamp() - t0);
  END LOOP;
  RAISE NOTICE 'one write: lock % record % (20 batches of 1000)', claim, rec;
END $$;
