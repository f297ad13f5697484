//! The PostgreSQL backend: several daemon instances on one database share the work. Claims use
//! `FOR UPDATE SKIP LOCKED` plus a lease; row locks keep ingest and claims from overwriting each
//! other; audit appends serialise on a transaction-level advisory lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::OpenOptions;
use crate::config::SecretUrl;

type Db = sqlx::Postgres;

const BEGIN: &str = "BEGIN";

macro_rules! in_ids {
    ($n:literal) => {
        concat!("= ANY($", $n, ")")
    };
}
/// The rows of a derived table `x` as one JSON array of arrays, as text.
macro_rules! json_rows {
    ($cols:expr) => {
        concat!(
            "COALESCE(json_agg(json_build_array(",
            $cols,
            ")), '[]')::text"
        )
    };
}
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}
macro_rules! for_update_of_r {
    () => {
        " FOR UPDATE OF r"
    };
}
macro_rules! for_share {
    () => {
        " FOR SHARE"
    };
}
macro_rules! skip_locked {
    () => {
        " FOR UPDATE SKIP LOCKED"
    };
}

fn ids_arg(ids: &[String]) -> Vec<String> {
    ids.to_vec()
}

/// One writer at a time extends the chain; the lock is per schema so separate ledgers in one
/// database (tests) do not contend, and it is released at commit or rollback.
async fn lock_audit(tx: &mut sqlx::Transaction<'static, Db>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.retentiond.audit'))")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Leadership for work that must run once across instances: a transaction-level advisory lock,
/// per schema, released at commit or rollback (never left behind by a dead connection).
async fn singleton_lock(
    tx: &mut sqlx::Transaction<'static, Db>,
    name: &str,
    wait: bool,
) -> Result<bool> {
    if wait {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.retentiond.' || $1))",
        )
        .bind(name)
        .execute(&mut **tx)
        .await?;
        Ok(true)
    } else {
        Ok(sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.retentiond.' || $1))",
        )
        .bind(name)
        .fetch_one(&mut **tx)
        .await?)
    }
}

include!("ops.rs");

// PostgreSQL has no connection handle to write through: bulk writes use the shared statements.
async fn direct_save_resources(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _rows: &[ResourceRow],
) -> Option<Result<()>> {
    None
}
async fn direct_insert_audit(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _entries: &[AuditEntry],
) -> Option<Result<()>> {
    None
}
async fn direct_record_events(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _ids: &[(String, Timestamp)],
    _at: Timestamp,
) -> Option<Result<()>> {
    None
}
async fn direct_claim(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _now: Timestamp,
    _limit: i64,
    _owner: &str,
    _lease_until: Timestamp,
    _batch: i64,
) -> Option<Result<Vec<ResourceRow>>> {
    None
}
async fn direct_finish_purged(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _ids: &[String],
    _cause: Cause,
    _owner: &str,
    _at: Timestamp,
) -> Option<Result<Vec<String>>> {
    None
}

impl Tx {
    /// See [`LedgerTx::append_audit`](super::LedgerTx::append_audit): kept for the commit, so
    /// the chain's lock is held for the commit only.
    pub async fn append_audit(&mut self, drafts: &[AuditDraft]) -> Result<()> {
        self.deferred_audit.extend_from_slice(drafts);
        Ok(())
    }

    /// See [`LedgerTx::write_ingest`](super::LedgerTx::write_ingest). The first statement is
    /// sent before `work` runs, so the server executes it meanwhile; the rest follow after. The
    /// audit drafts wait for the commit, so the chain's lock is held for the commit only, not
    /// for the whole ingest.
    pub async fn write_ingest<R>(&mut self, w: IngestWrite, work: impl FnOnce() -> R) -> Result<R> {
        let IngestWrite {
            orgs,
            accounts,
            resources,
            event_ids,
            applied_at,
            audit,
        } = w;
        let write = async {
            self.save_orgs(&orgs).await?;
            self.save_accounts(&accounts).await?;
            self.save_resources(&resources).await?;
            self.record_events(&event_ids, applied_at).await
        };
        let (written, r) = tokio::join!(write, async { work() });
        written?;
        self.deferred_audit.extend(audit);
        Ok(r)
    }
}

impl Store {
    pub async fn open(url: &SecretUrl, opts: &OpenOptions) -> Result<Store> {
        let open_err = |message: String| StoreError::Open {
            url: url.redacted(),
            message,
        };
        let options =
            PgConnectOptions::from_str(url.expose()).map_err(|e| open_err(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Store {
            pool,
            _checkpointer: None,
            gate: None,
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn db_now(&self) -> Result<Option<Timestamp>> {
        let ms: i64 =
            sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT")
                .fetch_one(&self.pool)
                .await?;
        Ok(Some(Timestamp::from_millis(ms)))
    }
}
