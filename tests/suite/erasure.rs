//! Erasure that leaves no residue (issue 9): the raw bytes of the application's SQLite file and
//! its WAL after a purge, `verify` statements that catch partial deletes, vacuum, and SQL
//! targets on a PostgreSQL application database.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use crate::common::*;
use retentiond::sweep::Sweeper;
use retentiond::targets::{Target, Targets};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, Executor};

/// Unique strings: nothing else in the files can contain them by chance.
const MARKER: &str = "ERASE-ME-5f1c9a7e3b";
const KEEP: &str = "KEEP-ME-0d6e2b8c41";

/// Which of the application database's files (main, `-wal`, `-shm`) contain `needle`, read raw.
fn files_containing(db: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = format!("{}{suffix}", db.display());
        if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            found.push(p);
        }
    }
    found
}

/// The application: its own connection pool on its WAL-mode database, kept open (idle) the whole
/// time, as a running service would. `secure_delete` is the application's own setting (see
/// README "Erasure": without it, the application's page splits leave stale copies of rows in
/// unused page space, which only VACUUM removes).
async fn app_pool(db: &Path, secure_delete: bool) -> sqlx::SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(3)
        .min_connections(2)
        .connect_with(
            SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
                .unwrap()
                .journal_mode(SqliteJournalMode::Wal)
                .pragma("secure_delete", if secure_delete { "ON" } else { "OFF" })
                .busy_timeout(std::time::Duration::from_secs(10)),
        )
        .await
        .unwrap()
}

/// Conversations p0..p4 carry the marker (titles, short messages, a 12 KB message on overflow
/// pages, embedding blobs); k0..k19 are kept, interleaved with them on the same pages. Half the
/// data is checkpointed into the main file, the rest is only in the WAL.
async fn seed_marked(app: &sqlx::SqlitePool) {
    for round in 0..2 {
        let mut tx = app.begin().await.unwrap();
        for i in 0..10 {
            let k = format!("k{}", round * 10 + i);
            sqlx::query("INSERT INTO conversations (id, user_id, title) VALUES ($1, 'a1', $2)")
                .bind(&k)
                .bind(format!("{KEEP} title {k}"))
                .execute(&mut *tx)
                .await
                .unwrap();
            for j in 0..4 {
                sqlx::query("INSERT INTO messages (conversation_id, body) VALUES ($1, $2)")
                    .bind(&k)
                    .bind(format!(
                        "{KEEP} message {j} of {k}: {}",
                        "lorem ipsum ".repeat(8)
                    ))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            if i % 4 == 0 {
                let p = format!("p{}", round * 3 + i / 4);
                if round == 1 && i / 4 == 2 {
                    continue; // p0..p4 only
                }
                sqlx::query("INSERT INTO conversations (id, user_id, title) VALUES ($1, 'a1', $2)")
                    .bind(&p)
                    .bind(format!("{MARKER} title {p}"))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for j in 0..4 {
                    sqlx::query("INSERT INTO messages (conversation_id, body) VALUES ($1, $2)")
                        .bind(&p)
                        .bind(format!("{MARKER} message {j} of {p}: my secret"))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                sqlx::query("INSERT INTO messages (conversation_id, body) VALUES ($1, $2)")
                    .bind(&p)
                    .bind(format!("{MARKER} {}", "attachment text ".repeat(750)))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO embeddings (conversation_id, vector) VALUES ($1, $2)")
                    .bind(&p)
                    .bind(format!("{MARKER}{}", "\u{1}".repeat(300)).into_bytes())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();
        if round == 0 {
            // What the application's auto-checkpoint does: the first half moves to the main file.
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(app)
                .await
                .unwrap();
        }
    }
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT conversation_id) FROM messages WHERE body LIKE 'ERASE-ME%'",
    )
    .fetch_one(app)
    .await
    .unwrap();
    assert_eq!(n, 5);
}

const PURGED: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];

fn marked_events() -> String {
    let mut ev = org_account("o1", "free", "a1");
    for p in PURGED {
        ev += &created(p, "conversation", "a1");
        ev += &deleted(p);
    }
    ev
}

/// The config under test: conversations purged from messages, embeddings and conversations.
fn erasure_config(env: &Env, secure_delete: bool) -> String {
    env.config_text(&Knobs::default())
        .replace(
            "type = \"sql\"\n",
            &format!("type = \"sql\"\nsecure_delete = {secure_delete}\n"),
        )
        .replace(
            "conversation = [\"DELETE FROM messages WHERE conversation_id = :id\", ",
            "conversation = [\"DELETE FROM messages WHERE conversation_id = :id\", \"DELETE FROM embeddings WHERE conversation_id = :id\", ",
        )
}

/// Seeds through an application with `app_secure_delete`, purges the marked conversations with
/// retentiond's `secure_delete` as given; returns the harness and the (still open) application.
async fn purge_marked(app_secure_delete: bool, secure_delete: bool) -> (H, sqlx::SqlitePool) {
    let env = Env::new(Backend::Sqlite).await;
    let app = app_pool(&env.app_db, app_secure_delete).await;
    seed_marked(&app).await;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT conversation_id FROM messages WHERE body LIKE 'ERASE-ME%' ORDER BY 1",
    )
    .fetch_all(&app)
    .await
    .unwrap();
    assert_eq!(ids, PURGED);
    assert!(
        !files_containing(&env.app_db, MARKER).is_empty(),
        "the marker is on disk before the purge"
    );
    let text = erasure_config(&env, secure_delete);
    let h = H::with_config(env, &text).await;
    h.ingest(&marked_events()).await;
    h.advance("31d");
    let r = h.sweep().await;
    assert_eq!(r.purged, 5, "{r:?}");
    // The logical delete happened either way; the kept data is untouched.
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE body LIKE '%ERASE-ME%'")
            .fetch_one(&app)
            .await
            .unwrap();
    assert_eq!(left, 0);
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE body LIKE 'KEEP-ME%'")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(kept, 80);
    // The raw reading does find what is still stored (a control for the assertion below).
    assert!(
        !files_containing(&h.env.app_db, KEEP).is_empty(),
        "kept content must be found in the raw files"
    );
    (h, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_delete_leaves_no_marker_in_the_database_file_or_its_wal() {
    let (h, app) = purge_marked(true, true).await;
    let found = files_containing(&h.env.app_db, MARKER);
    assert!(
        found.is_empty(),
        "purged content still readable in {found:?}"
    );
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_secure_delete_the_same_purge_leaves_the_marker_on_disk() {
    let (h, app) = purge_marked(true, false).await;
    let found = files_containing(&h.env.app_db, MARKER);
    assert!(
        !found.is_empty(),
        "without secure_delete SQLite keeps deleted bytes in free space and the WAL; the test must see them"
    );
    app.close().await;
}

/// The common case: the application itself writes without secure_delete. Its page splits moved
/// rows and left stale copies in unused page space, which no DELETE can reach: the purge alone
/// leaves them, and the target's VACUUM (the `vacuum` cron) removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copies_left_by_the_application_itself_go_with_vacuum() {
    let (h, app) = purge_marked(false, true).await;
    let found = files_containing(&h.env.app_db, MARKER);
    assert!(
        !found.is_empty(),
        "expected the application's own stale copies to survive a purge without VACUUM"
    );
    let targets = Targets::from_config(&h.config).unwrap();
    let Some(Target::Sql(sql)) = targets.get("app_db") else {
        panic!("app_db is a sql target")
    };
    let done = sql.vacuum().await.unwrap();
    assert_eq!(done, "VACUUM; wal_checkpoint(TRUNCATE)");
    let found = files_containing(&h.env.app_db, MARKER);
    assert!(found.is_empty(), "still readable after VACUUM in {found:?}");
    assert!(!files_containing(&h.env.app_db, KEEP).is_empty());
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(kept, 80);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_blocked_by_a_reader_is_retried_until_the_wal_is_clean() {
    let env = Env::new(Backend::Sqlite).await;
    let app = app_pool(&env.app_db, true).await;
    seed_marked(&app).await;
    let text = erasure_config(&env, true);
    let h = H::with_config(env, &text).await;
    let targets = Arc::new(Targets::from_config(&h.config).unwrap());
    let sweeper = Sweeper::new(
        h.ledger.clone(),
        targets.clone(),
        h.config.clone(),
        h.clock.clone(),
        "reader-test".into(),
    );
    h.ingest(&marked_events()).await;
    h.advance("31d");

    // A report in the application holds a read transaction open across the purge.
    let mut reader = h.env.app().await;
    reader.execute("BEGIN").await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    let r = sweeper
        .sweep_once(&tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(r.purged, 5);
    // The reader's snapshot still needs the old pages: they cannot leave yet, and the target
    // knows it owes a checkpoint.
    assert!(!files_containing(&h.env.app_db, MARKER).is_empty());
    assert_eq!(
        targets.retry_checkpoints().await,
        vec!["app_db".to_string()]
    );
    let Some(Target::Sql(sql)) = targets.get("app_db") else {
        panic!("app_db is a sql target")
    };
    assert!(sql.checkpoint_pending());

    reader.execute("COMMIT").await.unwrap();
    assert!(targets.retry_checkpoints().await.is_empty());
    assert!(!sql.checkpoint_pending());
    let found = files_containing(&h.env.app_db, MARKER);
    assert!(found.is_empty(), "still readable in {found:?}");
    reader.close().await.unwrap();
    app.close().await;
}

/// `resource.purge_failed` / `resource.purged` entries for one subject, in order.
async fn audit_actions(h: &H, subject: &str) -> Vec<(String, serde_json::Value)> {
    h.ledger
        .audit_range(1, i64::MAX, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == subject)
        .map(|e| (e.action, serde_json::from_str(&e.details).unwrap()))
        .collect()
}

both_backends! {
    async fn a_verify_that_finds_rows_left_fails_the_purge_and_it_is_retried(b: Backend) {
        let h = H::new(b, Knobs { verify: true, ..Default::default() }).await;
        h.env.seed_conversation("c1", "a1", 3).await;
        h.env.seed_conversation("c2", "a1", 2).await;
        // The application re-inserts a message when one is deleted: a partial erasure.
        h.env
            .app_exec(
                "CREATE TRIGGER resurrect AFTER DELETE ON messages WHEN old.conversation_id = 'c1' \
                 AND old.body = 'message 0 of c1' BEGIN \
                 INSERT INTO messages (conversation_id, body) VALUES (old.conversation_id, 'copy'); END",
            )
            .await;
        h.ingest(&(org_account("o1", "free", "a1") + &created("c1", "conversation", "a1") + &created("c2", "conversation", "a1") + &deleted("c1") + &deleted("c2"))).await;
        h.advance("31d");
        let r = h.sweep().await;
        assert_eq!((r.purged, r.failed), (1, 1), "{r:?}");
        assert_eq!(h.state("c2").await, "purged");
        assert_ne!(h.state("c1").await, "purged");
        let row = h.ledger.resource("c1").await.unwrap().unwrap();
        let err = row.last_error.clone().unwrap_or_default();
        assert!(err.contains("verify") && err.contains("found 1 left"), "{err}");
        assert!(row.purged_at.is_none());
        // The whole purge of c1 rolled back: nothing half-deleted, nothing reported as removed.
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await, 3);
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM conversations WHERE id = 'c1'").await, 1);
        let audit = audit_actions(&h, "conversation/c1").await;
        let failed: Vec<_> = audit.iter().filter(|(a, _)| a == "resource.purge_failed").collect();
        assert_eq!(failed.len(), 1, "{audit:?}");
        assert!(failed[0].1["error"].as_str().unwrap().contains("verify"));
        assert!(failed[0].1["retry_at"].is_string());
        assert!(!audit.iter().any(|(a, _)| a == "resource.purged"));
        assert!(!h.receipts().await.contains_key("c1"));

        // Before its retry time nothing happens; after it, it fails again while the trigger stays.
        let r = h.sweep().await;
        assert_eq!((r.purged, r.failed), (0, 0));
        h.advance("2m");
        let r = h.sweep().await;
        assert_eq!((r.purged, r.failed), (0, 1));

        // Once the cause is fixed, the retry purges it, with exactly one receipt.
        h.env.app_exec("DROP TRIGGER resurrect").await;
        h.advance("5m");
        let r = h.sweep().await;
        assert_eq!((r.purged, r.failed), (1, 0), "{r:?}");
        assert_eq!(h.state("c1").await, "purged");
        assert_eq!(h.env.app_count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await, 0);
        assert_eq!(h.receipts().await.get("c1"), Some(&1));
        h.audit_ok().await;
    }
}

/// The sample application schema on PostgreSQL, in its own schema; `files.id` is numeric to show
/// the `:id::bigint` cast (parameters are always bound as text).
const PG_APP_SCHEMA: &str = "
CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE conversations (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, title TEXT);
CREATE TABLE messages (id BIGSERIAL PRIMARY KEY, conversation_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX messages_conversation ON messages (conversation_id);
CREATE TABLE embeddings (id BIGSERIAL PRIMARY KEY, conversation_id TEXT NOT NULL, vector BYTEA);
CREATE INDEX embeddings_conversation ON embeddings (conversation_id);
CREATE TABLE files (id BIGINT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT);
CREATE TABLE api_logs (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, endpoint TEXT, request TEXT, response TEXT);
CREATE TABLE agents (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, spec TEXT);
CREATE FUNCTION resurrect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF old.body = 'keep me' THEN
        INSERT INTO messages (conversation_id, body) VALUES (old.conversation_id, 'copy');
    END IF;
    RETURN old;
END $$;
CREATE TRIGGER resurrect AFTER DELETE ON messages FOR EACH ROW EXECUTE FUNCTION resurrect();
";

/// A PostgreSQL application database in a schema of its own, with [`PG_APP_SCHEMA`] and `seed`
/// applied; its URL and a connection.
async fn pg_app(seed: &str) -> (String, sqlx::PgConnection) {
    let url = pg_schema().await;
    let mut app = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(PG_APP_SCHEMA)
        .execute(&mut app)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(seed.to_string()))
        .execute(&mut app)
        .await
        .unwrap();
    (url, app)
}

both_backends! {
    async fn sql_targets_purge_verify_and_vacuum_a_postgresql_application_database(b: Backend) {
        if pg_disabled() {
            eprintln!("RETENTIOND_TEST_PG=off: the PostgreSQL application database is skipped on request");
            return;
        }
        let env = Env::new(b).await;
        let (app_url, _) = pg_app(
            "INSERT INTO users VALUES ('a1', 'n'), ('a2', 'm');
             INSERT INTO conversations VALUES ('c1', 'a1', 't'), ('c2', 'a1', 't');
             INSERT INTO messages (conversation_id, body) VALUES ('c1', 'm1'), ('c1', 'm2'), ('c1', 'm3'), ('c2', 'keep me');
             INSERT INTO embeddings (conversation_id, vector) VALUES ('c1', '\\x00ff'), ('c1', '\\x0102');
             INSERT INTO files VALUES (42, 'a2', 'f');"
        ).await;
        let upload = env.upload("a2", "42");
        std::fs::create_dir_all(upload.parent().unwrap()).unwrap();
        std::fs::write(&upload, b"x").unwrap();
        let text = env
            .config_text(&Knobs { verify: true, account_grace: "1d", ..Default::default() })
            .replace(&format!("url = \"sqlite://{}\"", env.app_db.display()), &format!("url = \"{app_url}\"\nvacuum = \"0 0 3 * * *\""))
            .replace(
                "conversation = [\"DELETE FROM messages WHERE conversation_id = :id\", ",
                "conversation = [\"DELETE FROM messages WHERE conversation_id = :id\", \"DELETE FROM embeddings WHERE conversation_id = :id\", ",
            )
            .replace("file = [\"DELETE FROM files WHERE id = :id\"]", "file = [\"DELETE FROM files WHERE id = :id::bigint\"]");
        let h = H::with_config(env, &text).await;
        h.ingest(&(org_account("o1", "free", "a1")
            + "{\"type\":\"account.created\",\"account\":\"a2\",\"org\":\"o1\"}\n"
            + &created("c1", "conversation", "a1") + &created("c2", "conversation", "a1") + &created("42", "file", "a2")
            + &deleted("c1") + &deleted("c2") + &account_deleted("a2"))).await;
        h.advance("31d");
        let r = h.sweep().await;
        assert_eq!((r.purged, r.failed, r.accounts_purged), (2, 1, 1), "{r:?}");
        let count = |sql: &'static str| {
            let url = app_url.clone();
            async move {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut c).await.unwrap()
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c1'").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM embeddings").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM conversations WHERE id = 'c1'").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM files").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM users WHERE id = 'a2'").await, 0);
        assert!(!exists(&upload));
        // The trigger re-inserted a message of c2: verify failed it and PostgreSQL rolled it back.
        assert_ne!(h.state("c2").await, "purged");
        assert_eq!(count("SELECT COUNT(*) FROM messages WHERE conversation_id = 'c2' AND body = 'keep me'").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM conversations WHERE id = 'c2'").await, 1);
        let receipt = audit_actions(&h, "conversation/c1").await;
        let purged = receipt.iter().find(|(a, _)| a == "resource.purged").unwrap();
        assert_eq!(purged.1["targets"][0]["rows"], 6, "3 messages, 2 embeddings, 1 conversation");

        // VACUUM of the tables the purge statements touch.
        let last_vacuum = "SELECT COUNT(*) FROM pg_stat_user_tables WHERE schemaname = current_schema() AND last_vacuum IS NOT NULL";
        assert_eq!(count(last_vacuum).await, 0);
        let targets = Targets::from_config(&h.config).unwrap();
        let target = targets.get("app_db").unwrap();
        assert_eq!(target.vacuum_schedule(), Some("0 0 3 * * *"));
        let Target::Sql(sql) = target else { panic!("sql target") };
        let done = sql.vacuum().await.unwrap();
        assert_eq!(done, "VACUUM users, agents, api_logs, messages, embeddings, conversations, files");
        assert_eq!(count(last_vacuum).await, 7);
        h.audit_ok().await;
    }
}

both_backends! {
    /// On PostgreSQL a batch runs each `DELETE … WHERE column = :id` once for all its items; each
    /// receipt still counts the rows of its own item (0 for one whose rows were already gone),
    /// with a `::bigint` cast too, and verify still checks each item.
    async fn a_postgresql_batch_deletes_by_id_once_and_counts_each_items_rows(b: Backend) {
        if pg_disabled() {
            eprintln!("RETENTIOND_TEST_PG=off: the PostgreSQL application database is skipped on request");
            return;
        }
        let env = Env::new(b).await;
        let (app_url, mut app) = pg_app(
            "INSERT INTO users VALUES ('a1', 'n');
             INSERT INTO conversations VALUES ('c1', 'a1', 't'), ('c3', 'a1', 't'), ('c4', 'a1', 't');
             INSERT INTO messages (conversation_id, body) VALUES ('c1', 'm1'), ('c1', 'm2'), ('c1', 'm3'), ('c3', 'm'), ('c9', 'other');
             INSERT INTO files VALUES (42, 'a1', 'f'), (7, 'a1', 'g'), (8, 'a1', 'h');"
        ).await;
        let text = env
            .config_text(&Knobs { verify: true, ..Default::default() })
            .replace(&format!("url = \"sqlite://{}\"", env.app_db.display()), &format!("url = \"{app_url}\""))
            .replace("file = [\"DELETE FROM files WHERE id = :id\"]", "file = [\"DELETE FROM files WHERE id = :id::bigint\"]");
        let h = H::with_config(env, &text).await;
        let mut events = org_account("o1", "free", "a1");
        for c in ["c1", "c2", "c3", "c4"] {
            events += &(created(c, "conversation", "a1") + &deleted(c));
        }
        for f in ["42", "7"] {
            events += &(created(f, "file", "a1") + &deleted(f));
        }
        h.ingest(&events).await;
        h.advance("31d");
        let r = h.sweep().await;
        assert_eq!((r.purged, r.failed), (6, 0), "{r:?}");
        for (subject, rows) in [
            ("conversation/c1", 4),
            ("conversation/c2", 0),
            ("conversation/c3", 2),
            ("conversation/c4", 1),
            ("file/42", 1),
            ("file/7", 1),
        ] {
            let entries = audit_actions(&h, subject).await;
            let purged = entries.iter().find(|(a, _)| a == "resource.purged").unwrap();
            assert_eq!(purged.1["targets"][0]["rows"], rows, "{subject}: {}", purged.1);
        }
        let left: Vec<(String,)> = sqlx::query_as("SELECT conversation_id FROM messages ORDER BY 1")
            .fetch_all(&mut app)
            .await
            .unwrap();
        assert_eq!(left, [("c9".to_string(),)]);
        let files: Vec<(i64,)> = sqlx::query_as("SELECT id FROM files").fetch_all(&mut app).await.unwrap();
        assert_eq!(files, [(8,)]);
        h.audit_ok().await;
    }
}

/// A failing test must not leave a daemon running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The daemon runs each SQL target's `vacuum` cron: free pages left by the application's own
/// deletes (no secure_delete) disappear from the file while `retentiond run` is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_the_vacuum_cron() {
    let env = Env::new(Backend::Sqlite).await;
    let app = app_pool(&env.app_db, false).await;
    seed_marked(&app).await;
    // The application's own deletes, without secure_delete: free pages full of old content.
    for sql in [
        "DELETE FROM messages",
        "DELETE FROM embeddings",
        "DELETE FROM conversations WHERE id LIKE 'p%'",
    ] {
        sqlx::query(sql).execute(&app).await.unwrap();
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&app)
        .await
        .unwrap();
    let freelist = || async {
        let mut c = env.app().await;
        sqlx::query_scalar::<_, i64>("PRAGMA freelist_count")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert!(freelist().await > 0);
    assert!(!files_containing(&env.app_db, MARKER).is_empty());
    let text = env.config_text(&Knobs::default()).replace(
        "type = \"sql\"\n",
        "type = \"sql\"\nvacuum = \"*/1 * * * * *\"\n",
    );
    let cfg = env.write_config(&text);
    let log = env.dir.path().join("daemon.log");
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while freelist().await > 0 || !files_containing(&env.app_db, MARKER).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no vacuum:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("vacuum scheduled"), "{logs}");
    assert!(logs.contains("target vacuumed"), "{logs}");
    app.close().await;
}
