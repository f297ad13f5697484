//! The policy in force (R10): the ledger schedules by the policy it has recorded, and a config
//! change reaches it only through [`sync`], which recomputes the affected schedules and audits
//! the counts. A change that would bring more than `safety.max_newly_due` purges forward to now
//! or within the next day (a grace or max_age got shorter) is held back as *pending* until
//! `policy accept`; changes that bring nothing forward into that day (every lengthening) apply
//! at once.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::audit::AuditDraft;
use crate::model::{Span, Timestamp, ZdrStatus};
use crate::rules::{self, KindPolicy, SchedulePolicy};
use crate::store::{AccountRow, Ledger, LedgerTx, OrgRow, PolicyState, ResourceRow, StoreError};

const PAGE: i64 = 5_000;

/// The key used for the account grace in per-item counts.
pub const ACCOUNTS: &str = "(accounts)";

/// The key used for `[ledger] tombstone_retention` in per-item counts: its "newly due" are the
/// tombstones a shorter retention compacts within [`GUARD_HORIZON`].
pub const TOMBSTONES: &str = "(tombstones)";

/// What a sync did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SyncReport {
    /// Items (kinds, or `(accounts)`) whose new policy is now in force.
    pub applied: Vec<String>,
    /// Schedules that changed, per applied item.
    pub rescheduled: BTreeMap<String, u64>,
    /// Resources/accounts the change makes due at once, per item (applied or not).
    pub newly_due: BTreeMap<String, u64>,
    /// Items held back by the guard, waiting for `policy accept`.
    pub pending: Vec<String>,
    /// True on the very first sync of a ledger.
    pub initial: bool,
}

impl SyncReport {
    pub fn changed(&self) -> bool {
        self.initial || !self.applied.is_empty() || !self.pending.is_empty()
    }
}

/// A short fingerprint of a policy, for logs and the audit.
pub fn fingerprint(policy: &SchedulePolicy) -> String {
    let text = serde_json::to_string(policy).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

fn parse_policy(text: &str) -> Result<SchedulePolicy, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("policy_state: {e}")))
}

/// The policy in force, if the ledger has one yet.
pub async fn in_force(ledger: &Ledger) -> Result<Option<SchedulePolicy>, StoreError> {
    ledger
        .policy_state()
        .await?
        .map(|s| parse_policy(&s.in_force))
        .transpose()
}

/// How many purges the pending change would bring forward into the next 24 hours, per item
/// (as counted when it was held back).
pub async fn pending_newly_due(
    ledger: &Ledger,
) -> Result<Option<BTreeMap<String, u64>>, StoreError> {
    ledger
        .policy_state()
        .await?
        .and_then(|s| s.pending_newly_due)
        .map(|p| {
            serde_json::from_str(&p)
                .map_err(|e| StoreError::Corrupt(format!("policy_state.pending_newly_due: {e}")))
        })
        .transpose()
}

/// The policy pending acceptance, if any.
pub async fn pending(ledger: &Ledger) -> Result<Option<SchedulePolicy>, StoreError> {
    ledger
        .policy_state()
        .await?
        .and_then(|s| s.pending)
        .map(|p| parse_policy(&p))
        .transpose()
}

/// Brings the ledger's policy in line with `wanted` (the config's), under the guard unless
/// `accept`. Returns the policy now in force and what happened.
pub async fn sync(
    ledger: &Ledger,
    wanted: &SchedulePolicy,
    now: Timestamp,
    max_newly_due: u64,
    accept: bool,
    actor: &str,
) -> Result<(SchedulePolicy, SyncReport), StoreError> {
    // Cheap check first: nothing to do is the common case at every start.
    if let Some(state) = ledger.policy_state().await? {
        let current = parse_policy(&state.in_force)?;
        if state.pending.is_none() && merged(&current, wanted) == current {
            return Ok((current, SyncReport::default()));
        }
    }
    let mut tx = ledger.begin().await?;
    // One instance recomputes at a time; the others wait, then find nothing left to do.
    tx.lock_singleton("policy").await?;
    let state = tx.policy_state().await?;
    let mut report = SyncReport::default();
    let mut audit = Vec::new();
    let Some(state) = state else {
        tx.save_policy_state(&PolicyState {
            in_force: serde_json::to_string(wanted).unwrap_or_default(),
            pending: None,
            pending_newly_due: None,
            updated_at: now,
        })
        .await?;
        report.initial = true;
        audit.push(AuditDraft::new(
            now,
            "policy.loaded",
            "policy",
            json!({"fingerprint": fingerprint(wanted), "policy": wanted, "by": actor}),
        ));
        tx.commit_with_audit(&audit).await?;
        info!(fingerprint = %fingerprint(wanted), "policy loaded into a new ledger");
        return Ok((wanted.clone(), report));
    };
    let current = parse_policy(&state.in_force)?;
    let target = merged(&current, wanted);
    for removed in current
        .kinds
        .keys()
        .filter(|k| !wanted.kinds.contains_key(*k))
    {
        warn!(kind = %removed, "kind is in the ledger but no longer configured: its schedules keep the last policy, and its purges fail until it is configured again");
    }

    // Pass 1: count what each changed item would make due at once.
    let changed: Vec<String> = target
        .kinds
        .iter()
        .filter(|(k, p)| current.kinds.get(*k) != Some(*p))
        .map(|(k, _)| k.clone())
        .collect();
    let accounts_changed = current.account_grace != target.account_grace;
    for kind in &changed {
        let n = walk_kind(&mut tx, kind, &current, &target, now, false)
            .await?
            .1;
        report.newly_due.insert(kind.clone(), n);
    }
    let mut account_rows = Vec::new();
    if accounts_changed {
        account_rows = tx.deletion_requested_accounts().await?;
        let n = account_rows
            .iter()
            .filter(|a| {
                let old = a.purge_after;
                let new = rules::account_schedule(&a.facts(), &target);
                newly_due(old, new, now)
            })
            .count() as u64;
        report.newly_due.insert(ACCOUNTS.to_string(), n);
    }
    // A shorter tombstone retention compacts tombstones sooner, and a compacted purge cannot be
    // re-run by `reapply` after a backup restore: a typo ("40d" for "400d") is guarded like a
    // shorter grace. A ledger from before the guard has none recorded: the config's applies.
    let tombstones_changed = current.tombstone_retention != target.tombstone_retention;
    if tombstones_changed {
        let n = match (current.tombstone_retention, target.tombstone_retention) {
            (Some(old), Some(new)) if new.millis() < old.millis() => {
                tx.count_tombstones_before(now.plus(GUARD_HORIZON).minus(new))
                    .await? as u64
            }
            _ => 0,
        };
        report.newly_due.insert(TOMBSTONES.to_string(), n);
    }

    // Decide: harmless items apply; the rest apply together only within the limit.
    let risky: u64 = report.newly_due.values().sum();
    let apply_all = accept || risky <= max_newly_due;
    let mut in_force = current.clone();
    let mut items: Vec<String> = changed.clone();
    if accounts_changed {
        items.push(ACCOUNTS.to_string());
    }
    if tombstones_changed {
        items.push(TOMBSTONES.to_string());
    }
    for item in &items {
        let n = report.newly_due.get(item).copied().unwrap_or(0);
        if n == 0 || apply_all {
            report.applied.push(item.clone());
            if item == ACCOUNTS {
                in_force.account_grace = target.account_grace;
            } else if item == TOMBSTONES {
                in_force.tombstone_retention = target.tombstone_retention;
            } else {
                in_force
                    .kinds
                    .insert(item.clone(), target.kinds[item].clone());
            }
        } else {
            report.pending.push(item.clone());
        }
    }

    // Pass 2: recompute schedules under the policy now in force.
    for item in &report.applied {
        if item == TOMBSTONES {
            // No schedule to recompute: the sweep's compaction reads the retention in force.
            continue;
        }
        if item == ACCOUNTS {
            let mut updated = Vec::new();
            for mut a in std::mem::take(&mut account_rows) {
                let new = rules::account_schedule(&a.facts(), &in_force);
                if new != a.purge_after {
                    a.purge_after = new;
                    updated.push(a);
                }
            }
            report
                .rescheduled
                .insert(item.clone(), updated.len() as u64);
            tx.save_accounts(&updated).await?;
        } else {
            let n = walk_kind(&mut tx, item, &current, &in_force, now, true)
                .await?
                .0;
            report.rescheduled.insert(item.clone(), n);
        }
    }
    // A resource's account-deletion grace may follow the account grace; kinds whose effective
    // values did not change are untouched, so nothing else needs a pass.

    let (pending_text, pending_newly_due) = if report.pending.is_empty() {
        (None, None)
    } else {
        let per_item: BTreeMap<&String, u64> = report
            .pending
            .iter()
            .map(|i| (i, report.newly_due[i]))
            .collect();
        (
            Some(serde_json::to_string(&target).unwrap_or_default()),
            Some(serde_json::to_string(&per_item).unwrap_or_default()),
        )
    };
    tx.save_policy_state(&PolicyState {
        in_force: serde_json::to_string(&in_force).unwrap_or_default(),
        pending: pending_text,
        pending_newly_due,
        updated_at: now,
    })
    .await?;
    for item in &report.applied {
        let (old, new) = describe_item(item, &current, &in_force);
        audit.push(AuditDraft::new(
            now,
            if accept { "policy.accepted" } else { "policy.rescheduled" },
            format!("policy/{item}"),
            json!({
                "old": old, "new": new, "rescheduled": report.rescheduled.get(item), "newly_due": report.newly_due.get(item),
                "by": actor, "fingerprint": fingerprint(&in_force),
            }),
        ));
        info!(
            item = %item, rescheduled = report.rescheduled.get(item).copied().unwrap_or(0),
            newly_due = report.newly_due.get(item).copied().unwrap_or(0), old = %old, new = %new,
            "policy recomputed (R10)"
        );
    }
    if !report.pending.is_empty() {
        let per_item: BTreeMap<&String, u64> = report
            .pending
            .iter()
            .map(|i| (i, report.newly_due[i]))
            .collect();
        audit.push(AuditDraft::new(
            now,
            "policy.pending",
            "policy",
            json!({"newly_due": per_item, "max_newly_due": max_newly_due, "by": actor}),
        ));
        for (item, n) in &per_item {
            if item.as_str() == TOMBSTONES {
                warn!(
                    item = %item, newly_due = n, max_newly_due, message_id = crate::telemetry::message_id::POLICY_HELD_BACK,
                    "policy change held back: the shorter tombstone_retention would compact {n} tombstones within the next 24 hours, and reapply cannot re-run a compacted purge; run `retentiond policy accept` to apply it"
                );
                continue;
            }
            warn!(
                item = %item, newly_due = n, max_newly_due, message_id = crate::telemetry::message_id::POLICY_HELD_BACK,
                "policy change held back: it would bring {n} purges forward to within the next 24 hours; run `retentiond policy accept` to apply it"
            );
        }
    } else if state.pending.is_some() && report.applied.is_empty() {
        // The config went back to the policy in force: forget the pending change.
        audit.push(AuditDraft::new(
            now,
            "policy.pending_cleared",
            "policy",
            json!({"by": actor}),
        ));
        info!("pending policy change withdrawn: the config matches the policy in force again");
    }
    tx.commit_with_audit(&audit).await?;
    Ok((in_force, report))
}

/// The config's policy, keeping kinds that left the config at their last values.
fn merged(current: &SchedulePolicy, wanted: &SchedulePolicy) -> SchedulePolicy {
    let mut out = wanted.clone();
    for (k, p) in &current.kinds {
        out.kinds.entry(k.clone()).or_insert_with(|| p.clone());
    }
    out
}

fn describe_item(item: &str, old: &SchedulePolicy, new: &SchedulePolicy) -> (String, String) {
    if item == TOMBSTONES {
        let d = |r: Option<Span>| {
            format!(
                "tombstone_retention {}",
                r.map_or_else(|| "unrecorded".to_string(), |r| r.to_string())
            )
        };
        return (d(old.tombstone_retention), d(new.tombstone_retention));
    }
    if item == ACCOUNTS {
        return (
            format!("grace {}", old.account_grace),
            format!("grace {}", new.account_grace),
        );
    }
    let d = |k: Option<&KindPolicy>| match k {
        None => "none".to_string(),
        Some(k) => format!(
            "grace {} account_grace {} max_age {} zdr {}",
            k.grace_after_delete,
            k.grace_after_account_delete,
            k.max_age
                .map(|m| m.to_string())
                .unwrap_or_else(|| "none".into()),
            k.zdr_endpoints
                .as_ref()
                .map(|e| e.len().to_string())
                .unwrap_or_else(|| "off".into())
        ),
    };
    (d(old.kinds.get(item)), d(new.kinds.get(item)))
}

/// How far ahead the guard looks: a change that brings a purge forward to a time within this
/// horizon counts as "newly due". Counting only what is due this very instant would let
/// `grace = "1s"` (meant: "1d") through whenever the deletions were a second old.
pub const GUARD_HORIZON: Span = Span::from_millis(24 * 60 * 60 * 1000);

/// Whether a schedule change moves an item's purge earlier, to now or within
/// [`GUARD_HORIZON`] (§3 R10). Its old time does not matter: a purge 12 hours away brought
/// forward to now counts as much as one 30 days away. A lengthening never counts.
fn newly_due(old: Option<Timestamp>, new: Option<Timestamp>, now: Timestamp) -> bool {
    let horizon = now.plus(GUARD_HORIZON);
    new.is_some_and(|n| n <= horizon && old.is_none_or(|o| n < o))
}

/// Pages through a kind's live and deleted resources, computing schedules under `to`.
/// With `write`, saves the changed ones. Returns (changed, newly due).
async fn walk_kind(
    tx: &mut LedgerTx,
    kind: &str,
    _from: &SchedulePolicy,
    to: &SchedulePolicy,
    now: Timestamp,
    write: bool,
) -> Result<(u64, u64), StoreError> {
    let Some(kp) = to.kinds.get(kind) else {
        return Ok((0, 0));
    };
    let mut after = String::new();
    let (mut changed, mut due) = (0u64, 0u64);
    let mut orgs: HashMap<String, OrgRow> = HashMap::new();
    loop {
        let mut page: Vec<ResourceRow> = tx.kind_resources_page(kind, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        let mut account_ids: Vec<String> = page.iter().map(|r| r.account.clone()).collect();
        account_ids.sort_unstable();
        account_ids.dedup();
        let accounts: HashMap<String, AccountRow> = tx
            .load_accounts(&account_ids)
            .await?
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        let mut org_ids: Vec<String> = accounts
            .values()
            .map(|a| a.org.clone())
            .filter(|o| !orgs.contains_key(o))
            .collect();
        org_ids.sort_unstable();
        org_ids.dedup();
        for o in tx.load_orgs(&org_ids).await? {
            orgs.insert(o.id.clone(), o);
        }
        let mut updated = Vec::new();
        for r in page.iter_mut() {
            let Some(a) = accounts.get(&r.account) else {
                continue;
            };
            let zdr = orgs
                .get(&a.org)
                .is_some_and(|o| o.zdr == ZdrStatus::Approved);
            let old = r.purge_after;
            if r.reschedule(&a.facts(), zdr, kp) {
                changed += 1;
                if newly_due(old, r.purge_after, now) {
                    due += 1;
                }
                if write {
                    updated.push(r.clone());
                }
            }
        }
        if write {
            tx.save_resources(&updated).await?;
        }
    }
    Ok((changed, due))
}

/// Records that a daemon started or reloaded with a config: the fingerprint of the config's
/// schedule policy and of the policy in force (they differ while a change waits for `policy
/// accept`), the file, kinds and targets. The `policy.*` entries hold the values themselves.
pub async fn record_config_loaded(
    ledger: &Ledger,
    config: &crate::config::Config,
    now: Timestamp,
    actor: &str,
) -> Result<(), StoreError> {
    let in_force = in_force(ledger).await?.map(|p| fingerprint(&p));
    let tx = ledger.begin().await?;
    tx.commit_with_audit(&[AuditDraft::new(
        now,
        "config.loaded",
        "config",
        serde_json::json!({
            "file": config.file, "fingerprint": fingerprint(&config.policy),
            "in_force": in_force, "kinds": config.kinds.keys().collect::<Vec<_>>(),
            "targets": config.targets.keys().collect::<Vec<_>>(), "by": actor,
            "version": crate::version::VERSION, "commit": crate::version::COMMIT,
        }),
    )])
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = GUARD_HORIZON.millis();

    fn t(ms: i64) -> Option<Timestamp> {
        Some(Timestamp::from_millis(ms))
    }

    #[test]
    fn newly_due_counts_what_moves_into_the_horizon() {
        let n = 1_000_000_000;
        let now = Timestamp::from_millis(n);
        // Shortened from a month to a second: due in a moment, so it counts even though it is
        // not due this instant.
        assert!(newly_due(t(n + 30 * H), t(n + 1_000), now));
        assert!(newly_due(t(n + 30 * H), t(n - 5), now));
        assert!(newly_due(None, t(n + H), now));
        // Already inside the horizon before, and brought forward: counts (issue 22), whether
        // it was due in twelve hours or in a minute.
        assert!(newly_due(t(n + H / 2), t(n), now));
        assert!(newly_due(t(n + 60_000), t(n - 5), now));
        // Unchanged or later, inside the horizon: does not count.
        assert!(!newly_due(t(n + H / 2), t(n + H / 2), now));
        assert!(!newly_due(t(n), t(n + H / 2), now));
        // Still beyond the horizon, or lengthened, or unscheduled: never counts.
        assert!(!newly_due(t(n + 30 * H), t(n + 2 * H), now));
        assert!(!newly_due(t(n + 1_000), t(n + 30 * H), now));
        assert!(!newly_due(t(n), None, now));
    }
}
