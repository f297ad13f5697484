//! Prometheus metrics: the process-wide recorder, every metric's name, what the sweep and the
//! ingest paths record, and the ledger gauges refreshed on a timer.
//!
//! Invariant: nothing here carries user content (labels are states, kinds, targets and event
//! types), and a scrape never queries the ledger.
//!
//! Mechanism: served at `/metrics` by the
//! HTTP API (`[http]`) and, alone, on `[metrics] listen` ([`start`]); process metrics (RSS, CPU,
//! open fds: `process_*`, the Prometheus client convention) are read from /proc at each scrape.
//!
//! Counters and the sweep histogram are recorded where things happen (a sweep finishing, a batch
//! of events applied). Gauges that need a ledger query (resources by state and kind, due backlog,
//! held back, oldest overdue age) are refreshed every [`GAUGE_REFRESH`] by [`refresh_loop`], not
//! on every scrape: a count over a large ledger is not free, and a scrape must stay cheap.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::clock::Clock;
use crate::model::{AccountState, Timestamp};
use crate::store::{Ledger, StoreError};

/// How often the ledger gauges are recomputed.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(15);

pub const RESOURCES: &str = "retentiond_resources";
pub const ACCOUNTS: &str = "retentiond_accounts";
pub const DUE_BACKLOG: &str = "retentiond_due_backlog";
pub const HELD_BACK: &str = "retentiond_held_back";
pub const OLDEST_OVERDUE: &str = "retentiond_oldest_overdue_seconds";
pub const GAUGES_REFRESHED: &str = "retentiond_gauges_refreshed_timestamp_seconds";
pub const PURGES: &str = "retentiond_purges_total";
pub const PURGE_FAILURES: &str = "retentiond_purge_failures_total";
pub const PURGES_GAVE_UP: &str = "retentiond_purges_gave_up_total";
pub const PURGES_HELD: &str = "retentiond_purges_held_total";
pub const PURGES_FOUND_OUT: &str = "retentiond_interrupted_purges_found_total";
pub const ACCOUNTS_PURGED: &str = "retentiond_accounts_purged_total";
pub const ROWS_REMOVED: &str = "retentiond_rows_removed_total";
pub const FILES_REMOVED: &str = "retentiond_files_removed_total";
pub const SWEEPS: &str = "retentiond_sweeps_total";
pub const SWEEP_DURATION: &str = "retentiond_sweep_duration_seconds";
pub const LAST_SUCCESS: &str = "retentiond_last_successful_sweep_timestamp_seconds";
pub const EVENTS_INGESTED: &str = "retentiond_events_ingested_total";
pub const EVENTS_DUPLICATE: &str = "retentiond_events_duplicate_total";
pub const BATCHES_REJECTED: &str = "retentiond_event_batches_rejected_total";
pub const BUILD_INFO: &str = "retentiond_build_info";
pub const NOTIFICATIONS: &str = "retentiond_notifications_total";
pub const HTTP_REQUESTS: &str = "retentiond_http_requests_total";
pub const HTTP_DURATION: &str = "retentiond_http_request_duration_seconds";
pub const NOTIFICATIONS_PENDING: &str = "retentiond_notifications_pending";
pub const NOTIFICATIONS_DEAD: &str = "retentiond_notifications_dead";
pub const TARGET_PURGE_DURATION: &str = "retentiond_target_purge_duration_seconds";
pub const TARGET_REQUEST_DURATION: &str = "retentiond_target_request_duration_seconds";
pub const LAST_CHECKPOINT: &str = "retentiond_last_checkpoint_timestamp_seconds";
pub const OUTBOX_DEAD_LETTERS: &str = "retentiond_outbox_dead_letters";
pub const WINDOW_ROWS: &str = "retentiond_window_rows_purged_total";
pub const WINDOW_PASS_FAILURES: &str = "retentiond_window_pass_failures_total";
pub const ZDR_VIOLATION_ROWS: &str = "retentiond_zdr_violation_rows_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once per process and returns its handle. If another
/// recorder was installed first (by an embedding program), metrics are served empty.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(SWEEP_DURATION.into()),
                    &[
                        0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    ],
                )
                .expect("non-empty buckets")
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.into()),
                    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .expect("non-empty buckets")
                .set_buckets_for_metric(
                    Matcher::Full(TARGET_REQUEST_DURATION.into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ],
                )
                .expect("non-empty buckets")
                .set_buckets_for_metric(
                    Matcher::Full(TARGET_PURGE_DURATION.into()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        60.0,
                    ],
                )
                .expect("non-empty buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                warn!(error = %e, "a metrics recorder was already installed; /metrics stays empty");
            }
            describe();
            process().describe();
            gauge!(BUILD_INFO, "version" => crate::version::VERSION, "commit" => crate::version::COMMIT)
                .set(1.0);
            handle
        })
        .clone()
}

fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// The Prometheus text of every metric, process metrics read now.
pub fn render(handle: &PrometheusHandle) -> String {
    process().collect();
    handle.render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        TARGET_PURGE_DURATION,
        "Duration of one target's purge of one batch (or of one account), by target."
    );
    describe_histogram!(
        TARGET_REQUEST_DURATION,
        "Duration of each request an object-store target sent (retries included), by target and op (list, delete)."
    );
    describe_gauge!(
        LAST_CHECKPOINT,
        "When the newest signed audit checkpoint in the ledger was taken (absent before the first)."
    );
    describe_gauge!(
        OUTBOX_DEAD_LETTERS,
        "Outbox rows dead-lettered (failed_at set) and not yet requeued, by source."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labels name the build (crate version, git commit)."
    );
    describe_gauge!(RESOURCES, "Resources in the ledger by state and kind.");
    describe_gauge!(ACCOUNTS, "Accounts in the ledger by state.");
    describe_gauge!(
        DUE_BACKLOG,
        "Resources due now and not held: the next sweep's work."
    );
    describe_gauge!(HELD_BACK, "Resources kept by an active legal hold.");
    describe_gauge!(
        OLDEST_OVERDUE,
        "Age of the oldest due, unheld resource past its purge time (0 when none)."
    );
    describe_gauge!(
        GAUGES_REFRESHED,
        "When the ledger gauges were last computed."
    );
    describe_counter!(PURGES, "Resources purged, by kind.");
    describe_counter!(
        PURGE_FAILURES,
        "Failed purge attempts, by target (retried with backoff)."
    );
    describe_counter!(
        PURGES_GAVE_UP,
        "Resources that ran out of attempts and became `failed`."
    );
    describe_counter!(
        PURGES_HELD,
        "Due resources found under a hold and given back."
    );
    describe_counter!(
        PURGES_FOUND_OUT,
        "Purges interrupted by a crash and found out when their claim was taken over, by outcome (gone, intact, interrupted)."
    );
    describe_counter!(ACCOUNTS_PURGED, "Accounts purged.");
    describe_counter!(
        WINDOW_ROWS,
        "Rows of windowed kinds deleted by time window, by kind and target (a dropped partition's rows as the server estimates them)."
    );
    describe_counter!(
        WINDOW_PASS_FAILURES,
        "Window passes that failed (and are retried next sweep), by kind and target."
    );
    describe_counter!(
        ZDR_VIOLATION_ROWS,
        "Rows a ZDR org's covered endpoints left in a windowed table after the first pass since the approval, by org."
    );
    describe_counter!(ROWS_REMOVED, "Rows removed from application databases.");
    describe_counter!(FILES_REMOVED, "Files removed from file stores.");
    describe_counter!(SWEEPS, "Sweeps run, by outcome (ok, error, panic).");
    describe_histogram!(SWEEP_DURATION, "Duration of whole sweeps.");
    describe_gauge!(LAST_SUCCESS, "When the last sweep completed without error.");
    describe_counter!(
        EVENTS_INGESTED,
        "Lifecycle events applied, by source and type."
    );
    describe_counter!(
        EVENTS_DUPLICATE,
        "Replayed events skipped (known event_id), by source."
    );
    describe_counter!(
        BATCHES_REJECTED,
        "Event batches rejected whole because of invalid lines, by source."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP API requests, by method, route (the pattern) and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        "HTTP API request durations, by method and route."
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notification delivery attempts, by receiver and outcome (delivered, retry, dead)."
    );
    describe_gauge!(
        NOTIFICATIONS_PENDING,
        "Notifications waiting for delivery or a retry, by receiver."
    );
    describe_gauge!(
        NOTIFICATIONS_DEAD,
        "Dead-lettered notifications (retries ran out), by receiver: `notify list --failed`."
    );
}

/// Records a sweep that failed (`outcome` = `error`) or panicked (`panic`).
pub fn record_sweep_failure(outcome: &'static str, took: Duration) {
    counter!(SWEEPS, "outcome" => outcome).increment(1);
    histogram!(SWEEP_DURATION).record(took.as_secs_f64());
}

/// Starts the per-target failure counters at 0 for every configured target, so a rate is defined
/// (and the series exists) before the first failure.
pub fn init_targets(config: &crate::config::Config) {
    for t in config.targets.keys() {
        counter!(PURGE_FAILURES, "target" => t.clone()).increment(0);
    }
}

/// Records how long `target` took to purge one batch (or one account).
pub fn record_target_purge(target: &str, took: Duration) {
    histogram!(TARGET_PURGE_DURATION, "target" => target.to_string()).record(took.as_secs_f64());
}

/// Records one request of `target` (an object store's `list` or `delete`) and how long it took.
pub fn record_target_request(target: &str, op: &'static str, took: Duration) {
    histogram!(TARGET_REQUEST_DURATION, "target" => target.to_string(), "op" => op)
        .record(took.as_secs_f64());
}

/// Records the dead-lettered rows an outbox holds now.
pub fn record_dead_letters(source: &str, n: i64) {
    gauge!(OUTBOX_DEAD_LETTERS, "source" => source.to_string()).set(n as f64);
}

/// Records one HTTP API request.
pub fn record_http_request(method: &str, route: &str, status: u16, took: Duration) {
    counter!(HTTP_REQUESTS, "method" => method.to_string(), "route" => route.to_string(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method.to_string(), "route" => route.to_string())
        .record(took.as_secs_f64());
}

/// Records one notification delivery attempt.
pub fn record_notification(receiver: &str, outcome: &'static str) {
    counter!(NOTIFICATIONS, "receiver" => receiver.to_string(), "outcome" => outcome).increment(1);
}

/// Records a batch rejected whole.
pub fn record_rejected(source: &str) {
    counter!(BATCHES_REJECTED, "source" => source.to_string()).increment(1);
}

/// Label sets of the resource gauges set last time, so a (state, kind) that vanished is zeroed
/// rather than left at its old value.
static SEEN: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
/// Notification receivers whose gauges were set (zeroed once their queue empties).
static SEEN_RECEIVERS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Recomputes the ledger gauges now.
pub async fn refresh_gauges(ledger: &Ledger, now: Timestamp) -> Result<(), StoreError> {
    let counts = ledger.state_counts().await?;
    let accounts = ledger.account_state_counts().await?;
    let backlog = ledger.backlog(now).await?;
    let held = ledger.held_back().await?;
    let oldest = ledger.oldest_due(now).await?;
    let checkpoint = ledger.last_checkpoint_at().await?;
    let notifications = ledger.notification_counts().await?;
    {
        let mut seen = SEEN.lock().expect("not poisoned");
        let fresh: BTreeSet<(String, String)> = counts
            .iter()
            .map(|c| (c.state.clone(), c.kind.clone()))
            .collect();
        for (state, kind) in seen.difference(&fresh) {
            gauge!(RESOURCES, "state" => state.clone(), "kind" => kind.clone()).set(0.0);
        }
        for c in &counts {
            gauge!(RESOURCES, "state" => c.state.clone(), "kind" => c.kind.clone())
                .set(c.count as f64);
        }
        seen.extend(fresh);
    }
    for s in AccountState::ALL {
        let n = accounts
            .iter()
            .filter(|(state, _)| state == s.as_str())
            .map(|(_, n)| *n)
            .sum::<i64>();
        gauge!(ACCOUNTS, "state" => s.as_str()).set(n as f64);
    }
    gauge!(DUE_BACKLOG).set(backlog as f64);
    gauge!(HELD_BACK).set(held as f64);
    let age = oldest.map_or(0, |t| (now.millis() - t.millis()).max(0));
    gauge!(OLDEST_OVERDUE).set(age as f64 / 1000.0);
    if let Some(t) = checkpoint {
        gauge!(LAST_CHECKPOINT).set(t.millis() as f64 / 1000.0);
    }
    {
        let mut seen = SEEN_RECEIVERS.lock().expect("not poisoned");
        for r in seen.iter() {
            if !notifications.iter().any(|n| &n.receiver == r) {
                gauge!(NOTIFICATIONS_PENDING, "receiver" => r.clone()).set(0.0);
                gauge!(NOTIFICATIONS_DEAD, "receiver" => r.clone()).set(0.0);
            }
        }
        for n in &notifications {
            gauge!(NOTIFICATIONS_PENDING, "receiver" => n.receiver.clone()).set(n.pending as f64);
            gauge!(NOTIFICATIONS_DEAD, "receiver" => n.receiver.clone()).set(n.dead as f64);
            seen.insert(n.receiver.clone());
        }
    }
    gauge!(GAUGES_REFRESHED).set(now.millis() as f64 / 1000.0);
    Ok(())
}

/// Refreshes the ledger gauges and runs the recorder's upkeep every [`GAUGE_REFRESH`] until
/// `stop` is cancelled.
pub async fn refresh_loop(
    ledger: Ledger,
    clock: Clock,
    handle: PrometheusHandle,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(GAUGE_REFRESH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                match refresh_gauges(&ledger, clock.now()).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        warn!(error = %e, "metrics: cannot refresh the ledger gauges; keeping the last values");
                        failing = true;
                    }
                    Err(_) => {}
                }
                handle.run_upkeep();
            }
        }
    }
}

/// `/metrics` alone, for `[metrics] listen`.
pub fn router(handle: PrometheusHandle) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        render(&handle),
                    )
                }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "only /metrics is served here ([metrics] listen)\n",
            )
                .into_response()
        })
}

/// Binds `[metrics] listen` and serves [`router`] on `tracker` until `stop`. A bind failure is
/// returned: the daemon does not start half-configured.
pub async fn start(
    listen: &str,
    handle: PrometheusHandle,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("metrics.listen: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, "metrics listening (/metrics)");
    tracker.spawn(async move {
        if let Err(e) = axum::serve(listener, router(handle))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "metrics server stopped with an error");
        }
    });
    Ok(addr)
}
