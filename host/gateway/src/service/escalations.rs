//! Held calls as a service: an escalation is opened by the decision pipeline, then waited on,
//! decided exactly once by a reviewer, or expired by the sweeper at its deadline; each step is
//! recorded in the chain with the escalation's new state in the same write, and announced to
//! the tenant's webhooks.

use std::sync::Arc;
use std::time::Duration;

use writ_runtime::decision::{Decision, Outcome, codes};

use super::execute::ExecuteOutcome;
use super::jobs::JobService;
use crate::access::{Agent, Member, Reviewer, TenantScope};
use crate::audit::{AuditError, Effects, Kind, RecordBody, RecordCharge, SharedLedger};
use crate::clock::SharedClock;
use crate::error::{AppError, Result};
use crate::escalations::{self, Escalation, EscalationPage, Escalations, Resolution, Status};
use crate::metrics::{DecisionLabels, Metrics};
use crate::notify::{Notification, Notifier};
use crate::page::{self, Bounds};
use crate::tenants::{Principal, Role, Tenant, Tenants, new_ordered_id};
use crate::usage::CallScope;

/// How long the sweeper sleeps when no escalation is pending (an earlier deadline wakes it).
const IDLE_SWEEP: Duration = Duration::from_secs(3600);
/// How long the sweeper backs off after an expiry failed.
const FAILED_SWEEP_BACKOFF: Duration = Duration::from_millis(250);

/// Opens, decides, expires and waits on escalations. Cheap to clone.
#[derive(Clone)]
pub struct EscalationService {
    pub(crate) registry: Escalations,
    pub(crate) audit: SharedLedger,
    pub(crate) tenants: Tenants,
    pub(crate) jobs: JobService,
    pub(crate) notifier: Notifier,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: SharedClock,
}

impl EscalationService {
    /// Takes a place for `esc` under its tenant's cap of `max` pending escalations before its
    /// row is appended (check and place in one step); at the cap, the number pending.
    pub(crate) fn reserve(
        &self,
        esc: &Escalation,
        max: usize,
    ) -> std::result::Result<escalations::Reservation, usize> {
        self.registry.reserve(esc, max)
    }

    /// A subscription to one escalation's resolution.
    pub(crate) fn subscribe(&self, id: &str) -> escalations::Subscription {
        self.registry.subscribe(id)
    }

    /// Registers a newly opened escalation (its row committed, under `reservation`) and
    /// announces it.
    pub(crate) fn opened(
        &self,
        tenant: &Tenant,
        esc: &Escalation,
        reservation: escalations::Reservation,
    ) {
        reservation.opened();
        self.notify(tenant, "escalation_opened", esc);
    }

    /// The tenants whose pending escalations change from now on (opened, decided, expired).
    pub fn pending_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.registry.changes()
    }

    /// Expires every pending escalation whose deadline has passed.
    pub async fn expire_due(&self) -> Result<()> {
        let mut failed = None;
        for (tenant_id, id) in self.registry.due(self.clock.now_ms()) {
            match self.expire(&tenant_id, &id).await {
                Ok(_) => {}
                // Reserved, but its append wrote nothing: forgotten by `expire`.
                Err(AppError::NotFound(_)) => {}
                Err(e) => {
                    tracing::error!(error = %e, escalation = %id, "expiring failed");
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// One round of the expiry sweeper: expires what is due and says how long to sleep
    /// before the next round (until the earliest pending deadline; an escalation opened with an
    /// earlier one ends the sleep through [`Escalations::earlier_deadline`]).
    pub async fn sweep(&self) -> Duration {
        match self.expire_due().await {
            Err(_) => FAILED_SWEEP_BACKOFF,
            Ok(()) => self.registry.next_deadline().map_or(IDLE_SWEEP, |d| {
                Duration::from_millis(d.saturating_sub(self.clock.now_ms()))
            }),
        }
    }

    /// Waits until `esc` is resolved or `until_ms` passes. `subscribed_before_commit`: `rx` was
    /// subscribed before the escalation's row was committed, so no one could resolve it
    /// unseen and the stored row need not be read (a held call's own escalation).
    pub(crate) async fn await_resolution(
        &self,
        esc: &Escalation,
        mut rx: escalations::Subscription,
        subscribed_before_commit: bool,
        until_ms: u64,
    ) -> Result<Option<Escalation>> {
        if !subscribed_before_commit
            && let Some(stored) = self.registry.get(&esc.tenant_id, &esc.id)?
            && stored.status != Status::Pending
        {
            return Ok(Some(stored));
        }
        let wait = Duration::from_millis(until_ms.saturating_sub(self.clock.now_ms()));
        let waited = tokio::time::timeout(wait, rx.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|resolved| resolved.clone()));
        match waited {
            Ok(Ok(resolved)) => Ok(resolved),
            // Timed out: every resolution since the subscription is on the channel.
            Err(_) if subscribed_before_commit => Ok(rx.borrow().clone()),
            // Timed out, or the channel was replaced: read what is stored.
            _ => Ok(self
                .registry
                .get(&esc.tenant_id, &esc.id)?
                .filter(|e| e.status != Status::Pending)),
        }
    }

    /// The answer to a held call, from its escalation.
    pub(crate) fn outcome_of(&self, esc: &Escalation) -> ExecuteOutcome {
        let (outcome, reason, codes) = match esc.status {
            Status::Pending => (Outcome::Escalate, esc.reason.clone(), esc.codes.clone()),
            Status::Approved => (
                Outcome::Allow,
                esc.note
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| esc.reason.clone()),
                esc.codes.clone(),
            ),
            Status::Rejected => (
                Outcome::Block,
                esc.note
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "rejected by a reviewer".into()),
                vec![codes::ESCALATION_REJECTED.to_owned()],
            ),
            Status::Expired => (
                Outcome::Block,
                "no reviewer decided before the escalation expired".into(),
                vec![codes::ESCALATION_EXPIRED.to_owned()],
            ),
            Status::Withdrawn => (
                Outcome::Block,
                "the caller withdrew the call before a reviewer decided it".into(),
                vec![codes::ESCALATION_WITHDRAWN.to_owned()],
            ),
        };
        ExecuteOutcome {
            decision: Decision {
                outcome,
                reason,
                codes,
                charges: Vec::new(),
            },
            event_id: esc
                .resolved_event_id
                .clone()
                .unwrap_or_else(|| esc.opened_event_id.clone()),
            escalation_id: Some(esc.id.clone()),
            actor_human_id: esc.decided_by.clone(),
            policy_id: Some(esc.policy_id.clone()),
            session_id: esc.session_id.clone(),
            job_id: esc.job_id.clone(),
            job: None,
        }
    }

    /// Expires a pending escalation (recorded). If it was decided meanwhile, returns that. One
    /// without a row (reserved, its append never written) is forgotten: not found.
    pub(crate) async fn expire(&self, tenant_id: &str, id: &str) -> Result<Escalation> {
        match self
            .resolve(tenant_id, id, Status::Expired, None, None)
            .await
        {
            Err(AppError::Conflict { .. }) => {
                let stored = self
                    .registry
                    .get(tenant_id, id)?
                    .ok_or(AppError::NotFound("escalation"))?;
                // Decided, so out of the index whoever decided it (idempotent).
                self.registry.resolved(&stored);
                Ok(stored)
            }
            Err(AppError::NotFound(what)) => {
                self.registry.forget(tenant_id, id);
                Err(AppError::NotFound(what))
            }
            other => other,
        }
    }

    /// Resolves a pending escalation exactly once: approved, rejected or expired, recorded
    /// (with its charges, when approved) in the same write as its new state; then wakes the
    /// held call. A decision on a resolved or expired escalation is a conflict.
    async fn resolve(
        &self,
        tenant_id: &str,
        id: &str,
        status: Status,
        who: Option<&Principal>,
        note: Option<String>,
    ) -> Result<Escalation> {
        let lock = self.registry.decide_lock(tenant_id);
        let _serial = lock.lock().await;
        let (esc, stored) = self
            .registry
            .get_row(tenant_id, id)?
            .ok_or(AppError::NotFound("escalation"))?;
        let now = self.clock.now_ms();
        let Resolution {
            escalation: mut resolved,
            late: too_late,
        } = esc
            .resolve(
                status,
                who.map(|w| w.subject.as_str()),
                note,
                now,
                new_ordered_id("evt_", now),
            )
            .map_err(|e| AppError::Conflict {
                code: "already_resolved",
                message: e.to_string(),
            })?;
        let (status, note) = (resolved.status, resolved.note.clone());
        // An approved call with a downstream request runs exactly what the reviewer saw, once:
        // the job is created here, under the decision lock, and started after the record.
        let job = match (&esc.request, status) {
            (Some(request), Status::Approved) => Some(self.jobs.new_job(
                tenant_id,
                request.clone(),
                resolved.resolved_event_id.as_deref().unwrap_or_default(),
            )),
            _ => None,
        };
        resolved.job_id = job.as_ref().map(|j| j.id.clone());
        let outcome = self.outcome_of(&resolved);

        let mut record = RecordBody::new(Kind::EscalationResolved);
        record.event_id = resolved.resolved_event_id.clone().unwrap_or_default();
        record.action = Some(esc.action.clone());
        record.agent_id = Some(esc.agent_id.clone());
        record.session_id = Some(esc.session_id.clone());
        record.policy_id = Some(esc.policy_id.clone());
        record.escalation_id = Some(esc.id.clone());
        record.actor = resolved.decided_by.clone();
        if let Some(who) = who {
            record.acted_by(&who.key_id, &who.subject);
        }
        record.outcome = Some(outcome.decision.outcome.as_str().to_owned());
        record.reason = Some(outcome.decision.reason.clone());
        record.codes = outcome.decision.codes.clone();
        record.detail = Some(
            serde_json::json!({
                "status": status.as_str(),
                "note": note,
                "held_ms": now.saturating_sub(esc.opened_ms),
                "call_hash": esc.call_hash,
            })
            .to_string(),
        );
        // Exactly once across processes sharing the store: written only over the pending row
        // read here (the decide lock serializes this process's own decisions).
        let mut effects = Effects {
            rows: vec![resolved.row()],
            guards: vec![(crate::store::Table::Escalations, esc.key(), Some(stored))],
            ..Effects::default()
        };
        if let Some(job) = &job {
            effects.rows.extend(self.jobs.rows(job));
        }
        if status == Status::Approved && !esc.charges.is_empty() {
            let charges: Vec<writ_runtime::decision::Charge> = esc
                .charges
                .iter()
                .map(|(counter, amount)| writ_runtime::decision::Charge {
                    counter: counter.clone(),
                    amount: *amount,
                })
                .collect();
            let scope = CallScope {
                tenant_id: tenant_id.to_owned(),
                session_id: esc.session_id.clone(),
                timestamp_ms: esc.call_timestamp_ms,
            };
            effects.add = scope.effects(&[], &charges).add;
            record.charges = charges
                .iter()
                .map(|c| RecordCharge {
                    amount: c.amount.to_string(),
                    counter: c.counter.clone(),
                })
                .collect();
        }
        if let Err(e) = self.audit.append(tenant_id, record, effects).await {
            if let (AuditError::FlushFailed, Some(job)) = (&e, job) {
                self.jobs.not_started(job);
            }
            if let AuditError::RowChanged = e {
                // Resolved by another process first: answered as a lost race here.
                let now = self.registry.get(tenant_id, id)?;
                if let Some(now) = now.as_ref().filter(|e| e.status != Status::Pending) {
                    self.registry.resolved(now);
                }
                return Err(AppError::Conflict {
                    code: "already_resolved",
                    message: format!(
                        "escalation {id} is already {}",
                        now.map_or("resolved", |e| e.status.as_str())
                    ),
                });
            }
            return Err(e.into());
        }
        if let Some(job) = job {
            self.jobs.run(job);
        }
        self.registry.resolved(&resolved);
        if let Some(tenant) = self.tenants.get(tenant_id) {
            self.notify(&tenant, "escalation_resolved", &resolved);
        }
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                tenant: tenant_id.to_owned(),
                outcome: outcome.decision.outcome.as_str().to_owned(),
            })
            .inc();
        tracing::info!(
            tenant = %tenant_id,
            escalation = %id,
            status = status.as_str(),
            actor = ?resolved.decided_by,
            "escalation resolved"
        );
        if too_late {
            return Err(AppError::Conflict {
                code: "escalation_expired",
                message: "the escalation expired before this decision".into(),
            });
        }
        Ok(resolved)
    }

    /// Queues a webhook event about `esc` for the tenant's URLs; never waits.
    fn notify(&self, tenant: &Tenant, kind: &'static str, esc: &Escalation) {
        let Some(secret) = tenant.webhook_secret.clone() else {
            return;
        };
        let body = serde_json::json!({
            "type": kind,
            "tenant_id": tenant.id,
            "escalation_id": esc.id,
            "status": esc.status.as_str(),
            "action": esc.action,
            "agent_id": esc.agent_id,
            "session_id": esc.session_id,
            "reason": esc.reason,
            "codes": esc.codes,
            "call_hash": esc.call_hash,
            "opened_ms": esc.opened_ms,
            "deadline_ms": esc.deadline_ms,
            "decided_by": esc.decided_by,
            "note": esc.note,
            "event_id": esc.resolved_event_id.as_ref().unwrap_or(&esc.opened_event_id),
            // Where a reviewer decides it, on this gateway's origin.
            "console_path": format!("/console/escalations/{}", esc.id),
        });
        self.notifier.send(Notification {
            tenant_id: tenant.id.clone(),
            urls: tenant.webhook_urls.clone(),
            secret,
            kind,
            body,
        });
    }

    /// A reviewer's (or tenant admin's) decision on an escalation of its tenant. The
    /// escalated call's own agent may not decide it.
    pub async fn decide(
        &self,
        scope: &TenantScope<Reviewer>,
        id: &str,
        approve: bool,
        note: Option<String>,
    ) -> Result<Escalation> {
        let (tenant_id, who) = (scope.tenant_id(), scope.key());
        let esc = self
            .registry
            .get(tenant_id, id)?
            .ok_or(AppError::NotFound("escalation"))?;
        // Holders, not names: the subject of the key that made the call (rows from before keys
        // were recorded: the agent id it claimed).
        let caller = esc.caller_subject.as_deref().unwrap_or(&esc.agent_id);
        if caller == who.subject {
            return Err(AppError::Forbidden(
                "the holder of the key that made this call cannot decide it".into(),
            ));
        }
        if note.as_ref().is_some_and(|n| n.len() > 4096) {
            return Err(AppError::Invalid {
                code: "invalid_request",
                message: "note must be at most 4096 bytes".into(),
            });
        }
        let status = if approve {
            Status::Approved
        } else {
            Status::Rejected
        };
        self.resolve(tenant_id, id, status, Some(who), note).await
    }

    /// Withdraws a pending escalation for the key that made the call (an MCP client cancelled
    /// it): recorded, and the held call, if anyone still waits on it, is answered BLOCK. Only
    /// the key that made the call may; a decided one is a conflict.
    pub async fn withdraw(&self, scope: &TenantScope<Agent>, id: &str) -> Result<Escalation> {
        let (tenant_id, who) = (scope.tenant_id(), scope.key());
        let esc = self
            .registry
            .get(tenant_id, id)?
            .filter(|e| made_by(e, who))
            .ok_or(AppError::NotFound("escalation"))?;
        self.resolve(tenant_id, &esc.id, Status::Withdrawn, Some(who), None)
            .await
    }

    /// One escalation of the caller's tenant (agents: only their own calls).
    pub fn escalation(&self, scope: &TenantScope<Member>, id: &str) -> Result<Escalation> {
        let (tenant_id, who) = (scope.tenant_id(), scope.key());
        let esc = self
            .registry
            .get(tenant_id, id)?
            .ok_or(AppError::NotFound("escalation"))?;
        if who.role == Role::Agent && !made_by(&esc, who) {
            return Err(AppError::NotFound("escalation"));
        }
        Ok(esc)
    }

    /// A page of the tenant's escalations, optionally of one status, after `cursor` (a
    /// `next_cursor` of an earlier page), oldest first (reviewer or admin). Pending ones are
    /// read through the pending index; others from the history, a bounded stretch per page.
    pub fn escalations(
        &self,
        scope: &TenantScope<Reviewer>,
        status: Option<Status>,
        cursor: Option<&str>,
        bounds: Bounds,
    ) -> Result<EscalationPage> {
        let after = cursor
            .map(|c| {
                String::from_utf8(page::parse_cursor(c)?).map_err(|_| AppError::Invalid {
                    code: "invalid_cursor",
                    message: "cursor must be a next_cursor this route returned".into(),
                })
            })
            .transpose()?;
        let tenant_id = scope.tenant_id();
        Ok(match status {
            Some(Status::Pending) => {
                self.registry
                    .pending_page(tenant_id, after.as_deref(), bounds)?
            }
            status => self
                .registry
                .history_page(tenant_id, status, after.as_deref(), bounds)?,
        })
    }

    /// Waits up to `timeout` for an escalation to be resolved, then returns it as it stands.
    pub async fn wait_escalation(
        &self,
        scope: &TenantScope<Member>,
        id: &str,
        timeout: Duration,
    ) -> Result<(Escalation, ExecuteOutcome)> {
        let esc = self.escalation(scope, id)?;
        let rx = self.registry.subscribe(&esc.id);
        let until = (self.clock.now_ms() + timeout.as_millis() as u64).min(esc.deadline_ms);
        let current = match self.await_resolution(&esc, rx, false, until).await? {
            Some(resolved) => resolved,
            // Past its deadline (e.g. just after a restart, before the sweeper ran).
            None if esc.overdue(self.clock.now_ms()) => {
                self.expire(&esc.tenant_id, &esc.id).await?
            }
            None => esc,
        };
        let outcome = self.outcome_of(&current);
        Ok((current, outcome))
    }
}

/// Whether `key` made the escalated call: its key when recorded; else (older rows) any agent
/// key not bound to another agent.
fn made_by(esc: &Escalation, key: &Principal) -> bool {
    match &esc.caller_key_id {
        Some(caller) => *caller == key.key_id,
        None => key.agent_id.as_ref().is_none_or(|a| *a == esc.agent_id),
    }
}
