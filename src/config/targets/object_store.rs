//! `type = "object_store"`: an S3 bucket (or an S3-compatible server), one key per resource.
//! Credentials are resolved when the config is loaded, never written inline.

use std::fmt;
use std::path::Path;

use crate::model::Span;
use crate::template::{key_placeholders, template_placeholders};

use super::super::raw::RawObjectStoreTarget;
use super::super::secret::redact_url;
use super::super::{ConfigError, Ctx};
use super::attr_names;

/// An `object_store` target: an S3 bucket (or an S3-compatible server) and the key of each
/// resource under a prefix.
#[derive(Debug, Clone)]
pub struct ObjectStoreTargetConfig {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// `endpoint` (path-style addressing), or `None` for AWS S3 in `region`.
    pub endpoint: Option<url::Url>,
    pub region: String,
    pub key: String,
    pub versions: ObjectVersions,
    pub account_prefix: Option<String>,
    pub credentials: S3Credentials,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per request.
    pub timeout: Span,
}

/// What an object-store purge deletes of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectVersions {
    /// Every version and delete marker (a versioned bucket keeps old versions otherwise).
    All,
    /// The current object only (a versioned bucket then keeps its older versions).
    Current,
}

/// S3 credentials, resolved when the config is loaded. `Debug` never shows the secret parts.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where they came from (`access_key_id_env`, `AWS_ACCESS_KEY_ID` …), for `check-config`.
    pub source: String,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Credentials(from {}, secret ***)", self.source)
    }
}

/// Validates an `object_store` target and resolves its credentials. Returns the config and the
/// attributes its key template names.
pub(super) fn build(
    ctx: &Ctx<'_>,
    key: &str,
    o: RawObjectStoreTarget,
) -> Result<(ObjectStoreTargetConfig, Vec<String>), ConfigError> {
    let url_key = format!("{key}.url");
    let (scheme, rest) = o.url.split_once("://").ok_or_else(|| {
        ctx.err(
            &url_key,
            format!("`{}` is not a URL like \"s3://bucket/prefix\"", o.url),
        )
    })?;
    match scheme {
        "s3" => {}
        "gs" => {
            return Err(ctx.err(
                &url_key,
                format!("`{}`: gs:// is not supported; use Google Cloud Storage through its S3-compatible XML API: url = \"s3://BUCKET/prefix\", endpoint = \"https://storage.googleapis.com\" and HMAC keys", o.url),
            ));
        }
        "az" | "azure" | "abfs" | "abfss" => {
            return Err(ctx.err(
                &url_key,
                format!("`{}`: Azure Blob Storage is not supported: only S3 and S3-compatible servers (s3://, with `endpoint`)", o.url),
            ));
        }
        "file" => {
            return Err(ctx.err(
                &url_key,
                format!("`{}`: file:// is not an object store; use a `files` target (type = \"files\") for a local disk", o.url),
            ));
        }
        other => {
            return Err(ctx.err(
                &url_key,
                format!(
                    "`{}`: unknown scheme `{other}`; only s3://bucket/prefix is supported",
                    o.url
                ),
            ));
        }
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !bucket_ok {
        return Err(ctx.err(
            &url_key,
            format!(
                "`{bucket}` is not an S3 bucket name (3-63 lowercase letters, digits, `.` or `-`)"
            ),
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix
        .split('/')
        .any(|s| (s.is_empty() && !prefix.is_empty()) || s == "." || s == "..")
        || prefix.contains(['?', '#'])
    {
        return Err(ctx.err(
            &url_key,
            format!(
                "`{}`: the prefix `{prefix}` has an empty, `.` or `..` segment, or `?`/`#`",
                o.url
            ),
        ));
    }
    let endpoint = match o.endpoint.clone() {
        None => None,
        Some(e) => {
            let u = url::Url::parse(&e).map_err(|err| {
                ctx.err(
                    format!("{key}.endpoint"),
                    format!("`{}` is not a URL ({err})", redact_url(&e)),
                )
            })?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(ctx.err(
                    format!("{key}.endpoint"),
                    format!(
                        "`{}` must be an http:// or https:// URL with a host",
                        redact_url(&e)
                    ),
                ));
            }
            if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                return Err(ctx.err(
                    format!("{key}.endpoint"),
                    "must not carry credentials or a query; use access_key_id_env/secret_access_key_env or the *_file keys",
                ));
            }
            Some(u)
        }
    };
    let region = o.region.clone().unwrap_or_else(|| "us-east-1".into());
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ctx.err(
            format!("{key}.region"),
            format!("`{region}` is not a region name"),
        ));
    }
    let names = key_placeholders(&o.key).map_err(|m| ctx.err(format!("{key}.key"), m))?;
    if !names.iter().any(|n| n == "id" || n.starts_with("attrs.")) {
        return Err(ctx.err(
            format!("{key}.key"),
            format!(
                "`{}` must contain {{id}} (or an {{attrs.NAME}}), or every resource would map to one key",
                o.key
            ),
        ));
    }
    let versions = match o.versions.as_deref() {
        None | Some("all") => ObjectVersions::All,
        Some("current") => ObjectVersions::Current,
        Some(v) => {
            return Err(ctx.err(
                format!("{key}.versions"),
                format!("`{v}` is not \"all\" or \"current\""),
            ));
        }
    };
    if let Some(ap) = &o.account_prefix {
        let names =
            template_placeholders(ap).map_err(|m| ctx.err(format!("{key}.account_prefix"), m))?;
        let segments_ok = !ap.starts_with('/')
            && ap
                .trim_end_matches('/')
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        if !names.iter().any(|n| n == "account")
            || names.iter().any(|n| n != "account" && n != "org")
            || !ap.ends_with('/')
            || !segments_ok
        {
            return Err(ctx.err(
                format!("{key}.account_prefix"),
                format!("`{ap}` must contain {{account}}, may use {{org}}, and must end with `/` (so account a1 never takes a10's keys), without empty, `.` or `..` segments"),
            ));
        }
    }
    let concurrency = o.concurrency.unwrap_or(4);
    if !(1..=64).contains(&concurrency) {
        return Err(ctx.err(
            format!("{key}.concurrency"),
            format!("{concurrency} is out of range 1..=64"),
        ));
    }
    let timeout = o.timeout.unwrap_or(Span::from_secs(30));
    if timeout < Span::from_secs(1) {
        return Err(ctx.err(
            format!("{key}.timeout"),
            format!("{timeout} is shorter than 1s"),
        ));
    }
    let credentials = s3_credentials(ctx, key, &o)?;
    let attrs = attr_names(&template_placeholders(&o.key).unwrap_or_default()).collect();
    Ok((
        ObjectStoreTargetConfig {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint,
            region,
            key: o.key,
            versions,
            account_prefix: o.account_prefix,
            credentials,
            concurrency,
            timeout,
        },
        attrs,
    ))
}

/// Credentials of an object store: a pair of `*_env` keys, or of `*_file` keys (systemd
/// `LoadCredential=`), or else the standard `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN`). Never inline. A missing one is an error naming the key.
fn s3_credentials(
    ctx: &Ctx<'_>,
    key: &str,
    o: &RawObjectStoreTarget,
) -> Result<S3Credentials, ConfigError> {
    let env = |k: &str, var: &str| -> Result<String, ConfigError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            _ => Err(ctx.err(
                format!("{key}.{k}"),
                format!("environment variable `{var}` is not set (or empty)"),
            )),
        }
    };
    let file = |k: &str, path: &Path| -> Result<String, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Ok(_) => Err(ctx.err(
                format!("{key}.{k}"),
                format!("`{}` is empty", path.display()),
            )),
            Err(e) => Err(ctx.err(
                format!("{key}.{k}"),
                format!("cannot read `{}`: {e}", path.display()),
            )),
        }
    };
    let by_env = o.access_key_id_env.is_some() || o.secret_access_key_env.is_some();
    let by_file = o.access_key_id_file.is_some() || o.secret_access_key_file.is_some();
    if by_env && by_file {
        return Err(ctx.err(
            key,
            "give the credentials either by `*_env` or by `*_file` keys, not both",
        ));
    }
    let missing = |k: &str, other: &str| {
        ctx.err(
            format!("{key}.{k}"),
            format!("missing: it goes with `{other}`"),
        )
    };
    if by_env {
        let (Some(id), Some(secret)) = (&o.access_key_id_env, &o.secret_access_key_env) else {
            return Err(if o.access_key_id_env.is_none() {
                missing("access_key_id_env", "secret_access_key_env")
            } else {
                missing("secret_access_key_env", "access_key_id_env")
            });
        };
        return Ok(S3Credentials {
            access_key_id: env("access_key_id_env", id)?,
            secret_access_key: env("secret_access_key_env", secret)?,
            session_token: o
                .session_token_env
                .as_deref()
                .map(|t| env("session_token_env", t))
                .transpose()?,
            source: format!("${id}/${secret}"),
        });
    }
    if by_file {
        let (Some(id), Some(secret)) = (&o.access_key_id_file, &o.secret_access_key_file) else {
            return Err(if o.access_key_id_file.is_none() {
                missing("access_key_id_file", "secret_access_key_file")
            } else {
                missing("secret_access_key_file", "access_key_id_file")
            });
        };
        return Ok(S3Credentials {
            access_key_id: file("access_key_id_file", id)?,
            secret_access_key: file("secret_access_key_file", secret)?,
            session_token: o
                .session_token_file
                .as_deref()
                .map(|t| file("session_token_file", t))
                .transpose()?,
            source: format!("{} and {}", id.display(), secret.display()),
        });
    }
    if o.session_token_env.is_some() || o.session_token_file.is_some() {
        return Err(ctx.err(
            key,
            "a session token goes with access_key_id_env/secret_access_key_env or the *_file keys",
        ));
    }
    let std_var = |var: &str| {
        std::env::var(var)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (std_var("AWS_ACCESS_KEY_ID"), std_var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(S3Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: std_var("AWS_SESSION_TOKEN"),
            source: "$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY".into(),
        }),
        _ => Err(ctx.err(
            format!("{key}.access_key_id_env"),
            "no credentials: set access_key_id_env and secret_access_key_env, or access_key_id_file and secret_access_key_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
        )),
    }
}
