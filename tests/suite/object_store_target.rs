//! Issue 21 §1: the `object_store` target against a real S3-protocol server (moto), through
//! the built binary, on both ledger backends: every version and delete marker gone, receipts
//! counting objects, holds, the account purge by prefix, a 403 that fails and is retried, a
//! crash between the target call and the ledger, `reapply`, hostile keys and bad config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use crate::rel::*;

const BUCKET: &str = "uploads";

/// A config: libraries in `s3://uploads/p/{account}/{id}` (account purge `p/{account}/`),
/// batch files in `s3://uploads/docs/{account}/{attrs.path}`; everything due at once.
fn config(env: &Env, moto: &Moto, max_attempts: u32) -> PathBuf {
    let text = format!(
        r#"
[database]
url = "{ledger}"

[scheduler]
sweep = "*/1 * * * * *"
batch_size = 3
lease = "1s"
max_attempts = {max_attempts}
retry_backoff = "1s"

[accounts]
grace_after_delete = "0s"
targets = ["blobs"]

[kinds.library]
grace_after_delete = "0s"
targets = ["blobs"]

[kinds.batch_file]
grace_after_delete = "0s"
targets = ["docs"]

{blobs}
{docs}
"#,
        ledger = env.ledger_url,
        blobs = moto.target_toml(
            "blobs",
            env.dir.path(),
            &format!("s3://{BUCKET}/p"),
            "key = \"{account}/{id}\"\naccount_prefix = \"{account}/\"\n"
        ),
        docs = moto.target_toml(
            "docs",
            env.dir.path(),
            &format!("s3://{BUCKET}/docs/"),
            "key = \"{account}/{attrs.path}\"\nversions = \"all\"\n"
        ),
    );
    env.write_config(&text)
}

fn account(a: &str) -> String {
    format!("{{\"type\":\"account.created\",\"account\":\"{a}\",\"org\":\"o1\"}}\n")
}

fn batch_file(id: &str, account: &str, path: &str) -> String {
    format!(
        "{{\"type\":\"resource.created\",\"id\":\"{id}\",\"kind\":\"batch_file\",\"account\":\"{account}\",\"attrs\":{{\"path\":\"{path}\"}}}}\n"
    )
}

/// A moto server with a versioned bucket; `objects` get two versions each.
async fn world(objects: &[&str]) -> Moto {
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET, true).await;
    for k in objects {
        moto.put(BUCKET, k, "v1").await;
        moto.put(BUCKET, k, "v2").await;
    }
    moto
}

fn show(cfg: &Path, id: &str) -> serde_json::Value {
    json(&rd(cfg, &["resource", "show", id, "--json"]))
}

/// The `objects` of each target in a resource's receipts.
async fn receipt_objects(env: &Env, id: &str) -> Vec<u64> {
    let ledger = open_ledger(env).await;
    let r = receipts(&ledger).await;
    r.get(id)
        .map(|v| {
            v.iter()
                .map(|d| d["targets"][0]["objects"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

both_backends! {
    /// Two versions each (and a delete marker on one) all gone; a key that merely starts like
    /// a purged one, and the objects of a held account, stay; receipts count the versions;
    /// a dry run deletes nothing; hostile and missing keys fail without deleting anything.
    async fn every_version_goes_holds_keep_and_hostile_keys_are_refused(b: Backend) {
        let env = Env::new(b).await;
        let moto = world(&["p/a1/l1", "p/a1/l2", "p/a1/l10", "p/a2/m1", "docs/a1/x/b1.jsonl", "p/keep"]).await;
        // A delete marker on top of l2's two versions (a user "deleted" it in the app).
        moto.raw_delete(BUCKET, &[("p/a1/l2".into(), None)]).await;
        assert_eq!(moto.versions(BUCKET, "p/a1/l2").await.len(), 3);
        let cfg = config(&env, &moto, 1);
        let mut ev = org_account("o1", "free", "a1") + &account("a2");
        for (id, a) in [("l1", "a1"), ("l2", "a1"), ("m1", "a2"), ("../keep", "a1")] {
            ev += &created(id, "library", a);
        }
        ev += &batch_file("b1", "a1", "x/b1.jsonl");
        ev += &batch_file("b2", "a1", "../../p/keep");
        ev += "{\"type\":\"resource.created\",\"id\":\"b3\",\"kind\":\"batch_file\",\"account\":\"a1\"}\n";
        for id in ["l1", "l2", "m1", "../keep", "b1", "b2", "b3"] {
            ev += &deleted(id);
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
        let placed = hold_account(&cfg, "a2");
        assert_eq!(placed["matched"], 1, "{placed}");

        let before = moto.versions(BUCKET, "").await;
        let dry = ok(&rd(&cfg, &["sweep", "--once", "--dry-run"]));
        assert!(dry.contains("l1"), "{dry}");
        assert_eq!(moto.versions(BUCKET, "").await, before, "a dry run deletes nothing");

        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 3, "l1, l2, b1: {r}");
        assert_eq!(moto.keys(BUCKET, "").await, vec!["p/a1/l10", "p/a2/m1", "p/keep"]);
        assert_eq!(moto.versions(BUCKET, "p/a2/m1").await.len(), 2, "the held account keeps both versions");
        assert_eq!(receipt_objects(&env, "l1").await, vec![2]);
        assert_eq!(receipt_objects(&env, "l2").await, vec![3], "two versions and the delete marker");
        assert_eq!(receipt_objects(&env, "b1").await, vec![2]);
        assert_eq!(show(&cfg, "m1")["state"], "deleted");

        // Hostile keys are refused, a missing attribute fails naming it; nothing was deleted.
        for (id, why) in [("../keep", "cannot be used as a key segment"), ("b2", "cannot be used as a key segment"), ("b3", "attribute `path`")] {
            let s = show(&cfg, id);
            assert_eq!(s["state"], "failed", "{id}: {s}");
            assert!(s["last_error"].as_str().unwrap().contains(why), "{id}: {s}");
        }
        assert_eq!(moto.versions(BUCKET, "p/keep").await.len(), 2);

        // Released: the held account's objects go at the next sweep.
        let hold = placed["id"].as_i64().unwrap().to_string();
        ok(&rd(&cfg, &["hold", "release", &hold, "--by", "legal"]));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 1, "{r}");
        assert!(moto.versions(BUCKET, "p/a2/").await.is_empty());
        assert_eq!(receipt_objects(&env, "m1").await, vec![2]);
        assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
    }
}

both_backends! {
    /// R8: after its resources, the account's prefix is emptied (paged listing), objects the
    /// ledger never heard of included; `a10/` is another account's and stays.
    async fn the_account_purge_empties_the_account_prefix(b: Backend) {
        let env = Env::new(b).await;
        let mut keys: Vec<String> = (0..5).map(|i| format!("p/a1/l{i}")).collect();
        keys.extend((0..3).map(|i| format!("p/a1/thumbs/t{i}.png")));
        keys.push("p/a10/l0".into());
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let moto = world(&refs).await;
        let cfg = config(&env, &moto, 3);
        let mut ev = org_account("o1", "free", "a1") + &account("a10");
        for i in 0..5 {
            ev += &created(&format!("l{i}"), "library", "a1");
        }
        ev += &account_deleted("a1");
        ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!((r["purged"].as_u64(), r["accounts_purged"].as_u64()), (Some(5), Some(1)), "{r}");
        assert!(moto.versions(BUCKET, "p/a1/").await.is_empty(), "nothing left under p/a1/");
        assert_eq!(moto.keys(BUCKET, "").await, vec!["p/a10/l0"]);
        let export = ok(&rd(&cfg, &["audit", "export"]));
        let account_line = export
            .lines()
            .find(|l| l.contains("\"action\":\"account.purged\""))
            .expect("an account.purged entry");
        assert!(account_line.contains("objects"), "{account_line}");
        assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
    }
}

both_backends! {
    /// A bucket policy denies deleting one key: DeleteObjects answers AccessDenied for it. The
    /// purge fails naming bucket and key (never a success), the resource is `failed`, and once
    /// the policy is lifted `retry` and a sweep finish it.
    async fn access_denied_fails_the_item_naming_bucket_and_key_and_retry_finishes_it(b: Backend) {
        let env = Env::new(b).await;
        let moto = world(&["p/a1/l1", "p/a1/l2"]).await;
        moto.deny_delete(BUCKET, "p/a1/l2").await;
        let cfg = config(&env, &moto, 1);
        let mut ev = org_account("o1", "free", "a1");
        for id in ["l1", "l2"] {
            ev += &created(id, "library", "a1");
            ev += &deleted(id);
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 1, "{r}");
        let s = show(&cfg, "l2");
        assert_eq!(s["state"], "failed", "{s}");
        let err = s["last_error"].as_str().unwrap();
        assert!(err.contains("s3://uploads/p/a1/l2") && err.contains("AccessDenied"), "{err}");
        assert_eq!(moto.versions(BUCKET, "p/a1/l2").await.len(), 2);
        let status = ok(&rd(&cfg, &["status"]));
        assert!(status.contains("l2") && status.contains("AccessDenied"), "{status}");

        moto.allow_delete(BUCKET).await;
        ok(&rd(&cfg, &["retry", "l2"]));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 1, "{r}");
        assert!(moto.versions(BUCKET, "p/").await.is_empty());
        assert_eq!(receipt_objects(&env, "l2").await, vec![2]);
    }
}

both_backends! {
    /// The process dies after the object store deleted and before the ledger recorded: the
    /// next sweep finds the keys gone (idempotent: 0 objects now) and records each once.
    async fn a_crash_after_the_deletes_is_finished_with_one_receipt_each(b: Backend) {
        let env = Env::new(b).await;
        let keys: Vec<String> = (0..6).map(|i| format!("p/a1/l{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let moto = world(&refs).await;
        let cfg = config(&env, &moto, 3);
        let mut ev = org_account("o1", "free", "a1");
        for i in 0..6 {
            ev += &created(&format!("l{i}"), "library", "a1");
            ev += &deleted(&format!("l{i}"));
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
        let o = rd_crash(&cfg, "after_target_0", &["sweep", "--once"], None);
        assert_eq!(o.status.code(), Some(86), "{}", text(&o));
        let left = moto.keys(BUCKET, "p/").await.len();
        assert!(left < 6, "the first batch was deleted before the crash ({left} keys left)");
        assert!(receipts(&open_ledger(&env).await).await.is_empty(), "nothing recorded by the crashed sweep");
        std::thread::sleep(Duration::from_millis(1200));
        let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
        assert_eq!(r["purged"], 6, "{r}");
        assert!(moto.versions(BUCKET, "p/").await.is_empty());
        let ledger = open_ledger(&env).await;
        let found = receipts(&ledger).await;
        assert_eq!(found.len(), 6);
        assert!(found.values().all(|v| v.len() == 1), "exactly one receipt each: {found:?}");
        assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
    }
}

both_backends! {
    /// A purged key comes back (a bucket restored from a backup, replication lag): `reapply
    /// --dry-run` finds it and deletes nothing, `reapply` deletes every version of it.
    async fn reapply_finds_and_deletes_keys_that_came_back(b: Backend) {
        let env = Env::new(b).await;
        let moto = world(&["p/a1/l1", "p/a1/l2"]).await;
        let cfg = config(&env, &moto, 3);
        let mut ev = org_account("o1", "free", "a1");
        for id in ["l1", "l2"] {
            ev += &created(id, "library", "a1");
            ev += &deleted(id);
        }
        ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
        let since = chrono::Utc::now() - chrono::Duration::seconds(1);
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 2);
        assert!(moto.versions(BUCKET, "p/").await.is_empty());

        moto.put(BUCKET, "p/a1/l1", "restored").await;
        moto.put(BUCKET, "p/a1/l1", "restored again").await;
        let dry = json(&rd(&cfg, &["reapply", "--since", &since, "--dry-run", "--json"]));
        assert_eq!(dry["came_back"], 1, "{dry}");
        assert_eq!(dry["removed"]["objects"], 2, "{dry}");
        // Per kind too: the keys' versions, not rows or files.
        assert_eq!(
            dry["kinds"]["library"],
            serde_json::json!({"checked": 2, "came_back": 1, "rows": 0, "files": 0, "objects": 2, "requests": 0}),
            "{dry}"
        );
        let text = ok(&rd(&cfg, &["reapply", "--since", &since, "--dry-run"]));
        assert!(text.contains("library        2 checked, 1 had come back: 0 row(s), 0 file(s), 2 object(s) would be removed"), "{text}");
        assert!(text.contains("1 item(s) had come back; 0 row(s), 0 file(s), 2 object(s) would be removed"), "{text}");
        assert_eq!(moto.versions(BUCKET, "p/a1/l1").await.len(), 2, "a dry run deletes nothing");
        let real = json(&rd(&cfg, &["reapply", "--since", &since, "--json"]));
        assert_eq!(real["came_back"], 1, "{real}");
        assert_eq!(real["kinds"]["library"]["objects"], 2, "{real}");
        let export = ok(&rd(&cfg, &["audit", "export"]));
        let summary = export
            .lines()
            .find(|l| l.contains("\"action\":\"purges.reapplied\""))
            .expect("a purges.reapplied entry");
        assert!(summary.contains("\"objects\":2"), "{summary}");
        assert!(moto.versions(BUCKET, "p/").await.is_empty());
        let again = json(&rd(&cfg, &["reapply", "--since", &since, "--json"]));
        assert_eq!(again["came_back"], 0, "{again}");
    }
}

/// Bad object-store config: exit 2, the key named, nothing else needed (no server, no ledger).
#[test]
fn bad_object_store_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    let secret = dir.path().join("secret");
    std::fs::write(&id, "AKIDEXAMPLE\n").unwrap();
    std::fs::write(&secret, "very-secret-value\n").unwrap();
    let files = format!(
        "access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n",
        id.display(),
        secret.display()
    );
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("url = \"gs://b/p\"\nkey = \"{{id}}\"\n{files}"), "targets.blobs.access_key_id_file", "not used by gs:// urls"),
        (format!("url = \"az://c/p\"\nkey = \"{{id}}\"\n{files}"), "targets.blobs.access_key_id_file", "not used by az:// urls"),
        (format!("url = \"file:///srv/x\"\nkey = \"{{id}}\"\n{files}"), "targets.blobs.access_key_id_file", "not used by file:// urls"),
        (format!("url = \"s3://Bad_Bucket/p\"\nkey = \"{{id}}\"\n{files}"), "targets.blobs.url", "bucket name"),
        (format!("url = \"s3://b1b/p\"\nkey = \"../{{id}}\"\n{files}"), "targets.blobs.key", "outside the prefix"),
        (format!("url = \"s3://b1b/p\"\nkey = \"/{{id}}\"\n{files}"), "targets.blobs.key", "starts with `/`"),
        (format!("url = \"s3://b1b/p\"\nkey = \"a//{{id}}\"\n{files}"), "targets.blobs.key", "empty"),
        (format!("url = \"s3://b1b/p\"\nkey = \"{{account}}\"\n{files}"), "targets.blobs.key", "must contain {id}"),
        (format!("url = \"s3://b1b/p\"\nkey = \"{{id}}\"\nversions = \"some\"\n{files}"), "targets.blobs.versions", "\"all\""),
        (format!("url = \"s3://b1b/p\"\nkey = \"{{id}}\"\naccount_prefix = \"{{account}}\"\n{files}"), "targets.blobs.account_prefix", "end with `/`"),
        (format!("url = \"s3://b1b/p\"\nkey = \"{{id}}\"\nendpoint = \"ftp://x\"\n{files}"), "targets.blobs.endpoint", "http"),
        (format!("url = \"s3://b1b/p\"\nkey = \"{{id}}\"\naccess_key_id_file = \"{}\"\n", id.display()), "targets.blobs.secret_access_key_file", "missing"),
        ("url = \"s3://b1b/p\"\nkey = \"{id}\"\naccess_key_id_env = \"RD_TEST_NO_SUCH_VAR\"\nsecret_access_key_env = \"RD_TEST_NO_SUCH_VAR2\"\n".into(), "targets.blobs.access_key_id_env", "RD_TEST_NO_SUCH_VAR"),
        ("url = \"s3://b1b/p\"\nkey = \"{id}\"\n".into(), "targets.blobs.access_key_id_env", "AWS_ACCESS_KEY_ID"),
        (format!("url = \"s3://b1b/p\"\nkey = \"{{id}}\"\nsecret_access_key = \"inline\"\n{files}"), "targets.blobs", "unknown field"),
    ];
    for (target, key, why) in cases {
        let text = format!(
            "[database]\nurl = \"sqlite://{}\"\n[accounts]\ngrace_after_delete = \"0s\"\n\
             [kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"blobs\"]\n\
             [targets.blobs]\ntype = \"object_store\"\n{target}",
            dir.path().join("ledger.db").display()
        );
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, &text).unwrap();
        let o = bin()
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        refused_naming(&o, &target, key, why, "very-secret-value");
        assert!(
            !dir.path().join("ledger.db").exists(),
            "a bad config changes nothing"
        );
    }
    // A good one prints where the credentials come from, never the secret.
    let good = format!(
        "[database]\nurl = \"sqlite://{}\"\n[accounts]\ngrace_after_delete = \"0s\"\ntargets = [\"blobs\"]\n\
         [kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"blobs\"]\n\
         [targets.blobs]\ntype = \"object_store\"\nurl = \"s3://b1b/p\"\nkey = \"{{account}}/{{id}}\"\n\
         account_prefix = \"{{account}}/\"\n{files}",
        dir.path().join("ledger.db").display()
    );
    let cfg = dir.path().join("good.toml");
    std::fs::write(&cfg, good).unwrap();
    let out = ok(&rd(&cfg, &["check-config"]));
    assert!(
        out.contains("object_store s3://b1b/p key {account}/{id} versions all"),
        "{out}"
    );
    assert!(
        !out.contains("very-secret-value") && !out.contains("AKIDEXAMPLE"),
        "{out}"
    );
}
