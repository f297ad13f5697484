//! Actions people take: legal holds, ZDR decisions, retries, an org's own windows.
//!
//! Invariant: each change an action makes commits together with its audit entry, in one ledger
//! transaction, or not at all; a hold is placed or released only in a hold-change
//! transaction ([`crate::store::HoldTx`], the hold lock held exclusively), so it is
//! linearizable with purges (Invariant H, §4).
//!
//! Mechanism: each function checks its input, then applies and audits it in that transaction.
//! The CLI and the HTTP API both reach them through [`crate::app::App`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use thiserror::Error;
use tracing::info;

use crate::audit::AuditDraft;
use crate::holds::HoldScope;
use crate::ids::{CaseRef, OrgId};
use crate::ingest;
use crate::model::{Span, Timestamp, ZdrStatus};
use crate::rules::{self, SchedulePolicy};
use crate::store::{
    HoldRow, InFlight, InFlightOutcome, Ledger, NewHold, OrgWindowRow, PendingOrgWindow,
    ReleaseApproval, StateCount, StoreError,
};

#[derive(Debug, Error)]
pub enum AdminError {
    /// The request is wrong (unknown id, refused transition, bad scope): nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (a hold already released, the same person
    /// asking twice, a ZDR decision on an org that is not `requested`, a ZDR request from a
    /// `free` org): nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// What the request names does not exist (an unknown org): nothing changed.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A hold to place.
#[derive(Debug, Clone)]
pub struct PlaceHold {
    pub case: String,
    pub by: String,
    pub reason: Option<String>,
    pub scope: HoldScope,
}

/// The answer to `hold place` (Invariant H).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HoldPlaced {
    pub id: i64,
    pub case: String,
    /// Resources the hold matches now, in any state.
    pub matched: i64,
    /// Matching resources purged before the hold took effect (their tombstones still in the
    /// ledger).
    pub already_purged: i64,
    /// Matching resources purged so long ago that their tombstones were compacted into counts
    /// (`[ledger] tombstone_retention`), counted from the per-account counts: purged too, on top
    /// of `already_purged`. `null` when the scope names a creation range (which the counts do
    /// not keep) and some tombstone was compacted: unknown.
    pub already_compacted: Option<i64>,
    /// Matching resources whose purge may have started and was never recorded (a crashed
    /// sweep, or a failed purge waiting to retry): the hold stops it from completing, but their
    /// data may already be partly gone. A batch a sweep claimed and has not started is not
    /// counted (its purge sees the hold). How each ends is found out when its claim is taken
    /// over, and `hold show` tells.
    pub in_flight: i64,
    pub in_flight_resources: Vec<String>,
    pub by_state: BTreeMap<String, i64>,
}

pub async fn place_hold(
    ledger: &Ledger,
    req: PlaceHold,
    now: Timestamp,
) -> Result<HoldPlaced, AdminError> {
    place_hold_via(ledger, req, None, now).await
}

/// [`place_hold`], recording `via` (the API token's name) in the audit entry.
pub async fn place_hold_via(
    ledger: &Ledger,
    req: PlaceHold,
    via: Option<&str>,
    now: Timestamp,
) -> Result<HoldPlaced, AdminError> {
    CaseRef::parse_as("--case", req.case.as_str()).map_err(AdminError::Invalid)?;
    if req.by.trim().is_empty() {
        return Err(AdminError::Invalid("--by must not be empty".into()));
    }
    req.scope.validate().map_err(AdminError::Invalid)?;
    let mut tx = ledger.begin_hold_change().await?;
    let s = &req.scope;
    if let Some(o) = &s.org
        && tx.load_orgs(std::slice::from_ref(o)).await?.is_empty()
    {
        return Err(AdminError::Invalid(format!("unknown org `{o}`")));
    }
    if let Some(a) = &s.account
        && tx.load_accounts(std::slice::from_ref(a)).await?.is_empty()
    {
        return Err(AdminError::Invalid(format!("unknown account `{a}`")));
    }
    if let Some(r) = &s.resource
        && tx.load_resources(std::slice::from_ref(r)).await?.is_empty()
    {
        return Err(AdminError::Invalid(format!("unknown resource `{r}`")));
    }
    let counts = tx.count_matching(s).await?;
    let by_state = by_state(&counts);
    let matched: i64 = by_state.values().sum();
    let already_purged = by_state.get("purged").copied().unwrap_or(0);
    let already_compacted = tx.count_compacted(s).await?;
    // A batch a sweep claimed and has not started is not in flight: its purge waits for this
    // transaction and then sees the hold.
    let in_flight_resources = tx.in_flight(s).await?;
    let in_flight = in_flight_resources.len() as i64;
    crate::failpoint::crash("hold_before_insert");
    let id = tx
        .insert_hold(&NewHold {
            case: req.case.clone(),
            reason: req.reason.clone(),
            placed_by: req.by.clone(),
            placed_at: now,
            scope: req.scope.clone(),
            already_purged,
            in_flight,
        })
        .await?;
    tx.record_in_flight(id, &in_flight_resources).await?;
    tx.commit_with_audit(&[AuditDraft::new(
        now,
        "hold.placed",
        format!("hold/{id}"),
        json!({
            "case": req.case, "reason": req.reason, "placed_by": req.by, "via": via, "scope": req.scope,
            "matched": matched, "already_purged": already_purged, "already_compacted": already_compacted,
            "in_flight": in_flight,
        }),
    )])
    .await?;
    crate::failpoint::crash("hold_after_commit");
    info!(
        hold = id, case = %req.case, by = %req.by, via = via.unwrap_or("cli"), scope = %req.scope.describe(), matched, already_purged,
        already_compacted = %already_compacted.map_or_else(|| "unknown".to_string(), |n| n.to_string()), in_flight,
        message_id = crate::telemetry::message_id::HOLD_PLACED, "hold placed"
    );
    Ok(HoldPlaced {
        id,
        case: req.case,
        matched,
        already_purged,
        already_compacted,
        in_flight,
        in_flight_resources,
        by_state,
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HoldReleased {
    pub id: i64,
    pub case: String,
    /// Resources this hold had kept that no other hold keeps.
    pub unblocked: u64,
    /// Of those, how many are due now and go at the next sweep.
    pub purgeable_now: u64,
}

/// An ask to release a hold that waits for more people (`[holds] release_approvals`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReleasePending {
    pub id: i64,
    pub case: String,
    pub pending: bool,
    /// Different people who have asked so far.
    pub approvals: u32,
    pub needed: u32,
    pub asked_by: Vec<String>,
}

/// What an ask to release a hold did.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ReleaseOutcome {
    Released(HoldReleased),
    Pending(ReleasePending),
}

/// Releases hold `id` on one ask (`release_approvals = 1`, no API token).
pub async fn release_hold(
    ledger: &Ledger,
    id: i64,
    by: &str,
    now: Timestamp,
) -> Result<HoldReleased, AdminError> {
    match ask_release(ledger, id, by, None, 1, now).await? {
        ReleaseOutcome::Released(r) => Ok(r),
        ReleaseOutcome::Pending(p) => Err(AdminError::Invalid(format!(
            "hold {id} still waits for {} more ask(s)",
            p.needed - p.approvals
        ))),
    }
}

/// One person's ask to release hold `id`: it is released when `needed` different people have
/// asked (the asks, the release and the unblocking in one hold-change transaction, audited).
/// The same person asking twice, or a hold already released: [`AdminError::Conflict`].
pub async fn ask_release(
    ledger: &Ledger,
    id: i64,
    by: &str,
    via: Option<&str>,
    needed: u32,
    now: Timestamp,
) -> Result<ReleaseOutcome, AdminError> {
    if by.trim().is_empty() {
        return Err(AdminError::Invalid("--by must not be empty".into()));
    }
    let mut tx = ledger.begin_hold_change().await?;
    let Some(hold) = tx.hold(id).await? else {
        return Err(AdminError::Invalid(format!("unknown hold {id}")));
    };
    if let Some(at) = hold.released_at {
        return Err(AdminError::Conflict(format!(
            "hold {id} was already released at {at} by {}",
            hold.released_by.as_deref().unwrap_or("?")
        )));
    }
    // Different people: names compared trimmed and case-blind, and over HTTP each ask must come
    // through a different token, or one caller could name two people and release a hold alone.
    let by = by.trim();
    let earlier = tx.tx_release_approvals(id).await?;
    if let Some(v) = via
        && let Some(a) = earlier.iter().find(|a| a.via.as_deref() == Some(v))
    {
        return Err(AdminError::Conflict(format!(
            "token `{v}` already carried {}'s ask to release hold {id}; each of the {needed} people asks with a token of their own",
            a.by
        )));
    }
    if earlier.iter().any(|a| a.by.trim().eq_ignore_ascii_case(by))
        || !tx.add_release_approval(id, by, now, via).await?
    {
        return Err(AdminError::Conflict(format!(
            "{by} has already asked to release hold {id}; it takes {needed} different people"
        )));
    }
    let asks = tx.tx_release_approvals(id).await?;
    let asked_by: Vec<String> = asks.iter().map(|a| a.by.clone()).collect();
    let approvals = asks.len() as u32;
    if approvals < needed {
        tx.commit_with_audit(&[AuditDraft::new(
            now,
            "hold.release_requested",
            format!("hold/{id}"),
            json!({"case": hold.case, "asked_by": by, "via": via, "approvals": approvals, "needed": needed}),
        )])
        .await?;
        info!(hold = id, case = %hold.case, by = %by, via = via.unwrap_or("cli"), approvals, needed, "hold release asked; waiting for more people");
        return Ok(ReleaseOutcome::Pending(ReleasePending {
            id,
            case: hold.case,
            pending: true,
            approvals,
            needed,
            asked_by,
        }));
    }
    tx.release_hold(id, by, now).await?;
    let freed = tx.unblock(id).await?;
    let purgeable_now = freed
        .iter()
        .filter(|r| r.purge_after.is_some_and(|p| p <= now))
        .count() as u64;
    let unblocked = freed.len() as u64;
    let mut entry = json!({"case": hold.case, "released_by": by, "via": via, "unblocked": unblocked, "purgeable_now": purgeable_now});
    if needed > 1 {
        entry["approved_by"] = json!(asked_by);
    }
    tx.commit_with_audit(&[AuditDraft::new(
        now,
        "hold.released",
        format!("hold/{id}"),
        entry,
    )])
    .await?;
    info!(hold = id, case = %hold.case, by = %by, via = via.unwrap_or("cli"), unblocked, purgeable_now, message_id = crate::telemetry::message_id::HOLD_RELEASED, "hold released");
    Ok(ReleaseOutcome::Released(HoldReleased {
        id,
        case: hold.case,
        unblocked,
        purgeable_now,
    }))
}

/// A hold with what it matches now, and its answer made exact (issue 30).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HoldDetail {
    #[serde(flatten)]
    #[schema(inline)]
    pub hold: HoldRow,
    pub active: bool,
    pub matched: i64,
    pub matched_by_state: BTreeMap<String, i64>,
    pub matched_by_kind: BTreeMap<String, i64>,
    /// Matching resources purged before the hold took effect: those its answer counted, plus
    /// those in flight then and since found gone. `None` for a hold placed before the ledger
    /// kept its answer.
    pub already_purged: Option<i64>,
    /// Of the resources its answer called in flight, those not found out yet.
    pub in_flight: i64,
    /// The resources its answer called in flight, and how each ended (`outcome` null: not
    /// found out yet, which happens when their claim is taken over).
    pub in_flight_resources: Vec<InFlight>,
    /// Asks to release it still waiting for more people (`[holds] release_approvals`); empty
    /// once released.
    pub pending_approvals: Vec<ReleaseApproval>,
}

pub async fn hold_detail(ledger: &Ledger, id: i64) -> Result<HoldDetail, AdminError> {
    let hold = ledger
        .hold(id)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("unknown hold {id}")))?;
    let counts = ledger.count_matching(&hold.scope).await?;
    let mut by_kind = BTreeMap::new();
    for c in &counts {
        *by_kind.entry(c.kind.clone()).or_default() += c.count;
    }
    let by_state = by_state(&counts);
    let in_flight = ledger.hold_in_flight(id).await?;
    let pending_approvals = if hold.is_active() {
        ledger.release_approvals(id).await?
    } else {
        Vec::new()
    };
    let found_gone = in_flight
        .iter()
        .filter(|f| f.outcome == Some(InFlightOutcome::Purged))
        .count() as i64;
    Ok(HoldDetail {
        active: hold.is_active(),
        matched: by_state.values().sum(),
        matched_by_state: by_state,
        matched_by_kind: by_kind,
        already_purged: hold.placed_already_purged.map(|n| n + found_gone),
        in_flight: in_flight.iter().filter(|f| f.outcome.is_none()).count() as i64,
        in_flight_resources: in_flight,
        pending_approvals,
        hold,
    })
}

fn by_state(counts: &[StateCount]) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for c in counts {
        *m.entry(c.state.clone()).or_default() += c.count;
    }
    m
}

/// `org set` / `PUT /v1/orgs/{id}`: creates an org or changes its plan and training opt-out,
/// through the ingest of an `org.upsert` event, so it follows exactly the event's rules (a new
/// org needs a plan; moving to `free` revokes ZDR; every change audited). Returns the org.
pub async fn set_org(
    ledger: &Ledger,
    ctx: &ingest::IngestContext<'_>,
    id: &OrgId,
    plan: Option<crate::model::Plan>,
    training_opt_out: Option<bool>,
) -> Result<crate::report::OrgView, AdminError> {
    if plan.is_none() && training_opt_out.is_none() {
        return Err(AdminError::Invalid(
            "nothing to set: give a plan, a training opt-out, or both".into(),
        ));
    }
    let event = crate::events::Event {
        line: 1,
        event_id: None,
        at: None,
        body: crate::events::EventBody::OrgUpsert {
            org: id.clone(),
            plan,
            training_opt_out,
        },
    };
    match ingest::ingest_events(ledger, ctx, &[event]).await {
        Ok(_) => {}
        Err(ingest::IngestError::Invalid(e)) => {
            let reason = e.into_iter().map(|l| l.reason).collect::<Vec<_>>();
            return Err(AdminError::Invalid(reason.join("; ")));
        }
        Err(ingest::IngestError::Store(e)) => return Err(e.into()),
    }
    crate::report::org(ledger, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("unknown org `{id}`")))
}

/// A ZDR action on an org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ZdrAction {
    Request,
    Approve,
    Deny,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ZdrDecision {
    pub org: String,
    pub zdr: ZdrStatus,
    /// Schedules that changed (approval makes covered resources due at once).
    pub rescheduled: u64,
}

pub async fn zdr(
    ledger: &Ledger,
    policy: &SchedulePolicy,
    org_id: &str,
    action: ZdrAction,
    by: &str,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<ZdrDecision, AdminError> {
    zdr_via(ledger, policy, org_id, action, by, reason, None, now).await
}

/// [`zdr`], recording `via` (the API token's name) in the audit entry. A request needs its
/// reasons (the org must state them) and a denial its reason (what the org is told); a
/// request from a `free` org and a decision on an org that is not `requested` conflict.
#[allow(clippy::too_many_arguments)]
pub async fn zdr_via(
    ledger: &Ledger,
    policy: &SchedulePolicy,
    org_id: &str,
    action: ZdrAction,
    by: &str,
    reason: Option<&str>,
    via: Option<&str>,
    now: Timestamp,
) -> Result<ZdrDecision, AdminError> {
    if by.trim().is_empty() {
        return Err(AdminError::Invalid("--by must not be empty".into()));
    }
    let no_reason = reason.is_none_or(|r| r.trim().is_empty());
    if action == ZdrAction::Request && no_reason {
        return Err(AdminError::Invalid(
            "a ZDR request needs --reason: the org's legitimate reasons for it".into(),
        ));
    }
    if action == ZdrAction::Deny && no_reason {
        return Err(AdminError::Invalid(
            "a denial needs --reason: it is what the org is told".into(),
        ));
    }
    let mut tx = ledger.begin().await?;
    let Some(mut org) = tx.load_orgs(&[org_id.to_string()]).await?.pop() else {
        return Err(AdminError::NotFound(format!("unknown org `{org_id}`")));
    };
    let next = match action {
        ZdrAction::Request => rules::request_zdr(org.plan, org.zdr),
        ZdrAction::Approve => rules::decide_zdr(org.zdr, true),
        ZdrAction::Deny => rules::decide_zdr(org.zdr, false),
    }
    .map_err(|r| AdminError::Conflict(r.to_string()))?;
    org.zdr = next;
    org.zdr_by = Some(by.to_string());
    org.zdr_reason = reason.map(str::to_string);
    org.zdr_at = Some(now);
    org.updated_at = now;
    tx.save_orgs(std::slice::from_ref(&org)).await?;
    let rescheduled = if action == ZdrAction::Approve {
        ingest::reschedule_org(&mut tx, policy, &org).await?
    } else {
        0
    };
    let action_name = match action {
        ZdrAction::Request => "zdr.requested",
        ZdrAction::Approve => "zdr.approved",
        ZdrAction::Deny => "zdr.denied",
    };
    tx.commit_with_audit(&[AuditDraft::new(
        now,
        action_name,
        format!("org/{org_id}"),
        json!({"by": by, "via": via, "reason": reason, "plan": org.plan.as_str(), "zdr": next.as_str(), "rescheduled": rescheduled}),
    )])
    .await?;
    match action {
        ZdrAction::Request => {
            info!(org = %org_id, by = %by, via = via.unwrap_or("cli"), reason = %reason.unwrap_or(""), "ZDR requested")
        }
        ZdrAction::Approve => {
            info!(org = %org_id, by = %by, via = via.unwrap_or("cli"), covered_now_due = rescheduled, "ZDR approved")
        }
        ZdrAction::Deny => {
            info!(org = %org_id, by = %by, via = via.unwrap_or("cli"), reason = %reason.unwrap_or(""), "ZDR denied")
        }
    }
    Ok(ZdrDecision {
        org: org_id.to_string(),
        zdr: next,
        rescheduled,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Requeued {
    pub requeued: Vec<String>,
}

/// `retry`: puts failed resources back in the due queue (all of them when `ids` is empty).
pub async fn retry(
    ledger: &Ledger,
    ids: &[String],
    by: &str,
    now: Timestamp,
) -> Result<Requeued, AdminError> {
    let mut tx = ledger.begin().await?;
    if !ids.is_empty() {
        let found = tx.load_resources(ids).await?;
        for id in ids {
            match found.iter().find(|r| &r.id == id) {
                None => return Err(AdminError::Invalid(format!("unknown resource `{id}`"))),
                Some(r) if r.state != crate::model::ResourceState::Failed => {
                    return Err(AdminError::Invalid(format!(
                        "resource `{id}` is {}, not failed",
                        r.state
                    )));
                }
                _ => {}
            }
        }
    }
    let requeued = tx.requeue_failed(ids).await?;
    let kinds: std::collections::HashMap<String, String> = tx
        .load_resources(&requeued)
        .await?
        .into_iter()
        .map(|r| (r.id, r.kind))
        .collect();
    let drafts: Vec<AuditDraft> = requeued
        .iter()
        .map(|id| {
            let kind = kinds.get(id).map(String::as_str).unwrap_or("resource");
            AuditDraft::new(
                now,
                "resource.purge_retried",
                format!("{kind}/{id}"),
                json!({"by": by}),
            )
        })
        .collect();
    tx.commit_with_audit(&drafts).await?;
    for id in &requeued {
        info!(id = %id, by = %by, "failed purge re-queued");
    }
    Ok(Requeued { requeued })
}

/// An org's own window of a windowed kind (W4), as `org retention` left it.
#[derive(Debug, Clone, Serialize)]
pub struct OrgRetention {
    pub org: String,
    pub kind: String,
    /// The org's own max_age in force; `None`: the kind's.
    pub max_age: Option<Span>,
    /// The org's own max_age before; `None`: the kind's.
    pub previous: Option<Span>,
    /// The window the org's rows are purged by now.
    pub effective: Span,
    /// Rows the change makes due within a day (counted in the targets for a shortening).
    pub newly_due: u64,
    /// Held back by `[safety] max_newly_due` until `policy accept`.
    pub pending: bool,
}

/// What an `org retention` change would do: the window in force and the one asked for (org's
/// own or the kind's). Checks that the kind is windowed, the value within the kind's bounds
/// and the org known; changes nothing.
pub async fn org_retention_windows(
    ledger: &Ledger,
    config: &crate::config::Config,
    org: &str,
    kind: &str,
    max_age: Option<Span>,
) -> Result<(Span, Span), AdminError> {
    let Some(k) = config.kinds.get(kind) else {
        return Err(AdminError::Invalid(format!(
            "--kind: unknown kind `{kind}`"
        )));
    };
    let kind_age = config.policy.kinds.get(kind).and_then(|p| p.max_age);
    let (true, Some(kind_age)) = (k.tracking == crate::window::Tracking::Window, kind_age) else {
        return Err(AdminError::Invalid(format!(
            "--kind: `{kind}` is not purged by time window (tracking = \"window\"); an org's own retention applies to windowed kinds only"
        )));
    };
    if let Some(age) = max_age {
        if age <= Span::ZERO {
            return Err(AdminError::Invalid(
                "--max-age must be longer than 0s".into(),
            ));
        }
        if let Some(lo) = k.max_age_min.filter(|lo| age < *lo) {
            return Err(AdminError::Invalid(format!(
                "--max-age {age} is shorter than kinds.{kind}.max_age_min ({lo})"
            )));
        }
        if let Some(hi) = k.max_age_max.filter(|hi| age > *hi) {
            return Err(AdminError::Invalid(format!(
                "--max-age {age} is longer than kinds.{kind}.max_age_max ({hi})"
            )));
        }
    }
    if ledger.org(org).await?.is_none() {
        return Err(AdminError::NotFound(format!("unknown org `{org}`")));
    }
    let own = ledger
        .org_windows(kind)
        .await?
        .into_iter()
        .find(|(o, _)| o == org)
        .map(|(_, ms)| Span::from_millis(ms));
    Ok((own.unwrap_or(kind_age), max_age.unwrap_or(kind_age)))
}

/// Sets (`Some`) or clears (`None`) an org's own window of `kind`; `newly_due` is what the
/// targets counted for it. Over `max_newly_due`, the change is kept as pending instead, until
/// [`accept_org_retention`]. Audited either way.
#[allow(clippy::too_many_arguments)]
pub async fn set_org_retention(
    ledger: &Ledger,
    kind_max_age: Span,
    org: &str,
    kind: &str,
    max_age: Option<Span>,
    newly_due: u64,
    max_newly_due: u64,
    by: &str,
    now: Timestamp,
) -> Result<OrgRetention, AdminError> {
    if by.trim().is_empty() {
        return Err(AdminError::Invalid("--by must not be empty".into()));
    }
    let mut tx = ledger.begin().await?;
    let mut row = tx.org_window(org, kind).await?.unwrap_or(OrgWindowRow {
        org: org.to_string(),
        kind: kind.to_string(),
        max_age: None,
        set_at: now,
        set_by: by.to_string(),
        pending: None,
    });
    let previous = row.max_age;
    let pending = newly_due > max_newly_due;
    let draft = if pending {
        row.pending = Some(PendingOrgWindow {
            max_age,
            newly_due: newly_due as i64,
            at: now,
            by: by.to_string(),
        });
        AuditDraft::new(
            now,
            "org.retention_pending",
            format!("org/{org}"),
            json!({"kind": kind, "max_age": max_age, "previous": previous, "newly_due": newly_due, "max_newly_due": max_newly_due, "by": by}),
        )
    } else {
        row.max_age = max_age;
        row.set_at = now;
        row.set_by = by.to_string();
        row.pending = None;
        AuditDraft::new(
            now,
            "org.retention",
            format!("org/{org}"),
            json!({"kind": kind, "max_age": max_age, "previous": previous, "newly_due": newly_due, "by": by, "accepted": false}),
        )
    };
    tx.save_org_window(&row).await?;
    tx.commit_with_audit(&[draft]).await?;
    let shown =
        |s: Option<Span>| s.map_or_else(|| format!("kind's {kind_max_age}"), |s| s.to_string());
    if pending {
        tracing::warn!(
            org, kind, max_age = %shown(max_age), newly_due, max_newly_due, by,
            "org retention change held back: it would make more rows due at once than [safety] max_newly_due; `retentiond policy accept` applies it"
        );
    } else {
        info!(org, kind, max_age = %shown(max_age), previous = %shown(previous), newly_due, by, "org retention set");
    }
    Ok(OrgRetention {
        org: org.to_string(),
        kind: kind.to_string(),
        max_age: row.max_age,
        previous,
        effective: row.max_age.unwrap_or(kind_max_age),
        newly_due,
        pending,
    })
}

/// `policy accept`: applies every org window change held back by `max_newly_due`.
pub async fn accept_org_retention(
    ledger: &Ledger,
    config: &crate::config::Config,
    by: &str,
    now: Timestamp,
) -> Result<Vec<OrgRetention>, AdminError> {
    let mut done = Vec::new();
    for waiting in ledger
        .org_window_rows(None)
        .await?
        .into_iter()
        .filter(|r| r.pending.is_some())
    {
        let mut tx = ledger.begin().await?;
        let Some(mut row) = tx.org_window(&waiting.org, &waiting.kind).await? else {
            continue;
        };
        let Some(p) = row.pending.take() else {
            continue;
        };
        let previous = row.max_age;
        row.max_age = p.max_age;
        row.set_at = now;
        row.set_by = by.to_string();
        tx.save_org_window(&row).await?;
        tx.commit_with_audit(&[AuditDraft::new(
            now,
            "org.retention",
            format!("org/{}", row.org),
            json!({"kind": row.kind, "max_age": row.max_age, "previous": previous, "newly_due": p.newly_due, "by": by, "asked_by": p.by, "accepted": true}),
        )])
        .await?;
        info!(org = %row.org, kind = %row.kind, newly_due = p.newly_due, by, "org retention change accepted");
        let kind_age = config
            .policy
            .kinds
            .get(&row.kind)
            .and_then(|k| k.max_age)
            .unwrap_or(Span::ZERO);
        done.push(OrgRetention {
            effective: row.max_age.unwrap_or(kind_age),
            org: row.org,
            kind: row.kind,
            max_age: row.max_age,
            previous,
            newly_due: p.newly_due.max(0) as u64,
            pending: false,
        });
    }
    Ok(done)
}
