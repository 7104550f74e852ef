//! The HTTP API: the router, its OpenAPI description (generated from the same route list, so it
//! describes every route as it really is), and the state handlers share. Only this module
//! knows HTTP and JSON.

mod error;
mod extract;
mod handlers;
mod idempotency;
pub mod wire;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, status_of};
pub use extract::parse_json;

use crate::app::App;

/// Limits on request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// JSON bodies, bytes.
    pub json_bytes: usize,
    /// JSON nesting depth.
    pub json_depth: usize,
    /// Policy components, bytes: room for a Python policy (componentize-py's CPython makes
    /// components of about 19 MB); the tenant's `max_policy_bytes` bounds what it keeps.
    pub policy_bytes: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            json_bytes: 1 << 20,
            json_depth: 64,
            policy_bytes: 32 << 20,
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    app: App,
    /// `/metrics` answers without a key.
    metrics_public: bool,
    idempotency: std::sync::Arc<idempotency::Idempotency>,
    max_json_bytes: usize,
    max_json_depth: usize,
    max_policy_bytes: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Writ", description = "Runtime authority for AI agents: policy-gated tool calls with a hash-chained audit log."),
    modifiers(&KeyScheme),
)]
struct ApiDoc;

struct KeyScheme;

impl utoipa::Modify for KeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-PROVENANCE-API-KEY",
                    "The API key; `Authorization: Bearer <key>` and `X-API-Key` are accepted too",
                ))),
            );
        }
    }
}

/// The routes and their OpenAPI description.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::execute))
        .routes(routes!(handlers::tenet_execute))
        .routes(routes!(handlers::get_job))
        .routes(routes!(handlers::complete_call))
        .routes(routes!(handlers::create_tenant))
        .routes(routes!(handlers::patch_tenant))
        .routes(routes!(handlers::create_key, handlers::list_keys))
        .routes(routes!(handlers::revoke_key))
        .routes(routes!(handlers::upload_policy, handlers::list_policies))
        .routes(routes!(handlers::activate_policy))
        .routes(routes!(handlers::delete_policy))
        .routes(routes!(handlers::audit))
        .routes(routes!(handlers::audit_event))
        .routes(routes!(handlers::audit_verify))
        .routes(routes!(handlers::audit_export))
        .routes(routes!(handlers::audit_checkpoint))
        .routes(routes!(handlers::audit_public_key))
        .routes(routes!(handlers::session))
        .routes(routes!(handlers::list_escalations))
        .routes(routes!(handlers::pending_escalations))
        .routes(routes!(handlers::get_escalation))
        .routes(routes!(handlers::wait_escalation))
        .routes(routes!(handlers::approve_escalation))
        .routes(routes!(handlers::reject_escalation))
        .routes(routes!(handlers::withdraw_escalation))
        .routes(routes!(handlers::decide_escalation))
        .routes(routes!(handlers::set_webhooks, handlers::get_webhooks))
        .routes(routes!(handlers::put_tool, handlers::delete_tool))
        .routes(routes!(handlers::list_tools))
        .routes(routes!(
            handlers::put_mcp_server,
            handlers::delete_mcp_server
        ))
        .routes(routes!(handlers::list_mcp_servers))
        .routes(routes!(
            handlers::mcp_post,
            handlers::mcp_listen,
            handlers::mcp_end
        ))
        .routes(routes!(
            handlers::put_credential,
            handlers::delete_credential
        ))
        .routes(routes!(handlers::list_credentials))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .routes(routes!(handlers::metrics))
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The gateway's router; `/metrics` needs the operator key unless `metrics_public`.
pub fn router(app: App, limits: BodyLimits, metrics_public: bool) -> axum::Router {
    router_documenting(app, limits, metrics_public, None)
}

/// [`router`], with `/openapi.json` also describing `more` (routes served beside the API's).
pub fn router_documenting(
    app: App,
    limits: BodyLimits,
    metrics_public: bool,
    more: Option<utoipa::openapi::OpenApi>,
) -> axum::Router {
    let (router, mut openapi) = routes().split_for_parts();
    if let Some(more) = more {
        openapi.merge(more);
    }
    let openapi = std::sync::Arc::new(openapi);
    router
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NoRoute })
        // The extractors enforce each route's own limit and answer in JSON.
        .layer(DefaultBodyLimit::disable())
        .layer(TraceLayer::new_for_http())
        .with_state(ApiState {
            metrics_public,
            idempotency: std::sync::Arc::new(idempotency::Idempotency::new(
                app.store().clone(),
                app.clock().clone(),
            )),
            app,
            max_json_bytes: limits.json_bytes,
            max_json_depth: limits.json_depth,
            max_policy_bytes: limits.policy_bytes,
        })
}
