//! `[http]`: the API's address and the bearer tokens it accepts. Every token has a unique name
//! (it is recorded as `via`, saying who acted) and at least one known scope.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use crate::model::Span;

use super::raw::RawHttp;
use super::secret::token_source;
use super::{ConfigError, Ctx, check_name};

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: String,
    /// Every accepted token: `[[http.tokens]]`, then the legacy write token (`token_file` /
    /// `token_env`, scopes events, read, holds) and read token (`read_token_*`, scope read).
    pub tokens: Vec<TokenConfig>,
    /// Whether the legacy keys were used (the daemon then warns once at start-up).
    pub legacy_tokens: bool,
    pub max_body: usize,
    pub timeout: Span,
}

/// A bearer token the API accepts: its name (recorded as `via`), where its secret is, and
/// what it may do.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub name: String,
    /// The config key its secret comes from, for errors (`http.tokens[0]`, `http.token`).
    pub key: String,
    pub source: TokenSource,
    pub scopes: BTreeSet<Scope>,
}

/// What a bearer token may do (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `POST /v1/events`.
    Events,
    /// Every `GET` under `/v1`.
    Read,
    /// Place and release legal holds.
    Holds,
    /// Create and update orgs, training opt-out, request ZDR.
    Orgs,
    /// Approve and deny ZDR requests.
    ZdrDecide,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Events,
        Scope::Read,
        Scope::Holds,
        Scope::Orgs,
        Scope::ZdrDecide,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Events => "events",
            Scope::Read => "read",
            Scope::Holds => "holds",
            Scope::Orgs => "orgs",
            Scope::ZdrDecide => "zdr:decide",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

/// The API's config, or `None` when `[http]` is absent or has no `listen`.
pub(super) fn build(
    ctx: &Ctx<'_>,
    raw: Option<RawHttp>,
) -> Result<Option<HttpConfig>, ConfigError> {
    Ok(match raw {
        None => None,
        Some(h) => {
            let write_token = token_source(ctx, "http.token", h.token_file, h.token_env)?;
            let read_token =
                token_source(ctx, "http.read_token", h.read_token_file, h.read_token_env)?;
            match h.listen {
                None => None,
                Some(listen) => {
                    if listen.parse::<std::net::SocketAddr>().is_err() {
                        return Err(ctx.err(
                            "http.listen",
                            format!("`{listen}` is not an address like \"127.0.0.1:9464\""),
                        ));
                    }
                    let legacy_tokens = write_token.is_some() || read_token.is_some();
                    let mut tokens = Vec::new();
                    for (i, t) in h.tokens.into_iter().enumerate() {
                        let key = format!("http.tokens[{i}]");
                        check_name(ctx, &format!("{key}.name"), &t.name)?;
                        let source = match (t.file, t.env) {
                            (Some(f), None) => TokenSource::File(f),
                            (None, Some(e)) => TokenSource::Env(e),
                            (Some(_), Some(_)) => {
                                return Err(ctx.err(key, "give either `file` or `env`, not both"));
                            }
                            (None, None) => {
                                return Err(ctx.err(
                                    key,
                                    "missing: give `file` (a token file) or `env` (a variable)",
                                ));
                            }
                        };
                        let mut scopes = BTreeSet::new();
                        for (j, sc) in t.scopes.iter().enumerate() {
                            let Some(scope) = Scope::parse(sc) else {
                                return Err(ctx.err(
                                    format!("{key}.scopes[{j}]"),
                                    format!(
                                        "unknown scope `{sc}` (scopes: events, read, holds, orgs, zdr:decide)"
                                    ),
                                ));
                            };
                            scopes.insert(scope);
                        }
                        if scopes.is_empty() {
                            return Err(ctx.err(
                                format!("{key}.scopes"),
                                "empty: a token needs at least one scope",
                            ));
                        }
                        tokens.push(TokenConfig {
                            name: t.name,
                            key,
                            source,
                            scopes,
                        });
                    }
                    if let Some(source) = write_token {
                        tokens.push(TokenConfig {
                            name: h.token_name.unwrap_or_else(|| "http-token".into()),
                            key: "http.token".into(),
                            source,
                            scopes: [Scope::Events, Scope::Read, Scope::Holds].into(),
                        });
                    }
                    if let Some(source) = read_token {
                        tokens.push(TokenConfig {
                            name: "read-token".into(),
                            key: "http.read_token".into(),
                            source,
                            scopes: [Scope::Read].into(),
                        });
                    }
                    let mut names = BTreeSet::new();
                    for t in &tokens {
                        if !names.insert(t.name.as_str()) {
                            return Err(ctx.err(
                                format!("{}.name", t.key),
                                format!(
                                    "two tokens are named `{}`: a name says who acted (`via`), so it must be unique",
                                    t.name
                                ),
                            ));
                        }
                    }
                    Some(HttpConfig {
                        listen,
                        tokens,
                        legacy_tokens,
                        max_body: h.max_body.unwrap_or(16 * 1024 * 1024),
                        timeout: h.timeout.unwrap_or(Span::from_secs(30)),
                    })
                }
            }
        }
    })
}
