//! Route handlers: extract input, call one [`App`](crate::app::App) operation, shape the
//! answer. No policy, audit or storage logic lives here.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::ApiState;
use super::error::ApiError;
use super::extract::{AppJson, Auth, PolicyBody};
use super::reply::JsonReply;
use super::wire::*;
use crate::app::ExecuteRequest;
use crate::tenants::Role;

fn record_json(record: crate::audit::Record) -> serde_json::Value {
    serde_json::to_value(record).expect("records serialize")
}

fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if crate::valid_name(value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_request",
            format!("`{field}` must be 1 to 256 characters with no control characters"),
        ))
    }
}

/// Whether raw JSON text (valid JSON, as serde_json checked it) is an object.
fn is_object(raw: &serde_json::value::RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// Raw JSON text as the received bytes, without copying them.
fn raw_text(raw: Box<serde_json::value::RawValue>) -> String {
    Box::<str>::from(raw).into()
}

/// Asks for a decision on a tool call (Provenance wire format).
#[utoipa::path(post, path = "/v1/gateway/execute", tag = "execute",
    params(ExecuteQuery),
    request_body = ExecuteBody,
    responses(
        (status = 200, description = "The decision; recorded before it is sent. An escalated call is held until a reviewer decides (ALLOW or BLOCK), it expires (BLOCK escalation_expired), or `wait` runs out (ESCALATE, still pending)", body = ExecuteResponse),
        (status = 400, description = "Malformed request; nothing recorded"),
        (status = 401, description = "Missing or unknown key"),
        (status = 403, description = "Not an agent key, or an agent key bound to another agent"),
        (status = 413, description = "Body over 1 MiB"),
    ),
    security(("api_key" = [])))]
pub async fn execute(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<ExecuteQuery>,
    AppJson(body): AppJson<ExecuteBody>,
) -> Result<JsonReply<ExecuteResponse>, ApiError> {
    check_name("session_id", &body.session_id)?;
    check_name("agent_id", &body.agent_id)?;
    check_name("action", &body.action)?;
    if !is_object(&body.parameters) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`parameters` must be a JSON object",
        ));
    }
    // `null` is read as no context (`Option`'s `None`).
    let context = match body.context {
        None => "{}".to_owned(),
        Some(c) if is_object(&c) => raw_text(c),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`context` must be a JSON object",
            ));
        }
    };
    if let Some(hint) = &body.decision
        && !["ALLOW", "BLOCK", "ESCALATE"].contains(&hint.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`decision` must be ALLOW, BLOCK or ESCALATE",
        ));
    }
    let outcome = state
        .app
        .execute(
            &who,
            ExecuteRequest {
                session_id: body.session_id,
                agent_id: body.agent_id,
                action: body.action,
                client_hint: body.decision,
                arguments: raw_text(body.parameters),
                context,
                wait: query.wait.map(std::time::Duration::from_secs),
                target: None,
            },
        )
        .await?;
    Ok(JsonReply(outcome.into()))
}

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
    let tenant = state.app.create_tenant(&who, &body.name)?;
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
    let tenant = state.app.set_limits(&who, &tenant_id, |mut l| {
        l.fuel = body.fuel.unwrap_or(l.fuel);
        l.memory_mib = body.memory_mib.unwrap_or(l.memory_mib);
        l.deadline_ms = body.deadline_ms.unwrap_or(l.deadline_ms);
        l.escalation_hold_s = body.escalation_hold_s.unwrap_or(l.escalation_hold_s);
        l.max_pending_escalations = body
            .max_pending_escalations
            .unwrap_or(l.max_pending_escalations);
        l.irreversible_gate = body.irreversible_gate.unwrap_or(l.irreversible_gate);
        l
    })?;
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
    let role = match body.role.as_str() {
        "agent" => Role::Agent,
        "reviewer" => Role::Reviewer,
        "admin" => Role::Admin,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`role` must be agent, reviewer or admin",
            ));
        }
    };
    let (key, secret) = state
        .app
        .create_key(
            &who,
            &tenant_id,
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

/// Lists a tenant's keys, without secrets (operator, or the tenant's admin).
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant_id}/keys", tag = "admin",
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = KeyList), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn list_keys(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(tenant_id): Path<String>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.app.list_keys(&who, &tenant_id)?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(Into::into).collect(),
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
    Ok(Json(state.app.revoke_key(&who, &key_id).await?.into()))
}

/// Uploads a policy component (`application/wasm`) for the admin's tenant.
#[utoipa::path(post, path = "/v1/policies", tag = "policies",
    params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, body = UploadedPolicy),
        (status = 400, description = "Not a component, wrong world, or a forbidden import (named)"),
        (status = 403), (status = 413, description = "Over 16 MiB"),
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
        .upload_policy(&who, &query.name, bytes, query.activate)
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
    let (list, active) = state.app.list_policies(&who)?;
    Ok(Json(PolicyList {
        policies: list
            .into_iter()
            .map(|m| {
                let is_active = active.as_deref() == Some(m.policy_id.as_str());
                PolicyView::new(m, is_active)
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
    let meta = state.app.activate_policy(&who, &policy_id).await?;
    Ok(Json(PolicyView::new(meta, true)))
}

/// Reads the tenant's audit chain (admin or reviewer).
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403)),
    security(("api_key" = [])))]
pub async fn audit(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let records =
        state
            .app
            .audit_records(&who, query.session_id.as_deref(), query.after_seq, limit)?;
    let next_after_seq = (records.len() == limit)
        .then(|| records.last().map(|r| r.body.seq))
        .flatten();
    Ok(Json(AuditPage {
        records: records.into_iter().map(record_json).collect(),
        next_after_seq,
    }))
}

/// Recomputes every hash of the tenant's chain and checks it against the latest signed
/// checkpoint (admin or reviewer).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = VerifyView), (status = 403)),
    security(("api_key" = [])))]
pub async fn audit_verify(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<VerifyView>, ApiError> {
    Ok(Json(state.app.verify(&who).await?.into()))
}

/// Streams the tenant's chain as JSON Lines, one stored record per line (admin or reviewer).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    params(ExportQuery),
    responses((status = 200, content_type = "application/jsonl", body = String), (status = 403)),
    security(("api_key" = [])))]
pub async fn audit_export(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<ExportQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let lines = state.app.export(&who, query.after_seq)?;
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(lines));
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], body))
}

/// The tenant's latest signed checkpoint, a C2SP signed note (admin or reviewer).
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, content_type = "text/plain", body = String), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn audit_checkpoint(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let note = state.app.checkpoint_note(&who)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note))
}

/// The key that verifies checkpoints. Public: no key needed.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit",
    responses((status = 200, body = PublicKeyView)))]
pub async fn audit_public_key(State(state): State<ApiState>) -> Json<PublicKeyView> {
    let (verifier_key, public_key) = state.app.checkpoint_public_key();
    Json(PublicKeyView {
        verifier_key,
        public_key,
        algorithm: "ed25519",
    })
}

/// Reads one audit record by event id (admin or reviewer).
#[utoipa::path(get, path = "/v1/audit/events/{event_id}", tag = "audit",
    params(("event_id" = String, Path)),
    responses((status = 200, body = Object), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn audit_event(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(event_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(record_json(state.app.audit_event(&who, &event_id)?)))
}

/// A session's decision counts and events (admin or reviewer).
#[utoipa::path(get, path = "/v1/sessions/{session_id}", tag = "audit",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn session(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let s = state.app.session(&who, &session_id)?;
    Ok(Json(SessionView {
        session_id,
        allowed: s.allowed,
        blocked: s.blocked,
        escalated: s.escalated,
        events: s.events.into_iter().map(record_json).collect(),
    }))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: policies are loaded (they are before the listener serves) and the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    if state.app.ready() {
        (StatusCode::OK, Json(Health { status: "ok" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
            }),
        )
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.app.metrics().render(),
    )
}

/// Lists the tenant's escalations, optionally of one status (reviewer or admin).
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
    let list = state.app.escalations(&who, status)?;
    Ok(Json(EscalationList {
        escalations: list.into_iter().map(Into::into).collect(),
    }))
}

/// Lists pending escalations (the Provenance gateway's reviewer route).
#[utoipa::path(get, path = "/v1/escalations/pending", tag = "escalations",
    responses((status = 200, body = EscalationList), (status = 403)),
    security(("api_key" = [])))]
pub async fn pending_escalations(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<EscalationList>, ApiError> {
    let list = state
        .app
        .escalations(&who, Some(crate::escalations::Status::Pending))?;
    Ok(Json(EscalationList {
        escalations: list.into_iter().map(Into::into).collect(),
    }))
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
    Ok(Json(state.app.escalation(&who, &id)?.into()))
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
    let (esc, outcome) = state.app.wait_escalation(&who, &id, timeout).await?;
    Ok(Json(WaitResponse {
        status: esc.status.as_str(),
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
    Ok(Json(state.app.decide(who, id, approve, note).await?.into()))
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
    let secret = state.app.set_webhooks(&who, body.urls.clone())?;
    Ok(Json(WebhooksView {
        urls: body.urls,
        secret: Some(secret),
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
        urls: state.app.webhooks(&who)?,
        secret: None,
    }))
}

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
    Ok(Json(state.app.put_tool(&who, entry)?.into()))
}

/// The tenant's tool catalog (tenant admin or reviewer).
#[utoipa::path(get, path = "/v1/catalog", tag = "catalog",
    responses((status = 200, body = ToolList), (status = 403)),
    security(("api_key" = [])))]
pub async fn list_tools(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<ToolList>, ApiError> {
    Ok(Json(ToolList {
        tools: state.app.tools(&who)?.into_iter().map(Into::into).collect(),
    }))
}

/// Stores a credential, encrypted at rest; it is never returned (tenant admin).
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
    state.app.put_credential(&who, &name, &body.secret)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's credential names, never their values (tenant admin).
#[utoipa::path(get, path = "/v1/credentials", tag = "catalog",
    responses((status = 200, body = CredentialList), (status = 403)),
    security(("api_key" = [])))]
pub async fn list_credentials(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<CredentialList>, ApiError> {
    Ok(Json(CredentialList {
        names: state.app.credential_names(&who)?,
    }))
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
    state.app.delete_credential(&who, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Authorizes and runs a logical tool call (Tenet wire format): the policy decides with the
/// catalog's resolved target; an allowed call with a catalog entry becomes a job (202 + jobId),
/// an escalated one is answered at once (202 + reviewId), a blocked one 403.
#[utoipa::path(post, path = "/v1/execute", tag = "execute",
    request_body = TenetBody,
    responses(
        (status = 200, description = "ALLOW with nothing to run", body = Object),
        (status = 202, description = "ALLOW with a jobId, or ESCALATE with a reviewId", body = Object),
        (status = 400, description = "Malformed, or `unknown_tool`"),
        (status = 401), (status = 403, description = "BLOCK, or not an agent key"),
    ),
    security(("api_key" = [])))]
pub async fn tenet_execute(
    State(state): State<ApiState>,
    Auth(who): Auth,
    headers: axum::http::HeaderMap,
    AppJson(body): AppJson<TenetBody>,
) -> Result<
    (
        StatusCode,
        [(axum::http::HeaderName, &'static str); 1],
        String,
    ),
    ApiError,
> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, json) = match key {
        Some(key) => {
            let fingerprint = blake3::hash(
                serde_json::json!([
                    body.service,
                    body.tool_call.tool_name,
                    body.tool_call.arguments,
                    body.agent.as_ref().and_then(|a| a.agent_id.clone()),
                    body.context,
                ])
                .to_string()
                .as_bytes(),
            )
            .to_hex()
            .to_string();
            let app = state.app.clone();
            let run = async {
                match tenet_decide(&state, &who, body).await {
                    Ok((status, json)) => Ok((status.as_u16(), json.to_string())),
                    Err(ApiError::App(e)) => Err(e),
                    Err(other) => Err(crate::app::AppError::Invalid {
                        code: "invalid_request",
                        message: other.to_string(),
                    }),
                }
            };
            let (status, json) = app.idempotent(&who, &key, &fingerprint, run).await?;
            (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), json)
        }
        None => {
            let (status, json) = tenet_decide(&state, &who, body).await?;
            (status, json.to_string())
        }
    };
    Ok((status, [(header::CONTENT_TYPE, "application/json")], json))
}

async fn tenet_decide(
    state: &ApiState,
    who: &crate::tenants::Principal,
    body: TenetBody,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    check_name("service", &body.service)?;
    check_name("toolCall.toolName", &body.tool_call.tool_name)?;
    let arguments = match body.tool_call.arguments {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`toolCall.arguments` must be a JSON object",
            ));
        }
    };
    let context = match body.context {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`context` must be a JSON object",
            ));
        }
    };
    let agent_id = body
        .agent
        .and_then(|a| a.agent_id)
        .unwrap_or_else(|| "default".to_owned());
    check_name("agent.agentId", &agent_id)?;
    let session_id = context
        .get("sessionId")
        .and_then(|v| v.as_str())
        .map_or_else(|| format!("tenet:{agent_id}"), str::to_owned);
    check_name("context.sessionId", &session_id)?;
    let target =
        state
            .app
            .resolve_tool(who, &body.service, &body.tool_call.tool_name, &arguments)?;
    let outcome = state
        .app
        .execute(
            who,
            ExecuteRequest {
                session_id,
                agent_id,
                action: body.tool_call.tool_name,
                client_hint: None,
                arguments: serde_json::Value::Object(arguments).to_string(),
                context: serde_json::Value::Object(context).to_string(),
                wait: Some(std::time::Duration::ZERO),
                target,
            },
        )
        .await?;
    let status = match (outcome.decision.outcome, &outcome.job_id) {
        (crate::Outcome::Allow, Some(_)) | (crate::Outcome::Escalate, _) => StatusCode::ACCEPTED,
        (crate::Outcome::Allow, None) => StatusCode::OK,
        (crate::Outcome::Block, _) => StatusCode::FORBIDDEN,
    };
    let mut answer = serde_json::json!({
        "decision": outcome.decision.outcome.as_str(),
        "decisionId": outcome.event_id,
        "reasonCodes": outcome.decision.codes,
        "reason": outcome.decision.reason,
    });
    if let Some(job) = outcome.job_id {
        answer["jobId"] = job.into();
    }
    if outcome.decision.outcome == crate::Outcome::Escalate {
        answer["reviewId"] = outcome.escalation_id.into();
    }
    Ok((status, answer))
}

/// A downstream job's state and, once done, what the downstream answered.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "execute",
    params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn get_job(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job = state.app.job(&who, &id)?;
    Ok(Json(serde_json::json!({
        "id": job.id,
        "status": job.status,
        "execution": job.execution.map(|e| serde_json::json!({
            "status": e.status,
            "headers": e.headers,
            "body": e.body,
            "durationMs": e.duration_ms,
        })),
        "executionError": job.error,
    })))
}

/// The floor's execute: parse the body, answer ALLOW (see [`super::floor_router`]).
pub async fn floor_execute(Json(body): Json<ExecuteBody>) -> JsonReply<ExecuteResponse> {
    JsonReply(ExecuteResponse {
        decision: "ALLOW",
        reason: "floor: parsed, not evaluated".into(),
        event_id: "evt_floor".into(),
        escalation_id: None,
        actor_human_id: None,
        codes: Vec::new(),
        policy_id: None,
        session_id: body.session_id,
    })
}
