//! The daemon in-process (`Daemon::start` → `DaemonHandle`, issue 25), on both backends, with
//! a hand-moved clock: events over its own HTTP API, sweeps it runs, a graceful stop, and the
//! effects asserted in the ledger, the audit log and the application database.

use std::collections::BTreeMap;

use crate::common::*;
use retentiond::app::App;
use retentiond::clock::Clock;
use retentiond::config::Config;
use retentiond::daemon::{Daemon, DaemonHandle};
use retentiond::model::{Span, Timestamp};
use serde_json::Value;

const TOKEN: &str = "daemon-test-token-0123456789abcdef";

/// A config whose sweep cron never fires during a test (sweeps run at start and on request),
/// with the HTTP API on a free port.
fn config(env: &Env, knobs: Knobs) -> Config {
    let token = env.dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let extra = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\ntoken_name = \"app-backend\"\n",
        knobs.extra,
        token.display()
    );
    let text = env.config_text(&Knobs {
        extra,
        sweep: "0 0 0 1 1 *",
        ..knobs
    });
    Config::parse(&text, "test.toml").expect("valid test config")
}

fn t0() -> Timestamp {
    Timestamp::parse_rfc3339(T0).unwrap()
}

fn client() -> reqwest::Client {
    retentiond::targets::install_tls_provider();
    reqwest::Client::new()
}

async fn call(
    d: &DaemonHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> (reqwest::StatusCode, Value) {
    let addr = d.http_addr().expect("[http] is configured");
    let mut req = client()
        .request(method, format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn state(app: &App, id: &str) -> String {
    crate::common::resource_state(app.ledger(), id).await
}

/// `resource.purged` audit entries per resource id.
async fn receipts(app: &App) -> BTreeMap<String, usize> {
    crate::common::purge_receipts(app.ledger()).await
}

both_backends! {
    async fn events_over_http_are_purged_by_the_daemons_sweep_and_it_stops_cleanly(b: Backend) {
    let env = Env::new(b).await;
    env.seed_user("a1").await;
    env.seed_conversation("c1", "a1", 3).await;
    env.seed_conversation("c2", "a1", 2).await;
    let clock = Clock::manual(t0());
    let d = Daemon::start(config(&env, Knobs::default()), clock.clone())
        .await
        .expect("the daemon starts");

    let events = org_account("o1", "free", "a1")
        + &created("c1", "conversation", "a1")
        + &created("c2", "conversation", "a1")
        + &deleted("c1");
    let (status, body) = call(&d, reqwest::Method::POST, "/v1/events", Some(events)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["applied"], 5, "{body}");

    // Within the grace: nothing goes.
    let r = d.sweep().await.expect("sweep");
    assert_eq!(r.purged, 0);
    assert_eq!(state(&d.app(), "c1").await, "deleted");
    assert_eq!(
        env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await,
        3
    );

    // Past it: the deleted conversation goes, the live one stays.
    clock.advance(Span::parse("30d").unwrap());
    clock.advance(Span::parse("1s").unwrap());
    let r = d.sweep().await.expect("sweep");
    assert_eq!(r.purged, 1, "{r:?}");
    let (status, body) = call(&d, reqwest::Method::GET, "/v1/resources/c1", None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["state"], "purged", "{body}");

    let app = d.app();
    d.shutdown().await;

    assert_eq!(state(&app, "c1").await, "purged");
    assert_eq!(state(&app, "c2").await, "live");
    assert_eq!(
        env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await,
        0
    );
    assert_eq!(
        env.app_count("SELECT COUNT(*) FROM conversations WHERE id = 'c1'").await,
        0
    );
    assert_eq!(
        env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c2'").await,
        2
    );
    assert_eq!(receipts(&app).await, BTreeMap::from([("c1".to_string(), 1)]));
    let v = app.verify_audit(&[], None).await.unwrap();
    assert!(v.verified.ok, "{:?}", v.verified.error);
}
}

both_backends! {
    async fn a_stop_during_the_start_up_sweep_leaves_every_purge_whole(b: Backend) {
    let env = Env::new(b).await;
    let knobs = Knobs {
        batch_size: 50,
        batches_per_transaction: 1,
        ..Default::default()
    };
    let n = 1500;
    env.seed_user("a1").await;
    let mut events = org_account("o1", "free", "a1");
    for i in 0..n {
        env.seed_conversation(&format!("c{i}"), "a1", 1).await;
        events.push_str(&created(&format!("c{i}"), "conversation", "a1"));
        events.push_str(&deleted(&format!("c{i}")));
    }
    let clock = Clock::manual(t0());
    {
        let cfg = std::sync::Arc::new(config(&env, knobs.clone()));
        let app = App::open(cfg, clock.clone()).await.unwrap();
        app.sync_policy("test").await.unwrap();
        app.ingest_reader(events.as_bytes()).await.unwrap();
    }
    clock.advance(Span::parse("31d").unwrap());

    // The start-up sweep drains the backlog; the stop comes while it runs.
    let d = Daemon::start(config(&env, knobs.clone()), clock.clone())
        .await
        .expect("the daemon starts");
    let app = d.app();
    d.shutdown().await;

    // Every purge is whole: recorded with one receipt and its data gone, or not recorded and
    // its data intact.
    let purged_after_stop = check_whole(&env, &app, n).await;

    // A second daemon finishes the rest (its start-up sweep, then one more after it).
    let d = Daemon::start(config(&env, knobs), clock.clone())
        .await
        .expect("the daemon starts again");
    let r = d.sweep().await.expect("sweep");
    assert!(r.purged as usize <= n - purged_after_stop, "{r:?}");
    let app = d.app();
    d.shutdown().await;
    assert_eq!(check_whole(&env, &app, n).await, n);
    assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 0);
}
}

/// Checks every conversation `c0..cn` is purged whole or untouched; returns how many are purged.
async fn check_whole(env: &Env, app: &App, n: usize) -> usize {
    let receipts = receipts(app).await;
    let mut purged = 0;
    for i in 0..n {
        let id = format!("c{i}");
        let st = state(app, &id).await;
        let messages = env
            .app_count(&format!(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = '{id}'"
            ))
            .await;
        match st.as_str() {
            "purged" => {
                purged += 1;
                assert_eq!(receipts.get(&id), Some(&1), "{id}: one receipt");
                assert_eq!(messages, 0, "{id}: purged, its data gone");
            }
            // `purging`: claimed for a batch the stop came before; the claim was released.
            "deleted" | "purging" => {
                assert_eq!(receipts.get(&id), None, "{id}: no receipt");
                assert_eq!(messages, 1, "{id}: not purged, its data intact");
            }
            other => panic!("{id} left {other} by a graceful stop"),
        }
    }
    purged
}
