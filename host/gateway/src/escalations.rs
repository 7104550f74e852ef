//! Escalations: calls held for a human. This module owns the escalation record, its storage
//! row, the in-memory channels that held calls wait on, the pending counts per tenant and the
//! deadline index the expiry sweeper reads. The decisions themselves (and their audit records)
//! are made by [`crate::app::App`], which writes each escalation row in the same transaction as
//! its audit record.
//!
//! **Pending index.** In memory, per tenant, the ids of its pending escalations (ids are
//! time-ordered, so oldest first), built from the rows at load, added to when an escalation is
//! reserved (before its row is appended: [`Escalations::reserve`] checks the tenant's cap and
//! takes a place in one step, so concurrent escalations cannot pass the cap), removed from when
//! one is resolved or its append fails. Listing pending escalations reads this index and then
//! each row, so it costs what is pending, not the tenant's history; a row not yet committed, or
//! resolved since, is skipped.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::page::{Bounds, Budget, PAGE_BYTES};
use crate::store::{Store, StoreError, Table};
use crate::tenants::{tenant_key, tenant_prefix};

/// Most rows one page of a tenant's escalation history reads (a status filter may match few of
/// them), …
const HISTORY_SCAN_ROWS: usize = 10_000;
/// …and most bytes of rows, past the first.
const HISTORY_SCAN_BYTES: usize = 4 * PAGE_BYTES;

/// A page of escalations.
#[derive(Debug, Clone, Default)]
pub struct EscalationPage {
    /// Oldest first.
    pub escalations: Vec<Escalation>,
    /// The id the next page starts after; `None` when the read reached the end.
    pub next_after: Option<String>,
    /// The page ended at its byte budget.
    pub truncated: bool,
}

/// Where an escalation stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    /// Waiting for a human.
    Pending,
    /// A reviewer approved it: the call goes ahead.
    Approved,
    /// A reviewer rejected it.
    Rejected,
    /// Nobody decided before its deadline.
    Expired,
    /// The caller that made it gave up on it (an MCP client cancelled the call).
    Withdrawn,
}

impl Status {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A held call and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// `esc_…`.
    pub id: String,
    pub tenant_id: String,
    /// Where it stands.
    pub status: Status,
    /// The call's action.
    pub action: String,
    /// The call's arguments (JSON text).
    pub arguments: String,
    /// The agent the call claimed to be (its body's `agent_id`).
    pub agent_id: String,
    pub session_id: String,
    /// The key that made the call (absent in rows written before keys were recorded).
    #[serde(default)]
    pub caller_key_id: Option<String>,
    /// Who holds that key: separation of duties compares it with the deciding key's holder.
    #[serde(default)]
    pub caller_subject: Option<String>,
    /// The policy that escalated.
    pub policy_id: String,
    /// The policy's reason.
    pub reason: String,
    /// The policy's codes.
    pub codes: Vec<String>,
    /// Charges recorded if, and only if, it is approved: (counter, amount).
    pub charges: Vec<(String, f64)>,
    /// blake3 of the call as escalated (action, arguments, policy id): what an approval covers.
    pub call_hash: String,
    /// The call's timestamp (for the usage windows its charges fall in).
    pub call_timestamp_ms: u64,
    /// When it was opened.
    pub opened_ms: u64,
    /// When it expires.
    pub deadline_ms: u64,
    /// The `escalation_opened` record.
    pub opened_event_id: String,
    /// When it was decided or expired.
    pub decided_ms: Option<u64>,
    /// The reviewer's key subject.
    pub decided_by: Option<String>,
    /// The reviewer's note.
    pub note: Option<String>,
    /// The `escalation_resolved` record.
    pub resolved_event_id: Option<String>,
    /// The downstream request resolved when the call was escalated: what an approval runs
    /// (only the credential is injected fresh).
    #[serde(default)]
    pub request: Option<crate::catalog::ResolvedRequest>,
    /// The job an approval started.
    #[serde(default)]
    pub job_id: Option<String>,
}

/// A decision asked of an escalation that is no longer pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("escalation is already {}", .0.as_str())]
pub struct AlreadyResolved(pub Status);

/// What a decision made of a pending escalation.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The escalation in its new state.
    pub escalation: Escalation,
    /// The decision came at or after the deadline, so the escalation expired instead.
    pub late: bool,
}

impl Escalation {
    /// The state machine's one transition, pure: a pending escalation becomes `status`
    /// (approved, rejected, expired or withdrawn) at `now_ms`, decided by `by` with `note`, its
    /// resolution recorded as `event_id`. A decision at or after the deadline expires it
    /// instead (no reviewer, no note); anything but a pending escalation is
    /// [`AlreadyResolved`].
    pub fn resolve(
        &self,
        status: Status,
        by: Option<&str>,
        note: Option<String>,
        now_ms: u64,
        event_id: String,
    ) -> Result<Resolution, AlreadyResolved> {
        if self.status != Status::Pending {
            return Err(AlreadyResolved(self.status));
        }
        let late = status != Status::Expired && now_ms >= self.deadline_ms;
        let (status, by, note) = if late {
            (Status::Expired, None, None)
        } else {
            (status, by, note)
        };
        let mut escalation = self.clone();
        escalation.status = status;
        escalation.decided_ms = Some(now_ms);
        escalation.decided_by = by.map(str::to_owned);
        escalation.note = note;
        escalation.resolved_event_id = Some(event_id);
        Ok(Resolution { escalation, late })
    }

    /// Whether it is pending past its deadline (after a restart, before the sweeper ran).
    pub fn overdue(&self, now_ms: u64) -> bool {
        self.status == Status::Pending && now_ms >= self.deadline_ms
    }

    /// Its store key.
    pub fn key(&self) -> Vec<u8> {
        tenant_key(&self.tenant_id, &[self.id.as_bytes()])
    }

    /// Its store row (key, value), for [`crate::audit::Effects::escalation`].
    pub fn row(&self) -> crate::store::Write {
        (
            Table::Escalations,
            self.key(),
            serde_json::to_vec(self).expect("escalations serialize"),
        )
    }
}

/// An escalation row as stored.
fn decode_row(raw: &[u8]) -> Result<Escalation, StoreError> {
    serde_json::from_slice(raw).map_err(|source| StoreError::Corrupt {
        table: Table::Escalations,
        source,
    })
}

/// The hash an approval is bound to: blake3 over the canonical JSON of the call's action,
/// arguments, policy id and, when it has one, the resolved downstream request.
pub fn call_hash(
    action: &str,
    arguments: &str,
    policy_id: &str,
    request: Option<&crate::catalog::ResolvedRequest>,
) -> String {
    let canonical = serde_json::json!({
        "action": action,
        "arguments": arguments,
        "policy_id": policy_id,
        "request": request,
    });
    blake3::hash(canonical.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// Escalation bookkeeping. Cheap to clone.
#[derive(Clone)]
pub struct Escalations {
    store: Store,
    inner: Arc<Mutex<Inner>>,
    /// Serializes decisions per tenant, so exactly one of concurrent decisions wins.
    decide_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Signalled when an escalation opens with a deadline earlier than every pending one.
    earlier_deadline: Arc<tokio::sync::Notify>,
    /// The tenant whose pending escalations changed (one opened, resolved or forgotten).
    changes: broadcast::Sender<Arc<str>>,
}

/// Tenants' pending-set changes a slow watcher may fall behind by before it is told it lagged.
const CHANGES_BUFFERED: usize = 1024;

/// In-memory state, under a std mutex: nothing is awaited while it is held.
#[derive(Default)]
struct Inner {
    channels: HashMap<String, watch::Sender<Option<Escalation>>>,
    /// Per tenant, the ids of its pending escalations and of those reserved (appends in
    /// flight), in id order: the pending index and the count the cap is checked against.
    pending: HashMap<String, BTreeSet<String>>,
    /// (deadline ms, tenant, id) of every pending escalation.
    deadlines: BTreeSet<(u64, String, String)>,
}

impl Inner {
    /// Adds `id`'s deadline if it is still pending (it may have been resolved, or forgotten,
    /// before this); says whether it is now the earliest.
    fn track_deadline(&mut self, tenant_id: &str, id: &str, deadline_ms: u64) -> bool {
        if !self
            .pending
            .get(tenant_id)
            .is_some_and(|ids| ids.contains(id))
        {
            return false;
        }
        let earliest = self
            .deadlines
            .first()
            .is_none_or(|(d, _, _)| deadline_ms < *d);
        self.deadlines
            .insert((deadline_ms, tenant_id.to_owned(), id.to_owned()));
        earliest
    }

    /// Removes `id` from the tenant's pending index.
    fn unpend(&mut self, tenant_id: &str, id: &str) {
        if let Some(ids) = self.pending.get_mut(tenant_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.pending.remove(tenant_id);
            }
        }
    }
}

/// A place under a tenant's pending cap, taken by [`Escalations::reserve`] before the
/// escalation's row is appended. Settle it with [`Reservation::opened`] once the row is
/// committed, or [`Reservation::release`] when the append wrote nothing. Dropped unsettled (the
/// append's outcome unknown, e.g. the request was cancelled or the flush failed), it is kept as
/// if opened: the sweeper settles it at the deadline, expiring the row if it was written and
/// forgetting the id if not.
#[must_use = "settle a reservation with opened or release"]
pub struct Reservation {
    escalations: Escalations,
    tenant_id: String,
    id: String,
    deadline_ms: u64,
    settled: bool,
}

impl Reservation {
    /// The escalation's row is committed: it stays in the pending index until resolved, and
    /// the sweeper expires it at its deadline.
    pub fn opened(mut self) {
        self.settled = true;
        self.escalations
            .track_deadline(&self.tenant_id, &self.id, self.deadline_ms);
        self.escalations.changed(&self.tenant_id);
    }

    /// The append wrote nothing: the place is free again.
    pub fn release(mut self) {
        self.settled = true;
        self.escalations.forget(&self.tenant_id, &self.id);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.escalations
                .track_deadline(&self.tenant_id, &self.id, self.deadline_ms);
            self.escalations.changed(&self.tenant_id);
        }
    }
}

/// A subscription to one escalation's resolution ([`Escalations::subscribe`]): a watch
/// receiver that, when dropped, also drops the escalation's channel if it was the last one.
pub struct Subscription {
    /// Taken only by `drop`, under the lock.
    rx: Option<watch::Receiver<Option<Escalation>>>,
    id: String,
    inner: Arc<Mutex<Inner>>,
}

impl std::ops::Deref for Subscription {
    type Target = watch::Receiver<Option<Escalation>>;

    fn deref(&self) -> &Self::Target {
        self.rx.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Subscription {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.rx.as_mut().expect("present until dropped")
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Under the lock, so no one subscribes between this receiver going and the check. It
        // goes first: the channel under this id may be a newer one (after a resolution), which
        // must stay while it has receivers of its own.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.rx.take());
        if inner
            .channels
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            inner.channels.remove(&self.id);
        }
    }
}

impl Escalations {
    /// Loads the pending escalations' counts and deadlines from the store.
    pub fn load(store: Store, degraded: &crate::degraded::Degraded) -> Result<Self, StoreError> {
        let mut inner = Inner::default();
        let (rows, bad) = store.scan_each::<Escalation>(Table::Escalations, b"")?;
        for (key, e) in bad {
            degraded.mark(
                &crate::tenants::tenant_of_key(&key),
                crate::degraded::Part::Escalations,
                e,
            );
        }
        for (_, e) in rows {
            if e.status == Status::Pending {
                inner
                    .pending
                    .entry(e.tenant_id.clone())
                    .or_default()
                    .insert(e.id.clone());
                inner.deadlines.insert((e.deadline_ms, e.tenant_id, e.id));
            }
        }
        Ok(Self {
            store,
            inner: Arc::new(Mutex::new(inner)),
            decide_locks: Arc::default(),
            earlier_deadline: Arc::default(),
            changes: broadcast::channel(CHANGES_BUFFERED).0,
        })
    }

    /// One escalation of a tenant with its row's bytes as stored (to guard a change of it).
    pub fn get_row(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<(Escalation, Vec<u8>)>, StoreError> {
        let key = tenant_key(tenant_id, &[id.as_bytes()]);
        let Some(bytes) = self.store.get_raw(Table::Escalations, &key)? else {
            return Ok(None);
        };
        let e = serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            table: Table::Escalations,
            source,
        })?;
        Ok(Some((e, bytes)))
    }

    /// One escalation of a tenant.
    pub fn get(&self, tenant_id: &str, id: &str) -> Result<Option<Escalation>, StoreError> {
        self.store
            .get(Table::Escalations, &tenant_key(tenant_id, &[id.as_bytes()]))
    }

    /// A page of a tenant's pending escalations after the id `after`, oldest first, read
    /// through the pending index: the cost is what is pending, whatever the history.
    pub fn pending_page(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        bounds: Bounds,
    ) -> Result<EscalationPage, StoreError> {
        let mut budget = Budget::new(bounds);
        let mut escalations = Vec::new();
        let mut cursor = after.map(str::to_owned);
        'ids: loop {
            // A few ids at a time, so the lock is never held across store reads.
            let ids: Vec<String> = {
                let inner = self.inner.lock().expect("escalations lock");
                let Some(pending) = inner.pending.get(tenant_id) else {
                    break;
                };
                let from = cursor.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                pending
                    .range::<str, _>((from, Bound::Unbounded))
                    .take(64)
                    .cloned()
                    .collect()
            };
            if ids.is_empty() {
                break;
            }
            for id in ids {
                cursor = Some(id.clone());
                // Not there: reserved, its append still in flight (or failed).
                let Some(raw) = self
                    .store
                    .get_raw(Table::Escalations, &tenant_key(tenant_id, &[id.as_bytes()]))?
                else {
                    continue;
                };
                let e = decode_row(&raw)?;
                if e.status != Status::Pending {
                    continue;
                }
                if !budget.take(raw.len()) {
                    break 'ids;
                }
                escalations.push(e);
                if budget.full() {
                    break 'ids;
                }
            }
        }
        Ok(EscalationPage {
            next_after: budget
                .stopped()
                .then(|| escalations.last().map(|e: &Escalation| e.id.clone()))
                .flatten(),
            truncated: budget.truncated(),
            escalations,
        })
    }

    /// A page of a tenant's escalations after the id `after`, optionally of one status,
    /// oldest first, read from the stored rows in key (= id = opening) order. A page reads at
    /// most [`HISTORY_SCAN_ROWS`] rows and [`HISTORY_SCAN_BYTES`]: one with a status filter
    /// that few rows match can end short of `limit` with a cursor to go on from.
    pub fn history_page(
        &self,
        tenant_id: &str,
        status: Option<Status>,
        after: Option<&str>,
        bounds: Bounds,
    ) -> Result<EscalationPage, StoreError> {
        let prefix = tenant_prefix(tenant_id);
        let start = after.map_or_else(
            || prefix.clone(),
            |a| tenant_key(tenant_id, &[a.as_bytes()]),
        );
        let mut budget = Budget::new(bounds);
        let mut escalations = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        let mut scanned_to = None;
        let mut scan_stopped = false;
        for item in self
            .store
            .iter_prefix_from(Table::Escalations, &prefix, &start)
        {
            let (key, raw) = item?;
            if after.is_some() && key == start {
                continue;
            }
            if rows >= HISTORY_SCAN_ROWS || (rows > 0 && bytes + raw.len() > HISTORY_SCAN_BYTES) {
                scan_stopped = true;
                break;
            }
            rows += 1;
            bytes += raw.len();
            let e = decode_row(&raw)?;
            if status.is_none_or(|s| e.status == s) {
                if !budget.take(raw.len()) {
                    break;
                }
                escalations.push(e);
            }
            scanned_to = Some(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            if budget.full() {
                break;
            }
        }
        let next_after = if budget.truncated() {
            escalations.last().map(|e| e.id.clone())
        } else if budget.full() || scan_stopped {
            scanned_to
        } else {
            None
        };
        Ok(EscalationPage {
            escalations,
            next_after,
            truncated: budget.truncated(),
        })
    }

    /// Pending escalations of a tenant, with those reserved whose appends are in flight.
    #[cfg(test)]
    pub fn pending_count(&self, tenant_id: &str) -> usize {
        self.inner
            .lock()
            .expect("escalations lock")
            .pending
            .get(tenant_id)
            .map_or(0, BTreeSet::len)
    }

    /// Takes a place for `e` under its tenant's cap of `max` pending escalations, before its
    /// row is appended; at the cap, the number pending. Check and place are one step, so
    /// concurrent escalations never pass the cap.
    pub fn reserve(&self, e: &Escalation, max: usize) -> Result<Reservation, usize> {
        let mut inner = self.inner.lock().expect("escalations lock");
        let pending = inner.pending.entry(e.tenant_id.clone()).or_default();
        if pending.len() >= max {
            let n = pending.len();
            if n == 0 {
                inner.pending.remove(&e.tenant_id);
            }
            return Err(n);
        }
        pending.insert(e.id.clone());
        Ok(Reservation {
            escalations: self.clone(),
            tenant_id: e.tenant_id.clone(),
            id: e.id.clone(),
            deadline_ms: e.deadline_ms,
            settled: false,
        })
    }

    /// Adds a pending (or reserved) escalation's deadline for the sweeper.
    fn track_deadline(&self, tenant_id: &str, id: &str, deadline_ms: u64) {
        let earliest =
            self.inner
                .lock()
                .expect("escalations lock")
                .track_deadline(tenant_id, id, deadline_ms);
        if earliest {
            // A stored permit: a sweeper between reading the deadline and waiting still wakes.
            self.earlier_deadline.notify_one();
        }
    }

    /// Forgets an escalation that has no row (its append wrote nothing): out of the pending
    /// index and the deadlines.
    pub fn forget(&self, tenant_id: &str, id: &str) {
        {
            let mut inner = self.inner.lock().expect("escalations lock");
            inner.unpend(tenant_id, id);
            inner
                .deadlines
                .retain(|(_, t, i)| !(t == tenant_id && i == id));
        }
        self.changed(tenant_id);
    }

    /// Reads an escalation's row again after another process sharing the store opened or
    /// resolved it: a new pending one joins the index and deadlines, a resolved one wakes its
    /// waiters here.
    pub fn refresh(&self, key: &[u8]) -> Result<(), StoreError> {
        let Some(e) = self.store.get::<Escalation>(Table::Escalations, key)? else {
            return Ok(());
        };
        if e.status != Status::Pending {
            self.resolved(&e);
            return Ok(());
        }
        let earliest = {
            let mut inner = self.inner.lock().expect("escalations lock");
            let added = inner
                .pending
                .entry(e.tenant_id.clone())
                .or_default()
                .insert(e.id.clone());
            if !added {
                return Ok(());
            }
            inner.track_deadline(&e.tenant_id, &e.id, e.deadline_ms)
        };
        if earliest {
            self.earlier_deadline.notify_one();
        }
        self.changed(&e.tenant_id);
        Ok(())
    }

    /// Tells the watchers that `tenant_id`'s pending escalations changed.
    fn changed(&self, tenant_id: &str) {
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(Arc::from(tenant_id));
    }

    /// The tenants whose pending escalations change from now on (each change names the tenant;
    /// a watcher that falls behind is told it lagged, and should re-read).
    pub fn changes(&self) -> broadcast::Receiver<Arc<str>> {
        self.changes.subscribe()
    }

    /// The earliest deadline of any pending escalation, ms since the epoch.
    pub fn next_deadline(&self) -> Option<u64> {
        let inner = self.inner.lock().expect("escalations lock");
        inner.deadlines.first().map(|(d, _, _)| *d)
    }

    /// Signalled (with a stored permit) when an escalation opens with a deadline earlier than
    /// every pending one.
    pub fn earlier_deadline(&self) -> Arc<tokio::sync::Notify> {
        self.earlier_deadline.clone()
    }

    /// Records a resolution (after its row is committed) and wakes every waiter. Idempotent.
    pub fn resolved(&self, e: &Escalation) {
        let mut inner = self.inner.lock().expect("escalations lock");
        inner.unpend(&e.tenant_id, &e.id);
        inner
            .deadlines
            .remove(&(e.deadline_ms, e.tenant_id.clone(), e.id.clone()));
        if let Some(tx) = inner.channels.remove(&e.id) {
            tx.send_replace(Some(e.clone()));
        }
        drop(inner);
        self.changed(&e.tenant_id);
    }

    /// A channel that receives the escalation once it is resolved. Subscribe before checking
    /// the stored status, so a resolution in between is not missed. The channel lives while
    /// someone is subscribed: an escalation nobody waits on (answered at once with `?wait=0`)
    /// keeps no channel while it is pending.
    pub fn subscribe(&self, id: &str) -> Subscription {
        let rx = self
            .inner
            .lock()
            .expect("escalations lock")
            .channels
            .entry(id.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Subscription {
            rx: Some(rx),
            id: id.to_owned(),
            inner: self.inner.clone(),
        }
    }

    /// Pending escalations whose deadline is at or before `now_ms`: (tenant, id).
    pub fn due(&self, now_ms: u64) -> Vec<(String, String)> {
        self.inner
            .lock()
            .expect("escalations lock")
            .deadlines
            .iter()
            .take_while(|(deadline, _, _)| *deadline <= now_ms)
            .map(|(_, t, id)| (t.clone(), id.clone()))
            .collect()
    }

    /// The lock that serializes decisions of a tenant.
    pub fn decide_lock(&self, tenant_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.decide_locks
            .lock()
            .expect("decide locks")
            .entry(tenant_id.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests;
