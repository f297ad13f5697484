//! Operations (issue 6): systemd notifications, SIGHUP reloads, the mass-purge guard, failing
//! targets with retry/backoff → `failed` → `retentiond retry`. The real binary throughout.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    c.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env("NO_COLOR", "1");
    c
}

fn rd(cfg: &Path, args: &[&str]) -> std::process::Output {
    bin().arg("--config").arg(cfg).args(args).output().unwrap()
}

fn rd_json(cfg: &Path, args: &[&str]) -> serde_json::Value {
    let o = rd(cfg, &[args, &["--json"]].concat());
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn ingest(cfg: &Path, text: &str) {
    let file = cfg.with_extension(format!("{}.ndjson", rand_u32()));
    std::fs::write(&file, text).unwrap();
    let o = rd(cfg, &["ingest", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(cfg: &Path, env: &[(&str, String)]) -> Daemon {
        let log = cfg.with_extension(format!("{}.log", rand_u32()));
        let mut c = bin();
        c.arg("--config")
            .arg(cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        Daemon {
            child: c.spawn().unwrap(),
            log,
        }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.child.id().to_string())
                .status()
                .unwrap()
                .success()
        );
    }
    fn wait_log(&self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < limit,
                "no {needle:?} in the log after {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{}", self.log());
        self.log()
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test]
async fn systemd_gets_ready_watchdog_and_stopping_notifications() {
    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs::default()));
    let sock_path = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let d = Daemon::start(
        &cfg,
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "500000".into()),
        ],
    );
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let n = sock.recv(&mut buf).expect("a notification");
        seen.extend(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string),
        );
        if seen.iter().filter(|l| *l == "WATCHDOG=1").count() >= 2 {
            break;
        }
    }
    assert!(seen.iter().any(|l| l == "READY=1"), "{seen:?}");
    assert!(
        seen.iter().filter(|l| *l == "WATCHDOG=1").count() >= 2,
        "{seen:?}"
    );
    let ready_at = seen.iter().position(|l| l == "READY=1").unwrap();
    let first_ping = seen.iter().position(|l| l == "WATCHDOG=1").unwrap();
    assert!(
        ready_at < first_ping,
        "READY before the first watchdog ping: {seen:?}"
    );
    assert!(seen.iter().any(|l| l.starts_with("STATUS=")), "{seen:?}");
    d.signal("TERM");
    let start = Instant::now();
    let mut stopping = false;
    while start.elapsed() < Duration::from_secs(20) && !stopping {
        let n = sock.recv(&mut buf).expect("STOPPING=1");
        stopping = String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1");
    }
    assert!(stopping);
    let mut child = d.child;
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

both_backends! {
    async fn sighup_keeps_a_bad_config_out_and_applies_a_good_one(b: Backend) {
    let env = Env::new(b).await;
    let knobs = Knobs {
        conversation_grace: "30d",
        ..Default::default()
    };
    let good = env.config_text(&knobs);
    let cfg = env.write_config(&good);
    env.seed_conversation("c1", "a1", 2).await;
    ingest(
        &cfg,
        &(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &deleted("c1")),
    );
    let d = Daemon::start(&cfg, &[]);
    d.wait_log("retentiond started", Duration::from_secs(20));

    std::fs::write(
        &cfg,
        good.replace("[safety]", "[safety]\nmax_newly_dew = 3"),
    )
    .unwrap();
    d.signal("HUP");
    let log = d.wait_log("config reload failed", Duration::from_secs(10));
    assert!(
        log.contains("old config stays in force") && log.contains("safety.max_newly_dew"),
        "{log}"
    );

    std::fs::write(
        &cfg,
        env.config_text(&Knobs {
            conversation_grace: "1s",
            ..knobs
        }),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_log("config reloaded", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(&d.log)
            .unwrap()
            .contains("id=c1")),
        "c1 purged after the reload"
    );
    let log = d.stop();
    assert!(
        log.contains("policy recomputed (R10)") && log.contains("item=conversation"),
        "{log}"
    );
    assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 0);
}
}

both_backends! {
    async fn shortening_a_grace_on_5000_deleted_resources_waits_for_policy_accept(b: Backend) {
    let env = Env::new(b).await;
    let knobs = Knobs {
        conversation_grace: "30d",
        ..Default::default()
    };
    let cfg = env.write_config(&env.config_text(&knobs));
    let mut text = org_account("o1", "free", "a1");
    for i in 0..5000 {
        text.push_str(&created(&format!("c{i}"), "conversation", "a1"));
        text.push_str(&deleted(&format!("c{i}")));
    }
    ingest(&cfg, &text);
    let d = Daemon::start(&cfg, &[]);
    d.wait_log("retentiond started", Duration::from_secs(20));
    std::fs::write(
        &cfg,
        env.config_text(&Knobs {
            conversation_grace: "1s",
            ..knobs.clone()
        }),
    )
    .unwrap();
    d.signal("HUP");
    let log = d.wait_log("config reloaded", Duration::from_secs(20));
    assert!(
        log.contains("policy change held back") && log.contains("newly_due=5000"),
        "{log}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let status = rd_json(&cfg, &["status"]);
    assert_eq!(
        status["resources"]["purged"], 0,
        "nothing purged before the operator accepts"
    );
    assert_eq!(status["policy_pending"], true);

    let o = rd(&cfg, &["policy", "accept", "--by", "ops-oncall"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        wait_until(
            Duration::from_secs(60),
            || rd_json(&cfg, &["status"])["resources"]["purged"] == 5000
        ),
        "all purged after accept"
    );
    d.stop();
    let export = String::from_utf8_lossy(&rd(&cfg, &["audit", "export"]).stdout).to_string();
    assert!(export.contains("\"action\":\"policy.pending\""));
    assert!(export.contains("\"action\":\"policy.accepted\"") && export.contains("ops-oncall"));
}
}

both_backends! {
    async fn a_failing_target_retries_with_backoff_then_fails_visibly_and_retry_recovers(b: Backend) {
    let env = Env::new(b).await;
    let knobs = Knobs {
        conversation_grace: "0s",
        file_grace: "0s",
        max_attempts: 3,
        retry_backoff: "1s",
        ..Default::default()
    };
    let cfg = env.write_config(&env.config_text(&knobs));
    env.seed_conversation("c1", "a1", 2).await;
    let f1 = env.seed_file("f1", "a1").await;
    ingest(
        &cfg,
        &(org_account("o1", "free", "a1")
            + &created("c1", "conversation", "a1")
            + &created("f1", "file", "a1")),
    );
    // The conversation's table is gone (a target statement error); the file target is fine.
    env.app_exec("ALTER TABLE messages RENAME TO messages_moved")
        .await;
    ingest(&cfg, &(deleted("c1") + &deleted("f1")));
    let d = Daemon::start(&cfg, &[]);
    assert!(
        wait_until(
            Duration::from_secs(60),
            || rd_json(&cfg, &["status"])["resources"]["failed"] == 1
        ),
        "c1 ends up failed after max_attempts"
    );
    assert!(!exists(&f1), "other kinds and targets go on");
    let status = rd_json(&cfg, &["status"]);
    assert_eq!(status["failed"][0]["id"], "c1");
    assert_eq!(status["failed"][0]["attempts"], 3);
    assert!(
        status["failed"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("no such table")
    );
    let c1 = rd_json(&cfg, &["resource", "show", "c1"]);
    assert_eq!(c1["state"], "failed");
    let log = d.log();
    assert_eq!(log.matches("purge failed; will retry").count(), 2, "{log}");
    assert!(log.contains("purge failed too many times"));

    env.app_exec("ALTER TABLE messages_moved RENAME TO messages")
        .await;
    let o = rd(&cfg, &["retry", "c1", "--by", "ops"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(wait_until(Duration::from_secs(20), || rd_json(
        &cfg,
        &["resource", "show", "c1"]
    )["state"]
        == "purged"));
    d.stop();
    assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 0);
    let export = String::from_utf8_lossy(&rd(&cfg, &["audit", "export"]).stdout).to_string();
    assert_eq!(
        export
            .matches("\"action\":\"resource.purge_failed\"")
            .count(),
        3
    );
    assert_eq!(
        export
            .matches("\"action\":\"resource.purge_retried\"")
            .count(),
        1
    );
    // `retry` of something that is not failed is bad input.
    assert_eq!(rd(&cfg, &["retry", "c1"]).status.code(), Some(2));
}
}

both_backends! {
    async fn plan_forecasts_purges_per_day_and_what_holds_keep_back(b: Backend) {
    let env = Env::new(b).await;
    let cfg = env.write_config(&env.config_text(&Knobs {
        conversation_grace: "2d",
        file_grace: "5d",
        ..Default::default()
    }));
    ingest(
        &cfg,
        &(org_account("o1", "free", "a1")
            + &org_account("o1", "free", "a2")
            + &created("c1", "conversation", "a1")
            + &created("f1", "file", "a1")
            + &created("c2", "conversation", "a2")
            + &deleted("c1")
            + &deleted("f1")
            + &deleted("c2")),
    );
    let o = rd(
        &cfg,
        &[
            "hold",
            "place",
            "--case",
            "K",
            "--by",
            "legal",
            "--account",
            "a2",
        ],
    );
    assert!(o.status.success());
    let plan = rd_json(&cfg, &["plan", "--until", "30d"]);
    assert_eq!(plan["total"], 2);
    assert_eq!(plan["total_held"], 1, "the hold on a2 keeps c2 back");
    assert_eq!(plan["holds_active"], 1);
    let days = plan["days"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{plan}");
    assert_eq!(days[0]["purges"]["conversation"], 1);
    assert_eq!(days[0]["held"]["conversation"], 1);
    assert_eq!(days[1]["purges"]["file"], 1);
    let short = rd_json(&cfg, &["plan", "--until", "3d"]);
    assert_eq!(
        (short["total"].as_i64(), short["total_held"].as_i64()),
        (Some(1), Some(1))
    );
    let o = rd(&cfg, &["hold", "release", "1", "--by", "legal"]);
    assert!(o.status.success());
    assert_eq!(rd_json(&cfg, &["plan", "--until", "3d"])["total"], 2);
}
}
