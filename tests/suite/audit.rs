//! Issue 11: the tamper-evident audit log and proof of deletion — on SQLite and PostgreSQL,
//! through the built binary where the issue names a command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rel::{bin, json, ok, rd, rd_stdin, text};
use retentiond::admin::{self, PlaceHold};
use retentiond::audit::{AuditEntry, entry_hash};
use retentiond::holds::HoldScope;
use retentiond::model::Timestamp;
use sqlx::{Connection, Row};

/// `audit verify --json …` that must fail: exit 1, and the JSON names the first bad seq.
fn verify_fails(cfg: &Path, extra: &[&str]) -> (i64, String) {
    let mut args = vec!["audit", "verify", "--json"];
    args.extend_from_slice(extra);
    let o = rd(cfg, &args);
    assert_eq!(o.status.code(), Some(1), "verify should fail: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["ok"], false);
    let seq = v["error"]["seq"].as_i64().expect("error.seq");
    let problem = v["error"]["problem"].as_str().unwrap().to_string();
    let stderr = String::from_utf8_lossy(&o.stderr);
    if seq > 0 {
        assert!(
            stderr.contains(&format!("seq {seq}")),
            "stderr names the seq: {stderr}"
        );
    }
    (seq, problem)
}

fn verify_passes(cfg: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["audit", "verify", "--json"];
    args.extend_from_slice(extra);
    let v = json(&rd(cfg, &args));
    assert_eq!(v["ok"], true, "{v}");
    v
}

fn export(cfg: &Path) -> Vec<serde_json::Value> {
    ok(&rd(cfg, &["audit", "export"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect()
}

/// Adds `[audit]` with a fresh key (made by `audit keygen`) and an "offsite" checkpoint folder.
fn with_signing(env: &Env, knobs: Knobs) -> (Knobs, String, PathBuf) {
    let key = env.dir.path().join("audit.key");
    let offsite = env.dir.path().join("offsite");
    let o = bin()
        .args(["audit", "keygen", "--json", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    let out: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let public_key = out["public_key"].as_str().unwrap().to_string();
    assert_eq!(public_key.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let extra = format!(
        "{}\n[audit]\nsigning_key_file = \"{}\"\ncheckpoint_dir = \"{}\"\n",
        knobs.extra,
        key.display(),
        offsite.display()
    );
    (Knobs { extra, ..knobs }, public_key, offsite)
}

/// Direct access to the ledger's tables, as someone with write access to the database would have.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

macro_rules! on {
    ($db:expr, $c:ident => $e:expr) => {
        match $db {
            Db::Sqlite($c) => $e,
            Db::Pg($c) => $e,
        }
    };
}

impl Db {
    async fn open(env: &Env) -> Db {
        match env.backend {
            Backend::Sqlite => Db::Sqlite(
                sqlx::SqliteConnection::connect(&env.ledger_url)
                    .await
                    .unwrap(),
            ),
            Backend::Postgres => {
                Db::Pg(sqlx::PgConnection::connect(&env.ledger_url).await.unwrap())
            }
        }
    }

    async fn entries(&mut self) -> Vec<AuditEntry> {
        let sql =
            "SELECT seq, at, action, subject, details, prev_hash, hash FROM audit ORDER BY seq";
        let rows: Vec<(i64, i64, String, String, String, String, String)> =
            on!(self, c => sqlx::query_as(sql).fetch_all(&mut *c).await.unwrap());
        rows.into_iter()
            .map(
                |(seq, at, action, subject, details, prev_hash, hash)| AuditEntry {
                    seq,
                    at: Timestamp::from_millis(at),
                    action,
                    subject,
                    details,
                    prev_hash,
                    hash,
                },
            )
            .collect()
    }

    async fn entry(&mut self, seq: i64) -> AuditEntry {
        self.entries()
            .await
            .into_iter()
            .find(|e| e.seq == seq)
            .unwrap()
    }

    /// Overwrites the row `e.seq` with `e`'s fields.
    async fn put(&mut self, e: &AuditEntry) {
        let sql = "UPDATE audit SET at = $1, action = $2, subject = $3, details = $4, prev_hash = $5, hash = $6 WHERE seq = $7";
        let n = on!(self, c => sqlx::query(sql)
            .bind(e.at.millis()).bind(&e.action).bind(&e.subject).bind(&e.details)
            .bind(&e.prev_hash).bind(&e.hash).bind(e.seq)
            .execute(&mut *c).await.unwrap().rows_affected());
        assert_eq!(n, 1);
    }

    async fn insert(&mut self, e: &AuditEntry) {
        let sql = "INSERT INTO audit (seq, at, action, subject, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on!(self, c => sqlx::query(sql)
            .bind(e.seq).bind(e.at.millis()).bind(&e.action).bind(&e.subject).bind(&e.details)
            .bind(&e.prev_hash).bind(&e.hash)
            .execute(&mut *c).await.map(|_| ()).unwrap());
    }

    async fn try_insert(&mut self, e: &AuditEntry) -> bool {
        let sql = "INSERT INTO audit (seq, at, action, subject, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on!(self, c => sqlx::query(sql)
            .bind(e.seq).bind(e.at.millis()).bind(&e.action).bind(&e.subject).bind(&e.details)
            .bind(&e.prev_hash).bind(&e.hash)
            .execute(&mut *c).await.is_ok())
    }

    async fn exec(&mut self, sql: &str) {
        on!(self, c => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut *c).await.map(|_| ()).unwrap());
    }

    /// Rewrites the chain from `from` on as a careful forger would: `change` edits that entry,
    /// then every hash from there on is recomputed so the chain links up again.
    async fn rewrite_from(&mut self, from: i64, change: impl FnOnce(&mut AuditEntry)) {
        let entries = self.entries().await;
        let mut prev = entries
            .iter()
            .find(|e| e.seq == from - 1)
            .map(|e| e.hash.clone())
            .unwrap();
        let mut change = Some(change);
        for mut e in entries.into_iter().filter(|e| e.seq >= from) {
            if e.seq == from {
                (change.take().unwrap())(&mut e);
            }
            e.prev_hash = prev;
            e.hash = entry_hash(e.seq, e.at, &e.action, &e.subject, &e.details, &e.prev_hash);
            prev = e.hash.clone();
            self.put(&e).await;
        }
    }
}

/// Every row of every ledger table, as text (PostgreSQL).
async fn pg_dump(c: &mut sqlx::PgConnection) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut *c)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "audit"));
    let mut out = String::new();
    for t in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{t}\" t"
        )))
        .fetch_all(&mut *c)
        .await
        .unwrap();
        for r in rows {
            out.push_str(&r.get::<String, _>(0));
            out.push('\n');
        }
    }
    out
}

/// Everything stored about the ledger, as text: the SQLite file and its WAL, or PostgreSQL's rows.
async fn ledger_bytes(env: &Env) -> String {
    match env.backend {
        Backend::Sqlite => {
            let mut all = Vec::new();
            for suffix in ["", "-wal"] {
                let p = env.dir.path().join(format!("ledger.db{suffix}"));
                if let Ok(b) = std::fs::read(&p) {
                    all.extend(b);
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&env.ledger_url).await.unwrap();
            pg_dump(&mut c).await
        }
    }
}

fn hold_on_f1(account: &str) -> PlaceHold {
    PlaceHold {
        case: "LEGAL-7".into(),
        by: "carol".into(),
        reason: Some("litigation".into()),
        scope: HoldScope {
            account: Some(account.into()),
            resource: Some("f1".into()),
            ..Default::default()
        },
    }
}

// ---- (1) a full lifecycle verifies, and the receipt lists exactly what was purged -----------

both_backends! {
    async fn a_full_lifecycle_verifies_and_the_receipt_lists_exactly_what_was_purged(b: Backend) {
        let env = Env::new(b).await;
        let (knobs, public_key, offsite) = with_signing(&env, Knobs { api_log_max_age: "365d", ..Default::default() });
        let cfg = env.write_config(&env.config_text(&knobs));
        let h = H::with_config(env, &env_text(&cfg)).await;
        let env = &h.env;
        env.seed_user("a1").await;
        env.seed_user("a2").await;
        env.seed_conversation("c1", "a1", 2).await;
        env.seed_conversation("c2", "a1", 2).await;
        env.seed_conversation("c3", "a2", 2).await;
        env.seed_file("f1", "a1").await;
        env.seed_api_log("l1", "a1", "/v1/embeddings").await;
        env.app_exec("INSERT INTO agents (id, user_id, spec) VALUES ('g1', 'a1', 'secret agent spec')").await;
        h.ingest(&(org_account("o1", "free", "a1")
            + "{\"type\":\"account.created\",\"account\":\"a2\",\"org\":\"o1\"}\n"
            + &created("c1", "conversation", "a1") + &created("c2", "conversation", "a1")
            + &created("f1", "file", "a1") + &created_log("l1", "a1", "/v1/embeddings")
            + &created("g1", "agent", "a1") + &created("c3", "conversation", "a2"))).await;
        // A restore that is undone, a manual deletion, and another account's deletion.
        h.ingest(&(deleted("c2") + &restored("c2") + &deleted("c1") + &deleted("c3"))).await;
        h.advance("31d");
        assert_eq!(h.sweep().await.purged, 2);

        // Account deletion with one of its files under a legal hold.
        h.ingest(&account_deleted("a1")).await;
        let hold = admin::place_hold(&h.ledger, hold_on_f1("a1"), h.now()).await.unwrap();
        h.advance("31d");
        let r = h.sweep().await;
        assert_eq!((r.purged, r.accounts_purged), (3, 0), "c2, l1, g1 purged; f1 held");

        let receipt = json(&rd(&cfg, &["audit", "receipt", "--account", "a1", "--json"]));
        assert_eq!(receipt["state"], "deletion_requested");
        assert_eq!(receipt["resources_purged"], serde_json::json!({"agent": 1, "api_log": 1, "conversation": 2}));
        let kept = receipt["not_purged"].as_array().unwrap();
        assert_eq!(kept.len(), 1, "{receipt}");
        assert_eq!(kept[0]["id"], "f1");
        assert_eq!(kept[0]["holds"][0]["case"], "LEGAL-7");
        assert!(kept[0]["why"].as_str().unwrap().contains("legal hold"));

        admin::release_hold(&h.ledger, hold.id, "carol", h.now()).await.unwrap();
        let r = h.sweep().await;
        assert_eq!((r.purged, r.accounts_purged), (1, 1));
        let cp = json(&rd(&cfg, &["audit", "checkpoint", "--json"]));

        // The receipt lists exactly the purged resources of a1 — not a2's c3 — each backed by
        // one purge entry inside its seq range.
        let receipt = json(&rd(&cfg, &["audit", "receipt", "--account", "a1", "--json"]));
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        for r in h.ledger.account_resources_all("a1").await.unwrap() {
            assert_eq!(r.state.to_string(), "purged");
            *expected.entry(r.kind).or_default() += 1;
        }
        assert_eq!(serde_json::to_value(&expected).unwrap(), receipt["resources_purged"]);
        assert_eq!(receipt["resources_purged"], serde_json::json!({"agent": 1, "api_log": 1, "conversation": 2, "file": 1}));
        assert_eq!(receipt["state"], "purged");
        assert_eq!(receipt["not_purged"], serde_json::json!([]));
        for field in ["deletion_requested_at", "grace", "purge_after", "purged_at"] {
            assert!(!receipt[field].is_null(), "receipt lacks {field}: {receipt}");
        }
        assert_eq!(receipt["grace"], "30days");
        let ev = &receipt["evidence"];
        assert_eq!(ev["receipts"], 5);
        let (first, last) = (ev["first_seq"].as_i64().unwrap(), ev["last_seq"].as_i64().unwrap());
        let entries = export(&cfg);
        let purged_in_range: BTreeSet<String> = entries
            .iter()
            .filter(|e| e["action"] == "resource.purged" && e["details"]["account"] == "a1")
            .map(|e| {
                let seq = e["seq"].as_i64().unwrap();
                assert!((first..=last).contains(&seq));
                e["subject"].as_str().unwrap().to_string()
            })
            .collect();
        let want: BTreeSet<String> = ["agent/g1", "api_log/l1", "conversation/c1", "conversation/c2", "file/f1"]
            .iter().map(|s| s.to_string()).collect();
        assert_eq!(purged_in_range, want);
        assert!(ev["account_purged_seq"].as_i64().unwrap() > last);
        // The checkpoint taken after the purges covers the receipt.
        assert_eq!(ev["checkpoint"]["seq"], cp["seq"]);
        assert_eq!(ev["checkpoint"]["public_key"], public_key.as_str());

        // The chain verifies, alone and against the signed checkpoint kept "offsite".
        let v = verify_passes(&cfg, &[]);
        assert_eq!(v["entries"].as_u64().unwrap() as usize, entries.len());
        let head = json(&rd(&cfg, &["audit", "head", "--json"]));
        assert_eq!(v["head"]["seq"], head["seq"]);
        assert_eq!(v["head"]["hash"], head["hash"]);
        let off = offsite.join(format!("checkpoint-{:012}.json", cp["seq"].as_i64().unwrap()));
        let v = verify_passes(&cfg, &["--checkpoint", off.to_str().unwrap(), "--public-key", &public_key]);
        assert_eq!(v["last_checkpoint"]["seq"], cp["seq"]);
        assert!(v["trusted_checkpoints"].as_u64().unwrap() >= 2, "file and stored copy: {v}");
        let actions: BTreeSet<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
        for a in ["resource.created", "resource.deleted", "resource.restored", "resource.purged",
                  "account.deletion_requested", "account.purged", "hold.placed", "hold.released",
                  "policy.loaded"] {
            assert!(actions.contains(a), "no {a} entry in {actions:?}");
        }
        let text = ok(&rd(&cfg, &["audit", "receipt", "--account", "a1"]));
        assert!(text.contains("signed checkpoint") && text.contains(&public_key), "{text}");
    }
}

/// The config text already written for `cfg`.
fn env_text(cfg: &Path) -> String {
    std::fs::read_to_string(cfg).unwrap()
}

// ---- (2) tampering in the ledger's own tables ---------------------------------------------

both_backends! {
    async fn tampering_in_the_ledger_is_found_and_a_whole_rewrite_fails_against_a_checkpoint(b: Backend) {
        let env = Env::new(b).await;
        let (knobs, public_key, offsite) = with_signing(&env, Knobs { conversation_grace: "1d", ..Default::default() });
        let cfg = env.write_config(&env.config_text(&knobs));
        let h = H::with_config(env, &env_text(&cfg)).await;
        let mut events = org_account("o1", "free", "a1");
        for i in 0..6 {
            h.env.seed_conversation(&format!("c{i}"), "a1", 1).await;
            events.push_str(&created(&format!("c{i}"), "conversation", "a1"));
            events.push_str(&deleted(&format!("c{i}")));
        }
        h.ingest(&events).await;
        h.advance("2d");
        assert_eq!(h.sweep().await.purged, 6);
        verify_passes(&cfg, &[]);
        let mut db = Db::open(&h.env).await;
        let entries = db.entries().await;
        let purge = entries.iter().find(|e| e.action == "resource.purged").unwrap().clone();

        // Editing one entry's details.
        let mut edited = purge.clone();
        edited.details = edited.details.replace("\"cause\":\"manual\"", "\"cause\":\"zdr\"");
        assert_ne!(edited.details, purge.details);
        db.put(&edited).await;
        let (seq, problem) = verify_fails(&cfg, &[]);
        assert_eq!(seq, purge.seq);
        assert!(problem.contains("edited"), "{problem}");
        db.put(&purge).await;
        verify_passes(&cfg, &[]);

        // Deleting an entry.
        let victim = entries[entries.len() / 2].clone();
        db.exec(&format!("DELETE FROM audit WHERE seq = {}", victim.seq)).await;
        let (seq, problem) = verify_fails(&cfg, &[]);
        assert_eq!(seq, victim.seq);
        assert!(problem.contains("missing"), "{problem}");
        db.insert(&victim).await;
        verify_passes(&cfg, &[]);

        // Swapping two entries' contents (each keeps its seq and hashes).
        let a = entries.iter().find(|e| e.action == "resource.created").unwrap().clone();
        let z = entries.iter().find(|e| e.action == "resource.deleted" && e.seq > a.seq + 1).unwrap().clone();
        let swap = |x: &AuditEntry, y: &AuditEntry| AuditEntry {
            at: y.at, action: y.action.clone(), subject: y.subject.clone(), details: y.details.clone(), ..x.clone()
        };
        db.put(&swap(&a, &z)).await;
        db.put(&swap(&z, &a)).await;
        let (seq, _) = verify_fails(&cfg, &[]);
        assert_eq!(seq, a.seq, "the first of the two swapped entries");
        db.put(&a).await;
        db.put(&z).await;
        verify_passes(&cfg, &[]);

        // A checkpoint, kept offsite; then the ledger goes on.
        let cp = json(&rd(&cfg, &["audit", "checkpoint", "--json"]));
        let cp_seq = cp["seq"].as_i64().unwrap();
        let cp_file = offsite.join(format!("checkpoint-{cp_seq:012}.json"));
        assert!(cp_file.is_file());
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cp_file).unwrap()).unwrap();
        for f in ["seq", "hash", "at", "public_key", "signature"] {
            assert_eq!(saved[f], cp[f], "{f}");
        }
        h.ingest(&(created("c9", "conversation", "a1") + &deleted("c9"))).await;
        h.advance("2d");
        assert_eq!(h.sweep().await.purged, 1);
        verify_passes(&cfg, &["--checkpoint", cp_file.to_str().unwrap(), "--public-key", &public_key]);

        // Cutting entries off the end (from the checkpointed one on) leaves a chain that links
        // up, but not to the checkpoint.
        let tail: Vec<AuditEntry> = db.entries().await.into_iter().filter(|e| e.seq >= cp_seq).collect();
        db.exec(&format!("DELETE FROM audit WHERE seq >= {cp_seq}")).await;
        let (seq, problem) = verify_fails(&cfg, &["--checkpoint", cp_file.to_str().unwrap()]);
        assert_eq!(seq, cp_seq);
        assert!(problem.contains("deleted from its end"), "{problem}");
        for e in &tail {
            db.insert(e).await;
        }
        verify_passes(&cfg, &[]);

        // A forger rewrites the chain from the first purge receipt on, recomputing every hash.
        let rewrite_at = purge.seq;
        assert!(rewrite_at < cp_seq);
        db.rewrite_from(rewrite_at, |e| {
            e.details = e.details.replace("\"cause\":\"manual\"", "\"cause\":\"expired\"");
        }).await;
        // A careless one is caught by the checkpoint stored in the ledger…
        let (seq, problem) = verify_fails(&cfg, &[]);
        assert_eq!(seq, cp_seq, "{problem}");
        // …a careful one removes the stored checkpoints too, and the chain alone verifies:
        db.exec("DELETE FROM audit_checkpoints").await;
        verify_passes(&cfg, &[]);
        // but not against the checkpoint kept elsewhere: it names the checkpoint's seq.
        let (seq, problem) = verify_fails(&cfg, &["--checkpoint", cp_file.to_str().unwrap()]);
        assert_eq!(seq, cp_seq);
        assert!(problem.contains("rewritten"), "{problem}");
        let (seq, _) = verify_fails(&cfg, &["--checkpoint", offsite.to_str().unwrap(), "--public-key", &public_key]);
        assert_eq!(seq, cp_seq);
        // Pinning the key alone fails too: no checkpoint of that key is left in the ledger.
        verify_fails(&cfg, &["--public-key", &public_key]);
        // Nor can the forger re-sign the forged head with a key of their own.
        let forged_key = retentiond::checkpoint::generate_key().unwrap();
        let forged_hash = db.entry(cp_seq).await.hash;
        let forged = retentiond::checkpoint::sign(&forged_key, cp_seq, &forged_hash, Timestamp::parse_rfc3339(cp["at"].as_str().unwrap()).unwrap());
        let forged_file = h.env.dir.path().join("forged.json");
        std::fs::write(&forged_file, serde_json::to_string(&forged).unwrap()).unwrap();
        let (_, problem) = verify_fails(&cfg, &["--checkpoint", forged_file.to_str().unwrap(), "--public-key", &public_key]);
        assert!(problem.contains("trusted key"), "{problem}");
        // …even without --public-key, since the config names the signing key.
        verify_fails(&cfg, &["--checkpoint", forged_file.to_str().unwrap()]);
        // An edited checkpoint file does not verify either.
        let mut altered = saved.clone();
        altered["hash"] = serde_json::Value::String(forged_hash.clone());
        std::fs::write(&forged_file, altered.to_string()).unwrap();
        let (_, problem) = verify_fails(&cfg, &["--checkpoint", forged_file.to_str().unwrap()]);
        assert!(problem.contains("does not verify"), "{problem}");
    }
}

// ---- (3) one purge entry per purged resource, across crashes --------------------------------

both_backends! {
    async fn every_purged_resource_has_exactly_one_purge_entry_across_crashes(b: Backend) {
        let env = Env::new(b).await;
        let cfg = env.write_config(&env.config_text(&Knobs { conversation_grace: "0s", lease: "1s", batch_size: 4, ..Default::default() }));
        let mut events = org_account("o1", "free", "a1");
        for i in 0..12 {
            env.seed_conversation(&format!("c{i}"), "a1", 2).await;
            events.push_str(&created(&format!("c{i}"), "conversation", "a1"));
            events.push_str(&deleted(&format!("c{i}")));
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &events));
        // Targets deleted but not recorded; recorded-to-be but not committed; committed but the
        // process died before it could log or go on. Each leaves its claims leased for 1s.
        for point in ["after_target_0", "before_commit", "after_commit"] {
            let o = bin().arg("--config").arg(&cfg).args(["sweep", "--once"]).env("RETENTIOND_CRASH_AT", point).output().unwrap();
            assert_eq!(o.status.code(), Some(86), "crashed at {point}: {}", text(&o));
            std::thread::sleep(Duration::from_millis(1100));
        }
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 8, "the batch committed before the crash is not purged again");
        assert_eq!(r["accounts_purged"], 0);
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 0);
        assert_eq!(env.app_count("SELECT COUNT(*) FROM messages").await, 0);

        let entries = export(&cfg);
        let mut receipts: BTreeMap<String, usize> = BTreeMap::new();
        for e in entries.iter().filter(|e| e["action"] == "resource.purged") {
            *receipts.entry(e["subject"].as_str().unwrap().to_string()).or_default() += 1;
        }
        let want: BTreeMap<String, usize> = (0..12).map(|i| (format!("conversation/c{i}"), 1)).collect();
        assert_eq!(receipts, want, "exactly one purge entry per purged resource");
        assert_eq!(json(&rd(&cfg, &["status", "--json"]))["resources"]["purged"], 12);
        verify_passes(&cfg, &[]);

        // The database itself refuses a second purge entry for a resource.
        let mut db = Db::open(&env).await;
        let mut dup = db.entries().await.into_iter().find(|e| e.action == "resource.purged").unwrap();
        dup.seq = 1_000_000;
        assert!(!db.try_insert(&dup).await, "a second purge entry was accepted");
    }
}

// ---- (4) no user content anywhere -----------------------------------------------------------

both_backends! {
    async fn no_user_content_reaches_the_audit_log_its_exports_or_the_logs(b: Backend) {
        let env = Env::new(b).await;
        let (knobs, _, offsite) = with_signing(&env, Knobs { conversation_grace: "0s", file_grace: "0s", account_grace: "0s", ..Default::default() });
        let cfg = env.write_config(&env.config_text(&knobs));
        env.seed_user("a1").await;
        env.seed_conversation("c1", "a1", 3).await;
        env.seed_file("f1", "a1").await;
        env.app_exec("INSERT INTO api_logs (id, user_id, endpoint, request, response) VALUES ('l1', 'a1', '/v1/chat/completions', 'secret user text', 'secret model text')").await;
        env.app_exec("INSERT INTO api_logs (id, user_id, endpoint, request, response) VALUES ('l2', 'a1', '/v1/files', 'secret user text', 'secret model text')").await;
        let mut all = String::new();
        let mut run = |args: &[&str], input: Option<&str>| {
            let mut c = bin();
            c.arg("--config").arg(&cfg).args(["--log-format", "json"]).args(args).env("RUST_LOG", "debug");
            let o = match input {
                Some(i) => {
                    use std::io::Write;
                    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                    child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
                    child.wait_with_output().unwrap()
                }
                None => c.output().unwrap(),
            };
            let out = ok(&o);
            all.push_str(&out);
            all.push_str(&String::from_utf8_lossy(&o.stderr));
            out
        };
        run(&["ingest", "-"], Some(&(org_account("o1", "scale", "a1")
            + &created("c1", "conversation", "a1") + &created("f1", "file", "a1")
            + &created_log("l1", "a1", "/v1/chat/completions") + &created_log("l2", "a1", "/v1/files"))));
        run(&["org", "zdr", "request", "o1", "--by", "alice", "--reason", "contract"], None);
        run(&["org", "zdr", "approve", "o1", "--by", "bob"], None);
        run(&["sweep", "--once", "--dry-run"], None);
        run(&["sweep", "--once"], None);
        run(&["ingest", "-"], Some(&deleted("c1")));
        run(&["sweep", "--once"], None);
        run(&["hold", "place", "--case", "K-1", "--by", "legal", "--account", "a1"], None);
        let holds: serde_json::Value = serde_json::from_str(&run(&["hold", "list", "--json"], None)).unwrap();
        let id = holds["holds"][0]["id"].to_string();
        run(&["ingest", "-"], Some(&account_deleted("a1")));
        run(&["sweep", "--once"], None);
        run(&["hold", "release", &id, "--by", "legal"], None);
        run(&["sweep", "--once"], None);
        run(&["audit", "checkpoint"], None);
        let reads: [&[&str]; 10] = [&["audit", "export"], &["audit", "verify"], &["audit", "head"], &["audit", "receipt", "--account", "a1"],
                     &["audit", "receipt", "--account", "a1", "--json"], &["resource", "show", "l1", "--json"],
                     &["resource", "show", "l2"], &["account", "show", "a1"], &["status"], &["plan"]];
        for args in reads {
            run(args, None);
        }
        assert_eq!(env.app_count("SELECT COUNT(*) FROM api_logs").await, 0, "everything purged");
        assert_eq!(env.app_count("SELECT COUNT(*) FROM users").await, 0);
        for f in std::fs::read_dir(&offsite).unwrap() {
            all.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
        }
        let export = ok(&rd(&cfg, &["audit", "export"]));
        let stored = ledger_bytes(&env).await;
        for (name, hay) in [("command output and logs", &all), ("audit export", &export), ("ledger", &stored)] {
            for needle in ["secret user text", "secret model text", "prompt", "message 0 of c1", "message 2 of c1", "file content", "secret agent spec"] {
                assert!(!hay.contains(needle), "{name} contains `{needle}`");
            }
        }
        // Not vacuous: the endpoint (the one attribute kept) and the purges are there.
        assert!(export.contains("/v1/chat/completions") && export.contains("\"resource.purged\""));
        assert!(all.contains("\"purged\"") && all.contains("audit checkpoint signed"), "{all}");
    }
}

// ---- the daemon signs checkpoints on its cron ------------------------------------------------

#[tokio::test]
async fn the_daemon_signs_checkpoints_on_its_cron() {
    let env = Env::new(Backend::Sqlite).await;
    let (mut knobs, public_key, offsite) = with_signing(&env, Knobs::default());
    knobs.extra = knobs
        .extra
        .replace("[audit]\n", "[audit]\ncheckpoint = \"*/1 * * * * *\"\n");
    let cfg = env.write_config(&env.config_text(&knobs));
    ok(&rd_stdin(
        &cfg,
        &["ingest", "-"],
        &(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1")),
    ));
    let child = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let files = || {
        std::fs::read_dir(&offsite)
            .map(|d| d.count())
            .unwrap_or_default()
    };
    while files() == 0 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint written by the daemon"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // An unchanged chain is not signed again every second.
    std::thread::sleep(Duration::from_millis(2500));
    let s = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(s.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&out.stderr);
    let signed: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "audit checkpoint signed")
        .collect();
    assert_eq!(signed.len(), 1, "{logs}");
    assert_eq!(signed[0]["public_key"], public_key.as_str());
    assert_eq!(files(), 1);
    let entries = export(&cfg);
    assert!(entries.iter().any(|e| e["action"] == "config.loaded"));
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["action"] == "audit.checkpoint")
            .count(),
        1
    );
    let v = verify_passes(
        &cfg,
        &[
            "--checkpoint",
            offsite.to_str().unwrap(),
            "--public-key",
            &public_key,
        ],
    );
    assert_eq!(v["last_checkpoint"]["seq"], signed[0]["seq"]);
}
