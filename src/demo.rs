//! `retentiond demo`: creates the sample application data that `config/retentiond.toml` purges
//! (an SQLite app database from `config/app-schema.sql` and upload files) and prints matching
//! lifecycle events (none for the API logs: they go by time window), for the README walkthrough:
//! `retentiond demo | retentiond ingest -`.

use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::config::{Config, TargetConfig};

const SCHEMA: &str = include_str!("../config/app-schema.sql");

/// Creates the sample data; returns the events (NDJSON) that describe it.
pub async fn setup(config: &Config, user: &str) -> Result<String, String> {
    for (name, target) in &config.targets {
        match target {
            TargetConfig::Sql(sql) if sql.url.is_sqlite() => {
                let opts = SqliteConnectOptions::from_str(sql.url.expose())
                    .map_err(|e| format!("target `{name}`: {e}"))?
                    .create_if_missing(true);
                if let Some(dir) = opts.get_filename().parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                let mut conn = opts
                    .connect()
                    .await
                    .map_err(|e| format!("target `{name}`: {e}"))?;
                sqlx::raw_sql(SCHEMA)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("target `{name}`: {e}"))?;
                let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
                let stmts: Vec<(&str, Vec<String>)> = vec![
                    (
                        "INSERT OR REPLACE INTO users (id, name) VALUES ($1, 'Demo User')",
                        vec![user.into()],
                    ),
                    (
                        "INSERT OR REPLACE INTO conversations (id, user_id, title) VALUES ($1, $2, 'trip plans')",
                        vec![format!("{user}-c1"), user.into()],
                    ),
                    (
                        "INSERT OR REPLACE INTO conversations (id, user_id, title) VALUES ($1, $2, 'recipes')",
                        vec![format!("{user}-c2"), user.into()],
                    ),
                    (
                        "INSERT INTO messages (conversation_id, body) VALUES ($1, 'hello')",
                        vec![format!("{user}-c1")],
                    ),
                    (
                        "INSERT INTO messages (conversation_id, body) VALUES ($1, 'where to go?')",
                        vec![format!("{user}-c1")],
                    ),
                    (
                        "INSERT INTO messages (conversation_id, body) VALUES ($1, 'pasta')",
                        vec![format!("{user}-c2")],
                    ),
                    (
                        "INSERT INTO embeddings (conversation_id, vector) VALUES ($1, x'00ff')",
                        vec![format!("{user}-c1")],
                    ),
                    (
                        "INSERT OR REPLACE INTO api_logs (id, user_id, org_id, endpoint, request, response) VALUES ($1, $2, 'o1', '/v1/chat/completions', 'q', 'a')",
                        vec![format!("{user}-l1"), user.into()],
                    ),
                    (
                        "INSERT OR REPLACE INTO api_logs (id, user_id, org_id, endpoint, request, response) VALUES ($1, $2, 'o1', '/v1/files', 'q', 'a')",
                        vec![format!("{user}-l2"), user.into()],
                    ),
                    (
                        // 40 days old: past the 30-day window, gone at the first sweep.
                        "INSERT OR REPLACE INTO api_logs (id, user_id, org_id, endpoint, request, response, created_at) \
                         VALUES ($1, $2, 'o1', '/v1/files', 'q', 'a', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days'))",
                        vec![format!("{user}-l3"), user.into()],
                    ),
                    (
                        "INSERT OR REPLACE INTO files (id, user_id, name) VALUES ($1, $2, 'passport.pdf')",
                        vec![format!("{user}-f1"), user.into()],
                    ),
                ];
                for (sql, binds) in stmts {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for b in binds {
                        q = q.bind(b);
                    }
                    q.execute(&mut *tx)
                        .await
                        .map_err(|e| format!("target `{name}`: {e}"))?;
                }
                tx.commit().await.map_err(|e| e.to_string())?;
            }
            TargetConfig::Files(f) => {
                let dir = f.root.join(user);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let files = if f.path.ends_with(".json") {
                    vec![format!("{user}-c1.json"), format!("{user}-c2.json")]
                } else {
                    vec![format!("{user}-f1")]
                };
                for file in files {
                    std::fs::write(dir.join(&file), b"demo content\n")
                        .map_err(|e| format!("{file}: {e}"))?;
                }
            }
            _ => {}
        }
    }
    let events = [
        r#"{"type":"org.upsert","org":"o1","plan":"scale","event_id":"demo-1"}"#.to_string(),
        format!(
            r#"{{"type":"account.created","account":"{user}","org":"o1","event_id":"demo-2-{user}"}}"#
        ),
        format!(
            r#"{{"type":"resource.created","id":"{user}-c1","kind":"conversation","account":"{user}","event_id":"demo-3-{user}"}}"#
        ),
        format!(
            r#"{{"type":"resource.created","id":"{user}-c2","kind":"conversation","account":"{user}","event_id":"demo-4-{user}"}}"#
        ),
        format!(
            r#"{{"type":"resource.created","id":"{user}-f1","kind":"file","account":"{user}","event_id":"demo-7-{user}"}}"#
        ),
    ];
    Ok(events.join("\n") + "\n")
}
