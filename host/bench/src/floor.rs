//! The floor the gateway is measured against: `POST /v1/gateway/execute` parsing the same JSON
//! body as the gateway and answering a fixed ALLOW in the same shape, through the same
//! `JsonReply`, with no key check, evaluation or audit: what serving the route costs on this
//! machine at all.

use axum::Json;
use axum::routing::post;
use writ_wire::{ExecuteBody, ExecuteResponse, JsonReply, Verdict};

/// The floor's router, served by `writ bench-floor` in a process of its own.
pub fn router() -> axum::Router {
    axum::Router::new().route("/v1/gateway/execute", post(execute))
}

async fn execute(Json(body): Json<ExecuteBody>) -> JsonReply<ExecuteResponse> {
    JsonReply(ExecuteResponse {
        decision: Verdict::Allow,
        reason: "floor: parsed, not evaluated".into(),
        event_id: "evt_floor".into(),
        escalation_id: None,
        actor_human_id: None,
        codes: Vec::new(),
        policy_id: None,
        session_id: body.session_id,
    })
}
