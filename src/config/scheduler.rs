//! `[scheduler]`: when sweeps run and how much each one takes on. A `SchedulerConfig` has a cron
//! the scheduler accepts and sizes within the bounds the sweep is tested at.

use crate::model::Span;

use super::raw::RawScheduler;
use super::{ConfigError, Ctx};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub sweep: String,
    /// Resources per target transaction.
    pub batch_size: usize,
    /// Target batches one purge transaction of the ledger covers: each batch is recorded while
    /// the next one's targets run, and holds and other writers wait for at most this many.
    pub batches_per_transaction: usize,
    pub lease: Span,
    pub max_attempts: u32,
    pub retry_backoff: Span,
    pub retry_backoff_max: Span,
    /// Readiness and the systemd watchdog fail when no sweep completed for this long.
    pub stall_after: Span,
}

/// Checks a cron expression exactly as the scheduler will parse it (six fields, with seconds).
pub fn check_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if fields < 6 {
        return Err(format!(
            "`{expr}` has {fields} fields; the cron needs 6 or 7 with seconds first, e.g. \"*/10 * * * * *\""
        ));
    }
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("`{expr}` is not a valid cron expression ({e})"))
}

pub(super) fn build(ctx: &Ctx<'_>, s: RawScheduler) -> Result<SchedulerConfig, ConfigError> {
    check_cron(&s.sweep).map_err(|m| ctx.err("scheduler.sweep", m))?;
    if s.batch_size == 0 || s.batch_size > 10_000 {
        return Err(ctx.err(
            "scheduler.batch_size",
            format!("{} is out of range 1..=10000", s.batch_size),
        ));
    }
    if s.batches_per_transaction == 0 || s.batches_per_transaction > 64 {
        return Err(ctx.err(
            "scheduler.batches_per_transaction",
            format!("{} is out of range 1..=64", s.batches_per_transaction),
        ));
    }
    if s.max_attempts == 0 {
        return Err(ctx.err("scheduler.max_attempts", "must be at least 1"));
    }
    if s.lease < Span::from_secs(1) {
        return Err(ctx.err("scheduler.lease", format!("{} is shorter than 1s", s.lease)));
    }
    Ok(SchedulerConfig {
        sweep: s.sweep,
        batch_size: s.batch_size,
        batches_per_transaction: s.batches_per_transaction,
        lease: s.lease,
        max_attempts: s.max_attempts,
        retry_backoff: s.retry_backoff,
        retry_backoff_max: s.retry_backoff_max.max(s.retry_backoff),
        stall_after: s.stall_after,
    })
}
