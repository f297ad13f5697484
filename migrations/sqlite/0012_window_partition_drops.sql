-- Issue 29, W3: the partition a pass is dropping (detached, not yet dropped), with its bound,
-- as JSON {"table": "\"schema\".\"name\"", "bound": "FOR VALUES FROM (…) TO (…)"}. A pass cut
-- short between DETACH and DROP leaves it set; the next pass finishes the drop (or attaches the
-- partition back if a hold now keeps a row of it). Keep the SQLite and PostgreSQL versions of
-- this file identical.
ALTER TABLE window_passes ADD COLUMN dropping TEXT;
