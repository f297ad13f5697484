//! Logging: tracing to stderr, text for terminals or one JSON object per line for journald and
//! Loki. The level comes from `RUST_LOG` if set, else `[log] level`, else `info`.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat, level: Option<&str>) {
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
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| level.and_then(|l| EnvFilter::try_new(with_quiet_sqlx(l)).ok()))
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.compact().try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
