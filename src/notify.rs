//! Signed notifications (§8, `[notify.NAME]`): the platform's mailer and other receivers are
//! told of decisions (a ZDR request, approval or denial, a hold placed or released, an account
//! purged), at least once, signed, and never lost to a crash.
//!
//! Invariant: every decision of a subscribed type made while a receiver is configured reaches it
//! (or its dead letters) at least once. The queue's source is the decision's audit entry,
//! written in the decision's own transaction: a receiver's cursor over the audit chain turns the
//! entries of its types into notification rows and moves in the same transaction as their insert
//! (a compare-and-set, so two instances never queue one twice), and a row is marked delivered
//! only after a 2xx. A crash anywhere leaves either the entry behind the cursor or the row
//! undelivered, and both are picked up again. A receiver's cursor starts at the chain's head the
//! first time the daemon runs with it: earlier decisions are not sent.
//!
//! Delivery: a POST of the row's JSON body with `Retentiond-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>">` (the scheme Stripe uses); a timeout or a non-2xx answer is
//! retried after `retry_backoff`, doubling up to `retry_backoff_max`, until `max_age` after the
//! decision; then the row is dead-lettered (`notify list --failed`, `status`, metrics) until
//! `notify retry`. A receiver dedups by `id`, which is stable across attempts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::AuditEntry;
use crate::clock::Clock;
use crate::config::NotifyConfig;
use crate::model::{Span, Timestamp};
use crate::rules::retry_delay;
use crate::store::{DeliveryOutcome, Ledger, NewNotification, NotificationRow, StoreError};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Retentiond-Signature";

/// How often the queue is looked at when there is nothing to do.
const POLL: Duration = Duration::from_millis(500);
/// Audit entries read per cursor step, and notifications delivered per round.
const BATCH: i64 = 200;

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The notification of audit entry `e` for `receiver`: its id (stable: derived from the
/// receiver and the entry's hash) and its JSON body — `id`, `type`, `at`, `seq`, the subject's
/// id (`org`, `account`, `hold`, …), `by` and `reason` where the decision has them, and the
/// audit entry's `details` (which never hold user content).
pub fn notification_for(receiver: &str, e: &AuditEntry) -> (String, String) {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{receiver}\n{}", e.hash).as_bytes());
    let id = format!("ntf_{}", &hex::encode(digest)[..24]);
    let details: Value = serde_json::from_str(&e.details).unwrap_or(Value::Null);
    let mut body = Map::new();
    body.insert("id".into(), json!(id));
    body.insert("type".into(), json!(e.action));
    body.insert("at".into(), json!(e.at));
    body.insert("seq".into(), json!(e.seq));
    if let Some((kind, sid)) = e.subject.split_once('/') {
        let value = match (kind, sid.parse::<i64>()) {
            ("hold", Ok(n)) => json!(n),
            _ => json!(sid),
        };
        body.insert(kind.to_string(), value);
    }
    for (field, keys) in [
        ("by", &["by", "placed_by", "released_by"][..]),
        ("reason", &["reason"][..]),
    ] {
        if let Some(v) = keys
            .iter()
            .find_map(|k| details.get(*k).filter(|v| !v.is_null()))
        {
            body.insert(field.into(), v.clone());
        }
    }
    body.insert("details".into(), details);
    (id, Value::Object(body).to_string())
}

/// Makes sure every configured receiver has a cursor (at the audit head when new), so the
/// decisions made from now on reach it. The daemon calls this before it accepts requests.
pub async fn init(
    ledger: &Ledger,
    receivers: &BTreeMap<String, NotifyConfig>,
) -> Result<(), StoreError> {
    for name in receivers.keys() {
        let seq = ledger.notify_cursor(name).await?;
        debug!(receiver = %name, seq, "notification cursor");
    }
    Ok(())
}

/// Queues the notifications of the audit entries behind `receiver`'s cursor; returns how many.
pub async fn queue(
    ledger: &Ledger,
    receiver: &str,
    cfg: &NotifyConfig,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let mut queued = 0;
    loop {
        let from = ledger.notify_cursor(receiver).await?;
        let entries = ledger.notifiable_audit(from, BATCH).await?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(queued);
        };
        let rows: Vec<NewNotification> = entries
            .iter()
            .filter(|e| cfg.events.contains(&e.action))
            .map(|e| {
                let (id, body) = notification_for(receiver, e);
                NewNotification {
                    id,
                    seq: e.seq,
                    event_type: e.action.clone(),
                    body,
                    created_at: now,
                    // From the decision, but never before it is queued plus max_age: a
                    // backdated event or a CLI decision made while no daemon ran still gets
                    // its retries.
                    expires_at: e.at.max(now).plus(cfg.max_age),
                }
            })
            .collect();
        if ledger
            .queue_notifications(receiver, from, last, &rows)
            .await?
        {
            queued += rows.len();
        }
        if (entries.len() as i64) < BATCH {
            return Ok(queued);
        }
    }
}

/// Delivers notifications to their receivers until `stop`.
pub struct Notifier {
    ledger: Ledger,
    clock: Clock,
    receivers: Arc<BTreeMap<String, NotifyConfig>>,
    client: reqwest::Client,
}

impl Notifier {
    pub fn new(
        ledger: Ledger,
        clock: Clock,
        receivers: BTreeMap<String, NotifyConfig>,
    ) -> Result<Notifier, reqwest::Error> {
        crate::targets::install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("retentiond/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notifier {
            ledger,
            clock,
            receivers: Arc::new(receivers),
            client,
        })
    }

    pub async fn run(self, stop: CancellationToken) {
        if self.receivers.is_empty() {
            return;
        }
        let names: Vec<&str> = self.receivers.keys().map(String::as_str).collect();
        info!(receivers = %names.join(","), "notifications: delivering");
        let mut failing = false;
        loop {
            let busy = match self.round().await {
                Ok(n) => {
                    if failing {
                        info!("notifications: the ledger answers again");
                        failing = false;
                    }
                    n > 0
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "notifications: cannot read the queue; retrying");
                        failing = true;
                    }
                    false
                }
            };
            if !busy {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            } else if stop.is_cancelled() {
                return;
            }
        }
    }

    /// Queues what the cursors are behind on, then delivers one batch of due notifications;
    /// returns how many were attempted.
    pub async fn round(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        for (name, cfg) in self.receivers.iter() {
            queue(&self.ledger, name, cfg, now).await?;
        }
        let lease = self
            .receivers
            .values()
            .map(|c| c.timeout)
            .max()
            .unwrap_or(Span::from_secs(10));
        let receivers: Vec<String> = self.receivers.keys().cloned().collect();
        let claimed = self
            .ledger
            .claim_notifications(
                &receivers,
                now,
                now.plus(lease).plus(Span::from_secs(30)),
                BATCH,
            )
            .await?;
        let n = claimed.len();
        let sends = claimed.into_iter().map(|row| self.deliver(row));
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(n)
    }

    async fn deliver(&self, row: NotificationRow) -> Result<(), StoreError> {
        let Some(cfg) = self.receivers.get(&row.receiver) else {
            // Not claimed (the claim names the configured receivers); kept for safety.
            return Ok(());
        };
        let t = self.clock.now().millis().div_euclid(1000);
        let sig = signature(cfg.secret.expose().as_bytes(), t, row.body.as_bytes());
        let started = std::time::Instant::now();
        let result = self
            .client
            .post(cfg.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sig)
            .header("Retentiond-Notification-Id", &row.id)
            .timeout(Duration::from_millis(cfg.timeout.millis() as u64))
            .body(row.body.clone())
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Some(format!("timed out after {}", cfg.timeout)),
            Err(e) if e.is_connect() => Some("cannot connect".to_string()),
            Err(_) => Some("request failed".to_string()),
        };
        let now = self.clock.now();
        let outcome = match error {
            None => {
                info!(
                    receiver = %row.receiver, id = %row.id, r#type = %row.event_type, seq = row.seq,
                    attempts = row.attempts + 1, duration_ms = started.elapsed().as_millis() as u64,
                    "notification delivered"
                );
                crate::metrics::record_notification(&row.receiver, "delivered");
                DeliveryOutcome::Delivered
            }
            Some(error) => {
                let next = now.plus(retry_delay(
                    cfg.retry_backoff,
                    cfg.retry_backoff_max,
                    row.attempts + 1,
                ));
                let retry_at = (now < row.expires_at).then(|| next.min(row.expires_at));
                match retry_at {
                    Some(at) => {
                        warn!(
                            receiver = %row.receiver, id = %row.id, r#type = %row.event_type,
                            attempts = row.attempts + 1, error = %error, retry_at = %at,
                            "notification not delivered; will retry"
                        );
                        crate::metrics::record_notification(&row.receiver, "retry");
                    }
                    None => {
                        warn!(
                            receiver = %row.receiver, id = %row.id, r#type = %row.event_type,
                            attempts = row.attempts + 1, error = %error,
                            "notification dead-lettered: retries ran out (notify list --failed; notify retry)"
                        );
                        crate::metrics::record_notification(&row.receiver, "dead");
                    }
                }
                DeliveryOutcome::Failed { error, retry_at }
            }
        };
        self.ledger.record_delivery(&row.id, now, &outcome).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme() {
        // HMAC-SHA256("whsec", "1700000000.{}"), computed independently with openssl:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec
        assert_eq!(
            signature(b"whsec", 1_700_000_000, b"{}"),
            "t=1700000000,v1=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af"
        );
    }

    #[test]
    fn a_body_names_the_subject_the_person_and_the_reason() {
        let e = AuditEntry {
            seq: 7,
            at: Timestamp::from_millis(1_700_000_000_000),
            action: "zdr.denied".into(),
            subject: "org/o1".into(),
            details: r#"{"by":"Pat","reason":"not eligible","via":"privacy"}"#.into(),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let (id, body) = notification_for("mailer", &e);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], id.as_str());
        assert_eq!(
            (
                v["type"].as_str(),
                v["org"].as_str(),
                v["by"].as_str(),
                v["reason"].as_str()
            ),
            (
                Some("zdr.denied"),
                Some("o1"),
                Some("Pat"),
                Some("not eligible")
            )
        );
        assert_eq!(v["at"], "2023-11-14T22:13:20Z");
        assert_eq!(notification_for("mailer", &e).0, id, "stable");
        assert_ne!(notification_for("other", &e).0, id, "per receiver");
        let hold = AuditEntry {
            subject: "hold/3".into(),
            action: "hold.placed".into(),
            details: r#"{"placed_by":"Jo","case":"K-1"}"#.into(),
            ..e
        };
        let v: Value = serde_json::from_str(&notification_for("m", &hold).1).unwrap();
        assert_eq!(
            (v["hold"].as_i64(), v["by"].as_str()),
            (Some(3), Some("Jo"))
        );
        assert!(v.get("reason").is_none());
    }
}
