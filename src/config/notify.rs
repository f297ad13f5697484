//! `[notify.NAME]`: receivers of signed notifications (§8). A receiver has an http(s) URL
//! without placeholders, a signing secret read at load, known event types and sane durations.

use std::collections::BTreeSet;

use crate::model::Span;

use super::raw::RawNotify;
use super::secret::{SecretHttpUrl, SecretToken, read_secret};
use super::{ConfigError, Ctx};

/// A receiver of signed notifications (`[notify.NAME]`).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub url: SecretHttpUrl,
    /// The HMAC-SHA256 key of `Retentiond-Signature`.
    pub secret: SecretToken,
    /// The decision types it gets (`notify::TYPES`).
    pub events: BTreeSet<String>,
    /// The first retry's delay; doubles up to `retry_backoff_max`.
    pub retry_backoff: Span,
    pub retry_backoff_max: Span,
    /// Retries stop this long after the decision; the notification is then dead-lettered.
    pub max_age: Span,
    pub timeout: Span,
}

/// The decisions a `[notify.NAME]` receiver can subscribe to: each is the action of the audit
/// entry the decision writes. The `audit_notifiable` index (migration 0010) lists the same.
pub const NOTIFY_TYPES: [&str; 7] = [
    "account.purged",
    "hold.placed",
    "hold.released",
    "zdr.approved",
    "zdr.denied",
    "zdr.requested",
    "zdr.revoked",
];

/// Checks a `[notify.NAME]` receiver: an http(s) URL without placeholders, a secret, known
/// event types, sane durations.
pub(super) fn build(ctx: &Ctx<'_>, key: &str, n: RawNotify) -> Result<NotifyConfig, ConfigError> {
    let url = SecretHttpUrl::new(n.url);
    let shown = url.redacted();
    match url::Url::parse(url.expose()) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.fragment().is_none()
                && !url.expose().contains('{') => {}
        Ok(_) => {
            return Err(ctx.err(
                format!("{key}.url"),
                format!("`{shown}` must be an http:// or https:// URL with a host, without placeholders or a fragment"),
            ));
        }
        Err(e) => {
            return Err(ctx.err(
                format!("{key}.url"),
                format!("`{shown}` is not a valid URL ({e})"),
            ));
        }
    }
    let secret =
        read_secret(ctx, key, "secret", n.secret_file, n.secret_env)?.ok_or_else(|| {
            ctx.err(
            key,
            "a receiver needs `secret_file` or `secret_env`: the key notifications are signed with",
        )
        })?;
    if n.events.is_empty() {
        return Err(ctx.err(
            format!("{key}.events"),
            format!(
                "empty: name the decisions to send ({})",
                NOTIFY_TYPES.join(", ")
            ),
        ));
    }
    let mut events = BTreeSet::new();
    for (i, e) in n.events.iter().enumerate() {
        if !NOTIFY_TYPES.contains(&e.as_str()) {
            return Err(ctx.err(
                format!("{key}.events[{i}]"),
                format!("unknown `{e}` (one of {})", NOTIFY_TYPES.join(", ")),
            ));
        }
        events.insert(e.clone());
    }
    let span = |name: &str, v: Option<Span>, default: Span, min: Span| {
        let v = v.unwrap_or(default);
        if v < min {
            Err(ctx.err(
                format!("{key}.{name}"),
                format!("{v} is shorter than {min}"),
            ))
        } else {
            Ok(v)
        }
    };
    let retry_backoff = span(
        "retry_backoff",
        n.retry_backoff,
        Span::from_secs(5),
        Span::from_millis(1),
    )?;
    let retry_backoff_max = span(
        "retry_backoff_max",
        n.retry_backoff_max,
        Span::from_secs(3600).max(retry_backoff),
        retry_backoff,
    )?;
    let max_age = span(
        "max_age",
        n.max_age,
        Span::from_secs(3 * 86_400),
        Span::from_millis(1),
    )?;
    let timeout = span(
        "timeout",
        n.timeout,
        Span::from_secs(10),
        Span::from_millis(1),
    )?;
    if timeout > Span::from_secs(600) {
        return Err(ctx.err(
            format!("{key}.timeout"),
            format!("{timeout} is out of range 1ms..=10m"),
        ));
    }
    Ok(NotifyConfig {
        url,
        secret,
        events,
        retry_backoff,
        retry_backoff_max,
        max_age,
        timeout,
    })
}
