//! `type = "http"`: a service's own deletion API (issue 21). A URL template never lets a value
//! choose the host the token is sent to; the token is read when the config is loaded.

use crate::model::Span;
use crate::template::{self, template_placeholders};

use super::super::raw::RawHttpTarget;
use super::super::secret::{SecretHttpUrl, SecretToken, one_url, read_secret};
use super::super::{ConfigError, Ctx};
use super::attr_names;

/// An `http` target: templates checked, token read (see [`build`]).
#[derive(Debug, Clone)]
pub struct HttpTargetConfig {
    /// The URL template (`{id}` … percent-encoded when filled); may carry secrets: redacted.
    pub url: SecretHttpUrl,
    pub method: HttpMethod,
    /// The POST body template (`{{`/`}}` are literal braces; values are JSON-escaped).
    pub body: Option<String>,
    pub token: Option<SecretToken>,
    pub timeout: Span,
    pub verify_url: Option<SecretHttpUrl>,
    pub concurrency: usize,
    /// The account-level purge (R8): a DELETE of this URL (`{account}`, `{org}` only).
    pub account_url: Option<SecretHttpUrl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Delete,
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Delete => "DELETE",
            HttpMethod::Post => "POST",
        }
    }
}

/// Checks an `http` target: each URL template is http(s) with no placeholder before its path (a
/// value never picks the host the token goes to), the token is read now (a missing or empty
/// one is an error naming its key). Returns the config and the attributes its templates name.
pub(super) fn build(
    ctx: &Ctx<'_>,
    key: &str,
    h: RawHttpTarget,
) -> Result<(HttpTargetConfig, Vec<String>), ConfigError> {
    let mut attrs = Vec::new();
    // `url_env`/`url_file`: a URL that authorises by itself (`?api_key=…`) stays out of the file.
    let (raw_url, url_key) = one_url(ctx, key, h.url, h.url_env, h.url_file)?;
    let url = check_http_template(ctx, &url_key, &raw_url, false)?;
    attrs.extend(attr_names(&url.1));
    let verify_url = match h.verify_url {
        Some(v) => {
            let (u, names) = check_http_template(ctx, &format!("{key}.verify_url"), &v, false)?;
            attrs.extend(attr_names(&names));
            Some(u)
        }
        None => None,
    };
    let account_url = match h.account_url {
        Some(a) => Some(check_http_template(ctx, &format!("{key}.account_url"), &a, true)?.0),
        None => None,
    };
    let method = match h.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("DELETE") => HttpMethod::Delete,
        Some("POST") => HttpMethod::Post,
        Some(_) => {
            return Err(ctx.err(
                format!("{key}.method"),
                format!(
                    "`{}` is not DELETE or POST",
                    h.method.unwrap_or_default().escape_debug()
                ),
            ));
        }
    };
    if let Some(body) = &h.body {
        if method != HttpMethod::Post {
            return Err(ctx.err(
                format!("{key}.body"),
                "a body is sent only with method = \"POST\"",
            ));
        }
        let names =
            template::body_placeholders(body).map_err(|m| ctx.err(format!("{key}.body"), m))?;
        attrs.extend(attr_names(&names));
    }
    let token = read_secret(ctx, key, "token", h.token_file, h.token_env)?;
    let timeout = match &h.timeout {
        Some(t) => Span::parse(t).map_err(|m| ctx.err(format!("{key}.timeout"), m))?,
        None => Span::from_secs(10),
    };
    if timeout < Span::from_millis(1) || timeout > Span::from_secs(600) {
        return Err(ctx.err(
            format!("{key}.timeout"),
            format!("{timeout} is out of range 1ms..=10m"),
        ));
    }
    let concurrency = h.concurrency.unwrap_or(8);
    if concurrency == 0 || concurrency > 256 {
        return Err(ctx.err(
            format!("{key}.concurrency"),
            format!("{concurrency} is out of range 1..=256"),
        ));
    }
    Ok((
        HttpTargetConfig {
            url: url.0,
            method,
            body: h.body,
            token,
            timeout,
            verify_url,
            concurrency,
            account_url,
        },
        attrs,
    ))
}

/// An http target's URL template: `http://` or `https://`, a host, no placeholder in the
/// scheme or authority, no fragment. A resource URL must name the resource (`{id}` or an
/// `{attrs.NAME}`); an account URL uses `{account}` (and may use `{org}`), nothing else.
fn check_http_template(
    ctx: &Ctx<'_>,
    key: &str,
    template: &str,
    account: bool,
) -> Result<(SecretHttpUrl, Vec<String>), ConfigError> {
    let u = SecretHttpUrl::new(template);
    let shown = u.redacted();
    let names =
        template_placeholders(template).map_err(|m| ctx.err(key, m.replace(template, &shown)))?;
    let lower = template.to_ascii_lowercase();
    let rest = match (
        lower.strip_prefix("http://"),
        lower.strip_prefix("https://"),
    ) {
        (Some(r), _) | (_, Some(r)) => r,
        _ => {
            return Err(ctx.err(key, format!("`{shown}` is not an http:// or https:// URL")));
        }
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('{') {
        return Err(ctx.err(
            key,
            format!(
                "`{shown}`: placeholders may not choose the host; put them in the path or query"
            ),
        ));
    }
    if template.contains('#') {
        return Err(ctx.err(
            key,
            format!("`{shown}` has a fragment (`#`), which is never sent"),
        ));
    }
    let sample = template::sample_url(template);
    match url::Url::parse(&sample) {
        Ok(p) if p.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(_) => return Err(ctx.err(key, format!("`{shown}` has no host"))),
        Err(e) => return Err(ctx.err(key, format!("`{shown}` is not a valid URL ({e})"))),
    }
    if account {
        if !names.iter().any(|n| n == "account")
            || names.iter().any(|n| n != "account" && n != "org")
        {
            return Err(ctx.err(
                key,
                format!("`{shown}` must contain {{account}} and may use {{org}}, nothing else"),
            ));
        }
    } else if !names.iter().any(|n| n == "id" || n.starts_with("attrs.")) {
        return Err(ctx.err(
            key,
            format!("`{shown}` must contain {{id}} (or an {{attrs.NAME}}), or every resource would map to one URL"),
        ));
    }
    Ok((u, names))
}
