//! The sweep: claim due work → purge it in the targets → record it, batch by batch (§3 R7–R9,
//! §7). Level-triggered: every sweep purges whatever is due *now*, so a missed or skipped sweep
//! leaves a backlog, never a missed purge. `sweep_once` is the unit tests and the daemon drive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use crate::audit::AuditDraft;
use crate::clock::Clock;
use crate::config::Config;
use crate::holds::HoldSet;
use crate::model::{Cause, Span, Timestamp};
use crate::store::{
    AccountRow, ClaimedBatch, Ledger, LedgerTx, PurgeFailure, ResourceRow, StoreError, SweepRun,
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
        self.purged + self.failed + self.held + self.accounts_purged > 0
    }

    fn add(&mut self, o: SweepReport) {
        self.purged += o.purged;
        self.failed += o.failed;
        self.gave_up += o.gave_up;
        self.held += o.held;
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

/// Failpoints for crash tests: `RETENTIOND_CRASH_AT=<name>` makes the process exit abruptly
/// there. Compiled in only with the `failpoints` feature.
#[cfg(feature = "failpoints")]
pub fn failpoint(name: &str) {
    if std::env::var("RETENTIOND_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: exiting");
        std::process::exit(86);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failpoint(_name: &str) {}

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
    org: &'a str,
    purge_after: Option<Timestamp>,
    purged_at: Timestamp,
    rule: Option<&'static str>,
    targets: Vec<TargetRemoved<'a>>,
}

#[derive(Serialize)]
struct TargetRemoved<'a> {
    files: u64,
    rows: u64,
    target: &'a str,
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
            org: &r.org,
            purge_after: r.purge_after,
            purged_at: now,
            rule: r.rule.map(|x| x.as_str()),
            targets: removed
                .iter()
                .map(|(t, x)| TargetRemoved {
                    files: x.files,
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
                let targets: Vec<String> = removed
                    .iter()
                    .map(|(t, x)| format!("{t}:{}r/{}f", x.rows, x.files))
                    .collect();
                info!(
                    kind = %r.kind, id = %r.id, account = %r.account,
                    cause = %cause_of(r),
                    deleted_at = %r.deleted_at.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                    grace = %grace, targets = %targets.join(","), rows = total.rows, files = total.files,
                    "purged"
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
                        warn!(id = %f.id, error = %f.error, retry_at = %t, "purge failed; will retry")
                    }
                    None => {
                        warn!(id = %f.id, error = %f.error, "purge failed too many times; resource is now `failed` (see `retentiond retry`)")
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
            items: idx
                .iter()
                .map(|&i| PurgeItem {
                    id: part[i].id.clone(),
                    kind: kind.to_string(),
                    account: part[i].account.clone(),
                    org: part[i].org.clone(),
                })
                .collect(),
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
            let results = target.purge(kind, items).await;
            for (&i, r) in idx.iter().zip(results) {
                match r {
                    Ok(removed) => outcome[i].removed.push((tname.clone(), removed)),
                    Err(e) => {
                        *failures.entry(tname.clone()).or_default() += 1;
                        outcome[i].error.get_or_insert(e);
                    }
                }
            }
            failpoint(&format!("after_target_{ti}"));
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
            failpoint("after_claim");
            let full = claims.resources.len() as i64 == asked;
            asked = claim;
            let want_next = full && !stop.is_cancelled();
            if let Some(b) = claims.batch {
                self.ledger.start_claimed_batch(b, now).await?;
            }
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
        Ok(ClaimedBatch {
            resources: self
                .ledger
                .claim_due(now, limit, &self.instance, self.lease_until())
                .await?,
            batch: None,
        })
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
        let mut tx = self.ledger.begin_purge().await?;
        let holds = HoldSet::new(tx.active_holds().await?);

        // Holds first: anything an active hold covers goes back untouched.
        let mut free: Vec<ResourceRow> = Vec::with_capacity(claims.resources.len());
        let mut held_ids = Vec::new();
        let mut blocks = Vec::new();
        let mut log = BatchLog::default();
        for r in claims.resources {
            let matching = holds.matching(&r.hold_subject());
            if matching.is_empty() {
                free.push(r);
            } else {
                for h in matching {
                    blocks.push((r.id.clone(), h.id));
                    log.cases.insert(h.id, h.case_ref.clone());
                }
                held_ids.push(r.id.clone());
                log.held_info.insert(r.id.clone(), (r.kind, r.account));
            }
        }
        if !held_ids.is_empty() {
            report.held = held_ids.len() as u64;
            log.new_blocks = tx.add_blocks("resource", &blocks, now).await?;
            tx.release_claims_held(&held_ids, &self.instance).await?;
        }

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
                failpoint(&format!("after_batch_recorded_{}", report.batches - 1));
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
        if let Some(b) = claims.batch {
            tx.end_claimed_batch(b).await?;
        }
        failpoint("before_commit");
        tx.commit_with_audit(&[]).await?;
        failpoint("after_commit");
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
        let base = self.config.scheduler.retry_backoff.millis().max(1);
        let cap = self.config.scheduler.retry_backoff_max.millis().max(base);
        let exp = base
            .saturating_mul(1i64 << (attempt - 1).clamp(0, 30))
            .min(cap);
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
                Some(t) => match t.purge_account(&a.id, &a.org).await {
                    Ok(r) => removed.push((tname.clone(), r)),
                    Err(e) => error = Some(e),
                },
            }
            if error.is_some() {
                break;
            }
        }
        if let Some(e) = error {
            tx.rollback().await?;
            let mut failures = self.account_failures.lock().expect("not poisoned");
            if failures.get(&a.id) != Some(&e) {
                warn!(account = %a.id, error = %e, "account purge failed; retried every sweep");
                failures.insert(a.id.clone(), e);
            }
            return Ok(false);
        }
        failpoint("account_after_targets");
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
                "targets": removed.iter().map(|(t, x)| json!({"target": t, "rows": x.rows, "files": x.files})).collect::<Vec<_>>(),
            }),
        );
        tx.commit_with_audit(&[draft]).await?;
        failpoint("account_after_commit");
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
            rows = total.rows, files = total.files, "account purged"
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
        }
    }

    /// The receipt's text is what the `json!` object it replaced gave (same keys, same order),
    /// so chains written before and after verify the same way.
    #[test]
    fn a_purge_receipt_serializes_like_the_json_object() {
        let now = Timestamp(1_702_592_150_001);
        let removed = vec![
            ("app_db".to_string(), Removed { rows: 11, files: 0 }),
            ("uploads".to_string(), Removed { rows: 0, files: 3 }),
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
                    "targets": removed.iter().map(|(t, x)| json!({"target": t, "rows": x.rows, "files": x.files})).collect::<Vec<_>>(),
                }),
            );
            assert_eq!(typed.details, object.details);
            assert_eq!(removed_total(&removed), Removed { rows: 11, files: 3 });
        }
    }
}
