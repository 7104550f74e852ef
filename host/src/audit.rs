//! The audit log: one append-only blake3 hash chain per tenant, and group commit.
//!
//! Each [`Record`] carries `prev_hash` and
//! `hash = blake3(prev_hash as 32 raw bytes ‖ canonical bytes)`, where the canonical bytes are
//! the record without `hash` as JSON with keys in lexicographic order and no whitespace (the
//! declaration order of [`RecordBody`]'s fields). The first record's `prev_hash` is 32 zero
//! bytes. ARCHITECTURE.md documents the encoding for independent verifiers.
//!
//! **Durable before acknowledged:** [`AuditLog::append`] returns only once the record has been
//! flushed. Appends for one tenant are serialized by that tenant's chain head lock; flushes are
//! shared (group commit) by a background task, so concurrent appends wait for one flush between
//! them rather than one each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

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
        let mut hasher = blake3::Hasher::new();
        hasher.update(prev_hash);
        hasher.update(&self.canonical());
        *hasher.finalize().as_bytes()
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

/// The per-tenant chains over the store, with group commit. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Store,
    heads: Arc<Mutex<HashMap<String, Arc<Mutex<Head>>>>>,
    commit: Arc<GroupCommit>,
}

/// Shared flushes: appenders take a ticket after writing, a background task flushes and
/// publishes the highest ticket the flush covered.
struct GroupCommit {
    store: Store,
    requested: AtomicU64,
    wake: Arc<Notify>,
    /// (highest ticket covered by a completed flush attempt, whether it succeeded).
    flushed: watch::Sender<(u64, bool)>,
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Wake the flusher so it sees the log is gone and releases the store.
        self.wake.notify_one();
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
    /// Opens the log and starts its flusher task on the current tokio runtime.
    pub fn start(store: Store) -> Self {
        let (flushed, _) = watch::channel((0, true));
        let wake = Arc::new(Notify::new());
        let commit = Arc::new(GroupCommit {
            store: store.clone(),
            requested: AtomicU64::new(0),
            wake: wake.clone(),
            flushed,
        });
        let weak = Arc::downgrade(&commit);
        // Runs until the log is dropped (see `Drop for GroupCommit`). A wake-up sent while it
        // flushes is kept by `Notify` as a permit, so no ticket is missed.
        tokio::spawn(async move {
            loop {
                let Some(commit) = weak.upgrade() else { break };
                let target = commit.requested.load(Ordering::SeqCst);
                if target <= commit.flushed.borrow().0 {
                    drop(commit);
                    wake.notified().await;
                    continue;
                }
                let store = commit.store.clone();
                let ok = match tokio::task::spawn_blocking(move || store.flush()).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "audit flush failed");
                        false
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "audit flush task failed");
                        false
                    }
                };
                commit.flushed.send_replace((target, ok));
            }
        });
        Self {
            store,
            heads: Arc::default(),
            commit,
        }
    }

    fn head(&self, tenant_id: &str) -> Result<Arc<Mutex<Head>>> {
        let mut heads = self.heads.lock().expect("heads lock");
        if let Some(head) = heads.get(tenant_id) {
            return Ok(head.clone());
        }
        let head = match self
            .store
            .last_raw(Table::Audit, &tenant_prefix(tenant_id))?
        {
            Some((_, bytes)) => {
                let last: Record =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        table: Table::Audit,
                        source,
                    })?;
                Head {
                    next_seq: last.body.seq + 1,
                    prev_hash: decode_hash(&last.hash),
                }
            }
            None => Head {
                next_seq: 0,
                prev_hash: [0; 32],
            },
        };
        let head = Arc::new(Mutex::new(head));
        heads.insert(tenant_id.to_owned(), head.clone());
        Ok(head)
    }

    /// Appends a record to `tenant_id`'s chain with its usage effects, and returns once it is
    /// durable. Fails with [`StoreError::UsageConflict`] (nothing written) if a usage value the
    /// policy read has changed.
    pub async fn append(
        &self,
        tenant_id: &str,
        body: RecordBody,
        usage: Effects,
    ) -> Result<Record> {
        let (record, ticket) = self.write(tenant_id, body, usage)?;
        self.wait_durable(ticket).await?;
        Ok(record)
    }

    /// The synchronous half of [`AuditLog::append`]: writes the record (not yet durable: it is
    /// lost on a crash until the next flush) and returns the group-commit ticket to wait for.
    /// The gateway never answers from it alone; benchmarks use it to price the flush apart.
    pub fn write(
        &self,
        tenant_id: &str,
        mut body: RecordBody,
        usage: Effects,
    ) -> Result<(Record, u64)> {
        let head = self.head(tenant_id)?;
        let mut head = head.lock().expect("head lock");
        if body.event_id.is_empty() {
            body.event_id = new_id("evt_");
        }
        body.prev_hash = hex::encode(head.prev_hash);
        body.seq = head.next_seq;
        body.tenant_id = tenant_id.to_owned();
        body.timestamp_ms = crate::now_ms();
        let hash = body.hash(&head.prev_hash);
        let record = Record {
            body,
            hash: hex::encode(hash),
        };
        let audit_key = audit_key(tenant_id, record.body.seq);
        let session_key = record
            .body
            .session_id
            .as_ref()
            .map(|s| tenant_key(tenant_id, &[s.as_bytes(), &record.body.seq.to_be_bytes()]));
        self.store.commit_record(&RecordCommit {
            audit_key,
            record: serde_json::to_vec(&record).expect("records serialize"),
            event_key: record.body.event_id.as_bytes(),
            session_key,
            expect_usage: usage.expect,
            add_usage: usage.add,
            escalation: usage.escalation,
        })?;
        head.next_seq += 1;
        head.prev_hash = hash;
        // Taken after the write and before the lock is released, so a flush that covers this
        // ticket covers this record and every earlier one of the chain.
        let ticket = self.commit.requested.fetch_add(1, Ordering::SeqCst) + 1;
        drop(head);
        self.commit.wake.notify_one();
        Ok((record, ticket))
    }

    async fn wait_durable(&self, ticket: u64) -> Result<()> {
        let mut rx = self.commit.flushed.subscribe();
        let (_, ok) = *rx
            .wait_for(|(covered, _)| *covered >= ticket)
            .await
            .map_err(|_| AuditError::FlushFailed)?;
        if ok {
            Ok(())
        } else {
            Err(AuditError::FlushFailed)
        }
    }

    /// The chain heads this log knows (every tenant it has appended to or [`AuditLog::load_head`]
    /// loaded): tenant, size, head hash.
    pub fn heads(&self) -> Vec<(String, u64, [u8; 32])> {
        let heads: Vec<(String, Arc<Mutex<Head>>)> = self
            .heads
            .lock()
            .expect("heads lock")
            .iter()
            .map(|(t, h)| (t.clone(), h.clone()))
            .collect();
        heads
            .into_iter()
            .map(|(t, h)| {
                let h = h.lock().expect("head lock");
                (t, h.next_seq, h.prev_hash)
            })
            .collect()
    }

    /// Loads a tenant's chain head from the store, so [`AuditLog::heads`] reports it.
    pub fn load_head(&self, tenant_id: &str) -> Result<()> {
        self.head(tenant_id).map(drop)
    }

    /// Records of a tenant with `seq > after_seq` (all when `None`), at most `limit`.
    pub fn records(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let (from, to) = audit_range(tenant_id, after_seq.map_or(0, |s| s.saturating_add(1)));
        self.store
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
        self.store
            .keys_after(Table::Sessions, prefix, &after, limit)?
            .into_iter()
            .filter_map(|k| {
                let seq = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
                Some(u64::from_be_bytes(seq))
            })
            .map(|seq| {
                let bytes = self
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
        let Some(audit_key) = self.store.get_raw(Table::Events, event_id.as_bytes())? else {
            return Ok(None);
        };
        if !audit_key.starts_with(&tenant_prefix(tenant_id)) {
            return Ok(None);
        }
        self.store
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
