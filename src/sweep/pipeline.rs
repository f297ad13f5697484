//! The overlapped purge pipeline: the same steps as [`Sweeper::purge_batch`], run so that the
//! targets, the ledger and the log lines use both cores.

use super::*;

/// A committed purge transaction: what it did, what it claimed next, and its log lines.
pub(super) struct BatchDone {
    pub(super) report: SweepReport,
    /// The next transaction's work, claimed beside the targets; `None` if not asked for or if
    /// that failed.
    pub(super) next: Option<ClaimedBatch>,
    pub(super) log: BatchLog,
}

/// A committed transaction's lines not written yet; the rest are written when it is replaced
/// or dropped.
pub(super) struct PendingLines(Option<BatchLog>);

impl PendingLines {
    pub(super) fn replace(&mut self, log: BatchLog) {
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

impl Sweeper {
    /// Purges everything due at `now`, one purge transaction after another: each claims the
    /// next one's work beside its targets, its targets run in a task of their own while it
    /// records the batch before, and a committed transaction's log lines are written while the
    /// next one records its first batch.
    pub(super) async fn sweep_overlapped(
        &self,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Result<SweepReport, SweepError> {
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
        Ok(report)
    }

    /// Purges what was claimed inside one purge transaction (Invariant H: see `store`), in
    /// target batches of `scheduler.batch_size`: the targets run the batches one after another
    /// in their own task (another core), and this transaction records each batch, with its
    /// receipts, while the targets run the next. With `claim_next`, up to that many due
    /// resources are claimed first, beside the first targets, and returned (see
    /// `Ledger::claim_next_batch`); `None` comes back if that claim failed.
    pub(super) async fn purge_claimed(
        &self,
        claims: ClaimedBatch,
        now: Timestamp,
        claim_next: Option<i64>,
        previous: &mut Option<BatchLog>,
    ) -> Result<BatchDone, SweepError> {
        let mut report = SweepReport::default();
        let mut log = BatchLog::default();
        let (started, mut tx) = self.open_purge(claims, now, &mut log).await?;
        report.add(started.report);
        let (free, taken_over) = (started.free, started.taken_over);

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
        self.commit_purge(tx, started.batch, taken_over, &log, now)
            .await?;
        log.free = free;
        log.outcome = outcome;
        Ok(BatchDone { report, next, log })
    }

    /// [`Sweeper::record`] overlapped: while the ledger records the batch on this thread, a
    /// thread of the blocking pool writes a batch's worth of the previous purge transaction's
    /// log lines and builds this batch's receipts, as if every purge will be recorded (the
    /// sweep leaves a core idle). Hands the batch's outcome back.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_batch(
        &self,
        tx: &mut PurgeTx,
        (free, part): (&Arc<[ResourceRow]>, std::ops::Range<usize>),
        outcome: Vec<ItemOutcome>,
        now: Timestamp,
        previous: &mut Option<BatchLog>,
        report: &mut SweepReport,
        log: &mut BatchLog,
    ) -> Result<Vec<ItemOutcome>, SweepError> {
        let rows = &free[part.clone()];
        let (ok_by_cause, failures) = self.sort_outcomes(rows, &outcome, now);
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
                let receipts = receipt_drafts(&free[part], &outcome, now);
                (lines, receipts, outcome)
            }
        });
        let written = self.write_outcomes(tx, &ok_by_cause, &failures, now).await;
        let (mut lines, receipts, outcome) = match receipts.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(SweepError::PurgeTask(e.to_string())),
        };
        *previous = lines.0.take();
        let (recorded, failed_recorded) = written?;
        let drafts = recorded_drafts(
            rows,
            receipts,
            &recorded,
            &failures,
            &failed_recorded,
            now,
            report,
        );
        tx.append_audit(&drafts).await?;
        log.recorded.extend(recorded);
        log.failed_recorded.extend(failed_recorded);
        log.failures.extend(failures);
        Ok(outcome)
    }
}
