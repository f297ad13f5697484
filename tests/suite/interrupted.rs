//! Issue 30: after a crash, the ledger never says that held data exists when it is gone. The
//! built binary dies mid-purge (failpoints), a hold is placed before anything resumes, and the
//! instance that takes the claim over finds out from the targets what is true: gone everywhere →
//! `purged` with one receipt (the hold's numbers become exact), intact → kept, partly gone →
//! `interrupted` until the hold is released.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::rel::*;

/// Six due files (two targets each: `app_db` rows and upload files) in account a1, purged two
/// to a batch (conversations are due at once too), two batches to a transaction, leases of one second.
async fn world(b: Backend) -> (Env, std::path::PathBuf, Vec<String>) {
    let env = Env::new(b).await;
    let cfg = env.write_config(&env.config_text(&Knobs {
        file_grace: "0s",
        conversation_grace: "0s",
        lease: "1s",
        batch_size: 2,
        batches_per_transaction: 2,
        ..Default::default()
    }));
    let mut events = org_account("o1", "free", "a1");
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = format!("f{i}");
        env.seed_file(&id, "a1").await;
        events.push_str(&created(&id, "file", "a1"));
        events.push_str(&deleted(&id));
        ids.push(id);
    }
    ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
    (env, cfg, ids)
}

fn show(cfg: &Path, what: &str, id: &str) -> serde_json::Value {
    json(&rd(cfg, &[what, "show", id, "--json"]))
}

/// Rows left in `files` and the upload file: (row, file).
async fn data(env: &Env, id: &str) -> (bool, bool) {
    let row = env
        .app_count(&format!("SELECT COUNT(*) FROM files WHERE id = '{id}'"))
        .await
        == 1;
    (row, exists(&env.upload("a1", id)))
}

fn in_flight_outcomes(hold: &serde_json::Value) -> Vec<(String, String)> {
    hold["in_flight_resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["resource"].as_str().unwrap().to_string(),
                f["outcome"].as_str().unwrap_or("open").to_string(),
            )
        })
        .collect()
}

/// The sweep dies at `point` in its first purge transaction (one batch: two files), a hold on
/// a1 is placed, and a fresh process takes the claims over after their lease. Returns the hold's
/// answer, the ids of the first batch, and the hold's id.
async fn crash_then_hold(
    b: Backend,
    point: &str,
) -> (Env, std::path::PathBuf, serde_json::Value, Vec<String>) {
    let (env, cfg, ids) = world(b).await;
    let o = rd_crash(&cfg, point, &["sweep", "--once"], None);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    let placed = hold_account(&cfg, "a1");
    assert_eq!(placed["matched"], 6, "{placed}");
    assert_eq!(placed["already_purged"], 0, "{placed}");
    // Exactly the first batch was started; what the crashed sweep had claimed beside it (on
    // PostgreSQL, committed at once) had not, and is not in flight.
    assert_eq!(placed["in_flight"], 2, "{placed}");
    let first: Vec<String> = placed["in_flight_resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for id in ids.iter().filter(|i| !first.contains(i)) {
        assert_eq!(data(&env, id).await, (true, true), "{id} was never touched");
    }
    std::thread::sleep(Duration::from_millis(1150));
    (env, cfg, placed, first)
}

both_backends! {
    /// The crash came after both targets ran: the data of the first batch is gone everywhere.
    /// It is recorded purged, once, with a receipt that names the hold; the hold's answer
    /// becomes exact; the rest stays under the hold.
    async fn gone_everywhere_is_recorded_purged_and_the_hold_becomes_exact(b: Backend) {
        let (env, cfg, placed, first) = crash_then_hold(b, "after_target_1").await;
        let hold = placed["id"].as_i64().unwrap();
        for id in &first {
            assert_eq!(data(&env, id).await, (false, false), "{id}: the crashed purge deleted it");
        }
        let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((report["purged"].as_i64(), report["found_gone"].as_i64()), (Some(2), Some(2)), "{report}");
        assert_eq!(report["held"], 4, "{report}");

        let h = show(&cfg, "hold", &hold.to_string());
        assert_eq!(h["already_purged"], 2, "{h}");
        assert_eq!(h["in_flight"], 0, "{h}");
        let mut outcomes = in_flight_outcomes(&h);
        outcomes.sort();
        let mut want: Vec<(String, String)> = first.iter().map(|i| (i.clone(), "purged".into())).collect();
        want.sort();
        assert_eq!(outcomes, want);
        assert_eq!(h["matched_by_state"]["purged"], 2, "{h}");
        assert_eq!(h["matched_by_state"]["deleted"], 4, "{h}");

        let ledger = open_ledger(&env).await;
        let found = receipts(&ledger).await;
        assert_eq!(found.len(), 2);
        for id in &first {
            let r = &found[id];
            assert_eq!(r.len(), 1, "{id}: one receipt");
            assert_eq!(r[0]["found_gone"]["holds"], serde_json::json!([hold]), "{}", r[0]);
            assert_eq!(show(&cfg, "resource", id)["state"], "purged");
        }
        for id in ["f0", "f1", "f2", "f3", "f4", "f5"].iter().filter(|i| !first.contains(&i.to_string())) {
            let r = show(&cfg, "resource", id);
            assert_eq!((r["state"].as_str(), r["holds"].clone()), (Some("deleted"), serde_json::json!([hold])), "{r}");
            assert_eq!(data(&env, id).await, (true, true));
        }
        // A second sweep changes nothing; released, the rest goes, each once.
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 0);
        ok(&rd(&cfg, &["hold", "release", &hold.to_string(), "--by", "legal"]));
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 4);
        let receipts = receipts(&open_ledger(&env).await).await;
        assert_eq!(receipts.len(), 6);
        assert!(receipts.values().all(|r| r.len() == 1));
        audit_verify(&cfg);
    }
}

both_backends! {
    /// The crash came after the first target only: the rows are gone, the files are not. The
    /// ledger says neither: the resources are `interrupted` (in `resource show`, `hold show`,
    /// `status` and the audit log) until the hold is released, and then the purge finishes.
    async fn partly_gone_is_interrupted_until_the_hold_is_released(b: Backend) {
        let (env, cfg, placed, first) = crash_then_hold(b, "after_target_0").await;
        let hold = placed["id"].as_i64().unwrap();
        for id in &first {
            assert_eq!(data(&env, id).await, (false, true), "{id}: rows gone, file left");
        }
        let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((report["purged"].as_i64(), report["interrupted"].as_i64()), (Some(0), Some(2)), "{report}");

        for id in &first {
            let r = show(&cfg, "resource", id);
            assert_eq!(r["state"], "interrupted", "{r}");
            assert_eq!(r["holds"], serde_json::json!([hold]), "{r}");
            let targets: Vec<(String, String)> = r["interrupted"]["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["target"].as_str().unwrap().into(), t["data"].as_str().unwrap().into()))
                .collect();
            assert_eq!(targets, vec![("app_db".into(), "gone".into()), ("uploads".into(), "present".into())]);
            let text = ok(&rd(&cfg, &["resource", "show", id]));
            assert!(text.contains("interrupted purge") && text.contains("app_db=gone uploads=present"), "{text}");
        }
        let h = show(&cfg, "hold", &hold.to_string());
        assert_eq!((h["already_purged"].as_i64(), h["in_flight"].as_i64()), (Some(0), Some(0)), "{h}");
        assert!(in_flight_outcomes(&h).iter().all(|(_, o)| o == "interrupted"), "{h}");
        assert_eq!(h["matched_by_state"]["interrupted"], 2, "{h}");
        let status = json(&rd(&cfg, &["status", "--json"]));
        assert_eq!(status["resources"]["interrupted"], 2, "{status}");
        let audit = ok(&rd(&cfg, &["audit", "export"]));
        assert_eq!(audit.matches("resource.purge_interrupted").count(), 2);
        // More sweeps under the hold change nothing.
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["interrupted"], 0);
        for id in &first {
            assert_eq!(show(&cfg, "resource", id)["state"], "interrupted");
        }

        ok(&rd(&cfg, &["hold", "release", &hold.to_string(), "--by", "legal"]));
        let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(report["purged"], 6, "{report}");
        for id in &first {
            assert_eq!(data(&env, id).await, (false, false));
            assert_eq!(show(&cfg, "resource", id)["state"], "purged");
        }
        assert_eq!(json(&rd(&cfg, &["status", "--json"]))["resources"]["interrupted"], 0);
        let receipts = receipts(&open_ledger(&env).await).await;
        assert_eq!(receipts.len(), 6);
        assert!(receipts.values().all(|r| r.len() == 1));
        audit_verify(&cfg);
    }
}

both_backends! {
    /// The crash came after the batch was marked started, before any target ran: the data is
    /// intact, and the hold keeps it (back to `deleted`, not `purged`).
    async fn intact_data_is_kept_by_the_hold(b: Backend) {
        let (env, cfg, placed, first) = crash_then_hold(b, "after_start").await;
        let hold = placed["id"].as_i64().unwrap();
        let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((report["purged"].as_i64(), report["found_intact"].as_i64()), (Some(0), Some(2)), "{report}");
        for id in &first {
            assert_eq!(data(&env, id).await, (true, true));
            assert_eq!(show(&cfg, "resource", id)["state"], "deleted");
        }
        let h = show(&cfg, "hold", &hold.to_string());
        assert_eq!(h["already_purged"], 0, "{h}");
        assert!(in_flight_outcomes(&h).iter().all(|(_, o)| o == "kept"), "{h}");
        assert!(receipts(&open_ledger(&env).await).await.is_empty());
        audit_verify(&cfg);
    }
}

/// Two instances on PostgreSQL: one dies after its first batch's target deletes, a hold is
/// placed, and the other instance — already sweeping other work — takes the dead one's claims
/// over when their lease runs out, and finds out what is true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_by_lease_on_postgres_finds_out_what_the_dead_instance_did() {
    if pg_disabled() {
        eprintln!("RETENTIOND_TEST_PG=off: PostgreSQL test skipped on request");
        return;
    }
    let (env, cfg, ids) = world(Backend::Postgres).await;
    let cfg_text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("lease = \"1s\"", "lease = \"3s\"");
    std::fs::write(&cfg, cfg_text).unwrap();
    // Work for the survivor that no hold touches (due after a1's files, so claimed after them).
    std::thread::sleep(Duration::from_millis(20));
    let mut events = org_account("o2", "free", "a2");
    for i in 0..10 {
        env.seed_conversation(&format!("c{i}"), "a2", 2).await;
        events.push_str(&created(&format!("c{i}"), "conversation", "a2"));
        events.push_str(&deleted(&format!("c{i}")));
    }
    ok(&rd_stdin(&cfg, &["ingest", "-"], &events));

    let mut dead = Daemon::start(&cfg, &[("RETENTIOND_CRASH_AT", "after_target_1")]);
    assert!(
        wait_until(Duration::from_secs(30), || dead.exited().is_some()),
        "the first instance reaches its failpoint"
    );
    let placed = hold_account(&cfg, "a1");
    assert_eq!(
        (placed["matched"].as_i64(), placed["in_flight"].as_i64()),
        (Some(6), Some(2)),
        "{placed}"
    );
    let hold = placed["id"].as_i64().unwrap().to_string();
    let survivor = Daemon::start(&cfg, &[]);
    let settled = wait_until(Duration::from_secs(60), || {
        let h = show(&cfg, "hold", &hold);
        let status = json(&rd(&cfg, &["status", "--json"]));
        h["in_flight"] == 0
            && h["matched_by_state"]["purging"].is_null()
            && status["resources"]["purged"] == 12
    });
    let log = survivor.stop();
    assert!(settled, "the survivor took the claims over:\n{log}");
    assert!(log.contains("purge found done after a crash"), "{log}");

    let h = show(&cfg, "hold", &hold);
    assert_eq!(h["already_purged"], 2, "{h}");
    let ledger = open_ledger(&env).await;
    let receipts = receipts(&ledger).await;
    // Every a1 resource: the ledger's word and the stores agree.
    let mut purged = 0;
    for id in &ids {
        let state = show(&cfg, "resource", id)["state"]
            .as_str()
            .unwrap()
            .to_string();
        let (row, file) = data(&env, id).await;
        match state.as_str() {
            "purged" => {
                purged += 1;
                assert_eq!((row, file), (false, false), "{id}");
                assert_eq!(receipts[id].len(), 1, "{id}");
            }
            "deleted" => assert_eq!((row, file), (true, true), "{id}"),
            s => panic!("{id} is {s}"),
        }
    }
    assert_eq!(purged, 2);
    // The survivor purged all of a2, once each.
    for i in 0..10 {
        assert_eq!(receipts[&format!("c{i}")].len(), 1);
    }
    assert_eq!(receipts.len(), 12);
    audit_verify(&cfg);
}

/// Lengthens the file grace in `cfg` from 0s to 30 days, as an operator's reload would.
fn lengthen_file_grace(cfg: &Path) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let lengthened = text.replace(
        "[kinds.file]\ngrace_after_delete = \"0s\"",
        "[kinds.file]\ngrace_after_delete = \"30d\"",
    );
    assert_ne!(text, lengthened, "the file grace is in the config");
    std::fs::write(cfg, lengthened).unwrap();
}

both_backends! {
    /// No hold, but the policy was lengthened after the crash, so the crashed batch is no
    /// longer due when it is taken over. Its data is gone everywhere: recorded purged (the
    /// receipt says it was found so), never put back to `deleted` with nothing behind it; the
    /// rest waits for the new grace.
    async fn gone_but_no_longer_due_is_recorded_purged(b: Backend) {
        let (env, cfg, ids) = world(b).await;
        let o = rd_crash(&cfg, "after_target_1", &["sweep", "--once"], None);
        assert_eq!(o.status.code(), Some(86), "{}", text(&o));
        let gone: Vec<String> = {
            let mut g = Vec::new();
            for id in &ids {
                if data(&env, id).await == (false, false) {
                    g.push(id.clone());
                }
            }
            g
        };
        assert_eq!(gone.len(), 2, "the crashed batch ran both targets");
        lengthen_file_grace(&cfg);
        std::thread::sleep(Duration::from_millis(1150));
        let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(report["found_gone"], 2, "{report}");
        let found = receipts(&open_ledger(&env).await).await;
        for id in &gone {
            assert_eq!(found[id].len(), 1, "{id}");
            assert_eq!(found[id][0]["found_gone"]["no_longer_due"], true, "{}", found[id][0]);
            assert_eq!(show(&cfg, "resource", id)["state"], "purged");
        }
        // The rest was never touched. On SQLite the crash left it unclaimed, so the new grace
        // keeps it; on PostgreSQL the crashed sweep had already committed its claim on the next
        // batch (claimed under the old grace, not started), which the takeover finishes as
        // claimed: purged, with an ordinary receipt.
        let mut kept = 0;
        for id in ids.iter().filter(|i| !gone.contains(i)) {
            let r = show(&cfg, "resource", id);
            match r["state"].as_str() {
                Some("deleted") => {
                    kept += 1;
                    assert_eq!(data(&env, id).await, (true, true), "{id}");
                }
                Some("purged") => {
                    assert_eq!(b, Backend::Postgres, "{r}");
                    assert_eq!(found[id].len(), 1, "{id}");
                    assert!(found[id][0].get("found_gone").is_none(), "{}", found[id][0]);
                    assert_eq!(data(&env, id).await, (false, false), "{id}");
                }
                s => panic!("{id} is {s:?}"),
            }
        }
        if b == Backend::Sqlite {
            assert_eq!(kept, 4);
        }
        assert_eq!(report["purged"].as_i64(), Some(6 - kept), "{report}");
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 0);
        audit_verify(&cfg);
    }
}

both_backends! {
    /// The same, but the crash came before any target ran: the batch is given back, rescheduled
    /// by the lengthened policy, with its data intact.
    async fn intact_and_no_longer_due_is_given_back_rescheduled(b: Backend) {
        let (env, cfg, ids) = world(b).await;
        let o = rd_crash(&cfg, "after_start", &["sweep", "--once"], None);
        assert_eq!(o.status.code(), Some(86), "{}", text(&o));
        lengthen_file_grace(&cfg);
        std::thread::sleep(Duration::from_millis(1150));
        let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((report["purged"].as_i64(), report["found_intact"].as_i64()), (Some(0), Some(2)), "{report}");
        for id in &ids {
            let r = show(&cfg, "resource", id);
            assert_eq!(r["state"], "deleted", "{r}");
            assert_eq!(data(&env, id).await, (true, true), "{id}");
        }
        let status = json(&rd(&cfg, &["status", "--json"]));
        assert_eq!(status["backlog"], 0, "{status}");
        assert!(receipts(&open_ledger(&env).await).await.is_empty());
        audit_verify(&cfg);
    }
}
