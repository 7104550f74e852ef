//! Health, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::access::Require;
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::api::wire::*;

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        ..Health::default()
    })
}

/// Readiness: policies are loaded (they are before the listener serves) and the store answers.
/// Tenants that could not be loaded are counted (`degraded_tenants`); with the operator key,
/// each is named with what failed.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(
    State(state): State<ApiState>,
    who: Option<Auth>,
) -> (StatusCode, Json<Health>) {
    let degraded = state.app.degraded();
    let operator =
        who.is_some_and(|Auth(who)| who.require_operator("reading readiness detail").is_ok());
    let mut health = Health {
        degraded_tenants: Some(degraded.count()),
        degraded: operator.then(|| {
            degraded
                .list()
                .into_iter()
                .map(|(tenant_id, reason)| DegradedTenant { tenant_id, reason })
                .collect()
        }),
        ..Health::default()
    };
    match state.app.unready() {
        None => {
            health.status = "ok".into();
            (StatusCode::OK, Json(health))
        }
        Some(reason) => {
            health.status = "unavailable".into();
            health.reason = Some(reason);
            (StatusCode::SERVICE_UNAVAILABLE, Json(health))
        }
    }
}

/// Prometheus metrics (OpenMetrics text): the operator key is required (they name every
/// tenant), unless the gateway runs with `--metrics-public`.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
              (status = 401), (status = 403)),
    security(("api_key" = [])))]
pub async fn metrics(
    State(state): State<ApiState>,
    who: Option<Auth>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.metrics_public {
        let Auth(who) = who.ok_or(ApiError::Unauthorized)?;
        who.require_operator("reading metrics")?;
    }
    let metrics = state.app.metrics();
    metrics
        .tenants_degraded
        .set(state.app.degraded().count() as i64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    ))
}
