//! Organisations, plans, Zero Data Retention and retention limits (R5, R6, issue 4).

use std::process::Command;

use crate::common::*;
use retentiond::admin::{self, AdminError, PlaceHold, ZdrAction};
use retentiond::holds::HoldScope;

async fn zdr(
    h: &H,
    org: &str,
    action: ZdrAction,
    reason: Option<&str>,
) -> Result<retentiond::admin::ZdrDecision, AdminError> {
    let policy = retentiond::policy::in_force(&h.ledger)
        .await
        .unwrap()
        .unwrap();
    admin::zdr(
        &h.ledger,
        &policy,
        org,
        action,
        "compliance",
        reason,
        h.now(),
    )
    .await
}

both_backends! {
    async fn an_approved_scale_org_loses_covered_logs_at_the_next_sweep(b: Backend) {
        let h = H::new(b, Knobs::default()).await;
        h.ingest(&org_account("o1", "scale", "a1")).await;
        zdr(&h, "o1", ZdrAction::Request, Some("contract")).await.unwrap();
        zdr(&h, "o1", ZdrAction::Approve, None).await.unwrap();
        h.env.seed_api_log("l-chat", "a1", "/v1/chat/completions").await;
        h.env.seed_api_log("l-files", "a1", "/v1/files").await;
        h.ingest(&(created_log("l-chat", "a1", "/v1/chat/completions") + &created_log("l-files", "a1", "/v1/files"))).await;
        let org = retentiond::report::org(&h.ledger, "o1").await.unwrap().unwrap();
        assert_eq!(org.zdr_waiting, 1);
        let r = h.sweep().await;
        assert_eq!(r.purged, 1);
        assert_eq!(h.state("l-chat").await, "purged");
        assert_eq!(h.ledger.resource("l-chat").await.unwrap().unwrap().cause, Some(retentiond::model::Cause::Zdr));
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM api_logs WHERE id = 'l-chat'").await, 0);
        assert_eq!(retentiond::report::org(&h.ledger, "o1").await.unwrap().unwrap().zdr_waiting, 0);
        // Endpoints outside zdr.endpoints keep the monitoring window.
        h.advance("29d");
        assert_eq!(h.sweep().await.purged, 0);
        assert_eq!(h.state("l-files").await, "live");
        h.advance("1d");
        assert_eq!(h.sweep().await.purged, 1);
        assert_eq!(h.ledger.resource("l-files").await.unwrap().unwrap().cause, Some(retentiond::model::Cause::Expired));
    }
}

both_backends! {
    async fn a_free_org_is_refused_and_keeps_logs_for_max_age(b: Backend) {
        let h = H::new(b, Knobs::default()).await;
        h.ingest(&(org_account("o1", "free", "a1") + &created_log("l1", "a1", "/v1/chat/completions"))).await;
        match zdr(&h, "o1", ZdrAction::Request, Some("please")).await {
            Err(AdminError::Conflict(m)) => assert_eq!(m, "ZDR requires the Scale plan"),
            other => panic!("expected refusal, got {other:?}"),
        }
        assert_eq!(h.ledger.org("o1").await.unwrap().unwrap().zdr.to_string(), "off", "nothing changed");
        // Approve and deny only from `requested`.
        assert!(matches!(zdr(&h, "o1", ZdrAction::Approve, None).await, Err(AdminError::Conflict(_))));
        assert!(matches!(zdr(&h, "nope", ZdrAction::Approve, None).await, Err(AdminError::NotFound(_))));
        h.advance("29d");
        assert_eq!(h.sweep().await.purged, 0);
        h.advance("1d");
        assert_eq!(h.sweep().await.purged, 1);
    }
}

both_backends! {
    async fn approval_purges_existing_covered_logs_and_denial_leaves_them(b: Backend) {
        let h = H::new(b, Knobs::default()).await;
        h.ingest(&(org_account("o1", "scale", "a1") + &org_account("o2", "scale", "b1"))).await;
        for (id, acct) in [("l1", "a1"), ("l2", "a1"), ("m1", "b1")] {
            h.env.seed_api_log(id, acct, "/v1/embeddings").await;
            h.ingest(&created_log(id, acct, "/v1/embeddings")).await;
        }
        h.advance("1h");
        zdr(&h, "o1", ZdrAction::Request, Some("contract")).await.unwrap();
        zdr(&h, "o2", ZdrAction::Request, Some("contract")).await.unwrap();
        let denied = zdr(&h, "o2", ZdrAction::Deny, Some("no signed DPA")).await.unwrap();
        assert_eq!(denied.zdr.to_string(), "denied");
        assert!(matches!(zdr(&h, "o1", ZdrAction::Deny, None).await, Err(AdminError::Invalid(_))), "a denial needs a reason");
        assert_eq!(h.sweep().await.purged, 0, "nothing is due before approval");
        let approved = zdr(&h, "o1", ZdrAction::Approve, None).await.unwrap();
        assert_eq!(approved.rescheduled, 2);
        let r = h.sweep().await;
        assert_eq!(r.purged, 2);
        assert_eq!(h.state("m1").await, "live", "the denied org keeps its logs");
        // The denial is in the audit log with its reason: that is how the org is told.
        let entries = h.ledger.audit_range(1, i64::MAX, 1000).await.unwrap();
        let denial = entries.iter().find(|e| e.action == "zdr.denied").expect("denial audited");
        assert!(denial.details.contains("no signed DPA"));
        assert_eq!(denial.subject, "org/o2");
        // A denied org may ask again.
        zdr(&h, "o2", ZdrAction::Request, Some("DPA signed")).await.unwrap();
    }
}

both_backends! {
    async fn stateful_products_keep_their_grace_under_zdr_and_a_hold_still_wins(b: Backend) {
        let h = H::new(b, Knobs { conversation_grace: "30d", file_grace: "30d", ..Default::default() }).await;
        h.ingest(&org_account("o1", "scale", "a1")).await;
        zdr(&h, "o1", ZdrAction::Request, Some("contract")).await.unwrap();
        zdr(&h, "o1", ZdrAction::Approve, None).await.unwrap();
        h.ingest(&(created("c1", "conversation", "a1") + &created("f1", "file", "a1") + &created("g1", "agent", "a1"))).await;
        h.ingest(&(deleted("c1") + &deleted("f1") + &deleted("g1"))).await;
        assert_eq!(h.sweep().await.purged, 0, "stateful kinds are not ZDR-covered");
        for id in ["c1", "f1", "g1"] {
            assert_eq!(h.ledger.resource(id).await.unwrap().unwrap().rule.map(|r| r.as_str()), Some("R1"), "{id}");
        }
        // A hold on the approved org keeps its covered logs.
        let hold = admin::place_hold(
            &h.ledger,
            PlaceHold { case: "K-1".into(), by: "legal".into(), reason: None, scope: HoldScope { org: Some("o1".into()), ..Default::default() } },
            h.now(),
        )
        .await
        .unwrap();
        h.ingest(&created_log("l1", "a1", "/v1/chat/completions")).await;
        let r = h.sweep().await;
        assert_eq!((r.purged, r.held), (0, 1));
        assert_eq!(h.state("l1").await, "live");
        admin::release_hold(&h.ledger, hold.id, "legal", h.now()).await.unwrap();
        assert_eq!(h.sweep().await.purged, 1);
    }
}

both_backends! {
    async fn leaving_the_scale_plan_revokes_zdr(b: Backend) {
        let h = H::new(b, Knobs::default()).await;
        h.ingest(&org_account("o1", "scale", "a1")).await;
        zdr(&h, "o1", ZdrAction::Request, Some("contract")).await.unwrap();
        zdr(&h, "o1", ZdrAction::Approve, None).await.unwrap();
        h.ingest("{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"free\"}\n").await;
        let org = h.ledger.org("o1").await.unwrap().unwrap();
        assert_eq!(org.zdr.to_string(), "off");
        h.ingest(&created_log("l1", "a1", "/v1/chat/completions")).await;
        assert_eq!(h.sweep().await.purged, 0, "normal monitoring window again");
        let entries = h.ledger.audit_range(1, i64::MAX, 1000).await.unwrap();
        assert!(entries.iter().any(|e| e.action == "zdr.revoked"));
    }
}

#[tokio::test]
async fn the_cli_refuses_free_plan_zdr_with_exit_2_and_logs_denials_with_reason() {
    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs::default()));
    let rd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    assert!(rd(&["org", "set", "o1", "--plan", "free"]).status.success());
    let o = rd(&["org", "zdr", "request", "o1", "--reason", "r"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ZDR requires the Scale plan"));
    assert!(
        rd(&["org", "set", "o1", "--plan", "scale"])
            .status
            .success()
    );
    assert!(
        rd(&[
            "org", "zdr", "request", "o1", "--reason", "r", "--by", "acme"
        ])
        .status
        .success()
    );
    let o = rd(&[
        "org",
        "zdr",
        "deny",
        "o1",
        "--reason",
        "missing DPA",
        "--by",
        "bob",
    ]);
    assert!(o.status.success());
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("ZDR denied") && log.contains("missing DPA") && log.contains("by=bob"),
        "{log}"
    );
    let show: serde_json::Value =
        serde_json::from_slice(&rd(&["org", "show", "o1", "--json"]).stdout).unwrap();
    assert_eq!(show["id"], "o1");
    assert_eq!(show["plan"], "scale");
    assert_eq!(show["zdr"], "denied");
    let o = rd(&["org", "set", "o1", "--plan", "gold"]);
    assert_eq!(o.status.code(), Some(2));
}
