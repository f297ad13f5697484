//! Applies lifecycle events to the ledger, all or nothing (§6 `ingest`).
//!
//! Events are validated against the ledger *as the earlier lines leave it*, inside one write
//! transaction: if any line is bad, nothing is applied and every bad line is reported. Lines are
//! processed in chunks — the ids a chunk mentions are fetched with one query per table, changed
//! rows are written back with multi-row upserts — so a million-line file takes seconds. Audit
//! entries are appended last, just before the commit (see `store`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;

use serde::Serialize;
use serde_json::json;
use thiserror::Error;
use tracing::{debug, info};

use crate::audit::AuditDraft;
use crate::events::{self, Event, EventBody, LineError};
use crate::model::{AccountState, Cause, ResourceState, Span, Timestamp, ZdrStatus};
use crate::rules::{self, SchedulePolicy};
use crate::store::{AccountRow, Ledger, LedgerTx, OrgRow, ResourceRow, StoreError};

/// Events processed per round trip.
const CHUNK: usize = 5_000;

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("{} invalid line(s); nothing was applied", .0.len())]
    Invalid(Vec<LineError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an ingest did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IngestReport {
    pub applied: u64,
    pub duplicates: u64,
    pub by_type: BTreeMap<&'static str, u64>,
}

/// Settings an ingest runs under.
#[derive(Debug, Clone)]
pub struct IngestContext<'a> {
    pub policy: &'a SchedulePolicy,
    pub now: Timestamp,
    pub max_clock_skew: Span,
}

/// Reads NDJSON from `input` and applies it.
pub async fn ingest_reader(
    ledger: &Ledger,
    ctx: &IngestContext<'_>,
    input: impl BufRead,
) -> Result<IngestReport, IngestError> {
    let mut engine = Engine::new(ledger.begin().await?, ctx);
    let mut lines = events::Lines::new(input);
    let mut parse_errors: Vec<LineError> = Vec::new();
    let mut chunk: Vec<Event> = Vec::with_capacity(CHUNK);
    loop {
        // The input is a file, stdin or a request body already in memory: reading it
        // synchronously between chunks is fine.
        let next = match lines.next_event() {
            Ok(n) => n,
            Err(e) => {
                parse_errors.push(LineError {
                    line: lines.line() + 1,
                    reason: format!("cannot read input: {e}"),
                });
                None
            }
        };
        let end = next.is_none();
        match next {
            Some(Ok(e)) => chunk.push(e),
            Some(Err(e)) => parse_errors.push(e),
            None => {}
        }
        if chunk.len() >= CHUNK || (end && !chunk.is_empty()) {
            engine.apply_chunk(&chunk).await?;
            chunk.clear();
        }
        if end {
            break;
        }
    }
    engine.finish(parse_errors).await
}

/// Applies already parsed events (the HTTP API parses a JSON array itself).
pub async fn ingest_events(
    ledger: &Ledger,
    ctx: &IngestContext<'_>,
    events: &[Event],
) -> Result<IngestReport, IngestError> {
    let mut engine = Engine::new(ledger.begin().await?, ctx);
    for chunk in events.chunks(CHUNK) {
        engine.apply_chunk(chunk).await?;
    }
    engine.finish(Vec::new()).await
}

/// The details of a `resource.created` entry. Fields in name order: the text equals that of
/// the same `json!` object (see `AuditDraft::with_details`); one is written per event.
#[derive(Serialize)]
struct CreatedDetails<'a> {
    account: &'a str,
    created_at: Timestamp,
    endpoint: Option<&'a str>,
    purge_after: Option<Timestamp>,
    rule: Option<&'static str>,
}

/// The details of a `resource.deleted` entry (by the service), as [`CreatedDetails`].
#[derive(Serialize)]
struct DeletedDetails<'a> {
    account: &'a str,
    cause: &'static str,
    deleted_at: Timestamp,
    grace: Span,
    purge_after: Option<Timestamp>,
    rule: Option<&'static str>,
}

struct Engine<'a> {
    tx: LedgerTx,
    ctx: &'a IngestContext<'a>,
    resources: HashMap<String, Option<ResourceRow>>,
    accounts: HashMap<String, Option<AccountRow>>,
    orgs: HashMap<String, Option<OrgRow>>,
    dirty_resources: HashSet<String>,
    dirty_accounts: HashSet<String>,
    dirty_orgs: HashSet<String>,
    /// Event ids applied by this ingest (a repeat later in the same input is a replay too).
    new_event_ids: Vec<String>,
    new_event_set: HashSet<String>,
    seen_in_ledger: HashSet<String>,
    audit: Vec<AuditDraft>,
    errors: Vec<LineError>,
    report: IngestReport,
}

impl<'a> Engine<'a> {
    fn new(tx: LedgerTx, ctx: &'a IngestContext<'a>) -> Self {
        Engine {
            tx,
            ctx,
            resources: HashMap::new(),
            accounts: HashMap::new(),
            orgs: HashMap::new(),
            dirty_resources: HashSet::new(),
            dirty_accounts: HashSet::new(),
            dirty_orgs: HashSet::new(),
            new_event_ids: Vec::new(),
            new_event_set: HashSet::new(),
            seen_in_ledger: HashSet::new(),
            audit: Vec::new(),
            errors: Vec::new(),
            report: IngestReport::default(),
        }
    }

    async fn finish(
        mut self,
        mut parse_errors: Vec<LineError>,
    ) -> Result<IngestReport, IngestError> {
        parse_errors.append(&mut self.errors);
        if !parse_errors.is_empty() {
            parse_errors.sort_by_key(|e| e.line);
            self.tx.rollback().await?;
            return Err(IngestError::Invalid(parse_errors));
        }
        self.flush().await?;
        self.tx
            .record_events(&self.new_event_ids, self.ctx.now)
            .await?;
        crate::sweep::failpoint("ingest_before_commit");
        self.tx.commit_with_audit(&self.audit).await?;
        crate::sweep::failpoint("ingest_after_commit");
        if self.report.applied > 0 || self.report.duplicates > 0 {
            let types: Vec<String> = self
                .report
                .by_type
                .iter()
                .map(|(t, n)| format!("{t}:{n}"))
                .collect();
            info!(applied = self.report.applied, duplicates = self.report.duplicates, types = %types.join(","), "events ingested");
        }
        Ok(self.report)
    }

    /// Writes changed rows back; the transaction then sees them, so caches can be dropped.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let orgs: Vec<OrgRow> = self
            .dirty_orgs
            .drain()
            .filter_map(|id| self.orgs.get(&id).cloned().flatten())
            .collect();
        let accounts: Vec<AccountRow> = self
            .dirty_accounts
            .drain()
            .filter_map(|id| self.accounts.get(&id).cloned().flatten())
            .collect();
        let mut resources: Vec<ResourceRow> = self
            .dirty_resources
            .drain()
            .filter_map(|id| self.resources.get(&id).cloned().flatten())
            .collect();
        resources.sort_by(|a, b| a.id.cmp(&b.id));
        self.tx.save_orgs(&orgs).await?;
        self.tx.save_accounts(&accounts).await?;
        self.tx.save_resources(&resources).await?;
        self.resources.clear();
        self.accounts.clear();
        self.orgs.clear();
        Ok(())
    }

    async fn apply_chunk(&mut self, chunk: &[Event]) -> Result<(), StoreError> {
        // Fetch everything the chunk mentions: resources, then their accounts, then orgs.
        let mut rids: Vec<String> = Vec::new();
        let mut aids: Vec<String> = Vec::new();
        let mut oids: Vec<String> = Vec::new();
        let mut eids: Vec<String> = Vec::new();
        for e in chunk {
            if let Some(id) = &e.event_id {
                eids.push(id.clone());
            }
            match &e.body {
                EventBody::OrgUpsert { org, .. } => oids.push(org.clone()),
                EventBody::AccountCreated { account, org } => {
                    aids.push(account.clone());
                    oids.push(org.clone());
                }
                EventBody::ResourceCreated { id, account, .. } => {
                    rids.push(id.clone());
                    aids.push(account.clone());
                }
                EventBody::ResourceDeleted { id } | EventBody::ResourceRestored { id } => {
                    rids.push(id.clone())
                }
                EventBody::AccountDeletionRequested { account }
                | EventBody::AccountRestored { account } => aids.push(account.clone()),
            }
        }
        dedup(&mut rids);
        let found = self.tx.load_resources(&rids).await?;
        for id in &rids {
            self.resources.entry(id.clone()).or_insert(None);
        }
        for r in found {
            aids.push(r.account.clone());
            self.resources.insert(r.id.clone(), Some(r));
        }
        dedup(&mut aids);
        let found = self.tx.load_accounts(&aids).await?;
        for id in &aids {
            self.accounts.entry(id.clone()).or_insert(None);
        }
        for a in found {
            oids.push(a.org.clone());
            self.accounts.insert(a.id.clone(), Some(a));
        }
        dedup(&mut oids);
        let found = self.tx.load_orgs(&oids).await?;
        for id in &oids {
            self.orgs.entry(id.clone()).or_insert(None);
        }
        for o in found {
            self.orgs.insert(o.id.clone(), Some(o));
        }
        dedup(&mut eids);
        self.seen_in_ledger = self.tx.seen_events(&eids).await?;

        for e in chunk {
            if let Some(id) = &e.event_id
                && (self.seen_in_ledger.contains(id) || self.new_event_set.contains(id))
            {
                self.report.duplicates += 1;
                debug!(event_id = %id, line = e.line, "event already applied; skipped");
                continue;
            }
            match self.apply(e).await? {
                Ok(()) => {
                    self.report.applied += 1;
                    *self.report.by_type.entry(e.body.type_name()).or_default() += 1;
                    if let Some(id) = &e.event_id {
                        self.new_event_set.insert(id.clone());
                        self.new_event_ids.push(id.clone());
                    }
                }
                Err(reason) => self.errors.push(LineError {
                    line: e.line,
                    reason,
                }),
            }
        }
        self.flush().await
    }

    /// Applies one event: `Ok(Err(reason))` is a rejected line, `Err` a ledger failure.
    async fn apply(&mut self, e: &Event) -> Result<Result<(), String>, StoreError> {
        let now = self.ctx.now;
        let at = e.at.unwrap_or(now);
        if let Err(reason) = rules::check_event_time(at, now, self.ctx.max_clock_skew) {
            return Ok(Err(reason));
        }
        match &e.body {
            EventBody::OrgUpsert { org, plan } => self.org_upsert(org, *plan, at).await,
            EventBody::AccountCreated { account, org } => {
                Ok(self.account_created(account, org, at))
            }
            EventBody::ResourceCreated {
                id, kind, account, ..
            } => Ok(self.resource_created(id, kind, account, e.body.endpoint(), at)),
            EventBody::ResourceDeleted { id } => Ok(self.resource_deleted(id, at)),
            EventBody::ResourceRestored { id } => Ok(self.resource_restored(id, at)),
            EventBody::AccountDeletionRequested { account } => {
                self.account_deletion_requested(account, at).await
            }
            EventBody::AccountRestored { account } => self.account_restored(account, at).await,
        }
    }

    fn zdr_approved(&self, org: &str) -> bool {
        matches!(self.orgs.get(org), Some(Some(o)) if o.zdr == ZdrStatus::Approved)
    }

    async fn org_upsert(
        &mut self,
        org: &str,
        plan: crate::model::Plan,
        at: Timestamp,
    ) -> Result<Result<(), String>, StoreError> {
        let existing = self.orgs.get(org).cloned().flatten();
        let (row, revoked) = match existing {
            Some(mut o) => {
                let new_zdr = rules::change_plan(plan, o.zdr);
                let revoked = new_zdr != o.zdr;
                if o.plan == plan && !revoked {
                    return Ok(Ok(()));
                }
                o.plan = plan;
                if revoked {
                    o.zdr = new_zdr;
                    o.zdr_reason = Some("plan changed to free".into());
                    o.zdr_by = Some("org.upsert".into());
                    o.zdr_at = Some(at);
                }
                o.updated_at = at;
                (o, revoked)
            }
            None => (
                OrgRow {
                    id: org.to_string(),
                    plan,
                    zdr: ZdrStatus::Off,
                    zdr_reason: None,
                    zdr_by: None,
                    zdr_at: None,
                    created_at: at,
                    updated_at: at,
                },
                false,
            ),
        };
        self.orgs.insert(org.to_string(), Some(row.clone()));
        self.dirty_orgs.insert(org.to_string());
        self.audit.push(AuditDraft::new(
            at,
            "org.upserted",
            format!("org/{org}"),
            json!({"plan": plan.as_str(), "zdr": row.zdr.as_str()}),
        ));
        if revoked {
            info!(org = %org, plan = %plan, "ZDR revoked: the org left the Scale plan");
            let n = reschedule_org(&mut self.tx, self.ctx.policy, &row).await?;
            self.flush().await?;
            self.audit.push(AuditDraft::new(
                at,
                "zdr.revoked",
                format!("org/{org}"),
                json!({"reason": "plan changed to free", "rescheduled": n}),
            ));
        }
        Ok(Ok(()))
    }

    fn account_created(&mut self, account: &str, org: &str, at: Timestamp) -> Result<(), String> {
        if matches!(self.accounts.get(account), Some(Some(_))) {
            return Err(format!("account `{account}` already exists"));
        }
        if !matches!(self.orgs.get(org), Some(Some(_))) {
            return Err(format!("unknown org `{org}` (send org.upsert first)"));
        }
        let row = AccountRow {
            id: account.to_string(),
            org: org.to_string(),
            state: AccountState::Active,
            created_at: at,
            deletion_requested_at: None,
            purge_after: None,
            purged_at: None,
        };
        self.accounts.insert(account.to_string(), Some(row));
        self.dirty_accounts.insert(account.to_string());
        self.audit.push(AuditDraft::new(
            at,
            "account.created",
            format!("account/{account}"),
            json!({"org": org}),
        ));
        debug!(account = %account, org = %org, "account created");
        Ok(())
    }

    fn resource_created(
        &mut self,
        id: &str,
        kind: &str,
        account: &str,
        endpoint: Option<&str>,
        at: Timestamp,
    ) -> Result<(), String> {
        let Some(kp) = self.ctx.policy.kinds.get(kind) else {
            let known: Vec<&str> = self.ctx.policy.kinds.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown kind `{kind}` (configured: {})",
                known.join(", ")
            ));
        };
        if matches!(self.resources.get(id), Some(Some(_))) {
            return Err(format!("resource `{id}` already exists"));
        }
        let Some(Some(acct)) = self.accounts.get(account) else {
            return Err(format!("unknown account `{account}`"));
        };
        rules::create_resource(&acct.facts()).map_err(|r| format!("account `{account}`: {r}"))?;
        let acct_facts = acct.facts();
        let org = acct.org.clone();
        let mut row = ResourceRow {
            id: id.to_string(),
            kind: kind.to_string(),
            account: account.to_string(),
            org: org.clone(),
            created_at: at,
            endpoint: endpoint.map(str::to_string),
            state: ResourceState::Live,
            deleted_at: None,
            cause: None,
            purge_after: None,
            rule: None,
            held: false,
            lease_owner: None,
            lease_until: None,
            attempts: 0,
            last_error: None,
            purged_at: None,
        };
        row.reschedule(&acct_facts, self.zdr_approved(&org), kp);
        self.audit.push(AuditDraft::with_details(
            at,
            "resource.created",
            format!("{kind}/{id}"),
            &CreatedDetails {
                account,
                created_at: at,
                endpoint,
                purge_after: row.purge_after,
                rule: row.rule.map(|r| r.as_str()),
            },
        ));
        if let (Some(p), Some(rule)) = (row.purge_after, row.rule) {
            debug!(kind = %kind, id = %id, account = %account, purge_after = %p, rule = %rule, "purge scheduled");
        }
        self.resources.insert(id.to_string(), Some(row));
        self.dirty_resources.insert(id.to_string());
        Ok(())
    }

    /// The resource, its account's facts and whether its org has ZDR approved.
    fn resource_context(&self, id: &str) -> Result<(ResourceRow, AccountRow, bool), String> {
        let Some(Some(r)) = self.resources.get(id) else {
            return Err(format!("unknown resource `{id}`"));
        };
        let Some(Some(a)) = self.accounts.get(&r.account) else {
            return Err(format!(
                "resource `{id}` belongs to unknown account `{}`",
                r.account
            ));
        };
        Ok((r.clone(), a.clone(), self.zdr_approved(&a.org)))
    }

    fn resource_deleted(&mut self, id: &str, at: Timestamp) -> Result<(), String> {
        let (mut r, a, zdr) = self.resource_context(id)?;
        let facts =
            rules::delete_resource(&r.facts(), at).map_err(|e| format!("resource `{id}`: {e}"))?;
        if at < r.created_at {
            return Err(format!(
                "resource `{id}`: `at` {at} is before it was created ({})",
                r.created_at
            ));
        }
        r.set_facts(facts);
        let kp = &self.ctx.policy.kinds[&r.kind];
        r.reschedule(&a.facts(), zdr, kp);
        info!(
            kind = %r.kind, id = %id, account = %r.account, cause = "manual", deleted_at = %at,
            grace = %kp.grace_after_delete, purge_after = %opt(r.purge_after), rule = %opt(r.rule),
            "resource deleted; purge scheduled"
        );
        self.audit.push(AuditDraft::with_details(
            at,
            "resource.deleted",
            format!("{}/{id}", r.kind),
            &DeletedDetails {
                account: &r.account,
                cause: Cause::Manual.as_str(),
                deleted_at: at,
                grace: kp.grace_after_delete,
                purge_after: r.purge_after,
                rule: r.rule.map(|r| r.as_str()),
            },
        ));
        self.put_resource(r);
        Ok(())
    }

    fn resource_restored(&mut self, id: &str, at: Timestamp) -> Result<(), String> {
        let (mut r, a, zdr) = self.resource_context(id)?;
        let facts = rules::restore_resource(&r.facts(), &a.facts())
            .map_err(|e| format!("resource `{id}`: {e}"))?;
        r.set_facts(facts);
        let kp = &self.ctx.policy.kinds[&r.kind];
        r.reschedule(&a.facts(), zdr, kp);
        info!(kind = %r.kind, id = %id, account = %r.account, purge_after = %opt(r.purge_after), "resource restored");
        self.audit.push(AuditDraft::new(
            at,
            "resource.restored",
            format!("{}/{id}", r.kind),
            json!({"account": r.account, "restored_at": at, "purge_after": r.purge_after}),
        ));
        self.put_resource(r);
        Ok(())
    }

    fn put_resource(&mut self, r: ResourceRow) {
        self.dirty_resources.insert(r.id.clone());
        self.resources.insert(r.id.clone(), Some(r));
    }

    async fn account_deletion_requested(
        &mut self,
        account: &str,
        at: Timestamp,
    ) -> Result<Result<(), String>, StoreError> {
        let Some(Some(mut a)) = self.accounts.get(account).cloned() else {
            return Ok(Err(format!("unknown account `{account}`")));
        };
        let facts = match rules::request_account_deletion(&a.facts(), at) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("account `{account}`: {e}"))),
        };
        a.state = facts.state;
        a.deletion_requested_at = facts.deletion_requested_at;
        a.purge_after = rules::account_schedule(&facts, self.ctx.policy);
        let zdr = self.zdr_approved(&a.org);
        let org_row = self.orgs.get(&a.org).cloned().flatten();
        // The transaction must see this chunk's earlier changes before reading the account's rows.
        self.accounts.insert(account.to_string(), Some(a.clone()));
        self.dirty_accounts.insert(account.to_string());
        self.flush().await?;
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut rows = self.tx.account_resources(account).await?;
        for r in rows.iter_mut() {
            let Some(kp) = self.ctx.policy.kinds.get(&r.kind) else {
                continue;
            };
            if r.state == ResourceState::Live {
                *by_kind.entry(r.kind.clone()).or_default() += 1;
            }
            let f = rules::delete_for_account(&r.facts(), at);
            r.set_facts(f);
            r.reschedule(&facts, zdr, kp);
        }
        self.tx.save_resources(&rows).await?;
        self.tx.save_accounts(std::slice::from_ref(&a)).await?;
        // Keep the account and org cached for the rest of the chunk.
        self.accounts.insert(account.to_string(), Some(a.clone()));
        if let Some(o) = org_row {
            self.orgs.insert(o.id.clone(), Some(o));
        }
        let total: u64 = by_kind.values().sum();
        info!(
            account = %account, org = %a.org, deletion_requested_at = %at, grace = %self.ctx.policy.account_grace,
            purge_after = %opt(a.purge_after), resources_deleted = total, "account deletion requested"
        );
        self.audit.push(AuditDraft::new(
            at,
            "account.deletion_requested",
            format!("account/{account}"),
            json!({
                "org": a.org, "deletion_requested_at": at, "grace": self.ctx.policy.account_grace,
                "purge_after": a.purge_after, "resources_deleted": by_kind,
            }),
        ));
        Ok(Ok(()))
    }

    async fn account_restored(
        &mut self,
        account: &str,
        at: Timestamp,
    ) -> Result<Result<(), String>, StoreError> {
        let Some(Some(mut a)) = self.accounts.get(account).cloned() else {
            return Ok(Err(format!("unknown account `{account}`")));
        };
        let facts = match rules::restore_account(&a.facts()) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("account `{account}`: {e}"))),
        };
        a.state = facts.state;
        a.deletion_requested_at = None;
        a.purge_after = None;
        let zdr = self.zdr_approved(&a.org);
        let org_row = self.orgs.get(&a.org).cloned().flatten();
        self.accounts.insert(account.to_string(), Some(a.clone()));
        self.dirty_accounts.insert(account.to_string());
        self.flush().await?;
        let mut rows = self.tx.account_resources(account).await?;
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for r in rows.iter_mut() {
            let Some(kp) = self.ctx.policy.kinds.get(&r.kind) else {
                continue;
            };
            if r.state == ResourceState::Deleted && r.cause == Some(Cause::Account) {
                *by_kind.entry(r.kind.clone()).or_default() += 1;
            }
            let f = rules::restore_for_account(&r.facts());
            r.set_facts(f);
            r.reschedule(&facts, zdr, kp);
        }
        self.tx.save_resources(&rows).await?;
        self.accounts.insert(account.to_string(), Some(a.clone()));
        if let Some(o) = org_row {
            self.orgs.insert(o.id.clone(), Some(o));
        }
        let total: u64 = by_kind.values().sum();
        info!(account = %account, org = %a.org, resources_restored = total, "account restored");
        self.audit.push(AuditDraft::new(
            at,
            "account.restored",
            format!("account/{account}"),
            json!({"org": a.org, "restored_at": at, "resources_restored": by_kind}),
        ));
        Ok(Ok(()))
    }
}

/// Recomputes the schedules of an org's ZDR-covered kinds after its ZDR status changed.
/// Returns how many schedules changed.
pub async fn reschedule_org(
    tx: &mut LedgerTx,
    policy: &SchedulePolicy,
    org: &OrgRow,
) -> Result<u64, StoreError> {
    let kinds: Vec<String> = policy
        .kinds
        .iter()
        .filter(|(_, k)| k.zdr_endpoints.is_some())
        .map(|(n, _)| n.clone())
        .collect();
    let mut rows = tx.org_resources(&org.id, &kinds).await?;
    let accounts: Vec<String> = {
        let mut v: Vec<String> = rows.iter().map(|r| r.account.clone()).collect();
        dedup(&mut v);
        v
    };
    let accounts: HashMap<String, AccountRow> = tx
        .load_accounts(&accounts)
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let approved = org.zdr == ZdrStatus::Approved;
    let mut changed = Vec::new();
    for r in rows.iter_mut() {
        let (Some(kp), Some(a)) = (policy.kinds.get(&r.kind), accounts.get(&r.account)) else {
            continue;
        };
        if r.reschedule(&a.facts(), approved, kp) {
            changed.push(r.clone());
        }
    }
    tx.save_resources(&changed).await?;
    Ok(changed.len() as u64)
}

fn dedup(v: &mut Vec<String>) {
    v.sort_unstable();
    v.dedup();
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|t| t.to_string()).unwrap_or_else(|| "none".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed details read exactly as the `json!` objects they replaced, so the audit chain's
    /// entries keep their text.
    #[test]
    fn typed_details_serialize_like_the_json_objects() {
        let at = Timestamp(1_764_000_000_123);
        for (endpoint, purge_after, rule) in [
            (None, None, None),
            (
                Some("/v1/embeddings"),
                Some(Timestamp(1_766_000_000_000)),
                Some(crate::model::Rule::RetentionLimit),
            ),
        ] {
            let rule = rule.map(|r| r.as_str());
            let created = serde_json::to_string(&CreatedDetails {
                account: "acct \"1\"",
                created_at: at,
                endpoint,
                purge_after,
                rule,
            })
            .unwrap();
            let expected = json!({
                "account": "acct \"1\"", "created_at": at, "endpoint": endpoint,
                "purge_after": purge_after, "rule": rule,
            });
            assert_eq!(created, expected.to_string());

            let grace = Span(30 * 86_400_000);
            let deleted = serde_json::to_string(&DeletedDetails {
                account: "a1",
                cause: Cause::Manual.as_str(),
                deleted_at: at,
                grace,
                purge_after,
                rule,
            })
            .unwrap();
            let expected = json!({
                "account": "a1", "cause": Cause::Manual.as_str(), "deleted_at": at,
                "grace": grace, "purge_after": purge_after, "rule": rule,
            });
            assert_eq!(deleted, expected.to_string());
        }
    }
}
