//! A tenant's policies as a service: upload (compiled off the async workers), activation
//! (recorded in the chain before it takes effect, serialized so the chain's order is the order
//! they took effect), and the list.

use std::sync::Arc;

use crate::access::{Admin, Reviewer, TenantScope};
use crate::audit::{Effects, Kind, RecordBody, SharedLedger};
use crate::degraded::{Degraded, Part};
use crate::error::{AppError, Result};
use crate::policies::{ActivePolicy, Policies, PolicyMeta};

/// Uploads, activates and lists policies. Cheap to clone.
#[derive(Clone)]
pub struct PolicyService {
    pub(crate) policies: Policies,
    pub(crate) audit: SharedLedger,
    /// Serializes activations so the audit order matches the order they took effect.
    pub(crate) activation: Arc<tokio::sync::Mutex<()>>,
    /// An activation repairs a tenant whose active policy did not load.
    pub(crate) degraded: Degraded,
}

impl PolicyService {
    /// Uploads a policy component for the tenant; activates it if asked.
    pub async fn upload(
        &self,
        scope: &TenantScope<Admin>,
        name: &str,
        bytes: bytes::Bytes,
        activate: bool,
    ) -> Result<PolicyMeta> {
        let policies = self.policies.clone();
        let (tenant, name) = (scope.tenant_id().to_owned(), name.to_owned());
        let uploaded = tokio::task::spawn_blocking(move || policies.upload(&tenant, &name, &bytes))
            .await
            .map_err(AppError::internal)??;
        let meta = uploaded.meta.clone();
        if activate {
            self.activate(scope, uploaded).await?;
        }
        Ok(meta)
    }

    /// Makes one of the tenant's policies active. Recorded in the chain.
    pub async fn activate_policy(
        &self,
        scope: &TenantScope<Admin>,
        policy_id: &str,
    ) -> Result<PolicyMeta> {
        let policies = self.policies.clone();
        let (tenant, id) = (scope.tenant_id().to_owned(), policy_id.to_owned());
        let prepared = tokio::task::spawn_blocking(move || policies.prepare(&tenant, &id))
            .await
            .map_err(AppError::internal)??;
        self.activate(scope, prepared).await
    }

    /// Records the activation of a loaded policy, then makes it the tenant's active one.
    async fn activate(
        &self,
        scope: &TenantScope<Admin>,
        prepared: Arc<ActivePolicy>,
    ) -> Result<PolicyMeta> {
        let tenant_id = scope.tenant_id();
        let _serial = self.activation.lock().await;
        let previous = self.policies.active(tenant_id);
        let mut record = RecordBody::new(Kind::PolicyActivated);
        record.actor = Some(scope.subject().to_owned());
        record.acted_by(&scope.key().key_id, scope.subject());
        record.policy_id = Some(prepared.meta.policy_id.clone());
        record.detail = Some(
            serde_json::json!({
                "name": prepared.meta.name,
                "previous_policy_id": previous.map(|p| p.meta.policy_id.clone()),
            })
            .to_string(),
        );
        self.audit
            .append(tenant_id, record, Effects::default())
            .await?;
        let meta = prepared.meta.clone();
        self.policies.activate(tenant_id, prepared)?;
        self.degraded.clear(tenant_id, Part::Policy);
        Ok(meta)
    }

    /// The tenant's policies and the active one's id.
    pub fn list(&self, scope: &TenantScope<Reviewer>) -> Result<(Vec<PolicyMeta>, Option<String>)> {
        let tenant_id = scope.tenant_id();
        let list = self.policies.list(tenant_id)?;
        let active = self
            .policies
            .active(tenant_id)
            .map(|p| p.meta.policy_id.clone());
        Ok((list, active))
    }
}
