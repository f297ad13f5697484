//! Issue 23: tombstones older than `[ledger] tombstone_retention` are compacted into per-day,
//! per-kind, per-cause counts, each compaction an audit entry carrying its counts; younger
//! tombstones stay for `reapply`. In-process with a hand-moved clock (400 days pass), the read
//! commands through the built binary; and once through `sweep --once` on the system clock.

use std::collections::BTreeMap;

use crate::common::*;
use crate::rel::{json, ok, rd};
use retentiond::admin::PlaceHold;
use retentiond::holds::HoldScope;
use retentiond::ingest::IngestError;
use retentiond::model::Timestamp;
use retentiond::reapply::{ReapplyOptions, reapply};
use retentiond::targets::Targets;

/// `tombstones.compacted` entries of the chain.
async fn compaction_entries(h: &H) -> Vec<serde_json::Value> {
    let entries = h.ledger.audit_range(1, i64::MAX, 100_000).await.unwrap();
    entries
        .into_iter()
        .filter(|e| e.action == "tombstones.compacted")
        .map(|e| {
            let mut d: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            d["seq"] = e.seq.into();
            d
        })
        .collect()
}

both_backends! {
    async fn tombstones_older_than_the_retention_are_compacted_into_counts_the_chain_proves(b: Backend) {
        let env = Env::new(b).await;
        let text = env.config_text(&Knobs {
            conversation_grace: "0s",
            account_grace: "0s",
            // Three tombstones per compaction transaction: eight take three of them.
            batch_size: 3,
            extra: "[ledger]\ntombstone_retention = \"400d\"\n".into(),
            ..Default::default()
        });
        let cfg = env.write_config(&text);
        let h = H::with_config(env, &text).await;
        let day0 = h.now().millis().div_euclid(86_400_000) * 86_400_000;

        // At T0: seven conversations of a1 deleted by hand, and account a2 deleted with its one.
        let mut events = org_account("o1", "free", "a1");
        events += "{\"type\":\"account.created\",\"account\":\"a2\",\"org\":\"o1\"}\n";
        for i in 0..7 {
            h.env.seed_conversation(&format!("c{i}"), "a1", 1).await;
            events += &(created(&format!("c{i}"), "conversation", "a1") + &deleted(&format!("c{i}")));
        }
        h.env.seed_conversation("c7", "a2", 1).await;
        h.env.seed_user("a2").await;
        events += &(created("c7", "conversation", "a2") + &account_deleted("a2"));
        h.ingest(&events).await;
        let r = h.sweep().await;
        assert_eq!((r.purged, r.accounts_purged, r.tombstones_compacted), (8, 1, 0));

        // 200 days later two more of a1's go.
        h.advance("200d");
        let mut events = String::new();
        for i in 8..10 {
            h.env.seed_conversation(&format!("c{i}"), "a1", 2).await;
            events += &(created(&format!("c{i}"), "conversation", "a1") + &deleted(&format!("c{i}")));
        }
        h.ingest(&events).await;
        assert_eq!(h.sweep().await.purged, 2);
        assert_eq!(h.sweep().await.tombstones_compacted, 0, "nothing is 400 days old yet");

        // 401 days after T0, the first eight are past the retention; the two of day 200 are not.
        h.advance("201d");
        let r = h.sweep().await;
        assert_eq!((r.purged, r.tombstones_compacted), (0, 8), "{r:?}");
        for i in 0..8 {
            assert!(h.ledger.resource(&format!("c{i}")).await.unwrap().is_none(), "c{i} compacted");
        }
        for i in 8..10 {
            assert_eq!(h.state(&format!("c{i}")).await, "purged", "c{i} is younger: kept");
        }
        let counts: Vec<(i64, String, String, i64)> = h.ledger.tombstone_counts().await.unwrap()
            .into_iter().map(|c| (c.day.millis(), c.kind, c.cause, c.count)).collect();
        assert_eq!(counts, [
            (day0, "conversation".to_string(), "account".to_string(), 1),
            (day0, "conversation".to_string(), "manual".to_string(), 7),
        ]);
        // Three entries (3 + 3 + 2), whose counts add up to the table's.
        let entries = compaction_entries(&h).await;
        assert_eq!(entries.iter().map(|e| e["tombstones"].as_i64().unwrap()).collect::<Vec<_>>(), [3, 3, 2]);
        let mut from_chain: BTreeMap<String, i64> = BTreeMap::new();
        for e in &entries {
            for c in e["counts"].as_array().unwrap() {
                *from_chain.entry(c["cause"].as_str().unwrap().to_string()).or_default() += c["count"].as_i64().unwrap();
            }
            assert_eq!(e["retention"], "400days", "{e}");
        }
        assert_eq!(from_chain, BTreeMap::from([("account".into(), 1), ("manual".into(), 7)]));
        // The purge receipts stay in the chain, and the chain verifies.
        assert_eq!(h.receipts().await.len(), 10);
        h.audit_ok().await;
        let v = json(&rd(&cfg, &["audit", "verify", "--json"]));
        assert_eq!(v["ok"], true, "{v}");

        // The receipts say what was compacted, where the chain counted it, and that it adds up.
        let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        let a1 = json(&rd(&cfg, &["audit", "receipt", "--account", "a1", "--json"]));
        assert_eq!(a1["resources_purged"]["conversation"], 2, "{a1}");
        assert_eq!(a1["compacted"]["resources"]["conversation"], 7, "{a1}");
        assert_eq!(a1["compacted"]["seqs"], serde_json::json!(seqs), "{a1}");
        assert_eq!(a1["compacted"]["chain_agrees"], true);
        let a2 = json(&rd(&cfg, &["audit", "receipt", "--account", "a2", "--json"]));
        assert_eq!(a2["state"], "purged");
        assert_eq!(a2["compacted"]["resources"]["conversation"], 1, "{a2}");
        assert_eq!(a2["compacted"]["seqs"], serde_json::json!([seqs[2]]), "{a2}");
        let text = ok(&rd(&cfg, &["audit", "receipt", "--account", "a1"]));
        assert!(text.contains("tombstones compacted conversation=7"), "{text}");
        assert!(text.contains(&format!("seq {}, {}, {}", seqs[0], seqs[1], seqs[2])), "{text}");
        assert!(text.contains("add up"), "{text}");

        // A compacted id stays taken (R9 through its purge receipt): created again, it is
        // refused like any existing id, and nothing of the input is applied.
        let again = created("c9x", "conversation", "a1") + &created("c3", "conversation", "a1");
        match h.try_ingest(&again).await {
            Err(IngestError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].line, 2);
                assert!(errors[0].reason.contains("`c3` already exists") && errors[0].reason.contains("compacted"), "{}", errors[0].reason);
            }
            other => panic!("expected the compacted id to be refused: {other:?}"),
        }
        assert!(h.ledger.resource("c9x").await.unwrap().is_none(), "a refused input applied a line");

        // A later sweep finds nothing more to compact; the chain still verifies.
        h.advance("1d");
        assert_eq!(h.sweep().await.tombstones_compacted, 0);
        h.audit_ok().await;

        // reapply still re-runs the kept tombstones: c8 comes back in a restore.
        h.env.seed_conversation("c8", "a1", 2).await;
        let targets = Targets::from_config(&h.config).unwrap();
        let opts = ReapplyOptions {
            since: Timestamp::parse_rfc3339(T0).unwrap().plus(retentiond::model::Span::parse("100d").unwrap()),
            target: None,
            dry_run: false,
            by: "test".into(),
        };
        let report = reapply(&h.ledger, &h.config, &targets, &opts, h.now()).await.unwrap();
        assert_eq!(report.kinds["conversation"].checked, 2, "{report:?}");
        assert_eq!(report.kinds["conversation"].came_back, 1);
        assert_eq!(report.kinds["conversation"].rows, 3, "c8's 2 messages and its row");
        assert!(report.compacted_before.is_none());
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c8'").await, 0);
        // Reaching back past the retention is said: those purges cannot be re-run.
        let opts = ReapplyOptions { since: Timestamp::parse_rfc3339(T0).unwrap(), ..opts };
        let report = reapply(&h.ledger, &h.config, &targets, &opts, h.now()).await.unwrap();
        assert_eq!(report.kinds["conversation"].checked, 2);
        assert!(report.compacted_before.is_some());
        assert_eq!(report.compacted_tombstones, 8, "{report:?}");

        // A hold placed now counts the compacted ones as purged too, where the counts can tell.
        let place = |scope: HoldScope| retentiond::admin::place_hold(
            &h.ledger,
            PlaceHold { case: "LIT-1".into(), by: "legal".into(), reason: None, scope },
            h.now(),
        );
        let on_a1 = place(HoldScope { account: Some("a1".into()), ..Default::default() }).await.unwrap();
        assert_eq!((on_a1.already_purged, on_a1.already_compacted), (2, Some(7)), "{on_a1:?}");
        let on_o1 = place(HoldScope { org: Some("o1".into()), kind: Some("conversation".into()), ..Default::default() }).await.unwrap();
        assert_eq!((on_o1.already_purged, on_o1.already_compacted), (2, Some(8)), "{on_o1:?}");
        let by_range = place(HoldScope { created_from: Some(Timestamp::parse_rfc3339(T0).unwrap()), ..Default::default() }).await.unwrap();
        assert_eq!(by_range.already_compacted, None, "a creation range cannot be told from the counts");
        let text = ok(&rd(&cfg, &["hold", "place", "--case", "LIT-2", "--by", "legal", "--account", "a1"]));
        assert!(text.contains("2 already purged") && text.contains("and 7 purged earlier whose tombstones were compacted"), "{text}");
        h.audit_ok().await;
    }
}

both_backends! {
    async fn sweep_once_compacts_with_one_log_line_and_a_bad_retention_is_a_config_error(b: Backend) {
        let env = Env::new(b).await;
        let text = env.config_text(&Knobs {
            conversation_grace: "0s",
            extra: "[ledger]\ntombstone_retention = \"2s\"\n".into(),
            ..Default::default()
        });
        let cfg = env.write_config(&text);
        let ingest = |events: String| {
            let f = env.dir.path().join("events.ndjson");
            std::fs::write(&f, events).unwrap();
            ok(&rd(&cfg, &["ingest", f.to_str().unwrap()]));
        };
        let mut events = org_account("o1", "free", "a1");
        for id in ["c1", "c2"] {
            env.seed_conversation(id, "a1", 1).await;
            events += &(created(id, "conversation", "a1") + &deleted(id));
        }
        ingest(events);
        let s = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((s["purged"].as_u64(), s["tombstones_compacted"].as_u64()), (Some(2), Some(0)), "{s}");
        std::thread::sleep(std::time::Duration::from_millis(2_500));
        env.seed_conversation("c3", "a1", 1).await;
        ingest(created("c3", "conversation", "a1") + &deleted("c3"));
        let o = rd(&cfg, &["sweep", "--once", "--json"]);
        let s: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        assert_eq!((s["purged"].as_u64(), s["tombstones_compacted"].as_u64()), (Some(1), Some(2)), "{s}");
        let log = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("tombstones compacted")).collect();
        assert_eq!(lines.len(), 1, "one line per run: {log}");
        assert!(lines[0].contains("compacted=2") && lines[0].contains("tombstone_retention=2s"), "{}", lines[0]);
        let r = json(&rd(&cfg, &["audit", "receipt", "--account", "a1", "--json"]));
        assert_eq!(r["compacted"]["resources"]["conversation"], 2, "{r}");
        assert_eq!(r["resources_purged"]["conversation"], 1, "{r}");
        assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);

        // A bad value names the key, exit 2.
        for bad in ["\"forever\"", "\"0s\"", "400"] {
            let text = text.replace("tombstone_retention = \"2s\"", &format!("tombstone_retention = {bad}"));
            let bad_cfg = env.dir.path().join("bad.toml");
            std::fs::write(&bad_cfg, text).unwrap();
            let o = rd(&bad_cfg, &["check-config"]);
            assert_eq!(o.status.code(), Some(2), "{bad}: {}", crate::rel::text(&o));
            assert!(String::from_utf8_lossy(&o.stderr).contains("ledger.tombstone_retention"), "{bad}: {}", crate::rel::text(&o));
        }
    }
}

both_backends! {
    async fn a_shorter_tombstone_retention_waits_for_accept_when_it_would_compact_many(b: Backend) {
        // A typo such as "4d" for "400d" would compact at the next sweep what `reapply` needs
        // after a backup restore: guarded like a shorter grace (R10), against max_newly_due.
        let env = Env::new(b).await;
        let knobs = |retention: &str| Knobs {
            conversation_grace: "0s",
            max_newly_due: 3,
            extra: format!("[ledger]\ntombstone_retention = \"{retention}\"\n"),
            ..Default::default()
        };
        let text = env.config_text(&knobs("400d"));
        let h = H::with_config(env, &text).await;
        let mut events = org_account("o1", "free", "a1");
        for i in 0..5 {
            h.env.seed_conversation(&format!("c{i}"), "a1", 1).await;
            events += &(created(&format!("c{i}"), "conversation", "a1") + &deleted(&format!("c{i}")));
        }
        h.ingest(&events).await;
        assert_eq!(h.sweep().await.purged, 5);
        h.advance("10d");
        let sync = |retention: &'static str, accept: bool| {
            let cfg = retentiond::config::Config::parse(&h.env.config_text(&knobs(retention)), "t").unwrap();
            let ledger = h.ledger.clone();
            let now = h.now();
            async move {
                retentiond::policy::sync(&ledger, &cfg.policy, now, cfg.max_newly_due, accept, "test").await.unwrap().1
            }
        };
        let tombstones = retentiond::policy::TOMBSTONES.to_string();

        // Lengthening applies at once.
        let r = sync("500d", false).await;
        assert_eq!(r.applied, vec![tombstones.clone()], "{r:?}");
        // "4d": all five (10 days old) would be compacted at once, 5 > 3: held back, and the
        // sweep keeps compacting by the retention in force.
        let r = sync("4d", false).await;
        assert_eq!(r.pending, vec![tombstones.clone()], "{r:?}");
        assert_eq!(r.newly_due[&tombstones], 5);
        assert_eq!(h.sweep().await.tombstones_compacted, 0, "nothing compacted while the change waits");
        assert_eq!(h.state("c0").await, "purged");
        // "9d" brings them within the day too; "12d" brings none within it: applies at once.
        assert_eq!(sync("9d", false).await.pending, vec![tombstones.clone()]);
        let r = sync("12d", false).await;
        assert_eq!((r.applied.clone(), r.newly_due[&tombstones]), (vec![tombstones.clone()], 0), "{r:?}");
        assert_eq!(h.sweep().await.tombstones_compacted, 0);
        // `policy accept` applies the short one; the next sweep compacts.
        let r = sync("4d", true).await;
        assert_eq!(r.applied, vec![tombstones.clone()], "{r:?}");
        let r = h.sweep().await;
        assert_eq!(r.tombstones_compacted, 5, "{r:?}");
        let entries = compaction_entries(&h).await;
        assert_eq!(entries.last().unwrap()["retention"], "4days");
        let accepted = h.ledger.audit_range(1, i64::MAX, 1000).await.unwrap().into_iter()
            .filter(|e| e.action == "policy.accepted" && e.subject == "policy/(tombstones)").count();
        assert_eq!(accepted, 1);
        h.audit_ok().await;
    }
}
