//! What differs between the two ledger backends, beside the SQL they share.
//!
//! Invariant: every statement both backends run is written once, in `ops.rs`; a backend
//! supplies only what [`Dialect`] names and the statement fragments listed below, so the two
//! cannot drift apart, and the compiler checks that each supplies all of it.
//!
//! Mechanism: `sqlite.rs` and `postgres.rs` each implement [`Dialect`] for a unit type, name it
//! `D`, and `include!` `ops.rs`, which calls `D::…`. The shared SQL is compiled once per backend
//! rather than written generic over `sqlx::Database`: a generic version would carry sqlx's bounds
//! (`Encode + Type` for every bound value's type, `Decode` per column, `Executor` for the
//! connection, `IntoArguments`) on each of some hundred functions, while compiled per backend the
//! same text gets each backend's concrete types. The fragments that must be string literals,
//! because statements are built by `concat!` at compile time, are macros defined beside each
//! implementation: `in_ids!` (an id list bound by [`Dialect::ids_arg`]), `json_rows!`,
//! `for_update!`, `for_update_of_r!`, `for_share!`, `skip_locked!`.

use super::{ResourceRow, Result};
use crate::audit::AuditEntry;
use crate::model::{Cause, Timestamp};

/// A backend's own ways: how writes begin and serialise, and the writes on the sweep's and
/// ingest's hot paths, which each backend does fastest its own way.
pub(crate) trait Dialect {
    type Db: sqlx::Database;
    /// How an id list is bound for `in_ids!`.
    type Ids;
    /// The statement that begins a write transaction.
    const BEGIN: &'static str;

    fn ids_arg(ids: &[String]) -> Self::Ids;

    /// Serialises appends to the audit chain until the transaction ends.
    async fn lock_audit(tx: &mut sqlx::Transaction<'static, Self::Db>) -> Result<()>;

    /// Takes the ledger-wide lock `name` until the transaction ends (waiting for it, or not:
    /// then `false` if another holds it).
    async fn singleton_lock(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        name: &str,
        wait: bool,
    ) -> Result<bool>;

    /// Claims up to `limit` resources for `owner` (stale claims first, then due work) into
    /// `batch`, and returns their rows in id order; a claimed resource whose account is missing
    /// is an error (it must not stay claimed unread).
    async fn claim(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        now: Timestamp,
        limit: i64,
        owner: &str,
        lease_until: Timestamp,
        batch: i64,
    ) -> Result<Vec<ResourceRow>>;

    /// Inserts or updates resources (ingest, reschedules).
    async fn save_resources(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        rows: &[ResourceRow],
    ) -> Result<()>;

    /// Appends chained audit entries.
    async fn insert_audit(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        entries: &[AuditEntry],
    ) -> Result<()>;

    /// Records applied event ids (idempotency), skipping those already there.
    async fn record_events(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        ids: &[(String, Timestamp)],
        at: Timestamp,
    ) -> Result<()>;

    /// Marks `owner`'s claimed resources purged; returns those it marked.
    async fn finish_purged(
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        ids: &[String],
        cause: Cause,
        owner: &str,
        at: Timestamp,
    ) -> Result<Vec<String>>;
}
