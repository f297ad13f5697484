//! `retentiond reapply` (issue 9): a backup of the application database and upload folder is
//! restored after a purge; reapply removes what had come back, skips what a hold now covers, and
//! a second run finds nothing. Through the built binary, on both ledger backends.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

fn rd(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run retentiond")
}

fn ok_json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json output")
}

fn ingest(config: &Path, env: &Env, events: &str) {
    let f = env.dir.path().join("events.ndjson");
    std::fs::write(&f, events).unwrap();
    ok_json(&rd(config, &["ingest", f.to_str().unwrap(), "--json"]));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Puts the backup back as an operator would: the database file (its WAL and shared memory
/// files removed) and the whole upload folder.
fn restore(env: &Env, backup_db: &Path, backup_uploads: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.app_db.display()));
    }
    std::fs::copy(backup_db, &env.app_db).unwrap();
    std::fs::remove_dir_all(&env.uploads).unwrap();
    copy_dir(backup_uploads, &env.uploads);
}

fn kind<'a>(report: &'a serde_json::Value, k: &str) -> &'a serde_json::Value {
    &report["kinds"][k]
}

both_backends! {
    async fn reapply_removes_what_a_backup_restore_brought_back_and_a_second_run_finds_nothing(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs {
            conversation_grace: "0s",
            file_grace: "0s",
            account_grace: "0s",
            ..Default::default()
        }));
        for u in ["a1", "a2", "a3"] {
            env.seed_user(u).await;
        }
        env.seed_conversation("c1", "a1", 3).await;
        env.seed_file("f1", "a1").await;
        env.seed_conversation("c2", "a2", 2).await;
        env.seed_file("f2", "a2").await;
        env.seed_conversation("c3", "a3", 2).await;
        env.seed_conversation("c4", "a1", 1).await; // never deleted
        let mut events = org_account("o1", "free", "a1");
        events += "{\"type\":\"account.created\",\"account\":\"a2\",\"org\":\"o1\"}\n{\"type\":\"account.created\",\"account\":\"a3\",\"org\":\"o1\"}\n";
        for (id, k, a) in [("c1", "conversation", "a1"), ("f1", "file", "a1"), ("c2", "conversation", "a2"), ("f2", "file", "a2"), ("c3", "conversation", "a3"), ("c4", "conversation", "a1")] {
            events += &created(id, k, a);
        }
        events += &(deleted("c1") + &deleted("f1") + &deleted("c3") + &account_deleted("a2"));
        ingest(&cfg, &env, &events);

        // The nightly backup, taken before the purge.
        let backup_db = env.dir.path().join("backup.db");
        env.app_exec(&format!("VACUUM INTO '{}'", backup_db.display())).await;
        let backup_uploads = env.dir.path().join("uploads.bak");
        copy_dir(&env.uploads, &backup_uploads);

        let since = chrono::Utc::now() - chrono::Duration::seconds(1);
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let sweep = ok_json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((sweep["purged"].as_u64(), sweep["accounts_purged"].as_u64()), (Some(5), Some(1)), "{sweep}");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id IN ('c1', 'c2', 'c3')").await, 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users WHERE id = 'a2'").await, 0);
        assert!(!exists(&env.upload("a1", "f1")) && !exists(&env.uploads.join("a2")));
        // A legal hold arrives later, covering an account whose conversation was already purged.
        ok_json(&rd(&cfg, &["hold", "place", "--case", "LIT-1", "--by", "carol", "--account", "a3", "--json"]));

        restore(&env, &backup_db, &backup_uploads);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id IN ('c1', 'c2', 'c3')").await, 7);
        assert!(exists(&env.upload("a1", "f1")) && exists(&env.upload("a2", "f2")));

        // Dry run: reports what came back, changes nothing.
        let dry = ok_json(&rd(&cfg, &["reapply", "--since", &since, "--dry-run", "--json"]));
        assert_eq!(dry["dry_run"], true);
        assert_eq!(kind(&dry, "conversation")["checked"], 2, "{dry}");
        assert_eq!(kind(&dry, "conversation")["came_back"], 2);
        assert_eq!(kind(&dry, "conversation")["rows"], 7, "c1: 3 messages + row, c2: 2 messages + row");
        assert_eq!((kind(&dry, "file")["rows"].as_u64(), kind(&dry, "file")["files"].as_u64()), (Some(2), Some(2)));
        assert_eq!(kind(&dry, "account")["rows"], 1, "the users row of a2");
        assert_eq!(dry["skipped"][0]["subject"], "conversation/c3");
        assert_eq!(dry["skipped"][0]["holds"][0], 1);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id IN ('c1', 'c2')").await, 5, "a dry run changes nothing");
        assert!(exists(&env.upload("a1", "f1")));

        // --target limits the run to one target.
        let files_only = ok_json(&rd(&cfg, &["reapply", "--since", &since, "--target", "uploads", "--json"]));
        assert_eq!(files_only["targets"], serde_json::json!(["uploads"]));
        assert_eq!((files_only["removed"]["rows"].as_u64(), files_only["removed"]["files"].as_u64()), (Some(0), Some(2)), "{files_only}");
        assert!(!exists(&env.upload("a1", "f1")) && !exists(&env.upload("a2", "f2")));
        assert_eq!(env.app_count("SELECT COUNT(*) FROM files").await, 2, "rows untouched by --target uploads");

        let real = ok_json(&rd(&cfg, &["reapply", "--since", &since, "--json"]));
        assert_eq!(real["dry_run"], false);
        assert_eq!(kind(&real, "conversation")["rows"], 7, "{real}");
        assert_eq!((kind(&real, "file")["rows"].as_u64(), kind(&real, "file")["files"].as_u64()), (Some(2), Some(0)));
        assert_eq!(kind(&real, "account")["rows"], 1);
        assert_eq!(real["came_back"], 5, "c1, c2, f1, f2, account a2");
        assert_eq!(real["skipped"].as_array().unwrap().len(), 1);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id IN ('c1', 'c2')").await, 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM conversations WHERE id IN ('c1', 'c2')").await, 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM files").await, 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users WHERE id = 'a2'").await, 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c3'").await, 2, "kept: under a hold");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c4'").await, 1, "never deleted");

        // Idempotent: nothing is left to find.
        let again = ok_json(&rd(&cfg, &["reapply", "--since", &since, "--json"]));
        assert_eq!(again["came_back"], 0, "{again}");
        assert_eq!((again["removed"]["rows"].as_u64(), again["removed"]["files"].as_u64()), (Some(0), Some(0)));
        assert_eq!(kind(&again, "conversation")["checked"], 2);

        // Audited, with the ledger untouched: still one purge receipt per resource, chain intact.
        let export = rd(&cfg, &["audit", "export"]);
        let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let count = |action: &str, subject: &str| entries.iter().filter(|e| e["action"] == action && (subject.is_empty() || e["subject"] == subject)).count();
        assert_eq!(count("resource.reapplied", "conversation/c1"), 1);
        assert_eq!(count("resource.reapplied", "file/f1"), 2, "files by --target uploads, the row by the full run");
        assert_eq!(count("account.reapplied", "account/a2"), 1);
        assert_eq!(count("resource.reapplied", "conversation/c3"), 0);
        assert_eq!(count("purges.reapplied", ""), 3, "one summary per real run");
        assert_eq!(count("resource.purged", "conversation/c1"), 1);
        let shown = ok_json(&rd(&cfg, &["resource", "show", "c1", "--json"]));
        assert_eq!(shown["state"], "purged");
        assert_eq!(ok_json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);

        // Bad arguments change nothing and exit 2.
        for args in [&["reapply", "--since", &since, "--target", "s3"][..], &["reapply", "--since", "yesterday"][..], &["reapply"][..]] {
            let o = rd(&cfg, args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        // A duration works as `--since` too.
        let ago = ok_json(&rd(&cfg, &["reapply", "--since", "1h", "--dry-run", "--json"]));
        assert_eq!(kind(&ago, "conversation")["checked"], 2);
    }
}
