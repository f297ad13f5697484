//! The sweep: claim due work → purge it in the targets → record it, batch by batch (§3 R7–R9,
//! §7).
//!
//! Invariant: a resource is recorded purged, with exactly one receipt, only after every one of
//! its kind's targets removed its data, only while this instance's lease on its claim holds,
//! and only if no active hold matched it when its purge transaction started — and no hold can
//! be placed between that start and the commit (Invariant H, §4).
//!
//! Mechanism, read top to bottom in [`Sweeper::purge_batch`] (the reference): claim due
//! resources ([`Sweeper::claim_alone`]); open a purge transaction under the hold lock, giving
//! back what holds keep and finding out what is true of claims taken over after a crash
//! (`start`); run the targets batch by batch (`run_targets`); record each batch, with its
//! receipts, in the transaction (`record`); commit; write one log line per decision. The
//! daemon runs the same steps overlapped (`pipeline`): the targets of one batch run while the
//! previous one is recorded and the next transaction's work is claimed. A test checks that
//! both leave the same ledger. Accounts (R8) follow the resources (`accounts`).
//!
//! Level-triggered: every sweep purges whatever is due *now*, so a missed or skipped sweep
//! leaves a backlog, never a missed purge. `sweep_once` is what the daemon and the tests drive.
//! Its last step compacts tombstones older than `[ledger] tombstone_retention` (`compact`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{error, info, warn};

use crate::audit::AuditDraft;
use crate::clock::Clock;
use crate::config::Config;
use crate::holds::HoldSet;
use crate::model::ResourceState;
use crate::model::{Cause, Span, Timestamp};
use crate::rules::{self, InterruptedPurge, TargetFinding};
use crate::store::{
    AccountRow, ClaimedBatch, InFlightOutcome, Ledger, PurgeFailure, PurgeGate, PurgeTx,
    ResourceRow, SettledClaim, StoreError, SweepRun, TargetData,
};
use crate::targets::{PurgeItem, Removed, Targets};

mod accounts;
mod compact;
mod pipeline;
mod record;
mod start;
mod window;

pub use window::{WindowPassReport, WindowPreview};

use record::{BatchLog, FoundGone, PurgeReceipt, cause_of, receipt_drafts, recorded_drafts};

/// What one sweep did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SweepReport {
    pub purged: u64,
    /// Purge attempts that failed (will be retried).
    pub failed: u64,
    /// Resources that ran out of attempts and are now `failed`.
    pub gave_up: u64,
    /// Resources found under a hold and given back.
    pub held: u64,
    /// Claims taken over whose purge may have started, found gone everywhere (and recorded
    /// purged: they count in `purged` too), intact everywhere, or partly gone (`interrupted`).
    pub found_gone: u64,
    pub found_intact: u64,
    pub interrupted: u64,
    pub accounts_purged: u64,
    /// Target batches run (a claimed set that holds kept entirely runs none).
    pub batches: u64,
    pub removed: Removed,
    pub purged_by_kind: BTreeMap<String, u64>,
    /// Rows of windowed kinds deleted (issue 29), and passes over them that failed.
    pub window_rows: u64,
    pub window_failed: u64,
    /// The window passes this sweep ran.
    pub window_passes: Vec<WindowPassReport>,
    /// Tombstones older than `[ledger] tombstone_retention` compacted into counts (issue 23).
    pub tombstones_compacted: u64,
    /// Failed purges per target, for metrics.
    #[serde(skip)]
    pub failures_by_target: BTreeMap<String, u64>,
}

impl SweepReport {
    pub fn did_something(&self) -> bool {
        self.purged
            + self.failed
            + self.held
            + self.found_intact
            + self.interrupted
            + self.accounts_purged
            + self.window_rows
            + self.window_failed
            > 0
    }

    fn add(&mut self, o: SweepReport) {
        self.purged += o.purged;
        self.failed += o.failed;
        self.gave_up += o.gave_up;
        self.held += o.held;
        self.found_gone += o.found_gone;
        self.found_intact += o.found_intact;
        self.interrupted += o.interrupted;
        self.accounts_purged += o.accounts_purged;
        self.batches += o.batches;
        self.removed += o.removed;
        for (k, v) in o.purged_by_kind {
            *self.purged_by_kind.entry(k).or_default() += v;
        }
        self.window_rows += o.window_rows;
        self.window_failed += o.window_failed;
        self.window_passes.extend(o.window_passes);
        self.tombstones_compacted += o.tombstones_compacted;
        for (k, v) in o.failures_by_target {
            *self.failures_by_target.entry(k).or_default() += v;
        }
    }
}

/// What the targets did for one resource of a batch.
#[derive(Debug, Clone, Default)]
struct ItemOutcome {
    removed: Vec<(String, Removed)>,
    /// The first target error; the resource is then not recorded as purged.
    error: Option<String>,
}

/// One line of a dry run: what would be purged, and why, or what holds keep it.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunItem {
    pub id: String,
    pub kind: String,
    pub account: String,
    pub cause: Option<Cause>,
    pub rule: Option<String>,
    pub deleted_at: Option<Timestamp>,
    pub purge_after: Option<Timestamp>,
    pub targets: Vec<String>,
    /// Active holds that would keep it (then it is not purged).
    pub held_by: Vec<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime dropped a task of a purge transaction (the one running its targets, or the
    /// one building its receipts and writing log lines) while shutting down; the transaction's claims
    /// stay on record and are purged after their lease.
    #[error("a task of the purge transaction was stopped: {0}")]
    PurgeTask(String),
    /// A target could not answer a dry run's question.
    #[error("{0}")]
    Target(String),
}

/// The resources of one kind in a batch, for its targets.
struct KindWork {
    kind: String,
    /// Positions in the batch.
    idx: Vec<usize>,
    items: Vec<PurgeItem>,
}

/// The resources of a target batch by kind (kinds in name order).
fn kind_work(part: &[ResourceRow]) -> Vec<KindWork> {
    let mut by_kind: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in part.iter().enumerate() {
        by_kind.entry(&r.kind).or_default().push(i);
    }
    by_kind
        .into_iter()
        .map(|(kind, idx)| KindWork {
            items: idx.iter().map(|&i| part[i].purge_item()).collect(),
            kind: kind.to_string(),
            idx,
        })
        .collect()
}

/// Runs every target of every kind in a batch; a resource's outcome is the rows and files each
/// of its targets removed, or the first error. Also returns failures per target.
async fn run_targets(
    config: &Config,
    targets: &Targets,
    work: Vec<KindWork>,
    n: usize,
) -> (Vec<ItemOutcome>, BTreeMap<String, u64>) {
    let mut outcome: Vec<ItemOutcome> = vec![ItemOutcome::default(); n];
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for KindWork { kind, idx, items } in &work {
        let Some(kind_cfg) = config.kinds.get(kind) else {
            for &i in idx {
                outcome[i].error = Some(format!("kind `{kind}` is not in the config"));
            }
            continue;
        };
        for (ti, tname) in kind_cfg.targets.iter().enumerate() {
            let Some(target) = targets.get(tname) else {
                for &i in idx {
                    outcome[i]
                        .error
                        .get_or_insert_with(|| format!("target `{tname}` is not configured"));
                }
                continue;
            };
            let started = std::time::Instant::now();
            let results = target.purge(kind, items).await;
            crate::metrics::record_target_purge(tname, started.elapsed());
            for (&i, r) in idx.iter().zip(results) {
                match r {
                    Ok(removed) => outcome[i].removed.push((tname.clone(), removed)),
                    Err(e) => {
                        *failures.entry(tname.clone()).or_default() += 1;
                        outcome[i].error.get_or_insert(e);
                    }
                }
            }
            crate::failpoint::crash(&format!("after_target_{ti}"));
        }
    }
    (outcome, failures)
}

/// Runs sweeps for one instance.
pub struct Sweeper {
    ledger: Ledger,
    targets: Arc<Targets>,
    config: Arc<Config>,
    clock: Clock,
    instance: String,
    /// Account purges that failed, with the last error, so a persistent failure is logged when
    /// it changes rather than every sweep.
    account_failures: Mutex<HashMap<String, String>>,
    /// Milliseconds of the last committed purge transaction: the daemon's watchdog follows it.
    progress: Arc<std::sync::atomic::AtomicI64>,
    /// Runs the reference steps one after another ([`Sweeper::sequential`]).
    sequential: bool,
}

impl Sweeper {
    pub fn new(
        ledger: Ledger,
        targets: Arc<Targets>,
        config: Arc<Config>,
        clock: Clock,
        instance: String,
    ) -> Sweeper {
        Sweeper {
            ledger,
            targets,
            config,
            clock,
            instance,
            account_failures: Mutex::new(HashMap::new()),
            progress: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            sequential: false,
        }
    }

    /// Sweeps with the reference algorithm ([`Sweeper::purge_batch`], one step after another)
    /// instead of the overlapped pipeline: the same ledger, slower. For tests and for reading.
    pub fn sequential(mut self) -> Self {
        self.sequential = true;
        self
    }

    /// Reports progress (after every purge transaction) into `progress`.
    pub fn with_progress(mut self, progress: Arc<std::sync::atomic::AtomicI64>) -> Self {
        self.progress = progress;
        self
    }

    fn mark_progress(&self) {
        self.progress.store(
            self.clock.now().millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The targets this sweeper purges with (the daemon's background work shares them).
    pub fn targets(&self) -> Arc<Targets> {
        self.targets.clone()
    }

    /// Now, for due checks. With the system clock on PostgreSQL, the earlier of this host's and
    /// the database's clocks: a host whose clock runs ahead cannot purge early (R11).
    pub async fn now(&self) -> Result<Timestamp, StoreError> {
        let local = self.clock.now();
        if self.clock.is_system()
            && let Some(db) = self.ledger.db_now().await?
        {
            return Ok(local.min(db));
        }
        Ok(local)
    }

    /// One full sweep: every due batch, then due accounts. Stops between batches when `stop`
    /// is cancelled (the purge transaction in flight always finishes, and the one it claimed).
    pub async fn sweep_once(&self, stop: &CancellationToken) -> Result<SweepReport, SweepError> {
        let started = self.clock.now();
        let result = self.sweep_inner(stop).await;
        let finished = self.clock.now();
        let (report, error) = match &result {
            Ok(r) => (r.clone(), None),
            Err(e) => (SweepReport::default(), Some(e.to_string())),
        };
        let run = SweepRun {
            instance: self.instance.clone(),
            started_at: started,
            finished_at: Some(finished),
            purged: report.purged as i64,
            failed: report.failed as i64,
            held: report.held as i64,
            accounts_purged: report.accounts_purged as i64,
            error,
        };
        if let Err(e) = self.ledger.record_sweep(&run).await {
            warn!(error = %e, "could not record the sweep run");
        }
        if let Ok(r) = &result
            && r.did_something()
        {
            info!(
                purged = r.purged,
                failed = r.failed,
                gave_up = r.gave_up,
                held = r.held,
                found_gone = r.found_gone,
                found_intact = r.found_intact,
                interrupted = r.interrupted,
                accounts_purged = r.accounts_purged,
                window_rows = r.window_rows,
                rows = r.removed.rows,
                files = r.removed.files,
                batches = r.batches,
                duration_ms = finished.millis() - started.millis(),
                "sweep finished"
            );
        }
        result
    }

    async fn sweep_inner(&self, stop: &CancellationToken) -> Result<SweepReport, SweepError> {
        let now = self.now().await?;
        let mut report = match self.sequential {
            true => self.sweep_sequential(now, stop).await?,
            false => self.sweep_overlapped(now, stop).await?,
        };
        if !stop.is_cancelled() {
            report.add(self.sweep_windows(now, stop).await?);
        }
        if !stop.is_cancelled() {
            report.add(self.purge_accounts(now, stop).await?);
        }
        if !stop.is_cancelled() {
            report.tombstones_compacted += self.compact_tombstones(now, stop).await.tombstones;
        }
        Ok(report)
    }

    /// Purges everything due at `now`, one purge transaction ([`Sweeper::purge_batch`]) after
    /// another, until a claim comes back short or `stop` comes.
    async fn sweep_sequential(
        &self,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Result<SweepReport, SweepError> {
        let s = &self.config.scheduler;
        let claim = (s.batch_size * s.batches_per_transaction) as i64;
        let mut report = SweepReport::default();
        while !stop.is_cancelled() {
            let claims = self.claim_alone(now, claim).await?;
            let full = claims.resources.len() as i64 == claim;
            if claims.resources.is_empty() {
                break;
            }
            report.add(self.purge_batch(claims, now).await?);
            self.mark_progress();
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// The reference purge transaction, top to bottom: holds, then targets, then the record
    /// and its receipts, then the log lines. What was claimed is purged whatever `stop` says.
    async fn purge_batch(
        &self,
        claims: ClaimedBatch,
        now: Timestamp,
    ) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        let mut log = BatchLog::default();
        // 1. Holds: under the hold lock, what an active hold matches goes back (with its
        //    blocks), and claims taken over after a crash are found out.
        let (started, mut tx) = self.open_purge(claims, now, &mut log).await?;
        report.add(started.report);
        let free: Arc<[ResourceRow]> = started.free.into();
        let mut outcome = Vec::with_capacity(free.len());
        for part in free.chunks(self.config.scheduler.batch_size) {
            // 2. Targets: every target of each resource's kind deletes its data.
            let (part_outcome, failures_by_target) =
                run_targets(&self.config, &self.targets, kind_work(part), part.len()).await;
            report.batches += 1;
            for (t, n) in failures_by_target {
                *report.failures_by_target.entry(t).or_default() += n;
            }
            // 3. Record: outcomes under our lease, then the receipts of what was recorded.
            let (ok_by_cause, failures) = self.sort_outcomes(part, &part_outcome, now);
            let (recorded, failed) = self
                .write_outcomes(&mut tx, &ok_by_cause, &failures, now)
                .await?;
            let receipts = receipt_drafts(part, &part_outcome, now);
            let drafts = recorded_drafts(
                part,
                receipts,
                &recorded,
                &failures,
                &failed,
                now,
                &mut report,
            );
            tx.append_audit(&drafts).await?;
            log.recorded.extend(recorded);
            log.failed_recorded.extend(failed);
            log.failures.extend(failures);
            outcome.extend(part_outcome);
            crate::failpoint::crash(&format!("after_batch_recorded_{}", report.batches - 1));
        }
        // 4. Commit, then one log line per decision.
        self.commit_purge(tx, started.batch, started.taken_over, &log, now)
            .await?;
        log.free = free;
        log.outcome = outcome;
        log.emit_some(usize::MAX);
        Ok(report)
    }

    /// When a claim made now runs out. It runs from the claim, not from the sweep's start: a
    /// long sweep's later claims must not look expired to other instances.
    fn lease_until(&self) -> Timestamp {
        self.clock.now().plus(self.config.scheduler.lease)
    }

    /// Claims due work in a transaction of its own (a sweep's first batch, or when the claim
    /// beside a batch's targets failed).
    async fn claim_alone(&self, now: Timestamp, limit: i64) -> Result<ClaimedBatch, SweepError> {
        Ok(self
            .ledger
            .claim_due(now, limit, &self.instance, self.lease_until())
            .await?)
    }

    /// Exponential backoff with ±25% jitter, capped.
    fn backoff(&self, attempt: i64) -> Span {
        let exp = crate::rules::retry_delay(
            self.config.scheduler.retry_backoff,
            self.config.scheduler.retry_backoff_max,
            attempt,
        )
        .millis();
        let jitter: f64 = rand::random_range(0.75..1.25);
        Span::from_millis(((exp as f64) * jitter) as i64)
    }

    /// What a sweep now would purge, and what holds would keep. Writes nothing.
    pub async fn dry_run(&self, limit: i64) -> Result<Vec<DryRunItem>, SweepError> {
        let now = self.now().await?;
        let holds = HoldSet::new(self.ledger.active_holds().await?);
        let due = self.ledger.peek_due(now, limit).await?;
        Ok(due
            .into_iter()
            .map(|r| {
                let held_by = holds
                    .matching(&r.hold_subject())
                    .iter()
                    .map(|h| h.id)
                    .collect();
                DryRunItem {
                    targets: self
                        .config
                        .kinds
                        .get(&r.kind)
                        .map(|k| k.targets.clone())
                        .unwrap_or_default(),
                    cause: r.rule.map(|x| x.cause()).or(r.cause),
                    rule: r.rule.map(|x| x.as_str().to_string()),
                    id: r.id,
                    kind: r.kind,
                    account: r.account,
                    deleted_at: r.deleted_at,
                    purge_after: r.purge_after,
                    held_by,
                }
            })
            .collect())
    }
}

/// A stable id for this process: host, pid and a random suffix, so a restarted process never
/// mistakes an old lease for its own.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl SweepReport {
    /// Records a finished sweep in the metrics: what it purged and what failed, per kind and target.
    pub fn record_metrics(&self, took: std::time::Duration, finished: Timestamp) {
        let report = self;

        for (kind, n) in &report.purged_by_kind {
            ::metrics::counter!(crate::metrics::PURGES, "kind" => kind.clone()).increment(*n);
        }
        for (target, n) in &report.failures_by_target {
            ::metrics::counter!(crate::metrics::PURGE_FAILURES, "target" => target.clone())
                .increment(*n);
        }
        ::metrics::counter!(crate::metrics::PURGES_GAVE_UP).increment(report.gave_up);
        ::metrics::counter!(crate::metrics::PURGES_HELD).increment(report.held);
        for (outcome, n) in [
            ("gone", report.found_gone),
            ("intact", report.found_intact),
            ("interrupted", report.interrupted),
        ] {
            if n > 0 {
                ::metrics::counter!(crate::metrics::PURGES_FOUND_OUT, "outcome" => outcome)
                    .increment(n);
            }
        }
        ::metrics::counter!(crate::metrics::ACCOUNTS_PURGED).increment(report.accounts_purged);
        for p in &report.window_passes {
            ::metrics::counter!(crate::metrics::WINDOW_ROWS, "kind" => p.kind.clone(), "target" => p.target.clone())
                .increment(p.rows + p.partition_rows);
            if p.error.is_some() {
                ::metrics::counter!(crate::metrics::WINDOW_PASS_FAILURES, "kind" => p.kind.clone(), "target" => p.target.clone())
                    .increment(1);
            }
            for (org, n) in &p.zdr_violations {
                ::metrics::counter!(crate::metrics::ZDR_VIOLATION_ROWS, "org" => org.clone())
                    .increment(*n);
            }
        }
        ::metrics::counter!(crate::metrics::ROWS_REMOVED).increment(report.removed.rows);
        ::metrics::counter!(crate::metrics::FILES_REMOVED).increment(report.removed.files);
        ::metrics::counter!(crate::metrics::SWEEPS, "outcome" => "ok").increment(1);
        ::metrics::histogram!(crate::metrics::SWEEP_DURATION).record(took.as_secs_f64());
        ::metrics::gauge!(crate::metrics::LAST_SUCCESS).set(finished.millis() as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::record::removed_total;
    use super::*;
    use crate::model::{ResourceState, Rule};

    fn row(rule: Option<Rule>, deleted: bool) -> ResourceRow {
        ResourceRow {
            id: "c1".into(),
            kind: "conversation".into(),
            account: "acct \"1\"".into(),
            org: "org-1".into(),
            created_at: Timestamp::from_millis(1_700_000_000_123),
            endpoint: None,
            state: ResourceState::Purging,
            deleted_at: deleted.then_some(Timestamp::from_millis(1_700_000_100_000)),
            cause: None,
            purge_after: deleted.then_some(Timestamp::from_millis(1_702_592_100_000)),
            rule,
            held: false,
            lease_owner: Some("i".into()),
            lease_until: Some(Timestamp::from_millis(1_702_592_200_000)),
            attempts: 2,
            last_error: None,
            purged_at: None,
            claim_batch: None,
            target_attrs: None,
        }
    }

    /// The receipt's text is what the `json!` object it replaced gave (same keys, same order),
    /// so chains written before and after verify the same way.
    #[test]
    fn a_purge_receipt_serializes_like_the_json_object() {
        let now = Timestamp::from_millis(1_702_592_150_001);
        let removed = vec![
            (
                "app_db".to_string(),
                Removed {
                    rows: 11,
                    files: 0,
                    ..Removed::default()
                },
            ),
            (
                "uploads".to_string(),
                Removed {
                    rows: 0,
                    files: 3,
                    ..Removed::default()
                },
            ),
        ];
        for r in [row(Some(Rule::ManualDelete), true), row(None, false)] {
            let typed = AuditDraft::with_details(
                now,
                "resource.purged",
                "x",
                &PurgeReceipt::new(&r, &removed, now),
            );
            let cause = r
                .rule
                .map(|x| x.cause())
                .or(r.cause)
                .unwrap_or(Cause::Manual);
            let object = AuditDraft::new(
                now,
                "resource.purged",
                "x",
                json!({
                    "account": r.account, "org": r.org, "cause": cause.as_str(), "rule": r.rule.map(|x| x.as_str()),
                    "created_at": r.created_at, "deleted_at": r.deleted_at, "purge_after": r.purge_after,
                    "purged_at": now, "attempts": r.attempts + 1,
                    "targets": removed.iter().map(|(t, x)| x.json_for(t)).collect::<Vec<_>>(),
                }),
            );
            assert_eq!(typed.details, object.details);
            assert_eq!(
                removed_total(&removed),
                Removed {
                    rows: 11,
                    files: 3,
                    ..Removed::default()
                }
            );
        }
    }
}
