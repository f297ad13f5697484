//! Issue 22, through the built binary: the policy guard counts every shortening into the next
//! 24 hours, URLs never show their secrets and may come from a file, `--json` errors are JSON,
//! event ids are remembered for `ingest.dedup_window` (older replays refused), and a reload
//! tells systemd `RELOADING=1` … `READY=1`.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::*;
use crate::rel::{Daemon, rd, rd_stdin, signal, wait_until};
use serde_json::Value;
use sqlx::Connection;

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(o)))
}

fn now_rfc3339(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---- 1. the policy guard --------------------------------------------------------------------

/// Five conversations deleted a moment ago under a short grace `from`; returns the env, the
/// knobs (guard at 3) and the config path.
async fn five_deleted(b: Backend, from: &'static str) -> (Env, Knobs, PathBuf) {
    let env = Env::new(b).await;
    let knobs = Knobs {
        conversation_grace: from,
        max_newly_due: 3,
        sweep: "* * * * * *",
        ..Default::default()
    };
    let cfg = env.write_config(&env.config_text(&knobs));
    let mut events = org_account("o1", "free", "a1");
    for i in 0..5 {
        env.seed_conversation(&format!("c{i}"), "a1", 2).await;
        events.push_str(&created(&format!("c{i}"), "conversation", "a1"));
        events.push_str(&deleted(&format!("c{i}")));
    }
    ok(rd_stdin(&cfg, &["ingest", "-"], &events));
    (env, knobs, cfg)
}

/// The guard held the change back with all five counted, and nothing was purged.
async fn held_back_with_five(env: &Env, cfg: &Path, log: &str) {
    assert!(
        log.contains("policy change held back") && log.contains("newly_due=5"),
        "no held-back line counting 5:\n{log}"
    );
    let show = json_out(&ok(rd(cfg, &["--json", "policy", "show"])));
    assert_eq!(
        show["pending_newly_due"]["conversation"], 5,
        "policy show: {show}"
    );
    assert!(!show["pending"].is_null(), "{show}");
    assert_eq!(
        env.app_count("SELECT COUNT(*) FROM conversations").await,
        5,
        "a guarded change purged"
    );
}

both_backends! {
    async fn shortening_a_short_grace_is_guarded_with_sweep_once(b: Backend) {
        // 12 hours → 0 s: every item was already due within 24 h, and now all are due at once.
        let (env, knobs, cfg) = five_deleted(b, "12h").await;
        let cfg2 = env.write_config(&env.config_text(&Knobs { conversation_grace: "0s", ..knobs }));
        assert_eq!(cfg, cfg2);
        let o = ok(rd(&cfg, &["sweep", "--once"]));
        held_back_with_five(&env, &cfg, &text(&o)).await;
        let r = json_out(&ok(rd(&cfg, &["--json", "resource", "show", "c0"])));
        assert_eq!(r["state"], "deleted", "{r}");
        // Accepted, it applies: the next sweep purges them.
        ok(rd(&cfg, &["policy", "accept", "--by", "test"]));
        ok(rd(&cfg, &["sweep", "--once"]));
        assert_eq!(env.app_count("SELECT COUNT(*) FROM conversations").await, 0);
    }
}

both_backends! {
    async fn shortening_minutes_to_seconds_is_guarded_at_daemon_start(b: Backend) {
        let (env, knobs, cfg) = five_deleted(b, "30m").await;
        env.write_config(&env.config_text(&Knobs { conversation_grace: "1s", ..knobs }));
        let d = Daemon::start(&cfg, &[]);
        assert!(wait_until(Duration::from_secs(30), || d.log().contains("retentiond started")), "{}", d.log());
        // Past the 1 s grace, a few sweeps later: still there.
        std::thread::sleep(Duration::from_secs(3));
        let log = d.stop();
        held_back_with_five(&env, &cfg, &log).await;
    }
}

both_backends! {
    async fn shortening_hours_to_seconds_is_guarded_on_sighup(b: Backend) {
        let (env, knobs, cfg) = five_deleted(b, "2h").await;
        let d = Daemon::start(&cfg, &[]);
        assert!(wait_until(Duration::from_secs(30), || d.log().contains("retentiond started")), "{}", d.log());
        env.write_config(&env.config_text(&Knobs { conversation_grace: "2s", ..knobs }));
        signal(d.child.id(), "HUP");
        assert!(wait_until(Duration::from_secs(30), || d.log().contains("policy change held back")), "{}", d.log());
        std::thread::sleep(Duration::from_secs(3));
        let log = d.stop();
        held_back_with_five(&env, &cfg, &log).await;
    }
}

both_backends! {
    async fn shortening_a_short_account_grace_is_guarded_with_sweep_once(b: Backend) {
        // Five accounts asked to be deleted under a 6 h grace; "0s" would erase them all now.
        let env = Env::new(b).await;
        let knobs = Knobs { account_grace: "6h", max_newly_due: 3, ..Default::default() };
        let cfg = env.write_config(&env.config_text(&knobs));
        let mut events = String::new();
        for i in 0..5 {
            env.seed_user(&format!("a{i}")).await;
            events.push_str(&org_account("o1", "free", &format!("a{i}")));
            events.push_str(&account_deleted(&format!("a{i}")));
        }
        ok(rd_stdin(&cfg, &["ingest", "-"], &events));
        env.write_config(&env.config_text(&Knobs { account_grace: "0s", ..knobs }));
        let log = text(&ok(rd(&cfg, &["sweep", "--once"])));
        assert!(
            log.contains("policy change held back") && log.contains("newly_due=5"),
            "no held-back line counting 5:\n{log}"
        );
        let show = json_out(&ok(rd(&cfg, &["--json", "policy", "show"])));
        assert_eq!(show["pending_newly_due"]["(accounts)"], 5, "policy show: {show}");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users").await, 5, "a guarded change purged");
        ok(rd(&cfg, &["policy", "accept", "--by", "test"]));
        ok(rd(&cfg, &["sweep", "--once"]));
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users").await, 0);
    }
}

both_backends! {
    async fn shortening_a_short_max_age_is_guarded_in_the_daemon(b: Backend) {
        // Five API logs written now under a 20 h max_age; "1s" would purge them at the next sweep.
        let env = Env::new(b).await;
        let knobs = Knobs {
            api_log_max_age: "20h",
            max_newly_due: 3,
            sweep: "* * * * * *",
            ..Default::default()
        };
        let cfg = env.write_config(&env.config_text(&knobs));
        let mut events = org_account("o1", "free", "a1");
        for i in 0..5 {
            env.seed_api_log(&format!("l{i}"), "a1", "/v1/files").await;
            events.push_str(&created_log(&format!("l{i}"), "a1", "/v1/files"));
        }
        ok(rd_stdin(&cfg, &["ingest", "-"], &events));
        env.write_config(&env.config_text(&Knobs { api_log_max_age: "1s", ..knobs }));
        let d = Daemon::start(&cfg, &[]);
        assert!(wait_until(Duration::from_secs(30), || d.log().contains("retentiond started")), "{}", d.log());
        std::thread::sleep(Duration::from_secs(3));
        let log = d.stop();
        assert!(
            log.contains("policy change held back") && log.contains("newly_due=5"),
            "no held-back line counting 5:\n{log}"
        );
        let show = json_out(&ok(rd(&cfg, &["--json", "policy", "show"])));
        assert_eq!(show["pending_newly_due"]["api_log"], 5, "policy show: {show}");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM api_logs").await, 5, "a guarded change purged");
    }
}

// ---- 2. secrets in URLs, and url_file --------------------------------------------------------

/// `check-config` (text and `--json`) with `[targets.app_db] url = URL`.
fn check_with_target_url(env: &Env, url: &str) -> (Output, Output) {
    let text = env.config_text(&Knobs::default()).replacen(
        &format!("url = \"sqlite://{}\"", env.app_db.display()),
        &format!("url = \"{url}\""),
        1,
    );
    assert!(text.contains(url), "target url not replaced");
    let cfg = env.write_config(&text);
    (
        rd(&cfg, &["check-config"]),
        rd(&cfg, &["--json", "check-config"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_form_of_url_secret_reaches_the_output() {
    let env = Env::new(Backend::Sqlite).await;
    for (url, secret, shown) in [
        (
            "postgres://app:p@ss@db.internal/app",
            "ss@",
            "postgres://app:***@db.internal/app",
        ),
        (
            "postgres://app:hunter%40two@db.internal/app",
            "hunter",
            "postgres://app:***@db.internal/app",
        ),
        (
            "postgresql://:s3cretpw@db.internal/app",
            "s3cretpw",
            "postgresql://:***@db.internal/app",
        ),
        (
            "postgres://db.internal/app?user=app&password=s3cretpw",
            "s3cretpw",
            "postgres://db.internal/app?user=app&password=***",
        ),
    ] {
        let (plain, json) = check_with_target_url(&env, url);
        for o in [&plain, &json] {
            assert!(o.status.success(), "{url}: {}", text(o));
            assert!(!text(o).contains(secret), "{url} leaked: {}", text(o));
        }
        assert!(text(&plain).contains(shown), "{url}: {}", text(&plain));
    }
    // A parameter sqlx does not know would be logged by sqlx with its value: refused, named.
    let (plain, _) =
        check_with_target_url(&env, "postgres://app@db.internal/app?sslpassword=s3cretpw");
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain));
    assert!(
        text(&plain).contains("targets.app_db.url") && text(&plain).contains("sslpassword"),
        "{}",
        text(&plain)
    );
    assert!(!text(&plain).contains("s3cretpw"), "{}", text(&plain));
}

both_backends! {
    async fn urls_can_come_from_files(b: Backend) {
        let env = Env::new(b).await;
        let secrets = env.dir.path().join("creds");
        std::fs::create_dir_all(&secrets).unwrap();
        let ledger_file = secrets.join("ledger-url");
        let app_file = secrets.join("app-url");
        // As `systemd-creds` or an editor writes them: with a trailing newline.
        std::fs::write(&ledger_file, format!("{}\n", env.ledger_url)).unwrap();
        std::fs::write(&app_file, format!("sqlite://{}\n", env.app_db.display())).unwrap();
        let toml = env
            .config_text(&Knobs { conversation_grace: "0s", ..Default::default() })
            .replacen(&format!("url = \"{}\"", env.ledger_url), &format!("url_file = \"{}\"", ledger_file.display()), 1)
            .replacen(&format!("url = \"sqlite://{}\"", env.app_db.display()), &format!("url_file = \"{}\"", app_file.display()), 1);
        assert_eq!(toml.matches("url_file").count(), 2);
        let cfg = env.write_config(&toml);
        ok(rd(&cfg, &["check-config"]));
        env.seed_conversation("c1", "a1", 2).await;
        let events = org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &deleted("c1");
        ok(rd_stdin(&cfg, &["ingest", "-"], &events));
        ok(rd(&cfg, &["sweep", "--once"]));
        assert_eq!(env.app_count("SELECT COUNT(*) FROM conversations").await, 0);
        // A file that is not there: exit 2, the key named.
        std::fs::remove_file(&app_file).unwrap();
        let o = rd(&cfg, &["check-config"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("targets.app_db.url_file"), "{}", text(&o));
    }
}

// ---- 5. JSON errors --------------------------------------------------------------------------

#[test]
fn a_json_error_with_quotes_and_newlines_is_valid_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[database]\nurl = \"sqlite:///tmp/x.db\"\n[scheduler]\nsweep = \"say \\\"hi\\\"\\nthere\"\n",
    )
    .unwrap();
    let o = rd(&cfg, &["--json", "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v = json_out(&o);
    let e = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string: {v}"));
    assert!(
        e.contains("scheduler.sweep") && e.contains("say \"hi\"\nthere"),
        "{e}"
    );
}

// ---- 6. the dedup window ---------------------------------------------------------------------

/// One number from the ledger database, by the backend's own SQL.
async fn ledger_i64(env: &Env, sqlite: &str, postgres: &str) -> i64 {
    match env.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&env.ledger_url)
                .await
                .unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sqlite.to_string()))
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&env.ledger_url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(postgres.to_string()))
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

async fn applied_events(env: &Env) -> i64 {
    let q = "SELECT COUNT(*) FROM applied_events";
    ledger_i64(env, q, q).await
}

both_backends! {
    async fn event_ids_are_remembered_for_the_dedup_window_and_older_replays_refused(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs::default()));
        let line = |id: &str, at: &str| format!(
            "{{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"free\",\"event_id\":\"{id}\",\"at\":\"{at}\"}}\n"
        );
        // Inside the default 30 days: applied once, then a no-op.
        let recent = line("e-29d", &now_rfc3339(-29 * 86_400));
        let r = json_out(&ok(rd_stdin(&cfg, &["--json", "ingest", "-"], &recent)));
        assert_eq!(r["applied"], 1, "{r}");
        let r = json_out(&ok(rd_stdin(&cfg, &["--json", "ingest", "-"], &recent)));
        assert_eq!(r["duplicates"], 1, "{r}");
        // Older: refused, whole batch, with the reason.
        let old = line("e-31d", &now_rfc3339(-31 * 86_400));
        let o = rd_stdin(&cfg, &["ingest", "-"], &old);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("ingest.dedup_window"), "{}", text(&o));
        assert_eq!(applied_events(&env).await, 1);
        // The ids are found by time: the index exists.
        let indexed = ledger_i64(
            &env,
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'applied_events_event_at'",
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'applied_events_event_at' AND schemaname = current_schema()",
        )
        .await;
        assert_eq!(indexed, 1, "applied_events has no event_at index");

        // The daemon forgets ids once their event is older than the window; a replay after
        // that is refused, never applied a second time.
        let text3 = env.config_text(&Knobs::default()).replace("max_clock_skew = \"5m\"", "max_clock_skew = \"5m\"\ndedup_window = \"3s\"");
        let cfg = env.write_config(&text3);
        let fresh = line("e-now", &now_rfc3339(0));
        ok(rd_stdin(&cfg, &["ingest", "-"], &fresh));
        let d = Daemon::start(&cfg, &[]);
        let mut left = -1;
        for _ in 0..100 {
            left = applied_events(&env).await;
            if left == 0 { break; }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = d.stop();
        assert_eq!(left, 0, "ids not forgotten:\n{log}");
        assert!(log.contains("older than ingest.dedup_window forgotten"), "{log}");
        let o = rd_stdin(&cfg, &["ingest", "-"], &fresh);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("ingest.dedup_window"), "{}", text(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_dedup_window_is_a_config_error() {
    let env = Env::new(Backend::Sqlite).await;
    let toml = env.config_text(&Knobs::default()).replace(
        "max_clock_skew = \"5m\"",
        "max_clock_skew = \"5m\"\ndedup_window = \"0s\"",
    );
    let cfg = env.write_config(&toml);
    let o = rd(&cfg, &["check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("ingest.dedup_window"), "{}", text(&o));
}

// ---- 4. reload tells systemd ------------------------------------------------------------------

/// The `sd_notify` messages a daemon sent to the socket so far.
fn drain(sock: &UnixDatagram, into: &mut Vec<String>) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = sock.recv(&mut buf) {
        into.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
}

fn wait_for(sock: &UnixDatagram, got: &mut Vec<String>, from: usize, what: &str) -> usize {
    let found = wait_until(Duration::from_secs(30), || {
        drain(sock, got);
        got[from..].iter().any(|m| m.lines().any(|l| l == what))
    });
    assert!(found, "no {what} after message {from}: {got:?}");
    from + got[from..]
        .iter()
        .position(|m| m.lines().any(|l| l == what))
        .unwrap()
}

both_backends! {
    async fn a_reload_says_reloading_then_ready(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs::default()));
        let path = env.dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let d = Daemon::start(&cfg, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
        let mut got = Vec::new();
        // Start-up asks for time before it is ready.
        let ready = wait_for(&sock, &mut got, 0, "READY=1");
        assert!(got[..ready].iter().any(|m| m.contains("EXTEND_TIMEOUT_USEC=")), "{got:?}");
        for bad in [false, true] {
            if bad {
                std::fs::write(&cfg, "[database]\nurl = 42\n").unwrap();
                // ExecReload= runs this first: systemctl reload fails and sends no signal.
                let o = rd(&cfg, &["check-config"]);
                assert_eq!(o.status.code(), Some(2), "{}", text(&o));
            } else {
                env.write_config(&env.config_text(&Knobs { conversation_grace: "40d", ..Default::default() }));
            }
            let before = got.len();
            signal(d.child.id(), "HUP");
            let reloading = wait_for(&sock, &mut got, before, "RELOADING=1");
            assert!(got[reloading].lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{got:?}");
            let ready = wait_for(&sock, &mut got, reloading, "READY=1");
            let status = got[ready].lines().find(|l| l.starts_with("STATUS=")).unwrap_or_default().to_string();
            assert_eq!(status.contains("reload failed"), bad, "{got:?}");
        }
        d.stop();
    }
}
