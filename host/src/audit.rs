//! The audit log: one append-only blake3 hash chain per tenant, and group commit.
//!
//! Each [`Record`] carries `prev_hash` and
//! `hash = blake3(prev_hash as 32 raw bytes ‖ canonical bytes)`, where the canonical bytes are
//! the record without `hash` as JSON with keys in lexicographic order and no whitespace (the
//! declaration order of [`RecordBody`]'s fields). The first record's `prev_hash` is 32 zero
//! bytes. ARCHITECTURE.md documents the encoding for independent verifiers.
//!
//! **Durable before acknowledged:** [`AuditLog::append`] returns only once the record has been
//! flushed. Appends go through one writer thread (group commit): it takes every append queued
//! (up to [`MAX_BATCH`]), chains them, writes them in one store transaction, flushes once, and
//! answers them all, while the next batch queues. One transaction and one flush per batch
//! rather than per record is what makes durable appends cheap: sled pays a log write for every
//! multi-key transaction. The writer is the only writer of the chains and of the usage
//! counters, so it checks a charging call's usage expectations without a lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::store::{RecordCommit, Store, StoreError, Table};
use crate::tenants::{new_id, tenant_key, tenant_prefix};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed, or a flush did not complete.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record could not be made durable.
    #[error("audit flush failed")]
    FlushFailed,
    /// The store refused the write (nothing was written).
    #[error("audit write failed: {0}")]
    WriteFailed(String),
    /// A usage counter the policy read changed before the record was written (nothing was).
    #[error("a usage counter changed since the policy read it")]
    UsageConflict,
}

/// Result of an audit operation.
pub type Result<T> = std::result::Result<T, AuditError>;

/// What kind of event a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A policy decision on a tool call.
    Decision,
    /// A policy was activated.
    PolicyActivated,
    /// A key was created.
    KeyCreated,
    /// A key was revoked.
    KeyRevoked,
    /// A call was escalated and is held for a human.
    EscalationOpened,
    /// A held call was approved, rejected, or expired.
    EscalationResolved,
    /// A downstream job finished (completed or failed).
    JobFinished,
}

impl Kind {
    /// The name stored in `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::PolicyActivated => "policy_activated",
            Self::KeyCreated => "key_created",
            Self::KeyRevoked => "key_revoked",
            Self::EscalationOpened => "escalation_opened",
            Self::EscalationResolved => "escalation_resolved",
            Self::JobFinished => "job_finished",
        }
    }
}

/// A charge as recorded: the amount as the decimal text Rust's `Display` gives the `f64`, so
/// verifiers never re-format a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCharge {
    /// Decimal text of the amount.
    pub amount: String,
    /// The counter.
    pub counter: String,
}

/// Everything in a record except its hash. **Fields are declared in lexicographic order**: that
/// order is the canonical encoding's key order. Every field is always present (`null` when it
/// does not apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    /// The evaluated action.
    pub action: Option<String>,
    /// The key subject who performed a human or administrative action.
    pub actor: Option<String>,
    /// The agent that made the call.
    pub agent_id: Option<String>,
    /// The call's arguments, as the JSON text the gateway received them.
    pub arguments: Option<String>,
    /// Charges recorded with the decision (only on an ALLOW).
    pub charges: Vec<RecordCharge>,
    /// The client's hint (`decision` in the Provenance request); never changes the outcome.
    pub client_hint: Option<String>,
    /// Machine-readable codes.
    pub codes: Vec<String>,
    /// Kind-specific detail, as JSON text (e.g. a created key's id and role).
    pub detail: Option<String>,
    /// The escalation, for escalated calls.
    pub escalation_id: Option<String>,
    /// Unique id of this record (`evt_…`), given to the caller.
    pub event_id: String,
    /// Fuel the policy burned.
    pub fuel: Option<u64>,
    /// [`Kind::as_str`].
    pub kind: String,
    /// Evaluation time in microseconds.
    pub latency_us: Option<u64>,
    /// `ALLOW`, `BLOCK` or `ESCALATE`.
    pub outcome: Option<String>,
    /// The policy that decided (blake3 hex of its component).
    pub policy_id: Option<String>,
    /// Hash of the previous record (hex), zeros for the first.
    pub prev_hash: String,
    /// Human-readable reason.
    pub reason: Option<String>,
    /// Position in the tenant's chain, gapless from 0.
    pub seq: u64,
    /// The call's session.
    pub session_id: Option<String>,
    /// The tenant.
    pub tenant_id: String,
    /// When the record was appended, ms since the epoch.
    pub timestamp_ms: u64,
}

/// A record of the chain: the body and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The hashed content.
    #[serde(flatten)]
    pub body: RecordBody,
    /// `blake3(prev_hash bytes ‖ canonical(body))`, hex.
    pub hash: String,
}

impl RecordBody {
    /// The canonical bytes: JSON, keys sorted, no whitespace.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialize")
    }

    /// The record's hash given its `prev_hash`.
    pub fn hash(&self, prev_hash: &[u8; 32]) -> [u8; 32] {
        chain_hash(prev_hash, &self.canonical())
    }
}

impl RecordBody {
    /// An empty record of `kind` for [`AuditLog::append`], which fills in `seq`, `prev_hash`,
    /// `tenant_id`, `timestamp_ms` and, unless the caller chose one, `event_id`.
    pub fn new(kind: Kind) -> Self {
        Self {
            action: None,
            actor: None,
            agent_id: None,
            arguments: None,
            charges: Vec::new(),
            client_hint: None,
            codes: Vec::new(),
            detail: None,
            escalation_id: None,
            event_id: String::new(),
            fuel: None,
            kind: kind.as_str().to_owned(),
            latency_us: None,
            outcome: None,
            policy_id: None,
            prev_hash: String::new(),
            reason: None,
            seq: 0,
            session_id: None,
            tenant_id: String::new(),
            timestamp_ms: 0,
        }
    }
}

/// What is committed atomically with a record besides it: usage counter effects and an
/// escalation's row.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Counter keys and the values the policy read; a change aborts the append.
    pub expect: Vec<(Vec<u8>, f64)>,
    /// Counter keys and amounts to add.
    pub add: Vec<(Vec<u8>, f64)>,
    /// An escalation row (key, value) to write in [`Table::Escalations`].
    pub escalation: Option<(Vec<u8>, Vec<u8>)>,
}

struct Head {
    next_seq: u64,
    prev_hash: [u8; 32],
}

/// Most records the writer commits in one transaction and flush.
const MAX_BATCH: usize = 256;

/// An append waiting for the writer.
struct Pending {
    tenant_id: String,
    body: RecordBody,
    effects: Effects,
    reply: oneshot::Sender<Result<Record>>,
}

/// The per-tenant chains over the store, with group commit. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    chains: Chains,
    writer: Arc<Writer>,
}

/// The chains' heads over the store: what the writer thread works on. Cheap to clone.
#[derive(Clone)]
struct Chains {
    store: Store,
    heads: Arc<Mutex<HashMap<String, Head>>>,
}

/// One batch being prepared: the chains and usage values as they will be once it is written.
#[derive(Default)]
struct Batch {
    heads: HashMap<String, Head>,
    usage: HashMap<Vec<u8>, f64>,
    commits: Vec<RecordCommit>,
}

/// The writer thread and the queue to it. Dropping the last [`AuditLog`] closes the queue and
/// waits for the thread, so the store is released when the log is.
struct Writer {
    queue: Option<mpsc::Sender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Chains {
    /// One writer round: commit the batch in one transaction, flush once, answer everyone.
    fn write_and_flush(&self, batch: Vec<Pending>) {
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.tenant_id, p.body, p.effects), p.reply))
            .unzip();
        let mut results = self.write_batch(items);
        if results.iter().any(Result::is_ok)
            && let Err(e) = self.store.flush()
        {
            tracing::error!(error = %e, "audit flush failed");
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(AuditError::FlushFailed);
            }
        }
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that has gone away no longer needs its answer; the record stands.
            let _ = reply.send(result);
        }
    }

    /// See [`AuditLog::write_batch`].
    fn write_batch(&self, items: Vec<(String, RecordBody, Effects)>) -> Vec<Result<Record>> {
        let mut heads = self.heads.lock().expect("heads lock");
        let mut batch = Batch::default();
        let results: Vec<Result<Record>> = items
            .into_iter()
            .map(|(tenant_id, body, effects)| {
                self.prepare(&heads, &mut batch, tenant_id, body, effects)
            })
            .collect();
        if batch.commits.is_empty() {
            return results;
        }
        if let Err(e) = self.store.commit_records(&batch.commits) {
            tracing::error!(error = %e, "audit write failed");
            // Nothing was written: the chains stay as they were.
            let failed = e.to_string();
            return results
                .into_iter()
                .map(|r| r.and_then(|_| Err(AuditError::WriteFailed(failed.clone()))))
                .collect();
        }
        heads.extend(batch.heads);
        results
    }

    /// Chains one record onto its tenant's head as the batch leaves it, after checking its
    /// usage expectations against the values the batch leaves, and adds it to the batch.
    fn prepare(
        &self,
        heads: &HashMap<String, Head>,
        batch: &mut Batch,
        tenant_id: String,
        mut body: RecordBody,
        effects: Effects,
    ) -> Result<Record> {
        let current = |key: &Vec<u8>| -> Result<f64> {
            match batch.usage.get(key) {
                Some(v) => Ok(*v),
                None => Ok(self.store.usage(key)?),
            }
        };
        for (key, expected) in &effects.expect {
            if current(key)? != *expected {
                return Err(AuditError::UsageConflict);
            }
        }
        let usage = effects
            .add
            .iter()
            .map(|(key, amount)| Ok((key.clone(), current(key)? + amount)))
            .collect::<Result<Vec<_>>>()?;
        if !batch.heads.contains_key(&tenant_id) {
            let head = match heads.get(&tenant_id) {
                Some(h) => Head { ..*h },
                None => self.load_stored_head(&tenant_id)?,
            };
            batch.heads.insert(tenant_id.clone(), head);
        }
        let head = batch.heads.get_mut(&tenant_id).expect("inserted above");
        if body.event_id.is_empty() {
            body.event_id = new_id("evt_");
        }
        body.prev_hash = hex::encode(head.prev_hash);
        body.seq = head.next_seq;
        body.timestamp_ms = crate::now_ms();
        let canonical = {
            body.tenant_id = tenant_id;
            body.canonical()
        };
        let hash = chain_hash(&head.prev_hash, &canonical);
        head.next_seq += 1;
        head.prev_hash = hash;
        batch.usage.extend(usage.iter().cloned());
        let record = Record {
            body,
            hash: hex::encode(hash),
        };
        let (tenant_id, seq) = (&record.body.tenant_id, record.body.seq);
        batch.commits.push(RecordCommit {
            audit_key: audit_key(tenant_id, seq),
            record: stored_bytes(canonical, &record.hash),
            event_key: record.body.event_id.as_bytes().to_vec(),
            session_key: record
                .body
                .session_id
                .as_ref()
                .map(|s| tenant_key(tenant_id, &[s.as_bytes(), &seq.to_be_bytes()])),
            usage,
            escalation: effects.escalation,
        });
        Ok(record)
    }

    fn load_stored_head(&self, tenant_id: &str) -> Result<Head> {
        Ok(
            match self
                .store
                .last_raw(Table::Audit, &tenant_prefix(tenant_id))?
            {
                Some((_, bytes)) => {
                    let last = decode_record(&bytes)?;
                    Head {
                        next_seq: last.body.seq + 1,
                        prev_hash: decode_hash(&last.hash),
                    }
                }
                None => Head {
                    next_seq: 0,
                    prev_hash: [0; 32],
                },
            },
        )
    }
}

/// Audit key of record `seq` of `tenant`.
pub fn audit_key(tenant_id: &str, seq: u64) -> Vec<u8> {
    tenant_key(tenant_id, &[&seq.to_be_bytes()])
}

/// The key range of a tenant's records from `from_seq` on.
pub fn audit_range(tenant_id: &str, from_seq: u64) -> (Vec<u8>, Vec<u8>) {
    let mut end = tenant_prefix(tenant_id);
    *end.last_mut().expect("separator") = 1;
    (audit_key(tenant_id, from_seq), end)
}

impl AuditLog {
    /// Opens the log and starts its writer thread.
    pub fn start(store: Store) -> Self {
        let chains = Chains {
            store,
            heads: Arc::default(),
        };
        let (queue, mut pending) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        let writer_chains = chains.clone();
        let thread = std::thread::Builder::new()
            .name("writ-audit".into())
            .spawn(move || {
                while let Some(first) = pending.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match pending.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    writer_chains.write_and_flush(batch);
                }
            })
            .expect("spawn the audit writer");
        Self {
            chains,
            writer: Arc::new(Writer {
                queue: Some(queue),
                thread: Some(thread),
            }),
        }
    }

    /// Appends a record to `tenant_id`'s chain with its effects, and returns once it is
    /// durable. Fails with [`AuditError::UsageConflict`] (nothing written) if a usage value
    /// the policy read has changed.
    pub async fn append(
        &self,
        tenant_id: &str,
        body: RecordBody,
        effects: Effects,
    ) -> Result<Record> {
        let (reply, answer) = oneshot::channel();
        let queue = self.writer.queue.as_ref().ok_or(AuditError::FlushFailed)?;
        queue
            .send(Pending {
                tenant_id: tenant_id.to_owned(),
                body,
                effects,
                reply,
            })
            .await
            .map_err(|_| AuditError::FlushFailed)?;
        answer.await.map_err(|_| AuditError::FlushFailed)?
    }

    /// Writes records to their chains in one store transaction, not flushed (lost on a crash
    /// until the next flush): the writer's half of [`AuditLog::append`], public so benchmarks
    /// can price the write and the flush apart. Each record gets its chain's next `seq` and
    /// `prev_hash`, the tenant id, the time and (unless set) an event id; a record whose usage
    /// expectations no longer hold is left out with [`AuditError::UsageConflict`].
    pub fn write_batch(&self, items: Vec<(String, RecordBody, Effects)>) -> Vec<Result<Record>> {
        self.chains.write_batch(items)
    }

    /// The chain heads this log knows (every tenant it has appended to or [`AuditLog::load_head`]
    /// loaded): tenant, size, head hash.
    pub fn heads(&self) -> Vec<(String, u64, [u8; 32])> {
        self.chains
            .heads
            .lock()
            .expect("heads lock")
            .iter()
            .map(|(t, h)| (t.clone(), h.next_seq, h.prev_hash))
            .collect()
    }

    /// Loads a tenant's chain head from the store, so [`AuditLog::heads`] reports it.
    pub fn load_head(&self, tenant_id: &str) -> Result<()> {
        let mut heads = self.chains.heads.lock().expect("heads lock");
        if !heads.contains_key(tenant_id) {
            let head = self.chains.load_stored_head(tenant_id)?;
            heads.insert(tenant_id.to_owned(), head);
        }
        Ok(())
    }

    /// Records of a tenant with `seq > after_seq` (all when `None`), at most `limit`.
    pub fn records(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let (from, to) = audit_range(tenant_id, after_seq.map_or(0, |s| s.saturating_add(1)));
        self.chains
            .store
            .range_raw(Table::Audit, &from, &to, limit)?
            .into_iter()
            .map(|(_, v)| decode_record(&v))
            .collect()
    }

    /// Records of one session of a tenant with `seq > after_seq`, at most `limit`.
    pub fn session_records(
        &self,
        tenant_id: &str,
        session_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let prefix = tenant_key(tenant_id, &[session_id.as_bytes(), b""]);
        let prefix = &prefix[..prefix.len() - 1];
        let after = match after_seq {
            Some(seq) => tenant_key(tenant_id, &[session_id.as_bytes(), &seq.to_be_bytes()]),
            None => prefix.to_vec(),
        };
        self.chains
            .store
            .keys_after(Table::Sessions, prefix, &after, limit)?
            .into_iter()
            .filter_map(|k| {
                let seq = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
                Some(u64::from_be_bytes(seq))
            })
            .map(|seq| {
                let bytes = self
                    .chains
                    .store
                    .get_raw(Table::Audit, &audit_key(tenant_id, seq))?
                    .ok_or(StoreError::Inconsistent(
                        "session index names a missing record",
                    ))?;
                decode_record(&bytes)
            })
            .collect()
    }

    /// The record with `event_id`, if it belongs to `tenant_id`.
    pub fn event(&self, tenant_id: &str, event_id: &str) -> Result<Option<Record>> {
        let Some(audit_key) = self
            .chains
            .store
            .get_raw(Table::Events, event_id.as_bytes())?
        else {
            return Ok(None);
        };
        if !audit_key.starts_with(&tenant_prefix(tenant_id)) {
            return Ok(None);
        }
        self.chains
            .store
            .get_raw(Table::Audit, &audit_key)?
            .map(|b| decode_record(&b))
            .transpose()
    }
}

fn decode_record(bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|source| {
        AuditError::Store(StoreError::Corrupt {
            table: Table::Audit,
            source,
        })
    })
}

/// `blake3(prev_hash ‖ canonical bytes)`: a record's hash.
fn chain_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(prev_hash)
        .update(canonical)
        .finalize()
        .as_bytes()
}

/// The stored form of a record: its canonical bytes with `"hash"` added as the last key
/// (exactly what serializing [`Record`] gives, without serializing the body twice).
fn stored_bytes(mut canonical: Vec<u8>, hash: &str) -> Vec<u8> {
    debug_assert_eq!(canonical.last(), Some(&b'}'));
    canonical.pop();
    canonical.extend_from_slice(b",\"hash\":\"");
    canonical.extend_from_slice(hash.as_bytes());
    canonical.extend_from_slice(b"\"}");
    canonical
}

fn decode_hash(hex_hash: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let _ = hex::decode_to_slice(hex_hash, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> RecordBody {
        RecordBody {
            action: Some("payments.initiate".into()),
            actor: None,
            agent_id: Some("agent-1".into()),
            arguments: Some(r#"{"amount":50}"#.into()),
            charges: vec![RecordCharge {
                amount: "50".into(),
                counter: "spend:GBP".into(),
            }],
            client_hint: Some("ALLOW".into()),
            codes: vec![],
            detail: None,
            escalation_id: None,
            event_id: "evt_1".into(),
            fuel: Some(7),
            kind: "decision".into(),
            latency_us: Some(12),
            outcome: Some("ALLOW".into()),
            policy_id: Some("ab".into()),
            prev_hash: "00".repeat(32),
            reason: Some("ok \"quoted\" é\n".into()),
            seq: 0,
            session_id: Some("s".into()),
            tenant_id: "ten_1".into(),
            timestamp_ms: 1,
        }
    }

    #[test]
    fn canonical_encoding_has_sorted_keys_and_no_whitespace() {
        let bytes = body().canonical();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with(r#"{"action":"payments.initiate","actor":null,"#),
            "{text}"
        );
        assert!(!text.contains(": ") && !text.contains(", "));
        assert!(text.contains(r#""reason":"ok \"quoted\" é\n""#), "{text}");
    }

    #[test]
    fn hash_covers_prev_hash_and_every_field() {
        let b = body();
        let h = b.hash(&[0; 32]);
        assert_ne!(h, b.hash(&[1; 32]));
        let mut changed = b.clone();
        changed.fuel = Some(8);
        assert_ne!(h, changed.hash(&[0; 32]));
        let mut expected = blake3::Hasher::new();
        expected.update(&[0; 32]);
        expected.update(&b.canonical());
        assert_eq!(&h, expected.finalize().as_bytes());
    }
}
