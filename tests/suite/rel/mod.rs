//! Support for the reliability suites (issue 8): driving the built binary, a seeded "world" of
//! resources whose fate is known in advance (purge / held / not yet due), and one check that the
//! ledger, the audit chain and the application's data agree about it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use retentiond::config::SecretUrl;
use retentiond::store::{Ledger, OpenOptions};
use sqlx::Connection;

use crate::common::*;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    c.env_remove("RUST_LOG")
        .env_remove("RETENTIOND_CRASH_AT")
        .env("NO_COLOR", "1");
    c
}

pub fn rd(cfg: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run retentiond")
}

/// Runs with `RETENTIOND_CRASH_AT=point`.
pub fn rd_crash(cfg: &Path, point: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = bin();
    c.arg("--config")
        .arg(cfg)
        .args(args)
        .env("RETENTIOND_CRASH_AT", point);
    feed(c, stdin)
}

pub fn rd_stdin(cfg: &Path, args: &[&str], input: &str) -> Output {
    let mut c = bin();
    c.arg("--config").arg(cfg).args(args);
    feed(c, Some(input))
}

fn feed(mut c: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = c
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run retentiond");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        // The child may exit before reading everything (a crash, a rejected input).
        let _ = w.write_all(input.as_bytes());
    }
    child.wait_with_output().unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config the binary refused: exit 2, the error naming `key` and saying `why`, and `secret`
/// nowhere in it. `what` names the case in a failure.
pub fn refused_naming(o: &Output, what: &str, key: &str, why: &str, secret: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    assert!(
        err.contains(key) && err.contains(why),
        "{what}\nwanted {key} / {why}: {err}"
    );
    assert!(!err.contains(secret), "{err}");
}

/// `kill -SIG pid` with the `kill` utility.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// `retentiond run`, its log in a file (an unread pipe would fill and block the daemon).
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(cfg: &Path, envs: &[(&str, &str)]) -> Daemon {
        let log = cfg.with_extension(format!("{:08x}.log", rand_u32()));
        let mut c = bin();
        c.arg("--config")
            .arg(cfg)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in envs {
            c.env(k, v);
        }
        Daemon {
            child: c.spawn().expect("start daemon"),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(mut self) -> String {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
        self.log()
    }

    /// SIGTERM; waits for a clean exit 0 and returns the log.
    pub fn stop(mut self) -> String {
        signal(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        let log = self.log();
        assert_eq!(
            status.code(),
            Some(0),
            "daemon did not stop cleanly:\n{log}"
        );
        log
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub async fn open_ledger(env: &Env) -> Ledger {
    Ledger::open(
        &SecretUrl::new(env.ledger_url.as_str()),
        &OpenOptions {
            max_connections: 2,
            create: false,
            ..OpenOptions::default()
        },
    )
    .await
    .expect("open ledger")
}

// ---- the world: resources whose fate is known before anything runs ---------------------------

/// What must become of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Due and not held: purged exactly once.
    Purge,
    /// Due but under a legal hold: untouched.
    Held,
    /// Not due yet (live, or inside its grace): untouched.
    NotDue,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub kind: &'static str,
    pub account: String,
    pub fate: Fate,
}

/// Messages per seeded conversation.
pub const MESSAGES: i64 = 2;

/// Builds `n` items per fate for `prefix`: conversations and files (two targets) that are due,
/// the same under `held_account` (which the caller puts a hold on), and agents (30-day grace)
/// and live conversations that are not due. Needs `conversation_grace` and `file_grace` of 0s.
/// Returns the items and the events that create (and delete) them — those of the items to purge
/// first, then the others, to ingest separately so the due ones are claimed first (claims go in
/// `purge_after` order); the application rows and upload files are written at once.
pub async fn seed_world(
    env: &Env,
    prefix: &str,
    account: &str,
    held_account: &str,
    n: usize,
) -> (Vec<Item>, String, String) {
    let mut items = Vec::new();
    for i in 0..n {
        // Interleaved, so every batch mixes kinds (and so reaches after_target_1).
        for (kind, fate, acct) in [
            ("conversation", Fate::Purge, account),
            ("file", Fate::Purge, account),
            ("conversation", Fate::Held, held_account),
            ("file", Fate::Held, held_account),
            ("agent", Fate::NotDue, account),
            ("conversation", Fate::NotDue, account),
        ] {
            let tag = match fate {
                Fate::Purge => "p",
                Fate::Held => "h",
                Fate::NotDue => "n",
            };
            items.push(Item {
                id: format!("{prefix}-{tag}{}-{i}", &kind[..1]),
                kind,
                account: acct.to_string(),
                fate,
            });
        }
    }
    let (first, rest): (Vec<Item>, Vec<Item>) =
        items.iter().cloned().partition(|i| i.fate == Fate::Purge);
    let first = write_app_data(env, &first).await;
    let rest = write_app_data(env, &rest).await;
    (items, first, rest)
}

/// Inserts the application rows and files of `items` in one transaction; returns the events
/// (created, and deleted unless the item stays live: a `NotDue` conversation stays live).
pub async fn write_app_data(env: &Env, items: &[Item]) -> String {
    let mut c = env.app().await;
    let mut tx = c.begin().await.unwrap();
    let mut events = String::new();
    for it in items {
        match it.kind {
            "conversation" => {
                sqlx::query("INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, 't')")
                    .bind(&it.id)
                    .bind(&it.account)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for m in 0..MESSAGES {
                    sqlx::query("INSERT INTO messages (conversation_id, body) VALUES ($1, $2)")
                        .bind(&it.id)
                        .bind(format!("message {m} of {}", it.id))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
            }
            "file" => {
                sqlx::query("INSERT INTO files (id, user_id, name) VALUES ($1, $2, 'f')")
                    .bind(&it.id)
                    .bind(&it.account)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let p = env.upload(&it.account, &it.id);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, b"file content").unwrap();
            }
            "agent" => {
                sqlx::query("INSERT INTO agents (id, user_id, spec) VALUES ($1, $2, 's')")
                    .bind(&it.id)
                    .bind(&it.account)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            k => panic!("no seeding for kind {k}"),
        }
        events.push_str(&created(&it.id, it.kind, &it.account));
        let stays_live = it.fate == Fate::NotDue && it.kind == "conversation";
        if !stays_live {
            events.push_str(&deleted(&it.id));
        }
    }
    tx.commit().await.unwrap();
    events
}

/// Rows of `item` in the application database (and 1 for its upload file, if any).
pub async fn app_presence(env: &Env, c: &mut sqlx::SqliteConnection, it: &Item) -> i64 {
    let q = match it.kind {
        "conversation" => {
            "SELECT (SELECT COUNT(*) FROM conversations WHERE id = $1) + (SELECT COUNT(*) FROM messages WHERE conversation_id = $1)"
        }
        "file" => "SELECT COUNT(*) FROM files WHERE id = $1",
        "agent" => "SELECT COUNT(*) FROM agents WHERE id = $1",
        "api_log" => "SELECT COUNT(*) FROM api_logs WHERE id = $1",
        k => panic!("no presence query for {k}"),
    };
    let rows: i64 = sqlx::query_scalar(q)
        .bind(&it.id)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    let file = (it.kind == "file" && exists(&env.upload(&it.account, &it.id))) as i64;
    rows + file
}

/// What a fully present item amounts to in [`app_presence`].
pub fn full_presence(it: &Item) -> i64 {
    match it.kind {
        "conversation" => 1 + MESSAGES,
        "file" => 2,
        _ => 1,
    }
}

/// `resource.purged` entries per resource id, with their details.
pub async fn receipts(ledger: &Ledger) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut next = 1;
    loop {
        let page = ledger.audit_range(next, i64::MAX, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for e in page.into_iter().filter(|e| e.action == "resource.purged") {
            let id = e
                .subject
                .split_once('/')
                .map(|(_, i)| i.to_string())
                .unwrap_or(e.subject.clone());
            out.entry(id)
                .or_default()
                .push(serde_json::from_str(&e.details).unwrap());
        }
    }
    out
}

/// Tallies the checks add up to (for the note's table).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub purged: usize,
    pub kept: usize,
    /// A resource that should have been kept but is gone (in the app or on record).
    pub data_lost: usize,
    /// A receipt whose `purged_at` is before its `purge_after`.
    pub early: usize,
}

/// The one check every reliability test ends with: every `Purge` item purged on record exactly
/// once and gone from the application, every other item untouched there and not purged on
/// record, no receipt for anything else, no receipt earlier than its `purge_after`, and the
/// audit chain verifies. `extra_receipts` are receipts expected beyond the items (earlier
/// worlds in the same ledger).
pub async fn check_world(
    env: &Env,
    ledger: &Ledger,
    items: &[Item],
    extra_receipts: usize,
) -> Tally {
    let receipts = receipts(ledger).await;
    let mut c = env.app().await;
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    for it in items {
        let row = ledger.resource(&it.id).await.unwrap();
        let state = row
            .as_ref()
            .map(|r| r.state.to_string())
            .unwrap_or_else(|| "missing".into());
        let n_receipts = receipts.get(&it.id).map_or(0, |v| v.len());
        let present = app_presence(env, &mut c, it).await;
        match it.fate {
            Fate::Purge => {
                tally.purged += 1;
                if state != "purged" || n_receipts != 1 || present != 0 {
                    problems.push(format!(
                        "{} ({}) should be purged once: state {state}, {n_receipts} receipt(s), {present} row(s)/file(s) left",
                        it.id, it.kind
                    ));
                }
            }
            Fate::Held | Fate::NotDue => {
                tally.kept += 1;
                if state == "purged" || n_receipts != 0 || present != full_presence(it) {
                    tally.data_lost += 1;
                    problems.push(format!(
                        "{} ({}, {:?}) should be untouched: state {state}, {n_receipts} receipt(s), {present} of {} row(s)/file(s) left",
                        it.id, it.kind, it.fate, full_presence(it)
                    ));
                }
            }
        }
    }
    for (id, details) in &receipts {
        for d in details {
            let (Some(pa), Some(at)) = (d["purge_after"].as_str(), d["purged_at"].as_str()) else {
                problems.push(format!("receipt of {id} lacks purge_after/purged_at: {d}"));
                continue;
            };
            let pa = retentiond::model::Timestamp::parse_rfc3339(pa).unwrap();
            let at = retentiond::model::Timestamp::parse_rfc3339(at).unwrap();
            if at < pa {
                tally.early += 1;
                problems.push(format!("{id} purged at {at}, before its purge_after {pa}"));
            }
        }
    }
    let expected = items.iter().filter(|i| i.fate == Fate::Purge).count() + extra_receipts;
    let total: usize = receipts.values().map(Vec::len).sum();
    if total != expected {
        problems.push(format!("{total} receipts on record, expected {expected}"));
    }
    let v = retentiond::checkpoint::verify_ledger(ledger).await.unwrap();
    if !v.ok {
        problems.push(format!("audit chain does not verify: {:?}", v.error));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    tally
}

/// `audit verify --json` through the binary.
pub fn audit_verify(cfg: &Path) -> serde_json::Value {
    let v = json(&rd(cfg, &["audit", "verify", "--json"]));
    assert_eq!(v["ok"], true, "{v}");
    v
}

/// A hold on one account through the binary; returns its JSON answer.
pub fn hold_account(cfg: &Path, account: &str) -> serde_json::Value {
    json(&rd(
        cfg,
        &[
            "hold",
            "place",
            "--case",
            "LEGAL-1",
            "--by",
            "legal",
            "--account",
            account,
            "--json",
        ],
    ))
}

/// Prints one line for the note's table (grep `RELIABILITY` in the test output).
pub fn report(what: &str, line: String) {
    eprintln!("RELIABILITY {what}: {line}");
}
