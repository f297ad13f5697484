//! The daemon's liveness and readiness, judged from the sweep's progress.
//!
//! Invariant: the watchdog is pinged and `/readyz` answers ready only while the scheduler keeps
//! firing on its own cron and a running sweep keeps completing batches; a scheduler that went
//! silent or a sweep stuck past `stall_after` makes both fail. The daemon and the sweep store
//! epoch milliseconds in [`Health`]'s atomics; the judgement is pure over them and a clock
//! reading, so it is tested without time passing.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::{Span, Timestamp};

/// Liveness facts the watchdog and `/readyz` decide from. Times are epoch milliseconds.
#[derive(Debug, Default)]
pub struct Health {
    pub started: AtomicI64,
    /// Last cron firing (even a skipped one): the scheduler is alive.
    pub last_tick: AtomicI64,
    /// Start of the sweep in flight, 0 when none.
    pub running_since: AtomicI64,
    /// Last completed batch or sweep.
    pub last_progress: Arc<AtomicI64>,
    pub last_success: AtomicI64,
    /// The sweep cron: when the next firing is due is judged against its own occurrences, so
    /// an irregular cron (office hours, weekdays) is not taken for a dead scheduler.
    schedule: RwLock<Option<croner::Cron>>,
    pub stall_after_ms: AtomicI64,
}

/// How late a firing may be before the scheduler counts as silent.
pub const TICK_SLACK: Span = Span::from_millis(60_000);

impl Health {
    /// Judges the scheduler against this cron from now on (start and reload).
    pub fn set_schedule(&self, expr: &str) {
        *self.schedule.write().expect("not poisoned") = parse_cron(expr);
    }

    /// The cron's first firing after `after_ms` (epoch ms), or a minute later when the cron
    /// has none (no schedule set, or no future firing at all).
    pub fn next_firing(&self, after_ms: i64) -> i64 {
        let fallback = after_ms + 60_000;
        let schedule = self.schedule.read().expect("not poisoned");
        let Some(cron) = schedule.as_ref() else {
            return fallback;
        };
        let Some(after) = chrono::DateTime::from_timestamp_millis(after_ms) else {
            return fallback;
        };
        cron.find_next_occurrence(&after, false)
            .map(|t| t.timestamp_millis())
            .unwrap_or(fallback)
    }

    /// The scheduler still fires — the cron's next firing after the last tick has not passed
    /// by more than [`TICK_SLACK`] — and a running sweep is not stuck: the watchdog may be
    /// pinged. Idle by schedule (a weekend gap) is alive.
    pub fn alive(&self, now: Timestamp) -> bool {
        let now = now.millis();
        let last_tick = self
            .last_tick
            .load(Ordering::Relaxed)
            .max(self.started.load(Ordering::Relaxed));
        let scheduler_alive = now <= self.next_firing(last_tick) + TICK_SLACK.millis();
        let running = self.running_since.load(Ordering::Relaxed);
        let progress = self.last_progress.load(Ordering::Relaxed).max(running);
        let stalled = running != 0 && now - progress > self.stall_after_ms.load(Ordering::Relaxed);
        scheduler_alive && !stalled
    }

    /// Alive, and the sweep the cron fired after the last completed one (or after the start)
    /// has had `stall_after` to complete.
    pub fn ready(&self, now: Timestamp) -> bool {
        let last = self
            .last_success
            .load(Ordering::Relaxed)
            .max(self.last_progress.load(Ordering::Relaxed))
            .max(self.started.load(Ordering::Relaxed));
        let deadline = self.next_firing(last)
            + self.stall_after_ms.load(Ordering::Relaxed)
            + TICK_SLACK.millis();
        self.alive(now) && now.millis() <= deadline
    }
}

fn parse_cron(expr: &str) -> Option<croner::Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> i64 {
        Timestamp::parse_rfc3339(rfc3339).unwrap().millis()
    }

    #[test]
    fn watchdog_follows_sweep_progress() {
        let h = Health::default();
        h.set_schedule("*/10 * * * * *");
        h.started.store(0, Ordering::Relaxed);
        h.stall_after_ms.store(60_000, Ordering::Relaxed);
        h.last_tick.store(100_000, Ordering::Relaxed);
        assert!(h.alive(Timestamp::from_millis(105_000)));
        // A sweep running for long without a completed batch is stalled.
        h.running_since.store(100_000, Ordering::Relaxed);
        assert!(h.alive(Timestamp::from_millis(150_000)));
        h.last_tick.store(170_000, Ordering::Relaxed);
        assert!(!h.alive(Timestamp::from_millis(170_001)));
        h.last_progress.store(170_000, Ordering::Relaxed);
        assert!(h.alive(Timestamp::from_millis(171_000)));
        // A scheduler that stopped firing is not alive either: next firing 180 s, plus slack.
        h.running_since.store(0, Ordering::Relaxed);
        assert!(h.alive(Timestamp::from_millis(180_000 + 60_000)));
        assert!(!h.alive(Timestamp::from_millis(180_000 + 60_001)));
    }

    #[test]
    fn an_office_hours_cron_is_idle_over_the_weekend_not_dead() {
        let h = Health::default();
        h.set_schedule("0 */10 9-17 * * MON-FRI");
        h.stall_after_ms.store(600_000, Ordering::Relaxed);
        // Friday 2026-12-04, last firing of the week at 17:50, its sweep done at once.
        let friday = at("2026-12-04T17:50:00Z");
        h.started.store(friday - 3_600_000, Ordering::Relaxed);
        h.last_tick.store(friday, Ordering::Relaxed);
        h.last_success.store(friday + 1_000, Ordering::Relaxed);
        h.last_progress.store(friday + 1_000, Ordering::Relaxed);
        for idle in [
            "2026-12-04T23:00:00Z",
            "2026-12-05T12:00:00Z",
            "2026-12-07T09:00:59Z",
        ] {
            assert!(h.alive(Timestamp::from_millis(at(idle))), "alive at {idle}");
            assert!(h.ready(Timestamp::from_millis(at(idle))), "ready at {idle}");
        }
        // Monday 09:00 was due: a scheduler silent past it (and the slack) is dead.
        assert!(!h.alive(Timestamp::from_millis(at("2026-12-07T09:01:01Z"))));
        // A sweep stuck since Monday 09:00 stops the pings though the schedule is sparse.
        h.last_tick
            .store(at("2026-12-07T09:00:00Z"), Ordering::Relaxed);
        h.running_since
            .store(at("2026-12-07T09:00:00Z"), Ordering::Relaxed);
        assert!(h.alive(Timestamp::from_millis(at("2026-12-07T09:05:00Z"))));
        assert!(!h.alive(Timestamp::from_millis(at("2026-12-07T09:10:01Z"))));
    }
}
