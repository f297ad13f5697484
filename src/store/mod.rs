//! The ledger store: every durable fact retentiond keeps, in SQLite or PostgreSQL.
//!
//! Invariant: both backends behave alike, and the transaction types keep Invariant H (below):
//! only a [`PurgeTx`] records purges and only a [`HoldTx`] changes holds.
//!
//! # One implementation, two backends
//! The SQL lives once, in `ops.rs`, and is compiled twice — `sqlite.rs` and `postgres.rs` each
//! `include!` it with their own `Db` type and their [`Dialect`](dialect::Dialect): what each
//! does its own way (how writes begin and lock, the bulk writes of the hot paths, id lists, row
//! locks). Behaviour therefore cannot drift between the backends, while each keeps its native
//! types (`dialect.rs` says why this beats SQL generic over `sqlx::Database`). [`Ledger`] and [`LedgerTx`]
//! pick the backend once, from the URL scheme, and forward every operation. This file is that
//! facade; `rows` holds the row types and their decoding, `error` the errors.
//!
//! # Invariant H: holds are linearizable with purges
//! A purge runs its target deletes *inside* a ledger transaction that first takes the hold lock
//! in shared mode, re-reads the active holds, skips what they cover, deletes, and records the
//! purge; placing a hold takes the same lock exclusively, counts what is already purged, and
//! inserts the hold. The lock is the single `hold_epoch` row: `SELECT … FOR SHARE` / `FOR
//! UPDATE` on PostgreSQL; on SQLite every write transaction is `BEGIN IMMEDIATE`, which is
//! already exclusive. So a hold either commits before a purge's check (the purge sees it and
//! keeps the data) or waits until that purge has committed (and counts it as already purged).
//! The types keep each side in its lock: only a [`PurgeTx`] (begun with the lock held shared)
//! records purges, and only a [`HoldTx`] (begun with it held exclusively) places, releases or
//! unblocks holds; a plain [`LedgerTx`] does neither.
//! One purge transaction may run several target batches (`scheduler.batches_per_transaction`,
//! each recorded while the next one's targets run): the holds it read at its start are the
//! active ones until it commits, since no hold change can commit before it does.
//! Since issue 30 the span from reading the holds to the purge's commit is wider than one
//! transaction: a purge first records its batch as started (`claimed_batches.started_at`, in a
//! transaction of its own, committed before any target runs), so that a crash after its target
//! deletes leaves a durable trace. The hold lock therefore covers the whole span ([`PurgeGate`]):
//! on PostgreSQL the purge transaction takes `hold_epoch` `FOR SHARE` before the start is
//! recorded; on SQLite, whose write lock is exclusive, a pair of lock files beside the ledger
//! stands in for the row lock (`gate`). A hold placed afterwards finds exactly the started,
//! unrecorded resources it matches (`hold_in_flight`) and reports them as `in_flight`: their data
//! may be gone. Whoever takes such a claim over asks the targets what is left (`Target::remaining`)
//! before anything else touches it, and a held or no-longer-due resource becomes `purged` (gone
//! everywhere, receipt and all), stays as it was (intact), or becomes `interrupted` (partly gone,
//! or not knowable), never silently "kept" with data missing.
//! A sweep claims its next batch while the batch before runs its targets (§7 speed, issue 7;
//! see [`Ledger::claim_next_batch`]); until that batch is marked started, no target has touched
//! it, and a hold placed meanwhile does not count it as `in_flight`: its purge re-reads the holds.
//!
//! # Audit appends
//! Audit entries are appended by [`LedgerTx::commit_with_audit`], the last step of every write
//! transaction (a purge transaction also appends each batch's receipts as it records them,
//! [`LedgerTx::append_audit`]: on SQLite at once, on PostgreSQL kept for the commit); on
//! PostgreSQL the commit first takes a transaction-level advisory lock so concurrent
//! writers extend the chain one at a time, and since nothing locks rows after it, it cannot
//! take part in a deadlock.

// Column lists as macros so `concat!` can build whole statements at compile time (sqlx 0.9
// takes only `&'static str` SQL unless a string is explicitly asserted safe).
macro_rules! resource_columns {
    () => {
        "r.id, r.kind, r.account, a.org, r.created_at, r.endpoint, r.state, r.deleted_at, r.cause, r.purge_after, r.rule, r.held, r.lease_owner, r.lease_until, r.attempts, r.last_error, r.purged_at, r.claim_batch, r.target_attrs"
    };
}
/// The names of [`resource_columns!`] in a derived table, in the same order.
macro_rules! resource_names {
    () => {
        "id, kind, account, org, created_at, endpoint, state, deleted_at, cause, purge_after, rule, held, lease_owner, lease_until, attempts, last_error, purged_at, claim_batch, target_attrs"
    };
}
/// The columns `save_resources` writes, in bind order.
macro_rules! resource_upsert_columns {
    () => {
        "INSERT INTO resources (id, kind, account, created_at, endpoint, state, deleted_at, cause, purge_after, rule, \
         held, lease_owner, lease_until, attempts, last_error, purged_at, target_attrs) "
    };
}
/// What `save_resources` changes on a resource the ledger already has (both backends).
macro_rules! resource_upsert_conflict {
    () => {
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, deleted_at = excluded.deleted_at, \
         cause = excluded.cause, purge_after = excluded.purge_after, rule = excluded.rule, held = excluded.held, \
         lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, attempts = excluded.attempts, \
         last_error = excluded.last_error, purged_at = excluded.purged_at"
    };
}
/// The columns `save_accounts` writes, in bind order.
macro_rules! account_upsert_columns {
    () => {
        "INSERT INTO accounts (id, org, state, created_at, deletion_requested_at, purge_after, purged_at) "
    };
}
/// What `save_accounts` changes on an account the ledger already has (both backends).
macro_rules! account_upsert_conflict {
    () => {
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, deletion_requested_at = excluded.deletion_requested_at, \
         purge_after = excluded.purge_after, purged_at = excluded.purged_at"
    };
}
/// The columns `save_orgs` writes, in bind order.
macro_rules! org_upsert_columns {
    () => {
        "INSERT INTO orgs (id, plan, zdr, zdr_reason, zdr_by, zdr_at, created_at, updated_at, training_opt_out) "
    };
}
/// What `save_orgs` changes on an org the ledger already has (both backends).
macro_rules! org_upsert_conflict {
    () => {
        " ON CONFLICT (id) DO UPDATE SET plan = excluded.plan, zdr = excluded.zdr, zdr_reason = excluded.zdr_reason, \
         zdr_by = excluded.zdr_by, zdr_at = excluded.zdr_at, updated_at = excluded.updated_at, \
         training_opt_out = excluded.training_opt_out"
    };
}
macro_rules! account_columns {
    () => {
        "id, org, state, created_at, deletion_requested_at, purge_after, purged_at"
    };
}
macro_rules! org_columns {
    () => {
        "id, plan, zdr, zdr_reason, zdr_by, zdr_at, created_at, updated_at, training_opt_out"
    };
}
macro_rules! notification_columns {
    () => {
        "id, receiver, seq, event_type, body, created_at, expires_at, attempts, next_attempt_at, last_error, delivered_at, dead_at"
    };
}

macro_rules! hold_columns {
    () => {
        "id, case_ref, reason, placed_by, placed_at, org, account, resource, kind, created_from, created_to, released_at, released_by, placed_already_purged, placed_in_flight"
    };
}
/// Due and not known to be held: the predicate of the `resources_due` partial index. An
/// `interrupted` resource is due again once no hold keeps it (its purge then finishes).
macro_rules! due_predicate {
    () => {
        "r.state IN ('live', 'deleted', 'interrupted') AND r.held = 0 AND r.purge_after IS NOT NULL"
    };
}
/// A claimed resource whose target deletes may have started: its claim's batch was started, or
/// is gone (a recorded failure, a batch before issue 30), or it has none (a claim taken over
/// from a batch that had started). Such a resource is `in_flight` to a hold.
macro_rules! touched_predicate {
    () => {
        "r.state = 'purging' AND (r.claim_batch IS NULL OR NOT EXISTS (SELECT 1 FROM claimed_batches b \
         WHERE b.id = r.claim_batch AND b.started_at IS NULL))"
    };
}

mod dialect;
mod error;
mod gate;
mod postgres;
mod rows;
mod sqlite;

pub use error::{Result, StoreError};
pub use rows::*;
use rows::{
    RawAccount, RawAudit, RawCheckpoint, RawHold, RawNotification, RawOrg, RawResource, RawSweep,
    parse, ts,
};

use std::collections::HashSet;

use crate::audit::{AuditDraft, AuditEntry};
use crate::config::SecretUrl;
use crate::holds::{ActiveHold, HoldScope};
use crate::model::{Cause, Timestamp};

/// How the ledger database is opened.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub max_connections: u32,
    /// Create the SQLite file (and its folder) if missing.
    pub create: bool,
    /// SQLite: copy the WAL into the database file on a thread of its own while this ledger is
    /// open, rather than in the commits that fill it (writers; a read command has no use for it).
    pub background_checkpoint: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_connections: 4,
            create: true,
            background_checkpoint: true,
        }
    }
}

/// The ledger, on one of its backends.
#[derive(Debug, Clone)]
pub enum Ledger {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// What one chunk of an ingest changed, written together by [`LedgerTx::write_ingest`].
#[derive(Debug)]
pub struct IngestWrite {
    pub orgs: Vec<OrgRow>,
    pub accounts: Vec<AccountRow>,
    pub resources: Vec<ResourceRow>,
    /// Event ids applied, with each event's time, recorded so a replay is recognised (for
    /// `ingest.dedup_window` after that time).
    pub event_ids: Vec<(String, Timestamp)>,
    pub applied_at: Timestamp,
    /// Audit entries of the chunk, in order: appended now where the backend's write lock already
    /// orders writers (SQLite), else kept for [`LedgerTx::commit_with_audit`].
    pub audit: Vec<AuditDraft>,
}

impl IngestWrite {
    pub fn new(applied_at: Timestamp) -> Self {
        IngestWrite {
            orgs: Vec::new(),
            accounts: Vec::new(),
            resources: Vec::new(),
            event_ids: Vec::new(),
            applied_at,
            audit: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty()
            && self.accounts.is_empty()
            && self.resources.is_empty()
            && self.event_ids.is_empty()
            && self.audit.is_empty()
    }
}

/// A write transaction on the ledger. Dropped without commit, it rolls back.
#[derive(Debug)]
pub enum LedgerTx {
    Sqlite(sqlite::Tx),
    Postgres(postgres::Tx),
}

impl Ledger {
    /// Opens the ledger named by `url` (`sqlite:` or `postgres://`). Does not migrate.
    pub async fn open(url: &SecretUrl, opts: &OpenOptions) -> Result<Ledger> {
        if url.is_postgres() {
            Ok(Ledger::Postgres(postgres::Store::open(url, opts).await?))
        } else {
            Ok(Ledger::Sqlite(sqlite::Store::open(url, opts).await?))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Ledger::Sqlite(_) => "sqlite",
            Ledger::Postgres(_) => "postgres",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Ledger::Postgres(_))
    }
}

/// Forwards `async fn`s of [`Ledger`] (`&self`), [`LedgerTx`] (`&mut self`) and the typed
/// transactions around it ([`PurgeTx`], [`HoldTx`]: `inner`) to the backend.
macro_rules! forward {
    (inner $outer:ident; $( $(#[$m:meta])* fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl $outer {
            $(
                $(#[$m])*
                pub async fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret> {
                    match &mut self.0 {
                        LedgerTx::Sqlite(s) => s.$name($($arg),*).await,
                        LedgerTx::Postgres(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
    (ref $outer:ident; $( $(#[$m:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl $outer {
            $(
                $(#[$m])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    match self {
                        $outer::Sqlite(s) => s.$name($($arg),*).await,
                        $outer::Postgres(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
    (mut $outer:ident; $( $(#[$m:meta])* fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl $outer {
            $(
                $(#[$m])*
                pub async fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret> {
                    match self {
                        $outer::Sqlite(s) => s.$name($($arg),*).await,
                        $outer::Postgres(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

impl Ledger {
    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<LedgerTx> {
        Ok(match self {
            Ledger::Sqlite(s) => LedgerTx::Sqlite(s.begin().await?),
            Ledger::Postgres(s) => LedgerTx::Postgres(s.begin().await?),
        })
    }

    /// Starts a purge transaction: a write transaction holding the hold lock shared.
    pub async fn begin_purge(&self) -> Result<PurgeTx> {
        Ok(PurgeTx(match self {
            Ledger::Sqlite(s) => LedgerTx::Sqlite(s.begin_purge().await?),
            Ledger::Postgres(s) => LedgerTx::Postgres(s.begin_purge().await?),
        }))
    }

    /// Starts a purge transaction under `gate`, which holds the hold lock shared for it: the
    /// start of a purge, committed before its targets run (see [`PurgeGate`]).
    pub async fn begin_under(&self, gate: &PurgeGate) -> Result<PurgeTx> {
        let _held = gate;
        Ok(PurgeTx(self.begin().await?))
    }

    /// Claims the sweep's next batch while the purge transaction `purge` runs its targets. On
    /// SQLite inside `purge` (the one writer there), durable when it commits. On PostgreSQL in
    /// a transaction of its own, committed at once: `purge` then holds no row locks of the next
    /// batch, which another writer taking resource locks in its own order (ingest, another
    /// instance) could otherwise wait on while `purge` waits on it.
    pub async fn claim_next_batch(
        &self,
        purge: &mut LedgerTx,
        now: Timestamp,
        limit: i64,
        owner: &str,
        lease_until: Timestamp,
    ) -> Result<ClaimedBatch> {
        match self {
            Ledger::Sqlite(_) => purge.claim_next_batch(now, limit, owner, lease_until).await,
            Ledger::Postgres(s) => s.claim_next_batch(now, limit, owner, lease_until).await,
        }
    }

    /// Starts a hold change: a write transaction holding the hold lock exclusively.
    pub async fn begin_hold_change(&self) -> Result<HoldTx> {
        Ok(HoldTx(match self {
            Ledger::Sqlite(s) => LedgerTx::Sqlite(s.begin_hold_change().await?),
            Ledger::Postgres(s) => LedgerTx::Postgres(s.begin_hold_change().await?),
        }))
    }

    /// Takes the hold lock shared for a purge, before its start is recorded (see [`PurgeGate`]).
    pub async fn open_purge_gate(&self) -> Result<PurgeGate> {
        Ok(match self {
            Ledger::Sqlite(s) => PurgeGate::Sqlite(s.clone(), s.enter_gate().await?),
            Ledger::Postgres(s) => PurgeGate::Postgres(s.begin_purge().await?),
        })
    }
}

/// The hold lock held shared from before a purge records its start until its purge
/// transaction commits: no hold is placed or released meanwhile, so the holds read through it
/// stay the active ones, and a batch marked started in between (in a transaction of its own,
/// committed before any target runs) is `in_flight` to every later hold exactly when its target
/// deletes may have run. PostgreSQL: the purge transaction itself, holding `hold_epoch` `FOR
/// SHARE`. SQLite: the ledger's hold gate (see `gate`), kept by the purge transaction.
#[derive(Debug)]
pub enum PurgeGate {
    Sqlite(sqlite::Store, gate::HoldGateGuard),
    Postgres(postgres::Tx),
}

impl PurgeGate {
    pub async fn active_holds(&mut self) -> Result<Vec<ActiveHold>> {
        match self {
            PurgeGate::Sqlite(s, _) => s.active_holds().await,
            PurgeGate::Postgres(t) => t.active_holds().await,
        }
    }

    /// The purge transaction, still holding the gate until it ends.
    pub async fn begin_purge(self) -> Result<PurgeTx> {
        Ok(PurgeTx(match self {
            PurgeGate::Sqlite(s, guard) => LedgerTx::Sqlite(s.begin_behind_gate(guard).await?),
            PurgeGate::Postgres(t) => LedgerTx::Postgres(t),
        }))
    }
}

forward! { ref Ledger;
    /// Applies the embedded migrations.
    fn migrate(&self) -> ();
    /// The database's own clock (PostgreSQL), so instances with skewed clocks agree.
    fn db_now(&self) -> Option<Timestamp>;
    fn resource(&self, id: &str) -> Option<ResourceRow>;
    fn account(&self, id: &str) -> Option<AccountRow>;
    fn org(&self, id: &str) -> Option<OrgRow>;
    fn orgs(&self) -> Vec<OrgRow>;
    /// Orgs with ZDR approved or training opted out, by id.
    fn data_control_orgs(&self) -> Vec<OrgRow>;
    fn state_counts(&self) -> Vec<StateCount>;
    fn account_state_counts(&self) -> Vec<(String, i64)>;
    /// Resources of an account, all states.
    fn account_resources_all(&self, account: &str) -> Vec<ResourceRow>;
    /// Due and not (known to be) held: what the next sweep would claim.
    fn peek_due(&self, now: Timestamp, limit: i64) -> Vec<ResourceRow>;
    fn backlog(&self, now: Timestamp) -> i64;
    fn held_back(&self) -> i64;
    fn next_due(&self, now: Timestamp) -> Option<Timestamp>;
    /// The earliest `purge_after` of what is due now and not held (oldest overdue age).
    fn oldest_due(&self, now: Timestamp) -> Option<Timestamp>;
    /// A round trip to the ledger database (readiness).
    fn ping(&self) -> ();
    /// Scheduled resources due up to `until`, counted per UTC day, kind and held flag.
    fn forecast(&self, until: Timestamp) -> Vec<ForecastRow>;
    fn failed_resources(&self, limit: i64) -> Vec<ResourceRow>;
    /// Live and deleted resources scheduled up to `until`, in id order after `after`.
    fn scheduled_page(&self, until: Timestamp, after: &str, limit: i64) -> Vec<ResourceRow>;
    /// An org's ZDR-covered resources (rule R6) not yet purged.
    fn zdr_waiting(&self, org: &str) -> i64;
    fn holds(&self, active_only: bool) -> Vec<HoldRow>;
    fn hold(&self, id: i64) -> Option<HoldRow>;
    fn active_holds(&self) -> Vec<ActiveHold>;
    /// Resources a scope matches: (state, kind, count).
    fn count_matching(&self, scope: &HoldScope) -> Vec<StateCount>;
    fn audit_head(&self) -> Option<AuditHead>;
    fn audit_range(&self, from_seq: i64, to_seq: i64, limit: i64) -> Vec<AuditEntry>;
    fn audit_for_subjects(&self, subjects: &[String], action: &str) -> Vec<AuditEntry>;
    fn audit_since_time(&self, since: Timestamp, action: &str, after_seq: i64, limit: i64) -> Vec<AuditEntry>;
    /// Signed checkpoints of the audit chain after `after_seq`, in seq order.
    fn audit_checkpoints(&self, after_seq: i64, limit: i64) -> Vec<CheckpointRow>;
    /// When the newest signed checkpoint was taken (the checkpoint-staleness metric).
    fn last_checkpoint_at(&self) -> Option<Timestamp>;
    fn sweep_runs(&self) -> Vec<SweepRun>;
    fn policy_state(&self) -> Option<PolicyState>;
    /// Claims due work as a batch not started yet: stale claims first, then due resources,
    /// oldest first.
    fn claim_due(&self, now: Timestamp, limit: i64, owner: &str, lease_until: Timestamp) -> ClaimedBatch;
    /// Marks a claimed batch as started, in a transaction of its own (tests; the sweep starts
    /// its batches with the hold lock held, see `sweep`).
    fn start_claimed_batch(&self, batch: i64, at: Timestamp) -> ();
    /// The resources hold `hold`'s answer called `in_flight`, and how each ended.
    fn hold_in_flight(&self, hold: i64) -> Vec<InFlight>;
    /// The asks to release hold `hold` (`[holds] release_approvals`), oldest first.
    fn release_approvals(&self, hold: i64) -> Vec<ReleaseApproval>;
    /// Why a resource is `interrupted`, if it ever was.
    fn interruption(&self, resource: &str) -> Option<Interruption>;
    /// Accounts whose grace has passed (R8 checks the rest), after the cursor
    /// (`purge_after`, `id`), in that order.
    fn due_accounts(&self, now: Timestamp, after: (Timestamp, &str), limit: i64) -> Vec<AccountRow>;
    fn record_sweep(&self, run: &SweepRun) -> ();
    /// Takes the pass of windowed `kind` over `target` (issue 29), unless another instance runs
    /// it under a lease that holds; a pass whose lease ran out is taken over and finished.
    fn claim_window_pass(&self, kind: &str, target: &str, owner: &str, now: Timestamp, lease_until: Timestamp) -> Option<WindowClaim>;
    /// Adds a batch's rows to the pass and renews its lease; false when the pass is no longer ours.
    fn window_progress(&self, kind: &str, target: &str, owner: &str, rows: i64, lease_until: Timestamp) -> bool;
    /// Records the pass's W3 drops (the partition being dropped and those dropped so far, as
    /// JSON; `None` clears them) and renews its lease; false when the pass is no longer ours.
    fn window_dropping(&self, kind: &str, target: &str, owner: &str, dropping: Option<&str>, lease_until: Timestamp) -> bool;
    fn window_passes(&self) -> Vec<WindowPassRow>;
    /// The orgs' own windows of `kind` in force (W4): (org, max_age in ms).
    fn org_windows(&self, kind: &str) -> Vec<(String, i64)>;
    /// The orgs' own windows and pending changes, of one org or of all.
    fn org_window_rows(&self, org: Option<&str>) -> Vec<OrgWindowRow>;
    /// Forgets up to `limit` idempotency records of events dated before `before` (older than
    /// `ingest.dedup_window`: a replay of them is refused anyway); returns how many.
    fn forget_events(&self, before: Timestamp, limit: i64) -> u64;
    /// The audit seq up to which `receiver`'s notifications are queued; set to the chain's head
    /// the first time (a new receiver gets the decisions made from then on).
    fn notify_cursor(&self, receiver: &str) -> i64;
    /// Audit entries of the notifiable types (`notify::TYPES`) after `after_seq`, in seq order.
    fn notifiable_audit(&self, after_seq: i64, limit: i64) -> Vec<AuditEntry>;
    /// Queues `rows` for `receiver` and moves its cursor from `from_seq` to `to_seq`, in one
    /// transaction; false (nothing written) when the cursor is no longer at `from_seq`
    /// (another instance queued them).
    fn queue_notifications(&self, receiver: &str, from_seq: i64, to_seq: i64, rows: &[NewNotification]) -> bool;
    /// Takes up to `limit` notifications of `receivers` due at `now` for delivery: their next
    /// attempt moves to `lease_until`, so an instance that dies mid-delivery leaves them to be
    /// retried. A receiver no longer configured keeps its rows untouched.
    fn claim_notifications(&self, receivers: &[String], now: Timestamp, lease_until: Timestamp, limit: i64) -> Vec<NotificationRow>;
    /// Records one delivery attempt of notification `id`.
    fn record_delivery(&self, id: &str, at: Timestamp, outcome: &DeliveryOutcome) -> ();
    /// Notifications, newest first: all, or only the dead-lettered ones.
    fn notifications(&self, dead_only: bool, limit: i64) -> Vec<NotificationRow>;
    fn notification_counts(&self) -> Vec<NotificationCount>;
    /// Puts dead-lettered notifications of `receiver` (those in `ids`, or all when empty) back
    /// in the queue, due at `now`, retried until `expires_at`; returns their ids.
    fn requeue_notifications(&self, receiver: &str, ids: &[String], now: Timestamp, expires_at: Timestamp) -> Vec<String>;
    /// Resources purged since `since`, after the cursor (`purged_at`, `id`) — `reapply`.
    fn purged_since(&self, since: Timestamp, after: (Timestamp, &str), limit: i64) -> Vec<ResourceRow>;
    /// Accounts purged since `since`, after the cursor (`purged_at`, `id`) — `reapply`.
    fn purged_accounts_since(&self, since: Timestamp, after: (Timestamp, &str), limit: i64) -> Vec<AccountRow>;
    /// Whether some tombstone was purged before `before` (compaction's cheap first look).
    fn has_tombstones_before(&self, before: Timestamp) -> bool;
    /// An account's compacted tombstones, per kind (`audit receipt`).
    fn compacted_account(&self, account: &str) -> Vec<CompactedAccount>;
    /// `tombstones.compacted` entries with seq in `first..=last`, at most `limit`.
    fn compaction_entries(&self, first: i64, last: i64, limit: i64) -> Vec<AuditEntry>;
    /// The compacted tombstones' counts, by day, kind and cause.
    fn tombstone_counts(&self) -> Vec<TombstoneCount>;
    /// The compacted tombstones purged on the UTC day of `since` or later: the end of the last
    /// such day, and how many (`reapply`).
    fn compacted_since(&self, since: Timestamp) -> (Option<Timestamp>, i64);
}

forward! { mut LedgerTx;
    /// Waits for the per-ledger lock `name` (PostgreSQL advisory lock; SQLite writers are
    /// exclusive anyway), held until this transaction ends: work that must run once at a time
    /// across instances, such as schedule recomputation.
    fn lock_singleton(&mut self, name: &str) -> ();
    /// Like `lock_singleton` but returns false at once when another instance holds it: leader
    /// election for periodic jobs that only one instance should run.
    fn try_lock_singleton(&mut self, name: &str) -> bool;
    /// Like [`Ledger::claim_due`], inside this transaction, as a batch whose purge has not
    /// started (see [`Ledger::start_claimed_batch`]): a purge transaction claims the sweep's
    /// next batch while its targets run, durably when it commits.
    fn claim_next_batch(&mut self, now: Timestamp, limit: i64, owner: &str, lease_until: Timestamp) -> ClaimedBatch;
    /// Forgets a claimed batch once its purge transaction records it.
    fn end_claimed_batch(&mut self, batch: i64) -> ();
    fn load_resources(&mut self, ids: &[String]) -> Vec<ResourceRow>;
    fn load_accounts(&mut self, ids: &[String]) -> Vec<AccountRow>;
    fn load_orgs(&mut self, ids: &[String]) -> Vec<OrgRow>;
    /// Live and deleted resources of an account, locked.
    fn account_resources(&mut self, account: &str) -> Vec<ResourceRow>;
    /// Live and deleted resources of an org's accounts of the given kinds, locked.
    fn org_resources(&mut self, org: &str, kinds: &[String]) -> Vec<ResourceRow>;
    /// Live and deleted resources of a kind with id > `after`, in id order, locked.
    fn kind_resources_page(&mut self, kind: &str, after: &str, limit: i64) -> Vec<ResourceRow>;
    fn deletion_requested_accounts(&mut self) -> Vec<AccountRow>;
    fn seen_events(&mut self, ids: &[String]) -> HashSet<String>;
    /// Tombstones purged before `before` (what a shorter `tombstone_retention` would compact).
    fn count_tombstones_before(&mut self, before: Timestamp) -> i64;
    /// Whether some tombstone was ever compacted (R9 then rests on the purge receipts).
    fn tombstones_compacted(&mut self) -> bool;
    /// Which of `subjects` (`kind/id`) have a `resource.purged` receipt (`audit_one_receipt`).
    fn purge_receipt_subjects(&mut self, subjects: &[String]) -> HashSet<String>;
    fn save_resources(&mut self, rows: &[ResourceRow]) -> ();
    fn save_accounts(&mut self, rows: &[AccountRow]) -> ();
    fn save_orgs(&mut self, rows: &[OrgRow]) -> ();
    fn record_events(&mut self, ids: &[(String, Timestamp)], at: Timestamp) -> ();
    fn policy_state(&mut self) -> Option<PolicyState>;
    fn save_policy_state(&mut self, state: &PolicyState) -> ();
    fn hold_epoch(&mut self) -> i64;
    fn active_holds(&mut self) -> Vec<ActiveHold>;
    fn hold(&mut self, id: i64) -> Option<HoldRow>;
    fn count_matching(&mut self, scope: &HoldScope) -> Vec<StateCount>;
    /// Resources in scope whose tombstones were compacted (`[ledger] tombstone_retention`),
    /// from the per-account counts; `None` when the scope names a creation range and some
    /// tombstone was compacted.
    fn count_compacted(&mut self, scope: &HoldScope) -> Option<i64>;
    /// Resources in scope whose purge may have started and was never recorded: a crashed
    /// purge, or a failed one waiting for its retry. A claimed batch that has not started is
    /// not among them: its purge will see a hold placed now.
    fn in_flight(&mut self, scope: &HoldScope) -> Vec<String>;
    /// Records how in-flight resources ended, for every hold that listed them.
    fn resolve_in_flight(&mut self, outcomes: &[(String, InFlightOutcome)], at: Timestamp) -> ();
    /// Records what each target held of resources found `interrupted` (JSON `TargetData` lists).
    fn record_interruptions(&mut self, found: &[(String, String)], at: Timestamp) -> ();
    /// Gives claims back (still ours) with their state decided; returns the ids settled.
    fn settle_claims(&mut self, settled: &[SettledClaim], owner: &str) -> Vec<String>;
    /// Marks a claimed batch started (see `Tx::start_batch`).
    fn start_batch(&mut self, batch: i64, at: Timestamp) -> ();
    /// The asks to release hold `hold`, read in this transaction.
    fn tx_release_approvals(&mut self, hold: i64) -> Vec<ReleaseApproval>;
    /// Records (subject, hold) blocks; returns the pairs that are new.
    fn add_blocks(&mut self, subject_type: &str, pairs: &[(String, i64)], at: Timestamp) -> Vec<(String, i64)>;
    /// Gives claimed resources back because a hold covers them: they leave the due index.
    fn release_claims_held(&mut self, ids: &[String], owner: &str) -> ();
    /// Whether any resource of the account is not yet purged.
    fn has_unpurged(&mut self, account: &str) -> bool;
    /// Puts `failed` resources (all when `ids` is empty) back in the due queue.
    fn requeue_failed(&mut self, ids: &[String]) -> Vec<String>;
    /// Gives up every claim of `owner` (graceful shutdown).
    fn release_owner_claims(&mut self, owner: &str) -> u64;
    /// The last audit entry, locking the chain until the transaction ends.
    fn audit_last_locked(&mut self) -> Option<AuditEntry>;
    fn insert_checkpoint(&mut self, cp: &CheckpointRow) -> ();
    /// Ends our pass of windowed `kind` over `target`, in this transaction (with its audit
    /// entry); `None` when the pass is no longer ours.
    /// An org's own window of `kind` and its pending change, locked.
    fn org_window(&mut self, org: &str, kind: &str) -> Option<OrgWindowRow>;
    fn save_org_window(&mut self, row: &OrgWindowRow) -> ();
    /// Sets the pass's record of W3 drops (see [`Ledger::window_dropping`]).
    fn set_window_dropping(&mut self, kind: &str, target: &str, owner: &str, dropping: Option<&str>) -> ();
    fn finish_window_pass(&mut self, kind: &str, target: &str, owner: &str, now: Timestamp, held_back: i64, error: Option<&str>) -> Option<FinishedWindowPass>;
    /// Removes up to `limit` tombstones purged before `before`, oldest first; returns them.
    fn take_tombstones(&mut self, before: Timestamp, limit: i64) -> Vec<Tombstone>;
    /// Adds compacted tombstones to the per-day counts and to their accounts' (account, kind,
    /// count), as recorded by the audit entry at `seq`.
    fn add_tombstone_counts(&mut self, counts: &[TombstoneCount], accounts: &[(String, String, i64)], seq: i64) -> ();
}

/// A purge transaction: a write transaction with the hold lock held shared, by itself
/// ([`Ledger::begin_purge`], [`PurgeGate::begin_purge`]) or by the gate it was begun under
/// ([`Ledger::begin_under`]). Only it records purges, so Invariant H holds by type: no purge is
/// recorded while a hold change could be under way. Everything a [`LedgerTx`] does, it does too.
///
/// ```
/// # use retentiond::{model::{Cause, Timestamp}, store::Ledger};
/// # async fn f(ledger: Ledger) -> retentiond::store::Result<()> {
/// let mut tx = ledger.begin_purge().await?;
/// tx.finish_purged(&["c1".into()], Cause::Manual, "me", Timestamp::from_millis(0)).await?;
/// # Ok(()) }
/// ```
/// A plain write transaction cannot record a purge, and neither can a hold change:
/// ```compile_fail
/// # use retentiond::{model::{Cause, Timestamp}, store::Ledger};
/// # async fn f(ledger: Ledger) -> retentiond::store::Result<()> {
/// let mut tx = ledger.begin().await?;
/// tx.finish_purged(&["c1".into()], Cause::Manual, "me", Timestamp::from_millis(0)).await?;
/// # Ok(()) }
/// ```
/// ```compile_fail
/// # use retentiond::{model::{Cause, Timestamp}, store::Ledger};
/// # async fn f(ledger: Ledger) -> retentiond::store::Result<()> {
/// let mut tx = ledger.begin_hold_change().await?;
/// tx.finish_purged(&["c1".into()], Cause::Manual, "me", Timestamp::from_millis(0)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PurgeTx(LedgerTx);

/// A hold change: a write transaction with the hold lock held exclusively
/// ([`Ledger::begin_hold_change`]). Only it places, releases or unblocks holds, so no purge
/// transaction runs meanwhile. Everything a [`LedgerTx`] does, it does too.
///
/// ```
/// # use retentiond::{model::Timestamp, store::Ledger};
/// # async fn f(ledger: Ledger) -> retentiond::store::Result<()> {
/// let mut tx = ledger.begin_hold_change().await?;
/// tx.release_hold(1, "legal", Timestamp::from_millis(0)).await?;
/// # Ok(()) }
/// ```
/// A purge transaction cannot change a hold:
/// ```compile_fail
/// # use retentiond::{model::Timestamp, store::Ledger};
/// # async fn f(ledger: Ledger) -> retentiond::store::Result<()> {
/// let mut tx = ledger.begin_purge().await?;
/// tx.release_hold(1, "legal", Timestamp::from_millis(0)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HoldTx(LedgerTx);

macro_rules! typed_tx {
    ($t:ident) => {
        impl std::ops::Deref for $t {
            type Target = LedgerTx;
            fn deref(&self) -> &LedgerTx {
                &self.0
            }
        }

        impl std::ops::DerefMut for $t {
            fn deref_mut(&mut self) -> &mut LedgerTx {
                &mut self.0
            }
        }

        impl $t {
            /// [`LedgerTx::commit_with_audit`].
            pub async fn commit_with_audit(
                self,
                drafts: &[AuditDraft],
            ) -> Result<Option<AuditHead>> {
                self.0.commit_with_audit(drafts).await
            }

            /// [`LedgerTx::rollback`].
            pub async fn rollback(self) -> Result<()> {
                self.0.rollback().await
            }
        }
    };
}

typed_tx!(PurgeTx);
typed_tx!(HoldTx);

forward! { inner PurgeTx;
    /// Records purges whose lease is still ours; returns the ids recorded.
    fn finish_purged(&mut self, ids: &[String], cause: Cause, owner: &str, at: Timestamp) -> Vec<String>;
    fn record_failures(&mut self, failures: &[PurgeFailure], owner: &str, at: Timestamp) -> Vec<String>;
    fn finish_account_purged(&mut self, account: &str, at: Timestamp) -> bool;
}

forward! { inner HoldTx;
    fn insert_hold(&mut self, hold: &NewHold) -> i64;
    /// Records which resources a hold's answer called `in_flight`.
    fn record_in_flight(&mut self, hold: i64, ids: &[String]) -> ();
    fn release_hold(&mut self, id: i64, by: &str, at: Timestamp) -> bool;
    /// Records `by`'s ask to release `hold`; false when `by` had already asked.
    fn add_release_approval(&mut self, hold: i64, by: &str, at: Timestamp, via: Option<&str>) -> bool;
    /// Forgets the blocks of a released hold and clears `held` where no active hold remains;
    /// returns the resources that became purgeable again.
    fn unblock(&mut self, hold: i64) -> Vec<ResourceRow>;
}

impl LedgerTx {
    /// Writes `w` while `work` runs: on SQLite the rows go through the connection on another
    /// thread, so the caller can apply its next chunk meanwhile (`work` must not need the
    /// ledger); on PostgreSQL the server executes the first statement while `work` runs. Returns what `work` returned
    /// once both are done; on a write error the transaction is unusable and must be dropped.
    pub async fn write_ingest<R>(&mut self, w: IngestWrite, work: impl FnOnce() -> R) -> Result<R> {
        match self {
            LedgerTx::Sqlite(t) => t.write_ingest(w, work).await,
            LedgerTx::Postgres(t) => t.write_ingest(w, work).await,
        }
    }

    /// Appends `drafts` to the audit chain, as part of this transaction: on SQLite now, on
    /// PostgreSQL at the commit (where the chain's lock is taken, see `commit_with_audit`).
    pub async fn append_audit(&mut self, drafts: &[AuditDraft]) -> Result<()> {
        match self {
            LedgerTx::Sqlite(t) => t.append_audit(drafts).await,
            LedgerTx::Postgres(t) => t.append_audit(drafts).await,
        }
    }

    /// Appends `drafts` to the audit chain and commits, atomically with everything else done
    /// in this transaction.
    pub async fn commit_with_audit(self, drafts: &[AuditDraft]) -> Result<Option<AuditHead>> {
        match self {
            LedgerTx::Sqlite(t) => t.commit_with_audit(drafts).await,
            LedgerTx::Postgres(t) => t.commit_with_audit(drafts).await,
        }
    }

    pub async fn rollback(self) -> Result<()> {
        match self {
            LedgerTx::Sqlite(t) => t.rollback().await,
            LedgerTx::Postgres(t) => t.rollback().await,
        }
    }
}

/// Largest number of bound values per statement we use (SQLite allows 32766).
const MAX_BINDS: usize = 30_000;
