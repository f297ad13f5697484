//! Several `retentiond run` processes on one ledger share the work (§7, issue 5): each resource
//! is purged exactly once on record, and an instance killed mid-batch leaves leases the others
//! take over. On PostgreSQL the application database is PostgreSQL too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rel::bin;
use retentiond::config::SecretUrl;
use retentiond::store::{Ledger, OpenOptions};
use sqlx::{Connection, Executor};

/// Starts `retentiond run`; its log goes to a file next to the config (an unread pipe would fill
/// up and block the daemon).
fn daemon(cfg: &std::path::Path, crash_at: Option<&str>) -> Child {
    daemon_logged(cfg, crash_at).0
}

/// [`daemon`], and the file its log goes to.
fn daemon_logged(cfg: &std::path::Path, crash_at: Option<&str>) -> (Child, std::path::PathBuf) {
    let log = cfg.with_extension(format!("{}.log", rand_u32()));
    let mut c = bin();
    c.arg("--config")
        .arg(cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(p) = crash_at {
        c.env("RETENTIOND_CRASH_AT", p);
    }
    (c.spawn().expect("start daemon"), log)
}

/// Lines of a daemon's log that contain `needle`.
fn log_count(log: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn cli_ok(cfg: &std::path::Path, args: &[&str]) {
    let o = bin().arg("--config").arg(cfg).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

/// The application tables, on PostgreSQL (in a fresh schema) or in the test's SQLite file.
async fn app_db(env: &Env) -> Option<String> {
    match env.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let url = pg_schema().await;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            c.execute(
                "CREATE TABLE conversations (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, title TEXT); \
                 CREATE TABLE messages (id BIGSERIAL PRIMARY KEY, conversation_id TEXT NOT NULL, body TEXT NOT NULL); \
                 CREATE INDEX messages_conversation ON messages (conversation_id); \
                 CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT); CREATE TABLE files (id TEXT PRIMARY KEY, user_id TEXT, name TEXT); \
                 CREATE TABLE api_logs (id TEXT PRIMARY KEY, user_id TEXT, endpoint TEXT, request TEXT, response TEXT); \
                 CREATE TABLE agents (id TEXT PRIMARY KEY, user_id TEXT, spec TEXT);",
            )
            .await
            .unwrap();
            Some(url)
        }
    }
}

async fn seed(env: &Env, app_url: &Option<String>, n: usize) {
    let rows = |i: usize| (format!("c{i}"), format!("message of c{i}"));
    match app_url {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let ids: Vec<String> = (0..n).map(|i| rows(i).0).collect();
            let bodies: Vec<String> = (0..n).map(|i| rows(i).1).collect();
            sqlx::query("INSERT INTO conversations (id, user_id) SELECT unnest($1::text[]), 'a1'")
                .bind(&ids)
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query("INSERT INTO messages (conversation_id, body) SELECT * FROM unnest($1::text[], $2::text[])")
                .bind(&ids)
                .bind(&bodies)
                .execute(&mut c)
                .await
                .unwrap();
        }
        None => {
            let mut c = env.app().await;
            let mut tx = c.begin().await.unwrap();
            for i in 0..n {
                let (id, body) = rows(i);
                sqlx::query("INSERT INTO conversations (id, user_id) VALUES ($1, 'a1')")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO messages (conversation_id, body) VALUES ($1, $2)")
                    .bind(&id)
                    .bind(&body)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
    let mut events = org_account("o1", "free", "a1");
    for i in 0..n {
        events.push_str(&created(&format!("c{i}"), "conversation", "a1"));
        events.push_str(&deleted(&format!("c{i}")));
    }
    let file = env.dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    let cfg = env.dir.path().join("retentiond.toml");
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["ingest", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

async fn app_rows(env: &Env, app_url: &Option<String>) -> i64 {
    match app_url {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM conversations)",
            )
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
        None => {
            env.app_count(
                "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM conversations)",
            )
            .await
        }
    }
}

/// Waits until every resource is purged; returns how long it took.
async fn wait_all_purged(ledger: &Ledger, n: i64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let counts = ledger.state_counts().await.unwrap();
        let purged: i64 = counts
            .iter()
            .filter(|c| c.state == "purged")
            .map(|c| c.count)
            .sum();
        if purged == n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "only {purged} of {n} purged after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exactly one receipt per resource, and the receipts' row counts add up to what was deleted.
async fn check_receipts(ledger: &Ledger, n: usize) {
    let mut seen = std::collections::HashMap::new();
    let mut rows = 0u64;
    let mut next = 1;
    loop {
        let page = ledger.audit_range(next, i64::MAX, 20_000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for e in page.iter().filter(|e| e.action == "resource.purged") {
            *seen.entry(e.subject.clone()).or_insert(0) += 1;
            let d: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            rows += d["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["rows"].as_u64().unwrap())
                .sum::<u64>();
        }
    }
    assert_eq!(seen.len(), n, "one receipt per resource");
    assert!(
        seen.values().all(|c| *c == 1),
        "no resource has two receipts"
    );
    // Each purge's deletes may have run more than once (at-least-once), so the recorded counts
    // are at most what existed; they equal it when no purge was interrupted.
    assert!(rows <= 2 * n as u64, "rows recorded {rows}");
    let v = retentiond::checkpoint::verify_ledger(ledger).await.unwrap();
    assert!(v.ok, "{:?}", v.error);
}

async fn run_instances(b: Backend, n: usize, instances: usize) -> Duration {
    let env = Env::new(b).await;
    let app_url = app_db(&env).await;
    let text = env.config_text(&Knobs {
        conversation_grace: "0s",
        batch_size: 500,
        // One target batch per claim: a claim of 500, so every instance can get a share.
        batches_per_transaction: 1,
        app_db_url: app_url.clone(),
        ..Default::default()
    });
    let cfg = env.write_config(&text);
    seed(&env, &app_url, n).await;
    let ledger = Ledger::open(
        &SecretUrl::new(env.ledger_url.as_str()),
        &OpenOptions::default(),
    )
    .await
    .unwrap();
    // A hold keeps everything until every instance runs, so none starts with a head start.
    cli_ok(
        &cfg,
        &[
            "hold",
            "place",
            "--case",
            "START",
            "--by",
            "test",
            "--kind",
            "conversation",
        ],
    );
    let children: Vec<(Child, std::path::PathBuf)> =
        (0..instances).map(|_| daemon_logged(&cfg, None)).collect();
    let start = Instant::now();
    while !children
        .iter()
        .all(|(_, log)| log_count(log, "retentiond started") > 0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "daemons did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cli_ok(&cfg, &["hold", "release", "1", "--by", "test"]);
    let took = wait_all_purged(&ledger, n as i64, Duration::from_secs(240)).await;
    for (c, _) in &children {
        signal(c, "TERM");
    }
    let mut shares = Vec::new();
    for (c, log) in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        shares.push(log_count(&log, "purged kind="));
    }
    eprintln!("{b:?}: {instances} instance(s) purged {shares:?} of {n}");
    assert_eq!(
        shares.iter().sum::<usize>(),
        n,
        "one purge log line per resource"
    );
    // Sharing the work means each instance did a real share of it: at least a tenth of the
    // whole (issue 23). That is PostgreSQL's promise (§7). The bound is far from the fair third
    // (seen: [7000, 7500, 5500], [7000, 6500, 6500] of 20,000 on a busy 2-core machine) so that
    // a slow spell of one process cannot fail it, yet it is 4 claims of 500 each: an instance
    // that only got a leftover claim or two, or none, fails it. All instances start before the
    // hold that keeps the work is released, and their crons fire on the same second.
    // SQLite is the one-daemon default: a purge transaction holds its single writer lock
    // across its targets and the next begins at once, so one instance may do all of it (seen:
    // [0, 0, 5000]); there, further instances are checked to be safe (the sum above, the
    // receipts below).
    if b == Backend::Postgres && instances > 1 {
        let min = n / 10;
        for (i, s) in shares.iter().enumerate() {
            assert!(
                *s >= min,
                "instance {i} purged {s} of {n} ({shares:?}), less than a tenth ({min}): the work was not shared"
            );
        }
    }
    assert_eq!(app_rows(&env, &app_url).await, 0);
    check_receipts(&ledger, n).await;
    took
}

both_backends! {
    async fn several_daemons_share_twenty_thousand_purges_exactly_once(b: Backend) {
        // SQLite serialises writers, so several daemons there buy availability, not speed: a
        // smaller run shows correctness. PostgreSQL runs the full 20,000.
        let n = if b == Backend::Sqlite { 5_000 } else { 20_000 };
        let one = run_instances(b, n, 1).await;
        let three = run_instances(b, n, 3).await;
        eprintln!(
            "{b:?}: {n} purges with 1 instance {:.2}s, with 3 instances {:.2}s (ratio 3/1 = {:.2})",
            one.as_secs_f64(),
            three.as_secs_f64(),
            three.as_secs_f64() / one.as_secs_f64()
        );
    }
}

both_backends! {
    async fn an_instance_killed_mid_batch_leaves_its_work_to_the_others(b: Backend) {
        let n = 3_000;
        let env = Env::new(b).await;
        let app_url = app_db(&env).await;
        let text = env.config_text(&Knobs { conversation_grace: "0s", batch_size: 100, lease: "2s", app_db_url: app_url.clone(), ..Default::default() });
        let cfg = env.write_config(&text);
        seed(&env, &app_url, n).await;
        let ledger = Ledger::open(&SecretUrl::new(env.ledger_url.as_str()), &OpenOptions::default()).await.unwrap();
        // One instance dies right after its first batch's target deletes, before recording them.
        let crashed = daemon(&cfg, Some("after_target_0")).wait_with_output().unwrap();
        assert_eq!(crashed.status.code(), Some(86));
        // Two run; one of them is SIGKILLed while purging.
        let a = daemon(&cfg, None);
        let b2 = daemon(&cfg, None);
        let start = Instant::now();
        loop {
            let purged: i64 = ledger.state_counts().await.unwrap().iter().filter(|c| c.state == "purged").map(|c| c.count).sum();
            if purged > 0 || start.elapsed() > Duration::from_secs(30) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        signal(&a, "KILL");
        let _ = a.wait_with_output();
        wait_all_purged(&ledger, n as i64, Duration::from_secs(120)).await;
        signal(&b2, "TERM");
        let out = b2.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(app_rows(&env, &app_url).await, 0);
        check_receipts(&ledger, n).await;
    }
}
