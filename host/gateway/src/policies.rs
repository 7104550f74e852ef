//! Tenants' policies: upload (validate, compile, store), the list, and the active policy.
//!
//! A policy's id is the blake3 hash of its component bytes. The component and its compiled
//! artifact are files, stored once per id in `<data-dir>/policies/` (`<id>.wasm`,
//! `<id>.cwasm`): an artifact is mapped rather than read, so only the code a policy runs
//! becomes resident, and none of it sits in the store's cache. Each tenant has its own list of
//! uploaded policies (metadata, in the store) and at most one active one. Activation swaps an
//! `Arc` under a lock: calls already evaluating keep the `Arc` they took and finish on the old
//! version.
//!
//! Uploads are bounded: a tenant keeps at most its quota of policies ([`PolicyQuota`]), a
//! component is compiled within the engine's time and memory budget
//! ([`Engine::compile_bounded`]), and the gateway runs a few compilations at once
//! ([`CompileSlots`]). A policy stays stored until its tenant deletes it; its files are removed
//! when no tenant's list references its id any more.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::SharedClock;
use crate::degraded::{Degraded, Part};
use crate::store::{Store, StoreError, Table};
use crate::tenants::{Tenant, TenantLimits, tenant_key, tenant_prefix};
use writ_runtime::engine::{CompileLimits, CompiledPolicy, Engine, LoadError};

/// Errors of policy management.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The component was refused.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No such policy for this tenant.
    #[error("policy not found")]
    NotFound,
    /// The policy name is unusable.
    #[error("policy name must be 1 to 128 characters of letters, digits, `-`, `_` or `.`")]
    InvalidName,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A policy file could not be written or read, or does not hash to its id.
    #[error("policy file {path}: {message}")]
    File {
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Result of a policy operation.
pub type Result<T> = std::result::Result<T, PolicyError>;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The component, its name or the store.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The tenant already keeps as many policies as its quota allows.
    #[error(
        "the tenant keeps {max} policies, its quota (max_policies); delete one to upload another"
    )]
    TooMany {
        /// The quota.
        max: usize,
    },
    /// The tenant's stored components would take more bytes than its quota allows.
    #[error(
        "the tenant's policies would take {total} bytes, over its quota of {max} bytes (max_policy_bytes); delete one to upload another"
    )]
    TooManyBytes {
        /// Bytes with this upload.
        total: u64,
        /// The quota.
        max: u64,
    },
}

/// How much a tenant may keep stored: from its [`TenantLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyQuota {
    /// Policies in its list.
    pub max_policies: usize,
    /// Bytes of their components.
    pub max_bytes: u64,
}

impl From<&TenantLimits> for PolicyQuota {
    fn from(limits: &TenantLimits) -> Self {
        Self {
            max_policies: limits.max_policies,
            max_bytes: limits.max_policy_bytes,
        }
    }
}

/// The gateway's compilation slots: at most [`CompileLimits::max_concurrent`] compilations at
/// once; an upload that finds none free waits, up to [`CompileLimits::max_wait`] and with at
/// most [`CompileLimits::max_waiting`] others, else it is refused. Cheap to clone.
#[derive(Clone)]
pub struct CompileSlots {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    max_wait: Duration,
}

/// No compilation slot came free in time, or too many uploads wait for one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompilerBusy(pub String);

impl CompileSlots {
    fn new(limits: &CompileLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            waiting: Arc::default(),
            max_waiting: limits.max_waiting,
            max_wait: limits.max_wait,
        }
    }

    /// A slot, held until the permit is dropped: by the thread that compiles, so a compilation
    /// whose upload was answered or abandoned still counts until it ends.
    pub async fn acquire(&self) -> std::result::Result<OwnedSemaphorePermit, CompilerBusy> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            return Err(CompilerBusy(format!(
                "the gateway is compiling other policies and {} uploads wait already; try again later",
                self.max_waiting
            )));
        }
        match tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(CompilerBusy(format!(
                "no compilation slot came free within {} s; try again later",
                self.max_wait.as_secs()
            ))),
        }
    }
}

/// A tenant's uploaded policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMeta {
    /// blake3 hex of the component.
    pub policy_id: String,
    /// The name given at upload.
    pub name: String,
    /// Component size in bytes.
    pub size: usize,
    /// Upload time, ms since the epoch.
    pub uploaded_ms: u64,
}

/// The policy a tenant's calls are evaluated with.
#[derive(Debug)]
pub struct ActivePolicy {
    pub meta: PolicyMeta,
    /// The loaded component.
    pub compiled: CompiledPolicy,
}

/// Policy storage and the active-policy table. Cheap to clone.
#[derive(Clone)]
pub struct Policies {
    engine: Engine,
    store: Store,
    clock: SharedClock,
    dir: PathBuf,
    active: Arc<RwLock<HashMap<String, Arc<ActivePolicy>>>>,
    /// Held while a policy's files are written with the row that references them (and the
    /// tenant's quota checked), and while files no tenant references are removed, so neither
    /// sees the other half done.
    files: Arc<Mutex<()>>,
    compile_slots: CompileSlots,
}

fn valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Policies {
    /// Loads every tenant's active policy, from its compiled artifact when the engine accepts
    /// it, else by compiling the stored component.
    /// A tenant whose active policy does not load is marked in `degraded` and left without
    /// one; the others load.
    pub fn load(
        engine: Engine,
        store: Store,
        clock: SharedClock,
        degraded: &Degraded,
    ) -> Result<Self> {
        let dir = store.dir().join("policies");
        std::fs::create_dir_all(&dir).map_err(|e| file_error(&dir, e))?;
        let policies = Self {
            compile_slots: CompileSlots::new(engine.compile_limits()),
            engine,
            store,
            clock,
            dir,
            active: Arc::default(),
            files: Arc::default(),
        };
        let actives: Vec<(Vec<u8>, String)> = policies.store.scan(Table::Active, b"")?;
        for (tenant, policy_id) in actives {
            let tenant = String::from_utf8_lossy(&tenant).into_owned();
            // One at a time, so a policy active for several tenants is loaded once.
            let loaded = policies.meta(&tenant, &policy_id).and_then(|meta| {
                let compiled = policies.stored(&meta.policy_id, meta.size)?;
                Ok((meta, compiled))
            });
            let (meta, compiled) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    degraded.mark(
                        &tenant,
                        Part::Policy,
                        format!("active policy {policy_id}: {e}"),
                    );
                    continue;
                }
            };
            policies
                .active
                .write()
                .expect("active lock")
                .insert(tenant, Arc::new(ActivePolicy { meta, compiled }));
        }
        Ok(policies)
    }

    /// Checks an upload before any compiling: its name, and the tenant's quota with it. Returns
    /// the component's id and whether it must be compiled (then take a [`CompileSlots`] slot
    /// first). Hashes the component: call from a blocking thread.
    pub fn admit(
        &self,
        tenant_id: &str,
        name: &str,
        bytes: &[u8],
        quota: PolicyQuota,
    ) -> std::result::Result<(String, bool), UploadError> {
        if !valid_policy_name(name) {
            return Err(PolicyError::InvalidName.into());
        }
        let policy_id = Engine::policy_id(bytes);
        self.check_quota(tenant_id, &policy_id, bytes.len(), quota)?;
        let compile = self.needs_compile(&policy_id);
        Ok((policy_id, compile))
    }

    /// Validates, compiles (within the engine's budget) and stores a component for `tenant_id`
    /// within its quota, and returns it loaded, ready to activate. Nothing is written for a
    /// refused upload. A component already loaded (the same bytes, active for some tenant) or
    /// compiled (its artifact stored) is not compiled again; uploading again a component the
    /// tenant has renames it. CPU-bound (compilation): call from a blocking thread, holding a
    /// [`CompileSlots`] slot when [`Policies::admit`] said it compiles.
    pub fn upload(
        &self,
        tenant_id: &str,
        name: &str,
        bytes: &[u8],
        quota: PolicyQuota,
    ) -> std::result::Result<Arc<ActivePolicy>, UploadError> {
        let (policy_id, _) = self.admit(tenant_id, name, bytes, quota)?;
        let (compiled, artifact) = self.load_or_compile(&policy_id, bytes.len(), Some(bytes))?;
        let meta = PolicyMeta {
            policy_id,
            name: name.to_owned(),
            size: bytes.len(),
            uploaded_ms: self.clock.now_ms(),
        };
        let files = self.files.lock().expect("files lock");
        // Again, now that no other upload can pass between the check and the write.
        self.check_quota(tenant_id, &meta.policy_id, meta.size, quota)?;
        let compiled = self.write_files(&meta.policy_id, Some(bytes), compiled, artifact)?;
        self.store
            .put(
                Table::Policies,
                &Self::meta_key(tenant_id, &meta.policy_id),
                &meta,
            )
            .map_err(PolicyError::from)?;
        drop(files);
        Ok(Arc::new(ActivePolicy { meta, compiled }))
    }

    /// Refuses a component the tenant could not keep within `quota` (one it has already is
    /// not counted twice).
    fn check_quota(
        &self,
        tenant_id: &str,
        policy_id: &str,
        size: usize,
        quota: PolicyQuota,
    ) -> std::result::Result<(), UploadError> {
        let others: Vec<PolicyMeta> = self
            .list(tenant_id)?
            .into_iter()
            .filter(|m| m.policy_id != policy_id)
            .collect();
        if others.len() >= quota.max_policies {
            return Err(UploadError::TooMany {
                max: quota.max_policies,
            });
        }
        let total = others.iter().map(|m| m.size as u64).sum::<u64>() + size as u64;
        if total > quota.max_bytes {
            return Err(UploadError::TooManyBytes {
                total,
                max: quota.max_bytes,
            });
        }
        Ok(())
    }

    /// The tenant's quota, from its limits as stored (the defaults for a tenant without a row).
    pub fn quota(&self, tenant_id: &str) -> Result<PolicyQuota> {
        let tenant: Option<Tenant> = self.store.get(Table::Tenants, tenant_id.as_bytes())?;
        Ok(PolicyQuota::from(
            &tenant.map(|t| t.limits).unwrap_or_default(),
        ))
    }

    /// Whether loading `policy_id` would compile it: neither loaded nor compiled before.
    pub fn needs_compile(&self, policy_id: &str) -> bool {
        self.loaded(policy_id).is_none() && !self.artifact_path(policy_id).exists()
    }

    /// The gateway's compilation slots.
    pub fn compile_slots(&self) -> &CompileSlots {
        &self.compile_slots
    }

    /// The key of a tenant's policy row, e.g. to remove it with the record of its deletion.
    pub fn meta_key(tenant_id: &str, policy_id: &str) -> Vec<u8> {
        tenant_key(tenant_id, &[policy_id.as_bytes()])
    }

    /// The id of the tenant's active policy as stored (also when it did not load).
    pub fn active_id(&self, tenant_id: &str) -> Result<Option<String>> {
        Ok(self.store.get(Table::Active, tenant_id.as_bytes())?)
    }

    /// Removes the files of `policy_id` when no tenant's list or active policy references it
    /// any more; returns whether it did. Call after its row was removed, from a blocking thread.
    pub fn remove_unreferenced_files(&self, policy_id: &str) -> Result<bool> {
        let _files = self.files.lock().expect("files lock");
        let listed = self
            .store
            .scan::<PolicyMeta>(Table::Policies, b"")?
            .into_iter()
            .any(|(_, m)| m.policy_id == policy_id);
        let active = self
            .store
            .scan::<String>(Table::Active, b"")?
            .into_iter()
            .any(|(_, id)| id == policy_id);
        if listed || active || self.loaded(policy_id).is_some() {
            return Ok(false);
        }
        if self.store.is_shared() {
            self.store.remove(Table::Components, policy_id.as_bytes())?;
        }
        for path in [
            self.component_path(policy_id),
            self.artifact_path(policy_id),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(file_error(&path, e)),
            }
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| file_error(&self.dir, e))?;
        Ok(true)
    }

    /// The loaded component with this id, if some tenant has it active: tenants running the
    /// same bytes share one compiled policy.
    fn loaded(&self, policy_id: &str) -> Option<CompiledPolicy> {
        self.active
            .read()
            .expect("active lock")
            .values()
            .find(|p| p.meta.policy_id == policy_id)
            .map(|p| p.compiled.clone())
    }

    /// A tenant's policy metadata.
    pub fn meta(&self, tenant_id: &str, policy_id: &str) -> Result<PolicyMeta> {
        self.store
            .get(Table::Policies, &Self::meta_key(tenant_id, policy_id))?
            .ok_or(PolicyError::NotFound)
    }

    /// The stored policy `policy_id`, loaded (see [`Policies::load_or_compile`], from its
    /// component file), its artifact written if it was compiled.
    fn stored(&self, policy_id: &str, size: usize) -> Result<CompiledPolicy> {
        let (compiled, artifact) = self.load_or_compile(policy_id, size, None)?;
        if artifact.is_none() {
            return Ok(compiled);
        }
        let _files = self.files.lock().expect("files lock");
        self.write_files(policy_id, None, compiled, artifact)
    }

    /// The policy `policy_id`, loaded: shared with a tenant that has it active, else mapped from
    /// its artifact file, else compiled within the engine's budget (from `bytes`, or its
    /// component file), with the artifact to store. Writes nothing; validation happens in the
    /// compile.
    fn load_or_compile(
        &self,
        policy_id: &str,
        size: usize,
        bytes: Option<&[u8]>,
    ) -> Result<(CompiledPolicy, Option<Vec<u8>>)> {
        if let Some(compiled) = self.loaded(policy_id) {
            return Ok((compiled, None));
        }
        let artifact = self.artifact_path(policy_id);
        if artifact.exists() {
            match self
                .engine
                .load_precompiled_file(policy_id, size, &artifact)
            {
                Ok(compiled) => return Ok((compiled, None)),
                Err(e) => tracing::info!(policy = %policy_id, error = %e, "recompiling"),
            }
        }
        let component = self.component_path(policy_id);
        let read;
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => {
                read = match std::fs::read(&component) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound && self.store.is_shared() =>
                    {
                        // Uploaded through another process: the database holds the bytes.
                        self.store
                            .get_raw(Table::Components, policy_id.as_bytes())?
                            .ok_or_else(|| file_error(&component, e))?
                    }
                    read => read.map_err(|e| file_error(&component, e))?,
                };
                if Engine::policy_id(&read) != policy_id {
                    return Err(file_error(
                        &component,
                        "the component does not hash to its id",
                    ));
                }
                &read
            }
        };
        let (compiled, artifact) = self.engine.compile_bounded(bytes)?;
        Ok((compiled, Some(artifact)))
    }

    /// Writes the files of `policy_id`: the component (from `bytes`) if missing, and the
    /// artifact: a fresh one (`artifact`, compiled now) replaces any other, else `compiled`
    /// serialized if missing. Returns the policy to run: mapped from the artifact file when that
    /// was written. Call holding `files`.
    fn write_files(
        &self,
        policy_id: &str,
        bytes: Option<&[u8]>,
        compiled: CompiledPolicy,
        artifact: Option<Vec<u8>>,
    ) -> Result<CompiledPolicy> {
        let component = self.component_path(policy_id);
        if let Some(bytes) = bytes
            && !component.exists()
        {
            if self.store.is_shared() {
                self.store
                    .put_raw(Table::Components, policy_id.as_bytes(), bytes)?;
            }
            write_file(&component, bytes)?;
        }
        let path = self.artifact_path(policy_id);
        let serialized = match artifact {
            Some(fresh) => fresh,
            None if path.exists() => return Ok(compiled),
            None => match compiled.serialize() {
                Ok(serialized) => serialized,
                Err(e) => {
                    tracing::warn!(error = %e, "could not serialize a compiled policy");
                    return Ok(compiled);
                }
            },
        };
        write_file(&path, &serialized)?;
        // Run from the mapped file rather than the compiled copy in anonymous memory.
        Ok(self
            .engine
            .load_precompiled_file(policy_id, compiled.size(), &path)
            .unwrap_or(compiled))
    }

    fn component_path(&self, policy_id: &str) -> PathBuf {
        self.dir.join(format!("{policy_id}.wasm"))
    }

    fn artifact_path(&self, policy_id: &str) -> PathBuf {
        self.dir.join(format!("{policy_id}.cwasm"))
    }

    /// Loads `policy_id` of `tenant_id`, ready to [`Policies::activate`]. May compile: call from
    /// a blocking thread.
    pub fn prepare(&self, tenant_id: &str, policy_id: &str) -> Result<Arc<ActivePolicy>> {
        let meta = self.meta(tenant_id, policy_id)?;
        let compiled = self.stored(&meta.policy_id, meta.size)?;
        Ok(Arc::new(ActivePolicy { meta, compiled }))
    }

    /// Makes `policy` the tenant's active policy, atomically.
    pub fn activate(&self, tenant_id: &str, policy: Arc<ActivePolicy>) -> Result<()> {
        let mut active = self.active.write().expect("active lock");
        self.store
            .put(Table::Active, tenant_id.as_bytes(), &policy.meta.policy_id)?;
        active.insert(tenant_id.to_owned(), policy);
        Ok(())
    }

    /// Makes the tenant's active policy the one its row names, after another process sharing
    /// the store activated it (loading or compiling it here). Blocking: may compile.
    pub fn refresh_active(&self, tenant_id: &str) -> Result<()> {
        let Some(policy_id) = self.active_id(tenant_id)? else {
            self.active.write().expect("active lock").remove(tenant_id);
            return Ok(());
        };
        if self
            .active(tenant_id)
            .is_some_and(|p| p.meta.policy_id == policy_id)
        {
            return Ok(());
        }
        let policy = self.prepare(tenant_id, &policy_id)?;
        // Another activation may have landed while this one compiled: the row decides.
        let mut active = self.active.write().expect("active lock");
        if self.active_id(tenant_id)?.as_deref() == Some(policy_id.as_str()) {
            active.insert(tenant_id.to_owned(), policy);
        }
        Ok(())
    }

    /// The tenant's active policy.
    pub fn active(&self, tenant_id: &str) -> Option<Arc<ActivePolicy>> {
        self.active
            .read()
            .expect("active lock")
            .get(tenant_id)
            .cloned()
    }

    /// The tenant's policies, oldest first.
    pub fn list(&self, tenant_id: &str) -> Result<Vec<PolicyMeta>> {
        let mut list: Vec<PolicyMeta> = self
            .store
            .scan(Table::Policies, &tenant_prefix(tenant_id))?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        list.sort_by(|a, b| a.uploaded_ms.cmp(&b.uploaded_ms).then(a.name.cmp(&b.name)));
        Ok(list)
    }
}

/// Writes `bytes` to `path` durably and atomically: a temporary file in the same directory,
/// synced, then renamed over `path`, so a crash never leaves a partial file under the name.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("policy files live in a directory");
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| file_error(dir, e))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| file_error(path, e))?;
    file.persist(path).map_err(|e| file_error(path, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ_runtime::engine::EngineConfig;

    fn quota() -> PolicyQuota {
        PolicyQuota::from(&TenantLimits::default())
    }

    #[test]
    fn tenants_running_the_same_bytes_share_one_compiled_policy() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&EngineConfig::default()).unwrap();
        let bytes = std::fs::read(writ_test_artifacts::PAYMENTS_LIMITS).unwrap();
        let other = std::fs::read(writ_test_artifacts::ALLOW_ALL).unwrap();
        {
            let policies = Policies::load(
                engine.clone(),
                Store::open(dir.path()).unwrap(),
                crate::clock::system(),
                &Degraded::default(),
            )
            .unwrap();
            let a = policies.upload("ten_a", "p", &bytes, quota()).unwrap();
            policies.activate("ten_a", a.clone()).unwrap();
            let b = policies.upload("ten_b", "p", &bytes, quota()).unwrap();
            assert!(a.compiled.shares_code_with(&b.compiled));
            policies.activate("ten_b", b).unwrap();
            let c = policies.upload("ten_c", "q", &other, quota()).unwrap();
            assert!(!a.compiled.shares_code_with(&c.compiled));
            policies.activate("ten_c", c).unwrap();
        }
        // After a restart too.
        let policies = Policies::load(
            engine,
            Store::open(dir.path()).unwrap(),
            crate::clock::system(),
            &Degraded::default(),
        )
        .unwrap();
        let (a, b, c) = (
            policies.active("ten_a").unwrap(),
            policies.active("ten_b").unwrap(),
            policies.active("ten_c").unwrap(),
        );
        assert!(a.compiled.shares_code_with(&b.compiled));
        assert!(!a.compiled.shares_code_with(&c.compiled));
    }

    #[test]
    fn only_valid_components_are_written_and_a_lost_artifact_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&EngineConfig::default()).unwrap();
        let bytes = std::fs::read(writ_test_artifacts::PAYMENTS_LIMITS).unwrap();
        let files = dir.path().join("policies");
        let count = || std::fs::read_dir(&files).unwrap().count();
        let id = {
            let policies = Policies::load(
                engine.clone(),
                Store::open(dir.path()).unwrap(),
                crate::clock::system(),
                &Degraded::default(),
            )
            .unwrap();
            let refused = policies.upload("ten_a", "p", b"\0asmnot a component", quota());
            assert!(
                matches!(refused, Err(UploadError::Policy(PolicyError::Load(_)))),
                "{refused:?}"
            );
            assert_eq!(count(), 0, "nothing is written for a refused upload");
            let p = policies.upload("ten_a", "p", &bytes, quota()).unwrap();
            policies.activate("ten_a", p.clone()).unwrap();
            p.meta.policy_id.clone()
        };
        assert_eq!(count(), 2);
        let artifact = files.join(format!("{id}.cwasm"));
        std::fs::remove_file(&artifact).unwrap();
        let policies = Policies::load(
            engine,
            Store::open(dir.path()).unwrap(),
            crate::clock::system(),
            &Degraded::default(),
        )
        .unwrap();
        assert_eq!(policies.active("ten_a").unwrap().meta.policy_id, id);
        assert!(
            artifact.exists(),
            "the artifact is compiled again from the component"
        );
    }

    #[test]
    fn an_unusable_artifact_is_replaced_by_a_fresh_compile() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&EngineConfig::default()).unwrap();
        let bytes = std::fs::read(writ_test_artifacts::ALLOW_ALL).unwrap();
        let open = || {
            Policies::load(
                engine.clone(),
                Store::open(dir.path()).unwrap(),
                crate::clock::system(),
                &Degraded::default(),
            )
            .unwrap()
        };
        let id = {
            let policies = open();
            let p = policies.upload("ten_a", "p", &bytes, quota()).unwrap();
            policies.activate("ten_a", p.clone()).unwrap();
            p.meta.policy_id.clone()
        };
        let artifact = dir.path().join("policies").join(format!("{id}.cwasm"));
        std::fs::write(&artifact, b"not an artifact").unwrap();
        assert_eq!(open().active("ten_a").unwrap().meta.policy_id, id);
        assert_ne!(std::fs::read(&artifact).unwrap(), b"not an artifact");
        // The fresh artifact loads.
        assert!(
            engine
                .load_precompiled_file(&id, bytes.len(), &artifact)
                .is_ok()
        );
    }
}
