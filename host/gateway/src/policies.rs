//! Tenants' policies: upload (validate, compile, store), the list, and the active policy.
//!
//! A policy's id is the blake3 hash of its component bytes. The component and its compiled
//! artifact are files, stored once per id in `<data-dir>/policies/` (`<id>.wasm`,
//! `<id>.cwasm`): an artifact is mapped rather than read, so only the code a policy runs
//! becomes resident, and none of it sits in the store's cache. Each tenant has its own list of
//! uploaded policies (metadata, in the store) and at most one active one. Activation swaps an
//! `Arc` under a lock: calls already evaluating keep the `Arc` they took and finish on the old
//! version.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::degraded::{Degraded, Part};
use crate::store::{Store, StoreError, Table};
use crate::tenants::{tenant_key, tenant_prefix};
use writ_runtime::engine::{CompiledPolicy, Engine, LoadError};

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
            engine,
            store,
            clock,
            dir,
            active: Arc::default(),
        };
        let actives: Vec<(Vec<u8>, String)> = policies.store.scan(Table::Active, b"")?;
        for (tenant, policy_id) in actives {
            let tenant = String::from_utf8_lossy(&tenant).into_owned();
            // One at a time, so a policy active for several tenants is loaded once.
            let loaded = policies.meta(&tenant, &policy_id).and_then(|meta| {
                let compiled = policies.compiled(&meta.policy_id, meta.size, None)?;
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

    /// Validates, compiles and stores a component for `tenant_id`, and returns it loaded, ready
    /// to activate. A component already loaded (the same bytes, active for some tenant) is not
    /// compiled again. CPU-bound (compilation): call from a blocking thread.
    pub fn upload(&self, tenant_id: &str, name: &str, bytes: &[u8]) -> Result<Arc<ActivePolicy>> {
        if !valid_policy_name(name) {
            return Err(PolicyError::InvalidName);
        }
        let policy_id = Engine::policy_id(bytes);
        let compiled = self.compiled(&policy_id, bytes.len(), Some(bytes))?;
        let meta = PolicyMeta {
            policy_id,
            name: name.to_owned(),
            size: bytes.len(),
            uploaded_ms: self.clock.now_ms(),
        };
        let id = meta.policy_id.as_bytes();
        self.store
            .put(Table::Policies, &tenant_key(tenant_id, &[id]), &meta)?;
        Ok(Arc::new(ActivePolicy { meta, compiled }))
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
            .get(
                Table::Policies,
                &tenant_key(tenant_id, &[policy_id.as_bytes()]),
            )?
            .ok_or(PolicyError::NotFound)
    }

    /// The policy `policy_id`, loaded: shared with a tenant that has it active, else mapped from
    /// its artifact file, else compiled (from `bytes`, or its component file) and stored as
    /// files, then mapped. Validation happens in the compile, before anything is written.
    fn compiled(
        &self,
        policy_id: &str,
        size: usize,
        bytes: Option<&[u8]>,
    ) -> Result<CompiledPolicy> {
        if let Some(compiled) = self.loaded(policy_id) {
            return Ok(compiled);
        }
        let artifact = self.artifact_path(policy_id);
        if artifact.exists() {
            match self
                .engine
                .load_precompiled_file(policy_id, size, &artifact)
            {
                Ok(compiled) => return Ok(compiled),
                Err(e) => tracing::info!(policy = %policy_id, error = %e, "recompiling"),
            }
        }
        let component = self.component_path(policy_id);
        let read;
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => {
                read = std::fs::read(&component).map_err(|e| file_error(&component, e))?;
                if Engine::policy_id(&read) != policy_id {
                    return Err(file_error(
                        &component,
                        "the component does not hash to its id",
                    ));
                }
                &read
            }
        };
        let compiled = self.engine.compile(bytes)?;
        if !component.exists() {
            write_file(&component, bytes)?;
        }
        match compiled.serialize() {
            Ok(serialized) => write_file(&artifact, &serialized)?,
            Err(e) => {
                tracing::warn!(error = %e, "could not serialize a compiled policy");
                return Ok(compiled);
            }
        }
        // Run from the mapped file rather than the compiled copy in anonymous memory.
        Ok(self
            .engine
            .load_precompiled_file(policy_id, size, &artifact)
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
        let compiled = self.compiled(&meta.policy_id, meta.size, None)?;
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
            let a = policies.upload("ten_a", "p", &bytes).unwrap();
            policies.activate("ten_a", a.clone()).unwrap();
            let b = policies.upload("ten_b", "p", &bytes).unwrap();
            assert!(a.compiled.shares_code_with(&b.compiled));
            policies.activate("ten_b", b).unwrap();
            let c = policies.upload("ten_c", "q", &other).unwrap();
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
            let refused = policies.upload("ten_a", "p", b"\0asmnot a component");
            assert!(matches!(refused, Err(PolicyError::Load(_))), "{refused:?}");
            assert_eq!(count(), 0, "nothing is written for a refused upload");
            let p = policies.upload("ten_a", "p", &bytes).unwrap();
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
}
