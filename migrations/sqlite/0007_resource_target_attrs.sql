-- Issue 21: the attributes of `resource.created` that a target's key, path or URL names
-- (`{attrs.NAME}`), as a JSON object of strings; NULL when no target names any. Only the names
-- the config's templates use are kept: the rest of `attrs` may be user content and is dropped.
-- Keep the SQLite and PostgreSQL versions of this file identical.
ALTER TABLE resources ADD COLUMN target_attrs TEXT;
