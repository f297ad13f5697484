//! `retentiond reapply --since TIME [--target NAME] [--dry-run]`: after a backup of an
//! application database or file store is restored, data that was erased is back. This re-runs the
//! purge targets for every resource and account the ledger's tombstones say were purged since
//! TIME, and reports per kind how many had come back and how many rows, files, object-store
//! objects (keys and versions) and http deletes were removed again.
//!
//! Invariant: it is idempotent (target deletes of missing rows and files are no-ops), changes no ledger
//! state (tombstones stay tombstones, no second purge receipt), and audits what it removed:
//! `resource.reapplied` / `account.reapplied` for each item that had come back, and one
//! `purges.reapplied` summary. Anything an active legal hold now covers is skipped and listed:
//! restored data under a hold is evidence, and a person decides about it. Each batch runs inside
//! a purge transaction (the hold lock, shared), so a hold placed meanwhile is honoured exactly as
//! by a sweep (Invariant H). A dry run executes each SQL purge in a transaction it rolls back and
//! counts the files that exist: it reports what a real run would remove and changes nothing. An
//! http target is sent no request at all in a dry run (a request may delete), so it cannot know:
//! its items are reported as not checked, never as "nothing came back".

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::audit::AuditDraft;
use crate::config::Config;
use crate::holds::HoldSet;
use crate::model::Timestamp;
use crate::store::{AccountRow, Ledger, PurgeTx, ResourceRow, StoreError};
use crate::targets::{ItemResult, PurgeItem, Removed, Targets};

#[derive(Debug, Clone)]
pub struct ReapplyOptions {
    pub since: Timestamp,
    /// Only this target (must be configured).
    pub target: Option<String>,
    pub dry_run: bool,
    /// Who runs it (audited).
    pub by: String,
}

/// Per kind (and `account`): what was checked and what had come back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// Tombstones whose targets were re-run.
    pub checked: u64,
    /// Of those, how many had something back (rows, files, objects or, for an http target,
    /// a delete the service answered as done).
    pub came_back: u64,
    pub rows: u64,
    pub files: u64,
    /// Object-store keys and versions removed (or that would be).
    pub objects: u64,
    /// Deletes an http service answered as done (a real run only: a dry run sends none).
    pub requests: u64,
}

/// Something reapply did not touch, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// `kind/id` or `account/id`.
    pub subject: String,
    /// Active holds that cover it (empty when skipped for another reason).
    pub holds: Vec<i64>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub subject: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReapplyReport {
    pub since: Timestamp,
    pub dry_run: bool,
    /// The targets re-run.
    pub targets: Vec<String>,
    /// Per kind, plus `account` for account-level targets.
    pub kinds: BTreeMap<String, KindCounts>,
    /// Rows, files, objects and requests removed again (or, in a dry run, that would be).
    pub removed: Removed,
    /// Items that had come back.
    pub came_back: u64,
    /// Kept by an active legal hold, or not re-run for another reason.
    pub skipped: Vec<Skipped>,
    /// Target failures: the data may still be there; run again.
    pub failed: Vec<Failed>,
    /// Dry run only: per target that cannot look without acting (http: any request may
    /// delete), the items it was not asked about. Whether their data came back there is unknown;
    /// they are not counted in `came_back`. A real run sends one request for each.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_checked: BTreeMap<String, u64>,
    /// Set when tombstones purged on `since`'s UTC day or later were compacted into counts
    /// (`[ledger] tombstone_retention`): the end of the last such day. Their purges cannot be
    /// re-run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted_before: Option<Timestamp>,
    /// How many tombstones those are (the ledger's `tombstone_counts`, as the chain proves).
    #[serde(skip_serializing_if = "is_zero")]
    pub compacted_tombstones: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReapplyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the targets did for one item.
#[derive(Default)]
struct Outcome {
    removed: Vec<(String, Removed)>,
    error: Option<String>,
}

impl Outcome {
    fn total(&self) -> Removed {
        let mut t = Removed::default();
        for (_, r) in &self.removed {
            t += *r;
        }
        t
    }
    fn record(&mut self, target: &str, r: ItemResult) {
        match r {
            Ok(x) => self.removed.push((target.to_string(), x)),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
}

struct Run<'a> {
    ledger: &'a Ledger,
    config: &'a Config,
    targets: &'a Targets,
    opts: &'a ReapplyOptions,
    now: Timestamp,
    report: ReapplyReport,
}

/// Runs a reapply. `now` dates the audit entries.
pub async fn reapply(
    ledger: &Ledger,
    config: &Config,
    targets: &Targets,
    opts: &ReapplyOptions,
    now: Timestamp,
) -> Result<ReapplyReport, ReapplyError> {
    let mut used: Vec<String> = config.targets.keys().cloned().collect();
    if let Some(t) = &opts.target {
        if targets.get(t).is_none() {
            return Err(ReapplyError::Invalid(format!(
                "--target: unknown target `{t}` (configured: {})",
                used.join(", ")
            )));
        }
        used = vec![t.clone()];
    }
    if opts.since > now {
        return Err(ReapplyError::Invalid(format!(
            "--since {} is in the future",
            opts.since
        )));
    }
    let mut run = Run {
        ledger,
        config,
        targets,
        opts,
        now,
        report: ReapplyReport {
            since: opts.since,
            dry_run: opts.dry_run,
            targets: used,
            kinds: BTreeMap::new(),
            removed: Removed::default(),
            came_back: 0,
            skipped: Vec::new(),
            failed: Vec::new(),
            not_checked: BTreeMap::new(),
            compacted_before: None,
            compacted_tombstones: 0,
        },
    };
    // What was compacted, not what the current retention says: it may have been longer then.
    let (compacted_before, compacted) = ledger.compacted_since(opts.since).await?;
    if let Some(before) = compacted_before {
        warn!(since = %opts.since, compacted_before = %before, compacted_tombstones = compacted,
            tombstone_retention = %config.tombstone_retention,
            "reapply reaches back into compacted tombstones ([ledger] tombstone_retention): their purges cannot be re-run");
        run.report.compacted_before = Some(before);
        run.report.compacted_tombstones = compacted;
    }
    let batch = config.scheduler.batch_size as i64;
    let mut cursor = (Timestamp::from_millis(i64::MIN), String::new());
    loop {
        let page = ledger
            .purged_since(opts.since, (cursor.0, &cursor.1), batch)
            .await?;
        let Some(last) = page.last() else { break };
        cursor = (last.purged_at.unwrap_or(opts.since), last.id.clone());
        run.resources(page).await?;
    }
    let mut cursor = (Timestamp::from_millis(i64::MIN), String::new());
    loop {
        let page = ledger
            .purged_accounts_since(opts.since, (cursor.0, &cursor.1), batch)
            .await?;
        let Some(last) = page.last() else { break };
        cursor = (last.purged_at.unwrap_or(opts.since), last.id.clone());
        run.accounts(page).await?;
    }
    let report = run.report;
    if !opts.dry_run {
        let tx = ledger.begin().await?;
        tx.commit_with_audit(&[AuditDraft::new(
            now,
            "purges.reapplied",
            "reapply",
            json!({
                "since": report.since, "by": opts.by, "targets": report.targets,
                "kinds": report.kinds, "rows": report.removed.rows, "files": report.removed.files,
                "objects": report.removed.objects, "requests": report.removed.requests,
                "came_back": report.came_back, "skipped": report.skipped.len(), "failed": report.failed.len(),
            }),
        )])
        .await?;
    }
    info!(
        since = %report.since, dry_run = report.dry_run, targets = %report.targets.join(","),
        came_back = report.came_back, rows = report.removed.rows, files = report.removed.files,
        objects = report.removed.objects, requests = report.removed.requests,
        skipped = report.skipped.len(), failed = report.failed.len(),
        "reapply finished"
    );
    Ok(report)
}

impl Run<'_> {
    fn wanted(&self, target: &str) -> bool {
        self.opts.target.as_deref().is_none_or(|t| t == target)
    }

    /// A purge transaction (hold lock shared) for a real run; none for a dry run.
    async fn begin(&self) -> Result<(Option<PurgeTx>, HoldSet), StoreError> {
        if self.opts.dry_run {
            return Ok((None, HoldSet::new(self.ledger.active_holds().await?)));
        }
        let mut tx = self.ledger.begin_purge().await?;
        let holds = HoldSet::new(tx.active_holds().await?);
        Ok((Some(tx), holds))
    }

    async fn resources(&mut self, page: Vec<ResourceRow>) -> Result<(), StoreError> {
        let (tx, holds) = self.begin().await?;
        let mut by_kind: BTreeMap<String, Vec<ResourceRow>> = BTreeMap::new();
        for r in page {
            let blocking: Vec<i64> = holds
                .matching(&r.hold_subject())
                .iter()
                .map(|h| h.id)
                .collect();
            if !blocking.is_empty() {
                warn!(kind = %r.kind, id = %r.id, account = %r.account, holds = ?blocking, "reapply skipped: under an active legal hold");
                self.report.skipped.push(Skipped {
                    subject: format!("{}/{}", r.kind, r.id),
                    holds: blocking,
                    reason: "under an active legal hold".into(),
                });
                continue;
            }
            by_kind.entry(r.kind.clone()).or_default().push(r);
        }
        let mut drafts = Vec::new();
        for (kind, rows) in by_kind {
            let Some(kind_cfg) = self.config.kinds.get(&kind) else {
                for r in &rows {
                    self.report.skipped.push(Skipped {
                        subject: format!("{kind}/{}", r.id),
                        holds: Vec::new(),
                        reason: format!("kind `{kind}` is no longer configured"),
                    });
                }
                continue;
            };
            let names: Vec<&String> = kind_cfg.targets.iter().filter(|t| self.wanted(t)).collect();
            if names.is_empty() {
                continue;
            }
            let items: Vec<PurgeItem> = rows
                .iter()
                .map(|r| PurgeItem {
                    kind: kind.clone(),
                    ..r.purge_item()
                })
                .collect();
            let mut outcomes: Vec<Outcome> = items.iter().map(|_| Outcome::default()).collect();
            for name in names {
                let results = match self.targets.get(name) {
                    None => items
                        .iter()
                        .map(|_| Err(format!("target `{name}` is not configured")))
                        .collect(),
                    Some(t) if self.opts.dry_run => {
                        if t.probe_is_blind() {
                            *self.report.not_checked.entry(name.clone()).or_default() +=
                                items.len() as u64;
                        }
                        t.probe(&kind, &items).await
                    }
                    Some(t) => t.purge(&kind, &items).await,
                };
                for (o, r) in outcomes.iter_mut().zip(results) {
                    o.record(name, r);
                }
            }
            for (r, o) in rows.iter().zip(&outcomes) {
                let subject = format!("{kind}/{}", r.id);
                if let Some(d) = self.tally(&kind, &subject, &r.account, o) {
                    drafts.push(d);
                }
            }
        }
        if let Some(tx) = tx {
            tx.commit_with_audit(&drafts).await?;
        }
        Ok(())
    }

    async fn accounts(&mut self, page: Vec<AccountRow>) -> Result<(), StoreError> {
        let names: Vec<String> = self
            .config
            .account_targets
            .iter()
            .filter(|t| self.wanted(t))
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let (tx, holds) = self.begin().await?;
        let mut drafts = Vec::new();
        for a in page {
            let subject = format!("account/{}", a.id);
            let blocking: Vec<i64> = holds
                .blocking_account(&a.id, &a.org)
                .iter()
                .map(|h| h.id)
                .collect();
            if !blocking.is_empty() {
                warn!(account = %a.id, holds = ?blocking, "reapply skipped: account under an active legal hold");
                self.report.skipped.push(Skipped {
                    subject,
                    holds: blocking,
                    reason: "under an active legal hold".into(),
                });
                continue;
            }
            let mut o = Outcome::default();
            for name in &names {
                let r = match self.targets.get(name) {
                    None => Err(format!("target `{name}` is not configured")),
                    Some(t) if self.opts.dry_run => {
                        if t.probe_is_blind() {
                            *self.report.not_checked.entry(name.clone()).or_default() += 1;
                        }
                        t.probe_account(&a.id, &a.org).await
                    }
                    Some(t) => t.purge_account(&a.id, &a.org).await,
                };
                o.record(name, r);
            }
            if let Some(d) = self.tally("account", &subject, &a.id, &o) {
                drafts.push(d);
            }
        }
        if let Some(tx) = tx {
            tx.commit_with_audit(&drafts).await?;
        }
        Ok(())
    }

    /// Counts one item's outcome; returns its audit entry if something had come back.
    fn tally(
        &mut self,
        kind: &str,
        subject: &str,
        account: &str,
        o: &Outcome,
    ) -> Option<AuditDraft> {
        let counts = self.report.kinds.entry(kind.to_string()).or_default();
        counts.checked += 1;
        let total = o.total();
        counts.rows += total.rows;
        counts.files += total.files;
        counts.objects += total.objects;
        counts.requests += total.requests;
        self.report.removed += total;
        if let Some(e) = &o.error {
            warn!(subject = %subject, error = %e, "reapply failed for this item; run reapply again");
            self.report.failed.push(Failed {
                subject: subject.to_string(),
                error: e.clone(),
            });
        }
        if total.total() == 0 {
            return None;
        }
        counts.came_back += 1;
        self.report.came_back += 1;
        let targets: Vec<String> = o.removed.iter().map(|(t, x)| format!("{t}:{x}")).collect();
        if self.opts.dry_run {
            info!(subject = %subject, account = %account, targets = %targets.join(","), "reapply (dry run): erased data is back and would be removed");
            return None;
        }
        info!(subject = %subject, account = %account, targets = %targets.join(","), rows = total.rows, files = total.files, objects = total.objects, requests = total.requests, "reapply: erased data had come back; removed again");
        Some(AuditDraft::new(
            self.now,
            if kind == "account" {
                "account.reapplied"
            } else {
                "resource.reapplied"
            },
            subject.to_string(),
            json!({
                "account": account, "since": self.opts.since, "by": self.opts.by,
                "targets": o.removed.iter().map(|(t, x)| x.json_for(t)).collect::<Vec<_>>(),
                "error": o.error,
            }),
        ))
    }
}

/// `--since`: an RFC 3339 time, or a duration meaning that long before `now`.
pub fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    match crate::model::Span::parse(s) {
        Ok(span) => Ok(now.minus(span)),
        Err(_) => Err(format!(
            "--since `{s}` is neither an RFC 3339 time (2026-11-27T00:00:00Z) nor a duration (7d)"
        )),
    }
}

/// `3 row(s), 1 file(s)`, then `2 object(s)` and `1 request(s)` when there are any (SQL and
/// files reports read as they always did).
fn amounts(r: &Removed) -> String {
    let mut s = format!("{} row(s), {} file(s)", r.rows, r.files);
    if r.objects > 0 {
        s.push_str(&format!(", {} object(s)", r.objects));
    }
    if r.requests > 0 {
        s.push_str(&format!(", {} request(s)", r.requests));
    }
    s
}

/// The report as text.
pub fn describe(r: &ReapplyReport) -> String {
    let mut s = format!(
        "reapply{} since {} (targets {}):\n",
        if r.dry_run { " --dry-run" } else { "" },
        r.since,
        r.targets.join(", ")
    );
    for (kind, c) in &r.kinds {
        s.push_str(&format!(
            "  {kind:<14} {} checked, {} had come back: {} {}\n",
            c.checked,
            c.came_back,
            amounts(&Removed {
                rows: c.rows,
                files: c.files,
                objects: c.objects,
                requests: c.requests,
            }),
            if r.dry_run {
                "would be removed"
            } else {
                "removed again"
            }
        ));
    }
    if r.kinds.is_empty() {
        s.push_str("  nothing was purged since then\n");
    }
    for k in &r.skipped {
        s.push_str(&format!(
            "  skipped {}: {}{}\n",
            k.subject,
            k.reason,
            if k.holds.is_empty() {
                String::new()
            } else {
                format!(" (holds {:?})", k.holds)
            }
        ));
    }
    for f in &r.failed {
        s.push_str(&format!("  FAILED {}: {}\n", f.subject, f.error));
    }
    if let Some(c) = r.compacted_before {
        s.push_str(&format!(
            "  note: {} tombstone(s) purged from {}'s day to {c} were compacted into counts ([ledger] tombstone_retention): their purges cannot be re-run\n",
            r.compacted_tombstones, r.since
        ));
    }
    for (t, n) in &r.not_checked {
        s.push_str(&format!(
            "  not checked: {n} item(s) on target {t}: a dry run sends it no request, so whether their data came back there is unknown (a real run sends one request each)\n"
        ));
    }
    s.push_str(&if r.came_back == 0 && !r.not_checked.is_empty() {
        "nothing had come back to the targets a dry run can check".to_string()
    } else if r.came_back == 0 {
        "nothing had come back".to_string()
    } else {
        format!(
            "{} item(s) had come back; {} {}",
            r.came_back,
            amounts(&r.removed),
            if r.dry_run {
                "would be removed (nothing was changed)"
            } else {
                "removed again"
            }
        )
    });
    s
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
