//! The SQLite backend: the embedded default for one daemon. WAL, a busy timeout, and
//! `BEGIN IMMEDIATE` for every write so concurrent CLI and daemon writers queue instead of
//! failing with "database is locked".

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::OpenOptions;
use crate::config::SecretUrl;

type Db = sqlx::Sqlite;

const BEGIN: &str = "BEGIN IMMEDIATE";

macro_rules! in_ids {
    ($n:literal) => {
        concat!("IN (SELECT value FROM json_each($", $n, "))")
    };
}
/// The rows of a derived table `x` as one JSON array of arrays (one value to fetch, not one
/// message per row from sqlx's worker thread).
macro_rules! json_rows {
    ($cols:expr) => {
        concat!("json_group_array(json_array(", $cols, "))")
    };
}
macro_rules! for_update {
    () => {
        ""
    };
}
macro_rules! for_update_of_r {
    () => {
        ""
    };
}
macro_rules! for_share {
    () => {
        ""
    };
}
macro_rules! skip_locked {
    () => {
        ""
    };
}

/// Id lists travel as one JSON array parameter (`json_each`), so statements keep one shape.
fn ids_arg(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// Writers are already serialised by `BEGIN IMMEDIATE`.
async fn lock_audit(_tx: &mut sqlx::Transaction<'static, Db>) -> Result<()> {
    Ok(())
}

/// Every SQLite write transaction is already exclusive: the singleton lock is always ours.
async fn singleton_lock(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _name: &str,
    _wait: bool,
) -> Result<bool> {
    Ok(true)
}

include!("ops.rs");

impl Store {
    pub async fn open(url: &SecretUrl, opts: &OpenOptions) -> Result<Store> {
        let open_err = |message: String| StoreError::Open {
            url: url.redacted(),
            message,
        };
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(|e| open_err(e.to_string()))?
            .create_if_missing(opts.create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        if opts.create
            && let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Store { pool })
    }

    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    pub async fn db_now(&self) -> Result<Option<Timestamp>> {
        Ok(None)
    }
}
