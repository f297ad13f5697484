//! Issue 21 §1 on the other schemes: the `object_store` target on file:// (a local directory),
//! az:// (against a real Azurite) and gs:// (against a real fake-gcs-server), through the built
//! binary, on both ledger backends: keys purged, a missing key counted removed, a held account
//! untouched, a dry run that deletes nothing, the account purge by prefix, a crash between the
//! target call and the ledger, `reapply` after a restore, a denied store, and bad config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use crate::rel::*;

const CONTAINER: &str = "uploads";

/// One store under test, and how to reach it.
enum Store {
    /// The directory the file:// url names.
    File(PathBuf),
    Azure(Azurite),
    Gcs(FakeGcs),
}

#[derive(Clone, Copy)]
enum Scheme {
    File,
    Azure,
    Gcs,
}

impl Store {
    async fn start(scheme: Scheme, env: &Env) -> Store {
        match scheme {
            Scheme::File => {
                let root = env.dir.path().join("blobs");
                std::fs::create_dir_all(&root).unwrap();
                Store::File(root)
            }
            Scheme::Azure => {
                let a = Azurite::start().await;
                a.create_container(CONTAINER).await;
                Store::Azure(a)
            }
            Scheme::Gcs => {
                let g = FakeGcs::start().await;
                g.create_bucket(CONTAINER).await;
                Store::Gcs(g)
            }
        }
    }

    async fn put(&self, key: &str) {
        match self {
            Store::File(root) => {
                let p = root.join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, "data").unwrap();
            }
            Store::Azure(a) => a.put(CONTAINER, key, "data").await,
            Store::Gcs(g) => g.put(CONTAINER, key, "data").await,
        }
    }

    /// Every key in the store, sorted.
    async fn keys(&self) -> Vec<String> {
        match self {
            Store::File(root) => {
                let mut out = Vec::new();
                walk(root, root, &mut out);
                out.sort();
                out
            }
            Store::Azure(a) => a.keys(CONTAINER, "").await,
            Store::Gcs(g) => g.keys(CONTAINER, "").await,
        }
    }

    /// An `object_store` target named `blobs` on prefix `p/`, with its credentials in files
    /// under `dir`.
    fn target_toml(&self, dir: &Path, extra: &str) -> String {
        let head = "[targets.blobs]\ntype = \"object_store\"\nkey = \"{account}/{id}\"\naccount_prefix = \"{account}/\"\n";
        match self {
            Store::File(root) => format!("{head}url = \"file://{}/p\"\n{extra}", root.display()),
            Store::Azure(a) => {
                let key = dir.join("azure-key");
                std::fs::write(&key, format!("{AZURITE_KEY}\n")).unwrap();
                format!(
                    "{head}url = \"az://{CONTAINER}/p\"\nendpoint = \"{}\"\naccount = \"{AZURITE_ACCOUNT}\"\n\
                     access_key_file = \"{}\"\nversions = \"current\"\n{extra}",
                    a.endpoint,
                    key.display()
                )
            }
            Store::Gcs(g) => format!(
                "{head}url = \"gs://{CONTAINER}/p\"\nendpoint = \"{}\"\nservice_account_file = \"{}\"\n\
                 versions = \"current\"\n{extra}",
                g.endpoint,
                g.service_account(dir).display()
            ),
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// A config purging libraries (and accounts) in `store` at once.
fn config(env: &Env, store: &Store) -> PathBuf {
    config_with(env, store, 3)
}

/// [`config`] with `max_attempts`.
fn config_with(env: &Env, store: &Store, max_attempts: u32) -> PathBuf {
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

{blobs}
"#,
        ledger = env.ledger_url,
        blobs = store.target_toml(env.dir.path(), ""),
    );
    env.write_config(&text)
}

fn account(a: &str) -> String {
    format!("{{\"type\":\"account.created\",\"account\":\"{a}\",\"org\":\"o1\"}}\n")
}

/// The `objects` of each receipt of a resource.
async fn receipt_objects(env: &Env, id: &str) -> Vec<u64> {
    let ledger = open_ledger(env).await;
    receipts(&ledger)
        .await
        .get(id)
        .map(|v| {
            v.iter()
                .map(|d| d["targets"][0]["objects"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Keys go, a missing key counts as removed (0 objects), `a1/l10` (which merely starts like
/// `a1/l1`) stays, a held account's key stays until the hold is released, a dry run deletes
/// nothing, receipts count the objects.
async fn keys_go_holds_keep_dry_runs_touch_nothing(b: Backend, scheme: Scheme) {
    let env = Env::new(b).await;
    let store = Store::start(scheme, &env).await;
    for k in ["p/a1/l1", "p/a1/l10", "p/a2/m1", "p/keep", "other/a1/l1"] {
        store.put(k).await;
    }
    let all = store.keys().await;
    let cfg = config(&env, &store);
    let mut ev = org_account("o1", "free", "a1") + &account("a2");
    for (id, a) in [("l1", "a1"), ("l2", "a1"), ("m1", "a2")] {
        ev += &created(id, "library", a);
        ev += &deleted(id);
    }
    ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
    let placed = hold_account(&cfg, "a2");
    assert_eq!(placed["matched"], 1, "{placed}");

    let dry = ok(&rd(&cfg, &["sweep", "--once", "--dry-run"]));
    assert!(dry.contains("l1"), "{dry}");
    assert_eq!(store.keys().await, all, "a dry run deletes nothing");

    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], 2, "l1 and the missing l2: {r}");
    assert_eq!(
        store.keys().await,
        vec!["other/a1/l1", "p/a1/l10", "p/a2/m1", "p/keep"]
    );
    assert_eq!(receipt_objects(&env, "l1").await, vec![1]);
    assert_eq!(
        receipt_objects(&env, "l2").await,
        vec![0],
        "a missing key is removed"
    );
    let m1 = json(&rd(&cfg, &["resource", "show", "m1", "--json"]));
    assert_eq!(m1["state"], "deleted", "{m1}");

    let hold = placed["id"].as_i64().unwrap().to_string();
    ok(&rd(&cfg, &["hold", "release", &hold, "--by", "legal"]));
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], 1, "{r}");
    assert_eq!(
        store.keys().await,
        vec!["other/a1/l1", "p/a1/l10", "p/keep"]
    );
    assert_eq!(receipt_objects(&env, "m1").await, vec![1]);
    assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
}

/// R8: after its resources, everything under the account's prefix goes, keys the ledger never
/// heard of included; `a10/` is another account's and stays.
async fn the_account_prefix_is_emptied(b: Backend, scheme: Scheme) {
    let env = Env::new(b).await;
    let store = Store::start(scheme, &env).await;
    for k in [
        "p/a1/l0",
        "p/a1/l1",
        "p/a1/thumbs/t0.png",
        "p/a1/thumbs/t1.png",
        "p/a10/l0",
    ] {
        store.put(k).await;
    }
    let cfg = config(&env, &store);
    let mut ev = org_account("o1", "free", "a1") + &account("a10");
    for id in ["l0", "l1"] {
        ev += &created(id, "library", "a1");
    }
    ev += &account_deleted("a1");
    ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
    let dry = ok(&rd(&cfg, &["sweep", "--once", "--dry-run"]));
    assert!(dry.contains("l0"), "{dry}");
    assert_eq!(store.keys().await.len(), 5, "a dry run deletes nothing");
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(
        (r["purged"].as_u64(), r["accounts_purged"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(store.keys().await, vec!["p/a10/l0"]);
    if let Store::File(root) = &store {
        assert!(!root.join("p/a1").exists(), "the emptied folders go too");
    }
    let export = ok(&rd(&cfg, &["audit", "export"]));
    let line = export
        .lines()
        .find(|l| l.contains("\"action\":\"account.purged\""))
        .expect("an account.purged entry");
    assert!(line.contains("\"objects\":2"), "the two thumbnails: {line}");
    assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
}

/// Runs `$body(b, Scheme::X)` as the test `$test` on both backends, for each scheme listed.
macro_rules! each_scheme {
    ($body:ident: $($scheme:ident => $test:ident),+ $(,)?) => {
        $(
            both_backends! {
                async fn $test(b: Backend) {
                    $body(b, Scheme::$scheme).await
                }
            }
        )+
    };
}

each_scheme!(keys_go_holds_keep_dry_runs_touch_nothing:
    File => file_keys_go_holds_keep_dry_runs_touch_nothing,
    Azure => azure_keys_go_holds_keep_dry_runs_touch_nothing,
    Gcs => gcs_keys_go_holds_keep_dry_runs_touch_nothing
);

each_scheme!(the_account_prefix_is_emptied:
    File => file_account_prefix_is_emptied,
    Azure => azure_account_prefix_is_emptied,
    Gcs => gcs_account_prefix_is_emptied
);

/// Six libraries of one account, deleted: `p/a1/l0` … `p/a1/l5` in the store, the events
/// ingested.
async fn six_deleted_libraries(store: &Store, cfg: &Path) {
    let mut ev = org_account("o1", "free", "a1");
    for i in 0..6 {
        store.put(&format!("p/a1/l{i}")).await;
        ev += &created(&format!("l{i}"), "library", "a1");
        ev += &deleted(&format!("l{i}"));
    }
    ok(&rd_stdin(cfg, &["ingest", "-"], &ev));
}

/// The process dies after the store deleted a batch and before the ledger recorded it: once
/// the lease (1s) is over, the next sweep finds those keys gone (a missing key is removed) and
/// records every item once.
async fn a_crash_after_the_deletes_is_finished_with_one_receipt_each(b: Backend, scheme: Scheme) {
    let env = Env::new(b).await;
    let store = Store::start(scheme, &env).await;
    let cfg = config(&env, &store);
    six_deleted_libraries(&store, &cfg).await;
    let o = rd_crash(&cfg, "after_target_0", &["sweep", "--once"], None);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    let left = store.keys().await.len();
    assert!(
        left < 6,
        "the first batch was deleted before the crash ({left} keys left)"
    );
    assert!(
        receipts(&open_ledger(&env).await).await.is_empty(),
        "nothing recorded by the crashed sweep"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], 6, "{r}");
    assert!(store.keys().await.is_empty(), "{:?}", store.keys().await);
    let found = receipts(&open_ledger(&env).await).await;
    assert_eq!(found.len(), 6, "{found:?}");
    assert!(
        found.values().all(|v| v.len() == 1),
        "exactly one receipt each: {found:?}"
    );
    assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
}

each_scheme!(a_crash_after_the_deletes_is_finished_with_one_receipt_each:
    File => file_crash_after_the_deletes_is_finished_with_one_receipt_each,
    Azure => azure_crash_after_the_deletes_is_finished_with_one_receipt_each,
    Gcs => gcs_crash_after_the_deletes_is_finished_with_one_receipt_each
);

/// Purged keys come back (the store restored from a backup, replication lag): `reapply
/// --dry-run` lists them and deletes nothing, `reapply` deletes them, a second run finds none.
async fn reapply_finds_and_deletes_keys_that_came_back(b: Backend, scheme: Scheme) {
    let env = Env::new(b).await;
    let store = Store::start(scheme, &env).await;
    let cfg = config(&env, &store);
    let mut ev = org_account("o1", "free", "a1");
    for id in ["l1", "l2", "l3"] {
        store.put(&format!("p/a1/{id}")).await;
        ev += &created(id, "library", "a1");
        ev += &deleted(id);
    }
    ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(json(&rd(&cfg, &["sweep", "--once", "--json"]))["purged"], 3);
    assert!(store.keys().await.is_empty());

    // The restore brings l1 and l2 back; l3 stays gone.
    store.put("p/a1/l1").await;
    store.put("p/a1/l2").await;
    let dry = json(&rd(
        &cfg,
        &["reapply", "--since", &since, "--dry-run", "--json"],
    ));
    assert_eq!(dry["came_back"], 2, "{dry}");
    assert_eq!(
        dry["kinds"]["library"],
        serde_json::json!({"checked": 3, "came_back": 2, "rows": 0, "files": 0, "objects": 2, "requests": 0}),
        "{dry}"
    );
    let listed = ok(&rd(&cfg, &["reapply", "--since", &since, "--dry-run"]));
    assert!(
        listed
            .contains("2 item(s) had come back; 0 row(s), 0 file(s), 2 object(s) would be removed"),
        "{listed}"
    );
    assert_eq!(
        store.keys().await,
        vec!["p/a1/l1", "p/a1/l2"],
        "a dry run deletes nothing"
    );
    let real = json(&rd(&cfg, &["reapply", "--since", &since, "--json"]));
    assert_eq!(real["came_back"], 2, "{real}");
    assert_eq!(real["kinds"]["library"]["objects"], 2, "{real}");
    assert!(store.keys().await.is_empty(), "{:?}", store.keys().await);
    let export = ok(&rd(&cfg, &["audit", "export"]));
    let summary = export
        .lines()
        .find(|l| l.contains("\"action\":\"purges.reapplied\""))
        .expect("a purges.reapplied entry");
    assert!(summary.contains("\"objects\":2"), "{summary}");
    let again = json(&rd(&cfg, &["reapply", "--since", &since, "--json"]));
    assert_eq!(again["came_back"], 0, "{again}");
    assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
}

each_scheme!(reapply_finds_and_deletes_keys_that_came_back:
    File => file_reapply_finds_and_deletes_keys_that_came_back,
    Azure => azure_reapply_finds_and_deletes_keys_that_came_back,
    Gcs => gcs_reapply_finds_and_deletes_keys_that_came_back
);

/// A key made immutable (`chattr +i`): not even root can delete it. Lifted on drop, so the
/// test's directory can be removed whatever happens.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: PathBuf) -> Immutable {
        let o = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .output()
            .expect("run chattr");
        assert!(
            o.status.success(),
            "chattr +i {}: {}",
            path.display(),
            text(&o)
        );
        let guard = Immutable(path);
        // Root ignores permission bits: prove this one holds before relying on it.
        let write = std::fs::OpenOptions::new().append(true).open(&guard.0);
        assert!(
            write.is_err(),
            "chattr +i does not stop root on this filesystem"
        );
        guard
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .output();
    }
}

/// Issue 21 §1: a denied delete is a target failure naming the store and key, never a
/// success. file://: `p/a1/l2` is immutable (EPERM, even for root); az://: Azurite refuses a
/// wrong account key (403, it checks Shared Key signatures). Nothing denied is recorded as
/// purged; once the cause is lifted, `retry` and a sweep finish it. (gs://: fake-gcs-server
/// checks no credentials and has no way to answer 403.)
async fn a_denied_delete_fails_naming_the_key_until_retried(b: Backend, scheme: Scheme) {
    let env = Env::new(b).await;
    let store = Store::start(scheme, &env).await;
    store.put("p/a1/l1").await;
    store.put("p/a1/l2").await;
    let cfg = config_with(&env, &store, 1);
    let mut ev = org_account("o1", "free", "a1");
    for id in ["l1", "l2"] {
        ev += &created(id, "library", "a1");
        ev += &deleted(id);
    }
    ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));

    let azure_key = env.dir.path().join("azure-key");
    let (guard, denied, at, why) = match &store {
        Store::File(root) => (
            Some(Immutable::set(root.join("p/a1/l2"))),
            vec!["l2"],
            format!("file://{}/p/a1/l2", root.display()),
            "Operation not permitted",
        ),
        Store::Azure(_) => {
            // Base64 like a real key, but not Azurite's: every request is refused.
            std::fs::write(
                &azure_key,
                "bm90LXRoZS1henVyaXRlLWtleS1ub3QtdGhlLWF6dXJpdGUta2V5LW5vdC10aGUtYXp1cml0ZS1rZXktMDEyMw==\n",
            )
            .unwrap();
            (
                None,
                vec!["l1", "l2"],
                format!("az://{CONTAINER}/p/a1/l2"),
                "403",
            )
        }
        Store::Gcs(_) => unreachable!("fake-gcs-server has no denial to test"),
    };
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], 2 - denied.len(), "{r}");
    let s = json(&rd(&cfg, &["resource", "show", "l2", "--json"]));
    assert_eq!(s["state"], "failed", "{s}");
    let err = s["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains(&at) && err.contains(why),
        "want {at} and {why}: {s}"
    );
    // One short line, as every target's error (Azurite's 403 carries a multi-line XML body).
    assert!(
        !err.contains('\n') && err.len() < 400,
        "not one short line: {err:?}"
    );
    let status = ok(&rd(&cfg, &["status"]));
    assert!(status.contains("l2") && status.contains(why), "{status}");
    let found = receipts(&open_ledger(&env).await).await;
    for id in &denied {
        assert!(
            !found.contains_key(*id),
            "{id} recorded as purged: {found:?}"
        );
    }
    assert!(store.keys().await.contains(&"p/a1/l2".to_string()));

    // The cause lifted: the retried items go.
    drop(guard);
    if let Store::Azure(_) = &store {
        std::fs::write(&azure_key, format!("{AZURITE_KEY}\n")).unwrap();
    }
    let mut args = vec!["retry"];
    args.extend(&denied);
    ok(&rd(&cfg, &args));
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], denied.len(), "{r}");
    assert!(store.keys().await.is_empty(), "{:?}", store.keys().await);
    assert_eq!(receipt_objects(&env, "l2").await, vec![1]);
    assert_eq!(json(&rd(&cfg, &["audit", "verify", "--json"]))["ok"], true);
}

each_scheme!(a_denied_delete_fails_naming_the_key_until_retried:
    File => file_denied_delete_fails_naming_the_key_until_retried,
    Azure => azure_denied_delete_fails_naming_the_key_until_retried
);

/// A file:// root that is missing (an unmounted volume) fails the purge: nothing is recorded
/// as removed; once it is back, the purge goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_root_fails_the_purge_until_it_is_back() {
    let env = Env::new(Backend::Sqlite).await;
    let store = Store::start(Scheme::File, &env).await;
    store.put("p/a1/l1").await;
    let cfg = config(&env, &store);
    let Store::File(root) = &store else {
        unreachable!()
    };
    let moved = env.dir.path().join("unmounted");
    std::fs::rename(root, &moved).unwrap();
    let mut ev = org_account("o1", "free", "a1");
    ev += &created("l1", "library", "a1");
    ev += &deleted("l1");
    ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], 0, "{r}");
    let s = json(&rd(&cfg, &["resource", "show", "l1", "--json"]));
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("not usable"),
        "{s}"
    );
    std::fs::rename(&moved, root).unwrap();
    // The retry waits out the backoff: 1s with up to +25% jitter.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], 1, "{r}");
    assert!(store.keys().await.is_empty());
}

/// A file:// key whose folder is a symlink to somewhere outside the root is refused, as in
/// the `files` target: the purge fails naming it, and the file outside stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_key_through_a_symlinked_folder_is_refused() {
    let env = Env::new(Backend::Sqlite).await;
    let store = Store::start(Scheme::File, &env).await;
    let cfg = config(&env, &store);
    let Store::File(root) = &store else {
        unreachable!()
    };
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("l1"), b"not ours").unwrap();
    std::fs::create_dir_all(root.join("p")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("p/a1")).unwrap();
    let mut ev = org_account("o1", "free", "a1");
    ev += &created("l1", "library", "a1");
    ev += &deleted("l1");
    ok(&rd_stdin(&cfg, &["ingest", "-"], &ev));
    let r = json(&rd(&cfg, &["sweep", "--once", "--json"]));
    assert_eq!(r["purged"], 0, "{r}");
    let s = json(&rd(&cfg, &["resource", "show", "l1", "--json"]));
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("resolves outside the root"),
        "{s}"
    );
    assert!(
        outside.join("l1").exists(),
        "a file outside the root was deleted"
    );
}

/// Bad az://, gs:// and file:// config: exit 2, the key named, nothing needed (no server).
#[test]
fn bad_store_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "c2VjcmV0LWtleS12YWx1ZQ==\n").unwrap();
    let sa = dir.path().join("sa.json");
    std::fs::write(&sa, "{\"type\": \"service_account\"}").unwrap();
    let az = format!(
        "account = \"acct1\"\naccess_key_file = \"{}\"\n",
        key.display()
    );
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("url = \"az://c1c/p\"\nkey = \"{{id}}\"\n{az}"),
            "targets.blobs.versions",
            "versions = \"current\"",
        ),
        (
            format!(
                "url = \"gs://b1b/p\"\nkey = \"{{id}}\"\nservice_account_file = \"{}\"\n",
                sa.display()
            ),
            "targets.blobs.versions",
            "noncurrent",
        ),
        (
            format!(
                "url = \"az://c1c/p\"\nkey = \"{{id}}\"\nversions = \"current\"\naccess_key_file = \"{}\"\n",
                key.display()
            ),
            "targets.blobs.account",
            "AZURE_STORAGE_ACCOUNT_NAME",
        ),
        (
            "url = \"az://c1c/p\"\nkey = \"{id}\"\nversions = \"current\"\naccount = \"acct1\"\n"
                .into(),
            "targets.blobs.access_key_env",
            "no credentials",
        ),
        (
            format!(
                "url = \"az://c1c/p\"\nkey = \"{{id}}\"\nversions = \"current\"\naccount = \"acct1\"\naccess_key_file = \"{}\"\n",
                dir.path().join("nope").display()
            ),
            "targets.blobs.access_key_file",
            "cannot read",
        ),
        (
            format!(
                "url = \"az://c1c/p\"\nkey = \"{{id}}\"\nversions = \"current\"\nregion = \"eu-west-1\"\n{az}"
            ),
            "targets.blobs.region",
            "not used by az:// urls",
        ),
        (
            format!(
                "url = \"az://Bad_Container/p\"\nkey = \"{{id}}\"\nversions = \"current\"\n{az}"
            ),
            "targets.blobs.url",
            "container name",
        ),
        (
            format!(
                "url = \"az://c1c/p\"\nkey = \"{{id}}\"\nversions = \"current\"\naccount = \"Bad-Account\"\naccess_key_file = \"{}\"\n",
                key.display()
            ),
            "targets.blobs.account",
            "storage account name",
        ),
        (
            "url = \"gs://b1b/p\"\nkey = \"{id}\"\nversions = \"current\"\n".into(),
            "targets.blobs.service_account_file",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ),
        (
            format!(
                "url = \"gs://b1b/p\"\nkey = \"{{id}}\"\nversions = \"current\"\nservice_account_file = \"{}\"\n",
                key.display()
            ),
            "targets.blobs.service_account_file",
            "service-account JSON",
        ),
        (
            "url = \"file://relative/dir\"\nkey = \"{id}\"\n".into(),
            "targets.blobs.url",
            "absolute local directory",
        ),
        (
            "url = \"file:///srv/../etc\"\nkey = \"{id}\"\n".into(),
            "targets.blobs.url",
            "`..` segment",
        ),
        (
            "url = \"file:///srv/blobs\"\nkey = \"{id}\"\nendpoint = \"http://127.0.0.1:1\"\n"
                .into(),
            "targets.blobs.endpoint",
            "not used by file:// urls",
        ),
        (
            "url = \"file:///srv/blobs\"\nkey = \"../{id}\"\n".into(),
            "targets.blobs.key",
            "outside the prefix",
        ),
        (
            "url = \"file:///srv/blobs\"\nkey = \"{id}\"\nversions = \"some\"\n".into(),
            "targets.blobs.versions",
            "\"all\"",
        ),
        (
            "url = \"ftp://x/y\"\nkey = \"{id}\"\n".into(),
            "targets.blobs.url",
            "unknown scheme",
        ),
    ];
    for (target, want_key, why) in cases {
        let text = format!(
            "[database]\nurl = \"sqlite://{}\"\n[accounts]\ngrace_after_delete = \"0s\"\n\
             [kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"blobs\"]\n\
             [targets.blobs]\ntype = \"object_store\"\n{target}",
            dir.path().join("ledger.db").display()
        );
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, &text).unwrap();
        let mut c = bin();
        for (k, _) in std::env::vars() {
            if k.starts_with("AZURE_") || k.starts_with("GOOGLE_") {
                c.env_remove(k);
            }
        }
        let o = c
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        refused_naming(&o, &target, want_key, why, "c2VjcmV0");
        assert!(
            !dir.path().join("ledger.db").exists(),
            "a bad config changes nothing"
        );
    }
    // Good ones print where the credentials come from, never the secret.
    for (target, want) in [
        (
            format!(
                "url = \"az://c1c/p\"\nkey = \"{{account}}/{{id}}\"\nversions = \"current\"\n{az}"
            ),
            format!(
                "object_store az://c1c/p key {{account}}/{{id}} versions current (credentials from {})",
                key.display()
            ),
        ),
        (
            "url = \"file:///srv/blobs/\"\nkey = \"{account}/{id}\"\n".to_string(),
            "object_store file:///srv/blobs key {account}/{id} versions all".to_string(),
        ),
    ] {
        let text = format!(
            "[database]\nurl = \"sqlite://{}\"\n[accounts]\ngrace_after_delete = \"0s\"\n\
             [kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"blobs\"]\n\
             [targets.blobs]\ntype = \"object_store\"\n{target}",
            dir.path().join("ledger.db").display()
        );
        let cfg = dir.path().join("good.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = ok(&rd(&cfg, &["check-config"]));
        assert!(out.contains(&want), "want {want:?} in {out}");
        assert!(!out.contains("c2VjcmV0"), "{out}");
    }
}
