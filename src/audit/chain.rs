//! The audit chain itself: what an entry is and how its hash is computed. Pure: no I/O.
//!
//! Invariant: an entry's `hash` is SHA-256 over a length-prefixed encoding of (seq, at, action,
//! subject, details, prev_hash), and `prev_hash` is the previous entry's hash (the first one's
//! is [`GENESIS`]), so editing, deleting or reordering any entry breaks every later link. The
//! `details` text is hashed exactly as stored. The ledger appends what [`extend`] computes
//! from its head, inside the transaction that holds the chain's lock.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::Timestamp;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to be appended; the ledger assigns `seq` and the hashes.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    pub at: Timestamp,
    pub action: &'static str,
    pub subject: String,
    /// The JSON text that will be stored and hashed. Never user content: ids, kinds, causes,
    /// timestamps, policy values, counts, actors.
    pub details: String,
}

impl AuditDraft {
    pub fn new(
        at: Timestamp,
        action: &'static str,
        subject: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self::with_details(at, action, subject, &details)
    }

    /// Details from any serializable value. A struct whose fields are declared in name order
    /// gives the same text as the equivalent `json!` object (whose keys serialize sorted),
    /// without building the intermediate map: the sweep writes one receipt per resource.
    pub fn with_details(
        at: Timestamp,
        action: &'static str,
        subject: impl Into<String>,
        details: &impl Serialize,
    ) -> Self {
        AuditDraft {
            at,
            action,
            subject: subject.into(),
            details: serde_json::to_string(details).unwrap_or_else(|_| "{}".into()),
        }
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: Timestamp,
    pub action: String,
    pub subject: String,
    /// The canonical JSON text that was hashed.
    #[serde(serialize_with = "raw_json")]
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

fn raw_json<S: serde::Serializer>(details: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<serde_json::Value>(details) {
        Ok(v) => v.serialize(s),
        Err(_) => s.serialize_str(details),
    }
}

/// The hash of one entry.
pub fn entry_hash(
    seq: i64,
    at: Timestamp,
    action: &str,
    subject: &str,
    details: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"retentiond-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(at.millis().to_be_bytes());
    for field in [action, subject, details, prev_hash] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Extends the chain whose head is (`head_seq`, `head_hash`) with `drafts`.
pub fn extend(head_seq: i64, head_hash: &str, drafts: &[AuditDraft]) -> Vec<AuditEntry> {
    let mut prev = head_hash.to_string();
    let mut out = Vec::with_capacity(drafts.len());
    for (i, d) in drafts.iter().enumerate() {
        let seq = head_seq + 1 + i as i64;
        let details = d.details.clone();
        let hash = entry_hash(seq, d.at, d.action, &d.subject, &details, &prev);
        out.push(AuditEntry {
            seq,
            at: d.at,
            action: d.action.to_string(),
            subject: d.subject.clone(),
            details,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    out
}
