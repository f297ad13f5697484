//! The HTTP API (§6, issues 10 and 6) with a real HTTP client: the server in-process on
//! 127.0.0.1:0 (both ledger backends), and the built binary's `retentiond run` with `[http]`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rel::bin;
use reqwest::StatusCode;
use retentiond::clock::Clock;
use retentiond::health::Health;
use retentiond::http::{HttpState, serve};
use retentiond::model::Timestamp;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const WRITE: &str = "write-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";

/// `[http]` TOML with token files written into `dir`.
fn http_toml(dir: &Path, listen: &str, max_body: usize, read_token: bool) -> String {
    std::fs::write(dir.join("token"), format!("{WRITE}\n")).unwrap();
    std::fs::write(dir.join("read-token"), format!("{READ}\n")).unwrap();
    let read = if read_token {
        format!(
            "read_token_file = \"{}\"\n",
            dir.join("read-token").display()
        )
    } else {
        String::new()
    };
    format!(
        "[http]\nlisten = \"{listen}\"\ntoken_file = \"{}\"\n{read}token_name = \"app-backend\"\nmax_body = {max_body}\ntimeout = \"10s\"\n",
        dir.join("token").display()
    )
}

/// A running in-process server.
struct Api {
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Api {
    async fn start(state: HttpState) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, state, stop.clone()));
        Api {
            base: format!("http://{addr}"),
            client: {
                retentiond::targets::install_tls_provider();
                reqwest::Client::new()
            },
            stop,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body.to_string()))
            .await
    }

    async fn metrics(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }
}

/// A harness whose config has `[http]`, and the server on it.
async fn setup(b: Backend, max_body: usize, read_token: bool, clock: Option<Clock>) -> (H, Api) {
    let env = Env::new(b).await;
    let extra = http_toml(env.dir.path(), "127.0.0.1:0", max_body, read_token);
    let text = env.config_text(&Knobs {
        extra,
        ..Default::default()
    });
    env.write_config(&text);
    let h = H::with_config(env, &text).await;
    let clock = clock.unwrap_or_else(|| h.clock.clone());
    let state = HttpState::new(h.ledger.clone(), clock, h.config.clone()).unwrap();
    let api = Api::start(state).await;
    (h, api)
}

/// The value of a sample line `name{labels} value` in a Prometheus scrape (0 when absent).
fn sample(scrape: &str, name_and_labels: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

fn with_ids(ndjson: &str, prefix: &str) -> String {
    ndjson
        .lines()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{},\"event_id\":\"{prefix}-{i}\"}}\n",
                l.strip_suffix('}').unwrap()
            )
        })
        .collect()
}

both_backends! {
    async fn events_are_applied_and_a_replay_is_a_no_op(b: Backend) {
        let (h, api) = setup(b, 1 << 20, true, None).await;
        let batch = with_ids(
            &(org_account("o1", "scale", "a1")
                + &created("c1", "conversation", "a1")
                + &created_log("l1", "a1", "/v1/embeddings")
                + &deleted("c1")),
            "batch1",
        );
        let (s, r) = api.post("/v1/events", Some(WRITE), &batch).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["applied"], 5);
        assert_eq!(r["duplicates"], 0);
        assert_eq!(r["by_type"]["resource.deleted"], 1);
        assert_eq!(h.state("c1").await, "deleted");
        let (s, view) = api.get("/v1/resources/c1", Some(READ)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(view["state"], "deleted");
        assert_eq!(view["cause"], "manual");

        // The same batch again (a client retrying after a timeout): nothing changes.
        let audit_before = h.ledger.audit_head().await.unwrap().unwrap().seq;
        let (s, r) = api.post("/v1/events", Some(WRITE), &batch).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["applied"], 0);
        assert_eq!(r["duplicates"], 5);
        assert_eq!(h.ledger.audit_head().await.unwrap().unwrap().seq, audit_before);

        // A JSON array is accepted too, with the same idempotency.
        let array = json!([
            {"type": "resource.restored", "id": "c1", "event_id": "arr-1"},
            {"type": "resource.created", "id": "f1", "kind": "file", "account": "a1", "event_id": "arr-2"},
        ])
        .to_string();
        let (s, r) = api.post("/v1/events", Some(WRITE), &array).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["applied"], 2);
        assert_eq!(h.state("c1").await, "live");
        assert_eq!(h.state("f1").await, "live");
        let (_, r) = api.post("/v1/events", Some(WRITE), &array).await;
        assert_eq!((r["applied"].as_u64(), r["duplicates"].as_u64()), (Some(0), Some(2)));

        let scrape = api.metrics().await;
        assert!(sample(&scrape, "retentiond_events_ingested_total{source=\"http\",type=\"resource.restored\"}") >= 1.0, "{scrape}");
        assert!(sample(&scrape, "retentiond_events_duplicate_total{source=\"http\"}") >= 7.0, "{scrape}");
        h.audit_ok().await;
    }
}

both_backends! {
    async fn a_bad_line_rejects_the_whole_batch(b: Backend) {
        let (h, api) = setup(b, 1 << 20, true, None).await;
        let batch = org_account("o1", "free", "a1")
            + &created("c1", "conversation", "a1")
            + "{\"type\":\"resource.created\",\"id\":\"c2\",\"kind\":\"spaceship\",\"account\":\"a1\"}\n"
            + &created("c3", "conversation", "a1")
            + "{not json\n";
        let (s, r) = api.post("/v1/events", Some(WRITE), &batch).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
        assert!(r["error"].as_str().unwrap().contains("nothing was applied"), "{r}");
        assert_eq!(r["applied"], 0);
        let errors = r["errors"].as_array().unwrap();
        let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, vec![4, 6], "{r}");
        assert!(errors[0]["reason"].as_str().unwrap().contains("spaceship"), "{r}");
        assert!(errors[1]["reason"].as_str().unwrap().contains("malformed JSON"), "{r}");
        // Nothing applied: not even the valid lines before the bad one.
        assert!(h.ledger.resource("c1").await.unwrap().is_none());
        assert!(h.ledger.account("a1").await.unwrap().is_none());
        assert!(h.ledger.org("o1").await.unwrap().is_none());
        let (s, _) = api.get("/v1/resources/c1", Some(WRITE)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // In a JSON array the element's position (from 1) is the `line`.
        let array = json!([
            {"type": "org.upsert", "org": "o1", "plan": "free"},
            {"type": "account.created", "account": "a1", "org": "o1", "extra": 1},
            {"type": "resource.deleted", "id": "nope"},
        ])
        .to_string();
        let (s, r) = api.post("/v1/events", Some(WRITE), &array).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
        let lines: Vec<u64> = r["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, vec![2], "parse errors first; the ledger check never runs: {r}");
        assert!(h.ledger.org("o1").await.unwrap().is_none());
        let array = json!([
            {"type": "org.upsert", "org": "o1", "plan": "free"},
            {"type": "resource.deleted", "id": "nope"},
        ])
        .to_string();
        let (s, r) = api.post("/v1/events", Some(WRITE), &array).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
        assert_eq!(r["errors"][0]["line"], 2, "{r}");
        assert!(r["errors"][0]["reason"].as_str().unwrap().contains("unknown resource"), "{r}");
        assert!(h.ledger.org("o1").await.unwrap().is_none());
        let scrape = api.metrics().await;
        assert!(sample(&scrape, "retentiond_event_batches_rejected_total{source=\"http\"}") >= 3.0, "{scrape}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_reads_and_writes() {
    let (h, api) = setup(Backend::Sqlite, 1 << 20, true, None).await;
    let body = org_account("o1", "free", "a1");
    // No token, a wrong one, a malformed header: 401 with a Bearer challenge.
    let resp = api
        .client
        .post(format!("{}/v1/events", api.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let v: Value = resp.json_value().await;
    assert!(v["error"].as_str().unwrap().contains("bearer token"), "{v}");
    let (s, _) = api
        .post("/v1/events", Some("write-token-0123456789abcdeX"), &body)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.post("/v1/events", Some(""), &body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let resp = api
        .client
        .get(format!("{}/v1/status", api.base))
        .header("authorization", format!("Basic {WRITE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The read token reads but may not write.
    let (s, v) = api.post("/v1/events", Some(READ), &body).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .post(
            "/v1/holds",
            Some(READ),
            r#"{"case":"K","scope":{"kind":"file"}}"#,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = api.post("/v1/holds/1/release", Some(READ), "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(h.ledger.org("o1").await.unwrap().is_none());
    assert!(h.ledger.holds(false).await.unwrap().is_empty());
    for path in ["/v1/status", "/v1/holds"] {
        assert_eq!(api.get(path, Some(READ)).await.0, StatusCode::OK, "{path}");
        assert_eq!(api.get(path, Some(WRITE)).await.0, StatusCode::OK, "{path}");
        assert_eq!(
            api.get(path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    // Probes and the scrape are open.
    assert_eq!(api.get("/healthz", None).await.0, StatusCode::OK);
    assert_eq!(api.get("/readyz", None).await.0, StatusCode::OK);
    api.metrics().await;
    // The write token writes.
    let (s, v) = api.post("/v1/events", Some(WRITE), &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_read_token_reads_need_the_write_token_and_without_tokens_v1_is_off() {
    let (_h, api) = setup(Backend::Sqlite, 1 << 20, false, None).await;
    assert_eq!(api.get("/v1/status", Some(WRITE)).await.0, StatusCode::OK);
    assert_eq!(
        api.get("/v1/status", Some(READ)).await.0,
        StatusCode::UNAUTHORIZED
    );

    // No token configured at all: the API refuses everything under /v1; probes still work.
    let env = Env::new(Backend::Sqlite).await;
    let text = env.config_text(&Knobs {
        extra: "[http]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    });
    let h = H::with_config(env, &text).await;
    let api =
        Api::start(HttpState::new(h.ledger.clone(), h.clock.clone(), h.config.clone()).unwrap())
            .await;
    let (s, v) = api.get("/v1/status", Some("anything")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no token"), "{v}");
    let (s, _) = api
        .post("/v1/events", None, &org_account("o1", "free", "a1"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(api.get("/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_get_413_and_nothing_is_applied() {
    let (h, api) = setup(Backend::Sqlite, 4096, true, None).await;
    let mut big = org_account("o1", "free", "a1");
    let mut i = 0;
    while big.len() <= 4096 {
        big.push_str(&created(&format!("c{i}"), "conversation", "a1"));
        i += 1;
    }
    let (s, v) = api.post("/v1/events", Some(WRITE), &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_body"), "{v}");
    assert!(h.ledger.org("o1").await.unwrap().is_none());

    // Without a Content-Length (chunked), the limit applies while reading.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.strip_prefix("http://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {WRITE}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for chunk in big.as_bytes().chunks(1000) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    req.push_str("0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(h.ledger.org("o1").await.unwrap().is_none());

    // Just under the limit is fine.
    let (s, v) = api
        .post("/v1/events", Some(WRITE), &org_account("o1", "free", "a1"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_gets_503_after_the_timeout_and_nothing_is_applied() {
    let env = Env::new(Backend::Sqlite).await;
    let extra = http_toml(env.dir.path(), "127.0.0.1:0", 1 << 20, true)
        .replace("timeout = \"10s\"", "timeout = \"1s\"");
    let text = env.config_text(&Knobs {
        extra,
        ..Default::default()
    });
    let h = H::with_config(env, &text).await;
    let api =
        Api::start(HttpState::new(h.ledger.clone(), h.clock.clone(), h.config.clone()).unwrap())
            .await;
    // A client that sends half its events and then stalls: the server gives up, not hangs.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.strip_prefix("http://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let first = org_account("o1", "free", "a1");
    let req = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {WRITE}\r\ncontent-length: 100000\r\n\r\n{first}"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut answer))
        .await
        .expect("the server answers a stalled request")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("http.timeout"), "{answer}");
    assert!(h.ledger.org("o1").await.unwrap().is_none());
}

both_backends! {
    async fn bodies_equal_the_cli_json_output(b: Backend) {
        // The system clock, as the CLI has: views that depend on "now" agree.
        let (h, api) = setup(b, 1 << 20, true, Some(Clock::System)).await;
        let cfg = h.env.dir.path().join("retentiond.toml");
        let events = org_account("o1", "scale", "a1")
            + &org_account("o2", "free", "a2")
            + &created("c1", "conversation", "a1")
            + &created("c2", "conversation", "a1")
            + &created("f1", "file", "a2")
            + &deleted("c2")
            + &account_deleted("a2");
        let (s, v) = api.post("/v1/events", Some(WRITE), &events).await;
        assert_eq!(s, StatusCode::OK, "{v}");

        // Place one hold over HTTP and an equivalent one with the CLI.
        let (s, placed_http) = api
            .post("/v1/holds", Some(WRITE), r#"{"case":"LEGAL-1","by":"Jo Legal","reason":"litigation","scope":{"account":"a1","kind":"conversation"}}"#)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{placed_http}");
        let placed_cli = cli_json(&cfg, &["hold", "place", "--case", "LEGAL-1", "--by", "Jo Legal", "--reason", "litigation", "--account", "a1", "--kind", "conversation"]);
        assert_eq!(without(&placed_http, &["id"]), without(&placed_cli, &["id"]));
        assert_eq!(placed_http["matched"], 2);
        assert_ne!(placed_http["id"], placed_cli["id"]);

        for (path, args) in [
            ("/v1/status", vec!["status"]),
            ("/v1/resources/c1", vec!["resource", "show", "c1"]),
            ("/v1/resources/c2", vec!["resource", "show", "c2"]),
            ("/v1/resources/f1", vec!["resource", "show", "f1"]),
            ("/v1/accounts/a1", vec!["account", "show", "a1"]),
            ("/v1/accounts/a2", vec!["account", "show", "a2"]),
            ("/v1/holds", vec!["hold", "list"]),
            ("/v1/holds?active=true", vec!["hold", "list", "--active"]),
            ("/v1/holds/1", vec!["hold", "show", "1"]),
        ] {
            let (s, http) = api.get(path, Some(READ)).await;
            assert_eq!(s, StatusCode::OK, "{path}: {http}");
            let cli = cli_json(&cfg, &args);
            assert_eq!(http, cli, "{path} differs from `{}`", args.join(" "));
        }
        let (_, holds) = api.get("/v1/holds", Some(READ)).await;
        assert_eq!(holds["holds"][0]["placed_by"], "Jo Legal", "{holds}");
        let (_, c2) = api.get("/v1/resources/c2", Some(READ)).await;
        assert_eq!(c2["holds"].as_array().unwrap().len(), 2, "{c2}");

        // Releasing: the same answer shape as `hold release --json`.
        let id = placed_http["id"].as_i64().unwrap();
        let (s, rel_http) = api.post(&format!("/v1/holds/{id}/release"), Some(WRITE), r#"{"by":"Sam Counsel"}"#).await;
        assert_eq!(s, StatusCode::OK, "{rel_http}");
        let cli_id = placed_cli["id"].to_string();
        let rel_cli = cli_json(&cfg, &["hold", "release", &cli_id, "--by", "legal"]);
        assert_eq!(without(&rel_http, &["id"]), without(&rel_cli, &["id"]));
        let (_, holds) = api.get("/v1/holds", Some(READ)).await;
        let released = holds["holds"].as_array().unwrap().iter().find(|h| h["id"] == id).unwrap().clone();
        assert_eq!(released["released_by"], "Sam Counsel");
        let (s, v) = api.post(&format!("/v1/holds/{id}/release"), Some(WRITE), r#"{"by":"Sam Counsel"}"#).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(api.post("/v1/holds/999/release", Some(WRITE), r#"{"by":"x"}"#).await.0, StatusCode::NOT_FOUND);

        // Unknown ids: 404 with the CLI's message.
        let (s, v) = api.get("/v1/resources/nope", Some(READ)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["error"], "unknown resource `nope`");
        let (s, _) = api.get("/v1/accounts/nope", Some(READ)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // Bad hold requests: 400, nothing placed.
        for bad in [
            r#"{"case":"K","by":"Jo"}"#,
            r#"{"case":"K","scope":{"org":"o1"}}"#,
            r#"{"case":"K","by":" ","scope":{"org":"o1"}}"#,
            r#"{"case":"","by":"Jo","scope":{"org":"o1"}}"#,
            r#"{"case":"K","scope":{"org":"o1"},"placed_by":"mallory"}"#,
            r#"{"case":"K","by":"Jo","scope":{"account":"nobody"}}"#,
            r#"{"case":"K","by":"Jo","scope":{"created_from":"yesterday"}}"#,
            "not json",
        ] {
            let (s, v) = api.post("/v1/holds", Some(WRITE), bad).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
            assert!(v["error"].is_string(), "{v}");
        }
        assert_eq!(h.ledger.holds(false).await.unwrap().len(), 2);
    }
}

fn without(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    for k in keys {
        v.as_object_mut().unwrap().remove(*k);
    }
    v
}

fn cli_json(cfg: &Path, args: &[&str]) -> Value {
    let o: Output = bin()
        .arg("--config")
        .arg(cfg)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_sweep_health() {
    let (h, _) = setup(Backend::Sqlite, 1 << 20, true, None).await;
    let health = Arc::new(Health::default());
    let now = h.clock.now().millis();
    health.started.store(now, Ordering::Relaxed);
    health.last_tick.store(now, Ordering::Relaxed);
    health.set_schedule("* * * * * *");
    health.stall_after_ms.store(60_000, Ordering::Relaxed);
    let state = HttpState::new(h.ledger.clone(), h.clock.clone(), h.config.clone())
        .unwrap()
        .with_health(health.clone());
    let api = Api::start(state).await;
    let (s, v) = api.get("/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ledger"], "ok");
    assert_eq!(v["sweeps"], "ok");
    // Ten minutes without a completed sweep (or a scheduler tick): not ready, still alive.
    h.advance("10m");
    let (s, v) = api.get("/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["ready"], false);
    assert_eq!(api.get("/healthz", None).await.0, StatusCode::OK);
    let t = h.clock.now().millis();
    health.last_tick.store(t, Ordering::Relaxed);
    health.last_success.store(t, Ordering::Relaxed);
    assert_eq!(api.get("/readyz", None).await.0, StatusCode::OK);
}

/// Issue 22: an office-hours cron fires nothing from Friday 17:50 to Monday 09:00. The daemon is
/// idle by schedule, not dead: `/readyz` stays 200 (and the watchdog, on the same `alive`, keeps
/// pinging) until a firing the cron itself promised is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_ready_through_an_office_hours_weekend() {
    let friday = Timestamp::parse_rfc3339("2026-12-04T17:50:00Z").unwrap();
    let clock = Clock::manual(friday);
    let (h, _) = setup(Backend::Sqlite, 1 << 20, true, Some(clock.clone())).await;
    let health = Arc::new(Health::default());
    health.set_schedule("0 */10 9-17 * * MON-FRI");
    health.stall_after_ms.store(600_000, Ordering::Relaxed);
    let t = friday.millis();
    health.started.store(t - 3_600_000, Ordering::Relaxed);
    health.last_tick.store(t, Ordering::Relaxed);
    health.last_success.store(t + 2_000, Ordering::Relaxed);
    let state = HttpState::new(h.ledger.clone(), clock.clone(), h.config.clone())
        .unwrap()
        .with_health(health.clone());
    let api = Api::start(state).await;
    for idle in [
        "2026-12-04T23:00:00Z",
        "2026-12-05T12:00:00Z",
        "2026-12-06T23:59:00Z",
        "2026-12-07T09:00:30Z",
    ] {
        clock.set(Timestamp::parse_rfc3339(idle).unwrap());
        let (s, v) = api.get("/readyz", None).await;
        assert_eq!(s, StatusCode::OK, "at {idle}: {v}");
        assert!(health.alive(clock.now()), "watchdog pings at {idle}");
    }
    // Monday 09:00 was promised and never came: the scheduler is silent.
    clock.set(Timestamp::parse_rfc3339("2026-12-07T09:01:30Z").unwrap());
    let (s, v) = api.get("/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(!health.alive(clock.now()));
    // It fired, and its sweep got stuck: no pings once stall_after has passed.
    let monday = Timestamp::parse_rfc3339("2026-12-07T09:00:00Z")
        .unwrap()
        .millis();
    health.last_tick.store(monday, Ordering::Relaxed);
    health.running_since.store(monday, Ordering::Relaxed);
    clock.set(Timestamp::parse_rfc3339("2026-12-07T09:05:00Z").unwrap());
    assert!(health.alive(clock.now()));
    clock.set(Timestamp::parse_rfc3339("2026-12-07T09:10:01Z").unwrap());
    assert!(!health.alive(clock.now()), "a stuck sweep stops the pings");
    assert_eq!(
        api.get("/readyz", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_purges_failures_and_ledger_gauges() {
    let (h, api) = setup(Backend::Sqlite, 1 << 20, true, None).await;
    h.env.seed_conversation("c1", "a1", 2).await;
    h.ingest(
        &(org_account("o1", "free", "a1")
            + &created("c1", "conversation", "a1")
            + &created("c2", "conversation", "a1")
            + &deleted("c1")
            + &deleted("c2")),
    )
    .await;
    h.advance("31d");
    retentiond::metrics::refresh_gauges(&h.ledger, h.now())
        .await
        .unwrap();
    let scrape = api.metrics().await;
    assert_eq!(sample(&scrape, "retentiond_due_backlog"), 2.0, "{scrape}");
    assert_eq!(
        sample(&scrape, "retentiond_oldest_overdue_seconds"),
        86_400.0,
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "retentiond_resources{state=\"deleted\",kind=\"conversation\"}"
        ),
        2.0,
        "{scrape}"
    );

    // What the daemon records after each sweep (in-process here; the binary test below shows it
    // live), including failures by target, which only this process's recorder sees.
    let before = sample(&scrape, "retentiond_purges_total{kind=\"conversation\"}");
    let mut report = h.sweep().await;
    assert_eq!(report.purged, 2);
    report
        .failures_by_target
        .insert("t_metrics_target".into(), 3);
    report.record_metrics(Duration::from_millis(20), h.now());
    retentiond::metrics::refresh_gauges(&h.ledger, h.now())
        .await
        .unwrap();
    let scrape = api.metrics().await;
    assert_eq!(
        sample(&scrape, "retentiond_purges_total{kind=\"conversation\"}") - before,
        2.0,
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "retentiond_purge_failures_total{target=\"t_metrics_target\"}"
        ),
        3.0,
        "{scrape}"
    );
    assert!(
        scrape.contains("retentiond_sweep_duration_seconds_bucket{le=\"0.05\"}"),
        "{scrape}"
    );
    assert_eq!(sample(&scrape, "retentiond_due_backlog"), 0.0, "{scrape}");
    assert_eq!(
        sample(
            &scrape,
            "retentiond_resources{state=\"deleted\",kind=\"conversation\"}"
        ),
        0.0,
        "a vanished state is zeroed: {scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "retentiond_resources{state=\"purged\",kind=\"conversation\"}"
        ),
        2.0,
        "{scrape}"
    );
    assert!(
        scrape.contains("# TYPE retentiond_purges_total counter"),
        "{scrape}"
    );
}

/// A free loopback port (bound then released; the daemon binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a signal with the `kill` utility.
fn kill(pid: u32, sig: &str) {
    let s = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(s.success());
}

/// Kills the daemon if a test fails half-way.
struct Daemon(Option<std::process::Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

both_backends! {
    async fn the_daemon_serves_the_api_and_its_metrics_move(b: Backend) {
        let env = Env::new(b).await;
        let port = free_port();
        let extra = http_toml(env.dir.path(), &format!("127.0.0.1:{port}"), 1 << 20, true);
        let cfg = env.write_config(&env.config_text(&Knobs {
            conversation_grace: "1s",
            extra,
            ..Default::default()
        }));
        env.seed_conversation("c1", "a1", 3).await;
        let mut daemon = Daemon(Some(
            bin()
                .arg("--config")
                .arg(&cfg)
                .arg("run")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let api = Api {
            base: format!("http://127.0.0.1:{port}"),
            client: {
                retentiond::targets::install_tls_provider();
                reqwest::Client::new()
            },
            stop: CancellationToken::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = api.client.get(format!("{}/readyz", api.base)).send().await
                && r.status() == StatusCode::OK
            {
                break;
            }
            assert!(Instant::now() < deadline, "the daemon's API did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = api.metrics().await;
        assert_eq!(sample(&before, "retentiond_purges_total{kind=\"conversation\"}"), 0.0, "{before}");
        let (s, v) = api
            .post("/v1/events", Some(WRITE), &(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &deleted("c1")))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // The cron sweeps every second; the grace is 1 s.
        let scrape = loop {
            let scrape = api.metrics().await;
            if sample(&scrape, "retentiond_purges_total{kind=\"conversation\"}") >= 1.0 {
                break scrape;
            }
            assert!(Instant::now() < deadline, "no purge counted in time:\n{scrape}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(sample(&scrape, "retentiond_events_ingested_total{source=\"http\",type=\"resource.deleted\"}"), 1.0, "{scrape}");
        assert!(sample(&scrape, "retentiond_sweeps_total{outcome=\"ok\"}") >= 1.0, "{scrape}");
        assert!(sample(&scrape, "retentiond_last_successful_sweep_timestamp_seconds") > 1.0e9, "{scrape}");
        assert!(sample(&scrape, "retentiond_rows_removed_total") >= 4.0, "{scrape}");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 0);
        let (s, v) = api.get("/v1/resources/c1", Some(READ)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["state"], "purged", "{v}");
        assert_eq!(api.get("/readyz", None).await.0, StatusCode::OK);

        // SIGTERM: the server shuts down with the daemon, exit 0.
        let child = daemon.0.take().unwrap();
        kill(child.id(), "TERM");
        let out = child.wait_with_output().unwrap();
        let logs = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{logs}");
        assert!(logs.contains("HTTP API listening"), "{logs}");
        // The legacy token keys: one warning at start-up that scoped tokens separate duties.
        assert_eq!(logs.matches("separates those duties").count(), 1, "{logs}");
        assert!(api.client.get(format!("{}/healthz", api.base)).send().await.is_err());
    }
}

#[test]
fn a_port_in_use_stops_the_daemon_at_start() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(Backend::Sqlite));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let extra = http_toml(env.dir.path(), &format!("127.0.0.1:{port}"), 1 << 20, true);
    let cfg = env.write_config(&env.config_text(&Knobs {
        extra,
        ..Default::default()
    }));
    let out = bin().arg("--config").arg(&cfg).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.listen"), "{err}");
    // A token file that cannot be read is a start failure too, naming the key.
    drop(taken);
    std::fs::remove_file(env.dir.path().join("token")).unwrap();
    let out = bin().arg("--config").arg(&cfg).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.token_file"), "{err}");
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}
