//! The HTTP API (§6) on the optional `[http] listen` address: health, readiness, Prometheus
//! metrics, event ingestion, the read views and legal holds, behind bearer tokens.
//!
//! Invariant: a token never does more than its scopes allow (§8), and nothing under `/v1` but
//! the OpenAPI document is served without one.
//!
//! Mechanism: bodies are the CLI's `--json` structures ([`crate::report`], [`crate::admin`],
//! [`crate::ingest::IngestReport`]), so the two interfaces cannot disagree.
//!
//! # Access
//! - `/healthz`, `/readyz`, `/metrics`: open (no user content; meant for probes and scrapers on
//!   a loopback or otherwise protected listener).
//! - Everything under `/v1` needs a bearer token with the route's scope (§8): `events` (`POST
//!   /v1/events`), `read` (every `GET`), `holds` (place, release), `orgs` (`PUT /v1/orgs/{id}`,
//!   ZDR requests), `zdr:decide` (ZDR approve, deny). The token's name is recorded as `via`.
//! - Tokens come from `[[http.tokens]]`; the legacy `token_file`/`token_env` token has the
//!   scopes it always had (events, read, holds) and `read_token_*` has `read`.
//! - No or unknown token: 401 (with `WWW-Authenticate: Bearer`); a token without the scope: 403
//!   naming the scope. With no token configured at all, `/v1` answers 403: off, never open.
//! - `/v1/openapi.json` (this API as OpenAPI 3.1) is open too: it is the same for every
//!   deployment of a build (nothing from the ledger or the config) and says no more than the
//!   README, and client generators and gateways fetch it without a secret.
//!
//! # The OpenAPI document
//! Each handler carries its `#[utoipa::path]` (request body, a response per status, the scope);
//! [`api`] registers the handlers with `utoipa_axum::routes!`, which adds a route to the router
//! and its operation to the document together, so neither can have a route the other lacks.
//! Bodies are described by the serde types themselves (`ToSchema` derives). [`openapi`] adds
//! what every operation shares (401/403 with the scope, 500, 503) and the event line's schema
//! (`schemars`, as `retentiond schema events` prints it).
//!
//! Tokens are compared in constant time: both the configured and the presented token are
//! hashed with SHA-256 and the digests compared with `subtle`, so neither the content nor the
//! length of the configured token shows in the timing. Only the digests are kept in memory.
//!
//! # Limits
//! Bodies over `http.max_body` get 413 (from `Content-Length` before reading, or while reading
//! a chunked body). A request running longer than `http.timeout` gets 503; an ingest cut short
//! so is rolled back (the future holding the ledger transaction is dropped) unless its commit
//! was already under way — replay it: `event_id` makes that safe.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{self, AdminError, PlaceHold};
use crate::app::App;
use crate::clock::Clock;
use crate::config::{Config, HttpConfig, Scope, TokenSource};
use crate::events::{self, Event, LineError};
use crate::health::Health;
use crate::holds::HoldScope;
use crate::ids::{CaseRef, OrgId};
use crate::ingest::{IngestError, IngestReport};
use crate::model::Timestamp;
use crate::report;
use crate::store::{Ledger, StoreError};

/// Where handlers read the config in force (the daemon swaps it on SIGHUP).
pub type ConfigSource = Arc<dyn Fn() -> Arc<Config> + Send + Sync>;

#[derive(Debug, Error)]
pub enum HttpError {
    /// A bad `[http]` setting or an unreadable token.
    #[error("{0}")]
    Config(String),
    #[error("http.listen `{addr}`: cannot listen: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// What the handlers share. Cheap to clone (axum clones it per request).
#[derive(Clone)]
pub struct HttpState {
    ledger: Ledger,
    clock: Clock,
    config: ConfigSource,
    health: Option<Arc<Health>>,
    tokens: Arc<Tokens>,
    max_body: usize,
    timeout: Duration,
    metrics: PrometheusHandle,
    listen: String,
}

impl HttpState {
    /// State for the API configured in `config.http`: reads the tokens (file or environment)
    /// and installs the metrics recorder.
    pub fn new(ledger: Ledger, clock: Clock, config: Arc<Config>) -> Result<HttpState, HttpError> {
        let http = config
            .http
            .clone()
            .ok_or_else(|| HttpError::Config("no [http] listen address configured".into()))?;
        let tokens = Tokens::load(&http)?;
        let fixed = config.clone();
        Ok(HttpState {
            ledger,
            clock,
            config: Arc::new(move || fixed.clone()),
            health: None,
            tokens: Arc::new(tokens),
            max_body: http.max_body,
            timeout: Duration::from_millis(http.timeout.millis().max(1) as u64),
            metrics: crate::metrics::install(),
            listen: http.listen,
        })
    }

    /// `/readyz` also requires the daemon's sweeps to be healthy ([`Health::ready`]). Without
    /// it (a server embedded without a sweep loop) only the ledger is checked.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Reads the config in force from `source` (policy and clock skew for ingest).
    pub fn with_config_source(mut self, source: ConfigSource) -> Self {
        self.config = source;
        self
    }

    /// The application core over the config in force now (a reload swaps it).
    fn app(&self) -> App {
        App::from_parts(self.ledger.clone(), (self.config)(), self.clock.clone())
    }

    /// The configured listen address.
    pub fn listen_addr(&self) -> &str {
        &self.listen
    }
}

/// One accepted token, as a SHA-256 digest, with its name and scopes.
struct Token {
    name: String,
    digest: [u8; 32],
    scopes: BTreeSet<Scope>,
}

/// The configured tokens.
struct Tokens {
    all: Vec<Token>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    fn load(http: &HttpConfig) -> Result<Tokens, HttpError> {
        let mut all: Vec<Token> = Vec::with_capacity(http.tokens.len());
        for t in &http.tokens {
            let secret = load_token(&t.key, &t.source)?;
            let d = digest(secret.as_bytes());
            if let Some(other) = all.iter().find(|o| bool::from(o.digest.ct_eq(&d))) {
                return Err(HttpError::Config(format!(
                    "{}: the token `{}` has the same secret as `{}`; each token needs its own secret, or its name would not say who acted",
                    t.key, t.name, other.name
                )));
            }
            all.push(Token {
                name: t.name.clone(),
                digest: d,
                scopes: t.scopes.clone(),
            });
        }
        if http.legacy_tokens {
            warn!(
                "http: token_file/token_env/read_token_* give one token events, reads and holds together; [[http.tokens]] with scopes separates those duties (see the README)"
            );
        }
        if all.is_empty() {
            warn!("http: no token configured ([[http.tokens]] or http.token_file): /v1 is refused");
        }
        Ok(Tokens { all })
    }
}

fn load_token(key: &str, source: &TokenSource) -> Result<String, HttpError> {
    // `http.token` → `http.token_file`; `http.tokens[0]` → `http.tokens[0].file`.
    let sep = if key.ends_with(']') { "." } else { "_" };
    let token = match source {
        TokenSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                HttpError::Config(format!("{key}{sep}file `{}`: {e}", path.display()))
            })?;
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o004 != 0 {
                    warn!(file = %path.display(), "{key}{sep}file is readable by everyone; chmod o-r it");
                }
            }
            text
        }
        TokenSource::Env(var) => std::env::var(var).map_err(|e| {
            HttpError::Config(format!(
                "{key}{sep}env `{var}`: the variable is not usable ({e})"
            ))
        })?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(HttpError::Config(format!("{key}: the token is empty")));
    }
    if token.len() < 16 {
        warn!("{key}: the token is shorter than 16 characters; use a long random one");
    }
    Ok(token)
}

/// The body of every error answer (4xx, 5xx).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, for a person to read.
    pub error: String,
    /// `POST /v1/events` rejecting a batch: `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// `POST /v1/events` rejecting a batch: `0` (all or nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// `POST /v1/events` rejecting a batch: every bad line (or array element) and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<LineError>>,
}

/// An error answer: `{"error": message, …extra}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: message.into(),
                ok: None,
                applied: None,
                errors: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"retentiond\""),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "http: ledger error");
        if e.is_retryable() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{e}; nothing was applied, retry"),
            )
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            AdminError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            AdminError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            AdminError::Store(s) => s.into(),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A 200 JSON answer.
fn ok<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

impl HttpState {
    /// The name of the presented token when it has `need`: 401 for no or an unknown token,
    /// 403 for a token without the scope (the message names it), or with no token configured.
    fn authorize(&self, headers: &HeaderMap, need: Scope) -> ApiResult<String> {
        let t = &self.tokens;
        if t.all.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the HTTP API is off: no token is configured ([[http.tokens]], http.token_file or http.token_env)",
            ));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(presented) = presented else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token (Authorization: Bearer <token>)",
            ));
        };
        let d = digest(presented.as_bytes());
        // Every comparison runs, in constant time; secrets are unique, so at most one matches.
        let mut found: Option<&Token> = None;
        for token in &t.all {
            if bool::from(token.digest.ct_eq(&d)) {
                found = Some(token);
            }
        }
        let Some(token) = found else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"));
        };
        if !token.scopes.contains(&need) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                if need != Scope::Read && token.scopes.iter().all(|s| *s == Scope::Read) {
                    format!(
                        "the token `{}` may only read; this needs a token with the `{need}` scope",
                        token.name
                    )
                } else {
                    format!(
                        "the token `{}` lacks the `{need}` scope this needs",
                        token.name
                    )
                },
            ));
        }
        Ok(token.name.clone())
    }

    /// The name of the token a request presents, if it is a known one (for the access log).
    fn token_name(&self, headers: &HeaderMap) -> Option<&str> {
        let presented = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))?
            .1
            .trim();
        let d = digest(presented.as_bytes());
        let mut found = None;
        for token in &self.tokens.all {
            if bool::from(token.digest.ct_eq(&d)) {
                found = Some(token.name.as_str());
            }
        }
        found
    }

    async fn read_body(&self, headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than http.max_body ({} bytes); send smaller batches",
                    self.max_body
                ),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        match http_body_util::Limited::new(body, self.max_body)
            .collect()
            .await
        {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )),
        }
    }
}

/// Every route, each registered with its OpenAPI operation (`routes!` adds both), so the
/// router and [`openapi`] cannot differ. Add routes here, never with a bare `.route`.
fn api() -> OpenApiRouter<HttpState> {
    OpenApiRouter::with_openapi(openapi_base())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(post_events))
        .routes(routes!(get_status))
        .routes(routes!(get_resource))
        .routes(routes!(get_account))
        .routes(routes!(get_holds, post_hold))
        .routes(routes!(get_hold))
        .routes(routes!(post_release))
        .routes(routes!(get_org, put_org))
        .routes(routes!(post_zdr))
        .routes(routes!(get_data_control))
        .routes(routes!(get_data_controls))
}

/// The routes, with auth, limits and the request timeout.
pub fn router(state: HttpState) -> Router {
    let (routes, _) = api().split_for_parts();
    routes
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(state.clone(), access))
        .with_state(state)
}

/// A handler that panicked: 500, logged, and the connection kept (instead of dropped).
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error!("http: a request handler panicked; answered 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (logged); nothing of this request is known to be applied",
    )
    .into_response()
}

/// The access log and the request metrics: one line per request — method, route (the
/// pattern, never the ids in it), status, duration, the token's name (never a body or a
/// secret) — at INFO for the API and DEBUG for probes, scrapes and 304s (a gateway polling
/// `/v1/data-controls` every second must not flood the journal).
async fn access(State(s): State<HttpState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // A fixed set: any token-less caller can send a made-up method, and each would become a
    // label set kept for good.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".to_string());
    let via = s.token_name(req.headers());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let took = started.elapsed();
    crate::metrics::record_http_request(method, &route, status, took);
    let quiet = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") || status == 304;
    let ms = took.as_millis() as u64;
    let via = via.unwrap_or("-");
    if quiet {
        tracing::debug!(method = %method, route = %route, status, duration_ms = ms, via = %via, "http request");
    } else {
        info!(method = %method, route = %route, status, duration_ms = ms, via = %via, "http request");
    }
    response
}

async fn timeout(State(s): State<HttpState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(s.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            warn!(timeout = ?s.timeout, "http: request timed out");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than http.timeout ({:?}); an ingest cut short is rolled back — replay it (event_id makes replays safe)",
                    s.timeout
                ),
            )
            .into_response()
        }
    }
}

/// Serves `router(state)` on `listener` until `stop` is cancelled, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Binds `http.listen` and runs the server on `tracker` until `stop` (the daemon runs the
/// metrics gauge refresher). A bind failure is returned (the daemon does not start half-configured).
pub async fn start(
    state: HttpState,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<SocketAddr, HttpError> {
    let listener = TcpListener::bind(&state.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: state.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: state.listen.clone(),
        source,
    })?;
    let tokens = state
        .tokens
        .all
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    info!(listen = %addr, tokens = %tokens, "HTTP API listening");
    tracker.spawn(async move {
        if let Err(e) = serve(listener, state, stop).await {
            error!(error = %e, "HTTP API stopped with an error");
        }
    });
    Ok(addr)
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Healthy {
    /// Always `true`: the process answers.
    pub ok: bool,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok`, or why the ledger does not answer.
    pub ledger: String,
    /// `ok`, `not checked` (no sweep loop), or why sweeps are not healthy.
    pub sweeps: String,
}

/// Liveness: the process answers
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "The process answers.", body = Healthy)))]
async fn healthz() -> Response {
    ok(&Healthy { ok: true })
}

/// Readiness: the ledger answers and sweeps complete
///
/// Ready when the ledger answers and (under the daemon) sweeps complete on schedule.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready; `ledger` or `sweeps` says why.", body = Readiness),
    ))]
async fn readyz(State(s): State<HttpState>) -> Response {
    let ledger = s.ledger.ping().await;
    let sweeps = s.health.as_ref().map(|h| h.ready(s.clock.now()));
    let ready = ledger.is_ok() && sweeps != Some(false);
    let body = Readiness {
        ready,
        ledger: match &ledger {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        },
        sweeps: match sweeps {
            Some(true) => "ok",
            Some(false) => "no sweep completed recently (stalled sweep or silent scheduler)",
            None => "not checked",
        }
        .to_string(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus metrics
///
/// The text exposition format; README "Monitoring" names the metrics.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text format 0.0.4.",
        body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")))]
async fn metrics(State(s): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s.metrics),
    )
        .into_response()
}

/// Apply lifecycle events, all or nothing
///
/// `POST /v1/events`: NDJSON, or a JSON array of events (a body whose first non-blank byte is
/// `[`). All or nothing, exactly like `retentiond ingest`. In an array, an error's `line` is the
/// element's position, counted from 1. Each event is an `EventLine` (`retentiond schema events`
/// prints the same schema).
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(description = "Events: NDJSON (one `EventLine` a line), or a JSON array of them.",
        content((Vec<EventLine> = "application/json"), (String = "application/x-ndjson"))),
    responses(
        (status = 200, description = "Every event applied (or a replay, counted in `duplicates`).", body = IngestReport),
        (status = 400, description = "Nothing applied: `errors` names each bad line and why (`ok`: false, `applied`: 0).", body = ErrorBody),
        (status = 413, description = "The body is larger than `http.max_body`.", body = ErrorBody),
    ),
    security(("bearer" = ["events"])))]
async fn post_events(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    match events_inner(&s, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn events_inner(s: &HttpState, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    s.authorize(headers, Scope::Events)?;
    crate::failpoint::panic("http.events");
    let bytes = s.read_body(headers, body).await?;
    let app = s.app();
    let result = if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        match parse_array(&bytes) {
            Ok(events) => app.ingest_events(&events).await,
            Err(errors) => Err(IngestError::Invalid(errors)),
        }
    } else {
        app.ingest_reader(&bytes[..]).await
    };
    match result {
        Ok(report) => {
            report.record_metrics("http");
            Ok(ok(&report))
        }
        Err(IngestError::Invalid(errors)) => {
            crate::metrics::record_rejected("http");
            info!(
                bad_lines = errors.len(),
                "http: event batch rejected; nothing applied"
            );
            Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                body: ErrorBody {
                    error: format!("{} invalid line(s); nothing was applied", errors.len()),
                    ok: Some(false),
                    applied: Some(0),
                    errors: Some(errors),
                },
            })
        }
        Err(IngestError::Store(e)) => Err(e.into()),
    }
}

/// A JSON array of events: each element gets the same validation as an NDJSON line.
fn parse_array(bytes: &[u8]) -> Result<Vec<Event>, Vec<LineError>> {
    let values: Vec<Value> = serde_json::from_slice(bytes).map_err(|e| {
        vec![LineError {
            line: e.line(),
            reason: format!("malformed JSON array: {e}"),
        }]
    })?;
    let mut out = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        match events::parse_line(i + 1, &v.to_string()) {
            Ok(e) => out.push(e),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Counts, backlog, holds, failures, last sweeps
///
/// As `retentiond status --json`.
#[utoipa::path(get, path = "/v1/status", tag = "read",
    responses((status = 200, description = "The ledger's state now.", body = report::Status)),
    security(("bearer" = ["read"])))]
async fn get_status(State(s): State<HttpState>, headers: HeaderMap) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let st = s.app().status().await?;
    Ok(ok(&st))
}

/// A resource: state, schedule, cause, blocking holds
///
/// As `retentiond resource show ID --json`.
#[utoipa::path(get, path = "/v1/resources/{id}", tag = "read",
    params(("id" = String, Path, description = "The resource id.")),
    responses(
        (status = 200, description = "The resource.", body = report::ResourceView),
        (status = 404, description = "Unknown resource.", body = ErrorBody),
    ),
    security(("bearer" = ["read"])))]
async fn get_resource(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let r =
        s.app().resource(&id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("unknown resource `{id}`"))
        })?;
    Ok(ok(&r))
}

/// An account: state, schedule, blocking holds, resources by state
///
/// As `retentiond account show ID --json`.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "read",
    params(("id" = String, Path, description = "The account id.")),
    responses(
        (status = 200, description = "The account.", body = report::AccountView),
        (status = 404, description = "Unknown account.", body = ErrorBody),
    ),
    security(("bearer" = ["read"])))]
async fn get_account(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let a =
        s.app().account(&id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("unknown account `{id}`"))
        })?;
    Ok(ok(&a))
}

/// `GET /v1/holds`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldList {
    pub holds: Vec<crate::store::HoldRow>,
}

/// List legal holds
///
/// `GET /v1/holds[?active=true]`: `{"holds": […]}`, as `hold list --json`.
#[utoipa::path(get, path = "/v1/holds", tag = "holds",
    params(("active" = Option<bool>, Query, description = "Only active (not released) holds.")),
    responses(
        (status = 200, description = "The holds.", body = HoldList),
        (status = 400, description = "An unknown query parameter.", body = ErrorBody),
    ),
    security(("bearer" = ["read"])))]
async fn get_holds(
    State(s): State<HttpState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let mut active = false;
    for pair in query.as_deref().unwrap_or("").split('&') {
        match pair.split_once('=').unwrap_or((pair, "true")) {
            ("", _) => {}
            ("active", "true" | "1" | "") => active = true,
            ("active", "false" | "0") => active = false,
            (k, v) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query `{k}={v}` (only active=true|false)"),
                ));
            }
        }
    }
    let holds = s.app().holds(active).await?;
    Ok(ok(&HoldList { holds }))
}

fn hold_id(raw: &str) -> ApiResult<i64> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown hold `{raw}` (hold ids are numbers)"),
        )
    })
}

/// A legal hold with what it matches now
///
/// `GET /v1/holds/{id}`: as `hold show --json`.
#[utoipa::path(get, path = "/v1/holds/{id}", tag = "holds",
    params(("id" = i64, Path, description = "The hold id.")),
    responses(
        (status = 200, description = "The hold.", body = admin::HoldDetail),
        (status = 404, description = "Unknown hold.", body = ErrorBody),
    ),
    security(("bearer" = ["read"])))]
async fn get_hold(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let id = hold_id(&raw)?;
    let detail = s
        .app()
        .hold(id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown hold {id}")))?;
    Ok(ok(&detail))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct HoldRequest {
    case: String,
    /// The person placing it.
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// What it covers: every given criterion must match; at least one is required.
    #[serde(default)]
    scope: ScopeRequest,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ScopeRequest {
    org: Option<String>,
    account: Option<String>,
    resource: Option<String>,
    kind: Option<String>,
    /// RFC 3339, inclusive.
    #[schema(format = DateTime)]
    created_from: Option<String>,
    /// RFC 3339, inclusive.
    #[schema(format = DateTime)]
    created_to: Option<String>,
}

fn time_field(name: &str, v: Option<String>) -> ApiResult<Option<Timestamp>> {
    v.map(|t| {
        Timestamp::parse_rfc3339(&t)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("`scope.{name}`: {e}")))
    })
    .transpose()
}

/// Place a legal hold
///
/// `POST /v1/holds` with `{"case", "by", "reason"?, "scope": {org?, account?, resource?, kind?,
/// created_from?, created_to?}}`: as `hold place --json`, answered with 201. `by` is the person
/// (`placed_by`); the token's name goes into the audit entry as `via`.
#[utoipa::path(post, path = "/v1/holds", tag = "holds",
    request_body = HoldRequest,
    responses(
        (status = 201, description = "Placed; `Location` names it.", body = admin::HoldPlaced,
            headers(("Location" = String, description = "`/v1/holds/{id}`"))),
        (status = 400, description = "A bad request: no scope, an empty case or `by`, an unknown org, account or resource.", body = ErrorBody),
        (status = 413, description = "The body is larger than `http.max_body`.", body = ErrorBody),
    ),
    security(("bearer" = ["holds"])))]
async fn post_hold(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let via = s.authorize(&headers, Scope::Holds)?;
    let bytes = s.read_body(&headers, body).await?;
    let req: HoldRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad hold request: {e} (expected {{\"case\", \"by\", \"reason\", \"scope\": {{org, account, resource, kind, created_from, created_to}}}})"),
        )
    })?;
    let case =
        CaseRef::try_from(req.case).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let by = person(req.by, "placing the hold")?;
    let sc = req.scope;
    let scope = HoldScope {
        created_from: time_field("created_from", sc.created_from)?,
        created_to: time_field("created_to", sc.created_to)?,
        org: sc.org,
        account: sc.account,
        resource: sc.resource,
        kind: sc.kind,
    };
    if scope == HoldScope::default() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a hold needs a scope: give at least one of scope.org, scope.account, scope.resource, scope.kind, scope.created_from, scope.created_to",
        ));
    }
    let placed = s
        .app()
        .place_hold(
            PlaceHold {
                case: case.into_string(),
                by,
                reason: req.reason,
                scope,
            },
            Some(&via),
        )
        .await?;
    let mut r = (StatusCode::CREATED, axum::Json(&placed)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/holds/{}", placed.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// `"by"`: the person acting, required and non-empty (400 otherwise).
fn person(by: Option<String>, doing: &str) -> ApiResult<String> {
    match by {
        Some(b) if !b.trim().is_empty() => Ok(b),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`by` is required: the name of the person {doing}"),
        )),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    /// The person asking (required).
    #[serde(default)]
    by: Option<String>,
}

/// Ask to release a legal hold
///
/// `POST /v1/holds/{id}/release` with `{"by"}`: one person's ask. When it completes
/// `holds.release_approvals` asks, the hold is released: 200 as `hold release ID --json`;
/// otherwise 202 `{"id", "pending": true, "approvals", "needed", …}` and the hold stays active.
/// 404 for an unknown hold; 409 for one already released, or the same person asking again.
#[utoipa::path(post, path = "/v1/holds/{id}/release", tag = "holds",
    params(("id" = i64, Path, description = "The hold id.")),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "Released.", body = admin::HoldReleased),
        (status = 202, description = "Asked; waits for more people (`holds.release_approvals`).", body = admin::ReleasePending),
        (status = 400, description = "A bad request (no `by`).", body = ErrorBody),
        (status = 404, description = "Unknown hold.", body = ErrorBody),
        (status = 409, description = "Already released, or this person or token already asked.", body = ErrorBody),
        (status = 413, description = "The body is larger than `http.max_body`.", body = ErrorBody),
    ),
    security(("bearer" = ["holds"])))]
async fn post_release(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let via = s.authorize(&headers, Scope::Holds)?;
    let id = hold_id(&raw)?;
    let bytes = s.read_body(&headers, body).await?;
    let req: ReleaseRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad release request: {e} (expected {{\"by\"}})"),
        )
    })?;
    let by = person(req.by, "asking to release the hold")?;
    if s.ledger.hold(id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown hold {id}"),
        ));
    }
    match s.app().release_hold(id, &by, Some(&via)).await? {
        admin::ReleaseOutcome::Released(r) => Ok(ok(&r)),
        admin::ReleaseOutcome::Pending(p) => {
            Ok((StatusCode::ACCEPTED, axum::Json(&p)).into_response())
        }
    }
}

/// A JSON body of type `T`, or 400 naming what is wrong and what was `expected`.
fn json_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    expected: &str,
) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad {what}: {e} (expected {expected})"),
        )
    })
}

/// An org: plan, ZDR status, training opt-out
///
/// `GET /v1/orgs/{id}`: as `org show --json` (plan, ZDR status and who decided it, training
/// opt-out).
#[utoipa::path(get, path = "/v1/orgs/{id}", tag = "orgs",
    params(("id" = String, Path, description = "The org id.")),
    responses(
        (status = 200, description = "The org.", body = report::OrgView),
        (status = 404, description = "Unknown org.", body = ErrorBody),
    ),
    security(("bearer" = ["read"])))]
async fn get_org(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let o = s
        .app()
        .org(&id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown org `{id}`")))?;
    Ok(ok(&o))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OrgRequest {
    #[serde(default)]
    plan: Option<crate::model::Plan>,
    #[serde(default)]
    training_opt_out: Option<bool>,
}

/// Create or update an org
///
/// `PUT /v1/orgs/{id}` with `{"plan"?, "training_opt_out"?}`: creates the org (a plan is then
/// required) or updates it, exactly as an `org.upsert` event; answers as `GET`.
#[utoipa::path(put, path = "/v1/orgs/{id}", tag = "orgs",
    params(("id" = String, Path, description = "The org id.")),
    request_body = OrgRequest,
    responses(
        (status = 200, description = "The org as it is now.", body = report::OrgView),
        (status = 400, description = "A bad request: nothing to set, a new org without a plan, a bad id.", body = ErrorBody),
        (status = 413, description = "The body is larger than `http.max_body`.", body = ErrorBody),
    ),
    security(("bearer" = ["orgs"])))]
async fn put_org(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let via = s.authorize(&headers, Scope::Orgs)?;
    let bytes = s.read_body(&headers, body).await?;
    let req: OrgRequest = json_body(
        &bytes,
        "org update",
        "{\"plan\": \"free\"|\"scale\", \"training_opt_out\": true|false}",
    )?;
    let id = OrgId::parse_as("the org id", id).map_err(AdminError::Invalid)?;
    let o = s.app().set_org(&id, req.plan, req.training_opt_out).await?;
    info!(org = %id, via = %via, plan = %o.plan, training_opt_out = o.training_opt_out, "http: org set");
    Ok(ok(&o))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ZdrRequest {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// Request, approve or deny Zero Data Retention
///
/// `POST /v1/orgs/{id}/zdr/request` (scope `orgs`; `reason` required: the org's legitimate
/// reasons) and `…/zdr/approve`, `…/zdr/deny` (scope `zdr:decide`; a denial needs its reason),
/// each with `{"reason", "by"}`: as `org zdr … --json`. 404 for an unknown org or action; 409
/// for a request from a `free` org or a decision on an org that is not `requested`.
#[utoipa::path(post, path = "/v1/orgs/{id}/zdr/{action}", tag = "orgs",
    params(
        ("id" = String, Path, description = "The org id."),
        ("action" = admin::ZdrAction, Path, description = "`request` needs the `orgs` scope; `approve` and `deny` need `zdr:decide`."),
    ),
    request_body = ZdrRequest,
    responses(
        (status = 200, description = "Done; the org's ZDR status now.", body = admin::ZdrDecision),
        (status = 400, description = "A bad request: no `by`, a request without its reason.", body = ErrorBody),
        (status = 404, description = "Unknown org or action.", body = ErrorBody),
        (status = 409, description = "A request from a `free` org, or a decision on an org that is not `requested`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `http.max_body`.", body = ErrorBody),
    ),
    security(("bearer" = ["orgs"]), ("bearer" = ["zdr:decide"])))]
async fn post_zdr(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let (action, scope) = match action.as_str() {
        "request" => (admin::ZdrAction::Request, Scope::Orgs),
        "approve" => (admin::ZdrAction::Approve, Scope::ZdrDecide),
        "deny" => (admin::ZdrAction::Deny, Scope::ZdrDecide),
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")),
    };
    let via = s.authorize(&headers, scope)?;
    let bytes = s.read_body(&headers, body).await?;
    let req: ZdrRequest = json_body(&bytes, "ZDR request", "{\"reason\", \"by\"}")?;
    let by = person(req.by, "acting")?;
    if action == admin::ZdrAction::Request
        && req.reason.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`reason` is required: the org's legitimate reasons for ZDR",
        ));
    }
    let d = s
        .app()
        .zdr(&id, action, &by, req.reason.as_deref(), Some(&via))
        .await?;
    Ok(ok(&d))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataControlQuery {
    endpoint: Option<String>,
}

/// May the API keep an endpoint's inputs and outputs for an org
///
/// `GET /v1/orgs/{id}/data-controls?endpoint=/v1/embeddings`: whether the API's request path
/// may keep that endpoint's inputs and outputs for the org (`store`), and its training opt-out.
#[utoipa::path(get, path = "/v1/orgs/{id}/data-controls", tag = "orgs",
    params(
        ("id" = String, Path, description = "The org id."),
        ("endpoint" = String, Query, description = "The API endpoint, e.g. `/v1/embeddings`."),
    ),
    responses(
        (status = 200, description = "The org's data controls for the endpoint.", body = report::DataControl),
        (status = 400, description = "No `endpoint`, or an unknown query parameter.", body = ErrorBody),
        (status = 404, description = "Unknown org.", body = ErrorBody),
    ),
    security(("bearer" = ["read"])))]
async fn get_data_control(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<DataControlQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let endpoint = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e} (only endpoint=PATH)")))?
        .0
        .endpoint
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "`endpoint` is required, e.g. ?endpoint=/v1/embeddings",
            )
        })?;
    let zdr_endpoints = (s.config)().zdr_endpoints.clone();
    let c = report::data_control(&s.ledger, &id, &endpoint, &zdr_endpoints)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown org `{id}`")))?;
    Ok(ok(&c))
}

/// Every org whose data controls differ from the defaults
///
/// `GET /v1/data-controls`: every org with ZDR approved or training opted out, and the
/// endpoints ZDR covers, with an `ETag` (a digest of the body); `If-None-Match` with it answers
/// 304 without a body, so a gateway can poll every second for the cost of one indexed read.
#[utoipa::path(get, path = "/v1/data-controls", tag = "orgs",
    params(("If-None-Match" = Option<String>, Header, description = "The `ETag` of the snapshot the caller has.")),
    responses(
        (status = 200, description = "The snapshot.", body = report::DataControlsSnapshot,
            headers(("ETag" = String, description = "A digest of the body."), ("Cache-Control" = String, description = "`no-cache`"))),
        (status = 304, description = "Not modified: `If-None-Match` has the current `ETag`. No body.",
            headers(("ETag" = String, description = "A digest of the body."))),
    ),
    security(("bearer" = ["read"])))]
async fn get_data_controls(State(s): State<HttpState>, headers: HeaderMap) -> ApiResult<Response> {
    s.authorize(&headers, Scope::Read)?;
    let zdr_endpoints = (s.config)().zdr_endpoints.clone();
    let snapshot = report::data_controls(&s.ledger, &zdr_endpoints).await?;
    let body = serde_json::to_vec(&snapshot)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let etag = format!("\"{}\"", hex::encode(&digest(&body)[..16]));
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
    let etag_value = HeaderValue::from_str(&etag)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    r.headers_mut().insert(header::ETAG, etag_value);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// This API as OpenAPI 3.1
///
/// Generated from the handlers and the serde types of this build. Open, like the probes: it is
/// the same for every deployment of a build and holds nothing from the ledger or the config.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "probes",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    ok(DOC.get_or_init(openapi))
}

/// The document's fixed parts: info and the bearer security scheme.
fn openapi_base() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    use utoipa::openapi::{ComponentsBuilder, InfoBuilder, LicenseBuilder, OpenApiBuilder};
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("retentiond")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The HTTP API of retentiond (SPEC §6, §8): probes, lifecycle events, the read views, legal holds, orgs and Zero Data Retention. Bodies are the CLI's `--json` structures. Everything under `/v1` but this document needs a bearer token from `[[http.tokens]]` with the scope each operation names.",
                ))
                .license(Some(LicenseBuilder::new().name("MIT").identifier(Some("MIT")).build()))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some(
                                "A token of `[[http.tokens]]`; the scopes an operation lists are those its token needs (any one of the listed requirements).",
                            ))
                            .build(),
                    ),
                )
                .build(),
        ))
        .build()
}

/// This API as OpenAPI 3.1 (`GET /v1/openapi.json`): the operations and schemas of [`api`],
/// plus what every operation shares — 401 and 403 (and the scope in its description) where a
/// token is needed, 500 (a panic, a ledger error) and 503 (`http.timeout`, a retryable ledger
/// error) everywhere — and the `EventLine` schema of [`crate::events::line_schema`].
pub fn openapi() -> Value {
    let (_, doc) = api().split_for_parts();
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    let answer = |description: &str| json!({"description": description, "content": error});
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let Some(op) = op.as_object_mut() else {
                    continue;
                };
                let scopes: Vec<String> = op
                    .get("security")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("bearer")?.as_array())
                    .flatten()
                    .filter_map(|s| Some(format!("`{}`", s.as_str()?)))
                    .collect();
                let access = if scopes.is_empty() {
                    "**Access:** open (no token).".to_string()
                } else {
                    format!(
                        "**Access:** a bearer token with the {} scope.",
                        scopes.join(" or ")
                    )
                };
                let text = match op.get("description").and_then(Value::as_str) {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{access}"),
                    _ => access,
                };
                op.insert("description".into(), text.into());
                let Some(Value::Object(responses)) = op.get_mut("responses") else {
                    continue;
                };
                let mut add = |status: &str, what: Value| {
                    responses.entry(status).or_insert(what);
                };
                if !scopes.is_empty() {
                    let mut unauthorized = answer("No token, or an unknown one.");
                    unauthorized["headers"] = json!({"WWW-Authenticate": {
                        "description": "`Bearer realm=\"retentiond\"`",
                        "schema": {"type": "string"},
                    }});
                    add("401", unauthorized);
                    add(
                        "403",
                        answer(&format!(
                            "The token lacks the {} scope (the message names it), or no token is configured.",
                            scopes.join(" or ")
                        )),
                    );
                }
                add(
                    "500",
                    answer(
                        "An internal error (logged); nothing of the request is known to be applied.",
                    ),
                );
                add(
                    "503",
                    answer(
                        "Longer than `http.timeout` (an ingest cut short is rolled back: replay it), or a retryable ledger error.",
                    ),
                );
            }
        }
    }
    let mut line = crate::events::line_schema();
    if let Some(o) = line.as_object_mut() {
        o.remove("$schema");
    }
    doc["components"]["schemas"]["EventLine"] = line;
    doc
}

/// One lifecycle event. Its schema in the document is [`crate::events::line_schema`] (put in
/// by [`openapi`]); the placeholder here only names it for the `POST /v1/events` operation.
struct EventLine;

impl utoipa::PartialSchema for EventLine {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::Object::new().into()
    }
}

impl ToSchema for EventLine {}

/// `ToSchema` for the model's and the ledger's types that `report` and `admin` answers hold.
/// The model's string enums list [`ALL`](crate::model::ResourceState::ALL), so they cannot
/// drift. The ledger's row types (`store`, `holds`) get their schema from a mirror struct
/// here; [`same_fields`] proves at compile time that each mirror has its type's fields with the
/// same types (a field added there fails the build here), and the live test validates real
/// answers against the document with unknown properties refused.
mod schemas {

    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
    use utoipa::{PartialSchema, ToSchema};

    use crate::model::{AccountState, Cause, Plan, ResourceState, Timestamp, ZdrStatus};
    use crate::store::InFlightOutcome;

    impl PartialSchema for Timestamp {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some("RFC 3339, UTC."))
                .into()
        }
    }
    impl ToSchema for Timestamp {}

    macro_rules! string_enums {
        ($($t:ident),* $(,)?) => {$(
            impl PartialSchema for $t {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some($t::ALL.iter().map(|v| v.as_str())))
                        .into()
                }
            }
            impl ToSchema for $t {}
        )*};
    }
    string_enums!(
        ResourceState,
        Cause,
        AccountState,
        Plan,
        ZdrStatus,
        InFlightOutcome
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_elements_are_validated_like_lines() {
        let body = br#"[{"type":"org.upsert","org":"o1","plan":"free"}, {"type":"nope"}, 3]"#;
        let errs = parse_array(body).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3]);
        assert!(errs[1].reason.contains("JSON object"));
        let ok =
            parse_array(br#"[{"type":"org.upsert","org":"o1","plan":"free","event_id":"e1"}]"#)
                .unwrap();
        assert_eq!(ok[0].event_id.as_deref(), Some("e1"));
        assert!(
            parse_array(b"[{").unwrap_err()[0]
                .reason
                .contains("malformed")
        );
    }
}
