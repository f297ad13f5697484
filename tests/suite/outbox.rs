//! The transactional outbox (issue 10): a separate process — the `sqlite3` or `psql` client,
//! standing in for the application — inserts events into the outbox in the same transaction as
//! its own delete; the daemon (`retentiond run`, the built binary) applies them, dead-letters a
//! bad row without blocking the queue, and, killed mid-consume and restarted, applies every event
//! exactly once in effect. SQLite application + SQLite ledger, PostgreSQL application +
//! PostgreSQL ledger.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use retentiond::config::SecretUrl;
use retentiond::store::{Ledger, OpenOptions};
use sqlx::Connection;

const OUTBOX_SQLITE: &str = include_str!("../../config/outbox-sqlite.sql");
const OUTBOX_POSTGRES: &str = include_str!("../../config/outbox-postgres.sql");

/// The application's database, driven through its command-line client (a separate process).
struct App {
    sqlite: PathBuf,
    /// (libpq URL, schema, sqlx URL selecting the schema)
    pg: Option<(String, String, String)>,
}

impl App {
    async fn new(env: &Env, backend: Backend) -> App {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let url = pg_schema().await;
                let schema = url
                    .rsplit("options[search_path]=")
                    .next()
                    .unwrap()
                    .to_string();
                Some((pg_base_url(), schema, url))
            }
        };
        let app = App {
            sqlite: env.app_db.clone(),
            pg,
        };
        match backend {
            // The SQLite app schema (conversations, messages…) is already there (Env).
            Backend::Sqlite => app.sql(OUTBOX_SQLITE),
            Backend::Postgres => app.sql(&format!(
                "CREATE TABLE conversations (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, title TEXT);\n{OUTBOX_POSTGRES}"
            )),
        };
        app
    }

    /// The `[sources]` URL.
    fn url(&self) -> String {
        match &self.pg {
            Some((_, _, url)) => url.clone(),
            None => format!("sqlite://{}", self.sqlite.display()),
        }
    }

    /// Runs SQL in the client, as the application would; fails the test on any SQL error.
    fn sql(&self, sql: &str) -> Output {
        let (mut cmd, script) = match &self.pg {
            None => {
                let mut c = Command::new("sqlite3");
                c.arg("-bail").arg(&self.sqlite);
                (c, format!(".timeout 10000\n{sql}\n"))
            }
            Some((base, schema, _)) => {
                let mut c = Command::new("psql");
                c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", base]);
                (c, format!("SET search_path TO {schema};\n{sql}\n"))
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sqlite3 / psql client");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "client failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    async fn count(&self, sql: &str) -> i64 {
        match &self.pg {
            None => {
                let mut c = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
            Some((_, _, url)) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
        }
    }

    async fn pending(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM retention_outbox WHERE failed_at IS NULL")
            .await
    }

    /// `(id, error)` of dead-lettered rows.
    async fn dead(&self) -> Vec<(i64, String)> {
        let sql = "SELECT id, error FROM retention_outbox WHERE failed_at IS NOT NULL ORDER BY id";
        match &self.pg {
            None => {
                let mut c = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
            }
            Some((_, _, url)) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
            }
        }
    }
}

/// SQL literal of an event.
fn lit(event: &str) -> String {
    format!("'{}'", event.trim().replace('\'', "''"))
}

fn config(env: &Env, app: &App, batch_size: usize) -> PathBuf {
    env.write_config(&env.config_text(&Knobs {
        batch_size,
        extra: format!(
            "[sources.app_outbox]\nurl = \"{}\"\ntable = \"retention_outbox\"\npoll = \"50ms\"\n",
            app.url()
        ),
        ..Default::default()
    }))
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

/// A failing test must not leave a daemon running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    fn start(config: &Path, dir: &Path, crash_at: Option<&str>) -> Daemon {
        let log = dir.join(format!("daemon-{}.log", rand_u32()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_retentiond"));
        cmd.env_remove("RUST_LOG")
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(p) = crash_at {
            cmd.env("RETENTIOND_CRASH_AT", p);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn signal(&self, sig: &str) {
        let s = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    }

    fn wait(&mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "daemon did not exit in time:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            status.code(),
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }

    /// SIGTERM once the daemon is up (a SIGTERM during start-up kills it the default way,
    /// which is safe but not the clean exit this checks); returns the logs after a clean exit.
    fn stop(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("retentiond started")
        {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("TERM");
        let (code, logs) = self.wait(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{logs}");
        logs
    }
}

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ledger(env: &Env) -> Ledger {
    Ledger::open(
        &SecretUrl::new(env.ledger_url.clone()),
        &OpenOptions {
            max_connections: 2,
            create: false,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Audit entries per (action, subject).
async fn audit_counts(l: &Ledger) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for e in l.audit_range(1, i64::MAX, 1_000_000).await.unwrap() {
        *m.entry((e.action, e.subject)).or_default() += 1;
    }
    m
}

both_backends! {
    async fn events_committed_with_the_application_delete_are_applied_and_bad_rows_are_dead_lettered(b: Backend) {
        let env = Env::new(b).await;
        let app = App::new(&env, b).await;
        let cfg = config(&env, &app, 500);
        app.sql(&format!(
            "BEGIN;\nINSERT INTO conversations (id, user_id, title) VALUES ('c1', 'a1', 't'), ('c2', 'a1', 't');\n\
             INSERT INTO retention_outbox (event) VALUES ({}), ({}), ({}), ({});\nCOMMIT;",
            lit(r#"{"type":"org.upsert","org":"o1","plan":"free"}"#),
            lit(r#"{"type":"account.created","account":"a1","org":"o1"}"#),
            lit(&created("c1", "conversation", "a1")),
            lit(&created("c2", "conversation", "a1")),
        ));
        let daemon = Daemon::start(&cfg, env.dir.path(), None);
        until("the creations", || async { app.pending().await == 0 }).await;
        let l = ledger(&env).await;
        let before = chrono::Utc::now().timestamp_millis() - 1000;

        // The application deletes c1 and records the event in the same transaction…
        app.sql(&format!(
            "BEGIN;\nDELETE FROM conversations WHERE id = 'c1';\nINSERT INTO retention_outbox (event) VALUES ({});\nCOMMIT;",
            lit(&deleted("c1"))
        ));
        // …and rolls back a deletion of c2: neither the delete nor the event happened.
        app.sql(&format!(
            "BEGIN;\nDELETE FROM conversations WHERE id = 'c2';\nINSERT INTO retention_outbox (event) VALUES ({});\nROLLBACK;",
            lit(&deleted("c2"))
        ));
        // Bad rows do not block the queue: the event after them is applied.
        let mut bad = vec![lit(&created("c9", "conversation", "a9"))];
        if b == Backend::Sqlite {
            bad.push("'{not json'".into()); // JSONB refuses it inside the app's transaction
        }
        for e in &bad {
            app.sql(&format!("INSERT INTO retention_outbox (event) VALUES ({e});"));
        }
        app.sql(&format!(
            "INSERT INTO retention_outbox (event_id, event) VALUES ('app-7', {});",
            lit(&created("c3", "conversation", "a1"))
        ));
        until("c3", || async { l.resource("c3").await.unwrap().is_some() && app.pending().await == 0 }).await;
        let after = chrono::Utc::now().timestamp_millis();

        let c1 = l.resource("c1").await.unwrap().unwrap();
        assert_eq!(c1.state.to_string(), "deleted");
        let at = c1.deleted_at.unwrap().millis();
        assert!(before <= at && at <= after, "deleted_at is the app's transaction time: {at}");
        assert_eq!(l.resource("c2").await.unwrap().unwrap().state.to_string(), "live");
        assert_eq!(app.count("SELECT COUNT(*) FROM conversations WHERE id = 'c2'").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM conversations WHERE id = 'c1'").await, 0);
        assert_eq!(l.resource("c3").await.unwrap().unwrap().state.to_string(), "live");

        let dead = app.dead().await;
        assert_eq!(dead.len(), bad.len(), "{dead:?}");
        assert!(dead[0].1.contains("unknown account `a9`"), "{dead:?}");
        if b == Backend::Sqlite {
            assert!(dead[1].1.contains("malformed JSON"), "{dead:?}");
        }
        let audit = audit_counts(&l).await;
        assert_eq!(audit.keys().filter(|(a, _)| a == "outbox.dead_lettered").count(), bad.len());
        assert_eq!(audit.get(&("resource.deleted".into(), "conversation/c1".into())), Some(&1));

        // Requeue once the cause is fixed (the account now exists): the event applies.
        app.sql(&format!("INSERT INTO retention_outbox (event) VALUES ({});", lit(r#"{"type":"account.created","account":"a9","org":"o1"}"#)));
        until("a9 created", || async { l.account("a9").await.unwrap().is_some() }).await;
        app.sql(&format!("UPDATE retention_outbox SET failed_at = NULL, error = NULL WHERE id = {};", dead[0].0));
        until("the requeued row", || async { app.dead().await.len() == bad.len() - 1 && app.pending().await == 0 }).await;
        assert_eq!(l.resource("c9").await.unwrap().unwrap().state.to_string(), "live");

        let logs = daemon.stop();
        for needle in ["outbox poller started", "dead-lettered", "outbox poller stopped"] {
            assert!(logs.contains(needle), "logs lack {needle}:\n{logs}");
        }
        assert!(!logs.contains("panicked"));
    }
}

both_backends! {
    async fn killing_the_daemon_mid_consume_applies_every_event_exactly_once(b: Backend) {
        let env = Env::new(b).await;
        let app = App::new(&env, b).await;
        let cfg = config(&env, &app, 40);
        const N: usize = 150;
        let mut events = vec![
            r#"{"type":"org.upsert","org":"o1","plan":"free"}"#.to_string(),
            r#"{"type":"account.created","account":"a1","org":"o1"}"#.to_string(),
        ];
        events.extend((0..N).map(|i| created(&format!("r{i}"), "conversation", "a1")));
        events.extend((0..N).map(|i| deleted(&format!("r{i}"))));
        // Half the rows carry the application's own event id, half rely on the derived one.
        let values: Vec<String> = events
            .iter()
            .enumerate()
            .map(|(i, e)| if i % 2 == 0 { format!("('evt-{i}', {})", lit(e)) } else { format!("(NULL, {})", lit(e)) })
            .collect();
        app.sql(&format!("BEGIN;\nINSERT INTO retention_outbox (event_id, event) VALUES {};\nCOMMIT;", values.join(",\n")));
        let total = events.len() as i64;
        assert_eq!(app.pending().await, total);

        // 1. Crash right after the ledger committed a batch, before the rows left the outbox.
        let (code, logs) = Daemon::start(&cfg, env.dir.path(), Some("outbox_after_apply")).wait(Duration::from_secs(20));
        assert_eq!(code, Some(86), "{logs}");
        assert_eq!(app.pending().await, total, "nothing consumed");
        let l = ledger(&env).await;
        assert_eq!(l.state_counts().await.unwrap().iter().map(|c| c.count).sum::<i64>(), 38, "one batch of 40 applied");

        // 2. Restart; SIGKILL it while it consumes (wherever it is by then).
        let mut d = Daemon::start(&cfg, env.dir.path(), None);
        until("some progress", || async { app.pending().await < total - 80 }).await;
        d.signal("KILL");
        let (code, _) = d.wait(Duration::from_secs(20));
        assert_eq!(code, None, "killed by a signal");

        // 3. Restart and drain.
        let d = Daemon::start(&cfg, env.dir.path(), None);
        until("the outbox drained", || async { app.pending().await == 0 }).await;
        let logs = d.stop();
        assert!(app.dead().await.is_empty(), "a replay was rejected: {:?}\n{logs}", app.dead().await);
        assert_eq!(app.count("SELECT COUNT(*) FROM retention_outbox").await, 0);

        // Exactly once in effect: one creation and one deletion per resource, all deleted.
        let audit = audit_counts(&l).await;
        for i in 0..N {
            let subject = format!("conversation/r{i}");
            assert_eq!(audit.get(&("resource.created".into(), subject.clone())), Some(&1), "{subject}");
            assert_eq!(audit.get(&("resource.deleted".into(), subject.clone())), Some(&1), "{subject}");
            assert_eq!(l.resource(&format!("r{i}")).await.unwrap().unwrap().state.to_string(), "deleted");
        }
        assert_eq!(audit.get(&("account.created".into(), "account/a1".into())), Some(&1));
        assert_eq!(audit.keys().filter(|(a, _)| a == "outbox.dead_lettered").count(), 0);
        let v = retentiond::checkpoint::verify_ledger(&l).await.unwrap();
        assert!(v.ok);
    }
}

/// A source added to the config and reloaded (SIGHUP) starts polling without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_added_on_reload_starts_polling() {
    let env = Env::new(Backend::Sqlite).await;
    let app = App::new(&env, Backend::Sqlite).await;
    let without = env.config_text(&Knobs::default());
    let cfg = env.write_config(&without);
    app.sql(&format!(
        "INSERT INTO retention_outbox (event) VALUES ({});",
        lit(r#"{"type":"org.upsert","org":"o1","plan":"free"}"#)
    ));
    let d = Daemon::start(&cfg, env.dir.path(), None);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(app.pending().await, 1, "no source configured yet");
    config(&env, &app, 500);
    d.signal("HUP");
    until("the reloaded source", || async { app.pending().await == 0 }).await;
    let logs = d.stop();
    assert!(logs.contains("config reloaded"), "{logs}");
    let l = ledger(&env).await;
    assert!(l.org("o1").await.unwrap().is_some());
}

both_backends! {
    /// A row dated further back than `[ingest] dedup_window` is refused (its id may already be
    /// forgotten) and stays refused when requeued; with the window raised and reloaded, the
    /// requeued row applies (the README's advice).
    async fn a_row_older_than_the_dedup_window_is_refused_until_the_window_is_raised(b: Backend) {
        let env = Env::new(b).await;
        let app = App::new(&env, b).await;
        let cfg = config(&env, &app, 500);
        let old = (chrono::Utc::now() - chrono::Duration::days(40))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        app.sql(&format!(
            "INSERT INTO retention_outbox (event) VALUES ({});",
            lit(&format!(r#"{{"type":"org.upsert","org":"o7","plan":"free","at":"{old}"}}"#))
        ));
        let daemon = Daemon::start(&cfg, env.dir.path(), None);
        until("the old row dead-lettered", || async { app.dead().await.len() == 1 }).await;
        let dead = app.dead().await;
        assert!(dead[0].1.contains("dedup_window"), "{dead:?}");
        let l = ledger(&env).await;
        // Requeued as is: refused again.
        app.sql(&format!("UPDATE retention_outbox SET failed_at = NULL, error = NULL WHERE id = {};", dead[0].0));
        until("refused again", || async { app.dead().await.len() == 1 && app.pending().await == 0 }).await;
        assert!(l.org("o7").await.unwrap().is_none());
        // Raise the window, reload, requeue: applied.
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("max_clock_skew = \"5m\"", "max_clock_skew = \"5m\"\ndedup_window = \"60d\"")).unwrap();
        daemon.signal("HUP");
        until("the reload", || async { std::fs::read_to_string(&daemon.log).unwrap_or_default().contains("config reloaded") }).await;
        app.sql(&format!("UPDATE retention_outbox SET failed_at = NULL, error = NULL WHERE id = {};", dead[0].0));
        until("o7 applied", || async { l.org("o7").await.unwrap().is_some() }).await;
        assert!(app.dead().await.is_empty());
        let logs = daemon.stop();
        assert!(!logs.contains("panicked"));
    }
}
