//! `type = "files"`: one file per resource under a root, by a path template.

use std::path::PathBuf;

use crate::template::path_placeholders;

use super::super::raw::RawFilesTarget;
use super::super::{ConfigError, Ctx};
use super::attr_names;

#[derive(Debug, Clone)]
pub struct FilesTargetConfig {
    pub root: PathBuf,
    pub path: String,
    pub account_path: Option<String>,
}

/// Checks the root and the templates: a resource path names the resource (`{id}` or an
/// `{attrs.NAME}`); an account path uses `{account}` and may use `{org}`. Returns the config and
/// the attributes its path names.
pub(super) fn build(
    ctx: &Ctx<'_>,
    key: &str,
    f: RawFilesTarget,
) -> Result<(FilesTargetConfig, Vec<String>), ConfigError> {
    if f.root.trim().is_empty() {
        return Err(ctx.err(format!("{key}.root"), "must not be empty"));
    }
    let names = path_placeholders(&f.path).map_err(|m| ctx.err(format!("{key}.path"), m))?;
    let attrs = attr_names(&names).collect();
    if !names.iter().any(|n| n == "id" || n.starts_with("attrs.")) {
        return Err(ctx.err(
            format!("{key}.path"),
            format!(
                "`{}` must contain {{id}} (or an {{attrs.NAME}}), or every resource would map to one file",
                f.path
            ),
        ));
    }
    if let Some(ap) = &f.account_path {
        let names = path_placeholders(ap).map_err(|m| ctx.err(format!("{key}.account_path"), m))?;
        if !names.iter().any(|n| n == "account")
            || names
                .iter()
                .any(|n| n == "id" || n == "kind" || n.starts_with("attrs."))
        {
            return Err(ctx.err(
                format!("{key}.account_path"),
                format!("`{ap}` must contain {{account}} and may use {{org}}, nothing else"),
            ));
        }
    }
    Ok((
        FilesTargetConfig {
            root: PathBuf::from(f.root),
            path: f.path,
            account_path: f.account_path,
        },
        attrs,
    ))
}
