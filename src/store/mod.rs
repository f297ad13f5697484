//! The ledger store: every durable fact retentiond keeps, in SQLite or PostgreSQL.
//!
//! # One implementation, two backends
//! The SQL lives once, in `ops.rs`, and is compiled twice — `sqlite.rs` and `postgres.rs` each
//! `include!` it with their own `Db` type and a handful of dialect macros (id lists, row locks,
//! `BEGIN IMMEDIATE`). Behaviour therefore cannot drift between the backends, while each keeps
//! its native types and no generic-bound gymnastics are needed. [`Ledger`] and [`LedgerTx`]
//! pick the backend once, from the URL scheme, and forward every operation.
//!
//! # Invariant H: holds are linearizable with purges
//! A purge runs its target deletes *inside* a ledger transaction that first takes the hold lock
//! in shared mode, re-reads the active holds, skips what they cover, deletes, and records the
//! purge; placing a hold takes the same lock exclusively, counts what is already purged, and
//! inserts the hold. The lock is the single `hold_epoch` row: `SELECT … FOR SHARE` / `FOR
//! UPDATE` on PostgreSQL; on SQLite every write transaction is `BEGIN IMMEDIATE`, which is
//! already exclusive. So a hold either commits before a purge's check (the purge sees it and
//! keeps the data) or waits until that purge has committed (and counts it as already purged).
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

mod gate;
mod postgres;
mod sqlite;

use std::collections::HashSet;

use serde::Serialize;
use thiserror::Error;

use crate::audit::{AuditDraft, AuditEntry};
use crate::config::SecretUrl;
use crate::holds::{ActiveHold, HoldScope};
use crate::model::{
    AccountState, Cause, Plan, PurgeItem, ResourceState, Rule, Timestamp, ZdrStatus,
};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("ledger database error: {0}{hint}", hint = storage_hint(.0))]
    Database(#[from] sqlx::Error),
    #[error("ledger migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("ledger holds an unexpected value: {0}")]
    Corrupt(String),
    /// An SQLite error met on the connection's own handle (bulk writes); `code` is SQLite's
    /// extended result code.
    #[error("ledger database error: {message}{hint}", hint = code_hint(code.map(|c| c & 0xff)))]
    Sqlite { code: Option<i64>, message: String },
    #[error("cannot open the ledger at {url}: {message}")]
    Open { url: String, message: String },
    /// A lock stayed taken past its wait (the SQLite hold gate): nothing was changed; retry.
    #[error("ledger busy: {0}")]
    Busy(String),
}

/// What an operator should check when SQLite could not write or read the ledger file: SQLite
/// reports ENOSPC as "database or disk is full", but a write refused for another reason (a file
/// size limit, EFBIG; a failing device) only as "disk I/O error".
fn storage_hint(e: &sqlx::Error) -> &'static str {
    code_hint(crate::sqlite_handle::primary_code(e))
}

/// [`storage_hint`] by SQLite's primary result code.
fn code_hint(primary: Option<i64>) -> &'static str {
    match primary {
        Some(10) => {
            " (the ledger file could not be read or written: is the disk full, the file size limited, or the device failing?)"
        }
        Some(13) => " (the disk is full: free space, then retry; nothing was applied)",
        Some(8) => " (the ledger file or its folder is read-only)",
        _ => "",
    }
}

impl StoreError {
    /// A conflict the caller may simply retry (PostgreSQL deadlock or serialization failure,
    /// SQLite busy or locked after the busy timeout, in any of their extended forms:
    /// BUSY_RECOVERY 261, BUSY_SNAPSHOT 517, BUSY_TIMEOUT 773, LOCKED_SHAREDCACHE 262, …).
    pub fn is_retryable(&self) -> bool {
        let pg_conflict = matches!(self, StoreError::Database(sqlx::Error::Database(d))
            if matches!(d.code().as_deref(), Some("40P01" | "40001")));
        // SQLITE_BUSY (5) or SQLITE_LOCKED (6).
        pg_conflict
            || matches!(self, StoreError::Busy(_))
            || matches!(self.sqlite_primary_code(), Some(5 | 6))
    }

    /// SQLite's primary result code, whichever path the error came by (sqlx or the handle).
    fn sqlite_primary_code(&self) -> Option<i64> {
        match self {
            StoreError::Database(e) => crate::sqlite_handle::primary_code(e),
            StoreError::Sqlite { code, .. } => code.map(|c| c & 0xff),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlight {
    pub resource: String,
    pub outcome: Option<InFlightOutcome>,
    pub resolved_at: Option<Timestamp>,
}

/// What a target still holds of a resource whose purge was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TargetData {
    pub target: String,
    /// `gone`, `present` or `unknown`.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a resource is `interrupted`: what each of its targets held when that was found out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
struct RawNotification {
    id: String,
    receiver: String,
    seq: i64,
    event_type: String,
    body: String,
    created_at: i64,
    expires_at: i64,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    delivered_at: Option<i64>,
    dead_at: Option<i64>,
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
            created_at: Timestamp(n.created_at),
            expires_at: Timestamp(n.expires_at),
            attempts: n.attempts,
            next_attempt_at: Timestamp(n.next_attempt_at),
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

/// Forwards `async fn`s of [`Ledger`] (`&self`) and [`LedgerTx`] (`&mut self`) to the backend.
macro_rules! forward {
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
    pub async fn begin_purge(&self) -> Result<LedgerTx> {
        Ok(match self {
            Ledger::Sqlite(s) => LedgerTx::Sqlite(s.begin_purge().await?),
            Ledger::Postgres(s) => LedgerTx::Postgres(s.begin_purge().await?),
        })
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
    pub async fn begin_hold_change(&self) -> Result<LedgerTx> {
        Ok(match self {
            Ledger::Sqlite(s) => LedgerTx::Sqlite(s.begin_hold_change().await?),
            Ledger::Postgres(s) => LedgerTx::Postgres(s.begin_hold_change().await?),
        })
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
    pub async fn begin_purge(self) -> Result<LedgerTx> {
        Ok(match self {
            PurgeGate::Sqlite(s, guard) => LedgerTx::Sqlite(s.begin_behind_gate(guard).await?),
            PurgeGate::Postgres(t) => LedgerTx::Postgres(t),
        })
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
    /// Resources in scope whose purge may have started and was never recorded: a crashed
    /// purge, or a failed one waiting for its retry. A claimed batch that has not started is
    /// not among them: its purge will see a hold placed now.
    fn in_flight(&mut self, scope: &HoldScope) -> Vec<String>;
    fn insert_hold(&mut self, hold: &NewHold) -> i64;
    /// Records which resources a hold's answer called `in_flight`.
    fn record_in_flight(&mut self, hold: i64, ids: &[String]) -> ();
    /// Records how in-flight resources ended, for every hold that listed them.
    fn resolve_in_flight(&mut self, outcomes: &[(String, InFlightOutcome)], at: Timestamp) -> ();
    /// Records what each target held of resources found `interrupted` (JSON `TargetData` lists).
    fn record_interruptions(&mut self, found: &[(String, String)], at: Timestamp) -> ();
    /// Gives claims back (still ours) with their state decided; returns the ids settled.
    fn settle_claims(&mut self, settled: &[SettledClaim], owner: &str) -> Vec<String>;
    /// Marks a claimed batch started (see `Tx::start_batch`).
    fn start_batch(&mut self, batch: i64, at: Timestamp) -> ();
    fn release_hold(&mut self, id: i64, by: &str, at: Timestamp) -> bool;
    /// The asks to release hold `hold`, read in this transaction.
    fn tx_release_approvals(&mut self, hold: i64) -> Vec<ReleaseApproval>;
    /// Records `by`'s ask to release `hold`; false when `by` had already asked.
    fn add_release_approval(&mut self, hold: i64, by: &str, at: Timestamp, via: Option<&str>) -> bool;
    /// Forgets the blocks of a released hold and clears `held` where no active hold remains;
    /// returns the resources that became purgeable again.
    fn unblock(&mut self, hold: i64) -> Vec<ResourceRow>;
    /// Records (subject, hold) blocks; returns the pairs that are new.
    fn add_blocks(&mut self, subject_type: &str, pairs: &[(String, i64)], at: Timestamp) -> Vec<(String, i64)>;
    /// Gives claimed resources back because a hold covers them: they leave the due index.
    fn release_claims_held(&mut self, ids: &[String], owner: &str) -> ();
    /// Records purges whose lease is still ours; returns the ids recorded.
    fn finish_purged(&mut self, ids: &[String], cause: Cause, owner: &str, at: Timestamp) -> Vec<String>;
    fn record_failures(&mut self, failures: &[PurgeFailure], owner: &str, at: Timestamp) -> Vec<String>;
    /// Whether any resource of the account is not yet purged.
    fn has_unpurged(&mut self, account: &str) -> bool;
    fn finish_account_purged(&mut self, account: &str, at: Timestamp) -> bool;
    /// Puts `failed` resources (all when `ids` is empty) back in the due queue.
    fn requeue_failed(&mut self, ids: &[String]) -> Vec<String>;
    /// Gives up every claim of `owner` (graceful shutdown).
    fn release_owner_claims(&mut self, owner: &str) -> u64;
    /// The last audit entry, locking the chain until the transaction ends.
    fn audit_last_locked(&mut self) -> Option<AuditEntry>;
    fn insert_checkpoint(&mut self, cp: &CheckpointRow) -> ();
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

fn parse<T: std::str::FromStr<Err = String>>(v: &str) -> Result<T> {
    v.parse().map_err(StoreError::Corrupt)
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

/// A resource row as the ledger stores it; also read from a JSON array in column order.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct RawResource {
    id: String,
    kind: String,
    account: String,
    org: String,
    created_at: i64,
    endpoint: Option<String>,
    state: String,
    deleted_at: Option<i64>,
    cause: Option<String>,
    purge_after: Option<i64>,
    rule: Option<String>,
    held: i64,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    attempts: i64,
    last_error: Option<String>,
    purged_at: Option<i64>,
    claim_batch: Option<i64>,
    #[serde(default)]
    target_attrs: Option<String>,
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
            created_at: Timestamp(r.created_at),
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
struct RawAccount {
    id: String,
    org: String,
    state: String,
    created_at: i64,
    deletion_requested_at: Option<i64>,
    purge_after: Option<i64>,
    purged_at: Option<i64>,
}

impl TryFrom<RawAccount> for AccountRow {
    type Error = StoreError;
    fn try_from(a: RawAccount) -> Result<Self> {
        Ok(AccountRow {
            state: parse(&a.state)?,
            id: a.id,
            org: a.org,
            created_at: Timestamp(a.created_at),
            deletion_requested_at: ts(a.deletion_requested_at),
            purge_after: ts(a.purge_after),
            purged_at: ts(a.purged_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct RawOrg {
    id: String,
    plan: String,
    zdr: String,
    zdr_reason: Option<String>,
    zdr_by: Option<String>,
    zdr_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    training_opt_out: bool,
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
            created_at: Timestamp(o.created_at),
            updated_at: Timestamp(o.updated_at),
            training_opt_out: o.training_opt_out,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RawHold {
    id: i64,
    case_ref: String,
    reason: Option<String>,
    placed_by: String,
    placed_at: i64,
    org: Option<String>,
    account: Option<String>,
    resource: Option<String>,
    kind: Option<String>,
    created_from: Option<i64>,
    created_to: Option<i64>,
    released_at: Option<i64>,
    released_by: Option<String>,
    placed_already_purged: Option<i64>,
    placed_in_flight: Option<i64>,
}

impl From<RawHold> for HoldRow {
    fn from(h: RawHold) -> Self {
        HoldRow {
            id: h.id,
            case: h.case_ref,
            reason: h.reason,
            placed_by: h.placed_by,
            placed_at: Timestamp(h.placed_at),
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
struct RawAudit {
    seq: i64,
    at: i64,
    action: String,
    subject: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl From<RawAudit> for AuditEntry {
    fn from(a: RawAudit) -> Self {
        AuditEntry {
            seq: a.seq,
            at: Timestamp(a.at),
            action: a.action,
            subject: a.subject,
            details: a.details,
            prev_hash: a.prev_hash,
            hash: a.hash,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RawSweep {
    instance: String,
    started_at: i64,
    finished_at: Option<i64>,
    purged: i64,
    failed: i64,
    held: i64,
    accounts_purged: i64,
    error: Option<String>,
}

impl From<RawSweep> for SweepRun {
    fn from(s: RawSweep) -> Self {
        SweepRun {
            instance: s.instance,
            started_at: Timestamp(s.started_at),
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
struct RawCheckpoint {
    seq: i64,
    hash: String,
    at: i64,
    public_key: String,
    signature: String,
}

impl From<RawCheckpoint> for CheckpointRow {
    fn from(c: RawCheckpoint) -> Self {
        CheckpointRow {
            seq: c.seq,
            hash: c.hash,
            at: Timestamp(c.at),
            public_key: c.public_key,
            signature: c.signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{ConnectOptions, Connection};

    fn on_handle(code: i64) -> StoreError {
        StoreError::Sqlite {
            code: Some(code),
            message: "x".into(),
        }
    }

    #[test]
    fn busy_and_locked_are_retryable_in_every_extended_form() {
        // BUSY, LOCKED, BUSY_RECOVERY, LOCKED_SHAREDCACHE, BUSY_SNAPSHOT, BUSY_TIMEOUT.
        for code in [5, 6, 261, 262, 517, 773] {
            assert!(on_handle(code).is_retryable(), "code {code}");
        }
        // CONSTRAINT_UNIQUE, IOERR_WRITE, FULL, READONLY: retrying changes nothing.
        for code in [2067, 778, 13, 8, 1] {
            assert!(!on_handle(code).is_retryable(), "code {code}");
        }
        let none = StoreError::Sqlite {
            code: None,
            message: "x".into(),
        };
        assert!(!none.is_retryable());
        assert!(!StoreError::Corrupt("x".into()).is_retryable());
    }

    /// `.cargo/config.toml` builds the bundled SQLite without the two process-wide locks that
    /// slowed a sweep's ledger and target connections when they run side by side.
    #[tokio::test]
    async fn sqlite_is_built_without_global_allocation_locks() {
        let mut conn = SqliteConnectOptions::new()
            .filename(":memory:")
            .connect()
            .await
            .unwrap();
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        conn.close().await.unwrap();
    }

    /// A real SQLITE_BUSY through sqlx: a second writer that gives up at once.
    #[tokio::test]
    async fn a_busy_ledger_through_sqlx_is_retryable_and_a_constraint_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteConnectOptions::new()
            .filename(dir.path().join("l.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut first = opts.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut first)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(&mut first)
            .await
            .unwrap();
        let mut second = opts
            .clone()
            .busy_timeout(std::time::Duration::ZERO)
            .connect()
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut first)
            .await
            .unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut second)
            .await
            .unwrap_err();
        assert!(StoreError::from(busy).is_retryable());
        sqlx::query("ROLLBACK").execute(&mut first).await.unwrap();
        let unique = sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(&mut second)
            .await
            .unwrap_err();
        assert!(!StoreError::from(unique).is_retryable());
        second.close().await.unwrap();
        first.close().await.unwrap();
    }
}
