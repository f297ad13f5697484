//! The `object_store` target on s3://: deletes each resource's key in an S3 bucket (or an
//! S3-compatible server: MinIO, Ceph RGW …) — by default every version and delete marker of it,
//! which the `object_store` crate cannot list or delete, so this speaks the S3 API itself:
//! `rusty-s3` signs the requests (presigned, SigV4), `reqwest` sends them. The other schemes
//! are in `portable.rs`.
//!
//! A batch goes out in few requests: the keys that share a folder are found by one paged
//! `ListObjectVersions` (or `ListObjectsV2` for `versions = "current"`) over their common
//! prefix, falling back to one listing per key when that folder holds much else; what was found
//! is deleted by `DeleteObjects` (≤ 1,000 a request, `concurrency` requests at once); then the
//! keys are listed again, and any key with something left fails its purge. A missing key
//! counts as removed (0 objects). 5xx, 429, 503 SlowDown and timeouts are retried in place with
//! backoff; a 403, or a per-key `AccessDenied` in a `DeleteObjects` answer, fails the item with
//! the bucket and key, never a success.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use instant_xml::FromXml;
use rusty_s3::actions::{DeleteObjectsResponse, ListObjectsV2, ObjectIdentifier};
use rusty_s3::{Bucket, Credentials, Method, S3Action, UrlStyle};
use tokio::sync::Semaphore;

use super::{ItemResult, PurgeItem, Removed};
use crate::config::{ObjectStoreTargetConfig, ObjectVersions, S3Location};

/// How long a signed URL is valid: long enough for a slow request, short for a leaked log line.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// Attempts of one request before its items fail (the sweep then retries them later).
const ATTEMPTS: u32 = 5;
/// Keys (or versions) in one `DeleteObjects` request: the S3 maximum.
const DELETE_BATCH: usize = 1000;
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub struct S3Target {
    name: String,
    bucket: Bucket,
    credentials: Credentials,
    /// The url's prefix with a trailing `/`, or empty.
    prefix: String,
    key: String,
    versions: ObjectVersions,
    account_prefix: Option<String>,
    client: reqwest::Client,
    /// Bounds the requests in flight, across every purge of this target.
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("name", &self.name)
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.prefix)
            .field("key", &self.key)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

/// What a listing found of one key: the version ids to delete (`None`: the current object of
/// `versions = "current"`).
type Found = BTreeMap<String, Vec<Option<String>>>;

/// Why a request failed: `retry` when another attempt may succeed.
struct Failure {
    message: String,
    retry: bool,
}

impl S3Target {
    pub fn new(
        name: &str,
        cfg: &ObjectStoreTargetConfig,
        s3: &S3Location,
    ) -> Result<S3Target, String> {
        let (endpoint, style) = match &s3.endpoint {
            Some(e) => (e.clone(), UrlStyle::Path),
            None => {
                let e = format!("https://s3.{}.amazonaws.com", s3.region);
                let e = url::Url::parse(&e).map_err(|e| format!("target `{name}`: {e}"))?;
                // Bucket names with dots do not fit a TLS wildcard certificate.
                let style = if s3.bucket.contains('.') {
                    UrlStyle::Path
                } else {
                    UrlStyle::VirtualHost
                };
                (e, style)
            }
        };
        let bucket = Bucket::new(endpoint, style, s3.bucket.clone(), s3.region.clone())
            .map_err(|e| format!("target `{name}`: bucket `{}`: {e}", s3.bucket))?;
        let c = &s3.credentials;
        let credentials = match &c.session_token {
            Some(t) => Credentials::new_with_token(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                t.clone(),
            ),
            None => Credentials::new(c.access_key_id.clone(), c.secret_access_key.clone()),
        };
        super::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout.millis() as u64))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(cfg.concurrency)
            .build()
            .map_err(|e| format!("target `{name}`: HTTP client: {e}"))?;
        Ok(S3Target {
            name: name.to_string(),
            bucket,
            credentials,
            prefix: folder_prefix(&cfg.prefix),
            key: cfg.key.clone(),
            versions: cfg.versions,
            account_prefix: cfg.account_prefix.clone(),
            client,
            slots: Arc::new(Semaphore::new(cfg.concurrency)),
        })
    }

    /// `s3://bucket/key`, for errors.
    fn at(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket.name())
    }

    /// The full key of an item (the url's prefix, then the rendered template).
    fn full_key(&self, item: &PurgeItem) -> Result<String, String> {
        render(&self.key, item)
            .map(|k| format!("{}{k}", self.prefix))
            .map_err(|e| format!("target `{}`: {e}", self.name))
    }

    pub async fn purge(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        self.run(items, true).await
    }

    /// What [`S3Target::purge`] would delete now (versions or objects per item),
    /// changing nothing: listings only.
    pub async fn probe(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        self.run(items, false).await
    }

    async fn run(&self, items: &[PurgeItem], delete: bool) -> Vec<ItemResult> {
        let keys: Vec<Result<String, String>> = items.iter().map(|i| self.full_key(i)).collect();
        let wanted: BTreeSet<String> = keys.iter().filter_map(|k| k.clone().ok()).collect();
        let (found, list_errors) = self.find(&wanted).await;
        let mut removed: BTreeMap<String, u64> = BTreeMap::new();
        let mut errors: BTreeMap<String, String> = list_errors;
        if delete {
            let (deleted, delete_errors) = self.delete(&found).await;
            removed = deleted;
            errors.extend(delete_errors);
            // Verify: list again what was deleted without an error.
            let check: BTreeSet<String> = found
                .keys()
                .filter(|k| !errors.contains_key(*k))
                .cloned()
                .collect();
            let (left, verify_errors) = self.find(&check).await;
            errors.extend(verify_errors);
            for (k, v) in left {
                errors.entry(k.clone()).or_insert_with(|| {
                    format!(
                        "target `{}`: {} still has {} version(s) after the purge",
                        self.name,
                        self.at(&k),
                        v.len()
                    )
                });
            }
        } else {
            for (k, v) in &found {
                removed.insert(k.clone(), v.len() as u64);
            }
        }
        keys.into_iter()
            .map(|k| {
                let k = k?;
                if let Some(e) = errors.get(&k) {
                    return Err(e.clone());
                }
                Ok(Removed {
                    objects: removed.get(&k).copied().unwrap_or(0),
                    ..Removed::default()
                })
            })
            .collect()
    }

    /// How much of each item the bucket still holds (versions, or 1 for a current object).
    pub async fn remaining(&self, items: &[PurgeItem]) -> Vec<Result<u64, String>> {
        self.probe(items)
            .await
            .into_iter()
            .map(|r| r.map(|x| x.objects))
            .collect()
    }

    /// The account's prefix (`account_prefix`), under the url's prefix; `None` without one.
    fn account_key(&self, account: &str, org: &str) -> Option<Result<String, String>> {
        let template = self.account_prefix.as_ref()?;
        let item = PurgeItem::account(account, org);
        Some(
            render(template, &item)
                .map(|p| format!("{}{p}", self.prefix))
                .map_err(|e| format!("target `{}`: {e}", self.name)),
        )
    }

    /// R8: deletes everything under the account's prefix (listing paged), then checks that
    /// nothing is left.
    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        let Some(prefix) = self.account_key(account, org) else {
            return Ok(Removed::default());
        };
        let prefix = prefix?;
        let found = self.list_all(&prefix).await?;
        let (deleted, errors) = self.delete(&found).await;
        if let Some((_, e)) = errors.into_iter().next() {
            return Err(e);
        }
        let left = self.list_all(&prefix).await?;
        if !left.is_empty() {
            return Err(format!(
                "target `{}`: {} still holds {} key(s) after the account purge",
                self.name,
                self.at(&prefix),
                left.len()
            ));
        }
        Ok(Removed {
            objects: deleted.values().sum(),
            ..Removed::default()
        })
    }

    /// What [`S3Target::purge_account`] would delete now.
    pub async fn probe_account(&self, account: &str, org: &str) -> ItemResult {
        let Some(prefix) = self.account_key(account, org) else {
            return Ok(Removed::default());
        };
        let found = self.list_all(&prefix?).await?;
        Ok(Removed {
            objects: found.values().map(|v| v.len() as u64).sum(),
            ..Removed::default()
        })
    }

    // -----------------------------------------------------------------------------------------
    // Listing

    /// What the bucket holds of `keys`; keys with nothing are absent from the answer. Keys in
    /// one folder are listed together, by one paged listing of their common prefix; when that
    /// takes more pages than there are keys (the folder holds much else), the keys it has not
    /// reached yet are listed one by one. A failed listing fails its keys.
    async fn find(&self, keys: &BTreeSet<String>) -> (Found, BTreeMap<String, String>) {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for k in keys {
            let folder = k.rfind('/').map_or("", |i| &k[..=i]);
            groups.entry(folder).or_default().push(k);
        }
        let scans = groups.into_values().map(|g| async move {
            let (mut found, rest) = match self.scan(&g, g.len().max(1)).await {
                Ok(r) => r,
                Err(e) => {
                    let errors = g
                        .iter()
                        .map(|k| (k.to_string(), self.failed(&[k], "list", &e)))
                        .collect();
                    return (Found::new(), errors);
                }
            };
            let mut errors = BTreeMap::new();
            // One by one for the keys the shared listing did not cover.
            let singles = rest
                .iter()
                .map(|k| async move { (*k, self.scan(&[k], usize::MAX).await) });
            for (k, r) in futures_util::future::join_all(singles).await {
                match r {
                    Ok((f, _)) => found.extend(f),
                    Err(e) => {
                        errors.insert(k.to_string(), self.failed(&[k], "list", &e));
                    }
                }
            }
            (found, errors)
        });
        let mut found = Found::new();
        let mut errors = BTreeMap::new();
        for (f, e) in futures_util::future::join_all(scans).await {
            found.extend(f);
            errors.extend(e);
        }
        (found, errors)
    }

    /// Lists the sorted `keys` (one folder) by their common prefix, at most `budget` pages.
    /// Returns what was found of them, and the keys the listing did not cover.
    async fn scan<'k>(
        &self,
        keys: &[&'k str],
        budget: usize,
    ) -> Result<(Found, Vec<&'k str>), String> {
        let want: BTreeSet<&str> = keys.iter().copied().collect();
        let max = keys.iter().max().copied().unwrap_or_default();
        let prefix = common_prefix(keys);
        let mut found = Found::new();
        let mut marker: Option<(String, Option<String>)> = None;
        let mut pages = 0;
        loop {
            let page = self.list_page(prefix, marker.as_ref()).await?;
            pages += 1;
            let mut last = None;
            for (k, v) in page.entries {
                if want.contains(k.as_str()) {
                    found.entry(k.clone()).or_default().push(v);
                }
                last = Some(k);
            }
            let past_max = last.as_deref().is_some_and(|l| l > max);
            let Some(next) = page.next.filter(|_| !past_max) else {
                return Ok((found, Vec::new()));
            };
            if pages >= budget {
                // Keys before the last one listed are complete; that one may go on.
                let done = last.unwrap_or_default();
                let rest: Vec<&str> = keys
                    .iter()
                    .copied()
                    .filter(|k| *k >= done.as_str())
                    .collect();
                for k in &rest {
                    found.remove(*k);
                }
                return Ok((found, rest));
            }
            marker = Some(next);
        }
    }

    /// Everything under `prefix` (an account purge): every version, or every current object.
    async fn list_all(&self, prefix: &str) -> Result<Found, String> {
        let mut found = Found::new();
        let mut marker = None;
        loop {
            let page = self
                .list_page(prefix, marker.as_ref())
                .await
                .map_err(|e| format!("target `{}`: list {}: {e}", self.name, self.at(prefix)))?;
            for (k, v) in page.entries {
                found.entry(k).or_default().push(v);
            }
            match page.next {
                Some(n) => marker = Some(n),
                None => return Ok(found),
            }
        }
    }

    /// One page of a listing under `prefix`, retried in place.
    async fn list_page(
        &self,
        prefix: &str,
        marker: Option<&(String, Option<String>)>,
    ) -> Result<Page, String> {
        let body = self
            .send("list", || {
                let url = match self.versions {
                    ObjectVersions::All => {
                        let mut q = rusty_s3::Map::new();
                        q.insert("versions", "");
                        q.insert("encoding-type", "url");
                        // S3's default; some servers (moto) page by 100 otherwise.
                        q.insert("max-keys", "1000");
                        q.insert("prefix", prefix);
                        if let Some((k, v)) = marker {
                            q.insert("key-marker", k.as_str());
                            if let Some(v) = v {
                                q.insert("version-id-marker", v.as_str());
                            }
                        }
                        rusty_s3::signing::sign(
                            &jiff::Timestamp::now(),
                            Method::Get,
                            self.bucket.base_url().clone(),
                            self.credentials.key(),
                            self.credentials.secret(),
                            self.credentials.token(),
                            self.bucket.region(),
                            SIGNED_FOR.as_secs(),
                            q.iter(),
                            std::iter::empty(),
                        )
                    }
                    ObjectVersions::Current => {
                        let mut a = self.bucket.list_objects_v2(Some(&self.credentials));
                        a.with_prefix(prefix);
                        a.with_max_keys(1000);
                        if let Some((token, _)) = marker {
                            a.with_continuation_token(token.as_str());
                        }
                        a.sign(SIGNED_FOR)
                    }
                };
                self.client.get(url)
            })
            .await?;
        match self.versions {
            ObjectVersions::All => parse_versions(&body),
            ObjectVersions::Current => {
                let r = ListObjectsV2::parse_response(&body)
                    .map_err(|e| format!("unreadable ListObjectsV2 answer ({e})"))?;
                Ok(Page {
                    entries: r.contents.into_iter().map(|c| (c.key, None)).collect(),
                    next: r.next_continuation_token.map(|t| (t, None)),
                })
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Deleting

    /// Deletes what `found` lists, in `DeleteObjects` requests of up to 1,000, `concurrency` at
    /// once. Returns the versions deleted per key, and the keys that failed.
    async fn delete(&self, found: &Found) -> (BTreeMap<String, u64>, BTreeMap<String, String>) {
        let all: Vec<ObjectIdentifier> = found
            .iter()
            .flat_map(|(k, vs)| {
                vs.iter().map(|v| ObjectIdentifier {
                    key: k.clone(),
                    version_id: v.clone(),
                })
            })
            .collect();
        let chunks = all.chunks(DELETE_BATCH).map(|c| self.delete_chunk(c));
        let mut deleted: BTreeMap<String, u64> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for (d, e) in futures_util::future::join_all(chunks).await {
            for k in d {
                *deleted.entry(k).or_default() += 1;
            }
            errors.extend(e);
        }
        (deleted, errors)
    }

    /// One `DeleteObjects` request (quiet: the answer lists only the failures). Per-key errors
    /// that are worth another attempt (`SlowDown`, `InternalError`) are retried in place.
    async fn delete_chunk(
        &self,
        chunk: &[ObjectIdentifier],
    ) -> (Vec<String>, BTreeMap<String, String>) {
        let mut pending: Vec<ObjectIdentifier> = chunk.to_vec();
        let mut deleted = Vec::new();
        let mut errors = BTreeMap::new();
        for attempt in 0..ATTEMPTS {
            let answer = self
                .send("delete", || {
                    let mut a = self
                        .bucket
                        .delete_objects(Some(&self.credentials), pending.iter());
                    a.set_quiet(true);
                    let url = a.sign(SIGNED_FOR);
                    let (body, md5) = a.body_with_md5();
                    self.client
                        .post(url)
                        .header("content-md5", md5)
                        .header("content-type", "application/xml")
                        .body(body)
                })
                .await;
            let body = match answer {
                Ok(b) => b,
                Err(e) => {
                    for o in &pending {
                        errors.insert(o.key.clone(), self.failed(&[&o.key], "delete", &e));
                    }
                    return (deleted, errors);
                }
            };
            let failed = if body.trim().is_empty() {
                Vec::new()
            } else {
                match DeleteObjectsResponse::parse(&body) {
                    Ok(r) => r.errors,
                    Err(e) => {
                        for o in &pending {
                            errors.insert(
                                o.key.clone(),
                                format!(
                                    "target `{}`: {}: unreadable DeleteObjects answer ({e})",
                                    self.name,
                                    self.at(&o.key)
                                ),
                            );
                        }
                        return (deleted, errors);
                    }
                }
            };
            let failed_ids: BTreeSet<(String, Option<String>)> = failed
                .iter()
                .map(|f| (f.key.clone(), f.version_id.clone()))
                .collect();
            let mut again = Vec::new();
            for o in pending {
                let id = (o.key.clone(), o.version_id.clone());
                let err = failed_ids
                    .contains(&id)
                    .then(|| {
                        failed
                            .iter()
                            .find(|f| f.key == o.key && f.version_id == o.version_id)
                    })
                    .flatten()
                    // An answer may leave the version id out of its errors.
                    .or_else(|| failed.iter().find(|f| f.key == o.key));
                match err {
                    None => deleted.push(o.key),
                    Some(f) if is_retryable_code(&f.code) && attempt + 1 < ATTEMPTS => {
                        again.push(o)
                    }
                    Some(f) => {
                        errors.insert(
                            o.key.clone(),
                            format!(
                                "target `{}`: delete {}{}: {} ({})",
                                self.name,
                                self.at(&o.key),
                                o.version_id
                                    .as_deref()
                                    .map(|v| format!(" version {v}"))
                                    .unwrap_or_default(),
                                f.code,
                                excerpt(&f.message)
                            ),
                        );
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            pending = again;
            tokio::time::sleep(backoff(attempt)).await;
        }
        (deleted, errors)
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    /// Sends the request `build` makes (signed anew each attempt), retrying 5xx, 429 and
    /// transport failures with backoff. Returns the body of a 2xx answer. Each attempt is
    /// counted and timed under `op` (metrics `retentiond_target_request*`).
    async fn send(
        &self,
        op: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<String, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            let outcome = match build().send().await {
                Err(e) => Err(Failure {
                    retry: true,
                    message: transport_error(&e),
                }),
                Ok(r) => {
                    let status = r.status();
                    match r.text().await {
                        Ok(body) if status.is_success() => Ok(body),
                        Ok(body) => Err(Failure {
                            retry: status.is_server_error() || status.as_u16() == 429,
                            message: status_error(status, &body),
                        }),
                        Err(e) => Err(Failure {
                            retry: true,
                            message: transport_error(&e),
                        }),
                    }
                }
            };
            crate::metrics::record_target_request(&self.name, op, started.elapsed());
            match outcome {
                Ok(body) => return Ok(body),
                Err(f) if f.retry && attempt + 1 < ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(f) => {
                    return Err(if attempt > 0 {
                        format!("{} (after {} attempts)", f.message, attempt + 1)
                    } else {
                        f.message
                    });
                }
            }
        }
    }

    /// An error for `keys` (one key, or a request's): names the bucket and the keys.
    fn failed(&self, keys: &[&str], what: &str, e: &str) -> String {
        let shown = match keys {
            [k] => self.at(k),
            [k, ..] => format!("{} (and {} more keys)", self.at(k), keys.len() - 1),
            [] => self.at(""),
        };
        format!("target `{}`: {what} {shown}: {e}", self.name)
    }
}

/// One page of a listing: (key, version id) entries, and where the next page starts.
struct Page {
    entries: Vec<(String, Option<String>)>,
    next: Option<(String, Option<String>)>,
}

#[derive(Debug, FromXml)]
#[xml(rename = "ListVersionsResult", ns(S3_NS))]
struct ListVersionsResult {
    #[xml(rename = "IsTruncated")]
    is_truncated: Option<bool>,
    #[xml(rename = "NextKeyMarker")]
    next_key_marker: Option<String>,
    #[xml(rename = "NextVersionIdMarker")]
    next_version_id_marker: Option<String>,
    #[xml(rename = "EncodingType")]
    encoding_type: Option<String>,
    versions: Vec<VersionEntry>,
    markers: Vec<DeleteMarkerEntry>,
}

#[derive(Debug, FromXml)]
#[xml(rename = "Version", ns(S3_NS))]
struct VersionEntry {
    #[xml(rename = "Key")]
    key: String,
    #[xml(rename = "VersionId")]
    version_id: Option<String>,
}

#[derive(Debug, FromXml)]
#[xml(rename = "DeleteMarker", ns(S3_NS))]
struct DeleteMarkerEntry {
    #[xml(rename = "Key")]
    key: String,
    #[xml(rename = "VersionId")]
    version_id: Option<String>,
}

/// A `ListObjectVersions` answer: versions and delete markers alike are entries to delete.
fn parse_versions(body: &str) -> Result<Page, String> {
    let r: ListVersionsResult = instant_xml::from_str(body)
        .map_err(|e| format!("unreadable ListObjectVersions answer ({e})"))?;
    let encoded = r.encoding_type.as_deref() == Some("url");
    let decode = |s: String| {
        if encoded {
            // Form encoding, as AWS and MinIO send it: a space is `+` (a `+` itself is `%2B`).
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .unwrap_or(s)
        } else {
            s
        }
    };
    let mut entries: Vec<(String, Option<String>)> = r
        .versions
        .into_iter()
        .map(|v| (v.key, v.version_id))
        .chain(r.markers.into_iter().map(|m| (m.key, m.version_id)))
        .map(|(k, v)| (decode(k), v))
        .collect();
    entries.sort();
    let next = match (r.is_truncated, r.next_key_marker) {
        (Some(true), Some(k)) => Some((decode(k), r.next_version_id_marker)),
        _ => None,
    };
    Ok(Page { entries, next })
}

/// The longest common prefix of `keys`, cut at a character boundary.
fn common_prefix<'a>(keys: &[&'a str]) -> &'a str {
    let Some(first) = keys.first() else {
        return "";
    };
    let mut len = first.len();
    for k in &keys[1..] {
        len = first
            .bytes()
            .zip(k.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

/// Per-key `DeleteObjects` error codes worth another attempt.
fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" | "Throttling"
    )
}

/// 100 ms, 200 ms, 400 ms … capped at 3 s, with ±25% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = (100u64 << attempt.min(5)).min(3000);
    let jitter = rand::random_range(0..=base / 2);
    Duration::from_millis(base - base / 4 + jitter)
}

fn transport_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The URL is left out: it carries the signature (and a session token when there is one).
    let mut source = std::error::Error::source(e);
    let mut cause = String::new();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({})", excerpt(&cause))
    }
}

/// `403 AccessDenied (Access Denied)`: the status and the S3 error code and message, short.
fn status_error(status: reqwest::StatusCode, body: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{} {} ({})", status.as_u16(), excerpt(&c), excerpt(&m)),
        (Some(c), None) => format!("{} {}", status.as_u16(), excerpt(&c)),
        _ => format!("HTTP {status}"),
    }
}

/// At most 200 bytes of a server's message, on one line.
fn excerpt(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    if s.len() <= 200 {
        return s;
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The url's prefix as keys start with it: with a trailing `/`, or empty.
pub(super) fn folder_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// Fills a key template. Each value of `id`, `kind`, `account`, `org` must be one ordinary key
/// segment (no `/`, `\\`, NUL or control character, not empty, `.` or `..`), so an id never
/// names a key outside its folder; an attribute (`{attrs.path}`) may hold several segments,
/// each of them ordinary.
pub fn render(template: &str, item: &PurgeItem) -> Result<String, String> {
    super::fill_segments(template, item, "key segment", char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, attrs: &[(&str, &str)]) -> PurgeItem {
        PurgeItem {
            id: id.into(),
            kind: "file".into(),
            account: "a1".into(),
            org: "o1".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn keys_never_escape_their_folder() {
        assert_eq!(render("{account}/{id}", &item("f1", &[])).unwrap(), "a1/f1");
        assert_eq!(
            render(
                "{account}/{attrs.path}",
                &item("f1", &[("path", "x/y.pdf")])
            )
            .unwrap(),
            "a1/x/y.pdf"
        );
        for bad in ["../x", "..", ".", "a/b", "a\\b", "", "x\0y", "x\ny"] {
            assert!(
                render("{account}/{id}", &item(bad, &[])).is_err(),
                "{bad:?}"
            );
        }
        for bad in ["../x", "x//y", "/x", "x/", "x/./y"] {
            assert!(
                render("{attrs.path}", &item("f", &[("path", bad)])).is_err(),
                "{bad:?}"
            );
        }
        let e = render("{attrs.path}", &item("f", &[])).unwrap_err();
        assert!(e.contains("attribute `path`"), "{e}");
    }

    #[test]
    fn common_prefix_cuts_at_characters() {
        assert_eq!(common_prefix(&["p/a1/f1", "p/a1/f2", "p/a1/g"]), "p/a1/");
        assert_eq!(common_prefix(&["p/é1", "p/é2"]), "p/é");
        assert_eq!(common_prefix(&["p/éa", "p/èa"]), "p/");
        assert_eq!(common_prefix(&["k"]), "k");
    }

    #[test]
    fn version_listings_parse_with_markers_and_paging() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>p/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>
  <MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <NextKeyMarker>p/a%20b</NextKeyMarker><NextVersionIdMarker>v3</NextVersionIdMarker>
  <Version><Key>p/a%20b</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><Size>3</Size></Version>
  <DeleteMarker><Key>p/a%20b</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest></DeleteMarker>
  <Version><Key>p/c</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest></Version>
</ListVersionsResult>"#;
        let p = parse_versions(body).unwrap();
        assert_eq!(
            p.entries,
            vec![
                ("p/a b".to_string(), Some("v1".to_string())),
                ("p/a b".to_string(), Some("v2".to_string())),
                ("p/c".to_string(), Some("v3".to_string())),
            ]
        );
        assert_eq!(p.next, Some(("p/a b".to_string(), Some("v3".to_string()))));
    }

    #[test]
    fn form_encoded_keys_decode_plus_as_space() {
        // AWS and MinIO: a space is `+`, a `+` is `%2B`.
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>p/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>
  <MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <NextKeyMarker>p/Q1+2024.pdf</NextKeyMarker><NextVersionIdMarker>v2</NextVersionIdMarker>
  <Version><Key>p/a%2Bb</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest><Size>3</Size></Version>
  <Version><Key>p/Q1+2024.pdf</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><Size>3</Size></Version>
</ListVersionsResult>"#;
        let p = parse_versions(body).unwrap();
        assert_eq!(
            p.entries,
            vec![
                ("p/Q1 2024.pdf".to_string(), Some("v2".to_string())),
                ("p/a+b".to_string(), Some("v1".to_string())),
            ]
        );
        assert_eq!(
            p.next,
            Some(("p/Q1 2024.pdf".to_string(), Some("v2".to_string())))
        );
    }

    #[test]
    fn errors_show_code_and_message_briefly() {
        let body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(
            status_error(reqwest::StatusCode::FORBIDDEN, body),
            "403 AccessDenied (Access Denied)"
        );
        assert_eq!(excerpt(&"x".repeat(500)).len(), 200 + '…'.len_utf8());
    }
}
