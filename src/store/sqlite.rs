//! The SQLite backend: the embedded default for one daemon. WAL, a busy timeout, and
//! `BEGIN IMMEDIATE` for every write so concurrent CLI and daemon writers queue instead of
//! failing with "database is locked". While a writer (the daemon, a write command) has the ledger
//! open, a background checkpointer copies the WAL back into the database file, off the commits'
//! path (see [`spawn_checkpointer`]); read commands leave it to the commits, as SQLite does.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::OpenOptions;
use crate::config::SecretUrl;
use crate::sqlite_handle::{Lent, blocking};

type Db = sqlx::Sqlite;
/// This backend's [`Dialect`](super::dialect::Dialect).
type D = SqliteDialect;

/// WAL frames (pages) after which a commit checkpoints the WAL itself (SQLite's default is
/// 1,000): the bound for when no background checkpointer runs or it falls behind. Normally it
/// has copied the whole WAL long before, and the next writer starts the WAL over.
const WAL_AUTOCHECKPOINT: u32 = 4096;
/// What the WAL file is cut back to when it starts over: one large transaction (an ingest of a
/// big file) may grow it far past the bound above, and it would keep that size on disk.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;
/// How often the background checkpointer copies what was committed since its last run.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between the checkpointer's attempts while they fail.
const CHECKPOINT_RETRY_MAX: Duration = Duration::from_secs(60);

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

include!("ops.rs");

/// A SQLite error from rusqlite as the ledger reports it (the extended code keeps the
/// disk-full / read-only hints and `is_retryable` working).
fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        code: match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(i64::from(f.extended_code)),
            _ => None,
        },
        message: e.to_string(),
    }
}

/// Runs `f` on the transaction's connection handle through rusqlite: bulk writes prepare one
/// statement and step it once per row (as the SQL target runs its statements:
/// `targets::sqlite_direct`), instead of multi-row VALUES statements of thousands of binds, each
/// value encoded by sqlx and the statement handed to its worker thread. The call runs to its end
/// once started (a million audit entries at the end of a large ingest included): a timeout or a
/// shutdown takes effect after it, and the transaction then rolls back.
async fn on_handle(
    tx: &mut sqlx::Transaction<'static, Db>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()>,
) -> Result<()> {
    let mut handle = tx.lock_handle().await?;
    let mut lent = Lent::new(&mut handle);
    blocking(|| lent.with(f).and_then(|r| r)).map_err(sqlite_error)
}

/// Steps `sql`, prepared once, for each of `rows`; `bind_and_run` binds a row and executes it.
fn step_each<T>(
    conn: &rusqlite::Connection,
    sql: &'static str,
    rows: &[T],
    bind_and_run: impl Fn(&mut rusqlite::Statement<'_>, &T) -> rusqlite::Result<usize>,
) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut st = conn.prepare(sql)?;
    for row in rows {
        bind_and_run(&mut st, row)?;
    }
    Ok(())
}

fn upsert_resources(conn: &rusqlite::Connection, rows: &[ResourceRow]) -> rusqlite::Result<()> {
    let sql = concat!(
        resource_upsert_columns!(),
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        resource_upsert_conflict!()
    );
    step_each(conn, sql, rows, |st, r| {
        st.execute(rusqlite::params![
            r.id,
            r.kind,
            r.account,
            r.created_at.millis(),
            r.endpoint,
            r.state.as_str(),
            r.deleted_at.map(|t| t.millis()),
            r.cause.map(|c| c.as_str()),
            r.purge_after.map(|t| t.millis()),
            r.rule.map(|c| c.as_str()),
            r.held as i64,
            r.lease_owner,
            r.lease_until.map(|t| t.millis()),
            r.attempts,
            r.last_error,
            r.purged_at.map(|t| t.millis()),
            r.target_attrs,
        ])
    })
}

fn upsert_accounts(conn: &rusqlite::Connection, rows: &[AccountRow]) -> rusqlite::Result<()> {
    let sql = concat!(
        account_upsert_columns!(),
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        account_upsert_conflict!()
    );
    step_each(conn, sql, rows, |st, a| {
        st.execute(rusqlite::params![
            a.id,
            a.org,
            a.state.as_str(),
            a.created_at.millis(),
            a.deletion_requested_at.map(|t| t.millis()),
            a.purge_after.map(|t| t.millis()),
            a.purged_at.map(|t| t.millis()),
        ])
    })
}

fn upsert_orgs(conn: &rusqlite::Connection, rows: &[OrgRow]) -> rusqlite::Result<()> {
    let sql = concat!(
        org_upsert_columns!(),
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        org_upsert_conflict!()
    );
    step_each(conn, sql, rows, |st, o| {
        st.execute(rusqlite::params![
            o.id,
            o.plan.as_str(),
            o.zdr.as_str(),
            o.zdr_reason,
            o.zdr_by,
            o.zdr_at.map(|t| t.millis()),
            o.created_at.millis(),
            o.updated_at.millis(),
            o.training_opt_out,
        ])
    })
}

fn insert_audit(conn: &rusqlite::Connection, entries: &[AuditEntry]) -> rusqlite::Result<()> {
    let sql = "INSERT INTO audit (seq, at, action, subject, details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    step_each(conn, sql, entries, |st, e| {
        st.execute(rusqlite::params![
            e.seq,
            e.at.millis(),
            e.action,
            e.subject,
            e.details,
            e.prev_hash,
            e.hash
        ])
    })
}

fn insert_event_ids(
    conn: &rusqlite::Connection,
    ids: &[(String, Timestamp)],
    at: Timestamp,
) -> rusqlite::Result<()> {
    let sql = "INSERT INTO applied_events (event_id, applied_at, event_at) VALUES (?1, ?2, ?3) ON CONFLICT (event_id) DO NOTHING";
    step_each(conn, sql, ids, |st, (id, event_at)| {
        st.execute(rusqlite::params![id, at.millis(), event_at.millis()])
    })
}

/// What a claim returns of each resource: the columns of `resource_columns!`, the org read
/// from its account.
macro_rules! claimed_columns {
    () => {
        "id, kind, account, (SELECT org FROM accounts WHERE accounts.id = resources.account), created_at, endpoint, \
         state, deleted_at, cause, purge_after, rule, held, lease_owner, lease_until, attempts, last_error, purged_at, \
         claim_batch, target_attrs"
    };
}

/// Reads the rows a claim statement returns (`claimed_columns!`).
fn read_claimed(mut rows: rusqlite::Rows<'_>, out: &mut Vec<RawResource>) -> rusqlite::Result<()> {
    while let Some(row) = rows.next()? {
        let (id, account): (String, String) = (row.get(0)?, row.get(2)?);
        let Some(org) = row.get::<_, Option<String>>(3)? else {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Null,
                format!("resource `{id}`: its account `{account}` is not in the ledger").into(),
            ));
        };
        out.push(RawResource {
            id,
            kind: row.get(1)?,
            account,
            org,
            created_at: row.get(4)?,
            endpoint: row.get(5)?,
            state: row.get(6)?,
            deleted_at: row.get(7)?,
            cause: row.get(8)?,
            purge_after: row.get(9)?,
            rule: row.get(10)?,
            held: row.get(11)?,
            lease_owner: row.get(12)?,
            lease_until: row.get(13)?,
            attempts: row.get(14)?,
            last_error: row.get(15)?,
            purged_at: row.get(16)?,
            claim_batch: row.get(17)?,
            target_attrs: row.get(18)?,
        });
    }
    Ok(())
}

/// SQLite's ways (see [`Dialect`](super::dialect::Dialect)): writers begin `IMMEDIATE`, so every
/// write transaction already holds the database's one write lock; bulk writes step one prepared
/// statement per row on the connection's handle (`on_handle`).
pub(super) struct SqliteDialect;

impl super::dialect::Dialect for SqliteDialect {
    type Db = Db;
    type Ids = String;
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

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

    /// The claim's two statements on the connection's handle, each returning the claimed rows
    /// whole: no second query reads them again, and no row travels through sqlx's worker thread.
    async fn claim(
        tx: &mut sqlx::Transaction<'static, Db>,
        now: Timestamp,
        limit: i64,
        owner: &str,
        lease_until: Timestamp,
        batch: i64,
    ) -> Result<Vec<ResourceRow>> {
        let mut raw = Vec::new();
        let claimed = on_handle(tx, |conn| {
            // Stale claims first, then due work, up to `limit` in all.
            for sql in [
                claim_stale_sql!(claimed_columns!()),
                claim_due_sql!(claimed_columns!()),
            ] {
                let left = limit - raw.len() as i64;
                if left <= 0 {
                    break;
                }
                let mut st = conn.prepare(sql)?;
                read_claimed(
                    st.query(rusqlite::named_params! {
                        "$1": owner, "$2": lease_until.millis(), "$3": now.millis(), "$4": left, "$5": batch,
                    })?,
                    &mut raw,
                )?;
            }
            Ok(())
        })
        .await;
        claimed.and_then(|()| {
            raw.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            rows(raw)
        })
    }

    async fn save_resources(
        tx: &mut sqlx::Transaction<'static, Db>,
        rows: &[ResourceRow],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        on_handle(tx, |conn| upsert_resources(conn, rows)).await
    }

    async fn insert_audit(
        tx: &mut sqlx::Transaction<'static, Db>,
        entries: &[AuditEntry],
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        on_handle(tx, |conn| insert_audit(conn, entries)).await
    }

    async fn record_events(
        tx: &mut sqlx::Transaction<'static, Db>,
        ids: &[(String, Timestamp)],
        at: Timestamp,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        on_handle(tx, |conn| insert_event_ids(conn, ids, at)).await
    }

    /// `finish_purged` on the connection's handle: one prepared statement stepped per resource.
    async fn finish_purged(
        tx: &mut sqlx::Transaction<'static, Db>,
        ids: &[String],
        cause: Cause,
        owner: &str,
        at: Timestamp,
    ) -> Result<Vec<String>> {
        let mut recorded = Vec::with_capacity(ids.len());
        let done = on_handle(tx, |conn| {
            let mut st = conn.prepare(finish_purged_sql!("= $1"))?;
            for id in ids {
                let params = rusqlite::named_params! {
                    "$1": id, "$2": cause.as_str(), "$3": at.millis(), "$4": owner,
                };
                if st.execute(params)? == 1 {
                    recorded.push(id.clone());
                }
            }
            Ok(())
        })
        .await;
        done.map(|()| recorded)
    }
}

impl Tx {
    /// See [`LedgerTx::append_audit`](super::LedgerTx::append_audit). The write lock is ours
    /// from `BEGIN IMMEDIATE`, so the entries are chained and appended now.
    pub async fn append_audit(&mut self, drafts: &[AuditDraft]) -> Result<()> {
        if drafts.is_empty() {
            return Ok(());
        }
        let (seq, hash) = q_chain_head(&mut self.tx).await?;
        let entries = audit::chain::extend(seq, &hash, drafts);
        on_handle(&mut self.tx, |conn| insert_audit(conn, &entries)).await
    }

    /// See [`LedgerTx::write_ingest`](super::LedgerTx::write_ingest). The write lock is ours
    /// from `BEGIN IMMEDIATE`, so the chunk's audit entries are chained and appended now: no
    /// other writer can extend the chain before this transaction ends.
    pub async fn write_ingest<R>(&mut self, w: IngestWrite, work: impl FnOnce() -> R) -> Result<R> {
        if w.is_empty() {
            return Ok(work());
        }
        // The chain is extended on the writing thread, from the head as this transaction sees it.
        let head = match w.audit.is_empty() {
            true => None,
            false => Some(q_chain_head(&mut self.tx).await?),
        };
        let mut handle = self.tx.lock_handle().await?;
        // Behind a mutex so that the writer thread, or this one if none can be had, uses it.
        let lent = std::sync::Mutex::new(Lent::new(&mut handle));
        let (w, head) = (&w, &head);
        let write = || -> rusqlite::Result<()> {
            let mut lent = lent.lock().unwrap_or_else(|p| p.into_inner());
            lent.with(|conn| {
                upsert_orgs(conn, &w.orgs)?;
                upsert_accounts(conn, &w.accounts)?;
                upsert_resources(conn, &w.resources)?;
                insert_event_ids(conn, &w.event_ids, w.applied_at)?;
                if let Some((seq, hash)) = head {
                    insert_audit(conn, &audit::chain::extend(*seq, hash, &w.audit))?;
                }
                Ok(())
            })
            .and_then(|r| r)
        };
        let (written, r) = blocking(|| {
            std::thread::scope(|s| {
                match std::thread::Builder::new()
                    .name("ingest-writer".into())
                    .spawn_scoped(s, write)
                {
                    Ok(writer) => {
                        let r = work();
                        (writer.join(), r)
                    }
                    // No thread to be had: write, then work, on this one.
                    Err(_) => (Ok(write()), work()),
                }
            })
        });
        drop(handle);
        match written {
            Ok(written) => written.map_err(sqlite_error)?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        Ok(r)
    }
}

/// Copies committed WAL frames into the database file every [`CHECKPOINT_EVERY`] (`PRAGMA
/// wal_checkpoint(PASSIVE)`: it never waits for, nor blocks, a reader or writer) on a
/// connection of its own, until the returned guard drops.
///
/// With SQLite's automatic checkpoint alone, every thousand pages one commit copies them all
/// and syncs the database file before it returns: a purge transaction's commit, on a sweep's
/// critical path, paid for it (BENCHMARKS.md, issue 7). Here that copy runs on another
/// thread while the sweep goes on. A failure is logged once (until it changes or clears) and
/// retried with backoff, up to [`CHECKPOINT_RETRY_MAX`]; the commits' own checkpoint
/// ([`WAL_AUTOCHECKPOINT`]) still bounds the WAL meanwhile.
fn spawn_checkpointer(options: SqliteConnectOptions) -> DropGuard {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        let mut conn: Option<sqlx::SqliteConnection> = None;
        let mut failing: Option<String> = None;
        let mut wait = CHECKPOINT_EVERY;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            let done = async {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(options.connect().await?),
                };
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(c)
                    .await
            }
            .await;
            match done {
                Ok(_) => {
                    if failing.take().is_some() {
                        tracing::info!("background WAL checkpoint of the ledger works again");
                    }
                    wait = CHECKPOINT_EVERY;
                }
                Err(e) => {
                    let error = e.to_string();
                    if failing.as_ref() != Some(&error) {
                        tracing::warn!(%error, "background WAL checkpoint of the ledger failed; retrying with backoff, commits checkpoint it meanwhile");
                        failing = Some(error);
                    }
                    wait = (wait * 2).min(CHECKPOINT_RETRY_MAX);
                }
            }
        }
        if let Some(c) = conn {
            let _ = sqlx::Connection::close(c).await;
        }
    });
    guard
}

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
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT.to_string())
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string());
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
            .connect_with(options.clone())
            .await
            .map_err(|e| open_err(e.to_string()))?;
        let gate = super::gate::HoldGate::beside(options.get_filename());
        let checkpointer = opts
            .background_checkpoint
            .then(|| std::sync::Arc::new(spawn_checkpointer(options.create_if_missing(false))));
        Ok(Store {
            pool,
            _checkpointer: checkpointer,
            gate: Some(std::sync::Arc::new(gate)),
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    pub async fn db_now(&self) -> Result<Option<Timestamp>> {
        Ok(None)
    }
}
