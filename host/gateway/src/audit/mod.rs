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
//! (up to `MAX_BATCH`, 256), chains them, writes them in one store transaction, flushes once, and
//! answers them all, while the next batch queues. The writer is the only writer of the chains,
//! the usage counters and the session index, so it checks a charging call's usage
//! expectations without a lock.
//!
//! **Storage**, shaped so a batch costs the store few values (sled copies a leaf per insert):
//! - a tenant's records are stored in blocks of up to 16 consecutive records and 4 MiB
//!   (their stored JSON joined by `\n`, compressed with LZ4), keyed by tenant and first seq; a
//!   record is at most [`MAX_RECORD_BYTES`], so every block reads back whatever was appended;
//! - an event id the writer gives a record names its seq, so finding it
//!   needs no index; only ids chosen before the append (an escalation's, which its row and
//!   job name first) are indexed;
//! - a usage counter is written once per batch, with its final value;
//! - the session index is kept in memory and written a session at a time about once a second
//!   (see `SessionTail`), and rebuilt from the chain after a crash.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::clock::SharedClock;
use crate::metrics::AuditWriterMetrics;
use crate::store::{Guard, Locked, Remove, Store, StoreError, Table, Write};
use crate::tenants::{tenant_key, tenant_prefix};

mod blocks;
mod ledger;
mod query;
mod record;
mod sessions;
#[cfg(test)]
mod tests;
mod writer;

#[allow(unused_imports)]
use blocks::*;
pub use blocks::{replace_stored_record, stored_record, stored_records};
pub use ledger::{Appending, ChainHead, Ledger, SharedLedger};
pub use query::RecordPage;
pub(crate) use record::hash_hex;
#[allow(unused_imports)]
use record::*;
pub use record::{
    Kind, MAX_RECORD_BYTES, RECORD_VERSION, Record, RecordBody, RecordCharge, call_record_bytes,
};
#[allow(unused_imports)]
use sessions::*;
#[allow(unused_imports)]
use writer::*;

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
    /// The record's stored form would be over [`MAX_RECORD_BYTES`] (nothing was written).
    #[error("the record would take {bytes} bytes, over the bound of {limit}")]
    RecordTooLarge {
        /// Its stored size.
        bytes: usize,
        /// [`MAX_RECORD_BYTES`].
        limit: usize,
    },
    /// A usage counter the policy read changed before the record was written (nothing was).
    #[error("a usage counter changed since the policy read it")]
    UsageConflict,
    /// A row the record depends on changed before it was written, in another process sharing
    /// the store (an escalation it resolves was resolved there first); nothing was written.
    #[error("a row this record depends on was changed by another process")]
    RowChanged,
}

/// Result of an audit operation.
pub type Result<T> = std::result::Result<T, AuditError>;

/// What is committed atomically with a record besides it: usage counter effects and rows.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Counter keys and the values the policy read; a change aborts the append.
    pub expect: Vec<(Vec<u8>, f64)>,
    /// Counter keys and amounts to add.
    pub add: Vec<(Vec<u8>, f64)>,
    /// Rows written in the same transaction (an escalation's state, a job it creates, a
    /// configuration change).
    pub rows: Vec<Write>,
    /// Rows removed in the same transaction (a configuration entry deleted).
    pub removes: Vec<Remove>,
    /// Rows that must still hold what the caller read (`None`: be absent) when the record is
    /// written; otherwise nothing is ([`AuditError::RowChanged`]).
    pub guards: Vec<Guard>,
}

#[derive(Clone, Copy)]
struct Head {
    next_seq: u64,
    prev_hash: [u8; 32],
    /// Whether the store has the head's row (`Table::ChainHeads`) with these values; stores
    /// written before head rows derive the head from the last block.
    row: bool,
}

impl Head {
    /// The head's row value: next seq (big-endian) ‖ hash.
    fn row_value(&self) -> Vec<u8> {
        let mut value = self.next_seq.to_be_bytes().to_vec();
        value.extend_from_slice(&self.prev_hash);
        value
    }

    fn from_row(value: &[u8]) -> Option<Self> {
        let (seq, hash) = value.split_first_chunk::<8>()?;
        Some(Self {
            next_seq: u64::from_be_bytes(*seq),
            prev_hash: hash.try_into().ok()?,
            row: true,
        })
    }
}

/// Most records the writer commits in one transaction and flush.
const MAX_BATCH: usize = 256;

/// The per-tenant chains over the store, with group commit. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    chains: Chains,
    writer: Arc<Writer>,
}

/// The chains' heads and the session index's tail over the store: what the writer thread
/// works on. Cheap to clone.
#[derive(Clone)]
struct Chains {
    store: Store,
    clock: SharedClock,
    heads: Arc<Mutex<HashMap<String, Head>>>,
    sessions: Arc<Mutex<SessionTail>>,
    /// Why the store last failed to flush, until a flush works again: meanwhile no append is
    /// written or acknowledged.
    unhealthy: Arc<Mutex<Option<String>>>,
}

impl AuditLog {
    /// Opens the log and starts its writer thread.
    pub fn start(store: Store) -> Self {
        Self::start_observed(store, AuditWriterMetrics::default(), crate::clock::system())
    }

    /// [`AuditLog::start`], the writer observing each batch in `metrics` and stamping records
    /// with `clock`'s time.
    pub fn start_observed(store: Store, metrics: AuditWriterMetrics, clock: SharedClock) -> Self {
        let chains = Chains {
            store,
            clock,
            heads: Arc::default(),
            sessions: Arc::default(),
            unhealthy: Arc::default(),
        };
        let (queue, mut pending) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        let writer_chains = chains.clone();
        let thread = std::thread::Builder::new()
            .name("writ-audit".into())
            .spawn(move || {
                writer_chains.store.write_log_buffers_on_this_thread();
                while let Some(first) = pending.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match pending.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    writer_chains.write_and_flush(batch, &metrics);
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

    /// Why records cannot be made durable now, if they cannot: the store's last flush failed
    /// and a new one (tried here) fails too. While that lasts every append fails
    /// ([`AuditError::FlushFailed`]) without writing anything.
    pub fn unhealthy(&self) -> Option<String> {
        self.chains.recover()
    }

    /// Loads a tenant's chain head from the store, so [`AuditLog::heads`] reports it, and puts
    /// its records above the session mark back into the session index.
    pub fn load_head(&self, tenant_id: &str) -> Result<()> {
        let mut heads = self.chains.heads.lock().expect("heads lock");
        if !heads.contains_key(tenant_id) {
            let head = self.chains.load_stored_head(tenant_id)?;
            heads.insert(tenant_id.to_owned(), head);
        }
        Ok(())
    }
}
