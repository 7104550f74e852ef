//! The operator's and admins' routes: tenants, their limits, keys.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use crate::access::Require;
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::{AppJson, Auth};
use crate::api::wire::*;
use crate::tenants::Role;

/// Creates a tenant (operator key).
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin",
    request_body = CreateTenantBody,
    responses((status = 201, body = TenantView), (status = 403, description = "Not the operator key")),
    security(("api_key" = [])))]
pub async fn create_tenant(
    State(state): State<ApiState>,
    Auth(who): Auth,
    AppJson(body): AppJson<CreateTenantBody>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let tenant = state
        .app
        .tenants()
        .create_tenant(&who.require_operator("creating tenants")?, &body.name)?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// Sets a tenant's limits (operator key).
#[utoipa::path(patch, path = "/v1/admin/tenants/{tenant_id}", tag = "admin",
    params(("tenant_id" = String, Path)),
    request_body = PatchTenantBody,
    responses((status = 200, body = TenantView), (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn patch_tenant(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(tenant_id): Path<String>,
    AppJson(body): AppJson<PatchTenantBody>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = state
        .app
        .tenants()
        .set_limits(
            &who.require_operator("setting limits")?,
            &tenant_id,
            |mut l| {
                l.fuel = body.fuel.unwrap_or(l.fuel);
                l.memory_mib = body.memory_mib.unwrap_or(l.memory_mib);
                l.deadline_ms = body.deadline_ms.unwrap_or(l.deadline_ms);
                l.escalation_hold_s = body.escalation_hold_s.unwrap_or(l.escalation_hold_s);
                l.max_pending_escalations = body
                    .max_pending_escalations
                    .unwrap_or(l.max_pending_escalations);
                l.irreversible_gate = body.irreversible_gate.unwrap_or(l.irreversible_gate);
                l.rate_per_s = body.rate_per_s.unwrap_or(l.rate_per_s);
                l.burst = body.burst.unwrap_or(l.burst);
                l.eval_ms_per_s = body.eval_ms_per_s.unwrap_or(l.eval_ms_per_s);
                l.max_evaluations = body.max_evaluations.unwrap_or(l.max_evaluations);
                l.max_queued = body.max_queued.unwrap_or(l.max_queued);
                l.queue_ms = body.queue_ms.unwrap_or(l.queue_ms);
                l.max_policies = body.max_policies.unwrap_or(l.max_policies);
                l.max_policy_bytes = body.max_policy_bytes.unwrap_or(l.max_policy_bytes);
                l
            },
        )
        .await?;
    Ok(Json(tenant.into()))
}

/// Creates a key for a tenant (operator, or the tenant's admin). The secret is shown once.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/keys", tag = "admin",
    params(("tenant_id" = String, Path)),
    request_body = CreateKeyBody,
    responses((status = 201, body = CreatedKey), (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn create_key(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(tenant_id): Path<String>,
    AppJson(body): AppJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let role = match body.role.parse::<Role>() {
        Ok(role) if role != Role::Operator => role,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`role` must be agent, reviewer or admin",
            ));
        }
    };
    let (key, secret) = state
        .app
        .tenants()
        .create_key(
            &who.manage_keys_of(&tenant_id)?,
            role,
            &body.subject,
            body.agent_id.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key.into(),
            api_key: secret,
        }),
    ))
}

/// Most keys in one page, and the default: a tenant has as many keys as its admins make, so a
/// count bounds a page.
const KEYS_PAGE: usize = 1000;

/// Lists a page of a tenant's keys, oldest first, without secrets (operator, or the tenant's
/// admin); `next_cursor` continues it.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant_id}/keys", tag = "admin",
    params(("tenant_id" = String, Path), PageQuery),
    responses((status = 200, body = KeyList), (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn list_keys(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(tenant_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let (keys, next_cursor) = state.app.tenants().list_keys(
        &who.manage_keys_of(&tenant_id)?,
        query.cursor.as_deref(),
        query.limit.unwrap_or(KEYS_PAGE).clamp(1, KEYS_PAGE),
    )?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Revokes a key (operator, or the key's tenant's admin).
#[utoipa::path(delete, path = "/v1/admin/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn revoke_key(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(
        state.app.tenants().revoke_key(&who, &key_id).await?.into(),
    ))
}
