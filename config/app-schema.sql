-- The sample application database that config/retentiond.toml purges (SQLite).
-- `retentiond demo` creates it in var/app.db with a few rows.
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, title TEXT);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS embeddings_conversation ON embeddings (conversation_id);
-- API request logs are purged by time window (`tracking = "window"`): no events, no ledger rows.
CREATE TABLE IF NOT EXISTS api_logs (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, endpoint TEXT, request TEXT, response TEXT,
    org_id TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
CREATE INDEX IF NOT EXISTS api_logs_created ON api_logs (created_at);
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT);
CREATE TABLE IF NOT EXISTS agents (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, spec TEXT);
CREATE TABLE IF NOT EXISTS libraries (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT);
CREATE TABLE IF NOT EXISTS batch_files (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT);
