//! A tenant's tool catalog and credential vault as a service: admins configure them, agents'
//! logical tool calls are resolved through them.

use serde_json::json;

use super::configuration;
use crate::access::{Admin, Agent, Reviewer, TenantScope};
use crate::audit::{Effects, Kind, SharedLedger};
use crate::catalog::{Catalog, CredentialUse, ResolvedRequest, ToolEntry};
use crate::egress::Egress;
use crate::error::{AppError, Result};
use crate::mcp_servers::{McpServer, McpServers};
use crate::page;
use crate::store::Table;
use crate::vault::Vault;

/// MCP servers one tenant's catalog may list.
const MAX_MCP_SERVERS: usize = 256;

/// Manages catalog entries, MCP servers and credentials, and resolves tool calls. Cheap to
/// clone.
#[derive(Clone)]
pub struct CatalogService {
    pub(crate) catalog: Catalog,
    pub(crate) mcp_servers: McpServers,
    /// Sessions of `/mcp/{name}`, forgotten when their server changes.
    pub(crate) mcp_sessions: crate::mcp_sessions::McpSessions,
    pub(crate) vault: Vault,
    pub(crate) egress: Egress,
    pub(crate) audit: SharedLedger,
}

impl CatalogService {
    /// Adds or replaces a tool in the tenant's catalog, recorded in the chain in the same
    /// write. Refused: a destination the egress guard refuses when it is a literal address, and
    /// a credential sent to an origin it is not bound to (checked again when a job runs, as the
    /// catalog can change after).
    pub async fn put_tool(
        &self,
        scope: &TenantScope<Admin>,
        entry: ToolEntry,
    ) -> Result<ToolEntry> {
        entry.validate()?;
        let origin = entry.destination()?.origin.ascii_serialization();
        self.check_destination(scope, &origin, entry.credential.as_ref())?;
        let row = self.catalog.row(scope.tenant_id(), &entry)?;
        let detail = json!({
            "service": entry.service,
            "tool_name": entry.tool_name,
            "method": entry.method,
            "url": entry.url,
            "credential": entry.credential.as_ref().map(|c| &c.name),
            "destructive": entry.destructive,
        });
        let record = configuration(Kind::CatalogPut, scope.key(), detail);
        let effects = Effects {
            rows: vec![row],
            ..Effects::default()
        };
        self.audit
            .append(scope.tenant_id(), record, effects)
            .await?;
        self.catalog.stored(scope.tenant_id(), &entry);
        Ok(entry)
    }

    /// Refuses a destination `origin` the egress guard refuses when it is a literal address,
    /// and a credential not bound to `origin`. Checked again when a request is sent, as the
    /// credential's origins and DNS can change after.
    fn check_destination(
        &self,
        scope: &TenantScope<Admin>,
        origin: &str,
        credential: Option<&CredentialUse>,
    ) -> Result<()> {
        let fixed =
            reqwest::Url::parse(origin).map_err(|e| AppError::invalid(format!("url: {e}")))?;
        self.egress
            .policy()
            .check_url(&fixed)
            .map_err(|e| AppError::Invalid {
                code: "egress_denied",
                message: e.to_string(),
            })?;
        let Some(credential) = credential else {
            return Ok(());
        };
        match self.vault.origins(scope.tenant_id(), &credential.name)? {
            None => Err(AppError::invalid(format!(
                "credential `{}` is not stored; put it (with its origins) first",
                credential.name
            ))),
            Some(origins) if !origins.iter().any(|o| o == origin) => Err(AppError::Invalid {
                code: "credential_origin_mismatch",
                message: format!(
                    "credential `{}` may be sent only to {}, not to {origin}",
                    credential.name,
                    origins.join(", ")
                ),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Removes a tool from the tenant's catalog, recorded in the chain in the same write.
    pub async fn delete_tool(
        &self,
        scope: &TenantScope<Admin>,
        service: &str,
        tool_name: &str,
    ) -> Result<()> {
        if self
            .catalog
            .get(scope.tenant_id(), service, tool_name)?
            .is_none()
        {
            return Err(AppError::NotFound("tool"));
        }
        let record = configuration(
            Kind::CatalogDeleted,
            scope.key(),
            json!({"service": service, "tool_name": tool_name}),
        );
        let effects = Effects {
            removes: vec![(
                Table::Catalog,
                Catalog::key(scope.tenant_id(), service, tool_name),
            )],
            ..Effects::default()
        };
        self.audit
            .append(scope.tenant_id(), record, effects)
            .await?;
        Ok(())
    }

    /// Adds or replaces an MCP server of the tenant's catalog (the tools it marks destructive;
    /// for a remote one, its URL and credential, checked as a tool's destination is), recorded
    /// in the chain in the same write.
    pub async fn put_mcp_server(
        &self,
        scope: &TenantScope<Admin>,
        server: McpServer,
    ) -> Result<McpServer> {
        let tenant_id = scope.tenant_id();
        if self.mcp_servers.get(tenant_id, &server.name).is_none()
            && self.mcp_servers.list(tenant_id).len() >= MAX_MCP_SERVERS
        {
            return Err(AppError::Conflict {
                code: "mcp_server_quota",
                message: format!("a tenant may list at most {MAX_MCP_SERVERS} MCP servers"),
            });
        }
        let row = McpServers::row(tenant_id, &server)?;
        if let Some(upstream) = &server.upstream {
            let origin = upstream.parsed_url()?.origin().ascii_serialization();
            self.check_destination(scope, &origin, upstream.credential.as_ref())?;
        }
        let detail = json!({
            "mcp_server": server.name,
            "destructive_tools": server.destructive_tools,
            "url": server.upstream.as_ref().map(|u| &u.url),
            "credential": server.upstream.as_ref().and_then(|u| u.credential.as_ref()).map(|c| &c.name),
        });
        let record = configuration(Kind::CatalogPut, scope.key(), detail);
        let effects = Effects {
            rows: vec![row],
            ..Effects::default()
        };
        self.audit
            .append(scope.tenant_id(), record, effects)
            .await?;
        self.mcp_sessions
            .forget_server(scope.tenant_id(), &server.name);
        self.mcp_servers.stored(scope.tenant_id(), server.clone());
        Ok(server)
    }

    /// Removes an MCP server from the tenant's catalog, recorded in the chain in the same write.
    pub async fn delete_mcp_server(&self, scope: &TenantScope<Admin>, name: &str) -> Result<()> {
        if self.mcp_servers.get(scope.tenant_id(), name).is_none() {
            return Err(AppError::NotFound("MCP server"));
        }
        let record = configuration(
            Kind::CatalogDeleted,
            scope.key(),
            json!({"mcp_server": name}),
        );
        let effects = Effects {
            removes: vec![(Table::McpServers, McpServers::key(scope.tenant_id(), name))],
            ..Effects::default()
        };
        self.audit
            .append(scope.tenant_id(), record, effects)
            .await?;
        self.mcp_sessions.forget_server(scope.tenant_id(), name);
        self.mcp_servers.removed(scope.tenant_id(), name);
        Ok(())
    }

    /// The tenant's MCP servers, by name (at most one per name, so the list is as long as the
    /// tenant made it; each entry is bounded).
    pub fn mcp_servers(&self, scope: &TenantScope<Reviewer>) -> Vec<McpServer> {
        self.mcp_servers.list(scope.tenant_id())
    }

    /// A page of the tenant's catalog after `cursor` (a `next_cursor` of an earlier page), by
    /// service and tool name: at most `limit` entries, and the next page's cursor.
    pub fn tools(
        &self,
        scope: &TenantScope<Reviewer>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ToolEntry>, Option<String>)> {
        let after = cursor.map(page::parse_cursor).transpose()?;
        let (entries, next) = self
            .catalog
            .page(scope.tenant_id(), after.as_deref(), limit)?;
        Ok((entries, next.map(|k| page::cursor(&k))))
    }

    /// Stores (sealed) a credential of the tenant with the origins it may be sent to, recorded
    /// in the chain (its name and origins, never the secret) in the same write; returns the
    /// origins normalized. Its value is never returned.
    pub async fn put_credential(
        &self,
        scope: &TenantScope<Admin>,
        name: &str,
        secret: &str,
        origins: &[String],
    ) -> Result<Vec<String>> {
        let (rows, origins) = self.vault.rows(scope.tenant_id(), name, secret, origins)?;
        let record = configuration(
            Kind::CredentialPut,
            scope.key(),
            json!({"name": name, "origins": origins}),
        );
        let effects = Effects {
            rows,
            ..Effects::default()
        };
        self.audit
            .append(scope.tenant_id(), record, effects)
            .await?;
        Ok(origins)
    }

    /// The names of the tenant's credentials.
    pub fn credential_names(
        &self,
        scope: &TenantScope<Admin>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>)> {
        let after = cursor.map(page::parse_cursor).transpose()?;
        let (names, next) = self
            .vault
            .names_page(scope.tenant_id(), after.as_deref(), limit)?;
        Ok((names, next.map(|k| page::cursor(&k))))
    }

    /// Removes a credential of the tenant, recorded in the chain in the same write.
    pub async fn delete_credential(&self, scope: &TenantScope<Admin>, name: &str) -> Result<()> {
        if self.vault.origins(scope.tenant_id(), name)?.is_none() {
            return Err(AppError::NotFound("credential"));
        }
        let record = configuration(Kind::CredentialDeleted, scope.key(), json!({"name": name}));
        let effects = Effects {
            removes: Vault::keys(scope.tenant_id(), name),
            ..Effects::default()
        };
        self.audit
            .append(scope.tenant_id(), record, effects)
            .await?;
        Ok(())
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
