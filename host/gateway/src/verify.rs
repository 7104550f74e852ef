//! Verifying and exporting audit chains. These read the store directly, lazily (a chain of
//! millions of records is never held in memory), so they serve both the running gateway and
//! `writ audit verify|export --data-dir` on a stopped gateway's store.

use crate::audit::{Record, stored_records};
use crate::checkpoint::Checkpoint;
use crate::store::{Store, StoreError};

/// What broke at the first bad position of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Problem {
    /// The stored bytes are not a record.
    Undecodable,
    /// A seq is absent: the next stored record has a higher one.
    MissingSeq,
    /// The record stored at this position carries another seq.
    SeqOutOfOrder,
    /// `prev_hash` is not the previous record's hash.
    PrevHashMismatch,
    /// The recomputed hash differs from `hash`.
    HashMismatch,
    /// The record names another tenant.
    WrongTenant,
    /// The checkpointed record's hash differs from the checkpoint's head hash.
    CheckpointMismatch,
    /// The chain ends before the checkpoint's tree size: its tail was cut off.
    Truncated,
}

impl Problem {
    /// A stable code: the variant's name in snake case.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// The first break of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The seq where it was found.
    pub seq: u64,
    /// What broke.
    pub problem: Problem,
    /// Details for a human.
    pub detail: String,
}

/// The result of verifying one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records verified (all of them when `broken` is `None`).
    pub records: u64,
    /// The last verified record's seq and hash.
    pub head: Option<(u64, [u8; 32])>,
    /// The first break, if any.
    pub broken: Option<Broken>,
}

impl Verification {
    /// Whether the chain verified.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Recomputes every hash of `tenant_id`'s chain in seq order and checks seqs, links and, when
/// given, a checkpoint (its record must be present with the checkpointed hash).
pub fn verify_chain(
    store: &Store,
    tenant_id: &str,
    checkpoint: Option<&Checkpoint>,
) -> Result<Verification, StoreError> {
    let mut expected: u64 = 0;
    let mut prev = [0u8; 32];
    let fail = |seq, problem, detail: String, records, prev: [u8; 32]| Verification {
        records,
        head: records.checked_sub(1).map(|s| (s, prev)),
        broken: Some(Broken {
            seq,
            problem,
            detail,
        }),
    };
    let mut stored = stored_records(store, tenant_id, 0);
    while let Some(item) = stored.next() {
        let (position, bytes) = item?;
        if position > expected {
            let detail = format!("expected seq {expected}, the next stored record is {position}");
            return Ok(fail(expected, Problem::MissingSeq, detail, expected, prev));
        }
        let record: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("stored bytes are not a record: {e}");
                return Ok(fail(expected, Problem::Undecodable, detail, expected, prev));
            }
        };
        // A record taken out of a block shifts the rest of it back by one: the record of seq
        // `expected` is missing, not out of order, unless it is stored further on.
        if record.body.seq > expected && !stored_further(&mut stored, expected) {
            let detail = format!(
                "expected seq {expected}, the next stored record is {}",
                record.body.seq
            );
            return Ok(fail(expected, Problem::MissingSeq, detail, expected, prev));
        }
        let body = &record.body;
        if body.seq != expected {
            let detail = format!("position {expected} holds the record of seq {}", body.seq);
            return Ok(fail(
                expected,
                Problem::SeqOutOfOrder,
                detail,
                expected,
                prev,
            ));
        }
        if body.tenant_id != tenant_id {
            let detail = format!("record names tenant {}", body.tenant_id);
            return Ok(fail(expected, Problem::WrongTenant, detail, expected, prev));
        }
        if body.prev_hash != *crate::audit::hash_hex(&prev) {
            let detail = format!(
                "prev_hash {} is not the previous hash {}",
                body.prev_hash,
                hex::encode(prev)
            );
            return Ok(fail(
                expected,
                Problem::PrevHashMismatch,
                detail,
                expected,
                prev,
            ));
        }
        let hash = body.hash(&prev);
        if record.hash != *crate::audit::hash_hex(&hash) {
            let detail = format!(
                "stored hash {}, recomputed {}",
                record.hash,
                hex::encode(hash)
            );
            return Ok(fail(
                expected,
                Problem::HashMismatch,
                detail,
                expected,
                prev,
            ));
        }
        if let Some(cp) = checkpoint
            && cp.size == expected + 1
            && cp.head_hash != hash
        {
            let detail = format!(
                "checkpoint of size {} says the head hash is {}, the chain has {}",
                cp.size,
                hex::encode(cp.head_hash),
                hex::encode(hash)
            );
            return Ok(fail(
                expected,
                Problem::CheckpointMismatch,
                detail,
                expected,
                prev,
            ));
        }
        prev = hash;
        expected += 1;
    }
    if let Some(cp) = checkpoint
        && cp.size > expected
    {
        let detail = format!(
            "the chain has {expected} records; a signed checkpoint covers {}",
            cp.size
        );
        return Ok(fail(expected, Problem::Truncated, detail, expected, prev));
    }
    Ok(Verification {
        records: expected,
        head: expected.checked_sub(1).map(|s| (s, prev)),
        broken: None,
    })
}

/// Whether a record of `seq` is stored further on. Only a damaged chain gets here, and
/// verification stops right after, so reading the rest is affordable.
fn stored_further(
    stored: impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>>,
    seq: u64,
) -> bool {
    stored
        .map_while(Result::ok)
        .any(|(_, bytes)| serde_json::from_slice::<Record>(&bytes).is_ok_and(|r| r.body.seq == seq))
}

/// Calls `line` with each stored record of `tenant_id` with `seq > after_seq`, in order, as
/// its stored JSON (one JSON Lines line, without the newline). Stops early when `line`
/// returns `false`.
pub fn export(
    store: &Store,
    tenant_id: &str,
    after_seq: Option<u64>,
    mut line: impl FnMut(&[u8]) -> bool,
) -> Result<(), StoreError> {
    let from = after_seq.map_or(0, |s| s.saturating_add(1));
    for item in stored_records(store, tenant_id, from) {
        let (_, bytes) = item?;
        if !line(&bytes) {
            break;
        }
    }
    Ok(())
}
