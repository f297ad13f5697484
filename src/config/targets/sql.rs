//! `type = "sql"`: statements run against the application's own database, per kind.

use std::collections::BTreeMap;

use crate::template::{STATEMENT_PARAMS, statement_params};

use super::super::raw::RawSqlTarget;
use super::super::scheduler::check_cron;
use super::super::secret::{SecretUrl, resolve_url};
use super::super::{ConfigError, Ctx};

#[derive(Debug, Clone)]
pub struct SqlTargetConfig {
    pub url: SecretUrl,
    /// Statements per kind, plus `account` for account-level purges.
    pub purge: BTreeMap<String, Vec<String>>,
    pub verify: BTreeMap<String, Vec<String>>,
    pub secure_delete: bool,
    pub vacuum: Option<String>,
    /// Windowed kinds' tables in this database, by kind (issue 29).
    pub windows: BTreeMap<String, crate::window::WindowMapping>,
}

/// Checks every statement's named parameters (`:id`, `:kind`, `:account`, `:org`; account
/// statements only the last two) and the vacuum cron. Returns the config without its windows
/// (attached once the kinds are known) and the raw `windows` mappings.
pub(super) fn build(
    ctx: &Ctx<'_>,
    key: &str,
    sql: RawSqlTarget,
) -> Result<(SqlTargetConfig, super::RawWindows), ConfigError> {
    let url = resolve_url(ctx, key, sql.url, sql.url_env, sql.url_file)?;
    for (section, map) in [("purge", &sql.purge), ("verify", &sql.verify)] {
        for (kind, stmts) in map {
            for (i, stmt) in stmts.iter().enumerate() {
                let k = format!("{key}.{section}.{kind}[{i}]");
                if stmt.trim().is_empty() {
                    return Err(ctx.err(k, "empty statement"));
                }
                for p in statement_params(stmt) {
                    if !STATEMENT_PARAMS.contains(&p.as_str()) {
                        return Err(ctx.err(
                            k,
                            format!("unknown parameter `:{p}` in `{stmt}`; allowed: :id, :kind, :account, :org"),
                        ));
                    }
                    if kind == "account" && p != "account" && p != "org" {
                        return Err(ctx.err(
                            k,
                            format!("account statements can use :account and :org, not `:{p}`"),
                        ));
                    }
                }
            }
        }
    }
    if let Some(v) = &sql.vacuum {
        check_cron(v).map_err(|m| ctx.err(format!("{key}.vacuum"), m))?;
    }
    let windows = (url.is_postgres(), sql.windows);
    Ok((
        SqlTargetConfig {
            url,
            purge: sql.purge,
            verify: sql.verify,
            secure_delete: sql.secure_delete,
            vacuum: sql.vacuum,
            windows: BTreeMap::new(),
        },
        windows,
    ))
}
