//! What the read commands show — status, resource/account/org views, forecasts and
//! proof-of-deletion receipts.
//!
//! Invariant: reading changes nothing, and the CLI's `--json` output and the HTTP API's bodies
//! are these same structures, so the two cannot disagree.
//!
//! Mechanism: each view is computed from the ledger by one function, read through
//! [`crate::app::App`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::holds::HoldSet;
use crate::model::{AccountState, Cause, Plan, ResourceState, Span, Timestamp, ZdrStatus};
use crate::policy;
use crate::store::{Ledger, ResourceRow, StoreError, SweepRun};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResourceView {
    pub id: String,
    pub kind: String,
    pub account: String,
    pub org: String,
    pub state: ResourceState,
    pub cause: Option<Cause>,
    pub created_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    pub purge_after: Option<Timestamp>,
    /// The rule that set `purge_after` (R1, R2, R5, R6).
    pub rule: Option<String>,
    pub rule_description: Option<String>,
    /// Ids of active holds that block its purge.
    pub holds: Vec<i64>,
    pub endpoint: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub purged_at: Option<Timestamp>,
    /// Set when a purge of it was interrupted by a crash and found partly done (issue 30):
    /// what each target held then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<crate::store::Interruption>,
}

pub async fn resource(ledger: &Ledger, id: &str) -> Result<Option<ResourceView>, StoreError> {
    let Some(r) = ledger.resource(id).await? else {
        return Ok(None);
    };
    let holds = if r.state == ResourceState::Purged {
        Vec::new()
    } else {
        HoldSet::new(ledger.active_holds().await?)
            .matching(&r.hold_subject())
            .iter()
            .map(|h| h.id)
            .collect()
    };
    let interrupted = ledger.interruption(id).await?;
    let mut view = resource_view(r, holds);
    view.interrupted = interrupted;
    Ok(Some(view))
}

fn resource_view(r: ResourceRow, holds: Vec<i64>) -> ResourceView {
    ResourceView {
        rule: r.rule.map(|x| x.as_str().to_string()),
        rule_description: r.rule.map(|x| x.describe().to_string()),
        id: r.id,
        kind: r.kind,
        account: r.account,
        org: r.org,
        state: r.state,
        cause: r.cause,
        created_at: r.created_at,
        deleted_at: r.deleted_at,
        purge_after: r.purge_after,
        holds,
        endpoint: r.endpoint,
        attempts: r.attempts,
        last_error: r.last_error,
        purged_at: r.purged_at,
        interrupted: None,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: String,
    pub org: String,
    pub state: AccountState,
    pub created_at: Timestamp,
    pub deletion_requested_at: Option<Timestamp>,
    pub purge_after: Option<Timestamp>,
    pub purged_at: Option<Timestamp>,
    /// Ids of active holds that block the account's purge (on it or its org).
    pub holds: Vec<i64>,
    /// Its resources by state.
    pub resources: BTreeMap<String, i64>,
}

pub async fn account(ledger: &Ledger, id: &str) -> Result<Option<AccountView>, StoreError> {
    let Some(a) = ledger.account(id).await? else {
        return Ok(None);
    };
    let holds = if a.state == AccountState::Purged {
        Vec::new()
    } else {
        HoldSet::new(ledger.active_holds().await?)
            .blocking_account(&a.id, &a.org)
            .iter()
            .map(|h| h.id)
            .collect()
    };
    let scope = crate::holds::HoldScope {
        account: Some(id.to_string()),
        ..Default::default()
    };
    let mut resources = BTreeMap::new();
    for c in ledger.count_matching(&scope).await? {
        *resources.entry(c.state).or_default() += c.count;
    }
    Ok(Some(AccountView {
        id: a.id,
        org: a.org,
        state: a.state,
        created_at: a.created_at,
        deletion_requested_at: a.deletion_requested_at,
        purge_after: a.purge_after,
        purged_at: a.purged_at,
        holds,
        resources,
    }))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrgView {
    pub id: String,
    pub plan: Plan,
    pub zdr: ZdrStatus,
    pub zdr_reason: Option<String>,
    pub zdr_by: Option<String>,
    pub zdr_at: Option<Timestamp>,
    /// ZDR-covered resources not yet purged: ~0 for an approved org outside a sweep interval.
    pub zdr_waiting: i64,
    /// Whether the org's eligible data may not be used to improve models (separate from ZDR).
    pub training_opt_out: bool,
}

pub async fn org(ledger: &Ledger, id: &str) -> Result<Option<OrgView>, StoreError> {
    let Some(o) = ledger.org(id).await? else {
        return Ok(None);
    };
    Ok(Some(OrgView {
        zdr_waiting: ledger.zdr_waiting(&o.id).await?,
        id: o.id,
        plan: o.plan,
        zdr: o.zdr,
        zdr_reason: o.zdr_reason,
        zdr_by: o.zdr_by,
        zdr_at: o.zdr_at,
        training_opt_out: o.training_opt_out,
    }))
}

/// Whether the API's request path may keep one endpoint's inputs and outputs for an org
/// (`GET /v1/orgs/{id}/data-controls`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DataControl {
    pub org: String,
    pub endpoint: String,
    /// `false` when the org's ZDR is approved and the endpoint is covered (`[zdr] endpoints`).
    pub store: bool,
    /// Why not (`"zdr"`), or `null` when it may store.
    pub reason: Option<&'static str>,
    pub zdr: ZdrStatus,
    /// A separate control: whether eligible data may be used to improve models.
    pub training_opt_out: bool,
}

/// The data controls of `org` for `endpoint`; `None` for an unknown org.
pub async fn data_control(
    ledger: &Ledger,
    org: &str,
    endpoint: &str,
    zdr_endpoints: &BTreeSet<String>,
) -> Result<Option<DataControl>, StoreError> {
    let Some(o) = ledger.org(org).await? else {
        return Ok(None);
    };
    let zdr = o.zdr == ZdrStatus::Approved && zdr_endpoints.contains(endpoint);
    Ok(Some(DataControl {
        org: o.id,
        endpoint: endpoint.to_string(),
        store: !zdr,
        reason: zdr.then_some("zdr"),
        zdr: o.zdr,
        training_opt_out: o.training_opt_out,
    }))
}

/// Every org whose data controls differ from the defaults, for a gateway to cache
/// (`GET /v1/data-controls`). Deterministic for the same ledger state: the HTTP layer's `ETag`
/// is a digest of its JSON.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DataControlsSnapshot {
    /// The endpoints ZDR covers: an org with `zdr: true` must not keep their inputs and outputs.
    pub zdr_endpoints: Vec<String>,
    /// Orgs with ZDR approved or training opted out, by id; every other org has the defaults
    /// (may store, not opted out).
    pub orgs: Vec<OrgDataControls>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrgDataControls {
    pub org: String,
    /// ZDR approved.
    pub zdr: bool,
    pub training_opt_out: bool,
}

pub async fn data_controls(
    ledger: &Ledger,
    zdr_endpoints: &BTreeSet<String>,
) -> Result<DataControlsSnapshot, StoreError> {
    Ok(DataControlsSnapshot {
        zdr_endpoints: zdr_endpoints.iter().cloned().collect(),
        orgs: ledger
            .data_control_orgs()
            .await?
            .into_iter()
            .map(|o| OrgDataControls {
                zdr: o.zdr == ZdrStatus::Approved,
                training_opt_out: o.training_opt_out,
                org: o.id,
            })
            .collect(),
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailedView {
    pub id: String,
    pub kind: String,
    pub account: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Resources by state (every state listed).
    pub resources: BTreeMap<String, i64>,
    /// Resources by kind, then state.
    pub resources_by_kind: BTreeMap<String, BTreeMap<String, i64>>,
    /// Accounts by state (every state listed).
    pub accounts: BTreeMap<String, i64>,
    /// Due now and not held: what the next sweep will purge.
    pub backlog: i64,
    /// Due but kept by a hold.
    pub held_back: i64,
    pub next_due: Option<Timestamp>,
    pub holds_active: usize,
    pub failed: Vec<FailedView>,
    pub last_sweeps: Vec<SweepRun>,
    pub policy_fingerprint: Option<String>,
    /// Kinds (or `(accounts)`) whose new policy waits for `policy accept`.
    pub policy_pending: bool,
    /// Orgs with a ZDR status other than `off`.
    pub zdr_orgs: Vec<OrgView>,
    /// Notifications waiting for delivery and dead-lettered, per receiver (`[notify.NAME]`).
    pub notifications: Vec<crate::store::NotificationCount>,
    /// Passes over windowed kinds (issue 29): per kind and target, the last one and any running.
    pub windows: Vec<crate::store::WindowPassRow>,
}

pub async fn status(ledger: &Ledger, now: Timestamp) -> Result<Status, StoreError> {
    let mut resources: BTreeMap<String, i64> = ResourceState::ALL
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    let mut by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for c in ledger.state_counts().await? {
        *resources.entry(c.state.clone()).or_default() += c.count;
        *by_kind
            .entry(c.kind)
            .or_default()
            .entry(c.state)
            .or_default() += c.count;
    }
    let mut accounts: BTreeMap<String, i64> = AccountState::ALL
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for (s, n) in ledger.account_state_counts().await? {
        *accounts.entry(s).or_default() += n;
    }
    let policy_state = ledger.policy_state().await?;
    let mut zdr_orgs = Vec::new();
    for o in ledger.orgs().await? {
        if o.zdr != ZdrStatus::Off
            && let Some(v) = org(ledger, &o.id).await?
        {
            zdr_orgs.push(v);
        }
    }
    Ok(Status {
        resources,
        resources_by_kind: by_kind,
        accounts,
        backlog: ledger.backlog(now).await?,
        held_back: ledger.held_back().await?,
        next_due: ledger.next_due(now).await?,
        holds_active: ledger.holds(true).await?.len(),
        failed: ledger
            .failed_resources(50)
            .await?
            .into_iter()
            .map(|r| FailedView {
                id: r.id,
                kind: r.kind,
                account: r.account,
                attempts: r.attempts,
                last_error: r.last_error,
            })
            .collect(),
        last_sweeps: ledger.sweep_runs().await?,
        policy_fingerprint: policy::in_force(ledger)
            .await?
            .map(|p| policy::fingerprint(&p)),
        policy_pending: policy_state.is_some_and(|s| s.pending.is_some()),
        zdr_orgs,
        notifications: ledger.notification_counts().await?,
        windows: ledger.window_passes().await?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanDay {
    /// The UTC day (`overdue` for anything due before today).
    pub day: String,
    pub purges: BTreeMap<String, i64>,
    /// Due that day but kept by holds.
    pub held: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Forecast {
    pub from: Timestamp,
    pub until: Timestamp,
    pub days: Vec<PlanDay>,
    pub total: i64,
    pub total_held: i64,
    pub holds_active: usize,
}

/// `plan`: expected purges per day and kind until the horizon, and what the active holds keep
/// back; read-only. Without active holds the counts come from one aggregate query; with holds,
/// each scheduled resource is matched against them (paged through the ledger). `windowed` are
/// the windowed kinds' rows per day, (day since the epoch, kind, held, rows), read from their
/// tables by the caller (`Sweeper::forecast_windows`).
pub async fn plan(
    ledger: &Ledger,
    now: Timestamp,
    horizon: Span,
    windowed: Vec<(i64, String, bool, i64)>,
) -> Result<Forecast, StoreError> {
    let until = now.plus(horizon);
    let today = now.millis().div_euclid(86_400_000);
    let holds = HoldSet::new(ledger.active_holds().await?);
    let mut rows: Vec<(i64, String, bool, i64)> = Vec::new();
    if holds.is_empty() {
        for r in ledger.forecast(until).await? {
            rows.push((r.day, r.kind, false, r.count));
        }
    } else {
        let mut after = String::new();
        let mut counts: BTreeMap<(i64, String, bool), i64> = BTreeMap::new();
        loop {
            let page = ledger.scheduled_page(until, &after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for r in &page {
                let day = r
                    .purge_after
                    .map(|p| p.millis().div_euclid(86_400_000))
                    .unwrap_or(today);
                let held = r.held || !holds.matching(&r.hold_subject()).is_empty();
                *counts.entry((day, r.kind.clone(), held)).or_default() += 1;
            }
        }
        rows.extend(counts.into_iter().map(|((d, k, h), n)| (d, k, h, n)));
    }
    rows.extend(windowed);
    let mut days: BTreeMap<i64, PlanDay> = BTreeMap::new();
    let (mut total, mut total_held) = (0, 0);
    for (day, kind, held, count) in rows {
        let key = day.max(today - 1);
        let entry = days.entry(key).or_insert_with(|| PlanDay {
            day: if key < today {
                "overdue".into()
            } else {
                Timestamp::from_millis(key * 86_400_000).rfc3339()[..10].to_string()
            },
            purges: BTreeMap::new(),
            held: BTreeMap::new(),
        });
        if held {
            *entry.held.entry(kind).or_default() += count;
            total_held += count;
        } else {
            *entry.purges.entry(kind).or_default() += count;
            total += count;
        }
    }
    Ok(Forecast {
        from: now,
        until,
        days: days.into_values().collect(),
        total,
        total_held,
        holds_active: holds.len(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct KeptResource {
    pub id: String,
    pub kind: String,
    pub state: ResourceState,
    pub purge_after: Option<Timestamp>,
    /// Active holds keeping it, with their case references.
    pub holds: Vec<HoldRef>,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HoldRef {
    pub id: i64,
    pub case: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub account: String,
    pub org: String,
    pub state: AccountState,
    pub deletion_requested_at: Option<Timestamp>,
    pub grace: Option<String>,
    pub purge_after: Option<Timestamp>,
    pub purged_at: Option<Timestamp>,
    /// Purged resources per kind, each backed by one `resource.purged` audit entry.
    pub resources_purged: BTreeMap<String, i64>,
    /// Rows of windowed kinds deleted at the account's purge (issue 29, W6), per kind, as its
    /// `account.purged` entry records them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub window_rows: BTreeMap<String, i64>,
    /// Everything of the account not purged, and why.
    pub not_purged: Vec<KeptResource>,
    /// Purged resources whose tombstones were compacted (older than `[ledger]
    /// tombstone_retention`, issue 23): not in `resources_purged`, counted here instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted: Option<CompactedTombstones>,
    /// Audit entries that prove the purges: their seq range, and the head to verify against.
    pub evidence: Evidence,
}

/// An account's compacted tombstones and the `tombstones.compacted` audit entries that counted
/// them. Their purge receipts stay in the chain; the entries' `accounts` details add up to
/// `resources`.
#[derive(Debug, Clone, Serialize)]
pub struct CompactedTombstones {
    /// Compacted tombstones per kind.
    pub resources: BTreeMap<String, i64>,
    /// How many compaction entries counted some of them (exact when `seqs` lists them;
    /// otherwise at least the most that counted one kind), and the first and last one's seq.
    pub entries: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    /// The seqs of those entries (empty when there are more than [`MAX_LISTED_ENTRIES`]
    /// compaction entries between the first and the last).
    pub seqs: Vec<i64>,
    /// Whether the counts those entries carry for this account equal `resources` (`None` when
    /// they were not all read).
    pub chain_agrees: Option<bool>,
}

/// Compaction entries a receipt reads at most to list an account's.
pub const MAX_LISTED_ENTRIES: i64 = 1_000;

/// The account's compacted tombstones, checked against the compaction entries of the chain.
async fn compacted(
    ledger: &Ledger,
    account: &str,
) -> Result<Option<CompactedTombstones>, StoreError> {
    let rows = ledger.compacted_account(account).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let resources: BTreeMap<String, i64> = rows.iter().map(|r| (r.kind.clone(), r.count)).collect();
    let first_seq = rows.iter().map(|r| r.first_seq).min().unwrap_or(0);
    let last_seq = rows.iter().map(|r| r.last_seq).max().unwrap_or(0);
    let entries = ledger
        .compaction_entries(first_seq, last_seq, MAX_LISTED_ENTRIES + 1)
        .await?;
    let (mut seqs, mut chain_agrees) = (Vec::new(), None);
    if entries.len() as i64 <= MAX_LISTED_ENTRIES {
        let mut from_chain: BTreeMap<String, i64> = BTreeMap::new();
        for e in &entries {
            let details: serde_json::Value =
                serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null);
            let Some(kinds) = details["accounts"][account].as_object() else {
                continue;
            };
            seqs.push(e.seq);
            for (k, n) in kinds {
                *from_chain.entry(k.clone()).or_default() += n.as_i64().unwrap_or(0);
            }
        }
        chain_agrees = Some(from_chain == resources);
    }
    Ok(Some(CompactedTombstones {
        resources,
        entries: if chain_agrees.is_some() {
            seqs.len() as i64
        } else {
            rows.iter().map(|r| r.entries).max().unwrap_or(0)
        },
        first_seq,
        last_seq,
        seqs,
        chain_agrees,
    }))
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub receipts: usize,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub account_purged_seq: Option<i64>,
    pub head_seq: Option<i64>,
    pub head_hash: Option<String>,
    /// The first signed checkpoint that covers these entries (its seq is at or after the last
    /// of them), if one was taken yet: with the signer's public key it pins them.
    pub checkpoint: Option<crate::checkpoint::Checkpoint>,
    pub verify_with: String,
}

/// `audit receipt --account A`: proof of deletion for an account.
pub async fn receipt(ledger: &Ledger, account: &str) -> Result<Option<Receipt>, StoreError> {
    let Some(a) = ledger.account(account).await? else {
        return Ok(None);
    };
    let rows = ledger.account_resources_all(account).await?;
    let holds = HoldSet::new(ledger.active_holds().await?);
    let mut purged_subjects = Vec::new();
    let mut not_purged = Vec::new();
    for r in &rows {
        if r.state == ResourceState::Purged {
            purged_subjects.push(format!("{}/{}", r.kind, r.id));
        } else {
            let matching: Vec<HoldRef> = holds
                .matching(&r.hold_subject())
                .iter()
                .map(|h| HoldRef {
                    id: h.id,
                    case: h.case_ref.clone(),
                })
                .collect();
            let why = if r.state == ResourceState::Live {
                "live (not deleted)".to_string()
            } else if !matching.is_empty() {
                "kept by a legal hold".to_string()
            } else {
                match r.state {
                    ResourceState::Live => "live (not deleted)".to_string(),
                    ResourceState::Failed => {
                        format!("purge failed: {}", r.last_error.as_deref().unwrap_or("?"))
                    }
                    ResourceState::Purging => "purge in progress".to_string(),
                    ResourceState::Interrupted => {
                        "purge interrupted by a crash, data partly gone; finishes when due".into()
                    }
                    _ => match r.purge_after {
                        Some(p) => format!("in its grace period until {p}"),
                        None => "not scheduled".to_string(),
                    },
                }
            };
            not_purged.push(KeptResource {
                id: r.id.clone(),
                kind: r.kind.clone(),
                state: r.state,
                purge_after: r.purge_after,
                holds: matching,
                why,
            });
        }
    }
    let entries = ledger
        .audit_for_subjects(&purged_subjects, "resource.purged")
        .await?;
    let mut resources_purged: BTreeMap<String, i64> = BTreeMap::new();
    for e in &entries {
        let kind = e
            .subject
            .split_once('/')
            .map(|(k, _)| k)
            .unwrap_or(&e.subject);
        *resources_purged.entry(kind.to_string()).or_default() += 1;
    }
    let account_entry = ledger
        .audit_for_subjects(&[format!("account/{account}")], "account.purged")
        .await?
        .pop();
    let window_rows = account_entry
        .as_ref()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.details).ok())
        .and_then(|d| serde_json::from_value(d["window_rows"].clone()).ok())
        .unwrap_or_default();
    let head = ledger.audit_head().await?;
    let last_evidence = entries
        .iter()
        .map(|e| e.seq)
        .chain(account_entry.as_ref().map(|e| e.seq))
        .max();
    let compacted = compacted(ledger, account).await?;
    let last_evidence = last_evidence.max(compacted.as_ref().map(|c| c.last_seq));
    let checkpoint = match last_evidence {
        Some(seq) => ledger
            .audit_checkpoints(seq - 1, 1)
            .await?
            .pop()
            .map(crate::checkpoint::Checkpoint::from),
        None => None,
    };
    Ok(Some(Receipt {
        account: a.id,
        org: a.org,
        state: a.state,
        deletion_requested_at: a.deletion_requested_at,
        grace: match (a.deletion_requested_at, a.purge_after) {
            (Some(d), Some(p)) => Some(Span::from_millis(p.millis() - d.millis()).to_string()),
            _ => None,
        },
        purge_after: a.purge_after,
        purged_at: a.purged_at,
        resources_purged,
        window_rows,
        not_purged,
        compacted,
        evidence: Evidence {
            receipts: entries.len(),
            first_seq: entries.iter().map(|e| e.seq).min(),
            last_seq: entries.iter().map(|e| e.seq).max(),
            account_purged_seq: account_entry.map(|e| e.seq),
            head_seq: head.as_ref().map(|h| h.seq),
            head_hash: head.map(|h| h.hash),
            verify_with: match &checkpoint {
                Some(c) => format!(
                    "retentiond audit verify --checkpoint FILE, with the checkpoint file of seq {} (or a later one) kept outside the ledger, or --public-key {}",
                    c.seq, c.public_key
                ),
                None => "retentiond audit verify; no signed checkpoint covers these entries yet: run `retentiond audit checkpoint` and keep the file elsewhere".into(),
            },
            checkpoint,
        },
    }))
}
