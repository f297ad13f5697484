//! The ledger's rows: what the store reads and writes, as plain data, and their decoding from
//! the columns both backends share (timestamps as epoch milliseconds, states and causes as
//! text, checked on the way in so a bad value is a `StoreError::Corrupt`, never a panic).

use serde::Serialize;

use super::{Result, StoreError};
use crate::audit::AuditEntry;
use crate::holds::{ActiveHold, HoldScope};
use crate::model::{
    AccountState, Cause, Plan, PurgeItem, ResourceState, Rule, Span, Timestamp, ZdrStatus,
};

/// A resource as the ledger knows it. `org` comes from its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceRow {
    pub id: String,
    pub kind: String,
    pub account: String,
    pub org: String,
    pub created_at: Timestamp,
    pub endpoint: Option<String>,
    pub state: ResourceState,
    pub deleted_at: Option<Timestamp>,
    pub cause: Option<Cause>,
    pub purge_after: Option<Timestamp>,
    pub rule: Option<Rule>,
    pub held: bool,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub purged_at: Option<Timestamp>,
    /// The claim's batch while `purging`: `None` when the claim was taken over from a batch
    /// whose target deletes may have started (see `touched_predicate!`).
    #[serde(skip)]
    pub claim_batch: Option<i64>,
    /// The `resource.created` attributes a target's template names (`{attrs.NAME}`), as a JSON
    /// object of strings; never shown (they may be names the user chose).
    #[serde(skip)]
    pub target_attrs: Option<String>,
}

impl ResourceRow {
    /// The item a target purges for this row, with the attributes the templates name.
    pub fn purge_item(&self) -> PurgeItem {
        PurgeItem {
            id: self.id.clone(),
            kind: self.kind.clone(),
            account: self.account.clone(),
            org: self.org.clone(),
            attrs: self
                .target_attrs
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default(),
        }
    }
}

impl ResourceRow {
    pub fn facts(&self) -> crate::rules::ResourceFacts {
        crate::rules::ResourceFacts {
            created_at: self.created_at,
            state: self.state,
            deleted_at: self.deleted_at,
            cause: self.cause,
            endpoint: self.endpoint.clone(),
        }
    }

    pub fn set_facts(&mut self, f: crate::rules::ResourceFacts) {
        self.state = f.state;
        self.deleted_at = f.deleted_at;
        self.cause = f.cause;
    }

    pub fn hold_subject(&self) -> crate::holds::HoldSubject<'_> {
        crate::holds::HoldSubject {
            id: &self.id,
            kind: &self.kind,
            account: &self.account,
            org: &self.org,
            created_at: self.created_at,
        }
    }

    /// Recomputes `purge_after` and `rule` from the facts (R1, R2, R5, R6, R10). Returns whether
    /// the schedule changed. Frozen states (purging, purged, failed) keep theirs.
    pub fn reschedule(
        &mut self,
        account: &crate::rules::AccountFacts,
        zdr_approved: bool,
        policy: &crate::rules::KindPolicy,
    ) -> bool {
        if !matches!(self.state, ResourceState::Live | ResourceState::Deleted) {
            return false;
        }
        let s = crate::rules::resource_schedule(&self.facts(), account, zdr_approved, policy);
        let (purge_after, rule) = (s.map(|s| s.purge_after), s.map(|s| s.rule));
        let changed = purge_after != self.purge_after || rule != self.rule;
        self.purge_after = purge_after;
        self.rule = rule;
        changed
    }

    /// The state a claimed resource goes back to when its claim is given up.
    pub fn unclaimed_state(&self) -> ResourceState {
        if self.deleted_at.is_some() {
            ResourceState::Deleted
        } else {
            ResourceState::Live
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    pub id: String,
    pub org: String,
    pub state: AccountState,
    pub created_at: Timestamp,
    pub deletion_requested_at: Option<Timestamp>,
    pub purge_after: Option<Timestamp>,
    pub purged_at: Option<Timestamp>,
}

impl AccountRow {
    pub fn facts(&self) -> crate::rules::AccountFacts {
        crate::rules::AccountFacts {
            state: self.state,
            deletion_requested_at: self.deletion_requested_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrgRow {
    pub id: String,
    pub plan: Plan,
    pub zdr: ZdrStatus,
    pub zdr_reason: Option<String>,
    pub zdr_by: Option<String>,
    pub zdr_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Whether the org's eligible data may not be used to improve models (§2): a control
    /// separate from ZDR; neither ever changes the other.
    pub training_opt_out: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HoldRow {
    pub id: i64,
    pub case: String,
    pub reason: Option<String>,
    pub placed_by: String,
    pub placed_at: Timestamp,
    pub scope: HoldScope,
    pub released_at: Option<Timestamp>,
    pub released_by: Option<String>,
    /// Its answer when placed: matching resources already purged, and in flight (`None` for a
    /// hold placed before the ledger kept them).
    #[serde(skip)]
    pub placed_already_purged: Option<i64>,
    #[serde(skip)]
    pub placed_in_flight: Option<i64>,
}

impl HoldRow {
    pub fn is_active(&self) -> bool {
        self.released_at.is_none()
    }
}

/// One person's ask to release a hold (`[holds] release_approvals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReleaseApproval {
    pub by: String,
    pub at: Timestamp,
    /// The API token's name when asked over HTTP.
    pub via: Option<String>,
}

/// A new hold, before it has an id, with its answer (Invariant H).
#[derive(Debug, Clone)]
pub struct NewHold {
    pub case: String,
    pub reason: Option<String>,
    pub placed_by: String,
    pub placed_at: Timestamp,
    pub scope: HoldScope,
    pub already_purged: i64,
    pub in_flight: i64,
}

crate::model::string_enum!(
    /// How a resource that a hold's answer called `in_flight` ended (issue 30): `purged` — found
    /// gone everywhere when its claim was taken over, so destroyed before the hold; `kept` —
    /// found intact everywhere; `interrupted` — partly gone, or a target could not tell;
    /// `purged_after_release` — the hold was released first, and the purge then finished.
    InFlightOutcome {
        Purged => "purged",
        Kept => "kept",
        Interrupted => "interrupted",
        PurgedAfterRelease => "purged_after_release",
    }
);

/// One resource a hold's answer called `in_flight`, and how it ended (`None`: not known yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InFlight {
    pub resource: String,
    pub outcome: Option<InFlightOutcome>,
    pub resolved_at: Option<Timestamp>,
}

/// What a target still holds of a resource whose purge was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TargetData {
    pub target: String,
    /// `gone`, `present` or `unknown`.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a resource is `interrupted`: what each of its targets held when that was found out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Interruption {
    pub found_at: Timestamp,
    pub targets: Vec<TargetData>,
}

/// A claim given back with its state decided (kept, interrupted, or no longer due).
#[derive(Debug, Clone)]
pub struct SettledClaim {
    pub id: String,
    pub state: ResourceState,
    pub held: bool,
    pub purge_after: Option<Timestamp>,
    pub rule: Option<Rule>,
}

/// The schedule policy in force and any change the guard holds back (R10, issue 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    pub in_force: String,
    pub pending: Option<String>,
    /// JSON `{item: count}`: what the pending change would bring forward (issue 22).
    pub pending_newly_due: Option<String>,
    pub updated_at: Timestamp,
}

/// The last sweep of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SweepRun {
    pub instance: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub purged: i64,
    pub failed: i64,
    pub held: i64,
    pub accounts_purged: i64,
    pub error: Option<String>,
}

/// A resource whose purge failed: recorded per attempt.
#[derive(Debug, Clone)]
pub struct PurgeFailure {
    pub id: String,
    /// `Some(t)`: retry after `t`; `None`: out of attempts, the resource becomes `failed`.
    pub retry_at: Option<Timestamp>,
    pub error: String,
}

/// One notification to one receiver (`[notify.NAME]`) as the ledger queues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRow {
    pub id: String,
    pub receiver: String,
    /// The audit entry it reports.
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The JSON object sent (signed at each attempt).
    #[serde(skip)]
    pub body: String,
    pub created_at: Timestamp,
    /// Retries stop here; the notification is then dead-lettered.
    pub expires_at: Timestamp,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    pub dead_at: Option<Timestamp>,
}

/// A notification to queue (see [`Ledger::queue_notifications`]).
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: String,
    pub seq: i64,
    pub event_type: String,
    pub body: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Notifications per receiver: waiting for delivery (or a retry) and dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationCount {
    pub receiver: String,
    pub pending: i64,
    pub dead: i64,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed: retried at `retry_at`, or dead-lettered when `None`.
    Failed {
        error: String,
        retry_at: Option<Timestamp>,
    },
}

#[derive(sqlx::FromRow)]
pub(super) struct RawNotification {
    pub(super) id: String,
    pub(super) receiver: String,
    pub(super) seq: i64,
    pub(super) event_type: String,
    pub(super) body: String,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
    pub(super) attempts: i64,
    pub(super) next_attempt_at: i64,
    pub(super) last_error: Option<String>,
    pub(super) delivered_at: Option<i64>,
    pub(super) dead_at: Option<i64>,
}

impl TryFrom<RawNotification> for NotificationRow {
    type Error = StoreError;
    fn try_from(n: RawNotification) -> Result<Self> {
        Ok(NotificationRow {
            id: n.id,
            receiver: n.receiver,
            seq: n.seq,
            event_type: n.event_type,
            body: n.body,
            created_at: Timestamp::from_millis(n.created_at),
            expires_at: Timestamp::from_millis(n.expires_at),
            attempts: n.attempts,
            next_attempt_at: Timestamp::from_millis(n.next_attempt_at),
            last_error: n.last_error,
            delivered_at: ts(n.delivered_at),
            dead_at: ts(n.dead_at),
        })
    }
}

/// Counts by (state, kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    pub state: String,
    pub kind: String,
    pub count: i64,
}

/// A tombstone taken out of the ledger by compaction (issue 23): what its counts keep of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: String,
    pub kind: String,
    pub account: String,
    /// Why it was purged (`unknown` for a tombstone that has none).
    pub cause: String,
    pub purged_at: Timestamp,
}

/// Compacted tombstones of one (UTC day of purge, kind, cause).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TombstoneCount {
    /// Midnight UTC of the day they were purged.
    pub day: Timestamp,
    pub kind: String,
    pub cause: String,
    pub count: i64,
}

/// An account's compacted tombstones of one kind, and the `tombstones.compacted` audit entries
/// that recorded them: how many, the first and the last seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompactedAccount {
    pub kind: String,
    pub count: i64,
    pub entries: i64,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// A sweep's batch of claims; the next one is claimed while the batch before runs its targets.
#[derive(Debug, Clone, Default)]
pub struct ClaimedBatch {
    pub resources: Vec<ResourceRow>,
    /// Its row in `claimed_batches`; `None` when nothing was due.
    pub batch: Option<i64>,
}

/// Scheduled purges of one UTC day (days since the epoch) and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForecastRow {
    pub day: i64,
    pub kind: String,
    pub held: bool,
    pub count: i64,
}

/// The head of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

pub(super) fn parse<T: std::str::FromStr<Err = String>>(v: &str) -> Result<T> {
    v.parse().map_err(StoreError::Corrupt)
}

pub(super) fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

/// A resource row as the ledger stores it; also read from a JSON array in column order.
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct RawResource {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) account: String,
    pub(super) org: String,
    pub(super) created_at: i64,
    pub(super) endpoint: Option<String>,
    pub(super) state: String,
    pub(super) deleted_at: Option<i64>,
    pub(super) cause: Option<String>,
    pub(super) purge_after: Option<i64>,
    pub(super) rule: Option<String>,
    pub(super) held: i64,
    pub(super) lease_owner: Option<String>,
    pub(super) lease_until: Option<i64>,
    pub(super) attempts: i64,
    pub(super) last_error: Option<String>,
    pub(super) purged_at: Option<i64>,
    pub(super) claim_batch: Option<i64>,
    #[serde(default)]
    pub(super) target_attrs: Option<String>,
}

impl TryFrom<RawResource> for ResourceRow {
    type Error = StoreError;
    fn try_from(r: RawResource) -> Result<Self> {
        Ok(ResourceRow {
            state: parse(&r.state)?,
            cause: r.cause.as_deref().map(parse).transpose()?,
            rule: r.rule.as_deref().map(parse).transpose()?,
            id: r.id,
            kind: r.kind,
            account: r.account,
            org: r.org,
            created_at: Timestamp::from_millis(r.created_at),
            endpoint: r.endpoint,
            deleted_at: ts(r.deleted_at),
            purge_after: ts(r.purge_after),
            held: r.held != 0,
            lease_owner: r.lease_owner,
            lease_until: ts(r.lease_until),
            attempts: r.attempts,
            last_error: r.last_error,
            purged_at: ts(r.purged_at),
            claim_batch: r.claim_batch,
            target_attrs: r.target_attrs,
        })
    }
}

/// An account row as the ledger stores it; also read from a JSON array in column order.
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct RawAccount {
    pub(super) id: String,
    pub(super) org: String,
    pub(super) state: String,
    pub(super) created_at: i64,
    pub(super) deletion_requested_at: Option<i64>,
    pub(super) purge_after: Option<i64>,
    pub(super) purged_at: Option<i64>,
}

impl TryFrom<RawAccount> for AccountRow {
    type Error = StoreError;
    fn try_from(a: RawAccount) -> Result<Self> {
        Ok(AccountRow {
            state: parse(&a.state)?,
            id: a.id,
            org: a.org,
            created_at: Timestamp::from_millis(a.created_at),
            deletion_requested_at: ts(a.deletion_requested_at),
            purge_after: ts(a.purge_after),
            purged_at: ts(a.purged_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RawOrg {
    pub(super) id: String,
    pub(super) plan: String,
    pub(super) zdr: String,
    pub(super) zdr_reason: Option<String>,
    pub(super) zdr_by: Option<String>,
    pub(super) zdr_at: Option<i64>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) training_opt_out: bool,
}

impl TryFrom<RawOrg> for OrgRow {
    type Error = StoreError;
    fn try_from(o: RawOrg) -> Result<Self> {
        Ok(OrgRow {
            plan: parse(&o.plan)?,
            zdr: parse(&o.zdr)?,
            id: o.id,
            zdr_reason: o.zdr_reason,
            zdr_by: o.zdr_by,
            zdr_at: ts(o.zdr_at),
            created_at: Timestamp::from_millis(o.created_at),
            updated_at: Timestamp::from_millis(o.updated_at),
            training_opt_out: o.training_opt_out,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RawHold {
    pub(super) id: i64,
    pub(super) case_ref: String,
    pub(super) reason: Option<String>,
    pub(super) placed_by: String,
    pub(super) placed_at: i64,
    pub(super) org: Option<String>,
    pub(super) account: Option<String>,
    pub(super) resource: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) created_from: Option<i64>,
    pub(super) created_to: Option<i64>,
    pub(super) released_at: Option<i64>,
    pub(super) released_by: Option<String>,
    pub(super) placed_already_purged: Option<i64>,
    pub(super) placed_in_flight: Option<i64>,
}

impl From<RawHold> for HoldRow {
    fn from(h: RawHold) -> Self {
        HoldRow {
            id: h.id,
            case: h.case_ref,
            reason: h.reason,
            placed_by: h.placed_by,
            placed_at: Timestamp::from_millis(h.placed_at),
            scope: HoldScope {
                org: h.org,
                account: h.account,
                resource: h.resource,
                kind: h.kind,
                created_from: ts(h.created_from),
                created_to: ts(h.created_to),
            },
            released_at: ts(h.released_at),
            released_by: h.released_by,
            placed_already_purged: h.placed_already_purged,
            placed_in_flight: h.placed_in_flight,
        }
    }
}

impl From<HoldRow> for ActiveHold {
    fn from(h: HoldRow) -> Self {
        ActiveHold {
            id: h.id,
            case_ref: h.case,
            scope: h.scope,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RawAudit {
    pub(super) seq: i64,
    pub(super) at: i64,
    pub(super) action: String,
    pub(super) subject: String,
    pub(super) details: String,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

impl From<RawAudit> for AuditEntry {
    fn from(a: RawAudit) -> Self {
        AuditEntry {
            seq: a.seq,
            at: Timestamp::from_millis(a.at),
            action: a.action,
            subject: a.subject,
            details: a.details,
            prev_hash: a.prev_hash,
            hash: a.hash,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RawSweep {
    pub(super) instance: String,
    pub(super) started_at: i64,
    pub(super) finished_at: Option<i64>,
    pub(super) purged: i64,
    pub(super) failed: i64,
    pub(super) held: i64,
    pub(super) accounts_purged: i64,
    pub(super) error: Option<String>,
}

impl From<RawSweep> for SweepRun {
    fn from(s: RawSweep) -> Self {
        SweepRun {
            instance: s.instance,
            started_at: Timestamp::from_millis(s.started_at),
            finished_at: ts(s.finished_at),
            purged: s.purged,
            failed: s.failed,
            held: s.held,
            accounts_purged: s.accounts_purged,
            error: s.error,
        }
    }
}

/// A signed checkpoint of the audit chain as the ledger stores it (see `checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub seq: i64,
    pub hash: String,
    pub at: Timestamp,
    pub public_key: String,
    pub signature: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct RawCheckpoint {
    pub(super) seq: i64,
    pub(super) hash: String,
    pub(super) at: i64,
    pub(super) public_key: String,
    pub(super) signature: String,
}

impl From<RawCheckpoint> for CheckpointRow {
    fn from(c: RawCheckpoint) -> Self {
        CheckpointRow {
            seq: c.seq,
            hash: c.hash,
            at: Timestamp::from_millis(c.at),
            public_key: c.public_key,
            signature: c.signature,
        }
    }
}

/// Where the passes of one windowed kind over one target are (issue 29).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WindowPassRow {
    pub kind: String,
    pub target: String,
    /// The instance running a pass now (or whose crashed pass is not finished yet).
    pub owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub rows_so_far: i64,
    pub last_started_at: Option<Timestamp>,
    pub last_finished_at: Option<Timestamp>,
    pub last_rows: Option<i64>,
    pub last_held_back: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct RawWindowPass {
    pub(super) kind: String,
    pub(super) target: String,
    pub(super) owner: Option<String>,
    pub(super) lease_until: Option<i64>,
    pub(super) started_at: Option<i64>,
    pub(super) rows_so_far: i64,
    pub(super) last_started_at: Option<i64>,
    pub(super) last_finished_at: Option<i64>,
    pub(super) last_rows: Option<i64>,
    pub(super) last_held_back: Option<i64>,
    pub(super) last_error: Option<String>,
}

impl From<RawWindowPass> for WindowPassRow {
    fn from(r: RawWindowPass) -> Self {
        WindowPassRow {
            kind: r.kind,
            target: r.target,
            owner: r.owner,
            lease_until: ts(r.lease_until),
            started_at: ts(r.started_at),
            rows_so_far: r.rows_so_far,
            last_started_at: ts(r.last_started_at),
            last_finished_at: ts(r.last_finished_at),
            last_rows: r.last_rows,
            last_held_back: r.last_held_back,
            last_error: r.last_error,
        }
    }
}

/// A window pass this instance may run: a fresh one, or one that finishes a crashed pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowClaim {
    /// When the crashed pass this one finishes started, and the rows it had deleted.
    pub resumed: Option<(Timestamp, i64)>,
    /// When the last finished pass started (W5: ZDR rows found after it are violations).
    pub last_started_at: Option<Timestamp>,
    /// A crashed (or failed) pass's W3 drops, as JSON: the partition it was dropping and the
    /// ones it had dropped (see `sweep::window`).
    pub dropping: Option<String>,
}

/// A window pass as it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedWindowPass {
    pub started_at: Timestamp,
    /// Every row deleted, those of a crashed pass it finished included.
    pub rows: i64,
    pub resumed: Option<(Timestamp, i64)>,
}

/// An org's own window of a windowed kind (W4), and a shortening waiting for `policy accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrgWindowRow {
    pub org: String,
    pub kind: String,
    /// The org's own max_age in force; `None`: the kind's.
    pub max_age: Option<Span>,
    pub set_at: Timestamp,
    pub set_by: String,
    pub pending: Option<PendingOrgWindow>,
}

/// A change of an org's window held back by `[safety] max_newly_due`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingOrgWindow {
    /// The max_age asked for; `None`: back to the kind's.
    pub max_age: Option<Span>,
    /// Rows it would make due within a day, counted when it was asked.
    pub newly_due: i64,
    pub at: Timestamp,
    pub by: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct RawOrgWindow {
    pub(super) org: String,
    pub(super) kind: String,
    pub(super) max_age: Option<i64>,
    pub(super) set_at: i64,
    pub(super) set_by: String,
    pub(super) pending: i32,
    pub(super) pending_max_age: Option<i64>,
    pub(super) pending_newly_due: Option<i64>,
    pub(super) pending_at: Option<i64>,
    pub(super) pending_by: Option<String>,
}

impl From<RawOrgWindow> for OrgWindowRow {
    fn from(r: RawOrgWindow) -> Self {
        OrgWindowRow {
            org: r.org,
            kind: r.kind,
            max_age: r.max_age.map(Span::from_millis),
            set_at: Timestamp::from_millis(r.set_at),
            set_by: r.set_by,
            pending: (r.pending != 0).then(|| PendingOrgWindow {
                max_age: r.pending_max_age.map(Span::from_millis),
                newly_due: r.pending_newly_due.unwrap_or(0),
                at: Timestamp::from_millis(r.pending_at.unwrap_or(r.set_at)),
                by: r.pending_by.unwrap_or_default(),
            }),
        }
    }
}
