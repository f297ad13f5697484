//! The `sql` target: configured statements per kind, run against the application's SQLite or
//! PostgreSQL database, one transaction per batch.
//!
//! Invariant: each item's receipt records the rows *it* removed and its verify queries check
//! *it*, and a batch commits whole or not at all. On SQLite a batch runs as prepared statements
//! on the connection's own handle ([`super::sqlite_direct`]). On PostgreSQL, when every purge
//! statement of a kind is `DELETE FROM table WHERE column = :id` ([`KeyedDelete`]), each runs
//! once for the whole batch, joined to the items' ids (bound as one array), and returns how many
//! rows each item removed: one round trip per statement, as a hand-written batched DELETE. Other
//! statements, and every verify query, go to the server as a few scripts (every statement for up
//! to [`SCRIPT_ITEMS`] items), one round trip each, with the values of `:id`, `:account` …
//! written in as constants spelled in hex (`U&'\0063\0031'`): only hex digits ever reach the
//! SQL text, so no value can change a statement. When a batch fails or its results do not line
//! up, it is redone item by item with bound parameters, which also finds the item at fault.
//!
//! On SQLite the connection runs with `secure_delete` (on by default) and the WAL is
//! checkpointed with TRUNCATE after each batch, so deleted content does not linger in free pages
//! or the `-wal` file. That guarantees nothing about the device below the file (SSD wear
//! levelling, snapshots, backups): see README "Erasure".

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tracing::{info, warn};

use futures_util::StreamExt;

use super::{ItemResult, PurgeItem, Removed, sqlite_direct};
use crate::config::SqlTargetConfig;
use crate::sqlite_handle::{self, Lent, blocking};
use crate::template::{named_to_positional, rewrite_named};

/// Items per script (see the module doc): large enough that round trips stop mattering, small
/// enough to keep a script well under a megabyte.
pub const SCRIPT_ITEMS: usize = 250;

/// `value` as a PostgreSQL text constant written with hex digits only (a Unicode-escape string:
/// a constant, so the planner uses the index as it does for a bound parameter;
/// `convert_from(decode(…))` made PostgreSQL scan the table).
fn text_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 5 + 4);
    out.push_str("U&'");
    for c in value.chars() {
        let c = c as u32;
        if c <= 0xFFFF {
            out.push_str(&format!("\\{c:04X}"));
        } else {
            out.push_str(&format!("\\+{c:06X}"));
        }
    }
    out.push('\'');
    out
}

/// Every statement for every item, in that order, as one script.
fn script(stmts: &[Statement], items: &[PurgeItem]) -> String {
    let mut out = String::new();
    for item in items {
        for st in stmts {
            let (sql, _) = rewrite_named(&st.text, |name, _| text_literal(item.param(name)));
            // A trailing `-- comment` must not swallow the separator.
            out.push_str(sql.trim().trim_end_matches(';'));
            out.push_str("\n;\n");
        }
    }
    out
}

/// A purge statement of the form `DELETE FROM table WHERE column = :id` (a cast such as
/// `:id::bigint` allowed): on PostgreSQL a batch runs it once for all of its items, joined to
/// their ids, and counts what each item removed from what the join returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyedDelete {
    table: String,
    column: String,
    /// `::type` after `:id`, or empty.
    cast: String,
}

/// `word` as an SQL identifier: plain (`[A-Za-z_][A-Za-z0-9_]*`, dot-separated parts when
/// `dotted`) or double-quoted without quotes or spaces inside.
fn identifier(word: &str, dotted: bool) -> bool {
    let part = |p: &str| {
        let plain = p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let quoted = p.len() > 2
            && p.starts_with('"')
            && p.ends_with('"')
            && !p[1..p.len() - 1].contains(['"', ' ']);
        plain || quoted
    };
    if dotted {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() <= 2 && parts.iter().all(|p| part(p))
    } else {
        part(word)
    }
}

impl KeyedDelete {
    /// The statement as a [`KeyedDelete`], if it is exactly one.
    pub(super) fn parse(text: &str) -> Option<KeyedDelete> {
        let text = text.trim().trim_end_matches(';').replace('=', " = ");
        let words: Vec<&str> = text.split_whitespace().collect();
        let [delete, from, table, r#where, column, eq, param] = words.as_slice() else {
            return None;
        };
        let keywords = delete.eq_ignore_ascii_case("delete")
            && from.eq_ignore_ascii_case("from")
            && r#where.eq_ignore_ascii_case("where")
            && *eq == "=";
        let cast = param.strip_prefix(":id")?;
        let cast_ok = cast.is_empty()
            || cast.strip_prefix("::").is_some_and(|t| {
                !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        (keywords && cast_ok && identifier(table, true) && identifier(column, false)).then(|| {
            KeyedDelete {
                table: table.to_string(),
                column: column.to_string(),
                cast: cast.to_string(),
            }
        })
    }

    /// The statement run once for a batch: `$1` the items' ids in order; one row per item that
    /// removed something, with its position (from 1) and how many rows.
    fn batch_sql(&self) -> String {
        format!(
            "WITH retentiond_ids (v, i) AS (SELECT * FROM unnest($1::text[]) WITH ORDINALITY), \
             retentiond_gone AS (DELETE FROM {} AS retentiond_t USING retentiond_ids \
             WHERE retentiond_t.{} = retentiond_ids.v{} RETURNING retentiond_ids.i) \
             SELECT i, COUNT(*) FROM retentiond_gone GROUP BY i",
            self.table, self.column, self.cast
        )
    }
}

/// Runs each keyed statement once for all of `items`, in order, counting each item's rows.
async fn run_keyed(
    conn: &mut sqlx::PgConnection,
    keyed: &[KeyedDelete],
    items: &[PurgeItem],
) -> Result<Vec<Removed>, (bool, String)> {
    let mut removed = vec![Removed::default(); items.len()];
    let ids: Vec<&str> = items.iter().map(|i| i.param("id")).collect();
    for k in keyed {
        let rows: Vec<(i64, i64)> = sqlx::query_as(AssertSqlSafe(k.batch_sql()))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| (database_wide(&e), format!("batch of {}: {e}", items.len())))?;
        for (i, n) in rows {
            let slot = usize::try_from(i - 1).ok().and_then(|i| removed.get_mut(i));
            let Some(slot) = slot else {
                return Err((
                    false,
                    format!("a batch statement named item {i} of {}", items.len()),
                ));
            };
            slot.rows += n as u64;
        }
    }
    Ok(removed)
}

/// A configured statement, and the same rewritten to positional parameters.
#[derive(Debug, Clone)]
pub(super) struct Statement {
    pub(super) text: String,
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
pub(super) enum AppDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

#[derive(Debug)]
pub struct SqlTarget {
    pub(super) name: String,
    pub(super) db: AppDb,
    /// Windowed kinds' tables in this database, by kind (see `window`).
    pub(super) windows: BTreeMap<String, crate::window::WindowMapping>,
    purge: BTreeMap<String, Vec<Statement>>,
    /// Kinds whose purge statements are all [`KeyedDelete`]s (used on PostgreSQL).
    keyed: BTreeMap<String, Vec<KeyedDelete>>,
    verify: BTreeMap<String, Vec<Statement>>,
    checkpoint: bool,
    /// A WAL checkpoint after a purge could not complete (a reader held an old snapshot): the
    /// deleted content may still be in the `-wal` file until [`SqlTarget::retry_checkpoint`]
    /// (the daemon's maintenance loop) or the next batch completes one.
    checkpoint_pending: AtomicBool,
    vacuum: Option<String>,
}

/// How long a checkpoint after a purge waits for readers before giving up (it is retried): a
/// long reader in the application must not stall every purge batch for the full busy timeout.
const CHECKPOINT_WAIT_MS: u32 = 1000;
/// The busy timeout of the target's connections otherwise.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `$body` with `$p` bound to the pool of whichever backend `$db` is.
macro_rules! with_pool {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            AppDb::Sqlite($p) => $body,
            AppDb::Postgres($p) => $body,
        }
    };
}

/// What a verify query's row says is left: its first column as an integer (COUNT is BIGINT on
/// PostgreSQL, INTEGER on SQLite); -1 when it is not one, so a malformed query fails the purge.
fn rows_left<R: Row>(row: &R) -> i64
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get::<i64, _>(0)
        .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
        .unwrap_or(-1)
}

/// Runs the statements (and then the verify queries) for one item in `conn`'s transaction.
/// A failure carries whether it concerns the whole database ([`database_wide`]).
macro_rules! run_item {
    ($conn:expr, $stmts:expr, $verify:expr, $item:expr) => {{
        let mut removed = Removed::default();
        let mut failure: Option<(bool, String)> = None;
        for st in $stmts {
            let mut q = sqlx::query(AssertSqlSafe(st.sql.as_str()));
            for p in &st.params {
                q = q.bind($item.param(p));
            }
            match q.execute(&mut *$conn).await {
                Ok(r) => removed.rows += r.rows_affected(),
                Err(e) => {
                    failure = Some((database_wide(&e), format!("`{}`: {}", st.text, e)));
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
                        // COUNT(*) is a 64-bit integer on both databases; accept a 32-bit one
                        // too (e.g. `SELECT 1 …`) rather than misreading it as "rows left".
                        let left = rows_left(&row);
                        if left != 0 {
                            failure = Some((
                                false,
                                format!(
                                    "verify `{}` found {} left after the delete",
                                    st.text, left
                                ),
                            ));
                            break;
                        }
                    }
                    Err(e) => {
                        failure = Some((database_wide(&e), format!("verify `{}`: {}", st.text, e)));
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

/// SQLite primary result codes that concern the database, not an item: BUSY, LOCKED, READONLY,
/// IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
pub(super) fn sqlite_database_wide(primary_code: i64) -> bool {
    matches!(primary_code, 5 | 6 | 8 | 10 | 11 | 13 | 14 | 26)
}

/// Whether a statement error concerns the database as a whole — busy or locked, read-only,
/// out of space, unreachable — rather than one item. Such an error fails the whole batch at
/// once: retrying item by item would wait out the busy timeout again for every item while the
/// ledger's purge transaction stays open (on SQLite, locking every other ledger writer out).
fn database_wide(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(d) = e else {
        // I/O, pool timeout, TLS, protocol, a crashed worker: the connection, not the item.
        return true;
    };
    if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        sqlite_handle::primary_code(e).is_some_and(sqlite_database_wide)
    } else {
        let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
        // PostgreSQL: connection exception, insufficient resources, operator intervention,
        // read-only transaction, lock not available.
        ["08", "53", "57"].iter().any(|p| code.starts_with(p))
            || matches!(code.as_str(), "25006" | "55P03")
    }
}

/// PostgreSQL: runs `items`' statements, then their verify queries, as scripts in `conn`'s
/// transaction. Returns what each item removed, or a failure as [`run_item!`] does; a failure of
/// the script as a whole (not database-wide) is for the caller to redo item by item.
async fn run_scripts(
    conn: &mut sqlx::PgConnection,
    stmts: &[Statement],
    verify: &[Statement],
    items: &[PurgeItem],
) -> Result<Vec<Removed>, (bool, String)> {
    let mut removed = vec![Removed::default(); items.len()];
    // Statements: one result per statement, in order; rows a statement returns are ignored.
    let mut done = 0usize;
    if !stmts.is_empty() {
        let mut results = sqlx::raw_sql(AssertSqlSafe(script(stmts, items))).fetch_many(&mut *conn);
        while let Some(step) = results.next().await {
            match step.map_err(|e| (database_wide(&e), format!("batch of {}: {e}", items.len())))? {
                sqlx::Either::Left(r) => {
                    if let Some(x) = removed.get_mut(done / stmts.len()) {
                        x.rows += r.rows_affected();
                    }
                    done += 1;
                }
                sqlx::Either::Right(_) => {}
            }
        }
    }
    if done != items.len() * stmts.len() {
        let expected = items.len() * stmts.len();
        return Err((
            false,
            format!("a batch script gave {done} results for {expected} statements"),
        ));
    }
    if verify.is_empty() {
        return Ok(removed);
    }
    // Verify: each query's first column of its first row must be 0.
    let mut results = sqlx::raw_sql(AssertSqlSafe(script(verify, items))).fetch_many(&mut *conn);
    let (mut k, mut seen) = (0usize, false);
    while let Some(step) = results.next().await {
        let st = &verify[k % verify.len()];
        match step.map_err(|e| {
            (
                database_wide(&e),
                format!("verify, batch of {}: {e}", items.len()),
            )
        })? {
            sqlx::Either::Right(row) if !seen => {
                seen = true;
                let left = rows_left(&row);
                if left != 0 {
                    return Err((
                        false,
                        format!("verify `{}` found {left} left after the delete", st.text),
                    ));
                }
            }
            sqlx::Either::Right(_) => {}
            sqlx::Either::Left(_) if !seen => {
                return Err((false, format!("verify `{}` returned no row", st.text)));
            }
            sqlx::Either::Left(_) => {
                k += 1;
                seen = false;
            }
        }
    }
    if k != items.len() * verify.len() {
        let expected = items.len() * verify.len();
        return Err((
            false,
            format!("a verify script gave {k} results for {expected} queries"),
        ));
    }
    Ok(removed)
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
                .busy_timeout(BUSY_TIMEOUT);
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
            checkpoint_pending: AtomicBool::new(false),
            db,
            windows: cfg.windows.clone(),
            purge: prep(&cfg.purge),
            keyed: cfg
                .purge
                .iter()
                .filter_map(|(kind, stmts)| {
                    let keyed: Option<Vec<KeyedDelete>> =
                        stmts.iter().map(|s| KeyedDelete::parse(s)).collect();
                    keyed.map(|k| (kind.clone(), k))
                })
                .collect(),
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
        let batch = match &self.db {
            AppDb::Sqlite(pool) => self.sqlite_batch(pool, stmts, verify, items).await,
            AppDb::Postgres(pool) => {
                let keyed = self.keyed.get(kind).map(Vec::as_slice);
                self.postgres_batch(pool, stmts, keyed, verify, items).await
            }
        };
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

    /// SQLite: one transaction, the batch run by [`sqlite_direct::run`] on the connection's handle.
    async fn sqlite_batch(
        &self,
        pool: &sqlx::SqlitePool,
        stmts: &[Statement],
        verify: &[Statement],
        items: &[PurgeItem],
    ) -> Result<Vec<Removed>, (bool, String)> {
        let unavailable = |e: sqlx::Error| (true, self.unavailable(&e));
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let result = {
            let mut handle = tx.lock_handle().await.map_err(unavailable)?;
            let mut lent = Lent::new(&mut handle);
            blocking(|| lent.with(|conn| sqlite_direct::run(conn, stmts, verify, items)))
                .unwrap_or_else(|e| Err((true, format!("opening the handle: {e}"))))
        };
        match result {
            Ok(removed) => {
                tx.commit().await.map_err(unavailable)?;
                Ok(removed)
            }
            Err((true, e)) => Err((true, self.unavailable(&e))),
            Err(e) => Err(e),
        }
    }

    /// PostgreSQL: one transaction; keyed statements run once for the batch, other statements
    /// and the verify queries go as scripts of [`SCRIPT_ITEMS`] items.
    async fn postgres_batch(
        &self,
        pool: &sqlx::PgPool,
        stmts: &[Statement],
        keyed: Option<&[KeyedDelete]>,
        verify: &[Statement],
        items: &[PurgeItem],
    ) -> Result<Vec<Removed>, (bool, String)> {
        let unavailable = |e: sqlx::Error| (true, self.unavailable(&e));
        let fail = |e: (bool, String)| match e {
            (true, e) => (true, self.unavailable(&e)),
            e => e,
        };
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let (mut out, scripted) = match keyed {
            Some(keyed) => (
                run_keyed(&mut tx, keyed, items).await.map_err(fail)?,
                &[][..],
            ),
            None => (Vec::with_capacity(items.len()), stmts),
        };
        if !scripted.is_empty() || !verify.is_empty() {
            for chunk in items.chunks(SCRIPT_ITEMS) {
                let removed = run_scripts(&mut tx, scripted, verify, chunk)
                    .await
                    .map_err(fail)?;
                if !scripted.is_empty() {
                    out.extend(removed);
                }
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(out)
    }

    async fn purge_one(
        &self,
        stmts: &[Statement],
        verify: &[Statement],
        item: &PurgeItem,
    ) -> ItemResult {
        let pool = match &self.db {
            // The same runner as a batch, so an item is bound and checked the same way alone.
            AppDb::Sqlite(pool) => {
                return match self
                    .sqlite_batch(pool, stmts, verify, std::slice::from_ref(item))
                    .await
                {
                    Ok(mut removed) => Ok(removed.pop().unwrap_or_default()),
                    Err((true, e)) => Err(e),
                    Err((false, e)) => Err(format!("target `{}`: {e}", self.name)),
                };
            }
            AppDb::Postgres(pool) => pool,
        };
        let mut tx = pool.begin().await.map_err(|e| self.unavailable(&e))?;
        match run_item!(tx, stmts, verify, item) {
            Ok(removed) => {
                tx.commit().await.map_err(|e| self.unavailable(&e))?;
                Ok(removed)
            }
            Err((_, e)) => {
                let _ = tx.rollback().await;
                Err(format!("target `{}`: {e}", self.name))
            }
        }
    }

    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        let empty = Vec::new();
        let stmts = self.purge.get("account").unwrap_or(&empty);
        let verify = self.verify.get("account").unwrap_or(&empty);
        let item = PurgeItem::account(account, org);
        let r = self.purge_one(stmts, verify, &item).await;
        self.after_batch().await;
        r
    }

    pub(super) fn unavailable(&self, e: &dyn std::fmt::Display) -> String {
        format!("target `{}` unavailable: {e}", self.name)
    }

    /// SQLite: move the WAL's pages into the main file (where secure_delete zeroed the freed
    /// space) and truncate it, so deleted rows do not survive in the `-wal` file.
    pub(super) async fn after_batch(&self) {
        if !self.checkpoint {
            return;
        }
        self.checkpoint_now(CHECKPOINT_WAIT_MS).await;
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`, waiting at most `wait_ms` for readers. Returns whether
    /// it completed; if not, the checkpoint stays pending (see [`SqlTarget::retry_checkpoint`]).
    async fn checkpoint_now(&self, wait_ms: u32) -> bool {
        let AppDb::Sqlite(pool) = &self.db else {
            return true;
        };
        let result: Result<bool, sqlx::Error> = async {
            let mut conn = pool.acquire().await?;
            sqlx::query(AssertSqlSafe(format!("PRAGMA busy_timeout = {wait_ms}")))
                .execute(&mut *conn)
                .await?;
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_optional(&mut *conn)
                .await;
            sqlx::query(AssertSqlSafe(format!(
                "PRAGMA busy_timeout = {}",
                BUSY_TIMEOUT.as_millis()
            )))
            .execute(&mut *conn)
            .await?;
            // (busy, wal frames, checkpointed frames); busy = 1: a reader kept it from finishing.
            Ok(row?.is_none_or(|r| r.try_get::<i64, _>(0).unwrap_or(0) == 0))
        }
        .await;
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                warn!(target_name = %self.name, error = %e, "WAL checkpoint failed; it will be retried");
                false
            }
        };
        let was_pending = self.checkpoint_pending.swap(!done, Ordering::Relaxed);
        if !done && !was_pending {
            warn!(target_name = %self.name, "WAL checkpoint could not complete (a reader holds an old snapshot); deleted content may stay in the -wal file until it does; retrying");
        } else if done && was_pending {
            info!(target_name = %self.name, "pending WAL checkpoint completed");
        }
        done
    }

    /// Whether a checkpoint after a purge is still owed.
    pub fn checkpoint_pending(&self) -> bool {
        self.checkpoint_pending.load(Ordering::Relaxed)
    }

    /// Retries a pending checkpoint; `true` when nothing is owed any more.
    pub async fn retry_checkpoint(&self) -> bool {
        if !self.checkpoint || !self.checkpoint_pending() {
            return true;
        }
        self.checkpoint_now(CHECKPOINT_WAIT_MS).await
    }

    /// Reclaims space so deleted rows leave the file (VACUUM on SQLite, followed by a WAL
    /// checkpoint; VACUUM of the tables the purge statements name on PostgreSQL).
    pub async fn vacuum(&self) -> Result<String, String> {
        match &self.db {
            AppDb::Sqlite(pool) => {
                sqlx::raw_sql("VACUUM")
                    .execute(pool)
                    .await
                    .map_err(|e| self.unavailable(&e))?;
                // VACUUM in WAL mode writes the rebuilt pages through the WAL: move them into
                // the file and truncate the WAL, or the old content stays there.
                let done = self.checkpoint_now(BUSY_TIMEOUT.as_millis() as u32).await;
                Ok(if done {
                    "VACUUM; wal_checkpoint(TRUNCATE)".into()
                } else {
                    "VACUUM; WAL checkpoint pending (readers busy)".into()
                })
            }
            AppDb::Postgres(pool) => {
                let tables = self.tables();
                for t in &tables {
                    // VACUUM cannot run in a transaction block: the simple protocol, one
                    // statement at a time. `t` is a plain identifier (see `tables`).
                    sqlx::raw_sql(AssertSqlSafe(format!("VACUUM {t}")))
                        .execute(pool)
                        .await
                        .map_err(|e| format!("target `{}`: VACUUM {t}: {e}", self.name))?;
                }
                Ok(format!("VACUUM {}", tables.join(", ")))
            }
        }
    }

    /// What a purge of `items` would remove, without removing it: each item's statements and
    /// verify queries run in a transaction that is rolled back (for `reapply --dry-run`).
    pub async fn probe(&self, kind: &str, items: &[PurgeItem]) -> Vec<ItemResult> {
        let empty = Vec::new();
        let stmts = self.purge.get(kind).unwrap_or(&empty);
        let verify = self.verify.get(kind).unwrap_or(&empty);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(self.probe_one(stmts, verify, item).await);
        }
        out
    }

    /// [`SqlTarget::probe`] for the account-level statements.
    pub async fn probe_account(&self, account: &str, org: &str) -> ItemResult {
        let empty = Vec::new();
        let stmts = self.purge.get("account").unwrap_or(&empty);
        let verify = self.verify.get("account").unwrap_or(&empty);
        let item = PurgeItem::account(account, org);
        self.probe_one(stmts, verify, &item).await
    }

    async fn probe_one(
        &self,
        stmts: &[Statement],
        verify: &[Statement],
        item: &PurgeItem,
    ) -> ItemResult {
        with_pool!(&self.db, |pool| {
            async {
                let mut tx = pool.begin().await.map_err(|e| self.unavailable(&e))?;
                let r = run_item!(tx, stmts, verify, item);
                let _ = tx.rollback().await;
                r.map_err(|(_, e)| format!("target `{}`: {e}", self.name))
            }
            .await
        })
    }

    /// See [`super::Target::remaining`].
    pub async fn remaining(&self, kind: &str, items: &[PurgeItem]) -> Vec<Result<u64, String>> {
        let empty = Vec::new();
        let stmts = self.purge.get(kind).unwrap_or(&empty);
        let verify = self.verify.get(kind).unwrap_or(&empty);
        let only_deletes = !stmts.is_empty()
            && stmts.iter().all(|st| {
                st.text
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("delete")
            });
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(if !verify.is_empty() {
                self.verify_left(verify, item).await
            } else if only_deletes {
                self.probe_one(stmts, &[], item).await.map(|r| r.rows)
            } else {
                Err(format!(
                    "target `{}` cannot tell whether `{kind}` data is left: give it verify queries for `{kind}`",
                    self.name
                ))
            });
        }
        out
    }

    /// The sum of what `verify`'s queries find left of `item`.
    async fn verify_left(&self, verify: &[Statement], item: &PurgeItem) -> Result<u64, String> {
        with_pool!(&self.db, |pool| {
            async {
                let mut conn = pool.acquire().await.map_err(|e| self.unavailable(&e))?;
                let mut left = 0u64;
                for st in verify {
                    let mut q = sqlx::query(AssertSqlSafe(st.sql.as_str()));
                    for p in &st.params {
                        q = q.bind(item.param(p));
                    }
                    let row = q.fetch_one(&mut *conn).await.map_err(|e| {
                        format!("target `{}`: verify `{}`: {e}", self.name, st.text)
                    })?;
                    let n = rows_left(&row);
                    if n < 0 {
                        return Err(format!(
                            "target `{}`: verify `{}` did not return a count",
                            self.name, st.text
                        ));
                    }
                    left += n as u64;
                }
                Ok(left)
            }
            .await
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> PurgeItem {
        PurgeItem {
            id: id.into(),
            kind: "conversation".into(),
            account: "a1".into(),
            org: "o1".into(),
            attrs: Default::default(),
        }
    }

    #[test]
    fn only_a_delete_keyed_by_id_alone_runs_once_per_batch() {
        let k = |t: &str| KeyedDelete::parse(t).map(|k| (k.table, k.column, k.cast));
        let kd =
            |t: &str, c: &str, cast: &str| Some((t.to_string(), c.to_string(), cast.to_string()));
        assert_eq!(
            k("DELETE FROM messages WHERE conversation_id = :id"),
            kd("messages", "conversation_id", "")
        );
        assert_eq!(
            k("  delete from app.files where id=:id::bigint ; "),
            kd("app.files", "id", "::bigint")
        );
        assert_eq!(
            k(r#"DELETE FROM "Msg" WHERE "convId" = :id"#),
            kd(r#""Msg""#, r#""convId""#, "")
        );
        assert_eq!(
            KeyedDelete::parse("DELETE FROM messages WHERE conversation_id = :id")
                .unwrap()
                .batch_sql(),
            "WITH retentiond_ids (v, i) AS (SELECT * FROM unnest($1::text[]) WITH ORDINALITY), \
             retentiond_gone AS (DELETE FROM messages AS retentiond_t USING retentiond_ids \
             WHERE retentiond_t.conversation_id = retentiond_ids.v RETURNING retentiond_ids.i) \
             SELECT i, COUNT(*) FROM retentiond_gone GROUP BY i"
        );
        for other in [
            "DELETE FROM messages WHERE conversation_id = :account",
            "DELETE FROM messages WHERE conversation_id = :id AND 1 = 0",
            "DELETE FROM messages WHERE conversation_id = :id -- note",
            "DELETE FROM messages WHERE conversation_id IN (:id)",
            "DELETE FROM messages WHERE conversation_id = :idx",
            "DELETE FROM messages WHERE conversation_id = :id::big int",
            "DELETE FROM messages WHERE conversation_id = :id::text[]",
            "DELETE FROM a.b.c WHERE id = :id",
            "DELETE FROM m; DROP TABLE x WHERE id = :id",
            "UPDATE messages SET body = '' WHERE conversation_id = :id",
            "DELETE FROM messages WHERE lower(conversation_id) = :id",
            r#"DELETE FROM "a b" WHERE id = :id"#,
        ] {
            assert_eq!(k(other), None, "{other}");
        }
    }

    #[test]
    fn values_reach_a_script_as_hex_digits_only() {
        let hostile = "x'); DROP TABLE users; -- \u{1F600}";
        let stmts = [Statement::new(
            "DELETE FROM messages WHERE conversation_id = :id AND owner = :account -- note;",
        )];
        let s = script(&stmts, &[item(hostile), item("c2")]);
        assert!(!s.contains("DROP"), "{s}");
        assert_eq!(s.matches("\n;\n").count(), 2, "{s}");
        assert_eq!(text_literal("c1\u{1F600}"), "U&'\\0063\\0031\\+01F600'");
    }

    /// The SQLite batch path: a configured string holding two statements, a `RETURNING`
    /// statement, `:account` next to `:id`, and a verify query, each counted per item.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_batch_counts_each_items_rows_and_verifies_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let url = format!("sqlite://{}", path.display());
        let setup = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(setup).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE m (c TEXT, owner TEXT); CREATE TABLE c (id TEXT); CREATE TABLE t (c TEXT);
             INSERT INTO m VALUES ('c1','a1'),('c1','a1'),('c1','other'),('c2','a1');
             INSERT INTO c VALUES ('c1'),('c2'),('c3'); INSERT INTO t VALUES ('c1'),('c2'),('c2');",
        )
        .execute(&pool)
        .await
        .unwrap();
        let cfg = |verify: Vec<String>| SqlTargetConfig {
            url: crate::config::SecretUrl::new(url.clone()),
            purge: [(
                "conversation".to_string(),
                vec![
                    "DELETE FROM m WHERE c = :id AND owner = :account; DELETE FROM c WHERE id = :id"
                        .to_string(),
                    "DELETE FROM t WHERE c = :id RETURNING c".to_string(),
                ],
            )]
            .into(),
            verify: [("conversation".to_string(), verify)].into(),
            secure_delete: true,
            vacuum: None,
            windows: Default::default(),
        };
        let target = SqlTarget::new(
            "app",
            &cfg(vec!["SELECT COUNT(*) FROM c WHERE id = :id".into()]),
        )
        .unwrap();
        let got = target
            .purge("conversation", &[item("c1"), item("c2"), item("c9")])
            .await;
        let rows: Vec<u64> = got.iter().map(|r| r.as_ref().unwrap().rows).collect();
        assert_eq!(rows, vec![4, 4, 0]);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM m")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 1, "only the row of another account stays");

        // A verify query that finds rows fails that item only (the batch is redone item by
        // item), and its statements are rolled back.
        let target = SqlTarget::new(
            "app",
            &cfg(vec!["SELECT COUNT(*) FROM m WHERE c = :id".into()]),
        )
        .unwrap();
        sqlx::raw_sql("INSERT INTO c VALUES ('c3'); INSERT INTO m VALUES ('c4','zz')")
            .execute(&pool)
            .await
            .unwrap();
        let got = target
            .purge("conversation", &[item("c3"), item("c4")])
            .await;
        assert_eq!(got[0].as_ref().unwrap().rows, 2);
        let e = got[1].as_ref().unwrap_err();
        assert!(e.contains("found 1 left"), "{e}");
        let c3: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM c WHERE id = 'c3'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(c3, 0);

        // A positional parameter is not bound to anything silently: the purge fails, naming it.
        let mut positional = cfg(vec![]);
        positional.purge = [(
            "conversation".to_string(),
            vec!["DELETE FROM c WHERE id = ?".to_string()],
        )]
        .into();
        let target = SqlTarget::new("app", &positional).unwrap();
        let got = target.purge("conversation", &[item("c2")]).await;
        let e = got[0].as_ref().unwrap_err();
        assert!(e.contains("parameter #1 is not one of :id"), "{e}");
    }
}
