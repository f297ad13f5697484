//! The clock (issue 8, R11): jumps backwards delay purges and never advance them, jumps forward
//! purge only what is due at the new time, and — over random sequences of events, clock jumps
//! (both ways) and sweeps with an injected clock — no purge is ever recorded before its
//! `purge_after`, and every schedule is the one the rules give. (tests/lifecycle.rs has the
//! basic one-day-back case; these extend it.)

use crate::common::*;
use crate::rel::*;
use proptest::prelude::*;
use retentiond::model::{Span, Timestamp};

fn secs(s: i64) -> Span {
    Span::from_millis(s * 1000)
}

both_backends! {
    async fn clock_jumps_back_and_forth_across_kinds_accounts_and_retention_limits(b: Backend) {
        let h = H::new(b, Knobs { conversation_grace: "1h", file_grace: "6h", account_grace: "2h", api_log_max_age: "30d", ..Default::default() }).await;
        h.ingest(&(org_account("o1", "free", "a1") + &org_account("o1", "free", "a2")
            + &created("c1", "conversation", "a1") + &created("f1", "file", "a1") + &created("l1", "api_log", "a1")
            + &created("c2", "conversation", "a2") + &created("live", "conversation", "a1"))).await;
        h.ingest(&(deleted("c1") + &deleted("f1") + &account_deleted("a2"))).await;
        let t0 = h.now();

        // 3h later c1 and a2 are due — but the clock has just jumped back a day.
        h.clock.set(t0.plus(secs(3 * 3600)).minus(secs(86_400)));
        let r = h.sweep().await;
        assert_eq!((r.purged, r.accounts_purged), (0, 0), "a clock a day behind purges nothing");
        // Sweeps while it is behind, even as it creeps forward, still purge nothing early.
        for _ in 0..3 {
            h.advance("6h");
            assert_eq!(h.sweep().await.purged, 0);
        }
        // Back to the right time (t0 + 3h): c1 (1h) and c2 with its account (2h) go; f1 (6h) waits.
        h.clock.set(t0.plus(secs(3 * 3600)));
        let r = h.sweep().await;
        assert_eq!((r.purged, r.accounts_purged), (2, 1));
        assert_eq!(h.state("f1").await, "deleted");
        // Back again by a day, then a forward jump of 40 days: only what is due then goes —
        // f1, and l1 by its 30-day retention limit; the live conversation stays.
        h.clock.set(t0.minus(secs(86_400)));
        assert_eq!(h.sweep().await.purged, 0);
        h.clock.set(t0.plus(secs(40 * 86_400)));
        let r = h.sweep().await;
        assert_eq!(r.purged, 2);
        assert_eq!(h.state("l1").await, "purged");
        assert_eq!(h.state("live").await, "live");
        assert_eq!(h.ledger.resource("l1").await.unwrap().unwrap().cause, Some(retentiond::model::Cause::Expired));
        // A jump of a century purges nothing more: the live conversation has no retention limit.
        h.clock.set(t0.plus(secs(36_500 * 86_400)));
        assert_eq!(h.sweep().await.purged, 0);

        let rec = receipts(&h.ledger).await;
        assert_eq!(rec.len(), 4);
        for (id, d) in &rec {
            let pa = Timestamp::parse_rfc3339(d[0]["purge_after"].as_str().unwrap()).unwrap();
            let at = Timestamp::parse_rfc3339(d[0]["purged_at"].as_str().unwrap()).unwrap();
            assert!(at >= pa, "{id} purged at {at} before {pa}");
        }
        h.audit_ok().await;
    }
}

both_backends! {
    async fn a_clock_behind_stamps_deletions_with_its_time_and_their_grace_runs_from_there(b: Backend) {
        // Deletions ingested while the clock is a day behind are stamped with that clock: their
        // grace runs from then, so the purge comes no earlier than the stamp says.
        let h = H::new(b, Knobs { conversation_grace: "1h", ..Default::default() }).await;
        h.ingest(&(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1"))).await;
        let t0 = h.now();
        h.clock.set(t0.minus(secs(86_400)));
        // c1 was created (by the clock) a day "later": a deletion dated before its creation is
        // refused, all or nothing, with the reason.
        match h.try_ingest(&deleted("c1")).await {
            Err(retentiond::ingest::IngestError::Invalid(e)) => assert!(e[0].reason.contains("before it was created"), "{e:?}"),
            other => panic!("expected refusal, got {other:?}"),
        }
        h.ingest(&created("c2", "conversation", "a1")).await;
        h.ingest(&deleted("c2")).await;
        let c2 = h.ledger.resource("c2").await.unwrap().unwrap();
        assert_eq!(c2.purge_after, Some(t0.minus(secs(86_400)).plus(secs(3600))));
        h.advance("59m");
        assert_eq!(h.sweep().await.purged, 0);
        h.advance("1m");
        assert_eq!(h.sweep().await.purged, 1);
        h.audit_ok().await;
    }
}

// ---- property: no purge before its time, under any clock ------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Create {
        kind: u8,
        account: usize,
    },
    /// Delete resource `i` with `at` = now + offset seconds (0: no `at`).
    Delete {
        i: usize,
        offset: i64,
    },
    Restore(usize),
    AccountDelete(usize),
    AccountRestore(usize),
    /// Move the clock by this many seconds (negative: backwards).
    Jump(i64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..3usize).prop_map(|(kind, account)| Op::Create { kind, account }),
        4 => (0..16usize, proptest::sample::select(vec![0i64, 0, 0, -500, -60, 120, 290, 400]))
            .prop_map(|(i, offset)| Op::Delete { i, offset }),
        1 => (0..16usize).prop_map(Op::Restore),
        1 => (0..3usize).prop_map(Op::AccountDelete),
        1 => (0..3usize).prop_map(Op::AccountRestore),
        5 => prop_oneof![
            1 => Just(-86_400i64),
            1 => Just(-3_600),
            2 => -120..0i64,
            6 => 1..150i64,
            1 => Just(3_600),
            1 => Just(86_400),
        ]
        .prop_map(Op::Jump),
        4 => Just(Op::Sweep),
    ]
}

const KINDS: [&str; 3] = ["conversation", "file", "api_log"];
/// Grace after a manual delete per kind, seconds (api_log: 0s plus a 120s retention limit).
const GRACE: [i64; 3] = [30, 60, 0];
const ACCOUNT_GRACE: i64 = 90;
const MAX_AGE_API_LOG: i64 = 120;
const SKEW: i64 = 300;

#[derive(Debug, Clone)]
struct MRes {
    id: String,
    kind: usize,
    account: usize,
    created: i64,
    /// (deleted_at, by the account deletion)
    deleted: Option<(i64, bool)>,
    purged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MAcct {
    Active,
    Pending(i64),
    Purged,
}

impl MRes {
    /// The rules' schedule (R1, R2, R5), in clock milliseconds.
    fn due(&self, accounts: &[MAcct]) -> Option<i64> {
        let mut p = Vec::new();
        if let Some((at, by_account)) = self.deleted {
            p.push(
                at + 1000
                    * if by_account {
                        ACCOUNT_GRACE
                    } else {
                        GRACE[self.kind]
                    },
            );
            if let MAcct::Pending(a) = accounts[self.account] {
                p.push(a + 1000 * ACCOUNT_GRACE);
            }
        }
        if self.kind == 2 {
            p.push(self.created + 1000 * MAX_AGE_API_LOG);
        }
        p.into_iter().min()
    }
}

async fn run_clock_model(b: Backend, ops: Vec<Op>) -> (usize, usize, usize) {
    let h = H::new(
        b,
        Knobs {
            conversation_grace: "30s",
            file_grace: "60s",
            account_grace: "90s",
            api_log_max_age: "120s",
            ..Default::default()
        },
    )
    .await;
    let mut accounts = vec![MAcct::Active; 3];
    let mut pre = String::new();
    for a in 0..3 {
        pre.push_str(&org_account("o1", "free", &format!("a{a}")));
    }
    h.ingest(&pre).await;
    let mut res: Vec<MRes> = Vec::new();
    let (mut sweeps, mut jumps_back, mut purges) = (0, 0, 0);
    let expect_ok =
        |r: Result<retentiond::ingest::IngestReport, retentiond::ingest::IngestError>,
         what: &str| {
            if let Err(e) = r {
                panic!("{what} refused: {e:?}");
            }
        };
    for op in ops {
        let now = h.now().millis();
        match op {
            Op::Create { kind, account } => {
                if accounts[account] != MAcct::Active {
                    continue;
                }
                let id = format!("r{}", res.len());
                expect_ok(
                    h.try_ingest(&created(&id, KINDS[kind as usize], &format!("a{account}")))
                        .await,
                    &id,
                );
                res.push(MRes {
                    id,
                    kind: kind as usize,
                    account,
                    created: now,
                    deleted: None,
                    purged: false,
                });
            }
            Op::Delete { i, offset } => {
                let Some(r) = res.get_mut(i) else { continue };
                if r.purged || r.deleted.is_some() {
                    continue;
                }
                let at = now + offset * 1000;
                let line = if offset == 0 {
                    deleted(&r.id)
                } else {
                    format!(
                        "{{\"type\":\"resource.deleted\",\"id\":\"{}\",\"at\":\"{}\"}}\n",
                        r.id,
                        Timestamp::from_millis(at).rfc3339()
                    )
                };
                let got = h.try_ingest(&line).await;
                if at < r.created || offset > SKEW {
                    assert!(
                        got.is_err(),
                        "delete of {} at {at} (created {}, now {now}) accepted",
                        r.id,
                        r.created
                    );
                } else {
                    expect_ok(got, &line);
                    r.deleted = Some((at, false));
                }
            }
            Op::Restore(i) => {
                let Some(r) = res.get_mut(i) else { continue };
                if r.purged || r.deleted.is_none() || accounts[r.account] != MAcct::Active {
                    continue;
                }
                expect_ok(h.try_ingest(&restored(&r.id)).await, "restore");
                r.deleted = None;
            }
            Op::AccountDelete(a) => {
                if accounts[a] != MAcct::Active {
                    continue;
                }
                expect_ok(
                    h.try_ingest(&account_deleted(&format!("a{a}"))).await,
                    "account deletion",
                );
                accounts[a] = MAcct::Pending(now);
                for r in res
                    .iter_mut()
                    .filter(|r| r.account == a && !r.purged && r.deleted.is_none())
                {
                    r.deleted = Some((now, true));
                }
            }
            Op::AccountRestore(a) => {
                if !matches!(accounts[a], MAcct::Pending(_)) {
                    continue;
                }
                expect_ok(
                    h.try_ingest(&account_restored(&format!("a{a}"))).await,
                    "account restore",
                );
                accounts[a] = MAcct::Active;
                for r in res.iter_mut().filter(|r| r.account == a && !r.purged) {
                    if matches!(r.deleted, Some((_, true))) {
                        r.deleted = None;
                    }
                }
            }
            Op::Jump(s) => {
                if s < 0 {
                    jumps_back += 1;
                }
                h.clock.set(Timestamp::from_millis(now + s * 1000));
            }
            Op::Sweep => {
                sweeps += 1;
                h.sweep().await;
                for r in res.iter_mut().filter(|r| !r.purged) {
                    let row = h.ledger.resource(&r.id).await.unwrap().unwrap();
                    let due = r.due(&accounts);
                    let ctx = format!(
                        "{} ({}) at clock {now}: model due {due:?}, ledger {row:?}",
                        r.id, KINDS[r.kind]
                    );
                    if row.state.to_string() == "purged" {
                        assert!(due.is_some_and(|d| d <= now), "EARLY purge of {ctx}");
                        assert_eq!(row.purged_at, Some(Timestamp::from_millis(now)), "{ctx}");
                        assert!(row.purge_after.is_some_and(|p| p.millis() <= now), "{ctx}");
                        r.purged = true;
                        purges += 1;
                    } else {
                        assert_eq!(
                            row.purge_after.map(|p| p.millis()),
                            due,
                            "schedule of {ctx}"
                        );
                        assert!(due.is_none_or(|d| d > now), "missed purge of {ctx}");
                    }
                }
                for (a, st) in accounts.iter_mut().enumerate() {
                    let row = h.ledger.account(&format!("a{a}")).await.unwrap().unwrap();
                    if row.state.to_string() == "purged" && *st != MAcct::Purged {
                        let MAcct::Pending(at) = *st else {
                            panic!("account a{a} purged while {st:?}")
                        };
                        assert!(
                            at + ACCOUNT_GRACE * 1000 <= now,
                            "EARLY account purge of a{a}"
                        );
                        assert!(res.iter().filter(|r| r.account == a).all(|r| r.purged));
                        *st = MAcct::Purged;
                    }
                }
            }
        }
    }
    // Everything the rules make due goes in the end; nothing else does.
    let end = h.now().plus(secs(365 * 86_400));
    h.clock.set(end);
    h.sweep().await;
    for r in &res {
        let state = h.state(&r.id).await;
        let due = r.purged || r.due(&accounts).is_some();
        assert_eq!(
            state == "purged",
            due,
            "{} at the end: {state}, model {r:?}",
            r.id
        );
    }
    let rec = receipts(&h.ledger).await;
    for (id, d) in &rec {
        assert_eq!(d.len(), 1, "{id}: one receipt");
        let pa = Timestamp::parse_rfc3339(d[0]["purge_after"].as_str().unwrap()).unwrap();
        let at = Timestamp::parse_rfc3339(d[0]["purged_at"].as_str().unwrap()).unwrap();
        assert!(at >= pa, "{id} purged at {at} before its purge_after {pa}");
    }
    h.audit_ok().await;
    (sweeps, jumps_back, purges)
}

fn clock_cases(b: Backend, default: u32) {
    let cases = std::env::var("RETENTIOND_CLOCK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let totals = std::sync::Mutex::new((0usize, 0usize, 0usize));
    runner
        .run(&proptest::collection::vec(op(), 10..60), |ops| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (s, j, p) = rt.block_on(run_clock_model(b, ops));
            let mut t = totals.lock().unwrap();
            t.0 += s;
            t.1 += j;
            t.2 += p;
            Ok(())
        })
        .unwrap();
    let t = totals.lock().unwrap();
    report(
        "clock",
        format!(
            "{b:?}: {cases} random histories, {} sweeps, {} backward jumps, {} purges checked against the rules' schedule: 0 early, 0 missed",
            t.0, t.1, t.2
        ),
    );
}

#[test]
fn no_purge_before_its_time_under_a_jumping_clock_sqlite() {
    clock_cases(Backend::Sqlite, 32);
}

#[test]
fn no_purge_before_its_time_under_a_jumping_clock_postgres() {
    if pg_disabled() {
        eprintln!("RETENTIOND_TEST_PG=off: PostgreSQL variant skipped on request");
        return;
    }
    clock_cases(Backend::Postgres, 10);
}
