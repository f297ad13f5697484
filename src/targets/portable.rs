//! The `object_store` target on az:// (Azure Blob Storage), gs:// (Google Cloud Storage) and
//! file:// (a local directory), through Apache Arrow's `object_store` crate: one code path for
//! the three, the crate's own request signing, retries (5xx, 429, timeouts, with backoff) and
//! batching (Azure's blob batch, 256 deletes a request).
//!
//! A purge deletes the items' keys (`delete_stream`, in chunks of 256 so a failed batch fails
//! only its own keys); a key that is not there counts as removed (0 objects). Then each deleted
//! key is looked up again (HEAD): one still there fails its purge, which is retried like a SQL
//! `verify` that finds rows. The crate cannot list or delete old versions, so these schemes
//! take `versions = "current"` only (the config refuses `all`); a local file has no versions.
//! A file:// root that is missing fails the purge (an unmounted volume is not "already gone").

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use super::{ItemResult, PurgeItem, Removed};
use crate::config::{
    AzureCredential, AzureLocation, GcsCredential, GcsLocation, ObjectStoreTargetConfig,
    StoreLocation,
};

/// Keys in one `delete_stream` call: Azure's blob batch maximum.
const DELETE_CHUNK: usize = 256;

/// Where the objects are: a client built once, or a local root opened at each purge (so a
/// volume mounted after the daemon started is found, and a missing one fails the purge).
enum Backend {
    Remote(Arc<dyn ObjectStore>),
    File(PathBuf),
}

pub struct PortableStoreTarget {
    name: String,
    backend: Backend,
    /// `az://container`, `gs://bucket`, `file:///root`: for errors.
    shown: String,
    /// The url's prefix with a trailing `/`, or empty.
    prefix: String,
    key: String,
    account_prefix: Option<String>,
    concurrency: usize,
}

impl std::fmt::Debug for PortableStoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableStoreTarget")
            .field("name", &self.name)
            .field("at", &self.shown)
            .field("prefix", &self.prefix)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl PortableStoreTarget {
    /// Builds the client of an az://, gs:// or file:// target (no request is sent yet).
    pub fn new(name: &str, cfg: &ObjectStoreTargetConfig) -> Result<PortableStoreTarget, String> {
        let fail = |e: object_store::Error| format!("target `{name}`: {e}");
        let timeout = Duration::from_millis(cfg.timeout.millis() as u64);
        let options = |endpoint: Option<&url::Url>| {
            ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_secs(10))
                .with_pool_max_idle_per_host(cfg.concurrency)
                .with_allow_http(endpoint.is_some_and(|e| e.scheme() == "http"))
        };
        // Our own attempts are the sweep's; keep the crate's in-place retries short.
        let retry = RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        };
        let (backend, shown) = match &cfg.store {
            StoreLocation::S3(_) => return Err(format!("target `{name}`: s3:// is not portable")),
            StoreLocation::File { root } => (
                Backend::File(root.clone()),
                format!("file://{}", root.display()),
            ),
            StoreLocation::Azure(a) => {
                super::install_tls_provider();
                let store = azure(a, options(a.endpoint.as_ref()), retry).map_err(fail)?;
                (Backend::Remote(store), format!("az://{}", a.container))
            }
            StoreLocation::Gcs(g) => {
                super::install_tls_provider();
                let store = gcs(g, options(g.endpoint.as_ref()), retry).map_err(fail)?;
                (Backend::Remote(store), format!("gs://{}", g.bucket))
            }
        };
        Ok(PortableStoreTarget {
            name: name.to_string(),
            backend,
            shown,
            prefix: super::object_store::folder_prefix(&cfg.prefix),
            key: cfg.key.clone(),
            account_prefix: cfg.account_prefix.clone(),
            concurrency: cfg.concurrency,
        })
    }

    /// The store: the remote client, or the local root (which must exist and be a directory).
    fn store(&self) -> Result<Arc<dyn ObjectStore>, String> {
        match &self.backend {
            Backend::Remote(s) => Ok(Arc::clone(s)),
            Backend::File(root) => {
                match std::fs::metadata(root) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(format!(
                            "target `{}`: root {} is not a directory",
                            self.name,
                            root.display()
                        ));
                    }
                    Err(e) => {
                        return Err(format!(
                            "target `{}`: root {} is not usable: {e}",
                            self.name,
                            root.display()
                        ));
                    }
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| format!("target `{}`: {e}", self.name))?
                    // Folders a purge empties go too, up to the root (as the files target).
                    .with_automatic_cleanup(true);
                Ok(Arc::new(fs))
            }
        }
    }

    /// `az://container/key`, for errors.
    fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.shown)
    }

    fn full_key(&self, item: &PurgeItem) -> Result<String, String> {
        super::object_store::render(&self.key, item)
            .map(|k| format!("{}{k}", self.prefix))
            .map_err(|e| format!("target `{}`: {e}", self.name))
    }

    /// On a file:// root, why `key` is refused when its folder resolves outside the root (a
    /// symlinked folder), as the `files` target refuses it; `None` otherwise, and when the
    /// folder does not exist (then neither does the key).
    fn escapes_root(&self, key: &str) -> Option<String> {
        let Backend::File(root) = &self.backend else {
            return None;
        };
        let root = std::fs::canonicalize(root).ok()?;
        let full = root.join(key);
        let folder = std::fs::canonicalize(full.parent()?).ok()?;
        (!folder.starts_with(&root)).then(|| {
            format!(
                "target `{}`: {} resolves outside the root (to {}); refusing",
                self.name,
                self.at(key),
                folder.display()
            )
        })
    }

    /// A key as the crate's path; its segments were checked when the key was rendered.
    fn path(&self, key: &str) -> Result<StorePath, String> {
        StorePath::parse(key).map_err(|e| format!("target `{}`: {}: {e}", self.name, self.at(key)))
    }

    pub async fn purge(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        self.run(items, true).await
    }

    /// What [`PortableStoreTarget::purge`] would delete now (1 per key there), changing
    /// nothing: lookups only.
    pub async fn probe(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        self.run(items, false).await
    }

    /// How much of each item the store still holds (1: its object is there).
    pub async fn remaining(&self, items: &[PurgeItem]) -> Vec<Result<u64, String>> {
        self.probe(items)
            .await
            .into_iter()
            .map(|r| r.map(|x| x.objects))
            .collect()
    }

    async fn run(&self, items: &[PurgeItem], delete: bool) -> Vec<ItemResult> {
        let keys: Vec<Result<String, String>> = items.iter().map(|i| self.full_key(i)).collect();
        let store = match self.store() {
            Ok(s) => s,
            Err(e) => return keys.iter().map(|_| Err(e.clone())).collect(),
        };
        let wanted: BTreeSet<String> = keys.iter().filter_map(|k| k.clone().ok()).collect();
        let (removed, errors) = if delete {
            let (removed, mut errors) = self.delete(&store, &wanted).await;
            // Verify: each deleted key must be gone now.
            let check: BTreeSet<String> = wanted
                .iter()
                .filter(|k| !errors.contains_key(*k))
                .cloned()
                .collect();
            let (left, verify_errors) = self.exists(&store, &check).await;
            errors.extend(verify_errors);
            for k in left {
                errors.entry(k.clone()).or_insert_with(|| {
                    format!(
                        "target `{}`: {} still exists after the purge",
                        self.name,
                        self.at(&k)
                    )
                });
            }
            (removed, errors)
        } else {
            self.exists(&store, &wanted).await
        };
        keys.into_iter()
            .map(|k| {
                let k = k?;
                if let Some(e) = errors.get(&k) {
                    return Err(e.clone());
                }
                Ok(Removed {
                    objects: removed.contains(&k) as u64,
                    ..Removed::default()
                })
            })
            .collect()
    }

    /// Which of `keys` exist (HEAD each, `concurrency` at once); a failed lookup fails its key.
    async fn exists(
        &self,
        store: &Arc<dyn ObjectStore>,
        keys: &BTreeSet<String>,
    ) -> (BTreeSet<String>, BTreeMap<String, String>) {
        // The futures are made first (a closure in a stream combinator would make the
        // caller's future not `Send` for every lifetime, as tokio::spawn needs).
        let lookups: Vec<_> = keys
            .iter()
            .map(|k| {
                let path = self.path(k);
                let store = Arc::clone(store);
                let k = k.clone();
                async move {
                    let path = match path {
                        Ok(p) => p,
                        Err(e) => return (k, Err(e)),
                    };
                    let started = Instant::now();
                    let r = store.head(&path).await;
                    (k, Ok((path, started.elapsed(), r)))
                }
            })
            .collect();
        let answers: Vec<_> = stream::iter(lookups)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut found = BTreeSet::new();
        let mut errors = BTreeMap::new();
        for (k, r) in answers {
            match r {
                Err(e) => {
                    errors.insert(k, e);
                }
                Ok((path, took, answer)) => {
                    crate::metrics::record_target_request(&self.name, "head", took);
                    match answer {
                        Ok(_) => {
                            found.insert(k);
                        }
                        Err(e) => {
                            if let Some(why) = self.error("look up", &path, e) {
                                errors.insert(k, why);
                            }
                        }
                    }
                }
            }
        }
        (found, errors)
    }

    /// Deletes `keys` (a missing one counts as removed); returns the keys that were there
    /// and were deleted, and the failed ones with why.
    async fn delete(
        &self,
        store: &Arc<dyn ObjectStore>,
        keys: &BTreeSet<String>,
    ) -> (BTreeSet<String>, BTreeMap<String, String>) {
        let mut removed = BTreeSet::new();
        let mut errors = BTreeMap::new();
        let mut paths = Vec::new();
        for k in keys {
            if let Some(e) = self.escapes_root(k) {
                errors.insert(k.clone(), e);
                continue;
            }
            match self.path(k) {
                Ok(p) => paths.push((k.clone(), p)),
                Err(e) => {
                    errors.insert(k.clone(), e);
                }
            }
        }
        let chunks: Vec<_> = paths
            .chunks(DELETE_CHUNK)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                let store = Arc::clone(store);
                async move {
                    let started = Instant::now();
                    let input: Vec<object_store::Result<StorePath>> =
                        chunk.iter().map(|(_, p)| Ok(p.clone())).collect();
                    let results: Vec<object_store::Result<StorePath>> = store
                        .delete_stream(stream::iter(input).boxed())
                        .collect()
                        .await;
                    (chunk, results, started.elapsed())
                }
            })
            .collect();
        let done: Vec<_> = stream::iter(chunks)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (chunk, results, took) in done {
            crate::metrics::record_target_request(&self.name, "delete", took);
            if results.len() != chunk.len() {
                // The batch failed as a whole (its one error stands for every key in it).
                let why = results
                    .into_iter()
                    .find_map(|r| r.err())
                    .map(|e| brief(&e))
                    .unwrap_or_else(|| "the store answered for fewer keys than sent".into());
                for (k, _) in &chunk {
                    errors.insert(
                        k.clone(),
                        format!("target `{}`: delete {}: {}", self.name, self.at(k), why),
                    );
                }
                continue;
            }
            for ((k, path), r) in chunk.iter().zip(results) {
                match r {
                    Ok(_) => {
                        removed.insert(k.clone());
                    }
                    Err(e) => {
                        if let Some(why) = self.error("delete", path, e) {
                            errors.insert(k.clone(), why);
                        }
                    }
                }
            }
        }
        (removed, errors)
    }

    /// `None` for "not found" (a missing key is removed); otherwise the error naming the store
    /// and the key — a denied request included, which is never a success.
    fn error(&self, what: &str, path: &StorePath, e: object_store::Error) -> Option<String> {
        match e {
            object_store::Error::NotFound { .. } => None,
            e => Some(format!(
                "target `{}`: {what} {}: {}",
                self.name,
                self.at(path.as_ref()),
                brief(&e)
            )),
        }
    }

    /// The account's prefix (`account_prefix`), under the url's prefix; `None` without one.
    fn account_key(&self, account: &str, org: &str) -> Option<Result<String, String>> {
        let template = self.account_prefix.as_ref()?;
        let item = PurgeItem::account(account, org);
        Some(
            super::object_store::render(template, &item)
                .map(|p| format!("{}{p}", self.prefix))
                .map_err(|e| format!("target `{}`: {e}", self.name)),
        )
    }

    /// Every key under `prefix` (which ends with `/`).
    async fn list_all(
        &self,
        store: &Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> Result<BTreeSet<String>, String> {
        let path = self.path(prefix.trim_end_matches('/'))?;
        let started = Instant::now();
        let listed: Result<Vec<_>, _> = store.list(Some(&path)).try_collect().await;
        crate::metrics::record_target_request(&self.name, "list", started.elapsed());
        match listed {
            Ok(v) => Ok(v.into_iter().map(|m| m.location.to_string()).collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(BTreeSet::new()),
            Err(e) => Err(format!(
                "target `{}`: list {}: {}",
                self.name,
                self.at(prefix),
                brief(&e)
            )),
        }
    }

    /// R8: deletes everything under the account's prefix, then checks that nothing is left.
    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        let Some(prefix) = self.account_key(account, org) else {
            return Ok(Removed::default());
        };
        let prefix = prefix?;
        let store = self.store()?;
        let found = self.list_all(&store, &prefix).await?;
        let (deleted, errors) = self.delete(&store, &found).await;
        if let Some((_, e)) = errors.into_iter().next() {
            return Err(e);
        }
        let left = self.list_all(&store, &prefix).await?;
        if !left.is_empty() {
            return Err(format!(
                "target `{}`: {} still holds {} key(s) after the account purge",
                self.name,
                self.at(&prefix),
                left.len()
            ));
        }
        Ok(Removed {
            objects: deleted.len() as u64,
            ..Removed::default()
        })
    }

    /// What [`PortableStoreTarget::purge_account`] would delete now.
    pub async fn probe_account(&self, account: &str, org: &str) -> ItemResult {
        let Some(prefix) = self.account_key(account, org) else {
            return Ok(Removed::default());
        };
        let prefix = prefix?;
        let store = self.store()?;
        let found = self.list_all(&store, &prefix).await?;
        Ok(Removed {
            objects: found.len() as u64,
            ..Removed::default()
        })
    }
}

/// An Azure client: the account and its key or SAS token from the config, or else every
/// `AZURE_*` variable the crate knows (service principal, workload identity, emulator …).
fn azure(
    a: &AzureLocation,
    options: ClientOptions,
    retry: RetryConfig,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    use object_store::azure::MicrosoftAzureBuilder;
    let mut b = match &a.credential {
        AzureCredential::Env(_) => MicrosoftAzureBuilder::from_env(),
        AzureCredential::AccessKey(k, _) => {
            MicrosoftAzureBuilder::new().with_access_key(k.expose())
        }
        AzureCredential::SasToken(t, _) => MicrosoftAzureBuilder::new().with_config(
            object_store::azure::AzureConfigKey::SasKey,
            t.expose().trim_start_matches('?'),
        ),
    };
    b = b
        .with_account(&a.account)
        .with_container_name(&a.container)
        .with_client_options(options)
        .with_retry(retry);
    if let Some(e) = &a.endpoint {
        b = b.with_endpoint(e.as_str().trim_end_matches('/').to_string());
    }
    Ok(Arc::new(b.build()?))
}

/// A Cloud Storage client: the service-account key from the config, or else the `GOOGLE_*`
/// variables (`GOOGLE_APPLICATION_CREDENTIALS` …).
fn gcs(
    g: &GcsLocation,
    options: ClientOptions,
    retry: RetryConfig,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    use object_store::gcp::GoogleCloudStorageBuilder;
    let mut b = match &g.credential {
        GcsCredential::Env(_) => GoogleCloudStorageBuilder::from_env(),
        GcsCredential::ServiceAccount(json, _) => {
            GoogleCloudStorageBuilder::new().with_service_account_key(json)
        }
    };
    b = b
        .with_bucket_name(&g.bucket)
        .with_client_options(options)
        .with_retry(retry);
    if let Some(e) = &g.endpoint {
        b = b.with_base_url(e.as_str().trim_end_matches('/'));
    }
    Ok(Arc::new(b.build()?))
}

/// An error of the crate on one line, at most 300 bytes (its sources included, never a URL's
/// query, which may carry a SAS signature).
fn brief(e: &object_store::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        let t = c.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        source = c.source();
    }
    let s = s.replace(['\n', '\r'], " ");
    let s = match (s.find('?'), s.find("sig=")) {
        (Some(q), Some(_)) => format!("{}?***", &s[..q]),
        _ => s,
    };
    if s.len() <= 300 {
        return s;
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
