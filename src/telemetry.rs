//! Logging. Invariant: no log line carries user content, only ids, kinds, states and counts;
//! each decision that matters is one line.
//!
//! Mechanism: tracing to stderr, text for terminals or one JSON object per line for Loki; under
//! systemd (`$JOURNAL_STREAM` names stderr, systemd.exec(5)) straight to journald with a
//! PRIORITY per level and the key=value fields as journal fields. The level comes from
//! `RUST_LOG` if set, else `[log] level`, else `info`.
//!
//! The decisions an operator looks up (purged, hold placed/released, policy held back, target
//! failure) carry a `message_id` field: the journal's stable `MESSAGE_ID` (`journalctl
//! MESSAGE_ID=…`). Text output leaves it out; JSON keeps it.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `MESSAGE_ID`s (128-bit, made once with `systemd-id128 new`): never change one, an operator's
/// saved `journalctl MESSAGE_ID=` queries and alerts depend on it.
pub mod message_id {
    /// A resource purged from every target.
    pub const PURGED: &str = "37e08ae75db84934a42e1b5f33c665a5";
    /// A legal hold placed.
    pub const HOLD_PLACED: &str = "c095a086652346938ca56c1a13df03f5";
    /// A legal hold released.
    pub const HOLD_RELEASED: &str = "e3a863b5e6d247dbb1e584e4e7079c2d";
    /// A policy change held back by the mass-purge guard.
    pub const POLICY_HELD_BACK: &str = "ad4b703942d447a6a7b3768ffdc89396";
    /// A target failed to purge (retried, given up, or an account purge failed).
    pub const TARGET_FAILURE: &str = "9eb5c6eaa63440a588782a4b4f896212";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// journald when stderr is the journal (`$JOURNAL_STREAM`), else text.
    #[default]
    Auto,
    Text,
    Json,
    /// The journal's native protocol, whatever stderr is.
    Journal,
}

/// Whether `$JOURNAL_STREAM` (`device:inode`, set by systemd for a service whose stderr goes to
/// the journal) names this process's stderr: a child whose stderr was redirected elsewhere
/// inherits the variable but not the stream.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

fn filter(level: Option<&str>) -> EnvFilter {
    // sqlx reports server notices (e.g. "relation already exists, skipping") and
    // tokio-cron-scheduler its internals ("Uninited", "Job creator created") at info: keep those
    // out of the operator's log unless a crate is asked for explicitly.
    let with_quiet_sqlx = |l: &str| {
        let mut f = l.to_string();
        for noisy in ["sqlx", "tokio_cron_scheduler"] {
            if !l.contains(noisy) {
                f.push_str(&format!(",{noisy}=warn"));
            }
        }
        f
    };
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| level.and_then(|l| EnvFilter::try_new(with_quiet_sqlx(l)).ok()))
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,tokio_cron_scheduler=warn"))
}

/// The journald layer: fields unprefixed (`ID=`, `ACCOUNT=`, `MESSAGE_ID=`), INFO at
/// `info` (6) rather than the crate's default `notice`, identifier `retentiond`.
fn journald() -> std::io::Result<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier("retentiond".into())
        .with_priority_mappings(PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        }))
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat, level: Option<&str>) {
    let journal = match format {
        LogFormat::Journal => true,
        LogFormat::Auto => stderr_is_journal(),
        LogFormat::Text | LogFormat::Json => false,
    };
    if journal {
        match journald() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter(level))
                    .with(layer)
                    .try_init();
                return;
            }
            Err(e) => {
                // Text on stderr still reaches the journal, as plain lines.
                eprintln!("warning: cannot write to journald ({e}); logging text on stderr");
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        _ => builder.compact().fmt_fields(WithoutMessageId).try_init(),
    };
}

/// Text fields as tracing-subscriber writes them, less `message_id` (a journal field).
struct WithoutMessageId;

impl<'a> MakeVisitor<Writer<'a>> for WithoutMessageId {
    type Visitor = Skip<DefaultVisitor<'a>>;
    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        Skip(DefaultVisitor::new(target, true))
    }
}

struct Skip<V>(V);

impl<V: Visit> Visit for Skip<V> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "message_id" {
            self.0.record_debug(field, value)
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message_id" {
            self.0.record_str(field, value)
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value)
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value)
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value)
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value)
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for Skip<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for Skip<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}
