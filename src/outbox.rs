//! The transactional outbox (`[sources.NAME]`, §5/§6): the application inserts lifecycle events
//! into a table of its own database in the same transaction as its own change.
//!
//! Invariant: a deletion the application commits is never missed, one it rolls back never
//! reaches retentiond, and each event takes effect once, whatever crashes in between.
//!
//! Mechanism: each poll reads up to `scheduler.batch_size` pending rows in id order, applies them through
//! [`App::ingest_events`] (the same validation, rules and ingest policy as `retentiond ingest`
//! and `POST /v1/events`), and only then
//! removes them from the outbox. A crash on either side in between leaves the rows in place and
//! they are read again: delivery is at-least-once, and every event carries an idempotency key —
//! the row's `event_id`, else the event's own `event_id`, else one derived from the source name
//! and row id (`outbox:NAME:ID`; the shipped DDL never reuses ids) — so the ledger applies each
//! exactly once in effect.
//!
//! A row the ingest engine rejects (malformed JSON, unknown resource, a forbidden transition, an
//! `at` too far in the future) would block the queue forever if retried, and must not be lost:
//! it is dead-lettered in place — `failed_at` and `error` set, skipped from then on — logged at
//! WARN, and audited as `outbox.dead_lettered`. The rows after it are applied. Once the cause is
//! fixed, `UPDATE <table> SET failed_at = NULL, error = NULL WHERE id = …` puts it back in the
//! queue. Failures of either database are not the row's fault: the poll is retried with backoff.
//!
//! On PostgreSQL the poll runs in one application-database transaction holding a
//! transaction-level advisory lock per table, so several daemon instances consume one outbox in
//! turn, never interleaved. Event `at` defaults to the row's `created_at`: the time of the
//! application's transaction, not the time retentiond happened to read it.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::audit::AuditDraft;
use crate::config::SourceConfig;
use crate::events::{self, Event};
use crate::failpoint;
use crate::ingest::IngestError;
use crate::model::{Timestamp, check_id};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox `{source_name}`: application database: {error}")]
    Source {
        source_name: String,
        error: sqlx::Error,
    },
    #[error("outbox `{source_name}`: {error}")]
    Ledger {
        source_name: String,
        error: StoreError,
    },
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// Pending rows read.
    pub read: u64,
    pub applied: u64,
    /// Events the ledger had already applied (a replay after a crash).
    pub duplicates: u64,
    /// Rows removed from the outbox.
    pub consumed: u64,
    pub dead_lettered: u64,
    /// Another instance held the outbox (PostgreSQL): nothing was read.
    pub busy: bool,
}

#[derive(Debug, Clone)]
enum SourceDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

struct OutboxRow {
    id: i64,
    event_id: Option<String>,
    event: String,
    created_at: Option<i64>,
}

/// One outbox, polled.
pub struct Poller {
    name: String,
    table: String,
    db: SourceDb,
    poll: Duration,
    batch: i64,
    app: App,
}

impl Poller {
    /// Prepares the poller, which applies the rows through `app`; connections open lazily (a
    /// source database that is down is retried).
    pub fn new(name: &str, cfg: &SourceConfig, app: App) -> Result<Poller, String> {
        let err = |e: sqlx::Error| format!("sources.{name}: bad url {}: {e}", cfg.url.redacted());
        let db = if cfg.url.is_postgres() {
            SourceDb::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with(PgConnectOptions::from_str(cfg.url.expose()).map_err(err)?),
            )
        } else {
            SourceDb::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with(
                        SqliteConnectOptions::from_str(cfg.url.expose())
                            .map_err(err)?
                            .create_if_missing(false)
                            .busy_timeout(Duration::from_secs(5)),
                    ),
            )
        };
        Ok(Poller {
            name: name.to_string(),
            table: cfg.table.clone(),
            db,
            poll: cfg.poll.as_std(),
            batch: app.config().scheduler.batch_size as i64,
            app,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn source_err(&self, error: sqlx::Error) -> OutboxError {
        OutboxError::Source {
            source_name: self.name.clone(),
            error,
        }
    }

    fn ledger_err(&self, error: StoreError) -> OutboxError {
        OutboxError::Ledger {
            source_name: self.name.clone(),
            error,
        }
    }

    /// Rows dead-lettered so far (`failed_at` set).
    pub async fn dead_letters(&self) -> Result<i64, OutboxError> {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE failed_at IS NOT NULL",
            self.table
        );
        let r = match &self.db {
            SourceDb::Sqlite(p) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(p).await,
            SourceDb::Postgres(p) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(p).await,
        };
        r.map_err(|e| self.source_err(e))
    }

    /// One poll: read a batch, apply it, remove what was consumed, dead-letter what was rejected.
    pub async fn poll_once(&self) -> Result<PollReport, OutboxError> {
        // `table` is a plain identifier (checked at config load), never user input.
        let select = |created_ms: &str, event: &str| {
            format!(
                "SELECT id, event_id, {event}, {created_ms} FROM {} WHERE failed_at IS NULL ORDER BY id LIMIT $1",
                self.table
            )
        };
        match &self.db {
            SourceDb::Sqlite(pool) => {
                let sql = select(
                    "CAST(ROUND((julianday(created_at) - 2440587.5) * 86400000.0) AS INTEGER)",
                    "event",
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(self.batch)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| self.source_err(e))?;
                let rows = rows.iter().map(outbox_row).collect::<Result<Vec<_>, _>>();
                let rows = rows.map_err(|e| self.source_err(e))?;
                let (mut report, consumed, dead) = self.apply(&rows).await?;
                failpoint::crash("outbox_after_apply");
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| self.source_err(e))?;
                if !consumed.is_empty() {
                    let ids = serde_json::to_string(&consumed).unwrap_or_else(|_| "[]".into());
                    sqlx::query(AssertSqlSafe(format!(
                        "DELETE FROM {} WHERE id IN (SELECT value FROM json_each($1))",
                        self.table
                    )))
                    .bind(ids)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.source_err(e))?;
                }
                for (id, error) in &dead {
                    sqlx::query(AssertSqlSafe(format!(
                        "UPDATE {} SET failed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), error = $1 WHERE id = $2",
                        self.table
                    )))
                    .bind(error)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.source_err(e))?;
                }
                tx.commit().await.map_err(|e| self.source_err(e))?;
                report.consumed = consumed.len() as u64;
                self.after(&rows, &dead, &mut report).await?;
                Ok(report)
            }
            SourceDb::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(|e| self.source_err(e))?;
                let locked: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_xact_lock(hashtext('retentiond.outbox.' || current_schema() || '.' || $1))",
                )
                .bind(&self.table)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.source_err(e))?;
                if !locked {
                    debug!(source = %self.name, "outbox held by another instance; skipped");
                    return Ok(PollReport {
                        busy: true,
                        ..Default::default()
                    });
                }
                let sql = select(
                    "(EXTRACT(EPOCH FROM created_at) * 1000)::BIGINT",
                    "event::text",
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(self.batch)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.source_err(e))?;
                let rows = rows.iter().map(outbox_row).collect::<Result<Vec<_>, _>>();
                let rows = rows.map_err(|e| self.source_err(e))?;
                let (mut report, consumed, dead) = self.apply(&rows).await?;
                failpoint::crash("outbox_after_apply");
                if !consumed.is_empty() {
                    sqlx::query(AssertSqlSafe(format!(
                        "DELETE FROM {} WHERE id = ANY($1)",
                        self.table
                    )))
                    .bind(&consumed)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.source_err(e))?;
                }
                for (id, error) in &dead {
                    sqlx::query(AssertSqlSafe(format!(
                        "UPDATE {} SET failed_at = now(), error = $1 WHERE id = $2",
                        self.table
                    )))
                    .bind(error)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.source_err(e))?;
                }
                tx.commit().await.map_err(|e| self.source_err(e))?;
                report.consumed = consumed.len() as u64;
                self.after(&rows, &dead, &mut report).await?;
                Ok(report)
            }
        }
    }

    /// The event of a row: its idempotency key and, unless it has one, its time.
    fn event(&self, line: usize, row: &OutboxRow) -> Result<Event, String> {
        let mut e = events::parse_line(line, &row.event).map_err(|e| e.reason)?;
        match &row.event_id {
            Some(id) => {
                check_id("`event_id` column", id)?;
                e.event_id = Some(id.clone());
            }
            None if e.event_id.is_none() => {
                e.event_id = Some(format!("outbox:{}:{}", self.name, row.id));
            }
            None => {}
        }
        if e.at.is_none() {
            e.at = row.created_at.map(Timestamp::from_millis);
        }
        Ok(e)
    }

    /// Applies `rows` in order. Returns the report, the ids consumed (applied or already
    /// applied), and the rows to dead-letter with the reason.
    #[allow(clippy::type_complexity)]
    async fn apply(
        &self,
        rows: &[OutboxRow],
    ) -> Result<(PollReport, Vec<i64>, Vec<(i64, String)>), OutboxError> {
        let mut report = PollReport {
            read: rows.len() as u64,
            ..Default::default()
        };
        let mut consumed = Vec::new();
        let mut dead = Vec::new();
        if rows.is_empty() {
            return Ok((report, consumed, dead));
        }
        // Line numbers are positions in `rows`, from 1, so a rejected line names its row.
        let parsed: Vec<Result<Event, String>> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| self.event(i + 1, r))
            .collect();
        let mut start = 0;
        while start < rows.len() {
            let mut end = parsed[start..]
                .iter()
                .position(Result::is_err)
                .map_or(rows.len(), |p| start + p);
            if end == start {
                let reason = parsed[start].clone().err().unwrap_or_default();
                dead.push((rows[start].id, reason));
                start += 1;
                continue;
            }
            // Apply rows[start..end]; if one is rejected, apply what precedes it, dead-letter
            // it, and go on after it: order is kept, nothing after a bad row waits for it.
            loop {
                let batch: Vec<Event> = parsed[start..end]
                    .iter()
                    .filter_map(|p| p.clone().ok())
                    .collect();
                match self.app.ingest_events(&batch).await {
                    Ok(r) => {
                        r.record_metrics(&format!("outbox/{}", self.name));
                        report.applied += r.applied;
                        report.duplicates += r.duplicates;
                        consumed.extend(rows[start..end].iter().map(|r| r.id));
                        start = end;
                        break;
                    }
                    Err(IngestError::Invalid(errors)) => {
                        let first = errors
                            .iter()
                            .min_by_key(|e| e.line)
                            .expect("an invalid batch names a line");
                        let bad = first.line.saturating_sub(1).clamp(start, end - 1);
                        if bad == start {
                            dead.push((rows[start].id, first.reason.clone()));
                            start += 1;
                            break;
                        }
                        end = bad;
                    }
                    Err(IngestError::Store(e)) => return Err(self.ledger_err(e)),
                }
            }
        }
        Ok((report, consumed, dead))
    }

    /// Logs and audits dead letters once they are recorded in the outbox.
    async fn after(
        &self,
        rows: &[OutboxRow],
        dead: &[(i64, String)],
        report: &mut PollReport,
    ) -> Result<(), OutboxError> {
        report.dead_lettered = dead.len() as u64;
        if dead.is_empty() {
            return Ok(());
        }
        let now = self.app.clock().now();
        let drafts: Vec<AuditDraft> = dead
            .iter()
            .map(|(id, error)| {
                let event_id = rows
                    .iter()
                    .find(|r| r.id == *id)
                    .and_then(|r| r.event_id.clone());
                crate::metrics::record_rejected(&format!("outbox/{}", self.name));
                warn!(source = %self.name, table = %self.table, row = id, error = %error,
                    "outbox event rejected; dead-lettered (failed_at set), the queue goes on");
                AuditDraft::new(
                    now,
                    "outbox.dead_lettered",
                    format!("outbox/{}/{id}", self.name),
                    json!({"table": self.table, "row": id, "event_id": event_id, "error": error}),
                )
            })
            .collect();
        let tx = self
            .app
            .ledger()
            .begin()
            .await
            .map_err(|e| self.ledger_err(e))?;
        tx.commit_with_audit(&drafts)
            .await
            .map_err(|e| self.ledger_err(e))?;
        if let Ok(n) = self.dead_letters().await {
            crate::metrics::record_dead_letters(&self.name, n);
        }
        Ok(())
    }

    /// Polls until `stop`; the batch in flight always finishes. A full batch is followed at once
    /// by the next (a backlog drains at batch speed); failures back off up to 30 s and are
    /// logged when they start, change and end, not on every poll.
    pub async fn run(self, stop: CancellationToken) {
        let dead = self.dead_letters().await;
        if let Ok(n) = &dead {
            crate::metrics::record_dead_letters(&self.name, *n);
        }
        match dead {
            Ok(0) => {}
            Ok(n) => {
                warn!(source = %self.name, table = %self.table, dead_lettered = n, "outbox has dead-lettered rows (failed_at set): fix them and clear failed_at to requeue")
            }
            Err(e) => warn!(error = %e, "outbox not readable yet; retrying"),
        }
        info!(source = %self.name, table = %self.table, poll = ?self.poll, "outbox poller started");
        let mut failing: Option<String> = None;
        let mut backoff = self.poll;
        while !stop.is_cancelled() {
            let wait = match self.poll_once().await {
                Ok(r) => {
                    if failing.take().is_some() {
                        info!(source = %self.name, "outbox poll recovered");
                    }
                    backoff = self.poll;
                    if r.consumed > 0 || r.dead_lettered > 0 {
                        info!(source = %self.name, applied = r.applied, duplicates = r.duplicates,
                            consumed = r.consumed, dead_lettered = r.dead_lettered, "outbox events applied");
                    }
                    if r.read as i64 >= self.batch {
                        Duration::ZERO
                    } else {
                        self.poll
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if failing.as_deref() != Some(msg.as_str()) {
                        warn!(error = %msg, "outbox poll failed; retrying with backoff (the rows stay in the outbox)");
                        failing = Some(msg);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!(source = %self.name, "outbox poller stopped");
    }
}

fn outbox_row<R>(r: &R) -> Result<OutboxRow, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OutboxRow {
        id: r.try_get(0)?,
        event_id: r.try_get(1)?,
        event: r.try_get(2)?,
        created_at: r.try_get(3)?,
    })
}
