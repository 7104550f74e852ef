//! Tenants' policies: upload (validate, compile, store), the list, and the active policy.
//!
//! A policy's id is the blake3 hash of its component bytes. The component and its compiled
//! artifact are stored once per id; each tenant has its own list of uploaded policies and at
//! most one active one. Activation swaps an `Arc` under a lock: calls already evaluating keep
//! the `Arc` they took and finish on the old version.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::engine::{CompiledPolicy, Engine, LoadError};
use crate::store::{Store, StoreError, Table};
use crate::tenants::{tenant_key, tenant_prefix};

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
    /// Its metadata.
    pub meta: PolicyMeta,
    /// The loaded component.
    pub compiled: CompiledPolicy,
}

/// Policy storage and the active-policy table. Cheap to clone.
#[derive(Clone)]
pub struct Policies {
    engine: Engine,
    store: Store,
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
    pub fn load(engine: Engine, store: Store) -> Result<Self> {
        let policies = Self {
            engine,
            store,
            active: Arc::default(),
        };
        let actives: Vec<(Vec<u8>, String)> = policies.store.scan(Table::Active, b"")?;
        for (tenant, policy_id) in actives {
            let tenant = String::from_utf8_lossy(&tenant).into_owned();
            let meta = policies.meta(&tenant, &policy_id)?;
            // One at a time, so a policy active for several tenants is loaded once.
            let compiled = policies.compiled(&meta)?;
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
        let compiled = match self.loaded(&Engine::policy_id(bytes)) {
            Some(compiled) => compiled,
            None => self.engine.compile(bytes)?,
        };
        let meta = PolicyMeta {
            policy_id: compiled.id().to_owned(),
            name: name.to_owned(),
            size: bytes.len(),
            uploaded_ms: crate::now_ms(),
        };
        let id = meta.policy_id.as_bytes();
        if !self.store.contains(Table::Blobs, id)? {
            self.store.put_raw(Table::Blobs, id, bytes)?;
        }
        if !self.store.contains(Table::Artifacts, id)? {
            match compiled.serialize() {
                Ok(artifact) => self.store.put_raw(Table::Artifacts, id, &artifact)?,
                Err(e) => tracing::warn!(error = %e, "could not serialize a compiled policy"),
            }
        }
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

    fn compiled(&self, meta: &PolicyMeta) -> Result<CompiledPolicy> {
        if let Some(compiled) = self.loaded(&meta.policy_id) {
            return Ok(compiled);
        }
        let id = meta.policy_id.as_bytes();
        if let Some(artifact) = self.store.get_raw(Table::Artifacts, id)? {
            match self
                .engine
                .load_precompiled(&meta.policy_id, meta.size, &artifact)
            {
                Ok(compiled) => return Ok(compiled),
                Err(e) => tracing::info!(policy = %meta.policy_id, error = %e, "recompiling"),
            }
        }
        let bytes = self
            .store
            .get_raw(Table::Blobs, id)?
            .ok_or(PolicyError::NotFound)?;
        let compiled = self.engine.compile(&bytes)?;
        if let Ok(artifact) = compiled.serialize() {
            self.store.put_raw(Table::Artifacts, id, &artifact)?;
        }
        Ok(compiled)
    }

    /// Loads `policy_id` of `tenant_id`, ready to [`Policies::activate`]. May compile: call from
    /// a blocking thread.
    pub fn prepare(&self, tenant_id: &str, policy_id: &str) -> Result<Arc<ActivePolicy>> {
        let meta = self.meta(tenant_id, policy_id)?;
        let compiled = self.compiled(&meta)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    #[test]
    fn tenants_running_the_same_bytes_share_one_compiled_policy() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&EngineConfig::default()).unwrap();
        let bytes = std::fs::read(writ_tests::artifacts::PAYMENTS_LIMITS).unwrap();
        let other = std::fs::read(writ_tests::artifacts::ALLOW_ALL).unwrap();
        {
            let policies =
                Policies::load(engine.clone(), Store::open(dir.path()).unwrap()).unwrap();
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
        let policies = Policies::load(engine, Store::open(dir.path()).unwrap()).unwrap();
        let (a, b, c) = (
            policies.active("ten_a").unwrap(),
            policies.active("ten_b").unwrap(),
            policies.active("ten_c").unwrap(),
        );
        assert!(a.compiled.shares_code_with(&b.compiled));
        assert!(!a.compiled.shares_code_with(&c.compiled));
    }
}
