//! Hostile input (issue 8): the NDJSON event parser and the config loader under generated
//! garbage (proptest; the coverage-guided fuzz targets are in fuzz/, run by scripts/fuzz.sh),
//! and explicit nasty cases through the binary: huge lines, invalid UTF-8, absurd numbers and
//! dates, SQL-looking ids through ingest and purge, and path-traversal ids against the files
//! target.

use crate::common::*;
use crate::rel::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use retentiond::config::Config;
use retentiond::events;
use retentiond::ingest::IngestError;
use serde_json::json;

// ---- generated input -------------------------------------------------------------------------

/// Strings that have broken parsers, databases and file systems before.
fn nasty_str() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("'; DROP TABLE messages; --".to_string()),
        Just("x' OR '1'='1".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("..".to_string()),
        Just("/etc/passwd".to_string()),
        Just("a\u{0}b".to_string()),
        Just("\u{202e}txt.exe".to_string()),
        Just("\u{feff}".to_string()),
        Just("💥".repeat(200)),
        Just("a".repeat(513)),
        Just("99999-01-01T00:00:00Z".to_string()),
        Just("-0001-01-01T00:00:00Z".to_string()),
        Just("+275760-09-13T00:00:00Z".to_string()),
        Just("2026-02-30T00:00:00Z".to_string()),
        Just("1970-01-01T00:00:00-23:59".to_string()),
        Just("conversation".to_string()),
        Just("c1".to_string()),
        Just("a1".to_string()),
        "[ -~]{0,16}",
        "\\PC{0,8}",
    ]
}

fn nasty_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        nasty_str().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

const TYPES: &[&str] = &[
    "org.upsert",
    "account.created",
    "resource.created",
    "resource.deleted",
    "resource.restored",
    "account.deletion_requested",
    "account.restored",
    "resource.moved",
];
const FIELDS: &[&str] = &[
    "org", "plan", "account", "id", "kind", "attrs", "at", "event_id", "type", "extra",
];

/// An event-shaped object: a real type, a few real fields with nasty or plausible values.
fn event_like() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(TYPES),
        proptest::collection::btree_map(
            proptest::sample::select(FIELDS),
            prop_oneof![
                3 => nasty_str().prop_map(serde_json::Value::String),
                1 => nasty_json(),
                1 => Just(json!({"endpoint": "/v1/embeddings"})),
                1 => Just(json!("free")),
            ],
            0..6,
        ),
    )
        .prop_map(|(t, fields)| {
            let mut m: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            m.entry("type").or_insert(json!(t));
            serde_json::Value::Object(m).to_string()
        })
}

/// A line of input: event-like JSON, any JSON, or any bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => event_like().prop_map(String::into_bytes),
        1 => nasty_json().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

fn document() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(line(), 0..12).prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend(l.into_iter().map(|b| if b == b'\n' { b' ' } else { b }));
            out.push(b'\n');
        }
        out
    })
}

fn fuzz_cases(default: u32) -> u32 {
    std::env::var("RETENTIOND_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(2_000), ..ProptestConfig::default() })]

    /// The parser never panics; it either returns one event per non-blank line or names every
    /// bad line, in order, each with a reason.
    #[test]
    fn the_event_parser_accepts_or_names_every_bad_line(doc in document()) {
        let lines = doc.split(|b| *b == b'\n').count() - 1;
        let blank = doc
            .split(|b| *b == b'\n')
            .take(lines)
            .filter(|l| std::str::from_utf8(l).is_ok_and(|t| t.trim().is_empty()))
            .count();
        match events::read_all(&doc[..]) {
            Ok(evs) => prop_assert_eq!(evs.len(), lines - blank),
            Err(errs) => {
                prop_assert!(!errs.is_empty());
                let mut last = 0;
                for e in &errs {
                    prop_assert!(e.line > last && e.line <= lines, "line {} of {}", e.line, lines);
                    prop_assert!(!e.reason.trim().is_empty());
                    last = e.line;
                }
            }
        }
    }
}

/// The config the tests run with, as text (paths need not exist for parsing).
fn base_config() -> String {
    r#"
[database]
url = "sqlite:///tmp/retentiond-fuzz/ledger.db"
[scheduler]
sweep = "*/10 * * * * *"
batch_size = 500
lease = "5m"
max_attempts = 3
retry_backoff = "1m"
retry_backoff_max = "1h"
[ingest]
max_clock_skew = "5m"
[accounts]
grace_after_delete = "30d"
targets = ["app_db", "uploads"]
[zdr]
endpoints = ["/v1/chat/completions", "/v1/embeddings"]
[kinds.conversation]
grace_after_delete = "30d"
grace_after_account_delete = "10d"
targets = ["app_db"]
[kinds.api_log]
grace_after_delete = "0s"
max_age = "30d"
zdr = true
targets = ["app_db"]
[kinds.file]
grace_after_delete = "30d"
targets = ["app_db", "uploads"]
[targets.app_db]
type = "sql"
url = "sqlite:///tmp/retentiond-fuzz/app.db"
[targets.app_db.purge]
conversation = ["DELETE FROM messages WHERE conversation_id = :id", "DELETE FROM conversations WHERE id = :id"]
api_log = ["DELETE FROM api_logs WHERE id = :id"]
file = ["DELETE FROM files WHERE id = :id"]
account = ["DELETE FROM users WHERE id = :account"]
[targets.uploads]
type = "files"
root = "/tmp/retentiond-fuzz/uploads"
path = "{account}/{id}"
account_path = "{account}"
[safety]
max_newly_due = 1000
"#
    .to_string()
}

/// TOML values that should be refused (or accepted) with a clear answer, never a panic.
fn nasty_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"-5s\"".to_string()),
        Just("\"99999999999999999999d\"".to_string()),
        Just("\"10001y\"".to_string()),
        Just("\"584942417355y\"".to_string()),
        Just("\"1e400s\"".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("1e400".to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("\"\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("[]".to_string()),
        Just("[\"\"]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"* * * * *\"".to_string()),
        Just("\"99 * * * * *\"".to_string()),
        Just("\"../../etc\"".to_string()),
        Just("\"{id}/../..\"".to_string()),
        Just("\"/\"".to_string()),
        Just("\"'; DROP TABLE x; --\"".to_string()),
        Just("\"DELETE FROM users\"".to_string()),
        Just("\"postgres://u:secret@127.0.0.1:1/x\"".to_string()),
        "\"[ -~]{0,12}\"",
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, String),
    Delete(usize),
    Duplicate(usize),
    Insert(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), nasty_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => (any::<usize>(), "[a-z_.\\[\\]]{1,16}( = )?[ -~]{0,12}").prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

fn mutate(text: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for m in muts {
        let n = lines.len().max(1);
        match m {
            Mutation::Replace(i, v) => {
                let i = i % n;
                if let Some(eq) = lines.get(i).and_then(|l| l.find(" = ")) {
                    lines[i] = format!("{} = {v}", &lines[i][..eq]);
                }
            }
            Mutation::Delete(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Insert(i, v) => lines.insert(i % n, v.clone()),
            _ => {}
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(1_500), ..ProptestConfig::default() })]

    /// Mutated configs: never a panic; a refusal names the file and says what is wrong; an
    /// accepted config can be described.
    #[test]
    fn the_config_loader_refuses_clearly_or_accepts(muts in proptest::collection::vec(mutation(), 1..4)) {
        let text = mutate(&base_config(), &muts);
        match Config::parse(&text, "fuzz.toml") {
            Ok(c) => { let _ = retentiond::cli::check_config::describe(&c); }
            Err(e) => {
                let m = e.to_string();
                prop_assert!(m.contains("fuzz.toml"), "{}", m);
                prop_assert!(m.len() > "fuzz.toml".len() + 5, "{}", m);
            }
        }
    }

    #[test]
    fn arbitrary_text_as_config_never_panics(s in "\\PC{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Config::parse(&s, "fuzz.toml");
        let _ = Config::parse(&String::from_utf8_lossy(&bytes), "fuzz.toml");
    }
}

/// Generated documents through the whole ingest engine: all or nothing, and bad input is
/// always `Invalid` (a line-numbered refusal), never a database error or a panic.
async fn ingest_fuzz(b: Backend, cases: u32) {
    let h = H::new(b, Knobs::default()).await;
    h.ingest(&(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1")))
        .await;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let docs: Vec<Vec<u8>> = (0..cases)
        .map(|_| document().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut accepted = 0;
    let mut refused = 0;
    for doc in docs {
        let before = (
            h.ledger.state_counts().await.unwrap(),
            h.ledger.audit_head().await.unwrap(),
        );
        match h.app.ingest_reader(&doc[..]).await {
            Ok(_) => accepted += 1,
            Err(IngestError::Invalid(errs)) => {
                refused += 1;
                assert!(!errs.is_empty());
                let after = (
                    h.ledger.state_counts().await.unwrap(),
                    h.ledger.audit_head().await.unwrap(),
                );
                assert_eq!(
                    before,
                    after,
                    "a refused input changed the ledger: {}",
                    String::from_utf8_lossy(&doc)
                );
            }
            Err(e) => panic!(
                "input made the store fail ({e}): {}",
                String::from_utf8_lossy(&doc)
            ),
        }
    }
    h.audit_ok().await;
    report(
        "input",
        format!(
            "{b:?}: {cases} generated NDJSON documents through ingest: {accepted} accepted, {refused} refused with line numbers, 0 store errors, 0 panics"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_documents_through_ingest_are_all_or_nothing_sqlite() {
    ingest_fuzz(Backend::Sqlite, fuzz_cases(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_documents_through_ingest_are_all_or_nothing_postgres() {
    if pg_disabled() {
        eprintln!("RETENTIOND_TEST_PG=off: PostgreSQL variant skipped on request");
        return;
    }
    ingest_fuzz(Backend::Postgres, fuzz_cases(150)).await;
}

// ---- explicit cases through the binary ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_lines_are_each_refused_and_nothing_is_applied() {
    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs::default()));
    ok(&rd_stdin(
        &cfg,
        &["ingest", "-"],
        &org_account("o1", "free", "a1"),
    ));
    let before = json(&rd(&cfg, &["status", "--json"]))["resources"].clone();
    let ok_line = |id: &str| created(id, "conversation", "a1").into_bytes();
    let mut input: Vec<u8> = Vec::new();
    let mut expect: Vec<(usize, &str)> = Vec::new();
    let mut add = |bytes: Vec<u8>, want: Option<&'static str>| {
        input.extend(bytes);
        if !input.ends_with(b"\n") {
            input.push(b'\n');
        }
        if let Some(w) = want {
            expect.push((input.iter().filter(|b| **b == b'\n').count(), w));
        }
    };
    add(ok_line("fine1"), None);
    // 3 MiB on one line.
    let mut huge = br#"{"type":"resource.created","id":"h","kind":"conversation","account":"a1","attrs":{"x":""#.to_vec();
    huge.extend(vec![b'a'; 3 << 20]);
    huge.extend(b"\"}}");
    add(huge, Some("longer than"));
    add(
        b"{\"type\":\"resource.deleted\",\"id\":\"\xff\xfe\"}".to_vec(),
        Some("UTF-8"),
    );
    add(
        b"{\"type\":\"resource.deleted\",\"id\":\"c\",\"at\":\"99999-01-01T00:00:00Z\"}".to_vec(),
        Some("RFC 3339"),
    );
    add(
        b"{\"type\":\"resource.deleted\",\"id\":\"c\",\"at\":\"+275760-09-13T00:00:00Z\"}".to_vec(),
        Some("RFC 3339"),
    );
    add(
        b"{\"type\":\"org.upsert\",\"org\":\"o2\",\"plan\":1e999}".to_vec(),
        Some("malformed JSON"),
    );
    add(
        b"{\"type\":\"org.upsert\",\"org\":18446744073709551616,\"plan\":\"free\"}".to_vec(),
        Some("invalid type"),
    );
    let deep = format!(
        "{{\"type\":\"resource.created\",\"id\":\"d\",\"kind\":\"conversation\",\"account\":\"a1\",\"attrs\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    add(deep.into_bytes(), Some("malformed JSON"));
    add(b"{\"type\":\"resource.created\",\"id\":\"n\\u0000ul\",\"kind\":\"conversation\",\"account\":\"a1\"}".to_vec(), Some("control character"));
    add(format!("{{\"type\":\"resource.created\",\"id\":\"{}\",\"kind\":\"conversation\",\"account\":\"a1\"}}", "i".repeat(100_000)).into_bytes(), Some("longer than 512"));
    add(b"{\"type\":\"resource.created\",\"id\":\"f\",\"kind\":\"conversation\",\"account\":\"a1\",\"at\":\"1969-12-31T23:59:59Z\",\"at\":\"x\"}".to_vec(), Some("at"));
    add(b"\x00\x00\x00\x00".to_vec(), Some("malformed JSON"));
    add(ok_line("fine2"), None);
    let file = env.dir.path().join("hostile.ndjson");
    std::fs::write(&file, &input).unwrap();
    let o = rd(&cfg, &["ingest", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    for (line, want) in &expect {
        let l = err
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("line {line}:")))
            .unwrap_or_else(|| {
                panic!("line {line} not reported:\n{}", &err[..err.len().min(4000)])
            });
        assert!(
            l.contains(want),
            "line {line} should say `{want}`: {}",
            &l[..l.len().min(300)]
        );
        assert!(l.len() < 2_000, "the reason does not echo a huge line back");
    }
    assert_eq!(
        json(&rd(&cfg, &["status", "--json"]))["resources"],
        before,
        "nothing applied"
    );
    report(
        "input",
        format!(
            "{} hostile event lines (3 MiB line, invalid UTF-8, year 99999/+275760, 1e999, 2^64, 5000-deep nesting, NUL, 100 kB id, NUL bytes) each refused with its line number; nothing applied",
            expect.len()
        ),
    );
}

#[tokio::test]
async fn hostile_config_values_are_refused_naming_the_key() {
    let env = Env::new(Backend::Sqlite).await;
    let good = env.config_text(&Knobs::default());
    let mut tried = 0;
    for (from, to, key) in [
        (
            "grace_after_delete = \"30d\"\n",
            "grace_after_delete = \"-5s\"\n",
            "grace_after_delete",
        ),
        (
            "grace_after_delete = \"30d\"\n",
            "grace_after_delete = \"99999999999999999999d\"\n",
            "grace_after_delete",
        ),
        (
            "grace_after_delete = \"30d\"\n",
            "grace_after_delete = \"20000y\"\n",
            "grace_after_delete",
        ),
        (
            "max_age = \"30d\"",
            "max_age = \"1e400s\"",
            "kinds.api_log.max_age",
        ),
        ("max_age = \"30d\"", "max_age = 30", "kinds.api_log.max_age"),
        (
            "batch_size = 500",
            "batch_size = -1",
            "scheduler.batch_size",
        ),
        ("batch_size = 500", "batch_size = 0", "scheduler.batch_size"),
        (
            "batch_size = 500",
            "batch_size = 99999999999999999999",
            "batch_size",
        ),
        (
            "batch_size = 500",
            "batch_size = 1e10",
            "scheduler.batch_size",
        ),
        (
            "batches_per_transaction = 4",
            "batches_per_transaction = 0",
            "scheduler.batches_per_transaction",
        ),
        (
            "batches_per_transaction = 4",
            "batches_per_transaction = 65",
            "scheduler.batches_per_transaction",
        ),
        (
            "max_attempts = 3",
            "max_attempts = 0",
            "scheduler.max_attempts",
        ),
        (
            "max_attempts = 3",
            "max_attempts = 4294967296",
            "scheduler.max_attempts",
        ),
        ("lease = \"5m\"", "lease = \"0s\"", "scheduler.lease"),
        (
            "max_clock_skew = \"5m\"",
            "max_clock_skew = \"-1m\"",
            "ingest.max_clock_skew",
        ),
        (
            "max_newly_due = 1000",
            "max_newly_due = -1",
            "safety.max_newly_due",
        ),
        (
            "sweep = \"*/1 * * * * *\"",
            "sweep = \"99 * * * * *\"",
            "scheduler.sweep",
        ),
        (
            "path = \"{account}/{id}\"",
            "path = \"../{id}\"",
            "targets.uploads.path",
        ),
        (
            "path = \"{account}/{id}\"",
            "path = \"/etc/{id}\"",
            "targets.uploads.path",
        ),
        (
            "path = \"{account}/{id}\"",
            "path = \"{account}/{nope}\"",
            "targets.uploads.path",
        ),
        (
            "account_path = \"{account}\"",
            "account_path = \"\"",
            "targets.uploads.account_path",
        ),
        ("[safety]", "[safety]\n[safety]", "duplicate key"),
    ] {
        assert!(good.contains(from), "{from}");
        let bad = good.replacen(from, to, 1);
        let p = env.dir.path().join("bad.toml");
        std::fs::write(&p, &bad).unwrap();
        let o = rd(&p, &["check-config"]);
        tried += 1;
        assert_eq!(o.status.code(), Some(2), "{to}: {}", text(&o));
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{to}: {err}");
        assert!(
            err.contains("bad.toml") && err.contains(key),
            "{to}: the error names the key `{key}`: {err}"
        );
    }
    report(
        "input",
        format!(
            "{tried} hostile config values (negative, overflowing and 20000-year durations, 1e400, 2^64, zero batch/lease/attempts, bad cron, escaping paths, duplicate table) refused with exit 2 naming the key"
        ),
    );
}

fn ev(v: serde_json::Value) -> String {
    format!("{v}\n")
}

both_backends! {
    async fn sql_looking_ids_are_data_through_ingest_and_purge(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs { conversation_grace: "0s", account_grace: "0s", ..Default::default() }));
        let hostile = [
            "'; DROP TABLE messages; --",
            "x' OR '1'='1",
            "1; DELETE FROM users",
            "\" OR \"\"=\"",
            "c1' --",
            "%' OR id LIKE '%",
            "$1",
            ":id",
        ];
        let evil_account = "a'; DROP TABLE users; --";
        env.seed_user(evil_account).await;
        env.seed_user("bystander").await;
        env.seed_conversation("c1", "bystander", 3).await;
        let mut events = org_account("o1", "free", "bystander") + &created("c1", "conversation", "bystander");
        events.push_str(&ev(json!({"type":"account.created","account": evil_account, "org":"o1"})));
        for id in hostile {
            env.seed_conversation(id, evil_account, 2).await;
            events.push_str(&ev(json!({"type":"resource.created","id": id,"kind":"conversation","account": evil_account})));
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
        // A hold with hostile text, on one hostile resource.
        let o = rd(&cfg, &["hold", "place", "--case", "'); DELETE FROM holds; --", "--by", "x' OR 1=1", "--reason", "\"; DROP", "--resource", hostile[1], "--json"]);
        assert_eq!(json(&o)["matched"], 1);
        for id in hostile {
            ok(&rd_stdin(&cfg, &["ingest", "-"], &ev(json!({"type":"resource.deleted","id": id}))));
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &ev(json!({"type":"account.deletion_requested","account": evil_account}))));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], hostile.len() as i64 - 1, "all but the held one: {r}");
        assert_eq!(r["accounts_purged"], 0, "the account waits for its held resource");
        // Only the hostile rows went; every table is still there.
        let tables = env.app_count("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").await;
        assert!(tables >= 9, "tables: {tables}");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await, 3);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 3 + 2);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users").await, 2);
        let shown = json(&rd(&cfg, &["resource", "show", hostile[1], "--json"]));
        assert_eq!(shown["id"], hostile[1]);
        assert_eq!(shown["state"], "deleted");
        // Release: the rest goes, then the account (its users row by a bound :account).
        let hold_id = json(&rd(&cfg, &["hold", "list", "--json"]))["holds"][0]["id"].as_i64().unwrap();
        ok(&rd(&cfg, &["hold", "release", &hold_id.to_string(), "--by", "x"]));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((r["purged"].as_i64(), r["accounts_purged"].as_i64()), (Some(1), Some(1)), "{r}");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 3);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users").await, 1, "only the hostile account's row");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM conversations").await, 1);
        let ledger = open_ledger(&env).await;
        let rec = receipts(&ledger).await;
        for id in hostile {
            assert_eq!(rec.get(id).map(Vec::len), Some(1), "{id}");
        }
        assert_eq!(json(&rd(&cfg, &["account", "show", evil_account, "--json"]))["state"], "purged");
        assert_eq!(json(&rd(&cfg, &["account", "show", "bystander", "--json"]))["state"], "active");
        audit_verify(&cfg);
        report("input", format!("{b:?}: {} SQL-looking resource ids + 1 account id + hostile hold text through ingest, hold, purge: only their rows deleted, no statement executed, all tables intact", hostile.len()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_ids_never_escape_the_files_root() {
    let env = Env::new(Backend::Sqlite).await;
    let cfg = env.write_config(&env.config_text(&Knobs {
        file_grace: "0s",
        account_grace: "0s",
        max_attempts: 1,
        ..Default::default()
    }));
    let top = env.dir.path();
    // Sentinels where escaping ids would land.
    let sentinels = [
        top.join("etc/passwd"),
        top.join("x"),
        top.join("outside/f9"),
        top.join("ledger.db"),
        env.app_db.clone(),
    ];
    for s in &sentinels[..3] {
        std::fs::create_dir_all(s.parent().unwrap()).unwrap();
        std::fs::write(s, b"sentinel").unwrap();
    }
    std::os::unix::fs::symlink(top.join("outside"), env.uploads.join("a9")).unwrap();
    let refused = [
        ("a1", "../../etc/passwd"),
        ("a1", ".."),
        ("a1", "."),
        ("a1", "/etc/passwd"),
        ("a1", "a/../../x"),
        ("a1", "..\\..\\x"),
        ("a1", "../ledger.db"),
        ("..", "x"),
        ("a9", "f9"),
    ];
    let allowed = [
        ("a1", "%2e%2e%2fetc%2fpasswd"),
        ("a1", "...."),
        ("a1", "f-ok"),
    ];
    let mut events = org_account("o1", "free", "a1") + &org_account("o1", "free", "a9");
    events.push_str(&ev(
        json!({"type":"account.created","account":"..","org":"o1"}),
    ));
    events.push_str(&ev(
        json!({"type":"account.created","account":".","org":"o1"}),
    ));
    for (acct, id) in refused.iter().chain(allowed.iter()) {
        events.push_str(&ev(
            json!({"type":"resource.created","id": id,"kind":"file","account": acct}),
        ));
        events.push_str(&ev(json!({"type":"resource.deleted","id": id})));
    }
    for (acct, id) in allowed {
        let p = env.uploads.join(acct).join(id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
    }
    std::fs::write(env.uploads.join("a1/keep"), b"another user's file").unwrap();
    ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
    // An account called `.`, deleted with nothing left: its account folder would be the
    // uploads root itself.
    ok(&rd_stdin(&cfg, &["ingest", "-"], &account_deleted(".")));
    let o = rd(&cfg, &["sweep", "--once", "--json"]);
    let r = json(&o);
    let log = stderr(&o);
    assert_eq!(r["purged"], allowed.len() as i64, "{r}\n{log}");
    assert_eq!(r["failed"], refused.len() as i64);
    for s in &sentinels {
        assert!(s.exists(), "{} was reached", s.display());
    }
    assert!(env.uploads.join("a1/keep").exists());
    assert!(env.uploads.is_dir());
    for (_, id) in allowed {
        assert!(!exists(&env.upload("a1", id)), "{id} purged");
    }
    for (_, id) in refused {
        let shown = json(&rd(&cfg, &["resource", "show", id, "--json"]));
        assert_eq!(shown["state"], "failed", "{id}: {shown}");
        let l = log
            .lines()
            .find(|l| l.contains("purge failed too many times") && l.contains(&format!("id={id} ")))
            .unwrap_or_else(|| panic!("no failure line for {id}:\n{log}"));
        assert!(
            l.contains("cannot be used as a path component") || l.contains("outside root"),
            "{l}"
        );
    }
    let status = json(&rd(&cfg, &["status", "--json"]));
    assert_eq!(
        status["accounts"]["purged"].as_i64().unwrap_or(0),
        0,
        "{status}"
    );
    assert!(log.contains("account purge failed"), "{log}");
    assert_eq!(
        json(&rd(&cfg, &["account", "show", ".", "--json"]))["state"],
        "deletion_requested"
    );
    audit_verify(&cfg);
    report(
        "input",
        format!(
            "{} path-traversal ids (../.., ., .., absolute, backslashes, symlinked folder, account `..`; account `.` at account purge) refused visibly, {} odd-but-safe names purged; 0 files outside the root touched",
            refused.len() + 1,
            allowed.len()
        ),
    );
}
