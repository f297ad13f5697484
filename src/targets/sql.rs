//! The `sql` target: configured statements per kind, run with bound parameters against the
//! application's SQLite or PostgreSQL database, one transaction per batch.
//!
//! On SQLite the connection runs with `secure_delete` (on by default) and the WAL is
//! checkpointed with TRUNCATE after each batch, so deleted content does not linger in free pages
//! or the `-wal` file. That guarantees nothing about the device below the file (SSD wear
//! levelling, snapshots, backups): see README "Erasure".

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tracing::warn;

use super::{ItemResult, PurgeItem, Removed};
use crate::config::{SqlTargetConfig, named_to_positional};

/// A statement rewritten to positional parameters.
#[derive(Debug, Clone)]
struct Statement {
    text: String,
    sql: String,
    params: Vec<String>,
}

impl Statement {
    fn new(text: &str) -> Statement {
        let (sql, params) = named_to_positional(text);
        Statement {
            text: text.to_string(),
            sql,
            params,
        }
    }
}

#[derive(Debug, Clone)]
enum AppDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

#[derive(Debug)]
pub struct SqlTarget {
    name: String,
    db: AppDb,
    purge: BTreeMap<String, Vec<Statement>>,
    verify: BTreeMap<String, Vec<Statement>>,
    checkpoint: bool,
    vacuum: Option<String>,
}

/// Runs `$body` with `$p` bound to the pool of whichever backend `$db` is.
macro_rules! with_pool {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            AppDb::Sqlite($p) => $body,
            AppDb::Postgres($p) => $body,
        }
    };
}

/// Runs the statements (and then the verify queries) for one item in `conn`'s transaction.
macro_rules! run_item {
    ($conn:expr, $stmts:expr, $verify:expr, $item:expr) => {{
        let mut removed = Removed::default();
        let mut failure: Option<String> = None;
        for st in $stmts {
            let mut q = sqlx::query(AssertSqlSafe(st.sql.as_str()));
            for p in &st.params {
                q = q.bind($item.param(p));
            }
            match q.execute(&mut *$conn).await {
                Ok(r) => removed.rows += r.rows_affected(),
                Err(e) => {
                    failure = Some(format!("`{}`: {}", st.text, e));
                    break;
                }
            }
        }
        if failure.is_none() {
            for st in $verify {
                let mut q = sqlx::query(AssertSqlSafe(st.sql.as_str()));
                for p in &st.params {
                    q = q.bind($item.param(p));
                }
                match q.fetch_one(&mut *$conn).await {
                    Ok(row) => {
                        let left: i64 = row.try_get(0).unwrap_or(-1);
                        if left != 0 {
                            failure = Some(format!(
                                "verify `{}` found {} left after the delete",
                                st.text, left
                            ));
                            break;
                        }
                    }
                    Err(e) => {
                        failure = Some(format!("verify `{}`: {}", st.text, e));
                        break;
                    }
                }
            }
        }
        match failure {
            None => Ok(removed),
            Some(f) => Err(f),
        }
    }};
}

impl SqlTarget {
    pub fn new(name: &str, cfg: &SqlTargetConfig) -> Result<SqlTarget, String> {
        let url = cfg.url.expose();
        let err = |e: sqlx::Error| format!("target `{name}`: bad url {}: {e}", cfg.url.redacted());
        let db = if cfg.url.is_postgres() {
            let opts = PgConnectOptions::from_str(url).map_err(err)?;
            AppDb::Postgres(
                PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with(opts),
            )
        } else {
            let mut opts = SqliteConnectOptions::from_str(url)
                .map_err(err)?
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(5));
            if cfg.secure_delete {
                opts = opts.pragma("secure_delete", "ON");
            }
            AppDb::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with(opts),
            )
        };
        let prep = |m: &BTreeMap<String, Vec<String>>| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.iter().map(|s| Statement::new(s)).collect()))
                .collect::<BTreeMap<_, _>>()
        };
        Ok(SqlTarget {
            name: name.to_string(),
            checkpoint: cfg.secure_delete && matches!(db, AppDb::Sqlite(_)),
            db,
            purge: prep(&cfg.purge),
            verify: prep(&cfg.verify),
            vacuum: cfg.vacuum.clone(),
        })
    }

    pub fn vacuum_schedule(&self) -> Option<&str> {
        self.vacuum.as_deref()
    }

    /// Purges a batch in one transaction. If the batch fails because of one item (a statement
    /// error, a verify finding rows left), each item is retried in its own transaction so the
    /// others still go; if the database itself is unavailable, every item fails at once.
    pub async fn purge(&self, kind: &str, items: &[PurgeItem]) -> Vec<ItemResult> {
        let empty = Vec::new();
        let stmts = self.purge.get(kind).unwrap_or(&empty);
        let verify = self.verify.get(kind).unwrap_or(&empty);
        if stmts.is_empty() {
            let e = format!("target `{}` has no statements for kind `{kind}`", self.name);
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        let batch: Result<Vec<Removed>, (bool, String)> = with_pool!(&self.db, |pool| {
            async {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(|e| (true, self.unavailable(&e)))?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match run_item!(tx, stmts, verify, item) {
                        Ok(r) => out.push(r),
                        Err(e) => return Err((false, e)),
                    }
                }
                tx.commit()
                    .await
                    .map_err(|e| (true, self.unavailable(&e)))?;
                Ok(out)
            }
            .await
        });
        let results = match batch {
            Ok(removed) => removed.into_iter().map(Ok).collect(),
            Err((true, e)) => items.iter().map(|_| Err(e.clone())).collect(),
            Err((false, _)) if items.len() == 1 => {
                vec![self.purge_one(stmts, verify, &items[0]).await]
            }
            Err((false, _)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.purge_one(stmts, verify, item).await);
                }
                out
            }
        };
        self.after_batch().await;
        results
    }

    async fn purge_one(
        &self,
        stmts: &[Statement],
        verify: &[Statement],
        item: &PurgeItem,
    ) -> ItemResult {
        with_pool!(&self.db, |pool| {
            async {
                let mut tx = pool.begin().await.map_err(|e| self.unavailable(&e))?;
                let r = run_item!(tx, stmts, verify, item);
                match r {
                    Ok(removed) => {
                        tx.commit().await.map_err(|e| self.unavailable(&e))?;
                        Ok(removed)
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(format!("target `{}`: {e}", self.name))
                    }
                }
            }
            .await
        })
    }

    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        let empty = Vec::new();
        let stmts = self.purge.get("account").unwrap_or(&empty);
        let verify = self.verify.get("account").unwrap_or(&empty);
        let item = PurgeItem {
            id: String::new(),
            kind: "account".into(),
            account: account.to_string(),
            org: org.to_string(),
        };
        let r = self.purge_one(stmts, verify, &item).await;
        self.after_batch().await;
        r
    }

    fn unavailable(&self, e: &sqlx::Error) -> String {
        format!("target `{}` unavailable: {e}", self.name)
    }

    /// SQLite: move the WAL's pages into the main file (where secure_delete zeroed the freed
    /// space) and truncate it, so deleted rows do not survive in the `-wal` file.
    async fn after_batch(&self) {
        if !self.checkpoint {
            return;
        }
        if let AppDb::Sqlite(pool) = &self.db {
            match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_optional(pool)
                .await
            {
                Ok(Some(row)) if row.try_get::<i64, _>(0).unwrap_or(0) != 0 => {
                    warn!(target_name = %self.name, "WAL checkpoint could not complete (readers busy); it will be retried after the next batch");
                }
                Ok(_) => {}
                Err(e) => warn!(target_name = %self.name, error = %e, "WAL checkpoint failed"),
            }
        }
    }

    /// Reclaims space so deleted rows leave the file (VACUUM on SQLite; VACUUM of the tables
    /// the purge statements name on PostgreSQL).
    pub async fn vacuum(&self) -> Result<String, String> {
        match &self.db {
            AppDb::Sqlite(pool) => {
                sqlx::query("VACUUM")
                    .execute(pool)
                    .await
                    .map_err(|e| self.unavailable(&e))?;
                Ok("VACUUM".into())
            }
            AppDb::Postgres(pool) => {
                let tables = self.tables();
                for t in &tables {
                    let sql = format!("VACUUM {t}");
                    sqlx::query(AssertSqlSafe(sql))
                        .execute(pool)
                        .await
                        .map_err(|e| self.unavailable(&e))?;
                }
                Ok(format!("VACUUM {}", tables.join(", ")))
            }
        }
    }

    /// Table names after `DELETE FROM` in the purge statements (plain identifiers only).
    fn tables(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for st in self.purge.values().flatten() {
            let lower = st.text.to_ascii_lowercase();
            if let Some(pos) = lower.find("delete from ") {
                let rest = &st.text[pos + 12..];
                let name: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                    .collect();
                if !name.is_empty() && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }
}
