//! The tamper-evident audit log: entry hashing, chain building and verification (§2, issue 11).
//!
//! Each entry's `hash` is SHA-256 over a length-prefixed encoding of (seq, at, action, subject,
//! details, prev_hash), and `prev_hash` is the previous entry's hash, so editing, deleting or
//! reordering any entry breaks every later link. The `details` text is hashed exactly as stored.
//! A chain can still be rewritten whole by someone with write access to the ledger; signed
//! checkpoints kept elsewhere (see `checkpoint`) are what pin it down.

use std::collections::BTreeMap;

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
pub fn chain(head_seq: i64, head_hash: &str, drafts: &[AuditDraft]) -> Vec<AuditEntry> {
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

/// What is wrong with a chain, at the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {problem}")]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: String,
}

/// Records that a daemon started or reloaded with a config: the fingerprint of the config's
/// schedule policy and of the policy in force (they differ while a change waits for `policy
/// accept`), the file, kinds and targets. The `policy.*` entries hold the values themselves.
pub async fn record_config_loaded(
    ledger: &crate::store::Ledger,
    config: &crate::config::Config,
    now: Timestamp,
    actor: &str,
) -> Result<(), crate::store::StoreError> {
    let in_force = crate::policy::in_force(ledger)
        .await?
        .map(|p| crate::policy::fingerprint(&p));
    let tx = ledger.begin().await?;
    tx.commit_with_audit(&[AuditDraft::new(
        now,
        "config.loaded",
        "config",
        serde_json::json!({
            "file": config.file, "fingerprint": crate::policy::fingerprint(&config.policy),
            "in_force": in_force, "kinds": config.kinds.keys().collect::<Vec<_>>(),
            "targets": config.targets.keys().collect::<Vec<_>>(), "by": actor,
            "version": crate::version::VERSION, "commit": crate::version::COMMIT,
        }),
    )])
    .await?;
    Ok(())
}

/// A hash the chain must have at a seq: taken from a signed checkpoint whose signature was
/// checked (see `checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    pub at: Timestamp,
    /// Where it comes from, for messages ("checkpoint file …", "the checkpoint stored …").
    pub source: String,
    /// Signed by the key the verifier trusts (not merely by the key named in it).
    pub trusted: bool,
}

/// Checks entries streamed in seq order. Feed them with [`Verifier::push`], then call
/// [`Verifier::finish`] (or [`Verifier::finish_anchored`] when anchors were given).
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    count: u64,
    anchors: BTreeMap<i64, Vec<Anchor>>,
    matched: usize,
    trusted: usize,
    last_anchor: Option<Anchor>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS.to_string(),
            count: 0,
            anchors: BTreeMap::new(),
            matched: 0,
            trusted: 0,
            last_anchor: None,
        }
    }
}

impl Verifier {
    /// A verifier that also requires the chain to have each anchor's hash at its seq: a chain
    /// rewritten whole, consistently, fails at the first checkpoint that was signed before.
    pub fn with_anchors(anchors: impl IntoIterator<Item = Anchor>) -> Self {
        let mut v = Verifier::default();
        for a in anchors {
            v.anchors.entry(a.seq).or_default().push(a);
        }
        v
    }

    pub fn push(&mut self, e: &AuditEntry) -> Result<(), ChainBreak> {
        let fail = |problem: String| {
            Err(ChainBreak {
                seq: e.seq,
                problem,
            })
        };
        if e.seq > self.expected_seq {
            return Err(ChainBreak {
                seq: self.expected_seq,
                problem: format!(
                    "entry is missing (next present entry is seq {}): deleted",
                    e.seq
                ),
            });
        }
        if e.seq < self.expected_seq {
            return fail(format!(
                "seq repeats or goes backwards (expected {})",
                self.expected_seq
            ));
        }
        if e.prev_hash != self.prev_hash {
            return fail("prev_hash does not match the previous entry's hash: an entry before it was deleted, reordered or rewritten".into());
        }
        let recomputed = entry_hash(e.seq, e.at, &e.action, &e.subject, &e.details, &e.prev_hash);
        if recomputed != e.hash {
            return fail("hash does not match the entry's contents: the entry was edited".into());
        }
        for a in self.anchors.remove(&e.seq).unwrap_or_default() {
            if a.hash != e.hash {
                let after = match &self.last_anchor {
                    Some(last) => format!(
                        "after seq {} (the last checkpoint that matched) and ",
                        last.seq
                    ),
                    None => String::new(),
                };
                return fail(format!(
                    "hash differs from the one signed in {} at {} ({}): the chain was rewritten {after}at or before this seq",
                    a.source, a.at, a.hash
                ));
            }
            self.matched += 1;
            self.trusted += a.trusted as usize;
            self.last_anchor = Some(a);
        }
        self.prev_hash = e.hash.clone();
        self.expected_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// (number of entries, head seq, head hash)
    pub fn finish(self) -> (u64, i64, String) {
        (self.count, self.expected_seq - 1, self.prev_hash)
    }

    /// Like [`Verifier::finish`], but an anchor beyond the head means entries were cut off the
    /// end of the chain.
    pub fn finish_anchored(self) -> Result<(u64, i64, String), ChainBreak> {
        let head = self.expected_seq - 1;
        if let Some(a) = self.anchors.values().flatten().next() {
            return Err(ChainBreak {
                seq: head + 1,
                problem: format!(
                    "entry is missing: {} signed seq {} at {} but the chain ends at seq {head}: entries were deleted from its end",
                    a.source, a.seq, a.at
                ),
            });
        }
        Ok(self.finish())
    }
}

/// The result of verifying the ledger's chain.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub ok: bool,
    pub entries: u64,
    pub head: Option<HeadOut>,
    /// Signed checkpoints the chain was found to match.
    pub checkpoints_verified: usize,
    /// Of those, how many were signed by the trusted key (`--public-key` or the configured one).
    pub trusted_checkpoints: usize,
    /// The latest checkpoint that matched: the chain up to its seq is the one that was signed.
    pub last_checkpoint: Option<CheckpointOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ChainBreak>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeadOut {
    pub seq: i64,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointOut {
    pub seq: i64,
    pub hash: String,
    pub at: Timestamp,
    pub source: String,
}

/// Recomputes the whole chain and checks it against the checkpoints stored in the ledger.
pub async fn verify_ledger(
    ledger: &crate::store::Ledger,
) -> Result<Verified, crate::store::StoreError> {
    let (anchors, problems) =
        crate::checkpoint::anchors(ledger, &[], &crate::checkpoint::Trust::Embedded).await?;
    verify_anchored(ledger, anchors, problems).await
}

/// Recomputes the whole chain, streaming it in pages, and checks it against `anchors`.
/// `problems` are checkpoints that failed their own checks (seq, message): they fail the
/// verification too, and the earliest seq of anything wrong is reported.
pub async fn verify_anchored(
    ledger: &crate::store::Ledger,
    anchors: Vec<Anchor>,
    problems: Vec<(i64, String)>,
) -> Result<Verified, crate::store::StoreError> {
    let mut v = Verifier::with_anchors(anchors);
    let mut next = 1i64;
    let mut first = true;
    let mut broken = None;
    'pages: loop {
        // Page by seq; a gap is found by the verifier, since the page simply skips it.
        let page = ledger
            .audit_range(if first { i64::MIN } else { next }, i64::MAX, 10_000)
            .await?;
        first = false;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for e in &page {
            if let Err(b) = v.push(e) {
                broken = Some(b);
                break 'pages;
            }
        }
    }
    let (matched, trusted, last) = (v.matched, v.trusted, v.last_anchor.clone());
    let entries = v.count;
    let (finished, error) = match broken {
        Some(b) => (None, Some(b)),
        None => match v.finish_anchored() {
            Ok(f) => (Some(f), None),
            Err(b) => (None, Some(b)),
        },
    };
    let error = problems
        .into_iter()
        .map(|(seq, problem)| ChainBreak { seq, problem })
        .chain(error)
        .min_by_key(|b| b.seq);
    Ok(Verified {
        ok: error.is_none(),
        entries,
        head: finished
            .filter(|(n, _, _)| *n > 0)
            .map(|(_, seq, hash)| HeadOut { seq, hash }),
        checkpoints_verified: matched,
        trusted_checkpoints: trusted,
        last_checkpoint: last.map(|a| CheckpointOut {
            seq: a.seq,
            hash: a.hash,
            at: a.at,
            source: a.source,
        }),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drafts(n: usize) -> Vec<AuditDraft> {
        (0..n)
            .map(|i| {
                AuditDraft::new(
                    Timestamp(i as i64),
                    "resource.purged",
                    format!("file/r{i}"),
                    json!({"n": i}),
                )
            })
            .collect()
    }

    fn verify(entries: &[AuditEntry]) -> Result<(u64, i64, String), ChainBreak> {
        let mut v = Verifier::default();
        for e in entries {
            v.push(e)?;
        }
        Ok(v.finish())
    }

    #[test]
    fn an_intact_chain_verifies_and_appends_continue_it() {
        let mut entries = chain(0, GENESIS, &drafts(3));
        let head = entries.last().unwrap().clone();
        entries.extend(chain(head.seq, &head.hash, &drafts(2)));
        let (n, seq, hash) = verify(&entries).unwrap();
        assert_eq!((n, seq), (5, 5));
        assert_eq!(hash, entries[4].hash);
    }

    #[test]
    fn edits_deletions_and_swaps_name_the_first_bad_seq() {
        let entries = chain(0, GENESIS, &drafts(5));
        let mut edited = entries.clone();
        edited[2].details = "{\"n\":99}".into();
        assert_eq!(verify(&edited).unwrap_err().seq, 3);
        assert!(verify(&edited).unwrap_err().problem.contains("edited"));

        let mut deleted = entries.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted).unwrap_err().seq, 2);

        let mut swapped = entries.clone();
        swapped.swap(1, 2);
        let (a, b) = (swapped[1].seq, swapped[2].seq);
        swapped[1].seq = b;
        swapped[2].seq = a;
        assert_eq!(verify(&swapped).unwrap_err().seq, 2);
    }

    fn anchor(e: &AuditEntry) -> Anchor {
        Anchor {
            seq: e.seq,
            hash: e.hash.clone(),
            at: Timestamp(0),
            source: "test".into(),
            trusted: true,
        }
    }

    fn verify_anchored(entries: &[AuditEntry], anchors: Vec<Anchor>) -> Result<i64, ChainBreak> {
        let mut v = Verifier::with_anchors(anchors);
        for e in entries {
            v.push(e)?;
        }
        v.finish_anchored().map(|(_, seq, _)| seq)
    }

    #[test]
    fn a_consistent_rewrite_passes_the_chain_but_not_an_earlier_anchor() {
        let entries = chain(0, GENESIS, &drafts(6));
        let anchors = vec![anchor(&entries[1]), anchor(&entries[3])];
        assert_eq!(verify_anchored(&entries, anchors.clone()), Ok(6));
        // Rewrite from seq 3 on, recomputing every hash.
        let mut forged = entries[..2].to_vec();
        let mut rest = drafts(6)[2..].to_vec();
        rest[0].details = json!({"n": "forged"}).to_string();
        forged.extend(chain(2, &entries[1].hash, &rest));
        assert!(verify(&forged).is_ok(), "the chain alone cannot tell");
        let b = verify_anchored(&forged, anchors.clone()).unwrap_err();
        assert_eq!(b.seq, 4);
        assert!(b.problem.contains("after seq 2"), "{}", b.problem);
        // Cutting entries off the end is caught by an anchor beyond the new head.
        let b = verify_anchored(&entries[..3], anchors).unwrap_err();
        assert_eq!(b.seq, 4);
        assert!(b.problem.contains("deleted from its end"), "{}", b.problem);
    }
}
