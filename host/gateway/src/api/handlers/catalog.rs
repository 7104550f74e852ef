//! The tool catalog and credential vault.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use crate::access::Require;
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::{AppJson, Auth};
use crate::api::wire::*;

/// Adds or replaces a tool in the tenant's catalog (tenant admin).
#[utoipa::path(put, path = "/v1/catalog/{service}/{tool_name}", tag = "catalog",
    params(("service" = String, Path), ("tool_name" = String, Path)),
    request_body = ToolBody,
    responses((status = 200, body = ToolView), (status = 400), (status = 403)),
    security(("api_key" = [])))]
pub async fn put_tool(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path((service, tool_name)): Path<(String, String)>,
    AppJson(body): AppJson<ToolBody>,
) -> Result<Json<ToolView>, ApiError> {
    let entry = crate::catalog::ToolEntry {
        service,
        tool_name,
        method: body.method.to_ascii_uppercase(),
        url: body.url,
        query: body.query,
        body: body.body,
        headers: body.headers,
        credential: body.credential.map(|c| crate::catalog::CredentialUse {
            name: c.name,
            header: c.header,
            format: c.format,
        }),
        destructive: body.destructive,
    };
    Ok(Json(
        state
            .app
            .catalog()
            .put_tool(&who.require()?, entry)
            .await?
            .into(),
    ))
}

/// Removes a tool from the tenant's catalog; recorded in the chain (tenant admin).
#[utoipa::path(delete, path = "/v1/catalog/{service}/{tool_name}", tag = "catalog",
    params(("service" = String, Path), ("tool_name" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn delete_tool(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path((service, tool_name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .catalog()
        .delete_tool(&who.require()?, &service, &tool_name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Most entries of a catalog or credential list page, and the default: both lists are as long
/// as the tenant's admins make them, so a count bounds a page.
const LIST_PAGE: usize = 1000;

/// A page of the tenant's tool catalog, by service and tool name (tenant admin or reviewer);
/// `next_cursor` continues it.
#[utoipa::path(get, path = "/v1/catalog", tag = "catalog",
    params(PageQuery),
    responses((status = 200, body = ToolList), (status = 400), (status = 403)),
    security(("api_key" = [])))]
pub async fn list_tools(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Json<ToolList>, ApiError> {
    let (tools, next_cursor) = state.app.catalog().tools(
        &who.require()?,
        query.cursor.as_deref(),
        query.limit.unwrap_or(LIST_PAGE).clamp(1, LIST_PAGE),
    )?;
    Ok(Json(ToolList {
        tools: tools.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Stores a credential, encrypted at rest, with the origins it may be sent to; it is never
/// returned (tenant admin).
#[utoipa::path(put, path = "/v1/credentials/{name}", tag = "catalog",
    params(("name" = String, Path)),
    request_body = CredentialBody,
    responses((status = 204), (status = 400), (status = 403)),
    security(("api_key" = [])))]
pub async fn put_credential(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    AppJson(body): AppJson<CredentialBody>,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .catalog()
        .put_credential(&who.require()?, &name, &body.secret, &body.origins)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the tenant's credential names, never their values (tenant admin);
/// `next_cursor` continues it.
#[utoipa::path(get, path = "/v1/credentials", tag = "catalog",
    params(PageQuery),
    responses((status = 200, body = CredentialList), (status = 400), (status = 403)),
    security(("api_key" = [])))]
pub async fn list_credentials(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Json<CredentialList>, ApiError> {
    let (names, next_cursor) = state.app.catalog().credential_names(
        &who.require()?,
        query.cursor.as_deref(),
        query.limit.unwrap_or(LIST_PAGE).clamp(1, LIST_PAGE),
    )?;
    Ok(Json(CredentialList { names, next_cursor }))
}

/// Removes a credential (tenant admin).
#[utoipa::path(delete, path = "/v1/credentials/{name}", tag = "catalog",
    params(("name" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn delete_credential(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .catalog()
        .delete_credential(&who.require()?, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds or replaces an MCP server in the tenant's catalog: the tools whose calls (action
/// `<name>.<tool>`) are irreversible, held for a human by the gateway's gate whatever the policy
/// allowed, and for a remote server its URL and the credential injected, which `/mcp/{name}`
/// relays to. Recorded in the chain (tenant admin).
#[utoipa::path(put, path = "/v1/mcp/servers/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The server's name in actions")),
    request_body = McpServerBody,
    responses((status = 200, body = McpServerView), (status = 400), (status = 403),
        (status = 409, description = "The tenant lists as many servers as it may")),
    security(("api_key" = [])))]
pub async fn put_mcp_server(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    AppJson(body): AppJson<McpServerBody>,
) -> Result<Json<McpServerView>, ApiError> {
    if body.credential.is_some() && body.url.is_none() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`credential` needs `url`: it is sent to the upstream server only",
        ));
    }
    let server = crate::mcp_servers::McpServer {
        name,
        destructive_tools: body.destructive_tools.into_iter().collect(),
        upstream: body.url.map(|url| crate::mcp_servers::McpUpstream {
            url,
            credential: body.credential.map(|c| crate::catalog::CredentialUse {
                name: c.name,
                header: c.header,
                format: c.format,
            }),
        }),
    };
    let server = state
        .app
        .catalog()
        .put_mcp_server(&who.require()?, server)
        .await?;
    Ok(Json(mcp_server_view(server)))
}

/// Removes an MCP server from the tenant's catalog; recorded in the chain (tenant admin).
#[utoipa::path(delete, path = "/v1/mcp/servers/{name}", tag = "catalog",
    params(("name" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn delete_mcp_server(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .catalog()
        .delete_mcp_server(&who.require()?, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's MCP servers (admin or reviewer).
#[utoipa::path(get, path = "/v1/mcp/servers", tag = "catalog",
    responses((status = 200, body = McpServerList), (status = 403)),
    security(("api_key" = [])))]
pub async fn list_mcp_servers(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<McpServerList>, ApiError> {
    let servers = state.app.catalog().mcp_servers(&who.require()?);
    Ok(Json(McpServerList {
        servers: servers.into_iter().map(mcp_server_view).collect(),
    }))
}

fn mcp_server_view(server: crate::mcp_servers::McpServer) -> McpServerView {
    let (url, credential) = match server.upstream {
        Some(u) => (
            Some(u.url),
            u.credential.map(|c| CredentialUseBody {
                name: c.name,
                header: c.header,
                format: c.format,
            }),
        ),
        None => (None, None),
    };
    McpServerView {
        name: server.name,
        destructive_tools: server.destructive_tools.into_iter().collect(),
        url,
        credential,
    }
}
