//! The daemon (`retentiond run`), and the same daemon in-process for tests.
//!
//! Invariant: a stop (SIGTERM, SIGINT, [`DaemonHandle::shutdown`]) never cuts a purge short: the
//! purge transaction in flight commits or rolls back whole, every task the daemon started has
//! ended when the stop returns, and this instance's remaining claims are released for the others.
//! Sweeps never overlap, and a sweep that fails or panics is logged and retried by the next.
//!
//! Mechanism: [`Daemon::open`] migrates the ledger and recomputes schedules (R10); dropping it
//! abandons the start-up (its transaction rolls back). [`Daemon::launch`] starts the sweep on its
//! cron behind a non-blocking lock (a firing while a sweep runs is skipped), the background work,
//! the HTTP API and the systemd supervision (readiness, watchdog pinged from sweep progress,
//! status), every task on one `TaskTracker` under one `CancellationToken`. The
//! [`DaemonHandle`] it returns is what `run` drives from signals (SIGHUP reloads) and what tests
//! drive directly: the stop cancels the token, so the sweep ends after its transaction in flight,
//! and waits for the tracker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::app::App;
use crate::clock::Clock;
use crate::config::Config;
use crate::health::Health;
use crate::model::Timestamp;
use crate::policy;
use crate::store::Ledger;
use crate::sweep::{SweepReport, Sweeper, instance_id};
use crate::targets::Targets;

/// What the daemon runs with; swapped whole on reload.
struct Current {
    config: Arc<Config>,
    sweeper: Arc<Sweeper>,
    job: uuid::Uuid,
}

struct Shared {
    ledger: Ledger,
    clock: Clock,
    instance: String,
    stop: CancellationToken,
    tracker: TaskTracker,
    sweep_lock: Arc<tokio::sync::Mutex<()>>,
    health: Arc<Health>,
    current: RwLock<Option<Current>>,
    /// Vacuum crons, checkpoint retries, outbox pollers (see `background`).
    background: tokio::sync::Mutex<Option<crate::background::Background>>,
}

impl Shared {
    fn sweeper(&self) -> Option<Arc<Sweeper>> {
        self.current
            .read()
            .expect("not poisoned")
            .as_ref()
            .map(|c| c.sweeper.clone())
    }

    /// One cron firing: start a sweep unless one is running.
    fn tick(self: &Arc<Self>) {
        self.health
            .last_tick
            .store(self.clock.now().millis(), Ordering::Relaxed);
        if self.stop.is_cancelled() {
            return;
        }
        let Ok(guard) = self.sweep_lock.clone().try_lock_owned() else {
            debug!("previous sweep still running; tick skipped");
            return;
        };
        let me = self.clone();
        self.tracker.spawn(async move {
            let _ = me.sweep_locked(guard).await;
        });
    }

    /// One sweep, run while `guard` holds the sweep lock: its outcome goes to the health
    /// facts, the metrics and the log, and then old event ids are forgotten. None starts once
    /// the stop began: a request or firing that waited for the lock (or was spawned as the
    /// stop drained the tracker) ends here without touching the ledger.
    async fn sweep_locked(
        self: Arc<Self>,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) -> anyhow::Result<SweepReport> {
        if self.stop.is_cancelled() {
            anyhow::bail!("the daemon is stopping");
        }
        let Some(sweeper) = self.sweeper() else {
            anyhow::bail!("the daemon has no sweeper yet");
        };
        let started = std::time::Instant::now();
        let now = self.clock.now().millis();
        self.health.running_since.store(now, Ordering::Relaxed);
        let stop = self.stop.clone();
        // A separate task, so a panic in the sweep is caught here and logged, not swallowed.
        let outcome = tokio::spawn(async move { sweeper.sweep_once(&stop).await }).await;
        let now = self.clock.now().millis();
        let result = match outcome {
            Ok(Ok(report)) => {
                self.health.last_success.store(now, Ordering::Relaxed);
                self.health.last_progress.store(now, Ordering::Relaxed);
                report.record_metrics(started.elapsed(), Timestamp::from_millis(now));
                Ok(report)
            }
            Ok(Err(e)) => {
                error!(error = %e, "sweep failed; the next sweep retries");
                crate::metrics::record_sweep_failure("error", started.elapsed());
                Err(anyhow::Error::new(e).context("sweep failed"))
            }
            Err(e) => {
                error!(error = %e, "sweep panicked; the next sweep retries");
                crate::metrics::record_sweep_failure("panic", started.elapsed());
                Err(anyhow::anyhow!("sweep panicked: {e}"))
            }
        };
        self.health.running_since.store(0, Ordering::Relaxed);
        self.forget_events().await;
        drop(guard);
        result
    }

    /// The application core over the config in force.
    fn app(&self) -> App {
        let config = self
            .current
            .read()
            .expect("not poisoned")
            .as_ref()
            .map(|c| c.config.clone())
            .expect("a launched daemon has a config in force");
        App::from_parts(self.ledger.clone(), config, self.clock.clone())
    }
}

impl Shared {
    /// Forgets idempotency records older than `ingest.dedup_window` (replays that old are
    /// refused at ingest), a bounded number per sweep so it never delays the next one long.
    async fn forget_events(&self) {
        const PER_ROUND: i64 = 10_000;
        let window = self
            .current
            .read()
            .expect("not poisoned")
            .as_ref()
            .map(|c| c.config.dedup_window);
        let Some(window) = window else { return };
        let before = self.clock.now().minus(window);
        let mut total = 0u64;
        for _ in 0..10 {
            match self.ledger.forget_events(before, PER_ROUND).await {
                Ok(n) => {
                    total += n;
                    if n < PER_ROUND as u64 {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot forget old event ids; the next sweep retries");
                    break;
                }
            }
        }
        if total > 0 {
            info!(forgotten = total, dedup_window = %window, "event ids older than ingest.dedup_window forgotten");
        }
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// How often, and by how much, start-up and reload work asks systemd for more time.
const EXTEND_EVERY: Duration = Duration::from_secs(10);
const EXTEND_BY_USEC: u32 = 30_000_000;

/// Runs `work`, sending `EXTEND_TIMEOUT_USEC` at once and then every [`EXTEND_EVERY`] until it
/// ends: migrations and the R10 recomputation on a big ledger may outlast `TimeoutStartSec`,
/// and systemd would kill a daemon that is making progress.
async fn extending<F: std::future::Future>(status: &str, work: F) -> F::Output {
    let mut every = tokio::time::interval(EXTEND_EVERY);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = every.tick() => notify(&[
                sd_notify::NotifyState::ExtendTimeoutUsec(EXTEND_BY_USEC),
                sd_notify::NotifyState::Status(status),
            ]),
        }
    }
}

/// Opens, migrates and brings the ledger's policy in line with `config` (R10).
pub async fn prepare(
    config: &Config,
    clock: &Clock,
    actor: &str,
) -> anyhow::Result<(Ledger, crate::rules::SchedulePolicy)> {
    let app = App::open(Arc::new(config.clone()), clock.clone()).await?;
    let in_force = app.sync_policy(actor).await?;
    Ok((app.ledger().clone(), in_force))
}

fn build_sweeper(
    ledger: &Ledger,
    config: &Arc<Config>,
    clock: &Clock,
    instance: &str,
    health: &Health,
) -> anyhow::Result<Sweeper> {
    let targets = Targets::from_config(config).map_err(anyhow::Error::msg)?;
    Ok(Sweeper::new(
        ledger.clone(),
        Arc::new(targets),
        config.clone(),
        clock.clone(),
        instance.to_string(),
    )
    .with_progress(health.last_progress.clone()))
}

async fn add_job(
    scheduler: &JobScheduler,
    shared: &Arc<Shared>,
    expr: &str,
) -> anyhow::Result<uuid::Uuid> {
    let s = shared.clone();
    let job = Job::new_async(expr, move |_, _| {
        let s = s.clone();
        Box::pin(async move { s.tick() })
    })
    .with_context(|| format!("scheduler.sweep `{expr}`"))?;
    Ok(scheduler.add(job).await?)
}

/// A daemon whose ledger is open, migrated and in line with its config (R10): the first half
/// of the start-up, which a stop request may abandon by dropping it.
pub struct Daemon {
    ledger: Ledger,
    config: Arc<Config>,
    clock: Clock,
}

/// A running daemon: what `run` drives from signals, and tests directly.
///
/// Dropping it without [`DaemonHandle::shutdown`] only cancels the daemon's work (sweeps stop
/// after their transaction in flight); nothing waits for it.
pub struct DaemonHandle {
    shared: Arc<Shared>,
    scheduler: JobScheduler,
    http: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

impl Daemon {
    /// Both halves of the start-up: [`Daemon::open`], then [`Daemon::launch`].
    pub async fn start(config: Config, clock: Clock) -> anyhow::Result<DaemonHandle> {
        Daemon::open(config, clock).await?.launch().await
    }

    /// Opens and migrates the ledger, brings its policy in line with `config` (R10) and records
    /// the config loaded, as `retentiond run`.
    pub async fn open(config: Config, clock: Clock) -> anyhow::Result<Daemon> {
        let (ledger, _) = prepare(&config, &clock, "retentiond run").await?;
        crate::policy::record_config_loaded(&ledger, &config, clock.now(), "retentiond run")
            .await?;
        Ok(Daemon {
            ledger,
            config: Arc::new(config),
            clock,
        })
    }

    /// Starts the sweep on its cron (and one sweep at once, for any backlog), the background
    /// work, the HTTP API and metrics listeners when configured, and the systemd supervision;
    /// tells systemd it is ready. A listener that cannot bind fails the start, and what had
    /// started is stopped again.
    pub async fn launch(self) -> anyhow::Result<DaemonHandle> {
        let Daemon {
            ledger,
            config,
            clock,
        } = self;
        let instance = instance_id();
        let health = Arc::new(Health::default());
        health
            .started
            .store(clock.now().millis(), Ordering::Relaxed);
        health.set_schedule(&config.scheduler.sweep);
        health
            .stall_after_ms
            .store(config.scheduler.stall_after.millis(), Ordering::Relaxed);
        let shared = Arc::new(Shared {
            ledger: ledger.clone(),
            clock: clock.clone(),
            instance: instance.clone(),
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            sweep_lock: Arc::new(tokio::sync::Mutex::new(())),
            health: health.clone(),
            current: RwLock::new(None),
            background: tokio::sync::Mutex::new(None),
        });
        let scheduler = JobScheduler::new().await?;
        let mut handle = DaemonHandle {
            shared,
            scheduler,
            http: None,
            metrics: None,
        };
        if let Err(e) = handle.launch(config.clone()).await {
            handle.stop().await;
            return Err(e);
        }
        let shared = &handle.shared;
        info!(
            version = crate::version::VERSION, commit = crate::version::COMMIT,
            instance = %instance, ledger = ledger.backend(), sweep = %config.scheduler.sweep,
            batch_size = config.scheduler.batch_size, config = %config.file, "retentiond started"
        );
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("running; first sweep starting"),
        ]);
        // Drain any backlog left while we were down without waiting for the first firing.
        shared.tick();
        shared.tracker.spawn(supervise(shared.clone()));
        Ok(handle)
    }
}

impl DaemonHandle {
    async fn launch(&mut self, config: Arc<Config>) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let (ledger, clock) = (&shared.ledger, &shared.clock);
        let sweeper = build_sweeper(ledger, &config, clock, &shared.instance, &shared.health)?;
        // Before anything records (the outbox pollers, the sweep, HTTP): what is recorded before
        // the recorder exists is lost.
        let metrics = (config.http.is_some() || config.metrics_listen.is_some()).then(|| {
            let handle = crate::metrics::install();
            crate::metrics::init_targets(&config);
            handle
        });
        // Before any request is served: decisions from now on reach every receiver.
        crate::notify::init(ledger, &config.notify).await?;
        *shared.background.lock().await = Some(crate::background::Background::start(
            &App::from_parts(ledger.clone(), config.clone(), clock.clone()),
            sweeper.targets(),
            &shared.stop,
        ));
        crate::checkpoint::schedule(
            &self.scheduler,
            ledger,
            &config.audit,
            clock,
            &shared.tracker,
        )
        .await?;
        let job = add_job(&self.scheduler, &shared, &config.scheduler.sweep).await?;
        *shared.current.write().expect("not poisoned") = Some(Current {
            config: config.clone(),
            sweeper: Arc::new(sweeper),
            job,
        });
        self.scheduler.start().await?;
        if config.http.is_some() {
            // Handlers read the config in force, so a reload's policy and skew apply to HTTP
            // ingest.
            let weak = Arc::downgrade(&shared);
            let fallback = config.clone();
            let source: crate::http::ConfigSource = Arc::new(move || {
                let current = weak.upgrade().and_then(|s| {
                    let c = s.current.read().expect("not poisoned");
                    c.as_ref().map(|c| c.config.clone())
                });
                current.unwrap_or_else(|| fallback.clone())
            });
            let state = crate::http::HttpState::new(ledger.clone(), clock.clone(), config.clone())?
                .with_health(shared.health.clone())
                .with_config_source(source);
            self.http =
                Some(crate::http::start(state, &shared.tracker, shared.stop.clone()).await?);
        }
        if let Some(handle) = metrics {
            if let Some(listen) = &config.metrics_listen {
                self.metrics = Some(
                    crate::metrics::start(
                        listen,
                        handle.clone(),
                        &shared.tracker,
                        shared.stop.clone(),
                    )
                    .await?,
                );
            }
            shared.tracker.spawn(crate::metrics::refresh_loop(
                ledger.clone(),
                clock.clone(),
                handle,
                shared.stop.clone(),
            ));
        }
        Ok(())
    }

    /// The address the HTTP API listens on (`[http] listen`), when configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The address of the separate metrics listener (`metrics_listen`), when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The liveness and readiness facts the watchdog and `/readyz` judge from.
    pub fn health(&self) -> Arc<Health> {
        self.shared.health.clone()
    }

    /// The application core over the daemon's ledger, clock and config in force.
    pub fn app(&self) -> App {
        self.shared.app()
    }

    /// This instance's id (its claims' owner).
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Runs one sweep now, as a cron firing would, but waiting for a sweep in flight to end
    /// instead of skipping; its report, or why it failed. Once the stop began it fails
    /// without sweeping, also when the stop began while it waited for the sweep lock.
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        if self.shared.stop.is_cancelled() {
            anyhow::bail!("the daemon is stopping");
        }
        // `sweep_locked` checks the stop again under the lock.
        let guard = self.shared.sweep_lock.clone().lock_owned().await;
        let me = self.shared.clone();
        // On the tracker like a firing, so a stop waits for it.
        self.shared
            .tracker
            .spawn(async move { me.sweep_locked(guard).await })
            .await?
    }

    /// SIGHUP: re-reads `path` and swaps the new config in if it is valid (module
    /// `try_reload`); tells systemd. Returns whether the new config is in force.
    pub async fn reload(&self, path: &Path) -> bool {
        reload(&self.shared, &self.scheduler, path).await
    }

    /// The graceful stop (SIGTERM): the sweep in flight ends after its purge transaction, every
    /// task ends, and this instance's claims are released.
    pub async fn shutdown(self) {
        notify(&[sd_notify::NotifyState::Stopping]);
        self.stop().await;
        info!("stopped");
    }

    async fn stop(&self) {
        let shared = &self.shared;
        shared.stop.cancel();
        let mut scheduler = self.scheduler.clone();
        let _ = scheduler.shutdown().await;
        shared.tracker.close();
        shared.tracker.wait().await;
        if let Some(b) = shared.background.lock().await.take() {
            b.stop().await;
        }
        match release_claims(&shared.ledger, &shared.instance).await {
            Ok(n) if n > 0 => info!(released = n, "claims released for other instances"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not release claims; they expire with their lease"),
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// The systemd side of a running daemon until it stops: the watchdog pinged while sweeps make
/// progress, STATUS= when it changes, and the audit head logged daily (so an external log
/// anchors the chain even without signed checkpoints).
async fn supervise(shared: Arc<Shared>) {
    let watchdog = sd_notify::watchdog_enabled();
    let ping_every = watchdog
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(ping_every);
    let mut stalled_logged = false;
    let mut last_status = String::new();
    let mut last_head_log = i64::MIN / 2;
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = shared.clock.now();
        if now.millis() - last_head_log >= 86_400_000 {
            last_head_log = now.millis();
            match shared.ledger.audit_head().await {
                Ok(Some(h)) => info!(seq = h.seq, hash = %h.hash, "audit head"),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read the audit head"),
            }
        }
        if shared.health.alive(now) {
            stalled_logged = false;
            if watchdog.is_some() {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        } else if !stalled_logged {
            error!(
                "no sweep progress (stalled sweep or silent scheduler): withholding the watchdog ping"
            );
            stalled_logged = true;
        }
        let status = status_line(&shared).await;
        if status != last_status {
            notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
    }
}

/// Runs until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(config_path: PathBuf, config: Config, clock: Clock) -> anyhow::Result<()> {
    // Signals are caught from the first moment: a SIGTERM or SIGHUP during start-up (migrations
    // and the R10 recompute can take a while on a big ledger) must not kill the process the
    // default way. A stop request while starting abandons the start (its transaction rolls back)
    // and exits 0; a SIGHUP waits for the main loop.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let open = extending(
        "starting: migrating the ledger and recomputing schedules",
        Daemon::open(config, clock),
    );
    let daemon = tokio::select! {
        r = open => r?,
        _ = sigterm.recv() => { info!(signal = "SIGTERM", "stopped during start-up"); return Ok(()); }
        _ = sigint.recv() => { info!(signal = "SIGINT", "stopped during start-up"); return Ok(()); }
    };
    let handle = daemon.launch().await?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!(signal = "SIGTERM", "stopping: finishing the purge transaction in flight"); break; }
            _ = sigint.recv() => { info!(signal = "SIGINT", "stopping: finishing the purge transaction in flight"); break; }
            _ = sighup.recv() => { handle.reload(&config_path).await; }
        }
    }
    handle.shutdown().await;
    Ok(())
}

async fn release_claims(ledger: &Ledger, instance: &str) -> Result<u64, crate::store::StoreError> {
    let mut tx = ledger.begin().await?;
    let n = tx.release_owner_claims(instance).await?;
    tx.commit_with_audit(&[]).await?;
    Ok(n)
}

async fn status_line(shared: &Shared) -> String {
    let last = shared.health.last_success.load(Ordering::Relaxed);
    let last = if last == 0 {
        "none yet".to_string()
    } else {
        Timestamp::from_millis(last).to_string()
    };
    match shared.ledger.backlog(shared.clock.now()).await {
        Ok(b) => format!("last sweep {last}; backlog {b}"),
        Err(_) => format!("last sweep {last}; ledger unreachable"),
    }
}

/// SIGHUP, told to systemd as `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` whether it
/// worked or not (the daemon runs either way; the journal and STATUS= say which).
async fn reload(shared: &Arc<Shared>, scheduler: &JobScheduler, path: &Path) -> bool {
    let reloading = sd_notify::NotifyState::monotonic_usec_now();
    match &reloading {
        Ok(usec) => notify(&[sd_notify::NotifyState::Reloading, usec.clone()]),
        Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
    }
    let ok = try_reload(shared, scheduler, path).await;
    let status = if ok {
        "running; config reloaded"
    } else {
        "running; config reload failed, the old config stays in force (see the journal)"
    };
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
    ok
}

/// Validates the new config first; a bad one is logged and the old one stays in force.
/// Returns whether the new config is in force.
async fn try_reload(
    shared: &Arc<Shared>,
    scheduler: &JobScheduler,
    path: &std::path::Path,
) -> bool {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "config reload failed; the old config stays in force");
            return false;
        }
    };
    let old = shared
        .current
        .read()
        .expect("not poisoned")
        .as_ref()
        .map(|c| (c.config.clone(), c.job));
    let Some((old_config, old_job)) = old else {
        return false;
    };
    if new.database.url != old_config.database.url {
        error!("config reload refused: database.url changed; restart the daemon to switch ledgers");
        return false;
    }
    let new = Arc::new(new);
    let sync = policy::sync(
        &shared.ledger,
        &new.policy,
        shared.clock.now(),
        new.max_newly_due,
        false,
        "retentiond reload",
    );
    if let Err(e) = extending("reloading: recomputing schedules", sync).await {
        error!(error = %e, "config reload failed while recomputing schedules; the old config stays in force");
        return false;
    }
    let sweeper = match build_sweeper(
        &shared.ledger,
        &new,
        &shared.clock,
        &shared.instance,
        &shared.health,
    ) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            error!(error = %e, "config reload failed; the old config stays in force");
            return false;
        }
    };
    let mut job = old_job;
    if new.scheduler.sweep != old_config.scheduler.sweep {
        match add_job(scheduler, shared, &new.scheduler.sweep).await {
            Ok(j) => {
                let _ = scheduler.remove(&old_job).await;
                job = j;
                shared.health.set_schedule(&new.scheduler.sweep);
            }
            Err(e) => {
                error!(error = %e, "config reload failed; the old config stays in force");
                return false;
            }
        }
    }
    shared
        .health
        .stall_after_ms
        .store(new.scheduler.stall_after.millis(), Ordering::Relaxed);
    let targets = sweeper.targets();
    crate::metrics::init_targets(&new);
    *shared.current.write().expect("not poisoned") = Some(Current {
        config: new.clone(),
        sweeper,
        job,
    });
    // A receiver added by the reload gets the decisions from now on.
    if let Err(e) = crate::notify::init(&shared.ledger, &new.notify).await {
        warn!(error = %e, "cannot start the cursors of new notification receivers; retried by their delivery loop");
    }
    // Restart the background work with the new targets and sources (the batch in flight ends).
    let mut background = shared.background.lock().await;
    if let Some(b) = background.take() {
        b.stop().await;
    }
    *background = Some(crate::background::Background::start(
        &App::from_parts(shared.ledger.clone(), new.clone(), shared.clock.clone()),
        targets,
        &shared.stop,
    ));
    drop(background);
    info!(config = %new.file, fingerprint = %policy::fingerprint(&new.policy), "config reloaded");
    if let Err(e) = crate::policy::record_config_loaded(
        &shared.ledger,
        &new,
        shared.clock.now(),
        "retentiond reload",
    )
    .await
    {
        error!(error = %e, "could not record the reloaded config in the audit log");
    }
    if format!("{:?}", new.audit) != format!("{:?}", old_config.audit) {
        warn!("[audit] changes (signing key, checkpoint cron) take effect at the next restart");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep requested while another holds the sweep lock, with the stop beginning before
    /// the lock is free, fails instead of sweeping. (Through the public API the stop cannot
    /// overlap a request, `shutdown` takes the handle; a cron firing can, see `sweep_locked`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sweep_waiting_for_the_lock_does_not_start_once_the_stop_began() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::create_dir(dir.path().join("uploads")).unwrap();
        let text = format!(
            r#"
[database]
url = "sqlite://{d}/ledger.db"
[scheduler]
sweep = "0 0 0 1 1 *"
[accounts]
grace_after_delete = "30d"
targets = []
[kinds.file]
grace_after_delete = "30d"
targets = ["uploads"]
[targets.uploads]
type = "files"
root = "{d}/uploads"
path = "{{account}}/{{id}}"
"#
        );
        let config = Config::parse(&text, "t.toml").unwrap();
        let clock = Clock::manual(Timestamp::from_millis(1_800_000_000_000));
        let handle = Daemon::start(config, clock.clone()).await.unwrap();
        // Waits for the start-up sweep, then sweeps once: the lock is free after it.
        handle.sweep().await.unwrap();
        let runs = handle.shared.ledger.sweep_runs().await.unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        // A sweep from now on would record a later start.
        clock.advance(crate::model::Span::from_secs(60));
        let held = handle.shared.sweep_lock.clone().lock_owned().await;
        let (requested, ()) = tokio::join!(handle.sweep(), async {
            // The request above is polled first: it passed its check and waits for the lock.
            tokio::task::yield_now().await;
            handle.shared.stop.cancel();
            drop(held);
        });
        let err = requested.expect_err("a sweep started after the stop began");
        assert!(err.to_string().contains("stopping"), "{err:#}");
        assert_eq!(
            handle.shared.ledger.sweep_runs().await.unwrap(),
            runs,
            "no sweep was recorded after the stop began"
        );
        handle.shutdown().await;
    }
}
