//! The audit chain: pages, one record, a session, verification, export, checkpoints.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;

use crate::access::Require;
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::api::wire::*;
use crate::page::Bounds;

fn record_json(record: crate::audit::Record) -> serde_json::Value {
    serde_json::to_value(record).expect("records serialize")
}

/// Reads a page of the tenant's audit chain (admin or reviewer): at most `limit` records and,
/// past the first, 4 MiB of their stored JSON; `next_after_seq` continues it.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403)),
    security(("api_key" = [])))]
pub async fn audit(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let page = state.app.audit().audit_records(
        &who.require()?,
        query.session_id.as_deref(),
        query.after_seq,
        Bounds::from_query(query.limit, 100, 1000),
    )?;
    Ok(Json(AuditPage {
        records: page.records.into_iter().map(record_json).collect(),
        next_after_seq: page.next_after_seq,
        truncated: page.truncated,
    }))
}

/// Recomputes every hash of the tenant's chain and checks it against the latest signed
/// checkpoint (admin or reviewer). Counts against the same caps as exports (429
/// `too_many_verifications`).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = VerifyView), (status = 403),
        (status = 429, description = "Too many exports and verifications running")),
    security(("api_key" = [])))]
pub async fn audit_verify(
    State(state): State<ApiState>,
    Auth(who): Auth,
) -> Result<Json<VerifyView>, ApiError> {
    Ok(Json(
        state.app.audit().verify(&who.require()?).await?.into(),
    ))
}

/// Streams the tenant's chain as JSON Lines, one stored record per line (admin or reviewer).
/// At most 16 exports and verifications run at once on a gateway and 2 per tenant (429
/// `too_many_exports` beyond, with Retry-After); an export whose client takes nothing for 30 s
/// is cut off.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    params(ExportQuery),
    responses((status = 200, content_type = "application/jsonl", body = String), (status = 403),
        (status = 429, description = "Too many exports running")),
    security(("api_key" = [])))]
pub async fn audit_export(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Query(query): Query<ExportQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let lines = state.app.audit().export(&who.require()?, query.after_seq)?;
    let body = axum::body::Body::from_stream(lines);
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
    let note = state.app.checkpoints().note(&who.require()?)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note))
}

/// The key that verifies checkpoints. Public: no key needed.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit",
    responses((status = 200, body = PublicKeyView)))]
pub async fn audit_public_key(State(state): State<ApiState>) -> Json<PublicKeyView> {
    let (verifier_key, public_key) = state.app.checkpoints().verifier();
    Json(PublicKeyView {
        verifier_key,
        public_key,
        algorithm: "ed25519".into(),
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
    Ok(Json(record_json(
        state.app.audit().audit_event(&who.require()?, &event_id)?,
    )))
}

/// A page of a session's events and the counts of the calls in it (admin or reviewer): at most
/// `limit` records and, past the first, 4 MiB of their stored JSON; `next_after_seq` continues
/// it.
#[utoipa::path(get, path = "/v1/sessions/{session_id}", tag = "audit",
    params(("session_id" = String, Path), SessionQuery),
    responses((status = 200, body = SessionView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn session(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
    Query(query): Query<SessionQuery>,
) -> Result<Json<SessionView>, ApiError> {
    let s = state.app.audit().session(
        &who.require()?,
        &session_id,
        query.after_seq,
        Bounds::from_query(query.limit, 1000, 10_000),
    )?;
    Ok(Json(SessionView {
        session_id,
        allowed: s.allowed,
        blocked: s.blocked,
        escalated: s.escalated,
        events: s.events.into_iter().map(record_json).collect(),
        next_after_seq: s.next_after_seq,
        truncated: s.truncated,
    }))
}
