//! The SQLite and PostgreSQL migrations must produce the same ledger: same tables, columns and
//! indexes (one set of migrations per backend, kept in step by this test).

use std::collections::BTreeSet;

use crate::common::*;
use retentiond::config::SecretUrl;
use retentiond::store::{Ledger, OpenOptions};
use sqlx::Connection;

#[tokio::test]
async fn sqlite_and_postgres_schemas_match() {
    if pg_disabled() {
        eprintln!("RETENTIOND_TEST_PG=off: schema comparison skipped on request");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lite_url = format!("sqlite://{}", dir.path().join("l.db").display());
    let pg_url = pg_schema().await;
    for url in [&lite_url, &pg_url] {
        Ledger::open(&SecretUrl::new(url.as_str()), &OpenOptions::default())
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap();
    }

    let mut lite = sqlx::SqliteConnection::connect(&lite_url).await.unwrap();
    let lite_cols: BTreeSet<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut lite)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let lite_idx: BTreeSet<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(&mut lite)
    .await
    .unwrap()
    .into_iter()
    .collect();

    let mut pg = sqlx::PgConnection::connect(&pg_url).await.unwrap();
    let pg_cols: BTreeSet<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut pg)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let pg_idx: BTreeSet<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND indexname NOT LIKE '%_pkey'",
    )
    .fetch_all(&mut pg)
    .await
    .unwrap()
    .into_iter()
    .collect();

    assert!(!lite_cols.is_empty());
    assert_eq!(
        lite_cols, pg_cols,
        "tables and columns differ between the backends"
    );
    assert_eq!(lite_idx, pg_idx, "indexes differ between the backends");
}
