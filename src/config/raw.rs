//! The file's shape as serde reads it: every section, every key, every default, and nothing
//! checked beyond types. Every section denies unknown keys (§5), so a misspelt key is an error
//! naming it rather than a setting silently ignored. The sibling modules turn these into the
//! validated types of [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::model::Span;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) database: Option<RawDatabase>,
    #[serde(default)]
    pub(super) scheduler: RawScheduler,
    #[serde(default)]
    pub(super) ingest: RawIngest,
    #[serde(default)]
    pub(super) accounts: RawAccounts,
    #[serde(default)]
    pub(super) zdr: RawZdr,
    #[serde(default)]
    pub(super) kinds: BTreeMap<String, RawKind>,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    pub(super) safety: RawSafety,
    pub(super) http: Option<RawHttp>,
    #[serde(default)]
    pub(super) holds: RawHolds,
    #[serde(default)]
    pub(super) sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) notify: BTreeMap<String, RawNotify>,
    #[serde(default)]
    pub(super) ledger: RawLedger,
}

fn default_tombstone_retention() -> Span {
    Span::from_secs(400 * 86_400)
}

/// `[ledger]`: how the ledger keeps itself small (issue 23).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    #[serde(default = "default_tombstone_retention")]
    pub(super) tombstone_retention: Span,
}

impl Default for RawLedger {
    fn default() -> Self {
        RawLedger {
            tombstone_retention: default_tombstone_retention(),
        }
    }
}

/// `[notify.NAME]`: a receiver of signed notifications (§8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) url: String,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) secret_env: Option<String>,
    pub(super) events: Vec<String>,
    pub(super) retry_backoff: Option<Span>,
    pub(super) retry_backoff_max: Option<Span>,
    pub(super) max_age: Option<Span>,
    pub(super) timeout: Option<Span>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    pub(super) max_connections: Option<u32>,
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
pub(super) struct RawScheduler {
    #[serde(default = "default_sweep")]
    pub(super) sweep: String,
    #[serde(default = "default_batch")]
    pub(super) batch_size: usize,
    #[serde(default = "default_batches_per_transaction")]
    pub(super) batches_per_transaction: usize,
    #[serde(default = "default_lease")]
    pub(super) lease: Span,
    #[serde(default = "default_attempts")]
    pub(super) max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub(super) retry_backoff: Span,
    #[serde(default = "default_backoff_max")]
    pub(super) retry_backoff_max: Span,
    #[serde(default = "default_watchdog_stall")]
    pub(super) stall_after: Span,
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
pub(super) struct RawIngest {
    #[serde(default = "default_skew")]
    pub(super) max_clock_skew: Span,
    #[serde(default = "default_dedup_window")]
    pub(super) dedup_window: Span,
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
pub(super) struct RawAccounts {
    #[serde(default = "default_account_grace")]
    pub(super) grace_after_delete: Span,
    #[serde(default)]
    pub(super) targets: Vec<String>,
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
pub(super) struct RawZdr {
    #[serde(default)]
    pub(super) endpoints: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKind {
    /// Required for kinds tracked per item; meaningless for windowed ones.
    pub(super) grace_after_delete: Option<Span>,
    #[serde(default)]
    pub(super) tracking: crate::window::Tracking,
    pub(super) grace_after_account_delete: Option<Span>,
    pub(super) max_age: Option<Span>,
    /// Windowed kinds: the bounds of an org's own max_age (`org retention`, W4).
    pub(super) max_age_min: Option<Span>,
    pub(super) max_age_max: Option<Span>,
    #[serde(default)]
    pub(super) zdr: bool,
    #[serde(default)]
    pub(super) targets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawTarget {
    Sql(RawSqlTarget),
    Files(RawFilesTarget),
    #[serde(rename = "object_store")]
    ObjectStore(Box<RawObjectStoreTarget>),
    Http(RawHttpTarget),
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSqlTarget {
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) purge: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) verify: BTreeMap<String, Vec<String>>,
    #[serde(default = "yes")]
    pub(super) secure_delete: bool,
    pub(super) vacuum: Option<String>,
    /// `[targets.T.windows.K]`: how the target's table maps to a windowed kind (issue 29).
    #[serde(default)]
    pub(super) windows: BTreeMap<String, crate::window::RawWindowMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilesTarget {
    pub(super) root: String,
    pub(super) path: String,
    pub(super) account_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObjectStoreTarget {
    pub(super) url: String,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) key: String,
    pub(super) versions: Option<String>,
    pub(super) account_prefix: Option<String>,
    pub(super) access_key_id_env: Option<String>,
    pub(super) secret_access_key_env: Option<String>,
    pub(super) session_token_env: Option<String>,
    pub(super) access_key_id_file: Option<PathBuf>,
    pub(super) secret_access_key_file: Option<PathBuf>,
    pub(super) session_token_file: Option<PathBuf>,
    /// az:// only: the storage account, its key or a SAS token.
    pub(super) account: Option<String>,
    pub(super) access_key_env: Option<String>,
    pub(super) access_key_file: Option<PathBuf>,
    pub(super) sas_token_env: Option<String>,
    pub(super) sas_token_file: Option<PathBuf>,
    /// gs:// only: a service-account JSON key file.
    pub(super) service_account_file: Option<PathBuf>,
    pub(super) concurrency: Option<usize>,
    pub(super) timeout: Option<Span>,
}

/// `type = "http"`: a service's own deletion API (issue 21). The token is never inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpTarget {
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    pub(super) method: Option<String>,
    pub(super) body: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_env: Option<String>,
    /// A string, parsed here: inside the tagged enum serde would not name the key.
    pub(super) timeout: Option<String>,
    pub(super) verify_url: Option<String>,
    pub(super) concurrency: Option<usize>,
    pub(super) account_url: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHolds {
    #[serde(default = "one")]
    pub(super) release_approvals: u32,
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
pub(super) struct RawSafety {
    #[serde(default = "default_max_newly_due")]
    pub(super) max_newly_due: u64,
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
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_env: Option<String>,
    #[serde(default)]
    pub(super) token_name: Option<String>,
    pub(super) read_token_file: Option<PathBuf>,
    pub(super) read_token_env: Option<String>,
    #[serde(default)]
    pub(super) tokens: Vec<RawToken>,
    #[serde(default)]
    pub(super) max_body: Option<usize>,
    #[serde(default)]
    pub(super) timeout: Option<Span>,
}

/// One `[[http.tokens]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: String,
    pub(super) file: Option<PathBuf>,
    pub(super) env: Option<String>,
    pub(super) scopes: Vec<String>,
}

fn default_poll() -> Span {
    Span::from_secs(1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    pub(super) table: String,
    #[serde(default = "default_poll")]
    pub(super) poll: Span,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) signing_key_file: Option<PathBuf>,
    pub(super) checkpoint: Option<String>,
    pub(super) checkpoint_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
}
