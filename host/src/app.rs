//! The gateway's operations, as the HTTP API and the tests call them: execute a tool call, and
//! manage tenants, keys and policies. Every operation takes the authenticated [`Principal`] and
//! checks its role and tenant here, so no route can forget to.
//!
//! Tenant isolation: a principal only ever reaches its own tenant's rows. A resource of another
//! tenant is reported as not found, never as forbidden, so its existence does not leak.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::catalog::{Catalog, CatalogError, ResolvedRequest, ToolEntry};
use crate::checkpoint::{self, Checkpoint, CheckpointSigner};
use crate::escalations::{self, Escalation, Escalations, Status};
use crate::jobs::{Job, Jobs};
use crate::notify::{Notification, Notifier};
use crate::vault::{Vault, VaultError};
use crate::verify::{self, Verification};

use crate::audit::{AuditError, AuditLog, Effects, Kind, Record, RecordBody, RecordCharge};
use crate::decision::{Decision, Outcome, ToolCall, codes};
use crate::engine::{Engine, EngineConfig};
use crate::evaluation::Evaluation;
use crate::metrics::{DecisionLabels, Metrics};
use crate::policies::{ActivePolicy, Policies, PolicyError, PolicyMeta};
use crate::store::{Store, StoreError};
use crate::tenants::{
    KeyRecord, Principal, Role, Tenant, TenantError, TenantLimits, Tenants, tenant_key,
};
use crate::usage::{CallScope, StoreUsage};

/// Errors of the gateway's operations; the API maps each to a status and code once.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The key's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource visible to the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed or a value is out of bounds.
    #[error("{message}")]
    Invalid {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A policy component was refused.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// The resource is not in a state that allows this (e.g. an escalation already decided).
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code.
        code: &'static str,
        /// What the state is.
        message: String,
    },
    /// The request conflicts with an earlier one (e.g. an idempotency key reused).
    #[error("{0}")]
    Unprocessable(String),
    /// Something failed inside the gateway; details are logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result of a gateway operation.
pub type Result<T> = std::result::Result<T, AppError>;

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<AuditError> for AppError {
    fn from(e: AuditError) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<TenantError> for AppError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::TenantNotFound => Self::NotFound("tenant"),
            TenantError::KeyNotFound => Self::NotFound("key"),
            TenantError::Invalid(message) => Self::Invalid {
                code: "invalid_request",
                message,
            },
            TenantError::Store(e) => e.into(),
        }
    }
}

impl From<CatalogError> for AppError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid(_) | CatalogError::Unresolvable(_) => Self::Invalid {
                code: "invalid_request",
                message: e.to_string(),
            },
            CatalogError::Store(e) => e.into(),
        }
    }
}

impl From<VaultError> for AppError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Invalid(_) => Self::Invalid {
                code: "invalid_request",
                message: e.to_string(),
            },
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<PolicyError> for AppError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Load(e) => Self::InvalidPolicy(e.to_string()),
            PolicyError::NotFound => Self::NotFound("policy"),
            PolicyError::InvalidName => Self::Invalid {
                code: "invalid_request",
                message: e.to_string(),
            },
            PolicyError::Store(e) => e.into(),
            e @ PolicyError::File { .. } => Self::Internal(Box::new(e)),
        }
    }
}

/// A lock serializing the requests of one idempotency key.
type KeyLock = Arc<tokio::sync::Mutex<()>>;

/// The first answer to an idempotency key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct IdempotentAnswer {
    fingerprint: String,
    status: u16,
    body: String,
    created_ms: u64,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Evaluations running at once; more wait for a slot.
    pub max_concurrent_evaluations: usize,
    /// Re-evaluations when the usage counters a policy read change before its charges commit.
    pub usage_retries: usize,
    /// A chain is checkpointed once it has grown by this many records...
    pub checkpoint_every_records: u64,
    /// ...or has grown at all and its last checkpoint is this old.
    pub checkpoint_every: Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            max_concurrent_evaluations: 16,
            usage_retries: 3,
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(60),
        }
    }
}

impl AppConfig {
    /// Sizes the sandbox's instance pool to `slots`, and caps the evaluations run at once and
    /// the warm slots kept to it, so an admitted evaluation always finds a slot.
    pub fn with_pool_slots(mut self, slots: u32) -> Self {
        self.engine.max_instances = slots;
        self.engine.max_warm_slots = self.engine.max_warm_slots.min(slots);
        self.max_concurrent_evaluations = self.max_concurrent_evaluations.min(slots as usize);
        self
    }
}

/// A tool call as the API received it.
#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    /// The agent's session.
    pub session_id: String,
    /// The agent.
    pub agent_id: String,
    /// The action.
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

/// The answer to a tool call.
#[derive(Debug, Clone)]
pub struct ExecuteOutcome {
    /// The decision.
    pub decision: Decision,
    /// The audit record's event id.
    pub event_id: String,
    /// The escalation, when escalated.
    pub escalation_id: Option<String>,
    /// The human who decided, when a human did.
    pub actor_human_id: Option<String>,
    /// The policy that decided.
    pub policy_id: Option<String>,
    /// The session.
    pub session_id: String,
    /// The downstream job an allowed catalog call became.
    pub job_id: Option<String>,
}

/// A session's decisions.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// Allowed calls.
    pub allowed: usize,
    /// Blocked calls.
    pub blocked: usize,
    /// Escalated calls.
    pub escalated: usize,
    /// The session's records, in order.
    pub events: Vec<Record>,
}

/// The gateway: every component, shared by all requests. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    engine: Engine,
    store: Store,
    tenants: Tenants,
    policies: Policies,
    audit: AuditLog,
    metrics: Metrics,
    evaluations: Semaphore,
    /// Serializes activations so the audit order matches the order they took effect.
    activation: tokio::sync::Mutex<()>,
    escalations: Escalations,
    /// Per (tenant, idempotency key) locks, so concurrent repeats wait for the first.
    idempotency: Mutex<HashMap<(String, String), KeyLock>>,
    catalog: Catalog,
    vault: Vault,
    jobs: Jobs,
    notifier: Notifier,
    signer: CheckpointSigner,
    /// Latest checkpoint per tenant: (size, time ms). A std mutex: never held across an await.
    checkpoints: Mutex<HashMap<String, (u64, u64)>>,
    config: AppConfig,
}

fn forbidden(message: &str) -> AppError {
    AppError::Forbidden(message.to_owned())
}

/// The tenant of a tenant key with one of `roles`.
fn tenant_role<'a>(who: &'a Principal, roles: &[Role]) -> Result<&'a str> {
    if !roles.contains(&who.role) {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(AppError::Forbidden(format!(
            "this needs a {} key",
            names.join(" or ")
        )));
    }
    who.tenant_id
        .as_deref()
        .ok_or_else(|| forbidden("this needs a tenant key"))
}

impl App {
    /// Opens the store, loads tenants, keys and active policies, and starts the audit
    /// writer. Must run inside a tokio runtime.
    pub fn open(
        store: Store,
        config: AppConfig,
        signer: CheckpointSigner,
        master_key: &[u8; 32],
    ) -> anyhow::Result<Self> {
        let engine = Engine::new(&config.engine)
            .map_err(|e| anyhow::anyhow!("starting the engine: {e:#}"))?;
        let tenants = Tenants::load(store.clone())?;
        let policies = Policies::load(engine.clone(), store.clone())?;
        let metrics = Metrics::default();
        let audit = AuditLog::start_observed(store.clone(), metrics.audit_writer.clone());
        let escalations = Escalations::load(store.clone())?;
        let catalog = Catalog::load(store.clone(), tenants.all().iter().map(|t| t.id.as_str()))?;
        let vault = Vault::new(store.clone(), master_key);
        let (jobs, interrupted) = Jobs::load(store.clone(), vault.clone())?;
        let mut checkpoints = HashMap::new();
        for tenant in tenants.all() {
            audit.load_head(&tenant.id)?;
            if let Some(note) =
                store.get_raw(crate::store::Table::Checkpoints, tenant.id.as_bytes())?
                && let Ok(cp) =
                    checkpoint::verify(&String::from_utf8_lossy(&note), &signer.public_key())
            {
                checkpoints.insert(tenant.id.clone(), (cp.size, cp.time_ms));
            }
        }
        let app = Self {
            inner: Arc::new(AppInner {
                evaluations: Semaphore::new(config.max_concurrent_evaluations),
                engine,
                store,
                tenants,
                policies,
                audit,
                metrics,
                activation: tokio::sync::Mutex::new(()),
                escalations,
                idempotency: Mutex::default(),
                catalog,
                vault,
                jobs,
                notifier: Notifier::start(),
                signer,
                checkpoints: Mutex::new(checkpoints),
                config,
            }),
        };
        app.start_checkpointer();
        app.start_expiry_sweeper();
        for job in interrupted {
            let app = app.clone();
            tokio::spawn(async move { app.record_job(&job).await });
        }
        Ok(app)
    }

    /// Signs checkpoints in the background as chains grow; stops when the app is dropped.
    fn start_checkpointer(&self) {
        let weak: Weak<AppInner> = Arc::downgrade(&self.inner);
        let tick = self
            .inner
            .config
            .checkpoint_every
            .min(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (App { inner }).checkpoint(false).await {
                    tracing::error!(error = %e, "checkpointing failed");
                }
            }
        });
    }

    /// Signs and stores a checkpoint for every chain that grew since its last one: all of them
    /// when `force`, else those due by the configured cadence. Only flushed heads are signed.
    pub async fn checkpoint(&self, force: bool) -> Result<()> {
        let now = crate::now_ms();
        let every_ms = self.inner.config.checkpoint_every.as_millis() as u64;
        let due: Vec<(String, u64, [u8; 32])> = {
            let last = self.inner.checkpoints.lock().expect("checkpoints lock");
            self.inner
                .audit
                .heads()
                .into_iter()
                .filter(|(tenant, size, _)| {
                    let (last_size, last_time) = last.get(tenant).copied().unwrap_or((0, 0));
                    *size > last_size
                        && (force
                            || size - last_size >= self.inner.config.checkpoint_every_records
                            || now.saturating_sub(last_time) >= every_ms)
                })
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        // The heads were read before this flush, so the flush makes them durable.
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| AppError::Internal(Box::new(e)))??;
        for (tenant_id, size, head_hash) in due {
            let cp = Checkpoint {
                tenant_id: tenant_id.clone(),
                size,
                head_hash,
                time_ms: crate::now_ms(),
            };
            let note = self.inner.signer.sign(&cp);
            self.inner.store.put_raw(
                crate::store::Table::Checkpoints,
                tenant_id.as_bytes(),
                note.as_bytes(),
            )?;
            self.inner
                .checkpoints
                .lock()
                .expect("checkpoints lock")
                .insert(tenant_id, (size, cp.time_ms));
        }
        Ok(())
    }

    /// Tenants and keys.
    pub fn tenants(&self) -> &Tenants {
        &self.inner.tenants
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Flushes the store: every write so far becomes durable. Blocking.
    pub fn flush(&self) -> std::result::Result<(), StoreError> {
        self.inner.store.flush()
    }

    /// Whether the gateway can serve: the store answers a read.
    pub fn ready(&self) -> bool {
        self.inner
            .store
            .get_raw(crate::store::Table::Tenants, b"")
            .is_ok()
    }

    fn max_memory_mib(&self) -> u32 {
        (self.inner.config.engine.max_memory_bytes >> 20) as u32
    }

    // ---- execute ------------------------------------------------------------------------

    /// Evaluates a tool call with the tenant's active policy, records the decision durably,
    /// and answers. Fails closed: no active policy, a policy failure, or usage counters that
    /// keep changing all end in a recorded BLOCK.
    pub async fn execute(&self, who: &Principal, req: ExecuteRequest) -> Result<ExecuteOutcome> {
        let tenant_id = tenant_role(who, &[Role::Agent])?;
        if let Some(bound) = &who.agent_id
            && *bound != req.agent_id
        {
            return Err(AppError::Forbidden(format!(
                "this key may only act as agent `{bound}`"
            )));
        }
        let tenant = self
            .inner
            .tenants
            .get(tenant_id)
            .ok_or(AppError::NotFound("tenant"))?;
        let timestamp_ms = crate::now_ms();
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
            session_id: req.session_id.clone(),
            tenant_id: tenant.id.clone(),
            target: req.target.as_ref().map(|r| crate::decision::Target {
                service: r.service.clone(),
                method: r.method.clone(),
                url: r.url.clone(),
                destructive: r.destructive,
            }),
            timestamp_ms,
        };

        let Some(policy) = self.inner.policies.active(&tenant.id) else {
            let decision = Decision::block(
                codes::NO_ACTIVE_POLICY,
                "the tenant has no active policy; every call is blocked",
            );
            return Ok(self
                .record_decision(&tenant, &req, decision, None, None, Effects::default())
                .await?);
        };

        for _ in 0..=self.inner.config.usage_retries {
            let evaluation = self.evaluate(&policy, &call, &tenant.limits).await?;
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
                .is_some_and(|t| t.method == "DELETE" || t.destructive);
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
                // Boxed: a held call keeps only the escalation's own state alive, not the
                // largest of every path through `execute`.
                return Box::pin(self.escalate(&tenant, &req, &policy, &evaluation, decision))
                    .await;
            }
            match self
                .record_decision(
                    &tenant,
                    &req,
                    decision,
                    Some(&policy),
                    Some(&evaluation),
                    effects,
                )
                .await
            {
                Err(AuditError::UsageConflict) => {
                    tracing::debug!(tenant = %tenant.id, "usage changed during evaluation; re-evaluating");
                }
                Ok(mut outcome) => {
                    if let (Outcome::Allow, Some(target)) = (outcome.decision.outcome, &req.target)
                    {
                        outcome.job_id = Some(
                            self.start_job(&tenant.id, target.clone(), &outcome.event_id)
                                .await?,
                        );
                    }
                    return Ok(outcome);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let decision = Decision::block(
            codes::USAGE_CONFLICT,
            "concurrent calls kept changing the usage counters this policy reads; try again",
        );
        Ok(self
            .record_decision(
                &tenant,
                &req,
                decision,
                Some(&policy),
                None,
                Effects::default(),
            )
            .await?)
    }

    async fn evaluate(
        &self,
        policy: &Arc<ActivePolicy>,
        call: &ToolCall,
        limits: &TenantLimits,
    ) -> Result<Evaluation> {
        let _permit = self
            .inner
            .evaluations
            .acquire()
            .await
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        let limits = limits.sandbox();
        let usage = Box::new(StoreUsage {
            store: self.inner.store.clone(),
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
            .inner
            .engine
            .evaluate(&policy.compiled, call, &limits, usage)
            .await;
        let m = &self.inner.metrics;
        m.evaluation_seconds
            .observe(evaluation.elapsed.as_secs_f64());
        m.evaluation_fuel.observe(evaluation.fuel_consumed as f64);
        Ok(evaluation)
    }

    async fn record_decision(
        &self,
        tenant: &Tenant,
        req: &ExecuteRequest,
        decision: Decision,
        policy: Option<&Arc<ActivePolicy>>,
        evaluation: Option<&Evaluation>,
        effects: Effects,
    ) -> std::result::Result<ExecuteOutcome, AuditError> {
        let record = RecordBody::new(Kind::Decision);
        self.record_call(
            tenant, req, record, decision, policy, evaluation, effects, None,
        )
        .await
    }

    /// Appends a record about a call (a decision, or an opened escalation) and shapes the
    /// answer from it.
    #[allow(clippy::too_many_arguments)]
    async fn record_call(
        &self,
        tenant: &Tenant,
        req: &ExecuteRequest,
        mut record: RecordBody,
        decision: Decision,
        policy: Option<&Arc<ActivePolicy>>,
        evaluation: Option<&Evaluation>,
        effects: Effects,
        escalation_id: Option<String>,
    ) -> std::result::Result<ExecuteOutcome, AuditError> {
        let charged = !effects.add.is_empty();
        record.action = Some(req.action.clone());
        record.agent_id = Some(req.agent_id.clone());
        record.arguments = Some(req.arguments.clone());
        record.session_id = Some(req.session_id.clone());
        record.client_hint = req.client_hint.clone();
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
        let appended = self.inner.audit.append(&tenant.id, record, effects).await;
        self.inner
            .metrics
            .audit_append_seconds
            .observe(started.elapsed().as_secs_f64());
        let appended = appended?;
        self.inner
            .metrics
            .decisions
            .get_or_create(&DecisionLabels {
                tenant: tenant.id.clone(),
                outcome: decision.outcome.as_str().to_owned(),
            })
            .inc();
        tracing::debug!(
            tenant = %tenant.id,
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
            decision,
        })
    }

    // ---- escalations --------------------------------------------------------------------

    /// Opens an escalation for an ESCALATE decision and holds the call until it is resolved,
    /// the request's `wait` runs out (answer ESCALATE, still pending), or its deadline passes
    /// (expired, answer BLOCK). At the pending cap, the call is blocked instead.
    async fn escalate(
        &self,
        tenant: &Tenant,
        req: &ExecuteRequest,
        policy: &Arc<ActivePolicy>,
        evaluation: &Evaluation,
        decision: Decision,
    ) -> Result<ExecuteOutcome> {
        let pending = self.inner.escalations.pending_count(&tenant.id);
        if pending >= tenant.limits.max_pending_escalations {
            let blocked = Decision::block(
                codes::TOO_MANY_PENDING,
                format!(
                    "{pending} escalations are already waiting for a reviewer; this call is blocked"
                ),
            );
            return Ok(self
                .record_decision(
                    tenant,
                    req,
                    blocked,
                    Some(policy),
                    Some(evaluation),
                    Effects::default(),
                )
                .await?);
        }
        let now = crate::now_ms();
        let esc = Escalation {
            id: crate::tenants::new_ordered_id("esc_"),
            tenant_id: tenant.id.clone(),
            status: Status::Pending,
            action: req.action.clone(),
            arguments: req.arguments.clone(),
            agent_id: req.agent_id.clone(),
            session_id: req.session_id.clone(),
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
            opened_event_id: crate::tenants::new_ordered_id("evt_"),
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
            escalation: Some(esc.row()),
            ..Effects::default()
        };
        let rx = self.inner.escalations.subscribe(&esc.id);
        // Boxed, so the held state below does not reserve room for the append.
        let opened = Box::pin(self.record_call(
            tenant,
            req,
            record,
            decision,
            Some(policy),
            Some(evaluation),
            effects,
            Some(esc.id.clone()),
        ))
        .await?;
        self.inner.escalations.opened(&esc);
        self.notify(tenant, "escalation_opened", &esc);

        let until = match req.wait {
            Some(wait) => (now + wait.as_millis() as u64).min(esc.deadline_ms),
            None => esc.deadline_ms,
        };
        match self.await_resolution(&esc, rx, true, until).await? {
            Some(resolved) => Ok(self.outcome_of(&resolved)),
            None if until >= esc.deadline_ms => {
                let resolved = self.expire(&tenant.id, &esc.id).await?;
                Ok(self.outcome_of(&resolved))
            }
            None => Ok(opened),
        }
    }

    /// Waits until `esc` is resolved or `until_ms` passes. `subscribed_before_commit`: `rx` was
    /// subscribed before the escalation's row was committed, so no one could resolve it
    /// unseen and the stored row need not be read (a held call's own escalation).
    async fn await_resolution(
        &self,
        esc: &Escalation,
        mut rx: escalations::Subscription,
        subscribed_before_commit: bool,
        until_ms: u64,
    ) -> Result<Option<Escalation>> {
        if !subscribed_before_commit
            && let Some(stored) = self.inner.escalations.get(&esc.tenant_id, &esc.id)?
            && stored.status != Status::Pending
        {
            return Ok(Some(stored));
        }
        let wait = Duration::from_millis(until_ms.saturating_sub(crate::now_ms()));
        let waited = tokio::time::timeout(wait, rx.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|resolved| resolved.clone()));
        match waited {
            Ok(Ok(resolved)) => Ok(resolved),
            // Timed out: every resolution since the subscription is on the channel.
            Err(_) if subscribed_before_commit => Ok(rx.borrow().clone()),
            // Timed out, or the channel was replaced: read what is stored.
            _ => Ok(self
                .inner
                .escalations
                .get(&esc.tenant_id, &esc.id)?
                .filter(|e| e.status != Status::Pending)),
        }
    }

    /// The answer to a held call, from its escalation.
    fn outcome_of(&self, esc: &Escalation) -> ExecuteOutcome {
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
        }
    }

    /// Expires a pending escalation (recorded). If it was decided meanwhile, returns that.
    async fn expire(&self, tenant_id: &str, id: &str) -> Result<Escalation> {
        match self
            .resolve(tenant_id, id, Status::Expired, None, None)
            .await
        {
            Err(AppError::Conflict { .. }) => self
                .inner
                .escalations
                .get(tenant_id, id)?
                .ok_or(AppError::NotFound("escalation")),
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
        let lock = self.inner.escalations.decide_lock(tenant_id);
        let _serial = lock.lock().await;
        let esc = self
            .inner
            .escalations
            .get(tenant_id, id)?
            .ok_or(AppError::NotFound("escalation"))?;
        if esc.status != Status::Pending {
            return Err(AppError::Conflict {
                code: "already_resolved",
                message: format!("escalation is already {}", esc.status.as_str()),
            });
        }
        let now = crate::now_ms();
        // A decision that arrives after the deadline expires the escalation instead.
        let too_late = status != Status::Expired && now >= esc.deadline_ms;
        let (status, who, note) = if too_late {
            (Status::Expired, None, None)
        } else {
            (status, who, note)
        };
        let mut resolved = esc.clone();
        resolved.status = status;
        resolved.decided_ms = Some(now);
        resolved.decided_by = who.map(|w| w.subject.clone());
        resolved.note = note.clone();
        resolved.resolved_event_id = Some(crate::tenants::new_ordered_id("evt_"));
        // An approved call with a downstream request runs exactly what the reviewer saw, once:
        // the job is created here, under the decision lock, and started after the record.
        let job = match (&esc.request, status) {
            (Some(request), Status::Approved) => Some(self.inner.jobs.create(
                tenant_id,
                request.clone(),
                resolved.resolved_event_id.as_deref().unwrap_or_default(),
            )?),
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
        let mut effects = Effects {
            escalation: Some(resolved.row()),
            ..Effects::default()
        };
        if status == Status::Approved && !esc.charges.is_empty() {
            let charges: Vec<crate::decision::Charge> = esc
                .charges
                .iter()
                .map(|(counter, amount)| crate::decision::Charge {
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
        self.inner.audit.append(tenant_id, record, effects).await?;
        if let Some(job) = job {
            self.run_job(job);
        }
        self.inner.escalations.resolved(&resolved);
        if let Some(tenant) = self.inner.tenants.get(tenant_id) {
            self.notify(&tenant, "escalation_resolved", &resolved);
        }
        self.inner
            .metrics
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
        });
        self.inner.notifier.send(Notification {
            urls: tenant.webhook_urls.clone(),
            secret,
            kind,
            body,
        });
    }

    /// Sets the admin's tenant's webhook URLs; returns the new signing secret (shown once).
    pub fn set_webhooks(&self, who: &Principal, urls: Vec<String>) -> Result<String> {
        let tenant_id = tenant_role(who, &[Role::Admin])?;
        Ok(self.inner.tenants.set_webhooks(tenant_id, urls)?)
    }

    /// The admin's tenant's webhook URLs.
    pub fn webhooks(&self, who: &Principal) -> Result<Vec<String>> {
        let tenant_id = tenant_role(who, &[Role::Admin])?;
        Ok(self
            .inner
            .tenants
            .get(tenant_id)
            .ok_or(AppError::NotFound("tenant"))?
            .webhook_urls)
    }

    /// Expires every pending escalation past its deadline; runs in the background.
    fn start_expiry_sweeper(&self) {
        let weak: Weak<AppInner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(inner) = weak.upgrade() else { break };
                let app = App { inner };
                for (tenant_id, id) in app.inner.escalations.due(crate::now_ms()) {
                    if let Err(e) = app.expire(&tenant_id, &id).await {
                        tracing::error!(error = %e, escalation = %id, "expiring failed");
                    }
                }
            }
        });
    }

    /// A reviewer's (or tenant admin's) decision on an escalation of its tenant. The
    /// escalated call's own agent may not decide it.
    pub async fn decide(
        &self,
        who: &Principal,
        id: &str,
        approve: bool,
        note: Option<String>,
    ) -> Result<Escalation> {
        let tenant_id = tenant_role(who, &[Role::Reviewer, Role::Admin])?;
        let esc = self
            .inner
            .escalations
            .get(tenant_id, id)?
            .ok_or(AppError::NotFound("escalation"))?;
        if esc.agent_id == who.subject {
            return Err(forbidden(
                "a reviewer whose subject is the escalated call's agent cannot decide it",
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

    /// One escalation of the caller's tenant (agents: only their own calls).
    pub fn escalation(&self, who: &Principal, id: &str) -> Result<Escalation> {
        let tenant_id = tenant_role(who, &[Role::Reviewer, Role::Admin, Role::Agent])?;
        let esc = self
            .inner
            .escalations
            .get(tenant_id, id)?
            .ok_or(AppError::NotFound("escalation"))?;
        if who.role == Role::Agent && who.agent_id.as_ref().is_some_and(|a| *a != esc.agent_id) {
            return Err(AppError::NotFound("escalation"));
        }
        Ok(esc)
    }

    /// The tenant's escalations, optionally of one status (reviewer or admin).
    pub fn escalations(&self, who: &Principal, status: Option<Status>) -> Result<Vec<Escalation>> {
        let tenant_id = tenant_role(who, &[Role::Reviewer, Role::Admin])?;
        Ok(self.inner.escalations.list(tenant_id, status)?)
    }

    /// Waits up to `timeout` for an escalation to be resolved, then returns it as it stands.
    pub async fn wait_escalation(
        &self,
        who: &Principal,
        id: &str,
        timeout: Duration,
    ) -> Result<(Escalation, ExecuteOutcome)> {
        let esc = self.escalation(who, id)?;
        let rx = self.inner.escalations.subscribe(&esc.id);
        let until = (crate::now_ms() + timeout.as_millis() as u64).min(esc.deadline_ms);
        let current = match self.await_resolution(&esc, rx, false, until).await? {
            Some(resolved) => resolved,
            // Past its deadline (e.g. just after a restart, before the sweeper ran).
            None if crate::now_ms() >= esc.deadline_ms => {
                self.expire(&esc.tenant_id, &esc.id).await?
            }
            None => esc,
        };
        let outcome = self.outcome_of(&current);
        Ok((current, outcome))
    }

    // ---- downstream jobs ----------------------------------------------------------------

    /// Persists a job for an allowed call durably (the caller is about to be given its id),
    /// then runs it in the background; returns its id.
    async fn start_job(
        &self,
        tenant_id: &str,
        request: ResolvedRequest,
        event_id: &str,
    ) -> Result<String> {
        let job = self.inner.jobs.create(tenant_id, request, event_id)?;
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| AppError::Internal(Box::new(e)))??;
        let id = job.id.clone();
        self.run_job(job);
        Ok(id)
    }

    /// Runs a persisted job in the background and records it when it finishes.
    fn run_job(&self, job: Job) {
        let app = self.clone();
        tokio::spawn(async move {
            match app.inner.jobs.run(job).await {
                Ok(done) => app.record_job(&done).await,
                Err(e) => tracing::error!(error = %e, "job bookkeeping failed"),
            }
        });
    }

    /// Records a finished job in the chain: status, duration and response size, never the
    /// body or the credential.
    async fn record_job(&self, job: &Job) {
        let mut record = RecordBody::new(Kind::JobFinished);
        record.detail = Some(
            serde_json::json!({
                "job_id": job.id,
                "status": job.status,
                "error": job.error,
                "method": job.request.method,
                "url": job.request.url,
                "http_status": job.execution.as_ref().map(|e| e.status),
                "duration_ms": job.execution.as_ref().map(|e| e.duration_ms),
                "response_bytes": job.execution.as_ref().map(|e| e.body.len()),
                "decision_event_id": job.decision_event_id,
            })
            .to_string(),
        );
        if let Err(e) = self
            .inner
            .audit
            .append(&job.tenant_id, record, Effects::default())
            .await
        {
            tracing::error!(error = %e, job = %job.id, "recording a finished job failed");
        }
    }

    /// A job of the caller's tenant (agent, reviewer or admin).
    pub fn job(&self, who: &Principal, id: &str) -> Result<Job> {
        let tenant_id = tenant_role(who, &[Role::Agent, Role::Reviewer, Role::Admin])?;
        self.inner
            .jobs
            .get(tenant_id, id)?
            .ok_or(AppError::NotFound("job"))
    }

    /// Resolves a Tenet tool call against the caller's tenant's catalog: its downstream request,
    /// `None` when the tenant has no catalog for the service, `unknown_tool` when it has one
    /// that lacks the tool.
    pub fn resolve_tool(
        &self,
        who: &Principal,
        service: &str,
        tool_name: &str,
        arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<ResolvedRequest>> {
        let tenant_id = tenant_role(who, &[Role::Agent])?;
        if !self.inner.catalog.has_service(tenant_id, service) {
            return Ok(None);
        }
        match self.inner.catalog.get(tenant_id, service, tool_name)? {
            Some(entry) => Ok(Some(entry.resolve(arguments)?)),
            None => Err(AppError::Invalid {
                code: "unknown_tool",
                message: format!("the catalog of `{service}` has no tool `{tool_name}`"),
            }),
        }
    }

    // ---- idempotency --------------------------------------------------------------------

    /// Runs `run` at most once per (tenant, `key`) within 24 hours: a repeat with the same
    /// `fingerprint` gets the stored answer without running again; with another fingerprint,
    /// a conflict (422). Concurrent repeats wait for the first. The answer is opaque here:
    /// (status, body).
    pub async fn idempotent<F>(
        &self,
        who: &Principal,
        key: &str,
        fingerprint: &str,
        run: F,
    ) -> Result<(u16, String)>
    where
        F: std::future::Future<Output = Result<(u16, String)>>,
    {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        let tenant_id = tenant_role(who, &[Role::Agent])?.to_owned();
        if !crate::valid_name(key) {
            return Err(AppError::Invalid {
                code: "invalid_request",
                message: "Idempotency-Key must be 1 to 256 printable characters".into(),
            });
        }
        let map_key = (tenant_id.clone(), key.to_owned());
        let lock = self
            .inner
            .idempotency
            .lock()
            .expect("idempotency lock")
            .entry(map_key.clone())
            .or_default()
            .clone();
        let answer = {
            let _first = lock.lock().await;
            let row = tenant_key(&tenant_id, &[key.as_bytes()]);
            let stored: Option<IdempotentAnswer> = self
                .inner
                .store
                .get(crate::store::Table::Idempotency, &row)?;
            match stored {
                Some(s) if crate::now_ms().saturating_sub(s.created_ms) < DAY_MS => {
                    if s.fingerprint != fingerprint {
                        return Err(AppError::Unprocessable(
                            "this Idempotency-Key was used with a different request".into(),
                        ));
                    }
                    Ok((s.status, s.body))
                }
                _ => {
                    let (status, body) = run.await?;
                    let answer = IdempotentAnswer {
                        fingerprint: fingerprint.to_owned(),
                        status,
                        body: body.clone(),
                        created_ms: crate::now_ms(),
                    };
                    self.inner
                        .store
                        .put(crate::store::Table::Idempotency, &row, &answer)?;
                    Ok((status, body))
                }
            }
        };
        let mut locks = self.inner.idempotency.lock().expect("idempotency lock");
        if locks
            .get(&map_key)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            locks.remove(&map_key);
        }
        answer
    }

    // ---- tool catalog and credentials -------------------------------------------------

    /// Adds or replaces a tool in the admin's tenant's catalog.
    pub fn put_tool(&self, who: &Principal, entry: ToolEntry) -> Result<ToolEntry> {
        let tenant_id = tenant_role(who, &[Role::Admin])?;
        self.inner.catalog.put(tenant_id, &entry)?;
        Ok(entry)
    }

    /// The tenant's catalog (admin or reviewer).
    pub fn tools(&self, who: &Principal) -> Result<Vec<ToolEntry>> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?;
        Ok(self.inner.catalog.list(tenant_id)?)
    }

    /// Stores (sealed) a credential of the admin's tenant. Its value is never returned.
    pub fn put_credential(&self, who: &Principal, name: &str, secret: &str) -> Result<()> {
        let tenant_id = tenant_role(who, &[Role::Admin])?;
        Ok(self.inner.vault.put(tenant_id, name, secret)?)
    }

    /// The names of the admin's tenant's credentials.
    pub fn credential_names(&self, who: &Principal) -> Result<Vec<String>> {
        let tenant_id = tenant_role(who, &[Role::Admin])?;
        Ok(self.inner.vault.names(tenant_id)?)
    }

    /// Removes a credential of the admin's tenant.
    pub fn delete_credential(&self, who: &Principal, name: &str) -> Result<()> {
        let tenant_id = tenant_role(who, &[Role::Admin])?;
        if self.inner.vault.delete(tenant_id, name)? {
            Ok(())
        } else {
            Err(AppError::NotFound("credential"))
        }
    }

    // ---- tenants and keys ---------------------------------------------------------------

    /// Creates a tenant (operator only).
    pub fn create_tenant(&self, who: &Principal, name: &str) -> Result<Tenant> {
        if who.role != Role::Operator {
            return Err(forbidden("creating tenants needs the operator key"));
        }
        Ok(self.inner.tenants.create_tenant(name)?)
    }

    /// Replaces a tenant's limits (operator only).
    pub fn set_limits(
        &self,
        who: &Principal,
        tenant_id: &str,
        limits: impl FnOnce(TenantLimits) -> TenantLimits,
    ) -> Result<Tenant> {
        if who.role != Role::Operator {
            return Err(forbidden("setting limits needs the operator key"));
        }
        let tenant = self
            .inner
            .tenants
            .get(tenant_id)
            .ok_or(AppError::NotFound("tenant"))?;
        Ok(self.inner.tenants.set_limits(
            tenant_id,
            limits(tenant.limits),
            self.max_memory_mib(),
        )?)
    }

    /// Checks that `who` manages `tenant_id`'s keys: the operator, or that tenant's admin.
    /// Another tenant's admin is told the tenant does not exist.
    fn manages(&self, who: &Principal, tenant_id: &str) -> Result<()> {
        match who.role {
            Role::Operator => Ok(()),
            Role::Admin if who.tenant_id.as_deref() == Some(tenant_id) => Ok(()),
            Role::Admin => Err(AppError::NotFound("tenant")),
            _ => Err(forbidden(
                "managing keys needs an admin or the operator key",
            )),
        }
    }

    /// Creates a key; returns its record and its secret (shown once). Recorded in the chain.
    pub async fn create_key(
        &self,
        who: &Principal,
        tenant_id: &str,
        role: Role,
        subject: &str,
        agent_id: Option<&str>,
    ) -> Result<(KeyRecord, String)> {
        self.manages(who, tenant_id)?;
        let (key, secret) = self
            .inner
            .tenants
            .create_key(tenant_id, role, subject, agent_id)?;
        let mut record = RecordBody::new(Kind::KeyCreated);
        record.actor = Some(who.subject.clone());
        record.detail = Some(key_detail(&key));
        self.inner
            .audit
            .append(tenant_id, record, Effects::default())
            .await?;
        Ok((key, secret))
    }

    /// Lists a tenant's keys (never their secrets).
    pub fn list_keys(&self, who: &Principal, tenant_id: &str) -> Result<Vec<KeyRecord>> {
        self.manages(who, tenant_id)?;
        if self.inner.tenants.get(tenant_id).is_none() {
            return Err(AppError::NotFound("tenant"));
        }
        Ok(self.inner.tenants.keys_of(tenant_id)?)
    }

    /// Revokes a key. Recorded in the chain.
    pub async fn revoke_key(&self, who: &Principal, key_id: &str) -> Result<KeyRecord> {
        let key = self.inner.tenants.key(key_id)?;
        let tenant_id = key.tenant_id.clone().ok_or(AppError::NotFound("key"))?;
        self.manages(who, &tenant_id).map_err(|e| match e {
            AppError::NotFound(_) => AppError::NotFound("key"),
            other => other,
        })?;
        let key = self.inner.tenants.revoke_key(key_id)?;
        let mut record = RecordBody::new(Kind::KeyRevoked);
        record.actor = Some(who.subject.clone());
        record.detail = Some(key_detail(&key));
        self.inner
            .audit
            .append(&tenant_id, record, Effects::default())
            .await?;
        Ok(key)
    }

    // ---- policies -----------------------------------------------------------------------

    /// Uploads a policy component for the admin's tenant; activates it if asked.
    pub async fn upload_policy(
        &self,
        who: &Principal,
        name: &str,
        bytes: bytes::Bytes,
        activate: bool,
    ) -> Result<PolicyMeta> {
        let tenant_id = tenant_role(who, &[Role::Admin])?.to_owned();
        let policies = self.inner.policies.clone();
        let name = name.to_owned();
        let tenant = tenant_id.clone();
        let uploaded = tokio::task::spawn_blocking(move || policies.upload(&tenant, &name, &bytes))
            .await
            .map_err(|e| AppError::Internal(Box::new(e)))??;
        let meta = uploaded.meta.clone();
        if activate {
            self.activate(who, &tenant_id, uploaded).await?;
        }
        Ok(meta)
    }

    /// Makes one of the admin's tenant's policies active. Recorded in the chain.
    pub async fn activate_policy(&self, who: &Principal, policy_id: &str) -> Result<PolicyMeta> {
        let tenant_id = tenant_role(who, &[Role::Admin])?.to_owned();
        let policies = self.inner.policies.clone();
        let (tenant, id) = (tenant_id.clone(), policy_id.to_owned());
        let prepared = tokio::task::spawn_blocking(move || policies.prepare(&tenant, &id))
            .await
            .map_err(|e| AppError::Internal(Box::new(e)))??;
        self.activate(who, &tenant_id, prepared).await
    }

    /// Records the activation of a loaded policy, then makes it the tenant's active one.
    async fn activate(
        &self,
        who: &Principal,
        tenant_id: &str,
        prepared: Arc<ActivePolicy>,
    ) -> Result<PolicyMeta> {
        let _serial = self.inner.activation.lock().await;
        let previous = self.inner.policies.active(tenant_id);
        let mut record = RecordBody::new(Kind::PolicyActivated);
        record.actor = Some(who.subject.clone());
        record.policy_id = Some(prepared.meta.policy_id.clone());
        record.detail = Some(
            serde_json::json!({
                "name": prepared.meta.name,
                "previous_policy_id": previous.map(|p| p.meta.policy_id.clone()),
            })
            .to_string(),
        );
        self.inner
            .audit
            .append(tenant_id, record, Effects::default())
            .await?;
        let meta = prepared.meta.clone();
        self.inner.policies.activate(tenant_id, prepared)?;
        Ok(meta)
    }

    /// The tenant's policies and the active one's id.
    pub fn list_policies(&self, who: &Principal) -> Result<(Vec<PolicyMeta>, Option<String>)> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?;
        let list = self.inner.policies.list(tenant_id)?;
        let active = self
            .inner
            .policies
            .active(tenant_id)
            .map(|p| p.meta.policy_id.clone());
        Ok((list, active))
    }

    // ---- audit --------------------------------------------------------------------------

    /// The tenant's audit records after `after_seq`, optionally of one session.
    pub fn audit_records(
        &self,
        who: &Principal,
        session_id: Option<&str>,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?;
        Ok(match session_id {
            Some(session) => self
                .inner
                .audit
                .session_records(tenant_id, session, after_seq, limit)?,
            None => self.inner.audit.records(tenant_id, after_seq, limit)?,
        })
    }

    /// One audit record of the tenant by event id.
    pub fn audit_event(&self, who: &Principal, event_id: &str) -> Result<Record> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?;
        self.inner
            .audit
            .event(tenant_id, event_id)?
            .ok_or(AppError::NotFound("event"))
    }

    /// Verifies the tenant's whole chain, and against its latest signed checkpoint.
    pub async fn verify(&self, who: &Principal) -> Result<Verification> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?.to_owned();
        let store = self.inner.store.clone();
        let note = self.latest_checkpoint(&tenant_id)?;
        let public = self.inner.signer.public_key();
        tokio::task::spawn_blocking(move || {
            let cp = note
                .as_deref()
                .and_then(|n| checkpoint::verify(n, &public).ok());
            verify::verify_chain(&store, &tenant_id, cp.as_ref())
        })
        .await
        .map_err(|e| AppError::Internal(Box::new(e)))?
        .map_err(Into::into)
    }

    /// Streams the tenant's records after `after_seq` as JSON Lines, read lazily on a blocking
    /// thread: the receiver yields one line (with its newline) at a time.
    pub fn export(
        &self,
        who: &Principal,
        after_seq: Option<u64>,
    ) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?.to_owned();
        let store = self.inner.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let result = verify::export(&store, &tenant_id, after_seq, |line| {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line);
                buf.push(b'\n');
                tx.blocking_send(Ok(buf.into())).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        Ok(rx)
    }

    fn latest_checkpoint(&self, tenant_id: &str) -> Result<Option<String>> {
        Ok(self
            .inner
            .store
            .get_raw(crate::store::Table::Checkpoints, tenant_id.as_bytes())?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The tenant's latest signed checkpoint (a signed note).
    pub fn checkpoint_note(&self, who: &Principal) -> Result<String> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?;
        self.latest_checkpoint(tenant_id)?
            .ok_or(AppError::NotFound("checkpoint"))
    }

    /// The checkpoint verifying key: (note verifier key, base64 Ed25519 public key).
    pub fn checkpoint_public_key(&self) -> (String, String) {
        use base64::Engine as _;
        let public = self.inner.signer.public_key();
        (
            checkpoint::verifier_key(&public),
            base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
        )
    }

    /// A session's counts and events.
    pub fn session(&self, who: &Principal, session_id: &str) -> Result<SessionSummary> {
        let tenant_id = tenant_role(who, &[Role::Admin, Role::Reviewer])?;
        let events = self
            .inner
            .audit
            .session_records(tenant_id, session_id, None, 10_000)?;
        if events.is_empty() {
            return Err(AppError::NotFound("session"));
        }
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
        })
    }
}

fn key_detail(key: &KeyRecord) -> String {
    serde_json::json!({
        "key_id": key.key_id,
        "role": key.role.as_str(),
        "subject": key.subject,
        "agent_id": key.agent_id,
    })
    .to_string()
}
