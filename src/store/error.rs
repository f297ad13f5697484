//! The store's errors, and what an operator should check for each: a full disk, a read-only
//! file, a busy ledger (retryable) or a corrupt value.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("ledger database error: {0}{hint}", hint = storage_hint(.0))]
    Database(#[from] sqlx::Error),
    #[error("ledger migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("ledger holds an unexpected value: {0}")]
    Corrupt(String),
    /// An SQLite error met on the connection's own handle (bulk writes); `code` is SQLite's
    /// extended result code.
    #[error("ledger database error: {message}{hint}", hint = code_hint(code.map(|c| c & 0xff)))]
    Sqlite { code: Option<i64>, message: String },
    #[error("cannot open the ledger at {url}: {message}")]
    Open { url: String, message: String },
    /// A lock stayed taken past its wait (the SQLite hold gate): nothing was changed; retry.
    #[error("ledger busy: {0}")]
    Busy(String),
}

/// What an operator should check when SQLite could not write or read the ledger file: SQLite
/// reports ENOSPC as "database or disk is full", but a write refused for another reason (a file
/// size limit, EFBIG; a failing device) only as "disk I/O error".
fn storage_hint(e: &sqlx::Error) -> &'static str {
    code_hint(crate::sqlite_handle::primary_code(e))
}

/// [`storage_hint`] by SQLite's primary result code.
fn code_hint(primary: Option<i64>) -> &'static str {
    match primary {
        Some(10) => {
            " (the ledger file could not be read or written: is the disk full, the file size limited, or the device failing?)"
        }
        Some(13) => " (the disk is full: free space, then retry; nothing was applied)",
        Some(8) => " (the ledger file or its folder is read-only)",
        _ => "",
    }
}

impl StoreError {
    /// A conflict the caller may simply retry (PostgreSQL deadlock or serialization failure,
    /// SQLite busy or locked after the busy timeout, in any of their extended forms:
    /// BUSY_RECOVERY 261, BUSY_SNAPSHOT 517, BUSY_TIMEOUT 773, LOCKED_SHAREDCACHE 262, …).
    pub fn is_retryable(&self) -> bool {
        let pg_conflict = matches!(self, StoreError::Database(sqlx::Error::Database(d))
            if matches!(d.code().as_deref(), Some("40P01" | "40001")));
        // SQLITE_BUSY (5) or SQLITE_LOCKED (6).
        pg_conflict
            || matches!(self, StoreError::Busy(_))
            || matches!(self.sqlite_primary_code(), Some(5 | 6))
    }

    /// SQLite's primary result code, whichever path the error came by (sqlx or the handle).
    fn sqlite_primary_code(&self) -> Option<i64> {
        match self {
            StoreError::Database(e) => crate::sqlite_handle::primary_code(e),
            StoreError::Sqlite { code, .. } => code.map(|c| c & 0xff),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{ConnectOptions, Connection};

    fn on_handle(code: i64) -> StoreError {
        StoreError::Sqlite {
            code: Some(code),
            message: "x".into(),
        }
    }

    #[test]
    fn busy_and_locked_are_retryable_in_every_extended_form() {
        // BUSY, LOCKED, BUSY_RECOVERY, LOCKED_SHAREDCACHE, BUSY_SNAPSHOT, BUSY_TIMEOUT.
        for code in [5, 6, 261, 262, 517, 773] {
            assert!(on_handle(code).is_retryable(), "code {code}");
        }
        // CONSTRAINT_UNIQUE, IOERR_WRITE, FULL, READONLY: retrying changes nothing.
        for code in [2067, 778, 13, 8, 1] {
            assert!(!on_handle(code).is_retryable(), "code {code}");
        }
        let none = StoreError::Sqlite {
            code: None,
            message: "x".into(),
        };
        assert!(!none.is_retryable());
        assert!(!StoreError::Corrupt("x".into()).is_retryable());
    }

    /// `.cargo/config.toml` builds the bundled SQLite without the two process-wide locks that
    /// slowed a sweep's ledger and target connections when they run side by side.
    #[tokio::test]
    async fn sqlite_is_built_without_global_allocation_locks() {
        let mut conn = SqliteConnectOptions::new()
            .filename(":memory:")
            .connect()
            .await
            .unwrap();
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        conn.close().await.unwrap();
    }

    /// A real SQLITE_BUSY through sqlx: a second writer that gives up at once.
    #[tokio::test]
    async fn a_busy_ledger_through_sqlx_is_retryable_and_a_constraint_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteConnectOptions::new()
            .filename(dir.path().join("l.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut first = opts.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut first)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(&mut first)
            .await
            .unwrap();
        let mut second = opts
            .clone()
            .busy_timeout(std::time::Duration::ZERO)
            .connect()
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut first)
            .await
            .unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut second)
            .await
            .unwrap_err();
        assert!(StoreError::from(busy).is_retryable());
        sqlx::query("ROLLBACK").execute(&mut first).await.unwrap();
        let unique = sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(&mut second)
            .await
            .unwrap_err();
        assert!(!StoreError::from(unique).is_retryable());
        second.close().await.unwrap();
        first.close().await.unwrap();
    }
}
