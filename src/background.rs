//! The daemon's background work besides the sweep: each SQL target's `vacuum` cron, retries of
//! WAL checkpoints a purge could not finish, the outbox pollers (`[sources.NAME]`) and the
//! notification deliveries (`[notify.NAME]`).
//!
//! Invariant: a stop never cuts this work short: the batch or vacuum in flight finishes, and
//! [`Background::stop`] returns only when every task has ended.
//!
//! Mechanism: started by the daemon with the sweeper's targets (so a checkpoint a purge owes is
//! the one retried), restarted on reload, stopped with the daemon; every task runs on one
//! `TaskTracker` under a child of the daemon's `CancellationToken`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::app::App;
use crate::outbox::Poller;
use crate::targets::{Target, Targets};

/// How often owed WAL checkpoints are retried.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(10);

pub struct Background {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Background {
    /// Spawns the vacuum crons, the checkpoint retry, one poller per source (ingesting through
    /// `app`, as every interface does) and the notification deliveries, for `app`'s config.
    /// `parent` cancelling (daemon shutdown) stops them too.
    pub fn start(app: &App, targets: Arc<Targets>, parent: &CancellationToken) -> Background {
        let config = app.config();
        let stop = parent.child_token();
        let tracker = TaskTracker::new();
        for (name, target) in targets.iter() {
            if let Some(expr) = target.vacuum_schedule() {
                let (name, expr) = (name.clone(), expr.to_string());
                let (targets, stop) = (targets.clone(), stop.clone());
                tracker.spawn(async move { vacuum_loop(&name, &expr, &targets, &stop).await });
            }
        }
        {
            let (targets, stop) = (targets.clone(), stop.clone());
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(CHECKPOINT_RETRY) => {}
                    }
                    targets.retry_checkpoints().await;
                }
            });
        }
        for (name, source) in &config.sources {
            match Poller::new(name, source, app.clone()) {
                Ok(p) => {
                    let stop = stop.clone();
                    tracker.spawn(async move { p.run(stop).await });
                }
                Err(e) => error!(error = %e, "outbox source not started"),
            }
        }
        if !config.notify.is_empty() {
            match crate::notify::Notifier::new(
                app.ledger().clone(),
                app.clock().clone(),
                config.notify.clone(),
            ) {
                Ok(n) => {
                    let stop = stop.clone();
                    tracker.spawn(async move { n.run(stop).await });
                }
                Err(e) => error!(error = %e, "notifications not started"),
            }
        }
        tracker.close();
        Background { stop, tracker }
    }

    /// Stops everything and waits for the work in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

/// The next firing of a cron expression (seconds first, UTC) after now.
fn next_firing(expr: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .ok()?
        .iter_after(chrono::Utc::now())
        .next()
}

async fn vacuum_loop(name: &str, expr: &str, targets: &Targets, stop: &CancellationToken) {
    info!(target_name = %name, vacuum = %expr, "vacuum scheduled");
    loop {
        let Some(next) = next_firing(expr) else {
            warn!(target_name = %name, vacuum = %expr, "vacuum cron has no next firing; not scheduled");
            return;
        };
        let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(Target::Sql(t)) = targets.get(name) else {
            return;
        };
        let started = std::time::Instant::now();
        match t.vacuum().await {
            Ok(what) => {
                info!(target_name = %name, what = %what, duration_ms = started.elapsed().as_millis() as u64, "target vacuumed")
            }
            Err(e) => {
                warn!(target_name = %name, error = %e, "vacuum failed; the next firing retries")
            }
        }
    }
}
