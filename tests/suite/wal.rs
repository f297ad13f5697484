//! The SQLite ledger's WAL (issue 7): what is committed reaches the database file through the
//! background checkpointer, not through the commits that fill the WAL.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Waits up to `limit` for `p` to reach `at_least` bytes; returns its size then.
async fn grows_to(p: &Path, at_least: u64, limit: Duration) -> u64 {
    let started = Instant::now();
    while size(p) < at_least && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    size(p)
}

#[tokio::test]
async fn committed_pages_reach_the_database_file_before_the_wal_fills() {
    let h = H::new(Backend::Sqlite, Knobs::default()).await;
    let db = h.env.dir.path().join("ledger.db");
    let wal = h.env.dir.path().join("ledger.db-wal");
    // Let the checkpointer copy what migrations and the policy wrote.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = size(&db);

    let mut text = org_account("o1", "free", "a1");
    for i in 0..3000 {
        text.push_str(&created(
            &format!("conversation-{i:06}"),
            "conversation",
            "a1",
        ));
    }
    h.ingest(&text).await;
    // Far below the 4,096 frames at which a commit would checkpoint the WAL itself, so only
    // the background checkpointer can have copied these pages into the database file.
    let wal_frames = size(&wal) / (4096 + 24);
    assert!(wal_frames < 4096, "the WAL holds {wal_frames} frames");
    let grown = grows_to(&db, before + 256 * 1024, Duration::from_secs(20)).await;
    assert!(
        grown >= before + 256 * 1024,
        "the ledger file stayed at {grown} bytes (from {before}) with {wal_frames} frames in the WAL"
    );
}
