// The ledger's SQL, written once and compiled per backend: `sqlite.rs` and `postgres.rs`
// `include!` this file after defining `Db`, `D` (their [`Dialect`](super::dialect::Dialect):
// what each backend does its own way) and the statement fragments `in_ids!`, `json_rows!`,
// `for_update!`, `for_update_of_r!`, `for_share!`, `skip_locked!` (see `dialect.rs`).

use std::collections::HashSet;

use sqlx::{Database, QueryBuilder, Row};

use crate::audit::{self, AuditDraft, AuditEntry};
use crate::holds::{ActiveHold, HoldScope};
use crate::model::{Cause, Timestamp};
use super::dialect::Dialect;
use super::{
    ClaimedBatch, InFlight, InFlightOutcome, IngestWrite, Interruption, SettledClaim, parse, ts,
    AccountRow, AuditHead, HoldRow, MAX_BINDS, NewHold, OrgRow, PolicyState, PurgeFailure, RawAccount, RawAudit,
    RawHold, RawOrg, RawResource, ReleaseApproval, RawSweep, ResourceRow, Result, StateCount, StoreError, SweepRun, ForecastRow,
    DeliveryOutcome, NewNotification, NotificationCount, NotificationRow, RawNotification,
    FinishedWindowPass, RawWindowPass, WindowClaim, WindowPassRow, OrgWindowRow, RawOrgWindow,
    CompactedAccount, Tombstone, TombstoneCount,
};

type Conn = <Db as Database>::Connection;

/// The ledger on this backend.
#[derive(Debug, Clone)]
pub struct Store {
    pool: sqlx::Pool<Db>,
    /// SQLite: stops the background WAL checkpointer when the last clone drops.
    _checkpointer: Option<std::sync::Arc<tokio_util::sync::DropGuard>>,
    /// SQLite: the hold gate (see `gate`); PostgreSQL locks the `hold_epoch` row instead.
    gate: Option<std::sync::Arc<super::gate::HoldGate>>,
}

/// A write transaction on this backend.
#[derive(Debug)]
pub struct Tx {
    tx: sqlx::Transaction<'static, Db>,
    /// Audit drafts of ingest chunks this backend appends at commit, before the commit's own.
    deferred_audit: Vec<AuditDraft>,
    /// SQLite: the hold gate, held until this transaction ends (hold changes, purges).
    _gate: Option<super::gate::HoldGateGuard>,
}

fn rows<R, T>(raw: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    raw.into_iter().map(T::try_from).collect()
}

// ----- queries shared by pool reads and transactions -------------------------------------

/// Runs `sql`, a query of `ids` that returns its rows as one JSON array of arrays
/// (`json_rows!`), and decodes them in id order.
async fn q_json_rows<R: serde::de::DeserializeOwned>(
    c: &mut Conn,
    sql: &'static str,
    ids: &[String],
    what: &str,
    id: fn(&R) -> &String,
) -> Result<Vec<R>> {
    let json: String = sqlx::query_scalar(sql).bind(D::ids_arg(ids)).fetch_one(&mut *c).await?;
    let mut raw: Vec<R> = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("{what} rows as JSON: {e}")))?;
    raw.sort_unstable_by(|a, b| id(a).cmp(id(b)));
    Ok(raw)
}

// On SQLite the dialect macros expand to nothing, so both arms are equal there.
#[allow(clippy::if_same_then_else)]
async fn q_resources(c: &mut Conn, ids: &[String], lock: bool) -> Result<Vec<ResourceRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One row holding every resource as JSON: a batch's worth of rows one by one cost more
    // than the claim that found them. (Locked in id order on PostgreSQL, so two lockers cannot
    // deadlock; returned in id order on both.)
    let sql = if lock {
        concat!(
            "SELECT ", json_rows!(resource_names!()), " FROM (SELECT ", resource_columns!(),
            " FROM resources r JOIN accounts a ON a.id = r.account WHERE r.id ", in_ids!(1), " ORDER BY r.id", for_update_of_r!(), ") x"
        )
    } else {
        concat!(
            "SELECT ", json_rows!(resource_names!()), " FROM (SELECT ", resource_columns!(),
            " FROM resources r JOIN accounts a ON a.id = r.account WHERE r.id ", in_ids!(1), " ORDER BY r.id) x"
        )
    };
    let raw: Vec<RawResource> = q_json_rows(c, sql, ids, "resource", |r: &RawResource| &r.id).await?;
    rows(raw)
}

// On SQLite the dialect macros expand to nothing, so both arms are equal there.
#[allow(clippy::if_same_then_else)]
async fn q_accounts(c: &mut Conn, ids: &[String], lock: bool) -> Result<Vec<AccountRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One JSON value, as for resources: an ingest chunk names thousands of accounts, and
    // fetched row by row they cost more than the resources they own.
    let sql = if lock {
        concat!(
            "SELECT ", json_rows!(account_columns!()), " FROM (SELECT ", account_columns!(),
            " FROM accounts WHERE id ", in_ids!(1), " ORDER BY id", for_update!(), ") x"
        )
    } else {
        concat!(
            "SELECT ", json_rows!(account_columns!()), " FROM (SELECT ", account_columns!(),
            " FROM accounts WHERE id ", in_ids!(1), " ORDER BY id) x"
        )
    };
    let raw: Vec<RawAccount> = q_json_rows(c, sql, ids, "account", |a: &RawAccount| &a.id).await?;
    rows(raw)
}

// On SQLite the dialect macros expand to nothing, so both arms are equal there.
#[allow(clippy::if_same_then_else)]
async fn q_orgs(c: &mut Conn, ids: &[String], lock: bool) -> Result<Vec<OrgRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = if lock {
        concat!("SELECT ", org_columns!(), " FROM orgs WHERE id ", in_ids!(1), " ORDER BY id", for_update!())
    } else {
        concat!("SELECT ", org_columns!(), " FROM orgs WHERE id ", in_ids!(1), " ORDER BY id")
    };
    let raw: Vec<RawOrg> = sqlx::query_as(sql).bind(D::ids_arg(ids)).fetch_all(&mut *c).await?;
    rows(raw)
}

// On SQLite the dialect macros expand to nothing, so both arms are equal there.
#[allow(clippy::if_same_then_else)]
async fn q_policy_state(c: &mut Conn, lock: bool) -> Result<Option<PolicyState>> {
    let sql = if lock {
        concat!("SELECT in_force, pending, updated_at, pending_newly_due FROM policy_state WHERE id = 1", for_update!())
    } else {
        "SELECT in_force, pending, updated_at, pending_newly_due FROM policy_state WHERE id = 1"
    };
    let row = sqlx::query(sql).fetch_optional(&mut *c).await?;
    Ok(row.map(|r| PolicyState {
        in_force: r.get(0),
        pending: r.get(1),
        updated_at: Timestamp::from_millis(r.get(2)),
        pending_newly_due: r.get(3),
    }))
}

async fn q_holds(c: &mut Conn, active_only: bool) -> Result<Vec<HoldRow>> {
    let sql = if active_only {
        concat!("SELECT ", hold_columns!(), " FROM holds WHERE released_at IS NULL ORDER BY id")
    } else {
        concat!("SELECT ", hold_columns!(), " FROM holds ORDER BY id")
    };
    let raw: Vec<RawHold> = sqlx::query_as(sql).fetch_all(&mut *c).await?;
    Ok(raw.into_iter().map(HoldRow::from).collect())
}

async fn q_hold(c: &mut Conn, id: i64) -> Result<Option<HoldRow>> {
    let raw: Option<RawHold> = sqlx::query_as(concat!("SELECT ", hold_columns!(), " FROM holds WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    Ok(raw.map(HoldRow::from))
}

async fn q_active_holds(c: &mut Conn) -> Result<Vec<ActiveHold>> {
    Ok(q_holds(c, true).await?.into_iter().map(ActiveHold::from).collect())
}

async fn q_count_matching(c: &mut Conn, scope: &HoldScope) -> Result<Vec<StateCount>> {
    let mut q = QueryBuilder::<Db>::new(
        "SELECT r.state, r.kind, COUNT(*) FROM resources r JOIN accounts a ON a.id = r.account WHERE 1 = 1",
    );
    push_scope(&mut q, scope);
    q.push(" GROUP BY r.state, r.kind ORDER BY r.state, r.kind");
    let rows = q.build().fetch_all(&mut *c).await?;
    Ok(state_counts(rows))
}

/// Rows of (state, kind, count).
fn state_counts(rows: Vec<<Db as Database>::Row>) -> Vec<StateCount> {
    rows.into_iter()
        .map(|r| StateCount {
            state: r.get(0),
            kind: r.get(1),
            count: r.get(2),
        })
        .collect()
}

/// Resources in scope whose purge may have started and was never recorded (`touched_predicate!`).
async fn q_in_flight(c: &mut Conn, scope: &HoldScope) -> Result<Vec<String>> {
    let mut q = QueryBuilder::<Db>::new(concat!(
        "SELECT r.id FROM resources r JOIN accounts a ON a.id = r.account WHERE ",
        touched_predicate!()
    ));
    push_scope(&mut q, scope);
    q.push(" ORDER BY r.id");
    Ok(q.build().fetch_all(&mut *c).await?.into_iter().map(|r| r.get(0)).collect())
}

fn push_scope(q: &mut QueryBuilder<Db>, scope: &HoldScope) {
    if let Some(v) = &scope.org {
        q.push(" AND a.org = ").push_bind(v.clone());
    }
    if let Some(v) = &scope.account {
        q.push(" AND r.account = ").push_bind(v.clone());
    }
    if let Some(v) = &scope.resource {
        q.push(" AND r.id = ").push_bind(v.clone());
    }
    if let Some(v) = &scope.kind {
        q.push(" AND r.kind = ").push_bind(v.clone());
    }
    if let Some(v) = scope.created_from {
        q.push(" AND r.created_at >= ").push_bind(v.millis());
    }
    if let Some(v) = scope.created_to {
        q.push(" AND r.created_at <= ").push_bind(v.millis());
    }
}

async fn q_audit_head(c: &mut Conn) -> Result<Option<AuditHead>> {
    let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *c)
        .await?;
    Ok(row.map(|r| AuditHead {
        seq: r.get(0),
        hash: r.get(1),
    }))
}

/// Where the next audit entry chains from: the last entry's seq and hash, or the genesis.
async fn q_chain_head(c: &mut Conn) -> Result<(i64, String)> {
    Ok(match q_audit_head(c).await? {
        Some(h) => (h.seq, h.hash),
        None => (0, audit::GENESIS.to_string()),
    })
}

async fn q_hold_epoch(c: &mut Conn) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT epoch FROM hold_epoch WHERE id = 1")
        .fetch_one(&mut *c)
        .await?)
}

/// The claim's first statement: stale claims, i.e. leases that ran out (a crashed or slow
/// instance) and failed purges whose retry time has come. One whose batch never started (no
/// target touched it) joins batch `$5` like fresh work; one that a target may have touched
/// keeps no batch (`claim_batch` NULL: `in_flight` to a hold, and found out before it is given
/// back, see `sweep`). Binds `$1` owner, `$2` lease end, `$3` now, `$4` limit, `$5` batch.
macro_rules! claim_stale_sql {
    ($returning:expr) => {
        concat!(
            "UPDATE resources SET lease_owner = $1, lease_until = $2, claim_batch = CASE WHEN EXISTS (",
            "SELECT 1 FROM claimed_batches b WHERE b.id = resources.claim_batch AND b.started_at IS NULL) ",
            "THEN $5 ELSE NULL END WHERE id IN (",
            "SELECT id FROM resources WHERE state = 'purging' AND lease_until <= $3 ORDER BY lease_until LIMIT $4",
            skip_locked!(),
            ") RETURNING ", $returning
        )
    };
}
/// The claim's second statement: due work, oldest due first, into batch `$5`.
macro_rules! claim_due_sql {
    ($returning:expr) => {
        concat!(
            "UPDATE resources SET state = 'purging', lease_owner = $1, lease_until = $2, claim_batch = $5 WHERE id IN (",
            "SELECT r.id FROM resources r WHERE ",
            due_predicate!(),
            " AND r.purge_after <= $3 ORDER BY r.purge_after LIMIT $4",
            skip_locked!(),
            ") RETURNING ", $returning
        )
    };
}

/// Records resources `id <$which>` purged (`$1` the id or ids, `$2` cause, `$3` purged at), only
/// while `$4`'s claim holds.
macro_rules! finish_purged_sql {
    ($which:expr) => {
        concat!(
            "UPDATE resources SET state = 'purged', cause = $2, purged_at = $3, lease_owner = NULL, lease_until = NULL, ",
            "last_error = NULL WHERE id ", $which, " AND state = 'purging' AND lease_owner = $4"
        )
    };
}

/// Claims up to `limit` resources for `owner` (stale claims first, then due work) and returns
/// their rows in id order.
async fn q_claim(
    tx: &mut sqlx::Transaction<'static, Db>,
    now: Timestamp,
    limit: i64,
    owner: &str,
    lease_until: Timestamp,
    batch: i64,
) -> Result<Vec<ResourceRow>> {
    D::claim(tx, now, limit, owner, lease_until, batch).await
}

/// Claims up to `limit` resources as a new batch whose purge has not started (its row in
/// `claimed_batches`, committed with the claim: until the sweep starts it, a hold does not count
/// its resources `in_flight`).
async fn q_claim_batch(
    tx: &mut sqlx::Transaction<'static, Db>,
    now: Timestamp,
    limit: i64,
    owner: &str,
    lease_until: Timestamp,
) -> Result<ClaimedBatch> {
    let id = rand::random_range(1..i64::MAX);
    let resources = q_claim(tx, now, limit, owner, lease_until, id).await?;
    if resources.is_empty() {
        return Ok(ClaimedBatch::default());
    }
    sqlx::query("INSERT INTO claimed_batches (id, owner, claimed_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(owner)
        .bind(now.millis())
        .execute(&mut **tx)
        .await?;
    Ok(ClaimedBatch {
        resources,
        batch: Some(id),
    })
}

// ----- the pool: reads and short transactions ------------------------------------------

impl Store {
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Db>> {
        Ok(self.pool.acquire().await?)
    }

    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            tx: self.pool.begin_with(D::BEGIN).await?,
            deferred_audit: Vec::new(),
            _gate: None,
        })
    }

    /// Enters the hold gate (SQLite; see `gate`), shared.
    pub async fn enter_gate(&self) -> Result<super::gate::HoldGateGuard> {
        match &self.gate {
            Some(g) => g.enter(false).await,
            None => Err(StoreError::Corrupt("this ledger has no hold gate".into())),
        }
    }

    /// A write transaction that keeps `guard` (the hold gate) until it ends.
    pub async fn begin_behind_gate(&self, guard: super::gate::HoldGateGuard) -> Result<Tx> {
        let mut t = self.begin().await?;
        t._gate = Some(guard);
        Ok(t)
    }

    pub async fn begin_purge(&self) -> Result<Tx> {
        let mut t = self.begin().await?;
        sqlx::query(concat!("SELECT epoch FROM hold_epoch WHERE id = 1", for_share!()))
            .execute(&mut *t.tx)
            .await?;
        Ok(t)
    }

    pub async fn begin_hold_change(&self) -> Result<Tx> {
        let guard = match &self.gate {
            Some(g) => Some(g.enter(true).await?),
            None => None,
        };
        let mut t = self.begin().await?;
        t._gate = guard;
        sqlx::query(concat!("SELECT epoch FROM hold_epoch WHERE id = 1", for_update!()))
            .execute(&mut *t.tx)
            .await?;
        Ok(t)
    }

    pub async fn resource(&self, id: &str) -> Result<Option<ResourceRow>> {
        Ok(q_resources(&mut *self.conn().await?, &[id.to_string()], false).await?.pop())
    }

    pub async fn account(&self, id: &str) -> Result<Option<AccountRow>> {
        Ok(q_accounts(&mut *self.conn().await?, &[id.to_string()], false).await?.pop())
    }

    pub async fn org(&self, id: &str) -> Result<Option<OrgRow>> {
        Ok(q_orgs(&mut *self.conn().await?, &[id.to_string()], false).await?.pop())
    }

    pub async fn orgs(&self) -> Result<Vec<OrgRow>> {
        let raw: Vec<RawOrg> = sqlx::query_as(concat!("SELECT ", org_columns!(), " FROM orgs ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows(raw)
    }

    /// Orgs with ZDR approved or training opted out, by id (the `orgs_data_controls` index).
    pub async fn data_control_orgs(&self) -> Result<Vec<OrgRow>> {
        let raw: Vec<RawOrg> = sqlx::query_as(concat!(
            "SELECT ", org_columns!(), " FROM orgs WHERE zdr = 'approved' OR training_opt_out = TRUE ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }

    pub async fn state_counts(&self) -> Result<Vec<StateCount>> {
        let rows = sqlx::query("SELECT state, kind, COUNT(*) FROM resources GROUP BY state, kind ORDER BY state, kind")
            .fetch_all(&self.pool)
            .await?;
        Ok(state_counts(rows))
    }

    pub async fn account_state_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM accounts GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn account_resources_all(&self, account: &str) -> Result<Vec<ResourceRow>> {
        let raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account WHERE r.account = $1 ORDER BY r.id"
        ))
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }

    pub async fn peek_due(&self, now: Timestamp, limit: i64) -> Result<Vec<ResourceRow>> {
        let mut raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account ",
            "WHERE r.state = 'purging' AND r.lease_until <= $1 ORDER BY r.lease_until LIMIT $2"
        ))
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let due: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account WHERE ",
            due_predicate!(), " AND r.purge_after <= $1 ORDER BY r.purge_after LIMIT $2"
        ))
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        raw.extend(due);
        rows(raw)
    }

    pub async fn backlog(&self, now: Timestamp) -> Result<i64> {
        Ok(sqlx::query_scalar(concat!("SELECT COUNT(*) FROM resources r WHERE ", due_predicate!(), " AND r.purge_after <= $1"))
            .bind(now.millis())
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn held_back(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM resources WHERE held = 1")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn next_due(&self, now: Timestamp) -> Result<Option<Timestamp>> {
        let v: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT MIN(r.purge_after) FROM resources r WHERE ", due_predicate!(), " AND r.purge_after > $1"
        ))
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(Timestamp::from_millis))
    }

    /// The earliest `purge_after` among resources due now and not held (the oldest overdue).
    pub async fn oldest_due(&self, now: Timestamp) -> Result<Option<Timestamp>> {
        let v: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT MIN(r.purge_after) FROM resources r WHERE ", due_predicate!(), " AND r.purge_after <= $1"
        ))
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(Timestamp::from_millis))
    }

    /// A round trip to the ledger database (readiness).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn forecast(&self, until: Timestamp) -> Result<Vec<ForecastRow>> {
        let rows = sqlx::query(concat!(
            "SELECT r.purge_after / 86400000 AS day, r.kind, r.held, COUNT(*) FROM resources r ",
            "WHERE r.state IN ('live', 'deleted') AND r.purge_after IS NOT NULL AND r.purge_after <= $1 ",
            "GROUP BY day, r.kind, r.held ORDER BY day, r.kind"
        ))
        .bind(until.millis())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ForecastRow {
                day: r.get(0),
                kind: r.get(1),
                held: r.get::<i64, _>(2) != 0,
                count: r.get(3),
            })
            .collect())
    }

    pub async fn scheduled_page(&self, until: Timestamp, after: &str, limit: i64) -> Result<Vec<ResourceRow>> {
        let raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account ",
            "WHERE r.id > $1 AND r.state IN ('live', 'deleted') AND r.purge_after IS NOT NULL AND r.purge_after <= $2 ",
            "ORDER BY r.id LIMIT $3"
        ))
        .bind(after)
        .bind(until.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }

    pub async fn failed_resources(&self, limit: i64) -> Result<Vec<ResourceRow>> {
        let raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account WHERE r.state = 'failed' ORDER BY r.id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }

    pub async fn zdr_waiting(&self, org: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM resources r JOIN accounts a ON a.id = r.account \
             WHERE a.org = $1 AND r.rule = 'R6' AND r.state IN ('live', 'deleted', 'purging')",
        )
        .bind(org)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn holds(&self, active_only: bool) -> Result<Vec<HoldRow>> {
        q_holds(&mut *self.conn().await?, active_only).await
    }

    pub async fn hold(&self, id: i64) -> Result<Option<HoldRow>> {
        q_hold(&mut *self.conn().await?, id).await
    }

    pub async fn active_holds(&self) -> Result<Vec<ActiveHold>> {
        q_active_holds(&mut *self.conn().await?).await
    }

    pub async fn count_matching(&self, scope: &HoldScope) -> Result<Vec<StateCount>> {
        q_count_matching(&mut *self.conn().await?, scope).await
    }

    pub async fn audit_head(&self) -> Result<Option<AuditHead>> {
        q_audit_head(&mut *self.conn().await?).await
    }

    pub async fn audit_range(&self, from_seq: i64, to_seq: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let raw: Vec<RawAudit> = sqlx::query_as(
            "SELECT seq, at, action, subject, details, prev_hash, hash FROM audit WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(from_seq)
        .bind(to_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(AuditEntry::from).collect())
    }

    pub async fn audit_for_subjects(&self, subjects: &[String], action: &str) -> Result<Vec<AuditEntry>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<RawAudit> = sqlx::query_as(concat!(
            "SELECT seq, at, action, subject, details, prev_hash, hash FROM audit WHERE action = $2 AND subject ",
            in_ids!(1),
            " ORDER BY seq"
        ))
        .bind(D::ids_arg(subjects))
        .bind(action)
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(AuditEntry::from).collect())
    }

    pub async fn audit_since_time(&self, since: Timestamp, action: &str, after_seq: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let raw: Vec<RawAudit> = sqlx::query_as(
            "SELECT seq, at, action, subject, details, prev_hash, hash FROM audit WHERE seq > $1 AND action = $2 AND at >= $3 ORDER BY seq LIMIT $4",
        )
        .bind(after_seq)
        .bind(action)
        .bind(since.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(AuditEntry::from).collect())
    }

    /// Signed checkpoints of the audit chain with seq > `after_seq`, in seq order.
    pub async fn audit_checkpoints(&self, after_seq: i64, limit: i64) -> Result<Vec<super::CheckpointRow>> {
        let raw: Vec<super::RawCheckpoint> = sqlx::query_as(
            "SELECT seq, hash, at, public_key, signature FROM audit_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(super::CheckpointRow::from).collect())
    }

    pub async fn last_checkpoint_at(&self) -> Result<Option<Timestamp>> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(at) FROM audit_checkpoints")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.map(Timestamp::from_millis))
    }

    pub async fn sweep_runs(&self) -> Result<Vec<SweepRun>> {
        let raw: Vec<RawSweep> = sqlx::query_as(
            "SELECT instance, started_at, finished_at, purged, failed, held, accounts_purged, error FROM sweep_runs ORDER BY started_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(SweepRun::from).collect())
    }

    pub async fn record_sweep(&self, run: &SweepRun) -> Result<()> {
        sqlx::query(
            "INSERT INTO sweep_runs (instance, started_at, finished_at, purged, failed, held, accounts_purged, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (instance) DO UPDATE SET started_at = excluded.started_at, \
             finished_at = excluded.finished_at, purged = excluded.purged, failed = excluded.failed, held = excluded.held, \
             accounts_purged = excluded.accounts_purged, error = excluded.error",
        )
        .bind(&run.instance)
        .bind(run.started_at.millis())
        .bind(run.finished_at.map(|t| t.millis()))
        .bind(run.purged)
        .bind(run.failed)
        .bind(run.held)
        .bind(run.accounts_purged)
        .bind(&run.error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn policy_state(&self) -> Result<Option<PolicyState>> {
        q_policy_state(&mut *self.conn().await?, false).await
    }

    pub async fn claim_window_pass(&self, kind: &str, target: &str, owner: &str, now: Timestamp, lease_until: Timestamp) -> Result<Option<WindowClaim>> {
        let mut t = self.begin().await?;
        sqlx::query("INSERT INTO window_passes (kind, target) VALUES ($1, $2) ON CONFLICT (kind, target) DO NOTHING")
            .bind(kind)
            .bind(target)
            .execute(&mut *t.tx)
            .await?;
        type PassRow = (Option<String>, Option<i64>, Option<i64>, i64, Option<i64>, Option<String>);
        let (holder, until, started, rows, last, dropping): PassRow = sqlx::query_as(concat!(
            "SELECT owner, lease_until, started_at, rows_so_far, last_started_at, dropping FROM window_passes WHERE kind = $1 AND target = $2",
            for_update!()
        ))
        .bind(kind)
        .bind(target)
        .fetch_one(&mut *t.tx)
        .await?;
        if holder.as_deref().is_some_and(|h| h != owner) && until.is_some_and(|u| u >= now.millis()) {
            t.rollback().await?;
            return Ok(None);
        }
        let resumed = match (&holder, started) {
            (Some(_), Some(s)) => Some((Timestamp::from_millis(s), rows)),
            _ => None,
        };
        sqlx::query(
            "UPDATE window_passes SET owner = $3, lease_until = $4, started_at = $5, rows_so_far = $6, resumed_from = $7, \
             resumed_rows = $8 WHERE kind = $1 AND target = $2",
        )
        .bind(kind)
        .bind(target)
        .bind(owner)
        .bind(lease_until.millis())
        .bind(now.millis())
        .bind(resumed.map_or(0, |r| r.1))
        .bind(resumed.map(|r| r.0.millis()))
        .bind(resumed.map(|r| r.1))
        .execute(&mut *t.tx)
        .await?;
        t.commit_with_audit(&[]).await?;
        Ok(Some(WindowClaim {
            resumed,
            last_started_at: last.map(Timestamp::from_millis),
            dropping,
        }))
    }

    pub async fn window_dropping(&self, kind: &str, target: &str, owner: &str, dropping: Option<&str>, lease_until: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE window_passes SET dropping = $4, lease_until = $5 WHERE kind = $1 AND target = $2 AND owner = $3")
            .bind(kind)
            .bind(target)
            .bind(owner)
            .bind(dropping)
            .bind(lease_until.millis())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn window_progress(&self, kind: &str, target: &str, owner: &str, rows: i64, lease_until: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE window_passes SET rows_so_far = rows_so_far + $4, lease_until = $5 WHERE kind = $1 AND target = $2 AND owner = $3",
        )
        .bind(kind)
        .bind(target)
        .bind(owner)
        .bind(rows)
        .bind(lease_until.millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn window_passes(&self) -> Result<Vec<WindowPassRow>> {
        let raw: Vec<RawWindowPass> = sqlx::query_as(
            "SELECT kind, target, owner, lease_until, started_at, rows_so_far, last_started_at, last_finished_at, last_rows, \
             last_held_back, last_error FROM window_passes ORDER BY kind, target",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(WindowPassRow::from).collect())
    }

    pub async fn org_window_rows(&self, org: Option<&str>) -> Result<Vec<OrgWindowRow>> {
        let raw: Vec<RawOrgWindow> = sqlx::query_as(
            "SELECT org, kind, max_age, set_at, set_by, pending, pending_max_age, pending_newly_due, pending_at, pending_by \
             FROM org_windows WHERE $1 IS NULL OR org = $1 ORDER BY org, kind",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(OrgWindowRow::from).collect())
    }

    pub async fn org_windows(&self, kind: &str) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("SELECT org, max_age FROM org_windows WHERE kind = $1 AND max_age IS NOT NULL ORDER BY org")
            .bind(kind)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn notify_cursor(&self, receiver: &str) -> Result<i64> {
        sqlx::query(
            // `WHERE true`: SQLite's parser needs a WHERE before an upsert clause of INSERT … SELECT.
            "INSERT INTO notify_cursors (receiver, seq) SELECT $1, COALESCE(MAX(seq), 0) FROM audit \
             WHERE true ON CONFLICT (receiver) DO NOTHING",
        )
        .bind(receiver)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar("SELECT seq FROM notify_cursors WHERE receiver = $1")
            .bind(receiver)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn notifiable_audit(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        // The predicate is the `audit_notifiable` index's, word for word, so both backends use it.
        let raw: Vec<RawAudit> = sqlx::query_as(
            "SELECT seq, at, action, subject, details, prev_hash, hash FROM audit WHERE seq > $1 AND action IN \
             ('account.purged', 'hold.placed', 'hold.released', 'zdr.approved', 'zdr.denied', 'zdr.requested', 'zdr.revoked') \
             ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(AuditEntry::from).collect())
    }

    pub async fn queue_notifications(&self, receiver: &str, from_seq: i64, to_seq: i64, rows: &[NewNotification]) -> Result<bool> {
        let mut t = self.begin().await?;
        let moved = sqlx::query("UPDATE notify_cursors SET seq = $3 WHERE receiver = $1 AND seq = $2")
            .bind(receiver)
            .bind(from_seq)
            .bind(to_seq)
            .execute(&mut *t.tx)
            .await?;
        if moved.rows_affected() != 1 {
            t.tx.rollback().await?;
            return Ok(false);
        }
        for chunk in rows.chunks(MAX_BINDS / 8) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO notifications (id, receiver, seq, event_type, body, created_at, expires_at, next_attempt_at) ",
            );
            q.push_values(chunk, |mut b, n| {
                b.push_bind(n.id.clone())
                    .push_bind(receiver.to_string())
                    .push_bind(n.seq)
                    .push_bind(n.event_type.clone())
                    .push_bind(n.body.clone())
                    .push_bind(n.created_at.millis())
                    .push_bind(n.expires_at.millis())
                    .push_bind(n.created_at.millis());
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut *t.tx).await?;
        }
        t.tx.commit().await?;
        Ok(true)
    }

    pub async fn claim_notifications(&self, receivers: &[String], now: Timestamp, lease_until: Timestamp, limit: i64) -> Result<Vec<NotificationRow>> {
        let raw: Vec<RawNotification> = sqlx::query_as(concat!(
            "UPDATE notifications SET next_attempt_at = $2 WHERE id IN (SELECT id FROM notifications ",
            "WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 AND receiver ", in_ids!(4),
            " ORDER BY next_attempt_at, seq LIMIT $3", skip_locked!(), ") RETURNING ", notification_columns!()
        ))
        .bind(now.millis())
        .bind(lease_until.millis())
        .bind(limit)
        .bind(D::ids_arg(receivers))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<NotificationRow> = rows(raw)?;
        out.sort_by_key(|n| n.seq);
        Ok(out)
    }

    pub async fn record_delivery(&self, id: &str, at: Timestamp, outcome: &DeliveryOutcome) -> Result<()> {
        let q = match outcome {
            DeliveryOutcome::Delivered => sqlx::query(
                "UPDATE notifications SET attempts = attempts + 1, delivered_at = $2, last_error = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(at.millis()),
            DeliveryOutcome::Failed { error, retry_at } => sqlx::query(
                "UPDATE notifications SET attempts = attempts + 1, last_error = $3, \
                 next_attempt_at = COALESCE($4, next_attempt_at), dead_at = CASE WHEN $4 IS NULL THEN $2 ELSE NULL END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(at.millis())
            .bind(error.clone())
            .bind(retry_at.map(|t| t.millis())),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    pub async fn notifications(&self, dead_only: bool, limit: i64) -> Result<Vec<NotificationRow>> {
        let raw: Vec<RawNotification> = if dead_only {
            sqlx::query_as(concat!(
                "SELECT ", notification_columns!(), " FROM notifications WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, seq DESC LIMIT $1"
            ))
        } else {
            sqlx::query_as(concat!(
                "SELECT ", notification_columns!(), " FROM notifications ORDER BY seq DESC, receiver LIMIT $1"
            ))
        }
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }

    pub async fn notification_counts(&self) -> Result<Vec<NotificationCount>> {
        let rows = sqlx::query(
            "SELECT receiver, \
             SUM(CASE WHEN delivered_at IS NULL AND dead_at IS NULL THEN 1 ELSE 0 END), \
             SUM(CASE WHEN dead_at IS NOT NULL THEN 1 ELSE 0 END) \
             FROM notifications WHERE delivered_at IS NULL GROUP BY receiver ORDER BY receiver",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(NotificationCount {
                    receiver: r.try_get(0)?,
                    pending: r.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
                    dead: r.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                })
            })
            .collect()
    }

    pub async fn requeue_notifications(&self, receiver: &str, ids: &[String], now: Timestamp, expires_at: Timestamp) -> Result<Vec<String>> {
        let q = if ids.is_empty() {
            sqlx::query_scalar(
                "UPDATE notifications SET dead_at = NULL, last_error = NULL, attempts = 0, next_attempt_at = $2, expires_at = $3 \
                 WHERE receiver = $1 AND dead_at IS NOT NULL RETURNING id",
            )
        } else {
            sqlx::query_scalar(concat!(
                "UPDATE notifications SET dead_at = NULL, last_error = NULL, attempts = 0, next_attempt_at = $2, expires_at = $3 ",
                "WHERE receiver = $1 AND dead_at IS NOT NULL AND id ", in_ids!(4), " RETURNING id"
            ))
        };
        let q = q.bind(receiver).bind(now.millis()).bind(expires_at.millis());
        let q = if ids.is_empty() { q } else { q.bind(D::ids_arg(ids)) };
        let mut out: Vec<String> = q.fetch_all(&self.pool).await?;
        out.sort();
        Ok(out)
    }

    pub async fn forget_events(&self, before: Timestamp, limit: i64) -> Result<u64> {
        // Through the event_at index, a bounded batch per call: the cost is what is forgotten.
        let done = sqlx::query(
            "DELETE FROM applied_events WHERE event_id IN \
             (SELECT event_id FROM applied_events WHERE event_at < $1 ORDER BY event_at LIMIT $2)",
        )
        .bind(before.millis())
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn claim_due(&self, now: Timestamp, limit: i64, owner: &str, lease_until: Timestamp) -> Result<ClaimedBatch> {
        let mut t = self.begin().await?;
        // A sweep starts here. Batch rows no claim refers to any more (their purges were
        // recorded or given back, or taken over into other batches) are forgotten; a row that
        // claims still refer to stays, since it tells whether their purge had started.
        sqlx::query(concat!(
            "DELETE FROM claimed_batches WHERE NOT EXISTS (SELECT 1 FROM resources r ",
            "WHERE r.state = 'purging' AND r.claim_batch = claimed_batches.id)"
        ))
        .execute(&mut *t.tx)
        .await?;
        let claimed = q_claim_batch(&mut t.tx, now, limit, owner, lease_until).await?;
        t.tx.commit().await?;
        Ok(claimed)
    }

    /// `Tx::claim_next_batch` in a transaction of its own, committed at once.
    pub async fn claim_next_batch(&self, now: Timestamp, limit: i64, owner: &str, lease_until: Timestamp) -> Result<ClaimedBatch> {
        let mut t = self.begin().await?;
        let claimed = t.claim_next_batch(now, limit, owner, lease_until).await?;
        t.tx.commit().await?;
        Ok(claimed)
    }

    /// Marks a claimed batch started, in a transaction of its own (see `Tx::start_batch`).
    pub async fn start_claimed_batch(&self, batch: i64, at: Timestamp) -> Result<()> {
        let mut t = self.begin().await?;
        t.start_batch(batch, at).await?;
        t.tx.commit().await?;
        Ok(())
    }

    pub async fn due_accounts(&self, now: Timestamp, after: (Timestamp, &str), limit: i64) -> Result<Vec<AccountRow>> {
        let raw: Vec<RawAccount> = sqlx::query_as(concat!(
            "SELECT ", account_columns!(), " FROM accounts WHERE state = 'deletion_requested' AND purge_after <= $1 ",
            "AND (purge_after > $2 OR (purge_after = $2 AND id > $3)) ORDER BY purge_after, id LIMIT $4"
        ))
        .bind(now.millis())
        .bind(after.0.millis())
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }

    /// Tombstones: resources purged at or after `since`, after the cursor (`purged_at`, `id`),
    /// in that order (`reapply`). Through the `resources_purged` index: the range starts at the
    /// later of `since` and the cursor, so a page reads what it returns, not the pages before.
    pub async fn purged_since(&self, since: Timestamp, after: (Timestamp, &str), limit: i64) -> Result<Vec<ResourceRow>> {
        let raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account ",
            "WHERE r.state = 'purged' AND r.purged_at >= $1 AND (r.purged_at > $2 OR (r.purged_at = $2 AND r.id > $3)) ",
            "ORDER BY r.purged_at, r.id LIMIT $4"
        ))
        .bind(since.max(after.0).millis())
        .bind(after.0.millis())
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }

    /// Accounts purged at or after `since`, after the cursor (`purged_at`, `id`), in that order
    /// (the `accounts_purged` index, as [`Store::purged_since`]).
    pub async fn purged_accounts_since(&self, since: Timestamp, after: (Timestamp, &str), limit: i64) -> Result<Vec<AccountRow>> {
        let raw: Vec<RawAccount> = sqlx::query_as(concat!(
            "SELECT ", account_columns!(), " FROM accounts WHERE state = 'purged' AND purged_at >= $1 ",
            "AND (purged_at > $2 OR (purged_at = $2 AND id > $3)) ORDER BY purged_at, id LIMIT $4"
        ))
        .bind(since.max(after.0).millis())
        .bind(after.0.millis())
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(raw)
    }
}

impl Store {
    pub async fn has_tombstones_before(&self, before: Timestamp) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT purged_at FROM resources WHERE state = 'purged' AND purged_at < $1 ORDER BY purged_at LIMIT 1",
        )
        .bind(before.millis())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// An account's compacted tombstones, per kind (`audit receipt`).
    pub async fn compacted_account(&self, account: &str) -> Result<Vec<CompactedAccount>> {
        let rows = sqlx::query(
            "SELECT kind, count, entries, first_seq, last_seq FROM compacted_accounts WHERE account = $1 ORDER BY kind",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| CompactedAccount { kind: r.get(0), count: r.get(1), entries: r.get(2), first_seq: r.get(3), last_seq: r.get(4) })
            .collect())
    }

    /// `tombstones.compacted` audit entries with `first <= seq <= last`, in seq order, at most
    /// `limit` (through the `audit_compactions` index).
    pub async fn compaction_entries(&self, first: i64, last: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let raw: Vec<RawAudit> = sqlx::query_as(
            "SELECT seq, at, action, subject, details, prev_hash, hash FROM audit \
             WHERE action = 'tombstones.compacted' AND seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(first)
        .bind(last)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(raw.into_iter().map(AuditEntry::from).collect())
    }

    /// The compacted tombstones' counts, by day, kind and cause.
    pub async fn compacted_since(&self, since: Timestamp) -> Result<(Option<Timestamp>, i64)> {
        let day = since.millis().div_euclid(86_400_000) * 86_400_000;
        let (last, total): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MAX(day), CAST(SUM(count) AS BIGINT) FROM tombstone_counts WHERE day >= $1",
        )
        .bind(day)
        .fetch_one(&self.pool)
        .await?;
        Ok((last.map(|d| Timestamp::from_millis(d + 86_400_000)), total.unwrap_or(0)))
    }

    pub async fn tombstone_counts(&self) -> Result<Vec<TombstoneCount>> {
        let rows = sqlx::query("SELECT day, kind, cause, count FROM tombstone_counts ORDER BY day, kind, cause")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TombstoneCount { day: Timestamp::from_millis(r.get(0)), kind: r.get(1), cause: r.get(2), count: r.get(3) })
            .collect())
    }
}

async fn q_release_approvals(c: &mut Conn, hold: i64) -> Result<Vec<ReleaseApproval>> {
    let rows = sqlx::query("SELECT asked_by, asked_at, via FROM hold_release_approvals WHERE hold = $1 ORDER BY asked_at, asked_by")
        .bind(hold)
        .fetch_all(&mut *c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ReleaseApproval { by: r.get(0), at: Timestamp::from_millis(r.get(1)), via: r.get(2) })
        .collect())
}

impl Store {
    pub async fn release_approvals(&self, hold: i64) -> Result<Vec<ReleaseApproval>> {
        q_release_approvals(&mut *self.conn().await?, hold).await
    }

    pub async fn hold_in_flight(&self, hold: i64) -> Result<Vec<InFlight>> {
        let rows = sqlx::query("SELECT resource, outcome, resolved_at FROM hold_in_flight WHERE hold = $1 ORDER BY resource")
            .bind(hold)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(InFlight {
                    resource: r.get(0),
                    outcome: r.get::<Option<String>, _>(1).as_deref().map(parse).transpose()?,
                    resolved_at: ts(r.get(2)),
                })
            })
            .collect()
    }

    pub async fn interruption(&self, resource: &str) -> Result<Option<Interruption>> {
        let row = sqlx::query("SELECT found_at, targets FROM purge_interruptions WHERE resource = $1")
            .bind(resource)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let targets: String = r.get(1);
            Ok(Interruption {
                found_at: Timestamp::from_millis(r.get(0)),
                targets: serde_json::from_str(&targets)
                    .map_err(|e| StoreError::Corrupt(format!("purge_interruptions.targets: {e}")))?,
            })
        })
        .transpose()
    }
}

// ----- write transactions ---------------------------------------------------------------

impl Tx {
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }

    pub async fn commit_with_audit(mut self, drafts: &[AuditDraft]) -> Result<Option<AuditHead>> {
        let mut head = None;
        let deferred = std::mem::take(&mut self.deferred_audit);
        let drafts = if deferred.is_empty() {
            std::borrow::Cow::Borrowed(drafts)
        } else {
            std::borrow::Cow::Owned([deferred.as_slice(), drafts].concat())
        };
        if !drafts.is_empty() {
            D::lock_audit(&mut self.tx).await?;
            let (seq, hash) = q_chain_head(&mut self.tx).await?;
            let entries = audit::chain::extend(seq, &hash, &drafts);
            D::insert_audit(&mut self.tx, &entries).await?;
            let last = entries.last().expect("drafts is not empty");
            head = Some(AuditHead {
                seq: last.seq,
                hash: last.hash.clone(),
            });
        }
        self.tx.commit().await?;
        Ok(head)
    }

    pub async fn org_window(&mut self, org: &str, kind: &str) -> Result<Option<OrgWindowRow>> {
        let raw: Option<RawOrgWindow> = sqlx::query_as(concat!(
            "SELECT org, kind, max_age, set_at, set_by, pending, pending_max_age, pending_newly_due, pending_at, pending_by \
             FROM org_windows WHERE org = $1 AND kind = $2",
            for_update!()
        ))
        .bind(org)
        .bind(kind)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(raw.map(OrgWindowRow::from))
    }

    /// Writes an org's window; a row with neither a window nor a pending change is removed.
    pub async fn save_org_window(&mut self, row: &OrgWindowRow) -> Result<()> {
        if row.max_age.is_none() && row.pending.is_none() {
            sqlx::query("DELETE FROM org_windows WHERE org = $1 AND kind = $2")
                .bind(&row.org)
                .bind(&row.kind)
                .execute(&mut *self.tx)
                .await?;
            return Ok(());
        }
        let p = row.pending.as_ref();
        sqlx::query(
            "INSERT INTO org_windows (org, kind, max_age, set_at, set_by, pending, pending_max_age, pending_newly_due, pending_at, pending_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (org, kind) DO UPDATE SET max_age = excluded.max_age, \
             set_at = excluded.set_at, set_by = excluded.set_by, pending = excluded.pending, pending_max_age = excluded.pending_max_age, \
             pending_newly_due = excluded.pending_newly_due, pending_at = excluded.pending_at, pending_by = excluded.pending_by",
        )
        .bind(&row.org)
        .bind(&row.kind)
        .bind(row.max_age.map(|s| s.millis()))
        .bind(row.set_at.millis())
        .bind(&row.set_by)
        .bind(i32::from(p.is_some()))
        .bind(p.and_then(|p| p.max_age).map(|s| s.millis()))
        .bind(p.map(|p| p.newly_due))
        .bind(p.map(|p| p.at.millis()))
        .bind(p.map(|p| p.by.clone()))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_window_dropping(&mut self, kind: &str, target: &str, owner: &str, dropping: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE window_passes SET dropping = $4 WHERE kind = $1 AND target = $2 AND owner = $3")
            .bind(kind)
            .bind(target)
            .bind(owner)
            .bind(dropping)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn finish_window_pass(&mut self, kind: &str, target: &str, owner: &str, now: Timestamp, held_back: i64, error: Option<&str>) -> Result<Option<FinishedWindowPass>> {
        // started_at, rows_so_far, resumed_from, resumed_rows
        type PassState = (Option<i64>, i64, Option<i64>, Option<i64>);
        let row: Option<PassState> = sqlx::query_as(concat!(
            "SELECT started_at, rows_so_far, resumed_from, resumed_rows FROM window_passes WHERE kind = $1 AND target = $2 AND owner = $3",
            for_update!()
        ))
        .bind(kind)
        .bind(target)
        .bind(owner)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some((started, rows, resumed_from, resumed_rows)) = row else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE window_passes SET owner = NULL, lease_until = NULL, last_started_at = started_at, last_finished_at = $4, \
             last_rows = rows_so_far, last_held_back = $5, last_error = $6, started_at = NULL, rows_so_far = 0, \
             resumed_from = NULL, resumed_rows = NULL WHERE kind = $1 AND target = $2 AND owner = $3",
        )
        .bind(kind)
        .bind(target)
        .bind(owner)
        .bind(now.millis())
        .bind(held_back)
        .bind(error)
        .execute(&mut *self.tx)
        .await?;
        Ok(Some(FinishedWindowPass {
            started_at: Timestamp::from_millis(started.unwrap_or(now.millis())),
            rows,
            resumed: resumed_from.map(|f| (Timestamp::from_millis(f), resumed_rows.unwrap_or(0))),
        }))
    }

    /// Removes up to `limit` tombstones purged before `before`, oldest first, and returns them.
    /// Found through the `resources_purged` index, so the cost is what is removed.
    pub async fn take_tombstones(&mut self, before: Timestamp, limit: i64) -> Result<Vec<Tombstone>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM resources WHERE state = 'purged' AND purged_at < $1 ORDER BY purged_at, id LIMIT $2",
        )
        .bind(before.millis())
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "DELETE FROM resources WHERE state = 'purged' AND id ", in_ids!(1),
            " RETURNING id, kind, account, cause, purged_at"
        ))
        .bind(D::ids_arg(&ids))
        .fetch_all(&mut *self.tx)
        .await?;
        let mut out: Vec<Tombstone> = rows
            .into_iter()
            .map(|r| Tombstone {
                id: r.get(0),
                kind: r.get(1),
                account: r.get(2),
                cause: r.get::<Option<String>, _>(3).unwrap_or_else(|| "unknown".into()),
                purged_at: Timestamp::from_millis(r.get::<Option<i64>, _>(4).unwrap_or(0)),
            })
            .collect();
        out.sort_by(|a, b| (a.purged_at, &a.id).cmp(&(b.purged_at, &b.id)));
        Ok(out)
    }

    /// Adds compacted tombstones to the per-day counts and to their accounts' counts, recorded
    /// by the audit entry at `seq` (`accounts`: (account, kind, count)).
    pub async fn add_tombstone_counts(&mut self, counts: &[TombstoneCount], accounts: &[(String, String, i64)], seq: i64) -> Result<()> {
        for chunk in counts.chunks(MAX_BINDS / 4) {
            let mut q = QueryBuilder::<Db>::new("INSERT INTO tombstone_counts (day, kind, cause, count) ");
            q.push_values(chunk, |mut b, c| {
                b.push_bind(c.day.millis()).push_bind(c.kind.clone()).push_bind(c.cause.clone()).push_bind(c.count);
            });
            q.push(" ON CONFLICT (day, kind, cause) DO UPDATE SET count = tombstone_counts.count + excluded.count");
            q.build().execute(&mut *self.tx).await?;
        }
        for chunk in accounts.chunks(MAX_BINDS / 5) {
            let mut q = QueryBuilder::<Db>::new("INSERT INTO compacted_accounts (account, kind, count, entries, first_seq, last_seq) ");
            q.push_values(chunk, |mut b, (account, kind, n)| {
                b.push_bind(account.clone()).push_bind(kind.clone()).push_bind(*n).push("1").push_bind(seq).push_bind(seq);
            });
            q.push(
                " ON CONFLICT (account, kind) DO UPDATE SET count = compacted_accounts.count + excluded.count, \
                 entries = compacted_accounts.entries + 1, last_seq = excluded.last_seq",
            );
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn lock_singleton(&mut self, name: &str) -> Result<()> {
        D::singleton_lock(&mut self.tx, name, true).await.map(|_| ())
    }

    pub async fn try_lock_singleton(&mut self, name: &str) -> Result<bool> {
        D::singleton_lock(&mut self.tx, name, false).await
    }

    /// Claims a batch whose purge has not started, under a savepoint: if it fails, this
    /// transaction is left as it was (and stays usable, so the purge it belongs to can still be
    /// recorded).
    pub async fn claim_next_batch(&mut self, now: Timestamp, limit: i64, owner: &str, lease_until: Timestamp) -> Result<ClaimedBatch> {
        sqlx::query("SAVEPOINT claim_next").execute(&mut *self.tx).await?;
        let claimed = q_claim_batch(&mut self.tx, now, limit, owner, lease_until).await;
        if claimed.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT claim_next").execute(&mut *self.tx).await?;
        }
        sqlx::query("RELEASE SAVEPOINT claim_next").execute(&mut *self.tx).await?;
        claimed
    }

    /// Marks a claimed batch started: from then on a hold counts its resources `in_flight`.
    /// The sweep commits it with the hold lock held, just before the batch's targets run.
    pub async fn start_batch(&mut self, batch: i64, at: Timestamp) -> Result<()> {
        sqlx::query("UPDATE claimed_batches SET started_at = $2 WHERE id = $1")
            .bind(batch)
            .bind(at.millis())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn end_claimed_batch(&mut self, batch: i64) -> Result<()> {
        sqlx::query("DELETE FROM claimed_batches WHERE id = $1")
            .bind(batch)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn load_resources(&mut self, ids: &[String]) -> Result<Vec<ResourceRow>> {
        q_resources(&mut self.tx, ids, true).await
    }

    pub async fn load_accounts(&mut self, ids: &[String]) -> Result<Vec<AccountRow>> {
        q_accounts(&mut self.tx, ids, true).await
    }

    pub async fn load_orgs(&mut self, ids: &[String]) -> Result<Vec<OrgRow>> {
        q_orgs(&mut self.tx, ids, true).await
    }

    pub async fn account_resources(&mut self, account: &str) -> Result<Vec<ResourceRow>> {
        let raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account ",
            "WHERE r.account = $1 AND r.state IN ('live', 'deleted') ORDER BY r.id", for_update_of_r!()
        ))
        .bind(account)
        .fetch_all(&mut *self.tx)
        .await?;
        rows(raw)
    }

    pub async fn org_resources(&mut self, org: &str, kinds: &[String]) -> Result<Vec<ResourceRow>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account ",
            "WHERE a.org = $2 AND r.kind ", in_ids!(1), " AND r.state IN ('live', 'deleted') ORDER BY r.id", for_update_of_r!()
        ))
        .bind(D::ids_arg(kinds))
        .bind(org)
        .fetch_all(&mut *self.tx)
        .await?;
        rows(raw)
    }

    pub async fn kind_resources_page(&mut self, kind: &str, after: &str, limit: i64) -> Result<Vec<ResourceRow>> {
        let raw: Vec<RawResource> = sqlx::query_as(concat!(
            "SELECT ", resource_columns!(), " FROM resources r JOIN accounts a ON a.id = r.account ",
            "WHERE r.kind = $1 AND r.id > $2 AND r.state IN ('live', 'deleted') ORDER BY r.id LIMIT $3", for_update_of_r!()
        ))
        .bind(kind)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        rows(raw)
    }

    pub async fn deletion_requested_accounts(&mut self) -> Result<Vec<AccountRow>> {
        let raw: Vec<RawAccount> = sqlx::query_as(concat!(
            "SELECT ", account_columns!(), " FROM accounts WHERE state = 'deletion_requested' ORDER BY id", for_update!()
        ))
        .fetch_all(&mut *self.tx)
        .await?;
        rows(raw)
    }

    pub async fn count_tombstones_before(&mut self, before: Timestamp) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM resources WHERE state = 'purged' AND purged_at < $1",
        )
        .bind(before.millis())
        .fetch_one(&mut *self.tx)
        .await?)
    }

    pub async fn tombstones_compacted(&mut self) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT count FROM tombstone_counts LIMIT 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(found.is_some())
    }

    pub async fn purge_receipt_subjects(&mut self, subjects: &[String]) -> Result<HashSet<String>> {
        if subjects.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> = sqlx::query_scalar(concat!(
            "SELECT subject FROM audit WHERE action = 'resource.purged' AND subject ", in_ids!(1)
        ))
        .bind(D::ids_arg(subjects))
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(found.into_iter().collect())
    }

    pub async fn seen_events(&mut self, ids: &[String]) -> Result<HashSet<String>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> = sqlx::query_scalar(concat!("SELECT event_id FROM applied_events WHERE event_id ", in_ids!(1)))
            .bind(D::ids_arg(ids))
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(found.into_iter().collect())
    }

    pub async fn save_resources(&mut self, rows: &[ResourceRow]) -> Result<()> {
        D::save_resources(&mut self.tx, rows).await
    }

    pub async fn save_accounts(&mut self, rows: &[AccountRow]) -> Result<()> {
        for chunk in rows.chunks(MAX_BINDS / 7) {
            let mut q = QueryBuilder::<Db>::new(account_upsert_columns!());
            q.push_values(chunk, |mut b, a| {
                b.push_bind(a.id.clone())
                    .push_bind(a.org.clone())
                    .push_bind(a.state.as_str())
                    .push_bind(a.created_at.millis())
                    .push_bind(a.deletion_requested_at.map(|t| t.millis()))
                    .push_bind(a.purge_after.map(|t| t.millis()))
                    .push_bind(a.purged_at.map(|t| t.millis()));
            });
            q.push(account_upsert_conflict!());
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn save_orgs(&mut self, rows: &[OrgRow]) -> Result<()> {
        for chunk in rows.chunks(MAX_BINDS / 9) {
            let mut q = QueryBuilder::<Db>::new(org_upsert_columns!());
            q.push_values(chunk, |mut b, o| {
                b.push_bind(o.id.clone())
                    .push_bind(o.plan.as_str())
                    .push_bind(o.zdr.as_str())
                    .push_bind(o.zdr_reason.clone())
                    .push_bind(o.zdr_by.clone())
                    .push_bind(o.zdr_at.map(|t| t.millis()))
                    .push_bind(o.created_at.millis())
                    .push_bind(o.updated_at.millis())
                    .push_bind(o.training_opt_out);
            });
            q.push(org_upsert_conflict!());
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn record_events(&mut self, ids: &[(String, Timestamp)], at: Timestamp) -> Result<()> {
        D::record_events(&mut self.tx, ids, at).await
    }

    pub async fn policy_state(&mut self) -> Result<Option<PolicyState>> {
        q_policy_state(&mut self.tx, true).await
    }

    pub async fn save_policy_state(&mut self, state: &PolicyState) -> Result<()> {
        sqlx::query(
            "INSERT INTO policy_state (id, in_force, pending, updated_at, pending_newly_due) VALUES (1, $1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET in_force = excluded.in_force, pending = excluded.pending, updated_at = excluded.updated_at, \
             pending_newly_due = excluded.pending_newly_due",
        )
        .bind(&state.in_force)
        .bind(&state.pending)
        .bind(state.updated_at.millis())
        .bind(&state.pending_newly_due)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn hold_epoch(&mut self) -> Result<i64> {
        q_hold_epoch(&mut self.tx).await
    }

    pub async fn active_holds(&mut self) -> Result<Vec<ActiveHold>> {
        q_active_holds(&mut self.tx).await
    }

    pub async fn hold(&mut self, id: i64) -> Result<Option<HoldRow>> {
        q_hold(&mut self.tx, id).await
    }

    pub async fn count_matching(&mut self, scope: &HoldScope) -> Result<Vec<StateCount>> {
        q_count_matching(&mut self.tx, scope).await
    }

    pub async fn count_compacted(&mut self, scope: &HoldScope) -> Result<Option<i64>> {
        // A named resource still has its row: not compacted. The counts keep no creation time.
        if scope.resource.is_some() {
            return Ok(Some(0));
        }
        if scope.created_from.is_some() || scope.created_to.is_some() {
            return Ok((!self.tombstones_compacted().await?).then_some(0));
        }
        // `compacted_accounts` as `r`: its `account` and `kind` are what `push_scope` matches.
        let mut q = QueryBuilder::<Db>::new(
            "SELECT CAST(COALESCE(SUM(r.count), 0) AS BIGINT) FROM compacted_accounts r JOIN accounts a ON a.id = r.account WHERE 1 = 1",
        );
        push_scope(&mut q, scope);
        Ok(Some(q.build().fetch_one(&mut *self.tx).await?.get(0)))
    }

    pub async fn in_flight(&mut self, scope: &HoldScope) -> Result<Vec<String>> {
        q_in_flight(&mut self.tx, scope).await
    }

    pub async fn record_in_flight(&mut self, hold: i64, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(MAX_BINDS / 2) {
            let mut q = QueryBuilder::<Db>::new("INSERT INTO hold_in_flight (hold, resource) ");
            q.push_values(chunk, |mut b, id| {
                b.push_bind(hold).push_bind(id.clone());
            });
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn resolve_in_flight(&mut self, outcomes: &[(String, InFlightOutcome)], at: Timestamp) -> Result<()> {
        for (id, outcome) in outcomes {
            sqlx::query("UPDATE hold_in_flight SET outcome = $1, resolved_at = $2 WHERE resource = $3 AND outcome IS NULL")
                .bind(outcome.as_str())
                .bind(at.millis())
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    pub async fn record_interruptions(&mut self, found: &[(String, String)], at: Timestamp) -> Result<()> {
        for (id, targets) in found {
            sqlx::query(
                "INSERT INTO purge_interruptions (resource, found_at, targets) VALUES ($1, $2, $3) \
                 ON CONFLICT (resource) DO UPDATE SET found_at = excluded.found_at, targets = excluded.targets",
            )
            .bind(id)
            .bind(at.millis())
            .bind(targets)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    pub async fn settle_claims(&mut self, settled: &[SettledClaim], owner: &str) -> Result<Vec<String>> {
        let mut done = Vec::with_capacity(settled.len());
        for c in settled {
            let id: Option<String> = sqlx::query_scalar(
                "UPDATE resources SET state = $1, held = $2, purge_after = $3, rule = $4, lease_owner = NULL, \
                 lease_until = NULL, claim_batch = NULL WHERE id = $5 AND state = 'purging' AND lease_owner = $6 RETURNING id",
            )
            .bind(c.state.as_str())
            .bind(c.held as i64)
            .bind(c.purge_after.map(|t| t.millis()))
            .bind(c.rule.map(|r| r.as_str()))
            .bind(&c.id)
            .bind(owner)
            .fetch_optional(&mut *self.tx)
            .await?;
            done.extend(id);
        }
        Ok(done)
    }

    pub async fn insert_hold(&mut self, h: &NewHold) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO holds (case_ref, reason, placed_by, placed_at, org, account, resource, kind, created_from, created_to, \
             placed_already_purged, placed_in_flight) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(&h.case)
        .bind(&h.reason)
        .bind(&h.placed_by)
        .bind(h.placed_at.millis())
        .bind(&h.scope.org)
        .bind(&h.scope.account)
        .bind(&h.scope.resource)
        .bind(&h.scope.kind)
        .bind(h.scope.created_from.map(|t| t.millis()))
        .bind(h.scope.created_to.map(|t| t.millis()))
        .bind(h.already_purged)
        .bind(h.in_flight)
        .fetch_one(&mut *self.tx)
        .await?;
        sqlx::query("UPDATE hold_epoch SET epoch = epoch + 1 WHERE id = 1")
            .execute(&mut *self.tx)
            .await?;
        Ok(id)
    }

    pub async fn tx_release_approvals(&mut self, hold: i64) -> Result<Vec<ReleaseApproval>> {
        q_release_approvals(&mut self.tx, hold).await
    }

    pub async fn add_release_approval(&mut self, hold: i64, by: &str, at: Timestamp, via: Option<&str>) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO hold_release_approvals (hold, asked_by, asked_at, via) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(hold)
        .bind(by)
        .bind(at.millis())
        .bind(via)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn release_hold(&mut self, id: i64, by: &str, at: Timestamp) -> Result<bool> {
        let n = sqlx::query("UPDATE holds SET released_at = $1, released_by = $2 WHERE id = $3 AND released_at IS NULL")
            .bind(at.millis())
            .bind(by)
            .bind(id)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE hold_epoch SET epoch = epoch + 1 WHERE id = 1")
            .execute(&mut *self.tx)
            .await?;
        Ok(n == 1)
    }

    pub async fn unblock(&mut self, hold: i64) -> Result<Vec<ResourceRow>> {
        let blocked: Vec<String> = sqlx::query_scalar(
            "DELETE FROM hold_blocks WHERE hold = $1 AND subject_type = 'resource' RETURNING subject",
        )
        .bind(hold)
        .fetch_all(&mut *self.tx)
        .await?;
        sqlx::query("DELETE FROM hold_blocks WHERE hold = $1")
            .bind(hold)
            .execute(&mut *self.tx)
            .await?;
        let mut freed = Vec::new();
        for chunk in blocked.chunks(10_000) {
            let ids: Vec<String> = sqlx::query_scalar(concat!(
                "UPDATE resources SET held = 0 WHERE held = 1 AND id ", in_ids!(1),
                " AND NOT EXISTS (SELECT 1 FROM hold_blocks b JOIN holds h ON h.id = b.hold ",
                "WHERE b.subject_type = 'resource' AND b.subject = resources.id AND h.released_at IS NULL) RETURNING id"
            ))
            .bind(D::ids_arg(chunk))
            .fetch_all(&mut *self.tx)
            .await?;
            freed.extend(q_resources(&mut self.tx, &ids, false).await?);
        }
        Ok(freed)
    }

    pub async fn add_blocks(&mut self, subject_type: &str, pairs: &[(String, i64)], at: Timestamp) -> Result<Vec<(String, i64)>> {
        let mut added = Vec::new();
        for chunk in pairs.chunks(MAX_BINDS / 4) {
            let mut q = QueryBuilder::<Db>::new("INSERT INTO hold_blocks (subject_type, subject, hold, blocked_at) ");
            q.push_values(chunk, |mut b, (subject, hold)| {
                b.push_bind(subject_type.to_string())
                    .push_bind(subject.clone())
                    .push_bind(*hold)
                    .push_bind(at.millis());
            });
            q.push(" ON CONFLICT (subject_type, subject, hold) DO NOTHING RETURNING subject, hold");
            let rows = q.build().fetch_all(&mut *self.tx).await?;
            added.extend(rows.into_iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))));
        }
        Ok(added)
    }

    pub async fn release_claims_held(&mut self, ids: &[String], owner: &str) -> Result<()> {
        sqlx::query(concat!(
            "UPDATE resources SET state = CASE WHEN EXISTS (SELECT 1 FROM purge_interruptions i WHERE i.resource = resources.id) ",
            "THEN 'interrupted' WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END, held = 1, ",
            "lease_owner = NULL, lease_until = NULL WHERE id ", in_ids!(1), " AND state = 'purging' AND lease_owner = $2"
        ))
        .bind(D::ids_arg(ids))
        .bind(owner)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn finish_purged(&mut self, ids: &[String], cause: Cause, owner: &str, at: Timestamp) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        D::finish_purged(&mut self.tx, ids, cause, owner, at).await
    }

    pub async fn record_failures(&mut self, failures: &[PurgeFailure], owner: &str, _at: Timestamp) -> Result<Vec<String>> {
        let mut recorded = Vec::new();
        for f in failures {
            let id: Option<String> = sqlx::query_scalar(
                "UPDATE resources SET attempts = attempts + 1, last_error = $1, lease_owner = NULL, lease_until = $2, \
                 state = CASE WHEN $3 = 1 THEN 'purging' ELSE 'failed' END \
                 WHERE id = $4 AND state = 'purging' AND lease_owner = $5 RETURNING id",
            )
            .bind(&f.error)
            .bind(f.retry_at.map(|t| t.millis()))
            .bind(f.retry_at.is_some() as i64)
            .bind(&f.id)
            .bind(owner)
            .fetch_optional(&mut *self.tx)
            .await?;
            recorded.extend(id);
        }
        Ok(recorded)
    }

    pub async fn has_unpurged(&mut self, account: &str) -> Result<bool> {
        // Stops at the first one: a held or failing account answers at once, a fully purged
        // one reads its rows once (`resources_account` has no state).
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM resources WHERE account = $1 AND state <> 'purged')")
            .bind(account)
            .fetch_one(&mut *self.tx)
            .await?)
    }

    pub async fn finish_account_purged(&mut self, account: &str, at: Timestamp) -> Result<bool> {
        let n = sqlx::query("UPDATE accounts SET state = 'purged', purged_at = $1 WHERE id = $2 AND state = 'deletion_requested'")
            .bind(at.millis())
            .bind(account)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn requeue_failed(&mut self, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            Ok(sqlx::query_scalar(
                "UPDATE resources SET state = CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END, attempts = 0, \
                 last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE state = 'failed' RETURNING id",
            )
            .fetch_all(&mut *self.tx)
            .await?)
        } else {
            Ok(sqlx::query_scalar(concat!(
                "UPDATE resources SET state = CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END, attempts = 0, ",
                "last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE state = 'failed' AND id ", in_ids!(1), " RETURNING id"
            ))
            .bind(D::ids_arg(ids))
            .fetch_all(&mut *self.tx)
            .await?)
        }
    }

    pub async fn release_owner_claims(&mut self, owner: &str) -> Result<u64> {
        Ok(sqlx::query("UPDATE resources SET lease_owner = NULL, lease_until = 0 WHERE state = 'purging' AND lease_owner = $1")
            .bind(owner)
            .execute(&mut *self.tx)
            .await?
            .rows_affected())
    }

    /// The last audit entry, with the chain locked until this transaction ends, so nothing is
    /// appended between reading it and this transaction's own appends (signed checkpoints).
    pub async fn audit_last_locked(&mut self) -> Result<Option<AuditEntry>> {
        D::lock_audit(&mut self.tx).await?;
        let raw: Option<RawAudit> = sqlx::query_as(
            "SELECT seq, at, action, subject, details, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(raw.map(AuditEntry::from))
    }

    pub async fn insert_checkpoint(&mut self, cp: &super::CheckpointRow) -> Result<()> {
        sqlx::query("INSERT INTO audit_checkpoints (seq, hash, at, public_key, signature) VALUES ($1, $2, $3, $4, $5)")
            .bind(cp.seq)
            .bind(&cp.hash)
            .bind(cp.at.millis())
            .bind(&cp.public_key)
            .bind(&cp.signature)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
