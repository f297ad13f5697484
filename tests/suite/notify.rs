//! Issue 28, signed notifications (§8): the built binary's daemon tells a receiver written here
//! of its decisions over real HTTP; the receiver checks each signature the way the README tells
//! receivers to (HMAC-SHA256 of "<t>.<body>", compared in constant time), on both backends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::common::*;
use crate::rel::bin;
use crate::roles::{Daemon, secret, start};

const SECRET: &str = "whsec-0123456789abcdef0123456789";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    kind: String,
    answered: u16,
    signed: bool,
    body: Value,
}

#[derive(Default)]
struct Inbox {
    /// Answer 500 to this many more requests.
    fail_next: usize,
    /// Answer 503 to every request.
    down: bool,
    got: Vec<Got>,
}

/// A notification receiver: verifies `Retentiond-Signature`, answers 500 while told to.
struct Receiver {
    url: String,
    inbox: Arc<Mutex<Inbox>>,
}

/// Whether `header` (`t=…,v1=…`) signs `body` with `secret`, within 5 minutes of now.
fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

impl Receiver {
    async fn start() -> Receiver {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let shared = inbox.clone();
        let app = axum::Router::new().route(
            "/hooks/retentiond",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let inbox = shared.clone();
                async move {
                    let signed = headers
                        .get("retentiond-signature")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|h| verify(SECRET.as_bytes(), h, &body));
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let mut inbox = inbox.lock().unwrap();
                    let answered = if inbox.down {
                        503
                    } else if inbox.fail_next > 0 {
                        inbox.fail_next -= 1;
                        500
                    } else {
                        200
                    };
                    inbox.got.push(Got {
                        id: v["id"].as_str().unwrap_or_default().to_string(),
                        kind: v["type"].as_str().unwrap_or_default().to_string(),
                        answered,
                        signed,
                        body: v,
                    });
                    StatusCode::from_u16(answered).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hooks/retentiond"),
            inbox,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.lock().unwrap().got.clone()
    }

    fn set(&self, f: impl FnOnce(&mut Inbox)) {
        f(&mut self.inbox.lock().unwrap());
    }

    /// The delivered (200) notifications, once `want` types have all been delivered.
    async fn wait_delivered(&self, want: &[&str], d: &Daemon) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let ok: Vec<Got> = self
                .got()
                .into_iter()
                .filter(|g| g.answered == 200)
                .collect();
            if want.iter().all(|w| ok.iter().any(|g| g.kind == *w)) {
                return ok;
            }
            assert!(
                Instant::now() < deadline,
                "not delivered: want {want:?}, got {:?}\n{}",
                self.got(),
                d.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `[notify.mailer]` for `r`, with the secret in a file in `dir`.
fn notify_toml(dir: &tempfile::TempDir, r: &Receiver, events: &str, max_age: &str) -> String {
    let f = dir.path().join("webhook-secret");
    std::fs::write(&f, format!("{SECRET}\n")).unwrap();
    format!(
        "[notify.mailer]\nurl = \"{}\"\nsecret_file = \"{}\"\nevents = {events}\nretry_backoff = \"200ms\"\nretry_backoff_max = \"400ms\"\nmax_age = \"{max_age}\"\n",
        r.url,
        f.display()
    )
}

async fn must(d: &Daemon, method: &str, path: &str, token: &str, body: &str) -> Value {
    let (s, v) = match method {
        "POST" => d.post(path, secret(token), body).await,
        _ => d.put(path, secret(token), body).await,
    };
    assert!(s.is_success(), "{method} {path}: {s} {v}");
    v
}

both_backends! {
    async fn decisions_reach_the_mailer_signed_and_retried(b: Backend) {
        let r = Receiver::start().await;
        r.set(|i| i.fail_next = 1);
        let secrets = tempfile::tempdir().unwrap();
        let extra = notify_toml(
            &secrets,
            &r,
            r#"["zdr.requested", "zdr.approved", "zdr.denied", "account.purged", "hold.placed"]"#,
            "1h",
        );
        let (env, d) = start(b, Knobs { account_grace: "0s", ..Knobs::default() }, &extra).await;
        env.seed_user("a1").await;
        assert!(d.cli(&["check-config"]).status.success());
        must(&d, "POST", "/v1/events", "app", &org_account("o1", "scale", "a1")).await;
        must(&d, "POST", "/v1/orgs/o1/zdr/request", "console", r#"{"reason":"DPA signed","by":"Ann Admin"}"#).await;
        must(&d, "POST", "/v1/orgs/o1/zdr/deny", "privacy", r#"{"reason":"not eligible","by":"Pat Privacy"}"#).await;
        let placed = must(&d, "POST", "/v1/holds", "legal", r#"{"case":"K-1","by":"Jo Legal","scope":{"org":"o1"}}"#).await;
        let hold = placed["id"].as_i64().unwrap();
        must(&d, "POST", &format!("/v1/holds/{hold}/release"), "legal", r#"{"by":"Jo Legal"}"#).await;
        must(&d, "POST", "/v1/events", "app", r#"{"type":"account.deletion_requested","account":"a1"}"#).await;

        let ok = r
            .wait_delivered(&["zdr.requested", "zdr.denied", "hold.placed", "account.purged"], &d)
            .await;
        let all = r.got();
        assert!(all.iter().all(|g| g.signed), "every request is signed: {all:?}");
        // The first answer was a 500; the same id came again and was accepted.
        assert_eq!(all[0].answered, 500, "{all:?}");
        assert!(ok.iter().any(|g| g.id == all[0].id), "retried with the same id: {all:?}");
        let mut ids: Vec<&str> = ok.iter().map(|g| g.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "{ok:?}");
        assert!(!all.iter().any(|g| g.kind == "hold.released"), "not subscribed: {all:?}");
        let body = |kind: &str| ok.iter().find(|g| g.kind == kind).unwrap().body.clone();
        let denied = body("zdr.denied");
        assert_eq!(
            (denied["org"].as_str(), denied["by"].as_str(), denied["reason"].as_str()),
            (Some("o1"), Some("Pat Privacy"), Some("not eligible")),
            "{denied}"
        );
        assert!(denied["at"].as_str().unwrap().ends_with('Z'), "{denied}");
        let placed = body("hold.placed");
        assert_eq!((placed["hold"].as_i64(), placed["by"].as_str()), (Some(hold), Some("Jo Legal")), "{placed}");
        assert_eq!(body("account.purged")["account"], "a1");

        let list = d.cli_json(&["notify", "list"]);
        let rows = list["notifications"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "{list}");
        assert!(rows.iter().all(|n| n["delivered_at"].is_string()), "{list}");
        assert_eq!(rows.iter().map(|n| n["attempts"].as_i64().unwrap()).sum::<i64>(), 5, "{list}");
        let status = d.cli_json(&["status"]);
        assert_eq!(status["notifications"], serde_json::json!([]), "{status}");
        assert!(d.logs().contains("notification delivered"), "{}", d.logs());
    }
}

both_backends! {
    async fn a_crash_loses_no_notification_and_dead_letters_are_resent(b: Backend) {
        let r = Receiver::start().await;
        r.set(|i| i.down = true);
        let secrets = tempfile::tempdir().unwrap();
        let extra = notify_toml(&secrets, &r, r#"["zdr.requested", "zdr.denied", "hold.placed"]"#, "3s");
        let (env, d) = start(b, Knobs::default(), &extra).await;
        must(&d, "POST", "/v1/events", "app", &org_account("o1", "scale", "a1")).await;
        must(&d, "POST", "/v1/orgs/o1/zdr/request", "console", r#"{"reason":"DPA signed","by":"Ann Admin"}"#).await;
        // The receiver is down: attempts fail; then the daemon dies (SIGKILL).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.got().iter().any(|g| g.kind == "zdr.requested") {
            assert!(Instant::now() < deadline, "no attempt: {}", d.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (cfg, port) = (d.cfg.clone(), d.base.rsplit(':').next().unwrap().parse::<u16>().unwrap());
        drop(d);
        // A decision while no daemon runs at all.
        let o = bin()
            .arg("--config").arg(&cfg)
            .args(["org", "zdr", "deny", "o1", "--reason", "not eligible", "--by", "Pat Privacy"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        r.set(|i| i.down = false);
        let d = Daemon::start(&cfg, port, &[]).await;
        let ok = r.wait_delivered(&["zdr.requested", "zdr.denied"], &d).await;
        assert!(r.got().iter().all(|g| g.signed));
        let requested: Vec<Got> = r.got().into_iter().filter(|g| g.kind == "zdr.requested").collect();
        assert!(requested.len() >= 2 && requested.iter().all(|g| g.id == requested[0].id), "{requested:?}");
        assert_eq!(ok.iter().filter(|g| g.kind == "zdr.denied").count(), 1, "{ok:?}");

        // Dead letters: the receiver fails past max_age (3s).
        r.set(|i| i.down = true);
        must(&d, "POST", "/v1/holds", "legal", r#"{"case":"K-9","by":"Jo Legal","scope":{"org":"o1"}}"#).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let dead = loop {
            let l = d.cli_json(&["notify", "list", "--failed"]);
            if let Some(n) = l["notifications"].as_array().unwrap().first().cloned() {
                break n;
            }
            assert!(Instant::now() < deadline, "never dead-lettered: {}", d.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(dead["type"], "hold.placed", "{dead}");
        assert!(dead["attempts"].as_i64().unwrap() >= 2, "retried before giving up: {dead}");
        assert_eq!(dead["last_error"], "HTTP 503", "{dead}");
        let status = d.cli_json(&["status"]);
        assert_eq!(status["notifications"], serde_json::json!([{"receiver": "mailer", "pending": 0, "dead": 1}]), "{status}");
        let text = d.cli(&["notify", "list", "--failed"]);
        assert!(text.status.success());
        let (_, metrics) = d.call(reqwest::Method::GET, "/metrics", None, None).await;
        assert!(metrics.as_str().unwrap().contains("retentiond_notifications_total{receiver=\"mailer\",outcome=\"dead\"} 1"), "{metrics}");
        assert!(d.logs().contains("notification dead-lettered"), "{}", d.logs());
        let before = r.got().len();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(r.got().len(), before, "a dead letter is not retried on its own");
        // Re-sent by `notify retry` once the receiver is back; an unknown id is refused.
        r.set(|i| i.down = false);
        let o = d.cli(&["notify", "retry", "ntf_nope"]);
        assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
        let id = dead["id"].as_str().unwrap();
        let re = d.cli_json(&["notify", "retry", id]);
        assert_eq!(re["requeued"], serde_json::json!([id]), "{re}");
        let ok = r.wait_delivered(&["hold.placed"], &d).await;
        assert_eq!(ok.iter().find(|g| g.kind == "hold.placed").unwrap().id, id);
        assert_eq!(d.cli_json(&["notify", "list", "--failed"])["notifications"], serde_json::json!([]));
        drop(env);
    }
}

#[test]
fn a_receiver_without_a_secret_or_with_an_unknown_event_is_a_config_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(Backend::Sqlite));
    let base = env.config_text(&Knobs::default());
    for (extra, key, says) in [
        (
            "[notify.mailer]\nurl = \"http://127.0.0.1:1/h\"\nevents = [\"zdr.denied\"]\n",
            "notify.mailer",
            "secret_file",
        ),
        (
            "[notify.mailer]\nurl = \"http://127.0.0.1:1/h\"\nsecret_env = \"RD_TEST_NOPE\"\nevents = [\"zdr.denied\"]\n",
            "notify.mailer.secret_env",
            "RD_TEST_NOPE",
        ),
        (
            "[notify.mailer]\nurl = \"http://127.0.0.1:1/h\"\nsecret_env = \"HOME\"\nevents = [\"zdr.maybe\"]\n",
            "notify.mailer.events[0]",
            "zdr.maybe",
        ),
        (
            "[notify.mailer]\nurl = \"ftp://x/h\"\nsecret_env = \"HOME\"\nevents = [\"zdr.denied\"]\n",
            "notify.mailer.url",
            "http",
        ),
    ] {
        let cfg = env.write_config(&format!("{base}\n{extra}"));
        let out = bin()
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key) && err.contains(says), "{extra}: {err}");
    }
}
