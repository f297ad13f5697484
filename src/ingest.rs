//! Applies lifecycle events to the ledger (§6 `ingest`).
//!
//! Invariant: all or nothing: a batch of events is applied whole, in one write transaction, or,
//! if any line is bad, not at all, and every bad line is reported; an event whose `event_id` was
//! applied within `ingest.dedup_window` is a no-op.
//!
//! Mechanism: events are validated against the ledger *as the earlier lines leave it*, inside one write
//! transaction: if any line is bad, nothing is applied and every bad line is reported. Lines are
//! processed in chunks: the ids a chunk mentions are fetched with one query per table, the
//! events change the cached rows, and the chunk's changed rows, event ids and audit entries are
//! written while the next chunk is read and applied, so a million-line file takes seconds.
//! Events that rewrite rows the chunk never named (an account's deletion or restore, a plan
//! change that revokes ZDR) go through the ledger in line order. Audit entries are appended
//! with each chunk on SQLite, whose write lock is already ours, and at the commit on PostgreSQL
//! (see `store`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::BufRead;

use serde::Serialize;
use serde_json::json;
use thiserror::Error;
use tracing::{debug, info};

use crate::audit::AuditDraft;
use crate::events::{self, Event, EventBody, LineError};
use crate::model::{AccountState, Cause, Plan, ResourceState, Span, Timestamp, ZdrStatus};
use crate::rules::{self, SchedulePolicy};
use crate::store::{AccountRow, IngestWrite, Ledger, LedgerTx, OrgRow, ResourceRow, StoreError};

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
#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
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
    /// `ingest.dedup_window`: how long an event id is remembered after the event's time. An
    /// event with an id dated before `now - dedup_window` is refused: its record may be gone,
    /// so a replay could not be told from a new event.
    pub dedup_window: Span,
    /// The attributes of `resource.created` the targets' templates name (`Config::target_attrs`):
    /// the only ones kept besides `endpoint`.
    pub keep_attrs: &'a BTreeSet<String>,
}

/// The attributes of a `resource.created` that a target's template names, as the ledger keeps
/// them (a JSON object of strings; numbers and booleans as their text); `None` when there are
/// none. An attribute that is an object, an array or null is not kept: a purge that needs it
/// fails naming it.
fn kept_attrs(
    attrs: Option<&serde_json::Map<String, serde_json::Value>>,
    keep: &BTreeSet<String>,
) -> Option<String> {
    let attrs = attrs?;
    let kept: BTreeMap<&str, String> = keep
        .iter()
        .filter_map(|k| {
            let v = match attrs.get(k)? {
                serde_json::Value::String(s) => s.clone(),
                v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => v.to_string(),
                _ => return None,
            };
            Some((k.as_str(), v))
        })
        .collect();
    (!kept.is_empty()).then(|| serde_json::to_string(&kept).expect("a map of strings"))
}

/// Reads NDJSON from `input` and applies it.
pub async fn ingest_reader(
    ledger: &Ledger,
    ctx: &IngestContext<'_>,
    input: impl BufRead,
) -> Result<IngestReport, IngestError> {
    let mut lines = events::Lines::new(input);
    let mut parse_errors: Vec<LineError> = Vec::new();
    let mut ended = false;
    // The input is a file, stdin or a request body already in memory: it is read synchronously,
    // one chunk at a time, beside the writes of the chunk before.
    let mut next = |chunk: &mut Vec<Event>| {
        while !ended && chunk.len() < CHUNK {
            match lines.next_event() {
                Ok(Some(Ok(e))) => chunk.push(e),
                Ok(Some(Err(e))) => parse_errors.push(e),
                Ok(None) => ended = true,
                Err(e) => {
                    parse_errors.push(LineError {
                        line: lines.line() + 1,
                        reason: format!("cannot read input: {e}"),
                    });
                    ended = true;
                }
            }
        }
    };
    let mut engine = Engine::new(ledger.begin().await?, ctx);
    let last = engine.run(&mut next).await?;
    engine.finish(last, parse_errors).await
}

/// Applies already parsed events (the HTTP API parses a JSON array itself).
pub async fn ingest_events(
    ledger: &Ledger,
    ctx: &IngestContext<'_>,
    events: &[Event],
) -> Result<IngestReport, IngestError> {
    let mut rest = events;
    let mut next = |chunk: &mut Vec<Event>| {
        let (now, later) = rest.split_at(rest.len().min(CHUNK));
        chunk.extend_from_slice(now);
        rest = later;
    };
    let mut engine = Engine::new(ledger.begin().await?, ctx);
    let last = engine.run(&mut next).await?;
    engine.finish(last, Vec::new()).await
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

/// An event that needs the ledger itself, not only the rows cached for its chunk: it reads and
/// rewrites rows the chunk never named.
enum LedgerStep<'e> {
    /// A plan change that revokes the org's ZDR: its covered resources are rescheduled.
    RevokeZdr {
        org: &'e str,
        plan: Plan,
        training_opt_out: Option<bool>,
    },
    DeleteAccount(&'e str),
    RestoreAccount(&'e str),
}

/// Applies chunks of events in one transaction. Each chunk's rows are fetched with one query per
/// table and cached; the events change the cached rows; the changed rows, the applied event ids
/// and the audit entries of a chunk are written while the next chunk is read and applied
/// ([`LedgerTx::write_ingest`]). Rows still waiting to be written stay cached, so the next
/// chunk never reads them from the ledger.
struct Engine<'a> {
    tx: LedgerTx,
    st: State<'a>,
}

/// The ingest's view of the ledger and what it has done so far.
struct State<'a> {
    ctx: &'a IngestContext<'a>,
    /// Rows the current chunk names (`None`: not in the ledger), and rows changed by the chunk
    /// before whose write may still be running.
    resources: HashMap<String, Option<ResourceRow>>,
    accounts: HashMap<String, Option<AccountRow>>,
    orgs: HashMap<String, Option<OrgRow>>,
    /// Rows changed and not yet handed to a write.
    dirty_resources: HashSet<String>,
    dirty_accounts: HashSet<String>,
    dirty_orgs: HashSet<String>,
    /// Event ids applied by this ingest (a repeat later in the same input is a replay too).
    new_event_set: HashSet<String>,
    /// Event ids applied in the current chunk, in order.
    chunk_event_ids: Vec<(String, Timestamp)>,
    seen_in_ledger: HashSet<String>,
    /// Whether the ledger ever compacted a tombstone (asked once, when first needed).
    tombstones_compacted: Option<bool>,
    /// Ids not in `resources` whose purge receipt is in the chain: compacted tombstones.
    compacted_ids: HashSet<String>,
    audit: Vec<AuditDraft>,
    errors: Vec<LineError>,
    report: IngestReport,
}

impl<'a> Engine<'a> {
    fn new(tx: LedgerTx, ctx: &'a IngestContext<'a>) -> Self {
        Engine {
            tx,
            st: State {
                ctx,
                resources: HashMap::new(),
                accounts: HashMap::new(),
                orgs: HashMap::new(),
                dirty_resources: HashSet::new(),
                dirty_accounts: HashSet::new(),
                dirty_orgs: HashSet::new(),
                new_event_set: HashSet::new(),
                chunk_event_ids: Vec::new(),
                seen_in_ledger: HashSet::new(),
                tombstones_compacted: None,
                compacted_ids: HashSet::new(),
                audit: Vec::new(),
                errors: Vec::new(),
                report: IngestReport::default(),
            },
        }
    }

    /// Applies every chunk `next` fills (an empty chunk ends the input). Returns the last
    /// chunk's write, not yet done.
    async fn run<F: FnMut(&mut Vec<Event>)>(
        &mut self,
        next: &mut F,
    ) -> Result<IngestWrite, StoreError> {
        let mut chunk: Vec<Event> = Vec::with_capacity(CHUNK);
        let mut upcoming: Vec<Event> = Vec::with_capacity(CHUNK);
        next(&mut chunk);
        let mut pending = IngestWrite::new(self.st.ctx.now);
        while !chunk.is_empty() {
            self.st.load(&mut self.tx, &chunk).await?;
            // The chunk before is written while this one is applied as far as the cache allows
            // and the next one is read.
            let st = &mut self.st;
            let (done, write) = self
                .tx
                .write_ingest(pending, || {
                    let done = st.apply_cached(&chunk);
                    // A chunk applied whole hands over its own write here too.
                    let write = (done == chunk.len()).then(|| st.take_write());
                    next(&mut upcoming);
                    (done, write)
                })
                .await?;
            for e in &chunk[done..] {
                self.apply(e).await?;
            }
            pending = match write {
                Some(w) => w,
                None => self.st.take_write(),
            };
            std::mem::swap(&mut chunk, &mut upcoming);
            upcoming.clear();
        }
        Ok(pending)
    }

    async fn finish(
        mut self,
        last: IngestWrite,
        mut parse_errors: Vec<LineError>,
    ) -> Result<IngestReport, IngestError> {
        parse_errors.append(&mut self.st.errors);
        if !parse_errors.is_empty() {
            parse_errors.sort_by_key(|e| e.line);
            self.tx.rollback().await?;
            return Err(IngestError::Invalid(parse_errors));
        }
        self.tx.write_ingest(last, || ()).await?;
        crate::failpoint::crash("ingest_before_commit");
        self.tx.commit_with_audit(&[]).await?;
        crate::failpoint::crash("ingest_after_commit");
        let report = self.st.report;
        if report.applied > 0 || report.duplicates > 0 {
            let types: Vec<String> = report
                .by_type
                .iter()
                .map(|(t, n)| format!("{t}:{n}"))
                .collect();
            info!(applied = report.applied, duplicates = report.duplicates, types = %types.join(","), "events ingested");
        }
        Ok(report)
    }

    /// Writes the rows changed so far now, so the ledger's own queries see them. The cache keeps
    /// them (it still matches the ledger).
    async fn write_rows(&mut self) -> Result<(), StoreError> {
        let (orgs, accounts, resources) = self.st.take_dirty_rows();
        self.tx.save_orgs(&orgs).await?;
        self.tx.save_accounts(&accounts).await?;
        self.tx.save_resources(&resources).await
    }

    /// Applies one event, through the ledger when it needs to.
    async fn apply(&mut self, e: &Event) -> Result<(), StoreError> {
        let Some(step) = self.st.try_apply(e) else {
            return Ok(());
        };
        let at = e.at.unwrap_or(self.st.ctx.now);
        let result = match step {
            LedgerStep::RevokeZdr {
                org,
                plan,
                training_opt_out,
            } => {
                self.revoke_zdr(org, plan, training_opt_out, at).await?;
                Ok(())
            }
            LedgerStep::DeleteAccount(account) => {
                self.account_deletion_requested(account, at).await?
            }
            LedgerStep::RestoreAccount(account) => self.account_restored(account, at).await?,
        };
        self.st.record(e, result);
        Ok(())
    }

    async fn revoke_zdr(
        &mut self,
        org: &str,
        plan: crate::model::Plan,
        training_opt_out: Option<bool>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        // `revokes_zdr` found the org, so the upsert cannot be refused.
        let Ok(Some(row)) = self.st.upsert_org(org, Some(plan), training_opt_out, at) else {
            return Ok(());
        };
        info!(org = %org, plan = %plan, "ZDR revoked: the org left the Scale plan");
        // The org's new status and this chunk's resources first, so all are rescheduled.
        self.write_rows().await?;
        let changed = reschedule_org_rows(&mut self.tx, self.st.ctx.policy, &row).await?;
        self.st.refresh(&changed);
        self.st.audit.push(AuditDraft::new(
            at,
            "zdr.revoked",
            format!("org/{org}"),
            json!({"reason": "plan changed to free", "rescheduled": changed.len()}),
        ));
        Ok(())
    }

    async fn account_deletion_requested(
        &mut self,
        account: &str,
        at: Timestamp,
    ) -> Result<Result<(), String>, StoreError> {
        let Some(Some(mut a)) = self.st.accounts.get(account).cloned() else {
            return Ok(Err(format!("unknown account `{account}`")));
        };
        let facts = match rules::request_account_deletion(&a.facts(), at) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("account `{account}`: {e}"))),
        };
        let policy = self.st.ctx.policy;
        a.state = facts.state;
        a.deletion_requested_at = facts.deletion_requested_at;
        a.purge_after = rules::account_schedule(&facts, policy);
        let zdr = self.st.zdr_approved(&a.org);
        // The ledger must hold this chunk's earlier changes before the account's rows are read.
        self.write_rows().await?;
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut rows = self.tx.account_resources(account).await?;
        for r in rows.iter_mut() {
            let Some(kp) = policy.kinds.get(&r.kind) else {
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
        self.st.refresh(&rows);
        self.st
            .accounts
            .insert(account.to_string(), Some(a.clone()));
        let total: u64 = by_kind.values().sum();
        info!(
            account = %account, org = %a.org, deletion_requested_at = %at, grace = %policy.account_grace,
            purge_after = %opt(a.purge_after), resources_deleted = total, "account deletion requested"
        );
        self.st.audit.push(AuditDraft::new(
            at,
            "account.deletion_requested",
            format!("account/{account}"),
            json!({
                "org": a.org, "deletion_requested_at": at, "grace": policy.account_grace,
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
        let Some(Some(mut a)) = self.st.accounts.get(account).cloned() else {
            return Ok(Err(format!("unknown account `{account}`")));
        };
        let facts = match rules::restore_account(&a.facts()) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("account `{account}`: {e}"))),
        };
        let policy = self.st.ctx.policy;
        a.state = facts.state;
        a.deletion_requested_at = None;
        a.purge_after = None;
        let zdr = self.st.zdr_approved(&a.org);
        self.st
            .accounts
            .insert(account.to_string(), Some(a.clone()));
        self.st.dirty_accounts.insert(account.to_string());
        self.write_rows().await?;
        let mut rows = self.tx.account_resources(account).await?;
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for r in rows.iter_mut() {
            let Some(kp) = policy.kinds.get(&r.kind) else {
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
        self.st.refresh(&rows);
        let total: u64 = by_kind.values().sum();
        info!(account = %account, org = %a.org, resources_restored = total, "account restored");
        self.st.audit.push(AuditDraft::new(
            at,
            "account.restored",
            format!("account/{account}"),
            json!({"org": a.org, "restored_at": at, "resources_restored": by_kind}),
        ));
        Ok(Ok(()))
    }
}

impl State<'_> {
    /// Caches every row `chunk` names that is not cached yet: resources, then their accounts,
    /// then those accounts' orgs; and which of its event ids the ledger has seen.
    async fn load(&mut self, tx: &mut LedgerTx, chunk: &[Event]) -> Result<(), StoreError> {
        let mut rids: Vec<String> = Vec::new();
        let mut aids: Vec<String> = Vec::new();
        let mut oids: Vec<String> = Vec::new();
        let mut eids: Vec<String> = Vec::new();
        for e in chunk {
            if let Some(id) = &e.event_id {
                eids.push(id.clone());
            }
            match &e.body {
                EventBody::OrgUpsert { org, .. } => oids.push(org.as_str().to_owned()),
                EventBody::AccountCreated { account, org } => {
                    aids.push(account.as_str().to_owned());
                    oids.push(org.as_str().to_owned());
                }
                EventBody::ResourceCreated { id, account, .. } => {
                    rids.push(id.as_str().to_owned());
                    aids.push(account.as_str().to_owned());
                }
                EventBody::ResourceDeleted { id } | EventBody::ResourceRestored { id } => {
                    rids.push(id.as_str().to_owned())
                }
                EventBody::AccountDeletionRequested { account }
                | EventBody::AccountRestored { account } => aids.push(account.as_str().to_owned()),
            }
        }
        dedup(&mut rids);
        let mut created: Vec<&str> = chunk
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ResourceCreated { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .filter(|id| !self.resources.contains_key(*id))
            .collect();
        fetch_uncached(&mut self.resources, &rids, async |ids| {
            tx.load_resources(ids).await
        })
        .await?;
        created.retain(|id| matches!(self.resources.get(*id), Some(None)));
        self.load_compacted(tx, &created).await?;
        aids.extend(cached(&self.resources, &rids).map(|r| r.account.clone()));
        dedup(&mut aids);
        fetch_uncached(&mut self.accounts, &aids, async |ids| {
            tx.load_accounts(ids).await
        })
        .await?;
        oids.extend(cached(&self.accounts, &aids).map(|a| a.org.clone()));
        dedup(&mut oids);
        fetch_uncached(&mut self.orgs, &oids, async |ids| tx.load_orgs(ids).await).await?;
        dedup(&mut eids);
        self.seen_in_ledger = tx.seen_events(&eids).await?;
        Ok(())
    }

    /// Marks which of `ids` (new to the ledger's `resources`) were purged and their tombstones
    /// compacted: R9 then rests on their purge receipts, and a `resource.created` of one is
    /// refused like any other existing id. Costs nothing until a compaction ran.
    async fn load_compacted(&mut self, tx: &mut LedgerTx, ids: &[&str]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let compacted = match self.tombstones_compacted {
            Some(c) => c,
            None => *self
                .tombstones_compacted
                .insert(tx.tombstones_compacted().await?),
        };
        if !compacted {
            return Ok(());
        }
        let subjects: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                self.ctx
                    .policy
                    .kinds
                    .keys()
                    .map(move |kind| format!("{kind}/{id}"))
            })
            .collect();
        for subject in tx.purge_receipt_subjects(&subjects).await? {
            if let Some((_, id)) = subject.split_once('/') {
                self.compacted_ids.insert(id.to_string());
            }
        }
        Ok(())
    }

    /// Applies the events of `chunk` in order until one needs the ledger; returns how many were
    /// applied (all of them, usually).
    fn apply_cached(&mut self, chunk: &[Event]) -> usize {
        chunk
            .iter()
            .position(|e| self.try_apply(e).is_some())
            .unwrap_or(chunk.len())
    }

    /// Applies `e` if the cached rows are all it needs, and records the outcome. Otherwise
    /// returns what must be done through the ledger, with nothing changed and nothing recorded.
    fn try_apply<'e>(&mut self, e: &'e Event) -> Option<LedgerStep<'e>> {
        if let Some(reason) = self.beyond_dedup_window(e) {
            self.record(e, Err(reason));
            return None;
        }
        if let Some(id) = &e.event_id
            && (self.seen_in_ledger.contains(id) || self.new_event_set.contains(id))
        {
            self.report.duplicates += 1;
            debug!(event_id = %id, line = e.line, "event already applied; skipped");
            return None;
        }
        let now = self.ctx.now;
        let at = e.at.unwrap_or(now);
        let result = match rules::check_event_time(at, now, self.ctx.max_clock_skew) {
            Err(reason) => Err(reason),
            Ok(()) => match &e.body {
                EventBody::OrgUpsert {
                    org,
                    plan,
                    training_opt_out,
                } => {
                    if let Some(plan) = *plan
                        && self.revokes_zdr(org, plan)
                    {
                        return Some(LedgerStep::RevokeZdr {
                            org,
                            plan,
                            training_opt_out: *training_opt_out,
                        });
                    }
                    self.upsert_org(org, *plan, *training_opt_out, at)
                        .map(|_| ())
                }
                EventBody::AccountCreated { account, org } => {
                    self.account_created(account, org, at)
                }
                EventBody::ResourceCreated {
                    id,
                    kind,
                    account,
                    attrs,
                } => {
                    let kept = kept_attrs(attrs.as_ref(), self.ctx.keep_attrs);
                    self.resource_created(id, kind, account, e.body.endpoint(), kept, at)
                }
                EventBody::ResourceDeleted { id } => self.resource_deleted(id, at),
                EventBody::ResourceRestored { id } => self.resource_restored(id, at),
                EventBody::AccountDeletionRequested { account } => {
                    return Some(LedgerStep::DeleteAccount(account));
                }
                EventBody::AccountRestored { account } => {
                    return Some(LedgerStep::RestoreAccount(account));
                }
            },
        };
        self.record(e, result);
        None
    }

    /// Why an event with an id is refused for being older than `ingest.dedup_window`: whether
    /// it was applied once is no longer known for certain, so applying it could apply it twice.
    fn beyond_dedup_window(&self, e: &Event) -> Option<String> {
        let id = e.event_id.as_ref()?;
        let at = e.at?;
        let oldest = self.ctx.now.minus(self.ctx.dedup_window);
        (at < oldest).then(|| {
            format!(
                "event_id `{id}` is dated {at}, older than ingest.dedup_window ({}): a replay this old cannot be told from a new event, so it is refused",
                self.ctx.dedup_window
            )
        })
    }

    /// Counts an applied event, or keeps the reason a line was rejected.
    fn record(&mut self, e: &Event, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.report.applied += 1;
                *self.report.by_type.entry(e.body.type_name()).or_default() += 1;
                if let Some(id) = &e.event_id {
                    self.new_event_set.insert(id.clone());
                    self.chunk_event_ids
                        .push((id.clone(), e.at.unwrap_or(self.ctx.now)));
                }
            }
            Err(reason) => self.errors.push(LineError {
                line: e.line,
                reason,
            }),
        }
    }

    /// The changed rows, in id order, no longer marked changed (the caller writes them).
    fn take_dirty_rows(&mut self) -> (Vec<OrgRow>, Vec<AccountRow>, Vec<ResourceRow>) {
        (
            take_dirty(&self.orgs, &mut self.dirty_orgs),
            take_dirty(&self.accounts, &mut self.dirty_accounts),
            take_dirty(&self.resources, &mut self.dirty_resources),
        )
    }

    /// What the chunk just applied must write. The cache keeps the rows that write will change
    /// (the next chunk is loaded before it is done) and, up to [`KEPT_ROWS`], the accounts and
    /// orgs the ledger has: only this ingest can change them until it commits (on SQLite it is
    /// the one writer; on PostgreSQL it loaded them `FOR UPDATE`), so they stay true, and the
    /// next chunks mostly name the same ones. Other rows are read again when named again.
    fn take_write(&mut self) -> IngestWrite {
        self.resources
            .retain(|id, _| self.dirty_resources.contains(id));
        keep_rows(&mut self.accounts, &self.dirty_accounts);
        keep_rows(&mut self.orgs, &self.dirty_orgs);
        let (orgs, accounts, resources) = self.take_dirty_rows();
        IngestWrite {
            orgs,
            accounts,
            resources,
            event_ids: std::mem::take(&mut self.chunk_event_ids),
            applied_at: self.ctx.now,
            audit: std::mem::take(&mut self.audit),
        }
    }

    /// Replaces the cached copies of `rows`, which were just rewritten through the ledger.
    fn refresh(&mut self, rows: &[ResourceRow]) {
        for r in rows {
            if let Some(cached) = self.resources.get_mut(&r.id) {
                *cached = Some(r.clone());
            }
        }
    }

    fn zdr_approved(&self, org: &str) -> bool {
        matches!(self.orgs.get(org), Some(Some(o)) if o.zdr == ZdrStatus::Approved)
    }

    /// Whether moving `org` to `plan` ends its ZDR (ingest never grants ZDR, so the cached row
    /// decides this for the whole chunk).
    fn revokes_zdr(&self, org: &str, plan: crate::model::Plan) -> bool {
        matches!(self.orgs.get(org), Some(Some(o)) if rules::change_plan(plan, o.zdr) != o.zdr)
    }

    /// Creates or updates an org (a new one needs a plan); returns its row when the change
    /// revoked ZDR (the caller then reschedules its resources). Training opt-out is set only
    /// when given; it never changes ZDR, and ZDR never changes it (§2).
    fn upsert_org(
        &mut self,
        org: &str,
        plan: Option<crate::model::Plan>,
        training_opt_out: Option<bool>,
        at: Timestamp,
    ) -> Result<Option<OrgRow>, String> {
        let existing = self.orgs.get(org).cloned().flatten();
        let (row, revoked, opt_out_changed) = match existing {
            Some(mut o) => {
                let plan = plan.unwrap_or(o.plan);
                let new_zdr = rules::change_plan(plan, o.zdr);
                let revoked = new_zdr != o.zdr;
                let opt_out = training_opt_out.unwrap_or(o.training_opt_out);
                let opt_out_changed = opt_out != o.training_opt_out;
                if o.plan == plan && !revoked && !opt_out_changed {
                    return Ok(None);
                }
                o.plan = plan;
                o.training_opt_out = opt_out;
                if revoked {
                    o.zdr = new_zdr;
                    o.zdr_reason = Some("plan changed to free".into());
                    o.zdr_by = Some("org.upsert".into());
                    o.zdr_at = Some(at);
                }
                o.updated_at = at;
                (o, revoked, opt_out_changed)
            }
            None => {
                let Some(plan) = plan else {
                    return Err(format!(
                        "unknown org `{org}`: a new org needs `plan` (free or scale)"
                    ));
                };
                let opt_out = training_opt_out.unwrap_or(false);
                (
                    OrgRow {
                        id: org.to_string(),
                        plan,
                        zdr: ZdrStatus::Off,
                        zdr_reason: None,
                        zdr_by: None,
                        zdr_at: None,
                        created_at: at,
                        updated_at: at,
                        training_opt_out: opt_out,
                    },
                    false,
                    opt_out,
                )
            }
        };
        self.orgs.insert(org.to_string(), Some(row.clone()));
        self.dirty_orgs.insert(org.to_string());
        self.audit.push(AuditDraft::new(
            at,
            "org.upserted",
            format!("org/{org}"),
            json!({"plan": row.plan.as_str(), "zdr": row.zdr.as_str(), "training_opt_out": row.training_opt_out}),
        ));
        if opt_out_changed {
            self.audit.push(AuditDraft::new(
                at,
                "org.training_opt_out_changed",
                format!("org/{org}"),
                json!({"training_opt_out": row.training_opt_out}),
            ));
            info!(org = %org, training_opt_out = row.training_opt_out, "training opt-out changed");
        }
        Ok(revoked.then_some(row))
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
        target_attrs: Option<String>,
        at: Timestamp,
    ) -> Result<(), String> {
        let Some(kp) = self.ctx.policy.kinds.get(kind) else {
            let known: Vec<&str> = self.ctx.policy.kinds.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown kind `{kind}` (configured: {})",
                known.join(", ")
            ));
        };
        if kp.tracking == crate::window::Tracking::Window {
            return Err(format!(
                "kind `{kind}` is purged by time window (tracking = \"window\"): its rows need no events"
            ));
        }
        if matches!(self.resources.get(id), Some(Some(_))) {
            return Err(format!("resource `{id}` already exists"));
        }
        if self.compacted_ids.contains(id) {
            return Err(format!(
                "resource `{id}` already exists: it was purged and its tombstone compacted (R9)"
            ));
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
            claim_batch: None,
            target_attrs,
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
}

/// Recomputes the schedules of an org's ZDR-covered kinds after its ZDR status changed.
/// Returns how many schedules changed.
pub async fn reschedule_org(
    tx: &mut LedgerTx,
    policy: &SchedulePolicy,
    org: &OrgRow,
) -> Result<u64, StoreError> {
    Ok(reschedule_org_rows(tx, policy, org).await?.len() as u64)
}

/// [`reschedule_org`], returning the resources whose schedule changed (as saved).
async fn reschedule_org_rows(
    tx: &mut LedgerTx,
    policy: &SchedulePolicy,
    org: &OrgRow,
) -> Result<Vec<ResourceRow>, StoreError> {
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
    Ok(changed)
}

/// Accounts (and orgs) an ingest keeps cached between chunks, at most.
const KEPT_ROWS: usize = 100_000;

/// Drops from `cache` what the ledger lacks (`None`) unless `dirty`, and everything not
/// `dirty` once it holds more than [`KEPT_ROWS`].
fn keep_rows<T>(cache: &mut HashMap<String, Option<T>>, dirty: &HashSet<String>) {
    if cache.len() > KEPT_ROWS {
        cache.retain(|id, _| dirty.contains(id));
    } else {
        cache.retain(|id, row| row.is_some() || dirty.contains(id));
    }
}

/// Caches the `ids` that `cache` does not hold yet, as `fetch` finds them in the ledger (one
/// query); an id the ledger lacks is cached as `None`.
async fn fetch_uncached<T: Keyed>(
    cache: &mut HashMap<String, Option<T>>,
    ids: &[String],
    fetch: impl AsyncFnOnce(&[String]) -> Result<Vec<T>, StoreError>,
) -> Result<(), StoreError> {
    let asked: Vec<String> = ids
        .iter()
        .filter(|id| !cache.contains_key(*id))
        .cloned()
        .collect();
    if asked.is_empty() {
        return Ok(());
    }
    let found = fetch(&asked).await?;
    for id in asked {
        cache.insert(id, None);
    }
    for row in found {
        cache.insert(row.key().to_string(), Some(row));
    }
    Ok(())
}

/// The rows of `ids` that `cache` holds (and the ledger has).
fn cached<'a, T>(
    cache: &'a HashMap<String, Option<T>>,
    ids: &'a [String],
) -> impl Iterator<Item = &'a T> {
    ids.iter().filter_map(|id| cache.get(id)?.as_ref())
}

/// The rows of `cache` named in `dirty`, in id order; `dirty` is left empty.
fn take_dirty<T: Clone + Keyed>(
    cache: &HashMap<String, Option<T>>,
    dirty: &mut HashSet<String>,
) -> Vec<T> {
    let mut rows: Vec<T> = dirty
        .drain()
        .filter_map(|id| cache.get(&id).cloned().flatten())
        .collect();
    rows.sort_by(|a, b| a.key().cmp(b.key()));
    rows
}

/// A cached row's id.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for ResourceRow {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for AccountRow {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for OrgRow {
    fn key(&self) -> &str {
        &self.id
    }
}

fn dedup(v: &mut Vec<String>) {
    v.sort_unstable();
    v.dedup();
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|t| t.to_string()).unwrap_or_else(|| "none".into())
}

impl IngestReport {
    /// Records an applied batch of events from `source` (`http`, `outbox/NAME`) in the metrics.
    pub fn record_metrics(&self, source: &str) {
        let report = self;

        for (kind, n) in &report.by_type {
            ::metrics::counter!(crate::metrics::EVENTS_INGESTED, "source" => source.to_string(), "type" => *kind).increment(*n);
        }
        if report.duplicates > 0 {
            ::metrics::counter!(crate::metrics::EVENTS_DUPLICATE, "source" => source.to_string())
                .increment(report.duplicates);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed details read exactly as the `json!` objects they replaced, so the audit chain's
    /// entries keep their text.
    #[test]
    fn typed_details_serialize_like_the_json_objects() {
        let at = Timestamp::from_millis(1_764_000_000_123);
        for (endpoint, purge_after, rule) in [
            (None, None, None),
            (
                Some("/v1/embeddings"),
                Some(Timestamp::from_millis(1_766_000_000_000)),
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

            let grace = Span::from_millis(30 * 86_400_000);
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
