//! The hold gate of an SQLite ledger: a hold change never overlaps a purge's start and targets.
//!
//! # Invariant
//! From the moment a sweep reads the active holds for a batch until the purge transaction that
//! records the batch commits (or its process dies), no hold is placed or released. Within that
//! span the sweep durably marks the batch started *before* any target runs, so a hold placed
//! afterwards counts exactly the batches whose target deletes may have run as `in_flight`
//! (issue 30), and one placed before is seen by the purge.
//!
//! # Mechanism
//! On PostgreSQL the purge transaction holds the `hold_epoch` row `FOR SHARE` (see `store`). An
//! SQLite transaction cannot: its write lock is exclusive and the start mark must commit before
//! the targets run, so the span crosses two transactions. Two advisory file locks beside the
//! ledger (`flock`, released by the kernel when a process dies) stand in for the row lock: the
//! sweep holds `<ledger>-hold` shared, a hold change holds it exclusively. A second file,
//! `<ledger>-hold-turn`, is a turnstile that every entrant passes exclusively before taking the
//! gate and leaves once inside: a hold change waiting for the gate keeps the sweep's next purge
//! out, so a busy sweep cannot starve it. Both sides poll (`try_lock`) with a short backoff up
//! to [`WAIT_LIMIT`], then give up with [`StoreError::Busy`], which callers may retry.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Result, StoreError};

/// How long an entrant waits for the gate before giving up (the ledger's busy timeout is 30 s).
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// The longest pause between two attempts.
const POLL_MAX: Duration = Duration::from_millis(16);

/// The gate's two lock files.
#[derive(Debug)]
pub struct HoldGate {
    gate: PathBuf,
    turnstile: PathBuf,
}

/// The gate held, shared or exclusive, until dropped (the file's lock goes with it).
#[derive(Debug)]
pub struct HoldGateGuard {
    _gate: File,
}

impl HoldGate {
    /// The gate of the ledger at `db` (an in-memory ledger gets one private to this process).
    pub fn beside(db: &Path) -> HoldGate {
        let base = if db.as_os_str().is_empty() || db.as_os_str() == ":memory:" {
            std::env::temp_dir().join(format!("retentiond-memory-{}", std::process::id()))
        } else {
            db.to_path_buf()
        };
        let with = |suffix: &str| {
            let mut s = base.clone().into_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        HoldGate {
            gate: with("-hold"),
            turnstile: with("-hold-turn"),
        }
    }

    /// Enters the gate: shared for a purge, exclusive for a hold change.
    pub async fn enter(&self, exclusive: bool) -> Result<HoldGateGuard> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let turnstile = self.open(&self.turnstile)?;
        self.wait(&turnstile, true, deadline).await?;
        let gate = self.open(&self.gate)?;
        self.wait(&gate, exclusive, deadline).await?;
        drop(turnstile);
        Ok(HoldGateGuard { _gate: gate })
    }

    fn open(&self, path: &Path) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::Open {
                url: path.display().to_string(),
                message: format!("cannot open the ledger's hold gate: {e}"),
            })
    }

    async fn wait(&self, file: &File, exclusive: bool, deadline: Instant) -> Result<()> {
        let mut pause = Duration::from_millis(1);
        loop {
            let tried = if exclusive {
                file.try_lock()
            } else {
                file.try_lock_shared()
            };
            match tried {
                Ok(()) => return Ok(()),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy(format!(
                        "the ledger's hold gate stayed taken for {}s (a purge or a hold change holds it); retry",
                        WAIT_LIMIT.as_secs()
                    )));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(StoreError::Open {
                        url: self.gate.display().to_string(),
                        message: format!("cannot lock the ledger's hold gate: {e}"),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hold change waits for a purge inside the gate, and a purge arriving meanwhile waits
    /// behind the hold change at the turnstile (no starvation).
    #[tokio::test]
    async fn a_waiting_hold_change_goes_before_the_next_purge() {
        let dir = tempfile::tempdir().unwrap();
        let gate = std::sync::Arc::new(HoldGate::beside(&dir.path().join("l.db")));
        let purge = gate.enter(false).await.unwrap();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = tokio::spawn({
            let (gate, order) = (gate.clone(), order.clone());
            async move {
                let g = gate.enter(true).await.unwrap();
                order.lock().unwrap().push("hold");
                tokio::time::sleep(Duration::from_millis(30)).await;
                drop(g);
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            order.lock().unwrap().is_empty(),
            "the hold change waits for the purge"
        );
        let next = tokio::spawn({
            let (gate, order) = (gate.clone(), order.clone());
            async move {
                let _g = gate.enter(false).await.unwrap();
                order.lock().unwrap().push("purge");
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(purge);
        hold.await.unwrap();
        next.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["hold", "purge"]);
        // Two purges share the gate.
        let a = gate.enter(false).await.unwrap();
        let b = gate.enter(false).await.unwrap();
        drop((a, b));
    }
}
