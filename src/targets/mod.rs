//! Purge targets: where the application keeps its data, and how to delete it for real.
//!
//! Invariant: every target delete is idempotent (deleting missing rows or files is a no-op), so a purge can
//! be executed more than once — after a crash, or by two instances whose leases crossed — while
//! the ledger records it exactly once.

mod files;
mod http;
mod object_store;
mod portable;
mod sql;
mod sqlite_direct;
mod window;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, ObjectStoreTargetConfig, StoreLocation, TargetConfig};

pub use crate::model::PurgeItem;
pub use files::FilesTarget;
pub use http::HttpTarget;
pub use object_store::S3Target;
pub use portable::PortableStoreTarget;
pub use sql::SqlTarget;
pub use window::{Partition, PartitionRows, PartitionState};

/// Installs ring as the process's rustls crypto provider (later calls do nothing). reqwest is
/// built without a default provider (aws-lc-rs is a large C build), so every reqwest client —
/// the object-store target's, the tests' and the benchmarks' — needs this first. rustls 0.23.48
/// deprecates ring's provider for lacking post-quantum key exchange, which S3 does not require.
pub fn install_tls_provider() {
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Fills a template's `{NAME}` placeholders, each value passed through `value(name, raw)`
/// (which checks or escapes it).
pub fn fill(
    template: &str,
    item: &PurgeItem,
    mut value: impl FnMut(&str, &str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unclosed `{` in template")?;
        let name = &after[..close];
        out.push_str(&value(name, item.placeholder(name)?)?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills a template whose values become segments of a path or key. Each value of `id`, `kind`,
/// `account`, `org` must be one ordinary segment (not empty, `.` or `..`; no `/`, `\\`, nor a
/// character `bad` refuses), so an id never names something outside its folder; an attribute
/// (`{attrs.path}`) may hold several segments, each of them ordinary. `what` names a segment in
/// the error ("path component", "key segment").
pub fn fill_segments(
    template: &str,
    item: &PurgeItem,
    what: &str,
    bad: fn(char) -> bool,
) -> Result<String, String> {
    fill(template, item, |name, value| {
        let parts: Vec<&str> = if name.starts_with("attrs.") {
            value.split('/').collect()
        } else {
            vec![value]
        };
        for part in parts {
            if part.is_empty()
                || part == "."
                || part == ".."
                || part.contains(['/', '\\'])
                || part.chars().any(bad)
            {
                return Err(format!(
                    "{name} `{}` cannot be used as a {what}",
                    value.escape_debug()
                ));
            }
        }
        Ok(value.to_string())
    })
}

/// What a purge removed. `objects` (object-store keys and versions) and `requests` (HTTP
/// deletes a service answered as done) are left out of JSON when zero, so receipts of SQL and
/// files targets read as they always did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub rows: u64,
    pub files: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub objects: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub requests: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Removed {
    /// Everything removed, whatever its unit.
    pub fn total(&self) -> u64 {
        self.rows + self.files + self.objects + self.requests
    }

    /// The per-target JSON of receipts and audit entries: `{"target", "rows", "files", …}`.
    pub fn json_for(&self, target: &str) -> serde_json::Value {
        let mut v = serde_json::json!({"target": target, "rows": self.rows, "files": self.files});
        if self.objects > 0 {
            v["objects"] = self.objects.into();
        }
        if self.requests > 0 {
            v["requests"] = self.requests.into();
        }
        v
    }
}

/// `NAME:3r/1f` (and `/2o`, `/1q` for objects and requests when there are any): one target's
/// share in a log line.
impl std::fmt::Display for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}r/{}f", self.rows, self.files)?;
        if self.objects > 0 {
            write!(f, "/{}o", self.objects)?;
        }
        if self.requests > 0 {
            write!(f, "/{}q", self.requests)?;
        }
        Ok(())
    }
}

impl std::ops::AddAssign for Removed {
    fn add_assign(&mut self, o: Removed) {
        self.rows += o.rows;
        self.files += o.files;
        self.objects += o.objects;
        self.requests += o.requests;
    }
}

/// A per-item outcome: what was removed, or why it could not be.
pub type ItemResult = Result<Removed, String>;

/// An `object_store` target: s3:// spoken directly (so every version of a key can go), the
/// other schemes (az://, gs://, file://) through the `object_store` crate.
#[derive(Debug)]
pub enum ObjectStoreTarget {
    S3(S3Target),
    Portable(PortableStoreTarget),
}

impl ObjectStoreTarget {
    pub fn new(name: &str, cfg: &ObjectStoreTargetConfig) -> Result<ObjectStoreTarget, String> {
        Ok(match &cfg.store {
            StoreLocation::S3(s3) => ObjectStoreTarget::S3(S3Target::new(name, cfg, s3)?),
            _ => ObjectStoreTarget::Portable(PortableStoreTarget::new(name, cfg)?),
        })
    }

    pub async fn purge(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        match self {
            ObjectStoreTarget::S3(t) => t.purge(items).await,
            ObjectStoreTarget::Portable(t) => t.purge(items).await,
        }
    }

    pub async fn probe(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        match self {
            ObjectStoreTarget::S3(t) => t.probe(items).await,
            ObjectStoreTarget::Portable(t) => t.probe(items).await,
        }
    }

    pub async fn remaining(&self, items: &[PurgeItem]) -> Vec<Result<u64, String>> {
        match self {
            ObjectStoreTarget::S3(t) => t.remaining(items).await,
            ObjectStoreTarget::Portable(t) => t.remaining(items).await,
        }
    }

    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        match self {
            ObjectStoreTarget::S3(t) => t.purge_account(account, org).await,
            ObjectStoreTarget::Portable(t) => t.purge_account(account, org).await,
        }
    }

    pub async fn probe_account(&self, account: &str, org: &str) -> ItemResult {
        match self {
            ObjectStoreTarget::S3(t) => t.probe_account(account, org).await,
            ObjectStoreTarget::Portable(t) => t.probe_account(account, org).await,
        }
    }
}

#[derive(Debug)]
pub enum Target {
    Sql(SqlTarget),
    Files(FilesTarget),
    ObjectStore(Box<ObjectStoreTarget>),
    Http(HttpTarget),
}

impl Target {
    /// The SQL target, if this is one (windowed kinds live only in SQL tables).
    pub fn as_sql(&self) -> Option<&SqlTarget> {
        match self {
            Target::Sql(t) => Some(t),
            _ => None,
        }
    }

    /// Purges `items` (all of kind `kind`); one result per item, in order.
    pub async fn purge(&self, kind: &str, items: &[PurgeItem]) -> Vec<ItemResult> {
        match self {
            Target::Sql(t) => t.purge(kind, items).await,
            Target::Files(t) => t.purge(items).await,
            Target::ObjectStore(t) => t.purge(items).await,
            Target::Http(t) => t.purge(kind, items).await,
        }
    }

    /// The account-level purge (R8).
    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        match self {
            Target::Sql(t) => t.purge_account(account, org).await,
            Target::Files(t) => t.purge_account(account, org).await,
            Target::ObjectStore(t) => t.purge_account(account, org).await,
            Target::Http(t) => t.purge_account(account, org).await,
        }
    }

    /// What [`Target::purge`] would remove now, changing nothing (SQL: the statements run in a
    /// transaction that is rolled back; files: the files that exist; http: nothing is sent, so
    /// nothing is known — see [`Target::probe_is_blind`]).
    pub async fn probe(&self, kind: &str, items: &[PurgeItem]) -> Vec<ItemResult> {
        match self {
            Target::Sql(t) => t.probe(kind, items).await,
            Target::Files(t) => t.probe(items).await,
            Target::ObjectStore(t) => t.probe(items).await,
            Target::Http(t) => t.probe(items),
        }
    }

    /// True when [`Target::probe`] cannot look without acting (an http target: any request
    /// may delete), so its zeros mean "not checked", not "nothing there".
    pub fn probe_is_blind(&self) -> bool {
        matches!(self, Target::Http(_))
    }

    /// How much of each item's data the target still holds (0: none), changing nothing: what
    /// tells, after a crash, whether a purge that may have started had run here (issue 30).
    /// SQL: the kind's verify queries; without them, when every statement is a DELETE, the rows
    /// those would delete; otherwise it cannot tell. Files: whether the file exists. Object
    /// store: the key's versions (or its current object) still listed. Http: a GET of
    /// `verify_url` (404/410: none); without one it cannot tell.
    pub async fn remaining(&self, kind: &str, items: &[PurgeItem]) -> Vec<Result<u64, String>> {
        match self {
            Target::Sql(t) => t.remaining(kind, items).await,
            Target::Files(t) => t
                .probe(items)
                .await
                .into_iter()
                .map(|r| r.map(|x| x.total()))
                .collect(),
            Target::ObjectStore(t) => t.remaining(items).await,
            Target::Http(t) => t.remaining(kind, items).await,
        }
    }

    /// What [`Target::purge_account`] would remove now, changing nothing.
    pub async fn probe_account(&self, account: &str, org: &str) -> ItemResult {
        match self {
            Target::Sql(t) => t.probe_account(account, org).await,
            Target::Files(t) => t.probe_account(account, org).await,
            Target::ObjectStore(t) => t.probe_account(account, org).await,
            Target::Http(_) => Ok(Removed::default()),
        }
    }

    /// The vacuum cron of a SQL target, if any.
    pub fn vacuum_schedule(&self) -> Option<&str> {
        match self {
            Target::Sql(t) => t.vacuum_schedule(),
            Target::Files(_) => None,
            Target::ObjectStore(_) => None,
            Target::Http(_) => None,
        }
    }
}

/// All configured targets, by name.
#[derive(Debug, Default)]
pub struct Targets {
    by_name: BTreeMap<String, Target>,
}

impl Targets {
    /// Prepares every target. Connections are opened lazily: a target database that is down
    /// when the daemon starts makes its purges fail and retry, it does not stop the daemon.
    pub fn from_config(config: &Config) -> Result<Targets, String> {
        let mut by_name = BTreeMap::new();
        for (name, t) in &config.targets {
            let target = match t {
                TargetConfig::Sql(s) => Target::Sql(SqlTarget::new(name, s)?),
                TargetConfig::Files(f) => Target::Files(FilesTarget::new(name, f)),
                TargetConfig::ObjectStore(o) => {
                    Target::ObjectStore(Box::new(ObjectStoreTarget::new(name, o)?))
                }
                TargetConfig::Http(h) => Target::Http(HttpTarget::new(name, h)?),
            };
            by_name.insert(name.clone(), target);
        }
        Ok(Targets { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Target> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Target)> {
        self.by_name.iter()
    }

    /// Retries WAL checkpoints that a purge could not complete (readers busy); the daemon calls
    /// it periodically. Returns the targets still owing one.
    pub async fn retry_checkpoints(&self) -> Vec<String> {
        let mut owing = Vec::new();
        for (name, t) in &self.by_name {
            if let Target::Sql(s) = t
                && !s.retry_checkpoint().await
            {
                owing.push(name.clone());
            }
        }
        owing
    }
}
