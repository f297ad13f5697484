//! `type = "object_store"`: one key per resource in an S3 bucket (or an S3-compatible server),
//! an Azure Blob Storage container (az://), a Google Cloud Storage bucket (gs://), or a local
//! directory (file://). Credentials are resolved when the config is loaded, never written inline.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::model::Span;
use crate::template::{key_placeholders, template_placeholders};

use super::super::raw::RawObjectStoreTarget;
use super::super::secret::{SecretToken, read_secret, redact_url};
use super::super::{ConfigError, Ctx};
use super::attr_names;

/// An `object_store` target: where the objects are, and the key of each resource under the
/// url's prefix.
#[derive(Debug, Clone)]
pub struct ObjectStoreTargetConfig {
    pub store: StoreLocation,
    /// Without leading or trailing `/`; empty for the bucket's (container's, root's) top.
    pub prefix: String,
    pub key: String,
    pub versions: ObjectVersions,
    pub account_prefix: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per request.
    pub timeout: Span,
}

/// The store behind an `object_store` target, by the url's scheme.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// s3:// — spoken directly (every version of a key can be listed and deleted).
    S3(S3Location),
    /// file:// — a local directory; the url's whole path is the root, `prefix` is empty.
    File { root: PathBuf },
    /// az:// — Azure Blob Storage, through the `object_store` crate.
    Azure(AzureLocation),
    /// gs:// — Google Cloud Storage, through the `object_store` crate.
    Gcs(GcsLocation),
}

#[derive(Debug, Clone)]
pub struct S3Location {
    pub bucket: String,
    /// `endpoint` (path-style addressing), or `None` for AWS S3 in `region`.
    pub endpoint: Option<url::Url>,
    pub region: String,
    pub credentials: S3Credentials,
}

#[derive(Debug, Clone)]
pub struct AzureLocation {
    pub container: String,
    pub account: String,
    /// `endpoint` (e.g. Azurite, a private endpoint), or `None` for
    /// `https://ACCOUNT.blob.core.windows.net`.
    pub endpoint: Option<url::Url>,
    pub credential: AzureCredential,
}

/// How an az:// target authenticates.
#[derive(Debug, Clone)]
pub enum AzureCredential {
    /// The storage account's shared key (`access_key_env`/`access_key_file`).
    AccessKey(SecretToken, String),
    /// A SAS token (`sas_token_env`/`sas_token_file`).
    SasToken(SecretToken, String),
    /// The standard `AZURE_*` environment variables, read by the `object_store` crate; the
    /// string names the variable that was found.
    Env(String),
}

#[derive(Debug, Clone)]
pub struct GcsLocation {
    pub bucket: String,
    /// `endpoint` (an emulator, a private endpoint), or `None` for storage.googleapis.com.
    pub endpoint: Option<url::Url>,
    pub credential: GcsCredential,
}

/// How a gs:// target authenticates.
#[derive(Clone)]
pub enum GcsCredential {
    /// A service-account JSON key read from `service_account_file` (the path kept for display).
    ServiceAccount(String, PathBuf),
    /// The standard `GOOGLE_*` environment variables, read by the `object_store` crate.
    Env(String),
}

impl fmt::Debug for GcsCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcsCredential::ServiceAccount(_, p) => {
                write!(f, "ServiceAccount({}, ***)", p.display())
            }
            GcsCredential::Env(v) => write!(f, "Env({v})"),
        }
    }
}

impl ObjectStoreTargetConfig {
    /// The url as configured (`s3://bucket/prefix`, `file:///root`, …), for `check-config`.
    pub fn url_shown(&self) -> String {
        let with_prefix = |scheme: &str, top: &str| {
            if self.prefix.is_empty() {
                format!("{scheme}://{top}")
            } else {
                format!("{scheme}://{top}/{}", self.prefix)
            }
        };
        match &self.store {
            StoreLocation::S3(s) => format!("s3://{}/{}", s.bucket, self.prefix),
            StoreLocation::File { root } => format!("file://{}", root.display()),
            StoreLocation::Azure(a) => with_prefix("az", &a.container),
            StoreLocation::Gcs(g) => with_prefix("gs", &g.bucket),
        }
    }

    /// The endpoint, if one is configured.
    pub fn endpoint(&self) -> Option<&url::Url> {
        match &self.store {
            StoreLocation::S3(s) => s.endpoint.as_ref(),
            StoreLocation::Azure(a) => a.endpoint.as_ref(),
            StoreLocation::Gcs(g) => g.endpoint.as_ref(),
            StoreLocation::File { .. } => None,
        }
    }

    /// Where the credentials come from (never their value); `None` for file://.
    pub fn credentials_source(&self) -> Option<String> {
        match &self.store {
            StoreLocation::S3(s) => Some(s.credentials.source.clone()),
            StoreLocation::File { .. } => None,
            StoreLocation::Azure(a) => Some(match &a.credential {
                AzureCredential::AccessKey(_, s) | AzureCredential::SasToken(_, s) => s.clone(),
                AzureCredential::Env(v) => format!("${v}"),
            }),
            StoreLocation::Gcs(g) => Some(match &g.credential {
                GcsCredential::ServiceAccount(_, p) => p.display().to_string(),
                GcsCredential::Env(v) => format!("${v}"),
            }),
        }
    }
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    S3,
    File,
    Azure,
    Gcs,
}

/// A bucket or container name: 3-63 of lowercase letters, digits and `extra`, starting and
/// ending with a letter or digit.
fn name_ok(name: &str, extra: &[u8]) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Validates an `object_store` target and resolves its credentials. Returns the config and the
/// attributes its key template names.
pub(super) fn build(
    ctx: &Ctx<'_>,
    key: &str,
    o: RawObjectStoreTarget,
) -> Result<(ObjectStoreTargetConfig, Vec<String>), ConfigError> {
    let url_key = format!("{key}.url");
    let (scheme_text, rest) = o.url.split_once("://").ok_or_else(|| {
        ctx.err(
            &url_key,
            format!("`{}` is not a URL like \"s3://bucket/prefix\"", o.url),
        )
    })?;
    let scheme = match scheme_text {
        "s3" => Scheme::S3,
        "gs" => Scheme::Gcs,
        "az" | "azure" => Scheme::Azure,
        "file" => Scheme::File,
        "abfs" | "abfss" => {
            return Err(ctx.err(
                &url_key,
                format!("`{}`: write an Azure Blob Storage container as az://CONTAINER/prefix (with `account`)", o.url),
            ));
        }
        other => {
            return Err(ctx.err(
                &url_key,
                format!(
                    "`{}`: unknown scheme `{other}`; use s3://, az://, gs:// or file://",
                    o.url
                ),
            ));
        }
    };
    refuse_foreign_keys(ctx, key, scheme, &o)?;
    let (top, prefix) = if scheme == Scheme::File {
        ("", rest)
    } else {
        rest.split_once('/').unwrap_or((rest, ""))
    };
    let top_ok = match scheme {
        Scheme::S3 => name_ok(top, b".-"),
        Scheme::Azure => name_ok(top, b"-") && !top.contains("--"),
        Scheme::Gcs => name_ok(top, b"-_."),
        Scheme::File => true,
    };
    if !top_ok {
        let what = match scheme {
            Scheme::S3 => "an S3 bucket name (3-63 lowercase letters, digits, `.` or `-`)",
            Scheme::Azure => {
                "an Azure container name (3-63 lowercase letters, digits or single `-`)"
            }
            _ => "a Cloud Storage bucket name (3-63 lowercase letters, digits, `.`, `-` or `_`)",
        };
        return Err(ctx.err(&url_key, format!("`{top}` is not {what}")));
    }
    if scheme == Scheme::File && !(prefix.starts_with('/') || prefix.starts_with("localhost/")) {
        return Err(ctx.err(
            &url_key,
            format!(
                "`{}`: a file:// url names an absolute local directory, like file:///var/lib/app/blobs",
                o.url
            ),
        ));
    }
    let prefix = prefix.strip_prefix("localhost").unwrap_or(prefix);
    let check_prefix = if scheme == Scheme::File {
        prefix.trim_start_matches('/')
    } else {
        prefix
    };
    let check_prefix = check_prefix.trim_end_matches('/');
    if check_prefix
        .split('/')
        .any(|s| (s.is_empty() && !check_prefix.is_empty()) || s == "." || s == "..")
        || check_prefix.contains(['?', '#'])
    {
        return Err(ctx.err(
            &url_key,
            format!(
                "`{}`: the prefix `{check_prefix}` has an empty, `.` or `..` segment, or `?`/`#`",
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
                    "must not carry credentials or a query; use the *_env or *_file keys",
                ));
            }
            Some(u)
        }
    };
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
    let versions = match (o.versions.as_deref(), scheme) {
        (None | Some("all"), Scheme::S3 | Scheme::File) => ObjectVersions::All,
        (Some("current"), _) => ObjectVersions::Current,
        (None | Some("all"), _) => {
            let what = if scheme == Scheme::Azure {
                "az:// (Azure blob versions and snapshots)"
            } else {
                "gs:// (Cloud Storage noncurrent generations)"
            };
            return Err(ctx.err(
                format!("{key}.versions"),
                format!("`all` (the default) cannot be kept for {what}: retentiond deletes the current object there, and cannot list or delete older versions. Set versions = \"current\", and let the container's or bucket's lifecycle rule expire noncurrent versions (or keep versioning off)"),
            ));
        }
        (Some(v), _) => {
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
    let (store, prefix) = match scheme {
        Scheme::S3 => {
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
            let credentials = s3_credentials(ctx, key, &o)?;
            (
                StoreLocation::S3(S3Location {
                    bucket: top.to_string(),
                    endpoint,
                    region,
                    credentials,
                }),
                check_prefix.to_string(),
            )
        }
        Scheme::File => (
            StoreLocation::File {
                root: PathBuf::from(format!("/{check_prefix}")),
            },
            String::new(),
        ),
        Scheme::Azure => {
            let (account, credential) = azure_credentials(ctx, key, &o)?;
            (
                StoreLocation::Azure(AzureLocation {
                    container: top.to_string(),
                    account,
                    endpoint,
                    credential,
                }),
                check_prefix.to_string(),
            )
        }
        Scheme::Gcs => (
            StoreLocation::Gcs(GcsLocation {
                bucket: top.to_string(),
                endpoint,
                credential: gcs_credentials(ctx, key, &o)?,
            }),
            check_prefix.to_string(),
        ),
    };
    let attrs = attr_names(&template_placeholders(&o.key).unwrap_or_default()).collect();
    Ok((
        ObjectStoreTargetConfig {
            store,
            prefix,
            key: o.key,
            versions,
            account_prefix: o.account_prefix,
            concurrency,
            timeout,
        },
        attrs,
    ))
}

/// A key of another scheme (an S3 key on an az:// target …) is an error naming it: it would
/// otherwise be silently ignored, and the operator believe it applied.
fn refuse_foreign_keys(
    ctx: &Ctx<'_>,
    key: &str,
    scheme: Scheme,
    o: &RawObjectStoreTarget,
) -> Result<(), ConfigError> {
    let s3 = [
        ("region", o.region.is_some()),
        ("access_key_id_env", o.access_key_id_env.is_some()),
        ("secret_access_key_env", o.secret_access_key_env.is_some()),
        ("session_token_env", o.session_token_env.is_some()),
        ("access_key_id_file", o.access_key_id_file.is_some()),
        ("secret_access_key_file", o.secret_access_key_file.is_some()),
        ("session_token_file", o.session_token_file.is_some()),
    ];
    let azure = [
        ("account", o.account.is_some()),
        ("access_key_env", o.access_key_env.is_some()),
        ("access_key_file", o.access_key_file.is_some()),
        ("sas_token_env", o.sas_token_env.is_some()),
        ("sas_token_file", o.sas_token_file.is_some()),
    ];
    let gcs = [("service_account_file", o.service_account_file.is_some())];
    let endpoint = [("endpoint", o.endpoint.is_some())];
    let (name, foreign): (&str, Vec<&(&str, bool)>) = match scheme {
        Scheme::S3 => ("s3://", azure.iter().chain(&gcs).collect()),
        Scheme::Azure => ("az://", s3.iter().chain(&gcs).collect()),
        Scheme::Gcs => ("gs://", s3.iter().chain(&azure).collect()),
        Scheme::File => (
            "file://",
            s3.iter()
                .chain(&azure)
                .chain(&gcs)
                .chain(&endpoint)
                .collect(),
        ),
    };
    match foreign.into_iter().find(|(_, given)| *given) {
        Some((k, _)) => Err(ctx.err(
            format!("{key}.{k}"),
            format!("is not used by {name} urls; remove it"),
        )),
        None => Ok(()),
    }
}

/// A value from the environment, trimmed; `None` when unset or empty.
fn std_var(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The account (`account`, else `AZURE_STORAGE_ACCOUNT_NAME`) and a credential: the account
/// key or a SAS token from `*_env`/`*_file` keys, else the standard `AZURE_*` variables. A
/// missing one is an error naming the key.
fn azure_credentials(
    ctx: &Ctx<'_>,
    key: &str,
    o: &RawObjectStoreTarget,
) -> Result<(String, AzureCredential), ConfigError> {
    let account = match o
        .account
        .clone()
        .or_else(|| std_var("AZURE_STORAGE_ACCOUNT_NAME"))
    {
        Some(a) => a,
        None => {
            return Err(ctx.err(
                format!("{key}.account"),
                "missing: set `account` (the storage account's name) or AZURE_STORAGE_ACCOUNT_NAME",
            ));
        }
    };
    if !(3..=24).contains(&account.len())
        || !account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(ctx.err(
            format!("{key}.account"),
            format!("`{account}` is not a storage account name (3-24 lowercase letters or digits)"),
        ));
    }
    let access = read_secret(
        ctx,
        key,
        "access_key",
        o.access_key_file.clone(),
        o.access_key_env.clone(),
    )?;
    let sas = read_secret(
        ctx,
        key,
        "sas_token",
        o.sas_token_file.clone(),
        o.sas_token_env.clone(),
    )?;
    let source = |env: &Option<String>, file: &Option<PathBuf>| match (env, file) {
        (Some(v), _) => format!("${v}"),
        (_, Some(p)) => p.display().to_string(),
        _ => String::new(),
    };
    let credential = match (access, sas) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(
                key,
                "give either an account key (access_key_*) or a SAS token (sas_token_*), not both",
            ));
        }
        (Some(k), None) => {
            AzureCredential::AccessKey(k, source(&o.access_key_env, &o.access_key_file))
        }
        (None, Some(t)) => {
            AzureCredential::SasToken(t, source(&o.sas_token_env, &o.sas_token_file))
        }
        (None, None) => {
            const VARS: [&str; 9] = [
                "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_ACCESS_KEY",
                "AZURE_STORAGE_SAS_KEY",
                "AZURE_STORAGE_SAS_TOKEN",
                "AZURE_STORAGE_TOKEN",
                "AZURE_CLIENT_SECRET",
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_USE_AZURE_CLI",
                "AZURE_STORAGE_USE_EMULATOR",
            ];
            match VARS.iter().find(|v| std_var(v).is_some()) {
                Some(v) => AzureCredential::Env(v.to_string()),
                None => {
                    return Err(ctx.err(
                        format!("{key}.access_key_env"),
                        format!("no credentials: set access_key_env or access_key_file (the account key), or sas_token_env or sas_token_file, or one of {} in the environment", VARS.join(", ")),
                    ));
                }
            }
        }
    };
    Ok((account, credential))
}

/// A service-account JSON key from `service_account_file`, else the standard `GOOGLE_*`
/// variables. A missing one is an error naming the key.
fn gcs_credentials(
    ctx: &Ctx<'_>,
    key: &str,
    o: &RawObjectStoreTarget,
) -> Result<GcsCredential, ConfigError> {
    if let Some(path) = &o.service_account_file {
        let k = format!("{key}.service_account_file");
        let text = std::fs::read_to_string(path)
            .map_err(|e| ctx.err(&k, format!("cannot read `{}`: {e}", path.display())))?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => {
                return Err(ctx.err(
                    &k,
                    format!("`{}` is not a service-account JSON key", path.display()),
                ));
            }
        }
        return Ok(GcsCredential::ServiceAccount(text, path.clone()));
    }
    const VARS: [&str; 4] = [
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ];
    match VARS.iter().find(|v| std_var(v).is_some()) {
        Some(v) => Ok(GcsCredential::Env(v.to_string())),
        None => Err(ctx.err(
            format!("{key}.service_account_file"),
            format!(
                "no credentials: set service_account_file, or one of {} in the environment",
                VARS.join(", ")
            ),
        )),
    }
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
