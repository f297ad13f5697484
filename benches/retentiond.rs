//! retentiond benchmarks (issue 7): every figure of BENCHMARKS.md, measured side by side in one
//! run, printed as one Markdown table on stdout (progress goes to stderr).
//!
//!     cargo bench --bench retentiond -- --quick                       # a minute or two
//!     cargo bench --bench retentiond -- --scratch /work/bench-scratch # the full run
//!
//! Everything is built by the program itself, in `--scratch` (SQLite files) and in fresh schemas
//! of the PostgreSQL server at `--pg-url` (dropped afterwards). What it measures:
//!
//! 1. Purge vs raw: N conversations × M messages in an application database, all deleted. (a) the
//!    raw baseline: batched `DELETE … WHERE conversation_id IN (…)` + `DELETE FROM conversations
//!    …`, one transaction per batch, no ledger; (b) `Sweeper::sweep_once` purging the same data
//!    through the ledger, with audit receipts and one log line per purge (written to a file). The
//!    conversations fall due in `--purge-rounds` rounds, and (a) and (b) take turns, a round
//!    each, so that a slow spell of the machine falls on both.
//! 2. Sweep cost vs tracked size: ledgers of 10k, 1M and 10M tracked resources, each with the same
//!    1,000 due (and then 0 due): the find-due step (`peek_due`), an empty claim, full sweeps.
//!    Big ledgers are bulk-inserted with SQL (see `bulk_resources`); a self-check at startup
//!    ingests a small ledger through the real ingest path and compares it row by row with the
//!    bulk-built one, so the shortcut writes exactly what ingest writes.
//! 3. Ingest: events/s for an NDJSON file of 1M lines (resource.created and .deleted, 3:1); and
//!    a floor: the rows that ingest left, copied into an empty ledger by `INSERT … SELECT`.
//! 4. Memory: peak RSS (`/usr/bin/time -v`) of the real binary, `retentiond sweep --once`, over a
//!    sweep of 1,000 due among the largest ledger.
//! 5. Holds: the purge of (1) with 1,000 active holds of mixed scopes, against none.
//! 6. (1)–(4) on PostgreSQL too.
//! 7. Object store (issue 21): N keys (10,000; quick 2,000) purged by sweeps through the
//!    `object_store` target (versions = "all": list, DeleteObjects, list again to verify) on a
//!    real S3-protocol server (moto), against a raw `DeleteObjects` loop over as many known
//!    (key, version) pairs in another bucket of the same server; the two take turns by halves.
//!    The target's S3 requests are timed by kind (listing, DeleteObjects) through its metrics,
//!    so the table says where the rest of the time goes.
//! 8. HTTP target (issue 21): N documents (as many as (7)) purged by sweeps through the `http`
//!    target (DELETE, concurrency 8, no `verify_url`) from a document service run by the bench on
//!    127.0.0.1, against a raw loop of the same DELETE requests, 8 in flight, to the same
//!    service; the two take turns by halves.
//! 9. Windowed kinds (issue 29): a log table (SQLite, 2M rows, half past a 30-day `max_age`)
//!    purged by retentiond's windowed pass against a raw batched DELETE by age on a copy of the
//!    same file, taking turns by rounds; the ledger's bytes before and after; a pass with
//!    nothing due over 10M young rows and the plan of its DELETE; on PostgreSQL, a table
//!    partitioned by day with a hold on part of an expired day: the pass against `DROP TABLE`
//!    of the expired partitions (what dropping partitions, W3, can gain).

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use retentiond::admin::{PlaceHold, place_hold};
use retentiond::clock::Clock;
use retentiond::config::Config;
use retentiond::config::SecretUrl;
use retentiond::holds::HoldScope;
use retentiond::ingest::{IngestContext, ingest_reader};
use retentiond::model::Timestamp;
use retentiond::store::{Ledger, OpenOptions};
use retentiond::sweep::Sweeper;
use retentiond::targets::Targets;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, QueryBuilder, Row};
use tokio_util::sync::CancellationToken;

#[path = "../tests/suite/common/moto.rs"]
mod moto;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

#[derive(Parser, Debug, Clone)]
#[command(about = "retentiond benchmarks (issue 7); prints one Markdown table")]
struct Args {
    /// Scale everything down (N=2,000, sizes 1k/10k/100k, 20k ingest lines, 100 holds).
    #[arg(long)]
    quick: bool,
    /// Conversations to purge in (1) and (5) [default 100,000; quick 2,000].
    #[arg(long)]
    n: Option<usize>,
    /// Messages per conversation.
    #[arg(long, default_value_t = 10)]
    m: usize,
    /// Batch size of the raw baseline and of the sweep (`scheduler.batch_size`).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Target batches per purge transaction (`scheduler.batches_per_transaction`) [default:
    /// the config's default].
    #[arg(long)]
    per_tx: Option<usize>,
    /// Rounds of (1) and (5): the purge set falls due round by round, and the raw baseline and
    /// the sweep take turns, a round each.
    #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    purge_rounds: usize,
    /// Tracked ledger sizes for (2), comma-separated; the first is the reference
    /// [default 10000,1000000,10000000; quick 1000,10000,100000].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u64>>,
    /// Due resources per sweep in (2).
    #[arg(long, default_value_t = 1000)]
    due: usize,
    /// Sweeps of `due` measured per size in (2) (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Lines of the ingest file in (3) [default 1,000,000; quick 20,000].
    #[arg(long)]
    ingest_lines: Option<usize>,
    /// Active holds in (5) [default 1,000; quick 100].
    #[arg(long)]
    holds: Option<usize>,
    /// Due conversations of (10), the backlog drain [default 1,000,000; quick 20,000].
    #[arg(long)]
    drain: Option<usize>,
    /// Object-store keys in (7) [default 10,000; quick 2,000].
    #[arg(long)]
    object_keys: Option<usize>,
    /// Log rows of (9)'s SQLite purge, half of them past the 30-day window
    /// [default 2,000,000; quick 100,000].
    #[arg(long)]
    window_rows: Option<u64>,
    /// Log rows of (9)'s pass with nothing due on SQLite, all young [default 10,000,000; quick
    /// 200,000].
    #[arg(long)]
    window_idle_rows: Option<u64>,
    /// Log rows of (9)'s partitioned PostgreSQL table, over 40 days [default 10,000,000; quick
    /// 200,000].
    #[arg(long)]
    window_pg_rows: Option<u64>,
    /// Rows per DELETE in (9), retentiond's (`batch`) and the raw baseline's.
    #[arg(long, default_value_t = 10_000)]
    window_batch: usize,
    /// PostgreSQL server; each part runs in a fresh schema that is dropped afterwards.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pg_url: String,
    /// Skip PostgreSQL.
    #[arg(long)]
    no_pg: bool,
    /// Where SQLite files, the ingest file and logs go [default: cargo's target tmp dir].
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Keep the scratch files.
    #[arg(long)]
    keep: bool,
    /// Only these parts: purge,holds,scale,ingest,objects,http,instances,windows,drain (memory
    /// runs with scale).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Pg,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Pg => "PostgreSQL",
        }
    }
}

struct Bench {
    args: Args,
    n: usize,
    object_keys: usize,
    drain: usize,
    sizes: Vec<u64>,
    ingest_lines: usize,
    holds: usize,
    window_rows: u64,
    window_idle_rows: u64,
    window_pg_rows: u64,
    dir: PathBuf,
    /// Real time at start: everything is dated around it, so the real binary (system clock)
    /// sees the same due work as the in-process sweeps (manual clock).
    now0: i64,
    schemas: Mutex<Vec<String>>,
    seq: std::sync::atomic::AtomicUsize,
    table: Mutex<Table>,
}

/// One figure per (row, backend).
#[derive(Default)]
struct Table {
    rows: Vec<Line>,
}

struct Line {
    key: String,
    label: String,
    sqlite: String,
    pg: String,
    target: String,
    met: String,
}

/// The part a row key belongs to: its leading digits (`"10a"` is part 10).
fn section(key: &str) -> u32 {
    let digits: String = key.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or(0)
}

impl Table {
    fn set(&mut self, key: &str, label: &str, b: Backend, value: String) {
        let row = match self.rows.iter_mut().position(|r| r.key == key) {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push(Line {
                    key: key.to_string(),
                    label: label.to_string(),
                    sqlite: "–".into(),
                    pg: "–".into(),
                    target: String::new(),
                    met: String::new(),
                });
                self.rows.last_mut().expect("just pushed")
            }
        };
        match b {
            Backend::Sqlite => row.sqlite = value,
            Backend::Pg => row.pg = value,
        }
    }

    /// Sets a row's target and verdict; a row measured on both backends meets its target only
    /// if both did (a later backend never overwrites an earlier "no").
    fn target(&mut self, key: &str, target: &str, met: String) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.key == key) {
            if r.target != target || r.met != yes(false) {
                r.met = met;
            }
            r.target = target.to_string();
        }
    }

    fn print(&self) -> String {
        let mut s = String::from(
            "| # | figure | SQLite | PostgreSQL | target | met |\n| --- | --- | ---: | ---: | --- | --- |\n",
        );
        let mut rows: Vec<&Line> = self.rows.iter().collect();
        rows.sort_by_key(|r| (section(&r.key), r.key.clone()));
        for r in rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                section(&r.key),
                r.label,
                r.sqlite,
                r.pg,
                r.target,
                r.met
            ));
        }
        s
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn k(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2}M", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else {
        format!("{v:.0}")
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn yes(ok: bool) -> String {
    if ok { "yes".into() } else { "**no**".into() }
}

// ----- application databases --------------------------------------------------------------

const APP_SCHEMA_SQLITE: &str = include_str!("../config/app-schema.sql");
const APP_SCHEMA_PG: &str = "
CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE conversations (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, title TEXT);
CREATE TABLE messages (id BIGSERIAL PRIMARY KEY, conversation_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX messages_conversation ON messages (conversation_id);
CREATE TABLE api_logs (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, endpoint TEXT, request TEXT, response TEXT);
";
const BODY: &str = " lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore";

/// An application database (a SQLite file or a PostgreSQL schema).
#[derive(Clone)]
struct App {
    backend: Backend,
    url: String,
}

enum AppConn {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl App {
    async fn conn(&self) -> AppConn {
        match self.backend {
            Backend::Sqlite => AppConn::Sqlite(
                SqliteConnectOptions::from_str(&self.url)
                    .unwrap()
                    .busy_timeout(Duration::from_secs(30))
                    .connect()
                    .await
                    .unwrap(),
            ),
            Backend::Pg => AppConn::Pg(sqlx::PgConnection::connect(&self.url).await.unwrap()),
        }
    }

    async fn exec(&self, sql: &str) {
        match self.conn().await {
            AppConn::Sqlite(mut c) => {
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            AppConn::Pg(mut c) => {
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        match self.conn().await {
            AppConn::Sqlite(mut c) => sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                .fetch_one(&mut c)
                .await
                .unwrap(),
            AppConn::Pg(mut c) => sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                .fetch_one(&mut c)
                .await
                .unwrap(),
        }
    }

    /// `n` conversations `{prefix}%08d` with `m` messages each (messages of a conversation are
    /// contiguous), and a user per 10 conversations.
    async fn fill(&self, prefix: &str, n: usize, m: usize) {
        let (n, nm) = (n as i64, (n * m) as i64);
        let m = m as i64;
        let sql = match self.backend {
            Backend::Sqlite => {
                let series = |hi: i64| {
                    format!(
                        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {hi}) "
                    )
                };
                format!(
                    "BEGIN;
                     {s1} INSERT OR IGNORE INTO users (id, name) SELECT printf('u{prefix}%06d', i / 10), 'n' FROM s;
                     {s1} INSERT INTO conversations (id, user_id, title) SELECT printf('{prefix}%08d', i), printf('u{prefix}%06d', i / 10), 'a conversation title' FROM s;
                     {s2} INSERT INTO messages (conversation_id, body) SELECT printf('{prefix}%08d', i / {m}), 'message ' || i || '{BODY}' FROM s;
                     COMMIT;",
                    s1 = series(n),
                    s2 = series(nm),
                )
            }
            Backend::Pg => format!(
                "INSERT INTO users (id, name) SELECT DISTINCT 'u{prefix}' || lpad((i / 10)::text, 6, '0'), 'n' FROM generate_series(0, {n} - 1) i ON CONFLICT DO NOTHING;
                 INSERT INTO conversations (id, user_id, title) SELECT '{prefix}' || lpad(i::text, 8, '0'), 'u{prefix}' || lpad((i / 10)::text, 6, '0'), 'a conversation title' FROM generate_series(0, {n} - 1) i;
                 INSERT INTO messages (conversation_id, body) SELECT '{prefix}' || lpad((i / {m})::text, 8, '0'), 'message ' || i || '{BODY}' FROM generate_series(0, {nm} - 1) i;
                 ANALYZE users; ANALYZE conversations; ANALYZE messages;"
            ),
        };
        self.exec(&sql).await;
        if self.backend == Backend::Sqlite {
            self.exec("PRAGMA wal_checkpoint(TRUNCATE)").await;
        }
    }

    async fn rows_left(&self) -> i64 {
        self.count("SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM conversations)")
            .await
    }
}

impl Bench {
    fn next(&self) -> usize {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A fresh PostgreSQL schema; returns the URL that selects it.
    async fn pg_schema(&self, what: &str) -> String {
        let name = format!("bench_{}_{}_{}", std::process::id(), what, self.next());
        let mut c = sqlx::PgConnection::connect(&self.args.pg_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} unreachable ({e}); use --no-pg",
                    self.args.pg_url
                )
            });
        c.execute(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .unwrap();
        self.schemas.lock().unwrap().push(name.clone());
        let sep = if self.args.pg_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}options[search_path]={name}", self.args.pg_url)
    }

    async fn drop_schemas(&self) {
        let names: Vec<String> = std::mem::take(&mut *self.schemas.lock().unwrap());
        if names.is_empty() {
            return;
        }
        let Ok(mut c) = sqlx::PgConnection::connect(&self.args.pg_url).await else {
            return;
        };
        for n in names {
            let _ = c
                .execute(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {n} CASCADE")))
                .await;
        }
    }

    async fn new_app(&self, b: Backend, what: &str) -> App {
        match b {
            Backend::Sqlite => {
                let path = self.dir.join(format!("app-{what}-{}.db", self.next()));
                let url = format!("sqlite://{}", path.display());
                let mut c = SqliteConnectOptions::from_str(&url)
                    .unwrap()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .connect()
                    .await
                    .unwrap();
                sqlx::raw_sql(APP_SCHEMA_SQLITE)
                    .execute(&mut c)
                    .await
                    .unwrap();
                App { backend: b, url }
            }
            Backend::Pg => {
                let url = self.pg_schema(&format!("app_{what}")).await;
                let app = App { backend: b, url };
                app.exec(APP_SCHEMA_PG).await;
                app
            }
        }
    }

    /// A copy of a filled SQLite app database (PostgreSQL: a new schema filled the same way).
    async fn app_copy(&self, src: &App, what: &str, n: usize) -> App {
        match src.backend {
            Backend::Sqlite => {
                let from = src.url.trim_start_matches("sqlite://");
                let path = self.dir.join(format!("app-{what}-{}.db", self.next()));
                std::fs::copy(from, &path).unwrap();
                App {
                    backend: Backend::Sqlite,
                    url: format!("sqlite://{}", path.display()),
                }
            }
            Backend::Pg => {
                let app = self.new_app(Backend::Pg, what).await;
                app.fill("c", n, self.args.m).await;
                app
            }
        }
    }

    async fn ledger_url(&self, b: Backend, what: &str) -> String {
        match b {
            Backend::Sqlite => format!(
                "sqlite://{}",
                self.dir
                    .join(format!("ledger-{what}-{}.db", self.next()))
                    .display()
            ),
            Backend::Pg => self.pg_schema(&format!("ledger_{what}")).await,
        }
    }

    fn config_text(&self, ledger: &str, app: &App, secure: bool) -> String {
        format!(
            r#"
[database]
url = "{ledger}"

[scheduler]
sweep = "0 0 * * * *"
batch_size = {batch}
{per_tx}lease = "10m"

[ingest]
max_clock_skew = "5m"

[accounts]
grace_after_delete = "30d"
targets = ["app_db"]

[zdr]
endpoints = ["/v1/embeddings"]

[kinds.conversation]
grace_after_delete = "30d"
targets = ["app_db"]

[kinds.api_log]
grace_after_delete = "0s"
max_age = "30d"
zdr = true
targets = ["app_db"]

[targets.app_db]
type = "sql"
url = "{app}"
secure_delete = {secure}
[targets.app_db.purge]
conversation = ["DELETE FROM messages WHERE conversation_id = :id", "DELETE FROM conversations WHERE id = :id"]
api_log = ["DELETE FROM api_logs WHERE id = :id"]
account = ["DELETE FROM users WHERE id = :account"]

[safety]
max_newly_due = 1000000000
"#,
            batch = self.args.batch,
            per_tx = self
                .args
                .per_tx
                .map(|n| format!("batches_per_transaction = {n}\n"))
                .unwrap_or_default(),
            app = app.url,
        )
    }
}

struct Stack {
    config: Arc<Config>,
    config_text: String,
    ledger: Ledger,
    clock: Clock,
    sweeper: Sweeper,
}

async fn stack(config_text: String, clock: Clock) -> Stack {
    let config = Arc::new(Config::parse(&config_text, "bench.toml").expect("bench config"));
    let (ledger, _) = retentiond::daemon::prepare(&config, &clock, "bench")
        .await
        .expect("prepare");
    let sweeper = Sweeper::new(
        ledger.clone(),
        Arc::new(Targets::from_config(&config).unwrap()),
        config.clone(),
        clock.clone(),
        format!("bench-{}", std::process::id()),
    );
    Stack {
        config,
        config_text,
        ledger,
        clock,
        sweeper,
    }
}

async fn ingest_text(s: &Stack, text: &str) -> retentiond::ingest::IngestReport {
    let policy = retentiond::policy::in_force(&s.ledger)
        .await
        .unwrap()
        .expect("policy");
    let ctx = IngestContext {
        policy: &policy,
        now: s.clock.now(),
        max_clock_skew: s.config.max_clock_skew,
        dedup_window: s.config.dedup_window,
        keep_attrs: &s.config.target_attrs,
    };
    ingest_reader(&s.ledger, &ctx, text.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("ingest: {e}"))
}

// ----- (1) and (5): purge vs raw ----------------------------------------------------------

struct Purge {
    rows: i64,
    items: u64,
    secs: f64,
}

impl Purge {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.secs
    }
    fn items_per_s(&self) -> f64 {
        self.items as f64 / self.secs
    }
}

/// The raw baseline: what a cron job of batched DELETEs does, on the same database with the same
/// connection settings as retentiond's SQL target (and, with `secure`, the same WAL truncation
/// after each batch). The ids are handed to it: no ledger, no lookup.
enum RawBaseline {
    Sqlite(sqlx::SqlitePool, bool),
    Pg(sqlx::PgPool),
}

impl RawBaseline {
    async fn open(app: &App, secure: bool) -> RawBaseline {
        match app.backend {
            Backend::Sqlite => {
                let mut opts = SqliteConnectOptions::from_str(&app.url)
                    .unwrap()
                    .create_if_missing(false)
                    .busy_timeout(Duration::from_secs(5));
                if secure {
                    opts = opts.pragma("secure_delete", "ON");
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts)
                    .await
                    .unwrap();
                RawBaseline::Sqlite(pool, secure)
            }
            Backend::Pg => RawBaseline::Pg(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&app.url)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Deletes the conversations `ids` and their messages, `batch` per transaction; returns the
    /// seconds it took.
    async fn delete(&self, ids: &[String], batch: usize) -> f64 {
        let started = Instant::now();
        match self {
            RawBaseline::Sqlite(pool, secure) => {
                for chunk in ids.chunks(batch) {
                    let mut tx = pool.begin().await.unwrap();
                    for table_col in ["messages WHERE conversation_id", "conversations WHERE id"] {
                        let mut q = QueryBuilder::<sqlx::Sqlite>::new(format!(
                            "DELETE FROM {table_col} IN ("
                        ));
                        let mut sep = q.separated(", ");
                        for id in chunk {
                            sep.push_bind(id.as_str());
                        }
                        q.push(")");
                        q.build().execute(&mut *tx).await.unwrap();
                    }
                    tx.commit().await.unwrap();
                    if *secure {
                        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                            .execute(pool)
                            .await
                            .unwrap();
                    }
                }
            }
            RawBaseline::Pg(pool) => {
                for chunk in ids.chunks(batch) {
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("DELETE FROM messages WHERE conversation_id = ANY($1)")
                        .bind(chunk)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    sqlx::query("DELETE FROM conversations WHERE id = ANY($1)")
                        .bind(chunk)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            }
        }
        started.elapsed().as_secs_f64()
    }
}

/// The purge set is purged in `rounds` rounds, the raw baseline's and the sweep's alternating,
/// so that a slow spell of this shared machine falls on both sides alike. Round `r` holds the
/// conversations `round_range(n, rounds, r)`.
fn round_range(n: usize, rounds: usize, r: usize) -> std::ops::Range<usize> {
    (r * n).div_ceil(rounds)..((r + 1) * n).div_ceil(rounds)
}

/// When the purge set's round `r` was deleted: a minute apart, so each round falls due on its
/// own (`round_purge_after`).
fn round_deleted_at(now0: i64, rounds: usize, r: usize) -> Timestamp {
    Timestamp::from_millis(now0 - 40 * DAY - (rounds - r) as i64 * MIN)
}

/// A clock at which round `r` of the purge set is due and round `r + 1` is not yet.
fn round_sweep_at(now0: i64, rounds: usize, r: usize) -> Timestamp {
    Timestamp::from_millis(round_deleted_at(now0, rounds, r).millis() + 30 * DAY + 1000)
}

/// Events for the purge set: one org, a user per 10 conversations, N conversations, all deleted,
/// round by round (`round_deleted_at`).
fn purge_events(n: usize, rounds: usize, now0: i64) -> String {
    let mut s = String::with_capacity(n * 200);
    let created = Timestamp::from_millis(now0 - 41 * DAY);
    s.push_str(&format!(
        "{{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"scale\",\"at\":\"{created}\"}}\n"
    ));
    for a in 0..n.div_ceil(10) {
        s.push_str(&format!(
            "{{\"type\":\"account.created\",\"account\":\"uc{a:06}\",\"org\":\"o1\",\"at\":\"{created}\"}}\n"
        ));
    }
    for i in 0..n {
        s.push_str(&format!(
            "{{\"type\":\"resource.created\",\"id\":\"c{i:08}\",\"kind\":\"conversation\",\"account\":\"uc{:06}\",\"at\":\"{created}\"}}\n",
            i / 10
        ));
    }
    for r in 0..rounds {
        let at = round_deleted_at(now0, rounds, r);
        for i in round_range(n, rounds, r) {
            s.push_str(&format!(
                "{{\"type\":\"resource.deleted\",\"id\":\"c{i:08}\",\"at\":\"{at}\"}}\n"
            ));
        }
    }
    s
}

/// Bystanders the holds of (5) point at: 100 orgs × 5 accounts × 1 live conversation.
fn bystander_events() -> String {
    let mut s = String::new();
    for o in 0..100 {
        s.push_str(&format!(
            "{{\"type\":\"org.upsert\",\"org\":\"hbo{o:03}\",\"plan\":\"free\"}}\n"
        ));
        for a in 0..5 {
            let acct = format!("hba{o:03}{a}");
            s.push_str(&format!(
                "{{\"type\":\"account.created\",\"account\":\"{acct}\",\"org\":\"hbo{o:03}\"}}\n"
            ));
            s.push_str(&format!(
                "{{\"type\":\"resource.created\",\"id\":\"hbr{o:03}{a}\",\"kind\":\"conversation\",\"account\":\"{acct}\"}}\n"
            ));
        }
    }
    s
}

/// `holds` holds, a fifth each scoped to a resource, an account, an org, a kind + creation
/// range, a creation range. The first 10 resource holds cover conversations of the purge set (so
/// 10 are held back); every other hold covers bystanders or nothing due.
async fn place_holds(s: &Stack, holds: usize, now0: i64) -> u64 {
    let mut held = 0;
    for i in 0..holds {
        let j = i / 5;
        let far = Timestamp::from_millis(now0 - 1000 * DAY + j as i64 * DAY);
        let scope = match i % 5 {
            0 if j < 10 => {
                held += 1;
                HoldScope {
                    resource: Some(format!("c{:08}", j * 97)),
                    ..Default::default()
                }
            }
            0 => HoldScope {
                resource: Some(format!("hbr{:03}{}", j % 100, j % 5)),
                ..Default::default()
            },
            1 => HoldScope {
                account: Some(format!("hba{:03}{}", j % 100, (j / 100) % 5)),
                ..Default::default()
            },
            2 => HoldScope {
                org: Some(format!("hbo{:03}", j % 100)),
                ..Default::default()
            },
            3 => HoldScope {
                kind: Some("conversation".into()),
                created_from: Some(far),
                created_to: Some(far.plus(retentiond::model::Span::from_millis(HOUR))),
                ..Default::default()
            },
            _ => HoldScope {
                created_from: Some(far),
                created_to: Some(far.plus(retentiond::model::Span::from_millis(DAY / 2))),
                ..Default::default()
            },
        };
        place_hold(
            &s.ledger,
            PlaceHold {
                case: format!("BENCH-{i}"),
                by: "bench".into(),
                reason: None,
                scope,
            },
            s.clock.now(),
        )
        .await
        .unwrap();
    }
    held
}

/// retentiond purging the N conversations of `app` through a fresh ledger, one round per
/// sweep. With `ledger_only`, the conversation's statement deletes nothing (`… AND 1 = 0`): what
/// is left is the ledger's own work per item (claim, holds, receipt, audit entry, log line).
struct Pipeline {
    s: Stack,
    url: String,
    now0: i64,
    rounds: usize,
    secure: bool,
    ledger_only: bool,
    n: usize,
    /// Conversations of the purge set that the holds cover (`place_holds`).
    expected_held: u64,
    purged: u64,
    held: u64,
}

impl Pipeline {
    async fn setup(
        bench: &Bench,
        app: &App,
        secure: bool,
        holds: usize,
        ledger_only: bool,
    ) -> Pipeline {
        Self::setup_sized(
            bench,
            app,
            (bench.n, bench.args.purge_rounds),
            secure,
            holds,
            ledger_only,
        )
        .await
    }

    /// [`Pipeline::setup`] over `n` conversations falling due in `rounds` rounds.
    async fn setup_sized(
        bench: &Bench,
        app: &App,
        (n, rounds): (usize, usize),
        secure: bool,
        holds: usize,
        ledger_only: bool,
    ) -> Pipeline {
        let url = bench.ledger_url(app.backend, "purge").await;
        let clock = Clock::manual(Timestamp::from_millis(bench.now0 - 40 * DAY));
        let mut config = bench.config_text(&url, app, secure);
        if ledger_only {
            config = config.replace(
                r#"conversation = ["DELETE FROM messages WHERE conversation_id = :id", "DELETE FROM conversations WHERE id = :id"]"#,
                r#"conversation = ["DELETE FROM conversations WHERE id = :id AND 1 = 0"]"#,
            );
        }
        let s = stack(config, clock).await;
        let r = ingest_text(&s, &purge_events(n, rounds, bench.now0)).await;
        let mut expected_held = 0;
        assert_eq!(r.applied as usize, 1 + n.div_ceil(10) + 2 * n);
        if holds > 0 {
            ingest_text(&s, &bystander_events()).await;
            expected_held = place_holds(&s, holds, bench.now0).await;
        }
        Pipeline {
            s,
            url,
            now0: bench.now0,
            rounds,
            secure,
            ledger_only,
            n,
            expected_held,
            purged: 0,
            held: 0,
        }
    }

    /// One sweep, at a time when round `r` is due; returns the seconds it took.
    async fn round(&mut self, r: usize) -> f64 {
        self.s.clock.set(round_sweep_at(self.now0, self.rounds, r));
        let started = Instant::now();
        let report = self
            .s
            .sweeper
            .sweep_once(&CancellationToken::new())
            .await
            .expect("sweep");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(
            report.purged + report.held,
            round_range(self.n, self.rounds, r).len() as u64,
            "round {r} of the purge set: {report:?}"
        );
        self.purged += report.purged;
        self.held += report.held;
        secs
    }
}

/// Both sides of (1) over the same rounds, alternating: (raw, sweep) per round.
struct Rounds {
    raw: Vec<f64>,
    pipe: Vec<f64>,
}

impl Rounds {
    /// (b)/(a) of each round, lowest and highest: how much the machine moved during the run.
    fn spread(&self, raw_rows: i64, pipe_rows: i64) -> (f64, f64) {
        let n = self.raw.len() as f64;
        let ratios = self
            .raw
            .iter()
            .zip(&self.pipe)
            .map(|(a, b)| (pipe_rows as f64 / n / b) / (raw_rows as f64 / n / a));
        ratios.fold((f64::MAX, 0.0_f64), |(lo, hi), x| (lo.min(x), hi.max(x)))
    }
}

/// Purges the purge set with `pipe`, and with the raw baseline on `raw` if given, round by
/// round, alternating; checks what each left.
async fn purge_in_rounds(
    bench: &Bench,
    raw: Option<&App>,
    pipe_app: &App,
    pipe: &mut Pipeline,
) -> (Option<Purge>, Purge, Rounds) {
    let (n, rounds) = (bench.n, bench.args.purge_rounds);
    // The baseline's connections are opened inside its timing, as the sweep's target connects
    // lazily inside its first round.
    let mut open_secs = 0.0;
    let raw_side = match raw {
        Some(app) => {
            let before = app.rows_left().await;
            let started = Instant::now();
            let baseline = RawBaseline::open(app, pipe.secure).await;
            open_secs = started.elapsed().as_secs_f64();
            Some((app, baseline, before))
        }
        None => None,
    };
    let before = pipe_app.rows_left().await;
    let mut times = Rounds {
        raw: Vec::new(),
        pipe: Vec::new(),
    };
    for r in 0..rounds {
        if let Some((_, baseline, _)) = &raw_side {
            let ids: Vec<String> = round_range(n, rounds, r)
                .map(|i| format!("c{i:08}"))
                .collect();
            let open = std::mem::take(&mut open_secs);
            times
                .raw
                .push(open + baseline.delete(&ids, bench.args.batch).await);
        }
        times.pipe.push(pipe.round(r).await);
    }
    let left = pipe_app.rows_left().await;
    assert_eq!(pipe.held, pipe.expected_held, "held by the sweep");
    assert_eq!(
        pipe.purged,
        n as u64 - pipe.held,
        "pipeline purged {} of {n}",
        pipe.purged
    );
    if pipe.ledger_only {
        assert_eq!(left, before, "the ledger-only statement deleted rows");
    } else {
        assert_eq!(left, (pipe.held * (bench.args.m as u64 + 1)) as i64);
    }
    let pipe_result = Purge {
        rows: before - left,
        items: pipe.purged,
        secs: times.pipe.iter().sum(),
    };
    let raw_result = match raw_side {
        Some((app, baseline, raw_before)) => {
            drop(baseline);
            let raw_left = app.rows_left().await;
            assert_eq!(raw_left, 0, "raw baseline left rows");
            Some(Purge {
                rows: raw_before - raw_left,
                items: n as u64,
                secs: times.raw.iter().sum(),
            })
        }
        None => None,
    };
    (raw_result, pipe_result, times)
}

async fn part_purge(bench: &Bench, b: Backend, with_holds: bool) {
    let (n, m, batch, rounds) = (
        bench.n,
        bench.args.m,
        bench.args.batch,
        bench.args.purge_rounds,
    );
    log(format!(
        "{}: building the application data ({n} × {m})",
        b.name()
    ));
    let master = bench.new_app(b, "master").await;
    if b == Backend::Sqlite {
        master.fill("c", n, m).await;
    }

    let variants: &[bool] = match b {
        Backend::Sqlite => &[true, false],
        Backend::Pg => &[true],
    };
    let mut none_items = 0.0;
    for &secure in variants {
        let tag = match (b, secure) {
            (Backend::Pg, _) => "",
            (_, true) => ", secure_delete on",
            (_, false) => ", secure_delete off",
        };
        let keys = if secure {
            ["1a", "1b", "1c"]
        } else {
            ["1d", "1e", "1f"]
        };
        let raw_app = bench.app_copy(&master, "raw", n).await;
        let pipe_app = bench.app_copy(&master, "pipe", n).await;
        let mut pipe = Pipeline::setup(bench, &pipe_app, secure, 0, false).await;
        log(format!(
            "{}: raw baseline and retentiond sweep{tag}, {rounds} rounds each, alternating",
            b.name()
        ));
        let (raw, pipe, times) = purge_in_rounds(bench, Some(&raw_app), &pipe_app, &mut pipe).await;
        let raw = raw.expect("raw side");
        let ratio = pipe.rows_per_s() / raw.rows_per_s();
        let (lo, hi) = times.spread(raw.rows, pipe.rows);
        if secure {
            none_items = pipe.items_per_s();
        }
        {
            let mut t = bench.table.lock().unwrap();
            t.set(
                keys[0],
                &format!("(a) raw batched DELETE{tag}: rows/s ({n} × {m}+1 rows, batch {batch})"),
                b,
                format!("{} ({:.2} s)", k(raw.rows_per_s()), raw.secs),
            );
            t.set(
                keys[1],
                &format!("(b) retentiond sweep{tag}: rows/s (items/s)"),
                b,
                format!(
                    "{} ({} items/s, {:.2} s)",
                    k(pipe.rows_per_s()),
                    k(pipe.items_per_s()),
                    pipe.secs
                ),
            );
            t.set(
                keys[2],
                &format!("(b)/(a){tag} (lowest–highest of the {rounds} rounds)"),
                b,
                format!("{ratio:.2} ({lo:.2}–{hi:.2})"),
            );
            if b == Backend::Sqlite {
                t.target(keys[2], "≥ 0.50 (SQLite)", yes(ratio >= 0.5));
            }
        }
        if secure {
            // The ledger's share: the same sweep with a statement that deletes nothing. Were
            // nothing overlapped, (b)/(a) would be raw / (raw + ledger); the claim of the next
            // batch runs beside the targets, so (b)/(a) can exceed it.
            let app = bench.app_copy(&master, "ledger", n).await;
            let mut pipe = Pipeline::setup(bench, &app, secure, 0, true).await;
            log(format!("{}: retentiond sweep, ledger only", b.name()));
            let (_, ledger, _) = purge_in_rounds(bench, None, &app, &mut pipe).await;
            let serial = raw.secs / (raw.secs + ledger.secs);
            let mut t = bench.table.lock().unwrap();
            t.set(
                "1c2",
                "(c) ledger only (statement deletes nothing): items/s; raw/(raw + ledger), i.e. (b)/(a) if nothing overlapped",
                b,
                format!(
                    "{} items/s ({:.2} s); {serial:.2}",
                    k(ledger.items_per_s()),
                    ledger.secs
                ),
            );
        }
    }
    ledger_footprint(bench, &master).await;
    if with_holds {
        let app = bench.app_copy(&master, "holds", n).await;
        let mut pipe = Pipeline::setup(bench, &app, true, bench.holds, false).await;
        log(format!("{}: sweep with {} holds", b.name(), bench.holds));
        let (_, held, _) = purge_in_rounds(bench, None, &app, &mut pipe).await;
        let ratio = held.items_per_s() / none_items;
        let mut t = bench.table.lock().unwrap();
        t.set(
            "5a",
            &format!(
                "purge with {} active holds (mixed scopes): items/s",
                bench.holds
            ),
            b,
            format!("{} ({:.2} s)", k(held.items_per_s()), held.secs),
        );
        t.set(
            "5b",
            "with holds / without (items/s)",
            b,
            format!("{ratio:.2}"),
        );
    }
}

// ----- (10) draining a backlog ------------------------------------------------------------------

/// (10) A backlog of `--drain` due conversations (× M messages) all due at once, drained by one
/// `sweep_once` (as a daemon catching up after an outage, or a first start on a big ledger):
/// seconds and items/s; and the ledger's bytes before and after (uncompacted: what the drain
/// leaves for vacuum or SQLite's free pages).
async fn part_drain(bench: &Bench, b: Backend) {
    let (n, m) = (bench.drain, bench.args.m);
    log(format!("{}: drain of {n} due ({n} × {m})", b.name()));
    let app = bench.new_app(b, "drain").await;
    app.fill("c", n, m).await;
    let t = Instant::now();
    let mut pipe = Pipeline::setup_sized(bench, &app, (n, 1), true, 0, false).await;
    let build = t.elapsed().as_secs_f64();
    let before = ledger_bytes(&pipe.url).await;
    let secs = pipe.round(0).await;
    assert_eq!(pipe.purged, n as u64);
    assert_eq!(app.rows_left().await, 0, "the drain left application rows");
    let after = ledger_bytes(&pipe.url).await;
    let mut t = bench.table.lock().unwrap();
    t.set(
        "10a",
        &format!(
            "drain a backlog of {} due ({} rows), one `sweep_once`: seconds (items/s)",
            k(n as f64),
            k((n * (m + 1)) as f64)
        ),
        b,
        format!("{secs:.1} s ({} items/s)", k(n as f64 / secs)),
    );
    t.set(
        "10b",
        "ledger bytes before / after the drain (uncompacted); ingest of the backlog",
        b,
        format!(
            "{:.0} MB / {:.0} MB; {build:.1} s",
            before as f64 / 1e6,
            after as f64 / 1e6
        ),
    );
}

// ----- (2) and (4): sweep cost vs tracked size ----------------------------------------------

/// SQL inserting background resources `lo..hi` exactly as ingest (and, for tombstones, the
/// sweep) would have written them. By `i % 10`: 0 a purged tombstone, 1 a conversation deleted an
/// hour ago (due in 30 days), 2 a live api_log (max_age 30d, rule R5), else a live conversation.
/// Resource i belongs to account `a{i/10}`, of org `o{i/1000}`.
fn bulk_resources(b: Backend, lo: u64, hi: u64, now0: i64) -> String {
    let (series, rid, acct) = match b {
        Backend::Sqlite => (
            format!(
                "WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {hi}) SELECT"
            ),
            "printf('r%09d', i)".to_string(),
            "printf('a%08d', i / 10)".to_string(),
        ),
        Backend::Pg => (
            "SELECT".to_string(),
            "'r' || lpad(i::text, 9, '0')".to_string(),
            "'a' || lpad((i / 10)::text, 8, '0')".to_string(),
        ),
    };
    let from = match b {
        Backend::Sqlite => " FROM s".to_string(),
        Backend::Pg => format!(" FROM generate_series({lo}::bigint, {hi}::bigint - 1) AS g(i)"),
    };
    let api_created = format!("({now0} - {} + (i % 1000000000))", 20 * DAY);
    let conv_created = format!("({now0} - {} + i)", 90 * DAY);
    let pending_deleted = format!("({now0} - {HOUR} - (i % 1000))");
    format!(
        "INSERT INTO resources (id, kind, account, created_at, endpoint, state, deleted_at, cause, purge_after, rule, \
         held, lease_owner, lease_until, attempts, last_error, purged_at) \
         {series} {rid}, \
         CASE WHEN i % 10 = 2 THEN 'api_log' ELSE 'conversation' END, \
         {acct}, \
         CASE WHEN i % 10 = 2 THEN {api_created} ELSE {conv_created} END, \
         CASE WHEN i % 10 = 2 THEN '/v1/chat/completions' END, \
         CASE i % 10 WHEN 0 THEN 'purged' WHEN 1 THEN 'deleted' ELSE 'live' END, \
         CASE i % 10 WHEN 0 THEN {conv_created} + {DAY} WHEN 1 THEN {pending_deleted} END, \
         CASE WHEN i % 10 IN (0, 1) THEN 'manual' END, \
         CASE i % 10 WHEN 0 THEN {conv_created} + {d31} WHEN 1 THEN {pending_deleted} + {d30} WHEN 2 THEN {api_created} + {d30} END, \
         CASE i % 10 WHEN 0 THEN 'R1' WHEN 1 THEN 'R1' WHEN 2 THEN 'R5' END, \
         0, NULL, NULL, 0, NULL, \
         CASE WHEN i % 10 = 0 THEN {conv_created} + {d31} + {MIN} END{from}",
        d30 = 30 * DAY,
        d31 = 31 * DAY,
    )
}

/// Accounts `a{j}` for j in lo..hi (org `o{j/100}`) and their orgs.
fn bulk_accounts(b: Backend, lo: u64, hi: u64, now0: i64) -> String {
    let t = now0 - 100 * DAY;
    match b {
        Backend::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {hi}) \
             INSERT INTO accounts (id, org, state, created_at, deletion_requested_at, purge_after, purged_at) \
             SELECT printf('a%08d', i), printf('o%06d', i / 100), 'active', {t}, NULL, NULL, NULL FROM s; \
             WITH RECURSIVE s(i) AS (SELECT {olo} UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {ohi}) \
             INSERT INTO orgs (id, plan, zdr, zdr_reason, zdr_by, zdr_at, created_at, updated_at) \
             SELECT printf('o%06d', i), 'scale', 'off', NULL, NULL, NULL, {t}, {t} FROM s;",
            olo = lo / 100,
            ohi = hi.div_ceil(100),
        ),
        Backend::Pg => format!(
            "INSERT INTO accounts (id, org, state, created_at, deletion_requested_at, purge_after, purged_at) \
             SELECT 'a' || lpad(i::text, 8, '0'), 'o' || lpad((i / 100)::text, 6, '0'), 'active', {t}, NULL, NULL, NULL \
             FROM generate_series({lo}::bigint, {hi}::bigint - 1) AS g(i); \
             INSERT INTO orgs (id, plan, zdr, zdr_reason, zdr_by, zdr_at, created_at, updated_at) \
             SELECT 'o' || lpad(i::text, 6, '0'), 'scale', 'off', NULL, NULL, NULL, {t}, {t} \
             FROM generate_series({olo}::bigint, {ohi}::bigint - 1) AS g(i);",
            olo = lo / 100,
            ohi = hi.div_ceil(100),
        ),
    }
}

/// Purge time of due round `r`: round r becomes due at `now0 - 10d + r h`.
fn round_due(now0: i64, r: usize) -> i64 {
    now0 - 10 * DAY + r as i64 * HOUR
}

/// Events creating and deleting the `due` conversations of round `r` (`d{r}_%08d`, accounts
/// `uc{r}_` per 10), deleted 30 days before `round_due`.
fn due_events(now0: i64, r: usize, due: usize) -> String {
    let mut s = String::new();
    let deleted = Timestamp::from_millis(round_due(now0, r) - 30 * DAY);
    let created = Timestamp::from_millis(deleted.millis() - DAY);
    if r == 0 {
        s.push_str(&format!(
            "{{\"type\":\"org.upsert\",\"org\":\"od\",\"plan\":\"scale\",\"at\":\"{created}\"}}\n"
        ));
    }
    for a in 0..due.div_ceil(10) {
        s.push_str(&format!(
            "{{\"type\":\"account.created\",\"account\":\"ud{r}_{a:06}\",\"org\":\"od\",\"at\":\"{created}\"}}\n"
        ));
    }
    for i in 0..due {
        s.push_str(&format!(
            "{{\"type\":\"resource.created\",\"id\":\"d{r}_{i:08}\",\"kind\":\"conversation\",\"account\":\"ud{r}_{:06}\",\"at\":\"{created}\"}}\n",
            i / 10
        ));
        s.push_str(&format!(
            "{{\"type\":\"resource.deleted\",\"id\":\"d{r}_{i:08}\",\"at\":\"{deleted}\"}}\n"
        ));
    }
    s
}

/// The same background rows as `bulk_resources`/`bulk_accounts`, as ingest events (no
/// tombstones: those only a sweep writes).
fn background_events(size: u64, now0: i64) -> String {
    let mut s = String::new();
    let t = Timestamp::from_millis(now0 - 100 * DAY);
    let accounts = size.div_ceil(10);
    for o in 0..accounts.div_ceil(100) {
        s.push_str(&format!(
            "{{\"type\":\"org.upsert\",\"org\":\"o{o:06}\",\"plan\":\"scale\",\"at\":\"{t}\"}}\n"
        ));
    }
    for a in 0..accounts {
        s.push_str(&format!(
            "{{\"type\":\"account.created\",\"account\":\"a{a:08}\",\"org\":\"o{:06}\",\"at\":\"{t}\"}}\n",
            a / 100
        ));
    }
    for i in 0..size as i64 {
        let acct = format!("a{:08}", i / 10);
        let conv_created = Timestamp::from_millis(now0 - 90 * DAY + i);
        match i % 10 {
            0 => {}
            2 => s.push_str(&format!(
                "{{\"type\":\"resource.created\",\"id\":\"r{i:09}\",\"kind\":\"api_log\",\"account\":\"{acct}\",\"attrs\":{{\"endpoint\":\"/v1/chat/completions\"}},\"at\":\"{}\"}}\n",
                Timestamp::from_millis(now0 - 20 * DAY + (i % 1_000_000_000))
            )),
            1 => {
                s.push_str(&format!(
                    "{{\"type\":\"resource.created\",\"id\":\"r{i:09}\",\"kind\":\"conversation\",\"account\":\"{acct}\",\"at\":\"{conv_created}\"}}\n"
                ));
                s.push_str(&format!(
                    "{{\"type\":\"resource.deleted\",\"id\":\"r{i:09}\",\"at\":\"{}\"}}\n",
                    Timestamp::from_millis(now0 - HOUR - (i % 1000))
                ));
            }
            _ => s.push_str(&format!(
                "{{\"type\":\"resource.created\",\"id\":\"r{i:09}\",\"kind\":\"conversation\",\"account\":\"{acct}\",\"at\":\"{conv_created}\"}}\n"
            )),
        }
    }
    s
}

/// A direct connection to a ledger, for bulk setup and plans.
enum LedgerConn {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

async fn ledger_conn(url: &str) -> LedgerConn {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        c.execute("SET synchronous_commit = off").await.unwrap();
        LedgerConn::Pg(c)
    } else {
        LedgerConn::Sqlite(
            SqliteConnectOptions::from_str(url)
                .unwrap()
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Off)
                .busy_timeout(Duration::from_secs(30))
                .pragma("cache_size", "-262144")
                .connect()
                .await
                .unwrap(),
        )
    }
}

impl LedgerConn {
    async fn exec(&mut self, sql: &str) {
        match self {
            LedgerConn::Sqlite(c) => {
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut *c)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
            LedgerConn::Pg(c) => {
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut *c)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            }
        }
    }

    async fn lines(&mut self, sql: &str) -> Vec<String> {
        match self {
            LedgerConn::Sqlite(c) => sqlx::query(AssertSqlSafe(sql.to_string()))
                .fetch_all(&mut *c)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .ok()
                                .flatten()
                                .or_else(|| {
                                    r.try_get::<Option<i64>, _>(i)
                                        .ok()
                                        .flatten()
                                        .map(|v| v.to_string())
                                })
                                .unwrap_or_else(|| "NULL".into())
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .collect(),
            LedgerConn::Pg(c) => sqlx::query(AssertSqlSafe(sql.to_string()))
                .fetch_all(&mut *c)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .ok()
                                .flatten()
                                .or_else(|| {
                                    r.try_get::<Option<i64>, _>(i)
                                        .ok()
                                        .flatten()
                                        .map(|v| v.to_string())
                                })
                                .unwrap_or_else(|| "NULL".into())
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .collect(),
        }
    }
}

/// Fills a prepared ledger with `size` background resources, in chunks.
async fn bulk_fill(url: &str, b: Backend, size: u64, now0: i64) {
    let mut c = ledger_conn(url).await;
    let chunk = 1_000_000u64;
    let accounts = size.div_ceil(10);
    let mut lo = 0;
    while lo < accounts {
        let hi = (lo + chunk).min(accounts);
        c.exec(&format!(
            "BEGIN; {} COMMIT;",
            bulk_accounts(b, lo, hi, now0)
        ))
        .await;
        lo = hi;
    }
    let mut lo = 0;
    while lo < size {
        let hi = (lo + chunk).min(size);
        c.exec(&format!(
            "BEGIN; {}; COMMIT;",
            bulk_resources(b, lo, hi, now0)
        ))
        .await;
        lo = hi;
        if size >= 1_000_000 {
            log(format!("  {} tracked rows inserted", hi));
        }
    }
    if b == Backend::Pg {
        // What autovacuum would have done long before a ledger reached this size.
        for t in ["resources", "accounts", "orgs"] {
            c.exec(&format!("VACUUM ANALYZE {t}")).await;
        }
    }
}

const CHECK_RESOURCES: &str = "SELECT id, kind, account, created_at, endpoint, state, deleted_at, cause, purge_after, rule, held, \
     lease_owner, lease_until, attempts, last_error, purged_at FROM resources WHERE state <> 'purged' ORDER BY id";
const CHECK_ACCOUNTS: &str = "SELECT id, org, state, created_at, deletion_requested_at, purge_after, purged_at FROM accounts ORDER BY id";
const CHECK_ORGS: &str = "SELECT id, plan, zdr, zdr_reason, zdr_by, zdr_at, created_at, updated_at FROM orgs ORDER BY id";

/// The bulk shortcut must write what ingest writes: build a small ledger both ways, compare.
async fn self_check(bench: &Bench, b: Backend) {
    let size = 1000;
    let app = bench.new_app(b, "check").await;
    let url_i = bench.ledger_url(b, "check_ingest").await;
    let url_b = bench.ledger_url(b, "check_bulk").await;
    let clock = Clock::manual(Timestamp::from_millis(bench.now0));
    let si = stack(bench.config_text(&url_i, &app, true), clock.clone()).await;
    ingest_text(&si, &background_events(size, bench.now0)).await;
    let _sb = stack(bench.config_text(&url_b, &app, true), clock).await;
    bulk_fill(&url_b, b, size, bench.now0).await;
    let mut ci = ledger_conn(&url_i).await;
    let mut cb = ledger_conn(&url_b).await;
    for q in [CHECK_RESOURCES, CHECK_ACCOUNTS, CHECK_ORGS] {
        let (a, z) = (ci.lines(q).await, cb.lines(q).await);
        assert!(!a.is_empty());
        for (x, y) in a.iter().zip(&z) {
            assert_eq!(x, y, "bulk-built ledger differs from an ingested one");
        }
        assert_eq!(
            a.len(),
            z.len(),
            "bulk-built ledger differs from an ingested one"
        );
    }
    log(format!(
        "{}: bulk ledger rows = ingested rows (self-check ok)",
        b.name()
    ));
}

async fn explain(url: &str, b: Backend, now: i64, batch: usize) -> Vec<String> {
    let mut c = ledger_conn(url).await;
    let due = format!(
        "SELECT r.id FROM resources r WHERE r.state IN ('live', 'deleted') AND r.held = 0 AND r.purge_after IS NOT NULL \
         AND r.purge_after <= {now} ORDER BY r.purge_after LIMIT {batch}"
    );
    match b {
        Backend::Sqlite => c.lines(&format!("EXPLAIN QUERY PLAN {due}")).await,
        Backend::Pg => {
            c.lines(&format!(
                "EXPLAIN UPDATE resources SET state = 'purging' WHERE id IN ({due} FOR UPDATE SKIP LOCKED) RETURNING id"
            ))
            .await
        }
    }
}

fn rss_kb(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|l| l.contains("Maximum resident set size"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse().ok())
}

async fn part_scale(bench: &Bench, b: Backend) {
    let (due, rounds, batch) = (bench.args.due, bench.args.rounds, bench.args.batch);
    let mut reference: Option<(Duration, Duration, Duration, Duration)> = None;
    let largest = *bench.sizes.iter().max().unwrap();
    for (si, &size) in bench.sizes.iter().enumerate() {
        log(format!("{}: ledger with {size} tracked", b.name()));
        let app = bench.new_app(b, "scale").await;
        for r in 0..=rounds {
            app.fill(&format!("d{r}_"), due, bench.args.m).await;
        }
        let url = bench.ledger_url(b, "scale").await;
        let clock = Clock::manual(Timestamp::from_millis(bench.now0));
        let s = stack(bench.config_text(&url, &app, true), clock).await;
        let t = Instant::now();
        bulk_fill(&url, b, size, bench.now0).await;
        for r in 0..=rounds {
            s.clock
                .set(Timestamp::from_millis(round_due(bench.now0, r) - 30 * DAY));
            ingest_text(&s, &due_events(bench.now0, r, due)).await;
        }
        log(format!("  built in {:.1} s", t.elapsed().as_secs_f64()));
        let bytes = ledger_bytes(&url).await;
        bench.table.lock().unwrap().set(
            &format!("2d{si}"),
            &format!("ledger bytes with {sz} tracked (bulk-built: rows and indexes, no audit entries); per tracked", sz = k(size as f64)),
            b,
            format!("{:.2} GB; {} B", bytes as f64 / 1e9, bytes / size.max(1)),
        );
        if size == largest {
            for l in explain(&url, b, round_due(bench.now0, 0), batch).await {
                log(format!("  plan: {l}"));
            }
        }

        let mut find = Vec::new();
        let mut full = Vec::new();
        for r in 0..rounds {
            let now = Timestamp::from_millis(round_due(bench.now0, r) + MIN);
            s.clock.set(now);
            for _ in 0..3 {
                let t = Instant::now();
                let found = s.ledger.peek_due(now, batch as i64).await.unwrap();
                find.push(t.elapsed());
                assert_eq!(found.len(), due.min(batch));
            }
            let t = Instant::now();
            let rep = s
                .sweeper
                .sweep_once(&CancellationToken::new())
                .await
                .unwrap();
            full.push(t.elapsed());
            assert_eq!(rep.purged, due as u64, "{rep:?}");
        }
        let now = s.clock.now();
        let mut find0 = Vec::new();
        let mut claim0 = Vec::new();
        let mut full0 = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            assert!(
                s.ledger
                    .peek_due(now, batch as i64)
                    .await
                    .unwrap()
                    .is_empty()
            );
            find0.push(t.elapsed());
            let t = Instant::now();
            let c = s
                .ledger
                .claim_due(
                    now,
                    batch as i64,
                    "bench-claim",
                    now.plus(retentiond::model::Span::from_millis(MIN)),
                )
                .await
                .unwrap();
            claim0.push(t.elapsed());
            assert!(c.resources.is_empty());
            let t = Instant::now();
            let rep = s
                .sweeper
                .sweep_once(&CancellationToken::new())
                .await
                .unwrap();
            full0.push(t.elapsed());
            assert_eq!(rep.purged, 0);
        }
        let m = (median(find), median(full), median(find0), median(full0));
        let claim0 = median(claim0);
        let reference = *reference.get_or_insert(m);
        let sz = k(size as f64);
        let x = |a: Duration, r: Duration| a.as_secs_f64() / r.as_secs_f64();
        {
            let mut t = bench.table.lock().unwrap();
            t.set(
                &format!("2a{si}"),
                &format!("find due ({due} due, `peek_due`), {sz} tracked"),
                b,
                format!("{} (×{:.2})", ms(m.0), x(m.0, reference.0)),
            );
            t.set(
                &format!("2b{si}"),
                &format!("full sweep of {due} due, {sz} tracked"),
                b,
                format!("{} (×{:.2})", ms(m.1), x(m.1, reference.1)),
            );
            if si > 0 {
                t.target(
                    &format!("2b{si}"),
                    "≤ 2× the first size",
                    yes(x(m.1, reference.1) <= 2.0),
                );
            }
            t.set(
                &format!("2c{si}"),
                &format!("find due / empty claim / full sweep, 0 due, {sz} tracked"),
                b,
                format!(
                    "{} / {} / {} (×{:.2})",
                    ms(m.2),
                    ms(claim0),
                    ms(m.3),
                    x(m.3, reference.3)
                ),
            );
        }

        if size == largest {
            // (4) the real binary over a sweep of the last due round among the largest ledger.
            let cfg = bench.dir.join(format!("memory-{}.toml", bench.next()));
            std::fs::write(&cfg, &s.config_text).unwrap();
            let logfile = bench.dir.join("memory-sweep.log");
            log(format!(
                "{}: peak RSS of `retentiond sweep --once` ({sz} tracked)",
                b.name()
            ));
            let out = std::process::Command::new("/usr/bin/time")
                .arg("-v")
                .arg(env!("CARGO_BIN_EXE_retentiond"))
                .arg("--config")
                .arg(&cfg)
                .args(["--json", "sweep", "--once"])
                .env_remove("RUST_LOG")
                .output()
                .expect("/usr/bin/time");
            let stderr = String::from_utf8_lossy(&out.stderr);
            std::fs::write(&logfile, stderr.as_bytes()).unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "sweep --once failed: {stdout}\n(see {})",
                logfile.display()
            );
            let rep: serde_json::Value = serde_json::from_str(&stdout).expect("sweep --json");
            assert_eq!(rep["purged"].as_u64(), Some(due as u64), "{stdout}");
            let kb = rss_kb(&stderr).expect("Maximum resident set size");
            let mut t = bench.table.lock().unwrap();
            t.set(
                "4",
                &format!("peak RSS, `retentiond sweep --once` ({due} due, {sz} tracked)"),
                b,
                format!("{:.1} MB", kb as f64 / 1024.0),
            );
            t.target("4", "< 100 MB", yes(kb < 100 * 1024));
        }
        drop(s);
        if b == Backend::Sqlite && !bench.args.keep {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!(
                    "{}{suffix}",
                    url.trim_start_matches("sqlite://")
                ));
            }
        }
        bench.drop_schemas().await;
    }
}

// ----- (3) ingest ------------------------------------------------------------------------------

/// An NDJSON file of `lines` events: 100 orgs, 10,000 accounts, then resource.created and
/// resource.deleted 3:1 (a resource is deleted 400 lines after its creation), all with event ids.
fn ingest_file(path: &Path, lines: usize) -> usize {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let accounts = 10_000.min(lines / 10).max(1);
    let orgs = accounts.div_ceil(100);
    let mut n = 0;
    for o in 0..orgs {
        writeln!(
            w,
            "{{\"type\":\"org.upsert\",\"org\":\"io{o}\",\"plan\":\"scale\",\"event_id\":\"e{n}\"}}"
        )
        .unwrap();
        n += 1;
    }
    for a in 0..accounts {
        writeln!(w, "{{\"type\":\"account.created\",\"account\":\"ia{a}\",\"org\":\"io{}\",\"event_id\":\"e{n}\"}}", a / 100).unwrap();
        n += 1;
    }
    let mut created = 0usize;
    let mut deleted = 0usize;
    while n < lines {
        if n % 4 == 3 && deleted + 100 < created {
            writeln!(
                w,
                "{{\"type\":\"resource.deleted\",\"id\":\"ir{deleted}\",\"event_id\":\"e{n}\"}}"
            )
            .unwrap();
            deleted += 1;
        } else {
            let (kind, attrs) = if created.is_multiple_of(5) {
                (
                    "api_log",
                    ",\"attrs\":{\"endpoint\":\"/v1/chat/completions\"}",
                )
            } else {
                ("conversation", "")
            };
            writeln!(w, "{{\"type\":\"resource.created\",\"id\":\"ir{created}\",\"kind\":\"{kind}\",\"account\":\"ia{}\"{attrs},\"event_id\":\"e{n}\"}}", created % accounts).unwrap();
            created += 1;
        }
        n += 1;
    }
    w.flush().unwrap();
    n
}

async fn part_ingest(bench: &Bench, b: Backend, file: &Path, lines: usize) {
    let app = bench.new_app(b, "ingest").await;
    let url = bench.ledger_url(b, "ingest").await;
    let s = stack(
        bench.config_text(&url, &app, true),
        Clock::manual(Timestamp::from_millis(bench.now0)),
    )
    .await;
    log(format!("{}: ingest of {lines} lines", b.name()));
    let policy = retentiond::policy::in_force(&s.ledger)
        .await
        .unwrap()
        .unwrap();
    let ctx = IngestContext {
        policy: &policy,
        now: s.clock.now(),
        max_clock_skew: s.config.max_clock_skew,
        dedup_window: s.config.dedup_window,
        keep_attrs: &s.config.target_attrs,
    };
    let t = Instant::now();
    let input = BufReader::with_capacity(1 << 20, std::fs::File::open(file).unwrap());
    let rep = ingest_reader(&s.ledger, &ctx, input).await.expect("ingest");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(rep.applied as usize, lines);
    let rate = lines as f64 / secs;
    {
        let mut t = bench.table.lock().unwrap();
        t.set(
            "3",
            &format!(
                "ingest, events/s ({} lines, created:deleted 3:1)",
                k(lines as f64)
            ),
            b,
            format!("{} ({:.1} s)", k(rate), secs),
        );
        if b == Backend::Sqlite {
            t.target("3", "≥ 50k (SQLite)", yes(rate >= 50_000.0));
        }
    }
    drop(s);
    log(format!(
        "{}: copying the rows ingest left, as a floor",
        b.name()
    ));
    let floor = copy_floor(bench, b, &url).await;
    {
        let mut t = bench.table.lock().unwrap();
        t.set(
            "3b",
            "floor: the rows ingest left (orgs, accounts, resources, applied_events, audit) copied by INSERT … SELECT in one transaction into an empty ledger, as events/s; ingest / floor",
            b,
            format!(
                "{} ({:.1} s); {:.2}",
                k(lines as f64 / floor),
                floor,
                floor / secs
            ),
        );
    }
    if b == Backend::Sqlite && !bench.args.keep {
        let _ = std::fs::remove_file(url.trim_start_matches("sqlite://"));
    }
    bench.drop_schemas().await;
}

/// Seconds to copy the ledger tables ingest wrote at `src` into a fresh, migrated ledger of the
/// same backend, with one `INSERT … SELECT` per table in one transaction: what writing those rows
/// and their indexes costs the database with no parsing, no binds, no logic. Rows go in the order
/// ingest wrote them (resources and applied events by rowid on SQLite, audit by `seq`).
async fn copy_floor(bench: &Bench, b: Backend, src: &str) -> f64 {
    let dst = bench.ledger_url(b, "floor").await;
    Ledger::open(
        &SecretUrl::new(dst.as_str()),
        &OpenOptions {
            create: true,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap()
    .migrate()
    .await
    .unwrap();
    let copies = |from: &str, rowid: bool| {
        let order = |col: &str| {
            if rowid {
                format!(" ORDER BY {col}")
            } else {
                String::new()
            }
        };
        vec![
            format!("INSERT INTO orgs SELECT * FROM {from}orgs"),
            format!("INSERT INTO accounts SELECT * FROM {from}accounts"),
            format!(
                "INSERT INTO resources SELECT * FROM {from}resources{}",
                order("rowid")
            ),
            format!(
                "INSERT INTO applied_events SELECT * FROM {from}applied_events{}",
                order("rowid")
            ),
            format!("INSERT INTO audit SELECT * FROM {from}audit ORDER BY seq"),
        ]
    };
    match b {
        Backend::Sqlite => {
            let mut c = SqliteConnectOptions::from_str(&dst)
                .unwrap()
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .connect()
                .await
                .unwrap();
            let src_path = src.trim_start_matches("sqlite://");
            c.execute(AssertSqlSafe(format!(
                "ATTACH DATABASE '{src_path}' AS src"
            )))
            .await
            .unwrap();
            let started = Instant::now();
            c.execute("BEGIN IMMEDIATE").await.unwrap();
            for sql in copies("src.", true) {
                c.execute(AssertSqlSafe(sql)).await.unwrap();
            }
            c.execute("COMMIT").await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            drop(c);
            let _ = std::fs::remove_file(dst.trim_start_matches("sqlite://"));
            secs
        }
        Backend::Pg => {
            let schema = |u: &str| u.rsplit("search_path]=").next().unwrap().to_string();
            let mut c = sqlx::PgConnection::connect(&dst).await.unwrap();
            let started = Instant::now();
            let mut tx = c.begin().await.unwrap();
            for sql in copies(&format!("{}.", schema(src)), false) {
                tx.execute(AssertSqlSafe(sql)).await.unwrap();
            }
            tx.commit().await.unwrap();
            started.elapsed().as_secs_f64()
        }
    }
}

// ----- (7) object store ---------------------------------------------------------------------

/// Writes `keys` into `bucket`, 16 requests at a time; returns (key, version id) pairs.
async fn put_keys(m: &moto::Moto, bucket: &str, keys: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(16) {
        let puts = chunk.iter().map(|k| m.put(bucket, k, "object body"));
        let ids = futures_util::future::join_all(puts).await;
        out.extend(chunk.iter().cloned().zip(ids));
    }
    out
}

async fn part_objects(bench: &Bench) {
    let n = bench.object_keys;
    log(format!(
        "(7) object store: starting moto, writing 2 × {n} objects"
    ));
    // The target's requests are counted and timed in its metrics: the breakdown of (b).
    let metrics = retentiond::metrics::install();
    let m = moto::Moto::start().await;
    m.create_bucket("raw", true).await;
    m.create_bucket("tgt", true).await;
    let keys: Vec<String> = (0..n).map(|i| format!("u/a1/k{i:06}")).collect();
    let raw_ids = put_keys(&m, "raw", &keys).await;
    put_keys(&m, "tgt", &keys).await;

    let ledger = format!(
        "sqlite://{}",
        bench
            .dir
            .join(format!("objects-{}.db", bench.next()))
            .display()
    );
    let target = m.target_toml(
        "blobs",
        &bench.dir,
        "s3://tgt/u",
        "key = \"{account}/{id}\"\n",
    );
    let config = format!(
        "[database]\nurl = \"{ledger}\"\n[scheduler]\nsweep = \"0 0 * * * *\"\nbatch_size = {batch}\nlease = \"10m\"\n\
         [accounts]\ngrace_after_delete = \"30d\"\n[kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"blobs\"]\n\
         [safety]\nmax_newly_due = 1000000000\n{target}",
        batch = bench.args.batch,
    );
    let s = stack(config, Clock::manual(Timestamp::from_millis(bench.now0))).await;
    let mut events = String::from(
        "{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"free\"}\n{\"type\":\"account.created\",\"account\":\"a1\",\"org\":\"o1\"}\n",
    );
    let half = n / 2;
    for (i, k) in keys.iter().enumerate() {
        let id = k.rsplit('/').next().unwrap();
        events.push_str(&format!(
            "{{\"type\":\"resource.created\",\"id\":\"{id}\",\"kind\":\"library\",\"account\":\"a1\"}}\n"
        ));
        // The second half is deleted later, for the second turn.
        if i < half {
            events.push_str(&format!(
                "{{\"type\":\"resource.deleted\",\"id\":\"{id}\"}}\n"
            ));
        }
    }
    ingest_text(&s, &events).await;

    let mut raw_secs = 0.0;
    let mut tgt_secs = 0.0;
    let mut purged = 0;
    for turn in 0..2 {
        let range = if turn == 0 { 0..half } else { half..n };
        if turn == 1 {
            let mut ev = String::new();
            for k in &keys[range.clone()] {
                let id = k.rsplit('/').next().unwrap();
                ev.push_str(&format!(
                    "{{\"type\":\"resource.deleted\",\"id\":\"{id}\"}}\n"
                ));
            }
            ingest_text(&s, &ev).await;
        }
        let t = Instant::now();
        m.raw_delete("raw", &raw_ids[range.clone()]).await;
        raw_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        loop {
            let r = s
                .sweeper
                .sweep_once(&CancellationToken::new())
                .await
                .expect("sweep");
            purged += r.purged;
            assert_eq!(r.failed, 0, "object-store purge failures: {r:?}");
            if r.purged == 0 {
                break;
            }
        }
        tgt_secs += t.elapsed().as_secs_f64();
    }
    assert_eq!(purged as usize, n, "every key purged");
    assert!(
        m.versions("tgt", "u/").await.is_empty(),
        "nothing left in the target's bucket"
    );
    assert!(
        m.versions("raw", "u/").await.is_empty(),
        "nothing left in the raw bucket"
    );
    let raw = n as f64 / raw_secs;
    let tgt = n as f64 / tgt_secs;
    let ratio = tgt / raw;
    let text = retentiond::metrics::render(&metrics);
    let metric = |name: &str, op: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("op=\"{op}\""))
                    && l.contains("target=\"blobs\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = format!("{}_count", retentiond::metrics::TARGET_REQUEST_DURATION);
    let sum = format!("{}_sum", retentiond::metrics::TARGET_REQUEST_DURATION);
    let (lists, list_secs) = (metric(&count, "list"), metric(&sum, "list"));
    let (deletes, delete_secs) = (metric(&count, "delete"), metric(&sum, "delete"));
    log(format!(
        "(7) breakdown of (b): {lists} listings {list_secs:.2} s, {deletes} DeleteObjects {delete_secs:.2} s, rest {:.2} s",
        tgt_secs - list_secs - delete_secs
    ));
    let mut t = bench.table.lock().unwrap();
    t.set(
        "7d",
        "(b)'s time: S3 listings (ListObjectVersions, before and after the deletes); DeleteObjects; the rest (ledger, sweep)",
        Backend::Sqlite,
        format!(
            "{lists:.0} listings {list_secs:.2} s ({:.0} ms each); {deletes:.0} DeleteObjects {delete_secs:.2} s; rest {:.2} s",
            if lists > 0.0 { list_secs * 1000.0 / lists } else { 0.0 },
            tgt_secs - list_secs - delete_secs
        ),
    );
    t.set(
        "7a",
        &format!("(a) raw DeleteObjects loop, (key, version) pairs known: items/s ({n} keys, 1,000 a request, moto)"),
        Backend::Sqlite,
        format!("{} ({:.2} s)", k(raw), raw_secs),
    );
    t.set(
        "7b",
        "(b) sweeps through the object_store target, versions = \"all\" (list, delete, list again): items/s",
        Backend::Sqlite,
        format!("{} ({:.2} s)", k(tgt), tgt_secs),
    );
    t.set(
        "7c",
        "(b)/(a), object store",
        Backend::Sqlite,
        format!("{ratio:.2}"),
    );
    t.target("7c", "≥ 0.70", yes(ratio >= 0.7));
}

// ----- (8) http target -------------------------------------------------------------------------

/// The bench's document service: `DELETE /v1/documents/{id}` answers 204 for a stored document
/// (and forgets it), 404 otherwise.
async fn doc_service(docs: Arc<Mutex<std::collections::HashSet<String>>>) -> u16 {
    let app = axum::Router::new().route(
        "/v1/documents/{id}",
        axum::routing::delete(
            move |axum::extract::Path(id): axum::extract::Path<String>| {
                let docs = docs.clone();
                async move {
                    if docs.lock().unwrap().remove(&id) {
                        axum::http::StatusCode::NO_CONTENT
                    } else {
                        axum::http::StatusCode::NOT_FOUND
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The raw loop: a DELETE per id, `concurrency` in flight, one reqwest client; every answer
/// must be 204.
async fn raw_deletes(client: &reqwest::Client, port: u16, ids: &[String], concurrency: usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let req = client.delete(format!("http://127.0.0.1:{port}/v1/documents/{id}"));
        set.spawn(async move {
            let status = req.send().await.expect("raw DELETE").status();
            drop(permit);
            assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

async fn part_http(bench: &Bench) {
    let n = bench.object_keys;
    let concurrency = 8;
    log(format!(
        "(8) http target: {n} documents, {concurrency} requests in flight"
    ));
    let docs = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let port = doc_service(docs.clone()).await;
    let raw_ids: Vec<String> = (0..n).map(|i| format!("raw{i:06}")).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("d{i:06}")).collect();
    docs.lock()
        .unwrap()
        .extend(raw_ids.iter().chain(&ids).cloned());
    let ledger = format!(
        "sqlite://{}",
        bench
            .dir
            .join(format!("http-{}.db", bench.next()))
            .display()
    );
    let config = format!(
        "[database]\nurl = \"{ledger}\"\n[scheduler]\nsweep = \"0 0 * * * *\"\nbatch_size = {batch}\nlease = \"10m\"\n\
         [accounts]\ngrace_after_delete = \"30d\"\n[kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"vectors\"]\n\
         [safety]\nmax_newly_due = 1000000000\n\
         [targets.vectors]\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/v1/documents/{{id}}\"\nconcurrency = {concurrency}\n",
        batch = bench.args.batch,
    );
    let s = stack(config, Clock::manual(Timestamp::from_millis(bench.now0))).await;
    let mut events = String::from(
        "{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"free\"}\n{\"type\":\"account.created\",\"account\":\"a1\",\"org\":\"o1\"}\n",
    );
    for id in &ids {
        events.push_str(&format!(
            "{{\"type\":\"resource.created\",\"id\":\"{id}\",\"kind\":\"library\",\"account\":\"a1\"}}\n"
        ));
    }
    ingest_text(&s, &events).await;
    retentiond::targets::install_tls_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let half = n / 2;
    let (mut raw_secs, mut tgt_secs, mut purged) = (0.0, 0.0, 0);
    for turn in 0..2 {
        let range = if turn == 0 { 0..half } else { half..n };
        let mut ev = String::new();
        for id in &ids[range.clone()] {
            ev.push_str(&format!(
                "{{\"type\":\"resource.deleted\",\"id\":\"{id}\"}}\n"
            ));
        }
        ingest_text(&s, &ev).await;
        let t = Instant::now();
        raw_deletes(&client, port, &raw_ids[range], concurrency).await;
        raw_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        loop {
            let r = s
                .sweeper
                .sweep_once(&CancellationToken::new())
                .await
                .expect("sweep");
            purged += r.purged;
            assert_eq!(r.failed, 0, "http purge failures: {r:?}");
            if r.purged == 0 {
                break;
            }
        }
        tgt_secs += t.elapsed().as_secs_f64();
    }
    assert_eq!(purged as usize, n, "every document purged");
    assert!(docs.lock().unwrap().is_empty(), "every document deleted");
    let raw = n as f64 / raw_secs;
    let tgt = n as f64 / tgt_secs;
    let ratio = tgt / raw;
    let mut t = bench.table.lock().unwrap();
    t.set(
        "8a",
        &format!("(a) raw DELETE loop, {concurrency} in flight: items/s ({n} documents, in-bench service)"),
        Backend::Sqlite,
        format!("{} ({:.2} s)", k(raw), raw_secs),
    );
    t.set(
        "8b",
        &format!("(b) sweeps through the http target (DELETE, concurrency {concurrency}, no verify_url): items/s"),
        Backend::Sqlite,
        format!("{} ({:.2} s)", k(tgt), tgt_secs),
    );
    t.set(
        "8c",
        "(b)/(a), http target",
        Backend::Sqlite,
        format!("{ratio:.2}"),
    );
}

// ----- (9) windowed kinds (issue 29) ----------------------------------------------------------

const LOG_TABLE_SQLITE: &str = "CREATE TABLE api_logs (id TEXT PRIMARY KEY, org_id TEXT NOT NULL, \
     account_id TEXT NOT NULL, endpoint TEXT NOT NULL, body TEXT, created_at TEXT NOT NULL); \
     CREATE INDEX api_logs_created ON api_logs (created_at);";

/// The log rows of (9): `n` rows created evenly over `span` ms from `start`, row `i` in the
/// middle of its slot, so that no row sits on a cutoff. Row `i` is `l%010d`, of org `o{i % 100}`
/// and account `a{i % 10000}`, on a chat or a files endpoint by turns.
#[derive(Clone, Copy)]
struct LogRows {
    n: u64,
    start: i64,
    span: i64,
}

impl LogRows {
    fn at(&self, i: u64) -> i64 {
        self.start + (2 * i as i64 + 1) * self.span / (2 * self.n as i64)
    }

    /// The same as `at`, in SQL over the bigint `i` (integer division on both backends).
    fn sql_at(&self, i: &str) -> String {
        format!(
            "({} + (2 * {i} + 1) * {} / {})",
            self.start,
            self.span,
            2 * self.n
        )
    }

    /// How many rows were created before `t`.
    fn before(&self, t: i64) -> u64 {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.at(mid) < t {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        lo
    }
}

/// Fills the SQLite file at `url` with `rows` (`short`: a body of a few bytes, for tables whose
/// size in bytes does not matter to what is measured).
async fn fill_logs_sqlite(url: &str, rows: LogRows, short: bool) {
    SqliteConnectOptions::from_str(url)
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    let mut c = ledger_conn(url).await;
    c.exec(LOG_TABLE_SQLITE).await;
    let body = if short { "" } else { BODY };
    let chunk = 1_000_000;
    let mut lo = 0;
    while lo < rows.n {
        let hi = (lo + chunk).min(rows.n);
        c.exec(&format!(
            "BEGIN; WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {hi}), \
             t(i, ms) AS (SELECT i, {at} FROM s) \
             INSERT INTO api_logs (id, org_id, account_id, endpoint, body, created_at) \
             SELECT printf('l%010d', i), 'o' || (i % 100), 'a' || (i % 10000), \
             CASE i % 2 WHEN 0 THEN '/v1/chat/completions' ELSE '/v1/files' END, 'request ' || i || '{body}', \
             strftime('%Y-%m-%dT%H:%M:%S', ms / 1000, 'unixepoch') || printf('.%03dZ', ms % 1000) FROM t; COMMIT;",
            at = rows.sql_at("i"),
        ))
        .await;
        lo = hi;
        if rows.n >= 2_000_000 {
            log(format!("  {hi} log rows inserted"));
        }
    }
    c.exec("PRAGMA wal_checkpoint(TRUNCATE)").await;
}

/// A fresh SQLite file for a log table (no other table in it).
fn log_db(bench: &Bench, what: &str) -> String {
    format!(
        "sqlite://{}",
        bench
            .dir
            .join(format!("logs-{what}-{}.db", bench.next()))
            .display()
    )
}

fn sqlite_path(url: &str) -> &str {
    url.trim_start_matches("sqlite://")
}

fn remove_sqlite(bench: &Bench, url: &str) {
    if !bench.args.keep {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path(url)));
        }
    }
}

/// A config whose only kind is the windowed `api_log`, in `app`'s `api_logs`. `partitioned`
/// asks for whole partitions to be dropped past the cutoff (W3): refused at config load until
/// it is built, so the bench passes `false`.
fn window_config(ledger: &str, app: &str, batch: usize, partitioned: bool) -> String {
    format!(
        r#"
[database]
url = "{ledger}"

[scheduler]
sweep = "0 0 * * * *"
lease = "10m"

[ingest]
max_clock_skew = "5m"

[accounts]
grace_after_delete = "30d"
targets = ["app_db"]

[zdr]
endpoints = ["/v1/chat/completions"]

[kinds.api_log]
tracking = "window"
max_age = "30d"
zdr = true
targets = ["app_db"]

[targets.app_db]
type = "sql"
url = "{app}"
[targets.app_db.purge]
account = ["DELETE FROM api_logs WHERE account_id = :account"]

[targets.app_db.windows.api_log]
table = "api_logs"
created_at = "created_at"
org = "org_id"
account = "account_id"
endpoint = "endpoint"
id = "id"
batch = {batch}
{partitioned}
"#,
        partitioned = if partitioned {
            "partitioned = true"
        } else {
            ""
        },
    )
}

/// The mapping and the plan (no holds, no org windows, no ZDR org) of (9) at `now`.
fn window_mapping(postgres: bool, batch: usize) -> retentiond::window::WindowMapping {
    retentiond::window::RawWindowMapping {
        table: "api_logs".into(),
        created_at: "created_at".into(),
        time_format: None,
        org: "org_id".into(),
        account: "account_id".into(),
        endpoint: Some("endpoint".into()),
        id: Some("id".into()),
        batch: Some(batch),
        partitioned: false,
    }
    .build(postgres, true)
    .expect("mapping")
}

fn window_plan(now: i64) -> retentiond::window::WindowPlan {
    retentiond::window::plan(
        "api_log",
        &retentiond::window::WindowPolicy {
            max_age: retentiond::model::Span::from_millis(30 * DAY),
            zdr_endpoints: Some(["/v1/chat/completions".to_string()].into()),
        },
        &std::collections::BTreeMap::new(),
        &[],
        &[],
        true,
        Timestamp::from_millis(now),
    )
}

/// The plan of `sql` in the log database at `url`, one line per row.
async fn explain_window(url: &str, sql: &retentiond::window::Sql) -> Vec<String> {
    use retentiond::window::Bind;
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let mut q = sqlx::query(AssertSqlSafe(format!("EXPLAIN {}", sql.text)));
        for b in &sql.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q.fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {}: {e}", sql.text))
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let mut q = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", sql.text)));
        for b in &sql.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q.fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN QUERY PLAN {}: {e}", sql.text))
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    }
}

/// Whether a plan reads the log table through an index only (no full scan of a table).
fn index_search(plan: &[String]) -> bool {
    plan.iter().all(|l| {
        let l = l.trim_start_matches([' ', '-', '>']);
        !(l.starts_with("SCAN api_logs") || l.starts_with("Seq Scan"))
    }) && plan
        .iter()
        .any(|l| l.contains("api_logs_created") || l.contains("created_at"))
}

/// The ledger's size: on SQLite the file and its WAL after a checkpoint, on PostgreSQL
/// `pg_total_relation_size` summed over the tables of its schema.
async fn ledger_bytes(url: &str) -> u64 {
    if url.starts_with("postgres") {
        let schema = url.rsplit("search_path]=").next().unwrap().to_string();
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
        )
        .bind(schema)
        .fetch_one(&mut c)
        .await
        .unwrap();
        n as u64
    } else {
        let mut c = ledger_conn(url).await;
        c.exec("PRAGMA wal_checkpoint(TRUNCATE)").await;
        drop(c);
        let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        size(sqlite_path(url).to_string()) + size(format!("{}-wal", sqlite_path(url)))
    }
}

// ----- (7) several instances on one PostgreSQL ledger ------------------------------------------

/// Counts of the ledger's resources by state, as `(purged, purging)`.
async fn purge_progress(url: &str) -> (i64, i64) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE state = 'purged'), COUNT(*) FILTER (WHERE state = 'purging') FROM resources",
    )
    .fetch_one(&mut c)
    .await
    .unwrap()
}

/// `k` processes of `retentiond sweep --once` on `config`, started together; returns when all
/// exited, with the seconds it took and what each purged.
fn sweep_processes(config: &Path, k: usize) -> (f64, Vec<u64>) {
    let started = Instant::now();
    let children: Vec<_> = (0..k)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_retentiond"))
                .arg("--config")
                .arg(config)
                .args(["--json", "sweep", "--once"])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("retentiond")
        })
        .collect();
    let purged = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "sweep --once failed");
            let rep: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sweep --json");
            rep["purged"].as_u64().expect("purged")
        })
        .collect();
    (started.elapsed().as_secs_f64(), purged)
}

/// A PostgreSQL ledger with the purge set (`bench.n` due conversations, `m` messages each) and
/// its application database; returns the config file a process runs with and the ledger URL.
async fn instances_setup(
    bench: &Bench,
    master: &App,
    what: &str,
    lease: &str,
) -> (PathBuf, String) {
    let app = bench.app_copy(master, what, bench.n).await;
    let pipe = Pipeline::setup(bench, &app, true, 0, false).await;
    let config = pipe
        .s
        .config_text
        .replace("lease = \"10m\"", &format!("lease = \"{lease}\""));
    let path = bench
        .dir
        .join(format!("instances-{what}-{}.toml", bench.next()));
    std::fs::write(&path, config).unwrap();
    let url = pipe.url.clone();
    drop(pipe);
    (path, url)
}

/// (7) Purge throughput of one and of two `retentiond sweep --once` processes on the same
/// backlog (each side its own copy), and two processes of which one is killed mid-run: its
/// leased items wait for the lease, then a new process takes them over; nothing is purged twice.
async fn part_instances(bench: &Bench) {
    let n = bench.n;
    let master = bench.new_app(Backend::Pg, "master").await;
    let mut rates = Vec::new();
    for procs in [1usize, 2] {
        let (config, url) = instances_setup(bench, &master, &format!("inst{procs}"), "10m").await;
        log(format!("postgres: {procs} instance(s) purging {n} due"));
        let (secs, purged) = sweep_processes(&config, procs);
        assert_eq!(purged.iter().sum::<u64>(), n as u64, "{purged:?}");
        assert_eq!(purge_progress(&url).await, (n as i64, 0));
        let rate = n as f64 / secs;
        rates.push(rate);
        let shares: Vec<String> = purged
            .iter()
            .map(|p| format!("{:.0}%", *p as f64 * 100.0 / n as f64))
            .collect();
        let mut t = bench.table.lock().unwrap();
        t.set(
            &format!("7a{procs}"),
            &format!("{procs} × `retentiond sweep --once` (separate processes, start-up included) on {n} due: items/s (share of each)"),
            Backend::Pg,
            format!("{} ({secs:.2} s; {})", k(rate), shares.join(" / ")),
        );
    }
    {
        let ratio = rates[1] / rates[0];
        let mut t = bench.table.lock().unwrap();
        t.set(
            "7b",
            "2 instances ÷ 1 instance (items/s)",
            Backend::Pg,
            format!("{ratio:.2}"),
        );
        t.target("7b", "≥ 1.25", yes(ratio >= 1.25));
    }

    // One of two killed (SIGKILL) once a third of the backlog is purged.
    let lease_secs = 5;
    let (config, url) = instances_setup(bench, &master, "killed", &format!("{lease_secs}s")).await;
    log(format!(
        "postgres: 2 instances, one killed mid-run ({n} due, lease {lease_secs}s)"
    ));
    let started = Instant::now();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(&config)
            .args(["--json", "sweep", "--once"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("retentiond")
    };
    let mut victim = spawn();
    let mut survivor = spawn();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if purge_progress(&url).await.0 >= n as i64 / 3 {
            break;
        }
    }
    victim.kill().unwrap();
    let killed_at = Instant::now();
    victim.wait().unwrap();
    let (_, orphaned) = purge_progress(&url).await;
    assert!(survivor.wait().unwrap().success());
    // The survivor's sweep is over; what the victim held waits for its lease, then a new
    // process (the next sweep) purges it.
    let mut sweeps = 0;
    loop {
        let (purged, _) = purge_progress(&url).await;
        if purged == n as i64 {
            break;
        }
        assert!(
            sweeps < 100,
            "the killed instance's items were never taken over"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, p) = sweep_processes(&config, 1);
        sweeps += p.len();
    }
    let takeover = killed_at.elapsed().as_secs_f64();
    let total = started.elapsed().as_secs_f64();
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let receipts: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE action = 'resource.purged'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(receipts, n as i64, "one receipt per purge");
    let mut t = bench.table.lock().unwrap();
    t.set(
        "7c",
        &format!("2 instances, one killed (SIGKILL) at a third of {n} due, lease {lease_secs}s: items left leased; kill → all purged; total"),
        Backend::Pg,
        format!("{orphaned} leased; {takeover:.1} s; {total:.1} s ({} items/s), {receipts} receipts, none twice", k(n as f64 / total)),
    );
}

/// The ledger's bytes once rewritten compactly (SQLite `VACUUM`; PostgreSQL `VACUUM FULL` of
/// each of its tables): what its rows and indexes take, without free pages or dead tuples.
async fn compact_ledger_bytes(url: &str) -> u64 {
    if url.starts_with("postgres") {
        let schema = url.rsplit("search_path]=").next().unwrap().to_string();
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
                .bind(&schema)
                .fetch_all(&mut c)
                .await
                .unwrap();
        for t in tables {
            let sql = format!("VACUUM FULL \"{schema}\".\"{t}\"");
            sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"));
        }
        drop(c);
        ledger_bytes(url).await
    } else {
        // The database's own size (its pages, wherever they are: a reader of the daemon's pool
        // may keep a checkpoint from emptying the WAL).
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql("VACUUM").execute(&mut c).await.unwrap();
        let bytes: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        bytes as u64
    }
}

/// (6) What the ledger keeps per item: `n` conversations created and deleted through ingest
/// (each with its two audit entries and event ids), then all purged (each adds a receipt), then
/// 401 days on, their tombstones compacted. Sizes are compact (see [`compact_ledger_bytes`]);
/// the statement deletes nothing, so only the ledger's side runs.
async fn ledger_footprint(bench: &Bench, master: &App) {
    let b = master.backend;
    let app = bench.app_copy(master, "footprint", bench.n).await;
    let mut pipe = Pipeline::setup(bench, &app, true, 0, true).await;
    log(format!("{}: ledger bytes per item", b.name()));
    let n = bench.n as f64;
    let tracked = compact_ledger_bytes(&pipe.url).await;
    for r in 0..bench.args.purge_rounds {
        pipe.round(r).await;
    }
    assert_eq!(pipe.purged, bench.n as u64);
    let purged = compact_ledger_bytes(&pipe.url).await;
    let later = round_sweep_at(bench.now0, bench.args.purge_rounds, bench.args.purge_rounds)
        .plus(retentiond::model::Span::from_millis(401 * DAY));
    pipe.s.clock.set(later);
    let started = Instant::now();
    let mut compacted = 0;
    loop {
        let rep = pipe
            .s
            .sweeper
            .sweep_once(&CancellationToken::new())
            .await
            .expect("sweep");
        if rep.tombstones_compacted == 0 {
            break;
        }
        compacted += rep.tombstones_compacted;
    }
    assert_eq!(compacted, bench.n as u64, "compacted tombstones");
    let compaction_secs = started.elapsed().as_secs_f64();
    let after = compact_ledger_bytes(&pipe.url).await;
    let per = |bytes: u64| format!("{:.0} B ({})", bytes as f64 / n, kb(bytes));
    let mut t = bench.table.lock().unwrap();
    t.set(
        "6a",
        &format!("ledger bytes per tracked item ({} created and deleted by ingest: row, 2 audit entries, event ids; total)", bench.n),
        b,
        per(tracked),
    );
    t.set(
        "6b",
        "ledger bytes per purged item (tombstone, and its receipt in the chain)",
        b,
        per(purged),
    );
    t.set(
        "6c",
        "ledger bytes per purged item once its tombstone is compacted (the chain keeps every entry)",
        b,
        per(after),
    );
    t.set(
        "6d",
        &format!(
            "compaction of {} tombstones by the sweeps (batch_size per transaction): tombstones/s",
            bench.n
        ),
        b,
        format!(
            "{} ({compaction_secs:.2} s)",
            k(bench.n as f64 / compaction_secs)
        ),
    );
}

fn kb(bytes: u64) -> String {
    format!("{:.0} KB", bytes as f64 / 1024.0)
}

/// retentiond's side of (9): a stack on a fresh ledger whose only kind is the windowed
/// `api_log` in `app`'s table; `partitioned` is the W3 switch of the mapping.
async fn window_stack(bench: &Bench, b: Backend, app: &str, partitioned: bool) -> (Stack, String) {
    let ledger = bench.ledger_url(b, "window").await;
    let config = window_config(&ledger, app, bench.args.window_batch, partitioned);
    let s = stack(
        config,
        Clock::manual(Timestamp::from_millis(bench.now0 - 30 * DAY)),
    )
    .await;
    (s, ledger)
}

/// The retentiond pass: one sweep at `now`, which runs the pass over the log table; returns
/// the rows it deleted by statement and the seconds it took.
async fn window_pass(s: &Stack, now: i64) -> (u64, f64) {
    let (pass, secs) = window_pass_report(s, now).await;
    (pass.rows, secs)
}

/// [`window_pass`], with the pass's whole report.
async fn window_pass_report(s: &Stack, now: i64) -> (retentiond::sweep::WindowPassReport, f64) {
    s.clock.set(Timestamp::from_millis(now));
    let started = Instant::now();
    let rep = s
        .sweeper
        .sweep_once(&CancellationToken::new())
        .await
        .expect("sweep");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(rep.window_passes.len(), 1, "{rep:?}");
    let pass = &rep.window_passes[0];
    assert!(pass.error.is_none(), "{pass:?}");
    (pass.clone(), secs)
}

/// What a cron job of batched DELETEs by age does on SQLite: the same connection settings as
/// retentiond's SQL target (`secure_delete`, the WAL truncated at the end of a pass), the same
/// statement shape and batch, each batch its own transaction.
async fn raw_window_sqlite(pool: &sqlx::SqlitePool, cutoff: i64, batch: usize) -> u64 {
    let cutoff = retentiond::window::rfc3339_ms(Timestamp::from_millis(cutoff));
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM api_logs WHERE rowid IN (SELECT rowid FROM api_logs WHERE created_at < ?1 \
             ORDER BY created_at LIMIT ?2)",
        )
        .bind(&cutoff)
        .bind(batch as i64)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected();
        total += n;
        if n < batch as u64 {
            break;
        }
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await
        .unwrap();
    total
}

async fn part_windows(bench: &Bench, b: Backend) {
    match b {
        Backend::Sqlite => {
            windows_sqlite_purge(bench).await;
            windows_sqlite_idle(bench).await;
        }
        Backend::Pg => windows_pg(bench).await,
    }
}

fn set_window_rows(bench: &Bench, b: Backend, rows: &[(&str, &str, String)]) {
    let mut t = bench.table.lock().unwrap();
    for (key, label, value) in rows {
        t.set(key, label, b, value.clone());
    }
}

/// (9) 1 and 2 on SQLite: `window_rows` log rows over 60 days, half of them past the window;
/// the raw baseline and retentiond's pass each delete them from a copy of the same file, in
/// `purge_rounds` rounds (the cutoff moves a round's worth each time), taking turns.
async fn windows_sqlite_purge(bench: &Bench) {
    let (n, batch, rounds) = (
        bench.window_rows,
        bench.args.window_batch,
        bench.args.purge_rounds,
    );
    let now0 = bench.now0;
    let rows = LogRows {
        n,
        start: now0 - 60 * DAY,
        span: 60 * DAY,
    };
    log(format!("SQLite: (9) log table of {n} rows over 60 days"));
    let master = log_db(bench, "master");
    let t = Instant::now();
    fill_logs_sqlite(&master, rows, false).await;
    log(format!("  built in {:.1} s", t.elapsed().as_secs_f64()));
    let raw_url = log_db(bench, "raw");
    let pipe_url = log_db(bench, "pipe");
    std::fs::copy(sqlite_path(&master), sqlite_path(&raw_url)).unwrap();
    std::fs::copy(sqlite_path(&master), sqlite_path(&pipe_url)).unwrap();
    remove_sqlite(bench, &master);

    let (s, ledger) = window_stack(bench, Backend::Sqlite, &pipe_url, false).await;
    let bytes0 = ledger_bytes(&ledger).await;
    log(format!(
        "SQLite: raw batched DELETE and retentiond's windowed pass, {rounds} rounds each, alternating"
    ));
    // Opened inside the first round's timing, as the target connects inside its first pass.
    let started = Instant::now();
    let raw = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::from_str(&raw_url)
                .unwrap()
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(5))
                .pragma("secure_delete", "ON"),
        )
        .await
        .unwrap();
    let mut open = started.elapsed().as_secs_f64();
    let mut times = Rounds {
        raw: Vec::new(),
        pipe: Vec::new(),
    };
    let mut prev = rows.start;
    let (mut raw_rows, mut pipe_rows) = (0, 0);
    for r in 0..rounds {
        let cutoff = rows.start + (r as i64 + 1) * 30 * DAY / rounds as i64;
        let expected = rows.before(cutoff) - rows.before(prev);
        prev = cutoff;
        let t = Instant::now();
        let gone = raw_window_sqlite(&raw, cutoff, batch).await;
        times
            .raw
            .push(std::mem::take(&mut open) + t.elapsed().as_secs_f64());
        let (deleted, secs) = window_pass(&s, cutoff + 30 * DAY).await;
        times.pipe.push(secs);
        assert_eq!((gone, deleted), (expected, expected), "round {r}");
        raw_rows += gone;
        pipe_rows += deleted;
    }
    raw.close().await;
    let bytes1 = ledger_bytes(&ledger).await;
    let left = n - rows.before(now0 - 30 * DAY);
    for url in [&raw_url, &pipe_url] {
        let app = App {
            backend: Backend::Sqlite,
            url: url.clone(),
        };
        assert_eq!(
            app.count("SELECT COUNT(*) FROM api_logs").await,
            left as i64
        );
    }
    drop(s);
    let (raw_secs, pipe_secs): (f64, f64) = (times.raw.iter().sum(), times.pipe.iter().sum());
    let ratio = (pipe_rows as f64 / pipe_secs) / (raw_rows as f64 / raw_secs);
    let (lo, hi) = times.spread(raw_rows as i64, pipe_rows as i64);
    let growth = bytes1 as f64 / bytes0 as f64;
    set_window_rows(
        bench,
        Backend::Sqlite,
        &[
            (
                "9a",
                &*format!(
                    "(a) raw batched DELETE by age: rows/s ({} of {} log rows, batch {batch}, {rounds} rounds)",
                    k(raw_rows as f64),
                    k(n as f64)
                ),
                format!("{} ({raw_secs:.2} s)", k(raw_rows as f64 / raw_secs)),
            ),
            (
                "9b",
                "(b) retentiond windowed pass (`tracking = \"window\"`): rows/s",
                format!("{} ({pipe_secs:.2} s)", k(pipe_rows as f64 / pipe_secs)),
            ),
            (
                "9c",
                &*format!("(b)/(a), windowed (lowest–highest of the {rounds} rounds)"),
                format!("{ratio:.2} ({lo:.2}–{hi:.2})"),
            ),
            (
                "9d",
                "ledger bytes after the windowed purge ÷ before",
                format!(
                    "{growth:.3} ({} → {}; {} rows, {rounds} passes)",
                    kb(bytes0),
                    kb(bytes1),
                    k(pipe_rows as f64)
                ),
            ),
        ],
    );
    let mut t = bench.table.lock().unwrap();
    t.target("9c", "≥ 0.90", yes(ratio >= 0.9));
    t.target("9d", "≤ 1.01", yes(growth <= 1.01));
    drop(t);
    remove_sqlite(bench, &raw_url);
    remove_sqlite(bench, &pipe_url);
    remove_sqlite(bench, &ledger);
}

/// Passes with nothing due over a table of young rows, a millisecond apart: the first, and the
/// median of five after it.
async fn idle_passes(s: &Stack, now: i64) -> (Duration, Duration) {
    let mut times = Vec::new();
    for i in 0..6 {
        let (rows, secs) = window_pass(s, now + i).await;
        assert_eq!(rows, 0);
        times.push(Duration::from_secs_f64(secs));
    }
    let first = times.remove(0);
    (first, median(times))
}

fn plan_cell(plan: &[String]) -> String {
    let first = plan.first().map(|l| l.trim()).unwrap_or("");
    let scan = plan
        .iter()
        .map(|l| l.trim())
        .find(|l| l.contains("created_at") && *l != first);
    match scan {
        Some(s) => format!("`{first}` … `{s}`"),
        None => format!("`{first}`"),
    }
}

/// (9) 3 on SQLite: a pass with nothing due over `window_idle_rows` young rows.
async fn windows_sqlite_idle(bench: &Bench) {
    let n = bench.window_idle_rows;
    let now0 = bench.now0;
    let rows = LogRows {
        n,
        start: now0 - 29 * DAY,
        span: 29 * DAY,
    };
    log(format!(
        "SQLite: (9) log table of {n} young rows (short bodies)"
    ));
    let url = log_db(bench, "idle");
    let t = Instant::now();
    fill_logs_sqlite(&url, rows, true).await;
    log(format!("  built in {:.1} s", t.elapsed().as_secs_f64()));
    let (s, ledger) = window_stack(bench, Backend::Sqlite, &url, false).await;
    let (first, med) = idle_passes(&s, now0).await;
    let m = window_mapping(false, bench.args.window_batch);
    let sql = retentiond::window::render(&m, retentiond::window::Dialect::Sqlite).delete_batch(
        &window_plan(now0),
        &retentiond::window::Reason::Age,
        m.batch,
    );
    let plan = explain_window(&url, &sql).await;
    for l in &plan {
        log(format!("  plan: {l}"));
    }
    drop(s);
    set_window_rows(
        bench,
        Backend::Sqlite,
        &[
            (
                "9e",
                "pass with nothing due over a large table: median of 5 (the first pass)",
                format!("{} ({}; {} rows)", ms(med), ms(first), k(n as f64)),
            ),
            (
                "9f",
                "plan of the pass's DELETE (`render(…).delete_batch`): first line … the line reading `created_at`",
                plan_cell(&plan),
            ),
        ],
    );
    bench
        .table
        .lock()
        .unwrap()
        .target("9f", "index search, not a scan", yes(index_search(&plan)));
    remove_sqlite(bench, &url);
    remove_sqlite(bench, &ledger);
}

/// The day partitions of (9) on PostgreSQL: `api_logs_dNN` holds [now0 - (40 - NN) d,
/// now0 - (39 - NN) d), NN = 0..=40 (the last one is tomorrow's, empty).
const PG_DAYS: i64 = 40;

fn pg_part(k: i64) -> String {
    format!("api_logs_d{k:02}")
}

/// A fresh schema with the partitioned log table of (9), filled with `rows`.
async fn pg_logs(bench: &Bench, what: &str, rows: LogRows) -> App {
    let url = bench.pg_schema(what).await;
    let app = App {
        backend: Backend::Pg,
        url,
    };
    let day0 = bench.now0 - PG_DAYS * DAY;
    let mut ddl = String::from(
        "CREATE TABLE api_logs (id TEXT NOT NULL, org_id TEXT NOT NULL, account_id TEXT NOT NULL, \
         endpoint TEXT NOT NULL, body TEXT, created_at TIMESTAMPTZ NOT NULL) PARTITION BY RANGE (created_at); \
         CREATE INDEX api_logs_created ON api_logs (created_at);",
    );
    for k in 0..=PG_DAYS {
        let from = retentiond::window::rfc3339_ms(Timestamp::from_millis(day0 + k * DAY));
        let to = retentiond::window::rfc3339_ms(Timestamp::from_millis(day0 + (k + 1) * DAY));
        ddl.push_str(&format!(
            " CREATE TABLE {} PARTITION OF api_logs FOR VALUES FROM ('{from}') TO ('{to}');",
            pg_part(k)
        ));
    }
    app.exec(&ddl).await;
    app.exec(&format!(
        "SET synchronous_commit = off; \
         INSERT INTO api_logs (id, org_id, account_id, endpoint, body, created_at) \
         SELECT 'l' || lpad(i::text, 10, '0'), 'o' || (i % 100), 'a' || (i % 10000), \
         CASE WHEN i % 2 = 0 THEN '/v1/chat/completions' ELSE '/v1/files' END, 'request ' || i || '{BODY}', \
         TIMESTAMPTZ 'epoch' + {at} * INTERVAL '1 millisecond' \
         FROM generate_series(0::bigint, {last}::bigint) AS g(i); \
         ANALYZE api_logs;",
        at = rows.sql_at("i"),
        last = rows.n - 1,
    ))
    .await;
    app
}

/// retentiond's side of (9) 4: a fresh ledger over the partitioned table at `app`, `hold`
/// placed, one pass at `now`; returns the stack, the rows the pass deleted, its seconds and the
/// ledger's bytes before and after it. `partitioned` is the mapping's W3 switch.
async fn pg_window_pass(
    bench: &Bench,
    app: &str,
    partitioned: bool,
    hold: HoldScope,
    now: i64,
) -> (Stack, retentiond::sweep::WindowPassReport, f64, u64, u64) {
    let (s, ledger) = window_stack(bench, Backend::Pg, app, partitioned).await;
    if let Some(org) = &hold.org {
        ingest_text(
            &s,
            &format!("{{\"type\":\"org.upsert\",\"org\":\"{org}\",\"plan\":\"scale\"}}\n"),
        )
        .await;
    }
    place_hold(
        &s.ledger,
        PlaceHold {
            case: "BENCH-W".into(),
            by: "bench".into(),
            reason: None,
            scope: hold,
        },
        s.clock.now(),
    )
    .await
    .unwrap();
    let bytes0 = ledger_bytes(&ledger).await;
    let (pass, secs) = window_pass_report(&s, now).await;
    let bytes1 = ledger_bytes(&ledger).await;
    (s, pass, secs, bytes0, bytes1)
}

/// (9) 2, 3 and 4 on PostgreSQL: a table partitioned by day over 40 days, 10 days of it past
/// the window, a hold keeping one org's rows of one of those days. retentiond's pass (batches,
/// partition by partition) against the reference W3 aims at: `DROP TABLE` of the 9 unheld
/// expired partitions and a batched DELETE of the held day's unheld rows, on an identical
/// schema.
async fn windows_pg(bench: &Bench) {
    let (n, batch) = (bench.window_pg_rows, bench.args.window_batch);
    let now0 = bench.now0;
    let rows = LogRows {
        n,
        start: now0 - PG_DAYS * DAY,
        span: PG_DAYS * DAY,
    };
    log(format!(
        "PostgreSQL: (9) log table of {n} rows over {PG_DAYS} day partitions, four times"
    ));
    let t = Instant::now();
    let raw = pg_logs(bench, "logs_raw", rows).await;
    let pipe = pg_logs(bench, "logs_pipe", rows).await;
    let w3 = pg_logs(bench, "logs_w3", rows).await;
    let w3_free = pg_logs(bench, "logs_w3_free", rows).await;
    log(format!("  built in {:.1} s", t.elapsed().as_secs_f64()));
    // The hold: org o7's rows of day 5 (partition d05), an hour inside each of its edges, so
    // that its widened range stays within the day.
    let held_day = 5;
    let from = now0 - (PG_DAYS - held_day) * DAY + HOUR;
    let to = now0 - (PG_DAYS - held_day - 1) * DAY - HOUR;
    let (wfrom, wto) = (
        retentiond::window::rfc3339_ms(Timestamp::from_millis(from - 1000)),
        retentiond::window::rfc3339_ms(Timestamp::from_millis(to + 1000)),
    );
    let held = raw
        .count(&format!(
            "SELECT COUNT(*) FROM {} WHERE org_id = 'o7' AND created_at >= '{wfrom}' AND created_at <= '{wto}'",
            pg_part(held_day)
        ))
        .await as u64;
    let expired = rows.before(now0 - 30 * DAY);

    log("PostgreSQL: reference (DROP TABLE + batched DELETE of the held day)");
    let started = Instant::now();
    let mut c = sqlx::PgConnection::connect(&raw.url).await.unwrap();
    for day in (0..10).filter(|d| *d != held_day) {
        c.execute(AssertSqlSafe(format!("DROP TABLE {}", pg_part(day))))
            .await
            .unwrap();
    }
    let dropped = started.elapsed().as_secs_f64();
    let part = pg_part(held_day);
    let delete = format!(
        "DELETE FROM {part} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {part} WHERE NOT (org_id = $1 \
         AND created_at >= $2::timestamptz AND created_at <= $3::timestamptz) ORDER BY created_at LIMIT $4))"
    );
    let mut raw_deleted = 0;
    loop {
        let gone = sqlx::query(AssertSqlSafe(delete.clone()))
            .bind("o7")
            .bind(&wfrom)
            .bind(&wto)
            .bind(batch as i64)
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected();
        raw_deleted += gone;
        if gone < batch as u64 {
            break;
        }
    }
    let raw_secs = started.elapsed().as_secs_f64();
    drop(c);

    log("PostgreSQL: retentiond's windowed pass, partition by partition");
    let hold = HoldScope {
        org: Some("o7".into()),
        created_from: Some(Timestamp::from_millis(from)),
        created_to: Some(Timestamp::from_millis(to)),
        ..Default::default()
    };
    let (s, pipe_pass, pipe_secs, bytes0, bytes1) =
        pg_window_pass(bench, &pipe.url, false, hold.clone(), now0).await;
    let deleted = pipe_pass.rows;
    log("PostgreSQL: retentiond's windowed pass with W3 (`partitioned = true`)");
    let (s3, w3_pass, w3_secs, _, _) =
        pg_window_pass(bench, &w3.url, true, hold.clone(), now0).await;
    log("PostgreSQL: W3 with no hold in the table's range (every expired partition dropped)");
    let free_hold = HoldScope {
        created_from: Some(Timestamp::from_millis(now0 - 2 * DAY)),
        created_to: Some(Timestamp::from_millis(now0 - DAY)),
        ..hold
    };
    let (free, free_pass, free_secs, _, _) =
        pg_window_pass(bench, &w3_free.url, true, free_hold, now0).await;
    drop(free);
    assert_eq!(
        (free_pass.partitions, free_pass.rows),
        (10, 0),
        "{free_pass:?}"
    );
    let per_drop = free_secs / 10.0;
    // By statement: the held day's unheld rows; the rest went with the 9 partitions dropped,
    // whose rows the pass reports as the server estimates them.
    assert_eq!(w3_pass.partitions, 9, "{w3_pass:?}");
    let w3_dropped_rows = expired - held - w3_pass.rows;
    let w3_estimate = w3_pass.partition_rows as f64 / w3_dropped_rows as f64;
    assert_eq!(
        w3.count("SELECT COUNT(*) FROM api_logs").await,
        (n - expired + held) as i64
    );
    let (w3_first, w3_med) = idle_passes(&s3, now0 + 1).await;
    drop(s3);
    assert_eq!(deleted, expired - held, "held {held}");
    let left = (n - expired + held) as i64;
    assert_eq!(raw.count("SELECT COUNT(*) FROM api_logs").await, left);
    assert_eq!(pipe.count("SELECT COUNT(*) FROM api_logs").await, left);
    assert_eq!(
        raw_deleted,
        rows.before(now0 - (PG_DAYS - held_day - 1) * DAY)
            - rows.before(now0 - (PG_DAYS - held_day) * DAY)
            - held
    );
    assert_eq!(
        w3_pass.rows, raw_deleted,
        "W3 by statement: the held day's unheld rows"
    );

    // Nothing due: the same table after the pass, 30 young partitions (and tomorrow's).
    let (first, med) = idle_passes(&s, now0 + 1).await;
    let m = window_mapping(true, batch);
    let sql = retentiond::window::render(&m, retentiond::window::Dialect::Postgres)
        .on_table(format!("\"{}\"", pg_part(PG_DAYS - 1)))
        .delete_batch(
            &window_plan(now0),
            &retentiond::window::Reason::Age,
            m.batch,
        );
    let plan = explain_window(&pipe.url, &sql).await;
    for l in &plan {
        log(format!("  plan: {l}"));
    }
    drop(s);
    let growth = bytes1 as f64 / bytes0 as f64;
    set_window_rows(
        bench,
        Backend::Pg,
        &[
            (
                "9d",
                "ledger bytes after the windowed purge ÷ before",
                format!(
                    "{growth:.3} ({} → {}; {} rows, 1 pass)",
                    kb(bytes0),
                    kb(bytes1),
                    k(deleted as f64)
                ),
            ),
            (
                "9e",
                "pass with nothing due over a large table: median of 5 (the first pass)",
                format!(
                    "{} ({}; {} rows, {} partitions, the 10 expired ones emptied by DELETE)",
                    ms(med),
                    ms(first),
                    k(left as f64),
                    PG_DAYS + 1
                ),
            ),
            (
                "9f",
                "plan of the pass's DELETE (`render(…).delete_batch`): first line … the line reading `created_at`",
                plan_cell(&plan),
            ),
            (
                "9g",
                &*format!(
                    "partitioned by day, {} rows over {PG_DAYS} days, 10 days past the window, a hold on one org's rows of one of them: retentiond's pass (batches, partition by partition)",
                    k(n as f64)
                ),
                format!(
                    "{pipe_secs:.2} s ({} rows, {} rows/s)",
                    k(deleted as f64),
                    k(deleted as f64 / pipe_secs)
                ),
            ),
            (
                "9h",
                "reference for W3: `DROP TABLE` of the 9 unheld expired partitions + batched DELETE of the held day's unheld rows",
                format!(
                    "{raw_secs:.2} s (drops {dropped:.2} s; DELETE of {} rows {:.2} s)",
                    k(raw_deleted as f64),
                    raw_secs - dropped
                ),
            ),
            (
                "9i",
                "retentiond's pass ÷ the reference (time): what W3 can gain",
                format!("×{:.1}", pipe_secs / raw_secs),
            ),
            (
                "9j",
                "W3 (`partitioned = true`), same table and hold: retentiond's pass, and its time beyond the reference's DELETE of the held day",
                format!(
                    "{w3_secs:.2} s ({} rows; {:.2} s beyond)",
                    k((w3_pass.rows + w3_dropped_rows) as f64),
                    w3_secs - (raw_secs - dropped)
                ),
            ),
            (
                "9n",
                "W3, the same table with no hold in its range: the pass that drops all 10 expired partitions, and 9 partitions' share of it ÷ the reference's 9 `DROP TABLE`",
                format!(
                    "{free_secs:.2} s; 9 partitions {:.2} s, ×{:.2}",
                    9.0 * per_drop,
                    9.0 * per_drop / dropped
                ),
            ),
            (
                "9o",
                "W3 with the hold, less its 9 drops (9n's share): the held day in batches and the pass's own reads ÷ the reference's DELETE of the held day",
                format!(
                    "×{:.2} ({:.2} s against {:.2} s)",
                    (w3_secs - 9.0 * per_drop) / (raw_secs - dropped),
                    w3_secs - 9.0 * per_drop,
                    raw_secs - dropped
                ),
            ),
            (
                "9m",
                "W3: rows of the partitions dropped, as the pass reports them (the server's estimate) ÷ the rows they held",
                format!(
                    "{w3_estimate:.3} ({} reported, {} held)",
                    k(w3_pass.partition_rows as f64),
                    k(w3_dropped_rows as f64)
                ),
            ),
            (
                "9k",
                "W3 pass ÷ the reference (time)",
                format!("×{:.2}", w3_secs / raw_secs),
            ),
            (
                "9l",
                "W3: pass with nothing due after it: median of 5 (the first pass)",
                format!(
                    "{} ({}; {} rows, {} partitions left)",
                    ms(w3_med),
                    ms(w3_first),
                    k(left as f64),
                    PG_DAYS + 1 - 9
                ),
            ),
        ],
    );
    let mut t = bench.table.lock().unwrap();
    t.target("9d", "≤ 1.01", yes(growth <= 1.01));
    t.target("9f", "index search, not a scan", yes(index_search(&plan)));
    t.target(
        "9n",
        "< 1 s for the 9 untouched days",
        yes(9.0 * per_drop < 1.0),
    );
}

// ----- main -----------------------------------------------------------------------------------

fn want(args: &Args, part: &str) -> bool {
    args.only
        .as_ref()
        .is_none_or(|o| o.iter().any(|p| p == part))
}

/// mimalloc instead of glibc malloc: ingest and purge allocate per row and per event, and glibc's
/// malloc/free took a third of ingest's cycles (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let q = args.quick;
    let scratch = args
        .scratch
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench"));
    let dir = scratch.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let now0 = (chrono::Utc::now().timestamp_millis() / 1000) * 1000;
    let bench = Bench {
        n: args.n.unwrap_or(if q { 2_000 } else { 100_000 }),
        object_keys: args.object_keys.unwrap_or(if q { 2_000 } else { 10_000 }),
        drain: args.drain.unwrap_or(if q { 20_000 } else { 1_000_000 }),
        sizes: args.sizes.clone().unwrap_or(if q {
            vec![1_000, 10_000, 100_000]
        } else {
            vec![10_000, 1_000_000, 10_000_000]
        }),
        ingest_lines: args
            .ingest_lines
            .unwrap_or(if q { 20_000 } else { 1_000_000 }),
        holds: args.holds.unwrap_or(if q { 100 } else { 1_000 }),
        window_rows: args
            .window_rows
            .unwrap_or(if q { 100_000 } else { 2_000_000 }),
        window_idle_rows: args
            .window_idle_rows
            .unwrap_or(if q { 200_000 } else { 10_000_000 }),
        window_pg_rows: args
            .window_pg_rows
            .unwrap_or(if q { 200_000 } else { 10_000_000 }),
        dir: dir.clone(),
        now0,
        schemas: Mutex::new(Vec::new()),
        seq: Default::default(),
        table: Mutex::new(Table::default()),
        args,
    };

    // The daemon logs one line per purge and per deletion: so does the bench, to a file.
    let logf = std::fs::File::create(dir.join("retentiond.log")).unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
        .with_writer(Mutex::new(logf))
        .with_target(false)
        .with_ansi(false)
        .compact()
        .try_init();

    let started = Instant::now();
    let mut backends = vec![Backend::Sqlite];
    if !bench.args.no_pg {
        backends.push(Backend::Pg);
    }
    let bench = Arc::new(bench);
    let result = tokio::spawn({
        let bench = bench.clone();
        async move {
            let ingest_path = bench.dir.join("events.ndjson");
            if want(&bench.args, "objects") {
                part_objects(&bench).await;
            }
            if want(&bench.args, "http") {
                part_http(&bench).await;
            }
            if !bench.args.no_pg && want(&bench.args, "instances") {
                part_instances(&bench).await;
                bench.drop_schemas().await;
            }
            for &b in &backends {
                if want(&bench.args, "scale") {
                    self_check(&bench, b).await;
                }
                if want(&bench.args, "purge") || want(&bench.args, "holds") {
                    part_purge(
                        &bench,
                        b,
                        b == Backend::Sqlite && want(&bench.args, "holds"),
                    )
                    .await;
                    bench.drop_schemas().await;
                }
                if want(&bench.args, "windows") {
                    part_windows(&bench, b).await;
                    bench.drop_schemas().await;
                }
                if want(&bench.args, "ingest") {
                    if !ingest_path.exists() {
                        ingest_file(&ingest_path, bench.ingest_lines);
                    }
                    part_ingest(&bench, b, &ingest_path, bench.ingest_lines).await;
                }
                if want(&bench.args, "scale") {
                    part_scale(&bench, b).await;
                }
                if want(&bench.args, "drain") {
                    part_drain(&bench, b).await;
                    bench.drop_schemas().await;
                }
            }
        }
    })
    .await;
    bench.drop_schemas().await;
    if let Err(e) = result {
        log(format!(
            "benchmark failed: {e}; scratch left in {}",
            dir.display()
        ));
        std::process::exit(1);
    }
    let table = bench.table.lock().unwrap().print();
    println!(
        "\nretentiond benchmarks — N={} × M={}, batch {}, sizes {:?}, {} holds, {} ingest lines, log rows {}/{}/{} (batch {}); {} CPUs; {:.0} s\n",
        bench.n,
        bench.args.m,
        bench.args.batch,
        bench.sizes,
        bench.holds,
        bench.ingest_lines,
        bench.window_rows,
        bench.window_idle_rows,
        bench.window_pg_rows,
        bench.args.window_batch,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    println!("{table}");
    if !bench.args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        log(format!("scratch kept in {}", dir.display()));
    }
}
