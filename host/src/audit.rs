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
//! - a tenant's records are stored in blocks of up to 16 consecutive records
//!   (their stored JSON joined by `\n`, compressed with LZ4), keyed by tenant and first seq;
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

use crate::metrics::AuditWriterMetrics;
use crate::store::{Store, StoreError, Table, Write};
use crate::tenants::{tenant_key, tenant_prefix};

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
        // Sized up front (serde_json starts at 128 bytes and doubles): the field names and
        // fixed-size values take about 500 bytes, the free text more with its escapes, and
        // the stored form appends the hash (see `stored_bytes`).
        let text = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + s.len() / 4);
        let capacity = 640
            + 2 * text(&self.arguments)
            + text(&self.reason)
            + text(&self.detail)
            + self.codes.iter().map(|c| c.len() + 3).sum::<usize>();
        let mut out = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut out, self).expect("records serialize");
        out
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

#[derive(Clone, Copy)]
struct Head {
    next_seq: u64,
    prev_hash: [u8; 32],
}

/// Most records the writer commits in one transaction and flush.
const MAX_BATCH: usize = 256;

/// Most records stored in one block (one store value).
const BLOCK_RECORDS: usize = 16;

/// Largest decompressed block a stored size prefix is believed for: 16 records, each bounded by
/// the 1 MiB request body it can carry, with room to spare. A corrupt prefix cannot make a
/// reader allocate more.
const MAX_BLOCK_BYTES: usize = 32 << 20;

/// A block's stored form: the records' stored JSON joined by `\n`, compressed with LZ4 after a
/// little-endian `u32` of the uncompressed size. Records repeat their field names and share
/// most values, so this stores a few times fewer bytes, and sled copies each several times.
fn encode_block<'a>(records: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut joined = Vec::with_capacity(records.clone().map(|r| r.len() + 1).sum());
    for (i, record) in records.enumerate() {
        if i > 0 {
            joined.push(b'\n');
        }
        joined.extend_from_slice(record);
    }
    lz4_flex::block::compress_prepend_size(&joined)
}

/// The records' stored JSON joined by `\n`, from a block's stored form; `None` if it is not one.
fn decode_block(stored: &[u8]) -> Option<Vec<u8>> {
    let (size, compressed) = stored.split_first_chunk::<4>()?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > MAX_BLOCK_BYTES {
        return None;
    }
    lz4_flex::block::decompress(compressed, size).ok()
}

/// [`decode_block`] for readers that need the block: a block that does not decode is corrupt.
fn decoded_block(stored: &[u8]) -> std::result::Result<Vec<u8>, StoreError> {
    decode_block(stored).ok_or(StoreError::Inconsistent(
        "an audit block is not LZ4 data of its stated size",
    ))
}

/// A session's waiting index entries are written out once the oldest has waited this long…
const SESSION_TAIL_AGE: Duration = Duration::from_secs(1);

/// …or without waiting while more than this many entries wait…
const SESSION_TAIL_MAX: usize = 16_384;

/// …at most this many sessions with any one batch, so no batch waits on a large write.
const SESSION_WRITE_OUT: usize = 32;

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

/// The chains' heads and the session index's tail over the store: what the writer thread
/// works on. Cheap to clone.
#[derive(Clone)]
struct Chains {
    store: Store,
    heads: Arc<Mutex<HashMap<String, Head>>>,
    sessions: Arc<Mutex<SessionTail>>,
}

/// Session index entries not yet in the store. The writer adds each batch's entries once the
/// batch is committed, and writes sessions out (all of a session's waiting entries as one
/// store value) in the transaction of a later batch once their oldest entry has waited
/// [`SESSION_TAIL_AGE`], a few at a time, each tenant's mark with them: one value per session
/// per second or so instead of one per record. After a crash, the entries not written out are
/// rebuilt from the chain above each tenant's mark.
#[derive(Default)]
struct SessionTail {
    /// (tenant, session) → seqs waiting, ascending.
    seqs: HashMap<(String, String), Vec<u64>>,
    /// The sessions waiting, in the order their first waiting entry arrived.
    order: VecDeque<(Instant, String, String)>,
    /// Per tenant, the first waiting seq of each waiting session: the lowest is as far as the
    /// tenant's mark may go.
    firsts: HashMap<String, BTreeMap<u64, String>>,
    /// Tenants appended to since their mark was last written, with their next seq.
    unmarked: HashMap<String, u64>,
    /// When marks were last written.
    marked: Option<Instant>,
    len: usize,
}

impl SessionTail {
    fn add(&mut self, tenant_id: &str, session_id: &str, seq: u64) {
        let seqs = self
            .seqs
            .entry((tenant_id.to_owned(), session_id.to_owned()))
            .or_default();
        if seqs.is_empty() {
            self.order
                .push_back((Instant::now(), tenant_id.to_owned(), session_id.to_owned()));
            self.firsts
                .entry(tenant_id.to_owned())
                .or_default()
                .insert(seq, session_id.to_owned());
        }
        seqs.push(seq);
        self.len += 1;
    }

    /// The sessions to write out now (oldest first, at most [`SESSION_WRITE_OUT`]), and whether
    /// marks are due even if none is.
    fn due(&self) -> (Vec<(String, String)>, bool) {
        let sessions = self
            .order
            .iter()
            .take_while(|(at, _, _)| {
                at.elapsed() >= SESSION_TAIL_AGE || self.len > SESSION_TAIL_MAX
            })
            .take(SESSION_WRITE_OUT)
            .map(|(_, t, s)| (t.clone(), s.clone()))
            .collect();
        let marks = !self.unmarked.is_empty()
            && self
                .marked
                .is_none_or(|at| at.elapsed() >= SESSION_TAIL_AGE);
        (sessions, marks)
    }

    /// The store writes for writing `out` and every unmarked tenant's mark.
    fn writes(&self, out: &[(String, String)]) -> Vec<Write> {
        let mut writes: Vec<Write> = out
            .iter()
            .map(|(tenant_id, session_id)| {
                let seqs = &self.seqs[&(tenant_id.clone(), session_id.clone())];
                let key = tenant_key(tenant_id, &[session_id.as_bytes(), &seqs[0].to_be_bytes()]);
                let value = seqs.iter().flat_map(|s| s.to_be_bytes()).collect();
                (Table::Sessions, key, value)
            })
            .collect();
        for (tenant_id, next) in &self.unmarked {
            let mark = self.first_waiting(tenant_id, out).unwrap_or(*next);
            writes.push((
                Table::SessionMarks,
                tenant_id.as_bytes().to_vec(),
                mark.to_be_bytes().to_vec(),
            ));
        }
        writes
    }

    /// The tenant's first waiting seq once `out` is written.
    fn first_waiting(&self, tenant_id: &str, out: &[(String, String)]) -> Option<u64> {
        self.firsts.get(tenant_id).and_then(|firsts| {
            firsts
                .iter()
                .find(|(_, session)| !out.iter().any(|(t, s)| t == tenant_id && s == *session))
                .map(|(seq, _)| *seq)
        })
    }

    /// Forgets `out`, now written, and the marks written with it.
    fn written(&mut self, out: &[(String, String)]) {
        for (tenant_id, session_id) in out {
            if let Some(seqs) = self.seqs.remove(&(tenant_id.clone(), session_id.clone())) {
                self.len -= seqs.len();
                if let Some(firsts) = self.firsts.get_mut(tenant_id) {
                    firsts.remove(&seqs[0]);
                    if firsts.is_empty() {
                        self.firsts.remove(tenant_id);
                    }
                }
            }
        }
        self.order.drain(..out.len());
        // A tenant with entries still waiting is marked again when they are written.
        let firsts = &self.firsts;
        self.unmarked
            .retain(|tenant_id, _| firsts.contains_key(tenant_id));
        self.marked = Some(Instant::now());
    }
}

/// One batch being prepared: the chains and usage values as they will be once it is written.
#[derive(Default)]
struct Batch {
    heads: HashMap<String, Head>,
    usage: HashMap<Vec<u8>, f64>,
    /// Each tenant's new records (seq, stored bytes), in order.
    records: HashMap<String, Vec<(u64, Vec<u8>)>>,
    /// Index and escalation rows.
    rows: Vec<Write>,
    /// (tenant, session, seq) of the new records that have a session.
    sessions: Vec<(String, String, u64)>,
}

impl Batch {
    /// The store writes: each tenant's records in blocks, the final value of each usage
    /// counter it changed, and the rows.
    fn writes(&mut self) -> Vec<Write> {
        let mut writes = std::mem::take(&mut self.rows);
        for (tenant_id, records) in &self.records {
            for block in records.chunks(BLOCK_RECORDS) {
                let bytes = encode_block(block.iter().map(|(_, r)| r.as_slice()));
                writes.push((Table::Audit, block_key(tenant_id, block[0].0), bytes));
            }
        }
        for (key, value) in &self.usage {
            writes.push((
                Table::Usage,
                key.clone(),
                value.to_bits().to_be_bytes().to_vec(),
            ));
        }
        writes
    }
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
    fn write_and_flush(&self, batch: Vec<Pending>, metrics: &AuditWriterMetrics) {
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.tenant_id, p.body, p.effects), p.reply))
            .unzip();
        let mut results = self.write_batch(items);
        let written = results.iter().filter(|r| r.is_ok()).count();
        if written > 0 {
            let started = Instant::now();
            let flushed = self.store.flush();
            metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = flushed {
                tracing::error!(error = %e, "audit flush failed");
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AuditError::FlushFailed);
                }
            }
            metrics.batch_records.observe(written as f64);
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
                self.prepare(&mut heads, &mut batch, tenant_id, body, effects)
            })
            .collect();
        if batch.records.is_empty() {
            return results;
        }
        let mut writes = batch.writes();
        // Sessions due to be written out go in the same transaction (each costs sled log
        // writes): the entries waiting are all of records already committed.
        let out = {
            let tail = self.sessions.lock().expect("sessions lock");
            let (out, marks) = tail.due();
            (!out.is_empty() || marks).then(|| {
                writes.extend(tail.writes(&out));
                out
            })
        };
        if let Err(e) = self.store.commit(&writes) {
            tracing::error!(error = %e, "audit write failed");
            // Nothing was written: the chains stay as they were.
            let failed = e.to_string();
            return results
                .into_iter()
                .map(|r| r.and_then(|_| Err(AuditError::WriteFailed(failed.clone()))))
                .collect();
        }
        {
            let mut tail = self.sessions.lock().expect("sessions lock");
            if let Some(out) = &out {
                tail.written(out);
            }
            for (tenant_id, session_id, seq) in &batch.sessions {
                tail.add(tenant_id, session_id, *seq);
            }
            for (tenant_id, head) in &batch.heads {
                tail.unmarked.insert(tenant_id.clone(), head.next_seq);
            }
        }
        heads.extend(batch.heads);
        results
    }

    /// Chains one record onto its tenant's head as the batch leaves it, after checking its
    /// usage expectations against the values the batch leaves, and adds it to the batch.
    fn prepare(
        &self,
        heads: &mut HashMap<String, Head>,
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
            // Loaded once: loading also re-indexes the sessions above the tenant's mark.
            let head = match heads.entry(tenant_id.clone()) {
                Entry::Occupied(head) => *head.get(),
                Entry::Vacant(slot) => *slot.insert(self.load_stored_head(&tenant_id)?),
            };
            batch.heads.insert(tenant_id.clone(), head);
        }
        let head = batch.heads.get_mut(&tenant_id).expect("inserted above");
        let seq = head.next_seq;
        let chosen_event_id = !body.event_id.is_empty();
        if !chosen_event_id {
            body.event_id = event_id_for(seq);
        }
        body.prev_hash = String::from(&*hash_hex(&head.prev_hash));
        body.seq = seq;
        body.timestamp_ms = crate::now_ms();
        body.tenant_id = tenant_id;
        let canonical = body.canonical();
        let hash = chain_hash(&head.prev_hash, &canonical);
        head.next_seq += 1;
        head.prev_hash = hash;
        batch.usage.extend(usage);
        let record = Record {
            body,
            hash: String::from(&*hash_hex(&hash)),
        };
        let tenant_id = &record.body.tenant_id;
        if chosen_event_id {
            batch.rows.push((
                Table::Events,
                record.body.event_id.as_bytes().to_vec(),
                block_key(tenant_id, seq),
            ));
        }
        if let Some((key, value)) = effects.escalation {
            batch.rows.push((Table::Escalations, key, value));
        }
        if let Some(session_id) = &record.body.session_id {
            batch
                .sessions
                .push((tenant_id.clone(), session_id.clone(), seq));
        }
        batch
            .records
            .entry(tenant_id.clone())
            .or_default()
            .push((seq, stored_bytes(canonical, &record.hash)));
        Ok(record)
    }

    /// A tenant's head as stored, after putting the records above its session mark back into
    /// the session index's tail.
    fn load_stored_head(&self, tenant_id: &str) -> Result<Head> {
        let head = match self
            .store
            .last_raw(Table::Audit, &tenant_prefix(tenant_id))?
        {
            Some((_, block)) => {
                let block = decoded_block(&block)?;
                let last = block.rsplit(|b| *b == b'\n').next().unwrap_or_default();
                let last = decode_record(last)?;
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
        let mark = self
            .store
            .get_raw(Table::SessionMarks, tenant_id.as_bytes())?
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        if mark < head.next_seq {
            let mut tail = self.sessions.lock().expect("sessions lock");
            for item in stored_records(&self.store, tenant_id, mark) {
                let (_, bytes) = item?;
                let record = decode_record(&bytes)?;
                if let Some(session_id) = &record.body.session_id {
                    tail.add(tenant_id, session_id, record.body.seq);
                }
            }
            tail.unmarked.insert(tenant_id.to_owned(), head.next_seq);
        }
        Ok(head)
    }

    /// The record of `seq`, from the block holding it.
    fn record_at(&self, tenant_id: &str, seq: u64) -> Result<Option<Record>> {
        let Some((key, block)) = self.store.last_at_or_before(
            Table::Audit,
            &tenant_prefix(tenant_id),
            &block_key(tenant_id, seq),
        )?
        else {
            return Ok(None);
        };
        let block = decoded_block(&block)?;
        let Some(line) = usize::try_from(seq - block_first_seq(&key))
            .ok()
            .and_then(|at| block.split(|b| *b == b'\n').nth(at))
        else {
            return Ok(None);
        };
        let record = decode_record(line)?;
        if record.body.seq != seq {
            return Err(StoreError::Inconsistent("a record is not where its seq puts it").into());
        }
        Ok(Some(record))
    }
}

/// The event id the writer gives record `seq`: its seq in hex, so it is found without an
/// index, and 64 random bits, so it is not guessable from the seq.
fn event_id_for(seq: u64) -> String {
    let mut hex = [0u8; 32];
    let bytes = (u128::from(seq) << 64 | u128::from(rand::random::<u64>())).to_be_bytes();
    hex::encode_to_slice(bytes, &mut hex).expect("32 hex digits for 16 bytes");
    let mut id = String::with_capacity(4 + hex.len());
    id.push_str("evt_");
    id.push_str(std::str::from_utf8(&hex).expect("hex is ASCII"));
    id
}

/// The seq an event id names, if the writer made it (see [`event_id_for`]).
fn event_id_seq(event_id: &str) -> Option<u64> {
    let hex = event_id.strip_prefix("evt_")?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&hex[..16], 16).ok()
}

/// Key of the block of `tenant`'s records that starts at `first_seq`.
fn block_key(tenant_id: &str, first_seq: u64) -> Vec<u8> {
    tenant_key(tenant_id, &[&first_seq.to_be_bytes()])
}

fn block_first_seq(key: &[u8]) -> u64 {
    key.get(key.len().saturating_sub(8)..)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_be_bytes)
}

/// A tenant's stored records from `from_seq` on, in order, each as its seq by position (block
/// start + index) and its stored JSON. Read lazily, block by block, for scans of any size.
/// Positions are what the store says; [`crate::verify`] checks them against the records.
pub fn stored_records(
    store: &Store,
    tenant_id: &str,
    from_seq: u64,
) -> impl Iterator<Item = std::result::Result<(u64, Vec<u8>), StoreError>> + use<> {
    type Item = std::result::Result<(u64, Vec<u8>), StoreError>;
    type Block = std::result::Result<(Vec<u8>, Vec<u8>), StoreError>;
    let prefix = tenant_prefix(tenant_id);
    // From the block holding `from_seq` (the last one starting at or before it).
    let blocks: Box<dyn Iterator<Item = Block>> =
        match store.last_at_or_before(Table::Audit, &prefix, &block_key(tenant_id, from_seq)) {
            Ok(found) => {
                let start = found.map_or_else(|| block_key(tenant_id, 0), |(key, _)| key);
                Box::new(store.iter_prefix_from(Table::Audit, &prefix, &start))
            }
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
    blocks.flat_map(move |block| -> Vec<Item> {
        let (key, bytes) = match block {
            Ok(block) => block,
            Err(e) => return vec![Err(e)],
        };
        let first = block_first_seq(&key);
        // A block that does not decode is one position of bytes that are not a record, for
        // `verify` to report; it cannot say how many records it held.
        let Some(bytes) = decode_block(&bytes) else {
            return vec![Ok((first, bytes))];
        };
        bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, line)| (first.saturating_add(i as u64), line))
            .filter(|(seq, _)| *seq >= from_seq)
            .map(|(seq, line)| Ok((seq, line.to_vec())))
            .collect()
    })
}

/// The stored JSON of record `seq`, as the store holds it (block start + index), if any.
/// Neither this nor [`replace_stored_record`] goes through the chain: they are for forensic
/// tools and for tests that tamper with a stopped gateway's store.
pub fn stored_record(store: &Store, tenant_id: &str, seq: u64) -> Result<Option<Vec<u8>>> {
    Ok(stored_records(store, tenant_id, seq)
        .next()
        .transpose()?
        .filter(|(at, _)| *at == seq)
        .map(|(_, bytes)| bytes))
}

/// Replaces (with `Some`) or removes (with `None`) the stored JSON at position `seq`, in place,
/// without re-chaining anything. See [`stored_record`].
pub fn replace_stored_record(
    store: &Store,
    tenant_id: &str,
    seq: u64,
    bytes: Option<&[u8]>,
) -> Result<()> {
    let Some((key, block)) = store.last_at_or_before(
        Table::Audit,
        &tenant_prefix(tenant_id),
        &block_key(tenant_id, seq),
    )?
    else {
        return Ok(());
    };
    let at = seq - block_first_seq(&key);
    let block = decoded_block(&block)?;
    let lines: Vec<&[u8]> = block
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| match (i as u64 == at, bytes) {
            (false, _) => Some(line),
            (true, replacement) => replacement,
        })
        .collect();
    if lines.is_empty() {
        store.remove(Table::Audit, &key)?;
    } else {
        store.put_raw(Table::Audit, &key, &encode_block(lines.into_iter()))?;
    }
    Ok(())
}

impl AuditLog {
    /// Opens the log and starts its writer thread.
    pub fn start(store: Store) -> Self {
        Self::start_observed(store, AuditWriterMetrics::default())
    }

    /// [`AuditLog::start`], the writer observing each batch in `metrics`.
    pub fn start_observed(store: Store, metrics: AuditWriterMetrics) -> Self {
        let chains = Chains {
            store,
            heads: Arc::default(),
            sessions: Arc::default(),
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

    /// Records of a tenant with `seq > after_seq` (all when `None`), at most `limit`.
    pub fn records(
        &self,
        tenant_id: &str,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let from = after_seq.map_or(0, |s| s.saturating_add(1));
        stored_records(&self.chains.store, tenant_id, from)
            .take(limit)
            .map(|item| decode_record(&item?.1))
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
        let after = |seq: &u64| after_seq.is_none_or(|a| *seq > a);
        // The tail first, then the store: an entry written out in between is seen twice, never
        // missed.
        let tail: Vec<u64> = self
            .chains
            .sessions
            .lock()
            .expect("sessions lock")
            .seqs
            .get(&(tenant_id.to_owned(), session_id.to_owned()))
            .cloned()
            .unwrap_or_default();
        let prefix = tenant_key(tenant_id, &[session_id.as_bytes(), b""]);
        let mut seqs = Vec::new();
        for item in self
            .chains
            .store
            .iter_prefix_from(Table::Sessions, &prefix, &prefix)
        {
            let (_, value) = item?;
            seqs.extend(
                value
                    .chunks_exact(8)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                    .filter(after),
            );
            if seqs.len() >= limit {
                break;
            }
        }
        seqs.extend(tail.into_iter().filter(after));
        seqs.sort_unstable();
        seqs.dedup();
        seqs.truncate(limit);
        seqs.into_iter()
            .map(|seq| {
                self.chains.record_at(tenant_id, seq)?.ok_or_else(|| {
                    StoreError::Inconsistent("the session index names a missing record").into()
                })
            })
            .collect()
    }

    /// The record with `event_id`, if it belongs to `tenant_id`.
    pub fn event(&self, tenant_id: &str, event_id: &str) -> Result<Option<Record>> {
        if let Some(seq) = event_id_seq(event_id)
            && let Some(record) = self.chains.record_at(tenant_id, seq)?
            && record.body.event_id == event_id
        {
            return Ok(Some(record));
        }
        let Some(key) = self
            .chains
            .store
            .get_raw(Table::Events, event_id.as_bytes())?
        else {
            return Ok(None);
        };
        if !key.starts_with(&tenant_prefix(tenant_id)) {
            return Ok(None);
        }
        Ok(self
            .chains
            .record_at(tenant_id, block_first_seq(&key))?
            .filter(|r| r.body.event_id == event_id))
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

/// A 32-byte hash as lowercase hex, without allocating (`hex::encode` builds its string a
/// char at a time, which was 1 % of the gateway's CPU under load when used here).
pub(crate) fn hash_hex(hash: &[u8; 32]) -> impl std::ops::Deref<Target = str> + std::fmt::Display {
    blake3::Hash::from_bytes(*hash).to_hex()
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
    fn a_writer_event_id_names_its_seq_in_lowercase_hex() {
        for seq in [0, 1, 0xabc, u64::MAX] {
            let id = event_id_for(seq);
            assert_eq!(id.len(), 36, "{id}");
            assert!(
                id[4..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(&id[4..20], format!("{seq:016x}"));
            assert_eq!(event_id_seq(&id), Some(seq));
        }
        assert_ne!(event_id_for(7), event_id_for(7), "the random half differs");
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

    fn call(session: &str, n: u64) -> RecordBody {
        let mut r = RecordBody::new(Kind::Decision);
        r.action = Some("payments.initiate".into());
        r.session_id = Some(session.into());
        r.arguments = Some(format!(r#"{{"amount":{n}}}"#));
        r.outcome = Some("ALLOW".into());
        r
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.body.seq).collect()
    }

    #[tokio::test]
    async fn blocks_event_ids_and_sessions_read_back_across_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::start(store.clone());
        let mut items: Vec<(String, RecordBody, Effects)> = (0..40)
            .map(|n| {
                let session = if n % 2 == 0 { "even" } else { "odd" };
                ("ten_a".to_owned(), call(session, n), Effects::default())
            })
            .collect();
        items.extend((0..5).map(|n| ("ten_b".to_owned(), call("even", n), Effects::default())));
        let mut chosen = call("odd", 99);
        chosen.event_id = format!("evt_{}", "ab".repeat(16));
        items.push(("ten_a".to_owned(), chosen, Effects::default()));
        let written: Vec<Record> = log
            .write_batch(items)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // 41 records of ten_a: blocks of 16, 16 and 9.
        let blocks = store
            .iter_raw(Table::Audit, b"ten_a\0", b"ten_a\x01")
            .count();
        assert_eq!(blocks, 3);

        assert_eq!(
            seqs(&log.records("ten_a", None, 100).unwrap()),
            (0..41).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(&log.records("ten_a", Some(14), 4).unwrap()),
            [15, 16, 17, 18]
        );
        assert_eq!(
            seqs(&log.records("ten_b", None, 100).unwrap()),
            [0, 1, 2, 3, 4]
        );

        let odd = log.session_records("ten_a", "odd", None, 100).unwrap();
        assert_eq!(odd.len(), 21);
        assert!(
            odd.iter()
                .all(|r| r.body.session_id.as_deref() == Some("odd"))
        );
        assert_eq!(
            seqs(&log.session_records("ten_a", "odd", Some(35), 2).unwrap()),
            [37, 39]
        );
        assert!(
            log.session_records("ten_b", "odd", None, 100)
                .unwrap()
                .is_empty()
        );

        let a30 = &written[30];
        let found = log.event("ten_a", &a30.body.event_id).unwrap().unwrap();
        assert_eq!(found, *a30);
        assert_eq!(
            log.event("ten_b", &a30.body.event_id).unwrap(),
            None,
            "another tenant's"
        );
        let forged = format!("{}{}", &a30.body.event_id[..20], "0".repeat(16));
        assert_eq!(
            log.event("ten_a", &forged).unwrap(),
            None,
            "the seq alone finds nothing"
        );
        assert_eq!(log.event("ten_a", "evt_nope").unwrap(), None);
        assert_eq!(log.event("ten_a", &"ab".repeat(16)).unwrap(), None);
        let chosen = log
            .event("ten_a", &format!("evt_{}", "ab".repeat(16)))
            .unwrap()
            .unwrap();
        assert_eq!(chosen.body.seq, 40);
        assert_eq!(log.event("ten_b", &chosen.body.event_id).unwrap(), None);
    }

    #[tokio::test]
    async fn taking_a_record_out_of_a_block_is_a_missing_seq_and_swapping_two_is_out_of_order() {
        use crate::verify::{Problem, verify_chain};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::start(store.clone());
        let items = (0..20)
            .map(|n| ("ten_a".to_owned(), call("s", n), Effects::default()))
            .collect();
        assert!(log.write_batch(items).iter().all(Result::is_ok));
        assert!(verify_chain(&store, "ten_a", None).unwrap().ok());

        let (seven, eight) = (
            stored_record(&store, "ten_a", 7).unwrap().unwrap(),
            stored_record(&store, "ten_a", 8).unwrap().unwrap(),
        );
        replace_stored_record(&store, "ten_a", 7, Some(&eight)).unwrap();
        replace_stored_record(&store, "ten_a", 8, Some(&seven)).unwrap();
        let broken = verify_chain(&store, "ten_a", None).unwrap().broken.unwrap();
        assert_eq!((broken.seq, broken.problem), (7, Problem::SeqOutOfOrder));

        replace_stored_record(&store, "ten_a", 7, Some(&seven)).unwrap();
        replace_stored_record(&store, "ten_a", 8, Some(&eight)).unwrap();
        assert!(verify_chain(&store, "ten_a", None).unwrap().ok());
        replace_stored_record(&store, "ten_a", 5, None).unwrap();
        let broken = verify_chain(&store, "ten_a", None).unwrap().broken.unwrap();
        assert_eq!((broken.seq, broken.problem), (5, Problem::MissingSeq));
    }

    #[test]
    fn blocks_are_stored_compressed_and_a_corrupt_one_does_not_decode() {
        let record =
            br#"{"seq":1,"kind":"decision","tenant_id":"ten_a","action":"payments.initiate"}"#;
        let records = vec![record.as_slice(); 16];
        let stored = encode_block(records.iter().copied());
        let joined = records.join(&b'\n');
        assert!(
            stored.len() * 4 < joined.len(),
            "{} of {}",
            stored.len(),
            joined.len()
        );
        assert_eq!(decode_block(&stored), Some(joined));

        let mut flipped = stored.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let mut huge = stored.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        for corrupt in [
            &flipped[..],
            &huge[..],
            &stored[..3],
            &stored[..stored.len() / 2],
            b"",
        ] {
            assert_ne!(decode_block(corrupt), Some(records.join(&b'\n')));
        }
        assert_eq!(
            decode_block(&huge),
            None,
            "a size past the bound is refused"
        );
        assert_eq!(decode_block(&stored[..3]), None);
    }

    #[tokio::test]
    async fn a_block_that_does_not_decode_is_reported_by_verify_not_raised() {
        use crate::verify::{Problem, verify_chain};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::start(store.clone());
        for from in [0, 10] {
            let items = (from..from + 10)
                .map(|n| ("ten_a".to_owned(), call("s", n), Effects::default()))
                .collect();
            assert!(log.write_batch(items).iter().all(Result::is_ok));
        }
        assert!(verify_chain(&store, "ten_a", None).unwrap().ok());
        // The second batch's block (seqs 10 to 19), overwritten with bytes that are not LZ4.
        store
            .put_raw(
                Table::Audit,
                &block_key("ten_a", 10),
                b"\x10\0\0\0not lz4 at all",
            )
            .unwrap();
        let broken = verify_chain(&store, "ten_a", None).unwrap().broken.unwrap();
        assert_eq!((broken.seq, broken.problem), (10, Problem::Undecodable));
        // Reading a record from it is an error, never a wrong record.
        assert!(log.chains.record_at("ten_a", 12).is_err());
        assert_eq!(
            log.chains.record_at("ten_a", 3).unwrap().unwrap().body.seq,
            3
        );
    }

    #[tokio::test]
    async fn the_session_index_is_written_out_a_session_at_a_time_and_rebuilt_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let batch = |from: u64| -> Vec<(String, RecordBody, Effects)> {
            (from..from + 4)
                .map(|n| ("ten_a".to_owned(), call("s", n), Effects::default()))
                .collect()
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let log = AuditLog::start(store.clone());
            log.write_batch(batch(0));
            // Nothing is written out yet.
            assert_eq!(store.get_raw(Table::SessionMarks, b"ten_a").unwrap(), None);
            assert!(
                store
                    .iter_raw(Table::Sessions, b"", b"\xff")
                    .next()
                    .is_none()
            );
            assert_eq!(
                log.session_records("ten_a", "s", None, 100).unwrap().len(),
                4
            );
            std::thread::sleep(SESSION_TAIL_AGE);
            // The next batch writes the session's waiting entries out with it, and the mark.
            log.write_batch(batch(4));
            let mark = store.get_raw(Table::SessionMarks, b"ten_a").unwrap();
            assert_eq!(mark, Some(4u64.to_be_bytes().to_vec()));
            assert_eq!(
                log.session_records("ten_a", "s", None, 100).unwrap().len(),
                8
            );
            // These stay in memory, and are lost with the process.
            log.write_batch(batch(8));
            assert_eq!(
                seqs(&log.session_records("ten_a", "s", Some(5), 100).unwrap()),
                (6..12).collect::<Vec<_>>()
            );
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::start(store);
        log.load_head("ten_a").unwrap();
        assert_eq!(
            seqs(&log.session_records("ten_a", "s", None, 100).unwrap()),
            (0..12).collect::<Vec<_>>(),
            "the entries above the mark are rebuilt from the chain"
        );
    }

    #[tokio::test]
    async fn a_write_out_takes_a_few_sessions_and_the_mark_stops_below_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::start(store.clone());
        let one =
            |session: String| vec![("ten_a".to_owned(), call(&session, 0), Effects::default())];
        let items = (0..40)
            .map(|n| {
                (
                    "ten_a".to_owned(),
                    call(&format!("s{n}"), n),
                    Effects::default(),
                )
            })
            .collect();
        log.write_batch(items);
        std::thread::sleep(SESSION_TAIL_AGE);
        let mark = || {
            store
                .get_raw(Table::SessionMarks, b"ten_a")
                .unwrap()
                .unwrap()
        };
        let written = || store.iter_raw(Table::Sessions, b"", b"\xff").count();
        log.write_batch(one("late".into()));
        assert_eq!(written(), SESSION_WRITE_OUT);
        assert_eq!(mark(), (SESSION_WRITE_OUT as u64).to_be_bytes());
        std::thread::sleep(SESSION_TAIL_AGE);
        log.write_batch(one("later".into()));
        // The other 8 and "late"; "later" is fresh, so the mark stops at its seq.
        assert_eq!(written(), 41);
        assert_eq!(mark(), 41u64.to_be_bytes());
        for n in [0, 31, 32, 39] {
            let found = log
                .session_records("ten_a", &format!("s{n}"), None, 10)
                .unwrap();
            assert_eq!(seqs(&found), [n]);
        }
    }
}
