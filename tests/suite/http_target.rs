//! Issue 21: the `http` purge target, end to end through the built binary, against a small
//! document service written here (axum on 127.0.0.1:0) that stores documents, answers DELETE,
//! GET and a JSON `POST /v1/purge/{id}`, counts every request, checks the bearer token and
//! records `Idempotency-Key` and the body.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::common::*;
use crate::rel::*;

const TOKEN: &str = "test-token-7f3a";

/// One request the service received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query exactly as sent (percent-encoded).
    uri: String,
    key: Option<String>,
    authorized: bool,
    content_type: Option<String>,
    body: String,
}

#[derive(Default)]
struct SvcState {
    /// Stored documents, by percent-encoded path.
    docs: BTreeSet<String>,
    seen: Vec<Seen>,
    /// Answers to give a path before behaving normally: (status, Retry-After).
    script: HashMap<String, VecDeque<(u16, Option<&'static str>)>>,
    /// Paths that answer 403 (with a long, non-ASCII body) while listed.
    forbidden: BTreeSet<String>,
    /// How long each request takes to answer (so that concurrent ones overlap).
    delay: Duration,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
}

/// The document service, on its own thread and runtime (the tests block on the binary).
struct Svc {
    state: Arc<Mutex<SvcState>>,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts the request in flight for its `delay`, then answers it ([`answer_now`]).
async fn answer(
    axum::extract::State(st): axum::extract::State<Arc<Mutex<SvcState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let delay = {
        let mut s = st.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        s.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let r = answer_now(&st, method, uri, headers, body);
    st.lock().unwrap().in_flight -= 1;
    r
}

fn answer_now(
    st: &Mutex<SvcState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    let mut s = st.lock().unwrap();
    s.seen.push(Seen {
        method: method.to_string(),
        uri: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        key: headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_string()),
        authorized,
        content_type: headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string()),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if s.forbidden.contains(&path) {
        let mut body = "{\"error\":\"forbidden\",\"detail\":\"caf\u{e9}\n".to_string();
        body.push_str(&"y".repeat(400));
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    if let Some((status, retry_after)) = s.script.get_mut(&path).and_then(|q| q.pop_front()) {
        let mut r = (StatusCode::from_u16(status).unwrap(), "try later").into_response();
        if let Some(ra) = retry_after {
            r.headers_mut().insert("retry-after", ra.parse().unwrap());
        }
        return r;
    }
    let found = match method {
        Method::DELETE => s.docs.remove(&path),
        Method::GET => s.docs.contains(&path),
        // `POST /v1/purge/{id}` with `{"id", "account", "collection"}`: deletes that document;
        // 400 unless the body is that JSON object and names the id of the path.
        Method::POST => {
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return (StatusCode::BAD_REQUEST, "not JSON").into_response(),
            };
            let (Some(id), Some(coll), Some(_)) = (
                v["id"].as_str(),
                v["collection"].as_str(),
                v["account"].as_str(),
            ) else {
                return (StatusCode::BAD_REQUEST, "id, account, collection").into_response();
            };
            if path != format!("/v1/purge/{id}") {
                return (StatusCode::BAD_REQUEST, "another id").into_response();
            }
            s.docs.remove(&Svc::doc(coll, id))
        }
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    if found {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

impl Svc {
    fn start() -> Svc {
        let state = Arc::new(Mutex::new(SvcState::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let app = axum::Router::new().fallback(answer).with_state(st);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Svc {
            state,
            port: port_rx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn s(&self) -> std::sync::MutexGuard<'_, SvcState> {
        self.state.lock().unwrap()
    }

    /// The path of a document (what the target's URL template makes of it).
    fn doc(collection: &str, id_encoded: &str) -> String {
        format!("/v1/collections/{collection}/documents/{id_encoded}")
    }

    fn put(&self, path: &str) {
        self.s().docs.insert(path.to_string());
    }

    fn has(&self, path: &str) -> bool {
        self.s().docs.contains(path)
    }

    fn requests(&self) -> usize {
        self.s().seen.len()
    }

    /// Requests to `path` (any query), as `METHOD` strings.
    fn to(&self, path: &str) -> Vec<Seen> {
        self.s()
            .seen
            .iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key(kind: &str, id: &str) -> String {
    hex::encode(Sha256::digest(format!("vectors:{kind}:{id}").as_bytes()))
}

fn library(id: &str, account: &str, collection: &str) -> String {
    let id = serde_json::to_string(id).unwrap();
    format!(
        "{{\"type\":\"resource.created\",\"id\":{id},\"kind\":\"library\",\"account\":\"{account}\",\"attrs\":{{\"collection\":\"{collection}\",\"title\":\"user text\"}}}}\n{{\"type\":\"resource.deleted\",\"id\":{id}}}\n"
    )
}

/// The document URL template, after `http://127.0.0.1:PORT`.
const DOC: &str = "/v1/collections/{attrs.collection}/documents/{id}";

/// How a test's `vectors` target is configured.
struct Vectors {
    /// `url`'s path (and query), after `http://127.0.0.1:PORT`.
    path: String,
    /// `verify_url` = the document's URL.
    verify: bool,
    /// More keys of `[targets.vectors]`, `{port}` replaced by the service's port.
    more: String,
    /// Also an account-level target (`accounts.targets`).
    accounts: bool,
}

impl Default for Vectors {
    fn default() -> Self {
        Vectors {
            path: DOC.into(),
            verify: false,
            more: String::new(),
            accounts: false,
        }
    }
}

impl Vectors {
    fn verified() -> Vectors {
        Vectors {
            verify: true,
            ..Vectors::default()
        }
    }
}

/// The `vectors` target and a `library` kind purged through it, due at once.
fn vectors(env: &Env, port: u16, v: &Vectors) -> String {
    let token = env.dir.path().join("vectors-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    format!(
        "[kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"vectors\"]\n\n\
         [targets.vectors]\ntype = \"http\"\nurl = \"{base}{}\"\ntoken_file = \"{}\"\ntimeout = \"5s\"\n{}{}\n",
        v.path,
        token.display(),
        if v.verify {
            format!("verify_url = \"{base}{DOC}\"\n")
        } else {
            String::new()
        },
        v.more.replace("{port}", &port.to_string()),
    )
}

/// One test: its ledger and application files, the document service, and a config whose
/// `vectors` target calls it (with `knobs` for the rest).
struct World {
    env: Env,
    svc: Svc,
    cfg: PathBuf,
}

impl World {
    async fn new(b: Backend, v: Vectors, knobs: Knobs) -> World {
        let env = Env::new(b).await;
        let svc = Svc::start();
        let extra = vectors(&env, svc.port, &v) + &knobs.extra;
        let mut text = env.config_text(&Knobs { extra, ..knobs });
        if v.accounts {
            let plain = "targets = [\"app_db\", \"uploads\"]\n\n[zdr]";
            assert!(text.contains(plain));
            text = text.replace(
                plain,
                "targets = [\"app_db\", \"uploads\", \"vectors\"]\n\n[zdr]",
            );
        }
        let cfg = env.write_config(&text);
        World { env, svc, cfg }
    }

    /// Ingests org `o1` (free), its `accounts`, then `library` items (id, account, collection)
    /// created and deleted.
    fn ingest(&self, accounts: &[&str], items: &[(&str, &str, &str)]) {
        let mut ev = "{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"free\"}\n".to_string();
        for a in accounts {
            ev.push_str(&format!(
                "{{\"type\":\"account.created\",\"account\":\"{a}\",\"org\":\"o1\"}}\n"
            ));
        }
        for (id, account, collection) in items {
            ev.push_str(&library(id, account, collection));
        }
        self.events(&ev);
    }

    fn events(&self, ndjson: &str) {
        ok(&rd_stdin(&self.cfg, &["ingest", "-"], ndjson));
    }

    fn sweep(&self) -> serde_json::Value {
        sweep(&self.cfg)
    }

    async fn receipts(&self) -> std::collections::BTreeMap<String, Vec<serde_json::Value>> {
        receipts(&open_ledger(&self.env).await).await
    }
}

fn sweep(cfg: &Path) -> serde_json::Value {
    json(&rd(cfg, &["sweep", "--once", "--json"]))
}

fn targets_of(receipt: &serde_json::Value) -> serde_json::Value {
    receipt["targets"].clone()
}

both_backends! {
    /// Two documents of a1 are purged through the service (a DELETE each, verified by a GET),
    /// with `{attrs.collection}` in the URL, the token and the idempotency key on every request;
    /// a hold on a2 keeps its document (no request for it at all); receipts count requests; a
    /// reapply dry run afterwards sends nothing and says it could not check.
    async fn purges_through_the_service_and_a_hold_keeps_an_account(b: Backend) {
        let w = World::new(b, Vectors::verified(), Knobs::default()).await;
        let (svc, cfg) = (&w.svc, &w.cfg);
        let (l1, l2, l3, other) = (
            Svc::doc("c1", "l1"),
            Svc::doc("c2", "l2"),
            Svc::doc("c1", "l3"),
            Svc::doc("c1", "l9"),
        );
        for p in [&l1, &l2, &l3, &other] {
            svc.put(p);
        }
        w.ingest(&["a1", "a2"], &[("l1", "a1", "c1"), ("l2", "a1", "c2"), ("l3", "a2", "c1")]);
        let hold = hold_account(cfg, "a2");
        assert_eq!(hold["matched"], 1, "{hold}");
        assert_eq!(svc.requests(), 0);

        let report = w.sweep();
        assert_eq!((report["purged"].as_i64(), report["held"].as_i64()), (Some(2), Some(1)), "{report}");
        assert!(!svc.has(&l1) && !svc.has(&l2));
        assert!(svc.has(&l3), "the held account's document is kept");
        assert!(svc.has(&other));
        assert!(svc.to(&l3).is_empty(), "no request at all for a held resource");
        for (p, id) in [(&l1, "l1"), (&l2, "l2")] {
            let seen = svc.to(p);
            let methods: Vec<&str> = seen.iter().map(|r| r.method.as_str()).collect();
            assert_eq!(methods, vec!["DELETE", "GET"], "{seen:?}");
            assert_eq!(seen[0].key.as_deref(), Some(key("library", id).as_str()));
        }
        assert_eq!(svc.requests(), 4);
        assert!(svc.s().seen.iter().all(|r| r.authorized));

        let receipts = w.receipts().await;
        for id in ["l1", "l2"] {
            assert_eq!(receipts[id].len(), 1);
            assert_eq!(
                targets_of(&receipts[id][0]),
                serde_json::json!([{"target": "vectors", "rows": 0, "files": 0, "requests": 1}]),
                "{}", receipts[id][0]
            );
        }
        assert!(!receipts.contains_key("l3"));
        let status = json(&rd(cfg, &["status", "--json"]));
        assert_eq!(status["resources"]["purged"], 2, "{status}");

        // A dry run sends nothing, and does not claim that nothing came back.
        let dry = json(&rd(cfg, &["reapply", "--since", "1d", "--dry-run", "--json"]));
        assert_eq!(svc.requests(), 4, "a dry run sends no request");
        assert_eq!(dry["not_checked"], serde_json::json!({"vectors": 2}), "{dry}");
        assert_eq!(dry["came_back"], 0, "{dry}");
        let text = ok(&rd(cfg, &["reapply", "--since", "1d", "--dry-run"]));
        assert!(text.contains("not checked: 2 item(s) on target vectors"), "{text}");
        assert!(!text.contains("\nnothing had come back\n") && !text.ends_with("nothing had come back"), "{text}");
        let dry_sweep = ok(&rd(cfg, &["sweep", "--once", "--dry-run"]));
        assert!(!dry_sweep.is_empty());
        assert_eq!(svc.requests(), 4, "nor does a sweep dry run");
        audit_verify(cfg);
    }
}

/// 503 once and 429 with `Retry-After` once are retried in place within the sweep (same
/// idempotency key); a hostile id stays one encoded path segment; a service that keeps answering
/// 503 fails the item, which the sweep's own backoff retries later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_answers_are_retried_and_a_hostile_id_stays_one_segment() {
    let w = World::new(
        Backend::Sqlite,
        Vectors::default(),
        Knobs {
            retry_backoff: "1s",
            ..Knobs::default()
        },
    )
    .await;
    let (svc, cfg) = (&w.svc, &w.cfg);
    let hostile = "../x?y=1#z";
    let (l1, l2, l3, l4) = (
        Svc::doc("c1", "l1"),
        Svc::doc("c1", "l2"),
        Svc::doc("c1", "..%2Fx%3Fy%3D1%23z"),
        Svc::doc("c1", "l4"),
    );
    let decoy = "/v1/collections/c1/x".to_string();
    for p in [&l1, &l2, &l3, &l4, &decoy] {
        svc.put(p);
    }
    {
        let mut s = svc.s();
        s.script.insert(l1.clone(), VecDeque::from([(503, None)]));
        s.script
            .insert(l2.clone(), VecDeque::from([(429, Some("1"))]));
        s.script
            .insert(l4.clone(), VecDeque::from([(503, None); 4]));
    }
    w.ingest(
        &["a1"],
        &[
            ("l1", "a1", "c1"),
            ("l2", "a1", "c1"),
            (hostile, "a1", "c1"),
        ],
    );
    let report = w.sweep();
    assert_eq!(
        (report["purged"].as_i64(), report["failed"].as_i64()),
        (Some(3), Some(0)),
        "{report}"
    );
    // A separate sweep: a call whose request used up its tries sends no more of that batch.
    w.events(&library("l4", "a1", "c1"));
    let out = rd(cfg, &["sweep", "--once", "--json"]);
    let report = json(&out);
    assert_eq!(
        (report["purged"].as_i64(), report["failed"].as_i64()),
        (Some(0), Some(1)),
        "{report}"
    );
    for (p, id, n) in [
        (&l1, "l1", 2),
        (&l2, "l2", 2),
        (&l3, hostile, 1),
        (&l4, "l4", 4),
    ] {
        let seen = svc.to(p);
        assert_eq!(seen.len(), n, "{id}: {seen:?}");
        assert!(
            seen.iter()
                .all(|r| r.method == "DELETE"
                    && r.key.as_deref() == Some(key("library", id).as_str())),
            "{seen:?}"
        );
    }
    let hostile_seen = svc.to(&l3);
    assert_eq!(hostile_seen[0].uri, l3, "no query added, nothing decoded");
    assert!(svc.has(&decoy), "the id did not reach a neighbour");
    assert!(!svc.has(&l1) && !svc.has(&l2) && !svc.has(&l3));
    assert!(svc.has(&l4));
    let log = stderr(&out);
    assert!(
        log.contains("503 Service Unavailable") && log.contains("4 tries"),
        "{log}"
    );
    let r4 = json(&rd(cfg, &["resource", "show", "l4", "--json"]));
    assert_ne!(r4["state"], "purged", "{r4}");
    assert!(r4["last_error"].as_str().unwrap().contains("503"), "{r4}");

    // The sweep's backoff (1s here) retries it; the service has recovered.
    std::thread::sleep(Duration::from_millis(1600));
    let report = w.sweep();
    assert_eq!(report["purged"], 1, "{report}");
    assert!(!svc.has(&l4));
    assert_eq!(svc.to(&l4).len(), 5);
    let receipts = w.receipts().await;
    assert_eq!(receipts.len(), 4);
    assert!(receipts.values().all(|r| r.len() == 1));
    audit_verify(cfg);
}

/// A 403 fails the purge (never a success) with the status and a short printable excerpt in
/// the log and the ledger; with attempts used up `retry` re-queues it, and it purges once the
/// service allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_fails_the_purge_and_retry_brings_it_back() {
    let w = World::new(
        Backend::Sqlite,
        Vectors::default(),
        Knobs {
            max_attempts: 1,
            ..Knobs::default()
        },
    )
    .await;
    let (svc, cfg) = (&w.svc, &w.cfg);
    let l1 = Svc::doc("c1", "l1");
    svc.put(&l1);
    svc.s().forbidden.insert(l1.clone());
    w.ingest(&["a1"], &[("l1", "a1", "c1")]);

    let out = rd(cfg, &["sweep", "--once", "--json"]);
    assert_eq!(json(&out)["failed"], 1, "{}", text(&out));
    assert_eq!(svc.to(&l1).len(), 1, "a 403 is not retried in place");
    let log = stderr(&out);
    assert!(log.contains("403 Forbidden") && log.contains("l1"), "{log}");
    assert!(!log.contains(TOKEN));
    let status = json(&rd(cfg, &["status", "--json"]));
    let failed = &status["failed"][0];
    assert_eq!(failed["id"], "l1", "{status}");
    let err = failed["last_error"].as_str().unwrap();
    assert!(err.contains("403 Forbidden"), "{err}");
    let excerpt = err.split("body: \"").nth(1).unwrap().trim_end_matches('"');
    assert!(
        excerpt.starts_with("{'error':'forbidden','detail':'caf y"),
        "{excerpt}"
    );
    assert!(excerpt.len() <= 200, "{}", excerpt.len());
    assert!(err.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{err}");
    assert!(svc.has(&l1));

    let retried = json(&rd(cfg, &["retry", "--json"]));
    assert_eq!(retried["requeued"], serde_json::json!(["l1"]), "{retried}");
    svc.s().forbidden.clear();
    assert_eq!(w.sweep()["purged"], 1);
    assert!(!svc.has(&l1));
    assert_eq!(w.receipts().await["l1"].len(), 1);
    audit_verify(cfg);
}

both_backends! {
    /// The sweep dies right after the service was called, before the ledger recorded anything.
    /// A hold on a1 is placed meanwhile: l1's claim is found out with `verify_url` (404: gone)
    /// and recorded purged; l2 (a2) is simply purged again (404: already gone). One receipt
    /// each; the retried DELETE carried the same idempotency key.
    async fn a_crash_after_the_request_is_finished_by_the_next_sweep(b: Backend) {
        let w = World::new(b, Vectors::verified(), Knobs { lease: "1s", ..Knobs::default() }).await;
        let (svc, cfg) = (&w.svc, &w.cfg);
        let (l1, l2) = (Svc::doc("c1", "l1"), Svc::doc("c1", "l2"));
        svc.put(&l1);
        svc.put(&l2);
        w.ingest(&["a1", "a2"], &[("l1", "a1", "c1"), ("l2", "a2", "c1")]);

        let o = rd_crash(cfg, "after_target_0", &["sweep", "--once"], None);
        assert_eq!(o.status.code(), Some(86), "{}", text(&o));
        assert!(!svc.has(&l1) && !svc.has(&l2), "the service was called");
        assert!(w.receipts().await.is_empty());
        let hold = hold_account(cfg, "a1");
        std::thread::sleep(Duration::from_millis(1150));

        let report = w.sweep();
        assert_eq!((report["purged"].as_i64(), report["found_gone"].as_i64()), (Some(2), Some(1)), "{report}");
        let receipts = w.receipts().await;
        assert_eq!(receipts.len(), 2);
        assert!(receipts.values().all(|r| r.len() == 1));
        assert_eq!(receipts["l1"][0]["found_gone"]["holds"], serde_json::json!([hold["id"]]), "{}", receipts["l1"][0]);
        assert_eq!(
            targets_of(&receipts["l2"][0]),
            serde_json::json!([{"target": "vectors", "rows": 0, "files": 0}]),
            "the second DELETE found it gone"
        );
        let l1_seen: Vec<String> = svc.to(&l1).iter().map(|r| r.method.clone()).collect();
        assert_eq!(l1_seen, vec!["DELETE", "GET", "GET"], "purge+verify, then found out by a GET");
        let l2_seen = svc.to(&l2);
        let deletes: Vec<&Seen> = l2_seen.iter().filter(|r| r.method == "DELETE").collect();
        assert_eq!(deletes.len(), 2);
        assert!(deletes.iter().all(|r| r.key.as_deref() == Some(key("library", "l2").as_str())));
        assert_eq!(w.sweep()["purged"], 0);
        audit_verify(cfg);
    }
}

/// Bad values are refused at load with the key named, exit 2, and the token never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_target_config_is_refused_naming_the_key() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.dir.path().join("tok");
    std::fs::write(&token, "t0k3n-value\n").unwrap();
    let empty = env.dir.path().join("empty-tok");
    std::fs::write(&empty, "\n").unwrap();
    let spaced = env.dir.path().join("spaced-tok");
    std::fs::write(&spaced, "t0k3n value\n").unwrap();
    let good = format!(
        "url = \"http://127.0.0.1:9/docs/{{id}}\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let base = |target: &str, accounts_extra: bool| {
        let mut text = env.config_text(&Knobs {
            extra: format!(
                "[kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"vectors\"]\n\n[targets.vectors]\ntype = \"http\"\n{target}"
            ),
            ..Knobs::default()
        });
        if accounts_extra {
            text = text.replace(
                "targets = [\"app_db\", \"uploads\"]\n\n[zdr]",
                "targets = [\"app_db\", \"uploads\", \"vectors\"]\n\n[zdr]",
            );
        }
        text
    };
    // The good one loads, and describes itself without the token.
    let cfg = env.write_config(&base(&good, false));
    let out = ok(&rd(&cfg, &["check-config"]));
    assert!(
        out.contains("vectors: http DELETE http://127.0.0.1:9/docs/{id}"),
        "{out}"
    );
    assert!(!out.contains("t0k3n"));
    let cases: Vec<(String, bool, &str)> = vec![
        (
            "url = \"ftp://h/{id}\"\n".into(),
            false,
            "targets.vectors.url",
        ),
        (
            "url = \"http://{attrs.host}/docs/{id}\"\n".into(),
            false,
            "targets.vectors.url",
        ),
        (
            "url = \"http://h/docs/all\"\n".into(),
            false,
            "targets.vectors.url",
        ),
        (
            "url = \"http://h/docs/{id}#x\"\n".into(),
            false,
            "targets.vectors.url",
        ),
        (
            "url = \"http://h/docs/{secret}\"\n".into(),
            false,
            "targets.vectors.url",
        ),
        (
            format!("{good}verify_url = \"h/docs/{{id}}\"\n"),
            false,
            "targets.vectors.verify_url",
        ),
        (
            format!("{good}method = \"PUT\"\n"),
            false,
            "targets.vectors.method",
        ),
        (
            format!("{good}body = \"{{{{}}}}\"\n"),
            false,
            "targets.vectors.body",
        ),
        (
            format!("{good}method = \"POST\"\nbody = \"{{\\\"id\\\": \\\"{{id}}\\\"}}\"\n"),
            false,
            "targets.vectors.body",
        ),
        (
            format!("{good}concurrency = 0\n"),
            false,
            "targets.vectors.concurrency",
        ),
        (
            format!("{good}timeout = \"soon\"\n"),
            false,
            "targets.vectors.timeout",
        ),
        (
            format!("{good}token = \"inline\"\n"),
            false,
            "targets.vectors",
        ),
        (
            format!("{good}account_url = \"http://h/users/{{id}}\"\n"),
            false,
            "targets.vectors.account_url",
        ),
        (good.clone(), true, "accounts.targets[2]"),
        (
            "url = \"http://h/docs/{id}\"\ntoken_env = \"RETENTIOND_TEST_NO_SUCH_TOKEN\"\n".into(),
            false,
            "targets.vectors.token_env",
        ),
        (
            format!(
                "url = \"http://h/docs/{{id}}\"\ntoken_file = \"{}\"\n",
                empty.display()
            ),
            false,
            "targets.vectors.token_file",
        ),
        (
            format!(
                "url = \"http://h/docs/{{id}}\"\ntoken_file = \"{}\"\n",
                spaced.display()
            ),
            false,
            "targets.vectors.token_file",
        ),
        (
            format!(
                "url = \"http://h/docs/{{id}}\"\ntoken_file = \"{}\"\n",
                env.dir.path().join("nope").display()
            ),
            false,
            "targets.vectors.token_file",
        ),
    ];
    for (target, accounts, want) in cases {
        let cfg = env.write_config(&base(&target, accounts));
        let o = rd(&cfg, &["check-config"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{target}: {}", text(&o));
        assert!(err.contains(want), "{target}: want `{want}` in {err}");
        assert!(!err.contains("t0k3n"), "{err}");
    }
    // A valid POST with a JSON body and an account URL loads.
    let cfg = env.write_config(&base(
        &format!(
            "{good}method = \"POST\"\nbody = '{{{{\"id\": \"{{id}}\", \"account\": \"{{account}}\"}}}}'\naccount_url = \"http://127.0.0.1:9/users/{{account}}?org={{org}}\"\n"
        ),
        true,
    ));
    ok(&rd(&cfg, &["check-config"]));
}

/// A service authorised by its URL (`?api_key=`, a signature, a key as the user-info): the
/// request carries them, but `check-config`, the failure's log line and `status` show `***`.
/// (Before, only passwords and pass/pwd/secret/token parameters were hidden.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_a_service_url_are_never_printed() {
    const SECRETS: [&str; 3] = ["K3YUSER", "AP1KEY", "S1GNATURE"];
    let w = World::new(
        Backend::Sqlite,
        Vectors {
            path: format!("{DOC}?api_key=AP1KEY"),
            more: format!(
                "verify_url = \"http://127.0.0.1:{{port}}{DOC}?sig=S1GNATURE\"\n\
                 account_url = \"https://K3YUSER@127.0.0.1:{{port}}/v1/users/{{account}}?api_key=AP1KEY&org={{org}}\"\n"
            ),
            ..Vectors::default()
        },
        Knobs {
            max_attempts: 1,
            ..Knobs::default()
        },
    )
    .await;
    let (svc, cfg, port) = (&w.svc, &w.cfg, w.svc.port);
    // The user-info too (written here: a template's `{port}` is filled by `vectors`).
    let with_user = std::fs::read_to_string(cfg).unwrap().replace(
        &format!("url = \"http://127.0.0.1:{port}{DOC}?api_key"),
        &format!("url = \"http://K3YUSER@127.0.0.1:{port}{DOC}?api_key"),
    );
    std::fs::write(cfg, with_user).unwrap();
    let shown = ok(&rd(cfg, &["check-config"]));
    assert!(
        shown.contains(&format!(
            "vectors: http DELETE http://***@127.0.0.1:{port}{DOC}?api_key=*** "
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "account purge: DELETE https://***@127.0.0.1:{port}/v1/users/{{account}}?api_key=***&org={{org}}"
        )),
        "{shown}"
    );
    let l1 = Svc::doc("c1", "l1");
    svc.put(&l1);
    svc.s().forbidden.insert(l1.clone());
    w.ingest(&["a1"], &[("l1", "a1", "c1")]);
    let out = rd(cfg, &["sweep", "--once", "--json"]);
    assert_eq!(json(&out)["failed"], 1, "{}", text(&out));
    let seen = svc.to(&l1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].uri.ends_with("?api_key=AP1KEY"),
        "the request itself carries the key: {seen:?}"
    );
    let log = stderr(&out);
    let line = log
        .lines()
        .find(|l| l.contains("l1") && l.contains("answered 40"))
        .unwrap_or_else(|| panic!("a target-failure line for l1: {log}"));
    assert!(
        line.contains(&format!("http://***@127.0.0.1:{port}{DOC}?api_key=***")),
        "{line}"
    );
    let status = ok(&rd(cfg, &["status"]));
    assert!(status.contains("api_key=***"), "{status}");
    for s in SECRETS {
        assert!(!shown.contains(s), "check-config shows {s}: {shown}");
        assert!(!log.contains(s), "the log shows {s}: {log}");
        assert!(!status.contains(s), "status shows {s}: {status}");
    }
}

both_backends! {
    /// `method = "POST"` with a JSON `body`: one POST per resource to `/v1/purge/{id}`, whose
    /// body the service parses and checks (placeholders filled, JSON-escaped; `{attrs.…}`
    /// included), then deletes the document it names; verified by a GET, counted in the
    /// receipt; the same idempotency key as a DELETE would carry.
    async fn a_post_with_a_body_purges_through_the_service(b: Backend) {
        let w = World::new(
            b,
            Vectors {
                path: "/v1/purge/{id}".into(),
                verify: true,
                more: "method = \"POST\"\n\
                       body = '{{\"id\": \"{id}\", \"account\": \"{account}\", \"collection\": \"{attrs.collection}\", \"reason\": \"retention\"}}'\n"
                    .into(),
                ..Vectors::default()
            },
            Knobs::default(),
        )
        .await;
        let svc = &w.svc;
        let (l1, l2, other) = (Svc::doc("c1", "l1"), Svc::doc("c2", "l2"), Svc::doc("c1", "l9"));
        for p in [&l1, &l2, &other] {
            svc.put(p);
        }
        w.ingest(&["a1", "a2"], &[("l1", "a1", "c1"), ("l2", "a2", "c2")]);
        let report = w.sweep();
        assert_eq!((report["purged"].as_i64(), report["failed"].as_i64()), (Some(2), Some(0)), "{report}");
        assert!(!svc.has(&l1) && !svc.has(&l2));
        assert!(svc.has(&other));
        for (id, account, collection, doc) in [("l1", "a1", "c1", &l1), ("l2", "a2", "c2", &l2)] {
            let posts = svc.to(&format!("/v1/purge/{id}"));
            assert_eq!(posts.len(), 1, "{posts:?}");
            let p = &posts[0];
            assert_eq!(p.method, "POST");
            assert!(p.authorized);
            assert_eq!(p.content_type.as_deref(), Some("application/json"));
            assert_eq!(p.key.as_deref(), Some(key("library", id).as_str()));
            let body: serde_json::Value = serde_json::from_str(&p.body).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"id": id, "account": account, "collection": collection, "reason": "retention"}),
                "{}", p.body
            );
            let verify: Vec<String> = svc.to(doc).iter().map(|r| r.method.clone()).collect();
            assert_eq!(verify, vec!["GET"], "verified by a GET of the document");
        }
        assert_eq!(svc.requests(), 4);
        let receipts = w.receipts().await;
        for id in ["l1", "l2"] {
            assert_eq!(
                targets_of(&receipts[id][0]),
                serde_json::json!([{"target": "vectors", "rows": 0, "files": 0, "requests": 1}]),
                "{}", receipts[id][0]
            );
        }
        // Purged again (nothing there): the service answers 404, which counts as removed.
        assert_eq!(w.sweep()["purged"], 0);
        audit_verify(&w.cfg);
    }
}

both_backends! {
    /// R8 through `account_url`: an account deletion purges its resources, and the account
    /// URL is called only once every one of them is purged — not while a hold keeps one — then
    /// exactly once (DELETE, `{account}` and `{org}` filled, an idempotency key of its own),
    /// counted in the account's audit entry. Another account's record is not touched.
    async fn the_account_url_is_called_after_every_resource_is_purged(b: Backend) {
        let w = World::new(
            b,
            Vectors {
                more: "account_url = \"http://127.0.0.1:{port}/v1/users/{account}?org={org}\"\n".into(),
                accounts: true,
                ..Vectors::default()
            },
            Knobs { account_grace: "0s", ..Knobs::default() },
        )
        .await;
        let (svc, cfg) = (&w.svc, &w.cfg);
        let (l1, l2, user, other) = (
            Svc::doc("c1", "l1"),
            Svc::doc("c1", "l2"),
            "/v1/users/a1".to_string(),
            "/v1/users/a2".to_string(),
        );
        for p in [&l1, &l2, &user, &other] {
            svc.put(p);
        }
        w.ingest(&["a1", "a2"], &[("l1", "a1", "c1"), ("l2", "a1", "c1")]);
        w.events(&account_deleted("a1"));
        let held = json(&rd(cfg, &["hold", "place", "--case", "LEGAL-2", "--by", "legal", "--resource", "l2", "--json"]));
        assert_eq!(held["matched"], 1, "{held}");

        let r = w.sweep();
        assert_eq!((r["purged"].as_i64(), r["held"].as_i64(), r["accounts_purged"].as_i64()), (Some(1), Some(1), Some(0)), "{r}");
        assert!(!svc.has(&l1) && svc.has(&l2));
        assert!(svc.to(&user).is_empty(), "no account request while a resource is held");
        assert!(svc.has(&user));

        let hold = held["id"].as_i64().unwrap().to_string();
        ok(&rd(cfg, &["hold", "release", &hold, "--by", "legal"]));
        let r = w.sweep();
        assert_eq!((r["purged"].as_i64(), r["accounts_purged"].as_i64()), (Some(1), Some(1)), "{r}");
        assert!(!svc.has(&l2) && !svc.has(&user));
        assert!(svc.has(&other), "another account's record stays");
        let seen = svc.s().seen.clone();
        let at = |p: &str, m: &str| seen.iter().rposition(|r| r.uri.split('?').next() == Some(p) && r.method == m);
        let account_call = at(&user, "DELETE").expect("the account URL was called");
        assert!(account_call > at(&l2, "DELETE").unwrap(), "after the last resource: {seen:?}");
        let calls = svc.to(&user);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].uri, "/v1/users/a1?org=o1");
        assert!(calls[0].authorized);
        assert_eq!(calls[0].key.as_deref(), Some(key("account", "a1").as_str()));
        assert!(svc.to(&other).is_empty());
        assert_eq!(json(&rd(cfg, &["account", "show", "a1", "--json"]))["state"], "purged");
        let export = ok(&rd(cfg, &["audit", "export"]));
        let line = export
            .lines()
            .find(|l| l.contains("\"action\":\"account.purged\""))
            .expect("an account.purged entry");
        assert!(line.contains("\"vectors\"") && line.contains("\"requests\":1"), "{line}");
        // Nothing more to do: the account is not called again.
        let r = w.sweep();
        assert_eq!((r["purged"].as_i64(), r["accounts_purged"].as_i64()), (Some(0), Some(0)), "{r}");
        assert_eq!(svc.to(&user).len(), 1);
        audit_verify(cfg);
    }
}

/// `url_file` and `url_env`: a URL that authorises by itself (`?api_key=…`) stays out of the
/// config file, and is redacted as an inline one is. Exactly one of `url`, `url_env`,
/// `url_file`; a missing variable or file is an error naming its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_can_come_from_a_file_or_the_environment() {
    let w = World::new(
        Backend::Sqlite,
        Vectors {
            path: format!("{DOC}?api_key=AP1KEY"),
            ..Vectors::default()
        },
        Knobs::default(),
    )
    .await;
    let (svc, cfg, port) = (&w.svc, &w.cfg, w.svc.port);
    let inline = std::fs::read_to_string(cfg).unwrap();
    let url = format!("http://127.0.0.1:{port}{DOC}?api_key=AP1KEY");
    let line = format!("url = \"{url}\"");
    assert!(inline.contains(&line), "{inline}");
    let url_file = w.env.dir.path().join("vectors-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let from_file = inline.replace(&line, &format!("url_file = \"{}\"", url_file.display()));
    std::fs::write(cfg, &from_file).unwrap();
    let shown = ok(&rd(cfg, &["check-config"]));
    assert!(
        shown.contains(&format!(
            "vectors: http DELETE http://127.0.0.1:{port}{DOC}?api_key=*** "
        )),
        "{shown}"
    );
    assert!(!shown.contains("AP1KEY"), "{shown}");
    let l1 = Svc::doc("c1", "l1");
    svc.put(&l1);
    w.ingest(&["a1"], &[("l1", "a1", "c1")]);
    assert_eq!(w.sweep()["purged"], 1);
    let seen = svc.to(&l1);
    assert!(
        seen.iter().any(|s| s.uri.ends_with("?api_key=AP1KEY")),
        "the request carries the file's URL: {seen:?}"
    );

    let from_env = inline.replace(&line, "url_env = \"RD_TEST_VECTORS_URL\"");
    std::fs::write(cfg, &from_env).unwrap();
    let shown = ok(&bin()
        .env("RD_TEST_VECTORS_URL", &url)
        .arg("--config")
        .arg(cfg)
        .arg("check-config")
        .output()
        .unwrap());
    assert!(shown.contains("?api_key=*** "), "{shown}");
    let refused = |text: &str, key: &str, why: &str| {
        std::fs::write(cfg, text).unwrap();
        let o = bin()
            .env_remove("RD_TEST_VECTORS_URL")
            .arg("--config")
            .arg(cfg)
            .arg("check-config")
            .output()
            .unwrap();
        refused_naming(&o, text, key, why, "AP1KEY");
    };
    refused(&from_env, "targets.vectors.url_env", "RD_TEST_VECTORS_URL");
    refused(
        &from_file.replace("url_file = ", &format!("{line}\nurl_file = ")),
        "targets.vectors",
        "give one of `url`, `url_env` or `url_file`",
    );
    std::fs::remove_file(&url_file).unwrap();
    refused(&from_file, "targets.vectors.url_file", "cannot read");
}

/// `concurrency` bounds the requests a batch has in flight at once: 12 documents in one batch,
/// each answered after 100 ms, never more than 3 at a time (and more than one, so the bound is
/// what holds them back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_requests_in_flight() {
    let v = Vectors {
        more: "concurrency = 3\n".into(),
        ..Vectors::default()
    };
    let knobs = Knobs {
        batch_size: 12,
        ..Knobs::default()
    };
    let w = World::new(Backend::Sqlite, v, knobs).await;
    w.svc.s().delay = Duration::from_millis(100);
    let items: Vec<(String, String)> = (0..12)
        .map(|i| (format!("l{i}"), Svc::doc("c1", &format!("l{i}"))))
        .collect();
    for (_, p) in &items {
        w.svc.put(p);
    }
    let ids: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|(id, _)| (id.as_str(), "a1", "c1"))
        .collect();
    w.ingest(&["a1"], &ids);
    let report = w.sweep();
    assert_eq!(report["purged"], 12, "{report}");
    let max = w.svc.s().max_in_flight;
    assert!(
        (2..=3).contains(&max),
        "at most 3 requests at once, and some at once: {max}"
    );
}
