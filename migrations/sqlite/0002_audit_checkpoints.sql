-- Signed checkpoints of the audit chain (issue 11): the head (seq, hash) at a time, signed with
-- the Ed25519 key of [audit] signing_key_file. Copies kept on other storage (checkpoint_dir) are
-- what make a rewrite of the whole chain detectable; these rows let `audit verify` check them in
-- place. Keep the SQLite and PostgreSQL versions of this file identical.
CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY NOT NULL,
    hash        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL
);
