//! The composition root: opens every part of the gateway over one store and wires the services
//! together, and owns their background tasks. Each operation lives in its service
//! ([`crate::service`]); this file only builds and hands them out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use writ_runtime::engine::{Engine, EngineConfig};

use crate::audit::{AuditLog, SharedLedger};
use crate::catalog::Catalog;
use crate::checkpoint::CheckpointSigner;
use crate::clock::{self, SharedClock};
use crate::degraded::{Degraded, Part};
use crate::egress::{Egress, EgressPolicy};
use crate::escalations::Escalations;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policies::Policies;
use crate::policy_log::PolicyLog;
use crate::service::mcp::McpService;
use crate::service::{
    AuditService, CatalogService, CheckpointService, EscalationService, ExecuteService, JobService,
    PolicyService, TenantService,
};
use crate::shares::Shares;
use crate::store::{Change, Store, StoreError, Table};
use crate::tenants::Tenants;
use crate::vault::Vault;

pub use crate::error::{AppError, Result};
pub use crate::escalations::{Escalation, Status as EscalationStatus};
pub use crate::service::audit::SessionSummary;
pub use crate::service::execute::{ExecuteOutcome, ExecuteRequest};
pub use crate::tenants::{KeyRecord, Principal, Role, TenantLimits};

/// How often the client of a held MCP call hears that it is still held.
const MCP_PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Gateway settings.
#[derive(Clone)]
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
    /// Where the gateway takes its time from.
    pub clock: SharedClock,
    /// What outbound connections may reach.
    pub egress: EgressPolicy,
    /// CAs trusted for outbound HTTPS besides the web PKI roots.
    pub egress_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The limits a new tenant starts with (the operator changes them per tenant after).
    pub tenant_defaults: crate::tenants::TenantLimits,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("engine", &self.engine)
            .field(
                "max_concurrent_evaluations",
                &self.max_concurrent_evaluations,
            )
            .field("usage_retries", &self.usage_retries)
            .field("checkpoint_every_records", &self.checkpoint_every_records)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("egress", &self.egress)
            .field("egress_roots", &self.egress_roots.len())
            .finish_non_exhaustive()
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            max_concurrent_evaluations: 16,
            usage_retries: 3,
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(60),
            clock: clock::system(),
            egress: EgressPolicy::default(),
            egress_roots: Vec::new(),
            tenant_defaults: crate::tenants::TenantLimits::default(),
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

/// The gateway: every service, shared by all requests. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct App {
    inner: Arc<Services>,
}

struct Services {
    execute: ExecuteService,
    escalations: EscalationService,
    jobs: JobService,
    tenants: TenantService,
    policies: PolicyService,
    catalog: CatalogService,
    audit: AuditService,
    checkpoints: CheckpointService,
    metrics: Arc<Metrics>,
    degraded: Degraded,
    store: Store,
    clock: SharedClock,
    mcp: McpService,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Cancelled when the server begins to stop, before in-flight requests are waited for.
    stopping: CancellationToken,
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stopping.cancel();
        self.cancel.cancel();
    }
}

/// Signs checkpoints as chains grow, until the app is shut down or dropped. It holds the app
/// only while it works, so dropping the last [`App`] releases the store.
fn spawn_checkpoint_signer(inner: &Arc<Services>) {
    let (weak, cancel, tick) = (
        Arc::downgrade(inner),
        inner.cancel.clone(),
        inner.checkpoints.tick(),
    );
    inner.tasks.spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
            }
            let Some(inner) = weak.upgrade() else { break };
            if let Err(e) = inner.checkpoints.sign_due(false).await {
                tracing::error!(error = %e, "checkpointing failed");
            }
        }
    });
}

/// Follows the changes other processes sharing the store make to the rows this one keeps in
/// memory (tenants, keys, active policies, escalations, catalog), applying each as it commits
/// there; after a gap in the feed, reads them all again.
fn spawn_change_follower(
    inner: &Arc<Services>,
    changes: Option<tokio::sync::broadcast::Receiver<Change>>,
) {
    let Some(mut changes) = changes else {
        return;
    };
    let (weak, cancel) = (Arc::downgrade(inner), inner.cancel.clone());
    inner.tasks.spawn(async move {
        loop {
            let change = tokio::select! {
                () = cancel.cancelled() => break,
                change = changes.recv() => change,
            };
            let change = match change {
                Ok(change) => change,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let Some(services) = weak.upgrade() else {
                break;
            };
            // Applying reads the store and may compile a policy: off the async workers. An
            // activation compiles on its own, so that changes after it (a revocation) are not
            // held up behind the compile.
            let activation = matches!(change, Change::Row(Table::Active, _));
            let applying = tokio::task::spawn_blocking(move || services.apply(&change));
            if !activation && let Err(e) = applying.await {
                tracing::error!(error = %e, "applying another process's change");
            }
        }
    });
}

impl Services {
    /// Applies one change another process made (see [`spawn_change_follower`]).
    fn apply(&self, change: &Change) {
        let applied = match change {
            Change::Row(table, key) => self.apply_row(*table, key),
            Change::Resync => self.resync(),
        };
        if let Err(e) = applied {
            tracing::error!(?change, error = %e, "could not apply another process's change");
        }
    }

    fn apply_row(&self, table: Table, key: &[u8]) -> std::result::Result<(), String> {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        let tenant = || String::from_utf8_lossy(key).into_owned();
        match table {
            Table::Tenants | Table::WebhookSecrets => {
                self.tenants.refresh_tenant(&tenant()).map_err(|e| text(&e))
            }
            Table::Keys => self
                .tenants
                .tenants()
                .refresh_key(key)
                .map_err(|e| text(&e)),
            Table::Active => self
                .policies
                .policies
                .refresh_active(&tenant())
                .map_err(|e| text(&e)),
            Table::Escalations => self.escalations.registry.refresh(key).map_err(|e| text(&e)),
            Table::Catalog => self.catalog.catalog.refresh(key).map_err(|e| text(&e)),
            Table::McpServers => self.catalog.mcp_servers.refresh(key).map_err(|e| text(&e)),
            _ => Ok(()),
        }
    }

    /// Reads every cached row again.
    fn resync(&self) -> std::result::Result<(), String> {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        self.tenants.tenants().refresh_all().map_err(|e| text(&e))?;
        for tenant in self.tenants.tenants().all() {
            self.tenants
                .refresh_tenant(&tenant.id)
                .map_err(|e| text(&e))?;
            self.policies
                .policies
                .refresh_active(&tenant.id)
                .map_err(|e| text(&e))?;
        }
        for table in [Table::Escalations, Table::Catalog, Table::McpServers] {
            for key in self.store.scan_keys(table, b"").map_err(|e| text(&e))? {
                self.apply_row(table, &key)?;
            }
        }
        Ok(())
    }
}

/// Tends the job leases every third of their length: renews this process's, and on a shared
/// store interrupts the jobs of processes that died.
fn spawn_lease_keeper(inner: &Arc<Services>) {
    let (weak, cancel) = (Arc::downgrade(inner), inner.cancel.clone());
    let shared = inner.store.is_shared();
    let every = Duration::from_millis(crate::jobs::LEASE_MS / 3);
    let jumped = inner.clock.jumped().unwrap_or_default();
    inner.tasks.spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(every) => {}
                () = jumped.notified() => {}
            }
            let Some(inner) = weak.upgrade() else { break };
            let jobs = inner.jobs.clone();
            drop(inner);
            let _ = tokio::task::spawn_blocking(move || jobs.tend_leases(shared)).await;
        }
    });
}

/// Expires pending escalations at their deadlines, until the app is shut down or dropped: it
/// sleeps until the earliest deadline, woken early when an escalation opens with an earlier
/// one, and holds the app only while it works.
fn spawn_expiry_sweeper(inner: &Arc<Services>) {
    let (weak, cancel) = (Arc::downgrade(inner), inner.cancel.clone());
    let earlier_deadline = inner.escalations.registry.earlier_deadline();
    let jumped = inner.clock.jumped().unwrap_or_default();
    inner.tasks.spawn(async move {
        loop {
            let pause = match weak.upgrade() {
                Some(inner) => inner.escalations.sweep().await,
                None => break,
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = earlier_deadline.notified() => {}
                () = jumped.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    });
}

impl App {
    /// Opens every part over `store`, starts the audit writer and the background tasks. Must
    /// run inside a tokio runtime.
    pub fn open(
        store: Store,
        config: AppConfig,
        signer: CheckpointSigner,
        master_key: &[u8; 32],
    ) -> anyhow::Result<Self> {
        let clock = config.clock.clone();
        // Subscribed before anything is loaded: a change another process commits while this
        // one loads is applied after, not lost.
        let changes = store.changes();
        let engine = Engine::new(&config.engine)
            .map_err(|e| anyhow::anyhow!("starting the engine: {e:#}"))?;
        let degraded = Degraded::default();
        let tenants = Tenants::load(
            store.clone(),
            clock.clone(),
            config.tenant_defaults,
            &degraded,
        )?;
        let policies = Policies::load(engine.clone(), store.clone(), clock.clone(), &degraded)?;
        let metrics = Arc::new(Metrics::default());
        let audit: SharedLedger = Arc::new(AuditLog::start_observed(
            store.clone(),
            metrics.audit_writer.clone(),
            clock.clone(),
        ));
        for tenant in tenants.all() {
            if let Err(e) = audit.load_head(&tenant.id) {
                degraded.mark(&tenant.id, Part::Chain, e);
            }
        }
        let vault = Vault::new(store.clone(), master_key);
        let catalog = Catalog::load(
            store.clone(),
            tenants.all().iter().map(|t| t.id.as_str()),
            &degraded,
        )?;
        let mcp_servers = crate::mcp_servers::McpServers::load(&store, &degraded)?;
        let mcp_sessions = crate::mcp_sessions::McpSessions::new(clock.clone());
        let egress = Egress::new(config.egress.clone(), &config.egress_roots)
            .map_err(|e| anyhow::anyhow!("the egress CA bundle: {e}"))?;
        let (jobs, interrupted) = Jobs::load(
            store.clone(),
            vault.clone(),
            egress.clone(),
            clock.clone(),
            &degraded,
        )?;
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let stopping = CancellationToken::new();

        let jobs = JobService::new(jobs, audit.clone(), tasks.clone(), cancel.clone());
        let escalations = EscalationService {
            registry: Escalations::load(store.clone(), &degraded)?,
            audit: audit.clone(),
            tenants: tenants.clone(),
            jobs: jobs.clone(),
            notifier: Notifier::start(&tasks, cancel.clone(), egress.clone(), clock.clone()),
            metrics: metrics.clone(),
            clock: clock.clone(),
        };
        let checkpoints = CheckpointService::load(
            audit.clone(),
            store.clone(),
            signer,
            clock.clone(),
            tenants.all().into_iter().map(|t| t.id),
            config.checkpoint_every_records,
            config.checkpoint_every,
        )?;
        let execute = ExecuteService {
            engine,
            store: store.clone(),
            tenants: tenants.clone(),
            policies: policies.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            escalations: escalations.clone(),
            jobs: jobs.clone(),
            clock: clock.clone(),
            evaluations: Arc::new(Semaphore::new(config.max_concurrent_evaluations)),
            usage_retries: config.usage_retries,
            degraded: degraded.clone(),
            shares: Shares::new(clock.clone()),
            policy_log: Arc::new(PolicyLog::default()),
            completions: Arc::default(),
            mcp_servers: mcp_servers.clone(),
        };
        let services = Services {
            tenants: TenantService {
                tenants,
                audit: audit.clone(),
                max_memory_mib: (config.engine.max_memory_bytes >> 20) as u32,
                egress: egress.clone(),
                config: Arc::default(),
                vault: vault.clone(),
                store: store.clone(),
            },
            policies: PolicyService {
                policies,
                audit: audit.clone(),
                activation: Arc::default(),
                degraded: degraded.clone(),
            },
            mcp: McpService {
                execute: execute.clone(),
                escalations: escalations.clone(),
                servers: mcp_servers.clone(),
                sessions: mcp_sessions.clone(),
                vault: vault.clone(),
                egress: egress.clone(),
                stopping: stopping.clone(),
                progress_every: MCP_PROGRESS_EVERY,
            },
            catalog: CatalogService {
                catalog,
                mcp_servers,
                mcp_sessions,
                vault,
                egress: egress.clone(),
                audit: audit.clone(),
            },
            audit: AuditService {
                audit,
                store: store.clone(),
                checkpoints: checkpoints.clone(),
                chain_reads: Default::default(),
            },
            execute,
            escalations,
            jobs,
            checkpoints,
            metrics,
            degraded,
            store,
            clock,
            tasks,
            cancel,
            stopping,
        };
        services.tenants.load_webhook_secrets(&services.degraded);
        services.jobs.record_interrupted(interrupted);
        let inner = Arc::new(services);
        spawn_checkpoint_signer(&inner);
        spawn_expiry_sweeper(&inner);
        spawn_change_follower(&inner, changes);
        spawn_lease_keeper(&inner);
        Ok(Self { inner })
    }

    /// The MCP gateway's Streamable HTTP side.
    pub fn mcp(&self) -> &McpService {
        &self.inner.mcp
    }

    /// Cancelled when the server begins to stop: long-lived answers (event streams, held MCP
    /// calls) end on it, so that stopping does not wait for them.
    pub fn stopping(&self) -> &CancellationToken {
        &self.inner.stopping
    }

    /// The decision pipeline.
    pub fn execute(&self) -> &ExecuteService {
        &self.inner.execute
    }

    /// Held calls.
    pub fn escalations(&self) -> &EscalationService {
        &self.inner.escalations
    }

    /// Downstream jobs.
    pub fn jobs(&self) -> &JobService {
        &self.inner.jobs
    }

    /// Tenants, keys and webhooks.
    pub fn tenants(&self) -> &TenantService {
        &self.inner.tenants
    }

    /// Policies.
    pub fn policies(&self) -> &PolicyService {
        &self.inner.policies
    }

    /// The tool catalog and credentials.
    pub fn catalog(&self) -> &CatalogService {
        &self.inner.catalog
    }

    /// Audit queries, verification and export.
    pub fn audit(&self) -> &AuditService {
        &self.inner.audit
    }

    /// Signed checkpoints.
    pub fn checkpoints(&self) -> &CheckpointService {
        &self.inner.checkpoints
    }

    /// Tenants that could not be loaded whole at start.
    pub fn degraded(&self) -> &Degraded {
        &self.inner.degraded
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Flushes the store: every write so far becomes durable. Blocking.
    pub fn flush(&self) -> std::result::Result<(), StoreError> {
        self.inner.store.flush()
    }

    /// Whether the gateway can serve: the store answers a read.
    pub fn ready(&self) -> bool {
        self.unready().is_none()
    }

    /// Why the gateway cannot serve now, if it cannot.
    pub fn unready(&self) -> Option<String> {
        if let Err(e) = self.inner.store.get_raw(crate::store::Table::Tenants, b"") {
            return Some(format!("the store does not answer: {e}"));
        }
        self.inner.audit.audit.unhealthy()
    }

    /// Stops the background tasks (sweeper, checkpoint signer, running jobs' bookkeeping) and
    /// waits for them, then signs a last checkpoint of every grown chain and flushes.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.checkpoints.sign_due(true).await
    }
}
