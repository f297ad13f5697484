//! The operator's toolkit (issue 24): a version naming the build, metrics without the HTTP API,
//! alert rules and the dashboard, journald, man page and completions. The real binary throughout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    c.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .env("NO_COLOR", "1");
    c
}

fn rd(cfg: &Path, args: &[&str]) -> std::process::Output {
    bin().arg("--config").arg(cfg).args(args).output().unwrap()
}

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(cfg: &Path, args: &[&str]) -> Daemon {
        let log = cfg.with_extension(format!("{}.log", rand_u32()));
        let child = bin()
            .arg("--config")
            .arg(cfg)
            .args(args)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn wait_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {needle:?} in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{}", self.log());
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The commit the binary under test should name: this checkout's HEAD (`-dirty` allowed), or
/// `unknown` when the tree is not a git checkout.
fn expected_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn the_version_names_the_build_in_cli_log_and_audit() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("retentiond {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = line
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {line:?}"))
        .to_string();
    match expected_commit() {
        Some(head) => assert!(
            commit == head || commit == format!("{head}-dirty"),
            "--version names {commit}, HEAD is {head}"
        ),
        None => assert_eq!(commit, "unknown"),
    }

    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs::default()));
    let d = Daemon::start(&cfg, &["--log-format", "json"]);
    d.wait_log("retentiond started");
    let log = d.stop();
    let started: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "retentiond started")
        .unwrap();
    assert_eq!(started["commit"], commit.as_str(), "{started}");
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));

    let o = rd(&cfg, &["audit", "export"]);
    assert!(o.status.success());
    let loaded: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["action"] == "config.loaded")
        .collect();
    assert!(!loaded.is_empty());
    for e in &loaded {
        let text = e.to_string();
        assert!(
            text.contains(&format!("\"commit\":\"{commit}\"")),
            "config.loaded without the commit: {text}"
        );
    }
}

/// A free local port (bound and released; another process could take it in between, rarely).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> (u16, String) {
    retentiond::targets::install_tls_provider();
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Metric names a Grafana dashboard's queries use (`retentiond_*`, `process_*`), histogram
/// series (`_bucket`, `_sum`, `_count`) named by their family.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/monitoring/grafana-dashboard.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr"
                        && let Some(s) = v.as_str()
                    {
                        out.push(s.to_string());
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&json, &mut exprs);
    assert!(exprs.len() >= 10, "few queries in the dashboard: {exprs:?}");
    let mut names = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut word = String::new();
        for c in e.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if word.starts_with("retentiond_") || word.starts_with("process_") {
                    names.insert(word.clone());
                }
                word.clear();
            }
        }
    }
    names
}

/// `[metrics] listen` serves /metrics, and only it, with `[http]` off; build_info, process
/// metrics, per-target purge latency, checkpoint time and outbox dead letters are there, and
/// so is every metric the Grafana dashboard names.
#[tokio::test]
async fn metrics_listen_serves_every_dashboard_metric_without_the_api() {
    let env = Env::new(Backend::Sqlite).await;
    let key = env.dir.path().join("audit.key");
    let o = bin()
        .args(["audit", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sqlx::raw_sql(include_str!("../../config/outbox-sqlite.sql"))
        .execute(&mut env.app().await)
        .await
        .unwrap();
    let port = free_port();
    let knobs = Knobs {
        extra: format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[sources.app]\nurl = \"sqlite://{app}\"\ntable = \"retention_outbox\"\npoll = \"100ms\"\n\n[audit]\nsigning_key_file = \"{key}\"\n",
            app = env.app_db.display(),
            key = key.display()
        ),
        ..Knobs::default()
    };
    let cfg = env.write_config(&env.config_text(&knobs));
    let text = String::from_utf8(rd(&cfg, &["check-config"]).stdout).unwrap();
    assert!(
        text.contains(&format!("metrics: 127.0.0.1:{port}/metrics")),
        "{text}"
    );
    // A first start writes config.loaded, so a checkpoint has something to sign.
    let d = Daemon::start(&cfg, &[]);
    d.wait_log("retentiond started");
    d.stop();
    let o = rd(&cfg, &["audit", "checkpoint"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An api_log deleted with 0s grace is purged by the first sweep; a bad row is dead-lettered.
    env.seed_api_log("l1", "u1", "/v1/other").await;
    let events = [
        org_account("o1", "free", "u1"),
        created_log("l1", "u1", "/v1/other"),
        deleted("l1"),
        "{\"type\":\"no.such.type\"}".into(),
    ]
    .concat();
    for event in events.lines() {
        sqlx::query("INSERT INTO retention_outbox (event) VALUES ($1)")
            .bind(event)
            .execute(&mut env.app().await)
            .await
            .unwrap();
    }

    let d = Daemon::start(&cfg, &[]);
    d.wait_log("retentiond started");
    assert!(
        d.log().contains(&format!("127.0.0.1:{port}")),
        "{}",
        d.log()
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let wanted = dashboard_metrics();
    let start = Instant::now();
    let body = loop {
        let (status, body) = get(&url).await;
        assert_eq!(status, 200);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|m| !body.contains(&format!("\n{m}")))
            .collect();
        if missing.is_empty() {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "metrics the dashboard names are missing on a live daemon: {missing:?}\n{body}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for needed in [
        format!(
            "retentiond_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        ),
        "retentiond_target_purge_duration_seconds_bucket{target=\"app_db\"".into(),
        "retentiond_last_checkpoint_timestamp_seconds ".into(),
        "retentiond_outbox_dead_letters{source=\"app\"} 1".into(),
        "process_resident_memory_bytes ".into(),
        "process_cpu_seconds_total ".into(),
        "process_open_fds ".into(),
    ] {
        assert!(body.contains(&needed), "no {needed:?} in:\n{body}");
    }
    // Only /metrics: the API is not served on this port.
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/v1/status")).await.0,
        404
    );
    d.stop();
}

#[tokio::test]
async fn a_metrics_listen_that_is_not_an_address_is_a_config_error() {
    let env = Env::new(Backend::Sqlite).await;
    for (extra, says) in [
        ("[metrics]\nlisten = \"localhost\"\n", "is not an address"),
        (
            "[http]\nlisten = \"127.0.0.1:9464\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n",
            "is http.listen too",
        ),
    ] {
        let knobs = Knobs {
            extra: extra.into(),
            ..Knobs::default()
        };
        let cfg = env.write_config(&env.config_text(&knobs));
        let o = rd(&cfg, &["check-config"]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("metrics.listen") && err.contains(says),
            "{err}"
        );
    }
}

/// `promtool test rules` passes on the shipped alert rules (Debian's `prometheus` package has
/// promtool; `.ci/run` installs it). A missing promtool fails the test.
#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/monitoring");
    for args in [
        &["check", "rules", "retentiond-rules.yml"][..],
        &["test", "rules", "retentiond-rules.test.yml"][..],
    ] {
        let o = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool is not installed ({e}): apt-get install prometheus; .ci/run does")
            });
        assert!(
            o.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Every metric a rule names is one the daemon exports (checked live by the dashboard test
    // for the dashboard; here against the dashboard's own set plus the rules' names).
    let rules = std::fs::read_to_string(format!("{dir}/retentiond-rules.yml")).unwrap();
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("retentiond_") {
            assert!(
                src.contains(&format!("\"{word}\"")),
                "the rules name {word}, which src/metrics.rs does not define"
            );
        }
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definitions() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef retentiond"),
        ("fish", "complete -c retentiond"),
    ] {
        let o = bin().args(["completions", shell]).output().unwrap();
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: {text}");
        // Subcommands and their options are in it.
        assert!(
            text.contains("check-config") && text.contains("dry-run"),
            "{shell}"
        );
    }
    let o = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin().arg("man").output().unwrap();
    assert!(o.status.success());
    let man = String::from_utf8(o.stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH retentiond 8"),
        "{man}"
    );
    assert!(man.contains(".TH retentiond 8"), "{man}");
    assert!(man.contains("check\\-config"), "{man}");
    assert!(man.contains(env!("CARGO_PKG_VERSION")), "{man}");
}

/// Runs `script` with `sh` in a private mount namespace where a real systemd-journald listens
/// on /run/systemd/journal (a tmpfs there, so the host's /run is untouched), and returns the
/// entries retentiond wrote, as `journalctl -o json` objects. Needs root, `unshare`,
/// systemd-journald and journalctl (the `systemd` package, which `.ci/run` installs): without
/// them the test fails.
fn in_private_journal(script: &str, env: &[(&str, String)]) -> Vec<serde_json::Value> {
    let journald = [
        "/lib/systemd/systemd-journald",
        "/usr/lib/systemd/systemd-journald",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("systemd-journald is not installed (apt-get install systemd; .ci/run does)");
    let wrapper = format!(
        r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
# Volatile storage: never the host's /var/log/journal, if it has one.
printf '[Journal]\nStorage=volatile\n' > /run/journald.conf
if [ -f /etc/systemd/journald.conf ]; then mount --bind /run/journald.conf /etc/systemd/journald.conf; fi
{journald} >/dev/null 2>&1 &
J=$!
i=0
while [ ! -S /run/systemd/journal/socket ]; do i=$((i+1)); [ $i -lt 200 ] || exit 90; sleep 0.05; done
set +e
{script}
rc=$?
journalctl --sync >/dev/null 2>&1 || sleep 1
journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=retentiond
kill $J; wait $J
exit $rc
"#
    );
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", &wrapper])
        .env("RD", env!("CARGO_BIN_EXE_retentiond"))
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("unshare is not installed (util-linux)");
    assert!(
        o.status.success(),
        "the script in the private journal failed ({:?}); the test needs root for a mount namespace:\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("journalctl -o json"))
        .collect()
}

/// Under systemd (`$JOURNAL_STREAM` names stderr) the logs go to journald natively: PRIORITY per
/// level, the key=value fields as journal fields, a stable MESSAGE_ID for the decisions. Read
/// back from a real journal. Elsewhere the text output is as before.
#[tokio::test]
async fn under_systemd_logs_reach_the_journal_with_priority_fields_and_message_ids() {
    let env = Env::new(Backend::Sqlite).await;
    let knobs = Knobs {
        conversation_grace: "0s",
        max_newly_due: 0,
        ..Knobs::default()
    };
    let cfg = env.write_config(&env.config_text(&knobs));
    env.seed_conversation("c1", "u1", 2).await;
    // api_log purges fail: their table is gone.
    env.app_exec("DROP TABLE api_logs").await;
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("ingest")
        .write_stdin_events(&[
            org_account("o1", "free", "u1"),
            org_account("o1", "free", "u2"),
            created("c1", "conversation", "u1"),
            deleted("c1"),
            created_log("l1", "u1", "/v1/other"),
            deleted("l1"),
            created("a1", "agent", "u2"),
            deleted("a1"),
        ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Shortening the agents' grace would make a1 due at once: held back (max_newly_due = 0).
    let shorter = std::fs::read_to_string(&cfg).unwrap().replace(
        "[kinds.agent]\ngrace_after_delete = \"30d\"",
        "[kinds.agent]\ngrace_after_delete = \"0s\"",
    );
    let cfg2 = env.dir.path().join("shorter.toml");
    std::fs::write(&cfg2, shorter).unwrap();
    let err = env.dir.path().join("stderr.txt");
    let script = r#"
: > "$ERR"
JS=$(stat -c %d:%i "$ERR")
JOURNAL_STREAM=$JS "$RD" --config "$CFG" sweep --once 2>>"$ERR" >/dev/null || exit 11
JOURNAL_STREAM=$JS "$RD" --config "$CFG" hold place --case LEGAL-7 --by carol --account u2 2>>"$ERR" >/dev/null || exit 12
JOURNAL_STREAM=$JS "$RD" --config "$CFG" hold release 1 --by carol 2>>"$ERR" >/dev/null || exit 13
JOURNAL_STREAM=$JS "$RD" --config "$CFG2" sweep --once 2>>"$ERR" >/dev/null || exit 14
"#;
    let entries = in_private_journal(
        script,
        &[
            ("CFG", cfg.display().to_string()),
            ("CFG2", cfg2.display().to_string()),
            ("ERR", err.display().to_string()),
        ],
    );
    let find = |message: &str| -> &serde_json::Value {
        entries
            .iter()
            .find(|e| {
                e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .unwrap_or_else(|| panic!("no {message:?} entry in the journal: {entries:#?}"))
    };
    let purged = find("purged");
    assert_eq!(purged["PRIORITY"], "6", "{purged}");
    assert_eq!(purged["ID"], "c1");
    assert_eq!(purged["KIND"], "conversation");
    assert_eq!(purged["ACCOUNT"], "u1");
    assert_eq!(purged["MESSAGE_ID"], "37e08ae75db84934a42e1b5f33c665a5");
    let failed = find("purge failed; will retry");
    assert_eq!(failed["PRIORITY"], "4", "{failed}");
    assert_eq!(failed["ID"], "l1");
    assert_eq!(failed["MESSAGE_ID"], "9eb5c6eaa63440a588782a4b4f896212");
    let placed = find("hold placed");
    assert_eq!(placed["CASE"], "LEGAL-7");
    assert_eq!(placed["MESSAGE_ID"], "c095a086652346938ca56c1a13df03f5");
    let released = find("hold released");
    assert_eq!(released["MESSAGE_ID"], "e3a863b5e6d247dbb1e584e4e7079c2d");
    let held_back = find("policy change held back");
    assert_eq!(held_back["PRIORITY"], "4");
    assert_eq!(held_back["MESSAGE_ID"], "ad4b703942d447a6a7b3768ffdc89396");
    for e in &entries {
        assert_eq!(e["SYSLOG_IDENTIFIER"], "retentiond");
        // Never user content (the api_log's attrs carry a prompt).
        assert!(!e.to_string().contains("secret user text"), "{e}");
    }
    // Nothing went to stderr as text while the journal took the logs.
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(
        !text.contains("purged") && !text.contains("hold placed"),
        "{text}"
    );
    // Elsewhere (JOURNAL_STREAM names another file): text, without the journal-only message_id.
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args([
            "hold",
            "place",
            "--case",
            "LEGAL-8",
            "--by",
            "dan",
            "--account",
            "u1",
        ])
        .env("JOURNAL_STREAM", "1:2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(
        text.contains("hold placed") && text.contains("case=LEGAL-8"),
        "{text}"
    );
    assert!(!text.contains("message_id"), "{text}");
}

trait WriteStdin {
    fn write_stdin_events(&mut self, events: &[String]) -> std::process::Output;
}

impl WriteStdin for Command {
    fn write_stdin_events(&mut self, events: &[String]) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(events.concat().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}
