//! Tombstone compaction (issue 23): a ledger that stays small.
//!
//! Invariant: a tombstone (R9) leaves the ledger only once it was purged before `now -
//! [ledger] tombstone_retention` (younger ones are what `reapply` needs after a backup
//! restore), the retention being the one *in force* (a shorter one is guarded as R10 guards a
//! shorter grace: it waits for `policy accept` when it would compact more than
//! `safety.max_newly_due` within a day), and only together with its count: in
//! `tombstone_counts` (UTC day of purge, kind, cause), in its account's `compacted_accounts`
//! row, and in the `tombstones.compacted` audit entry committed with them, whose details carry
//! the same counts, so the chain proves the totals. A crash loses a whole batch's compaction or
//! nothing.
//!
//! Mechanism: batches of `scheduler.batch_size`, oldest first, at most [`MAX_BATCHES`] a sweep,
//! each one transaction: take the tombstones out (through the `resources_purged` index), count
//! them, lock the chain's head, write the counts with the seq their entry will have, append the
//! entry and commit. A transaction-level singleton lock lets one instance compact at a time; the
//! others skip it for that sweep. The purge receipts (`resource.purged`) stay in the chain.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Sweeper;
use crate::audit::AuditDraft;
use crate::model::{Span, Timestamp};
use crate::store::{StoreError, Tombstone, TombstoneCount};

/// Batches one sweep compacts at most, so a first compaction of a large backlog never delays
/// the next sweep's purges long; the rest follows at the next sweeps.
pub(super) const MAX_BATCHES: usize = 100;

const DAY_MS: i64 = 86_400_000;

/// The audit action of a compaction.
pub(super) const ACTION: &str = "tombstones.compacted";

/// What one sweep compacted.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Compacted {
    pub tombstones: u64,
    pub batches: u64,
}

/// Counts of a batch: per (day, kind, cause), and per account and kind.
pub(super) fn tally(
    taken: &[Tombstone],
) -> (Vec<TombstoneCount>, BTreeMap<String, BTreeMap<String, i64>>) {
    let mut by_day: BTreeMap<(i64, &str, &str), i64> = BTreeMap::new();
    let mut by_account: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for t in taken {
        let day = t.purged_at.millis().div_euclid(DAY_MS) * DAY_MS;
        *by_day.entry((day, &t.kind, &t.cause)).or_default() += 1;
        *by_account
            .entry(t.account.clone())
            .or_default()
            .entry(t.kind.clone())
            .or_default() += 1;
    }
    let counts = by_day
        .into_iter()
        .map(|((day, kind, cause), count)| TombstoneCount {
            day: Timestamp::from_millis(day),
            kind: kind.to_string(),
            cause: cause.to_string(),
            count,
        })
        .collect();
    (counts, by_account)
}

impl Sweeper {
    /// Compacts the tombstones older than `[ledger] tombstone_retention` at `now`. A failure is
    /// logged and left to the next sweep: it never fails the sweep whose purges are done.
    pub(super) async fn compact_tombstones(
        &self,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Compacted {
        let started = Instant::now();
        let retention = match crate::policy::in_force(&self.ledger).await {
            Ok(p) => p
                .and_then(|p| p.tombstone_retention)
                .unwrap_or(self.config.tombstone_retention),
            Err(e) => {
                warn!(error = %e, "tombstone compaction skipped: the policy in force is unreadable; the next sweep retries");
                return Compacted::default();
            }
        };
        let before = now.minus(retention);
        let mut done = Compacted::default();
        let mut error = None;
        while done.batches < MAX_BATCHES as u64 && !stop.is_cancelled() {
            match self.compact_batch(now, before, retention).await {
                Ok(0) => break,
                Ok(n) => {
                    done.tombstones += n as u64;
                    done.batches += 1;
                    if n < self.config.scheduler.batch_size {
                        break;
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = &error {
            warn!(error = %e, compacted = done.tombstones, "tombstone compaction failed; the next sweep retries");
        }
        if done.tombstones > 0 {
            info!(
                compacted = done.tombstones,
                batches = done.batches,
                before = %before,
                tombstone_retention = %retention,
                more = done.batches == MAX_BATCHES as u64,
                duration_ms = started.elapsed().as_millis() as u64,
                "tombstones compacted"
            );
        }
        done
    }

    /// One batch in one transaction; returns how many tombstones it compacted (0: none left,
    /// or another instance is compacting).
    async fn compact_batch(
        &self,
        now: Timestamp,
        before: Timestamp,
        retention: Span,
    ) -> Result<usize, StoreError> {
        // A read first: most sweeps find nothing to compact and need no write transaction.
        if !self.ledger.has_tombstones_before(before).await? {
            return Ok(0);
        }
        let mut tx = self.ledger.begin().await?;
        if !tx.try_lock_singleton("tombstone_compaction").await? {
            tx.rollback().await?;
            return Ok(0);
        }
        let limit = self.config.scheduler.batch_size as i64;
        let taken = tx.take_tombstones(before, limit).await?;
        let (Some(first), Some(last)) = (taken.first(), taken.last()) else {
            tx.rollback().await?;
            return Ok(0);
        };
        let (counts, by_account) = tally(&taken);
        // The chain's head is locked from here to the commit: the entry gets the next seq.
        let seq = tx.audit_last_locked().await?.map_or(0, |h| h.seq) + 1;
        let accounts: Vec<(String, String, i64)> = by_account
            .iter()
            .flat_map(|(a, kinds)| kinds.iter().map(|(k, n)| (a.clone(), k.clone(), *n)))
            .collect();
        tx.add_tombstone_counts(&counts, &accounts, seq).await?;
        let draft = AuditDraft::new(
            now,
            ACTION,
            "tombstones",
            json!({
                "tombstones": taken.len(),
                "before": before,
                "retention": retention.to_string(),
                "purged_from": first.purged_at,
                "purged_to": last.purged_at,
                "counts": counts,
                "accounts": by_account,
            }),
        );
        let head = tx.commit_with_audit(&[draft]).await?;
        if head.as_ref().map(|h| h.seq) != Some(seq) {
            // Cannot happen while the head stays locked; were it to, receipts would point at
            // the wrong entry, so say so loudly.
            return Err(StoreError::Corrupt(format!(
                "tombstone compaction expected audit seq {seq}, wrote {:?}",
                head.map(|h| h.seq)
            )));
        }
        Ok(taken.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, kind: &str, account: &str, cause: &str, at: i64) -> Tombstone {
        Tombstone {
            id: id.into(),
            kind: kind.into(),
            account: account.into(),
            cause: cause.into(),
            purged_at: Timestamp::from_millis(at),
        }
    }

    #[test]
    fn counts_are_per_utc_day_kind_and_cause_and_per_account_and_kind() {
        let day = 20_000 * DAY_MS;
        let taken = [
            t("c1", "conversation", "a1", "manual", day),
            t("c2", "conversation", "a1", "manual", day + DAY_MS - 1),
            t("c3", "conversation", "a2", "account", day + 5),
            t("l1", "api_log", "a2", "expired", day + DAY_MS),
        ];
        let (counts, accounts) = tally(&taken);
        let c: Vec<(i64, &str, &str, i64)> = counts
            .iter()
            .map(|c| (c.day.millis(), c.kind.as_str(), c.cause.as_str(), c.count))
            .collect();
        assert_eq!(
            c,
            [
                (day, "conversation", "account", 1),
                (day, "conversation", "manual", 2),
                (day + DAY_MS, "api_log", "expired", 1),
            ]
        );
        assert_eq!(accounts["a1"]["conversation"], 2);
        assert_eq!(accounts["a2"]["conversation"], 1);
        assert_eq!(accounts["a2"]["api_log"], 1);
        assert_eq!(counts.iter().map(|c| c.count).sum::<i64>(), 4);
    }
}
