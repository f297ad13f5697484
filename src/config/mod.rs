//! The one TOML config file (§5). A [`Config`] that exists is valid: every key was checked and
//! every reference resolved when it was built, so the rest of retentiond never re-checks it.
//!
//! The mechanism: [`Config::parse`] reads the file into the serde types of [`raw`] (unknown keys
//! refused), then builds each section in turn — its own module where it is more than a few
//! checks (`scheduler`, `targets`, `kinds`, `http`, `notify`, `sources`) — and the checks that
//! span sections (a kind's targets exist and can purge it). The built types have no other
//! constructor. The first problem found is the error: it names the file, the key and the bad
//! value (a secret redacted, see [`secret`]).

mod http;
mod kinds;
mod notify;
mod raw;
mod scheduler;
mod secret;
mod sources;
mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::model::Span;
use crate::rules::SchedulePolicy;

use raw::RawConfig;

pub use http::{HttpConfig, Scope, TokenConfig, TokenSource};
pub use kinds::{KindConfig, STATEFUL_KINDS};
pub use notify::{NOTIFY_TYPES, NotifyConfig};
pub use scheduler::{SchedulerConfig, check_cron};
pub use secret::{SecretHttpUrl, SecretToken, SecretUrl, redact_http_url, redact_url};
pub use sources::SourceConfig;
pub use targets::{
    AzureCredential, AzureLocation, FilesTargetConfig, GcsCredential, GcsLocation, HttpMethod,
    HttpTargetConfig, ObjectStoreTargetConfig, ObjectVersions, S3Credentials, S3Location,
    SqlTargetConfig, StoreLocation, TargetConfig,
};

pub const DEFAULT_PATH: &str = "/etc/retentiond/retentiond.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// The validated configuration. Built only by [`Config::load`] / [`Config::parse`].
#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub database: DatabaseConfig,
    pub scheduler: SchedulerConfig,
    pub max_clock_skew: Span,
    /// `ingest.dedup_window`: how long event ids are remembered (see `IngestContext`).
    pub dedup_window: Span,
    pub policy: SchedulePolicy,
    pub account_targets: Vec<String>,
    pub kinds: BTreeMap<String, KindConfig>,
    pub targets: BTreeMap<String, TargetConfig>,
    /// The `resource.created` attributes some target's template names (`{attrs.NAME}`): the
    /// only ones besides `endpoint` the ledger keeps.
    pub target_attrs: BTreeSet<String>,
    pub max_newly_due: u64,
    /// `[zdr] endpoints`: the stateless endpoints whose inputs and outputs an approved org's
    /// requests must not leave behind (R6; `GET /v1/data-controls`).
    pub zdr_endpoints: BTreeSet<String>,
    pub http: Option<HttpConfig>,
    /// `holds.release_approvals`: how many different people must ask before a hold is released.
    pub release_approvals: u32,
    pub sources: BTreeMap<String, SourceConfig>,
    pub audit: AuditConfig,
    pub log_level: Option<String>,
    /// `[metrics] listen`: an address serving `/metrics` alone (with or without `[http]`).
    pub metrics_listen: Option<String>,
    /// `[notify.NAME]`: receivers of signed notifications, by name.
    pub notify: BTreeMap<String, NotifyConfig>,
    /// `[ledger] tombstone_retention` (default 400 days): how long a purged resource's tombstone
    /// (R9) stays in the ledger before it is compacted into per-day, per-kind, per-cause counts.
    /// Longer than any backup is kept, since `reapply` after a restore needs the tombstones of
    /// everything purged since that backup was taken.
    pub tombstone_retention: Span,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretUrl,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    pub signing_key_file: Option<PathBuf>,
    pub checkpoint: Option<String>,
    pub checkpoint_dir: Option<PathBuf>,
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { file };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            ctx.err(
                location(text, e.span()),
                format!("not valid TOML: {}", e.message()),
            )
        })?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let key = if path == "." { String::new() } else { path };
            let loc = location(text, inner.span());
            let key = match (key.is_empty(), loc.is_empty()) {
                (true, _) => loc,
                (false, true) => key,
                (false, false) => format!("{key} ({loc})"),
            };
            ctx.err(key, inner.message().to_string())
        })?;
        build(raw, &ctx)
    }

    /// Kinds whose resources a target purges.
    pub fn kinds_of_target(&self, target: &str) -> Vec<&str> {
        self.kinds
            .iter()
            .filter(|(_, k)| k.targets.iter().any(|t| t == target))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// `line L, column C` for a byte span in `text`.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let upto = &text[..span.start.min(text.len())];
    let line = upto.matches('\n').count() + 1;
    let col = upto
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    format!("line {line}, column {col}")
}

/// Builds the sections in the order their errors are reported: a config with several problems
/// names the same first one in every release.
fn build(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let db = raw.database.ok_or_else(|| {
        ctx.err(
            "database.url",
            "missing: the [database] section is required",
        )
    })?;
    let database = DatabaseConfig {
        url: secret::resolve_url(ctx, "database", db.url, db.url_env, db.url_file)?,
        max_connections: db.max_connections,
    };
    let scheduler = scheduler::build(ctx, raw.scheduler)?;

    // Targets first: kinds refer to them.
    let targets::Built {
        mut targets,
        attrs: target_attrs,
        raw_windows,
    } = targets::build(ctx, raw.targets)?;
    let endpoints = kinds::zdr_endpoints(ctx, &raw.zdr)?;
    let (kinds, policy) = kinds::build(
        ctx,
        raw.kinds,
        &raw.accounts,
        &endpoints,
        &targets,
        &raw_windows,
    )?;
    for (i, t) in raw.accounts.targets.iter().enumerate() {
        targets::check_target_ref(
            ctx,
            &format!("accounts.targets[{i}]"),
            t,
            "account",
            &targets,
        )?;
    }
    targets::attach_windows(ctx, raw_windows, &kinds, &policy, &mut targets)?;
    targets::check_statement_kinds(ctx, &targets, &kinds)?;

    let http = http::build(ctx, raw.http)?;

    let mut notify = BTreeMap::new();
    for (name, n) in raw.notify {
        let key = format!("notify.{name}");
        let cfg = notify::build(ctx, &key, n)?;
        notify.insert(name, cfg);
    }

    let metrics_listen = raw.metrics.listen;
    if let Some(listen) = &metrics_listen {
        let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
            return Err(ctx.err(
                "metrics.listen",
                format!("`{listen}` is not an address like \"127.0.0.1:9465\""),
            ));
        };
        if let Some(h) = &http
            && h.listen.parse::<std::net::SocketAddr>().ok() == Some(addr)
        {
            return Err(ctx.err(
                "metrics.listen",
                format!(
                    "`{listen}` is http.listen too: the HTTP API already serves /metrics there; remove [metrics] or pick another port"
                ),
            ));
        }
    }
    let sources = sources::build(ctx, raw.sources)?;

    if let Some(c) = &raw.audit.checkpoint {
        check_cron(c).map_err(|m| ctx.err("audit.checkpoint", m))?;
        if raw.audit.signing_key_file.is_none() {
            return Err(ctx.err(
                "audit.checkpoint",
                "needs audit.signing_key_file to sign checkpoints",
            ));
        }
    }
    if let Some(level) = &raw.log.level
        && tracing_subscriber::EnvFilter::try_new(level).is_err()
    {
        return Err(ctx.err(
            "log.level",
            format!("`{level}` is not a log filter like \"info\" or \"retentiond=debug\""),
        ));
    }

    if !(1..=9).contains(&raw.holds.release_approvals) {
        return Err(ctx.err(
            "holds.release_approvals",
            format!(
                "{} is out of range 1..=9 (people who must ask before a hold is released)",
                raw.holds.release_approvals
            ),
        ));
    }
    if raw.ingest.dedup_window.millis() <= 0 {
        return Err(ctx.err(
            "ingest.dedup_window",
            format!(
                "`{}` must be longer than 0s: events with an event_id dated before now - dedup_window are refused",
                raw.ingest.dedup_window
            ),
        ));
    }
    if raw.ledger.tombstone_retention.millis() <= 0 {
        return Err(ctx.err(
            "ledger.tombstone_retention",
            format!(
                "`{}` must be longer than 0s: tombstones are what `reapply` re-runs after a backup restore; keep them longer than any backup",
                raw.ledger.tombstone_retention
            ),
        ));
    }
    Ok(Config {
        file: ctx.file.to_string(),
        database,
        scheduler,
        max_clock_skew: raw.ingest.max_clock_skew,
        dedup_window: raw.ingest.dedup_window,
        policy: SchedulePolicy {
            tombstone_retention: Some(raw.ledger.tombstone_retention),
            ..policy
        },
        account_targets: raw.accounts.targets,
        kinds,
        targets,
        target_attrs,
        max_newly_due: raw.safety.max_newly_due,
        zdr_endpoints: endpoints,
        http,
        release_approvals: raw.holds.release_approvals,
        sources,
        audit: AuditConfig {
            signing_key_file: raw.audit.signing_key_file,
            checkpoint: raw.audit.checkpoint,
            checkpoint_dir: raw.audit.checkpoint_dir,
        },
        log_level: raw.log.level,
        metrics_listen,
        notify,
        tombstone_retention: raw.ledger.tombstone_retention,
    })
}

fn check_name(ctx: &Ctx<'_>, key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ctx.err(
            key,
            format!("`{name}` is not a name of letters, digits, `_` or `-`"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[database]
url = "sqlite://var/ledger.db"
[accounts]
grace_after_delete = "30d"
targets = ["app_db"]
[zdr]
endpoints = ["/v1/chat/completions"]
[kinds.conversation]
grace_after_delete = "30d"
targets = ["app_db"]
[kinds.api_log]
grace_after_delete = "0s"
max_age = "30d"
zdr = true
targets = ["app_db"]
[kinds.file]
grace_after_delete = "30d"
targets = ["app_db", "uploads"]
[targets.app_db]
type = "sql"
url = "sqlite://var/app.db"
[targets.app_db.purge]
conversation = ["DELETE FROM messages WHERE conversation_id = :id", "DELETE FROM conversations WHERE id = :id"]
api_log = ["DELETE FROM api_logs WHERE id = :id"]
file = ["DELETE FROM files WHERE id = :id"]
account = ["DELETE FROM users WHERE id = :account"]
[targets.uploads]
type = "files"
root = "var/uploads"
path = "{account}/{id}"
"#;

    fn err_of(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn the_spec_example_is_valid_and_resolves_defaults() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        let conv = &c.policy.kinds["conversation"];
        assert_eq!(conv.grace_after_account_delete, Span::from_secs(30 * 86400));
        assert!(c.policy.kinds["api_log"].zdr_endpoints.is_some());
        assert_eq!(c.scheduler.batch_size, 500);
    }

    #[test]
    fn scoped_tokens_are_validated() {
        let http = |t: &str| format!("{GOOD}\n[http]\nlisten = \"127.0.0.1:1\"\n{t}");
        let c = Config::parse(
            &http(
                "token_file = \"/t\"\n[[http.tokens]]\nname = \"legal\"\nenv = \"T\"\nscopes = [\"holds\", \"read\"]\n",
            ),
            "t.toml",
        )
        .unwrap();
        let h = c.http.unwrap();
        assert!(h.legacy_tokens);
        assert_eq!(h.tokens.len(), 2);
        assert_eq!(h.tokens[0].name, "legal");
        assert_eq!(h.tokens[0].scopes, [Scope::Holds, Scope::Read].into());
        assert_eq!(h.tokens[1].name, "http-token");
        assert_eq!(
            h.tokens[1].scopes,
            [Scope::Events, Scope::Read, Scope::Holds].into()
        );
        let e = err_of(&http(
            "[[http.tokens]]\nname = \"a\"\nenv = \"T\"\nscopes = [\"delete-everything\"]\n",
        ));
        assert!(
            e.contains("http.tokens[0].scopes[0]") && e.contains("delete-everything"),
            "{e}"
        );
        let e = err_of(&http(
            "[[http.tokens]]\nname = \"a\"\nenv = \"T\"\nscopes = [\"read\"]\n[[http.tokens]]\nname = \"a\"\nenv = \"U\"\nscopes = [\"events\"]\n",
        ));
        assert!(
            e.contains("http.tokens[1].name") && e.contains("`a`"),
            "{e}"
        );
        let e = err_of(&http(
            "token_name = \"app\"\ntoken_env = \"T\"\n[[http.tokens]]\nname = \"app\"\nenv = \"U\"\nscopes = [\"read\"]\n",
        ));
        assert!(e.contains("two tokens are named `app`"), "{e}");
        let e = err_of(&http(
            "[[http.tokens]]\nname = \"a\"\nscopes = [\"read\"]\n",
        ));
        assert!(e.contains("http.tokens[0]") && e.contains("`file`"), "{e}");
        let e = err_of(&http(
            "[[http.tokens]]\nname = \"a\"\nenv = \"T\"\nscopes = []\n",
        ));
        assert!(e.contains("http.tokens[0].scopes"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let e = err_of(&GOOD.replace("max_age = \"30d\"", "max_age = \"30x\""));
        assert!(
            e.contains("kinds.api_log.max_age") && e.contains("`30x`"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("[zdr]", "[zdr]\nbogus = 1"));
        assert!(
            e.contains("zdr.bogus") && e.contains("unknown field"),
            "{e}"
        );
        let e = err_of(&GOOD.replace(
            "targets = [\"app_db\", \"uploads\"]",
            "targets = [\"app_db\", \"s3\"]",
        ));
        assert!(
            e.contains("kinds.file.targets[1]") && e.contains("`s3`"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("WHERE id = :id\"]", "WHERE id = :ident\"]"));
        assert!(
            e.contains("targets.app_db.purge") && e.contains(":ident"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("{account}/{id}", "../{id}"));
        assert!(
            e.contains("targets.uploads.path") && e.contains("escape"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("url = \"sqlite://var/ledger.db\"", ""));
        assert!(e.contains("database.url") && e.contains("missing"), "{e}");
        let e = err_of(&format!("[scheduler]\nsweep = \"*/10 * * * *\"\n{GOOD}"));
        assert!(e.contains("scheduler.sweep") && e.contains("6"), "{e}");
        let e = err_of(&GOOD.replace("[kinds.file]", "[kinds.file]\nzdr = true"));
        assert!(
            e.contains("kinds.file.zdr") && e.contains("stateful"),
            "{e}"
        );
        let e = err_of(&format!(
            "{GOOD}\n[ledger]\ntombstone_retention = \"forever\"\n"
        ));
        assert!(
            e.contains("ledger.tombstone_retention") && e.contains("forever"),
            "{e}"
        );
        let e = err_of(&format!("{GOOD}\n[ledger]\ntombstone_retention = \"0s\"\n"));
        assert!(
            e.contains("ledger.tombstone_retention") && e.contains("reapply"),
            "{e}"
        );
        let c = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.tombstone_retention, Span::from_secs(400 * 86_400));
        let e = err_of("[database\nurl=1");
        assert!(e.contains("line 1"), "{e}");
    }
}
