//! `[kinds.NAME]` and `[zdr]`: the lifecycle policy of each kind of resource. A kind that exists
//! has at least one target able to purge it, a grace period (or, windowed, a max_age within its
//! own bounds), and is covered by ZDR only if it is a stateless kind and endpoints are listed.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Span;
use crate::rules::{KindPolicy, SchedulePolicy};
use crate::window::Tracking;

use super::raw::{RawAccounts, RawKind, RawZdr};
use super::targets::{self, RawWindows, TargetConfig};
use super::{ConfigError, Ctx, check_name};

/// Kinds that are stateful products: ZDR never touches them (R6). Marking one `zdr = true` is a
/// config error rather than silently ignored, so a mistaken config is caught before it deploys.
pub const STATEFUL_KINDS: &[&str] = &["conversation", "file", "agent", "library", "batch_file"];

#[derive(Debug, Clone)]
pub struct KindConfig {
    pub targets: Vec<String>,
    /// Per item (events and ledger rows) or by time window in the targets' tables (issue 29).
    pub tracking: Tracking,
    /// Windowed kinds: the bounds of an org's own max_age (W4).
    pub max_age_min: Option<Span>,
    pub max_age_max: Option<Span>,
}

/// `[zdr] endpoints`: paths of the stateless API, e.g. `/v1/chat/completions`.
pub(super) fn zdr_endpoints(ctx: &Ctx<'_>, raw: &RawZdr) -> Result<BTreeSet<String>, ConfigError> {
    let mut endpoints = BTreeSet::new();
    for (i, e) in raw.endpoints.iter().enumerate() {
        if !e.starts_with('/') {
            return Err(ctx.err(
                format!("zdr.endpoints[{i}]"),
                format!("`{e}` is not a path like \"/v1/chat/completions\""),
            ));
        }
        endpoints.insert(e.clone());
    }
    Ok(endpoints)
}

/// The kinds and the schedule policy the rules apply to them; a kind's targets are checked
/// against `targets` (a windowed kind's against its raw window mappings).
pub(super) fn build(
    ctx: &Ctx<'_>,
    raw: BTreeMap<String, RawKind>,
    accounts: &RawAccounts,
    endpoints: &BTreeSet<String>,
    targets: &BTreeMap<String, TargetConfig>,
    raw_windows: &BTreeMap<String, RawWindows>,
) -> Result<(BTreeMap<String, KindConfig>, SchedulePolicy), ConfigError> {
    let mut kinds = BTreeMap::new();
    let mut policy = SchedulePolicy {
        account_grace: accounts.grace_after_delete,
        kinds: BTreeMap::new(),
        tombstone_retention: None,
    };
    if raw.is_empty() {
        return Err(ctx.err(
            "kinds",
            "no kinds configured: add at least one [kinds.NAME] section",
        ));
    }
    for (name, k) in raw {
        let key = format!("kinds.{name}");
        check_name(ctx, &key, &name)?;
        if name == "account" {
            return Err(ctx.err(key, "`account` is reserved for account-level statements"));
        }
        if k.zdr && STATEFUL_KINDS.contains(&name.as_str()) {
            return Err(ctx.err(
                format!("{key}.zdr"),
                format!("`{name}` is a stateful product; ZDR covers only stateless API logs and never touches conversations, files, agents, libraries or batch files (R6)"),
            ));
        }
        if k.zdr && endpoints.is_empty() {
            return Err(ctx.err(
                format!("{key}.zdr"),
                "zdr = true but zdr.endpoints is empty",
            ));
        }
        if k.targets.is_empty() {
            return Err(ctx.err(
                format!("{key}.targets"),
                "empty: a kind needs at least one target, or its purges would delete nothing",
            ));
        }
        let windowed = k.tracking == Tracking::Window;
        for (i, t) in k.targets.iter().enumerate() {
            let key = format!("{key}.targets[{i}]");
            if windowed {
                targets::check_window_target(ctx, &key, t, &name, targets, raw_windows)?;
            } else {
                targets::check_target_ref(ctx, &key, t, &name, targets)?;
            }
        }
        if windowed && k.max_age.is_none() {
            return Err(ctx.err(
                format!("{key}.max_age"),
                "missing: a kind with tracking = \"window\" is purged by age alone, so max_age is required",
            ));
        }
        if !windowed {
            for (field, v) in [
                ("max_age_min", k.max_age_min),
                ("max_age_max", k.max_age_max),
            ] {
                if v.is_some() {
                    return Err(ctx.err(
                        format!("{key}.{field}"),
                        "bounds an org's own window (`org retention`), which only kinds with tracking = \"window\" have",
                    ));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (k.max_age_min, k.max_age_max)
            && lo > hi
        {
            return Err(ctx.err(
                format!("{key}.max_age_min"),
                format!("{lo} is longer than max_age_max ({hi})"),
            ));
        }
        if let Some(age) = k.max_age {
            if let Some(lo) = k.max_age_min.filter(|lo| age < *lo) {
                return Err(ctx.err(
                    format!("{key}.max_age"),
                    format!("{age} is shorter than max_age_min ({lo})"),
                ));
            }
            if let Some(hi) = k.max_age_max.filter(|hi| age > *hi) {
                return Err(ctx.err(
                    format!("{key}.max_age"),
                    format!("{age} is longer than max_age_max ({hi})"),
                ));
            }
        }
        let grace_after_delete = match (k.grace_after_delete, windowed) {
            (Some(g), _) => g,
            (None, true) => Span::ZERO,
            (None, false) => {
                return Err(ctx.err(
                    format!("{key}.grace_after_delete"),
                    "missing: how long a deleted resource stays recoverable, e.g. \"30d\"",
                ));
            }
        };
        policy.kinds.insert(
            name.clone(),
            KindPolicy {
                grace_after_delete,
                grace_after_account_delete: k
                    .grace_after_account_delete
                    .unwrap_or(accounts.grace_after_delete),
                max_age: k.max_age,
                zdr_endpoints: if k.zdr { Some(endpoints.clone()) } else { None },
                tracking: k.tracking,
            },
        );
        kinds.insert(
            name,
            KindConfig {
                targets: k.targets,
                tracking: k.tracking,
                max_age_min: k.max_age_min,
                max_age_max: k.max_age_max,
            },
        );
    }
    Ok((kinds, policy))
}
