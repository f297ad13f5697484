//! Issue 29, logs by time window: the built binary purges a log table by age in a real SQLite
//! or PostgreSQL application database (the ledger on the same backend), with holds, ZDR, an
//! account purge, a dry run and a crash mid-pass; the ledger keeps no row per log.

use std::collections::BTreeMap;

use chrono::{Duration as Age, Utc};
use sqlx::{Connection, Executor, Row};

use crate::common::*;
use crate::rel::{bin, json, ok, rd, rd_stdin, stderr};

const CHAT: &str = "/v1/chat/completions";
const FILES: &str = "/v1/files";
const DAYS: i64 = 40;

/// The log table of one test, in the application database of its backend.
struct Logs {
    backend: Backend,
    /// The `app_db` target's URL.
    url: String,
}

/// One seeded row: (id, org, account, endpoint, age in hours).
type Seed = (String, String, String, &'static str, i64);

impl Logs {
    async fn new(env: &Env) -> Logs {
        let logs = match env.backend {
            Backend::Sqlite => Logs {
                backend: Backend::Sqlite,
                url: format!("sqlite://{}", env.app_db.display()),
            },
            Backend::Postgres => Logs {
                backend: Backend::Postgres,
                url: env.ledger_url.clone(),
            },
        };
        let ddl = match logs.backend {
            Backend::Sqlite => {
                "CREATE TABLE request_logs (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, account_id TEXT NOT NULL, \
                 endpoint TEXT NOT NULL, body TEXT, created_at TEXT NOT NULL); \
                 CREATE INDEX request_logs_created ON request_logs (created_at);"
            }
            Backend::Postgres => {
                "CREATE TABLE request_logs (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, account_id TEXT NOT NULL, \
                 endpoint TEXT NOT NULL, body TEXT, created_at TIMESTAMPTZ NOT NULL); \
                 CREATE INDEX request_logs_created ON request_logs (created_at); \
                 CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL);"
            }
        };
        logs.exec(ddl).await;
        logs
    }

    async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                c.execute(sqlx::AssertSqlSafe(sql.to_string()))
                    .await
                    .unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                c.execute(sqlx::AssertSqlSafe(sql.to_string()))
                    .await
                    .unwrap();
            }
        }
    }

    /// The ids left, sorted.
    async fn ids(&self) -> Vec<String> {
        let q = "SELECT id FROM request_logs ORDER BY id";
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(q)
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(q)
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
        }
    }

    /// Inserts rows created `hours` ago (RFC 3339 text on SQLite, timestamptz on PostgreSQL).
    async fn insert(&self, rows: &[Seed]) {
        let now = Utc::now();
        let mut sql = String::from(
            "INSERT INTO request_logs (id, org_id, account_id, endpoint, body, created_at) VALUES ",
        );
        for (i, (id, org, account, endpoint, hours)) in rows.iter().enumerate() {
            let at =
                (now - Age::hours(*hours)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "('{id}', '{org}', '{account}', '{endpoint}', 'user text {id}', '{at}')"
            ));
        }
        self.exec(&sql).await;
    }

    fn config(&self, env: &Env, batch: usize) -> std::path::PathBuf {
        let extra = format!(
            r#"
[kinds.request_log]
tracking = "window"
max_age = "30d"
zdr = true
targets = ["app_db"]

[targets.app_db.windows.request_log]
table = "request_logs"
created_at = "created_at"
org = "org_id"
account = "account_id"
endpoint = "endpoint"
id = "id"
batch = {batch}
"#
        );
        env.write_config(&env.config_text(&Knobs {
            account_grace: "1s",
            app_db_url: Some(self.url.clone()),
            extra,
            ..Default::default()
        }))
    }
}

/// Rows over 40 days for three orgs (one account each, plus `a2b` in o2), on a covered and an
/// uncovered endpoint, 12 h past each day so that no row sits on the 30-day edge.
fn seed_rows() -> Vec<Seed> {
    let mut rows = Vec::new();
    for (org, accounts) in [
        ("o1", &["a1"][..]),
        ("o2", &["a2", "a2b"][..]),
        ("o3", &["a3"][..]),
    ] {
        for account in accounts {
            for day in 0..DAYS {
                for endpoint in [CHAT, FILES] {
                    let e = if endpoint == CHAT { "chat" } else { "files" };
                    rows.push((
                        format!("{account}-{day:02}-{e}"),
                        org.to_string(),
                        account.to_string(),
                        endpoint,
                        day * 24 + 12,
                    ));
                }
            }
        }
    }
    rows
}

/// Creates the orgs and accounts of [`seed_rows`] (and the events in `more`) with the binary.
fn ingest_seeded_orgs(cfg: &std::path::Path, more: &str) {
    let events = org_account("o1", "free", "a1")
        + &org_account("o2", "free", "a2")
        + "{\"type\":\"account.created\",\"account\":\"a2b\",\"org\":\"o2\"}\n"
        + &org_account("o3", "scale", "a3")
        + more;
    ok(&rd_stdin(cfg, &["ingest", "-"], &events));
}

fn day_of(id: &str) -> i64 {
    id.split('-').nth(1).unwrap().parse().unwrap()
}

both_backends! {
    async fn logs_go_by_time_window_with_holds_zdr_accounts_and_a_crash(b: Backend) {
        let env = Env::new(b).await;
        let logs = Logs::new(&env).await;
        let cfg = logs.config(&env, 7);
        let seeded = seed_rows();
        logs.insert(&seeded).await;
        let all: Vec<String> = {
            let mut v: Vec<String> = seeded.iter().map(|r| r.0.clone()).collect();
            v.sort();
            v
        };

        // The mapping is checked against the live table.
        let checked = json(&rd(&cfg, &["check-config", "--json"]));
        assert!(checked.get("warnings").is_none(), "created_at is indexed: {checked}");

        ingest_seeded_orgs(&cfg, "");
        // W7: a windowed kind takes no events.
        let refused = rd_stdin(&cfg, &["ingest", "-"], &created("r1", "request_log", "a1"));
        assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
        assert!(stderr(&refused).contains("request_log") && stderr(&refused).contains("no events"), "{}", stderr(&refused));

        ok(&rd(&cfg, &["org", "zdr", "request", "o3", "--reason", "contract"]));
        ok(&rd(&cfg, &["org", "zdr", "approve", "o3"]));
        // o1 is held for days 33..=35 (created range).
        let now = Utc::now();
        let from = (now - Age::hours(35 * 24 + 12) - Age::minutes(1)).to_rfc3339();
        let to = (now - Age::hours(33 * 24 + 12) + Age::minutes(1)).to_rfc3339();
        let hold = json(&rd(&cfg, &["hold", "place", "--case", "LIT-1", "--by", "legal", "--org", "o1", "--created-from", &from, "--created-to", &to, "--json"]));
        let hold_id = hold["id"].as_i64().unwrap().to_string();

        let held = |id: &str| id.starts_with("a1-") && (33..=35).contains(&day_of(id));
        let zdr = |id: &str| id.starts_with("a3-") && id.ends_with("-chat");
        let expected: Vec<String> = all.iter().filter(|id| (day_of(id) < 30 || held(id)) && !zdr(id)).cloned().collect();

        // A dry run counts, and changes nothing.
        let dry = json(&rd(&cfg, &["sweep", "--once", "--dry-run", "--json"]));
        let w = &dry["windows"][0];
        assert_eq!(w["kind"], "request_log");
        assert_eq!(w["rows"].as_u64().unwrap() as usize, all.len() - expected.len(), "{dry}");
        assert_eq!(w["held_back"], 6, "o1's days 33..=35, both endpoints: {dry}");
        assert_eq!(logs.ids().await, all);
        // `status` reads the same figures live from the table, and the oldest row's age.
        let status = json(&rd(&cfg, &["status", "--json"]));
        assert_eq!(status["window_tables"][0]["rows"], w["rows"], "{status}");
        assert_eq!(status["window_tables"][0]["held_back"], 6, "{status}");
        let text = ok(&rd(&cfg, &["status"]));
        assert!(text.contains("window     request_log in app_db: oldest row 39d 12h old, 104 row(s) due now, holds keep 6"), "{text}");
        // `plan` forecasts from the table: the 104 due now, then days 29..20 as they come of
        // age over the next 10 days (8 rows a day, but o3's chat row is due already for ZDR).
        let plan = json(&rd(&cfg, &["plan", "--until", "10d", "--json"]));
        assert_eq!(plan["days"][0]["day"], "overdue", "{plan}");
        assert_eq!(plan["days"][0]["purges"]["request_log"], 104, "{plan}");
        assert_eq!(plan["days"][0]["held"]["request_log"], 6, "{plan}");
        assert_eq!(plan["total"], 104 + 10 * 7, "{plan}");
        assert_eq!(plan["total_held"], 6, "{plan}");

        // A crash after the first batch of 7 rows; the next sweep finishes the pass and says so.
        let crashed = bin().arg("--config").arg(&cfg).args(["sweep", "--once"]).env("RETENTIOND_CRASH_AT", "window_batch_deleted").output().unwrap();
        assert_eq!(crashed.status.code(), Some(86), "{}", stderr(&crashed));
        assert_eq!(logs.ids().await.len(), all.len() - 7);
        // Its lease (5m) is still running: a sweep now leaves the pass to its owner.
        let waiting = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(waiting["window_passes"].as_array().unwrap().len(), 0, "{waiting}");
        let lapse = cfg.with_file_name("lapse.toml");
        std::fs::write(&lapse, std::fs::read_to_string(&cfg).unwrap().replace("lease = \"5m\"", "lease = \"1s\"")).unwrap();
        // The crashed pass took its lease with the 5m config: expire it by hand.
        logs_lease_expired(&env).await;
        let report = json(&rd(&lapse, &["sweep", "--once", "--json"]));
        let pass = &report["window_passes"][0];
        assert_eq!(pass["resumed"], true, "{report}");
        // The batch deleted just before the crash was never added to the pass: the resumed
        // entry counts what the crashed pass recorded, and the check after it proves the rest.
        assert_eq!(pass["rows"].as_u64().unwrap() as usize, all.len() - expected.len() - 7, "{report}");
        assert_eq!(pass["held_back"], 6);
        // ZDR runs first: the crashed pass's batch of 7 was o3's, of its 40 covered rows.
        assert_eq!(pass["zdr_rows"]["o3"], 40 - 7, "{report}");
        assert!(pass["zdr_violations"].as_object().unwrap().is_empty(), "the first pass after the approval: no violation");
        assert!(pass["error"].is_null(), "{report}");
        assert_eq!(logs.ids().await, expected);

        // Nothing due: the next pass deletes nothing and writes no audit entry.
        let idle = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(idle["window_passes"][0]["rows"], 0, "{idle}");

        // W5: a covered row stored for o3 after the approval is deleted and reported.
        logs.insert(&[("late-chat".into(), "o3".into(), "a3".into(), CHAT, 0), ("late-files".into(), "o3".into(), "a3".into(), FILES, 0)]).await;
        let violation = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(violation["window_passes"][0]["zdr_violations"]["o3"], 1, "{violation}");
        let mut expected2 = expected.clone();
        expected2.push("late-files".into());
        expected2.sort();
        assert_eq!(logs.ids().await, expected2);

        // Released, the held rows go on the next pass.
        ok(&rd(&cfg, &["hold", "release", &hold_id, "--by", "legal"]));
        let released = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(released["window_passes"][0]["rows"], 6, "{released}");
        assert!(logs.ids().await.iter().all(|id| !held(id)));

        // W6: an account purge takes its rows, and its receipt counts them.
        ok(&rd_stdin(&cfg, &["ingest", "-"], &account_deleted("a2b")));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let purged = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(purged["accounts_purged"], 1, "{purged}");
        assert!(logs.ids().await.iter().all(|id| !id.starts_with("a2b-")));
        let receipt = json(&rd(&cfg, &["audit", "receipt", "--account", "a2b", "--json"]));
        assert_eq!(receipt["window_rows"]["request_log"], 60, "30 days x 2 endpoints: {receipt}");

        // The ledger has no row per log; the chain verifies and holds the passes.
        let status = json(&rd(&cfg, &["status", "--json"]));
        let resources: i64 = status["resources"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum();
        assert_eq!(resources, 0, "{status}");
        let v = json(&rd(&cfg, &["audit", "verify", "--json"]));
        assert_eq!(v["ok"], true);
        let export = ok(&rd(&cfg, &["audit", "export"]));
        let actions: BTreeMap<String, usize> = export.lines().fold(BTreeMap::new(), |mut m, l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            *m.entry(e["action"].as_str().unwrap().to_string()).or_default() += 1;
            m
        });
        assert_eq!(actions.get("window.purged"), Some(&3), "the resumed pass, the violation's and the release's: {actions:?}");
        assert_eq!(actions.get("zdr.violation"), Some(&1), "{actions:?}");
        assert!(!export.contains("user text"), "no user content in the audit log");
    }
}

/// Ends the lease of every window pass now, as if its owner had been dead for its whole lease.
async fn logs_lease_expired(env: &Env) {
    let sql = "UPDATE window_passes SET lease_until = 0 WHERE owner IS NOT NULL";
    match env.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&env.ledger_url)
                .await
                .unwrap();
            c.execute(sql).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&env.ledger_url).await.unwrap();
            c.execute(sql).await.unwrap();
        }
    }
}

/// Config errors for windowed kinds name the key; a mapping that does not match the live table
/// is refused by `check-config`, and a `created_at` without an index is a warning.
#[tokio::test]
async fn window_config_mistakes_are_named() {
    let env = Env::new(Backend::Sqlite).await;
    let logs = Logs::new(&env).await;
    let base = std::fs::read_to_string(logs.config(&env, 100)).unwrap();
    for (from, to, key) in [
        (
            "max_age = \"30d\"\nzdr = true\ntargets = [\"app_db\"]\n\n[targets.app_db.windows",
            "zdr = true\ntargets = [\"app_db\"]\n\n[targets.app_db.windows",
            "kinds.request_log.max_age",
        ),
        (
            "endpoint = \"endpoint\"\n",
            "",
            "targets.app_db.windows.request_log.endpoint",
        ),
        (
            "table = \"request_logs\"",
            "table = \"request_logs; DROP TABLE users\"",
            "targets.app_db.windows.request_log.table",
        ),
        (
            "batch = 100",
            "batch = 100\ntime_format = \"native\"",
            "targets.app_db.windows.request_log.time_format",
        ),
        (
            "batch = 100",
            "batch = 100\npartitioned = true",
            "targets.app_db.windows.request_log.partitioned",
        ),
        (
            "[targets.app_db.windows.request_log]",
            "[targets.app_db.windows.conversation]",
            "kinds.request_log.targets[0]",
        ),
        (
            "targets = [\"app_db\"]\n\n[targets.app_db.windows",
            "targets = [\"uploads\"]\n\n[targets.app_db.windows",
            "kinds.request_log.targets[0]",
        ),
    ] {
        assert!(base.contains(from), "{from}");
        let cfg = env.write_config(&base.replace(from, to));
        let o = rd(&cfg, &["check-config"]);
        assert_eq!(o.status.code(), Some(2), "{key}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{key}: {}", stderr(&o));
    }
    // Against the live table: a missing column is bad input; no index is a warning.
    let cfg = env.write_config(&base.replace("org = \"org_id\"", "org = \"organisation\""));
    let o = rd(&cfg, &["check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("targets.app_db.windows.request_log")
            && stderr(&o).contains("organisation"),
        "{}",
        stderr(&o)
    );
    logs.exec("DROP INDEX request_logs_created").await;
    let cfg = env.write_config(&base);
    let out = ok(&rd(&cfg, &["check-config"]));
    assert!(
        out.contains("warning: target `app_db`: request_logs.created_at has no index"),
        "{out}"
    );
    // Times that are not RFC 3339 text are refused before anything is deleted.
    logs.exec("INSERT INTO request_logs VALUES ('x', 'o1', 'a1', '/v1/files', 'b', '2026-01-01 10:00:00')").await;
    let o = rd(&cfg, &["check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("RFC 3339"), "{}", stderr(&o));
}

/// A partitioned log table on PostgreSQL: each batch deletes within one partition, because a
/// `ctid` names a row only within its own table. Both partitions' first rows sit at the same
/// ctids; a DELETE by ctid on the parent would take the young partition's rows too.
#[tokio::test]
async fn a_partitioned_table_loses_only_its_due_rows() {
    let env = Env::new(Backend::Postgres).await;
    let logs = Logs::new(&env).await;
    let now = Utc::now();
    let bound = (now - Age::days(20)).to_rfc3339();
    logs.exec(&format!(
        "DROP TABLE request_logs; \
         CREATE TABLE request_logs (id TEXT NOT NULL, org_id TEXT NOT NULL, account_id TEXT NOT NULL, \
         endpoint TEXT NOT NULL, body TEXT, created_at TIMESTAMPTZ NOT NULL) PARTITION BY RANGE (created_at); \
         CREATE INDEX request_logs_created ON request_logs (created_at); \
         CREATE TABLE request_logs_old PARTITION OF request_logs FOR VALUES FROM (MINVALUE) TO ('{bound}'); \
         CREATE TABLE request_logs_new PARTITION OF request_logs FOR VALUES FROM ('{bound}') TO (MAXVALUE);"
    ))
    .await;
    let mut rows: Vec<Seed> = Vec::new();
    for i in 0..10 {
        rows.push((
            format!("old-{i:02}"),
            "o1".into(),
            "a1".into(),
            FILES,
            35 * 24,
        ));
        rows.push((format!("new-{i:02}"), "o1".into(), "a1".into(), FILES, 24));
    }
    logs.insert(&rows).await;
    let cfg = logs.config(&env, 4);
    ok(&rd_stdin(
        &cfg,
        &["ingest", "-"],
        &org_account("o1", "free", "a1"),
    ));
    let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(report["window_passes"][0]["rows"], 10, "{report}");
    assert!(report["window_passes"][0]["error"].is_null(), "{report}");
    let left = logs.ids().await;
    assert_eq!(
        left,
        (0..10).map(|i| format!("new-{i:02}")).collect::<Vec<_>>()
    );
}

both_backends! {
    /// W4: an org's own window, within the kind's bounds; a shortening that makes more rows due
    /// than `[safety] max_newly_due` waits for `policy accept`; a lengthening applies at once.
    async fn per_org_retention_is_guarded_then_accepted(b: Backend) {
        let env = Env::new(b).await;
        let logs = Logs::new(&env).await;
        let base = std::fs::read_to_string(logs.config(&env, 50)).unwrap();
        let text = base
            .replace("max_newly_due = 1000", "max_newly_due = 10")
            .replace("tracking = \"window\"\nmax_age = \"30d\"", "tracking = \"window\"\nmax_age = \"30d\"\nmax_age_min = \"7d\"\nmax_age_max = \"90d\"");
        assert_ne!(text, base);
        let cfg = env.write_config(&text);
        let seeded = seed_rows();
        logs.insert(&seeded).await;
        ingest_seeded_orgs(&cfg, "");

        // Bad input names what is wrong and changes nothing.
        for (args, says) in [
            (vec!["o9", "--kind", "request_log", "--max-age", "20d"], "unknown org `o9`"),
            (vec!["o1", "--kind", "conversation", "--max-age", "20d"], "not purged by time window"),
            (vec!["o1", "--kind", "request_log", "--max-age", "1d"], "kinds.request_log.max_age_min (7days)"),
            (vec!["o1", "--kind", "request_log", "--max-age", "365d"], "kinds.request_log.max_age_max (90days)"),
        ] {
            let o = rd(&cfg, &[&["org", "retention"][..], &args].concat());
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        }

        // o2 keeps 60 days: a lengthening makes nothing due and applies at once.
        let longer = json(&rd(&cfg, &["org", "retention", "o2", "--kind", "request_log", "--max-age", "60d", "--by", "alice", "--json"]));
        assert_eq!((longer["pending"].clone(), longer["newly_due"].clone(), longer["max_age"].clone()), (false.into(), 0.into(), "60days".into()), "{longer}");
        // o1 down to 20 days: days 19..=28 fall due within a day (10 days x 2 endpoints), over 10.
        let shorter = json(&rd(&cfg, &["org", "retention", "o1", "--kind", "request_log", "--max-age", "20d", "--by", "alice", "--json"]));
        assert_eq!((shorter["pending"].clone(), shorter["newly_due"].clone()), (true.into(), 20.into()), "{shorter}");
        let shown = json(&rd(&cfg, &["org", "show", "o1", "--json"]));
        assert_eq!(shown["retention"][0]["max_age"], serde_json::Value::Null, "{shown}");
        assert_eq!(shown["retention"][0]["pending"]["max_age"], "20days", "{shown}");

        // The sweep uses what is in force: the kind's 30 days for o1, 60 days for o2.
        ok(&rd(&cfg, &["sweep", "--once"]));
        let left = logs.ids().await;
        let kept = |id: &str, days: i64| left.iter().any(|l| l == id) == (day_of(id) < days);
        for (id, ..) in &seeded {
            let days = if id.starts_with("a2") { 60 } else { 30 };
            assert!(kept(id, days), "{id}");
        }

        // Accepted, o1's rows older than 20 days go at the next sweep.
        let accepted = json(&rd(&cfg, &["policy", "accept", "--by", "bob", "--json"]));
        assert_eq!(accepted["org_retention"][0]["org"], "o1", "{accepted}");
        assert_eq!(accepted["org_retention"][0]["effective"], "20days", "{accepted}");
        let swept = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(swept["window_passes"][0]["rows"], 20, "days 20..=29 of a1, both endpoints: {swept}");
        let left = logs.ids().await;
        assert!(left.iter().filter(|id| id.starts_with("a1-")).all(|id| day_of(id) < 20), "{left:?}");

        // --clear puts o2 back on the kind's 30 days: 11 days x 2 endpoints x 2 accounts, held.
        let cleared = json(&rd(&cfg, &["org", "retention", "o2", "--kind", "request_log", "--clear", "--json"]));
        assert_eq!((cleared["pending"].clone(), cleared["newly_due"].clone()), (true.into(), 44.into()), "{cleared}");
        ok(&rd(&cfg, &["policy", "accept"]));
        let shown = json(&rd(&cfg, &["org", "show", "o2", "--json"]));
        assert!(shown.get("retention").is_none(), "back to the kind's: no own window left: {shown}");

        let export = ok(&rd(&cfg, &["audit", "export"]));
        let count = |action: &str| export.lines().filter(|l| l.contains(&format!("\"action\":\"{action}\""))).count();
        assert_eq!((count("org.retention"), count("org.retention_pending")), (3, 2), "{export}");
        let v = json(&rd(&cfg, &["audit", "verify", "--json"]));
        assert_eq!(v["ok"], true);
    }
}

/// Recreates `request_logs` on PostgreSQL partitioned by day: `request_logs_dK` holds the rows
/// created between K+1 and K days before `now` (K in 0..DAYS), `request_logs_old` everything
/// older, `request_logs_future` everything younger, and a default partition when asked.
async fn partition_by_day(logs: &Logs, now: chrono::DateTime<Utc>, default: bool) {
    let at = |days: i64| (now - Age::days(days)).to_rfc3339();
    let mut ddl = String::from(
        "DROP TABLE request_logs; \
         CREATE TABLE request_logs (id TEXT NOT NULL, org_id TEXT NOT NULL, account_id TEXT NOT NULL, \
         endpoint TEXT NOT NULL, body TEXT, created_at TIMESTAMPTZ NOT NULL) PARTITION BY RANGE (created_at); \
         CREATE INDEX request_logs_created ON request_logs (created_at); ",
    );
    for k in 0..DAYS {
        ddl.push_str(&format!(
            "CREATE TABLE request_logs_d{k:02} PARTITION OF request_logs FOR VALUES FROM ('{}') TO ('{}'); ",
            at(k + 1),
            at(k)
        ));
    }
    ddl.push_str(&format!(
        "CREATE TABLE request_logs_old PARTITION OF request_logs FOR VALUES FROM (MINVALUE) TO ('{}'); \
         CREATE TABLE request_logs_future PARTITION OF request_logs FOR VALUES FROM ('{}') TO (MAXVALUE); ",
        at(DAYS),
        at(0)
    ));
    if default {
        ddl.push_str("CREATE TABLE request_logs_other PARTITION OF request_logs DEFAULT; ");
    }
    logs.exec(&ddl).await;
}

/// The partitions of `request_logs` that exist, attached or not, sorted.
async fn partitions_left(logs: &Logs) -> (Vec<String>, Vec<String>) {
    let mut c = sqlx::PgConnection::connect(&logs.url).await.unwrap();
    let attached: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'request_logs'::regclass ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let all: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relname LIKE 'request\\_logs\\_%' AND relkind = 'r' \
         AND relnamespace = current_schema()::regnamespace ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    (attached, all)
}

/// W3: with `partitioned = true`, the day partitions whose whole range is past the window are
/// dropped whole (DETACH CONCURRENTLY, then DROP); one that a hold keeps a row of is purged in
/// batches instead, and a hold whose scope has no row in a partition does not keep it. The
/// young partitions get no statement at all; a second pass finds nothing to do.
#[tokio::test]
async fn partitions_past_the_window_are_dropped_whole_unless_held() {
    let env = Env::new(Backend::Postgres).await;
    let logs = Logs::new(&env).await;
    let cfg = logs.config(&env, 7);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("batch = 7\n", "batch = 7\npartitioned = true\n");
    let cfg = env.write_config(&text);
    // A table that is not partitioned by range on created_at is refused by check-config.
    let o = rd(&cfg, &["check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("PARTITION BY RANGE (created_at)")
            && stderr(&o).contains("not partitioned"),
        "{}",
        stderr(&o)
    );
    let now = Utc::now();
    partition_by_day(&logs, now, false).await;
    let seeded = seed_rows();
    logs.insert(&seeded).await;
    // Statistics for one partition (the others have none: 8 rows never reach autovacuum's
    // thresholds), so its drop reports the server's estimate.
    logs.exec("ANALYZE request_logs_d31").await;
    let checked = json(&rd(&cfg, &["check-config", "--json"]));
    assert!(checked.get("warnings").is_none(), "{checked}");
    ingest_seeded_orgs(&cfg, &org_account("o4", "free", "a4"));
    // a2 is held for day 35; a hold on an account without rows reaches every partition but
    // keeps none of them.
    let from = (now - Age::hours(35 * 24 + 12) - Age::minutes(1)).to_rfc3339();
    let to = (now - Age::hours(35 * 24 + 12) + Age::minutes(1)).to_rfc3339();
    ok(&rd(
        &cfg,
        &[
            "hold",
            "place",
            "--case",
            "LIT-2",
            "--by",
            "legal",
            "--account",
            "a2",
            "--created-from",
            &from,
            "--created-to",
            &to,
        ],
    ));
    ok(&rd(
        &cfg,
        &[
            "hold",
            "place",
            "--case",
            "LIT-3",
            "--by",
            "legal",
            "--account",
            "a4",
        ],
    ));

    let held = |id: &str| id.starts_with("a2-") && day_of(id) == 35;
    let expected: Vec<String> = {
        let mut v: Vec<String> = seeded
            .iter()
            .map(|r| r.0.clone())
            .filter(|id| day_of(id) < 30 || held(id))
            .collect();
        v.sort();
        v
    };
    let dry = json(&rd(&cfg, &["sweep", "--once", "--dry-run", "--json"]));
    assert_eq!(
        dry["windows"][0]["partitions"], 10,
        "days 30..=39 but 35, and the old one: {dry}"
    );
    assert_eq!(dry["windows"][0]["rows"], 78, "{dry}");

    let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    let pass = &report["window_passes"][0];
    assert!(pass["error"].is_null(), "{report}");
    assert_eq!(pass["partitions"], 10, "{report}");
    assert_eq!(pass["rows"], 6, "day 35 but a2's 2, by statement: {report}");
    assert_eq!(
        pass["partition_rows"], 72,
        "9 days x 8 rows, dropped whole: {report}"
    );
    assert_eq!(pass["held_back"], 2, "{report}");
    assert_eq!(logs.ids().await, expected);
    let (attached, all) = partitions_left(&logs).await;
    assert_eq!(attached, all, "no partition is left detached");
    let mut want: Vec<String> = (0..30)
        .chain([35])
        .map(|k| format!("request_logs_d{k:02}"))
        .collect();
    want.push("request_logs_future".into());
    want.sort();
    assert_eq!(attached, want);

    // Nothing left to do: no rows, no partitions, no audit entry.
    let idle = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(idle["window_passes"][0]["rows"], 0, "{idle}");
    assert_eq!(idle["window_passes"][0]["partitions"], 0, "{idle}");
    let export = ok(&rd(&cfg, &["audit", "export"]));
    let purged: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "window.purged")
        .collect();
    assert_eq!(purged.len(), 1, "{export}");
    assert_eq!(purged[0]["details"]["partitions"], 10, "{}", purged[0]);
    // Each partition dropped is named with its rows: an estimate where the server has
    // statistics (d31 was analyzed), else a count.
    let dropped = purged[0]["details"]["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 10, "{}", purged[0]);
    for d in dropped {
        let name = d["partition"].as_str().unwrap();
        let rows = if name.ends_with("request_logs_old") {
            0
        } else {
            8
        };
        assert_eq!(d["rows"], rows, "{d}");
        assert_eq!(d["estimated"], name.ends_with("request_logs_d31"), "{d}");
        assert!(
            d["bound"].as_str().unwrap().starts_with("FOR VALUES FROM"),
            "{d}"
        );
    }
}

/// The config of the W3 crash tests: `partitioned = true`, a 1 s lease (so the next pass
/// takes over at once), the seeded orgs ingested.
fn w3_crash_config(env: &Env, logs: &Logs) -> std::path::PathBuf {
    let cfg = logs.config(env, 50);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("batch = 50\n", "batch = 50\npartitioned = true\n")
        .replace("lease = \"5m\"", "lease = \"1s\"");
    let cfg = env.write_config(&text);
    ingest_seeded_orgs(&cfg, "");
    cfg
}

/// `sweep --once` killed at failpoint `at`.
fn sweep_crashing_at(cfg: &std::path::Path, at: &str) {
    let crashed = bin()
        .arg("--config")
        .arg(cfg)
        .args(["sweep", "--once"])
        .env("RETENTIOND_CRASH_AT", at)
        .output()
        .unwrap();
    assert_eq!(
        crashed.status.code(),
        Some(86),
        "{at}: {}",
        stderr(&crashed)
    );
}

/// W3 across crashes after drops: a pass killed right after a DROP (its record still names the
/// partition as pending), then one killed after recording its second drop; the pass that
/// finishes names every partition dropped in its audit entry, the first with unknown rows.
#[tokio::test]
async fn partitions_dropped_before_a_crash_are_in_the_next_entry() {
    let env = Env::new(Backend::Postgres).await;
    let logs = Logs::new(&env).await;
    let now = Utc::now();
    partition_by_day(&logs, now, false).await;
    logs.insert(&seed_rows()).await;
    let cfg = w3_crash_config(&env, &logs);
    for at in ["window_partition_dropped", "window_second_drop_recorded"] {
        sweep_crashing_at(&cfg, at);
        // The crashed pass's lease (1 s) runs out before the next one claims the pass.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    let pass = &report["window_passes"][0];
    assert!(pass["error"].is_null(), "{report}");
    assert_eq!(pass["resumed"], true, "{report}");
    assert_eq!(
        pass["partitions"], 11,
        "days 30..=39 and the old one: {report}"
    );
    assert_eq!(
        pass["partition_rows"],
        9 * 8,
        "d30's rows went unrecorded: {report}"
    );
    let (attached, all) = partitions_left(&logs).await;
    assert_eq!(attached, all, "nothing is left detached");
    assert!(
        !all.iter()
            .any(|p| p.starts_with("request_logs_d3") || p == "request_logs_old"),
        "{all:?}"
    );
    let export = ok(&rd(&cfg, &["audit", "export"]));
    let purged: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "window.purged")
        .collect();
    assert_eq!(purged.len(), 1, "{export}");
    let dropped = purged[0]["details"]["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 11, "{}", purged[0]);
    let first = dropped
        .iter()
        .find(|d| {
            d["partition"]
                .as_str()
                .unwrap()
                .ends_with("request_logs_d30")
        })
        .unwrap();
    assert!(first["rows"].is_null(), "{first}");
    ok(&rd(&cfg, &["audit", "verify"]));
}

/// W3 across a crash: a pass killed between DETACH and DROP left a detached partition; a hold
/// placed meanwhile keeps one of its rows, so the next pass attaches it back and batches it,
/// drops the others, and nothing is left detached. With a default partition the detach is not
/// CONCURRENTLY (PostgreSQL refuses it then).
#[tokio::test]
async fn a_drop_cut_short_after_detach_is_finished_or_attached_back() {
    let env = Env::new(Backend::Postgres).await;
    let logs = Logs::new(&env).await;
    let now = Utc::now();
    partition_by_day(&logs, now, true).await;
    let seeded = seed_rows();
    logs.insert(&seeded).await;
    let cfg = w3_crash_config(&env, &logs);
    sweep_crashing_at(&cfg, "window_partition_detached");
    let (attached, all) = partitions_left(&logs).await;
    let detached: Vec<&String> = all.iter().filter(|p| !attached.contains(p)).collect();
    assert_eq!(detached.len(), 1, "{all:?} / {attached:?}");
    let day: i64 = detached[0]
        .strip_prefix("request_logs_d")
        .expect("a day partition is the first to go")
        .parse()
        .unwrap();
    // A hold on o3's rows of that day, placed while the partition is detached.
    let from = (now - Age::hours(day * 24 + 12) - Age::minutes(1)).to_rfc3339();
    let to = (now - Age::hours(day * 24 + 12) + Age::minutes(1)).to_rfc3339();
    ok(&rd(
        &cfg,
        &[
            "hold",
            "place",
            "--case",
            "LIT-4",
            "--by",
            "legal",
            "--org",
            "o3",
            "--created-from",
            &from,
            "--created-to",
            &to,
        ],
    ));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let report = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    let pass = &report["window_passes"][0];
    assert!(pass["error"].is_null(), "{report}");
    assert_eq!(pass["resumed"], true, "{report}");
    assert_eq!(
        pass["partitions"], 10,
        "days 30..=39 but {day}, and the old one: {report}"
    );
    assert_eq!(pass["rows"], 6, "{report}");
    assert_eq!(pass["partition_rows"], 9 * 8, "{report}");
    assert_eq!(pass["held_back"], 2, "{report}");
    let held = |id: &str| id.starts_with("a3-") && day_of(id) == day;
    let mut expected: Vec<String> = seeded
        .iter()
        .map(|r| r.0.clone())
        .filter(|id| day_of(id) < 30 || held(id))
        .collect();
    expected.sort();
    assert_eq!(logs.ids().await, expected);
    let (attached, all) = partitions_left(&logs).await;
    assert_eq!(attached, all, "nothing is left detached");
    assert!(
        attached.contains(&format!("request_logs_d{day:02}")),
        "{attached:?}"
    );
    assert!(
        attached.contains(&"request_logs_other".to_string()),
        "{attached:?}"
    );
}
