//! `[targets.NAME]`: where the application keeps its data. A `TargetConfig` that exists can be
//! opened and run: its URL or root resolved, its templates and statements using only the
//! placeholders its runner fills, its secrets read.
//!
//! Each target type parses its own section (`sql`, `files`, `object_store`, `http`); this module
//! runs them, then checks what spans sections: a kind's or `[accounts]`'s target list names
//! targets that can purge that kind, and a windowed kind's table mapping belongs to it. The
//! runners in `crate::targets` take these types as they are; nothing here imports them.

mod files;
mod http;
mod object_store;
mod sql;

use std::collections::{BTreeMap, BTreeSet};

use crate::rules::SchedulePolicy;
use crate::window::{RawWindowMapping, Tracking};

use super::raw::RawTarget;
use super::{ConfigError, Ctx, KindConfig, check_name};

pub use files::FilesTargetConfig;
pub use http::{HttpMethod, HttpTargetConfig};
pub use object_store::{
    AzureCredential, AzureLocation, GcsCredential, GcsLocation, ObjectStoreTargetConfig,
    ObjectVersions, S3Credentials, S3Location, StoreLocation,
};
pub use sql::SqlTargetConfig;

#[derive(Debug, Clone)]
pub enum TargetConfig {
    Sql(SqlTargetConfig),
    Files(FilesTargetConfig),
    ObjectStore(Box<ObjectStoreTargetConfig>),
    Http(HttpTargetConfig),
}

/// An sql target's `[targets.T.windows.KIND]` mappings as read, and whether it is PostgreSQL:
/// they are built once the kinds are known ([`attach_windows`]).
pub(super) type RawWindows = (bool, BTreeMap<String, RawWindowMapping>);

/// The attribute names (`NAME` of `{attrs.NAME}`) among a template's placeholders.
fn attr_names(names: &[String]) -> impl Iterator<Item = String> + '_ {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("attrs.").map(str::to_string))
}

/// The targets, the `resource.created` attributes their templates name, and each sql target's
/// raw window mappings.
pub(super) struct Built {
    pub targets: BTreeMap<String, TargetConfig>,
    pub attrs: BTreeSet<String>,
    pub raw_windows: BTreeMap<String, RawWindows>,
}

pub(super) fn build(ctx: &Ctx<'_>, raw: BTreeMap<String, RawTarget>) -> Result<Built, ConfigError> {
    let mut targets = BTreeMap::new();
    let mut attrs = BTreeSet::new();
    let mut raw_windows = BTreeMap::new();
    for (name, t) in raw {
        let key = format!("targets.{name}");
        check_name(ctx, &key, &name)?;
        let cfg = match t {
            RawTarget::Sql(s) => {
                let (cfg, windows) = sql::build(ctx, &key, s)?;
                raw_windows.insert(name.clone(), windows);
                TargetConfig::Sql(cfg)
            }
            RawTarget::Files(f) => {
                let (cfg, names) = files::build(ctx, &key, f)?;
                attrs.extend(names);
                TargetConfig::Files(cfg)
            }
            RawTarget::ObjectStore(o) => {
                let (cfg, names) = object_store::build(ctx, &key, *o)?;
                attrs.extend(names);
                TargetConfig::ObjectStore(Box::new(cfg))
            }
            RawTarget::Http(h) => {
                let (cfg, names) = http::build(ctx, &key, h)?;
                attrs.extend(names);
                TargetConfig::Http(cfg)
            }
        };
        targets.insert(name, cfg);
    }
    Ok(Built {
        targets,
        attrs,
        raw_windows,
    })
}

/// Builds each `[targets.T.windows.KIND]` into its sql target: the mapping must belong to a
/// windowed kind that lists the target.
pub(super) fn attach_windows(
    ctx: &Ctx<'_>,
    raw_windows: BTreeMap<String, RawWindows>,
    kinds: &BTreeMap<String, KindConfig>,
    policy: &SchedulePolicy,
    targets: &mut BTreeMap<String, TargetConfig>,
) -> Result<(), ConfigError> {
    for (tname, (postgres, windows)) in raw_windows {
        for (kind, raw) in windows {
            let key = format!("targets.{tname}.windows.{kind}");
            let Some(kc) = kinds.get(&kind) else {
                return Err(ctx.err(
                    key,
                    format!(
                        "`{kind}` is not a configured kind (kinds: {})",
                        kinds.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            if kc.tracking != Tracking::Window {
                return Err(ctx.err(
                key,
                format!("kind `{kind}` is tracked per item: set kinds.{kind}.tracking = \"window\", or remove this mapping"),
            ));
            }
            if !kc.targets.contains(&tname) {
                return Err(ctx.err(
                    key,
                    format!("kind `{kind}` does not list target `{tname}` in kinds.{kind}.targets"),
                ));
            }
            let zdr = policy.kinds[&kind].zdr_endpoints.is_some();
            let mapping = raw
                .build(postgres, zdr)
                .map_err(|(k, m)| ctx.err(format!("{key}.{k}"), m))?;
            if let Some(TargetConfig::Sql(sql)) = targets.get_mut(&tname) {
                sql.windows.insert(kind, mapping);
            }
        }
    }
    Ok(())
}

/// Statements for kinds nobody configured are almost always a typo.
pub(super) fn check_statement_kinds(
    ctx: &Ctx<'_>,
    targets: &BTreeMap<String, TargetConfig>,
    kinds: &BTreeMap<String, KindConfig>,
) -> Result<(), ConfigError> {
    for (tname, t) in targets {
        if let TargetConfig::Sql(sql) = t {
            for (section, map) in [("purge", &sql.purge), ("verify", &sql.verify)] {
                for kind in map.keys() {
                    if kind != "account" && !kinds.contains_key(kind) {
                        return Err(ctx.err(
                            format!("targets.{tname}.{section}.{kind}"),
                            format!(
                                "`{kind}` is not a configured kind (kinds: {})",
                                kinds.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A windowed kind's target must be an SQL target with a `windows.KIND` mapping.
pub(super) fn check_window_target(
    ctx: &Ctx<'_>,
    key: &str,
    target: &str,
    kind: &str,
    targets: &BTreeMap<String, TargetConfig>,
    raw_windows: &BTreeMap<String, RawWindows>,
) -> Result<(), ConfigError> {
    match targets.get(target) {
        None => check_target_ref(ctx, key, target, kind, targets),
        Some(TargetConfig::Sql(_)) => {
            if raw_windows
                .get(target)
                .is_some_and(|(_, w)| w.contains_key(kind))
            {
                Ok(())
            } else {
                Err(ctx.err(
                    key,
                    format!("target `{target}` has no table for windowed kind `{kind}`: add [targets.{target}.windows.{kind}]"),
                ))
            }
        }
        Some(_) => Err(ctx.err(
            key,
            format!("target `{target}` is not an sql target: a windowed kind's rows can only be purged by time in an SQL table"),
        )),
    }
}

pub(super) fn check_target_ref(
    ctx: &Ctx<'_>,
    key: &str,
    target: &str,
    kind: &str,
    targets: &BTreeMap<String, TargetConfig>,
) -> Result<(), ConfigError> {
    match targets.get(target) {
        None => Err(ctx.err(
            key,
            format!(
                "unknown target `{target}` (defined: {})",
                if targets.is_empty() {
                    "none".to_string()
                } else {
                    targets.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        )),
        Some(TargetConfig::Sql(sql)) => {
            if sql.purge.get(kind).is_none_or(|s| s.is_empty()) {
                Err(ctx.err(
                    key,
                    format!("target `{target}` has no statements for `{kind}`: add targets.{target}.purge.{kind}"),
                ))
            } else {
                Ok(())
            }
        }
        Some(TargetConfig::ObjectStore(o)) => {
            if kind == "account" && o.account_prefix.is_none() {
                Err(ctx.err(
                    key,
                    format!(
                        "object_store target `{target}` needs `account_prefix` (e.g. \"{{account}}/\") to purge at account level"
                    ),
                ))
            } else {
                Ok(())
            }
        }
        Some(TargetConfig::Http(h)) => {
            if kind == "account" && h.account_url.is_none() {
                Err(ctx.err(
                    key,
                    format!("http target `{target}` needs `account_url` to purge at account level"),
                ))
            } else {
                Ok(())
            }
        }
        Some(TargetConfig::Files(f)) => {
            if kind == "account" && f.account_path.is_none() {
                Err(ctx.err(
                    key,
                    format!(
                        "files target `{target}` needs `account_path` to purge at account level"
                    ),
                ))
            } else {
                Ok(())
            }
        }
    }
}
