//! Passes over windowed kinds (issue 29): each sweep deletes, per kind and target, the rows of
//! the application's table that are due, oldest first, batch by batch.
//!
//! Invariant: a batch deletes no row that an active hold matched when it started, and no hold
//! is placed or released while it runs (Invariant H, as for items); one instance at a time runs
//! the pass of a (kind, target), and a pass cut short by a crash is finished by the next one,
//! whose audit entry says so. The ledger keeps no state per row.
//!
//! Mechanism: a pass takes a lease on its (kind, target) row in `window_passes`. Each batch
//! enters the purge gate (the hold lock, shared), reads the active holds through it, renders
//! the plan's DELETE (`crate::window`) and runs it in the target, and leaves the gate once the
//! DELETE has committed; the rows it deleted are then added to the pass (renewing the lease).
//! ZDR reasons run before age, so what they find can be told apart: ZDR rows found after a
//! pass that started after the approval are a violation (W5). At the end, a COUNT of what the
//! plan still deletes must be 0 (or the pass failed and the next one retries), and the pass is
//! finished with its audit entry in one ledger transaction.
//!
//! W3 (`partitioned = true`): a partition whose whole range is due is dropped whole inside the
//! gate instead (see [`Sweeper::drop_partition`]); the entry names each partition dropped, with
//! its rows as the server estimates them, since counting them would read every row a drop
//! exists not to read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{SweepError, SweepReport, Sweeper};
use crate::audit::AuditDraft;
use crate::model::{Span, Timestamp, ZdrStatus};
use crate::rules::KindPolicy;
use crate::targets::{Partition, PartitionState, SqlTarget};
use crate::window::{
    self, PartitionFate, PartitionRange, Reason, WindowPlan, WindowPolicy, ZdrOrg,
};

/// A partition a pass dropped whole (W3), as its audit entry names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedPartition {
    pub partition: String,
    /// Its `FOR VALUES FROM (…) TO (…)`.
    pub bound: String,
    /// `None`: a crashed pass dropped it before its rows were recorded.
    pub rows: Option<u64>,
    /// `rows` is the planner's estimate, not a count (see [`crate::targets::PartitionRows`]).
    pub estimated: bool,
}

/// A partition a pass recorded before detaching it (W3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingDrop {
    table: String,
    bound: String,
}

/// The ledger's record of a pass's drops (`window_passes.dropping`, JSON): the partition being
/// dropped, if any, and those dropped so far, so that neither is lost to a crash: the pass that
/// takes over finishes the first and puts the others in its audit entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DropLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<PendingDrop>,
    #[serde(default)]
    dropped: Vec<DroppedPartition>,
}

impl DropLog {
    /// Reads a record; the first form, one partition `{"table", "bound"}`, is a pending drop.
    fn parse(text: &str) -> Option<DropLog> {
        if let Ok(pending) = serde_json::from_str::<PendingDrop>(text) {
            return Some(DropLog {
                pending: Some(pending),
                dropped: Vec::new(),
            });
        }
        serde_json::from_str(text).ok()
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How a drop of one partition ended (W3).
#[derive(Debug, Clone, PartialEq, Eq)]
enum DropOutcome {
    /// Dropped.
    Dropped(DroppedPartition),
    /// Not dropped: a hold keeps a row of it (or it is not there to drop); it is batched.
    Kept,
    /// The pass is no longer ours.
    Lost,
}

/// One pass over a windowed kind's table in one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowPassReport {
    pub kind: String,
    pub target: String,
    pub cutoff: Option<Timestamp>,
    /// Rows deleted by statement, those of a crashed pass it finished included.
    pub rows: u64,
    /// Partitions dropped whole (W3), and the rows they held: not in `rows`, and estimated
    /// where the server has statistics (counting would read every row dropped).
    pub partitions: u64,
    pub partition_rows: u64,
    /// Due rows that holds keep back (`None`: could not be counted).
    pub held_back: Option<u64>,
    /// Rows ZDR deleted, by org, and those of them that are violations (W5).
    pub zdr_rows: BTreeMap<String, u64>,
    pub zdr_violations: BTreeMap<String, u64>,
    pub resumed: bool,
    pub error: Option<String>,
}

/// What a dry run finds for a windowed kind's table: what a pass would delete now and what
/// holds keep.
#[derive(Debug, Clone, Serialize)]
pub struct WindowPreview {
    pub kind: String,
    pub target: String,
    pub cutoff: Timestamp,
    pub rows: u64,
    pub held_back: u64,
    pub partitions: u64,
    /// The oldest row's `created_at` (`None`: the table is empty).
    pub oldest: Option<Timestamp>,
}

/// The windowed kinds, with their targets' tables: (kind, its policy, [(target name, target)]).
type WindowWork<'a> = Vec<(&'a str, &'a KindPolicy, Vec<(&'a str, &'a SqlTarget)>)>;

impl Sweeper {
    fn window_work(&self) -> WindowWork<'_> {
        self.config
            .kinds
            .iter()
            .filter(|(_, k)| k.tracking == window::Tracking::Window)
            .filter_map(|(name, k)| {
                let policy = self.config.policy.kinds.get(name)?;
                let targets = k
                    .targets
                    .iter()
                    .filter_map(|t| {
                        let sql = self.targets.get(t)?.as_sql()?;
                        sql.window(name).map(|_| (t.as_str(), sql))
                    })
                    .collect();
                Some((name.as_str(), policy, targets))
            })
            .collect()
    }

    /// The facts a plan needs besides the holds: the orgs' own windows and the ZDR orgs.
    async fn window_facts(
        &self,
        kind: &str,
        policy: &KindPolicy,
    ) -> Result<(WindowPolicy, BTreeMap<String, Span>, Vec<ZdrOrg>), SweepError> {
        let wpolicy = WindowPolicy {
            max_age: policy.max_age.unwrap_or(Span::ZERO),
            zdr_endpoints: policy.zdr_endpoints.clone(),
        };
        let org_windows = self
            .ledger
            .org_windows(kind)
            .await?
            .into_iter()
            .map(|(o, ms)| (o, Span::from_millis(ms)))
            .collect();
        let zdr = match &policy.zdr_endpoints {
            Some(_) => self
                .ledger
                .data_control_orgs()
                .await?
                .into_iter()
                .filter(|o| o.zdr == ZdrStatus::Approved)
                .map(|o| ZdrOrg {
                    approved_at: o.zdr_at.unwrap_or(o.updated_at),
                    org: o.id,
                })
                .collect(),
            None => Vec::new(),
        };
        Ok((wpolicy, org_windows, zdr))
    }

    /// Every windowed kind's pass over each of its tables.
    pub(super) async fn sweep_windows(
        &self,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        for (kind, policy, targets) in self.window_work() {
            for (tname, target) in targets {
                if stop.is_cancelled() {
                    return Ok(report);
                }
                let Some(pass) = self
                    .window_pass(kind, policy, tname, target, now, stop)
                    .await?
                else {
                    continue;
                };
                report.window_rows += pass.rows;
                if pass.error.is_some() {
                    report.window_failed += 1;
                }
                report.window_passes.push(pass);
            }
        }
        Ok(report)
    }

    /// One pass; `None` when another instance runs it.
    async fn window_pass(
        &self,
        kind: &str,
        policy: &KindPolicy,
        tname: &str,
        target: &SqlTarget,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Result<Option<WindowPassReport>, SweepError> {
        let Some(claim) = self
            .ledger
            .claim_window_pass(kind, tname, &self.instance, now, self.lease_until())
            .await?
        else {
            return Ok(None);
        };
        let (wpolicy, org_windows, zdr) = self.window_facts(kind, policy).await?;
        let (Some(mapping), Some(sql)) = (target.window(kind), target.window_sql(kind)) else {
            return Ok(None);
        };
        let has_id = mapping.id.is_some();
        let plan_with = |holds: &[crate::holds::ActiveHold]| {
            window::plan(kind, &wpolicy, &org_windows, &zdr, holds, has_id, now)
        };
        let reasons = plan_with(&[]).reasons();
        let mut by_reason: BTreeMap<Reason, u64> = BTreeMap::new();
        // The stored times must be in the mapping's format, or a cutoff means nothing.
        let mut error = target.window_oldest(kind).await.err();
        let mut lost = false;
        // W3: the drops a crashed pass recorded; one it left between DETACH and DROP is
        // finished first.
        let mut drops = DropLog::default();
        if let Some(text) = &claim.dropping {
            match DropLog::parse(text) {
                Some(log) => drops = log,
                None => {
                    error = error.or(Some(format!(
                        "target `{tname}`: the partitions being dropped are recorded as `{text}`, which this version cannot read"
                    )))
                }
            }
        }
        if let (None, Some(pending)) = (&error, drops.pending.clone()) {
            match self
                .finish_partition_drop(kind, tname, target, &pending, &plan_with)
                .await?
            {
                Ok(outcome) => {
                    drops.pending = None;
                    if let DropOutcome::Dropped(d) = outcome {
                        drops.dropped.push(d);
                    }
                    lost = !self.record_drops(kind, tname, &drops).await?;
                }
                Err(e) => error = Some(e),
            }
        }
        let parts = match target.window_partitions(kind).await {
            Ok(t) => t,
            Err(e) => {
                error = error.or(Some(e));
                Vec::new()
            }
        };
        let mut stopped = false;
        // A drop's record is left in the ledger until the next drop overwrites it or the loop
        // ends (one ledger write per partition): a pending drop of a partition already gone is
        // taken by the next pass as dropped.
        let mut recorded = false;
        let mut work = Vec::new();
        for reason in &reasons {
            for part in &parts {
                work.push((reason, part));
            }
        }
        'reasons: for (reason, part) in work {
            if error.is_some() || lost {
                break;
            }
            if stop.is_cancelled() {
                stopped = true;
                break;
            }
            let sql = window::render(mapping, target.dialect()).on_table(part.table.clone());
            if *reason == Reason::Age
                && let Some(range) = &part.range
            {
                let droppable = mapping.partitioned && !part.default && part.bound.is_some();
                match plan_with(&[]).partition_fate(range, droppable) {
                    PartitionFate::Young => continue,
                    PartitionFate::Batches => {}
                    PartitionFate::Drop | PartitionFate::DropUnlessKept(_) => {
                        match self
                            .drop_partition(
                                kind, tname, target, part, range, &plan_with, &mut drops,
                            )
                            .await?
                        {
                            Ok(DropOutcome::Dropped(_)) => {
                                recorded = true;
                                continue;
                            }
                            Ok(DropOutcome::Lost) => {
                                lost = true;
                                break 'reasons;
                            }
                            Ok(DropOutcome::Kept) => {}
                            Err(e) => {
                                error = Some(e);
                                break 'reasons;
                            }
                        }
                    }
                }
            }
            loop {
                if stop.is_cancelled() {
                    stopped = true;
                    break 'reasons;
                }
                let mut gate = self.ledger.open_purge_gate().await?;
                let holds = gate.active_holds().await?;
                let plan = plan_with(&holds);
                let deleted = target
                    .window_execute(&sql.delete_batch(&plan, reason, mapping.batch))
                    .await;
                drop(gate);
                let n = match deleted {
                    Ok(n) => n,
                    Err(e) => {
                        error = Some(e);
                        break 'reasons;
                    }
                };
                *by_reason.entry(reason.clone()).or_default() += n;
                crate::failpoint::crash("window_batch_deleted");
                if !self.add_window_rows(kind, tname, n).await? {
                    lost = true;
                    break 'reasons;
                }
                if n < mapping.batch as u64 {
                    break;
                }
            }
        }
        target.window_done().await;
        if recorded && !lost {
            lost = !self.record_drops(kind, tname, &drops).await?;
        }
        if lost {
            warn!(
                kind,
                target = tname,
                "window pass lost its lease to another instance; it stops here"
            );
            return Ok(None);
        }
        // Verify, and count what holds keep, against the holds as they are now.
        let holds = self.ledger.active_holds().await?;
        let plan = plan_with(&holds);
        if error.is_none() && !stopped {
            match target
                .window_count(&sql.count_deletable(&plan, &reasons))
                .await
            {
                Ok(0) => {}
                Ok(left) => {
                    error = Some(format!(
                        "target `{tname}`: {left} due row(s) of `{kind}` left after the pass"
                    ))
                }
                Err(e) => error = Some(e),
            }
        }
        let held_back = target
            .window_count(&sql.count_held_back(&plan, &reasons))
            .await
            .ok();
        self.finish_window_pass(
            kind, tname, &plan, by_reason, drops, held_back, error, claim, stopped,
        )
        .await
        .map(Some)
    }

    /// Adds a batch's rows to the pass and renews its lease; false when the pass is no longer
    /// ours.
    async fn add_window_rows(&self, kind: &str, tname: &str, n: u64) -> Result<bool, SweepError> {
        if n == 0 {
            return Ok(true);
        }
        Ok(self
            .ledger
            .window_progress(kind, tname, &self.instance, n as i64, self.lease_until())
            .await?)
    }

    /// Writes the pass's drops to the ledger and renews its lease; false when the pass is no
    /// longer ours.
    async fn record_drops(
        &self,
        kind: &str,
        tname: &str,
        drops: &DropLog,
    ) -> Result<bool, SweepError> {
        let text = (*drops != DropLog::default()).then(|| drops.to_json());
        Ok(self
            .ledger
            .window_dropping(
                kind,
                tname,
                &self.instance,
                text.as_deref(),
                self.lease_until(),
            )
            .await?)
    }

    /// W3: drops a partition whose whole range is due, inside the purge gate, unless an active
    /// hold keeps a row of it (then `Kept`: its unheld rows go in batches). The partition is
    /// recorded in the ledger before it is detached, so a crash before the DROP is finished by
    /// the next pass ([`Self::finish_partition_drop`]); once detached no insert can reach it,
    /// and the holds are checked against it again before it is dropped. A partition dropped is
    /// added to `drops`, which the next write of the record carries.
    #[allow(clippy::too_many_arguments)]
    async fn drop_partition(
        &self,
        kind: &str,
        tname: &str,
        target: &SqlTarget,
        part: &Partition,
        range: &PartitionRange,
        plan_with: &impl Fn(&[crate::holds::ActiveHold]) -> WindowPlan,
        drops: &mut DropLog,
    ) -> Result<Result<DropOutcome, String>, SweepError> {
        let (Some(m), Some(bound)) = (target.window(kind), &part.bound) else {
            return Ok(Ok(DropOutcome::Kept));
        };
        let sql = window::render(m, target.dialect()).on_table(part.table.clone());
        let mut gate = self.ledger.open_purge_gate().await?;
        let holds = gate.active_holds().await?;
        let plan = plan_with(&holds);
        let check_holds = match plan.partition_fate(range, true) {
            PartitionFate::Drop => false,
            PartitionFate::DropUnlessKept(_) => true,
            PartitionFate::Young | PartitionFate::Batches => return Ok(Ok(DropOutcome::Kept)),
        };
        let kept = |sql: window::Sql| async move { target.window_count(&sql).await.map(|n| n > 0) };
        if check_holds {
            match kept(sql.any_kept(&plan)).await {
                Ok(false) => {}
                Ok(true) => return Ok(Ok(DropOutcome::Kept)),
                Err(e) => return Ok(Err(e)),
            }
        }
        drops.pending = Some(PendingDrop {
            table: part.table.clone(),
            bound: bound.clone(),
        });
        if !self.record_drops(kind, tname, drops).await? {
            return Ok(Ok(DropOutcome::Lost));
        }
        if drops.dropped.len() == 1 {
            crate::failpoint::crash("window_second_drop_recorded");
        }
        if let Err(e) = target.detach_partition(kind, &part.table).await {
            return Ok(Err(e));
        }
        crate::failpoint::crash("window_partition_detached");
        let outcome = self
            .drop_detached(kind, target, &part.table, bound, &plan, check_holds)
            .await;
        drop(gate);
        match &outcome {
            Ok(DropOutcome::Dropped(d)) => {
                crate::failpoint::crash("window_partition_dropped");
                drops.pending = None;
                drops.dropped.push(d.clone());
            }
            Ok(_) => {
                // Attached back: nothing is left half done.
                drops.pending = None;
                if !self.record_drops(kind, tname, drops).await? {
                    return Ok(Ok(DropOutcome::Lost));
                }
            }
            Err(_) => {}
        }
        Ok(outcome)
    }

    /// The end of a drop, inside the purge gate: a detached partition in which a hold of `plan`
    /// keeps a row is attached back (`Kept`), else it is dropped, with its rows as the server
    /// estimates them (not counted: a count would read every row W3 spares the pass reading).
    async fn drop_detached(
        &self,
        kind: &str,
        target: &SqlTarget,
        table: &str,
        bound: &str,
        plan: &WindowPlan,
        check_holds: bool,
    ) -> Result<DropOutcome, String> {
        let Some(m) = target.window(kind) else {
            return Ok(DropOutcome::Kept);
        };
        let sql = window::render(m, target.dialect()).on_table(table.to_string());
        if check_holds && target.window_count(&sql.any_kept(plan)).await? > 0 {
            target.reattach_partition(kind, table, bound).await?;
            return Ok(DropOutcome::Kept);
        }
        let rows = target.partition_rows(kind, table).await?;
        target.drop_partition(table).await?;
        Ok(DropOutcome::Dropped(DroppedPartition {
            partition: table.to_string(),
            bound: bound.to_string(),
            rows: Some(rows.rows),
            estimated: rows.estimated,
        }))
    }

    /// Finishes the drop a crashed pass recorded: a partition still attached is left to this
    /// pass (`Kept`); one detached, or pending detach, is dropped unless a hold keeps a row of
    /// it now (then it is attached back); one gone was dropped, its rows unrecorded.
    async fn finish_partition_drop(
        &self,
        kind: &str,
        tname: &str,
        target: &SqlTarget,
        pending: &PendingDrop,
        plan_with: &impl Fn(&[crate::holds::ActiveHold]) -> WindowPlan,
    ) -> Result<Result<DropOutcome, String>, SweepError> {
        let PendingDrop { table, bound } = pending;
        let mut gate = self.ledger.open_purge_gate().await?;
        let holds = gate.active_holds().await?;
        let plan = plan_with(&holds);
        let outcome = match target.partition_state(kind, table).await {
            Err(e) => Err(e),
            Ok(PartitionState::Attached) => Ok(DropOutcome::Kept),
            Ok(PartitionState::Gone) => Ok(DropOutcome::Dropped(DroppedPartition {
                partition: table.clone(),
                bound: bound.clone(),
                rows: None,
                estimated: false,
            })),
            Ok(PartitionState::DetachPending | PartitionState::Detached) => {
                match target.detach_partition(kind, table).await {
                    Err(e) => Err(e),
                    Ok(()) => {
                        self.drop_detached(kind, target, table, bound, &plan, !plan.kept.is_empty())
                            .await
                    }
                }
            }
        };
        drop(gate);
        if let Ok(DropOutcome::Dropped(d)) = &outcome {
            info!(kind, target = tname, partition = %table, rows = ?d.rows, "finished dropping a partition a crashed pass had recorded");
        }
        Ok(outcome)
    }

    /// Ends the pass in the ledger with its audit entries, and writes its log lines.
    #[allow(clippy::too_many_arguments)]
    async fn finish_window_pass(
        &self,
        kind: &str,
        tname: &str,
        plan: &WindowPlan,
        by_reason: BTreeMap<Reason, u64>,
        drops: DropLog,
        held_back: Option<u64>,
        error: Option<String>,
        claim: crate::store::WindowClaim,
        stopped: bool,
    ) -> Result<WindowPassReport, SweepError> {
        let at = self.clock.now();
        let mut zdr_rows = BTreeMap::new();
        let mut zdr_violations = BTreeMap::new();
        for (reason, n) in &by_reason {
            if let Reason::Zdr(org) = reason
                && *n > 0
            {
                zdr_rows.insert(org.clone(), *n);
                // Rows found after a pass that began once ZDR was approved: the application
                // stored what it must not (W5).
                let approved = self.zdr_approved_at(org).await?;
                if let (Some(last), Some(approved)) = (claim.last_started_at, approved)
                    && last > approved
                {
                    zdr_violations.insert(org.clone(), *n);
                }
            }
        }
        // A drop that failed is left to the next pass; the ones done go in this entry.
        let left = drops.pending.clone().map(|pending| {
            DropLog {
                pending: Some(pending),
                dropped: Vec::new(),
            }
            .to_json()
        });
        let dropped = drops.dropped;
        let mut tx = self.ledger.begin().await?;
        tx.set_window_dropping(kind, tname, &self.instance, left.as_deref())
            .await?;
        let Some(done) = tx
            .finish_window_pass(
                kind,
                tname,
                &self.instance,
                at,
                held_back.map_or(-1, |h| h as i64),
                error.as_deref(),
            )
            .await?
        else {
            tx.rollback().await?;
            return Ok(WindowPassReport::default());
        };
        let report = WindowPassReport {
            kind: kind.to_string(),
            target: tname.to_string(),
            cutoff: Some(plan.cutoff),
            rows: done.rows.max(0) as u64,
            partitions: dropped.len() as u64,
            partition_rows: dropped.iter().filter_map(|d| d.rows).sum(),
            held_back,
            zdr_rows,
            zdr_violations,
            resumed: done.resumed.is_some(),
            error,
        };
        let mut drafts = Vec::new();
        if report.rows > 0 || report.partitions > 0 || report.resumed {
            drafts.push(AuditDraft::new(
                at,
                "window.purged",
                kind,
                json!({
                    "kind": kind,
                    "target": tname,
                    "cutoff": plan.cutoff,
                    "org_cutoffs": plan.org_cutoffs,
                    "rows": report.rows,
                    "partitions": report.partitions,
                    "partition_rows": report.partition_rows,
                    "dropped": dropped,
                    "held_back": report.held_back,
                    "zdr_rows": report.zdr_rows,
                    "started_at": done.started_at,
                    "resumed": done.resumed.map(|(started, rows)| json!({"started_at": started, "rows": rows})),
                    "stopped": stopped,
                    "error": report.error,
                }),
            ));
        }
        for (org, rows) in &report.zdr_violations {
            drafts.push(AuditDraft::new(
                at,
                "zdr.violation",
                org,
                json!({"org": org, "kind": kind, "target": tname, "rows": rows}),
            ));
        }
        tx.commit_with_audit(&drafts).await?;
        for (org, rows) in &report.zdr_violations {
            warn!(
                org = %org,
                kind,
                target = tname,
                rows,
                "zdr violation: rows stored for covered endpoints after ZDR was approved; deleted"
            );
        }
        if let Some(e) = &report.error {
            warn!(kind, target = tname, rows = report.rows, error = %e, "window pass failed; retried next sweep");
        } else if report.rows > 0 || report.partitions > 0 || report.resumed {
            info!(
                kind,
                target = tname,
                rows = report.rows,
                partitions = report.partitions,
                partition_rows = report.partition_rows,
                held_back = report.held_back.unwrap_or(0),
                cutoff = %plan.cutoff,
                resumed = report.resumed,
                "window pass"
            );
        }
        Ok(report)
    }

    /// W6: deletes `account`'s rows of every windowed kind, in batches, and returns them by
    /// kind — unless active holds keep some of them: then nothing is deleted and the holds that
    /// keep rows are returned. An error names the target that failed.
    pub(super) async fn purge_account_windows(
        &self,
        account: &str,
        holds: &[crate::holds::ActiveHold],
        now: Timestamp,
    ) -> Result<Result<BTreeMap<String, u64>, Vec<i64>>, String> {
        let reason = Reason::Account(account.to_string());
        let work = self.window_work();
        let mut keeping = std::collections::BTreeSet::new();
        let no_orgs = BTreeMap::new();
        let plans = |kind: &str, policy: &KindPolicy, has_id: bool| {
            let wpolicy = WindowPolicy {
                max_age: policy.max_age.unwrap_or(Span::ZERO),
                zdr_endpoints: None,
            };
            window::plan(kind, &wpolicy, &no_orgs, &[], holds, has_id, now)
        };
        for (kind, policy, targets) in &work {
            for (_, target) in targets {
                let (Some(m), Some(sql)) = (target.window(kind), target.window_sql(kind)) else {
                    continue;
                };
                let plan = plans(kind, policy, m.id.is_some());
                for k in &plan.kept {
                    let one = WindowPlan {
                        kept: vec![k.clone()],
                        ..plan.clone()
                    };
                    let held = target
                        .window_count(&sql.count_held_back(&one, std::slice::from_ref(&reason)))
                        .await?;
                    if held > 0 {
                        keeping.insert(k.hold);
                    }
                }
            }
        }
        if !keeping.is_empty() {
            return Ok(Err(keeping.into_iter().collect()));
        }
        let mut rows = BTreeMap::new();
        for (kind, policy, targets) in &work {
            for (_, target) in targets {
                let Some(m) = target.window(kind) else {
                    continue;
                };
                let plan = plans(kind, policy, m.id.is_some());
                for table in target.window_tables(kind).await? {
                    let sql = window::render(m, target.dialect()).on_table(table);
                    loop {
                        let n = target
                            .window_execute(&sql.delete_batch(&plan, &reason, m.batch))
                            .await?;
                        *rows.entry(kind.to_string()).or_insert(0u64) += n;
                        if n < m.batch as u64 {
                            break;
                        }
                    }
                }
                target.window_done().await;
            }
        }
        Ok(Ok(rows))
    }

    /// W4's guard: `org`'s rows of windowed `kind` that shortening its window from `old` to
    /// `new` makes due now or within the next day (as R10 counts for a policy change), summed
    /// over the kind's tables.
    pub async fn org_window_newly_due(
        &self,
        kind: &str,
        org: &str,
        old: Span,
        new: Span,
        now: Timestamp,
    ) -> Result<u64, SweepError> {
        if new >= old {
            return Ok(0);
        }
        let horizon = now.plus(Span::from_secs(86_400));
        let mut n = 0;
        for (k, _, targets) in self.window_work() {
            if k != kind {
                continue;
            }
            for (_, target) in targets {
                let Some(sql) = target.window_sql(kind) else {
                    continue;
                };
                n += target
                    .window_count(&sql.count_newly_due(org, horizon.minus(old), horizon.minus(new)))
                    .await
                    .map_err(SweepError::Target)?;
            }
        }
        Ok(n)
    }

    async fn zdr_approved_at(&self, org: &str) -> Result<Option<Timestamp>, SweepError> {
        Ok(self
            .ledger
            .org(org)
            .await?
            .filter(|o| o.zdr == ZdrStatus::Approved)
            .map(|o| o.zdr_at.unwrap_or(o.updated_at)))
    }

    /// `plan`'s forecast for windowed kinds, read from their tables: per UTC day until `until`,
    /// the rows that fall due by age that day, kept by holds or not; rows due now (by age or
    /// ZDR) are in the day before `now`'s ("overdue"). Rows: (day since the epoch, kind, held,
    /// rows). Changes nothing.
    pub async fn forecast_windows(
        &self,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(i64, String, bool, i64)>, SweepError> {
        const DAY: i64 = 86_400_000;
        let holds = self.ledger.active_holds().await?;
        let today = now.millis().div_euclid(DAY);
        let mut out = Vec::new();
        for (kind, policy, targets) in self.window_work() {
            let (wpolicy, org_windows, zdr) = self.window_facts(kind, policy).await?;
            for (_, target) in targets {
                let (Some(m), Some(sql)) = (target.window(kind), target.window_sql(kind)) else {
                    continue;
                };
                let at = |t| {
                    window::plan(
                        kind,
                        &wpolicy,
                        &org_windows,
                        &zdr,
                        &holds,
                        m.id.is_some(),
                        t,
                    )
                };
                let count = |s| async move {
                    target
                        .window_count(&s)
                        .await
                        .map(|n| n as i64)
                        .map_err(SweepError::Target)
                };
                let p = at(now);
                let reasons = p.reasons();
                out.push((
                    today - 1,
                    kind.to_string(),
                    false,
                    count(sql.count_deletable(&p, &reasons)).await?,
                ));
                out.push((
                    today - 1,
                    kind.to_string(),
                    true,
                    count(sql.count_held_back(&p, &reasons)).await?,
                ));
                let (mut from, mut day) = (now, today);
                while from < until {
                    let end = Timestamp::from_millis((day + 1) * DAY).min(until);
                    let (a, b) = (at(from), at(end));
                    for held in [false, true] {
                        if held && holds.is_empty() {
                            continue;
                        }
                        let n = count(sql.count_falling_due(&a, &b, held)).await?;
                        out.push((day, kind.to_string(), held, n));
                    }
                    (from, day) = (end, day + 1);
                }
            }
        }
        out.retain(|r| r.3 > 0);
        Ok(out)
    }

    /// What a pass over each windowed kind's tables would delete now, and what holds keep.
    /// Changes nothing.
    pub async fn dry_run_windows(&self) -> Result<Vec<WindowPreview>, SweepError> {
        let now = self.now().await?;
        let holds = self.ledger.active_holds().await?;
        let mut out = Vec::new();
        for (kind, policy, targets) in self.window_work() {
            let (wpolicy, org_windows, zdr) = self.window_facts(kind, policy).await?;
            for (tname, target) in targets {
                let (Some(m), Some(sql)) = (target.window(kind), target.window_sql(kind)) else {
                    continue;
                };
                let plan = window::plan(
                    kind,
                    &wpolicy,
                    &org_windows,
                    &zdr,
                    &holds,
                    m.id.is_some(),
                    now,
                );
                let reasons = plan.reasons();
                let count = |s| async move { target.window_count(&s).await };
                let rows = count(sql.count_deletable(&plan, &reasons))
                    .await
                    .map_err(SweepError::Target)?;
                let held_back = count(sql.count_held_back(&plan, &reasons))
                    .await
                    .map_err(SweepError::Target)?;
                let oldest = target
                    .window_oldest(kind)
                    .await
                    .map_err(SweepError::Target)?;
                let mut partitions = 0;
                if m.partitioned {
                    for part in target
                        .window_partitions(kind)
                        .await
                        .map_err(SweepError::Target)?
                    {
                        let (Some(range), Some(_), false) =
                            (&part.range, &part.bound, part.default)
                        else {
                            continue;
                        };
                        partitions += match plan.partition_fate(range, true) {
                            PartitionFate::Drop => 1,
                            PartitionFate::DropUnlessKept(_) => {
                                let sql = window::render(m, target.dialect()).on_table(part.table);
                                u64::from(
                                    count(sql.any_kept(&plan))
                                        .await
                                        .map_err(SweepError::Target)?
                                        == 0,
                                )
                            }
                            _ => 0,
                        };
                    }
                }
                out.push(WindowPreview {
                    kind: kind.to_string(),
                    target: tname.to_string(),
                    cutoff: plan.cutoff,
                    rows,
                    held_back,
                    partitions,
                    oldest,
                });
            }
        }
        Ok(out)
    }
}
