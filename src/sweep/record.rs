//! What a purge leaves behind: the ledger's record of each outcome, the receipt of each purge
//! in the audit log, and one log line per decision once the transaction has committed.

use super::*;

/// The purge receipt's details (audit action `resource.purged`). Fields in name order: the
/// text equals that of the same `json!` object (see `AuditDraft::with_details`).
#[derive(Serialize)]
pub(super) struct PurgeReceipt<'a> {
    pub(super) account: &'a str,
    pub(super) attempts: i64,
    pub(super) cause: &'static str,
    pub(super) created_at: Timestamp,
    pub(super) deleted_at: Option<Timestamp>,
    /// Set when the purge was found to have happened (issue 30): its claim was taken over after
    /// a crash, and every target had nothing left of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) found_gone: Option<FoundGone>,
    pub(super) org: &'a str,
    pub(super) purge_after: Option<Timestamp>,
    pub(super) purged_at: Timestamp,
    pub(super) rule: Option<&'static str>,
    pub(super) targets: Vec<TargetRemoved<'a>>,
}

/// Why a purge was recorded after the fact: what kept its claim from simply being given back.
#[derive(Serialize)]
pub(super) struct FoundGone {
    /// Active holds that match it: each was placed while its purge was in flight.
    pub(super) holds: Vec<i64>,
    /// Its schedule under the policy in force no longer made it due.
    pub(super) no_longer_due: bool,
}

#[derive(Serialize)]
pub(super) struct TargetRemoved<'a> {
    pub(super) files: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) objects: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) requests: u64,
    pub(super) rows: u64,
    pub(super) target: &'a str,
}

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What all of a resource's targets removed.
pub(super) fn removed_total(removed: &[(String, Removed)]) -> Removed {
    removed.iter().fold(Removed::default(), |mut acc, (_, x)| {
        acc += *x;
        acc
    })
}

pub(super) fn cause_of(r: &ResourceRow) -> Cause {
    r.rule
        .map(|x| x.cause())
        .or(r.cause)
        .unwrap_or(Cause::Manual)
}

impl<'a> PurgeReceipt<'a> {
    pub(super) fn new(
        r: &'a ResourceRow,
        removed: &'a [(String, Removed)],
        now: Timestamp,
    ) -> Self {
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

/// What a committed purge transaction logs: one line per decision (blocked by a hold, purged,
/// failed).
#[derive(Default)]
pub(super) struct BatchLog {
    pub(super) new_blocks: Vec<(String, i64)>,
    pub(super) cases: HashMap<i64, String>,
    pub(super) held_info: HashMap<String, (String, String)>,
    pub(super) free: Arc<[ResourceRow]>,
    pub(super) outcome: Vec<ItemOutcome>,
    pub(super) recorded: HashSet<String>,
    pub(super) failures: Vec<PurgeFailure>,
    pub(super) failed_recorded: HashSet<String>,
    /// The lines of `free[..written]` (and the blocks before them) have been written.
    pub(super) written: usize,
    /// Every line has been written.
    pub(super) done: bool,
}

impl BatchLog {
    /// Writes the lines of the next `n` resources: the holds' blocks first, failures last.
    /// Called only after the transaction committed (logs follow durable facts).
    pub(super) fn emit_some(&mut self, n: usize) {
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
                    (Some(d), Some(p)) => {
                        Span::from_millis((p.millis() - d.millis()).max(0)).to_string()
                    }
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

    pub(super) fn emit_blocks(&self) {
        for (id, hold) in &self.new_blocks {
            let case = self.cases.get(hold).map(String::as_str).unwrap_or_default();
            let (kind, account) = self.held_info.get(id).cloned().unwrap_or_default();
            info!(kind = %kind, id = %id, account = %account, hold = hold, case = %case, "purge blocked by hold");
        }
    }

    pub(super) fn emit_failures(&self) {
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

impl Sweeper {
    /// Ends a purge transaction: its claimed batch is over, claims taken over whose purge may
    /// have started and that are now recorded purged are resolved for the holds that counted
    /// them in flight, and it commits.
    pub(super) async fn commit_purge(
        &self,
        mut tx: PurgeTx,
        batch: Option<i64>,
        taken_over: Vec<String>,
        log: &BatchLog,
        now: Timestamp,
    ) -> Result<(), SweepError> {
        if let Some(b) = batch {
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
        Ok(())
    }

    /// A target batch's outcomes as the ledger records them: the purged by cause, the failed
    /// with when to retry (none once `max_attempts` is reached).
    pub(super) fn sort_outcomes(
        &self,
        rows: &[ResourceRow],
        outcome: &[ItemOutcome],
        now: Timestamp,
    ) -> (BTreeMap<Cause, Vec<String>>, Vec<PurgeFailure>) {
        let mut ok_by_cause: BTreeMap<Cause, Vec<String>> = BTreeMap::new();
        let mut failures = Vec::new();
        for (r, o) in rows.iter().zip(outcome) {
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
        (ok_by_cause, failures)
    }

    /// Records the outcomes in the purge transaction, each only while our lease on it holds:
    /// returns the ids recorded purged and those recorded failed.
    pub(super) async fn write_outcomes(
        &self,
        tx: &mut PurgeTx,
        ok_by_cause: &BTreeMap<Cause, Vec<String>>,
        failures: &[PurgeFailure],
        now: Timestamp,
    ) -> Result<(HashSet<String>, HashSet<String>), StoreError> {
        let mut recorded = HashSet::new();
        for (cause, ids) in ok_by_cause {
            recorded.extend(tx.finish_purged(ids, *cause, &self.instance, now).await?);
        }
        let failed = tx
            .record_failures(failures, &self.instance, now)
            .await?
            .into_iter()
            .collect();
        Ok((recorded, failed))
    }
}

/// Each purge's receipt (`resource.purged`) and what it removed, built as if every purge of the
/// batch will be recorded; `None` for the failed.
pub(super) fn receipt_drafts(
    rows: &[ResourceRow],
    outcome: &[ItemOutcome],
    now: Timestamp,
) -> Vec<Option<(AuditDraft, Removed)>> {
    rows.iter()
        .zip(outcome)
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
        .collect()
}

/// The audit entries of what was recorded: the receipts of purges recorded under our lease,
/// then the failures; counted into `report`.
pub(super) fn recorded_drafts(
    rows: &[ResourceRow],
    receipts: Vec<Option<(AuditDraft, Removed)>>,
    recorded: &HashSet<String>,
    failures: &[PurgeFailure],
    failed_recorded: &HashSet<String>,
    now: Timestamp,
    report: &mut SweepReport,
) -> Vec<AuditDraft> {
    let mut drafts = Vec::with_capacity(rows.len());
    for (r, receipt) in rows.iter().zip(receipts) {
        if let Some((draft, total)) = receipt
            && recorded.contains(&r.id)
        {
            drafts.push(draft);
            report.purged += 1;
            report.removed += total;
            *report.purged_by_kind.entry(r.kind.clone()).or_default() += 1;
        }
    }
    for f in failures {
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
    drafts
}
