//! The lifecycle core against real ledgers (SQLite file and PostgreSQL schema) and a real
//! application database and upload folder. Time moves by hand; nothing sleeps.

use crate::common::*;
use retentiond::ingest::IngestError;

both_backends! {
    async fn grace_is_honoured(b: Backend) {
        let h = H::new(b, Knobs { conversation_grace: "2s", file_grace: "2s", ..Default::default() }).await;
        h.env.seed_conversation("c1", "a1", 3).await;
        let upload = h.env.seed_file("f1", "a1").await;
        h.ingest(&(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &created("f1", "file", "a1"))).await;
        h.ingest(&(deleted("c1") + &deleted("f1"))).await;

        h.advance("1s");
        let r = h.sweep().await;
        assert_eq!(r.purged, 0, "nothing is due 1s into a 2s grace");
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await, 3);
        assert!(exists(&upload));
        assert_eq!(h.state("c1").await, "deleted");

        h.advance("2s");
        let r = h.sweep().await;
        assert_eq!(r.purged, 2);
        assert_eq!(r.removed.rows, 3 + 1 + 1, "3 messages + conversation + file row");
        assert_eq!(r.removed.files, 1);
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await, 0);
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM conversations").await, 0);
        assert!(!exists(&upload));
        assert_eq!(h.state("c1").await, "purged");
        let view = retentiond::report::resource(&h.ledger, "c1").await.unwrap().unwrap();
        assert_eq!(view.cause, Some(retentiond::model::Cause::Manual));
        assert!(view.purged_at.is_some());

        // A purged resource stays a tombstone; more sweeps change nothing.
        assert_eq!(h.sweep().await.purged, 0);
        let receipts = h.receipts().await;
        assert_eq!(receipts.get("c1"), Some(&1));
        assert_eq!(receipts.get("f1"), Some(&1));
        h.audit_ok().await;
    }
}

both_backends! {
    async fn restore_within_grace_keeps_everything(b: Backend) {
        let h = H::new(b, Knobs { conversation_grace: "2s", ..Default::default() }).await;
        h.env.seed_conversation("c1", "a1", 2).await;
        h.ingest(&(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &deleted("c1"))).await;
        h.advance("1s");
        h.ingest(&restored("c1")).await;
        h.advance("10s");
        assert_eq!(h.sweep().await.purged, 0);
        assert_eq!(h.state("c1").await, "live");
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM messages").await, 2);
        assert!(h.ledger.resource("c1").await.unwrap().unwrap().purge_after.is_none());
        // Restoring again, or a purged resource, is refused.
        assert!(matches!(h.try_ingest(&restored("c1")).await, Err(IngestError::Invalid(_))));
    }
}

both_backends! {
    async fn account_deletion_purges_everything_then_the_account(b: Backend) {
        let h = H::new(b, Knobs { account_grace: "10s", file_grace: "1h", conversation_grace: "1h", ..Default::default() }).await;
        h.env.seed_user("a1").await;
        h.env.seed_conversation("c1", "a1", 2).await;
        h.env.seed_conversation("c2", "a1", 1).await;
        let f1 = h.env.seed_file("f1", "a1").await;
        h.ingest(&(org_account("o1", "scale", "a1") + &created("c1", "conversation", "a1") + &created("c2", "conversation", "a1") + &created("f1", "file", "a1"))).await;
        // c2 was deleted by the user before the account deletion: its own 1h grace is later than
        // the account's 10s, so R2 takes the earlier time.
        h.ingest(&deleted("c2")).await;
        h.ingest(&account_deleted("a1")).await;
        for id in ["c1", "f1"] {
            let r = h.ledger.resource(id).await.unwrap().unwrap();
            assert_eq!(r.state.to_string(), "deleted");
            assert_eq!(r.cause, Some(retentiond::model::Cause::Account));
        }
        assert_eq!(h.ledger.resource("c2").await.unwrap().unwrap().cause, Some(retentiond::model::Cause::Manual));
        assert_eq!(h.sweep().await.purged, 0);

        h.advance("11s");
        let r = h.sweep().await;
        assert_eq!(r.purged, 3);
        assert_eq!(r.accounts_purged, 1, "the account goes in the same sweep, after its resources");
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM users").await, 0, "account-level statement ran");
        assert!(!exists(&f1));
        assert!(!exists(&h.env.uploads.join("a1")), "account folder removed");
        let a = h.ledger.account("a1").await.unwrap().unwrap();
        assert_eq!(a.state.to_string(), "purged");
        let receipt = retentiond::report::receipt(&h.ledger, "a1").await.unwrap().unwrap();
        assert_eq!(receipt.resources_purged.values().sum::<i64>(), 3);
        assert!(receipt.not_purged.is_empty());
        assert!(receipt.evidence.account_purged_seq.is_some());
        h.audit_ok().await;
    }
}

both_backends! {
    async fn account_restore_brings_back_exactly_what_the_account_deletion_took(b: Backend) {
        let h = H::new(b, Knobs { account_grace: "10s", conversation_grace: "1h", ..Default::default() }).await;
        h.ingest(&(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &created("c2", "conversation", "a1") + &created("c3", "conversation", "a1"))).await;
        h.ingest(&deleted("c3")).await;
        h.ingest(&account_deleted("a1")).await;
        // R3: a resource cannot be restored while its account deletion is pending.
        match h.try_ingest(&restored("c1")).await {
            Err(IngestError::Invalid(e)) => assert!(e[0].reason.contains("restore the account"), "{e:?}"),
            other => panic!("expected refusal, got {other:?}"),
        }
        h.advance("5s");
        h.ingest(&account_restored("a1")).await;
        assert_eq!(h.state("c1").await, "live");
        assert_eq!(h.state("c2").await, "live");
        let c3 = h.ledger.resource("c3").await.unwrap().unwrap();
        assert_eq!(c3.state.to_string(), "deleted", "the manual deletion stands");
        assert_eq!(c3.purge_after, Some(c3.deleted_at.unwrap().plus(retentiond::model::Span::parse("1h").unwrap())));
        h.advance("10s");
        assert_eq!(h.sweep().await.purged, 0);
        assert_eq!(h.ledger.account("a1").await.unwrap().unwrap().state.to_string(), "active");
    }
}

both_backends! {
    async fn a_bad_line_applies_nothing_and_names_every_bad_line(b: Backend) {
        let h = H::new(b, Knobs::default()).await;
        let mut text = org_account("o1", "free", "a1");
        for i in 0..998 {
            if i == 500 {
                text.push_str("{\"type\":\"resource.created\",\"id\":\"x\",\"kind\":\"conversation\"\n");
            } else {
                text.push_str(&created(&format!("c{i}"), "conversation", "a1"));
            }
        }
        assert_eq!(text.lines().count(), 1000);
        match h.try_ingest(&text).await {
            Err(IngestError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].line, 503);
                assert!(errors[0].reason.contains("malformed JSON"), "{}", errors[0].reason);
            }
            other => panic!("expected rejection, got {other:?}"),
        }
        assert!(h.ledger.org("o1").await.unwrap().is_none(), "nothing applied");
        assert!(h.ledger.resource("c1").await.unwrap().is_none());
        // Semantic errors are reported per line too, all of them.
        let bad = org_account("o1", "free", "a1") + &created("c1", "nope", "a1") + &deleted("zz") + &created("c2", "conversation", "ghost");
        match h.try_ingest(&bad).await {
            Err(IngestError::Invalid(errors)) => {
                let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
                assert_eq!(lines, vec![3, 4, 5]);
                assert!(errors[0].reason.contains("unknown kind `nope`"));
                assert!(errors[1].reason.contains("unknown resource `zz`"));
                assert!(errors[2].reason.contains("unknown account `ghost`"));
            }
            other => panic!("expected rejection, got {other:?}"),
        }
        assert!(h.ledger.org("o1").await.unwrap().is_none());
    }
}

both_backends! {
    async fn event_ids_make_replays_no_ops_and_future_events_are_refused(b: Backend) {
        let h = H::new(b, Knobs::default()).await;
        let text = String::new()
            + "{\"event_id\":\"e0\",\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"free\"}\n"
            + "{\"event_id\":\"e00\",\"type\":\"account.created\",\"account\":\"a1\",\"org\":\"o1\"}\n"
            + "{\"type\":\"resource.created\",\"id\":\"c1\",\"kind\":\"conversation\",\"account\":\"a1\",\"event_id\":\"e1\"}\n"
            + "{\"type\":\"resource.deleted\",\"id\":\"c1\",\"event_id\":\"e2\"}\n";
        let r = h.ingest(&text).await;
        assert_eq!(r.applied, 4);
        let again = h.ingest(&text).await;
        assert_eq!((again.applied, again.duplicates), (0, 4));
        // A repeat inside one input is a replay too.
        let twice = "{\"type\":\"resource.created\",\"id\":\"c9\",\"kind\":\"conversation\",\"account\":\"a1\",\"event_id\":\"e9\"}\n".repeat(2);
        let r = h.ingest(&twice).await;
        assert_eq!((r.applied, r.duplicates), (1, 1));

        let future = "{\"type\":\"resource.deleted\",\"id\":\"c9\",\"at\":\"2026-11-27T00:06:00Z\"}\n";
        match h.try_ingest(future).await {
            Err(IngestError::Invalid(e)) => assert!(e[0].reason.contains("max_clock_skew"), "{e:?}"),
            other => panic!("expected rejection, got {other:?}"),
        }
        let ok = "{\"type\":\"resource.deleted\",\"id\":\"c9\",\"at\":\"2026-11-27T00:04:00Z\"}\n";
        h.ingest(ok).await;
    }
}

both_backends! {
    async fn a_crash_after_claim_is_finished_once_after_the_lease(b: Backend) {
        let h = H::new(b, Knobs { conversation_grace: "1s", lease: "30s", ..Default::default() }).await;
        h.ingest_deleted_conversations(20, 2).await;
        h.advance("2s");
        // A "crashed" instance claimed everything and never came back.
        let lease_until = h.now().plus(retentiond::model::Span::parse("30s").unwrap());
        let claimed = h.ledger.claim_due(h.now(), 100, "crashed-instance", lease_until).await.unwrap();
        assert_eq!(claimed.resources.len(), 20);
        assert_eq!(h.sweep().await.purged, 0, "leased work is not touched before the lease runs out");
        h.advance("31s");
        let r = h.sweep().await;
        assert_eq!(r.purged, 20);
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM messages").await, 0);
        let receipts = h.receipts().await;
        assert_eq!(receipts.len(), 20);
        assert!(receipts.values().all(|n| *n == 1));
        h.audit_ok().await;
    }
}

both_backends! {
    async fn retention_limit_expires_live_resources(b: Backend) {
        let h = H::new(b, Knobs { api_log_max_age: "30d", ..Default::default() }).await;
        h.env.seed_api_log("l1", "a1", "/v1/files").await;
        h.ingest(&(org_account("o1", "free", "a1") + &created_log("l1", "a1", "/v1/files"))).await;
        h.advance("29d");
        assert_eq!(h.sweep().await.purged, 0);
        h.advance("1d");
        assert_eq!(h.sweep().await.purged, 1);
        let r = h.ledger.resource("l1").await.unwrap().unwrap();
        assert_eq!(r.cause, Some(retentiond::model::Cause::Expired));
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM api_logs").await, 0);
    }
}

both_backends! {
    async fn a_backwards_clock_delays_and_a_forward_jump_purges_only_what_is_due(b: Backend) {
        let h = H::new(b, Knobs { conversation_grace: "1h", file_grace: "3h", ..Default::default() }).await;
        h.ingest(&(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &created("f1", "file", "a1") + &deleted("c1") + &deleted("f1"))).await;
        h.advance("2h");
        h.clock.set(h.now().minus(retentiond::model::Span::parse("1d").unwrap()));
        assert_eq!(h.sweep().await.purged, 0, "a clock a day behind purges nothing");
        h.advance("1d");
        let r = h.sweep().await;
        assert_eq!(r.purged, 1, "at +2h only the 1h-grace resource is due");
        assert_eq!(h.state("f1").await, "deleted");
    }
}

both_backends! {
    async fn policy_changes_recompute_schedules_and_mass_shortening_waits_for_accept(b: Backend) {
        let env = Env::new(b).await;
        let mut knobs = Knobs { conversation_grace: "30d", max_newly_due: 5, ..Default::default() };
        let text = env.config_text(&knobs);
        let h = H::with_config(env, &text).await;
        let mut text = org_account("o1", "free", "a1");
        for i in 0..10 {
            text.push_str(&created(&format!("c{i}"), "conversation", "a1"));
            text.push_str(&deleted(&format!("c{i}")));
        }
        h.ingest(&text).await;
        h.advance("1h");
        // Lengthening applies at once.
        knobs.conversation_grace = "60d";
        let cfg = retentiond::config::Config::parse(&h.env.config_text(&knobs), "t").unwrap();
        let (_, report) = retentiond::policy::sync(&h.ledger, &cfg.policy, h.now(), cfg.max_newly_due, false, "test").await.unwrap();
        assert_eq!(report.applied, vec!["conversation".to_string()]);
        assert_eq!(report.rescheduled["conversation"], 10);
        let c0 = h.ledger.resource("c0").await.unwrap().unwrap();
        assert_eq!(c0.purge_after, Some(c0.deleted_at.unwrap().plus(retentiond::model::Span::parse("60d").unwrap())));
        // Shortening that makes 10 > 5 due at once is held back.
        knobs.conversation_grace = "1s";
        let cfg = retentiond::config::Config::parse(&h.env.config_text(&knobs), "t").unwrap();
        let (_, report) = retentiond::policy::sync(&h.ledger, &cfg.policy, h.now(), cfg.max_newly_due, false, "test").await.unwrap();
        assert_eq!(report.pending, vec!["conversation".to_string()]);
        assert_eq!(report.newly_due["conversation"], 10);
        assert_eq!(h.sweep().await.purged, 0, "nothing purged while the change waits");
        // `policy accept` applies it.
        let (_, report) = retentiond::policy::sync(&h.ledger, &cfg.policy, h.now(), cfg.max_newly_due, true, "ops").await.unwrap();
        assert_eq!(report.applied, vec!["conversation".to_string()]);
        assert_eq!(h.sweep().await.purged, 10);
        h.audit_ok().await;
    }
}

both_backends! {
    async fn lines_after_an_account_deletion_in_the_same_input_see_the_earlier_lines(b: Backend) {
        // An account deletion writes through SQL in the middle of the input; the lines after it
        // must still see what the lines before it did, and what the ledger held before.
        let h = H::new(b, Knobs::default()).await;
        h.ingest(&(org_account("o1", "free", "a1") + &org_account("o2", "free", "a2") + &created("c0", "conversation", "a2"))).await;
        let r = h
            .ingest(&(created("c1", "conversation", "a2") + &account_deleted("a1") + &deleted("c1") + &deleted("c0") + &created("c2", "conversation", "a2")))
            .await;
        assert_eq!(r.applied, 5);
        assert_eq!(h.state("c0").await, "deleted");
        assert_eq!(h.state("c1").await, "deleted");
        assert_eq!(h.state("c2").await, "live");
        h.audit_ok().await;
    }
}

both_backends! {
    async fn lines_before_a_zdr_revocation_in_the_same_input_are_rescheduled_too(b: Backend) {
        // A plan change that revokes ZDR reschedules the org's covered resources through SQL; a
        // log created earlier in the same input must be rescheduled like the rest.
        let h = H::new(b, Knobs::default()).await;
        h.ingest(&org_account("o1", "scale", "a1")).await;
        let policy = retentiond::policy::in_force(&h.ledger).await.unwrap().unwrap();
        retentiond::admin::zdr(&h.ledger, &policy, "o1", retentiond::admin::ZdrAction::Request, "compliance", Some("contract"), h.now()).await.unwrap();
        retentiond::admin::zdr(&h.ledger, &policy, "o1", retentiond::admin::ZdrAction::Approve, "compliance", None, h.now()).await.unwrap();
        h.ingest(&created_log("l0", "a1", "/v1/chat/completions")).await;
        let free = "{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"free\"}\n";
        h.ingest(&(created_log("l1", "a1", "/v1/chat/completions") + free + &created_log("l2", "a1", "/v1/chat/completions") + &deleted("l0"))).await;
        let l1 = h.ledger.resource("l1").await.unwrap().unwrap();
        let l2 = h.ledger.resource("l2").await.unwrap().unwrap();
        assert_eq!((l1.purge_after, l1.rule), (l2.purge_after, l2.rule), "l1 kept its ZDR schedule");
        assert_eq!(h.state("l0").await, "deleted");
        h.audit_ok().await;
    }
}

both_backends! {
    async fn an_input_of_several_chunks_sees_its_own_earlier_chunks(b: Backend) {
        // Ingest works in chunks of 5,000 lines and writes a chunk while the next is applied:
        // lines must see rows created one chunk earlier (write still running) and further back.
        let h = H::new(b, Knobs::default()).await;
        let mut input = org_account("o1", "free", "a1") + &org_account("o2", "free", "a2");
        for i in 0..6000 {
            input += &created(&format!("c{i}"), "conversation", if i % 2 == 0 { "a1" } else { "a2" });
        }
        for i in (4990..5010).step_by(2) {
            input += &deleted(&format!("c{i}"));
        }
        input += &account_deleted("a2");
        for i in 6000..10000 {
            input += &created(&format!("c{i}"), "conversation", "a1");
        }
        input += &deleted("c2");
        input += &deleted("c6000");
        let r = h.ingest(&input).await;
        assert_eq!(r.applied as usize, input.lines().count());
        for (id, state, cause) in [
            ("c4990", "deleted", Some(retentiond::model::Cause::Manual)),
            ("c5008", "deleted", Some(retentiond::model::Cause::Manual)),
            ("c4991", "deleted", Some(retentiond::model::Cause::Account)),
            ("c5999", "deleted", Some(retentiond::model::Cause::Account)),
            ("c2", "deleted", Some(retentiond::model::Cause::Manual)),
            ("c6000", "deleted", Some(retentiond::model::Cause::Manual)),
            ("c4", "live", None),
            ("c9999", "live", None),
        ] {
            let v = retentiond::report::resource(&h.ledger, id).await.unwrap().unwrap();
            assert_eq!((v.state.as_str(), v.cause), (state, cause), "{id}");
        }
        h.audit_ok().await;

        // A repeat one chunk later is still a repeat, and the whole input is refused.
        let mut input = String::new();
        for i in 0..5002 {
            input += &created(&format!("d{i}"), "conversation", "a1");
        }
        input += &created("d1", "conversation", "a1");
        match h.try_ingest(&input).await {
            Err(IngestError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].line, 5003);
                assert!(errors[0].reason.contains("already exists"), "{}", errors[0].reason);
            }
            other => panic!("expected the repeat to be refused: {other:?}"),
        }
        assert!(h.ledger.resource("d0").await.unwrap().is_none(), "a refused input applied a line");
        h.audit_ok().await;
    }
}
