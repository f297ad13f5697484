//! The command line (§6).
//!
//! Invariant: the CLI only parses and renders: what a command reads from or does to the ledger
//! is an [`App`](crate::app::App) method (the daemon's, for `run`) that the HTTP API shares, so
//! the two cannot disagree; bad usage, config or input exits 2, a runtime failure 1.
//!
//! Mechanism: clap parses the arguments, each command calls the core and prints its answer as
//! text or `--json` (one JSON object), and a [`Failure`] carries the exit code and the message.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::admin::{self, AdminError, PlaceHold, ZdrAction};
use crate::app::{App, AppError, AuditVerification, PolicyAccepted};
use crate::checkpoint::{self, CheckpointError, Trust};
use crate::clock::Clock;
use crate::config::{self, Config, ConfigError};
use crate::daemon;
use crate::holds::HoldScope;
use crate::ids::{AccountId, CaseRef, OrgId};
use crate::ingest::IngestError;
use crate::model::{Plan, Span, Timestamp};
use crate::reapply;
use crate::report;
use crate::store::StoreError;
use crate::telemetry::{self, LogFormat};

pub mod check_config;

#[derive(Debug, Parser)]
#[command(
    name = "retentiond",
    version = crate::version::LONG,
    about = "Decides when stored user data may be destroyed, destroys it, and proves it."
)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = config::DEFAULT_PATH, env = "RETENTIOND_CONFIG")]
    pub config: PathBuf,
    /// Print results as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format: `auto` is journald under systemd (stderr is the journal), else text.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: migrate, recompute schedules (R10), sweep on the cron.
    Run,
    /// Validate the config and print the effective policy.
    CheckConfig,
    /// Apply the ledger migrations.
    Migrate,
    /// Apply lifecycle events (NDJSON) from FILE or stdin (`-`), all or nothing.
    Ingest {
        /// NDJSON file; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
    /// Run one sweep now.
    Sweep {
        /// Required: sweep once and exit (the daemon sweeps on its cron).
        #[arg(long)]
        once: bool,
        /// List what would be purged and why; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Most items a dry run lists.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Counts by state and kind, backlog, holds, failures, last sweeps.
    Status,
    /// Inspect a resource.
    Resource {
        #[command(subcommand)]
        command: ShowCommand,
    },
    /// Inspect an account.
    Account {
        #[command(subcommand)]
        command: ShowCommand,
    },
    /// Legal holds.
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Organisations: plan and Zero Data Retention.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Signed notifications to the platform (`[notify.NAME]`): list, re-send dead letters.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Forecast purges per day and what holds keep back.
    Plan {
        /// Horizon.
        #[arg(long, default_value = "30d", value_parser = parse_span)]
        until: Span,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Guarded policy changes.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Create the sample application data the example config purges; print matching events.
    Demo {
        /// The demo user (account) id.
        #[arg(long, default_value = "u1", value_parser = |s: &str| AccountId::parse_as("--user", s))]
        user: AccountId,
    },
    /// Re-queue resources whose purge failed too many times (all failed ones if no ID).
    Retry {
        ids: Vec<String>,
        /// Who asks (recorded in the audit log).
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// Print a shell completion script (e.g. `retentiond completions bash > /etc/bash_completion.d/retentiond`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the retentiond(8) man page (roff), generated from these definitions.
    #[command(hide = true)]
    Man,
    /// Print a JSON Schema (draft 2020-12), e.g. `retentiond schema events` for one lifecycle
    /// event line, so applications can validate events before sending them.
    Schema {
        #[arg(value_enum)]
        what: SchemaWhat,
    },
    /// After a backup restore: re-run the purges done since TIME, removing erased data that came back.
    Reapply {
        /// RFC 3339 time, or a duration meaning that long ago (e.g. `7d`).
        #[arg(long)]
        since: String,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Report what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who runs it (recorded in the audit log).
        #[arg(long, default_value = "cli")]
        by: String,
    },
}

/// What `retentiond schema` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemaWhat {
    /// One line of `ingest` / `POST /v1/events` input.
    Events,
}

#[derive(Debug, Subcommand)]
pub enum ShowCommand {
    /// State, schedule, cause and blocking holds.
    Show { id: String },
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold; prints its id, how many resources it matches and how many were already purged.
    Place(HoldPlaceArgs),
    /// Release a hold.
    Release {
        id: i64,
        #[arg(long)]
        by: String,
    },
    /// List holds.
    List {
        /// Only active holds.
        #[arg(long)]
        active: bool,
    },
    /// A hold with what it matches now.
    Show { id: i64 },
}

#[derive(Debug, Args)]
pub struct HoldPlaceArgs {
    /// Case reference (required).
    #[arg(long, value_parser = |s: &str| CaseRef::parse_as("--case", s))]
    pub case: CaseRef,
    /// Who places it (required).
    #[arg(long)]
    pub by: String,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub org: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub resource: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    /// Inclusive, RFC 3339.
    #[arg(long, value_parser = parse_time)]
    pub created_from: Option<Timestamp>,
    /// Inclusive, RFC 3339.
    #[arg(long, value_parser = parse_time)]
    pub created_to: Option<Timestamp>,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an org (needs --plan) or change its plan (moving to `free` revokes ZDR) and
    /// training opt-out (a control separate from ZDR).
    #[command(arg_required_else_help = true)]
    Set {
        #[arg(value_parser = |s: &str| OrgId::parse_as("the org id", s))]
        id: OrgId,
        #[arg(long, value_parser = parse_plan, required_unless_present = "training_opt_out")]
        plan: Option<Plan>,
        /// Whether the org's eligible data may not be used to improve models.
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
        training_opt_out: Option<bool>,
    },
    /// Plan, ZDR status and covered resources waiting for purge.
    Show { id: String },
    /// Set (--max-age) or clear (--clear) the org's own retention of a windowed kind, within
    /// the kind's max_age_min/max_age_max. A shortening that makes more rows due at once than
    /// `[safety] max_newly_due` waits for `policy accept`. Without either, shows it.
    Retention {
        id: String,
        #[arg(long)]
        kind: String,
        #[arg(long, value_parser = parse_span, conflicts_with = "clear")]
        max_age: Option<Span>,
        /// Back to the kind's max_age.
        #[arg(long)]
        clear: bool,
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// Request, approve or deny Zero Data Retention.
    Zdr {
        #[arg(value_enum)]
        action: ZdrVerb,
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = "cli")]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Notifications to the `[notify.NAME]` receivers, newest first.
    List {
        /// Only the dead-lettered ones (retries ran out).
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Put dead-lettered notifications back in the queue (all of them if no ID); the daemon
    /// delivers them, retrying for the receiver's max_age again.
    Retry {
        ids: Vec<String>,
        /// Only this receiver's.
        #[arg(long)]
        receiver: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ZdrVerb {
    Request,
    Approve,
    Deny,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and check it against signed checkpoints; exit 1 naming the
    /// first bad entry.
    Verify {
        /// A checkpoint file kept elsewhere (or a folder of them): the chain up to its seq must
        /// be the one that was signed. Repeatable.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// The Ed25519 public key checkpoints must be signed with: 64 hex digits, or a file.
        /// Without --checkpoint, the checkpoints stored in the ledger are checked against it.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Entries as NDJSON, for shipping to external storage.
    Export {
        #[arg(long, default_value_t = 1)]
        since: i64,
        #[arg(long)]
        until: Option<i64>,
    },
    /// The current head (seq and hash), to anchor externally.
    Head,
    /// Proof of deletion for an account.
    Receipt {
        #[arg(long)]
        account: String,
    },
    /// Sign the current head with `[audit] signing_key_file` now: stored, logged, and written
    /// to `[audit] checkpoint_dir`. `--json` prints the checkpoint file.
    Checkpoint,
    /// Write a new Ed25519 signing key (mode 0600) and print its public key.
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Let a policy change held back by `safety.max_newly_due` take effect.
    Accept {
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// The policy in force and any pending change.
    Show,
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s)
}

fn parse_span(s: &str) -> Result<Span, String> {
    Span::parse(s)
}

fn parse_plan(s: &str) -> Result<Plan, String> {
    s.parse()
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// Extra lines (e.g. every bad input line).
    pub details: Vec<String>,
    pub json: Option<serde_json::Value>,
}

impl Failure {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
            details: Vec::new(),
            json: None,
        }
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
            details: Vec::new(),
            json: None,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::bad_input(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::runtime(e.to_string())
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) | AdminError::Conflict(m) | AdminError::NotFound(m) => {
                Failure::bad_input(m)
            }
            AdminError::Store(s) => s.into(),
        }
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(m) => Failure::bad_input(m),
            AppError::Admin(a) => a.into(),
            AppError::Store(s) => s.into(),
            AppError::Io(e) => Failure::runtime(e.to_string()),
            AppError::Sweep(e) => Failure::runtime(e.to_string()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // Print the whole cause chain.
        Failure::runtime(format!("{e:#}"))
    }
}

type Outcome = Result<(), Failure>;

/// `retentiond reapply`: exit 0 when done, 1 when a target failed for some item (after printing
/// the report), 2 for bad arguments.
async fn reapply_command(
    config: &Config,
    clock: &crate::clock::Clock,
    json: bool,
    since: &str,
    target: Option<String>,
    dry_run: bool,
    by: String,
) -> Result<(), Failure> {
    let since = reapply::parse_since(since, clock.now()).map_err(Failure::bad_input)?;
    let app = write_app(config, clock, "retentiond reapply").await?;
    let opts = reapply::ReapplyOptions {
        since,
        target,
        dry_run,
        by,
    };
    let report = match app.reapply(&opts).await {
        Ok(r) => r,
        Err(reapply::ReapplyError::Invalid(m)) => return Err(Failure::bad_input(m)),
        Err(reapply::ReapplyError::Store(e)) => return Err(e.into()),
    };
    if json {
        println!("{}", json_line(&report));
    } else {
        println!("{}", reapply::describe(&report));
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "reapply failed for {} item(s); their data may still be there: fix the cause and run it again",
            report.failed.len()
        )))
    }
}

/// Prints `value` as JSON, or `text` for people.
/// One JSON answer as a line of text, always valid JSON: a value that cannot be serialized
/// becomes `{"error": "…"}`, escaped by serde like any other string.
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| error_json(&e.to_string()))
}

/// `{"error": message}`, for `--json` consumers of a failure.
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", json_line(value));
    } else {
        let t = text();
        let _ = write!(out, "{t}");
        if !t.ends_with('\n') {
            let _ = writeln!(out);
        }
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Opens an existing ledger for a read command ([`App::open_read`]).
async fn read_app(config: &Config, clock: &Clock) -> Result<App, Failure> {
    Ok(App::open_read(std::sync::Arc::new(config.clone()), clock.clone()).await?)
}

/// Opens the ledger for a write command and brings its policy in line with the config (R10),
/// recorded as by `actor`. Failures print their whole cause chain.
async fn write_app(config: &Config, clock: &Clock, actor: &str) -> Result<App, Failure> {
    let app = App::open(std::sync::Arc::new(config.clone()), clock.clone())
        .await
        .map_err(anyhow::Error::from)?;
    app.sync_policy(actor).await.map_err(anyhow::Error::from)?;
    Ok(app)
}

/// Writes retentiond(8): section 8 (a system administration command), from the clap definitions.
fn man(out: &mut dyn Write) -> Outcome {
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("System Administration")
        .source(format!("retentiond {}", crate::version::LONG))
        .render(out)
        .map_err(|e| Failure::runtime(format!("cannot write the man page: {e}")))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Outcome {
    let clock = Clock::System;
    if let Command::Audit {
        command: AuditCommand::Keygen { out },
    } = &cli.command
    {
        // Needs no config: the key is made before the config names it.
        return keygen(out, cli.json);
    }
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "retentiond", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => return man(&mut std::io::stdout().lock()),
        // Needs no config: JSON already, so `--json` changes nothing.
        Command::Schema {
            what: SchemaWhat::Events,
        } => {
            let text = serde_json::to_string_pretty(&crate::events::line_schema())
                .map_err(|e| Failure::runtime(e.to_string()))?;
            println!("{text}");
            return Ok(());
        }
        _ => {}
    }
    let config = Config::load(&cli.config)?;
    telemetry::init(cli.log_format, config.log_level.as_deref());
    let json = cli.json;
    let actor = |cmd: &str| format!("retentiond {cmd}");
    match cli.command {
        Command::Run => Ok(daemon::run(cli.config.clone(), config, clock).await?),
        Command::CheckConfig => {
            let mut out = check_config::CheckConfigOut::from(&config);
            out.warnings = check_config::check_windows(&config).await?;
            emit(json, &out, || {
                let mut s = check_config::describe(&config);
                for w in &out.warnings {
                    s.push_str(&format!("\nwarning: {w}"));
                }
                s
            });
            Ok(())
        }
        Command::Migrate => {
            // Opening for writing creates the ledger when missing and applies the migrations.
            App::open(std::sync::Arc::new(config.clone()), clock.clone()).await?;
            emit(
                json,
                &serde_json::json!({"ok": true, "ledger": config.database.url.redacted()}),
                || format!("ledger migrated: {}", config.database.url.redacted()),
            );
            Ok(())
        }
        Command::Ingest { file } => {
            let app = write_app(&config, &clock, &actor("ingest")).await?;
            let result = match file.as_deref() {
                None => app.ingest_reader(std::io::stdin().lock()).await,
                Some(p) if p.as_os_str() == "-" => app.ingest_reader(std::io::stdin().lock()).await,
                Some(p) => {
                    let f = std::fs::File::open(p).map_err(|e| {
                        Failure::bad_input(format!("cannot read {}: {e}", p.display()))
                    })?;
                    app.ingest_reader(std::io::BufReader::with_capacity(1 << 20, f))
                        .await
                }
            };
            match result {
                Ok(report) => {
                    emit(json, &report, || {
                        format!(
                            "applied {} event(s), {} duplicate(s) skipped",
                            report.applied, report.duplicates
                        )
                    });
                    Ok(())
                }
                Err(IngestError::Invalid(errors)) => Err(Failure {
                    code: 2,
                    message: format!("{} invalid line(s); nothing was applied", errors.len()),
                    details: errors.iter().map(|e| e.to_string()).collect(),
                    json: Some(serde_json::json!({"ok": false, "applied": 0, "errors": errors})),
                }),
                Err(IngestError::Store(e)) => Err(e.into()),
            }
        }
        Command::Sweep {
            once,
            dry_run,
            limit,
        } => {
            if !once {
                return Err(Failure::bad_input(
                    "`sweep` needs --once (the daemon sweeps on its cron: `retentiond run`)",
                ));
            }
            if dry_run {
                // Windowed kinds are counted in their tables (nothing is deleted).
                let sweeper = read_app(&config, &clock)
                    .await?
                    .sweeper()
                    .map_err(Failure::bad_input)?;
                let items = sweeper
                    .dry_run(limit)
                    .await
                    .map_err(|e| Failure::runtime(e.to_string()))?;
                let windows = sweeper
                    .dry_run_windows()
                    .await
                    .map_err(|e| Failure::runtime(e.to_string()))?;
                let out = serde_json::json!({"dry_run": true, "would_purge": items.iter().filter(|i| i.held_by.is_empty()).count(), "items": items, "windows": windows});
                emit(json, &out, || {
                    let mut s = String::new();
                    for w in &windows {
                        s.push_str(&format!(
                            "window {} in {}: would delete {} row(s) created before {} (or covered by ZDR), {} partition(s); holds keep {} row(s)\n",
                            w.kind, w.target, w.rows, w.cutoff, w.partitions, w.held_back
                        ));
                    }
                    for i in &items {
                        let what = if i.held_by.is_empty() {
                            "would purge".to_string()
                        } else {
                            format!("kept by hold(s) {:?}", i.held_by)
                        };
                        s.push_str(&format!(
                            "{what}: {} {} account={} cause={} rule={} deleted_at={} purge_after={} targets={}\n",
                            i.kind,
                            i.id,
                            i.account,
                            opt(&i.cause),
                            opt(&i.rule),
                            opt(&i.deleted_at),
                            opt(&i.purge_after),
                            i.targets.join(",")
                        ));
                    }
                    s.push_str(&format!(
                        "dry run: {} item(s) due; nothing was changed",
                        items.len()
                    ));
                    s
                });
                return Ok(());
            }
            let sweeper = write_app(&config, &clock, &actor("sweep"))
                .await?
                .sweeper()
                .map_err(Failure::bad_input)?;
            let report = sweeper
                .sweep_once(&tokio_util::sync::CancellationToken::new())
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?;
            emit(json, &report, || {
                let mut s = format!(
                    "sweep: purged {}, failed {} (gave up {}), held back {}, accounts purged {}; removed {} row(s), {} file(s)",
                    report.purged,
                    report.failed,
                    report.gave_up,
                    report.held,
                    report.accounts_purged,
                    report.removed.rows,
                    report.removed.files
                );
                for p in &report.window_passes {
                    s.push_str(&format!(
                        "\nwindow {} in {}: deleted {} row(s){}; holds keep {}{}",
                        p.kind,
                        p.target,
                        p.rows,
                        if p.resumed {
                            " (finishing a pass cut short)"
                        } else {
                            ""
                        },
                        p.held_back.map_or("?".to_string(), |h| h.to_string()),
                        p.error
                            .as_ref()
                            .map_or(String::new(), |e| format!("; FAILED: {e}"))
                    ));
                }
                if report.tombstones_compacted > 0 {
                    s.push_str(&format!(
                        "\ncompacted {} tombstone(s) older than [ledger] tombstone_retention into counts",
                        report.tombstones_compacted
                    ));
                }
                s
            });
            Ok(())
        }
        Command::Status => {
            let app = read_app(&config, &clock).await?;
            let s = app.status().await?;
            // Windowed kinds: the live figures come from their tables; a table that cannot be
            // read is said, and the rest of the status still shown.
            let live = if config.kinds.values().any(|k| !k.tracking.is_item()) {
                match app.sweeper() {
                    Ok(sweeper) => Some(sweeper.dry_run_windows().await.map_err(|e| e.to_string())),
                    Err(e) => Some(Err(e)),
                }
            } else {
                None
            };
            let mut out = serde_json::to_value(&s).unwrap_or_default();
            match &live {
                Some(Ok(tables)) => out["window_tables"] = serde_json::json!(tables),
                Some(Err(e)) => out["window_tables_error"] = serde_json::json!(e),
                None => {}
            }
            let now = clock.now();
            emit(json, &out, || {
                let mut text = status_text(&s);
                match &live {
                    Some(Ok(tables)) => {
                        for w in tables {
                            text.push_str(&format!(
                                "window     {} in {}: oldest row {}, {} row(s) due now, holds keep {}\n",
                                w.kind,
                                w.target,
                                w.oldest.map_or_else(
                                    || "none (empty)".to_string(),
                                    |o| format!("{} old", age_text(now.millis() - o.millis()))
                                ),
                                w.rows,
                                w.held_back
                            ));
                        }
                    }
                    Some(Err(e)) => text.push_str(&format!("window     tables not read: {e}\n")),
                    None => {}
                }
                text
            });
            Ok(())
        }
        Command::Resource {
            command: ShowCommand::Show { id },
        } => {
            let r = read_app(&config, &clock)
                .await?
                .resource(&id)
                .await?
                .ok_or_else(|| Failure::bad_input(format!("unknown resource `{id}`")))?;
            emit(json, &r, || {
                format!(
                    "resource {} ({})\n  account   {} (org {})\n  state     {}\n  cause     {}\n  created   {}\n  deleted   {}\n  purge at  {}  [{}]\n  holds     {}\n  purged    {}{}",
                    r.id,
                    r.kind,
                    r.account,
                    r.org,
                    r.state,
                    opt(&r.cause),
                    r.created_at,
                    opt(&r.deleted_at),
                    opt(&r.purge_after),
                    r.rule_description
                        .as_deref()
                        .unwrap_or("no rule makes it due"),
                    if r.holds.is_empty() {
                        "none".to_string()
                    } else {
                        format!("{:?}", r.holds)
                    },
                    opt(&r.purged_at),
                    r.last_error
                        .as_ref()
                        .map(|e| format!("\n  last error (attempt {}): {e}", r.attempts))
                        .unwrap_or_default()
                ) + &r
                    .interrupted
                    .as_ref()
                    .map(|i| {
                        format!(
                            "\n  interrupted purge, found {}: {}",
                            i.found_at,
                            i.targets
                                .iter()
                                .map(|t| format!("{}={}", t.target, t.data))
                                .collect::<Vec<_>>()
                                .join(" ")
                        )
                    })
                    .unwrap_or_default()
            });
            Ok(())
        }
        Command::Account {
            command: ShowCommand::Show { id },
        } => {
            let a = read_app(&config, &clock)
                .await?
                .account(&id)
                .await?
                .ok_or_else(|| Failure::bad_input(format!("unknown account `{id}`")))?;
            emit(json, &a, || {
                format!(
                    "account {} (org {})\n  state      {}\n  deletion   {}\n  purge at   {}\n  purged     {}\n  holds      {}\n  resources  {}",
                    a.id,
                    a.org,
                    a.state,
                    opt(&a.deletion_requested_at),
                    opt(&a.purge_after),
                    opt(&a.purged_at),
                    if a.holds.is_empty() {
                        "none".to_string()
                    } else {
                        format!("{:?}", a.holds)
                    },
                    a.resources
                        .iter()
                        .map(|(s, n)| format!("{s}={n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            });
            Ok(())
        }
        Command::Hold { command } => hold(command, &config, &clock, json).await,
        Command::Org { command } => org(command, &config, &clock, json).await,
        Command::Notify { command } => notify(command, &config, &clock, json).await,
        Command::Plan { until } => {
            let p = read_app(&config, &clock).await?.plan(until).await?;
            emit(json, &p, || {
                let mut s = format!("purge forecast {} .. {}\n", p.from, p.until);
                for d in &p.days {
                    let purges: Vec<String> =
                        d.purges.iter().map(|(k, n)| format!("{k}={n}")).collect();
                    let held: Vec<String> =
                        d.held.iter().map(|(k, n)| format!("{k}={n}")).collect();
                    s.push_str(&format!(
                        "  {:<10}  {}{}\n",
                        d.day,
                        if purges.is_empty() {
                            "-".into()
                        } else {
                            purges.join(" ")
                        },
                        if held.is_empty() {
                            String::new()
                        } else {
                            format!("   held back: {}", held.join(" "))
                        }
                    ));
                }
                s.push_str(&format!(
                    "total {} purge(s); {} held back by {} active hold(s)",
                    p.total, p.total_held, p.holds_active
                ));
                s
            });
            Ok(())
        }
        Command::Audit { command } => audit_cmd(command, &config, &clock, json).await,
        Command::Policy {
            command: PolicyCommand::Accept { by },
        } => {
            let app = App::open(std::sync::Arc::new(config.clone()), clock.clone()).await?;
            let PolicyAccepted {
                report,
                org_retention: orgs,
            } = app.accept_policy(&by).await?;
            let out = serde_json::json!({
                "applied": report.applied,
                "rescheduled": report.rescheduled,
                "newly_due": report.newly_due,
                "pending": report.pending,
                "initial": report.initial,
                "org_retention": orgs,
            });
            emit(json, &out, || {
                let mut lines = Vec::new();
                if !report.applied.is_empty() {
                    lines.push(format!(
                        "policy accepted for {}; {} schedule(s) recomputed",
                        report.applied.join(", "),
                        report.rescheduled.values().sum::<u64>()
                    ));
                }
                for o in &orgs {
                    lines.push(format!(
                        "org {}: {} kept {} ({} row(s) newly due)",
                        o.org, o.kind, o.effective, o.newly_due
                    ));
                }
                if lines.is_empty() {
                    "no policy change was pending".to_string()
                } else {
                    lines.join("\n")
                }
            });
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Show,
        } => {
            let state = read_app(&config, &clock).await?.policy_state().await?;
            let out = serde_json::json!({
                "in_force": state.in_force,
                "pending": state.pending,
                "pending_newly_due": state.pending_newly_due,
            });
            emit(json, &out, || {
                serde_json::to_string_pretty(&out).unwrap_or_default()
            });
            Ok(())
        }
        Command::Demo { user } => {
            let events = crate::demo::setup(&config, &user)
                .await
                .map_err(Failure::runtime)?;
            print!("{events}");
            Ok(())
        }
        Command::Reapply {
            since,
            target,
            dry_run,
            by,
        } => reapply_command(&config, &clock, json, &since, target, dry_run, by).await,
        // Answered above, before the config is read.
        Command::Completions { .. } | Command::Man | Command::Schema { .. } => Ok(()),
        Command::Retry { ids, by } => {
            let app = write_app(&config, &clock, &actor("retry")).await?;
            let r = app.retry(&ids, &by).await?;
            emit(json, &r, || {
                format!(
                    "re-queued {} resource(s) for the next sweep",
                    r.requeued.len()
                )
            });
            Ok(())
        }
    }
}

/// An age in days and hours (`39d 12h`), or hours and minutes under a day.
fn age_text(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else {
        format!("{h}h {m}m")
    }
}

fn status_text(s: &report::Status) -> String {
    let counts = |m: &std::collections::BTreeMap<String, i64>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!(
        "resources  {}\naccounts   {}\nbacklog    {} due now; {} held back by holds; next due {}\nholds      {} active\n",
        counts(&s.resources),
        counts(&s.accounts),
        s.backlog,
        s.held_back,
        opt(&s.next_due),
        s.holds_active
    );
    for (kind, m) in &s.resources_by_kind {
        out.push_str(&format!("  {kind:<14} {}\n", counts(m)));
    }
    if !s.failed.is_empty() {
        out.push_str(&format!(
            "failed     {} (run `retentiond retry`):\n",
            s.failed.len()
        ));
        for f in &s.failed {
            out.push_str(&format!(
                "  {} {} attempts={} error={}\n",
                f.kind,
                f.id,
                f.attempts,
                opt(&f.last_error)
            ));
        }
    }
    for r in &s.last_sweeps {
        out.push_str(&format!(
            "sweep      {} at {}: purged {} failed {} held {} accounts {}{}\n",
            r.instance,
            opt(&r.finished_at),
            r.purged,
            r.failed,
            r.held,
            r.accounts_purged,
            r.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        ));
    }
    if s.policy_pending {
        out.push_str("policy     a change is waiting for `retentiond policy accept`\n");
    }
    for w in &s.windows {
        out.push_str(&format!(
            "window     {} in {}: last pass {} deleted {} row(s), holds keep {}{}{}\n",
            w.kind,
            w.target,
            opt(&w.last_finished_at),
            opt(&w.last_rows),
            w.last_held_back
                .filter(|h| *h >= 0)
                .map_or("?".to_string(), |h| h.to_string()),
            w.owner
                .as_ref()
                .map(|o| format!("; running on {o} since {}", opt(&w.started_at)))
                .unwrap_or_default(),
            w.last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
    }
    for o in &s.zdr_orgs {
        out.push_str(&format!(
            "zdr        org {} {} ({} covered waiting)\n",
            o.id, o.zdr, o.zdr_waiting
        ));
    }
    for n in &s.notifications {
        out.push_str(&format!(
            "notify     {}: {} pending, {} dead-lettered{}\n",
            n.receiver,
            n.pending,
            n.dead,
            if n.dead > 0 {
                " (run `retentiond notify list --failed`)"
            } else {
                ""
            }
        ));
    }
    out
}

async fn notify(command: NotifyCommand, config: &Config, clock: &Clock, json: bool) -> Outcome {
    match command {
        NotifyCommand::List { failed, limit } => {
            let rows = read_app(config, clock)
                .await?
                .notifications(failed, limit)
                .await?;
            let out = serde_json::json!({ "notifications": rows });
            emit(json, &out, || {
                let mut t = String::new();
                for n in &rows {
                    let state = match (n.delivered_at, n.dead_at) {
                        (Some(at), _) => format!("delivered {at}"),
                        (None, Some(at)) => format!("dead-lettered {at}"),
                        (None, None) => format!("pending, next attempt {}", n.next_attempt_at),
                    };
                    t.push_str(&format!(
                        "{} {} {} seq={} attempts={} {}{}\n",
                        n.id,
                        n.receiver,
                        n.event_type,
                        n.seq,
                        n.attempts,
                        state,
                        n.last_error
                            .as_ref()
                            .map(|e| format!(" last_error={e}"))
                            .unwrap_or_default()
                    ));
                }
                if t.is_empty() {
                    t.push_str(if failed {
                        "no dead-lettered notifications\n"
                    } else {
                        "no notifications\n"
                    });
                }
                t.trim_end().to_string()
            });
            Ok(())
        }
        NotifyCommand::Retry { ids, receiver } => {
            if let Some(r) = &receiver
                && !config.notify.contains_key(r)
            {
                return Err(Failure::bad_input(format!(
                    "--receiver `{r}` is not configured (configured: {})",
                    config.notify.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            let requeued = write_app(config, clock, "retentiond notify retry")
                .await?
                .requeue_notifications(&ids, receiver.as_deref())
                .await?;
            let out = serde_json::json!({ "requeued": requeued });
            emit(json, &out, || {
                format!(
                    "re-queued {} notification(s); the daemon delivers them",
                    requeued.len()
                )
            });
            Ok(())
        }
    }
}

async fn hold(command: HoldCommand, config: &Config, clock: &Clock, json: bool) -> Outcome {
    match command {
        HoldCommand::Place(a) => {
            let app = write_app(config, clock, "retentiond hold place").await?;
            let placed = app
                .place_hold(
                    PlaceHold {
                        case: a.case.into_string(),
                        by: a.by,
                        reason: a.reason,
                        scope: HoldScope {
                            org: a.org,
                            account: a.account,
                            resource: a.resource,
                            kind: a.kind,
                            created_from: a.created_from,
                            created_to: a.created_to,
                        },
                    },
                    None,
                )
                .await?;
            emit(json, &placed, || {
                format!(
                    "hold {} placed (case {}): matches {} resource(s); {} already purged before it took effect{}{}",
                    placed.id,
                    placed.case,
                    placed.matched,
                    placed.already_purged,
                    match placed.already_compacted {
                        Some(0) => String::new(),
                        Some(n) => format!(", and {n} purged earlier whose tombstones were compacted"),
                        None => ", and maybe some purged earlier whose tombstones were compacted (a creation range cannot be matched against the compacted counts)".to_string(),
                    },
                    if placed.in_flight > 0 {
                        format!(
                            "; {} in an interrupted purge (data may be partly gone; `hold show {}` tells how each ends)",
                            placed.in_flight, placed.id
                        )
                    } else {
                        String::new()
                    }
                )
            });
            Ok(())
        }
        HoldCommand::Release { id, by } => {
            let app = write_app(config, clock, "retentiond hold release").await?;
            let r = app.release_hold(id, &by, None).await?;
            emit(json, &r, || match &r {
                admin::ReleaseOutcome::Released(r) => format!(
                    "hold {} released (case {}): {} resource(s) no longer held, {} purgeable at the next sweep",
                    r.id, r.case, r.unblocked, r.purgeable_now
                ),
                admin::ReleaseOutcome::Pending(p) => format!(
                    "hold {} stays active (case {}): {} of {} people have asked to release it ({})",
                    p.id,
                    p.case,
                    p.approvals,
                    p.needed,
                    p.asked_by.join(", ")
                ),
            });
            Ok(())
        }
        HoldCommand::List { active } => {
            let holds = read_app(config, clock).await?.holds(active).await?;
            emit(json, &serde_json::json!({"holds": holds}), || {
                let mut s = String::new();
                for h in &holds {
                    s.push_str(&format!(
                        "{:>4}  {:<8} case={} by={} placed={} scope: {}\n",
                        h.id,
                        if h.is_active() { "active" } else { "released" },
                        h.case,
                        h.placed_by,
                        h.placed_at,
                        h.scope.describe()
                    ));
                }
                if holds.is_empty() {
                    s.push_str("no holds");
                }
                s
            });
            Ok(())
        }
        HoldCommand::Show { id } => {
            let d = read_app(config, clock)
                .await?
                .hold(id)
                .await?
                .ok_or_else(|| Failure::bad_input(format!("unknown hold {id}")))?;
            emit(json, &d, || {
                format!(
                    "hold {} ({})\n  case      {}\n  reason    {}\n  placed    {} by {}\n  released  {} by {}\n  scope     {}\n  matches   {} — by state: {} — by kind: {}",
                    d.hold.id,
                    if d.active { "active" } else { "released" },
                    d.hold.case,
                    opt(&d.hold.reason),
                    d.hold.placed_at,
                    d.hold.placed_by,
                    opt(&d.hold.released_at),
                    opt(&d.hold.released_by),
                    d.hold.scope.describe(),
                    d.matched,
                    d.matched_by_state
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    d.matched_by_kind
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ) + &hold_answer_text(&d)
                    + &d.pending_approvals
                        .iter()
                        .map(|a| format!("\n  release asked by {} at {}", a.by, a.at))
                        .collect::<String>()
            });
            Ok(())
        }
    }
}

async fn org(command: OrgCommand, config: &Config, clock: &Clock, json: bool) -> Outcome {
    match command {
        OrgCommand::Set {
            id,
            plan,
            training_opt_out,
        } => {
            let app = write_app(config, clock, "retentiond org set").await?;
            let o = app.set_org(&id, plan, training_opt_out).await?;
            emit(json, &o, || {
                format!(
                    "org {} plan={} zdr={} training_opt_out={}",
                    o.id, o.plan, o.zdr, o.training_opt_out
                )
            });
            Ok(())
        }
        OrgCommand::Show { id } => {
            let app = read_app(config, clock).await?;
            let o = app
                .org(&id)
                .await?
                .ok_or_else(|| Failure::bad_input(format!("unknown org `{id}`")))?;
            let retention = app.org_windows(Some(&id)).await?;
            let mut out = serde_json::to_value(&o).unwrap_or_default();
            if !retention.is_empty() {
                out["retention"] = serde_json::to_value(&retention).unwrap_or_default();
            }
            emit(json, &out, || {
                let mut lines: String = retention
                    .iter()
                    .map(|r| {
                        let own = r
                            .max_age
                            .map_or_else(|| "the kind's".to_string(), |a| a.to_string());
                        let pending = r.pending.as_ref().map_or_else(String::new, |p| {
                            format!(
                                " (pending: {}, {} row(s) newly due, waiting for `policy accept`)",
                                p.max_age
                                    .map_or_else(|| "the kind's".to_string(), |a| a.to_string()),
                                p.newly_due
                            )
                        });
                        format!("\n  retention {:<8}  {own}{pending}", r.kind)
                    })
                    .collect();
                lines.insert_str(0, &format!(
                    "org {}\n  plan              {}\n  zdr               {}{}\n  training opt-out  {}\n  covered resources waiting for purge: {}",
                    o.id,
                    o.plan,
                    o.zdr,
                    o.zdr_at
                        .map(|t| format!(
                            " (since {t} by {}; {})",
                            opt(&o.zdr_by),
                            opt(&o.zdr_reason)
                        ))
                        .unwrap_or_default(),
                    o.training_opt_out,
                    o.zdr_waiting
                ));
                lines
            });
            Ok(())
        }
        OrgCommand::Retention {
            id,
            kind,
            max_age,
            clear,
            by,
        } => {
            let app = write_app(config, clock, "retentiond org retention").await?;
            if max_age.is_none() && !clear {
                let v = app.org_retention(&id, &kind).await?;
                let kind_age = v.kind_max_age;
                let out = serde_json::json!({"org": id, "kind": kind, "max_age": v.own, "effective": v.effective, "kind_max_age": kind_age, "pending": v.pending});
                emit(json, &out, || {
                    let mut s = match v.own {
                        Some(a) => {
                            format!("org {id}: {kind} kept {a} (its own; the kind's is {kind_age})")
                        }
                        None => format!("org {id}: {kind} kept {kind_age} (the kind's)"),
                    };
                    if let Some(p) = &v.pending {
                        s.push_str(&format!(
                            "\n  pending: {} asked by {} at {}, {} row(s) newly due; `retentiond policy accept` applies it",
                            p.max_age.map_or_else(|| "back to the kind's".to_string(), |a| a.to_string()),
                            p.by,
                            p.at,
                            p.newly_due
                        ));
                    }
                    s
                });
                return Ok(());
            }
            let r = app.set_org_retention(&id, &kind, max_age, &by).await?;
            emit(json, &r, || {
                if r.pending {
                    format!(
                        "org {}: {} would make {} row(s) due within a day, over [safety] max_newly_due ({}): held back; `retentiond policy accept` applies it",
                        r.org, r.kind, r.newly_due, config.max_newly_due
                    )
                } else {
                    format!(
                        "org {}: {} kept {}{}; {} row(s) due within a day by the change",
                        r.org,
                        r.kind,
                        r.effective,
                        if r.max_age.is_some() {
                            " (its own)"
                        } else {
                            " (the kind's)"
                        },
                        r.newly_due
                    )
                }
            });
            Ok(())
        }
        OrgCommand::Zdr {
            action,
            id,
            reason,
            by,
        } => {
            let app = write_app(config, clock, "retentiond org zdr").await?;
            let action = match action {
                ZdrVerb::Request => ZdrAction::Request,
                ZdrVerb::Approve => ZdrAction::Approve,
                ZdrVerb::Deny => ZdrAction::Deny,
            };
            let d = app.zdr(&id, action, &by, reason.as_deref(), None).await?;
            emit(json, &d, || {
                format!(
                    "org {}: ZDR {}{}",
                    d.org,
                    d.zdr,
                    if d.rescheduled > 0 {
                        format!(
                            "; {} covered resource(s) due at the next sweep",
                            d.rescheduled
                        )
                    } else {
                        String::new()
                    }
                )
            });
            Ok(())
        }
    }
}

fn keygen(out: &std::path::Path, json: bool) -> Outcome {
    let key = checkpoint::generate_key().map_err(Failure::runtime)?;
    checkpoint::write_key(out, &key).map_err(Failure::bad_input)?;
    let public_key = checkpoint::public_key_hex(&key.verifying_key());
    emit(
        json,
        &serde_json::json!({"file": out, "public_key": public_key}),
        || {
            format!(
                "wrote a new Ed25519 signing key to {} (mode 0600)\npublic key: {public_key}\n\
                 Set `[audit] signing_key_file` to it, and keep the public key and the checkpoints \
                 where whoever can write the ledger cannot reach them.",
                out.display()
            )
        },
    );
    Ok(())
}

async fn audit_checkpoint(config: &Config, clock: &Clock, json: bool) -> Outcome {
    let app = App::open(std::sync::Arc::new(config.clone()), clock.clone()).await?;
    let taken = app
        .checkpoint("retentiond audit checkpoint")
        .await
        .map_err(|e| match e {
            CheckpointError::Config(m) => Failure::bad_input(m),
            e => Failure::runtime(e.to_string()),
        })?
        .ok_or_else(|| Failure::runtime("no checkpoint taken"))?;
    let cp = &taken.checkpoint;
    emit(json, &taken, || {
        format!(
            "checkpoint signed: seq {} hash {} at {}\n  public key  {}\n  signature   {}\n  recorded    audit seq {}\n  file        {}",
            cp.seq,
            cp.hash,
            cp.at,
            cp.public_key,
            cp.signature,
            taken.entry_seq,
            taken
                .file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(
                    || "- (no audit.checkpoint_dir; keep this output elsewhere)".into()
                )
        )
    });
    Ok(())
}

async fn audit_cmd(command: AuditCommand, config: &Config, clock: &Clock, json: bool) -> Outcome {
    match command {
        AuditCommand::Keygen { out } => keygen(&out, json),
        AuditCommand::Checkpoint => audit_checkpoint(config, clock, json).await,
        AuditCommand::Verify {
            checkpoint: files,
            public_key,
        } => {
            let app = read_app(config, clock).await?;
            let AuditVerification {
                verified: v,
                trust,
                files,
            } = app.verify_audit(&files, public_key.as_deref()).await?;
            // A failed `--json` verify answers through its `Failure` (one JSON object only).
            let answered_by_failure = json && !v.ok;
            if !answered_by_failure {
                emit(json, &v, || {
                    let mut s = match (&v.error, &v.head) {
                        (Some(e), _) if e.seq == 0 => format!(
                            "audit chain NOT verified ({} entries link up): {}",
                            v.entries, e.problem
                        ),
                        (Some(e), _) => {
                            format!("audit chain BROKEN after {} good entries: {e}", v.entries)
                        }
                        (None, Some(h)) => format!(
                            "audit chain intact: {} entries, head seq {} hash {}",
                            v.entries, h.seq, h.hash
                        ),
                        (None, None) => "audit chain intact: no entries yet".into(),
                    };
                    if v.ok {
                        match &v.last_checkpoint {
                        Some(c) => s.push_str(&format!(
                            "\nmatches {} signed checkpoint(s); up to seq {} it is the chain signed at {} ({})",
                            v.checkpoints_verified, c.seq, c.at, c.source
                        )),
                        None => s.push_str(
                            "\nno signed checkpoint checked: a chain rewritten whole would pass; verify against a checkpoint kept elsewhere (--checkpoint)",
                        ),
                    }
                        if files > 0 || matches!(trust, Trust::Given(_)) {
                            s.push_str(&format!(
                                "\nsignatures checked against {}",
                                trust.describe()
                            ));
                        }
                    }
                    s
                });
            }
            if v.ok {
                Ok(())
            } else {
                let answer = answered_by_failure
                    .then(|| serde_json::to_value(&v).ok())
                    .flatten();
                Err(Failure {
                    code: 1,
                    message: match v.error {
                        Some(e) if e.seq == 0 => {
                            format!("audit verification failed: {}", e.problem)
                        }
                        Some(e) => e.to_string(),
                        None => String::new(),
                    },
                    details: Vec::new(),
                    json: answer,
                })
            }
        }
        AuditCommand::Export { since, until } => {
            let app = read_app(config, clock).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            app.export_audit(since, until, |e| {
                writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default())
            })
            .await?;
            out.flush().map_err(|e| Failure::runtime(e.to_string()))?;
            Ok(())
        }
        AuditCommand::Head => {
            let head = read_app(config, clock).await?.audit_head().await?;
            emit(
                json,
                &serde_json::json!({"seq": head.as_ref().map(|h| h.seq), "hash": head.as_ref().map(|h| &h.hash)}),
                || match &head {
                    Some(h) => format!("{} {}", h.seq, h.hash),
                    None => "no entries yet".into(),
                },
            );
            Ok(())
        }
        AuditCommand::Receipt { account } => {
            let r = read_app(config, clock)
                .await?
                .receipt(&account)
                .await?
                .ok_or_else(|| Failure::bad_input(format!("unknown account `{account}`")))?;
            emit(json, &r, || {
                let mut s = format!(
                    "Proof of deletion — account {} (org {})\n  state                {}\n  deletion requested   {}\n  grace                {}\n  purge after          {}\n  purged at            {}\n  resources purged     {}\n",
                    r.account,
                    r.org,
                    r.state,
                    opt(&r.deletion_requested_at),
                    opt(&r.grace),
                    opt(&r.purge_after),
                    opt(&r.purged_at),
                    if r.resources_purged.is_empty() {
                        "none".to_string()
                    } else {
                        r.resources_purged
                            .iter()
                            .map(|(k, n)| format!("{k}={n}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                );
                if !r.window_rows.is_empty() {
                    s.push_str(&format!(
                        "  log rows deleted     {} (by time window, in the account's purge)\n",
                        r.window_rows
                            .iter()
                            .map(|(k, n)| format!("{k}={n}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                }
                if let Some(c) = &r.compacted {
                    s.push_str(&format!(
                        "  tombstones compacted {} (older than [ledger] tombstone_retention; counted by {} audit entr{} tombstones.compacted, seq {}; {})\n",
                        c.resources.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" "),
                        c.entries,
                        if c.entries == 1 { "y" } else { "ies" },
                        if c.seqs.is_empty() {
                            format!("{}..{}", c.first_seq, c.last_seq)
                        } else {
                            c.seqs.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                        },
                        match c.chain_agrees {
                            Some(true) => "their counts for this account add up",
                            Some(false) => "THEIR COUNTS FOR THIS ACCOUNT DO NOT ADD UP",
                            None => "too many entries to add up here",
                        }
                    ));
                }
                if r.not_purged.is_empty() {
                    s.push_str("  not purged           nothing\n");
                } else {
                    s.push_str(&format!("  not purged           {}:\n", r.not_purged.len()));
                    for k in &r.not_purged {
                        let cases: Vec<String> = k
                            .holds
                            .iter()
                            .map(|h| format!("hold {} case {}", h.id, h.case))
                            .collect();
                        s.push_str(&format!(
                            "    {} {} ({}): {}{}\n",
                            k.kind,
                            k.id,
                            k.state,
                            k.why,
                            if cases.is_empty() {
                                String::new()
                            } else {
                                format!(" [{}]", cases.join(", "))
                            }
                        ));
                    }
                }
                s.push_str(&format!(
                    "  evidence             {} purge receipt(s), audit seq {}..{}; account purged at seq {}; head seq {} hash {}\n  signed checkpoint    {}\n  verify with          {}",
                    r.evidence.receipts,
                    opt(&r.evidence.first_seq),
                    opt(&r.evidence.last_seq),
                    opt(&r.evidence.account_purged_seq),
                    opt(&r.evidence.head_seq),
                    opt(&r.evidence.head_hash),
                    match &r.evidence.checkpoint {
                        Some(c) => format!(
                            "seq {} hash {} at {} by key {}",
                            c.seq, c.hash, c.at, c.public_key
                        ),
                        None => "none yet covers these entries".into(),
                    },
                    r.evidence.verify_with
                ));
                s
            });
            Ok(())
        }
    }
}

/// `hold show`: the hold's answer, made exact as in-flight purges are found out (issue 30).
fn hold_answer_text(d: &admin::HoldDetail) -> String {
    let mut s = match d.already_purged {
        Some(n) => format!("\n  already purged before it took effect: {n}"),
        None => String::new(),
    };
    if d.in_flight_resources.is_empty() {
        return s;
    }
    let mut by_outcome: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for f in &d.in_flight_resources {
        let k = f
            .outcome
            .map_or("not found out yet".to_string(), |o| o.to_string());
        by_outcome.entry(k).or_default().push(&f.resource);
    }
    s.push_str(&format!(
        "\n  in flight when placed: {}",
        d.in_flight_resources.len()
    ));
    for (outcome, ids) in by_outcome {
        let shown: Vec<&str> = ids.iter().take(10).copied().collect();
        let more = if ids.len() > shown.len() {
            format!(" … and {} more", ids.len() - shown.len())
        } else {
            String::new()
        };
        s.push_str(&format!(
            "\n    {outcome}: {} ({}{more})",
            ids.len(),
            shown.join(", ")
        ));
    }
    s
}
