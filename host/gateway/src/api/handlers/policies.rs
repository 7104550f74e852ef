//! A tenant's policies: upload, list, activate, delete.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use crate::access::Require;
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::{Auth, PolicyBody};
use crate::api::wire::*;

/// Uploads a policy component (`application/wasm`) for the admin's tenant.
#[utoipa::path(post, path = "/v1/policies", tag = "policies",
    params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, body = UploadedPolicy),
        (status = 400, description = "Not a component, wrong world, or a forbidden import (named); `policy_too_costly`: its compilation went past the time or memory budget (named)"),
        (status = 403),
        (status = 409, description = "`policy_quota`: the tenant keeps `max_policies` policies already"),
        (status = 413, description = "Over 32 MiB; `policy_quota`: the tenant's components would take more than `max_policy_bytes`"),
        (status = 503, description = "`compiler_busy`: no compilation slot came free in time"),
    ),
    security(("api_key" = [])))]
pub async fn upload_policy(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<UploadQuery>,
    PolicyBody(bytes): PolicyBody,
) -> Result<(StatusCode, Json<UploadedPolicy>), ApiError> {
    let meta = state
        .app
        .policies()
        .upload(&who.require()?, &query.name, bytes, query.activate)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UploadedPolicy {
            policy_id: meta.policy_id,
            name: meta.name,
            size: meta.size,
            activated: query.activate,
        }),
    ))
}

/// Lists the tenant's policies, marking the active one (admin or reviewer).
#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    responses((status = 200, body = PolicyList), (status = 403)),
    security(("api_key" = [])))]
pub async fn list_policies(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<PolicyList>, ApiError> {
    let (list, active) = state.app.policies().list(&who.require()?)?;
    Ok(Json(PolicyList {
        policies: list
            .into_iter()
            .map(|m| {
                let is_active = active.as_deref() == Some(m.policy_id.as_str());
                policy_view(m, is_active)
            })
            .collect(),
        active_policy_id: active,
    }))
}

/// Activates one of the tenant's policies: rollout and rollback (admin).
#[utoipa::path(post, path = "/v1/policies/{policy_id}/activate", tag = "policies",
    params(("policy_id" = String, Path)),
    responses((status = 200, body = PolicyView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn activate_policy(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(policy_id): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let meta = state
        .app
        .policies()
        .activate_policy(&who.require()?, &policy_id)
        .await?;
    Ok(Json(policy_view(meta, true)))
}

/// Deletes one of the tenant's policies; recorded in the chain (admin). The active policy cannot
/// be deleted. Its files are removed when no tenant has the same component any more.
#[utoipa::path(delete, path = "/v1/policies/{policy_id}", tag = "policies",
    params(("policy_id" = String, Path)),
    responses(
        (status = 204), (status = 403), (status = 404),
        (status = 409, description = "`policy_active`: the tenant's active policy"),
    ),
    security(("api_key" = [])))]
pub async fn delete_policy(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(policy_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .app
        .policies()
        .delete_policy(&who.require()?, &policy_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
