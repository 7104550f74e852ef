//! Downstream jobs as a service: persist the job an allowed call becomes, run it in the
//! background, and record in the chain how it finished.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{Member, TenantScope};
use crate::audit::{Effects, Kind, RecordBody, SharedLedger};
use crate::catalog::ResolvedRequest;
use crate::error::{AppError, Result};
use crate::jobs::{Job, Jobs};
use crate::tenants::new_ordered_id;

/// Creates, runs and records downstream jobs. Cheap to clone.
#[derive(Clone)]
pub struct JobService {
    jobs: Jobs,
    audit: SharedLedger,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl JobService {
    /// The service over `jobs`, recording into `audit`; its runs are tracked by `tasks` and
    /// abandoned at `cancel` (a job cut off by shutdown is marked `interrupted` at the next
    /// start, never run twice).
    pub fn new(
        jobs: Jobs,
        audit: SharedLedger,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            jobs,
            audit,
            tasks,
            cancel,
        }
    }

    /// A job for an allowed call, not yet stored, and the event id its decision record must
    /// carry: the job's row is committed with that record ([`Job::row`]), so one flush makes
    /// both durable.
    pub fn prepare(&self, tenant_id: &str, request: ResolvedRequest, now_ms: u64) -> Job {
        let event_id = new_ordered_id("evt_", now_ms);
        self.jobs.new_job(tenant_id, request, &event_id)
    }

    /// A job an approval runs, not yet stored; see [`JobService::prepare`].
    pub fn new_job(&self, tenant_id: &str, request: ResolvedRequest, event_id: &str) -> Job {
        self.jobs.new_job(tenant_id, request, event_id)
    }

    /// The rows of a new job (the job and this process's lease on it), to commit with the
    /// record that creates it.
    pub fn rows(&self, job: &Job) -> [crate::store::Write; 2] {
        self.jobs.rows(job)
    }

    /// Renews this process's job leases and, on a store other processes share, marks failed
    /// `interrupted` (and records) the jobs whose process let their lease expire. Blocking.
    pub fn tend_leases(&self, shared: bool) {
        self.jobs.renew_leases();
        if !shared {
            return;
        }
        match self.jobs.sweep_expired() {
            Ok(interrupted) => self.record_interrupted(interrupted),
            Err(e) => tracing::warn!(error = %e, "sweeping expired job leases"),
        }
    }

    /// A stored job, started when the returned handle is started or dropped.
    pub fn start_later(&self, job: Job) -> JobStart {
        JobStart {
            service: self.clone(),
            job: Some(job),
        }
    }

    /// A job whose decision's write was applied but not made durable (the store failed to
    /// flush): it is marked failed `not_started`, so it is neither run nor left pending.
    pub fn not_started(&self, job: Job) {
        let id = job.id.clone();
        if let Err(e) = self.jobs.not_started(job) {
            tracing::error!(job = %id, error = %e, "could not mark a job not started");
        }
    }

    /// Whether the tenant has as many jobs waiting or running as it may.
    pub fn queue_full(&self, tenant_id: &str) -> bool {
        self.jobs.queue_full(tenant_id)
    }

    /// Runs a stored job in the background and records it when it finishes.
    pub fn run(&self, job: Job) {
        let service = self.clone();
        self.tasks.spawn(async move {
            let ran = tokio::select! {
                () = service.cancel.cancelled() => return,
                ran = service.jobs.run(job) => ran,
            };
            match ran {
                Ok(done) => service.record(&done).await,
                Err(e) => tracing::error!(error = %e, "job bookkeeping failed"),
            }
        });
    }

    /// Records jobs a restart interrupted (already marked failed `interrupted`).
    pub fn record_interrupted(&self, interrupted: Vec<Job>) {
        for job in interrupted {
            let service = self.clone();
            self.tasks.spawn(async move { service.record(&job).await });
        }
    }

    /// Records a finished job in the chain: status, duration and response size, never the
    /// body or the credential.
    async fn record(&self, job: &Job) {
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
            .audit
            .append(&job.tenant_id, record, Effects::default())
            .await
        {
            tracing::error!(error = %e, job = %job.id, "recording a finished job failed");
        }
    }

    /// A job of the caller's tenant.
    pub fn get(&self, scope: &TenantScope<Member>, id: &str) -> Result<Job> {
        self.jobs
            .get(scope.tenant_id(), id)?
            .ok_or(AppError::NotFound("job"))
    }
}

/// A stored job not yet started. It starts when [`JobStart::start`] is called or when it is
/// dropped, so a caller can first make something durable (an idempotent answer) and no path
/// leaves the job pending. Must be dropped inside the runtime.
#[must_use = "the job starts when this is dropped"]
pub struct JobStart {
    service: JobService,
    job: Option<Job>,
}

impl JobStart {
    /// Starts the job now.
    pub fn start(self) {}
}

impl Drop for JobStart {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            self.service.run(job);
        }
    }
}

impl std::fmt::Debug for JobStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStart")
            .field("job", &self.job.as_ref().map(|j| &j.id))
            .finish()
    }
}
