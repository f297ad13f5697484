//! Signed checkpoints of the audit chain (issue 11).
//!
//! Invariant: `audit verify` passes against a checkpoint only if the chain up to the
//! checkpoint's seq is the one that was signed, so a chain rewritten whole by someone with write
//! access to the ledger fails against a checkpoint kept out of their reach.
//!
//! Mechanism: a hash chain proves that no entry was edited, deleted or reordered *relative to its head*;
//! someone with write access to the ledger can still rewrite the chain whole and recompute every
//! hash. A checkpoint closes that: the head (`seq`, `hash`) at a time, signed with an Ed25519 key
//! (`[audit] signing_key_file`). It is stored in the ledger, recorded as an `audit.checkpoint`
//! entry, logged, and written as a file to `[audit] checkpoint_dir` — meant to live on other
//! storage, out of reach of whoever can write the ledger. `audit verify --checkpoint FILE` then
//! proves that the chain up to the checkpoint's seq is the one that was signed: the entry at that
//! seq must have the signed hash, and every earlier entry is pinned by the chain's links.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::audit::{Anchor, AuditDraft, ChainBreak, CheckpointOut, HeadOut, Verified, Verifier};
use crate::config::AuditConfig;
use crate::model::Timestamp;
use crate::store::{CheckpointRow, Ledger, StoreError};

/// The `format` of a checkpoint; also the domain-separation prefix of the signed message.
pub const FORMAT: &str = "retentiond-checkpoint-v1";

/// A signed head of the audit chain. Its JSON form is the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    /// The seq of the entry that was the head.
    pub seq: i64,
    /// That entry's hash.
    pub hash: String,
    /// When it was signed (RFC 3339, millisecond precision).
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 signature over [`message`], hex.
    pub signature: String,
}

mod rfc3339 {
    use super::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// The bytes that are signed: format, seq, hash and time, one per line.
pub fn message(seq: i64, hash: &str, at: Timestamp) -> Vec<u8> {
    format!("{FORMAT}\nseq={seq}\nhash={hash}\nat={}\n", at.millis()).into_bytes()
}

/// Signs the head (`seq`, `hash`) at `at`.
pub fn sign(key: &SigningKey, seq: i64, hash: &str, at: Timestamp) -> Checkpoint {
    let signature = key.sign(&message(seq, hash, at));
    Checkpoint {
        format: FORMAT.to_string(),
        seq,
        hash: hash.to_string(),
        at,
        public_key: public_key_hex(&key.verifying_key()),
        signature: hex::encode(signature.to_bytes()),
    }
}

impl From<CheckpointRow> for Checkpoint {
    fn from(c: CheckpointRow) -> Self {
        Checkpoint {
            format: FORMAT.to_string(),
            seq: c.seq,
            hash: c.hash,
            at: c.at,
            public_key: c.public_key,
            signature: c.signature,
        }
    }
}

impl Checkpoint {
    /// The row the ledger stores for it.
    pub fn row(&self) -> CheckpointRow {
        CheckpointRow {
            seq: self.seq,
            hash: self.hash.clone(),
            at: self.at,
            public_key: self.public_key.clone(),
            signature: self.signature.clone(),
        }
    }

    /// The public key named in the checkpoint.
    pub fn key(&self) -> Result<VerifyingKey, String> {
        parse_public_key_hex(&self.public_key)
    }

    /// Checks the signature against `trusted`, or against the key named in the checkpoint when
    /// `None` (which proves only that the checkpoint is intact, not who signed it).
    pub fn verify(&self, trusted: Option<&VerifyingKey>) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "unknown checkpoint format `{}` (expected `{FORMAT}`)",
                self.format
            ));
        }
        let own = self.key()?;
        if let Some(t) = trusted
            && t != &own
        {
            return Err(format!(
                "signed by key {} but the trusted key is {}",
                self.public_key,
                public_key_hex(t)
            ));
        }
        let bytes =
            hex::decode(&self.signature).map_err(|_| "the signature is not hex".to_string())?;
        let sig = Signature::from_slice(&bytes)
            .map_err(|_| "the signature is not 64 bytes".to_string())?;
        own.verify_strict(&message(self.seq, &self.hash, self.at), &sig)
            .map_err(|_| {
                "the signature does not verify: the checkpoint was altered or forged".into()
            })
    }
}

pub fn public_key_hex(k: &VerifyingKey) -> String {
    hex::encode(k.to_bytes())
}

fn parse_public_key_hex(s: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(s.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("`{s}` is not an Ed25519 public key (64 hex digits)"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("`{s}` is not an Ed25519 public key: {e}"))
}

/// A public key given on the command line: 64 hex digits, or a file holding them or a PEM
/// `PUBLIC KEY` (as `openssl pkey -pubout` writes).
pub fn parse_public_key(arg: &str) -> Result<VerifyingKey, String> {
    if let Ok(k) = parse_public_key_hex(arg) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        format!("--public-key `{arg}` is neither 64 hex digits nor a readable file ({e})")
    })?;
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        VerifyingKey::from_public_key_pem(&text)
            .map_err(|e| format!("{arg}: not an Ed25519 public key ({e})"))
    } else {
        parse_public_key_hex(text.trim()).map_err(|e| format!("{arg}: {e}"))
    }
}

/// A new key from the operating system's random source.
pub fn generate_key() -> Result<SigningKey, String> {
    use rand::TryRng;
    let mut seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| format!("no randomness from the operating system: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// Writes `key` as a PKCS#8 PEM file readable by its owner only (0600). Refuses to overwrite.
pub fn write_key(path: &Path, key: &SigningKey) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads a signing key: PKCS#8 PEM (what `audit keygen` and `openssl genpkey -algorithm
/// ed25519` write) or a 32-byte seed in hex.
pub fn load_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read audit.signing_key_file {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            warn!(file = %path.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "the audit signing key is readable by others; chmod 600 it");
        }
    }
    if text.contains("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(&text).map_err(|e| {
            format!(
                "audit.signing_key_file {}: not an Ed25519 PKCS#8 key ({e})",
                path.display()
            )
        });
    }
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "audit.signing_key_file {}: neither PKCS#8 PEM nor 64 hex digits",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    Config(String),
    #[error("nothing to checkpoint: the audit log is empty")]
    Empty,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "checkpoint at seq {seq} is stored in the ledger, but writing it to {dir} failed: {error}"
    )]
    File {
        seq: i64,
        dir: String,
        error: String,
    },
}

/// A checkpoint that was taken.
#[derive(Debug, Clone, Serialize)]
pub struct Taken {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// The `audit.checkpoint` entry that records it.
    pub entry_seq: i64,
    pub file: Option<PathBuf>,
}

/// Signs the current head and records it: in the ledger (table and an `audit.checkpoint`
/// entry, one transaction), in the log, and as a file in `checkpoint_dir` when set.
/// With `skip_if_unchanged`, does nothing when the head is the previous checkpoint's own entry.
pub async fn take(
    ledger: &Ledger,
    audit: &AuditConfig,
    now: Timestamp,
    actor: &str,
    skip_if_unchanged: bool,
) -> Result<Option<Taken>, CheckpointError> {
    let path = audit.signing_key_file.as_deref().ok_or_else(|| {
        CheckpointError::Config(
            "audit.signing_key_file is not set; create a key with `retentiond audit keygen --out FILE`".into(),
        )
    })?;
    let key = load_key(path).map_err(CheckpointError::Config)?;
    let mut tx = ledger.begin().await?;
    // Locks the chain, so the head cannot move before our own entry is appended after it.
    let Some(head) = tx.audit_last_locked().await? else {
        tx.rollback().await?;
        return Err(CheckpointError::Empty);
    };
    if skip_if_unchanged && head.action == "audit.checkpoint" {
        tx.rollback().await?;
        debug!(
            seq = head.seq,
            "audit unchanged since the last checkpoint; none taken"
        );
        return Ok(None);
    }
    let cp = sign(&key, head.seq, &head.hash, now);
    tx.insert_checkpoint(&cp.row()).await?;
    let entry = tx
        .commit_with_audit(&[AuditDraft::new(
            now,
            "audit.checkpoint",
            format!("checkpoint/{}", cp.seq),
            json!({
                "seq": cp.seq, "hash": cp.hash, "at": cp.at, "public_key": cp.public_key,
                "signature": cp.signature, "by": actor,
            }),
        )])
        .await?
        .map(|h| h.seq)
        .unwrap_or_default();
    let file = match &audit.checkpoint_dir {
        Some(dir) => match write_file(dir, &cp) {
            Ok(p) => Some(p),
            Err(e) => {
                error!(seq = cp.seq, dir = %dir.display(), error = %e, "audit checkpoint NOT written to checkpoint_dir");
                return Err(CheckpointError::File {
                    seq: cp.seq,
                    dir: dir.display().to_string(),
                    error: e,
                });
            }
        },
        None => None,
    };
    info!(
        seq = cp.seq, hash = %cp.hash, at = %cp.at, public_key = %cp.public_key,
        signature = %cp.signature, entry = entry,
        file = %file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into()),
        "audit checkpoint signed"
    );
    Ok(Some(Taken {
        checkpoint: cp,
        entry_seq: entry,
        file,
    }))
}

/// File name of a checkpoint: sorted by seq.
pub fn file_name(cp: &Checkpoint) -> String {
    format!("checkpoint-{:012}.json", cp.seq)
}

fn write_file(dir: &Path, cp: &Checkpoint) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join(file_name(cp));
    let tmp = dir.join(format!(".{}.tmp", file_name(cp)));
    let text = serde_json::to_string_pretty(cp).map_err(|e| e.to_string())? + "\n";
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| e.to_string())?;
    Ok(path)
}

/// Reads checkpoint files: each path is a file, or a folder whose `*.json` files are read.
pub fn read_files(paths: &[PathBuf]) -> Result<Vec<(String, Checkpoint)>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json") && f.is_file())
                .collect();
            inside.sort();
            if inside.is_empty() {
                return Err(format!("{}: no checkpoint files (*.json)", p.display()));
            }
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let cp: Checkpoint = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a checkpoint ({e})", f.display()))?;
            Ok((f.display().to_string(), cp))
        })
        .collect()
}

/// Which key signatures are checked against.
#[derive(Debug, Clone)]
pub enum Trust {
    /// `--public-key`.
    Given(VerifyingKey),
    /// The public half of `audit.signing_key_file`.
    Configured(VerifyingKey),
    /// Only the key named in each checkpoint: proves integrity, not origin.
    Embedded,
}

impl Trust {
    pub fn key(&self) -> Option<&VerifyingKey> {
        match self {
            Trust::Given(k) | Trust::Configured(k) => Some(k),
            Trust::Embedded => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Trust::Given(k) => format!("--public-key {}", public_key_hex(k)),
            Trust::Configured(k) => {
                format!("audit.signing_key_file (public key {})", public_key_hex(k))
            }
            Trust::Embedded => {
                "the key named in each checkpoint (pass --public-key to pin who signed it)".into()
            }
        }
    }
}

/// What `audit verify` checks the chain against: the checkpoints stored in the ledger and any
/// given checkpoint files. A checkpoint whose signature fails is returned as a problem
/// (`seq`, message) instead of an anchor.
pub async fn anchors(
    ledger: &Ledger,
    files: &[(String, Checkpoint)],
    trust: &Trust,
) -> Result<(Vec<Anchor>, Vec<(i64, String)>), StoreError> {
    let mut anchors = Vec::new();
    let mut problems = Vec::new();
    let mut after = i64::MIN;
    loop {
        let page = ledger.audit_checkpoints(after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for cp in page.into_iter().map(Checkpoint::from) {
            // Stored checkpoints are checked with their own key: a bad one means the table was
            // edited. They count as trusted only when signed by the trusted key.
            match cp.verify(None) {
                Ok(()) => anchors.push(Anchor {
                    seq: cp.seq,
                    hash: cp.hash.clone(),
                    at: cp.at,
                    source: "the checkpoint stored in the ledger".into(),
                    trusted: trust.key().is_some_and(|k| cp.key().is_ok_and(|c| &c == k)),
                }),
                Err(e) => problems.push((
                    cp.seq,
                    format!(
                        "the checkpoint stored in the ledger for seq {}: {e}",
                        cp.seq
                    ),
                )),
            }
        }
    }
    // Files last: where one matches at the same seq as a stored copy, it is the one reported.
    for (name, cp) in files {
        match cp.verify(trust.key()) {
            Ok(()) => anchors.push(Anchor {
                seq: cp.seq,
                hash: cp.hash.clone(),
                at: cp.at,
                source: format!("checkpoint file {name}"),
                trusted: trust.key().is_some(),
            }),
            Err(e) => problems.push((cp.seq, format!("checkpoint file {name}: {e}"))),
        }
    }
    Ok((anchors, problems))
}

/// Arms the `[audit] checkpoint` cron in the daemon. Firings never overlap; failures are logged
/// and retried at the next firing; an unchanged chain is not signed again.
pub async fn schedule(
    scheduler: &tokio_cron_scheduler::JobScheduler,
    ledger: &Ledger,
    audit: &AuditConfig,
    clock: &crate::clock::Clock,
    tracker: &tokio_util::task::TaskTracker,
) -> anyhow::Result<()> {
    let Some(expr) = audit.checkpoint.clone() else {
        return Ok(());
    };
    // Fail at start, not at the first firing, when the key is unusable.
    if let Some(p) = &audit.signing_key_file {
        load_key(p).map_err(anyhow::Error::msg)?;
    }
    let busy = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let (ledger, audit, clock, tracker) = (
        ledger.clone(),
        audit.clone(),
        clock.clone(),
        tracker.clone(),
    );
    let job = tokio_cron_scheduler::Job::new_async(expr.as_str(), move |_, _| {
        let (ledger, audit, clock, busy) =
            (ledger.clone(), audit.clone(), clock.clone(), busy.clone());
        let tracker = tracker.clone();
        Box::pin(async move {
            let Ok(guard) = busy.try_lock_owned() else {
                return;
            };
            tracker.spawn(async move {
                let r = take(&ledger, &audit, clock.now(), "retentiond run", true).await;
                if let Err(e) = r {
                    error!(error = %e, "audit checkpoint failed; the next firing retries");
                }
                drop(guard);
            });
        })
    })
    .map_err(|e| anyhow::anyhow!("audit.checkpoint `{expr}`: {e}"))?;
    scheduler.add(job).await?;
    info!(checkpoint = %expr, "audit checkpoints scheduled");
    Ok(())
}

/// Recomputes the whole chain and checks it against the checkpoints stored in the ledger.
pub async fn verify_ledger(ledger: &Ledger) -> Result<Verified, StoreError> {
    let (anchors, problems) = anchors(ledger, &[], &Trust::Embedded).await?;
    verify_anchored(ledger, anchors, problems).await
}

/// Recomputes the whole chain, streaming it in pages, and checks it against `anchors`.
/// `problems` are checkpoints that failed their own checks (seq, message): they fail the
/// verification too, and the earliest seq of anything wrong is reported.
pub async fn verify_anchored(
    ledger: &Ledger,
    anchors: Vec<Anchor>,
    problems: Vec<(i64, String)>,
) -> Result<Verified, StoreError> {
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
    let (matched, trusted, last) = v.anchors_matched();
    let (last, entries) = (last.cloned(), v.count());
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

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_checkpoint_verifies_and_any_change_breaks_it() {
        let cp = sign(
            &key(),
            12,
            &"ab".repeat(32),
            Timestamp::from_millis(1_800_000_000_123),
        );
        cp.verify(None).unwrap();
        cp.verify(Some(&key().verifying_key())).unwrap();
        let text = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cp);
        for tamper in [
            |c: &mut Checkpoint| c.seq += 1,
            |c: &mut Checkpoint| c.hash = "cd".repeat(32),
            |c: &mut Checkpoint| c.at = Timestamp::from_millis(c.at.millis() + 1),
        ] {
            let mut bad = cp.clone();
            tamper(&mut bad);
            assert!(bad.verify(None).unwrap_err().contains("does not verify"));
        }
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(
            cp.verify(Some(&other.verifying_key()))
                .unwrap_err()
                .contains("trusted key")
        );
        // A forger re-signing with their own key is caught only by pinning the key.
        let forged = sign(&other, 12, &"cd".repeat(32), cp.at);
        assert!(forged.verify(None).is_ok());
        assert!(forged.verify(Some(&key().verifying_key())).is_err());
    }

    #[test]
    fn keys_round_trip_through_pem_and_hex() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate_key().unwrap();
        let p = dir.path().join("k.pem");
        write_key(&p, &k).unwrap();
        assert!(write_key(&p, &k).is_err(), "never overwrites a key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_key(&p).unwrap().to_bytes(), k.to_bytes());
        let h = dir.path().join("k.hex");
        std::fs::write(&h, hex::encode(k.to_bytes())).unwrap();
        assert_eq!(load_key(&h).unwrap().to_bytes(), k.to_bytes());
        let pk = public_key_hex(&k.verifying_key());
        assert_eq!(parse_public_key(&pk).unwrap(), k.verifying_key());
        assert!(parse_public_key("nothex").is_err());
    }
}
