//! A tenant's audit chain as a service: pages of records, one record, a session's timeline,
//! verification (against the latest signed checkpoint) and export. Read-only: the chain is
//! written by the operations that make its records.
//!
//! Every read is bounded. Pages stop at a count and a byte budget ([`crate::page`]). Long reads
//! of a chain (exports, verifications, and the console's backward scans) run on blocking
//! threads, so at most
//! [`ChainReadLimits::max_running`] run at once gateway-wide and
//! [`ChainReadLimits::max_running_per_tenant`] per tenant (more are refused, 429); an export
//! hands its reader a few chunks at a time, and ends when the reader takes nothing for
//! [`ChainReadLimits::send_timeout`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use writ_runtime::decision::Outcome;

use super::checkpoints::CheckpointService;
use crate::access::{Reviewer, TenantScope};
use crate::audit::{Kind, Record, RecordPage, SharedLedger};
use crate::checkpoint;
use crate::error::{AppError, Result};
use crate::page::Bounds;
use crate::store::Store;
use crate::verify::{self, Verification};

/// An export's lines are sent in chunks of about this many bytes (a record over it is a chunk
/// of its own)…
const EXPORT_CHUNK_BYTES: usize = 64 << 10;
/// …and at most this many chunks wait for the reader: with records of at most 1.5 MiB, an
/// export holds a few MiB however slowly it is read.
const EXPORT_CHUNKS_WAITING: usize = 4;

/// A session's decisions: a page of its records and the counts of the calls in it.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// Allowed calls in this page.
    pub allowed: usize,
    /// Blocked calls in this page.
    pub blocked: usize,
    /// Escalated calls in this page.
    pub escalated: usize,
    /// The session's records in this page, in order.
    pub events: Vec<Record>,
    /// Where the next page starts (`after_seq`); `None` at the end.
    pub next_after_seq: Option<u64>,
    /// The page ended at its byte budget.
    pub truncated: bool,
}

/// Bounds on long reads of a chain (exports, verifications and the console's scans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReadLimits {
    /// Whole-chain reads running at once, gateway-wide.
    pub max_running: usize,
    /// Whole-chain reads of one tenant running at once.
    pub max_running_per_tenant: usize,
    /// How long an export waits for its reader to take the next chunk; then it ends (the
    /// response is cut off with an error, never ended as if complete) and frees its place.
    pub send_timeout: Duration,
}

impl Default for ChainReadLimits {
    fn default() -> Self {
        Self {
            max_running: 16,
            max_running_per_tenant: 2,
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// What a whole-chain read is, for the answer that refuses one.
#[derive(Debug, Clone, Copy)]
enum ChainRead {
    Export,
    Verification,
    /// A [`AuditService::scan_back`] (the console's filtered pages and summaries).
    Scan,
}

/// The whole-chain reads running, and their limits.
#[derive(Debug, Default)]
pub(crate) struct ChainReads {
    state: Mutex<ChainReadState>,
}

#[derive(Debug, Default)]
struct ChainReadState {
    limits: ChainReadLimits,
    running: usize,
    per_tenant: HashMap<String, usize>,
}

/// A running whole-chain read's place; dropping it frees the place.
pub(crate) struct ChainReadSlot {
    reads: Arc<ChainReads>,
    tenant_id: String,
}

impl Drop for ChainReadSlot {
    fn drop(&mut self) {
        let mut state = self.reads.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running = state.running.saturating_sub(1);
        if let Some(n) = state.per_tenant.get_mut(&self.tenant_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_tenant.remove(&self.tenant_id);
            }
        }
    }
}

impl ChainReads {
    fn limits(&self) -> ChainReadLimits {
        self.state.lock().expect("chain reads lock").limits
    }

    /// A place for a whole-chain read of `tenant_id`, or 429 at either cap.
    fn enter(self: &Arc<Self>, tenant_id: &str, what: ChainRead) -> Result<ChainReadSlot> {
        let mut state = self.state.lock().expect("chain reads lock");
        let limits = state.limits;
        let tenant_running = state.per_tenant.get(tenant_id).copied().unwrap_or(0);
        let refused = if state.running >= limits.max_running {
            Some(format!(
                "{} long chain reads (exports, verifications, scans) are running on this gateway, its most at once",
                state.running
            ))
        } else if tenant_running >= limits.max_running_per_tenant {
            Some(format!(
                "{tenant_running} long chain reads (exports, verifications, scans) of this tenant are running, its most at once"
            ))
        } else {
            None
        };
        if let Some(message) = refused {
            let (code, what) = match what {
                ChainRead::Export => ("too_many_exports", "export"),
                ChainRead::Verification => ("too_many_verifications", "verification"),
                ChainRead::Scan => ("too_many_chain_reads", "read"),
            };
            return Err(AppError::Busy {
                code,
                retry_after_s: 5,
                message: format!("{message}; try this {what} again when one has finished"),
            });
        }
        state.running += 1;
        *state.per_tenant.entry(tenant_id.to_owned()).or_default() += 1;
        Ok(ChainReadSlot {
            reads: self.clone(),
            tenant_id: tenant_id.to_owned(),
        })
    }

    /// Whole-chain reads running now (gateway-wide).
    fn running(&self) -> usize {
        self.state.lock().expect("chain reads lock").running
    }
}

/// An export's body: chunks of JSON Lines as its blocking reader sends them. Ends with an
/// error (so the response is cut off, not ended as if whole) when the reader failed or gave
/// up on a client that stopped reading.
pub struct ExportStream {
    /// Shared with the reader only weakly: dropping the stream (the client went away) drops
    /// the receiver, and the reader's next send fails at once.
    rx: Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>,
    failed: Arc<AtomicBool>,
    done: bool,
}

impl tokio_stream::Stream for ExportStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = match self.rx.lock().expect("export lock").as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        };
        match polled {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(chunk))),
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                if self.failed.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "the export ended before the end of the chain",
                    ))))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }
}

/// The reader's side of an export.
struct ExportSender {
    tx: mpsc::Sender<Bytes>,
    rx: Weak<Mutex<Option<mpsc::Receiver<Bytes>>>>,
    failed: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl ExportSender {
    /// Hands `chunk` to the reader, waiting at most the send timeout for room; `false` when
    /// the export must end (the client went away, or took nothing for that long).
    fn send(&self, chunk: Vec<u8>) -> bool {
        let sent = self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, self.tx.send(Bytes::from(chunk))).await
        });
        match sent {
            Ok(Ok(())) => true,
            // The stream was dropped: the client went away.
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "an export's reader took nothing for its send timeout; ending the export"
                );
                self.fail();
                false
            }
        }
    }

    /// Ends the export with an error, dropping what waits for the reader.
    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        if let Some(rx) = self.rx.upgrade() {
            drop(rx.lock().unwrap_or_else(|e| e.into_inner()).take());
        }
    }
}

/// What [`AuditService::scan_back`] does with a record it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Return it.
    Take,
    /// Pass over it.
    Skip,
    /// Return nothing more: the scan has gone back far enough.
    Stop,
}

/// How far one [`AuditService::scan_back`] may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanBounds {
    /// Most records returned.
    pub take: usize,
    /// Most records read.
    pub read: u64,
    /// Most bytes read (about: the records' text fields), past the first record.
    pub read_bytes: usize,
}

/// Records read newest first.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    /// The records taken, newest first.
    pub records: Vec<Record>,
    /// Pass as `before_seq` to go on: the oldest seq read, when the scan stopped at a bound
    /// with older records left.
    pub next_before: Option<u64>,
    /// Records read.
    pub read: u64,
}

/// Records read back from the head per step of a scan.
const SCAN_STEP: u64 = 256;

/// The bytes a record costs a scan: its text fields and a little for the rest.
fn scan_cost(r: &Record) -> usize {
    let b = &r.body;
    512 + [&b.arguments, &b.reason, &b.detail, &b.client_hint]
        .iter()
        .map(|t| t.as_deref().map_or(0, str::len))
        .sum::<usize>()
}

/// Reads, verifies and exports chains. Cheap to clone.
#[derive(Clone)]
pub struct AuditService {
    pub(crate) audit: SharedLedger,
    pub(crate) store: Store,
    pub(crate) checkpoints: CheckpointService,
    /// Whole-chain reads running, and their limits.
    pub(crate) chain_reads: Arc<ChainReads>,
}

impl AuditService {
    /// Sets the bounds on whole-chain reads (those running keep going).
    pub fn set_chain_read_limits(&self, limits: ChainReadLimits) {
        self.chain_reads
            .state
            .lock()
            .expect("chain reads lock")
            .limits = limits;
    }

    /// Exports and verifications running now, gateway-wide.
    pub fn chain_reads_running(&self) -> usize {
        self.chain_reads.running()
    }

    /// A page of the tenant's audit records after `after_seq`, optionally of one session.
    pub fn audit_records(
        &self,
        scope: &TenantScope<Reviewer>,
        session_id: Option<&str>,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<RecordPage> {
        let tenant_id = scope.tenant_id();
        Ok(match session_id {
            Some(session) => self
                .audit
                .session_page(tenant_id, session, after_seq, bounds)?,
            None => self.audit.records_page(tenant_id, after_seq, bounds)?,
        })
    }

    /// The number of records in the tenant's chain.
    pub fn chain_size(&self, scope: &TenantScope<Reviewer>) -> Result<u64> {
        let tenant_id = scope.tenant_id();
        let size = |heads: Vec<crate::audit::ChainHead>| {
            heads
                .into_iter()
                .find(|h| h.tenant_id == tenant_id)
                .map(|h| h.size)
        };
        if let Some(n) = size(self.audit.heads()) {
            return Ok(n);
        }
        self.audit.load_head(tenant_id)?;
        Ok(size(self.audit.heads()).unwrap_or(0))
    }

    /// Reads the tenant's records newest first from before `before_seq` (the head when
    /// `None`), asking `decide` about each, within `bounds`: for pages of a filtered view,
    /// and for summaries of recent activity. A long read: it takes a place under the caps of
    /// exports and verifications (429 `too_many_chain_reads` at them). Blocking.
    pub fn scan_back(
        &self,
        scope: &TenantScope<Reviewer>,
        before_seq: Option<u64>,
        bounds: ScanBounds,
        mut decide: impl FnMut(&Record) -> Scan,
    ) -> Result<ScanPage> {
        let tenant_id = scope.tenant_id();
        let _slot = self.chain_reads.enter(tenant_id, ChainRead::Scan)?;
        let size = self.chain_size(scope)?;
        let mut end = before_seq.map_or(size, |b| b.min(size));
        let mut page = ScanPage::default();
        let mut bytes = 0usize;
        while end > 0 {
            let start = end.saturating_sub(SCAN_STEP);
            let step = self.audit.records_page(
                tenant_id,
                start.checked_sub(1),
                Bounds {
                    limit: (end - start) as usize,
                    max_bytes: usize::MAX,
                },
            )?;
            for record in step.records.into_iter().rev() {
                if record.body.seq >= end {
                    continue;
                }
                let over = page.read >= bounds.read
                    || (page.read > 0 && bytes > bounds.read_bytes)
                    || page.records.len() >= bounds.take;
                if over {
                    page.next_before = Some(record.body.seq + 1);
                    return Ok(page);
                }
                page.read += 1;
                bytes += scan_cost(&record);
                match decide(&record) {
                    Scan::Take => page.records.push(record),
                    Scan::Skip => {}
                    Scan::Stop => return Ok(page),
                }
            }
            end = start;
        }
        Ok(page)
    }

    /// The tenant's usage counters in the current hour and day and all time, at most `limit`
    /// per window.
    pub fn usage_now(
        &self,
        scope: &TenantScope<Reviewer>,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<crate::usage::CounterNow>> {
        Ok(crate::usage::counters_now(
            &self.store,
            scope.tenant_id(),
            now_ms,
            limit,
        )?)
    }

    /// One audit record of the tenant by event id.
    pub fn audit_event(&self, scope: &TenantScope<Reviewer>, event_id: &str) -> Result<Record> {
        let tenant_id = scope.tenant_id();
        self.audit
            .event(tenant_id, event_id)?
            .ok_or(AppError::NotFound("event"))
    }

    /// Verifies the tenant's whole chain, and against its latest signed checkpoint. A
    /// whole-chain read: 429 `too_many_verifications` at the caps.
    pub async fn verify(&self, scope: &TenantScope<Reviewer>) -> Result<Verification> {
        let tenant_id = scope.tenant_id().to_owned();
        let slot = self
            .chain_reads
            .enter(&tenant_id, ChainRead::Verification)?;
        let store = self.store.clone();
        let note = self.checkpoints.latest(&tenant_id)?;
        let public = self.checkpoints.public_key();
        tokio::task::spawn_blocking(move || {
            // Held while the chain is read, even if the request goes away meanwhile.
            let _slot = slot;
            let cp = note
                .as_deref()
                .and_then(|n| checkpoint::verify(n, &public).ok());
            verify::verify_chain(&store, &tenant_id, cp.as_ref())
        })
        .await
        .map_err(AppError::internal)?
        .map_err(Into::into)
    }

    /// Streams the tenant's records after `after_seq` as JSON Lines, read lazily on a blocking
    /// thread and handed over a few chunks at a time. A whole-chain read: 429
    /// `too_many_exports` at the caps. The export ends (the stream with an error) when the
    /// client takes nothing for the send timeout, and at once when it goes away; either frees
    /// its place and its thread.
    pub fn export(
        &self,
        scope: &TenantScope<Reviewer>,
        after_seq: Option<u64>,
    ) -> Result<ExportStream> {
        let tenant_id = scope.tenant_id().to_owned();
        let slot = self.chain_reads.enter(&tenant_id, ChainRead::Export)?;
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(EXPORT_CHUNKS_WAITING);
        let rx = Arc::new(Mutex::new(Some(rx)));
        let failed = Arc::new(AtomicBool::new(false));
        let sender = ExportSender {
            tx,
            rx: Arc::downgrade(&rx),
            failed: failed.clone(),
            runtime: tokio::runtime::Handle::current(),
            timeout: self.chain_reads.limits().send_timeout,
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut chunk = Vec::new();
            let mut open = true;
            let result = verify::export(&store, &tenant_id, after_seq, |line| {
                chunk.extend_from_slice(line);
                chunk.push(b'\n');
                if chunk.len() >= EXPORT_CHUNK_BYTES {
                    open = sender.send(std::mem::take(&mut chunk));
                }
                open
            });
            match result {
                Err(e) => {
                    tracing::error!(tenant = %tenant_id, error = %e, "export failed");
                    sender.fail();
                }
                Ok(()) if open && !chunk.is_empty() => {
                    sender.send(chunk);
                }
                Ok(()) => {}
            }
        });
        Ok(ExportStream {
            rx,
            failed,
            done: false,
        })
    }

    /// A page of a session's records after `after_seq`, with the counts of the calls in it.
    /// A session without records is not found.
    pub fn session(
        &self,
        scope: &TenantScope<Reviewer>,
        session_id: &str,
        after_seq: Option<u64>,
        bounds: Bounds,
    ) -> Result<SessionSummary> {
        let tenant_id = scope.tenant_id();
        let page = self
            .audit
            .session_page(tenant_id, session_id, after_seq, bounds)?;
        if page.records.is_empty() && after_seq.is_none() {
            return Err(AppError::NotFound("session"));
        }
        let events = page.records;
        let count = |o: Outcome| {
            events
                .iter()
                .filter(|r| {
                    r.body.kind == Kind::Decision.as_str()
                        || r.body.kind == Kind::EscalationOpened.as_str()
                })
                .filter(|r| r.body.outcome.as_deref() == Some(o.as_str()))
                .count()
        };
        Ok(SessionSummary {
            allowed: count(Outcome::Allow),
            blocked: count(Outcome::Block),
            escalated: count(Outcome::Escalate),
            events,
            next_after_seq: page.next_after_seq,
            truncated: page.truncated,
        })
    }
}
