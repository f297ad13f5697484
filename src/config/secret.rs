//! Secrets in the config are never printed: a `SecretUrl`, `SecretHttpUrl` or `SecretToken`
//! shows itself redacted (`Debug` included), and only `expose()` hands out the value, at the
//! one place that sends it.
//!
//! The mechanism: URLs and tokens are wrapped the moment they are read (inline, from an
//! environment variable or from a file, all resolved here), and every error about them names
//! the key and the redacted form, never the value.

use std::fmt;
use std::path::PathBuf;

use super::{ConfigError, Ctx, TokenSource};

/// A value that must not be printed: a database URL may carry a password.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }
    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// An http target's URL template (`url`, `verify_url`, `account_url`): a service's deletion API
/// is often authorised by the URL itself (`?api_key=…`, a signature `?sig=…`, a key as the
/// user-info `https://KEY@host/`), so it is shown with [`redact_http_url`], which hides more
/// than [`redact_url`] does.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHttpUrl(String);

impl SecretHttpUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretHttpUrl(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The template with its user-info and every query value replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_http_url(&self.0)
    }
}

impl fmt::Debug for SecretHttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// How an http target's URL template is printed (check-config, logs, errors, `status`): the
/// user-info, whatever it holds (`KEY@`, `user:pass@`), becomes `***@`; every query value
/// becomes `***` (a parameter without `=` becomes `***` whole), except a value that is exactly
/// one placeholder (`?account={account}`: the template, not a value); a fragment becomes `#***`.
/// The scheme, host, port and path are kept as written, placeholders included. Works on the
/// text, not on a parsed URL, so a template that does not parse is redacted just the same. A
/// secret in the *path* cannot be told from an id and is shown: put secrets in `token_file`.
pub fn redact_http_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => raw.split_at(i + 3),
        None => ("", raw),
    };
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) if !f.is_empty() => (r, "#***"),
        Some((r, _)) => (r, "#"),
        None => (rest, ""),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let query = query.map(|q| {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if v.is_empty() || is_one_placeholder(v) => format!("{k}={v}"),
                Some((k, _)) => format!("{k}=***"),
                None if pair.is_empty() => String::new(),
                None => "***".to_string(),
            })
            .collect();
        format!("?{}", pairs.join("&"))
    });
    format!(
        "{scheme}{host}{path}{}{fragment}",
        query.unwrap_or_default()
    )
}

/// `{name}` with a placeholder name (letters, digits, `_`, `.`): a template's value, not a
/// secret.
fn is_one_placeholder(v: &str) -> bool {
    v.strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
}

/// Query parameters whose value is a secret (a password in `?password=` or `?sslpassword=`).
fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|s| k.contains(s))
}

/// Every URL retentiond prints (ledger, targets, sources) goes through here: parsed as sqlx
/// parses it (the `url` crate: the user-info ends at the *last* `@`), the password and every
/// secret query parameter replaced by `***`. A URL that does not parse shows its scheme only,
/// since where its secret ends cannot be known.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return match raw.split_once(':') {
            Some((scheme, _))
                if scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
            {
                format!("{scheme}://*** (not a valid URL; redacted)")
            }
            _ => "*** (not a valid URL; redacted)".to_string(),
        };
    };
    let secret_password = u.password().is_some_and(|p| !p.is_empty());
    let secret_query = u
        .query_pairs()
        .any(|(k, v)| is_secret_param(&k) && !v.is_empty());
    if !secret_password && !secret_query {
        // Nothing to hide: print it as written, not as the parser would normalise it.
        return raw.to_string();
    }
    if secret_password {
        let _ = u.set_password(Some("***"));
    }
    if let Some(query) = u.query().map(str::to_string) {
        // Rewrite only the secret values; keep every other parameter exactly as written.
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if is_secret_param(
                        &url::form_urlencoded::parse(k.as_bytes())
                            .next()
                            .map(|(k, _)| k.into_owned())
                            .unwrap_or_default(),
                    ) =>
                {
                    format!("{k}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        u.set_query(Some(&redacted.join("&")));
    }
    u.to_string()
}

/// Connection parameters sqlx's PostgreSQL driver understands in a URL's query. It ignores any
/// other one and logs it *with its value*, so an unknown one (`sslpassword=…`) is a config error.
const PG_URL_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A bearer token: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where a section's URL comes from: exactly one of `url` (inline), `url_env` (an environment
/// variable) or `url_file` (a file holding it, e.g. a systemd `LoadCredential=` credential).
/// Every section that takes a database URL resolves it here.
pub(super) fn resolve_url(
    ctx: &Ctx<'_>,
    key: &str,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
) -> Result<SecretUrl, ConfigError> {
    let (u, k) = one_url(ctx, key, url, url_env, url_file)?;
    check_url(ctx, &k, u)
}

/// The value of exactly one of `url`, `url_env` or `url_file` (read now), and the key it came
/// by (`{key}.url_env` …), for the errors about it.
pub(super) fn one_url(
    ctx: &Ctx<'_>,
    key: &str,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
) -> Result<(String, String), ConfigError> {
    let given = [url.is_some(), url_env.is_some(), url_file.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given > 1 {
        return Err(ctx.err(
            key,
            "give one of `url`, `url_env` or `url_file`, not several",
        ));
    }
    if let Some(u) = url {
        return Ok((u, format!("{key}.url")));
    }
    if let Some(var) = url_env {
        return match std::env::var(&var) {
            Ok(u) => Ok((u, format!("{key}.url_env"))),
            Err(_) => Err(ctx.err(
                format!("{key}.url_env"),
                format!("environment variable `{var}` is not set"),
            )),
        };
    }
    if let Some(path) = url_file {
        return match std::fs::read_to_string(&path) {
            // One line; the newline an editor or `echo` leaves is not part of the URL.
            Ok(text) => Ok((text.trim().to_string(), format!("{key}.url_file"))),
            Err(e) => Err(ctx.err(
                format!("{key}.url_file"),
                format!("cannot read `{}`: {e}", path.display()),
            )),
        };
    }
    Err(ctx.err(
        format!("{key}.url"),
        "missing: set `url`, `url_env` or `url_file`",
    ))
}

fn check_url(ctx: &Ctx<'_>, key: &str, url: String) -> Result<SecretUrl, ConfigError> {
    let u = SecretUrl::new(url);
    if u.is_postgres() {
        let parsed = url::Url::parse(u.expose())
            .map_err(|e| ctx.err(key, format!("`{}` is not a valid URL ({e})", u.redacted())))?;
        for (k, _) in parsed.query_pairs() {
            if !PG_URL_PARAMS.contains(&k.as_ref()) && !k.starts_with("options[") {
                return Err(ctx.err(
                    key,
                    format!(
                        "`{}`: `{k}` is not a PostgreSQL connection parameter retentiond can pass on (known: {}, options[NAME])",
                        u.redacted(),
                        PG_URL_PARAMS.join(", ")
                    ),
                ));
            }
        }
        Ok(u)
    } else if u.is_sqlite() {
        Ok(u)
    } else {
        Err(ctx.err(
            key,
            format!("`{}` is not a sqlite:// or postgres:// URL", u.redacted()),
        ))
    }
}

pub(super) fn token_source(
    ctx: &Ctx<'_>,
    key: &str,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Option<TokenSource>, ConfigError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(ctx.err(
            key,
            "give either a token file or a token env variable, not both",
        )),
        (Some(f), None) => Ok(Some(TokenSource::File(f))),
        (None, Some(e)) => Ok(Some(TokenSource::Env(e))),
        (None, None) => Ok(None),
    }
}

/// A secret from `{key}.{what}_file` or `{key}.{what}_env` (exactly one may be given), read
/// now: a missing, empty or unprintable one is an error naming its key.
pub(super) fn read_secret(
    ctx: &Ctx<'_>,
    key: &str,
    what: &str,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Option<SecretToken>, ConfigError> {
    Ok(match token_source(ctx, key, file, env)? {
        None => None,
        Some(TokenSource::File(path)) => {
            let k = format!("{key}.{what}_file");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ctx.err(&k, format!("cannot read `{}`: {e}", path.display())))?;
            Some(check_token(
                ctx,
                &k,
                text.trim(),
                &path.display().to_string(),
            )?)
        }
        Some(TokenSource::Env(var)) => {
            let k = format!("{key}.{what}_env");
            let v = std::env::var(&var).unwrap_or_default();
            Some(check_token(
                ctx,
                &k,
                v.trim(),
                &format!("environment variable `{var}`"),
            )?)
        }
    })
}

/// A token read from `source`: non-empty, and sendable in a header (visible ASCII). The error
/// names where it came from, never its value.
fn check_token(
    ctx: &Ctx<'_>,
    key: &str,
    token: &str,
    source: &str,
) -> Result<SecretToken, ConfigError> {
    if token.is_empty() {
        return Err(ctx.err(key, format!("{source} is missing or empty")));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ctx.err(
            key,
            format!("{source} holds a token with spaces or characters a header cannot carry"),
        ));
    }
    Ok(SecretToken(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let u = SecretUrl::new("postgres://app:hunter2@db/app");
        assert_eq!(u.redacted(), "postgres://app:***@db/app");
        assert!(!format!("{u:?}").contains("hunter2"));
        // Every form sqlx accepts, each with its secret gone (issue 22).
        for (url, shown) in [
            ("postgres://app:p@ss@db/app", "postgres://app:***@db/app"),
            (
                "postgresql://app:p%40ss@db:5432/app",
                "postgresql://app:***@db:5432/app",
            ),
            ("postgres://:s3cret@db/app", "postgres://:***@db/app"),
            (
                "postgres://db/app?user=app&password=s3cret",
                "postgres://db/app?user=app&password=***",
            ),
            (
                "postgres://app@db/app?sslpassword=s3cret&sslmode=require",
                "postgres://app@db/app?sslpassword=***&sslmode=require",
            ),
            (
                "postgres://app:a:b@c@db/app?options[search_path]=x",
                "postgres://app:***@db/app?options[search_path]=x",
            ),
            (
                "postgres://app:pa/ss@db/app",
                "postgres://*** (not a valid URL; redacted)",
            ),
            (
                "sqlite:///var/lib/retentiond/ledger.db",
                "sqlite:///var/lib/retentiond/ledger.db",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            for secret in ["p@ss", "p%40ss", "s3cret", "a:b@c", "pa/ss"] {
                assert!(!redact_url(url).contains(secret), "{url}");
            }
        }
    }

    /// An http target's URL hides what `redact_url` keeps: any query value (`api_key`, `sig`)
    /// and a user-only user-info (`https://KEY@host/`); placeholders and the path stay.
    #[test]
    fn http_target_urls_hide_user_info_and_every_query_value() {
        for (url, shown) in [
            (
                "https://svc/v1/docs/{id}?api_key=K3Y&sig=S1G",
                "https://svc/v1/docs/{id}?api_key=***&sig=***",
            ),
            (
                "https://K3Y@svc/v1/docs/{id}",
                "https://***@svc/v1/docs/{id}",
            ),
            (
                "http://u:S1G@svc:8080/d/{id}?account={account}&x=K3Y",
                "http://***@svc:8080/d/{id}?account={account}&x=***",
            ),
            (
                "http://svc/d/{id}?K3Y&a=&b={attrs.c}",
                "http://svc/d/{id}?***&a=&b={attrs.c}",
            ),
            (
                "http://svc/d/{id}?a={id}K3Y&b=S1G;c=d#K3Y",
                "http://svc/d/{id}?a=***&b=***#***",
            ),
            ("K3Y@svc/d/{id}?t=S1G", "***@svc/d/{id}?t=***"),
            (
                "http://127.0.0.1:8081/v1/documents/{id}",
                "http://127.0.0.1:8081/v1/documents/{id}",
            ),
        ] {
            let u = SecretHttpUrl::new(url);
            assert_eq!(u.redacted(), shown, "{url}");
            for secret in ["K3Y", "S1G"] {
                assert!(!u.redacted().contains(secret), "{url}");
                assert!(!format!("{u:?}").contains(secret), "{url}");
            }
        }
        // What the database URLs' redaction (all an http URL had before) lets through.
        assert!(redact_url("https://svc/d/{id}?api_key=K3Y").contains("K3Y"));
        assert!(redact_url("https://K3Y@svc/d/{id}").contains("K3Y"));
    }
}
