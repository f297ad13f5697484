//! End-to-end: the built `retentiond` binary, real config files, real events, real sleeps where
//! the issue asks for wall-clock behaviour (a 2 s grace), real files and databases.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rel::{bin, json, ok, rd, rd_stdin, stderr};

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

both_backends! {
    async fn the_binary_honours_a_two_second_grace(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs { conversation_grace: "2s", file_grace: "2s", ..Default::default() }));
        env.seed_conversation("c1", "a1", 3).await;
        let upload = env.seed_file("f1", "a1").await;
        ok(&rd_stdin(&cfg, &["ingest", "-"], &(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &created("f1", "file", "a1"))));
        let events = env.dir.path().join("delete.ndjson");
        std::fs::write(&events, deleted("c1") + &deleted("f1")).unwrap();
        ok(&rd(&cfg, &["ingest", events.to_str().unwrap()]));
        let deleted_at = Instant::now();

        sleep_until(deleted_at + Duration::from_secs(1));
        let first = rd(&cfg, &["sweep", "--once"]);
        ok(&first);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 3, "still there 1s after deletion");
        assert!(exists(&upload));

        sleep_until(deleted_at + Duration::from_secs(3));
        let second = rd(&cfg, &["sweep", "--once", "--json"]);
        let report = json(&second);
        assert_eq!(report["purged"], 2);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM conversations").await, 0);
        assert!(!exists(&upload));
        let shown = json(&rd(&cfg, &["resource", "show", "c1", "--json"]));
        assert_eq!(shown["state"], "purged");
        assert_eq!(shown["cause"], "manual");
        for field in ["id", "kind", "account", "state", "cause", "deleted_at", "purge_after", "holds"] {
            assert!(shown.get(field).is_some(), "resource show --json lacks {field}");
        }
        let logs = stderr(&first) + &stderr(&second);
        let purge_lines: Vec<&str> = logs.lines().filter(|l| l.contains(" purged ") && l.contains("id=c1")).collect();
        assert_eq!(purge_lines.len(), 1, "one purge line for c1:\n{logs}");
        let line = purge_lines[0];
        for field in ["kind=conversation", "account=a1", "cause=manual", "deleted_at=", "grace=", "targets=app_db:4r/0f", "rows=4"] {
            assert!(line.contains(field), "purge line lacks {field}: {line}");
        }
        assert!(!logs.contains("message 0 of c1"), "no user content in logs");
        let v = json(&rd(&cfg, &["audit", "verify", "--json"]));
        assert_eq!(v["ok"], true);
    }
}

both_backends! {
    async fn restore_and_account_deletion_through_the_binary(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs { conversation_grace: "1s", account_grace: "1s", file_grace: "1h", ..Default::default() }));
        env.seed_user("a1").await;
        env.seed_conversation("c1", "a1", 2).await;
        env.seed_conversation("c2", "a1", 2).await;
        let f1 = env.seed_file("f1", "a1").await;
        ok(&rd_stdin(&cfg, &["ingest"], &(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &created("c2", "conversation", "a1") + &created("f1", "file", "a1"))));
        ok(&rd_stdin(&cfg, &["ingest", "-"], &(deleted("c1") + &restored("c1"))));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 4, "restored data intact");

        ok(&rd_stdin(&cfg, &["ingest", "-"], &account_deleted("a1")));
        let acct = json(&rd(&cfg, &["account", "show", "a1", "--json"]));
        assert_eq!(acct["state"], "deletion_requested");
        for field in ["id", "org", "state", "purge_after", "holds"] {
            assert!(acct.get(field).is_some(), "account show --json lacks {field}");
        }
        assert_eq!(json(&rd(&cfg, &["resource", "show", "c2", "--json"]))["cause"], "account");
        std::thread::sleep(Duration::from_millis(1500));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 3);
        assert_eq!(r["accounts_purged"], 1);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users").await, 0);
        assert!(!exists(&f1));
        let status = json(&rd(&cfg, &["status", "--json"]));
        assert_eq!(status["resources"]["purged"], 3);
        assert_eq!(status["accounts"]["purged"], 1);
        let receipt = json(&rd(&cfg, &["audit", "receipt", "--account", "a1", "--json"]));
        assert_eq!(receipt["resources_purged"]["conversation"], 2);
        assert_eq!(receipt["resources_purged"]["file"], 1);
    }
}

#[tokio::test]
async fn bad_input_exits_2_names_what_is_wrong_and_changes_nothing() {
    let env = Env::new(Backend::Sqlite).await;
    let good = env.config_text(&Knobs::default());
    let cfg = env.write_config(&good);

    let mut text = org_account("o1", "free", "a1");
    for i in 0..998 {
        if i == 499 {
            text.push_str("{\"type\":\"resource.created\",\"id\":\"c\",\"kind\":\"conversation\",\"account\":\"a1\",\"bogus\":1}\n");
        } else {
            text.push_str(&created(&format!("c{i}"), "conversation", "a1"));
        }
    }
    let file = env.dir.path().join("events.ndjson");
    std::fs::write(&file, &text).unwrap();
    let o = rd(&cfg, &["ingest", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("line 502") && err.contains("unknown field `bogus`"),
        "{err}"
    );
    let status = json(&rd(&cfg, &["status", "--json"]));
    assert_eq!(status["resources"]["live"], 0, "nothing applied");
    let o = rd(&cfg, &["ingest", file.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["errors"][0]["line"], 502);

    // Config errors name the key path and the bad value.
    for (broken, expect) in [
        (
            good.replace("[safety]", "[safety]\nmax_newly_dew = 1"),
            vec!["safety.max_newly_dew", "unknown field"],
        ),
        (
            good.replace("max_age = \"30d\"", "max_age = \"30 dayz\""),
            vec!["kinds.api_log.max_age", "`30 dayz`"],
        ),
        (
            good.replace("sweep = \"*/1 * * * * *\"", "sweep = \"* * * * *\""),
            vec!["scheduler.sweep", "6"],
        ),
        (
            good.replace(
                "targets = [\"app_db\", \"uploads\"]\n\n[zdr]",
                "targets = [\"app_db\", \"s3\"]\n\n[zdr]",
            ),
            vec!["accounts.targets[1]", "`s3`"],
        ),
    ] {
        let bad = env.dir.path().join("bad.toml");
        std::fs::write(&bad, &broken).unwrap();
        for cmd in [
            &["check-config"][..],
            &["ingest", file.to_str().unwrap()][..],
            &["run"][..],
        ] {
            let o = rd(&bad, cmd);
            assert_eq!(
                o.status.code(),
                Some(2),
                "{cmd:?} with {expect:?}: {}",
                stderr(&o)
            );
            let err = stderr(&o);
            for e in &expect {
                assert!(err.contains(e), "{cmd:?}: error lacks {e}: {err}");
            }
            assert!(!err.contains("panicked"));
        }
    }
    let o = rd(&env.dir.path().join("missing.toml"), &["check-config"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.toml"));

    // Bad arguments: exit 2, nothing changed.
    for args in [
        &["hold", "place", "--by", "x"][..],
        &["sweep"][..],
        &["frobnicate"][..],
        &[
            "hold",
            "place",
            "--case",
            "C",
            "--by",
            "x",
            "--created-from",
            "yesterday",
        ][..],
    ] {
        let o = rd(&cfg, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = rd(&cfg, &["hold", "place", "--case", "C", "--by", "x"]);
    assert_eq!(o.status.code(), Some(2), "empty scope");
    assert!(stderr(&o).contains("scope"));
    let o = rd(
        &cfg,
        &[
            "hold",
            "place",
            "--case",
            "C",
            "--by",
            "x",
            "--account",
            "nobody",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown account `nobody`"));
    assert_eq!(
        json(&rd(&cfg, &["hold", "list", "--json"]))["holds"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let o = rd(&cfg, &["resource", "show", "nope"]);
    assert_eq!(o.status.code(), Some(2));
}

both_backends! {
    async fn a_crash_between_target_delete_and_ledger_commit_is_finished_once(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs { conversation_grace: "0s", lease: "1s", ..Default::default() }));
        let mut events = org_account("o1", "free", "a1");
        for i in 0..30 {
            env.seed_conversation(&format!("c{i}"), "a1", 2).await;
            events.push_str(&created(&format!("c{i}"), "conversation", "a1"));
            events.push_str(&deleted(&format!("c{i}")));
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
        for point in ["after_claim", "after_target_0", "before_commit"] {
            // Each crash leaves its claims leased; the next attempt takes them over after 1s.
            std::thread::sleep(Duration::from_millis(1200));
            let o = bin().arg("--config").arg(&cfg).args(["sweep", "--once"]).env("RETENTIOND_CRASH_AT", point).output().unwrap();
            assert_eq!(o.status.code(), Some(86), "crashed at {point}: {}", stderr(&o));
        }
        let status = json(&rd(&cfg, &["status", "--json"]));
        assert_eq!(status["resources"]["purged"], 0, "nothing recorded by the crashed sweeps");
        std::thread::sleep(Duration::from_millis(1200));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 30);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 0);
        let export = ok(&rd(&cfg, &["audit", "export"]));
        let receipts = export.lines().filter(|l| l.contains("\"action\":\"resource.purged\"")).count();
        assert_eq!(receipts, 30, "exactly one receipt per resource");
        assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
    }
}

#[tokio::test]
async fn the_daemon_sweeps_on_its_cron_and_stops_cleanly_on_sigterm() {
    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs {
        conversation_grace: "1s",
        ..Default::default()
    }));
    env.seed_conversation("c1", "a1", 2).await;
    ok(&rd_stdin(
        &cfg,
        &["ingest", "-"],
        &(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &deleted("c1")),
    ));
    let child = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.app_count("SELECT COUNT(*) FROM messages").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon did not purge in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Concurrent CLI writes while the daemon runs: no "database is locked".
    let o = rd_stdin(&cfg, &["ingest", "-"], &created("c2", "conversation", "a1"));
    ok(&o);
    let o = rd(
        &cfg,
        &[
            "hold",
            "place",
            "--case",
            "K-1",
            "--by",
            "legal",
            "--account",
            "a1",
        ],
    );
    ok(&o);
    unsafe_kill(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let logs = stderr(&out);
    let mut saw_purge = false;
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "purged" {
            assert_eq!(v["id"], "c1");
            assert_eq!(v["kind"], "conversation");
            saw_purge = true;
        }
    }
    assert!(saw_purge, "{logs}");
    assert!(logs.contains("\"stopped\""));
}

/// Sends a signal with the `kill` utility (no libc dependency needed in tests).
pub fn unsafe_kill(pid: u32, sig: &str) {
    let s = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(s.success());
}
