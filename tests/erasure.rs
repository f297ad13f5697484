//! Erasure that leaves no residue (issue 9): the raw bytes of the application's SQLite file and
//! its WAL after a purge, `verify` statements that catch partial deletes, vacuum, and SQL
//! targets on a PostgreSQL application database.

mod common;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use common::*;
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
