//! Issue 28, roles and the platform's side (§8), end to end: the built binary's `retentiond run`
//! with `[[http.tokens]]`, driven over real HTTP, on both ledger backends.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rel::bin;
use reqwest::StatusCode;
use serde_json::Value;

/// The tokens of the table test: name, secret, scopes (two for holds: a two-person release
/// takes two tokens).
const TOKENS: &[(&str, &str, &[&str])] = &[
    ("app", "app-secret-0123456789abcdef", &["events", "read"]),
    ("legal", "legal-secret-0123456789abcdef", &["holds", "read"]),
    (
        "counsel",
        "counsel-secret-0123456789abcdef",
        &["holds", "read"],
    ),
    (
        "console",
        "console-secret-0123456789abcdef",
        &["orgs", "read"],
    ),
    (
        "privacy",
        "privacy-secret-0123456789abcdef",
        &["zdr:decide", "read"],
    ),
    ("reader", "reader-secret-0123456789abcdef", &["read"]),
    ("ingest-only", "ingest-secret-0123456789abcdef", &["events"]),
];

pub fn secret(name: &str) -> &'static str {
    TOKENS.iter().find(|t| t.0 == name).unwrap().1
}

/// `[http]` with every token of [`TOKENS`] in a file of its own, plus `more` TOML.
pub fn tokens_toml(dir: &Path, listen: &str) -> String {
    let mut out = format!("[http]\nlisten = \"{listen}\"\ntimeout = \"10s\"\n");
    for (name, secret, scopes) in TOKENS {
        let f = dir.join(format!("{name}.token"));
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        out.push_str(&format!(
            "[[http.tokens]]\nname = \"{name}\"\nfile = \"{}\"\nscopes = {}\n",
            f.display(),
            serde_json::to_string(scopes).unwrap()
        ));
    }
    out
}

/// The built binary's daemon, killed on drop; its log goes to a file.
pub struct Daemon {
    child: Option<std::process::Child>,
    pub base: String,
    pub client: reqwest::Client,
    pub cfg: PathBuf,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Starts `retentiond run` on `cfg` (whose `[http] listen` is `port`) and waits until
    /// `/readyz` answers 200.
    pub async fn start(cfg: &Path, port: u16, envs: &[(&str, &str)]) -> Daemon {
        let log = cfg.with_extension(format!("{port}.log"));
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            client: {
                retentiond::targets::install_tls_provider();
                reqwest::Client::new()
            },
            cfg: cfg.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = d.client.get(format!("{}/readyz", d.base)).send().await
                && r.status() == StatusCode::OK
            {
                break;
            }
            if let Some(c) = d.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("the daemon exited ({st}): {}", d.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon's API did not become ready: {}",
                d.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        d
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(token), Some(body))
            .await
    }

    /// `retentiond --json ARGS` on the daemon's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        bin()
            .arg("--config")
            .arg(&self.cfg)
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn cli_json(&self, args: &[&str]) -> Value {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

/// An env, config with the table's tokens and `extra`, and the daemon on it.
pub async fn start(b: Backend, knobs: Knobs, extra: &str) -> (Env, Daemon) {
    let env = Env::new(b).await;
    let port = free_port();
    let text = env.config_text(&Knobs {
        extra: format!(
            "{}\n{extra}",
            tokens_toml(env.dir.path(), &format!("127.0.0.1:{port}"))
        ),
        ..knobs
    });
    let cfg = env.write_config(&text);
    let d = Daemon::start(&cfg, port, &[]).await;
    (env, d)
}

/// One route of the table: method, path, body, the scope it needs.
struct Route {
    method: reqwest::Method,
    path: &'static str,
    body: Option<&'static str>,
    scope: &'static str,
}

fn routes() -> Vec<Route> {
    use reqwest::Method as M;
    let r = |method: M, path, body, scope| Route {
        method,
        path,
        body,
        scope,
    };
    vec![
        r(
            M::POST,
            "/v1/events",
            Some(r#"{"type":"org.upsert","org":"o9","plan":"free"}"#),
            "events",
        ),
        r(M::GET, "/v1/status", None, "read"),
        r(M::GET, "/v1/resources/c1", None, "read"),
        r(M::GET, "/v1/accounts/a1", None, "read"),
        r(M::GET, "/v1/holds", None, "read"),
        r(M::GET, "/v1/holds/1", None, "read"),
        r(
            M::POST,
            "/v1/holds",
            Some(r#"{"case":"K-1","by":"Jo Legal","scope":{"kind":"file"}}"#),
            "holds",
        ),
        r(
            M::POST,
            "/v1/holds/1/release",
            Some(r#"{"by":"Jo Legal"}"#),
            "holds",
        ),
        r(M::GET, "/v1/orgs/o1", None, "read"),
        r(M::PUT, "/v1/orgs/o9", Some(r#"{"plan":"scale"}"#), "orgs"),
        r(
            M::POST,
            "/v1/orgs/o1/zdr/request",
            Some(r#"{"reason":"contract","by":"Ann Admin"}"#),
            "orgs",
        ),
        r(
            M::POST,
            "/v1/orgs/o1/zdr/approve",
            Some(r#"{"reason":"reviewed","by":"Pat Privacy"}"#),
            "zdr:decide",
        ),
        r(
            M::POST,
            "/v1/orgs/o1/zdr/deny",
            Some(r#"{"reason":"not eligible","by":"Pat Privacy"}"#),
            "zdr:decide",
        ),
        r(
            M::GET,
            "/v1/orgs/o1/data-controls?endpoint=/v1/embeddings",
            None,
            "read",
        ),
        r(M::GET, "/v1/data-controls", None, "read"),
    ]
}

both_backends! {
    async fn every_route_against_every_scope(b: Backend) {
        let (_env, d) = start(b, Knobs::default(), "").await;
        let (s, v) = d
            .post("/v1/events", secret("app"), &(org_account("o1", "scale", "a1") + &created("c1", "conversation", "a1")))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = d
            .post("/v1/holds", secret("legal"), r#"{"case":"K-0","by":"Jo Legal","scope":{"org":"o1"}}"#)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");

        let mut allowed = 0;
        let mut refused = 0;
        for route in routes() {
            for (name, secret, scopes) in TOKENS {
                let (s, v) = d
                    .call(route.method.clone(), route.path, Some(secret), route.body)
                    .await;
                let what = format!("{} {} with `{name}`", route.method, route.path);
                if scopes.contains(&route.scope) {
                    assert!(
                        s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                        "{what} must be allowed: {s} {v}"
                    );
                    allowed += 1;
                } else {
                    assert_eq!(s, StatusCode::FORBIDDEN, "{what} must be refused: {v}");
                    let msg = v["error"].as_str().unwrap();
                    assert!(
                        msg.contains(&format!("`{}`", route.scope)) && msg.contains(name),
                        "{what}: the message names the scope and the token: {msg}"
                    );
                    refused += 1;
                }
            }
            // No token, an unknown one: 401, whatever the route.
            let (s, _) = d.call(route.method.clone(), route.path, None, route.body).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{} {}", route.method, route.path);
            let (s, v) = d
                .call(route.method.clone(), route.path, Some("nobody-0123456789abcdef"), route.body)
                .await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{} {}: {v}", route.method, route.path);
        }
        assert_eq!((allowed, refused), (58, 47), "15 routes x 7 tokens");
        // The app token never places or releases a hold.
        let (s, _) = d.post("/v1/holds", secret("app"), r#"{"case":"K","by":"x","scope":{"org":"o1"}}"#).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = d.post("/v1/holds/1/release", secret("app"), r#"{"by":"x"}"#).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // Nor decides ZDR, nor changes an org.
        let (s, _) = d.post("/v1/orgs/o1/zdr/approve", secret("app"), r#"{"by":"x"}"#).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = d.put("/v1/orgs/o1", secret("app"), r#"{"training_opt_out":true}"#).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // Probes and the scrape stay open.
        for p in ["/healthz", "/readyz", "/metrics"] {
            let r = d.client.get(format!("{}{p}", d.base)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{p}");
        }
        // No legacy keys: no warning about them.
        assert!(!d.logs().contains("separates those duties"), "{}", d.logs());
    }
}

#[test]
fn two_tokens_with_the_same_secret_stop_the_daemon() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(Backend::Sqlite));
    let dir = env.dir.path();
    let mut http = tokens_toml(dir, &format!("127.0.0.1:{}", free_port()));
    std::fs::write(dir.join("copy.token"), secret("legal")).unwrap();
    http.push_str(&format!(
        "[[http.tokens]]\nname = \"copy\"\nfile = \"{}\"\nscopes = [\"read\"]\n",
        dir.join("copy.token").display()
    ));
    let cfg = env.write_config(&env.config_text(&Knobs {
        extra: http,
        ..Default::default()
    }));
    let out = bin().arg("--config").arg(&cfg).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tokens[7]") && err.contains("same secret as `legal`"),
        "{err}"
    );
    // Two with the same name: a config error, exit 2, naming the key.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"copy\"", "name = \"legal\"");
    std::fs::write(&cfg, text).unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tokens[7].name") && err.contains("`legal`"),
        "{err}"
    );
}

impl Daemon {
    /// The audit entries with `action`, from `audit export`.
    pub fn audit(&self, action: &str) -> Vec<Value> {
        let o = bin()
            .arg("--config")
            .arg(&self.cfg)
            .args(["audit", "export"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["action"] == action)
            .collect()
    }
}

both_backends! {
    async fn a_hold_names_a_person_and_its_release_takes_two(b: Backend) {
        let (_env, d) = start(b, Knobs::default(), "[holds]\nrelease_approvals = 2\n").await;
        let (s, v) = d.post("/v1/events", secret("app"), &org_account("o1", "free", "a1")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // Without `by`, or with a blank one: 400, nothing placed.
        for bad in [
            r#"{"case":"K-1","scope":{"org":"o1"}}"#,
            r#"{"case":"K-1","by":"","scope":{"org":"o1"}}"#,
        ] {
            let (s, v) = d.post("/v1/holds", secret("legal"), bad).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
            assert!(v["error"].as_str().unwrap().contains("`by`"), "{v}");
        }
        let (s, placed) = d
            .post("/v1/holds", secret("legal"), r#"{"case":"K-1","by":"Jo Legal","scope":{"org":"o1"}}"#)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{placed}");
        let id = placed["id"].as_i64().unwrap();
        let (_, hold) = d.get(&format!("/v1/holds/{id}"), secret("reader")).await;
        assert_eq!(hold["placed_by"], "Jo Legal", "{hold}");
        let entry = &d.audit("hold.placed")[0];
        assert_eq!(entry["details"]["placed_by"], "Jo Legal", "{entry}");
        assert_eq!(entry["details"]["via"], "legal", "{entry}");

        let release = format!("/v1/holds/{id}/release");
        let (s, v) = d.post(&release, secret("legal"), "{}").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "a release names its person too: {v}");
        // The first ask: 202, the hold stays active.
        let (s, v) = d.post(&release, secret("legal"), r#"{"by":"Jo Legal"}"#).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!((v["id"].as_i64(), v["pending"].as_bool()), (Some(id), Some(true)), "{v}");
        assert_eq!((v["approvals"].as_u64(), v["needed"].as_u64()), (Some(1), Some(2)), "{v}");
        let (_, hold) = d.get(&format!("/v1/holds/{id}"), secret("reader")).await;
        assert_eq!(hold["active"], true, "{hold}");
        assert_eq!(hold["pending_approvals"][0]["by"], "Jo Legal", "{hold}");
        assert_eq!(hold["pending_approvals"][0]["via"], "legal", "{hold}");
        let shown = d.cli_json(&["hold", "show", &id.to_string()]);
        assert_eq!(shown["pending_approvals"], hold["pending_approvals"]);
        let text = bin().arg("--config").arg(&d.cfg).args(["hold", "show", &id.to_string()]).output().unwrap();
        assert!(String::from_utf8_lossy(&text.stdout).contains("release asked by Jo Legal"));
        // The same person again, over HTTP or the CLI: refused, nothing changes.
        let (s, v) = d.post(&release, secret("legal"), r#"{"by":"Jo Legal"}"#).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        let o = d.cli(&["hold", "release", &id.to_string(), "--by", "Jo Legal"]);
        assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("already asked"));
        let (_, hold) = d.get(&format!("/v1/holds/{id}"), secret("reader")).await;
        assert_eq!(hold["active"], true, "{hold}");
        // A second name through the same token is not a second person; nor is a name that
        // differs only in case and spaces.
        let (s, v) = d.post(&release, secret("legal"), r#"{"by":"Sam Counsel"}"#).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        let (s, v) = d.post(&release, secret("counsel"), r#"{"by":" jo legal "}"#).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        let (_, hold) = d.get(&format!("/v1/holds/{id}"), secret("reader")).await;
        assert_eq!(hold["active"], true, "{hold}");
        // A second person with a token of their own: released, as today.
        let (s, v) = d.post(&release, secret("counsel"), r#"{"by":"Sam Counsel"}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["id"], id);
        assert!(v.get("pending").is_none(), "{v}");
        let (_, hold) = d.get(&format!("/v1/holds/{id}"), secret("reader")).await;
        assert_eq!((hold["active"].as_bool(), hold["released_by"].as_str()), (Some(false), Some("Sam Counsel")), "{hold}");
        assert_eq!(hold["pending_approvals"], Value::Array(vec![]), "{hold}");
        let (s, _) = d.post(&release, secret("legal"), r#"{"by":"Kim Other"}"#).await;
        assert_eq!(s, StatusCode::CONFLICT);
        // Each ask is audited, with the token it came through.
        let asks = d.audit("hold.release_requested");
        assert_eq!(asks.len(), 1, "{asks:?}");
        assert_eq!(asks[0]["details"]["asked_by"], "Jo Legal");
        assert_eq!(asks[0]["details"]["via"], "legal");
        let released = d.audit("hold.released");
        assert_eq!(released.len(), 1, "{released:?}");
        assert_eq!(released[0]["details"]["released_by"], "Sam Counsel");
        assert_eq!(released[0]["details"]["via"], "counsel");
        assert_eq!(released[0]["details"]["approved_by"], serde_json::json!(["Jo Legal", "Sam Counsel"]));

        // The CLI follows the same rule.
        let placed = d.cli_json(&["hold", "place", "--case", "K-2", "--by", "Jo Legal", "--org", "o1"]);
        let id2 = placed["id"].to_string();
        let first = d.cli_json(&["hold", "release", &id2, "--by", "Ann"]);
        assert_eq!((first["pending"].as_bool(), first["approvals"].as_u64()), (Some(true), Some(1)), "{first}");
        let second = d.cli_json(&["hold", "release", &id2, "--by", "Bob"]);
        assert!(second.get("pending").is_none() && second["unblocked"].is_u64(), "{second}");
        let asks = d.audit("hold.release_requested");
        assert_eq!(asks.len(), 2);
        assert_eq!(asks[1]["details"]["via"], Value::Null);
    }
}

/// `GET /v1/data-controls` with `If-None-Match: etag` (when given): status, ETag, body.
async fn snapshot(d: &Daemon, etag: Option<&str>) -> (StatusCode, String, Value) {
    let mut req = d
        .client
        .get(format!("{}/v1/data-controls", d.base))
        .header("authorization", format!("Bearer {}", secret("reader")));
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    (
        status,
        etag,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

both_backends! {
    async fn the_zdr_workflow_and_training_opt_out_over_http(b: Backend) {
        let (_env, d) = start(b, Knobs::default(), "").await;
        // The Admin Console creates orgs; a new org needs a plan.
        let (s, v) = d.put("/v1/orgs/o1", secret("console"), r#"{"training_opt_out":true}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains("needs `plan`"), "{v}");
        let (s, v) = d.put("/v1/orgs/o1", secret("console"), r#"{"plan":"scale"}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!((v["plan"].as_str(), v["zdr"].as_str(), v["training_opt_out"].as_bool()), (Some("scale"), Some("off"), Some(false)), "{v}");
        let (s, v) = d.put("/v1/orgs/f1", secret("console"), r#"{"plan":"free"}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = d.put("/v1/orgs/o1", secret("console"), r#"{"plan":"gold"}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, v) = d.put("/v1/orgs/o1", secret("console"), r#"{"plan":"scale","zdr":"approved"}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "ZDR is not set by PUT: {v}");
        let (s, v) = d.get("/v1/orgs/nope", secret("reader")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = d.get("/v1/orgs/nope/data-controls?endpoint=/v1/ocr", secret("reader")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = d.get("/v1/orgs/o1/data-controls", secret("reader")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

        let (s, etag0, snap) = snapshot(&d, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(snap["orgs"], serde_json::json!([]), "{snap}");
        assert!(snap["zdr_endpoints"].as_array().unwrap().iter().any(|e| e == "/v1/embeddings"), "{snap}");
        let (s, etag, _) = snapshot(&d, Some(&etag0)).await;
        assert_eq!((s, etag.as_str()), (StatusCode::NOT_MODIFIED, etag0.as_str()));

        // The request: reasons required; a free org is refused; unknown org 404.
        let (s, v) = d.post("/v1/orgs/o1/zdr/request", secret("console"), r#"{"by":"Ann Admin"}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, v) = d.post("/v1/orgs/o1/zdr/request", secret("console"), r#"{"reason":"  ","by":"Ann Admin"}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, v) = d.post("/v1/orgs/f1/zdr/request", secret("console"), r#"{"reason":"contract","by":"Ann Admin"}"#).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"], "ZDR requires the Scale plan");
        let (s, _) = d.post("/v1/orgs/zz/zdr/request", secret("console"), r#"{"reason":"contract","by":"Ann Admin"}"#).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // Only a requested org can be decided.
        let (s, v) = d.post("/v1/orgs/o1/zdr/approve", secret("privacy"), r#"{"reason":"ok","by":"Pat Privacy"}"#).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        let (s, v) = d.post("/v1/orgs/o1/zdr/request", secret("console"), r#"{"reason":"DPA signed","by":"Ann Admin"}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["zdr"], "requested");
        // The request path may still store while ZDR is only requested.
        let (_, c) = d.get("/v1/orgs/o1/data-controls?endpoint=/v1/embeddings", secret("app")).await;
        assert_eq!((c["store"].as_bool(), c["reason"].clone()), (Some(true), Value::Null), "{c}");
        // A console token cannot decide its own request; a denial needs a reason.
        let (s, _) = d.post("/v1/orgs/o1/zdr/approve", secret("console"), r#"{"by":"Ann Admin"}"#).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, v) = d.post("/v1/orgs/o1/zdr/deny", secret("privacy"), r#"{"by":"Pat Privacy"}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, v) = d.post("/v1/orgs/o1/zdr/approve", secret("privacy"), r#"{"reason":"reviewed","by":"Pat Privacy"}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["zdr"], "approved");
        let (s, v) = d.post("/v1/orgs/o1/zdr/deny", secret("privacy"), r#"{"reason":"late","by":"Pat Privacy"}"#).await;
        assert_eq!(s, StatusCode::CONFLICT, "decided already: {v}");
        let (_, o) = d.get("/v1/orgs/o1", secret("reader")).await;
        assert_eq!((o["zdr"].as_str(), o["zdr_by"].as_str(), o["zdr_reason"].as_str()), (Some("approved"), Some("Pat Privacy"), Some("reviewed")), "{o}");
        assert!(o["zdr_at"].is_string(), "{o}");
        let decided = d.audit("zdr.approved");
        assert_eq!((decided[0]["details"]["by"].as_str(), decided[0]["details"]["via"].as_str()), (Some("Pat Privacy"), Some("privacy")), "{decided:?}");
        assert_eq!(d.audit("zdr.requested")[0]["details"]["via"], "console");

        // data-controls: covered endpoints are not stored; others are.
        let (_, c) = d.get("/v1/orgs/o1/data-controls?endpoint=/v1/embeddings", secret("reader")).await;
        assert_eq!(c, serde_json::json!({"org": "o1", "endpoint": "/v1/embeddings", "store": false, "reason": "zdr", "zdr": "approved", "training_opt_out": false}));
        let (_, c) = d.get("/v1/orgs/o1/data-controls?endpoint=/v1/files", secret("reader")).await;
        assert_eq!((c["store"].as_bool(), c["reason"].clone()), (Some(true), Value::Null), "{c}");
        // The snapshot changed: a new ETag; the old one no longer answers 304.
        let (s, etag1, snap) = snapshot(&d, Some(&etag0)).await;
        assert_eq!(s, StatusCode::OK);
        assert_ne!(etag1, etag0);
        assert_eq!(snap["orgs"], serde_json::json!([{"org": "o1", "zdr": true, "training_opt_out": false}]));
        let (s, _, _) = snapshot(&d, Some(&format!("W/{etag1}"))).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED, "a weak validator matches too");

        // Training opt-out and ZDR are independent: opting out leaves ZDR approved, and an
        // opt-out org without ZDR is listed with zdr false.
        let (s, v) = d.put("/v1/orgs/o1", secret("console"), r#"{"training_opt_out":true}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!((v["zdr"].as_str(), v["training_opt_out"].as_bool(), v["plan"].as_str()), (Some("approved"), Some(true), Some("scale")), "{v}");
        let (s, v) = d.put("/v1/orgs/f1", secret("console"), r#"{"training_opt_out":true}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!((v["zdr"].as_str(), v["training_opt_out"].as_bool()), (Some("off"), Some(true)), "{v}");
        let (s, etag2, snap) = snapshot(&d, Some(&etag1)).await;
        assert_eq!(s, StatusCode::OK);
        assert_ne!(etag2, etag1);
        assert_eq!(snap["orgs"], serde_json::json!([
            {"org": "f1", "zdr": false, "training_opt_out": true},
            {"org": "o1", "zdr": true, "training_opt_out": true},
        ]));
        let (_, c) = d.get("/v1/orgs/f1/data-controls?endpoint=/v1/embeddings", secret("reader")).await;
        assert_eq!((c["store"].as_bool(), c["training_opt_out"].as_bool()), (Some(true), Some(true)), "{c}");
        // Opting back in leaves ZDR approved; a PUT that changes nothing changes no ETag.
        let (_, v) = d.put("/v1/orgs/o1", secret("console"), r#"{"training_opt_out":false}"#).await;
        assert_eq!((v["zdr"].as_str(), v["training_opt_out"].as_bool()), (Some("approved"), Some(false)), "{v}");
        let (_, etag3, _) = snapshot(&d, None).await;
        let (_, v) = d.put("/v1/orgs/o1", secret("console"), r#"{"plan":"scale"}"#).await;
        assert_eq!(v["zdr"], "approved");
        let (s, _, _) = snapshot(&d, Some(&etag3)).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        // Moving to free revokes ZDR, and leaves the opt-out alone.
        d.put("/v1/orgs/f1", secret("console"), r#"{"plan":"scale"}"#).await;
        let (_, v) = d.put("/v1/orgs/f1", secret("console"), r#"{"plan":"free"}"#).await;
        assert_eq!((v["zdr"].as_str(), v["training_opt_out"].as_bool()), (Some("off"), Some(true)), "{v}");
        let changes = d.audit("org.training_opt_out_changed");
        assert_eq!(changes.len(), 3, "{changes:?}");
        // The CLI and events set the same control; `org show` prints it.
        let v = d.cli_json(&["org", "set", "o1", "--training-opt-out", "true"]);
        assert_eq!((v["zdr"].as_str(), v["training_opt_out"].as_bool()), (Some("approved"), Some(true)), "{v}");
        let (s, v) = d.post("/v1/events", secret("app"), r#"{"type":"org.upsert","org":"o1","plan":"scale","training_opt_out":false}"#).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let shown = d.cli_json(&["org", "show", "o1"]);
        assert_eq!((shown["zdr"].as_str(), shown["training_opt_out"].as_bool()), (Some("approved"), Some(false)), "{shown}");
        let o = d.cli(&["org", "set", "o1"]);
        assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
        let text = bin().arg("--config").arg(&d.cfg).args(["org", "show", "o1"]).output().unwrap();
        assert!(String::from_utf8_lossy(&text.stdout).contains("training opt-out  false"));
    }
}

both_backends! {
    async fn every_request_is_logged_counted_and_a_panic_answers_500(b: Backend) {
        let env = Env::new(b).await;
        let port = free_port();
        let text = env.config_text(&Knobs {
            extra: tokens_toml(env.dir.path(), &format!("127.0.0.1:{port}")),
            ..Knobs::default()
        });
        let cfg = env.write_config(&text);
        let d = Daemon::start(&cfg, port, &[("RETENTIOND_PANIC_AT", "http.events")]).await;
        // The handler panics: 500 with a JSON error, and the server keeps serving.
        let (s, v) = d.post("/v1/events", secret("app"), &org_account("o1", "free", "a1")).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        assert!(v["error"].as_str().unwrap().contains("internal error"), "{v}");
        let (s, _) = d.get("/v1/status", secret("reader")).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = d.get("/v1/resources/c%2F1", secret("reader")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // A made-up method is one `other` label, not a label set per name.
        for m in ["FOO1", "FOO2"] {
            let (s, _) = d.call(reqwest::Method::from_bytes(m.as_bytes()).unwrap(), "/v1/status", None, None).await;
            assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        }
        let (_, metrics) = d.call(reqwest::Method::GET, "/metrics", None, None).await;
        let metrics = metrics.as_str().unwrap().to_string();
        assert!(!metrics.contains("FOO1"), "{metrics}");
        assert!(metrics.contains(r#"retentiond_http_requests_total{method="other",route="/v1/status",status="405"} 2"#), "{metrics}");
        for line in [
            r#"retentiond_http_requests_total{method="POST",route="/v1/events",status="500"} 1"#,
            r#"retentiond_http_requests_total{method="GET",route="/v1/status",status="200"} 1"#,
            r#"retentiond_http_requests_total{method="GET",route="/v1/resources/{id}",status="404"} 1"#,
            r#"retentiond_http_request_duration_seconds_count{method="GET",route="/v1/status"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} missing:\n{metrics}");
        }
        let logs = d.logs();
        assert!(logs.contains("a request handler panicked"), "{logs}");
        let access: Vec<&str> = logs.lines().filter(|l| l.contains("http request")).collect();
        assert!(
            access.iter().any(|l| l.contains("route=/v1/events") && l.contains("status=500") && l.contains("via=app")),
            "{access:?}"
        );
        assert!(
            access.iter().any(|l| l.contains("route=/v1/resources/{id}") && l.contains("status=404") && l.contains("via=reader")),
            "the route pattern, not the id: {access:?}"
        );
        assert!(!logs.contains("c%2F1") && !logs.contains("c/1"), "no ids from paths");
        for (_, secret, _) in TOKENS {
            assert!(!logs.contains(secret), "a token leaked into the log");
        }
        // Probes are not logged at INFO (a load balancer polls them).
        assert!(!access.iter().any(|l| l.contains("route=/readyz")), "{access:?}");
        drop(env);
    }
}
