//! The one TOML config file (§5): loading, validation that names the key and the bad value, and
//! the effective policy derived from it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::model::Span;
use crate::rules::{KindPolicy, SchedulePolicy};
use crate::template::{
    self, STATEMENT_PARAMS, key_placeholders, path_placeholders, statement_params,
    template_placeholders,
};

pub const DEFAULT_PATH: &str = "/etc/retentiond/retentiond.toml";

/// Kinds that are stateful products: ZDR never touches them (R6). Marking one `zdr = true` is a
/// config error rather than silently ignored, so a mistaken config is caught before it deploys.
pub const STATEFUL_KINDS: &[&str] = &["conversation", "file", "agent", "library", "batch_file"];

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

/// An http target's URL template (`url`, `verify_url`, `account_url`): a service's deletion API
/// is often authorised by the URL itself (`?api_key=…`, a signature `?sig=…`, a key as the
/// user-info `https://KEY@host/`), so it is shown with [`redact_http_url`], which hides more
/// than [`redact_url`] does.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHttpUrl(String);

impl SecretHttpUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretHttpUrl(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The template with its user-info and every query value replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_http_url(&self.0)
    }
}

impl fmt::Debug for SecretHttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// How an http target's URL template is printed (check-config, logs, errors, `status`): the
/// user-info, whatever it holds (`KEY@`, `user:pass@`), becomes `***@`; every query value
/// becomes `***` (a parameter without `=` becomes `***` whole), except a value that is exactly
/// one placeholder (`?account={account}`: the template, not a value); a fragment becomes `#***`.
/// The scheme, host, port and path are kept as written, placeholders included. Works on the
/// text, not on a parsed URL, so a template that does not parse is redacted just the same. A
/// secret in the *path* cannot be told from an id and is shown: put secrets in `token_file`.
pub fn redact_http_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => raw.split_at(i + 3),
        None => ("", raw),
    };
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) if !f.is_empty() => (r, "#***"),
        Some((r, _)) => (r, "#"),
        None => (rest, ""),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let query = query.map(|q| {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if v.is_empty() || is_one_placeholder(v) => format!("{k}={v}"),
                Some((k, _)) => format!("{k}=***"),
                None if pair.is_empty() => String::new(),
                None => "***".to_string(),
            })
            .collect();
        format!("?{}", pairs.join("&"))
    });
    format!(
        "{scheme}{host}{path}{}{fragment}",
        query.unwrap_or_default()
    )
}

/// `{name}` with a placeholder name (letters, digits, `_`, `.`): a template's value, not a
/// secret.
fn is_one_placeholder(v: &str) -> bool {
    v.strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
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
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    notify: BTreeMap<String, RawNotify>,
}

/// `[notify.NAME]`: a receiver of signed notifications (§8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    url: String,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    events: Vec<String>,
    retry_backoff: Option<Span>,
    retry_backoff_max: Option<Span>,
    max_age: Option<Span>,
    timeout: Option<Span>,
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
    /// Required for kinds tracked per item; meaningless for windowed ones.
    grace_after_delete: Option<Span>,
    #[serde(default)]
    tracking: crate::window::Tracking,
    grace_after_account_delete: Option<Span>,
    max_age: Option<Span>,
    /// Windowed kinds: the bounds of an org's own max_age (`org retention`, W4).
    max_age_min: Option<Span>,
    max_age_max: Option<Span>,
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
    #[serde(rename = "object_store")]
    ObjectStore(RawObjectStoreTarget),
    Http(RawHttpTarget),
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
    /// `[targets.T.windows.K]`: how the target's table maps to a windowed kind (issue 29).
    #[serde(default)]
    windows: BTreeMap<String, crate::window::RawWindowMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesTarget {
    root: String,
    path: String,
    account_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjectStoreTarget {
    url: String,
    endpoint: Option<String>,
    region: Option<String>,
    key: String,
    versions: Option<String>,
    account_prefix: Option<String>,
    access_key_id_env: Option<String>,
    secret_access_key_env: Option<String>,
    session_token_env: Option<String>,
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
    session_token_file: Option<PathBuf>,
    concurrency: Option<usize>,
    timeout: Option<Span>,
}

/// `type = "http"`: a service's own deletion API (issue 21). The token is never inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTarget {
    url: String,
    method: Option<String>,
    body: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    /// A string, parsed here: inside the tagged enum serde would not name the key.
    timeout: Option<String>,
    verify_url: Option<String>,
    concurrency: Option<usize>,
    account_url: Option<String>,
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
struct RawMetrics {
    listen: Option<String>,
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
}

/// A receiver of signed notifications (`[notify.NAME]`).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub url: SecretHttpUrl,
    /// The HMAC-SHA256 key of `Retentiond-Signature`.
    pub secret: SecretToken,
    /// The decision types it gets (`notify::TYPES`).
    pub events: BTreeSet<String>,
    /// The first retry's delay; doubles up to `retry_backoff_max`.
    pub retry_backoff: Span,
    pub retry_backoff_max: Span,
    /// Retries stop this long after the decision; the notification is then dead-lettered.
    pub max_age: Span,
    pub timeout: Span,
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
    /// Per item (events and ledger rows) or by time window in the targets' tables (issue 29).
    pub tracking: crate::window::Tracking,
    /// Windowed kinds: the bounds of an org's own max_age (W4).
    pub max_age_min: Option<Span>,
    pub max_age_max: Option<Span>,
}

#[derive(Debug, Clone)]
pub enum TargetConfig {
    Sql(SqlTargetConfig),
    Files(FilesTargetConfig),
    ObjectStore(Box<ObjectStoreTargetConfig>),
    Http(HttpTargetConfig),
}

#[derive(Debug, Clone)]
pub struct SqlTargetConfig {
    pub url: SecretUrl,
    /// Statements per kind, plus `account` for account-level purges.
    pub purge: BTreeMap<String, Vec<String>>,
    pub verify: BTreeMap<String, Vec<String>>,
    pub secure_delete: bool,
    pub vacuum: Option<String>,
    /// Windowed kinds' tables in this database, by kind (issue 29).
    pub windows: BTreeMap<String, crate::window::WindowMapping>,
}

#[derive(Debug, Clone)]
pub struct FilesTargetConfig {
    pub root: PathBuf,
    pub path: String,
    pub account_path: Option<String>,
}

/// An `object_store` target: an S3 bucket (or an S3-compatible server) and the key of each
/// resource under a prefix.
#[derive(Debug, Clone)]
pub struct ObjectStoreTargetConfig {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// `endpoint` (path-style addressing), or `None` for AWS S3 in `region`.
    pub endpoint: Option<url::Url>,
    pub region: String,
    pub key: String,
    pub versions: ObjectVersions,
    pub account_prefix: Option<String>,
    pub credentials: S3Credentials,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per request.
    pub timeout: Span,
}

/// What an object-store purge deletes of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectVersions {
    /// Every version and delete marker (a versioned bucket keeps old versions otherwise).
    All,
    /// The current object only (a versioned bucket then keeps its older versions).
    Current,
}

/// S3 credentials, resolved when the config is loaded. `Debug` never shows the secret parts.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where they came from (`access_key_id_env`, `AWS_ACCESS_KEY_ID` …), for `check-config`.
    pub source: String,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Credentials(from {}, secret ***)", self.source)
    }
}

/// An `http` target: templates checked, token read (see [`build_http_target`]).
#[derive(Debug, Clone)]
pub struct HttpTargetConfig {
    /// The URL template (`{id}` … percent-encoded when filled); may carry secrets: redacted.
    pub url: SecretHttpUrl,
    pub method: HttpMethod,
    /// The POST body template (`{{`/`}}` are literal braces; values are JSON-escaped).
    pub body: Option<String>,
    pub token: Option<SecretToken>,
    pub timeout: Span,
    pub verify_url: Option<SecretHttpUrl>,
    pub concurrency: usize,
    /// The account-level purge (R8): a DELETE of this URL (`{account}`, `{org}` only).
    pub account_url: Option<SecretHttpUrl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Delete,
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Delete => "DELETE",
            HttpMethod::Post => "POST",
        }
    }
}

/// A bearer token: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
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
                TargetConfig::ObjectStore(o) => {
                    let _ = writeln!(
                        out,
                        "  {name}: object_store s3://{}/{} key {} versions {}{}{} (credentials from {})",
                        o.bucket,
                        o.prefix,
                        o.key,
                        match o.versions {
                            ObjectVersions::All => "all",
                            ObjectVersions::Current => "current",
                        },
                        o.endpoint
                            .as_ref()
                            .map(|e| format!(", endpoint {e}"))
                            .unwrap_or_default(),
                        o.account_prefix
                            .as_ref()
                            .map(|p| format!(", account_prefix {p}"))
                            .unwrap_or_default(),
                        o.credentials.source
                    );
                }
                TargetConfig::Http(h) => {
                    let _ = writeln!(
                        out,
                        "  {name}: http {} {} (timeout {}, concurrency {}{})",
                        h.method.as_str(),
                        h.url.redacted(),
                        h.timeout,
                        h.concurrency,
                        if h.verify_url.is_some() {
                            ", verified"
                        } else {
                            ""
                        }
                    );
                    if let Some(a) = &h.account_url {
                        let _ = writeln!(out, "    account purge: DELETE {}", a.redacted());
                    }
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
        let _ = writeln!(
            out,
            "metrics: {}",
            match (&self.metrics_listen, &self.http) {
                (Some(m), _) => format!("{m}/metrics"),
                (None, Some(h)) => format!("{}/metrics (the HTTP API)", h.listen),
                (None, None) => "off".into(),
            }
        );
        for (name, n) in &self.notify {
            let _ = writeln!(
                out,
                "notify {name}: POST {} for {} (signed; retries from {} up to {} for {})",
                n.url.redacted(),
                n.events.iter().cloned().collect::<Vec<_>>().join(","),
                n.retry_backoff,
                n.retry_backoff_max,
                n.max_age
            );
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
    let mut raw_windows = BTreeMap::new();
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
                raw_windows.insert(name.clone(), (url.is_postgres(), sql.windows));
                TargetConfig::Sql(SqlTargetConfig {
                    url,
                    purge: sql.purge,
                    verify: sql.verify,
                    secure_delete: sql.secure_delete,
                    vacuum: sql.vacuum,
                    windows: BTreeMap::new(),
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
            RawTarget::ObjectStore(o) => {
                let cfg = object_store_target(ctx, &key, o)?;
                target_attrs.extend(attr_names(
                    &template_placeholders(&cfg.key).unwrap_or_default(),
                ));
                TargetConfig::ObjectStore(Box::new(cfg))
            }
            RawTarget::Http(h) => {
                let (cfg, attrs) = build_http_target(ctx, &key, h)?;
                target_attrs.extend(attrs);
                TargetConfig::Http(cfg)
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
        let windowed = k.tracking == crate::window::Tracking::Window;
        for (i, t) in k.targets.iter().enumerate() {
            let key = format!("{key}.targets[{i}]");
            if windowed {
                check_window_target(ctx, &key, t, &name, &targets, &raw_windows)?;
            } else {
                check_target_ref(ctx, &key, t, &name, &targets)?;
            }
        }
        if windowed && k.max_age.is_none() {
            return Err(ctx.err(
                format!("{key}.max_age"),
                "missing: a kind with tracking = \"window\" is purged by age alone, so max_age is required",
            ));
        }
        if !windowed {
            for (field, v) in [
                ("max_age_min", k.max_age_min),
                ("max_age_max", k.max_age_max),
            ] {
                if v.is_some() {
                    return Err(ctx.err(
                        format!("{key}.{field}"),
                        "bounds an org's own window (`org retention`), which only kinds with tracking = \"window\" have",
                    ));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (k.max_age_min, k.max_age_max)
            && lo > hi
        {
            return Err(ctx.err(
                format!("{key}.max_age_min"),
                format!("{lo} is longer than max_age_max ({hi})"),
            ));
        }
        if let Some(age) = k.max_age {
            if let Some(lo) = k.max_age_min.filter(|lo| age < *lo) {
                return Err(ctx.err(
                    format!("{key}.max_age"),
                    format!("{age} is shorter than max_age_min ({lo})"),
                ));
            }
            if let Some(hi) = k.max_age_max.filter(|hi| age > *hi) {
                return Err(ctx.err(
                    format!("{key}.max_age"),
                    format!("{age} is longer than max_age_max ({hi})"),
                ));
            }
        }
        let grace_after_delete = match (k.grace_after_delete, windowed) {
            (Some(g), _) => g,
            (None, true) => Span::ZERO,
            (None, false) => {
                return Err(ctx.err(
                    format!("{key}.grace_after_delete"),
                    "missing: how long a deleted resource stays recoverable, e.g. \"30d\"",
                ));
            }
        };
        policy.kinds.insert(
            name.clone(),
            KindPolicy {
                grace_after_delete,
                grace_after_account_delete: k
                    .grace_after_account_delete
                    .unwrap_or(raw.accounts.grace_after_delete),
                max_age: k.max_age,
                zdr_endpoints: if k.zdr { Some(endpoints.clone()) } else { None },
                tracking: k.tracking,
            },
        );
        kinds.insert(
            name,
            KindConfig {
                targets: k.targets,
                tracking: k.tracking,
                max_age_min: k.max_age_min,
                max_age_max: k.max_age_max,
            },
        );
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
    // Windows: each mapping belongs to a windowed kind that lists the target.
    for (tname, (postgres, windows)) in raw_windows {
        for (kind, raw) in windows {
            let key = format!("targets.{tname}.windows.{kind}");
            let Some(kc) = kinds.get(&kind) else {
                return Err(ctx.err(
                    key,
                    format!(
                        "`{kind}` is not a configured kind (kinds: {})",
                        kinds.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            if kc.tracking != crate::window::Tracking::Window {
                return Err(ctx.err(
                    key,
                    format!("kind `{kind}` is tracked per item: set kinds.{kind}.tracking = \"window\", or remove this mapping"),
                ));
            }
            if !kc.targets.contains(&tname) {
                return Err(ctx.err(
                    key,
                    format!("kind `{kind}` does not list target `{tname}` in kinds.{kind}.targets"),
                ));
            }
            let zdr = policy.kinds[&kind].zdr_endpoints.is_some();
            let mapping = raw
                .build(postgres, zdr)
                .map_err(|(k, m)| ctx.err(format!("{key}.{k}"), m))?;
            if let Some(TargetConfig::Sql(sql)) = targets.get_mut(&tname) {
                sql.windows.insert(kind, mapping);
            }
        }
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

    let mut notify = BTreeMap::new();
    for (name, n) in raw.notify {
        let key = format!("notify.{name}");
        let cfg = build_notify(ctx, &key, n)?;
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
    })
}

/// Validates an `object_store` target and resolves its credentials.
fn object_store_target(
    ctx: &Ctx<'_>,
    key: &str,
    o: RawObjectStoreTarget,
) -> Result<ObjectStoreTargetConfig, ConfigError> {
    let url_key = format!("{key}.url");
    let (scheme, rest) = o.url.split_once("://").ok_or_else(|| {
        ctx.err(
            &url_key,
            format!("`{}` is not a URL like \"s3://bucket/prefix\"", o.url),
        )
    })?;
    match scheme {
        "s3" => {}
        "gs" => {
            return Err(ctx.err(
                &url_key,
                format!("`{}`: gs:// is not supported; use Google Cloud Storage through its S3-compatible XML API: url = \"s3://BUCKET/prefix\", endpoint = \"https://storage.googleapis.com\" and HMAC keys", o.url),
            ));
        }
        "az" | "azure" | "abfs" | "abfss" => {
            return Err(ctx.err(
                &url_key,
                format!("`{}`: Azure Blob Storage is not supported: only S3 and S3-compatible servers (s3://, with `endpoint`)", o.url),
            ));
        }
        "file" => {
            return Err(ctx.err(
                &url_key,
                format!("`{}`: file:// is not an object store; use a `files` target (type = \"files\") for a local disk", o.url),
            ));
        }
        other => {
            return Err(ctx.err(
                &url_key,
                format!(
                    "`{}`: unknown scheme `{other}`; only s3://bucket/prefix is supported",
                    o.url
                ),
            ));
        }
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !bucket_ok {
        return Err(ctx.err(
            &url_key,
            format!(
                "`{bucket}` is not an S3 bucket name (3-63 lowercase letters, digits, `.` or `-`)"
            ),
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix
        .split('/')
        .any(|s| (s.is_empty() && !prefix.is_empty()) || s == "." || s == "..")
        || prefix.contains(['?', '#'])
    {
        return Err(ctx.err(
            &url_key,
            format!(
                "`{}`: the prefix `{prefix}` has an empty, `.` or `..` segment, or `?`/`#`",
                o.url
            ),
        ));
    }
    let endpoint = match o.endpoint.clone() {
        None => None,
        Some(e) => {
            let u = url::Url::parse(&e).map_err(|err| {
                ctx.err(
                    format!("{key}.endpoint"),
                    format!("`{}` is not a URL ({err})", redact_url(&e)),
                )
            })?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(ctx.err(
                    format!("{key}.endpoint"),
                    format!(
                        "`{}` must be an http:// or https:// URL with a host",
                        redact_url(&e)
                    ),
                ));
            }
            if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                return Err(ctx.err(
                    format!("{key}.endpoint"),
                    "must not carry credentials or a query; use access_key_id_env/secret_access_key_env or the *_file keys",
                ));
            }
            Some(u)
        }
    };
    let region = o.region.clone().unwrap_or_else(|| "us-east-1".into());
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ctx.err(
            format!("{key}.region"),
            format!("`{region}` is not a region name"),
        ));
    }
    let names = key_placeholders(&o.key).map_err(|m| ctx.err(format!("{key}.key"), m))?;
    if !names.iter().any(|n| n == "id" || n.starts_with("attrs.")) {
        return Err(ctx.err(
            format!("{key}.key"),
            format!(
                "`{}` must contain {{id}} (or an {{attrs.NAME}}), or every resource would map to one key",
                o.key
            ),
        ));
    }
    let versions = match o.versions.as_deref() {
        None | Some("all") => ObjectVersions::All,
        Some("current") => ObjectVersions::Current,
        Some(v) => {
            return Err(ctx.err(
                format!("{key}.versions"),
                format!("`{v}` is not \"all\" or \"current\""),
            ));
        }
    };
    if let Some(ap) = &o.account_prefix {
        let names =
            template_placeholders(ap).map_err(|m| ctx.err(format!("{key}.account_prefix"), m))?;
        let segments_ok = !ap.starts_with('/')
            && ap
                .trim_end_matches('/')
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        if !names.iter().any(|n| n == "account")
            || names.iter().any(|n| n != "account" && n != "org")
            || !ap.ends_with('/')
            || !segments_ok
        {
            return Err(ctx.err(
                format!("{key}.account_prefix"),
                format!("`{ap}` must contain {{account}}, may use {{org}}, and must end with `/` (so account a1 never takes a10's keys), without empty, `.` or `..` segments"),
            ));
        }
    }
    let concurrency = o.concurrency.unwrap_or(4);
    if !(1..=64).contains(&concurrency) {
        return Err(ctx.err(
            format!("{key}.concurrency"),
            format!("{concurrency} is out of range 1..=64"),
        ));
    }
    let timeout = o.timeout.unwrap_or(Span::from_secs(30));
    if timeout < Span::from_secs(1) {
        return Err(ctx.err(
            format!("{key}.timeout"),
            format!("{timeout} is shorter than 1s"),
        ));
    }
    let credentials = s3_credentials(ctx, key, &o)?;
    Ok(ObjectStoreTargetConfig {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        endpoint,
        region,
        key: o.key,
        versions,
        account_prefix: o.account_prefix,
        credentials,
        concurrency,
        timeout,
    })
}

/// Credentials of an object store: a pair of `*_env` keys, or of `*_file` keys (systemd
/// `LoadCredential=`), or else the standard `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN`). Never inline. A missing one is an error naming the key.
fn s3_credentials(
    ctx: &Ctx<'_>,
    key: &str,
    o: &RawObjectStoreTarget,
) -> Result<S3Credentials, ConfigError> {
    let env = |k: &str, var: &str| -> Result<String, ConfigError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            _ => Err(ctx.err(
                format!("{key}.{k}"),
                format!("environment variable `{var}` is not set (or empty)"),
            )),
        }
    };
    let file = |k: &str, path: &Path| -> Result<String, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Ok(_) => Err(ctx.err(
                format!("{key}.{k}"),
                format!("`{}` is empty", path.display()),
            )),
            Err(e) => Err(ctx.err(
                format!("{key}.{k}"),
                format!("cannot read `{}`: {e}", path.display()),
            )),
        }
    };
    let by_env = o.access_key_id_env.is_some() || o.secret_access_key_env.is_some();
    let by_file = o.access_key_id_file.is_some() || o.secret_access_key_file.is_some();
    if by_env && by_file {
        return Err(ctx.err(
            key,
            "give the credentials either by `*_env` or by `*_file` keys, not both",
        ));
    }
    let missing = |k: &str, other: &str| {
        ctx.err(
            format!("{key}.{k}"),
            format!("missing: it goes with `{other}`"),
        )
    };
    if by_env {
        let (Some(id), Some(secret)) = (&o.access_key_id_env, &o.secret_access_key_env) else {
            return Err(if o.access_key_id_env.is_none() {
                missing("access_key_id_env", "secret_access_key_env")
            } else {
                missing("secret_access_key_env", "access_key_id_env")
            });
        };
        return Ok(S3Credentials {
            access_key_id: env("access_key_id_env", id)?,
            secret_access_key: env("secret_access_key_env", secret)?,
            session_token: o
                .session_token_env
                .as_deref()
                .map(|t| env("session_token_env", t))
                .transpose()?,
            source: format!("${id}/${secret}"),
        });
    }
    if by_file {
        let (Some(id), Some(secret)) = (&o.access_key_id_file, &o.secret_access_key_file) else {
            return Err(if o.access_key_id_file.is_none() {
                missing("access_key_id_file", "secret_access_key_file")
            } else {
                missing("secret_access_key_file", "access_key_id_file")
            });
        };
        return Ok(S3Credentials {
            access_key_id: file("access_key_id_file", id)?,
            secret_access_key: file("secret_access_key_file", secret)?,
            session_token: o
                .session_token_file
                .as_deref()
                .map(|t| file("session_token_file", t))
                .transpose()?,
            source: format!("{} and {}", id.display(), secret.display()),
        });
    }
    if o.session_token_env.is_some() || o.session_token_file.is_some() {
        return Err(ctx.err(
            key,
            "a session token goes with access_key_id_env/secret_access_key_env or the *_file keys",
        ));
    }
    let std_var = |var: &str| {
        std::env::var(var)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (std_var("AWS_ACCESS_KEY_ID"), std_var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(S3Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: std_var("AWS_SESSION_TOKEN"),
            source: "$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY".into(),
        }),
        _ => Err(ctx.err(
            format!("{key}.access_key_id_env"),
            "no credentials: set access_key_id_env and secret_access_key_env, or access_key_id_file and secret_access_key_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
        )),
    }
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

/// Checks an `http` target: each URL template is http(s) with no placeholder before its path (a
/// value never picks the host the token goes to), the token is read now (a missing or empty
/// one is an error naming its key). Returns the config and the attributes its templates name.
fn build_http_target(
    ctx: &Ctx<'_>,
    key: &str,
    h: RawHttpTarget,
) -> Result<(HttpTargetConfig, Vec<String>), ConfigError> {
    let mut attrs = Vec::new();
    let url = check_http_template(ctx, &format!("{key}.url"), &h.url, false)?;
    attrs.extend(attr_names(&url.1));
    let verify_url = match h.verify_url {
        Some(v) => {
            let (u, names) = check_http_template(ctx, &format!("{key}.verify_url"), &v, false)?;
            attrs.extend(attr_names(&names));
            Some(u)
        }
        None => None,
    };
    let account_url = match h.account_url {
        Some(a) => Some(check_http_template(ctx, &format!("{key}.account_url"), &a, true)?.0),
        None => None,
    };
    let method = match h.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("DELETE") => HttpMethod::Delete,
        Some("POST") => HttpMethod::Post,
        Some(_) => {
            return Err(ctx.err(
                format!("{key}.method"),
                format!(
                    "`{}` is not DELETE or POST",
                    h.method.unwrap_or_default().escape_debug()
                ),
            ));
        }
    };
    if let Some(body) = &h.body {
        if method != HttpMethod::Post {
            return Err(ctx.err(
                format!("{key}.body"),
                "a body is sent only with method = \"POST\"",
            ));
        }
        let names =
            template::body_placeholders(body).map_err(|m| ctx.err(format!("{key}.body"), m))?;
        attrs.extend(attr_names(&names));
    }
    let token = read_secret(ctx, key, "token", h.token_file, h.token_env)?;
    let timeout = match &h.timeout {
        Some(t) => Span::parse(t).map_err(|m| ctx.err(format!("{key}.timeout"), m))?,
        None => Span::from_secs(10),
    };
    if timeout < Span(1) || timeout > Span::from_secs(600) {
        return Err(ctx.err(
            format!("{key}.timeout"),
            format!("{timeout} is out of range 1ms..=10m"),
        ));
    }
    let concurrency = h.concurrency.unwrap_or(8);
    if concurrency == 0 || concurrency > 256 {
        return Err(ctx.err(
            format!("{key}.concurrency"),
            format!("{concurrency} is out of range 1..=256"),
        ));
    }
    Ok((
        HttpTargetConfig {
            url: url.0,
            method,
            body: h.body,
            token,
            timeout,
            verify_url,
            concurrency,
            account_url,
        },
        attrs,
    ))
}

/// A token read from `source`: non-empty, and sendable in a header (visible ASCII). The error
/// names where it came from, never its value.
/// A secret from `{key}.{what}_file` or `{key}.{what}_env` (exactly one may be given), read
/// now: a missing, empty or unprintable one is an error naming its key.
fn read_secret(
    ctx: &Ctx<'_>,
    key: &str,
    what: &str,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Option<SecretToken>, ConfigError> {
    Ok(match token_source(ctx, key, file, env)? {
        None => None,
        Some(TokenSource::File(path)) => {
            let k = format!("{key}.{what}_file");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ctx.err(&k, format!("cannot read `{}`: {e}", path.display())))?;
            Some(check_token(
                ctx,
                &k,
                text.trim(),
                &path.display().to_string(),
            )?)
        }
        Some(TokenSource::Env(var)) => {
            let k = format!("{key}.{what}_env");
            let v = std::env::var(&var).unwrap_or_default();
            Some(check_token(
                ctx,
                &k,
                v.trim(),
                &format!("environment variable `{var}`"),
            )?)
        }
    })
}

/// Checks a `[notify.NAME]` receiver: an http(s) URL without placeholders, a secret, known
/// event types, sane durations.
fn build_notify(ctx: &Ctx<'_>, key: &str, n: RawNotify) -> Result<NotifyConfig, ConfigError> {
    let url = SecretHttpUrl::new(n.url);
    let shown = url.redacted();
    match url::Url::parse(url.expose()) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.fragment().is_none()
                && !url.expose().contains('{') => {}
        Ok(_) => {
            return Err(ctx.err(
                format!("{key}.url"),
                format!("`{shown}` must be an http:// or https:// URL with a host, without placeholders or a fragment"),
            ));
        }
        Err(e) => {
            return Err(ctx.err(
                format!("{key}.url"),
                format!("`{shown}` is not a valid URL ({e})"),
            ));
        }
    }
    let secret =
        read_secret(ctx, key, "secret", n.secret_file, n.secret_env)?.ok_or_else(|| {
            ctx.err(
            key,
            "a receiver needs `secret_file` or `secret_env`: the key notifications are signed with",
        )
        })?;
    if n.events.is_empty() {
        return Err(ctx.err(
            format!("{key}.events"),
            format!(
                "empty: name the decisions to send ({})",
                NOTIFY_TYPES.join(", ")
            ),
        ));
    }
    let mut events = BTreeSet::new();
    for (i, e) in n.events.iter().enumerate() {
        if !NOTIFY_TYPES.contains(&e.as_str()) {
            return Err(ctx.err(
                format!("{key}.events[{i}]"),
                format!("unknown `{e}` (one of {})", NOTIFY_TYPES.join(", ")),
            ));
        }
        events.insert(e.clone());
    }
    let span = |name: &str, v: Option<Span>, default: Span, min: Span| {
        let v = v.unwrap_or(default);
        if v < min {
            Err(ctx.err(
                format!("{key}.{name}"),
                format!("{v} is shorter than {min}"),
            ))
        } else {
            Ok(v)
        }
    };
    let retry_backoff = span(
        "retry_backoff",
        n.retry_backoff,
        Span::from_secs(5),
        Span(1),
    )?;
    let retry_backoff_max = span(
        "retry_backoff_max",
        n.retry_backoff_max,
        Span::from_secs(3600).max(retry_backoff),
        retry_backoff,
    )?;
    let max_age = span("max_age", n.max_age, Span::from_secs(3 * 86_400), Span(1))?;
    let timeout = span("timeout", n.timeout, Span::from_secs(10), Span(1))?;
    if timeout > Span::from_secs(600) {
        return Err(ctx.err(
            format!("{key}.timeout"),
            format!("{timeout} is out of range 1ms..=10m"),
        ));
    }
    Ok(NotifyConfig {
        url,
        secret,
        events,
        retry_backoff,
        retry_backoff_max,
        max_age,
        timeout,
    })
}

/// The decisions a `[notify.NAME]` receiver can subscribe to: each is the action of the audit
/// entry the decision writes. The `audit_notifiable` index (migration 0010) lists the same.
pub const NOTIFY_TYPES: [&str; 7] = [
    "account.purged",
    "hold.placed",
    "hold.released",
    "zdr.approved",
    "zdr.denied",
    "zdr.requested",
    "zdr.revoked",
];

fn check_token(
    ctx: &Ctx<'_>,
    key: &str,
    token: &str,
    source: &str,
) -> Result<SecretToken, ConfigError> {
    if token.is_empty() {
        return Err(ctx.err(key, format!("{source} is missing or empty")));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ctx.err(
            key,
            format!("{source} holds a token with spaces or characters a header cannot carry"),
        ));
    }
    Ok(SecretToken(token.to_string()))
}

/// An http target's URL template: `http://` or `https://`, a host, no placeholder in the
/// scheme or authority, no fragment. A resource URL must name the resource (`{id}` or an
/// `{attrs.NAME}`); an account URL uses `{account}` (and may use `{org}`), nothing else.
fn check_http_template(
    ctx: &Ctx<'_>,
    key: &str,
    template: &str,
    account: bool,
) -> Result<(SecretHttpUrl, Vec<String>), ConfigError> {
    let u = SecretHttpUrl::new(template);
    let shown = u.redacted();
    let names =
        template_placeholders(template).map_err(|m| ctx.err(key, m.replace(template, &shown)))?;
    let lower = template.to_ascii_lowercase();
    let rest = match (
        lower.strip_prefix("http://"),
        lower.strip_prefix("https://"),
    ) {
        (Some(r), _) | (_, Some(r)) => r,
        _ => {
            return Err(ctx.err(key, format!("`{shown}` is not an http:// or https:// URL")));
        }
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('{') {
        return Err(ctx.err(
            key,
            format!(
                "`{shown}`: placeholders may not choose the host; put them in the path or query"
            ),
        ));
    }
    if template.contains('#') {
        return Err(ctx.err(
            key,
            format!("`{shown}` has a fragment (`#`), which is never sent"),
        ));
    }
    let sample = template::sample_url(template);
    match url::Url::parse(&sample) {
        Ok(p) if p.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(_) => return Err(ctx.err(key, format!("`{shown}` has no host"))),
        Err(e) => return Err(ctx.err(key, format!("`{shown}` is not a valid URL ({e})"))),
    }
    if account {
        if !names.iter().any(|n| n == "account")
            || names.iter().any(|n| n != "account" && n != "org")
        {
            return Err(ctx.err(
                key,
                format!("`{shown}` must contain {{account}} and may use {{org}}, nothing else"),
            ));
        }
    } else if !names.iter().any(|n| n == "id" || n.starts_with("attrs.")) {
        return Err(ctx.err(
            key,
            format!("`{shown}` must contain {{id}} (or an {{attrs.NAME}}), or every resource would map to one URL"),
        ));
    }
    Ok((u, names))
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

/// A windowed kind's target must be an SQL target with a `windows.KIND` mapping.
fn check_window_target(
    ctx: &Ctx<'_>,
    key: &str,
    target: &str,
    kind: &str,
    targets: &BTreeMap<String, TargetConfig>,
    raw_windows: &BTreeMap<String, (bool, BTreeMap<String, crate::window::RawWindowMapping>)>,
) -> Result<(), ConfigError> {
    match targets.get(target) {
        None => check_target_ref(ctx, key, target, kind, targets),
        Some(TargetConfig::Sql(_)) => {
            if raw_windows
                .get(target)
                .is_some_and(|(_, w)| w.contains_key(kind))
            {
                Ok(())
            } else {
                Err(ctx.err(
                    key,
                    format!("target `{target}` has no table for windowed kind `{kind}`: add [targets.{target}.windows.{kind}]"),
                ))
            }
        }
        Some(_) => Err(ctx.err(
            key,
            format!("target `{target}` is not an sql target: a windowed kind's rows can only be purged by time in an SQL table"),
        )),
    }
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
        Some(TargetConfig::ObjectStore(o)) => {
            if kind == "account" && o.account_prefix.is_none() {
                Err(ctx.err(
                    key,
                    format!(
                        "object_store target `{target}` needs `account_prefix` (e.g. \"{{account}}/\") to purge at account level"
                    ),
                ))
            } else {
                Ok(())
            }
        }
        Some(TargetConfig::Http(h)) => {
            if kind == "account" && h.account_url.is_none() {
                Err(ctx.err(
                    key,
                    format!("http target `{target}` needs `account_url` to purge at account level"),
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

    /// An http target's URL hides what `redact_url` keeps: any query value (`api_key`, `sig`)
    /// and a user-only user-info (`https://KEY@host/`); placeholders and the path stay.
    #[test]
    fn http_target_urls_hide_user_info_and_every_query_value() {
        for (url, shown) in [
            (
                "https://svc/v1/docs/{id}?api_key=K3Y&sig=S1G",
                "https://svc/v1/docs/{id}?api_key=***&sig=***",
            ),
            (
                "https://K3Y@svc/v1/docs/{id}",
                "https://***@svc/v1/docs/{id}",
            ),
            (
                "http://u:S1G@svc:8080/d/{id}?account={account}&x=K3Y",
                "http://***@svc:8080/d/{id}?account={account}&x=***",
            ),
            (
                "http://svc/d/{id}?K3Y&a=&b={attrs.c}",
                "http://svc/d/{id}?***&a=&b={attrs.c}",
            ),
            (
                "http://svc/d/{id}?a={id}K3Y&b=S1G;c=d#K3Y",
                "http://svc/d/{id}?a=***&b=***#***",
            ),
            ("K3Y@svc/d/{id}?t=S1G", "***@svc/d/{id}?t=***"),
            (
                "http://127.0.0.1:8081/v1/documents/{id}",
                "http://127.0.0.1:8081/v1/documents/{id}",
            ),
        ] {
            let u = SecretHttpUrl::new(url);
            assert_eq!(u.redacted(), shown, "{url}");
            for secret in ["K3Y", "S1G"] {
                assert!(!u.redacted().contains(secret), "{url}");
                assert!(!format!("{u:?}").contains(secret), "{url}");
            }
        }
        // What the database URLs' redaction (all an http URL had before) lets through.
        assert!(redact_url("https://svc/d/{id}?api_key=K3Y").contains("K3Y"));
        assert!(redact_url("https://K3Y@svc/d/{id}").contains("K3Y"));
    }
}
