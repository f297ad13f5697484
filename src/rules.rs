//! The lifecycle rules of §3 as pure functions over plain data: no I/O, the clock is an argument.
//!
//! A resource's schedule is never stored as an independent fact. It is *derived* from what
//! happened to the resource (created, deleted, by whom), to its account and org, and from the
//! policy in force; the ledger caches the result (`purge_after`, `rule`) only so that due work can
//! be found by index. Recomputing it after any change (an event, an approval, a new policy, R10)
//! is therefore always the same call: [`resource_schedule`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{AccountState, Cause, Plan, ResourceState, Rule, Span, Timestamp, ZdrStatus};

/// The retention policy of one kind, with defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindPolicy {
    pub grace_after_delete: Span,
    pub grace_after_account_delete: Span,
    pub max_age: Option<Span>,
    /// `Some(endpoints)` when the kind is covered by ZDR (R6).
    pub zdr_endpoints: Option<BTreeSet<String>>,
    /// Windowed kinds (issue 29) take no events: their rows are purged by age in the target.
    /// Left out of the policy's text when `item`, so that configs without windows keep their
    /// fingerprint (R10).
    #[serde(default, skip_serializing_if = "crate::window::Tracking::is_item")]
    pub tracking: crate::window::Tracking,
}

/// Everything that decides *when* things become due: the part of the config that R10 tracks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SchedulePolicy {
    pub account_grace: Span,
    pub kinds: BTreeMap<String, KindPolicy>,
    /// `[ledger] tombstone_retention`: when a tombstone is compacted into counts (R9, issue
    /// 23). A shorter one brings compactions forward, and `reapply` cannot re-run a compacted
    /// purge, so it is guarded like a shorter grace. `None` in a ledger from before the guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone_retention: Option<Span>,
}

/// What the rules need to know about a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceFacts {
    pub created_at: Timestamp,
    pub state: ResourceState,
    pub deleted_at: Option<Timestamp>,
    /// Why it was deleted (`manual` or `account`) while `deleted`; why it was purged once purged.
    pub cause: Option<Cause>,
    pub endpoint: Option<String>,
}

impl ResourceFacts {
    pub fn new_live(created_at: Timestamp, endpoint: Option<String>) -> Self {
        ResourceFacts {
            created_at,
            state: ResourceState::Live,
            deleted_at: None,
            cause: None,
            endpoint,
        }
    }
}

/// What the rules need to know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts {
    pub state: AccountState,
    pub deletion_requested_at: Option<Timestamp>,
}

/// When a resource or account becomes due, and which rule says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub purge_after: Timestamp,
    pub rule: Rule,
}

/// A transition §3 forbids. The message is shown to whoever asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("resource is {0}, only a live resource can be deleted")]
    DeleteNotLive(ResourceState),
    #[error("resource is {0}, only a deleted resource can be restored (R3)")]
    RestoreNotDeleted(ResourceState),
    #[error("its account has a pending deletion: restore the account instead (R3)")]
    RestoreUnderAccountDeletion,
    #[error("account is {0}, new resources need an active account")]
    AccountNotActive(AccountState),
    #[error("account is {0}, only an active account can request deletion")]
    DeletionNotActive(AccountState),
    #[error("account is {0}, only an account with a pending deletion can be restored (R4)")]
    RestoreAccountNotPending(AccountState),
    #[error("ZDR requires the Scale plan")]
    ZdrRequiresScale,
    #[error("ZDR is already {0}")]
    ZdrAlreadyRequested(ZdrStatus),
    #[error("ZDR is {0}, only a requested ZDR can be approved or denied")]
    ZdrNotRequested(ZdrStatus),
}

/// R1: a user deletes a live resource at `at`.
pub fn delete_resource(r: &ResourceFacts, at: Timestamp) -> Result<ResourceFacts, Refusal> {
    if r.state != ResourceState::Live {
        return Err(Refusal::DeleteNotLive(r.state));
    }
    Ok(ResourceFacts {
        state: ResourceState::Deleted,
        deleted_at: Some(at),
        cause: Some(Cause::Manual),
        ..r.clone()
    })
}

/// R3: restore a deleted resource, unless its account is being deleted.
pub fn restore_resource(
    r: &ResourceFacts,
    account: &AccountFacts,
) -> Result<ResourceFacts, Refusal> {
    if r.state != ResourceState::Deleted {
        return Err(Refusal::RestoreNotDeleted(r.state));
    }
    if account.state == AccountState::DeletionRequested {
        return Err(Refusal::RestoreUnderAccountDeletion);
    }
    Ok(ResourceFacts {
        state: ResourceState::Live,
        deleted_at: None,
        cause: None,
        ..r.clone()
    })
}

/// A new resource may only be created in an active account.
pub fn create_resource(account: &AccountFacts) -> Result<(), Refusal> {
    match account.state {
        AccountState::Active => Ok(()),
        s => Err(Refusal::AccountNotActive(s)),
    }
}

/// R2, account side: an active account requests deletion at `at`.
pub fn request_account_deletion(a: &AccountFacts, at: Timestamp) -> Result<AccountFacts, Refusal> {
    if a.state != AccountState::Active {
        return Err(Refusal::DeletionNotActive(a.state));
    }
    Ok(AccountFacts {
        state: AccountState::DeletionRequested,
        deletion_requested_at: Some(at),
    })
}

/// R2, resource side: a live resource becomes deleted with cause `account`. A resource already
/// deleted keeps its own deletion; [`resource_schedule`] then takes the earlier of both times.
pub fn delete_for_account(r: &ResourceFacts, at: Timestamp) -> ResourceFacts {
    if r.state == ResourceState::Live {
        ResourceFacts {
            state: ResourceState::Deleted,
            deleted_at: Some(at),
            cause: Some(Cause::Account),
            ..r.clone()
        }
    } else {
        r.clone()
    }
}

/// R4, account side.
pub fn restore_account(a: &AccountFacts) -> Result<AccountFacts, Refusal> {
    if a.state != AccountState::DeletionRequested {
        return Err(Refusal::RestoreAccountNotPending(a.state));
    }
    Ok(AccountFacts {
        state: AccountState::Active,
        deletion_requested_at: None,
    })
}

/// R4, resource side: only what the account deletion deleted comes back.
pub fn restore_for_account(r: &ResourceFacts) -> ResourceFacts {
    if r.state == ResourceState::Deleted && r.cause == Some(Cause::Account) {
        ResourceFacts {
            state: ResourceState::Live,
            deleted_at: None,
            cause: None,
            ..r.clone()
        }
    } else {
        r.clone()
    }
}

/// The schedule of a live or deleted resource under `policy` (R1, R2, R5, R6).
///
/// Every rule that applies proposes a time; the earliest wins, because each rule is a promise
/// that the data is gone *by* then (a retention limit is not lengthened by a later deletion).
/// Returns `None` for a resource that nothing makes due (a live one without `max_age`), and for
/// resources whose schedule is frozen (`purging`, `purged`, `failed`).
pub fn resource_schedule(
    r: &ResourceFacts,
    account: &AccountFacts,
    zdr_approved: bool,
    policy: &KindPolicy,
) -> Option<Schedule> {
    if !matches!(r.state, ResourceState::Live | ResourceState::Deleted) {
        return None;
    }
    let mut proposals: Vec<Schedule> = Vec::with_capacity(4);
    if r.state == ResourceState::Deleted {
        if let Some(at) = r.deleted_at {
            match r.cause {
                Some(Cause::Account) => proposals.push(Schedule {
                    purge_after: at.plus(policy.grace_after_account_delete),
                    rule: Rule::AccountDelete,
                }),
                _ => proposals.push(Schedule {
                    purge_after: at.plus(policy.grace_after_delete),
                    rule: Rule::ManualDelete,
                }),
            }
        }
        if account.state == AccountState::DeletionRequested
            && let Some(at) = account.deletion_requested_at
        {
            proposals.push(Schedule {
                purge_after: at.plus(policy.grace_after_account_delete),
                rule: Rule::AccountDelete,
            });
        }
    }
    if let Some(max_age) = policy.max_age {
        proposals.push(Schedule {
            purge_after: r.created_at.plus(max_age),
            rule: Rule::RetentionLimit,
        });
    }
    if zdr_approved && zdr_covers(policy, r.endpoint.as_deref()) {
        proposals.push(Schedule {
            purge_after: r.created_at,
            rule: Rule::Zdr,
        });
    }
    // Earliest time wins; on a tie the more specific rule names the cause (ZDR over expiry over
    // account over manual), so a ZDR purge is always recorded as one.
    proposals
        .into_iter()
        .min_by_key(|s| (s.purge_after, std::cmp::Reverse(rule_rank(s.rule))))
}

fn rule_rank(rule: Rule) -> u8 {
    match rule {
        Rule::ManualDelete => 0,
        Rule::AccountDelete => 1,
        Rule::RetentionLimit => 2,
        Rule::Zdr => 3,
    }
}

/// What one target still holds of a resource whose purge may have run part of its deletes
/// before its instance died (issue 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFinding {
    Gone,
    Present,
    /// The target could not tell (unreachable, or nothing to ask it with).
    Unknown,
}

/// What the ledger may say of such a resource once every target was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptedPurge {
    /// Gone everywhere: it was purged, before whatever now keeps it.
    Gone,
    /// Still there everywhere: nothing of it was destroyed.
    Intact,
    /// Partly gone, or a target could not tell: neither may be claimed.
    Interrupted,
}

/// Gone only when every target says gone, intact only when every target says present; any
/// mix, or any target that cannot tell, is `Interrupted`. A kind without targets has nothing
/// to delete, so its purge cannot have been partial: `Gone`.
pub fn interrupted_purge(found: &[TargetFinding]) -> InterruptedPurge {
    if found.iter().all(|f| *f == TargetFinding::Gone) {
        InterruptedPurge::Gone
    } else if found.iter().all(|f| *f == TargetFinding::Present) {
        InterruptedPurge::Intact
    } else {
        InterruptedPurge::Interrupted
    }
}

/// R6: does ZDR cover a resource of this kind with this endpoint?
pub fn zdr_covers(policy: &KindPolicy, endpoint: Option<&str>) -> bool {
    match (&policy.zdr_endpoints, endpoint) {
        (Some(endpoints), Some(e)) => endpoints.contains(e),
        _ => false,
    }
}

/// R2/R8: when an account with a pending deletion becomes due.
pub fn account_schedule(a: &AccountFacts, policy: &SchedulePolicy) -> Option<Timestamp> {
    match (a.state, a.deletion_requested_at) {
        (AccountState::DeletionRequested, Some(at)) => Some(at.plus(policy.account_grace)),
        _ => None,
    }
}

/// R7/R11: due means the time has come by the clock in hand. A clock that runs backwards
/// therefore only ever makes fewer things due.
pub fn is_due(purge_after: Timestamp, now: Timestamp) -> bool {
    purge_after <= now
}

/// R11: an event may not claim to come from further in the future than the allowed skew.
pub fn check_event_time(at: Timestamp, now: Timestamp, max_skew: Span) -> Result<(), String> {
    if at > now.plus(max_skew) {
        Err(format!(
            "`at` {} is in the future beyond ingest.max_clock_skew ({max_skew}) of now {}",
            at, now
        ))
    } else {
        Ok(())
    }
}

/// R6: ZDR requests, approvals and denials.
pub fn request_zdr(plan: Plan, status: ZdrStatus) -> Result<ZdrStatus, Refusal> {
    if plan != Plan::Scale {
        return Err(Refusal::ZdrRequiresScale);
    }
    match status {
        ZdrStatus::Off | ZdrStatus::Denied => Ok(ZdrStatus::Requested),
        s => Err(Refusal::ZdrAlreadyRequested(s)),
    }
}

pub fn decide_zdr(status: ZdrStatus, approve: bool) -> Result<ZdrStatus, Refusal> {
    match status {
        ZdrStatus::Requested if approve => Ok(ZdrStatus::Approved),
        ZdrStatus::Requested => Ok(ZdrStatus::Denied),
        s => Err(Refusal::ZdrNotRequested(s)),
    }
}

/// A plan change: ZDR is a Scale feature, so moving to `free` revokes any ZDR status (the org's
/// future API logs get the normal monitoring window). Chosen over refusing the downgrade because
/// the plan is the billing system's fact, and refusing its event would stall the event stream.
pub fn change_plan(new_plan: Plan, status: ZdrStatus) -> ZdrStatus {
    if new_plan == Plan::Free {
        ZdrStatus::Off
    } else {
        status
    }
}

/// The delay before retry number `attempt` (1 = the first retry): `base` doubled per attempt,
/// capped at `cap` (never below `base`). Failed purges add jitter on top; notifications do not.
pub fn retry_delay(base: Span, cap: Span, attempt: i64) -> Span {
    let base = base.millis().max(1);
    Span::from_millis(
        base.saturating_mul(1i64 << (attempt - 1).clamp(0, 40))
            .min(cap.millis().max(base)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn retries_double_up_to_the_cap() {
        let d = |a| retry_delay(Span::from_secs(5), Span::from_secs(60), a).millis() / 1000;
        assert_eq!(
            [d(0), d(1), d(2), d(3), d(4), d(5), d(62)],
            [5, 5, 10, 20, 40, 60, 60]
        );
    }

    fn policy(grace: i64, acct_grace: i64) -> KindPolicy {
        KindPolicy {
            grace_after_delete: Span::from_millis(grace),
            grace_after_account_delete: Span::from_millis(acct_grace),
            max_age: None,
            zdr_endpoints: None,
            tracking: Default::default(),
        }
    }
    fn active() -> AccountFacts {
        AccountFacts {
            state: AccountState::Active,
            deletion_requested_at: None,
        }
    }

    #[test]
    fn r1_manual_deletion_is_due_after_its_grace() {
        let r = ResourceFacts::new_live(Timestamp::from_millis(0), None);
        let d = delete_resource(&r, Timestamp::from_millis(10 * DAY)).unwrap();
        let s = resource_schedule(&d, &active(), false, &policy(30 * DAY, 30 * DAY)).unwrap();
        assert_eq!(s.purge_after, Timestamp::from_millis(40 * DAY));
        assert_eq!(s.rule, Rule::ManualDelete);
        assert_eq!(d.cause, Some(Cause::Manual));
        assert!(resource_schedule(&r, &active(), false, &policy(1, 1)).is_none());
    }

    #[test]
    fn r2_keeps_the_earlier_of_manual_and_account_schedule() {
        let p = policy(30 * DAY, 5 * DAY);
        let r = delete_resource(
            &ResourceFacts::new_live(Timestamp::from_millis(0), None),
            Timestamp::from_millis(DAY),
        )
        .unwrap();
        let acct = request_account_deletion(&active(), Timestamp::from_millis(2 * DAY)).unwrap();
        let after = delete_for_account(&r, Timestamp::from_millis(2 * DAY));
        assert_eq!(
            after.cause,
            Some(Cause::Manual),
            "a manual deletion stays manual"
        );
        let s = resource_schedule(&after, &acct, false, &p).unwrap();
        assert_eq!(s.purge_after, Timestamp::from_millis(7 * DAY));
        assert_eq!(s.rule, Rule::AccountDelete);
        // R4: restoring the account gives the manual deletion its own schedule back.
        let acct = restore_account(&acct).unwrap();
        let back = restore_for_account(&after);
        assert_eq!(back.state, ResourceState::Deleted);
        let s = resource_schedule(&back, &acct, false, &p).unwrap();
        assert_eq!(s.purge_after, Timestamp::from_millis(31 * DAY));
    }

    #[test]
    fn r3_restore_is_refused_under_account_deletion_and_when_not_deleted() {
        let live = ResourceFacts::new_live(Timestamp::from_millis(0), None);
        assert_eq!(
            restore_resource(&live, &active()),
            Err(Refusal::RestoreNotDeleted(ResourceState::Live))
        );
        let acct = request_account_deletion(&active(), Timestamp::from_millis(1)).unwrap();
        let d = delete_for_account(&live, Timestamp::from_millis(1));
        assert_eq!(
            restore_resource(&d, &acct),
            Err(Refusal::RestoreUnderAccountDeletion)
        );
        let purging = ResourceFacts {
            state: ResourceState::Purging,
            ..d.clone()
        };
        assert!(restore_resource(&purging, &active()).is_err());
    }

    #[test]
    fn r5_retention_limit_applies_to_live_and_caps_deleted() {
        let mut p = policy(30 * DAY, 30 * DAY);
        p.max_age = Some(Span::from_millis(30 * DAY));
        let r = ResourceFacts::new_live(Timestamp::from_millis(0), None);
        let s = resource_schedule(&r, &active(), false, &p).unwrap();
        assert_eq!(
            (s.purge_after, s.rule),
            (Timestamp::from_millis(30 * DAY), Rule::RetentionLimit)
        );
        let d = delete_resource(&r, Timestamp::from_millis(29 * DAY)).unwrap();
        let s = resource_schedule(&d, &active(), false, &p).unwrap();
        assert_eq!(
            s.purge_after,
            Timestamp::from_millis(30 * DAY),
            "a deletion never extends max_age"
        );
    }

    #[test]
    fn r6_zdr_is_due_at_once_only_for_covered_endpoints() {
        let mut p = policy(0, 0);
        p.max_age = Some(Span::from_millis(30 * DAY));
        p.zdr_endpoints = Some(["/v1/chat/completions".to_string()].into());
        let covered = ResourceFacts::new_live(
            Timestamp::from_millis(5),
            Some("/v1/chat/completions".into()),
        );
        let other = ResourceFacts::new_live(Timestamp::from_millis(5), Some("/v1/files".into()));
        let s = resource_schedule(&covered, &active(), true, &p).unwrap();
        assert_eq!(
            (s.purge_after, s.rule),
            (Timestamp::from_millis(5), Rule::Zdr)
        );
        let s = resource_schedule(&other, &active(), true, &p).unwrap();
        assert_eq!(s.rule, Rule::RetentionLimit);
        let s = resource_schedule(&covered, &active(), false, &p).unwrap();
        assert_eq!(s.rule, Rule::RetentionLimit, "not approved: normal window");
    }

    #[test]
    fn zdr_request_needs_scale_and_decisions_need_a_request() {
        assert_eq!(
            request_zdr(Plan::Free, ZdrStatus::Off),
            Err(Refusal::ZdrRequiresScale)
        );
        assert_eq!(
            Refusal::ZdrRequiresScale.to_string(),
            "ZDR requires the Scale plan"
        );
        assert_eq!(
            request_zdr(Plan::Scale, ZdrStatus::Off),
            Ok(ZdrStatus::Requested)
        );
        assert_eq!(
            request_zdr(Plan::Scale, ZdrStatus::Denied),
            Ok(ZdrStatus::Requested)
        );
        assert!(request_zdr(Plan::Scale, ZdrStatus::Approved).is_err());
        assert_eq!(
            decide_zdr(ZdrStatus::Requested, true),
            Ok(ZdrStatus::Approved)
        );
        assert_eq!(
            decide_zdr(ZdrStatus::Requested, false),
            Ok(ZdrStatus::Denied)
        );
        assert!(decide_zdr(ZdrStatus::Off, true).is_err());
        assert_eq!(change_plan(Plan::Free, ZdrStatus::Approved), ZdrStatus::Off);
        assert_eq!(
            change_plan(Plan::Scale, ZdrStatus::Approved),
            ZdrStatus::Approved
        );
    }

    #[test]
    fn r11_future_events_beyond_skew_are_rejected() {
        let skew = Span::from_millis(5 * 60_000);
        assert!(
            check_event_time(
                Timestamp::from_millis(1000 + skew.millis()),
                Timestamp::from_millis(1000),
                skew
            )
            .is_ok()
        );
        assert!(
            check_event_time(
                Timestamp::from_millis(1001 + skew.millis()),
                Timestamp::from_millis(1000),
                skew
            )
            .is_err()
        );
    }

    fn arb_policy() -> impl Strategy<Value = KindPolicy> {
        (0..60 * DAY, 0..60 * DAY, proptest::option::of(0..90 * DAY)).prop_map(|(g, ag, m)| {
            KindPolicy {
                grace_after_delete: Span::from_millis(g),
                grace_after_account_delete: Span::from_millis(ag),
                max_age: m.map(Span::from_millis),
                zdr_endpoints: None,
                tracking: Default::default(),
            }
        })
    }

    proptest! {
        /// Without a retention limit, nothing deleted is due before deleted_at + grace.
        #[test]
        fn nothing_due_before_deleted_at_plus_grace(
            p in arb_policy(), created in 0..DAY, del in 0..DAY, now in 0..200 * DAY
        ) {
            let p = KindPolicy { max_age: None, ..p };
            let r = ResourceFacts::new_live(Timestamp::from_millis(created), None);
            let d = delete_resource(&r, Timestamp::from_millis(created + del)).unwrap();
            let s = resource_schedule(&d, &active(), false, &p).unwrap();
            if is_due(s.purge_after, Timestamp::from_millis(now)) {
                prop_assert!(now >= created + del + p.grace_after_delete.millis());
            }
        }

        /// Restoring inside the grace always brings the resource back to live, with no schedule
        /// unless a retention limit applies.
        #[test]
        fn restore_inside_grace_returns_to_live(p in arb_policy(), del in 0..DAY, frac in 0.0f64..1.0) {
            let r = ResourceFacts::new_live(Timestamp::from_millis(0), None);
            let d = delete_resource(&r, Timestamp::from_millis(del)).unwrap();
            let s = resource_schedule(&d, &active(), false, &p).unwrap();
            // "Inside the grace": strictly between the deletion and the purge time.
            prop_assume!(s.purge_after.millis() > del);
            let now = del + ((s.purge_after.millis() - 1 - del) as f64 * frac) as i64;
            prop_assert!(!is_due(s.purge_after, Timestamp::from_millis(now)));
            let back = restore_resource(&d, &active()).unwrap();
            prop_assert_eq!(back.state, ResourceState::Live);
            let again = resource_schedule(&back, &active(), false, &p);
            match p.max_age {
                None => prop_assert!(again.is_none()),
                Some(m) => prop_assert_eq!(again.unwrap().purge_after, Timestamp::from_millis(m.millis())),
            }
        }

        /// R2: an already deleted resource keeps the earlier of its own and the account's time.
        #[test]
        fn account_deletion_keeps_the_earlier_time(
            p in arb_policy(), del in 0..30 * DAY, acct_at in 0..30 * DAY, manual_first in any::<bool>()
        ) {
            let p = KindPolicy { max_age: None, ..p };
            let live = ResourceFacts::new_live(Timestamp::from_millis(0), None);
            let acct = request_account_deletion(&active(), Timestamp::from_millis(acct_at)).unwrap();
            let r = if manual_first {
                delete_for_account(&delete_resource(&live, Timestamp::from_millis(del)).unwrap(), Timestamp::from_millis(acct_at))
            } else {
                delete_for_account(&live, Timestamp::from_millis(acct_at))
            };
            let s = resource_schedule(&r, &acct, false, &p).unwrap();
            let account_time = acct_at + p.grace_after_account_delete.millis();
            if manual_first {
                prop_assert_eq!(s.purge_after.millis(), account_time.min(del + p.grace_after_delete.millis()));
            } else {
                prop_assert_eq!(s.purge_after.millis(), account_time);
                prop_assert_eq!(r.cause, Some(Cause::Account));
            }
        }

        /// R11: moving the clock backwards never makes anything due that was not due before.
        #[test]
        fn backwards_clock_never_makes_more_due(purge_after in any::<i64>(), now in any::<i64>(), back in 0i64..i64::MAX) {
            let earlier = now.saturating_sub(back);
            if is_due(Timestamp::from_millis(purge_after), Timestamp::from_millis(earlier)) {
                prop_assert!(is_due(Timestamp::from_millis(purge_after), Timestamp::from_millis(now)));
            }
        }

        /// Issue 30: the ledger says "gone" only when every target confirmed it, "intact" only
        /// when every target still has it; anything else, an unknown included, is interrupted.
        #[test]
        fn an_interrupted_purge_claims_only_what_every_target_confirms(
            found in proptest::collection::vec(0..3u8, 0..6)
        ) {
            let found: Vec<TargetFinding> = found
                .into_iter()
                .map(|f| [TargetFinding::Gone, TargetFinding::Present, TargetFinding::Unknown][f as usize])
                .collect();
            let verdict = interrupted_purge(&found);
            let all = |t| found.iter().all(|f| *f == t);
            prop_assert_eq!(verdict == InterruptedPurge::Gone, all(TargetFinding::Gone));
            prop_assert_eq!(
                verdict == InterruptedPurge::Intact,
                !found.is_empty() && all(TargetFinding::Present)
            );
            if found.contains(&TargetFinding::Unknown) {
                prop_assert_eq!(verdict, InterruptedPurge::Interrupted);
            }
        }

        /// A schedule is never earlier than creation, and never earlier than any single rule allows.
        #[test]
        fn schedule_is_the_minimum_of_the_rules(p in arb_policy(), del in 0..DAY, created in 0..DAY) {
            let r = ResourceFacts::new_live(Timestamp::from_millis(created), None);
            let d = delete_resource(&r, Timestamp::from_millis(created + del)).unwrap();
            let s = resource_schedule(&d, &active(), false, &p).unwrap();
            let manual = created + del + p.grace_after_delete.millis();
            let expected = match p.max_age { Some(m) => manual.min(created + m.millis()), None => manual };
            prop_assert_eq!(s.purge_after.millis(), expected);
            prop_assert!(s.purge_after.millis() >= created);
        }
    }
}
