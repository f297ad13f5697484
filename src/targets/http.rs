//! The `http` target: a service's own deletion API (issue 21). One request per resource, at most
//! `concurrency` in flight per target; every request carries an `Idempotency-Key` that is the
//! same for a resource and target on every try, so a purge sent twice (a retry, a crash before
//! the ledger recorded it) is safe for services that honour it.
//!
//! 2xx is removed, 404/410 already gone; 429, 5xx, timeouts and connection errors are retried
//! in place a few times (`Retry-After` honoured up to [`MAX_WAIT`]: a purge runs with the hold
//! lock held shared, so it never sleeps long), then fail the item for the sweep's own
//! retry/backoff. Any other status fails the item with the status and a short sanitised excerpt
//! of the body. Once one request of a call has used up its tries (or been told to wait longer
//! than [`MAX_WAIT`]), the call's other requests fail without being sent: a service that is down
//! or timing out costs one item's tries per batch, not every item's, so the purge transaction
//! (and the hold placements waiting for it) is never held for long. Placeholder values are percent-encoded as one path segment or query value; a
//! value can never add a path segment, a query parameter, or pick the host (config refuses
//! placeholders there).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Method, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::debug;

use super::{ItemResult, PurgeItem, Removed};
use crate::config::{HttpMethod, HttpTargetConfig};

/// Tries of one request in place (the first and three retries) before the item fails and the
/// sweep's backoff (`scheduler.retry_backoff`) takes over.
const TRIES: u32 = 4;
/// The first in-place wait; it doubles each retry.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest in-place wait. A longer `Retry-After` is honoured by failing the item now: the
/// sweep retries it after its own backoff.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// At most this many bytes of a failed response's body reach a log line.
const EXCERPT: usize = 200;
/// How much of a failed response's body is read to find the excerpt.
const EXCERPT_READ: usize = 1024;

pub struct HttpTarget {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("name", &self.inner.name)
            .field("url", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

struct Inner {
    name: String,
    client: Client,
    method: Method,
    /// URL templates, with secrets possibly (never printed: `shown` is).
    url: String,
    shown: String,
    body: Option<String>,
    token: Option<HeaderValue>,
    verify_url: Option<(String, String)>,
    account_url: Option<(String, String)>,
    permits: Semaphore,
}

/// What a service said of a resource.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// 2xx: done (deleted, or there).
    Done,
    /// 404 or 410: not there.
    Gone,
}

impl HttpTarget {
    pub fn new(name: &str, cfg: &HttpTargetConfig) -> Result<HttpTarget, String> {
        super::install_tls_provider();
        let client = Client::builder()
            .timeout(cfg.timeout.as_std())
            // A redirect is an answer like any other status: never follow it with the token.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("retentiond/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(cfg.concurrency)
            .build()
            .map_err(|e| format!("target `{name}`: cannot build an HTTP client: {e}"))?;
        let token = match &cfg.token {
            Some(t) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", t.expose())).map_err(|_| {
                        format!("target `{name}`: the token cannot be sent in a header")
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let pair = |u: &crate::config::SecretHttpUrl| (u.expose().to_string(), u.redacted());
        Ok(HttpTarget {
            inner: Arc::new(Inner {
                name: name.to_string(),
                client,
                method: match cfg.method {
                    HttpMethod::Delete => Method::DELETE,
                    HttpMethod::Post => Method::POST,
                },
                url: cfg.url.expose().to_string(),
                shown: cfg.url.redacted(),
                body: cfg.body.clone(),
                token,
                verify_url: cfg.verify_url.as_ref().map(pair),
                account_url: cfg.account_url.as_ref().map(pair),
                permits: Semaphore::new(cfg.concurrency),
            }),
        })
    }

    /// Sends each item's purge request; one result per item, in order.
    pub async fn purge(&self, kind: &str, items: &[PurgeItem]) -> Vec<ItemResult> {
        self.each(kind, items, |me, kind, item, trip| async move {
            me.purge_one(&kind, &item, &trip).await
        })
        .await
    }

    /// The account-level purge (R8): a DELETE of `account_url`, if configured.
    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        let me = &self.inner;
        let Some((template, shown)) = &me.account_url else {
            return Ok(Removed::default());
        };
        let item = PurgeItem::account(account, org);
        let url = fill_url(template, &item).map_err(|e| me.err(e))?;
        let key = idempotency_key(&me.name, "account", account);
        let what = format!("DELETE {shown} for account {account}");
        let trip = AtomicBool::new(false);
        let requests = match me
            .send(Method::DELETE, &url, None, Some(&key), &what, &trip)
            .await?
        {
            Answer::Done => 1,
            Answer::Gone => 0,
        };
        Ok(Removed {
            requests,
            ..Removed::default()
        })
    }

    /// A dry run sends nothing, so it cannot know what the service holds: every item reads as
    /// nothing to remove, and [`super::Target::probe_is_blind`] tells callers not to call
    /// that "nothing came back".
    pub fn probe(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        items.iter().map(|_| Ok(Removed::default())).collect()
    }

    /// After a crash: does the service still hold each item? Only `verify_url` can tell (a GET:
    /// 404/410 → 0, 2xx → 1); without it the answer is an error saying so.
    pub async fn remaining(&self, kind: &str, items: &[PurgeItem]) -> Vec<Result<u64, String>> {
        self.each(kind, items, |me, kind, item, trip| async move {
            let Some((template, shown)) = &me.verify_url else {
                return Err(me.err(format!(
                    "no `verify_url`: whether the service still holds {kind}/{} cannot be known without one",
                    item.id
                )));
            };
            let url = fill_url(template, &item).map_err(|e| me.err(e))?;
            let what = format!("verify GET {shown} for {kind}/{}", item.id);
            Ok(match me.send(Method::GET, &url, None, None, &what, &trip).await? {
                Answer::Done => 1,
                Answer::Gone => 0,
            })
        })
        .await
    }

    /// Runs `f` for every item at once (the semaphore bounds requests in flight), in tasks
    /// aborted if this future is dropped: requests never outlive their purge transaction. The
    /// items share one breaker (see the module doc).
    async fn each<T, F, Fut>(&self, kind: &str, items: &[PurgeItem], f: F) -> Vec<Result<T, String>>
    where
        T: Send + 'static,
        F: Fn(Arc<Inner>, String, PurgeItem, Arc<AtomicBool>) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        let trip = Arc::new(AtomicBool::new(false));
        for (i, item) in items.iter().enumerate() {
            let fut = f(
                self.inner.clone(),
                kind.to_string(),
                item.clone(),
                trip.clone(),
            );
            set.spawn(async move { (i, fut.await) });
        }
        let mut out: Vec<Result<T, String>> = items
            .iter()
            .map(|_| Err(self.inner.err("the request task failed".into())))
            .collect();
        while let Some(done) = set.join_next().await {
            match done {
                Ok((i, r)) => out[i] = r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        out
    }
}

impl Inner {
    fn err(&self, e: String) -> String {
        format!("target `{}`: {e}", self.name)
    }

    async fn purge_one(&self, kind: &str, item: &PurgeItem, trip: &AtomicBool) -> ItemResult {
        let url = fill_url(&self.url, item).map_err(|e| self.err(e))?;
        let body = match &self.body {
            Some(b) => Some(fill_body(b, item).map_err(|e| self.err(e))?),
            None => None,
        };
        let key = idempotency_key(&self.name, kind, &item.id);
        let what = format!("{} {} for {kind}/{}", self.method, self.shown, item.id);
        let requests = match self
            .send(self.method.clone(), &url, body, Some(&key), &what, trip)
            .await?
        {
            Answer::Done => 1,
            Answer::Gone => 0,
        };
        if let Some((template, shown)) = &self.verify_url {
            let url = fill_url(template, item).map_err(|e| self.err(e))?;
            let what = format!("verify GET {shown} for {kind}/{}", item.id);
            if self
                .send(Method::GET, &url, None, None, &what, trip)
                .await?
                == Answer::Done
            {
                return Err(self.err(format!(
                    "{what}: answered 2xx after the purge: {kind}/{} is still there",
                    item.id
                )));
            }
        }
        Ok(Removed {
            requests,
            ..Removed::default()
        })
    }

    /// One request, retried in place on 429, 5xx, timeouts and connection errors. `what`
    /// (method, redacted template, subject) names it in errors. `trip` is the call's breaker:
    /// once set, nothing more is sent; set here when the tries run out.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<String>,
        key: Option<&str>,
        what: &str,
        trip: &AtomicBool,
    ) -> Result<Answer, String> {
        let mut wait = FIRST_WAIT;
        let mut tried = 0;
        loop {
            tried += 1;
            let permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| self.err("closed".into()))?;
            if trip.load(Ordering::Relaxed) {
                return Err(self.err(format!(
                    "{what}: not sent: another request of this batch failed {TRIES} times or was told to wait; left to the sweep's retry"
                )));
            }
            let mut req = self.client.request(method.clone(), url);
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(t) = &self.token {
                req = req.header(AUTHORIZATION, t.clone());
            }
            if let Some(b) = &body {
                req = req.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let (problem, asked) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return Ok(Answer::Done);
                    }
                    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                        return Ok(Answer::Gone);
                    }
                    let asked = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, chrono::Utc::now()));
                    let excerpt = excerpt(resp).await;
                    let problem = format!("answered {status}{excerpt}");
                    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                        return Err(self.err(format!("{what}: {problem}")));
                    }
                    if let Some(a) = asked.filter(|a| *a > MAX_WAIT) {
                        trip.store(true, Ordering::Relaxed);
                        return Err(self.err(format!(
                            "{what}: {problem}; asked to retry after {}s, left to the sweep's retry",
                            a.as_secs()
                        )));
                    }
                    (problem, asked)
                }
                Err(e) if e.is_builder() => {
                    return Err(self.err(format!("{what}: {}", describe(e))));
                }
                Err(e) => (describe(e), None),
            };
            drop(permit);
            if tried >= TRIES {
                trip.store(true, Ordering::Relaxed);
                return Err(self.err(format!("{what}: {problem} ({tried} tries)")));
            }
            let pause = asked.unwrap_or(wait);
            debug!(target_name = %self.name, request = %what, problem = %problem, retry_in_ms = pause.as_millis() as u64, "http target: retrying in place");
            tokio::time::sleep(pause).await;
            wait = (wait * 2).min(MAX_WAIT);
        }
    }
}

/// `hex(sha256("<target>:<kind>:<id>"))`: the same for every try of one resource's purge.
pub fn idempotency_key(target: &str, kind: &str, id: &str) -> String {
    hex::encode(Sha256::digest(format!("{target}:{kind}:{id}").as_bytes()))
}

/// A transport error without its URL (which may carry secrets), with its causes.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(x) = source {
        s.push_str(": ");
        s.push_str(&x.to_string());
        source = x.source();
    }
    format!("{kind} ({s})")
}

/// `; body: "…"` — at most [`EXCERPT`] bytes of printable ASCII from the start of the body
/// (runs of anything else become one space; `"` becomes `'`), or nothing for an empty body.
async fn excerpt(mut resp: reqwest::Response) -> String {
    let mut raw = Vec::new();
    while raw.len() < EXCERPT_READ {
        match resp.chunk().await {
            Ok(Some(c)) => raw.extend_from_slice(&c),
            _ => break,
        }
    }
    let s = sanitize(&raw);
    if s.is_empty() {
        String::new()
    } else {
        format!("; body: \"{s}\"")
    }
}

fn sanitize(raw: &[u8]) -> String {
    let mut out = String::new();
    for &b in raw {
        if out.len() >= EXCERPT {
            break;
        }
        match b {
            b'"' => out.push('\''),
            0x21..=0x7e => out.push(b as char),
            _ if !out.is_empty() && !out.ends_with(' ') => out.push(' '),
            _ => {}
        }
    }
    out.trim_end().to_string()
}

/// `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime), as the wait
/// from `now` (a date in the past is no wait).
pub fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v)
        .map(|d| d.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(v, "%A, %d-%b-%y %H:%M:%S GMT")
                .map(|d| d.and_utc())
        })
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(v, "%a %b %e %H:%M:%S %Y").map(|d| d.and_utc())
        })
        .ok()?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Characters kept as they are in a filled value (RFC 3986 unreserved); every other byte is
/// percent-encoded, so a value is one path segment or one query value, whatever it holds.
fn encode_into(out: &mut String, value: &str) {
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Fills a URL template. In the path (before the template's `?`) a value must not be empty,
/// `.` or `..`: those would name the collection or its parent instead of the resource.
pub fn fill_url(template: &str, item: &PurgeItem) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    let mut in_query = false;
    while let Some(open) = rest.find('{') {
        let literal = &rest[..open];
        in_query |= literal.contains('?');
        out.push_str(literal);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unclosed `{` in template")?;
        let name = &after[..close];
        let value = item.placeholder(name)?;
        if !in_query && matches!(value, "" | "." | "..") {
            return Err(format!(
                "{name} `{}` cannot be used as a URL path segment",
                value.escape_debug()
            ));
        }
        encode_into(&mut out, value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills a body template; each value is JSON-escaped (the template supplies the quotes).
pub fn fill_body(template: &str, item: &PurgeItem) -> Result<String, String> {
    let mut out = String::new();
    for piece in crate::template::body_pieces(template)? {
        match piece {
            crate::template::Piece::Text(t) => out.push_str(t),
            crate::template::Piece::Var(name) => {
                let quoted = serde_json::to_string(item.placeholder(name)?)
                    .map_err(|e| format!("{name}: {e}"))?;
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> PurgeItem {
        PurgeItem {
            id: id.into(),
            kind: "library".into(),
            account: "a 1".into(),
            org: "o".into(),
            attrs: [("collection".to_string(), "c/1".to_string())].into(),
        }
    }

    #[test]
    fn values_are_one_segment_or_one_query_value() {
        let t = "http://h/v1/{attrs.collection}/docs/{id}?account={account}";
        assert_eq!(
            fill_url(t, &item("../x?y=1#z")).unwrap(),
            "http://h/v1/c%2F1/docs/..%2Fx%3Fy%3D1%23z?account=a%201"
        );
        assert_eq!(
            fill_url(t, &item("d\u{e9}&b=2")).unwrap(),
            "http://h/v1/c%2F1/docs/d%C3%A9%26b%3D2?account=a%201"
        );
        // The parser the client uses keeps it one segment and no extra parameter.
        let u = url::Url::parse(&fill_url(t, &item("../x?y=1#z")).unwrap()).unwrap();
        assert_eq!(u.path_segments().unwrap().count(), 4);
        assert_eq!(u.query_pairs().count(), 1);
        assert_eq!(u.fragment(), None);
        for bad in ["", ".", ".."] {
            let e = fill_url(t, &item(bad)).unwrap_err();
            assert!(e.contains("path segment"), "{bad:?}: {e}");
        }
        // In the query an empty value is harmless.
        let mut i = item("d1");
        i.account = String::new();
        assert_eq!(
            fill_url(t, &i).unwrap(),
            "http://h/v1/c%2F1/docs/d1?account="
        );
        let mut i = item("d1");
        i.attrs.clear();
        assert!(
            fill_url(t, &i)
                .unwrap_err()
                .contains("attribute `collection`")
        );
    }

    #[test]
    fn bodies_escape_json_and_keep_literal_braces() {
        let t = r#"{{"id": "{id}", "account": "{account}"}}"#;
        assert_eq!(
            crate::template::body_placeholders(t).unwrap(),
            vec!["id", "account"]
        );
        let body = fill_body(t, &item("x\",\"admin\":true,\"y\":\"\\")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "x\",\"admin\":true,\"y\":\"\\");
        assert_eq!(v.as_object().unwrap().len(), 2);
        assert!(crate::template::body_placeholders(r#"{"id": "{id}"}"#).is_err());
        assert!(crate::template::body_placeholders("{secret}").is_err());
        assert!(crate::template::body_placeholders("x }").is_err());
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("1994-11-06T08:49:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                retry_after(date, now),
                Some(Duration::from_secs(7)),
                "{date}"
            );
        }
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-1", "soon", "1.5"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn excerpts_are_short_printable_ascii() {
        let mut raw = b"\"err\"\n\tcaf\xc3\xa9 ".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 500));
        let s = sanitize(&raw);
        assert!(s.starts_with("'err' caf x"), "{s}");
        assert_eq!(s.len(), EXCERPT);
        assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(sanitize(b"\n\r\x00"), "");
    }

    #[test]
    fn idempotency_keys_are_stable_per_target_kind_and_id() {
        let k = idempotency_key("vectors", "library", "l1");
        assert_eq!(k.len(), 64);
        assert_eq!(k, idempotency_key("vectors", "library", "l1"));
        assert_ne!(k, idempotency_key("other", "library", "l1"));
        assert_ne!(k, idempotency_key("vectors", "file", "l1"));
    }

    /// A service that answers 503 with `Retry-After: 60` to everything: the first answer trips
    /// the breaker (the permit is held until then), so with one request in flight exactly one
    /// request is sent for three items; probe sends none; `remaining` without `verify_url`
    /// cannot tell.
    #[tokio::test]
    async fn a_long_retry_after_stops_the_batch_and_probe_sends_nothing() {
        use std::sync::atomic::AtomicUsize;
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let app = axum::Router::new().fallback(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "60")],
                    "down",
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = HttpTargetConfig {
            url: crate::config::SecretHttpUrl::new(format!("http://127.0.0.1:{port}/d/{{id}}")),
            method: HttpMethod::Delete,
            body: None,
            token: None,
            timeout: crate::model::Span::from_secs(5),
            verify_url: None,
            concurrency: 1,
            account_url: None,
        };
        let t = HttpTarget::new("svc", &cfg).unwrap();
        let items = [item("a"), item("b"), item("c")];
        assert_eq!(t.probe(&items).len(), 3);
        assert_eq!(count.load(Ordering::SeqCst), 0, "probe sends nothing");
        let r = t.purge("library", &items).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "{r:?}");
        let errs: Vec<String> = r.into_iter().map(|x| x.unwrap_err()).collect();
        assert_eq!(
            errs.iter()
                .filter(|e| e.contains("retry after 60s"))
                .count(),
            1,
            "{errs:?}"
        );
        assert_eq!(
            errs.iter().filter(|e| e.contains("not sent")).count(),
            2,
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .all(|e| e.contains("503") || e.contains("not sent"))
        );
        let left = t.remaining("library", &items[..1]).await;
        assert!(
            left[0].as_ref().unwrap_err().contains("verify_url"),
            "{left:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn samples_replace_placeholders() {
        assert_eq!(
            crate::template::sample_url("http://h:1/{id}?a={account}"),
            "http://h:1/x?a=x"
        );
    }
}
