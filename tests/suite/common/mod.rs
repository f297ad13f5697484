//! Test harness: a real SQLite file or a real PostgreSQL schema for the ledger, a real SQLite
//! application database and upload folder for the targets, and a hand-moved clock.
//!
//! PostgreSQL comes from `RETENTIOND_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets its own schema. Set
//! `RETENTIOND_TEST_PG=off` to skip the PostgreSQL variants explicitly — otherwise an unreachable
//! server fails them: they never skip silently.
#![allow(dead_code)]

mod moto;
mod stores;
#[allow(unused_imports)]
pub use moto::Moto;
#[allow(unused_imports)]
pub use stores::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, FakeGcs};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use retentiond::app::App;
use retentiond::clock::Clock;
use retentiond::config::Config;
use retentiond::ingest::{IngestError, IngestReport};
use retentiond::model::{Span, Timestamp};
use retentiond::rules::SchedulePolicy;
use retentiond::store::{Ledger, OpenOptions};
use retentiond::sweep::{SweepReport, Sweeper};
use retentiond::targets::Targets;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, Row};
use tokio_util::sync::CancellationToken;

pub const APP_SCHEMA: &str = include_str!("../../../config/app-schema.sql");
pub const T0: &str = "2026-11-27T00:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs the same async test body on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($(#[$m:meta])* async fn $name:ident($b:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($b: $crate::common::Backend) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$m])*
            async fn sqlite() {
                body($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$m])*
            async fn postgres() {
                if $crate::common::pg_disabled() {
                    eprintln!("RETENTIOND_TEST_PG=off: PostgreSQL variant skipped on request");
                    return;
                }
                body($crate::common::Backend::Postgres).await
            }
        }
    };
}

pub fn pg_disabled() -> bool {
    std::env::var("RETENTIOND_TEST_PG").is_ok_and(|v| v == "off")
}

pub fn pg_base_url() -> String {
    std::env::var("RETENTIOND_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL schema; returns the URL that selects it.
pub async fn pg_schema() -> String {
    let base = pg_base_url();
    let name = format!("t_{}_{:08x}", std::process::id(), rand_u32());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is unreachable ({e}); set RETENTIOND_TEST_PG=off to skip explicitly"));
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={name}")
}

pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Knobs for the generated config.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub conversation_grace: &'static str,
    pub conversation_account_grace: Option<&'static str>,
    pub file_grace: &'static str,
    pub account_grace: &'static str,
    pub api_log_max_age: &'static str,
    pub batch_size: usize,
    /// `scheduler.batches_per_transaction`.
    pub batches_per_transaction: usize,
    pub max_newly_due: u64,
    pub lease: &'static str,
    pub max_attempts: u32,
    pub retry_backoff: &'static str,
    /// Extra TOML appended as is.
    pub extra: String,
    /// Verify statements for conversations.
    pub verify: bool,
    /// The application database of the `app_db` target, when not the test's SQLite file.
    pub app_db_url: Option<String>,
    /// The sweep cron.
    pub sweep: &'static str,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            conversation_grace: "30d",
            conversation_account_grace: None,
            file_grace: "30d",
            account_grace: "30d",
            api_log_max_age: "30d",
            batch_size: 500,
            batches_per_transaction: 4,
            max_newly_due: 1000,
            lease: "5m",
            max_attempts: 3,
            retry_backoff: "1m",
            extra: String::new(),
            verify: false,
            app_db_url: None,
            sweep: "*/1 * * * * *",
        }
    }
}

/// Files and databases of one test.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub ledger_url: String,
    pub app_db: PathBuf,
    pub uploads: PathBuf,
}

impl Env {
    pub async fn new(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("ledger.db").display()),
            Backend::Postgres => pg_schema().await,
        };
        let app_db = dir.path().join("app.db");
        let uploads = dir.path().join("uploads");
        std::fs::create_dir_all(&uploads).unwrap();
        let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", app_db.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(APP_SCHEMA).execute(&mut conn).await.unwrap();
        Env {
            dir,
            backend,
            ledger_url,
            app_db,
            uploads,
        }
    }

    pub fn config_text(&self, k: &Knobs) -> String {
        let conv_acct = k
            .conversation_account_grace
            .map(|g| format!("grace_after_account_delete = \"{g}\"\n"))
            .unwrap_or_default();
        let verify = if k.verify {
            "[targets.app_db.verify]\nconversation = [\"SELECT COUNT(*) FROM messages WHERE conversation_id = :id\"]\n"
        } else {
            ""
        };
        format!(
            r#"
[database]
url = "{ledger}"

[scheduler]
sweep = "{sweep}"
batch_size = {batch}
batches_per_transaction = {per_tx}
lease = "{lease}"
max_attempts = {attempts}
retry_backoff = "{backoff}"
retry_backoff_max = "1h"

[ingest]
max_clock_skew = "5m"

[accounts]
grace_after_delete = "{acct}"
targets = ["app_db", "uploads"]

[zdr]
endpoints = ["/v1/chat/completions", "/v1/embeddings"]

[kinds.conversation]
grace_after_delete = "{conv}"
{conv_acct}targets = ["app_db"]

[kinds.api_log]
grace_after_delete = "0s"
max_age = "{max_age}"
zdr = true
targets = ["app_db"]

[kinds.file]
grace_after_delete = "{file}"
targets = ["app_db", "uploads"]

[kinds.agent]
grace_after_delete = "30d"
targets = ["app_db"]

[targets.app_db]
type = "sql"
url = "{app}"
[targets.app_db.purge]
conversation = ["DELETE FROM messages WHERE conversation_id = :id", "DELETE FROM conversations WHERE id = :id"]
api_log = ["DELETE FROM api_logs WHERE id = :id"]
file = ["DELETE FROM files WHERE id = :id"]
agent = ["DELETE FROM agents WHERE id = :id"]
account = ["DELETE FROM users WHERE id = :account"]
{verify}
[targets.uploads]
type = "files"
root = "{uploads}"
path = "{{account}}/{{id}}"
account_path = "{{account}}"

[safety]
max_newly_due = {max_newly_due}
{extra}
"#,
            ledger = self.ledger_url,
            batch = k.batch_size,
            per_tx = k.batches_per_transaction,
            lease = k.lease,
            attempts = k.max_attempts,
            backoff = k.retry_backoff,
            acct = k.account_grace,
            conv = k.conversation_grace,
            max_age = k.api_log_max_age,
            file = k.file_grace,
            app = k
                .app_db_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", self.app_db.display())),
            sweep = k.sweep,
            uploads = self.uploads.display(),
            max_newly_due = k.max_newly_due,
            extra = k.extra,
        )
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("retentiond.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    pub async fn app(&self) -> sqlx::SqliteConnection {
        SqliteConnectOptions::from_str(&format!("sqlite://{}", self.app_db.display()))
            .unwrap()
            .busy_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .unwrap()
    }

    /// Runs one statement on the application database.
    pub async fn app_exec(&self, sql: &str) {
        let mut c = self.app().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap();
    }

    pub async fn app_count(&self, sql: &str) -> i64 {
        let mut c = self.app().await;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0)
    }

    /// Inserts a conversation row with `messages` messages.
    pub async fn seed_conversation(&self, id: &str, user: &str, messages: usize) {
        let mut c = self.app().await;
        let mut tx = c.begin().await.unwrap();
        sqlx::query("INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, 't')")
            .bind(id)
            .bind(user)
            .execute(&mut *tx)
            .await
            .unwrap();
        for i in 0..messages {
            sqlx::query("INSERT INTO messages (conversation_id, body) VALUES ($1, $2)")
                .bind(id)
                .bind(format!("message {i} of {id}"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    pub async fn seed_user(&self, id: &str) {
        let mut c = self.app().await;
        sqlx::query("INSERT INTO users (id, name) VALUES ($1, 'n')")
            .bind(id)
            .execute(&mut c)
            .await
            .unwrap();
    }

    pub async fn seed_file(&self, id: &str, user: &str) -> PathBuf {
        let mut c = self.app().await;
        sqlx::query("INSERT INTO files (id, user_id, name) VALUES ($1, $2, 'f')")
            .bind(id)
            .bind(user)
            .execute(&mut c)
            .await
            .unwrap();
        let p = self.uploads.join(user).join(id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"file content").unwrap();
        p
    }

    pub async fn seed_api_log(&self, id: &str, user: &str, endpoint: &str) {
        let mut c = self.app().await;
        sqlx::query("INSERT INTO api_logs (id, user_id, endpoint, request, response) VALUES ($1, $2, $3, 'q', 'a')")
            .bind(id)
            .bind(user)
            .bind(endpoint)
            .execute(&mut c)
            .await
            .unwrap();
    }

    pub fn upload(&self, user: &str, id: &str) -> PathBuf {
        self.uploads.join(user).join(id)
    }
}

/// A ledger, config and clock ready to ingest and sweep in-process.
pub struct H {
    pub env: Env,
    pub config: Arc<Config>,
    pub ledger: Ledger,
    pub policy: SchedulePolicy,
    pub clock: Clock,
    pub sweeper: Arc<Sweeper>,
    /// The application core the CLI and HTTP API use, over this ledger, config and clock.
    pub app: App,
}

impl H {
    pub async fn new(backend: Backend, knobs: Knobs) -> H {
        let env = Env::new(backend).await;
        let text = env.config_text(&knobs);
        H::with_config(env, &text).await
    }

    pub async fn with_config(env: Env, text: &str) -> H {
        let config = Arc::new(Config::parse(text, "test.toml").expect("valid test config"));
        let clock = Clock::manual(Timestamp::parse_rfc3339(T0).unwrap());
        let app = App::open(config.clone(), clock.clone())
            .await
            .expect("open the ledger");
        let policy = app.sync_policy("test").await.expect("sync the policy");
        let ledger = app.ledger().clone();
        let sweeper = Arc::new(Sweeper::new(
            ledger.clone(),
            Arc::new(Targets::from_config(&config).unwrap()),
            config.clone(),
            clock.clone(),
            format!("test-{:08x}", rand_u32()),
        ));
        H {
            env,
            config,
            ledger,
            policy,
            clock,
            sweeper,
            app,
        }
    }

    /// Another sweeper (a second "instance") on the same ledger.
    pub fn other_sweeper(&self, name: &str) -> Sweeper {
        Sweeper::new(
            self.ledger.clone(),
            Arc::new(Targets::from_config(&self.config).unwrap()),
            self.config.clone(),
            self.clock.clone(),
            name.to_string(),
        )
    }

    pub async fn reopen_ledger(&self) -> Ledger {
        Ledger::open(&self.config.database.url, &OpenOptions::default())
            .await
            .unwrap()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn advance(&self, s: &str) {
        self.clock.advance(Span::parse(s).unwrap());
    }

    pub async fn try_ingest(&self, ndjson: &str) -> Result<IngestReport, IngestError> {
        self.app.ingest_reader(ndjson.as_bytes()).await
    }

    pub async fn ingest(&self, ndjson: &str) -> IngestReport {
        match self.try_ingest(ndjson).await {
            Ok(r) => r,
            Err(IngestError::Invalid(e)) => panic!("ingest rejected: {e:?}"),
            Err(e) => panic!("ingest failed: {e}"),
        }
    }

    /// Org `o1`, account `a1` and conversations `c0`… of `messages` messages each, created
    /// and deleted (in the app database and the ledger).
    pub async fn ingest_deleted_conversations(&self, n: usize, messages: usize) {
        let mut text = org_account("o1", "free", "a1");
        for i in 0..n {
            self.env
                .seed_conversation(&format!("c{i}"), "a1", messages)
                .await;
            text.push_str(&created(&format!("c{i}"), "conversation", "a1"));
            text.push_str(&deleted(&format!("c{i}")));
        }
        self.ingest(&text).await;
    }

    pub async fn sweep(&self) -> SweepReport {
        self.sweeper
            .sweep_once(&CancellationToken::new())
            .await
            .expect("sweep")
    }

    pub async fn state(&self, id: &str) -> String {
        resource_state(&self.ledger, id).await
    }

    /// `resource.purged` entries per subject id.
    pub async fn receipts(&self) -> std::collections::BTreeMap<String, usize> {
        purge_receipts(&self.ledger).await
    }

    pub async fn audit_ok(&self) {
        let v = retentiond::checkpoint::verify_ledger(&self.ledger)
            .await
            .unwrap();
        assert!(v.ok, "audit chain broken: {:?}", v.error);
    }
}

/// The standard org/account preamble.
pub fn org_account(org: &str, plan: &str, account: &str) -> String {
    format!(
        "{{\"type\":\"org.upsert\",\"org\":\"{org}\",\"plan\":\"{plan}\"}}\n{{\"type\":\"account.created\",\"account\":\"{account}\",\"org\":\"{org}\"}}\n"
    )
}

pub fn created(id: &str, kind: &str, account: &str) -> String {
    format!(
        "{{\"type\":\"resource.created\",\"id\":\"{id}\",\"kind\":\"{kind}\",\"account\":\"{account}\"}}\n"
    )
}

pub fn created_log(id: &str, account: &str, endpoint: &str) -> String {
    format!(
        "{{\"type\":\"resource.created\",\"id\":\"{id}\",\"kind\":\"api_log\",\"account\":\"{account}\",\"attrs\":{{\"endpoint\":\"{endpoint}\",\"prompt\":\"secret user text\"}}}}\n"
    )
}

pub fn deleted(id: &str) -> String {
    format!("{{\"type\":\"resource.deleted\",\"id\":\"{id}\"}}\n")
}

pub fn restored(id: &str) -> String {
    format!("{{\"type\":\"resource.restored\",\"id\":\"{id}\"}}\n")
}

pub fn account_deleted(account: &str) -> String {
    format!("{{\"type\":\"account.deletion_requested\",\"account\":\"{account}\"}}\n")
}

pub fn account_restored(account: &str) -> String {
    format!("{{\"type\":\"account.restored\",\"account\":\"{account}\"}}\n")
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// A resource's state in the ledger.
pub async fn resource_state(ledger: &Ledger, id: &str) -> String {
    ledger
        .resource(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no resource {id}"))
        .state
        .to_string()
}

/// `resource.purged` entries per subject id.
pub async fn purge_receipts(ledger: &Ledger) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let mut next = 1;
    loop {
        let page = ledger.audit_range(next, i64::MAX, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for e in page {
            if e.action == "resource.purged" {
                let id = e
                    .subject
                    .split_once('/')
                    .map(|(_, i)| i.to_string())
                    .unwrap_or(e.subject);
                *out.entry(id).or_default() += 1;
            }
        }
    }
    out
}
