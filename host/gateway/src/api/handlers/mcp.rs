//! The MCP gateway's Streamable HTTP endpoint, `/mcp/{name}`: an agent's MCP client, with its
//! agent key as the bearer token, reaches the remote MCP server its tenant registered as
//! `name`, every `tools/call` governed (see [`crate::service::mcp`]).

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::StreamExt as _;

use crate::access::Require as _;
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::extract::{Auth, RawJson};
use crate::service::mcp::{McpHeaders, McpReply};
use crate::sse::SseEvent;

/// Longest `Mcp-Session-Id` or `Last-Event-ID` taken.
const MAX_ID_BYTES: usize = 256;

/// Sends a JSON-RPC message of the client's to the server. A `tools/call` is decided first:
/// allowed, it is relayed; blocked, it is answered with an `isError` result; escalated, it is
/// answered with an event stream that ends with the server's result once a reviewer approves.
#[utoipa::path(post, path = "/mcp/{name}", tag = "mcp",
    params(("name" = String, Path, description = "The MCP server's name in the tenant's catalog")),
    request_body(content = Object, description = "One JSON-RPC message (or a batch without tools/call)", content_type = "application/json"),
    responses(
        (status = 200, description = "The answer: a JSON-RPC message, or an event stream (`text/event-stream`)"),
        (status = 202, description = "A notification or response, taken"),
        (status = 400, description = "Not JSON-RPC, a tools/call that cannot be read, or a batch holding one"),
        (status = 401), (status = 403, description = "Not an agent key"),
        (status = 404, description = "No such MCP server with a URL, or the session ended"),
        (status = 413, description = "Body over the JSON limit"),
        (status = 429, description = "The tenant's MCP sessions or relays are at their bound"),
        (status = 502, description = "The MCP server could not be reached or answered what is not relayed"),
    ),
    security(("api_key" = [])))]
pub async fn mcp_post(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    let reply = state
        .app
        .mcp()
        .post(&who.require()?, &name, mcp_headers(&headers)?, body)
        .await?;
    Ok(respond(reply))
}

/// Opens the server's own event stream (its requests and notifications outside any answer).
#[utoipa::path(get, path = "/mcp/{name}", tag = "mcp",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "`text/event-stream`"),
        (status = 405, description = "The server offers no such stream"),
        (status = 401), (status = 403), (status = 404), (status = 429), (status = 502),
    ),
    security(("api_key" = [])))]
pub async fn mcp_listen(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let reply = state
        .app
        .mcp()
        .listen(&who.require()?, &name, mcp_headers(&headers)?)
        .await?;
    Ok(respond(reply))
}

/// Ends a session (`Mcp-Session-Id`): the server's too; its held calls are withdrawn.
#[utoipa::path(delete, path = "/mcp/{name}", tag = "mcp",
    params(("name" = String, Path)),
    responses((status = 200), (status = 400, description = "No Mcp-Session-Id"),
        (status = 401), (status = 403), (status = 404)),
    security(("api_key" = [])))]
pub async fn mcp_end(
    State(state): State<ApiState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let reply = state
        .app
        .mcp()
        .end(&who.require()?, &name, mcp_headers(&headers)?)
        .await?;
    Ok(respond(reply))
}

/// The transport's headers, checked: printable ASCII, bounded.
fn mcp_headers(headers: &HeaderMap) -> Result<McpHeaders, ApiError> {
    let read = |name: &str, max: usize| -> Result<Option<String>, ApiError> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        match value.to_str() {
            Ok(v) if !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Some(v.to_owned()))
            }
            _ => Err(ApiError::bad_request(
                "invalid_request",
                format!("`{name}` must be 1 to {max} printable ASCII characters"),
            )),
        }
    };
    Ok(McpHeaders {
        session: read("mcp-session-id", MAX_ID_BYTES)?,
        protocol_version: read("mcp-protocol-version", 32)?,
        last_event_id: read("last-event-id", MAX_ID_BYTES)?,
    })
}

fn respond(reply: McpReply) -> Response {
    let with_session = |mut response: Response, session: Option<String>| {
        if let Some(value) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
            response.headers_mut().insert("mcp-session-id", value);
        }
        response
    };
    match reply {
        McpReply::Accepted => StatusCode::ACCEPTED.into_response(),
        McpReply::Status(status) => StatusCode::from_u16(status)
            .unwrap_or(StatusCode::BAD_GATEWAY)
            .into_response(),
        McpReply::Json {
            status,
            session,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let response = (status, [(header::CONTENT_TYPE, "application/json")], body);
            with_session(response.into_response(), session)
        }
        McpReply::Events { session, events } => {
            let events = events.map(|e| Ok::<_, Infallible>(sse_event(e)));
            let response = Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response();
            with_session(response, session)
        }
    }
}

/// An event as axum writes it; fields it would refuse (line breaks, NUL) are dropped.
fn sse_event(e: SseEvent) -> Event {
    let mut event = Event::default().data(e.data);
    if let Some(id) = e.id.filter(|i| !i.contains(['\r', '\n', '\0'])) {
        event = event.id(id);
    }
    if let Some(name) = e.event.filter(|n| !n.contains(['\r', '\n'])) {
        event = event.event(name);
    }
    if let Some(ms) = e.retry {
        event = event.retry(std::time::Duration::from_millis(ms));
    }
    event
}
