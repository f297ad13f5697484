//! The one TOML config file (§5): loading, validation that names the key and the bad value, and
//! the effective policy derived from it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::model::Span;
use crate::rules::{KindPolicy, SchedulePolicy};

pub const DEFAULT_PATH: &str = "/etc/retentiond/retentiond.toml";

/// Kinds that are stateful products: ZDR never touches them (R6). Marking one `zdr = true` is a
/// config error rather than silently ignored, so a mistaken config is caught before it deploys.
pub const STATEFUL_KINDS: &[&str] = &["conversation", "file", "agent", "library", "batch_file"];

/// The named parameters a purge or verify statement may use.
pub const STATEMENT_PARAMS: &[&str] = &["id", "kind", "account", "org"];

/// The placeholders a files target's `path`, an object store's `key` and an HTTP target's
/// `url` may use, besides `attrs.NAME` (an attribute of `resource.created`).
pub const PATH_PLACEHOLDERS: &[&str] = &["id", "kind", "account", "org"];

/// The placeholders of a template (`{id}`, `{attrs.path}` …), or an error naming what is wrong.
pub fn template_placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has an unclosed `{{`"))?;
        let name = &after[..close];
        let attr_ok = name.strip_prefix("attrs.").is_some_and(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !PATH_PLACEHOLDERS.contains(&name) && !attr_ok {
            return Err(format!(
                "`{template}` uses `{{{name}}}`; allowed: {{id}}, {{kind}}, {{account}}, {{org}}, {{attrs.NAME}}"
            ));
        }
        names.push(name.to_string());
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{template}` has an unmatched `}}`"));
    }
    Ok(names)
}

/// The attribute names (`NAME` of `{attrs.NAME}`) among a template's placeholders.
fn attr_names(names: &[String]) -> impl Iterator<Item = String> + '_ {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("attrs.").map(str::to_string))
}

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

/// A value that must not be printed: a database URL may carry a password.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }
    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Query parameters whose value is a secret (a password in `?password=` or `?sslpassword=`).
fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|s| k.contains(s))
}

/// Every URL retentiond prints (ledger, targets, sources) goes through here: parsed as sqlx
/// parses it (the `url` crate: the user-info ends at the *last* `@`), the password and every
/// secret query parameter replaced by `***`. A URL that does not parse shows its scheme only,
/// since where its secret ends cannot be known.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return match raw.split_once(':') {
            Some((scheme, _))
                if scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
            {
                format!("{scheme}://*** (not a valid URL; redacted)")
            }
            _ => "*** (not a valid URL; redacted)".to_string(),
        };
    };
    let secret_password = u.password().is_some_and(|p| !p.is_empty());
    let secret_query = u
        .query_pairs()
        .any(|(k, v)| is_secret_param(&k) && !v.is_empty());
    if !secret_password && !secret_query {
        // Nothing to hide: print it as written, not as the parser would normalise it.
        return raw.to_string();
    }
    if secret_password {
        let _ = u.set_password(Some("***"));
    }
    if let Some(query) = u.query().map(str::to_string) {
        // Rewrite only the secret values; keep every other parameter exactly as written.
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if is_secret_param(
                        &url::form_urlencoded::parse(k.as_bytes())
                            .next()
                            .map(|(k, _)| k.into_owned())
                            .unwrap_or_default(),
                    ) =>
                {
                    format!("{k}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        u.set_query(Some(&redacted.join("&")));
    }
    u.to_string()
}

/// Connection parameters sqlx's PostgreSQL driver understands in a URL's query. It ignores any
/// other one and logs it *with its value*, so an unknown one (`sslpassword=…`) is a config error.
const PG_URL_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

// ---------------------------------------------------------------------------------------------
// Raw file shape. Every section denies unknown keys (§5).

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<RawDatabase>,
    #[serde(default)]
    scheduler: RawScheduler,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    accounts: RawAccounts,
    #[serde(default)]
    zdr: RawZdr,
    #[serde(default)]
    kinds: BTreeMap<String, RawKind>,
    #[serde(default)]
    targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    safety: RawSafety,
    http: Option<RawHttp>,
    #[serde(default)]
    holds: RawHolds,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    max_connections: Option<u32>,
}

fn default_sweep() -> String {
    "*/10 * * * * *".into()
}
fn default_batch() -> usize {
    500
}
fn default_batches_per_transaction() -> usize {
    4
}
fn default_lease() -> Span {
    Span::from_secs(300)
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> Span {
    Span::from_secs(30)
}
fn default_backoff_max() -> Span {
    Span::from_secs(3600)
}
fn default_watchdog_stall() -> Span {
    Span::from_secs(600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    #[serde(default = "default_sweep")]
    sweep: String,
    #[serde(default = "default_batch")]
    batch_size: usize,
    #[serde(default = "default_batches_per_transaction")]
    batches_per_transaction: usize,
    #[serde(default = "default_lease")]
    lease: Span,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_backoff")]
    retry_backoff: Span,
    #[serde(default = "default_backoff_max")]
    retry_backoff_max: Span,
    #[serde(default = "default_watchdog_stall")]
    stall_after: Span,
}

impl Default for RawScheduler {
    fn default() -> Self {
        RawScheduler {
            sweep: default_sweep(),
            batch_size: default_batch(),
            batches_per_transaction: default_batches_per_transaction(),
            lease: default_lease(),
            max_attempts: default_attempts(),
            retry_backoff: default_backoff(),
            retry_backoff_max: default_backoff_max(),
            stall_after: default_watchdog_stall(),
        }
    }
}

fn default_skew() -> Span {
    Span::from_secs(300)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    #[serde(default = "default_skew")]
    max_clock_skew: Span,
    #[serde(default = "default_dedup_window")]
    dedup_window: Span,
}

fn default_dedup_window() -> Span {
    Span::from_secs(30 * 86_400)
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            max_clock_skew: default_skew(),
            dedup_window: default_dedup_window(),
        }
    }
}

fn default_account_grace() -> Span {
    Span::from_secs(30 * 86_400)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccounts {
    #[serde(default = "default_account_grace")]
    grace_after_delete: Span,
    #[serde(default)]
    targets: Vec<String>,
}

impl Default for RawAccounts {
    fn default() -> Self {
        RawAccounts {
            grace_after_delete: default_account_grace(),
            targets: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawZdr {
    #[serde(default)]
    endpoints: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKind {
    grace_after_delete: Span,
    grace_after_account_delete: Option<Span>,
    max_age: Option<Span>,
    #[serde(default)]
    zdr: bool,
    #[serde(default)]
    targets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawTarget {
    Sql(RawSqlTarget),
    Files(RawFilesTarget),
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlTarget {
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default)]
    purge: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    verify: BTreeMap<String, Vec<String>>,
    #[serde(default = "yes")]
    secure_delete: bool,
    vacuum: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesTarget {
    root: String,
    path: String,
    account_path: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHolds {
    #[serde(default = "one")]
    release_approvals: u32,
}

impl Default for RawHolds {
    fn default() -> Self {
        RawHolds {
            release_approvals: 1,
        }
    }
}

fn default_max_newly_due() -> u64 {
    1000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    #[serde(default = "default_max_newly_due")]
    max_newly_due: u64,
}

impl Default for RawSafety {
    fn default() -> Self {
        RawSafety {
            max_newly_due: default_max_newly_due(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    #[serde(default)]
    token_name: Option<String>,
    read_token_file: Option<PathBuf>,
    read_token_env: Option<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    max_body: Option<usize>,
    #[serde(default)]
    timeout: Option<Span>,
}

/// One `[[http.tokens]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    file: Option<PathBuf>,
    env: Option<String>,
    scopes: Vec<String>,
}

fn default_poll() -> Span {
    Span::from_secs(1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    table: String,
    #[serde(default = "default_poll")]
    poll: Span,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    signing_key_file: Option<PathBuf>,
    checkpoint: Option<String>,
    checkpoint_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated config.

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
    pub http: Option<HttpConfig>,
    /// `holds.release_approvals`: how many different people must ask before a hold is released.
    pub release_approvals: u32,
    pub sources: BTreeMap<String, SourceConfig>,
    pub audit: AuditConfig,
    pub log_level: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretUrl,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub sweep: String,
    /// Resources per target transaction.
    pub batch_size: usize,
    /// Target batches one purge transaction of the ledger covers: each batch is recorded while
    /// the next one's targets run, and holds and other writers wait for at most this many.
    pub batches_per_transaction: usize,
    pub lease: Span,
    pub max_attempts: u32,
    pub retry_backoff: Span,
    pub retry_backoff_max: Span,
    /// Readiness and the systemd watchdog fail when no sweep completed for this long.
    pub stall_after: Span,
}

#[derive(Debug, Clone)]
pub struct KindConfig {
    pub targets: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum TargetConfig {
    Sql(SqlTargetConfig),
    Files(FilesTargetConfig),
}

#[derive(Debug, Clone)]
pub struct SqlTargetConfig {
    pub url: SecretUrl,
    /// Statements per kind, plus `account` for account-level purges.
    pub purge: BTreeMap<String, Vec<String>>,
    pub verify: BTreeMap<String, Vec<String>>,
    pub secure_delete: bool,
    pub vacuum: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FilesTargetConfig {
    pub root: PathBuf,
    pub path: String,
    pub account_path: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: String,
    /// Every accepted token: `[[http.tokens]]`, then the legacy write token (`token_file` /
    /// `token_env`, scopes events, read, holds) and read token (`read_token_*`, scope read).
    pub tokens: Vec<TokenConfig>,
    /// Whether the legacy keys were used (the daemon then warns once at start-up).
    pub legacy_tokens: bool,
    pub max_body: usize,
    pub timeout: Span,
}

/// A bearer token the API accepts: its name (recorded as `via`), where its secret is, and
/// what it may do.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub name: String,
    /// The config key its secret comes from, for errors (`http.tokens[0]`, `http.token`).
    pub key: String,
    pub source: TokenSource,
    pub scopes: BTreeSet<Scope>,
}

/// What a bearer token may do (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `POST /v1/events`.
    Events,
    /// Every `GET` under `/v1`.
    Read,
    /// Place and release legal holds.
    Holds,
    /// Create and update orgs, training opt-out, request ZDR.
    Orgs,
    /// Approve and deny ZDR requests.
    ZdrDecide,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Events,
        Scope::Read,
        Scope::Holds,
        Scope::Orgs,
        Scope::ZdrDecide,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Events => "events",
            Scope::Read => "read",
            Scope::Holds => "holds",
            Scope::Orgs => "orgs",
            Scope::ZdrDecide => "zdr:decide",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: SecretUrl,
    pub table: String,
    pub poll: Span,
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

    /// A one-screen description of the effective policy, for `check-config`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        use std::fmt::Write;
        let _ = writeln!(out, "config: {} (valid)", self.file);
        let _ = writeln!(out, "ledger: {}", self.database.url.redacted());
        let _ = writeln!(
            out,
            "sweep: \"{}\" UTC, batch {} ({} per purge transaction), lease {}, max attempts {}",
            self.scheduler.sweep,
            self.scheduler.batch_size,
            self.scheduler.batches_per_transaction,
            self.scheduler.lease,
            self.scheduler.max_attempts
        );
        let _ = writeln!(
            out,
            "accounts: grace_after_delete {}, targets [{}]",
            self.policy.account_grace,
            self.account_targets.join(", ")
        );
        let _ = writeln!(out, "kinds:");
        let _ = writeln!(
            out,
            "  {:<14} {:>12} {:>16} {:>10} {:>4}  targets",
            "kind", "grace", "account grace", "max_age", "zdr"
        );
        for (name, k) in &self.policy.kinds {
            let targets = self
                .kinds
                .get(name)
                .map(|k| k.targets.join(", "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<14} {:>12} {:>16} {:>10} {:>4}  {}",
                name,
                k.grace_after_delete.to_string(),
                k.grace_after_account_delete.to_string(),
                k.max_age
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
                if k.zdr_endpoints.is_some() {
                    "yes"
                } else {
                    "no"
                },
                targets
            );
        }
        if let Some(z) = self
            .policy
            .kinds
            .values()
            .find_map(|k| k.zdr_endpoints.as_ref())
        {
            let _ = writeln!(
                out,
                "zdr endpoints: {}",
                z.iter().cloned().collect::<Vec<_>>().join(" ")
            );
        }
        let _ = writeln!(out, "targets:");
        for (name, t) in &self.targets {
            match t {
                TargetConfig::Sql(s) => {
                    let _ = writeln!(
                        out,
                        "  {name}: sql {} (secure_delete {}{})",
                        s.url.redacted(),
                        if s.secure_delete { "on" } else { "off" },
                        s.vacuum
                            .as_ref()
                            .map(|v| format!(", vacuum \"{v}\" UTC"))
                            .unwrap_or_default()
                    );
                }
                TargetConfig::Files(f) => {
                    let _ = writeln!(out, "  {name}: files {}/{}", f.root.display(), f.path);
                }
            }
        }
        for (name, src) in &self.sources {
            let _ = writeln!(
                out,
                "source {name}: outbox {} table {} every {}",
                src.url.redacted(),
                src.table,
                src.poll
            );
        }
        let _ = writeln!(out, "safety: max_newly_due {}", self.max_newly_due);
        match &self.http {
            Some(h) => {
                let _ = writeln!(out, "http: {}", h.listen);
                for t in &h.tokens {
                    let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                    let _ = writeln!(out, "  token {}: {}", t.name, scopes.join(", "));
                }
            }
            None => {
                let _ = writeln!(out, "http: off");
            }
        }
        out
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

/// Where a section's URL comes from: exactly one of `url` (inline), `url_env` (an environment
/// variable) or `url_file` (a file holding it, e.g. a systemd `LoadCredential=` credential).
/// Every section that takes a URL resolves it here.
fn resolve_url(
    ctx: &Ctx<'_>,
    key: &str,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
) -> Result<SecretUrl, ConfigError> {
    let given = [url.is_some(), url_env.is_some(), url_file.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given > 1 {
        return Err(ctx.err(
            key,
            "give one of `url`, `url_env` or `url_file`, not several",
        ));
    }
    if let Some(u) = url {
        return check_url(ctx, &format!("{key}.url"), u);
    }
    if let Some(var) = url_env {
        return match std::env::var(&var) {
            Ok(u) => check_url(ctx, &format!("{key}.url_env"), u),
            Err(_) => Err(ctx.err(
                format!("{key}.url_env"),
                format!("environment variable `{var}` is not set"),
            )),
        };
    }
    if let Some(path) = url_file {
        return match std::fs::read_to_string(&path) {
            // One line; the newline an editor or `echo` leaves is not part of the URL.
            Ok(text) => check_url(ctx, &format!("{key}.url_file"), text.trim().to_string()),
            Err(e) => Err(ctx.err(
                format!("{key}.url_file"),
                format!("cannot read `{}`: {e}", path.display()),
            )),
        };
    }
    Err(ctx.err(
        format!("{key}.url"),
        "missing: set `url`, `url_env` or `url_file`",
    ))
}

fn check_url(ctx: &Ctx<'_>, key: &str, url: String) -> Result<SecretUrl, ConfigError> {
    let u = SecretUrl::new(url);
    if u.is_postgres() {
        let parsed = url::Url::parse(u.expose())
            .map_err(|e| ctx.err(key, format!("`{}` is not a valid URL ({e})", u.redacted())))?;
        for (k, _) in parsed.query_pairs() {
            if !PG_URL_PARAMS.contains(&k.as_ref()) && !k.starts_with("options[") {
                return Err(ctx.err(
                    key,
                    format!(
                        "`{}`: `{k}` is not a PostgreSQL connection parameter retentiond can pass on (known: {}, options[NAME])",
                        u.redacted(),
                        PG_URL_PARAMS.join(", ")
                    ),
                ));
            }
        }
        Ok(u)
    } else if u.is_sqlite() {
        Ok(u)
    } else {
        Err(ctx.err(
            key,
            format!("`{}` is not a sqlite:// or postgres:// URL", u.redacted()),
        ))
    }
}

/// Checks a cron expression exactly as the scheduler will parse it (six fields, with seconds).
pub fn check_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if fields < 6 {
        return Err(format!(
            "`{expr}` has {fields} fields; the cron needs 6 or 7 with seconds first, e.g. \"*/10 * * * * *\""
        ));
    }
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("`{expr}` is not a valid cron expression ({e})"))
}

/// The named parameters (`:id` …) used by a statement, in order of first use.
pub fn statement_params(sql: &str) -> Vec<String> {
    named_to_positional(sql).1
}

/// Rewrites `:name` parameters to `$1`, `$2`… (understood by both SQLite and PostgreSQL),
/// skipping string literals, quoted identifiers, comments and PostgreSQL `::` casts. Returns the
/// new text and the parameter names in positional order.
pub fn named_to_positional(sql: &str) -> (String, Vec<String>) {
    rewrite_named(sql, |_, pos| format!("${pos}"))
}

/// Rewrites each `:name` parameter to what `param(name, position)` returns (positions count
/// distinct names from 1, in order of first use), with the same lexical rules as
/// [`named_to_positional`]. Returns the new text and the names in positional order.
pub fn rewrite_named(
    sql: &str,
    mut param: impl FnMut(&str, usize) -> String,
) -> (String, Vec<String>) {
    let b = sql.as_bytes();
    let mut names: Vec<String> = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j > start && !b[start].is_ascii_digit() {
                    let name = &sql[start..j];
                    let pos = match names.iter().position(|n| n == name) {
                        Some(p) => p + 1,
                        None => {
                            names.push(name.to_string());
                            names.len()
                        }
                    };
                    out.push_str(&sql[copied..i]);
                    out.push_str(&param(name, pos));
                    copied = j;
                }
                i = j.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    (out, names)
}

/// The placeholders of a path template, or an error naming what is wrong.
pub fn path_placeholders(template: &str) -> Result<Vec<String>, String> {
    let names = template_placeholders(template)?;
    let p = Path::new(template);
    if p.is_absolute() {
        return Err(format!("`{template}` must be relative to `root`"));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(format!(
                    "`{template}` could escape `root` (`..` or absolute part)"
                ));
            }
        }
    }
    if template.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(names)
}

fn build(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let db = raw.database.ok_or_else(|| {
        ctx.err(
            "database.url",
            "missing: the [database] section is required",
        )
    })?;
    let database = DatabaseConfig {
        url: resolve_url(ctx, "database", db.url, db.url_env, db.url_file)?,
        max_connections: db.max_connections,
    };

    let s = raw.scheduler;
    check_cron(&s.sweep).map_err(|m| ctx.err("scheduler.sweep", m))?;
    if s.batch_size == 0 || s.batch_size > 10_000 {
        return Err(ctx.err(
            "scheduler.batch_size",
            format!("{} is out of range 1..=10000", s.batch_size),
        ));
    }
    if s.batches_per_transaction == 0 || s.batches_per_transaction > 64 {
        return Err(ctx.err(
            "scheduler.batches_per_transaction",
            format!("{} is out of range 1..=64", s.batches_per_transaction),
        ));
    }
    if s.max_attempts == 0 {
        return Err(ctx.err("scheduler.max_attempts", "must be at least 1"));
    }
    if s.lease < Span::from_secs(1) {
        return Err(ctx.err("scheduler.lease", format!("{} is shorter than 1s", s.lease)));
    }
    let scheduler = SchedulerConfig {
        sweep: s.sweep,
        batch_size: s.batch_size,
        batches_per_transaction: s.batches_per_transaction,
        lease: s.lease,
        max_attempts: s.max_attempts,
        retry_backoff: s.retry_backoff,
        retry_backoff_max: s.retry_backoff_max.max(s.retry_backoff),
        stall_after: s.stall_after,
    };

    // Targets first: kinds refer to them.
    let mut targets = BTreeMap::new();
    let mut target_attrs = BTreeSet::new();
    for (name, t) in raw.targets {
        let key = format!("targets.{name}");
        check_name(ctx, &key, &name)?;
        let cfg = match t {
            RawTarget::Sql(sql) => {
                let url = resolve_url(ctx, &key, sql.url, sql.url_env, sql.url_file)?;
                for (section, map) in [("purge", &sql.purge), ("verify", &sql.verify)] {
                    for (kind, stmts) in map {
                        for (i, stmt) in stmts.iter().enumerate() {
                            let k = format!("{key}.{section}.{kind}[{i}]");
                            if stmt.trim().is_empty() {
                                return Err(ctx.err(k, "empty statement"));
                            }
                            for p in statement_params(stmt) {
                                if !STATEMENT_PARAMS.contains(&p.as_str()) {
                                    return Err(ctx.err(
                                        k,
                                        format!("unknown parameter `:{p}` in `{stmt}`; allowed: :id, :kind, :account, :org"),
                                    ));
                                }
                                if kind == "account" && p != "account" && p != "org" {
                                    return Err(ctx.err(
                                        k,
                                        format!("account statements can use :account and :org, not `:{p}`"),
                                    ));
                                }
                            }
                        }
                    }
                }
                if let Some(v) = &sql.vacuum {
                    check_cron(v).map_err(|m| ctx.err(format!("{key}.vacuum"), m))?;
                }
                TargetConfig::Sql(SqlTargetConfig {
                    url,
                    purge: sql.purge,
                    verify: sql.verify,
                    secure_delete: sql.secure_delete,
                    vacuum: sql.vacuum,
                })
            }
            RawTarget::Files(f) => {
                if f.root.trim().is_empty() {
                    return Err(ctx.err(format!("{key}.root"), "must not be empty"));
                }
                let names =
                    path_placeholders(&f.path).map_err(|m| ctx.err(format!("{key}.path"), m))?;
                target_attrs.extend(attr_names(&names));
                if !names.iter().any(|n| n == "id" || n.starts_with("attrs.")) {
                    return Err(ctx.err(
                        format!("{key}.path"),
                        format!(
                            "`{}` must contain {{id}} (or an {{attrs.NAME}}), or every resource would map to one file",
                            f.path
                        ),
                    ));
                }
                if let Some(ap) = &f.account_path {
                    let names = path_placeholders(ap)
                        .map_err(|m| ctx.err(format!("{key}.account_path"), m))?;
                    if !names.iter().any(|n| n == "account")
                        || names
                            .iter()
                            .any(|n| n == "id" || n == "kind" || n.starts_with("attrs."))
                    {
                        return Err(ctx.err(
                            format!("{key}.account_path"),
                            format!(
                                "`{ap}` must contain {{account}} and may use {{org}}, nothing else"
                            ),
                        ));
                    }
                }
                TargetConfig::Files(FilesTargetConfig {
                    root: PathBuf::from(f.root),
                    path: f.path,
                    account_path: f.account_path,
                })
            }
        };
        targets.insert(name, cfg);
    }

    let mut endpoints = BTreeSet::new();
    for (i, e) in raw.zdr.endpoints.iter().enumerate() {
        if !e.starts_with('/') {
            return Err(ctx.err(
                format!("zdr.endpoints[{i}]"),
                format!("`{e}` is not a path like \"/v1/chat/completions\""),
            ));
        }
        endpoints.insert(e.clone());
    }

    let mut kinds = BTreeMap::new();
    let mut policy = SchedulePolicy {
        account_grace: raw.accounts.grace_after_delete,
        kinds: BTreeMap::new(),
    };
    if raw.kinds.is_empty() {
        return Err(ctx.err(
            "kinds",
            "no kinds configured: add at least one [kinds.NAME] section",
        ));
    }
    for (name, k) in raw.kinds {
        let key = format!("kinds.{name}");
        check_name(ctx, &key, &name)?;
        if name == "account" {
            return Err(ctx.err(key, "`account` is reserved for account-level statements"));
        }
        if k.zdr && STATEFUL_KINDS.contains(&name.as_str()) {
            return Err(ctx.err(
                format!("{key}.zdr"),
                format!("`{name}` is a stateful product; ZDR covers only stateless API logs and never touches conversations, files, agents, libraries or batch files (R6)"),
            ));
        }
        if k.zdr && endpoints.is_empty() {
            return Err(ctx.err(
                format!("{key}.zdr"),
                "zdr = true but zdr.endpoints is empty",
            ));
        }
        if k.targets.is_empty() {
            return Err(ctx.err(
                format!("{key}.targets"),
                "empty: a kind needs at least one target, or its purges would delete nothing",
            ));
        }
        for (i, t) in k.targets.iter().enumerate() {
            check_target_ref(ctx, &format!("{key}.targets[{i}]"), t, &name, &targets)?;
        }
        policy.kinds.insert(
            name.clone(),
            KindPolicy {
                grace_after_delete: k.grace_after_delete,
                grace_after_account_delete: k
                    .grace_after_account_delete
                    .unwrap_or(raw.accounts.grace_after_delete),
                max_age: k.max_age,
                zdr_endpoints: if k.zdr { Some(endpoints.clone()) } else { None },
            },
        );
        kinds.insert(name, KindConfig { targets: k.targets });
    }
    for (i, t) in raw.accounts.targets.iter().enumerate() {
        check_target_ref(
            ctx,
            &format!("accounts.targets[{i}]"),
            t,
            "account",
            &targets,
        )?;
    }
    // Statements for kinds nobody configured are almost always a typo.
    for (tname, t) in &targets {
        if let TargetConfig::Sql(sql) = t {
            for (section, map) in [("purge", &sql.purge), ("verify", &sql.verify)] {
                for kind in map.keys() {
                    if kind != "account" && !kinds.contains_key(kind) {
                        return Err(ctx.err(
                            format!("targets.{tname}.{section}.{kind}"),
                            format!(
                                "`{kind}` is not a configured kind (kinds: {})",
                                kinds.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
        }
    }

    let http = match raw.http {
        None => None,
        Some(h) => {
            let write_token = token_source(ctx, "http.token", h.token_file, h.token_env)?;
            let read_token =
                token_source(ctx, "http.read_token", h.read_token_file, h.read_token_env)?;
            match h.listen {
                None => None,
                Some(listen) => {
                    if listen.parse::<std::net::SocketAddr>().is_err() {
                        return Err(ctx.err(
                            "http.listen",
                            format!("`{listen}` is not an address like \"127.0.0.1:9464\""),
                        ));
                    }
                    let legacy_tokens = write_token.is_some() || read_token.is_some();
                    let mut tokens = Vec::new();
                    for (i, t) in h.tokens.into_iter().enumerate() {
                        let key = format!("http.tokens[{i}]");
                        check_name(ctx, &format!("{key}.name"), &t.name)?;
                        let source = match (t.file, t.env) {
                            (Some(f), None) => TokenSource::File(f),
                            (None, Some(e)) => TokenSource::Env(e),
                            (Some(_), Some(_)) => {
                                return Err(ctx.err(key, "give either `file` or `env`, not both"));
                            }
                            (None, None) => {
                                return Err(ctx.err(
                                    key,
                                    "missing: give `file` (a token file) or `env` (a variable)",
                                ));
                            }
                        };
                        let mut scopes = BTreeSet::new();
                        for (j, sc) in t.scopes.iter().enumerate() {
                            let Some(scope) = Scope::parse(sc) else {
                                return Err(ctx.err(
                                    format!("{key}.scopes[{j}]"),
                                    format!(
                                        "unknown scope `{sc}` (scopes: events, read, holds, orgs, zdr:decide)"
                                    ),
                                ));
                            };
                            scopes.insert(scope);
                        }
                        if scopes.is_empty() {
                            return Err(ctx.err(
                                format!("{key}.scopes"),
                                "empty: a token needs at least one scope",
                            ));
                        }
                        tokens.push(TokenConfig {
                            name: t.name,
                            key,
                            source,
                            scopes,
                        });
                    }
                    if let Some(source) = write_token {
                        tokens.push(TokenConfig {
                            name: h.token_name.unwrap_or_else(|| "http-token".into()),
                            key: "http.token".into(),
                            source,
                            scopes: [Scope::Events, Scope::Read, Scope::Holds].into(),
                        });
                    }
                    if let Some(source) = read_token {
                        tokens.push(TokenConfig {
                            name: "read-token".into(),
                            key: "http.read_token".into(),
                            source,
                            scopes: [Scope::Read].into(),
                        });
                    }
                    let mut names = BTreeSet::new();
                    for t in &tokens {
                        if !names.insert(t.name.as_str()) {
                            return Err(ctx.err(
                                format!("{}.name", t.key),
                                format!(
                                    "two tokens are named `{}`: a name says who acted (`via`), so it must be unique",
                                    t.name
                                ),
                            ));
                        }
                    }
                    Some(HttpConfig {
                        listen,
                        tokens,
                        legacy_tokens,
                        max_body: h.max_body.unwrap_or(16 * 1024 * 1024),
                        timeout: h.timeout.unwrap_or(Span::from_secs(30)),
                    })
                }
            }
        }
    };

    let mut sources = BTreeMap::new();
    for (name, s) in raw.sources {
        let key = format!("sources.{name}");
        check_name(ctx, &key, &name)?;
        let url = resolve_url(ctx, &key, s.url, s.url_env, s.url_file)?;
        if !s
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || s.table.is_empty()
        {
            return Err(ctx.err(
                format!("{key}.table"),
                format!("`{}` is not a plain table name", s.table),
            ));
        }
        if s.poll < Span(10) {
            return Err(ctx.err(
                format!("{key}.poll"),
                format!("{} is shorter than 10ms", s.poll),
            ));
        }
        sources.insert(
            name,
            SourceConfig {
                url,
                table: s.table,
                poll: s.poll,
            },
        );
    }

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
    Ok(Config {
        file: ctx.file.to_string(),
        database,
        scheduler,
        max_clock_skew: raw.ingest.max_clock_skew,
        dedup_window: raw.ingest.dedup_window,
        policy,
        account_targets: raw.accounts.targets,
        kinds,
        targets,
        target_attrs,
        max_newly_due: raw.safety.max_newly_due,
        http,
        release_approvals: raw.holds.release_approvals,
        sources,
        audit: AuditConfig {
            signing_key_file: raw.audit.signing_key_file,
            checkpoint: raw.audit.checkpoint,
            checkpoint_dir: raw.audit.checkpoint_dir,
        },
        log_level: raw.log.level,
    })
}

fn token_source(
    ctx: &Ctx<'_>,
    key: &str,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Option<TokenSource>, ConfigError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(ctx.err(
            key,
            "give either a token file or a token env variable, not both",
        )),
        (Some(f), None) => Ok(Some(TokenSource::File(f))),
        (None, Some(e)) => Ok(Some(TokenSource::Env(e))),
        (None, None) => Ok(None),
    }
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

fn check_target_ref(
    ctx: &Ctx<'_>,
    key: &str,
    target: &str,
    kind: &str,
    targets: &BTreeMap<String, TargetConfig>,
) -> Result<(), ConfigError> {
    match targets.get(target) {
        None => Err(ctx.err(
            key,
            format!(
                "unknown target `{target}` (defined: {})",
                if targets.is_empty() {
                    "none".to_string()
                } else {
                    targets.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        )),
        Some(TargetConfig::Sql(sql)) => {
            if sql.purge.get(kind).is_none_or(|s| s.is_empty()) {
                Err(ctx.err(
                    key,
                    format!("target `{target}` has no statements for `{kind}`: add targets.{target}.purge.{kind}"),
                ))
            } else {
                Ok(())
            }
        }
        Some(TargetConfig::Files(f)) => {
            if kind == "account" && f.account_path.is_none() {
                Err(ctx.err(
                    key,
                    format!(
                        "files target `{target}` needs `account_path` to purge at account level"
                    ),
                ))
            } else {
                Ok(())
            }
        }
    }
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
        assert!(c.describe().contains("api_log"));
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
        let e = err_of("[database\nurl=1");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn statement_params_skip_literals_and_casts() {
        assert_eq!(
            statement_params(
                "DELETE FROM t WHERE a = :id AND b = ':nope' AND c = :id::text AND d = :org -- :x"
            ),
            vec!["id", "org"]
        );
    }

    #[test]
    fn named_parameters_become_positional() {
        let (sql, names) = named_to_positional(
            "DELETE FROM m WHERE c = :id AND o = :org AND x = ':id' AND c2 = :id::text",
        );
        assert_eq!(
            sql,
            "DELETE FROM m WHERE c = $1 AND o = $2 AND x = ':id' AND c2 = $1::text"
        );
        assert_eq!(names, vec!["id", "org"]);
    }

    #[test]
    fn secrets_are_redacted() {
        let u = SecretUrl::new("postgres://app:hunter2@db/app");
        assert_eq!(u.redacted(), "postgres://app:***@db/app");
        assert!(!format!("{u:?}").contains("hunter2"));
        // Every form sqlx accepts, each with its secret gone (issue 22).
        for (url, shown) in [
            ("postgres://app:p@ss@db/app", "postgres://app:***@db/app"),
            (
                "postgresql://app:p%40ss@db:5432/app",
                "postgresql://app:***@db:5432/app",
            ),
            ("postgres://:s3cret@db/app", "postgres://:***@db/app"),
            (
                "postgres://db/app?user=app&password=s3cret",
                "postgres://db/app?user=app&password=***",
            ),
            (
                "postgres://app@db/app?sslpassword=s3cret&sslmode=require",
                "postgres://app@db/app?sslpassword=***&sslmode=require",
            ),
            (
                "postgres://app:a:b@c@db/app?options[search_path]=x",
                "postgres://app:***@db/app?options[search_path]=x",
            ),
            (
                "postgres://app:pa/ss@db/app",
                "postgres://*** (not a valid URL; redacted)",
            ),
            (
                "sqlite:///var/lib/retentiond/ledger.db",
                "sqlite:///var/lib/retentiond/ledger.db",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            for secret in ["p@ss", "p%40ss", "s3cret", "a:b@c", "pa/ss"] {
                assert!(!redact_url(url).contains(secret), "{url}");
            }
        }
    }
}
