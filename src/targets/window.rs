//! The SQL target's side of windowed kinds (issue 29): runs the statements `crate::window`
//! renders against the application's table, and checks the mapping against the live table.
//!
//! Invariant: every statement is one `crate::window` rendered, with its values bound; each runs
//! in a transaction of its own, so a pass over a large table never holds a long lock.

use sqlx::{AssertSqlSafe, Row};

use super::sql::{AppDb, SqlTarget};
use crate::model::Timestamp;
use crate::window::{
    self, Bind, BoundValue, Dialect, PartitionRange, Renderer, Sql, TimeFormat, WindowMapping,
};

/// A table a pass deletes from: the mapped table, or one of its leaf partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Quoted, schema-qualified on PostgreSQL.
    pub table: String,
    /// `pg_get_expr(relpartbound)` of a direct partition partitioned by range on `created_at`.
    pub bound: Option<String>,
    /// Its range on `created_at`, when the bound is one that can be read as times.
    pub range: Option<PartitionRange>,
    pub default: bool,
}

/// How many rows a partition about to be dropped holds (W3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRows {
    pub rows: u64,
    /// The planner's estimate (`pg_class.reltuples` scaled to the table's current size, as
    /// the planner scales it), not a count: counting would read every row of the partition.
    pub estimated: bool,
}

/// Where a partition a pass set out to drop is (W3, crash recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionState {
    Attached,
    /// `DETACH … CONCURRENTLY` was cut short: `FINALIZE` finishes it.
    DetachPending,
    /// Detached, not dropped yet.
    Detached,
    Gone,
}

macro_rules! bound {
    ($sql:expr) => {{
        let mut q = sqlx::query(AssertSqlSafe($sql.text.clone()));
        for b in &$sql.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

impl SqlTarget {
    /// The table of windowed `kind` in this database, if it holds one.
    pub fn window(&self, kind: &str) -> Option<&WindowMapping> {
        self.windows.get(kind)
    }

    pub fn dialect(&self) -> Dialect {
        match self.db {
            AppDb::Sqlite(_) => Dialect::Sqlite,
            AppDb::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The statements of windowed `kind`'s table.
    pub fn window_sql(&self, kind: &str) -> Option<Renderer<'_>> {
        self.window(kind).map(|m| window::render(m, self.dialect()))
    }

    /// The tables a pass deletes from, quoted: the mapped table, or on PostgreSQL its leaf
    /// partitions when it is partitioned (a `ctid` names a row only within one table). A table
    /// with inheritance children is refused for the same reason.
    pub async fn window_tables(&self, kind: &str) -> Result<Vec<String>, String> {
        Ok(self
            .window_partitions(kind)
            .await?
            .into_iter()
            .map(|p| p.table)
            .collect())
    }

    /// The tables a pass deletes from (see [`Self::window_tables`]), each with its range on
    /// `created_at` when the table is partitioned `BY RANGE` on that column alone and the
    /// partition is a direct one; a default partition, a sub-partition or another partition
    /// key has no range (it is always visited, never dropped).
    pub async fn window_partitions(&self, kind: &str) -> Result<Vec<Partition>, String> {
        let Some(m) = self.window(kind) else {
            return Ok(Vec::new());
        };
        let own = Partition {
            table: m.table.quote(self.dialect()),
            bound: None,
            range: None,
            default: false,
        };
        let AppDb::Postgres(p) = &self.db else {
            return Ok(vec![own]);
        };
        let inherited: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent \
             WHERE i.inhparent = to_regclass($1) AND c.relkind <> 'p')",
        )
        .bind(m.table.quoted())
        .fetch_one(p)
        .await
        .map_err(|e| self.window_error(&e))?;
        if inherited {
            return Err(format!(
                "target `{}`: {} has inheritance children; map each child table instead (a row's ctid is unique only within one table)",
                self.name, m.table
            ));
        }
        // (quoted name, bound of a direct partition, by range on created_at alone)
        let leaves: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT format('%I.%I', n.nspname, c.relname), \
             CASE WHEN t.parentrelid = to_regclass($1) \
               AND pg_get_partkeydef(to_regclass($1)) = format('RANGE (%s)', quote_ident($2)) \
             THEN pg_get_expr(c.relpartbound, c.oid) END \
             FROM pg_partition_tree(to_regclass($1)) t \
             JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE t.isleaf AND t.level > 0 ORDER BY c.relname",
        )
        .bind(m.table.quoted())
        .bind(m.created_at.as_str())
        .fetch_all(p)
        .await
        .map_err(|e| self.window_error(&e))?;
        if leaves.is_empty() {
            return Ok(vec![own]);
        }
        let parsed: Vec<Option<(BoundValue, BoundValue)>> = leaves
            .iter()
            .map(|(_, b)| b.as_deref().and_then(window::parse_range_bound))
            .collect();
        // Native bounds are read by the server itself, all of them in one round trip; one it
        // cannot read leaves every range unknown (batched, never dropped).
        let mut native = std::collections::BTreeMap::new();
        if m.time_format == TimeFormat::Native {
            let literals: Vec<String> = parsed
                .iter()
                .flatten()
                .flat_map(|(f, t)| [f, t])
                .filter_map(|v| match v {
                    BoundValue::Literal(l) => Some(l.clone()),
                    _ => None,
                })
                .collect();
            let read: Result<Vec<(String, i64, i64)>, sqlx::Error> = sqlx::query_as(
                "SELECT v, floor(EXTRACT(EPOCH FROM v::timestamptz) * 1000)::bigint, \
                 ceil(EXTRACT(EPOCH FROM v::timestamptz) * 1000)::bigint FROM unnest($1::text[]) AS u(v)",
            )
            .bind(&literals)
            .fetch_all(p)
            .await;
            native.extend(
                read.unwrap_or_default()
                    .into_iter()
                    .map(|(v, lo, hi)| (v, (lo, hi))),
            );
        }
        let mut out = Vec::with_capacity(leaves.len());
        for ((table, bound), parsed) in leaves.into_iter().zip(parsed) {
            let range = parsed.and_then(|(from, to)| bound_range(m.time_format, &native, from, to));
            out.push(Partition {
                default: bound.as_deref() == Some("DEFAULT"),
                table,
                bound,
                range,
            });
        }
        Ok(out)
    }

    /// Where a partition that a pass set out to drop is now.
    pub async fn partition_state(&self, kind: &str, table: &str) -> Result<PartitionState, String> {
        Ok(self.partition_facts(kind, table).await?.0)
    }

    /// Where a partition is, and whether the kind's table has a default partition (DETACH
    /// CONCURRENTLY is refused then), in one query.
    async fn partition_facts(
        &self,
        kind: &str,
        table: &str,
    ) -> Result<(PartitionState, bool), String> {
        let (Some(m), AppDb::Postgres(p)) = (self.window(kind), &self.db) else {
            return Ok((PartitionState::Gone, false));
        };
        let (exists, pending, default): (bool, Option<bool>, bool) = sqlx::query_as(
            "SELECT to_regclass($1) IS NOT NULL, \
             (SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhrelid = to_regclass($1) \
              AND i.inhparent = to_regclass($2)), \
             COALESCE((SELECT partdefid <> 0 FROM pg_partitioned_table \
                       WHERE partrelid = to_regclass($2)), false)",
        )
        .bind(table)
        .bind(m.table.quoted())
        .fetch_one(p)
        .await
        .map_err(|e| self.window_error(&e))?;
        let state = match (exists, pending) {
            (false, _) => PartitionState::Gone,
            (true, None) => PartitionState::Detached,
            (true, Some(true)) => PartitionState::DetachPending,
            (true, Some(false)) => PartitionState::Attached,
        };
        Ok((state, default))
    }

    /// Detaches a partition of the kind's table: `CONCURRENTLY` (the table stays readable and
    /// writable) unless it has a default partition, which PostgreSQL refuses it for; a detach
    /// left pending by a crash is finished.
    pub async fn detach_partition(&self, kind: &str, table: &str) -> Result<(), String> {
        let (Some(m), AppDb::Postgres(p)) = (self.window(kind), &self.db) else {
            return Ok(());
        };
        let how = match self.partition_facts(kind, table).await? {
            (PartitionState::Attached, true) => "",
            (PartitionState::Attached, false) => " CONCURRENTLY",
            (PartitionState::DetachPending, _) => " FINALIZE",
            (PartitionState::Detached | PartitionState::Gone, _) => return Ok(()),
        };
        // The simple protocol: CONCURRENTLY cannot run inside a transaction block.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {} DETACH PARTITION {table}{how}",
            m.table.quoted()
        )))
        .execute(p)
        .await
        .map(|_| ())
        .map_err(|e| self.window_error(&e))
    }

    /// The rows of a detached partition about to be dropped: the planner's estimate when the
    /// server has statistics for it, else an exact count (a partition never analyzed, or
    /// analyzed while empty).
    pub async fn partition_rows(&self, kind: &str, table: &str) -> Result<PartitionRows, String> {
        let (Some(m), AppDb::Postgres(p)) = (self.window(kind), &self.db) else {
            return Ok(PartitionRows {
                rows: 0,
                estimated: false,
            });
        };
        let estimate: Option<f64> = sqlx::query_scalar(
            "SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN NULL \
                         ELSE c.reltuples / c.relpages \
                              * (pg_relation_size(c.oid) / current_setting('block_size')::float8) \
                         END::float8 \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
        )
        .bind(table)
        .fetch_optional(p)
        .await
        .map_err(|e| self.window_error(&e))?
        .flatten();
        if let Some(e) = estimate {
            return Ok(PartitionRows {
                rows: e.round().max(0.0) as u64,
                estimated: true,
            });
        }
        let sql = window::render(m, self.dialect())
            .on_table(table.to_string())
            .count_all();
        Ok(PartitionRows {
            rows: self.window_count(&sql).await?,
            estimated: false,
        })
    }

    /// Attaches back a partition a pass detached and then found a held row in.
    pub async fn reattach_partition(
        &self,
        kind: &str,
        table: &str,
        bound: &str,
    ) -> Result<(), String> {
        let (Some(m), AppDb::Postgres(p)) = (self.window(kind), &self.db) else {
            return Ok(());
        };
        if window::parse_range_bound(bound).is_none() {
            return Err(format!(
                "target `{}`: cannot attach {table} back: its bound `{bound}` is not a range",
                self.name
            ));
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {} ATTACH PARTITION {table} {bound}",
            m.table.quoted()
        )))
        .execute(p)
        .await
        .map(|_| ())
        .map_err(|e| self.window_error(&e))
    }

    /// Drops a detached partition.
    pub async fn drop_partition(&self, table: &str) -> Result<(), String> {
        let AppDb::Postgres(p) = &self.db else {
            return Ok(());
        };
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(p)
            .await
            .map(|_| ())
            .map_err(|e| self.window_error(&e))
    }

    /// Runs a statement that changes rows (in a transaction of its own); the rows it changed.
    pub async fn window_execute(&self, sql: &Sql) -> Result<u64, String> {
        let done = match &self.db {
            AppDb::Sqlite(p) => bound!(sql).execute(p).await.map(|r| r.rows_affected()),
            AppDb::Postgres(p) => bound!(sql).execute(p).await.map(|r| r.rows_affected()),
        };
        done.map_err(|e| self.window_error(&e))
    }

    /// Runs a `SELECT COUNT(*)`.
    pub async fn window_count(&self, sql: &Sql) -> Result<u64, String> {
        let n: Result<i64, sqlx::Error> = match &self.db {
            AppDb::Sqlite(p) => bound!(sql).fetch_one(p).await.and_then(|r| r.try_get(0)),
            AppDb::Postgres(p) => bound!(sql).fetch_one(p).await.and_then(|r| r.try_get(0)),
        };
        n.map(|n| n.max(0) as u64)
            .map_err(|e| self.window_error(&e))
    }

    /// The oldest row's `created_at` of windowed `kind` (`None`: the table is empty). A value
    /// that is not in the mapping's format is an error naming it: text compared as RFC 3339
    /// must be RFC 3339, or the cutoff would mean nothing.
    pub async fn window_oldest(&self, kind: &str) -> Result<Option<Timestamp>, String> {
        let (Some(m), Some(r)) = (self.window(kind), self.window_sql(kind)) else {
            return Ok(None);
        };
        let sql = r.oldest();
        let row = match &self.db {
            AppDb::Sqlite(p) => bound!(sql).fetch_one(p).await.map(|row| {
                (
                    row.try_get::<Option<i64>, _>(0).ok().flatten(),
                    row.try_get::<Option<String>, _>(0).ok().flatten(),
                )
            }),
            AppDb::Postgres(p) => bound!(sql).fetch_one(p).await.map(|row| {
                (
                    row.try_get::<Option<i64>, _>(0).ok().flatten(),
                    row.try_get::<Option<String>, _>(0).ok().flatten(),
                )
            }),
        }
        .map_err(|e| self.window_error(&e))?;
        match (m.time_format, row) {
            (_, (None, None)) => Ok(None),
            (TimeFormat::Rfc3339, (_, Some(text))) => Timestamp::parse_rfc3339(&text)
                .map(Some)
                .map_err(|e| {
                    format!(
                        "target `{}`: {}.{} holds {e}; time_format = \"rfc3339\" needs UTC RFC 3339 text",
                        self.name, m.table, m.created_at.as_str()
                    )
                }),
            (TimeFormat::Rfc3339, (Some(_), None)) => Err(format!(
                "target `{}`: {}.{} holds numbers, not RFC 3339 text: set time_format = \"unix\" or \"unix_ms\"",
                self.name,
                m.table,
                m.created_at.as_str()
            )),
            (_, (Some(ms), _)) => Ok(Some(Timestamp::from_millis(ms))),
            (_, (None, Some(text))) => Err(format!(
                "target `{}`: {}.{} holds text (`{text}`), not a number: set time_format = \"rfc3339\"",
                self.name,
                m.table,
                m.created_at.as_str()
            )),
        }
    }

    /// Checks windowed `kind`'s mapping against the live table: every column exists and the
    /// stored times are in the mapping's format (errors); `created_at` has an index (a warning
    /// otherwise: every pass would scan the table).
    ///
    /// A database that cannot be reached is a warning too: the mapping is then checked by the
    /// first pass, which fails naming what is wrong.
    pub async fn window_check(&self, kind: &str) -> Result<Vec<String>, String> {
        let (Some(m), Some(r)) = (self.window(kind), self.window_sql(kind)) else {
            return Ok(Vec::new());
        };
        let probe = r.probe_columns();
        let probed = match &self.db {
            AppDb::Sqlite(p) => bound!(probe).execute(p).await.map(|_| ()),
            AppDb::Postgres(p) => bound!(probe).execute(p).await.map(|_| ()),
        };
        // Not reachable: not a database error, or SQLite's CANTOPEN (14: no such file yet).
        if let Err(e) = &probed
            && (!matches!(e, sqlx::Error::Database(_))
                || crate::sqlite_handle::primary_code(e) == Some(14))
        {
            return Ok(vec![format!(
                "target `{}`: the table for `{kind}` was not checked: {}",
                self.name,
                self.unavailable(e)
            )]);
        }
        probed.map_err(|e| {
            format!(
                "target `{}`: the table for `{kind}` does not match its mapping ({}; mapped columns: {}): {e}",
                self.name,
                m.table,
                m.columns()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        self.window_oldest(kind).await?;
        self.window_tables(kind).await?;
        if let (true, AppDb::Postgres(p)) = (m.partitioned, &self.db) {
            let key: Option<String> = sqlx::query_scalar(
                "SELECT CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) ELSE '' END \
                 FROM pg_class c WHERE c.oid = to_regclass($1)",
            )
            .bind(m.table.quoted())
            .fetch_optional(p)
            .await
            .map_err(|e| self.window_error(&e))?
            .flatten();
            let want = format!("RANGE ({})", m.created_at.as_str());
            let key = key.unwrap_or_default();
            if key.trim_matches('"') != want && key.replace('"', "") != want {
                return Err(format!(
                    "target `{}`: partitioned = true, but {} is {}; it must be PARTITION BY {want} for whole partitions to be dropped",
                    self.name,
                    m.table,
                    if key.is_empty() {
                        "not partitioned".to_string()
                    } else {
                        format!("partitioned by {key}")
                    }
                ));
            }
        }
        let mut warnings = Vec::new();
        if !self.window_indexed(m).await? {
            warnings.push(format!(
                "target `{}`: {}.{} has no index starting with it; every pass over `{kind}` will scan the table (CREATE INDEX ON {} ({}))",
                self.name,
                m.table,
                m.created_at.as_str(),
                m.table,
                m.created_at.as_str()
            ));
        }
        Ok(warnings)
    }

    /// Whether some index of the table starts with `created_at`.
    async fn window_indexed(&self, m: &WindowMapping) -> Result<bool, String> {
        let n: Result<i64, sqlx::Error> = match &self.db {
            AppDb::Sqlite(p) => {
                let list = match &m.table.schema {
                    Some(s) => format!("{}.pragma_index_list", s.quote(Dialect::Sqlite)),
                    None => "pragma_index_list".into(),
                };
                let info = match &m.table.schema {
                    Some(s) => format!("{}.pragma_index_info", s.quote(Dialect::Sqlite)),
                    None => "pragma_index_info".into(),
                };
                sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {list}(?1) il, {info}(il.name) ii WHERE ii.seqno = 0 AND ii.name = ?2"
                )))
                .bind(m.table.name.as_str().to_string())
                .bind(m.created_at.as_str().to_string())
                .fetch_one(p)
                .await
            }
            AppDb::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                     AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND a.attname = $2",
                )
                .bind(m.table.quoted())
                .bind(m.created_at.as_str().to_string())
                .fetch_one(p)
                .await
            }
        };
        n.map(|n| n > 0).map_err(|e| self.window_error(&e))
    }

    /// After a pass: SQLite moves the WAL into the main file, as after a purge batch.
    pub async fn window_done(&self) {
        self.after_batch().await;
    }

    fn window_error(&self, e: &sqlx::Error) -> String {
        match e {
            sqlx::Error::Database(d) => format!("target `{}`: {}", self.name, d.message()),
            other => self.unavailable(other),
        }
    }
}

/// A partition's bounds as times, widened to whole milliseconds (and by a second for text,
/// which compares as text); `None` when a literal is not a time of the mapping's format.
/// `native` holds the server's reading of native bounds: (floor, ceil) in ms, by literal.
fn bound_range(
    format: TimeFormat,
    native: &std::collections::BTreeMap<String, (i64, i64)>,
    from: BoundValue,
    to: BoundValue,
) -> Option<PartitionRange> {
    let mut ends = [None, None];
    for (i, (v, up)) in [(from, false), (to, true)].into_iter().enumerate() {
        let lit = match v {
            BoundValue::MinValue | BoundValue::MaxValue => continue,
            BoundValue::Literal(l) => l,
        };
        let ms = match format {
            TimeFormat::Unix => lit.parse::<i64>().ok().map(|s| s.saturating_mul(1000)),
            TimeFormat::UnixMs => lit.parse::<i64>().ok(),
            TimeFormat::Rfc3339 => Timestamp::parse_rfc3339(&lit).ok().map(|t| {
                let widen = if up { 1000 } else { -1000 };
                t.millis().saturating_add(widen)
            }),
            TimeFormat::Native => native.get(&lit).map(|(lo, hi)| if up { *hi } else { *lo }),
        }?;
        ends[i] = Some(Timestamp::from_millis(ms));
    }
    Some(PartitionRange {
        from: ends[0],
        to: ends[1],
    })
}
