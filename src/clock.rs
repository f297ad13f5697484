//! The clock. Invariant: every lifecycle decision (due, skew, grace) takes its time from the
//! [`Clock`] it is given, never from the system directly, so tests move time without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::{Span, Timestamp};

/// The system clock in production; a hand-moved clock in tests.
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start: Timestamp) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start.millis())))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::from_millis(chrono::Utc::now().timestamp_millis()),
            Clock::Manual(t) => Timestamp::from_millis(t.load(Ordering::SeqCst)),
        }
    }

    pub fn is_system(&self) -> bool {
        matches!(self, Clock::System)
    }

    /// Moves a manual clock forward (or backward, with a negative span). No-op on the system clock.
    pub fn advance(&self, by: Span) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by.millis(), Ordering::SeqCst);
        }
    }

    pub fn set(&self, to: Timestamp) {
        if let Clock::Manual(t) = self {
            t.store(to.millis(), Ordering::SeqCst);
        }
    }
}
