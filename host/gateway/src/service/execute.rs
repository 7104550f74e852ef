//! The decision pipeline: a tool call is evaluated by the tenant's active policy, passed
//! through the host's irreversible-action gate, recorded durably, and answered; an allowed call
//! with a downstream request becomes a job, an escalated one is held. Fails closed: no active
//! policy, a policy failure, or usage counters that keep changing all end in a recorded BLOCK.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use writ_runtime::decision::{Decision, Outcome, ToolCall, codes};
use writ_runtime::engine::Engine;
use writ_runtime::evaluation::Evaluation;

use super::escalations::EscalationService;
use super::jobs::{JobService, JobStart};
use crate::access::{Agent, TenantScope};
use crate::audit::{
    AuditError, Effects, Kind, MAX_RECORD_BYTES, RecordBody, RecordCharge, SharedLedger,
    call_record_bytes,
};
use crate::catalog::ResolvedRequest;
use crate::clock::SharedClock;
use crate::degraded::Degraded;
use crate::error::{AppError, Result};
use crate::escalations::{self, Escalation, Status};
use crate::metrics::{DecisionLabels, Metrics};
use crate::policies::{ActivePolicy, Policies};
use crate::policy_log::PolicyLog;
use crate::shares::{Admitted, Shares};
use crate::store::Store;
use crate::tenants::{Principal, Tenant, TenantLimits, Tenants, new_ordered_id};
use crate::usage::{CallScope, StoreUsage};

/// A tool call as the API received it.
#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    /// The agent's session.
    pub session_id: String,
    pub agent_id: String,
    pub action: String,
    /// The client's hint (`decision` in the Provenance request), recorded only.
    pub client_hint: Option<String>,
    /// The arguments, a JSON object as text.
    pub arguments: String,
    /// The context, a JSON object as text.
    pub context: String,
    /// How long to hold an escalated call at most (`?wait=`); `None` is the tenant's hold.
    pub wait: Option<Duration>,
    /// The downstream request the call resolves to, from the tenant's catalog.
    pub target: Option<ResolvedRequest>,
}

/// A tool call with the key that made it.
struct Call {
    request: ExecuteRequest,
    key: Principal,
}

impl std::ops::Deref for Call {
    type Target = ExecuteRequest;

    fn deref(&self) -> &ExecuteRequest {
        &self.request
    }
}

/// The answer to a tool call.
#[derive(Debug)]
pub struct ExecuteOutcome {
    pub decision: Decision,
    /// The audit record's event id.
    pub event_id: String,
    /// The escalation, when escalated.
    pub escalation_id: Option<String>,
    /// The human who decided, when a human did.
    pub actor_human_id: Option<String>,
    /// The policy that decided.
    pub policy_id: Option<String>,
    pub session_id: String,
    /// The downstream job an allowed catalog call became.
    pub job_id: Option<String>,
    /// That job, started when this is dropped (or started).
    pub job: Option<JobStart>,
}

/// Runs tool calls through the tenant's policy. Cheap to clone.
#[derive(Clone)]
pub struct ExecuteService {
    pub(crate) engine: Engine,
    pub(crate) store: Store,
    pub(crate) tenants: Tenants,
    pub(crate) policies: Policies,
    pub(crate) audit: SharedLedger,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) escalations: EscalationService,
    pub(crate) jobs: JobService,
    pub(crate) clock: SharedClock,
    /// Bounds the evaluations running at once.
    pub(crate) evaluations: Arc<Semaphore>,
    /// Re-evaluations when the usage counters a policy read change before its charges commit.
    pub(crate) usage_retries: usize,
    /// Tenants not loaded whole at start: their calls are blocked.
    pub(crate) degraded: Degraded,
    /// Each tenant's share of the gateway.
    pub(crate) shares: Shares,
    /// Where policies' log lines go: escaped, rate-limited per tenant.
    pub(crate) policy_log: Arc<PolicyLog>,
    /// Completion reports being recorded.
    pub(crate) completions: Arc<super::completion::InFlight>,
    /// The MCP tools each tenant marks destructive (for the irreversible-action gate).
    pub(crate) mcp_servers: crate::mcp_servers::McpServers,
}

impl ExecuteService {
    /// Evaluates a tool call with the tenant's active policy, records the decision durably,
    /// and answers. Fails closed: no active policy, a policy failure, or usage counters that
    /// keep changing all end in a recorded BLOCK.
    pub async fn execute(
        &self,
        scope: &TenantScope<Agent>,
        req: ExecuteRequest,
    ) -> Result<ExecuteOutcome> {
        let tenant_id = scope.tenant_id();
        if let Some(bound) = &scope.key().agent_id
            && *bound != req.agent_id
        {
            return Err(AppError::Forbidden(format!(
                "this key may only act as agent `{bound}`"
            )));
        }
        check_record_size(&req)?;
        let req = Call {
            request: req,
            key: scope.key().clone(),
        };
        if self.degraded.reason(tenant_id).is_some() {
            return self.unavailable(tenant_id, &req).await;
        }
        let tenant = self
            .tenants
            .get(tenant_id)
            .ok_or(AppError::NotFound("tenant"))?;
        let timestamp_ms = self.clock.now_ms();
        let scope = CallScope {
            tenant_id: tenant.id.clone(),
            session_id: req.session_id.clone(),
            timestamp_ms,
        };
        let call = ToolCall {
            action: req.action.clone(),
            arguments: req.arguments.clone(),
            context: req.context.clone(),
            agent_id: req.agent_id.clone(),
            key_id: req.key.key_id.clone(),
            session_id: req.session_id.clone(),
            tenant_id: tenant.id.clone(),
            target: req.target.as_ref().map(|r| writ_runtime::decision::Target {
                service: r.service.clone(),
                method: r.method.clone(),
                url: r.url.clone(),
                destructive: r.destructive,
            }),
            timestamp_ms,
        };

        let Some(policy) = self.policies.active(&tenant.id) else {
            let decision = Decision::block(
                codes::NO_ACTIVE_POLICY,
                "the tenant has no active policy; every call is blocked",
            );
            return Ok(self
                .record_decision(&tenant.id, &req, decision, None, None, Effects::default())
                .await?);
        };

        if req.target.is_some() && self.jobs.queue_full(&tenant.id) {
            return Err(AppError::RateLimited {
                retry_after_s: 1,
                message: "this tenant's downstream jobs are queued at their bound; retry after 1 s"
                    .into(),
            });
        }
        let admitted = self.shares.admit(&tenant.id, &tenant.limits).await?;
        for _ in 0..=self.usage_retries {
            let evaluation = self
                .evaluate(&policy, &call, &tenant.limits, &admitted)
                .await?;
            let charging = evaluation.decision.outcome == Outcome::Allow
                && !evaluation.decision.charges.is_empty();
            let effects = if charging {
                scope.effects(&evaluation.usage_reads, &evaluation.decision.charges)
            } else {
                Effects::default()
            };
            let mut decision = evaluation.decision.clone();
            let irreversible = req
                .target
                .as_ref()
                .is_some_and(|t| t.method == "DELETE" || t.destructive)
                || self.mcp_servers.destructive(&tenant.id, &req.action);
            if decision.outcome == Outcome::Allow && irreversible && tenant.limits.irreversible_gate
            {
                decision.outcome = Outcome::Escalate;
                decision.codes.push(codes::IRREVERSIBLE_ACTION.to_owned());
                decision.reason = format!(
                    "{} (irreversible: the gateway holds it for a human)",
                    decision.reason
                );
            }
            if decision.outcome == Outcome::Escalate {
                // Held for a human, it no longer counts as waiting for admission.
                drop(admitted);
                // Boxed: a held call keeps only the escalation's own state alive, not the
                // largest of every path through `execute`.
                return Box::pin(self.escalate(&tenant, &req, &policy, &evaluation, decision))
                    .await;
            }
            // An allowed call with a downstream request becomes a job whose row commits with
            // the decision's record: one flush makes both durable before the agent hears of it.
            let job = match (decision.outcome, &req.target) {
                (Outcome::Allow, Some(target)) => {
                    Some(self.jobs.prepare(&tenant.id, target.clone(), timestamp_ms))
                }
                _ => None,
            };
            let mut record = RecordBody::new(Kind::Decision);
            let mut effects = effects;
            if let Some(job) = &job {
                record.event_id = job.decision_event_id.clone();
                effects.rows.extend(self.jobs.rows(job));
            }
            match self
                .record_call(
                    &tenant.id,
                    &req,
                    record,
                    decision,
                    Some(&policy),
                    Some(&evaluation),
                    effects,
                    None,
                )
                .await
            {
                Err(AuditError::UsageConflict) => {
                    tracing::debug!(tenant = %tenant.id, "usage changed during evaluation; re-evaluating");
                }
                Ok(mut outcome) => {
                    if let Some(job) = job {
                        outcome.job_id = Some(job.id.clone());
                        outcome.job = Some(self.jobs.start_later(job));
                    }
                    return Ok(outcome);
                }
                Err(e) => {
                    if let (AuditError::FlushFailed, Some(job)) = (&e, job) {
                        self.jobs.not_started(job);
                    }
                    return Err(e.into());
                }
            }
        }
        let decision = Decision::block(
            codes::USAGE_CONFLICT,
            "concurrent calls kept changing the usage counters this policy reads; try again",
        );
        Ok(self
            .record_decision(
                &tenant.id,
                &req,
                decision,
                Some(&policy),
                None,
                Effects::default(),
            )
            .await?)
    }

    /// The answer to a call of a degraded tenant: BLOCK `tenant_unavailable`, recorded if its
    /// chain takes it; 503 if not. What failed is for the operator (`/readyz`, the log), not
    /// the agent.
    async fn unavailable(&self, tenant_id: &str, req: &Call) -> Result<ExecuteOutcome> {
        let decision = Decision::block(
            codes::TENANT_UNAVAILABLE,
            "this tenant could not be loaded when the gateway started; its calls are blocked until an operator repairs it",
        );
        self.record_decision(tenant_id, req, decision, None, None, Effects::default())
            .await
            .map_err(|e| {
                tracing::error!(tenant = %tenant_id, error = %e, "a degraded tenant's call could not be recorded");
                AppError::Unavailable {
                    code: codes::TENANT_UNAVAILABLE,
                    message: "this tenant could not be loaded when the gateway started; its calls are refused until an operator repairs it".into(),
                }
            })
    }

    async fn evaluate(
        &self,
        policy: &Arc<ActivePolicy>,
        call: &ToolCall,
        limits: &TenantLimits,
        admitted: &Admitted,
    ) -> Result<Evaluation> {
        // The tenant's own slot first, so its waiting calls hold none of the gateway's.
        let _tenant_slot = admitted.slot().await?;
        let _permit = self
            .evaluations
            .acquire()
            .await
            .map_err(AppError::internal)?;
        let limits = limits.sandbox();
        let usage = Box::new(StoreUsage {
            store: self.store.clone(),
            scope: CallScope {
                tenant_id: call.tenant_id.clone(),
                session_id: call.session_id.clone(),
                timestamp_ms: call.timestamp_ms,
            },
        });
        // A good policy decides in microseconds, less than handing the call to another thread
        // costs, so it runs right here on the async worker; one that runs long yields the
        // worker at every epoch tick until its deadline (see `Engine::evaluate`).
        let evaluation = self
            .engine
            .evaluate(&policy.compiled, call, &limits, usage)
            .await;
        admitted.spent(evaluation.elapsed);
        self.policy_log.emit(
            &call.tenant_id,
            policy.compiled.id(),
            &evaluation.logs,
            evaluation.logs_dropped,
        );
        let m = &self.metrics;
        m.evaluation_seconds
            .observe(evaluation.elapsed.as_secs_f64());
        m.evaluation_fuel.observe(evaluation.fuel_consumed as f64);
        Ok(evaluation)
    }

    async fn record_decision(
        &self,
        tenant_id: &str,
        req: &Call,
        decision: Decision,
        policy: Option<&Arc<ActivePolicy>>,
        evaluation: Option<&Evaluation>,
        effects: Effects,
    ) -> std::result::Result<ExecuteOutcome, AuditError> {
        let record = RecordBody::new(Kind::Decision);
        self.record_call(
            tenant_id, req, record, decision, policy, evaluation, effects, None,
        )
        .await
    }

    /// Appends a record about a call (a decision, or an opened escalation) and shapes the
    /// answer from it.
    #[allow(clippy::too_many_arguments)]
    async fn record_call(
        &self,
        tenant_id: &str,
        req: &Call,
        mut record: RecordBody,
        decision: Decision,
        policy: Option<&Arc<ActivePolicy>>,
        evaluation: Option<&Evaluation>,
        effects: Effects,
        escalation_id: Option<String>,
    ) -> std::result::Result<ExecuteOutcome, AuditError> {
        let charged = !effects.add.is_empty();
        record.acted_by(&req.key.key_id, &req.key.subject);
        record.action = Some(req.action.clone());
        record.agent_id = Some(req.agent_id.clone());
        record.arguments = Some(req.arguments.clone());
        record.session_id = Some(req.session_id.clone());
        record.client_hint = req.client_hint.clone();
        if let Some(target) = &req.target {
            record.detail = Some(with_request(record.detail.take(), target));
        }
        record.outcome = Some(decision.outcome.as_str().to_owned());
        record.reason = Some(decision.reason.clone());
        record.codes = decision.codes.clone();
        record.escalation_id = escalation_id.clone();
        record.policy_id = policy.map(|p| p.meta.policy_id.clone());
        record.fuel = evaluation.map(|e| e.fuel_consumed);
        record.latency_us = evaluation.map(|e| e.elapsed.as_micros() as u64);
        if charged {
            record.charges = decision
                .charges
                .iter()
                .map(|c| RecordCharge {
                    amount: c.amount.to_string(),
                    counter: c.counter.clone(),
                })
                .collect();
        }
        let started = Instant::now();
        let appended = self.audit.append(tenant_id, record, effects).await;
        self.metrics
            .audit_append_seconds
            .observe(started.elapsed().as_secs_f64());
        let appended = appended?;
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                tenant: tenant_id.to_owned(),
                outcome: decision.outcome.as_str().to_owned(),
            })
            .inc();
        tracing::debug!(
            tenant = %tenant_id,
            agent = %req.agent_id,
            action = %req.action,
            outcome = decision.outcome.as_str(),
            codes = ?decision.codes,
            latency_us = evaluation.map(|e| e.elapsed.as_micros() as u64),
            fuel = evaluation.map(|e| e.fuel_consumed),
            event_id = %appended.body.event_id,
            "decision"
        );
        Ok(ExecuteOutcome {
            event_id: appended.body.event_id,
            escalation_id,
            actor_human_id: None,
            policy_id: policy.map(|p| p.meta.policy_id.clone()),
            session_id: req.session_id.clone(),
            job_id: None,
            job: None,
            decision,
        })
    }

    /// Opens an escalation for an ESCALATE decision and holds the call until it is resolved,
    /// the request's `wait` runs out (answer ESCALATE, still pending), or its deadline passes
    /// (expired, answer BLOCK). At the pending cap, the call is blocked instead.
    async fn escalate(
        &self,
        tenant: &Tenant,
        req: &Call,
        policy: &Arc<ActivePolicy>,
        evaluation: &Evaluation,
        decision: Decision,
    ) -> Result<ExecuteOutcome> {
        let now = self.clock.now_ms();
        let esc = Escalation {
            id: new_ordered_id("esc_", now),
            tenant_id: tenant.id.clone(),
            status: Status::Pending,
            action: req.action.clone(),
            arguments: req.arguments.clone(),
            agent_id: req.agent_id.clone(),
            session_id: req.session_id.clone(),
            caller_key_id: Some(req.key.key_id.clone()),
            caller_subject: Some(req.key.subject.clone()),
            policy_id: policy.meta.policy_id.clone(),
            reason: decision.reason.clone(),
            codes: decision.codes.clone(),
            charges: decision
                .charges
                .iter()
                .map(|c| (c.counter.clone(), c.amount))
                .collect(),
            call_hash: escalations::call_hash(
                &req.action,
                &req.arguments,
                &policy.meta.policy_id,
                req.target.as_ref(),
            ),
            call_timestamp_ms: now,
            opened_ms: now,
            deadline_ms: now + tenant.limits.escalation_hold_s * 1000,
            opened_event_id: new_ordered_id("evt_", now),
            decided_ms: None,
            decided_by: None,
            note: None,
            resolved_event_id: None,
            request: req.target.clone(),
            job_id: None,
        };
        let mut record = RecordBody::new(Kind::EscalationOpened);
        record.event_id = esc.opened_event_id.clone();
        record.detail = Some(
            serde_json::json!({"call_hash": esc.call_hash, "deadline_ms": esc.deadline_ms})
                .to_string(),
        );
        let effects = Effects {
            rows: vec![esc.row()],
            ..Effects::default()
        };
        // The cap is checked and a place taken in one step, before the append, so concurrent
        // escalations cannot pass it; the place is released if the append writes nothing.
        let reservation = match self
            .escalations
            .reserve(&esc, tenant.limits.max_pending_escalations)
        {
            Ok(reservation) => reservation,
            Err(pending) => {
                let blocked = Decision::block(
                    codes::TOO_MANY_PENDING,
                    format!(
                        "{pending} escalations are already waiting for a reviewer; this call is blocked"
                    ),
                );
                return Ok(self
                    .record_decision(
                        &tenant.id,
                        req,
                        blocked,
                        Some(policy),
                        Some(evaluation),
                        Effects::default(),
                    )
                    .await?);
            }
        };
        let rx = self.escalations.subscribe(&esc.id);
        // Boxed, so the held state below does not reserve room for the append.
        let opened = Box::pin(self.record_call(
            &tenant.id,
            req,
            record,
            decision,
            Some(policy),
            Some(evaluation),
            effects,
            Some(esc.id.clone()),
        ))
        .await;
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // A failed flush may leave the row written: its place is kept, and the sweeper
                // settles it at the deadline (expires the row, or forgets the id).
                if !matches!(e, AuditError::FlushFailed) {
                    reservation.release();
                }
                return Err(e.into());
            }
        };
        self.escalations.opened(tenant, &esc, reservation);

        let until = match req.wait {
            Some(wait) => (now + wait.as_millis() as u64).min(esc.deadline_ms),
            None => esc.deadline_ms,
        };
        match self
            .escalations
            .await_resolution(&esc, rx, true, until)
            .await?
        {
            Some(resolved) => Ok(self.escalations.outcome_of(&resolved)),
            None if until >= esc.deadline_ms => {
                let resolved = self.escalations.expire(&tenant.id, &esc.id).await?;
                Ok(self.escalations.outcome_of(&resolved))
            }
            None => Ok(opened),
        }
    }
}

/// Refuses, before evaluation, a call whose record could be over [`MAX_RECORD_BYTES`]: every
/// decision records the call's texts, escaped, so a body within the request limit can still
/// make a record over it.
fn check_record_size(req: &ExecuteRequest) -> Result<()> {
    let target = req.target.as_ref();
    let bytes = call_record_bytes(&[
        &req.action,
        &req.agent_id,
        &req.session_id,
        &req.arguments,
        req.client_hint.as_deref().unwrap_or_default(),
        target.map_or("", |t| t.url.as_str()),
        target.map_or("", |t| t.method.as_str()),
        target
            .and_then(|t| t.credential.as_ref())
            .map_or("", |c| c.name.as_str()),
    ]);
    if bytes > MAX_RECORD_BYTES {
        return Err(AppError::TooLarge {
            code: "record_too_large",
            message: format!(
                "this call's audit record could take {bytes} bytes (its text as stored, escaped), over the bound of {MAX_RECORD_BYTES}; nothing was evaluated or recorded"
            ),
        });
    }
    Ok(())
}

/// `detail` (a JSON object as text, or none) with the downstream request the call resolved to:
/// method, URL, the body's blake3 and the credential's name; never the secret.
fn with_request(detail: Option<String>, target: &ResolvedRequest) -> String {
    let mut object = detail
        .and_then(|d| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&d).ok())
        .unwrap_or_default();
    object.insert(
        "request".into(),
        serde_json::json!({
            "method": target.method,
            "url": target.url,
            "body_blake3": target.body.as_ref().map(|b| blake3::hash(b.as_bytes()).to_hex().to_string()),
            "credential": target.credential.as_ref().map(|c| &c.name),
        }),
    );
    serde_json::Value::Object(object).to_string()
}
