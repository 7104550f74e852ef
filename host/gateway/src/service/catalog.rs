//! A tenant's tool catalog and credential vault as a service: admins configure them, agents'
//! logical tool calls are resolved through them.

use crate::access::{Admin, Agent, Reviewer, TenantScope};
use crate::catalog::{Catalog, ResolvedRequest, ToolEntry};
use crate::egress::Egress;
use crate::error::{AppError, Result};
use crate::vault::Vault;

/// Manages catalog entries and credentials, and resolves tool calls. Cheap to clone.
#[derive(Clone)]
pub struct CatalogService {
    pub(crate) catalog: Catalog,
    pub(crate) vault: Vault,
    pub(crate) egress: Egress,
}

impl CatalogService {
    /// Adds or replaces a tool in the tenant's catalog. Refused: a destination the egress
    /// guard refuses when it is a literal address, and a credential sent to an origin it is
    /// not bound to (checked again when a job runs, as the catalog can change after).
    pub fn put_tool(&self, scope: &TenantScope<Admin>, entry: ToolEntry) -> Result<ToolEntry> {
        entry.validate()?;
        let destination = entry.destination()?;
        let fixed = reqwest::Url::parse(&destination.origin.ascii_serialization())
            .map_err(|e| AppError::invalid(format!("url: {e}")))?;
        self.egress
            .policy()
            .check_url(&fixed)
            .map_err(|e| AppError::Invalid {
                code: "egress_denied",
                message: e.to_string(),
            })?;
        if let Some(credential) = &entry.credential {
            let origin = destination.origin.ascii_serialization();
            match self.vault.origins(scope.tenant_id(), &credential.name)? {
                None => {
                    return Err(AppError::invalid(format!(
                        "credential `{}` is not stored; put it (with its origins) first",
                        credential.name
                    )));
                }
                Some(origins) if !origins.contains(&origin) => {
                    return Err(AppError::Invalid {
                        code: "credential_origin_mismatch",
                        message: format!(
                            "credential `{}` may be sent only to {}, not to {origin}",
                            credential.name,
                            origins.join(", ")
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        self.catalog.put(scope.tenant_id(), &entry)?;
        Ok(entry)
    }

    /// The tenant's catalog.
    pub fn tools(&self, scope: &TenantScope<Reviewer>) -> Result<Vec<ToolEntry>> {
        Ok(self.catalog.list(scope.tenant_id())?)
    }

    /// Stores (sealed) a credential of the tenant with the origins it may be sent to; returns
    /// them normalized. Its value is never returned.
    pub fn put_credential(
        &self,
        scope: &TenantScope<Admin>,
        name: &str,
        secret: &str,
        origins: &[String],
    ) -> Result<Vec<String>> {
        Ok(self.vault.put(scope.tenant_id(), name, secret, origins)?)
    }

    /// The names of the tenant's credentials.
    pub fn credential_names(&self, scope: &TenantScope<Admin>) -> Result<Vec<String>> {
        Ok(self.vault.names(scope.tenant_id())?)
    }

    /// Removes a credential of the tenant.
    pub fn delete_credential(&self, scope: &TenantScope<Admin>, name: &str) -> Result<()> {
        if self.vault.delete(scope.tenant_id(), name)? {
            Ok(())
        } else {
            Err(AppError::NotFound("credential"))
        }
    }

    /// Resolves a Tenet tool call against the tenant's catalog: its downstream request, `None`
    /// when the tenant has no catalog for the service, `unknown_tool` when it has one that
    /// lacks the tool.
    pub fn resolve_tool(
        &self,
        scope: &TenantScope<Agent>,
        service: &str,
        tool_name: &str,
        arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<ResolvedRequest>> {
        let tenant_id = scope.tenant_id();
        if !self.catalog.has_service(tenant_id, service) {
            return Ok(None);
        }
        match self.catalog.get(tenant_id, service, tool_name)? {
            Some(entry) => Ok(Some(entry.resolve(arguments)?)),
            None => Err(AppError::Invalid {
                code: "unknown_tool",
                message: format!("the catalog of `{service}` has no tool `{tool_name}`"),
            }),
        }
    }
}
