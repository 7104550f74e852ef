//! Downstream jobs: an allowed tool call with a catalog entry runs as a persisted job on a
//! bounded worker pool. The tenant's credential is opened from the vault and injected only when
//! the request is sent; connect and total timeouts, a response size cap, and redirects only to
//! the same host bound what a downstream can do to the gateway.
//!
//! A job interrupted by a restart is marked failed (`interrupted`), never re-run: a payment
//! must never be sent twice. A job runs on the process that made it, which holds its lease
//! (`Table::JobLeases`, renewed every [`LEASE_MS`] / 3 while it is in flight); on a store
//! several processes share, a lease left to expire (its process died) marks the job
//! `interrupted`, by whichever process sees it first (a guarded write: once).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::catalog::ResolvedRequest;
use crate::clock::SharedClock;
use crate::egress::{Egress, EgressError, Outbound};
use crate::shares::Lanes;
use crate::store::{Store, StoreError, Table, Write};
use crate::tenants::tenant_key;
use crate::vault::Vault;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Largest downstream response body kept, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How long a job's lease lasts unless its process renews it.
pub const LEASE_MS: u64 = 30_000;

/// Who runs a job not finished, and until when unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    node: String,
    until_ms: u64,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker.
    Pending,
    /// Being sent.
    Running,
    /// The downstream answered (any HTTP status).
    Completed,
    /// It could not be sent or read.
    Failed,
}

/// What the downstream answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: BTreeMap<String, String>,
    /// Response body (lossy UTF-8).
    pub body: String,
    /// Time from sending to the end of the body.
    pub duration_ms: u64,
}

impl Execution {
    /// Replaces every occurrence of `secret` in what is kept of the answer: a downstream that
    /// echoes the credential back does not hand it to the agent.
    fn redact(&mut self, secret: &str) {
        const REDACTED: &str = "[redacted]";
        if secret.is_empty() {
            return;
        }
        if self.body.contains(secret) {
            self.body = self.body.replace(secret, REDACTED);
        }
        for value in self.headers.values_mut() {
            if value.contains(secret) {
                *value = value.replace(secret, REDACTED);
            }
        }
    }
}

/// A downstream call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `job_…`.
    pub id: String,
    pub tenant_id: String,
    /// Where it stands.
    pub status: JobStatus,
    /// What to send (credential injected at send time).
    pub request: ResolvedRequest,
    /// The decision that allowed it.
    pub decision_event_id: String,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// The answer, once completed.
    pub execution: Option<Execution>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Job {
    fn key(&self) -> Vec<u8> {
        tenant_key(&self.tenant_id, &[self.id.as_bytes()])
    }

    /// Its store row.
    pub fn row(&self) -> Write {
        (
            Table::Jobs,
            self.key(),
            serde_json::to_vec(self).expect("jobs serialize"),
        )
    }
}

fn lease_bytes(node: &str, until_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&Lease {
        node: node.to_owned(),
        until_ms,
    })
    .expect("leases serialize")
}

/// The job table and worker pool. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    clock: SharedClock,
    vault: Vault,
    egress: Egress,
    workers: Arc<Semaphore>,
    /// Each tenant's share of the workers.
    lanes: Lanes,
    /// This process, in leases.
    node: String,
    /// The leases this process holds: job key → the lease as last written.
    leases: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
}

/// Jobs sent at once, all tenants together.
const WORKERS: usize = 8;
/// Jobs of one tenant sent at once: a tenant whose downstream is slow keeps the rest free.
const TENANT_RUNNING: usize = 4;
/// Jobs of one tenant waiting or running; beyond, its calls with a downstream are refused
/// (429) before evaluation.
const TENANT_QUEUED: usize = 256;

impl Jobs {
    /// Opens the job table, marking every job a restart interrupted as failed.
    pub fn load(
        store: Store,
        vault: Vault,
        egress: Egress,
        clock: SharedClock,
        degraded: &crate::degraded::Degraded,
    ) -> Result<(Self, Vec<Job>), StoreError> {
        let mut interrupted = Vec::new();
        let jobs = Self {
            clock,
            store: store.clone(),
            vault,
            egress,
            workers: Arc::new(Semaphore::new(WORKERS)),
            lanes: Lanes::new(TENANT_RUNNING, TENANT_QUEUED),
            node: store.node_id().to_owned(),
            leases: Arc::default(),
        };
        if store.is_shared() {
            // Other processes may be running theirs: only an expired lease interrupts a job.
            return Ok((jobs, interrupted));
        }
        let (rows, bad) = store.scan_each::<Job>(Table::Jobs, b"")?;
        for (key, e) in bad {
            degraded.mark(
                &crate::tenants::tenant_of_key(&key),
                crate::degraded::Part::Jobs,
                e,
            );
        }
        for (_, mut job) in rows {
            if matches!(job.status, JobStatus::Pending | JobStatus::Running) {
                job.status = JobStatus::Failed;
                job.error = Some("interrupted".into());
                store.commit_with_removes(&[job.row()], &[(Table::JobLeases, job.key())])?;
                interrupted.push(job);
            }
        }
        Ok((jobs, interrupted))
    }

    /// The rows of a new job, to commit with the record that creates it: the job, and the
    /// lease this process holds on it.
    pub fn rows(&self, job: &Job) -> [Write; 2] {
        let lease = lease_bytes(&self.node, self.clock.now_ms() + LEASE_MS);
        self.leases
            .lock()
            .expect("leases lock")
            .insert(job.key(), lease.clone());
        [job.row(), (Table::JobLeases, job.key(), lease)]
    }

    /// Renews the leases of this process's jobs in flight (guarded: a lease another process
    /// found expired and took is not renewed).
    pub fn renew_leases(&self) {
        let held: Vec<(Vec<u8>, Vec<u8>)> = self
            .leases
            .lock()
            .expect("leases lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, before) in held {
            let after = lease_bytes(&self.node, self.clock.now_ms() + LEASE_MS);
            let renewed = self.store.commit_guarded(
                &[(Table::JobLeases, key.clone(), after.clone())],
                &[],
                &[(Table::JobLeases, key.clone(), Some(before))],
            );
            let mut leases = self.leases.lock().expect("leases lock");
            match renewed {
                Ok(()) => {
                    if let Some(lease) = leases.get_mut(&key) {
                        *lease = after;
                    }
                }
                Err(StoreError::Conflict(_)) => {
                    leases.remove(&key);
                }
                Err(e) => tracing::warn!(error = %e, "renewing a job lease"),
            }
        }
    }

    /// Marks failed `interrupted` every job whose lease expired (its process died or lost the
    /// store), once across processes; returns them to record.
    pub fn sweep_expired(&self) -> Result<Vec<Job>, StoreError> {
        let now = self.clock.now_ms();
        let mut interrupted = Vec::new();
        for (key, bytes) in self.store.scan_raw(Table::JobLeases, b"")? {
            let expired = serde_json::from_slice::<Lease>(&bytes)
                .map_or(true, |l| l.until_ms < now && l.node != self.node);
            if !expired {
                continue;
            }
            let mut removes = vec![(Table::JobLeases, key.clone())];
            let mut writes = Vec::new();
            let job = self.store.get::<Job>(Table::Jobs, &key)?;
            let job = job.filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running));
            if let Some(mut job) = job.clone() {
                job.status = JobStatus::Failed;
                job.error = Some("interrupted".into());
                writes.push(job.row());
                interrupted.push(job);
            } else {
                removes.truncate(1);
            }
            match self.store.commit_guarded(
                &writes,
                &removes,
                &[(Table::JobLeases, key.clone(), Some(bytes))],
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => {
                    // Renewed, or swept by another process meanwhile.
                    if job.is_some() {
                        interrupted.pop();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(interrupted)
    }

    /// Marks a stored job that will never start failed (`not_started`): the write of the
    /// decision that allowed it was applied but could not be made durable.
    pub fn not_started(&self, mut job: Job) -> Result<(), StoreError> {
        job.status = JobStatus::Failed;
        job.error = Some("not_started".into());
        self.leases.lock().expect("leases lock").remove(&job.key());
        self.store
            .commit_with_removes(&[job.row()], &[(Table::JobLeases, job.key())])
    }

    /// Whether the tenant has as many jobs waiting or running as it may.
    pub fn queue_full(&self, tenant_id: &str) -> bool {
        self.lanes.full(tenant_id)
    }

    /// A job of a tenant.
    pub fn get(&self, tenant_id: &str, id: &str) -> Result<Option<Job>, StoreError> {
        self.store
            .get(Table::Jobs, &tenant_key(tenant_id, &[id.as_bytes()]))
    }

    /// A new pending job, not yet stored: its [`Job::row`] is committed with the record of the
    /// decision that allows it, so the two are durable together.
    pub fn new_job(
        &self,
        tenant_id: &str,
        request: ResolvedRequest,
        decision_event_id: &str,
    ) -> Job {
        Job {
            id: crate::tenants::new_ordered_id("job_", self.clock.now_ms()),
            tenant_id: tenant_id.to_owned(),
            status: JobStatus::Pending,
            request,
            decision_event_id: decision_event_id.to_owned(),
            created_ms: self.clock.now_ms(),
            execution: None,
            error: None,
        }
    }

    /// Runs a pending job once, on a worker slot; returns it finished (completed or failed).
    pub async fn run(&self, mut job: Job) -> Result<Job, StoreError> {
        let ticket = self.lanes.enter(&job.tenant_id);
        let _tenant_slot = ticket.slot().await;
        let _slot = self
            .workers
            .acquire()
            .await
            .expect("the pool is never closed");
        job.status = JobStatus::Running;
        self.store.put(Table::Jobs, &job.key(), &job)?;
        match self.send(&job).await {
            Ok(execution) => {
                job.status = JobStatus::Completed;
                job.execution = Some(execution);
            }
            Err(error) => {
                job.status = JobStatus::Failed;
                job.error = Some(error);
            }
        }
        self.leases.lock().expect("leases lock").remove(&job.key());
        self.store
            .commit_with_removes(&[job.row()], &[(Table::JobLeases, job.key())])?;
        Ok(job)
    }

    async fn send(&self, job: &Job) -> Result<Execution, String> {
        let r = &job.request;
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(&r.url).map_err(|e| format!("url: {e}"))?;
        let mut headers = HeaderMap::new();
        let header = |name: &str, value: &str| {
            Ok::<_, String>((
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("header {name}: {e}"))?,
                HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?,
            ))
        };
        for (name, value) in &r.headers {
            let (name, value) = header(name, value)?;
            headers.insert(name, value);
        }
        if r.body.is_some() {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let mut secret = None;
        if let Some(c) = &r.credential {
            // Bound to origins when stored; checked here again, as the catalog may have
            // changed since the call was resolved.
            let origin = url.origin().ascii_serialization();
            let origins = self
                .vault
                .origins(&job.tenant_id, &c.name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "credential_not_found".to_owned())?;
            if !origins.contains(&origin) {
                return Err(format!(
                    "credential_origin_mismatch: credential `{}` may not be sent to {origin}",
                    c.name
                ));
            }
            let opened = self
                .vault
                .open(&job.tenant_id, &c.name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "credential_not_found".to_owned())?;
            let value = zeroize::Zeroizing::new(c.format.replace("{secret}", &opened));
            let (name, mut value) = header(&c.header, &value)?;
            value.set_sensitive(true);
            headers.insert(name, value);
            secret = Some(opened);
        }
        let request = Outbound {
            method,
            url,
            headers,
            body: r.body.as_ref().map(|b| b.clone().into_bytes()),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            redirects: crate::egress::MAX_REDIRECTS,
        };
        let started = Instant::now();
        let mut response = self.egress.send(request).await.map_err(|e| match e {
            EgressError::Denied(_) => e.to_string(),
            other => format!("downstream: {other}"),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("downstream: {e}"))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("response_too_large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let mut execution = Execution {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        if let Some(secret) = secret {
            execution.redact(&secret);
        }
        Ok(execution)
    }
}
