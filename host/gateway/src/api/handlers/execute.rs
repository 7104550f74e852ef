//! Tool calls: the Provenance and Tenet execute routes, and the jobs they start.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};

use crate::access::{Agent, Require, TenantScope};
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::{AppJson, Auth};
use crate::api::wire::*;
use crate::app::ExecuteRequest;
use crate::error::AppError;
use crate::service::jobs::JobStart;

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
        .execute()
        .execute(
            &who.require()?,
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
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_request",
                        "Idempotency-Key must be printable ASCII text",
                    )
                })?
                .to_owned(),
        ),
    };
    let (status, json, job) = match key {
        Some(key) => {
            let scope: TenantScope<Agent> = who.require()?;
            // A stored answer goes only to a key that could have made the call.
            if let Some(bound) = &who.agent_id
                && *bound != agent_of(&body)
            {
                return Err(AppError::Forbidden(format!(
                    "this key may only act as agent `{bound}`"
                ))
                .into());
            }
            let fingerprint = blake3::hash(
                serde_json::json!([
                    who.key_id,
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
            let run = async {
                match tenet_decide(&state, &who, body).await {
                    Ok((status, json, job)) => Ok((status.as_u16(), json.to_string(), job)),
                    Err(ApiError::App(e)) => Err(e),
                    Err(other) => Err(AppError::invalid(other.to_string())),
                }
            };
            let (status, json, job) = state
                .idempotency
                .run(&scope, &key, &fingerprint, run)
                .await?;
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                json,
                job.flatten(),
            )
        }
        None => {
            let (status, json, job) = tenet_decide(&state, &who, body).await?;
            (status, json.to_string(), job)
        }
    };
    // The answer (stored, when idempotent) is durable: the downstream may run.
    if let Some(job) = job {
        job.start();
    }
    Ok((status, [(header::CONTENT_TYPE, "application/json")], json))
}

/// The agent a Tenet call names (`default` when none).
fn agent_of(body: &TenetBody) -> &str {
    body.agent
        .as_ref()
        .and_then(|a| a.agent_id.as_deref())
        .unwrap_or("default")
}

/// Decides a Tenet call; an allowed call's job is handed back unstarted.
async fn tenet_decide(
    state: &ApiState,
    who: &crate::tenants::Principal,
    body: TenetBody,
) -> Result<(StatusCode, serde_json::Value, Option<JobStart>), ApiError> {
    let agent_id = agent_of(&body).to_owned();
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
    check_name("agent.agentId", &agent_id)?;
    let session_id = context
        .get("sessionId")
        .and_then(|v| v.as_str())
        .map_or_else(|| format!("tenet:{agent_id}"), str::to_owned);
    check_name("context.sessionId", &session_id)?;
    let target = state.app.catalog().resolve_tool(
        &who.require()?,
        &body.service,
        &body.tool_call.tool_name,
        &arguments,
    )?;
    let outcome = state
        .app
        .execute()
        .execute(
            &who.require()?,
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
        (writ_runtime::Outcome::Allow, Some(_)) | (writ_runtime::Outcome::Escalate, _) => {
            StatusCode::ACCEPTED
        }
        (writ_runtime::Outcome::Allow, None) => StatusCode::OK,
        (writ_runtime::Outcome::Block, _) => StatusCode::FORBIDDEN,
    };
    let mut answer = serde_json::json!({
        "decision": outcome.decision.outcome.as_str(),
        "decisionId": outcome.event_id,
        "reasonCodes": outcome.decision.codes,
        "reason": outcome.decision.reason,
    });
    if let Some(job) = &outcome.job_id {
        answer["jobId"] = job.clone().into();
    }
    if outcome.decision.outcome == writ_runtime::Outcome::Escalate {
        answer["reviewId"] = outcome.escalation_id.into();
    }
    Ok((status, answer, outcome.job))
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
    let job = state.app.jobs().get(&who.require()?, &id)?;
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

/// Records how an allowed call went where it ran (the MCP proxy reports each forwarded
/// `tools/call` when the server answers): whether it failed, the result's size and the time it
/// took, never the result. The key that made the call, once per call.
#[utoipa::path(post, path = "/v1/events/{event_id}/completion", tag = "execute",
    params(("event_id" = String, Path, description = "The decision (or approval) that allowed the call")),
    request_body = CompletionBody,
    responses((status = 201, body = CompletionView), (status = 403), (status = 404),
        (status = 409, description = "Not an allowed call, or already reported")),
    security(("api_key" = [])))]
pub async fn complete_call(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(event_id): Path<String>,
    AppJson(body): AppJson<CompletionBody>,
) -> Result<(StatusCode, Json<CompletionView>), ApiError> {
    let completion = crate::service::completion::Completion {
        is_error: body.is_error,
        result_bytes: body.result_bytes,
        duration_ms: body.duration_ms,
    };
    let record = state
        .app
        .execute()
        .complete(&who.require()?, &event_id, completion)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CompletionView {
            event_id: record.body.event_id,
        }),
    ))
}
