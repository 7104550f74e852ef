//! Held calls: lists, waiting, decisions, and the webhooks that announce them.

use axum::Json;
use axum::extract::{Path, Query, State};

use crate::access::Require;
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::{AppJson, Auth};
use crate::api::wire::*;
use crate::page::Bounds;

/// Most escalations in one page, and the default.
const ESCALATIONS_PAGE: usize = 1000;

fn escalation_list(page: crate::escalations::EscalationPage) -> EscalationList {
    EscalationList {
        escalations: page.escalations.into_iter().map(Into::into).collect(),
        next_cursor: page.next_after.map(|id| crate::page::cursor(id.as_bytes())),
        truncated: page.truncated,
    }
}

/// Lists a page of the tenant's escalations, optionally of one status (reviewer or admin):
/// at most `limit` and, past the first, 4 MiB of their stored rows; `next_cursor` continues it.
#[utoipa::path(get, path = "/v1/escalations", tag = "escalations",
    params(EscalationQuery),
    responses((status = 200, body = EscalationList), (status = 400), (status = 403)),
    security(("api_key" = [])))]
pub async fn list_escalations(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<EscalationQuery>,
) -> Result<Json<EscalationList>, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(crate::escalations::Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "status must be pending, approved, rejected or expired",
            )
        })?),
    };
    let page = state.app.escalations().escalations(
        &who.require()?,
        status,
        query.cursor.as_deref(),
        Bounds::from_query(query.limit, ESCALATIONS_PAGE, ESCALATIONS_PAGE),
    )?;
    Ok(Json(escalation_list(page)))
}

/// Lists a page of pending escalations, oldest first (the Provenance gateway's reviewer
/// route), read through the index of pending ones; bounded and continued like
/// `GET /v1/escalations`.
#[utoipa::path(get, path = "/v1/escalations/pending", tag = "escalations",
    params(PageQuery),
    responses((status = 200, body = EscalationList), (status = 400), (status = 403)),
    security(("api_key" = [])))]
pub async fn pending_escalations(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<PageQuery>,
) -> Result<Json<EscalationList>, ApiError> {
    let page = state.app.escalations().escalations(
        &who.require()?,
        Some(crate::escalations::Status::Pending),
        query.cursor.as_deref(),
        Bounds::from_query(query.limit, ESCALATIONS_PAGE, ESCALATIONS_PAGE),
    )?;
    Ok(Json(escalation_list(page)))
}

/// One escalation: the call, the policy's reason and codes, agent, session, times.
#[utoipa::path(get, path = "/v1/escalations/{id}", tag = "escalations",
    params(("id" = String, Path)),
    responses((status = 200, body = EscalationView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn get_escalation(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<EscalationView>, ApiError> {
    Ok(Json(
        state
            .app
            .escalations()
            .escalation(&who.require()?, &id)?
            .into(),
    ))
}

/// Waits up to `timeout` seconds (at most 300) for an escalation's outcome, then answers it as
/// it stands (for an agent that returned early or lost its connection).
#[utoipa::path(get, path = "/v1/escalations/{id}/wait", tag = "escalations",
    params(("id" = String, Path), WaitQuery),
    responses((status = 200, body = WaitResponse), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn wait_escalation(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<WaitResponse>, ApiError> {
    let timeout = std::time::Duration::from_secs(query.timeout.unwrap_or(30).min(300));
    let (esc, outcome) = state
        .app
        .escalations()
        .wait_escalation(&who.require()?, &id, timeout)
        .await?;
    Ok(Json(WaitResponse {
        status: esc.status.as_str().to_owned(),
        result: outcome.into(),
    }))
}

async fn decide(
    state: &ApiState,
    who: &crate::tenants::Principal,
    id: &str,
    approve: bool,
    note: Option<String>,
) -> Result<Json<EscalationView>, ApiError> {
    Ok(Json(
        state
            .app
            .escalations()
            .decide(&who.require()?, id, approve, note)
            .await?
            .into(),
    ))
}

/// Approves an escalation: the held call goes ahead (reviewer or admin of the tenant).
#[utoipa::path(post, path = "/v1/escalations/{id}/approve", tag = "escalations",
    params(("id" = String, Path)), request_body = NoteBody,
    responses((status = 200, body = EscalationView), (status = 403), (status = 404),
        (status = 409, description = "Already decided or expired")),
    security(("api_key" = [])))]
pub async fn approve_escalation(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    AppJson(body): AppJson<NoteBody>,
) -> Result<Json<EscalationView>, ApiError> {
    decide(&state, &who, &id, true, body.note).await
}

/// Rejects an escalation: the held call is blocked with the note as its reason.
#[utoipa::path(post, path = "/v1/escalations/{id}/reject", tag = "escalations",
    params(("id" = String, Path)), request_body = NoteBody,
    responses((status = 200, body = EscalationView), (status = 403), (status = 404),
        (status = 409, description = "Already decided or expired")),
    security(("api_key" = [])))]
pub async fn reject_escalation(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    AppJson(body): AppJson<NoteBody>,
) -> Result<Json<EscalationView>, ApiError> {
    decide(&state, &who, &id, false, body.note).await
}

/// Withdraws a pending escalation: the call it holds is given up by the key that made it
/// (the MCP proxy does this when its client cancels the call). Recorded; the held call is
/// answered BLOCK `escalation_withdrawn`. Only the key that made the call.
#[utoipa::path(post, path = "/v1/escalations/{id}/withdraw", tag = "escalations",
    params(("id" = String, Path)),
    responses((status = 200, body = EscalationView), (status = 403), (status = 404),
        (status = 409, description = "Already decided or expired")),
    security(("api_key" = [])))]
pub async fn withdraw_escalation(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<EscalationView>, ApiError> {
    Ok(Json(
        state
            .app
            .escalations()
            .withdraw(&who.require()?, &id)
            .await?
            .into(),
    ))
}

/// The Provenance gateway's reviewer form. The approver is the key's subject, whatever the
/// body says.
#[utoipa::path(post, path = "/v1/escalations/{id}/decide", tag = "escalations",
    params(("id" = String, Path)), request_body = DecideBody,
    responses((status = 200, body = EscalationView), (status = 400), (status = 403), (status = 404), (status = 409)),
    security(("api_key" = [])))]
pub async fn decide_escalation(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    AppJson(body): AppJson<DecideBody>,
) -> Result<Json<EscalationView>, ApiError> {
    let approve = match body.decision.to_ascii_uppercase().as_str() {
        "APPROVE" | "ALLOW" => true,
        "REJECT" | "BLOCK" => false,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "decision must be APPROVE or REJECT",
            ));
        }
    };
    decide(&state, &who, &id, approve, body.reason).await
}

/// Sets the tenant's webhook URLs for escalation events and issues a new signing secret,
/// shown once (tenant admin).
#[utoipa::path(put, path = "/v1/webhooks", tag = "escalations",
    request_body = WebhooksBody,
    responses((status = 200, body = WebhooksView), (status = 400), (status = 403)),
    security(("api_key" = [])))]
pub async fn set_webhooks(
    State(state): State<ApiState>,
    Auth(who): Auth,
    AppJson(body): AppJson<WebhooksBody>,
) -> Result<Json<WebhooksView>, ApiError> {
    let secret = state
        .app
        .tenants()
        .set_webhooks(&who.require()?, body.urls.clone())
        .await?;
    Ok(Json(WebhooksView {
        secret: (!body.urls.is_empty()).then_some(secret),
        urls: body.urls,
    }))
}

/// The tenant's webhook URLs (tenant admin).
#[utoipa::path(get, path = "/v1/webhooks", tag = "escalations",
    responses((status = 200, body = WebhooksView), (status = 403)),
    security(("api_key" = [])))]
pub async fn get_webhooks(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<WebhooksView>, ApiError> {
    Ok(Json(WebhooksView {
        urls: state.app.tenants().webhooks(&who.require()?)?,
        secret: None,
    }))
}
