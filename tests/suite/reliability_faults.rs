//! Faults outside retentiond (issue 8): its targets locked, missing, read-only, broken, or
//! refusing a file; its own ledger read-only or out of space; and many CLI processes writing to
//! a SQLite ledger while the daemon sweeps it. Each fault must fail visibly, retry with
//! backoff, leave other targets and kinds going, record nothing as purged that was not, and
//! complete once the fault is gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rel::*;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// `chattr +i` on a path for as long as the guard lives (root ignores permission bits, not the
/// immutable flag).
struct Immutable(PathBuf);

impl Immutable {
    fn set(p: &Path) -> Immutable {
        let s = Command::new("chattr")
            .arg("+i")
            .arg(p)
            .status()
            .expect("chattr");
        assert!(s.success(), "chattr +i {}", p.display());
        Immutable(p.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// The standard config, with agents purged from a second SQL target (`side_db`), immediate
/// graces, and quick retries.
async fn fault_env(b: Backend) -> (Env, PathBuf, PathBuf) {
    let env = Env::new(b).await;
    let side = env.dir.path().join("side.db");
    let mut c = SqliteConnectOptions::from_str(&format!("sqlite://{}", side.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(APP_SCHEMA).execute(&mut c).await.unwrap();
    drop(c);
    let cfg = env.write_config(&fault_config(&env, &side, ""));
    (env, cfg, side)
}

fn fault_config(env: &Env, side: &Path, app_url_suffix: &str) -> String {
    let knobs = Knobs {
        conversation_grace: "0s",
        file_grace: "0s",
        max_attempts: 10,
        retry_backoff: "1s",
        ..Default::default()
    };
    let text = env.config_text(&knobs);
    let app = format!("sqlite://{}", env.app_db.display());
    let text = text
        .replace(
            "[kinds.agent]\ngrace_after_delete = \"30d\"\ntargets = [\"app_db\"]",
            "[kinds.agent]\ngrace_after_delete = \"0s\"\ntargets = [\"side_db\"]",
        )
        .replace("agent = [\"DELETE FROM agents WHERE id = :id\"]\n", "")
        .replace(
            &format!("url = \"{app}\""),
            &format!("url = \"{app}{app_url_suffix}\""),
        );
    format!(
        "{text}\n[targets.side_db]\ntype = \"sql\"\nurl = \"sqlite://{}\"\n[targets.side_db.purge]\nagent = [\"DELETE FROM agents WHERE id = :id\"]\n",
        side.display()
    )
}

async fn side_exec(side: &Path, sql: &str) {
    let mut c = SqliteConnectOptions::from_str(&format!("sqlite://{}", side.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .unwrap();
}

/// c1, c2 (conversations: app_db), f1, f2 (files: app_db + uploads), g1, g2 (agents: side_db),
/// all deleted and due. Agents live in side.db, so the world's presence check does not apply
/// to them: they are checked here.
async fn seed(env: &Env, cfg: &Path, side: &Path) -> Vec<Item> {
    let items: Vec<Item> = [
        ("c1", "conversation"),
        ("c2", "conversation"),
        ("f1", "file"),
        ("f2", "file"),
    ]
    .into_iter()
    .map(|(id, kind)| Item {
        id: id.into(),
        kind,
        account: "a1".into(),
        fate: Fate::Purge,
    })
    .collect();
    let mut events = org_account("o1", "free", "a1") + &write_app_data(env, &items).await;
    for g in ["g1", "g2"] {
        side_exec(
            side,
            &format!("INSERT INTO agents (id, user_id) VALUES ('{g}', 'a1')"),
        )
        .await;
        events.push_str(&(created(g, "agent", "a1") + &deleted(g)));
    }
    ok(&rd_stdin(cfg, &["ingest", "-"], &events));
    items
}

async fn side_agents(side: &Path) -> i64 {
    let mut c = SqliteConnectOptions::from_str(&format!("sqlite://{}", side.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM agents")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// One `sweep --once`: its JSON report and its log.
fn sweep(cfg: &Path) -> (serde_json::Value, String) {
    let o = rd(cfg, &["sweep", "--once", "--json"]);
    (json(&o), stderr(&o))
}

/// The resources' `purge_failed` audit entries: (id, attempt, seconds from failure to retry).
async fn failures(ledger: &retentiond::store::Ledger) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for e in ledger.audit_range(1, i64::MAX, 100_000).await.unwrap() {
        if e.action == "resource.purge_failed" {
            let d: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            let retry =
                retentiond::model::Timestamp::parse_rfc3339(d["retry_at"].as_str().unwrap())
                    .unwrap();
            out.push((
                e.subject.split_once('/').unwrap().1.to_string(),
                d["attempt"].as_i64().unwrap(),
                (retry.millis() - e.at.millis()) as f64 / 1000.0,
            ));
        }
    }
    out
}

/// Sleeps until every failed purge's retry time has passed (backoff ≤ 1.25 s × 2^(attempt-1)).
async fn wait_retry(ledger: &retentiond::store::Ledger) {
    let latest = failures(ledger)
        .await
        .iter()
        .map(|f| f.2)
        .fold(0.0, f64::max);
    std::thread::sleep(Duration::from_secs_f64(latest + 0.2));
}

/// What every fault test checks after a failing sweep: the failed ones are not purged on
/// record, carry the error, were logged with it, and the rest went on.
async fn check_failed(env: &Env, cfg: &Path, log: &str, failed: &[&str], cause: &str) {
    let ledger = open_ledger(env).await;
    let r = receipts(&ledger).await;
    for id in failed {
        let shown = json(&rd(cfg, &["resource", "show", id, "--json"]));
        assert_ne!(shown["state"], "purged", "{id}: {shown}");
        assert!(!r.contains_key(*id), "{id} has a receipt");
        let line = log
            .lines()
            .find(|l| l.contains("purge failed; will retry") && l.contains(&format!("id={id} ")))
            .unwrap_or_else(|| panic!("no retry line for {id}:\n{log}"));
        assert!(
            line.contains(cause),
            "the log line names the cause `{cause}`: {line}"
        );
        assert!(line.contains("retry_at="), "{line}");
    }
}

fn fault_report(what: &str, failed: usize, purged: usize, t: Tally) {
    report(
        "fault",
        format!(
            "{what}: {failed} purge(s) failed and retried, {purged} went on meanwhile, all purged once after the fix; data lost {}, early {}",
            t.data_lost, t.early
        ),
    );
}

// ---- SQL target faults -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_application_database_is_retried_and_other_targets_go_on() {
    let (env, cfg, side) = fault_env(Backend::Sqlite).await;
    let items = seed(&env, &cfg, &side).await;
    // Another writer holds app.db's write lock for the whole first sweep.
    let mut locker = env.app().await;
    sqlx::raw_sql("BEGIN IMMEDIATE; UPDATE users SET name = name")
        .execute(&mut locker)
        .await
        .unwrap();
    let cfg2 = cfg.clone();
    let sweeping = std::thread::spawn(move || sweep(&cfg2));
    // Meanwhile, the CLI must not be locked out of the ledger for long (a sweep holds the
    // ledger's write lock while it runs its targets).
    std::thread::sleep(Duration::from_millis(500));
    let o = rd_stdin(
        &cfg,
        &["ingest", "-"],
        &created("late", "conversation", "a1"),
    );
    ok(&o);
    let (report, log) = sweeping.join().unwrap();
    assert_eq!(
        report["purged"], 2,
        "the agents on side_db went on: {report}\n{log}"
    );
    assert_eq!(side_agents(&side).await, 0);
    check_failed(
        &env,
        &cfg,
        &log,
        &["c1", "c2", "f1", "f2"],
        "database is locked",
    )
    .await;
    assert_eq!(
        env.app_count("SELECT COUNT(*) FROM messages").await,
        4,
        "nothing deleted under the lock"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    drop(locker);

    let ledger = open_ledger(&env).await;
    wait_retry(&ledger).await;
    let (report, log) = sweep(&cfg);
    assert_eq!(report["purged"], 4, "{report}\n{log}");
    let t = check_world(&env, &ledger, &items, 2).await;
    fault_report("SQL target locked by another writer", 4, 2, t);
}

both_backends! {
    async fn a_missing_application_database_is_retried_with_growing_backoff(b: Backend) {
        let (env, cfg, side) = fault_env(b).await;
        let items = seed(&env, &cfg, &side).await;
        let away = env.dir.path().join("app.db.away");
        std::fs::rename(&env.app_db, &away).unwrap();
        let (report, log) = sweep(&cfg);
        assert_eq!(report["purged"], 2, "{report}\n{log}");
        assert_eq!(report["failed"], 4);
        check_failed(&env, &cfg, &log, &["c1", "c2", "f1", "f2"], "unable to open database file").await;
        assert!(!env.app_db.exists(), "the target database is not created empty");
        let ledger = open_ledger(&env).await;
        wait_retry(&ledger).await;
        let (report, _) = sweep(&cfg);
        assert_eq!(report["failed"], 4, "still missing");
        // Backoff grows: the second failure waits longer than the first (1s and 2s, ±25%).
        let f = failures(&ledger).await;
        for id in ["c1", "f2"] {
            let mine: Vec<&(String, i64, f64)> = f.iter().filter(|x| x.0 == id).collect();
            assert_eq!(mine.len(), 2);
            assert_eq!((mine[0].1, mine[1].1), (1, 2));
            assert!(mine[1].2 > mine[0].2, "backoff grows: {mine:?}");
        }
        std::fs::rename(&away, &env.app_db).unwrap();
        wait_retry(&ledger).await;
        let (report, log) = sweep(&cfg);
        assert_eq!(report["purged"], 4, "{report}\n{log}");
        let t = check_world(&env, &ledger, &items, 2).await;
        fault_report(&format!("{b:?} ledger: SQL target database missing (2 sweeps)"), 4, 2, t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_application_database_is_retried() {
    let (env, cfg, side) = fault_env(Backend::Sqlite).await;
    let items = seed(&env, &cfg, &side).await;
    let ledger = open_ledger(&env).await;
    // Opened read-only by its URL.
    std::fs::write(&cfg, fault_config(&env, &side, "?mode=ro")).unwrap();
    let (report, log) = sweep(&cfg);
    assert_eq!(report["purged"], 2, "{report}\n{log}");
    check_failed(
        &env,
        &cfg,
        &log,
        &["c1", "c2", "f1", "f2"],
        "readonly database",
    )
    .await;
    assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 4);
    // Made immutable on disk (root ignores permission bits).
    std::fs::write(&cfg, fault_config(&env, &side, "")).unwrap();
    {
        let _guard = Immutable::set(&env.app_db);
        wait_retry(&ledger).await;
        let (report, log) = sweep(&cfg);
        assert_eq!(report["failed"], 4, "{report}\n{log}");
        check_failed(&env, &cfg, &log, &["c1", "c2"], "readonly database").await;
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 4);
    }
    wait_retry(&ledger).await;
    let (report, log) = sweep(&cfg);
    assert_eq!(report["purged"], 4, "{report}\n{log}");
    let t = check_world(&env, &ledger, &items, 2).await;
    fault_report("SQL target read-only (?mode=ro, then chattr +i)", 8, 2, t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_error_fails_that_kind_only() {
    let (env, cfg, side) = fault_env(Backend::Sqlite).await;
    let items = seed(&env, &cfg, &side).await;
    side_exec(&side, "ALTER TABLE agents RENAME TO agents_old").await;
    let (report, log) = sweep(&cfg);
    assert_eq!(
        report["purged"], 4,
        "conversations and files went on: {report}\n{log}"
    );
    check_failed(&env, &cfg, &log, &["g1", "g2"], "no such table: agents").await;
    side_exec(&side, "ALTER TABLE agents_old RENAME TO agents").await;
    assert_eq!(side_agents(&side).await, 2);
    let ledger = open_ledger(&env).await;
    wait_retry(&ledger).await;
    let (report, log) = sweep(&cfg);
    assert_eq!(report["purged"], 2, "{report}\n{log}");
    assert_eq!(side_agents(&side).await, 0);
    let t = check_world(&env, &ledger, &items, 2).await;
    fault_report("SQL statement error (table renamed away)", 2, 4, t);
}

// ---- file target faults ----------------------------------------------------------------------

both_backends! {
    async fn file_target_permission_denied_and_a_directory_in_place_of_a_file(b: Backend) {
        let (env, cfg, side) = fault_env(b).await;
        let items = seed(&env, &cfg, &side).await;
        let f1 = env.upload("a1", "f1");
        let f2 = env.upload("a1", "f2");
        std::fs::remove_file(&f2).unwrap();
        std::fs::create_dir(&f2).unwrap();
        std::fs::write(f2.join("inside"), b"not the resource's").unwrap();
        let ledger = open_ledger(&env).await;
        {
            let _guard = Immutable::set(&f1);
            let (report, log) = sweep(&cfg);
            assert_eq!(report["purged"], 4, "conversations and agents went on: {report}\n{log}");
            check_failed(&env, &cfg, &log, &["f1"], "Operation not permitted").await;
            check_failed(&env, &cfg, &log, &["f2"], "is a directory").await;
            assert!(exists(&f1));
            assert!(f2.join("inside").exists(), "a directory in the file's place is not removed");
        }
        std::fs::remove_dir_all(&f2).unwrap();
        wait_retry(&ledger).await;
        let (report, log) = sweep(&cfg);
        assert_eq!(report["purged"], 2, "{report}\n{log}");
        let t = check_world(&env, &ledger, &items, 2).await;
        fault_report(&format!("{b:?} ledger: file target EPERM (chattr +i) and a directory at the path"), 2, 4, t);
    }
}

// ---- the ledger itself: out of space, read-only ------------------------------------------------

/// Runs retentiond with writes past `kib` KiB failing (EFBIG), as on a full disk.
fn rd_limited(cfg: &Path, kib: u64, args: &str, stdin: Option<&str>) -> std::process::Output {
    let script = format!(
        "trap '' XFSZ; ulimit -f {kib}; exec '{}' --config '{}' {args}",
        env!("CARGO_BIN_EXE_retentiond"),
        cfg.display()
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    use std::io::Write;
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or("").to_string();
    let mut w = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn ledger_size(env: &Env) -> u64 {
    let db = env.dir.path().join("ledger.db");
    ["", "-wal"]
        .iter()
        .map(|s| std::fs::metadata(format!("{}{s}", db.display())).map_or(0, |m| m.len()))
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_ingest_and_sweep_cleanly_and_both_succeed_once_space_is_back() {
    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs {
        conversation_grace: "0s",
        lease: "1s",
        ..Default::default()
    }));
    let items: Vec<Item> = (0..400)
        .map(|i| Item {
            id: format!("c{i}"),
            kind: "conversation",
            account: "a1".into(),
            fate: Fate::Purge,
        })
        .collect();
    let events = org_account("o1", "free", "a1") + &write_app_data(&env, &items).await;
    ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
    let ledger = open_ledger(&env).await;
    let head = ledger.audit_head().await.unwrap();
    let counts = json(&rd(&cfg, &["status", "--json"]))["resources"].clone();

    // Ingest: a large input the ledger has no room for.
    let mut more = String::new();
    for i in 0..5_000 {
        more.push_str(&created(&format!("big{i}"), "conversation", "a1"));
    }
    let limit = ledger_size(&env) / 1024 + 64;
    let o = rd_limited(&cfg, limit, "ingest -", Some(&more));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("disk is full") || err.contains("file size limited"),
        "the error names the problem: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(ledger.audit_head().await.unwrap(), head, "nothing appended");
    assert_eq!(
        json(&rd(&cfg, &["status", "--json"]))["resources"],
        counts,
        "counts unchanged"
    );
    audit_verify(&cfg);

    // Sweep: 400 due; the ledger cannot record them. A fixed 64 KiB: the WAL restarts from its
    // start, so a limit above the files' sizes measured only the schema's size (a larger
    // schema once left room for the whole sweep), while 400 receipts need several times this.
    let limit = 64;
    let o = rd_limited(&cfg, limit, "sweep --once", None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("disk is full") || err.contains("file size limited"),
        "the error names the problem: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        receipts(&ledger).await.is_empty(),
        "nothing recorded as purged"
    );
    audit_verify(&cfg);

    // Space is back.
    let r = json(&rd_stdin(&cfg, &["ingest", "-", "--json"], &more));
    assert_eq!(r["applied"], 5_000);
    std::thread::sleep(Duration::from_millis(1100));
    let mut purged = 0;
    let t0 = Instant::now();
    while purged < 400 && t0.elapsed() < Duration::from_secs(20) {
        purged += json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"]
            .as_i64()
            .unwrap();
        if purged < 400 {
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    let t = check_world(&env, &ledger, &items, 0).await;
    audit_verify(&cfg);
    report(
        "fault",
        format!(
            "ledger disk full (ulimit -f, EFBIG): ingest of 5,000 and sweep of 400 exit 1 naming it, ledger unchanged; afterwards all applied and {} purged once; data lost {}, early {}",
            t.purged, t.data_lost, t.early
        ),
    );
}

both_backends! {
    async fn a_read_only_ledger_fails_writes_cleanly(b: Backend) {
        let env = Env::new(b).await;
        let knobs = Knobs { conversation_grace: "0s", ..Default::default() };
        let cfg = env.write_config(&env.config_text(&knobs));
        let items: Vec<Item> = (0..5)
            .map(|i| Item { id: format!("c{i}"), kind: "conversation", account: "a1".into(), fate: Fate::Purge })
            .collect();
        let events = org_account("o1", "free", "a1") + &write_app_data(&env, &items).await;
        ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
        let counts = json(&rd(&cfg, &["status", "--json"]))["resources"].clone();

        let ro_url = match b {
            Backend::Sqlite => format!("{}?mode=ro", env.ledger_url),
            Backend::Postgres => format!("{}&options[default_transaction_read_only]=on", env.ledger_url),
        };
        let ro_cfg = env.dir.path().join("ro.toml");
        std::fs::write(&ro_cfg, env.config_text(&knobs).replace(&env.ledger_url, &ro_url)).unwrap();
        let mut faults = vec![("url", ro_cfg.clone(), None)];
        if b == Backend::Sqlite {
            faults.push(("chattr +i", cfg.clone(), Some(env.dir.path().join("ledger.db"))));
        }
        for (how, c, immutable) in faults {
            let _guard = immutable.as_deref().map(Immutable::set);
            for (args, input) in [
                (&["ingest", "-"][..], Some(created("c9", "conversation", "a1"))),
                (&["sweep", "--once"][..], None),
                (&["hold", "place", "--case", "K", "--by", "x", "--account", "a1"][..], None),
            ] {
                let o = match &input {
                    Some(i) => rd_stdin(&c, args, i),
                    None => rd(&c, args),
                };
                assert_eq!(o.status.code(), Some(1), "{how} {args:?}: {}", text(&o));
                let err = stderr(&o);
                assert!(
                    err.contains("readonly database") || err.contains("read-only transaction"),
                    "{how} {args:?}: the error names the problem: {err}"
                );
                assert!(!err.contains("panicked"));
            }
            // Reads still work on a read-only ledger.
            let o = rd(&c, &["status", "--json"]);
            assert_eq!(json(&o)["resources"], counts, "{how}");
        }
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 10, "no target touched");
        audit_verify(&cfg);
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 5);
        let t = check_world(&env, &open_ledger(&env).await, &items, 0).await;
        report("fault", format!("{b:?} ledger read-only: ingest, sweep, hold place exit 1 naming it; reads work; data lost {}, early {}", t.data_lost, t.early));
    }
}

// ---- concurrent CLI while the daemon runs ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cli_writers_and_readers_against_a_live_daemon_on_sqlite() {
    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs {
        conversation_grace: "0s",
        batch_size: 50,
        sweep: "*/1 * * * * *",
        ..Default::default()
    }));
    // A due backlog keeps the daemon's sweeps busy while the CLI runs.
    let mut items: Vec<Item> = (0..1_500)
        .map(|i| Item {
            id: format!("b{i}"),
            kind: "conversation",
            account: "a1".into(),
            fate: Fate::Purge,
        })
        .collect();
    let mut held_accounts = String::new();
    for h in 0..6 {
        held_accounts.push_str(&org_account("o1", "free", &format!("h{h}")));
    }
    let events =
        org_account("o1", "free", "a1") + &held_accounts + &write_app_data(&env, &items).await;
    ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
    // The application rows of what the writers will ingest (every other one deleted at once).
    let mut written = Vec::new();
    for w in 0..3 {
        for n in 0..12 {
            for k in 0..10 {
                written.push(Item {
                    id: format!("w{w}-{n}-{k}"),
                    kind: "conversation",
                    account: "a1".into(),
                    fate: if k % 2 == 0 {
                        Fate::Purge
                    } else {
                        Fate::NotDue
                    },
                });
            }
        }
    }
    write_app_data(&env, &written).await;
    let daemon = Daemon::start(&cfg, &[]);

    let mut threads = Vec::new();
    // Writers: ingest new resources (due at once, so the daemon races them).
    for w in 0..3 {
        let cfg = cfg.clone();
        threads.push(std::thread::spawn(move || {
            let mut outs = Vec::new();
            for n in 0..12 {
                let mut ev = String::new();
                for k in 0..10 {
                    let id = format!("w{w}-{n}-{k}");
                    ev.push_str(&created(&id, "conversation", "a1"));
                    if k % 2 == 0 {
                        ev.push_str(&deleted(&id));
                    }
                }
                outs.push(("ingest", rd_stdin(&cfg, &["ingest", "-"], &ev)));
            }
            outs
        }));
    }
    // Legal: holds on accounts whose resources are due right now.
    {
        let cfg = cfg.clone();
        threads.push(std::thread::spawn(move || {
            (0..6)
                .flat_map(|h| {
                    let ev = format!(
                        "{}{}",
                        created(&format!("hr{h}"), "conversation", &format!("h{h}")),
                        deleted(&format!("hr{h}"))
                    );
                    let o1 = rd_stdin(&cfg, &["ingest", "-"], &ev);
                    let o2 = rd(
                        &cfg,
                        &[
                            "hold",
                            "place",
                            "--case",
                            "K",
                            "--by",
                            "legal",
                            "--account",
                            &format!("h{h}"),
                            "--json",
                        ],
                    );
                    vec![("ingest", o1), ("hold", o2)]
                })
                .collect::<Vec<_>>()
        }));
    }
    // Readers.
    for _ in 0..2 {
        let cfg = cfg.clone();
        threads.push(std::thread::spawn(move || {
            (0..15)
                .map(|_| ("status", rd(&cfg, &["status", "--json"])))
                .collect::<Vec<_>>()
        }));
    }
    let mut outs = Vec::new();
    for t in threads {
        outs.extend(t.join().unwrap());
    }
    let mut held_already = 0;
    for (what, o) in &outs {
        let err = stderr(o);
        assert!(o.status.success(), "{what}: {}", text(o));
        assert!(
            !err.contains("locked") && !err.contains("busy"),
            "{what}: {err}"
        );
        if *what == "hold" {
            held_already += json(o)["already_purged"].as_i64().unwrap();
        }
    }
    // Everything ingested is on record; the daemon drains the rest.
    let ledger = open_ledger(&env).await;
    for it in &written {
        let r = ledger
            .resource(&it.id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("lost write {}", it.id));
        assert_eq!(r.deleted_at.is_some(), it.fate == Fate::Purge, "{}", it.id);
    }
    items.extend(written);
    assert_eq!(
        json(&rd(&cfg, &["hold", "list", "--json"]))["holds"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let due = items.iter().filter(|i| i.fate == Fate::Purge).count() as i64;
    assert!(wait_until(Duration::from_secs(60), || {
        let s = json(&rd(&cfg, &["status", "--json"]));
        s["resources"]["purged"].as_i64().unwrap_or(0) >= due + held_already
    }));
    let log = daemon.stop();
    assert!(!log.contains("database is locked"), "{log}");
    // The held accounts' resources: purged only if purged before the hold took effect.
    let ledger = open_ledger(&env).await;
    let r = receipts(&ledger).await;
    let held_purged = (0..6).filter(|h| r.contains_key(&format!("hr{h}"))).count() as i64;
    assert_eq!(held_purged, held_already, "purged under a hold");
    let t = check_world(&env, &ledger, &items, held_purged as usize).await;
    report(
        "concurrency",
        format!(
            "{} CLI processes (ingest, hold place, status) against a live daemon: 0 failures, 0 'database is locked', 0 lost writes; {} purged once; data lost {}, early {}",
            outs.len(),
            t.purged,
            t.data_lost,
            t.early
        ),
    );
}
