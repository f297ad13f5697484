//! The tamper-evident audit log (§2, issue 11): the chain ([`chain`]) and its verification over
//! a stream of entries ([`Verifier`]). Pure: reading the entries from the ledger and finding
//! the anchors is `checkpoint`'s job.
//!
//! Invariant: a chain passes [`Verifier`] only if every entry's hash matches its contents and
//! its predecessor, seqs run from 1 without a gap, and each anchor (a hash taken from a signed
//! checkpoint) matches the entry at its seq. A chain can still be rewritten whole by someone
//! with write access to the ledger; signed checkpoints kept elsewhere are what pin it down.

pub mod chain;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Timestamp;

pub use chain::{AuditDraft, AuditEntry, GENESIS, entry_hash};

/// What is wrong with a chain, at the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {problem}")]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: String,
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

    /// Entries checked so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Anchors matched so far, how many of them trusted, and the last one matched.
    pub fn anchors_matched(&self) -> (usize, usize, Option<&Anchor>) {
        (self.matched, self.trusted, self.last_anchor.as_ref())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drafts(n: usize) -> Vec<AuditDraft> {
        (0..n)
            .map(|i| {
                AuditDraft::new(
                    Timestamp::from_millis(i as i64),
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
        let mut entries = chain::extend(0, GENESIS, &drafts(3));
        let head = entries.last().unwrap().clone();
        entries.extend(chain::extend(head.seq, &head.hash, &drafts(2)));
        let (n, seq, hash) = verify(&entries).unwrap();
        assert_eq!((n, seq), (5, 5));
        assert_eq!(hash, entries[4].hash);
    }

    #[test]
    fn edits_deletions_and_swaps_name_the_first_bad_seq() {
        let entries = chain::extend(0, GENESIS, &drafts(5));
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
            at: Timestamp::from_millis(0),
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
        let entries = chain::extend(0, GENESIS, &drafts(6));
        let anchors = vec![anchor(&entries[1]), anchor(&entries[3])];
        assert_eq!(verify_anchored(&entries, anchors.clone()), Ok(6));
        // Rewrite from seq 3 on, recomputing every hash.
        let mut forged = entries[..2].to_vec();
        let mut rest = drafts(6)[2..].to_vec();
        rest[0].details = json!({"n": "forged"}).to_string();
        forged.extend(chain::extend(2, &entries[1].hash, &rest));
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
