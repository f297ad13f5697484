//! The application core: every interface (the CLI, the HTTP API, the test harness) performs
//! ingest, audit verification, audit export and `policy accept` through one [`App`] method, so
//! they cannot disagree on which policy schedules an ingested event, which key a verification
//! trusts, or which policy an accept applies. The interfaces only parse their input and render
//! the answer.
//!
//! The read views (status, a resource, an account, an org, holds) and the hold, retry and
//! reapply actions go through it too, so the time they are judged at and the config they follow
//! (`holds.release_approvals`, the targets) come from one place.
//!
//! An [`App`] is the ledger, the config in force and the clock. The CLI opens one per command
//! ([`App::open`] to write, [`App::open_read`] to read); the HTTP API builds one per request
//! ([`App::from_parts`]) from the config in force, which a reload swaps; the daemon's outbox
//! pollers ingest through the daemon's.
//!
//! The rules kept here:
//! - **Ingest** schedules by the policy the ledger has in force (R10), the config's only while
//!   the ledger has none yet ([`App::ingest_policy`]).
//! - **Audit verify** trusts `--public-key` when given; else, with checkpoint files, the public
//!   half of `audit.signing_key_file` when it loads; else only the key named in each checkpoint.
//!   A given key with neither files nor a stored checkpoint it signed verifies nothing, so the
//!   verification fails saying so.
//! - **Policy accept** applies the pending change if one is held back, else the config's policy,
//!   then every org window change waiting for it.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::admin::{
    self, AdminError, HoldDetail, HoldPlaced, OrgRetention, PlaceHold, ReleaseOutcome, Requeued,
    ZdrAction, ZdrDecision,
};
use crate::audit::{AuditEntry, ChainBreak, Verified};
use crate::checkpoint::{self, CheckpointError, Taken, Trust};
use crate::clock::Clock;
use crate::config::Config;
use crate::events::Event;
use crate::ids::OrgId;
use crate::ingest::{self, IngestContext, IngestError, IngestReport};
use crate::model::{Plan, Span};
use crate::policy::{self, SyncReport};
use crate::reapply::{self, ReapplyError, ReapplyOptions, ReapplyReport};
use crate::report::{self, AccountView, Forecast, OrgView, Receipt, ResourceView, Status};
use crate::rules::SchedulePolicy;
use crate::store::{
    AuditHead, HoldRow, Ledger, NotificationRow, OpenOptions, OrgWindowRow, PendingOrgWindow,
    StoreError,
};
use crate::sweep::{SweepError, Sweeper, instance_id};
use crate::targets::Targets;

/// Why an [`App`] operation failed.
#[derive(Debug, Error)]
pub enum AppError {
    /// Bad input (an unreadable public key or checkpoint file): nothing was checked or changed.
    #[error("{0}")]
    Invalid(String),
    /// An admin operation refused the request, or met a ledger error.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The ledger could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing an export failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Reading a windowed kind's table (a forecast, an org window's newly due rows) failed.
    #[error(transparent)]
    Sweep(#[from] SweepError),
}

/// The ledger, the config in force and the clock: what every operation runs with.
#[derive(Clone)]
pub struct App {
    ledger: Ledger,
    config: Arc<Config>,
    clock: Clock,
}

/// `audit verify`'s answer, with what it was checked against (for rendering).
#[derive(Debug)]
pub struct AuditVerification {
    pub verified: Verified,
    pub trust: Trust,
    /// How many checkpoint files were read.
    pub files: usize,
}

/// `policy show`: the policy in force and the change held back by `safety.max_newly_due`.
#[derive(Debug, serde::Serialize)]
pub struct PolicyState {
    pub in_force: Option<SchedulePolicy>,
    pub pending: Option<SchedulePolicy>,
    /// Per kind, how many items the pending change would make due within a day.
    pub pending_newly_due: Option<std::collections::BTreeMap<String, u64>>,
}

/// `org retention ORG --kind K` without a change: the window an org's rows of a windowed kind
/// are kept for.
#[derive(Debug)]
pub struct OrgRetentionView {
    /// The org's own max_age in force; `None`: the kind's.
    pub own: Option<Span>,
    /// The max_age in force for the org's rows.
    pub effective: Span,
    /// The kind's max_age.
    pub kind_max_age: Span,
    /// A change held back by `safety.max_newly_due`.
    pub pending: Option<PendingOrgWindow>,
}

/// `policy accept`'s answer: the policy sync and the org window changes applied.
#[derive(Debug)]
pub struct PolicyAccepted {
    pub report: SyncReport,
    pub org_retention: Vec<OrgRetention>,
}

impl App {
    /// Opens the ledger for writing (creating it when missing) and applies pending migrations.
    /// The policy is not synced: see [`App::sync_policy`].
    pub async fn open(config: Arc<Config>, clock: Clock) -> Result<App, AppError> {
        let ledger = Ledger::open(
            &config.database.url,
            &OpenOptions {
                max_connections: config.database.max_connections.unwrap_or(
                    if config.database.url.is_postgres() {
                        8
                    } else {
                        4
                    },
                ),
                create: true,
                background_checkpoint: true,
            },
        )
        .await?;
        ledger.migrate().await?;
        Ok(App::from_parts(ledger, config, clock))
    }

    /// Opens an existing ledger for a read command. It is not created when missing (a typo in
    /// the URL must not show an empty ledger), but pending migrations are applied, so a ledger
    /// written by an older version stays readable; where that is not allowed (a read-only
    /// database user), the read goes on and names any missing table in its error.
    pub async fn open_read(config: Arc<Config>, clock: Clock) -> Result<App, AppError> {
        let ledger = Ledger::open(
            &config.database.url,
            &OpenOptions {
                max_connections: 2,
                create: false,
                background_checkpoint: false,
            },
        )
        .await?;
        if let Err(e) = ledger.migrate().await {
            tracing::debug!(error = %e, "read command could not migrate the ledger");
        }
        Ok(App::from_parts(ledger, config, clock))
    }

    /// An app over a ledger already open (the daemon's, a test's).
    pub fn from_parts(ledger: Ledger, config: Arc<Config>, clock: Clock) -> App {
        App {
            ledger,
            config,
            clock,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Brings the ledger's policy in line with the config (R10), recorded as by `actor`;
    /// returns the policy in force after it.
    pub async fn sync_policy(&self, actor: &str) -> Result<SchedulePolicy, StoreError> {
        let (in_force, _) = policy::sync(
            &self.ledger,
            &self.config.policy,
            self.clock.now(),
            self.config.max_newly_due,
            false,
            actor,
        )
        .await?;
        Ok(in_force)
    }

    /// The policy ingest schedules by: the ledger's in force, the config's while it has none.
    pub async fn ingest_policy(&self) -> Result<SchedulePolicy, StoreError> {
        Ok(policy::in_force(&self.ledger)
            .await?
            .unwrap_or_else(|| self.config.policy.clone()))
    }

    fn ingest_context<'a>(&'a self, policy: &'a SchedulePolicy) -> IngestContext<'a> {
        IngestContext {
            policy,
            now: self.clock.now(),
            max_clock_skew: self.config.max_clock_skew,
            dedup_window: self.config.dedup_window,
            keep_attrs: &self.config.target_attrs,
        }
    }

    /// Applies NDJSON events from `input`, all or nothing.
    pub async fn ingest_reader(&self, input: impl BufRead) -> Result<IngestReport, IngestError> {
        let policy = self.ingest_policy().await?;
        ingest::ingest_reader(&self.ledger, &self.ingest_context(&policy), input).await
    }

    /// Applies events already parsed, all or nothing.
    pub async fn ingest_events(&self, events: &[Event]) -> Result<IngestReport, IngestError> {
        let policy = self.ingest_policy().await?;
        ingest::ingest_events(&self.ledger, &self.ingest_context(&policy), events).await
    }

    /// `org set` / `PUT /v1/orgs/{id}`: an `org.upsert` ingested by the ingest policy.
    pub async fn set_org(
        &self,
        id: &OrgId,
        plan: Option<Plan>,
        training_opt_out: Option<bool>,
    ) -> Result<OrgView, AdminError> {
        let policy = self.ingest_policy().await?;
        admin::set_org(
            &self.ledger,
            &self.ingest_context(&policy),
            id,
            plan,
            training_opt_out,
        )
        .await
    }

    /// A ZDR request or decision, rescheduled by the ingest policy; `via` is the API token.
    pub async fn zdr(
        &self,
        org: &str,
        action: ZdrAction,
        by: &str,
        reason: Option<&str>,
        via: Option<&str>,
    ) -> Result<ZdrDecision, AdminError> {
        let policy = self.ingest_policy().await?;
        admin::zdr_via(
            &self.ledger,
            &policy,
            org,
            action,
            by,
            reason,
            via,
            self.clock.now(),
        )
        .await
    }

    /// `audit verify`: the chain against the stored checkpoints and the checkpoint `files`
    /// (files or folders), signatures checked against the key the trust rule picks (module
    /// doc). `public_key` is 64 hex digits or a file.
    pub async fn verify_audit(
        &self,
        files: &[PathBuf],
        public_key: Option<&str>,
    ) -> Result<AuditVerification, AppError> {
        let given = public_key
            .map(checkpoint::parse_public_key)
            .transpose()
            .map_err(AppError::Invalid)?;
        let files = checkpoint::read_files(files).map_err(AppError::Invalid)?;
        let trust = match given {
            Some(k) => Trust::Given(k),
            None => match self.config.audit.signing_key_file.as_deref() {
                Some(p) if !files.is_empty() => checkpoint::load_key(p)
                    .map(|k| Trust::Configured(k.verifying_key()))
                    .unwrap_or(Trust::Embedded),
                _ => Trust::Embedded,
            },
        };
        let (anchors, problems) = checkpoint::anchors(&self.ledger, &files, &trust).await?;
        let mut v = checkpoint::verify_anchored(&self.ledger, anchors, problems).await?;
        if v.ok
            && files.is_empty()
            && matches!(trust, Trust::Given(_))
            && v.trusted_checkpoints == 0
        {
            v.ok = false;
            v.error = Some(ChainBreak {
                seq: 0,
                problem: format!(
                    "no checkpoint signed by {} is stored in the ledger, so nothing ties the chain to that key; verify against a checkpoint file (--checkpoint)",
                    trust.describe()
                ),
            });
        }
        Ok(AuditVerification {
            verified: v,
            trust,
            files: files.len(),
        })
    }

    /// `audit export`: hands every entry from seq `since` to `until` (inclusive; the head when
    /// `None`) to `each`, in order, reading the ledger a page at a time.
    pub async fn export_audit(
        &self,
        since: i64,
        until: Option<i64>,
        mut each: impl FnMut(&AuditEntry) -> std::io::Result<()>,
    ) -> Result<(), AppError> {
        const PAGE: i64 = 10_000;
        let until = until.unwrap_or(i64::MAX);
        let mut next = since;
        loop {
            let page = self.ledger.audit_range(next, until, PAGE).await?;
            let Some(last) = page.last() else { break };
            next = last.seq + 1;
            for e in &page {
                each(e)?;
            }
        }
        Ok(())
    }

    /// `policy accept`: applies the change held back by `safety.max_newly_due` (the config's
    /// policy when none is pending), then the org window changes waiting for it.
    pub async fn accept_policy(&self, by: &str) -> Result<PolicyAccepted, AppError> {
        let wanted = policy::pending(&self.ledger)
            .await?
            .unwrap_or_else(|| self.config.policy.clone());
        let (_, report) = policy::sync(
            &self.ledger,
            &wanted,
            self.clock.now(),
            self.config.max_newly_due,
            true,
            by,
        )
        .await?;
        let org_retention =
            admin::accept_org_retention(&self.ledger, &self.config, by, self.clock.now()).await?;
        Ok(PolicyAccepted {
            report,
            org_retention,
        })
    }

    /// A sweeper over the config's targets, as a fresh instance (`sweep --once`, dry runs,
    /// window forecasts). A target the config cannot build is named in the error.
    pub fn sweeper(&self) -> Result<Sweeper, String> {
        let targets = Targets::from_config(&self.config)?;
        Ok(Sweeper::new(
            self.ledger.clone(),
            Arc::new(targets),
            self.config.clone(),
            self.clock.clone(),
            instance_id(),
        ))
    }

    /// `status`: counts, backlog, holds, failures, last sweeps, now.
    pub async fn status(&self) -> Result<Status, StoreError> {
        report::status(&self.ledger, self.clock.now()).await
    }

    /// `resource show`; `None` for an unknown resource.
    pub async fn resource(&self, id: &str) -> Result<Option<ResourceView>, StoreError> {
        report::resource(&self.ledger, id).await
    }

    /// `account show`; `None` for an unknown account.
    pub async fn account(&self, id: &str) -> Result<Option<AccountView>, StoreError> {
        report::account(&self.ledger, id).await
    }

    /// `org show`; `None` for an unknown org.
    pub async fn org(&self, id: &str) -> Result<Option<OrgView>, StoreError> {
        report::org(&self.ledger, id).await
    }

    /// `hold list`: every hold, or only the active ones.
    pub async fn holds(&self, active_only: bool) -> Result<Vec<HoldRow>, StoreError> {
        self.ledger.holds(active_only).await
    }

    /// `hold show`: the hold with what it matches now; `None` for an unknown hold.
    pub async fn hold(&self, id: i64) -> Result<Option<HoldDetail>, AdminError> {
        if self.ledger.hold(id).await?.is_none() {
            return Ok(None);
        }
        admin::hold_detail(&self.ledger, id).await.map(Some)
    }

    /// `hold place` / `POST /v1/holds`, now; `via` is the API token's name.
    pub async fn place_hold(
        &self,
        req: PlaceHold,
        via: Option<&str>,
    ) -> Result<HoldPlaced, AdminError> {
        admin::place_hold_via(&self.ledger, req, via, self.clock.now()).await
    }

    /// One person's ask to release hold `id`, released once `holds.release_approvals` people
    /// have asked; `via` is the API token's name.
    pub async fn release_hold(
        &self,
        id: i64,
        by: &str,
        via: Option<&str>,
    ) -> Result<ReleaseOutcome, AdminError> {
        admin::ask_release(
            &self.ledger,
            id,
            by,
            via,
            self.config.release_approvals,
            self.clock.now(),
        )
        .await
    }

    /// `retry`: re-queues failed resources (all of them when `ids` is empty).
    pub async fn retry(&self, ids: &[String], by: &str) -> Result<Requeued, AdminError> {
        admin::retry(&self.ledger, ids, by, self.clock.now()).await
    }

    /// `reapply`: re-runs, through the config's targets, the purges done since `opts.since`.
    pub async fn reapply(&self, opts: &ReapplyOptions) -> Result<ReapplyReport, ReapplyError> {
        let targets = Targets::from_config(&self.config).map_err(ReapplyError::Invalid)?;
        reapply::reapply(&self.ledger, &self.config, &targets, opts, self.clock.now()).await
    }

    /// `plan`: purges per day until `now + until`, and what the active holds keep back; the
    /// windowed kinds are forecast from their tables.
    pub async fn plan(&self, until: Span) -> Result<Forecast, AppError> {
        let now = self.clock.now();
        let windowed = if self.config.kinds.values().any(|k| !k.tracking.is_item()) {
            self.sweeper()
                .map_err(AppError::Invalid)?
                .forecast_windows(now, now.plus(until))
                .await?
        } else {
            Vec::new()
        };
        Ok(report::plan(&self.ledger, now, until, windowed).await?)
    }

    /// `policy show`: the policy in force and the change held back, if any.
    pub async fn policy_state(&self) -> Result<PolicyState, StoreError> {
        Ok(PolicyState {
            in_force: policy::in_force(&self.ledger).await?,
            pending: policy::pending(&self.ledger).await?,
            pending_newly_due: policy::pending_newly_due(&self.ledger).await?,
        })
    }

    /// `notify list`: the newest `limit` notifications, or only the dead-lettered ones.
    pub async fn notifications(
        &self,
        dead_only: bool,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        self.ledger.notifications(dead_only, limit).await
    }

    /// `notify retry`: re-queues the dead-lettered notifications `ids` (all of them when empty)
    /// of every configured receiver, or of `receiver` only; returns the ids re-queued. An id
    /// that is not a dead-lettered notification of such a receiver fails the call (the others
    /// are re-queued all the same, and the message says so).
    pub async fn requeue_notifications(
        &self,
        ids: &[String],
        receiver: Option<&str>,
    ) -> Result<Vec<String>, AppError> {
        let now = self.clock.now();
        let mut requeued = Vec::new();
        for (name, cfg) in &self.config.notify {
            if receiver.is_some_and(|r| r != name) {
                continue;
            }
            requeued.extend(
                self.ledger
                    .requeue_notifications(name, ids, now, now.plus(cfg.max_age))
                    .await?,
            );
        }
        if let Some(missing) = ids.iter().find(|id| !requeued.contains(id)) {
            return Err(AppError::Invalid(format!(
                "`{missing}` is not a dead-lettered notification of a configured receiver (see `retentiond notify list --failed`){}",
                if requeued.is_empty() {
                    ""
                } else {
                    "; the others were re-queued"
                }
            )));
        }
        tracing::info!(
            requeued = requeued.len(),
            "dead-lettered notifications re-queued"
        );
        Ok(requeued)
    }

    /// The windows of windowed kinds set for `org` (every org's when `None`).
    pub async fn org_windows(&self, org: Option<&str>) -> Result<Vec<OrgWindowRow>, StoreError> {
        self.ledger.org_window_rows(org).await
    }

    /// `org retention ORG --kind K`: how long the org's rows of windowed kind `kind` are kept.
    pub async fn org_retention(&self, org: &str, kind: &str) -> Result<OrgRetentionView, AppError> {
        let (effective, _) =
            admin::org_retention_windows(&self.ledger, &self.config, org, kind, None).await?;
        let row = self
            .ledger
            .org_window_rows(Some(org))
            .await?
            .into_iter()
            .find(|r| r.kind == kind);
        Ok(OrgRetentionView {
            own: row.as_ref().and_then(|r| r.max_age),
            effective,
            kind_max_age: self.kind_max_age(kind, effective),
            pending: row.and_then(|r| r.pending),
        })
    }

    /// `org retention ORG --kind K --max-age A | --clear`: sets (`None`: clears) the org's own
    /// window, held back for `policy accept` when it would make more than
    /// `safety.max_newly_due` rows due within a day.
    pub async fn set_org_retention(
        &self,
        org: &str,
        kind: &str,
        max_age: Option<Span>,
        by: &str,
    ) -> Result<OrgRetention, AppError> {
        let (old, new) =
            admin::org_retention_windows(&self.ledger, &self.config, org, kind, max_age).await?;
        let kind_age = self.kind_max_age(kind, old);
        let now = self.clock.now();
        let newly_due = self
            .sweeper()
            .map_err(AppError::Invalid)?
            .org_window_newly_due(kind, org, old, new, now)
            .await?;
        Ok(admin::set_org_retention(
            &self.ledger,
            kind_age,
            org,
            kind,
            max_age,
            newly_due,
            self.config.max_newly_due,
            by,
            now,
        )
        .await?)
    }

    /// A windowed kind's max_age (`fallback` only if it had none, which validation excludes).
    fn kind_max_age(&self, kind: &str, fallback: Span) -> Span {
        self.config
            .policy
            .kinds
            .get(kind)
            .and_then(|k| k.max_age)
            .unwrap_or(fallback)
    }

    /// `audit head`: the last entry's seq and hash; `None` while the log is empty.
    pub async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.ledger.audit_head().await
    }

    /// `audit receipt`: the proof of deletion of `account`; `None` for an unknown account.
    pub async fn receipt(&self, account: &str) -> Result<Option<Receipt>, StoreError> {
        report::receipt(&self.ledger, account).await
    }

    /// `audit checkpoint`: signs the audit head now with `audit.signing_key_file`, recorded as
    /// by `actor`.
    pub async fn checkpoint(&self, actor: &str) -> Result<Option<Taken>, CheckpointError> {
        checkpoint::take(
            &self.ledger,
            &self.config.audit,
            self.clock.now(),
            actor,
            false,
        )
        .await
    }
}
