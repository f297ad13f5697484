-- Resources by account, without their state (issue 7): every claim and every recorded purge
-- changes a resource's state, and with the state in this index each of them also moved the
-- row within it (two more B-tree writes per resource, twice per purge). What reads it by
-- account (account deletion, hold counts, `show account`, whether an account has anything
-- left to purge) finds the account's rows here and checks their state in the row.
-- Keep the SQLite and PostgreSQL versions of this file identical.
DROP INDEX resources_account;
CREATE INDEX resources_account ON resources (account);
