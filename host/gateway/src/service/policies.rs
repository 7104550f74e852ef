//! A tenant's policies as a service: upload (within the tenant's quota, compiled off the async
//! workers within the engine's budget and the gateway's compilation slots), activation
//! (recorded in the chain before it takes effect, serialized so the chain's order is the order
//! they took effect), deletion (recorded likewise; the files go when no tenant references
//! them), and the list.

use std::sync::Arc;

use serde_json::json;
use writ_runtime::engine::LoadError;

use super::configuration;
use crate::access::{Admin, Reviewer, TenantScope};
use crate::audit::{Effects, Kind, RecordBody, SharedLedger};
use crate::degraded::{Degraded, Part};
use crate::error::{AppError, Result};
use crate::policies::{ActivePolicy, CompilerBusy, Policies, PolicyError, PolicyMeta, UploadError};
use crate::store::Table;

/// Uploads, activates, deletes and lists policies. Cheap to clone.
#[derive(Clone)]
pub struct PolicyService {
    pub(crate) policies: Policies,
    pub(crate) audit: SharedLedger,
    /// Serializes activations and deletions so the audit order matches the order they took
    /// effect, and a policy being activated is not deleted meanwhile.
    pub(crate) activation: Arc<tokio::sync::Mutex<()>>,
    /// An activation repairs a tenant whose active policy did not load.
    pub(crate) degraded: Degraded,
}

impl PolicyService {
    /// Uploads a policy component for the tenant, within the quota its limits set; activates
    /// it if asked. A component to compile waits for a compilation slot (503 `compiler_busy`
    /// when none comes free in time).
    pub async fn upload(
        &self,
        scope: &TenantScope<Admin>,
        name: &str,
        bytes: bytes::Bytes,
        activate: bool,
    ) -> Result<PolicyMeta> {
        let quota = self
            .policies
            .quota(scope.tenant_id())
            .map_err(policy_error)?;
        let (tenant, name) = (scope.tenant_id().to_owned(), name.to_owned());
        let (policies, admitted) = (self.policies.clone(), bytes.clone());
        let (tenant_, name_) = (tenant.clone(), name.clone());
        let (_, compiles) =
            tokio::task::spawn_blocking(move || policies.admit(&tenant_, &name_, &admitted, quota))
                .await
                .map_err(AppError::internal)?
                .map_err(upload_error)?;
        let slot = self.compile_slot(compiles).await?;
        let policies = self.policies.clone();
        let uploaded = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            policies.upload(&tenant, &name, &bytes, quota)
        })
        .await
        .map_err(AppError::internal)?
        .map_err(upload_error)?;
        let meta = uploaded.meta.clone();
        if activate {
            self.activate(scope, uploaded).await?;
        }
        Ok(meta)
    }

    /// A compilation slot when `compiles`, held by the blocking thread that compiles.
    async fn compile_slot(
        &self,
        compiles: bool,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>> {
        if !compiles {
            return Ok(None);
        }
        let slot = self.policies.compile_slots().acquire().await;
        slot.map(Some)
            .map_err(|CompilerBusy(message)| AppError::Unavailable {
                code: "compiler_busy",
                message,
            })
    }

    /// Makes one of the tenant's policies active. Recorded in the chain.
    pub async fn activate_policy(
        &self,
        scope: &TenantScope<Admin>,
        policy_id: &str,
    ) -> Result<PolicyMeta> {
        let meta = self.policies.meta(scope.tenant_id(), policy_id)?;
        let compiles = self.policies.needs_compile(&meta.policy_id);
        let slot = self.compile_slot(compiles).await?;
        let policies = self.policies.clone();
        let (tenant, id) = (scope.tenant_id().to_owned(), policy_id.to_owned());
        let prepared = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            policies.prepare(&tenant, &id)
        })
        .await
        .map_err(AppError::internal)?
        .map_err(policy_error)?;
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
        // Deleted since it was loaded: nothing to activate.
        self.policies.meta(tenant_id, &prepared.meta.policy_id)?;
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

    /// Deletes one of the tenant's policies (not its active one: 409 `policy_active`). The
    /// row goes with the record of the deletion; the component and artifact files go when no
    /// tenant references the component any more.
    pub async fn delete_policy(&self, scope: &TenantScope<Admin>, policy_id: &str) -> Result<()> {
        let tenant_id = scope.tenant_id();
        let serial = self.activation.lock().await;
        let meta = self.policies.meta(tenant_id, policy_id)?;
        if self.policies.active_id(tenant_id)?.as_deref() == Some(meta.policy_id.as_str()) {
            return Err(AppError::Conflict {
                code: "policy_active",
                message: "the active policy cannot be deleted; activate another one first".into(),
            });
        }
        let mut record = configuration(
            Kind::PolicyDeleted,
            scope.key(),
            json!({"name": meta.name, "size": meta.size}),
        );
        record.policy_id = Some(meta.policy_id.clone());
        let effects = Effects {
            removes: vec![(
                Table::Policies,
                Policies::meta_key(tenant_id, &meta.policy_id),
            )],
            ..Effects::default()
        };
        self.audit.append(tenant_id, record, effects).await?;
        drop(serial);
        let policies = self.policies.clone();
        let id = meta.policy_id;
        let removed =
            tokio::task::spawn_blocking(move || policies.remove_unreferenced_files(&id)).await;
        match removed {
            Ok(Ok(removed)) => {
                tracing::info!(tenant = %tenant_id, policy = %policy_id, files_removed = removed, "policy deleted");
            }
            Ok(Err(e)) => {
                tracing::error!(tenant = %tenant_id, policy = %policy_id, error = %e, "policy deleted; its files were not removed");
            }
            Err(e) => {
                tracing::error!(tenant = %tenant_id, policy = %policy_id, error = %e, "policy deleted; removing its files failed");
            }
        }
        Ok(())
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

/// An upload's refusal: over the count quota 409, over the bytes quota 413, the rest as
/// [`policy_error`].
fn upload_error(e: UploadError) -> AppError {
    match e {
        UploadError::TooMany { .. } => AppError::Conflict {
            code: "policy_quota",
            message: e.to_string(),
        },
        UploadError::TooManyBytes { .. } => AppError::TooLarge {
            code: "policy_quota",
            message: e.to_string(),
        },
        UploadError::Policy(e) => policy_error(e),
    }
}

/// A component over the compile budget is refused with 400 `policy_too_costly` naming the
/// bound; a compiler that could not run is the gateway's failure, 503 `compiler_unavailable`.
fn policy_error(e: PolicyError) -> AppError {
    match e {
        PolicyError::Load(LoadError::TooCostly(_)) => AppError::Invalid {
            code: "policy_too_costly",
            message: e.to_string(),
        },
        PolicyError::Load(LoadError::Compiler(_)) => {
            tracing::error!(error = %e, "the policy compiler could not run");
            AppError::Unavailable {
                code: "compiler_unavailable",
                message: "the policy compiler could not run; try again later".into(),
            }
        }
        e => e.into(),
    }
}
