//! The sweep: claim due work → purge it in the targets → record it, batch by batch (§3 R7–R9,
//! §7). Level-triggered: every sweep purges whatever is due *now*, so a missed or skipped sweep
//! leaves a backlog, never a missed purge. `sweep_once` is the unit tests and the daemon drive.

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
    AccountRow, ClaimedBatch, InFlightOutcome, Ledger, LedgerTx, PurgeFailure, ResourceRow,
    SettledClaim, StoreError, SweepRun, TargetData,
};
use crate::targets::{PurgeItem, Removed, Targets};

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
}

/// A committed purge transaction: what it did, what it claimed next, and its log lines.
struct BatchDone {
    report: SweepReport,
    /// The next transaction's work, claimed beside the targets; `None` if not asked for or if
    /// that failed.
    next: Option<ClaimedBatch>,
    log: BatchLog,
}

/// The purge receipt's details (audit action `resource.purged`). Fields in name order: the
/// text equals that of the same `json!` object (see `AuditDraft::with_details`).
#[derive(Serialize)]
struct PurgeReceipt<'a> {
    account: &'a str,
    attempts: i64,
    cause: &'static str,
    created_at: Timestamp,
    deleted_at: Option<Timestamp>,
    /// Set when the purge was found to have happened (issue 30): its claim was taken over after
    /// a crash, and every target had nothing left of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    found_gone: Option<FoundGone>,
    org: &'a str,
    purge_after: Option<Timestamp>,
    purged_at: Timestamp,
    rule: Option<&'static str>,
    targets: Vec<TargetRemoved<'a>>,
}

/// Why a purge was recorded after the fact: what kept its claim from simply being given back.
#[derive(Serialize)]
struct FoundGone {
    /// Active holds that match it: each was placed while its purge was in flight.
    holds: Vec<i64>,
    /// Its schedule under the policy in force no longer made it due.
    no_longer_due: bool,
}

#[derive(Serialize)]
struct TargetRemoved<'a> {
    files: u64,
    #[serde(skip_serializing_if = "is_zero")]
    objects: u64,
    #[serde(skip_serializing_if = "is_zero")]
    requests: u64,
    rows: u64,
    target: &'a str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What all of a resource's targets removed.
fn removed_total(removed: &[(String, Removed)]) -> Removed {
    removed.iter().fold(Removed::default(), |mut acc, (_, x)| {
        acc += *x;
        acc
    })
}

fn cause_of(r: &ResourceRow) -> Cause {
    r.rule
        .map(|x| x.cause())
        .or(r.cause)
        .unwrap_or(Cause::Manual)
}

impl<'a> PurgeReceipt<'a> {
    fn new(r: &'a ResourceRow, removed: &'a [(String, Removed)], now: Timestamp) -> Self {
        PurgeReceipt {
            account: &r.account,
            attempts: r.attempts + 1,
            cause: cause_of(r).as_str(),
            created_at: r.created_at,
            deleted_at: r.deleted_at,
            found_gone: None,
            org: &r.org,
            purge_after: r.purge_after,
            purged_at: now,
            rule: r.rule.map(|x| x.as_str()),
            targets: removed
                .iter()
                .map(|(t, x)| TargetRemoved {
                    files: x.files,
                    objects: x.objects,
                    requests: x.requests,
                    rows: x.rows,
                    target: t,
                })
                .collect(),
        }
    }
}

/// A committed transaction's lines not written yet; the rest are written when it is replaced
/// or dropped.
struct PendingLines(Option<BatchLog>);

impl PendingLines {
    fn replace(&mut self, log: BatchLog) {
        if let Some(mut old) = self.0.replace(log) {
            old.emit_some(usize::MAX);
        }
    }
}

impl Drop for PendingLines {
    fn drop(&mut self) {
        if let Some(mut lines) = self.0.take() {
            lines.emit_some(usize::MAX);
        }
    }
}

/// What a committed purge transaction logs: one line per decision (blocked by a hold, purged,
/// failed).
#[derive(Default)]
struct BatchLog {
    new_blocks: Vec<(String, i64)>,
    cases: HashMap<i64, String>,
    held_info: HashMap<String, (String, String)>,
    free: Arc<[ResourceRow]>,
    outcome: Vec<ItemOutcome>,
    recorded: HashSet<String>,
    failures: Vec<PurgeFailure>,
    failed_recorded: HashSet<String>,
    /// The lines of `free[..written]` (and the blocks before them) have been written.
    written: usize,
    /// Every line has been written.
    done: bool,
}

impl BatchLog {
    /// Writes the lines of the next `n` resources: the holds' blocks first, failures last.
    /// Called only after the transaction committed (logs follow durable facts).
    fn emit_some(&mut self, n: usize) {
        if self.done {
            return;
        }
        if self.written == 0 {
            self.emit_blocks();
        }
        let end = self.written.saturating_add(n).min(self.free.len());
        let (free, outcome) = (
            &self.free[self.written..end],
            &self.outcome[self.written..end],
        );
        for (r, ItemOutcome { removed, error }) in free.iter().zip(outcome) {
            if error.is_none() && self.recorded.contains(&r.id) {
                let total = removed_total(removed);
                let grace = match (r.deleted_at, r.purge_after) {
                    (Some(d), Some(p)) => Span((p.millis() - d.millis()).max(0)).to_string(),
                    _ => "-".into(),
                };
                let targets: Vec<String> =
                    removed.iter().map(|(t, x)| format!("{t}:{x}")).collect();
                info!(
                    kind = %r.kind, id = %r.id, account = %r.account,
                    cause = %cause_of(r),
                    deleted_at = %r.deleted_at.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                    grace = %grace, targets = %targets.join(","), rows = total.rows, files = total.files,
                    message_id = crate::telemetry::message_id::PURGED, "purged"
                );
            }
        }
        self.written = end;
        if end == self.free.len() {
            self.emit_failures();
            self.done = true;
        }
    }

    fn emit_blocks(&self) {
        for (id, hold) in &self.new_blocks {
            let case = self.cases.get(hold).map(String::as_str).unwrap_or_default();
            let (kind, account) = self.held_info.get(id).cloned().unwrap_or_default();
            info!(kind = %kind, id = %id, account = %account, hold = hold, case = %case, "purge blocked by hold");
        }
    }

    fn emit_failures(&self) {
        for f in &self.failures {
            if self.failed_recorded.contains(&f.id) {
                match f.retry_at {
                    Some(t) => {
                        warn!(id = %f.id, error = %f.error, retry_at = %t, message_id = crate::telemetry::message_id::TARGET_FAILURE, "purge failed; will retry")
                    }
                    None => {
                        error!(id = %f.id, error = %f.error, message_id = crate::telemetry::message_id::TARGET_FAILURE, "purge failed too many times; resource is now `failed` (see `retentiond retry`)")
                    }
                }
            }
        }
    }
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

/// What the start of a purge transaction left for its targets.
struct Started {
    /// Claims no hold keeps that are still due: the targets purge them.
    free: Vec<ResourceRow>,
    /// The claims' batch (started when anything is free).
    batch: Option<i64>,
    /// Of `free`, claims taken over whose purge may have started before.
    taken_over: Vec<String>,
    report: SweepReport,
}

/// A claim taken over whose purge may have started, that a hold now keeps or that is no longer
/// due: what its targets still hold decides what the ledger says of it.
struct Unsure {
    row: ResourceRow,
    /// Active holds that match it (id, case).
    holds: Vec<(i64, String)>,
    /// Its schedule when it is no longer due.
    reschedule: Option<Reschedule>,
}

struct Reschedule {
    purge_after: Option<Timestamp>,
    rule: Option<crate::model::Rule>,
}

fn finding(t: &TargetData) -> TargetFinding {
    match t.data.as_str() {
        "gone" => TargetFinding::Gone,
        "present" => TargetFinding::Present,
        _ => TargetFinding::Unknown,
    }
}

/// `app_db:gone,uploads:present` — for log lines.
fn target_summary(targets: &[TargetData]) -> String {
    targets
        .iter()
        .map(|t| format!("{}:{}", t.target, t.data))
        .collect::<Vec<_>>()
        .join(",")
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
        }
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
        // What one purge transaction covers: several target batches.
        let s = &self.config.scheduler;
        let claim = (s.batch_size * s.batches_per_transaction) as i64;
        let mut report = SweepReport::default();
        let mut claims = ClaimedBatch::default();
        // The first claim overlaps nothing, so it is one batch; the transaction purging it
        // claims a whole transaction's worth beside its targets.
        let mut asked = s.batch_size as i64;
        if !stop.is_cancelled() {
            claims = self.claim_alone(now, asked).await?;
        }
        // A committed transaction's log lines, written while the next one records its first
        // batch, in order; on any way out of here (an error, a panic) they are written at once.
        let mut lines = PendingLines(None);
        // Each purge transaction claims the next one's work while its targets run, so claims
        // cost no extra time. What was claimed is always purged, even when `stop` comes.
        while !claims.resources.is_empty() {
            crate::failpoint::crash("after_claim");
            let full = claims.resources.len() as i64 == asked;
            asked = claim;
            let want_next = full && !stop.is_cancelled();
            let done = self
                .purge_claimed(claims, now, want_next.then_some(claim), &mut lines.0)
                .await?;
            report.add(done.report);
            self.mark_progress();
            lines.replace(done.log);
            claims = match done.next {
                Some(next) => next,
                // The claim beside the targets failed (it was logged): claim on its own.
                None if want_next && !stop.is_cancelled() => self.claim_alone(now, claim).await?,
                None => ClaimedBatch::default(),
            };
        }
        drop(lines);
        if !stop.is_cancelled() {
            report.add(self.purge_accounts(now, stop).await?);
        }
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

    /// Starts a purge transaction's claims, with the hold lock held shared (`gate`) and before
    /// any target runs, in a ledger transaction of its own: claims an active hold covers go
    /// back untouched (and their blocks are recorded); claims taken over whose purge may have
    /// started (a crash) and that a hold now keeps, or that are no longer due, are found out
    /// first (`find_out`): gone everywhere → recorded purged with a receipt saying so, intact
    /// everywhere → given back, anything else → `interrupted` (issue 30); and the batch is
    /// marked started, so a hold placed after this transaction counts what is left `in_flight`.
    async fn start(
        &self,
        claims: ClaimedBatch,
        holds: &HoldSet,
        now: Timestamp,
        log: &mut BatchLog,
    ) -> Result<Started, SweepError> {
        let mut report = SweepReport::default();
        let mut free: Vec<ResourceRow> = Vec::with_capacity(claims.resources.len());
        let (mut held_ids, mut blocks) = (Vec::new(), Vec::new());
        let (mut unsure, mut taken_over) = (Vec::new(), Vec::new());
        let mut policy = None;
        for r in claims.resources {
            let matching: Vec<(i64, String)> = holds
                .matching(&r.hold_subject())
                .iter()
                .map(|h| (h.id, h.case_ref.clone()))
                .collect();
            // `claim_batch` is cleared by a takeover from a batch that may have started.
            let touched = r.claim_batch.is_none();
            let reschedule = match touched {
                true => self.no_longer_due(&r, now, &mut policy).await?,
                false => None,
            };
            if matching.is_empty() && reschedule.is_none() {
                if touched {
                    taken_over.push(r.id.clone());
                }
                free.push(r);
            } else if touched {
                unsure.push(Unsure {
                    row: r,
                    holds: matching,
                    reschedule,
                });
            } else {
                for (h, case) in matching {
                    blocks.push((r.id.clone(), h));
                    log.cases.insert(h, case);
                }
                held_ids.push(r.id.clone());
                log.held_info.insert(r.id.clone(), (r.kind, r.account));
            }
        }
        report.held = held_ids.len() as u64;
        let found = self.find_out(&unsure).await;

        let mut st = self.ledger.begin().await?;
        if !held_ids.is_empty() {
            log.new_blocks = st.add_blocks("resource", &blocks, now).await?;
            st.release_claims_held(&held_ids, &self.instance).await?;
        }
        let mut drafts = Vec::new();
        let mut lines = Vec::new();
        let (mut gone, mut settled, mut interruptions, mut outcomes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut unsure_blocks = Vec::new();
        for (u, targets) in unsure.iter().zip(&found) {
            let findings: Vec<TargetFinding> = targets.iter().map(finding).collect();
            let verdict = rules::interrupted_purge(&findings);
            if verdict == InterruptedPurge::Gone {
                gone.push((u, targets));
                continue;
            }
            let r = &u.row;
            let (purge_after, rule) = match &u.reschedule {
                Some(s) => (s.purge_after, s.rule),
                None => (r.purge_after, r.rule),
            };
            let state = match verdict {
                InterruptedPurge::Interrupted => ResourceState::Interrupted,
                _ => r.unclaimed_state(),
            };
            settled.push(SettledClaim {
                id: r.id.clone(),
                state,
                held: !u.holds.is_empty(),
                purge_after,
                rule,
            });
            unsure_blocks.extend(u.holds.iter().map(|(h, _)| (r.id.clone(), *h)));
            let hold_ids: Vec<i64> = u.holds.iter().map(|(h, _)| *h).collect();
            let subject = format!("{}/{}", r.kind, r.id);
            let summary = target_summary(targets);
            let interrupted = verdict == InterruptedPurge::Interrupted;
            let (action, outcome) = match interrupted {
                true => ("resource.purge_interrupted", InFlightOutcome::Interrupted),
                false => ("resource.purge_found_intact", InFlightOutcome::Kept),
            };
            let draft = AuditDraft::new(
                now,
                action,
                subject,
                json!({"account": r.account, "holds": hold_ids, "no_longer_due": u.reschedule.is_some(), "targets": targets}),
            );
            outcomes.push((r.id.clone(), outcome));
            lines.push((interrupted, r, hold_ids, summary, draft, targets));
        }
        if !unsure_blocks.is_empty() {
            st.add_blocks("resource", &unsure_blocks, now).await?;
        }
        let settled_ids: HashSet<String> = st
            .settle_claims(&settled, &self.instance)
            .await?
            .into_iter()
            .collect();
        lines.retain(|l| settled_ids.contains(&l.1.id));
        for (interrupted, r, _, _, draft, targets) in &lines {
            drafts.push(draft.clone());
            if *interrupted {
                interruptions.push((
                    r.id.clone(),
                    serde_json::to_string(targets).unwrap_or_else(|_| "[]".into()),
                ));
                report.interrupted += 1;
            } else {
                report.found_intact += 1;
            }
        }
        st.record_interruptions(&interruptions, now).await?;
        // Gone everywhere: the purge happened before whatever keeps it now; record it.
        let mut by_cause: BTreeMap<Cause, Vec<String>> = BTreeMap::new();
        for (u, _) in &gone {
            by_cause
                .entry(cause_of(&u.row))
                .or_default()
                .push(u.row.id.clone());
        }
        let mut recorded = HashSet::new();
        for (cause, ids) in &by_cause {
            recorded.extend(st.finish_purged(ids, *cause, &self.instance, now).await?);
        }
        let mut gone_lines = Vec::new();
        for (u, targets) in &gone {
            let r = &u.row;
            if !recorded.contains(&r.id) {
                continue;
            }
            let removed: Vec<(String, Removed)> = targets
                .iter()
                .map(|t| (t.target.clone(), Removed::default()))
                .collect();
            let mut receipt = PurgeReceipt::new(r, &removed, now);
            receipt.found_gone = Some(FoundGone {
                holds: u.holds.iter().map(|(h, _)| *h).collect(),
                no_longer_due: u.reschedule.is_some(),
            });
            drafts.push(AuditDraft::with_details(
                now,
                "resource.purged",
                format!("{}/{}", r.kind, r.id),
                &receipt,
            ));
            outcomes.push((r.id.clone(), InFlightOutcome::Purged));
            report.purged += 1;
            report.found_gone += 1;
            *report.purged_by_kind.entry(r.kind.clone()).or_default() += 1;
            gone_lines.push((
                r.clone(),
                receipt.found_gone.map(|f| f.holds).unwrap_or_default(),
            ));
        }
        outcomes.retain(|(id, o)| *o == InFlightOutcome::Purged || settled_ids.contains(id));
        st.resolve_in_flight(&outcomes, now).await?;
        let start_targets = !free.is_empty();
        if let (true, Some(b)) = (start_targets, claims.batch) {
            st.start_batch(b, now).await?;
        }
        st.commit_with_audit(&drafts).await?;

        for (r, holds) in gone_lines {
            info!(kind = %r.kind, id = %r.id, account = %r.account, holds = ?holds,
                "purge found done after a crash: its data is gone from every target; recorded purged");
        }
        for (interrupted, r, holds, summary, _, _) in lines {
            if interrupted {
                warn!(kind = %r.kind, id = %r.id, account = %r.account, holds = ?holds, targets = %summary,
                    "purge interrupted by a crash: data partly gone or not known; resource is now `interrupted`");
            } else {
                info!(kind = %r.kind, id = %r.id, account = %r.account, holds = ?holds, targets = %summary,
                    "purge found not done after a crash: its data is intact; given back");
            }
        }
        Ok(Started {
            free,
            batch: claims.batch,
            taken_over,
            report,
        })
    }

    /// For a claim taken over: `Some(new schedule)` when, under the policy in force, it is no
    /// longer due now (a policy lengthened meanwhile); `None` while it still is, or when that
    /// cannot be worked out (then it stays due, as claimed).
    async fn no_longer_due(
        &self,
        r: &ResourceRow,
        now: Timestamp,
        policy: &mut Option<Option<crate::rules::SchedulePolicy>>,
    ) -> Result<Option<Reschedule>, StoreError> {
        if policy.is_none() {
            *policy = Some(crate::policy::in_force(&self.ledger).await?);
        }
        let Some(Some(policy)) = policy.as_ref() else {
            return Ok(None);
        };
        let Some(kind) = policy.kinds.get(&r.kind) else {
            return Ok(None);
        };
        let Some(account) = self.ledger.account(&r.account).await? else {
            return Ok(None);
        };
        let approved = self
            .ledger
            .org(&r.org)
            .await?
            .is_some_and(|o| o.zdr == crate::model::ZdrStatus::Approved);
        let mut unclaimed = r.clone();
        unclaimed.state = r.unclaimed_state();
        Ok(
            match rules::resource_schedule(&unclaimed.facts(), &account.facts(), approved, kind) {
                Some(s) if rules::is_due(s.purge_after, now) => None,
                s => Some(Reschedule {
                    purge_after: s.map(|s| s.purge_after),
                    rule: s.map(|s| s.rule),
                }),
            },
        )
    }

    /// Asks each of the resource's targets what it still holds of it (see
    /// `Target::remaining`). A target that is not configured, or that fails, cannot tell.
    async fn find_out(&self, unsure: &[Unsure]) -> Vec<Vec<TargetData>> {
        let mut out = Vec::with_capacity(unsure.len());
        for u in unsure {
            let r = &u.row;
            let item = r.purge_item();
            let names = self.config.kinds.get(&r.kind).map(|k| k.targets.clone());
            let Some(names) = names else {
                out.push(vec![TargetData {
                    target: "-".into(),
                    data: "unknown".into(),
                    error: Some(format!("kind `{}` is not in the config", r.kind)),
                }]);
                continue;
            };
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                let answer = match self.targets.get(&name) {
                    None => Err(format!("target `{name}` is not configured")),
                    Some(t) => t
                        .remaining(&r.kind, std::slice::from_ref(&item))
                        .await
                        .pop()
                        .unwrap_or_else(|| Err("no answer".into())),
                };
                found.push(match answer {
                    Ok(0) => TargetData {
                        target: name,
                        data: "gone".into(),
                        error: None,
                    },
                    Ok(_) => TargetData {
                        target: name,
                        data: "present".into(),
                        error: None,
                    },
                    Err(e) => TargetData {
                        target: name,
                        data: "unknown".into(),
                        error: Some(e),
                    },
                });
            }
            out.push(found);
        }
        out
    }

    /// Purges what was claimed inside one purge transaction (Invariant H: see `store`), in
    /// target batches of `scheduler.batch_size`: the targets run the batches one after another
    /// in their own task (another core), and this transaction records each batch, with its
    /// receipts, while the targets run the next. With `claim_next`, up to that many due
    /// resources are claimed first, beside the first targets, and returned (see
    /// `Ledger::claim_next_batch`); `None` comes back if that claim failed.
    async fn purge_claimed(
        &self,
        claims: ClaimedBatch,
        now: Timestamp,
        claim_next: Option<i64>,
        previous: &mut Option<BatchLog>,
    ) -> Result<BatchDone, SweepError> {
        let mut report = SweepReport::default();
        let mut log = BatchLog::default();
        // No hold is placed or released from here until this transaction commits.
        let mut gate = self.ledger.open_purge_gate().await?;
        let holds = HoldSet::new(gate.active_holds().await?);
        let started = self.start(claims, &holds, now, &mut log).await?;
        report.add(started.report);
        let (free, taken_over) = (started.free, started.taken_over);
        crate::failpoint::crash("after_start");
        let mut tx = gate.begin_purge().await?;

        // The targets' task sends each batch's outcome as it finishes it. Aborted if this
        // future is dropped: targets never outlive their purge transaction.
        let free: Arc<[ResourceRow]> = free.into();
        let batches: Vec<(usize, Vec<KindWork>)> = free
            .chunks(self.config.scheduler.batch_size)
            .map(|part| (part.len(), kind_work(part)))
            .collect();
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let (config, targets) = (self.config.clone(), self.targets.clone());
        // Set when recording fails: no further batch starts (see below).
        let give_up = CancellationToken::new();
        let targets = AbortOnDropHandle::new(tokio::spawn({
            let give_up = give_up.clone();
            async move {
                for (n, work) in batches {
                    if give_up.is_cancelled() {
                        break;
                    }
                    if done
                        .send(run_targets(&config, &targets, work, n).await)
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }));
        let next = match claim_next {
            None => None,
            Some(limit) => {
                match self
                    .ledger
                    .claim_next_batch(&mut tx, now, limit, &self.instance, self.lease_until())
                    .await
                {
                    Ok(next) => Some(next),
                    Err(e) => {
                        warn!(error = %e, "could not claim the next batch beside this one's targets; claiming it after");
                        None
                    }
                }
            }
        };
        let mut outcome: Vec<ItemOutcome> = Vec::with_capacity(free.len());
        let recorded = async {
            while let Some((part_outcome, failures_by_target)) = finished.recv().await {
                let part = outcome.len()..outcome.len() + part_outcome.len();
                report.batches += 1;
                for (t, n) in failures_by_target {
                    *report.failures_by_target.entry(t).or_default() += n;
                }
                let part_outcome = self
                    .record_batch(
                        &mut tx,
                        (&free, part),
                        part_outcome,
                        now,
                        previous,
                        &mut report,
                        &mut log,
                    )
                    .await?;
                outcome.extend(part_outcome);
                crate::failpoint::crash(&format!("after_batch_recorded_{}", report.batches - 1));
            }
            Ok::<_, SweepError>(())
        }
        .await;
        if let Err(e) = recorded {
            // The batch the targets are running may be past stopping (blocking deletes, a
            // script the server already has): wait for it with this transaction, and so the
            // hold lock, still held, so no hold can be placed while its deletes run (Invariant
            // H). Its resources stay `purging` and are taken over after their lease.
            give_up.cancel();
            drop(finished);
            let _ = targets.await;
            return Err(e);
        }
        match targets.await {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(SweepError::PurgeTask(e.to_string())),
        }
        if let Some(b) = started.batch {
            tx.end_claimed_batch(b).await?;
        }
        if !taken_over.is_empty() {
            // Claims taken over whose purge may have started, now finished: a hold released
            // since its answer called them in flight learns how they ended.
            let done: Vec<(String, InFlightOutcome)> = taken_over
                .into_iter()
                .filter(|id| log.recorded.contains(id))
                .map(|id| (id, InFlightOutcome::PurgedAfterRelease))
                .collect();
            tx.resolve_in_flight(&done, now).await?;
        }
        crate::failpoint::crash("before_commit");
        tx.commit_with_audit(&[]).await?;
        crate::failpoint::crash("after_commit");
        log.free = free;
        log.outcome = outcome;
        Ok(BatchDone { report, next, log })
    }

    /// Records one target batch (`free[part]`, whose outcome it hands back) in the purge
    /// transaction: purged ones by cause (only while our lease holds) with their receipts,
    /// failures with backoff. While the ledger records them, on this thread, a thread of the
    /// blocking pool writes a batch's worth of the previous purge transaction's log lines and
    /// this batch's receipts, as if every purge will be recorded (the sweep leaves a core idle).
    #[allow(clippy::too_many_arguments)]
    async fn record_batch(
        &self,
        tx: &mut LedgerTx,
        (free, part): (&Arc<[ResourceRow]>, std::ops::Range<usize>),
        outcome: Vec<ItemOutcome>,
        now: Timestamp,
        previous: &mut Option<BatchLog>,
        report: &mut SweepReport,
        log: &mut BatchLog,
    ) -> Result<Vec<ItemOutcome>, SweepError> {
        let rows = &free[part.clone()];
        let mut ok_by_cause: BTreeMap<Cause, Vec<String>> = BTreeMap::new();
        let mut failures = Vec::new();
        for (r, o) in rows.iter().zip(&outcome) {
            match &o.error {
                None => ok_by_cause
                    .entry(cause_of(r))
                    .or_default()
                    .push(r.id.clone()),
                Some(e) => {
                    let attempt = r.attempts + 1;
                    let retry_at = (attempt < self.config.scheduler.max_attempts as i64)
                        .then(|| now.plus(self.backoff(attempt)));
                    failures.push(PurgeFailure {
                        id: r.id.clone(),
                        retry_at,
                        error: e.clone(),
                    });
                }
            }
        }
        let receipts = tokio::task::spawn_blocking({
            // Should this future be dropped meanwhile, the lines not written yet are written
            // when the task's result is dropped (`PendingLines`): none is lost, though they may
            // then follow lines written after them.
            let (free, part) = (free.clone(), part.clone());
            let mut lines = PendingLines(previous.take());
            let n = self.config.scheduler.batch_size;
            move || {
                if let Some(lines) = lines.0.as_mut() {
                    lines.emit_some(n);
                }
                let drafts: Vec<Option<(AuditDraft, Removed)>> = free[part]
                    .iter()
                    .zip(&outcome)
                    .map(|(r, o)| {
                        o.error.is_none().then(|| {
                            let receipt = PurgeReceipt::new(r, &o.removed, now);
                            let draft = AuditDraft::with_details(
                                now,
                                "resource.purged",
                                format!("{}/{}", r.kind, r.id),
                                &receipt,
                            );
                            (draft, removed_total(&o.removed))
                        })
                    })
                    .collect();
                (lines, drafts, outcome)
            }
        });
        let recorded = async {
            let mut recorded = HashSet::new();
            for (cause, ids) in &ok_by_cause {
                recorded.extend(tx.finish_purged(ids, *cause, &self.instance, now).await?);
            }
            let failed: HashSet<String> = tx
                .record_failures(&failures, &self.instance, now)
                .await?
                .into_iter()
                .collect();
            Ok::<_, StoreError>((recorded, failed))
        }
        .await;
        let (mut lines, receipts, outcome) = match receipts.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(SweepError::PurgeTask(e.to_string())),
        };
        *previous = lines.0.take();
        let (recorded, failed_recorded) = recorded?;

        let mut drafts = Vec::with_capacity(rows.len());
        for (r, receipt) in rows.iter().zip(receipts) {
            // Only purges recorded under our lease get a receipt.
            if let Some((draft, total)) = receipt
                && recorded.contains(&r.id)
            {
                drafts.push(draft);
                report.purged += 1;
                report.removed += total;
                *report.purged_by_kind.entry(r.kind.clone()).or_default() += 1;
            }
        }
        for f in &failures {
            if failed_recorded.contains(&f.id) {
                let r = rows
                    .iter()
                    .find(|r| r.id == f.id)
                    .expect("failure of a claimed resource");
                drafts.push(AuditDraft::new(
                    now,
                    "resource.purge_failed",
                    format!("{}/{}", r.kind, r.id),
                    json!({"account": r.account, "attempt": r.attempts + 1, "error": f.error, "retry_at": f.retry_at, "gave_up": f.retry_at.is_none()}),
                ));
                report.failed += 1;
                if f.retry_at.is_none() {
                    report.gave_up += 1;
                }
            }
        }
        tx.append_audit(&drafts).await?;
        log.recorded.extend(recorded);
        log.failed_recorded.extend(failed_recorded);
        log.failures.extend(failures);
        Ok(outcome)
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
        Span(((exp as f64) * jitter) as i64)
    }

    /// R8: accounts whose grace passed, all of whose resources are purged, and that no hold
    /// keeps, get their account-level targets run and are marked purged.
    async fn purge_accounts(
        &self,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        let mut cursor: (Timestamp, String) = (Timestamp(i64::MIN), String::new());
        loop {
            let page = self
                .ledger
                .due_accounts(
                    now,
                    (cursor.0, &cursor.1),
                    self.config.scheduler.batch_size as i64,
                )
                .await?;
            let Some(last) = page.last() else { break };
            cursor = (
                last.purge_after.unwrap_or(Timestamp(i64::MIN)),
                last.id.clone(),
            );
            for a in &page {
                if stop.is_cancelled() {
                    return Ok(report);
                }
                if self.purge_account(a, now).await? {
                    report.accounts_purged += 1;
                }
            }
        }
        Ok(report)
    }

    async fn purge_account(&self, a: &AccountRow, now: Timestamp) -> Result<bool, SweepError> {
        let mut tx = self.ledger.begin_purge().await?;
        if tx.has_unpurged(&a.id).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let holds = HoldSet::new(tx.active_holds().await?);
        let blocking = holds.blocking_account(&a.id, &a.org);
        if !blocking.is_empty() {
            let pairs: Vec<(String, i64)> = blocking.iter().map(|h| (a.id.clone(), h.id)).collect();
            let cases: HashMap<i64, String> = blocking
                .iter()
                .map(|h| (h.id, h.case_ref.clone()))
                .collect();
            let new = tx.add_blocks("account", &pairs, now).await?;
            tx.commit_with_audit(&[]).await?;
            for (_, hold) in new {
                info!(account = %a.id, hold = hold, case = %cases.get(&hold).cloned().unwrap_or_default(), "account purge blocked by hold");
            }
            return Ok(false);
        }
        let mut removed = Vec::new();
        let mut error = None;
        for tname in &self.config.account_targets {
            match self.targets.get(tname) {
                None => error = Some(format!("target `{tname}` is not configured")),
                Some(t) => {
                    let started = std::time::Instant::now();
                    let r = t.purge_account(&a.id, &a.org).await;
                    crate::metrics::record_target_purge(tname, started.elapsed());
                    match r {
                        Ok(r) => removed.push((tname.clone(), r)),
                        Err(e) => error = Some(e),
                    }
                }
            }
            if error.is_some() {
                break;
            }
        }
        if let Some(e) = error {
            tx.rollback().await?;
            let mut failures = self.account_failures.lock().expect("not poisoned");
            if failures.get(&a.id) != Some(&e) {
                warn!(account = %a.id, error = %e, message_id = crate::telemetry::message_id::TARGET_FAILURE, "account purge failed; retried every sweep");
                failures.insert(a.id.clone(), e);
            }
            return Ok(false);
        }
        crate::failpoint::crash("account_after_targets");
        if !tx.finish_account_purged(&a.id, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let counts = self.ledger_counts_for(&mut tx, &a.id).await?;
        let draft = AuditDraft::new(
            now,
            "account.purged",
            format!("account/{}", a.id),
            json!({
                "org": a.org, "deletion_requested_at": a.deletion_requested_at, "purge_after": a.purge_after,
                "purged_at": now, "resources_purged": counts,
                "targets": removed.iter().map(|(t, x)| x.json_for(t)).collect::<Vec<_>>(),
            }),
        );
        tx.commit_with_audit(&[draft]).await?;
        crate::failpoint::crash("account_after_commit");
        self.account_failures
            .lock()
            .expect("not poisoned")
            .remove(&a.id);
        let total = removed.iter().fold(Removed::default(), |mut acc, (_, x)| {
            acc += *x;
            acc
        });
        info!(
            account = %a.id, org = %a.org,
            deletion_requested_at = %a.deletion_requested_at.map(|t| t.to_string()).unwrap_or_default(),
            targets = %removed.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(","),
            rows = total.rows, files = total.files, message_id = crate::telemetry::message_id::PURGED, "account purged"
        );
        Ok(true)
    }

    async fn ledger_counts_for(
        &self,
        tx: &mut crate::store::LedgerTx,
        account: &str,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let scope = crate::holds::HoldScope {
            account: Some(account.to_string()),
            ..Default::default()
        };
        Ok(tx
            .count_matching(&scope)
            .await?
            .into_iter()
            .filter(|c| c.state == "purged")
            .map(|c| (c.kind, c.count))
            .collect())
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
        ::metrics::counter!(crate::metrics::PURGE_FAILURES, "target" => target.clone()).increment(*n);
    }
    ::metrics::counter!(crate::metrics::PURGES_GAVE_UP).increment(report.gave_up);
    ::metrics::counter!(crate::metrics::PURGES_HELD).increment(report.held);
    for (outcome, n) in [
        ("gone", report.found_gone),
        ("intact", report.found_intact),
        ("interrupted", report.interrupted),
    ] {
        if n > 0 {
            ::metrics::counter!(crate::metrics::PURGES_FOUND_OUT, "outcome" => outcome).increment(n);
        }
    }
    ::metrics::counter!(crate::metrics::ACCOUNTS_PURGED).increment(report.accounts_purged);
    ::metrics::counter!(crate::metrics::ROWS_REMOVED).increment(report.removed.rows);
    ::metrics::counter!(crate::metrics::FILES_REMOVED).increment(report.removed.files);
    ::metrics::counter!(crate::metrics::SWEEPS, "outcome" => "ok").increment(1);
    ::metrics::histogram!(crate::metrics::SWEEP_DURATION).record(took.as_secs_f64());
    ::metrics::gauge!(crate::metrics::LAST_SUCCESS).set(finished.millis() as f64 / 1000.0);
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResourceState, Rule};

    fn row(rule: Option<Rule>, deleted: bool) -> ResourceRow {
        ResourceRow {
            id: "c1".into(),
            kind: "conversation".into(),
            account: "acct \"1\"".into(),
            org: "org-1".into(),
            created_at: Timestamp(1_700_000_000_123),
            endpoint: None,
            state: ResourceState::Purging,
            deleted_at: deleted.then_some(Timestamp(1_700_000_100_000)),
            cause: None,
            purge_after: deleted.then_some(Timestamp(1_702_592_100_000)),
            rule,
            held: false,
            lease_owner: Some("i".into()),
            lease_until: Some(Timestamp(1_702_592_200_000)),
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
        let now = Timestamp(1_702_592_150_001);
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
