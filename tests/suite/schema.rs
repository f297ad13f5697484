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

/// `reapply --since` pages through tombstones by (purged_at, id): each page must be an index
/// range from its cursor (issue 23), on both backends, never a scan of every resource or a sort.
/// The statements are those of `purged_since` and `purged_accounts_since` (store/ops.rs).
#[tokio::test]
async fn the_reapply_scan_by_purge_time_reads_an_index() {
    const RESOURCES: &str = "SELECT r.id, a.org FROM resources r JOIN accounts a ON a.id = r.account \
        WHERE r.state = 'purged' AND r.purged_at >= $1 AND (r.purged_at > $2 OR (r.purged_at = $2 AND r.id > $3)) \
        ORDER BY r.purged_at, r.id LIMIT $4";
    const ACCOUNTS: &str = "SELECT id FROM accounts WHERE state = 'purged' AND purged_at >= $1 \
        AND (purged_at > $2 OR (purged_at = $2 AND id > $3)) ORDER BY purged_at, id LIMIT $4";
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!("sqlite://{}", dir.path().join("l.db").display())];
    if !pg_disabled() {
        urls.push(pg_schema().await);
    }
    for url in urls {
        Ledger::open(&SecretUrl::new(url.as_str()), &OpenOptions::default())
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap();
        for (sql, index) in [
            (RESOURCES, "resources_purged"),
            (ACCOUNTS, "accounts_purged"),
        ] {
            let plan: Vec<String> = if url.starts_with("postgres") {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                // An empty table is cheapest to scan; what matters is that the index can serve.
                sqlx::query("SET enable_seqscan = off")
                    .execute(&mut c)
                    .await
                    .unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .bind(5_i64)
                    .bind(7_i64)
                    .bind("r1")
                    .bind(500_i64)
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
            } else {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(5_i64)
                    .bind(7_i64)
                    .bind("r1")
                    .bind(500_i64)
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
                    .collect()
            };
            let text = plan.join("\n");
            assert!(text.contains(index), "{url}: {index} not used:\n{text}");
            assert!(
                !text.contains("TEMP B-TREE") && !text.contains("Sort"),
                "{url}: sorted instead of read in index order:\n{text}"
            );
        }
    }
}
