//! The PostgreSQL backend: several daemon instances on one database share the work. Claims use
//! `FOR UPDATE SKIP LOCKED` plus a lease; row locks keep ingest and claims from overwriting each
//! other; audit appends serialise on a transaction-level advisory lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::OpenOptions;
use crate::config::SecretUrl;

type Db = sqlx::Postgres;
/// This backend's [`Dialect`](super::dialect::Dialect).
type D = PgDialect;

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

include!("ops.rs");

/// PostgreSQL's ways (see [`Dialect`](super::dialect::Dialect)): row locks and transaction-level
/// advisory locks instead of one writer at a time; bulk writes as one statement whatever their
/// size, their rows bound as one array per column and `unnest`ed. The text is the same for every
/// size, so the server parses and plans it once per connection, and a bind carries a few arrays
/// instead of thousands of parameters (a multi-row VALUES of 1,000 audit entries spent more time
/// in parse and bind than in execution).
pub(super) struct PgDialect;

impl super::dialect::Dialect for PgDialect {
    type Db = Db;
    type Ids = Vec<String>;
    const BEGIN: &'static str = "BEGIN";

    fn ids_arg(ids: &[String]) -> Vec<String> {
        ids.to_vec()
    }

    /// One writer at a time extends the chain; the lock is per schema so separate ledgers in one
    /// database (tests) do not contend, and it is released at commit or rollback.
    async fn lock_audit(tx: &mut sqlx::Transaction<'static, Db>) -> Result<()> {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.retentiond.audit'))",
        )
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

    /// The claim in two statements (stale claims, then due work), each updating its rows and
    /// returning them, with their accounts' orgs, as one JSON value: no second read of the rows
    /// just claimed. Each also returns how many it updated, so a claimed resource whose account is
    /// missing is an error, as in the shared claim.
    async fn claim(
        tx: &mut sqlx::Transaction<'static, Db>,
        now: Timestamp,
        limit: i64,
        owner: &str,
        lease_until: Timestamp,
        batch: i64,
    ) -> Result<Vec<ResourceRow>> {
        macro_rules! returning_rows {
            ($update:expr) => {
                concat!(
                    "WITH c AS (",
                    $update,
                    ") SELECT (SELECT COUNT(*) FROM c), ",
                    json_rows!(resource_names!()),
                    " FROM (SELECT ",
                    resource_columns!(),
                    " FROM c AS r JOIN accounts a ON a.id = r.account ORDER BY r.id) x"
                )
            };
        }
        const STALE: &str = returning_rows!(claim_stale_sql!("*"));
        const DUE: &str = returning_rows!(claim_due_sql!("*"));
        let claim = async {
            let mut raw: Vec<RawResource> = Vec::new();
            for sql in [STALE, DUE] {
                let left = limit - raw.len() as i64;
                if left <= 0 {
                    break;
                }
                let (updated, json): (i64, String) = sqlx::query_as(sql)
                    .bind(owner)
                    .bind(lease_until.millis())
                    .bind(now.millis())
                    .bind(left)
                    .bind(batch)
                    .fetch_one(&mut **tx)
                    .await?;
                let found: Vec<RawResource> = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("claimed rows as JSON: {e}")))?;
                if (found.len() as i64) < updated {
                    return Err(StoreError::Corrupt(format!(
                        "{} claimed resource(s): their account is not in the ledger",
                        updated - found.len() as i64
                    )));
                }
                raw.extend(found);
            }
            raw.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            rows(raw)
        };
        claim.await
    }

    async fn save_resources(
        tx: &mut sqlx::Transaction<'static, Db>,
        rows: &[ResourceRow],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let col =
            |f: &dyn Fn(&ResourceRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        let num = |f: &dyn Fn(&ResourceRow) -> Option<i64>| rows.iter().map(f).collect::<Vec<_>>();
        let q = sqlx::query(concat!(
            resource_upsert_columns!(),
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], \
             $7::bigint[], $8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::text[], $13::bigint[], \
             $14::bigint[], $15::text[], $16::bigint[], $17::text[])",
            resource_upsert_conflict!()
        ))
        .bind(col(&|r| Some(r.id.clone())))
        .bind(col(&|r| Some(r.kind.clone())))
        .bind(col(&|r| Some(r.account.clone())))
        .bind(num(&|r| Some(r.created_at.millis())))
        .bind(col(&|r| r.endpoint.clone()))
        .bind(col(&|r| Some(r.state.as_str().to_string())))
        .bind(num(&|r| r.deleted_at.map(|t| t.millis())))
        .bind(col(&|r| r.cause.map(|c| c.as_str().to_string())))
        .bind(num(&|r| r.purge_after.map(|t| t.millis())))
        .bind(col(&|r| r.rule.map(|c| c.as_str().to_string())))
        .bind(num(&|r| Some(r.held as i64)))
        .bind(col(&|r| r.lease_owner.clone()))
        .bind(num(&|r| r.lease_until.map(|t| t.millis())))
        .bind(num(&|r| Some(r.attempts)))
        .bind(col(&|r| r.last_error.clone()))
        .bind(num(&|r| r.purged_at.map(|t| t.millis())))
        .bind(col(&|r| r.target_attrs.clone()));
        q.execute(&mut **tx).await.map(|_| ()).map_err(Into::into)
    }

    async fn insert_audit(
        tx: &mut sqlx::Transaction<'static, Db>,
        entries: &[AuditEntry],
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let text = |f: &dyn Fn(&AuditEntry) -> &str| entries.iter().map(f).collect::<Vec<&str>>();
        let q = sqlx::query(
            "INSERT INTO audit (seq, at, action, subject, details, prev_hash, hash) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])",
        )
        .bind(entries.iter().map(|e| e.seq).collect::<Vec<i64>>())
        .bind(entries.iter().map(|e| e.at.millis()).collect::<Vec<i64>>())
        .bind(text(&|e| &e.action))
        .bind(text(&|e| &e.subject))
        .bind(text(&|e| &e.details))
        .bind(text(&|e| &e.prev_hash))
        .bind(text(&|e| &e.hash));
        q.execute(&mut **tx).await.map(|_| ()).map_err(Into::into)
    }

    async fn record_events(
        tx: &mut sqlx::Transaction<'static, Db>,
        ids: &[(String, Timestamp)],
        at: Timestamp,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let q = sqlx::query(
            "INSERT INTO applied_events (event_id, applied_at, event_at) \
             SELECT e, $2, a FROM unnest($1::text[], $3::bigint[]) AS x(e, a) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(ids.iter().map(|(id, _)| id.as_str()).collect::<Vec<&str>>())
        .bind(at.millis())
        .bind(ids.iter().map(|(_, t)| t.millis()).collect::<Vec<i64>>());
        q.execute(&mut **tx).await.map(|_| ()).map_err(Into::into)
    }

    /// One `UPDATE … RETURNING id` over the batch.
    async fn finish_purged(
        tx: &mut sqlx::Transaction<'static, Db>,
        ids: &[String],
        cause: Cause,
        owner: &str,
        at: Timestamp,
    ) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(concat!(finish_purged_sql!(in_ids!(1)), " RETURNING id"))
                .bind(Self::ids_arg(ids))
                .bind(cause.as_str())
                .bind(at.millis())
                .bind(owner)
                .fetch_all(&mut **tx)
                .await?,
        )
    }
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
