//! The templates an operator writes in the config: placeholders in file paths, object keys, URLs
//! and request bodies, and named parameters in SQL statements.
//!
//! Invariant: a template that passes these checks can only be filled with the item's own values
//! in the places the operator wrote them: placeholders are a closed set (`id`, `kind`, `account`,
//! `org`, `attrs.NAME`), a path or key cannot climb out of its root or prefix, and SQL values are
//! always bound as parameters, never spliced into the text. Config validation calls these
//! checks; the targets call the same functions to fill the templates, so both read them alike.

use std::path::{Component, Path};

/// The named parameters a purge or verify statement may use.
pub const STATEMENT_PARAMS: &[&str] = &["id", "kind", "account", "org"];

/// The placeholders a files target's `path`, an object store's `key` and an HTTP target's
/// `url` may use, besides `attrs.NAME` (an attribute of `resource.created`).
pub const PATH_PLACEHOLDERS: &[&str] = &["id", "kind", "account", "org"];

/// The placeholders of a template (`{id}`, `{attrs.path}` …), or an error naming what is wrong.
pub fn template_placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has an unclosed `{{`"))?;
        let name = &after[..close];
        let attr_ok = name.strip_prefix("attrs.").is_some_and(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !PATH_PLACEHOLDERS.contains(&name) && !attr_ok {
            return Err(format!(
                "`{template}` uses `{{{name}}}`; allowed: {{id}}, {{kind}}, {{account}}, {{org}}, {{attrs.NAME}}"
            ));
        }
        names.push(name.to_string());
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{template}` has an unmatched `}}`"));
    }
    Ok(names)
}

/// The named parameters (`:id` …) used by a statement, in order of first use.
pub fn statement_params(sql: &str) -> Vec<String> {
    named_to_positional(sql).1
}

/// Rewrites `:name` parameters to `$1`, `$2`… (understood by both SQLite and PostgreSQL),
/// skipping string literals, quoted identifiers, comments and PostgreSQL `::` casts. Returns the
/// new text and the parameter names in positional order.
pub fn named_to_positional(sql: &str) -> (String, Vec<String>) {
    rewrite_named(sql, |_, pos| format!("${pos}"))
}

/// Rewrites each `:name` parameter to what `param(name, position)` returns (positions count
/// distinct names from 1, in order of first use), with the same lexical rules as
/// [`named_to_positional`]. Returns the new text and the names in positional order.
pub fn rewrite_named(
    sql: &str,
    mut param: impl FnMut(&str, usize) -> String,
) -> (String, Vec<String>) {
    let b = sql.as_bytes();
    let mut names: Vec<String> = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j > start && !b[start].is_ascii_digit() {
                    let name = &sql[start..j];
                    let pos = match names.iter().position(|n| n == name) {
                        Some(p) => p + 1,
                        None => {
                            names.push(name.to_string());
                            names.len()
                        }
                    };
                    out.push_str(&sql[copied..i]);
                    out.push_str(&param(name, pos));
                    copied = j;
                }
                i = j.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    (out, names)
}

/// The placeholders of a path template, or an error naming what is wrong.
pub fn path_placeholders(template: &str) -> Result<Vec<String>, String> {
    let names = template_placeholders(template)?;
    let p = Path::new(template);
    if p.is_absolute() {
        return Err(format!("`{template}` must be relative to `root`"));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(format!(
                    "`{template}` could escape `root` (`..` or absolute part)"
                ));
            }
        }
    }
    if template.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(names)
}

/// The placeholders of an object key template (`{account}/{id}`), or why it could name a key
/// outside the target's prefix: a leading `/`, an empty segment or a `.`/`..` segment.
pub fn key_placeholders(template: &str) -> Result<Vec<String>, String> {
    let names = template_placeholders(template)?;
    if template.is_empty() {
        return Err("must not be empty".into());
    }
    if template.starts_with('/') {
        return Err(format!(
            "`{template}` starts with `/`; keys are relative to the url's prefix"
        ));
    }
    for seg in template.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "`{template}` has an empty, `.` or `..` segment: it could name a key outside the prefix"
            ));
        }
    }
    Ok(names)
}

/// The placeholders of an HTTP target's body template (`{id}`, `{{` for a literal brace).
pub fn body_placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for piece in body_pieces(template)? {
        if let Piece::Var(name) = piece {
            template_placeholders(&format!("{{{name}}}"))?;
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// A URL template with every placeholder replaced by `x`: what config checks parse.
pub fn sample_url(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        out.push('x');
        rest = match rest[open..].find('}') {
            Some(close) => &rest[open + close + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

pub enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

pub fn body_pieces(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        pieces.push(Piece::Text(&rest[..i]));
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{") {
            pieces.push(Piece::Text("{"));
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            pieces.push(Piece::Text("}"));
            rest = t;
        } else if tail.starts_with('}') {
            return Err("has a lone `}`: write `}}` for a literal brace".into());
        } else {
            let close = tail
                .find('}')
                .ok_or("has an unclosed `{`: write `{{` for a literal brace")?;
            pieces.push(Piece::Var(&tail[1..close]));
            rest = &tail[close + 1..];
        }
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_params_skip_literals_and_casts() {
        assert_eq!(
            statement_params(
                "DELETE FROM t WHERE a = :id AND b = ':nope' AND c = :id::text AND d = :org -- :x"
            ),
            vec!["id", "org"]
        );
    }

    #[test]
    fn named_parameters_become_positional() {
        let (sql, names) = named_to_positional(
            "DELETE FROM m WHERE c = :id AND o = :org AND x = ':id' AND c2 = :id::text",
        );
        assert_eq!(
            sql,
            "DELETE FROM m WHERE c = $1 AND o = $2 AND x = ':id' AND c2 = $1::text"
        );
        assert_eq!(names, vec!["id", "org"]);
    }
}
