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
