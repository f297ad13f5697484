//! A SQL target's batch on SQLite, run as prepared statements on the pooled connection's own
//! handle: each configured statement is prepared once per batch and stepped once per item, with
//! `:id`, `:kind`, `:account`, `:org` bound as parameters by SQLite itself.
//!
//! Through sqlx every statement is a message to the connection's worker thread and back; two
//! statements per item made those hand-offs (or, sent as scripts, re-parsing every statement
//! for every item) most of a purge's cost. Here the batch runs in one go on the calling thread,
//! through rusqlite over the handle sqlx opened (the two share libsqlite3-sys), while sqlx's
//! worker is parked by [`sqlx::sqlite::LockedSqliteHandle`]. Transactions stay sqlx's.

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection};

use super::sql::Statement;
use super::{PurgeItem, Removed};
use crate::template::STATEMENT_PARAMS;

/// A failure: whether it concerns the whole database (busy, read-only, I/O, full …) rather than
/// one item, and what happened.
pub(super) type Failure = (bool, String);

/// One configured statement, prepared: a configured string may hold several SQL statements.
struct Prepared<'c> {
    text: &'c str,
    parts: Vec<(rusqlite::Statement<'c>, Vec<String>)>,
}

/// Runs every item's statements, then its verify queries, on `conn` (the pooled connection,
/// lent by [`crate::sqlite_handle::Lent`]), inside the transaction the caller opened. Returns
/// what each item removed.
pub(super) fn run(
    conn: &Connection,
    stmts: &[Statement],
    verify: &[Statement],
    items: &[PurgeItem],
) -> Result<Vec<Removed>, Failure> {
    let mut stmts = prepare(conn, stmts)?;
    let mut verify = prepare(conn, verify)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut removed = Removed::default();
        for st in &mut stmts {
            for (s, names) in &mut st.parts {
                bind(s, names, item).map_err(|e| failure(st.text, &e))?;
                let mut rows = s.raw_query();
                // Rows a statement returns (`RETURNING …`) are read and ignored.
                while rows.next().map_err(|e| failure(st.text, &e))?.is_some() {}
                drop(rows);
                if !s.readonly() {
                    removed.rows += conn.changes();
                }
            }
        }
        for st in &mut verify {
            for (s, names) in &mut st.parts {
                bind(s, names, item).map_err(|e| failure(st.text, &e))?;
                let mut rows = s.raw_query();
                let left = match rows.next().map_err(|e| failure(st.text, &e))? {
                    // COUNT(*) is an integer; anything else is not a count, so the purge fails.
                    Some(row) => match row.get_ref(0) {
                        Ok(ValueRef::Integer(n)) => n,
                        _ => -1,
                    },
                    None => {
                        return Err((false, format!("verify `{}` returned no row", st.text)));
                    }
                };
                if left != 0 {
                    return Err((
                        false,
                        format!("verify `{}` found {left} left after the delete", st.text),
                    ));
                }
            }
        }
        out.push(removed);
    }
    Ok(out)
}

fn prepare<'c>(conn: &'c Connection, stmts: &'c [Statement]) -> Result<Vec<Prepared<'c>>, Failure> {
    let mut out = Vec::with_capacity(stmts.len());
    for st in stmts {
        let mut parts = Vec::new();
        let mut batch = Batch::new(conn, &st.text);
        while let Some(s) = batch.next().map_err(|e| failure(&st.text, &e))? {
            let mut names = Vec::with_capacity(s.parameter_count());
            for i in 1..=s.parameter_count() {
                // Only the named parameters the config allows: a `?` or `$1` SQLite would accept
                // must not be bound silently to an empty string.
                match s.parameter_name(i).and_then(|n| n.strip_prefix(':')) {
                    Some(n) if STATEMENT_PARAMS.contains(&n) => names.push(n.to_string()),
                    other => {
                        return Err((
                            false,
                            format!(
                                "`{}`: parameter {} is not one of :id, :kind, :account, :org",
                                st.text,
                                other.map_or_else(|| format!("#{i}"), |n| format!("`{n}`"))
                            ),
                        ));
                    }
                }
            }
            parts.push((s, names));
        }
        out.push(Prepared {
            text: &st.text,
            parts,
        });
    }
    Ok(out)
}

/// Binds `item`'s values to the statement's parameters, by name (`:id` → `id`).
fn bind(
    s: &mut rusqlite::Statement<'_>,
    names: &[String],
    item: &PurgeItem,
) -> rusqlite::Result<()> {
    for (i, name) in names.iter().enumerate() {
        s.raw_bind_parameter(i + 1, item.param(name))?;
    }
    Ok(())
}

fn failure(text: &str, e: &rusqlite::Error) -> Failure {
    (database_wide(e), format!("`{text}`: {e}"))
}

/// Whether `e` concerns the whole database ([`super::sql::sqlite_database_wide`]).
fn database_wide(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            super::sql::sqlite_database_wide(i64::from(f.extended_code & 0xff))
        }
        _ => false,
    }
}
