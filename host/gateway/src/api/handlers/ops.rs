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
    })
}

/// Readiness: policies are loaded (they are before the listener serves) and the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    if state.app.ready() {
        (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
            }),
        )
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
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.app.metrics().render(),
    ))
}
