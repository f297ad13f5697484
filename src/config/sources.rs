//! `[sources.NAME]`: outbox tables the daemon polls for events (§6). A source has a database
//! URL, a plain table name (it is spliced into SQL) and a poll interval of at least 10ms.

use std::collections::BTreeMap;

use crate::model::Span;

use super::raw::RawSource;
use super::secret::{SecretUrl, resolve_url};
use super::{ConfigError, Ctx, check_name};

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: SecretUrl,
    pub table: String,
    pub poll: Span,
}

pub(super) fn build(
    ctx: &Ctx<'_>,
    raw: BTreeMap<String, RawSource>,
) -> Result<BTreeMap<String, SourceConfig>, ConfigError> {
    let mut sources = BTreeMap::new();
    for (name, s) in raw {
        let key = format!("sources.{name}");
        check_name(ctx, &key, &name)?;
        let url = resolve_url(ctx, &key, s.url, s.url_env, s.url_file)?;
        if !s
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || s.table.is_empty()
        {
            return Err(ctx.err(
                format!("{key}.table"),
                format!("`{}` is not a plain table name", s.table),
            ));
        }
        if s.poll < Span::from_millis(10) {
            return Err(ctx.err(
                format!("{key}.poll"),
                format!("{} is shorter than 10ms", s.poll),
            ));
        }
        sources.insert(
            name,
            SourceConfig {
                url,
                table: s.table,
                poll: s.poll,
            },
        );
    }
    Ok(sources)
}
