//! Escalations: calls held for a human. This module owns the escalation record, its storage
//! row, the in-memory channels that held calls wait on, the pending counts per tenant and the
//! deadline index the expiry sweeper reads. The decisions themselves (and their audit records)
//! are made by [`crate::app::App`], which writes each escalation row in the same transaction as
//! its audit record.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{Store, StoreError, Table};
use crate::tenants::{tenant_key, tenant_prefix};

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
    /// (approved, rejected or expired) at `now_ms`, decided by `by` with `note`, its resolution
    /// recorded as `event_id`. A reviewer's decision at or after the deadline expires it instead
    /// (no reviewer, no note); anything but a pending escalation is [`AlreadyResolved`].
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
}

/// In-memory state, under a std mutex: nothing is awaited while it is held.
#[derive(Default)]
struct Inner {
    channels: HashMap<String, watch::Sender<Option<Escalation>>>,
    pending: HashMap<String, usize>,
    /// (deadline ms, tenant, id) of every pending escalation.
    deadlines: BTreeSet<(u64, String, String)>,
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
                *inner.pending.entry(e.tenant_id.clone()).or_default() += 1;
                inner.deadlines.insert((e.deadline_ms, e.tenant_id, e.id));
            }
        }
        Ok(Self {
            store,
            inner: Arc::new(Mutex::new(inner)),
            decide_locks: Arc::default(),
            earlier_deadline: Arc::default(),
        })
    }

    /// One escalation of a tenant.
    pub fn get(&self, tenant_id: &str, id: &str) -> Result<Option<Escalation>, StoreError> {
        self.store
            .get(Table::Escalations, &tenant_key(tenant_id, &[id.as_bytes()]))
    }

    /// A tenant's escalations, optionally of one status, oldest first.
    pub fn list(
        &self,
        tenant_id: &str,
        status: Option<Status>,
    ) -> Result<Vec<Escalation>, StoreError> {
        let mut list: Vec<Escalation> = self
            .store
            .scan::<Escalation>(Table::Escalations, &tenant_prefix(tenant_id))?
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| status.is_none_or(|s| e.status == s))
            .collect();
        list.sort_by(|a, b| a.opened_ms.cmp(&b.opened_ms).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Pending escalations of a tenant.
    pub fn pending_count(&self, tenant_id: &str) -> usize {
        self.inner
            .lock()
            .expect("escalations lock")
            .pending
            .get(tenant_id)
            .copied()
            .unwrap_or(0)
    }

    /// Records a newly opened escalation (after its row is committed).
    pub fn opened(&self, e: &Escalation) {
        let mut inner = self.inner.lock().expect("escalations lock");
        *inner.pending.entry(e.tenant_id.clone()).or_default() += 1;
        let earliest = inner
            .deadlines
            .first()
            .is_none_or(|(d, _, _)| e.deadline_ms < *d);
        inner
            .deadlines
            .insert((e.deadline_ms, e.tenant_id.clone(), e.id.clone()));
        if earliest {
            // A stored permit: a sweeper between reading the deadline and waiting still wakes.
            self.earlier_deadline.notify_one();
        }
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

    /// Records a resolution (after its row is committed) and wakes every waiter.
    pub fn resolved(&self, e: &Escalation) {
        let mut inner = self.inner.lock().expect("escalations lock");
        if let Some(n) = inner.pending.get_mut(&e.tenant_id) {
            *n = n.saturating_sub(1);
        }
        inner
            .deadlines
            .remove(&(e.deadline_ms, e.tenant_id.clone(), e.id.clone()));
        if let Some(tx) = inner.channels.remove(&e.id) {
            tx.send_replace(Some(e.clone()));
        }
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
mod tests {
    use super::*;

    fn escalation(id: &str, status: Status) -> Escalation {
        Escalation {
            id: id.into(),
            tenant_id: "t".into(),
            status,
            action: "payments.initiate".into(),
            arguments: "{}".into(),
            agent_id: "agent".into(),
            caller_key_id: Some("key_agent".into()),
            caller_subject: Some("agent@example.com".into()),
            session_id: "session".into(),
            policy_id: "p".into(),
            reason: "over the limit".into(),
            codes: vec![],
            charges: vec![],
            call_hash: "h".into(),
            call_timestamp_ms: 1,
            opened_ms: 1,
            deadline_ms: 60_001,
            opened_event_id: "evt_1".into(),
            decided_ms: None,
            decided_by: None,
            note: None,
            resolved_event_id: None,
            request: None,
            job_id: None,
        }
    }

    #[test]
    fn a_pending_escalation_is_approved_by_its_reviewer_before_the_deadline() {
        let pending = escalation("esc_1", Status::Pending);
        let done = pending
            .resolve(
                Status::Approved,
                Some("rev@x"),
                Some("fine".into()),
                30_000,
                "evt_2".into(),
            )
            .unwrap();
        assert!(!done.late);
        let e = done.escalation;
        assert_eq!(e.status, Status::Approved);
        assert_eq!(e.decided_by.as_deref(), Some("rev@x"));
        assert_eq!(e.note.as_deref(), Some("fine"));
        assert_eq!(
            (e.decided_ms, e.resolved_event_id.as_deref()),
            (Some(30_000), Some("evt_2"))
        );
    }

    #[test]
    fn a_decision_at_the_deadline_expires_the_escalation_instead() {
        let pending = escalation("esc_1", Status::Pending);
        let done = pending
            .resolve(
                Status::Approved,
                Some("rev@x"),
                Some("ok".into()),
                60_001,
                "e".into(),
            )
            .unwrap();
        assert!(done.late);
        assert_eq!(done.escalation.status, Status::Expired);
        assert_eq!(done.escalation.decided_by, None);
        assert_eq!(done.escalation.note, None);
        let expired = pending
            .resolve(Status::Expired, None, None, 60_001, "e".into())
            .unwrap();
        assert!(!expired.late, "the sweeper's expiry is not late");
    }

    #[test]
    fn only_a_pending_escalation_can_be_decided() {
        for status in [Status::Approved, Status::Rejected, Status::Expired] {
            let decided = escalation("esc_1", status);
            assert_eq!(
                decided.resolve(Status::Approved, Some("r"), None, 2, "e".into()),
                Err(AlreadyResolved(status))
            );
        }
    }

    #[test]
    fn an_escalation_is_overdue_only_while_pending_past_its_deadline() {
        let pending = escalation("esc_1", Status::Pending);
        assert!(!pending.overdue(60_000));
        assert!(pending.overdue(60_001));
        assert!(!escalation("esc_1", Status::Rejected).overdue(99_999));
    }

    fn channels(e: &Escalations) -> usize {
        e.inner.lock().unwrap().channels.len()
    }

    #[test]
    fn a_channel_lives_only_while_someone_is_subscribed() {
        let dir = tempfile::tempdir().unwrap();
        let escalations =
            Escalations::load(Store::open(dir.path()).unwrap(), &Default::default()).unwrap();
        let pending = escalation("esc_1", Status::Pending);
        escalations.opened(&pending);

        // Answered at once (`?wait=0`): nothing is kept for it while it is pending.
        drop(escalations.subscribe("esc_1"));
        assert_eq!(channels(&escalations), 0);

        // Two waiters share one channel; it goes with the last of them.
        let first = escalations.subscribe("esc_1");
        let mut second = escalations.subscribe("esc_1");
        assert_eq!(channels(&escalations), 1);
        drop(first);
        assert_eq!(channels(&escalations), 1);

        // A waiter still subscribed receives the resolution.
        let mut approved = pending.clone();
        approved.status = Status::Approved;
        escalations.resolved(&approved);
        assert_eq!(channels(&escalations), 0);
        assert_eq!(
            second.borrow_and_update().as_ref().map(|e| e.status),
            Some(Status::Approved)
        );
        drop(second);
        assert_eq!(channels(&escalations), 0);
        assert!(escalations.due(u64::MAX).is_empty());
    }
}
