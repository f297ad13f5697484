//! `check-config`: what the operator reads before deploying a config. The text is one screen of
//! the effective policy; `--json` gives the same facts as data; secrets are shown redacted.

use std::fmt::Write;

use serde::Serialize;

use crate::config::{Config, ObjectVersions, TargetConfig};
use crate::targets::Targets;

use super::Failure;

/// A one-screen description of the effective policy.
pub fn describe(c: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {} (valid)", c.file);
    let _ = writeln!(out, "ledger: {}", c.database.url.redacted());
    let _ = writeln!(
        out,
        "sweep: \"{}\" UTC, batch {} ({} per purge transaction), lease {}, max attempts {}",
        c.scheduler.sweep,
        c.scheduler.batch_size,
        c.scheduler.batches_per_transaction,
        c.scheduler.lease,
        c.scheduler.max_attempts
    );
    let _ = writeln!(
        out,
        "accounts: grace_after_delete {}, targets [{}]",
        c.policy.account_grace,
        c.account_targets.join(", ")
    );
    let _ = writeln!(out, "kinds:");
    let _ = writeln!(
        out,
        "  {:<14} {:>12} {:>16} {:>10} {:>4}  targets",
        "kind", "grace", "account grace", "max_age", "zdr"
    );
    for (name, k) in &c.policy.kinds {
        let targets = c
            .kinds
            .get(name)
            .map(|k| k.targets.join(", "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<14} {:>12} {:>16} {:>10} {:>4}  {}",
            name,
            k.grace_after_delete.to_string(),
            k.grace_after_account_delete.to_string(),
            k.max_age
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            if k.zdr_endpoints.is_some() {
                "yes"
            } else {
                "no"
            },
            targets
        );
    }
    if let Some(z) = c
        .policy
        .kinds
        .values()
        .find_map(|k| k.zdr_endpoints.as_ref())
    {
        let _ = writeln!(
            out,
            "zdr endpoints: {}",
            z.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    let _ = writeln!(out, "targets:");
    for (name, t) in &c.targets {
        match t {
            TargetConfig::Sql(s) => {
                let _ = writeln!(
                    out,
                    "  {name}: sql {} (secure_delete {}{})",
                    s.url.redacted(),
                    if s.secure_delete { "on" } else { "off" },
                    s.vacuum
                        .as_ref()
                        .map(|v| format!(", vacuum \"{v}\" UTC"))
                        .unwrap_or_default()
                );
            }
            TargetConfig::Files(f) => {
                let _ = writeln!(out, "  {name}: files {}/{}", f.root.display(), f.path);
            }
            TargetConfig::ObjectStore(o) => {
                let _ = writeln!(
                    out,
                    "  {name}: object_store {} key {} versions {}{}{}{}",
                    o.url_shown(),
                    o.key,
                    match o.versions {
                        ObjectVersions::All => "all",
                        ObjectVersions::Current => "current",
                    },
                    o.endpoint()
                        .map(|e| format!(", endpoint {e}"))
                        .unwrap_or_default(),
                    o.account_prefix
                        .as_ref()
                        .map(|p| format!(", account_prefix {p}"))
                        .unwrap_or_default(),
                    o.credentials_source()
                        .map(|s| format!(" (credentials from {s})"))
                        .unwrap_or_default()
                );
            }
            TargetConfig::Http(h) => {
                let _ = writeln!(
                    out,
                    "  {name}: http {} {} (timeout {}, concurrency {}{})",
                    h.method.as_str(),
                    h.url.redacted(),
                    h.timeout,
                    h.concurrency,
                    if h.verify_url.is_some() {
                        ", verified"
                    } else {
                        ""
                    }
                );
                if let Some(a) = &h.account_url {
                    let _ = writeln!(out, "    account purge: DELETE {}", a.redacted());
                }
            }
        }
    }
    for (name, src) in &c.sources {
        let _ = writeln!(
            out,
            "source {name}: outbox {} table {} every {}",
            src.url.redacted(),
            src.table,
            src.poll
        );
    }
    let _ = writeln!(out, "safety: max_newly_due {}", c.max_newly_due);
    match &c.http {
        Some(h) => {
            let _ = writeln!(out, "http: {}", h.listen);
            for t in &h.tokens {
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                let _ = writeln!(out, "  token {}: {}", t.name, scopes.join(", "));
            }
        }
        None => {
            let _ = writeln!(out, "http: off");
        }
    }
    let _ = writeln!(
        out,
        "metrics: {}",
        match (&c.metrics_listen, &c.http) {
            (Some(m), _) => format!("{m}/metrics"),
            (None, Some(h)) => format!("{}/metrics (the HTTP API)", h.listen),
            (None, None) => "off".into(),
        }
    );
    for (name, n) in &c.notify {
        let _ = writeln!(
            out,
            "notify {name}: POST {} for {} (signed; retries from {} up to {} for {})",
            n.url.redacted(),
            n.events.iter().cloned().collect::<Vec<_>>().join(","),
            n.retry_backoff,
            n.retry_backoff_max,
            n.max_age
        );
    }
    out
}

#[derive(Serialize)]
pub(super) struct CheckConfigOut {
    ok: bool,
    file: String,
    policy: crate::rules::SchedulePolicy,
    targets: Vec<String>,
    account_targets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) warnings: Vec<String>,
}

/// Checks each windowed kind's mapping against its live table (issue 29): a missing column or
/// times not in the mapping's format are bad input; a `created_at` without an index is a
/// warning.
pub(super) async fn check_windows(config: &Config) -> Result<Vec<String>, Failure> {
    let windowed: Vec<(&String, &String)> = config
        .targets
        .iter()
        .filter_map(|(t, c)| match c {
            TargetConfig::Sql(sql) => Some(sql.windows.keys().map(move |k| (t, k))),
            _ => None,
        })
        .flatten()
        .collect();
    if windowed.is_empty() {
        return Ok(Vec::new());
    }
    let targets = Targets::from_config(config).map_err(Failure::bad_input)?;
    let mut warnings = Vec::new();
    for (t, kind) in windowed {
        if let Some(sql) = targets.get(t).and_then(|x| x.as_sql()) {
            warnings.extend(
                sql.window_check(kind)
                    .await
                    .map_err(|e| Failure::bad_input(format!("targets.{t}.windows.{kind}: {e}")))?,
            );
        }
    }
    Ok(warnings)
}

impl From<&Config> for CheckConfigOut {
    fn from(c: &Config) -> Self {
        CheckConfigOut {
            ok: true,
            file: c.file.clone(),
            policy: c.policy.clone(),
            targets: c.targets.keys().cloned().collect(),
            account_targets: c.account_targets.clone(),
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_lists_every_kind() {
        let c = Config::parse(
            r#"
[database]
url = "sqlite://var/ledger.db"
[zdr]
endpoints = ["/v1/chat/completions"]
[kinds.api_log]
grace_after_delete = "0s"
max_age = "30d"
zdr = true
targets = ["app_db"]
[targets.app_db]
type = "sql"
url = "sqlite://var/app.db"
[targets.app_db.purge]
api_log = ["DELETE FROM api_logs WHERE id = :id"]
"#,
            "t.toml",
        )
        .unwrap();
        assert!(describe(&c).contains("api_log"));
    }
}
