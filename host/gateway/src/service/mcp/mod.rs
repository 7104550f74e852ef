//! The MCP gateway over Streamable HTTP: `/mcp/{name}` relays an agent's MCP client to the
//! remote server its tenant registered under `name`, governing every `tools/call` as the stdio
//! proxy (`writ mcp`) does, with the services in-process.
//!
//! - A `tools/call` is evaluated as an execute of `<name>.<tool>`. ALLOW: relayed, and its
//!   result's completion recorded. BLOCK: answered with an `isError` result; the server never
//!   sees it. ESCALATE: answered with an event stream that carries progress while the call is
//!   held, then, approved, exactly the held request's answer from the server, or an `isError`
//!   result. A `notifications/cancelled` for it, the client closing the stream, or the end of
//!   its session withdraws it.
//! - Everything else is relayed unchanged both ways; `tools/list` answers are read for the
//!   tools' annotations, passed to policies as hints.
//! - The upstream request is made through the egress guard, with only the headers the
//!   transport needs and the tenant's credential for that origin; the agent's key and the
//!   upstream's session id never cross. Answers are bounded: a JSON body or an event's data at
//!   most [`MAX_MESSAGE_BYTES`] (`crate::sse`).

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rmcp::model::ErrorCode;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use writ_mcp::message::{self, FromClient, ToolCall};
use writ_runtime::decision::Outcome;

use super::escalations::EscalationService;
use super::execute::{ExecuteOutcome, ExecuteRequest, ExecuteService};
use crate::access::{Agent, Member, Require as _, TenantScope};
use crate::egress::Egress;
use crate::error::{AppError, Result};
use crate::escalations::Status;
use crate::mcp_servers::{McpServers, McpUpstream};
use crate::mcp_sessions::{McpSession, McpSessions, RelaySlot, SessionError};
use crate::sse::{MAX_MESSAGE_BYTES, SseEvent, header, is_event_stream, is_json, read_capped};
use crate::vault::Vault;

mod upstream;

/// Largest error body of an upstream server relayed to the client.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// Time to connect to an upstream server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for an upstream request and its whole answer (a long tool call streams within it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Time for the server's own event stream (GET); the client reconnects after.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Events waiting for a client that reads slowly.
const QUEUED: usize = 16;

/// A stream of events for the client.
pub type Events = Pin<Box<dyn Stream<Item = SseEvent> + Send>>;

/// What `/mcp/{name}` answers.
pub enum McpReply {
    /// 202: a notification or a response, taken.
    Accepted,
    /// A JSON body with a status (a JSON-RPC message, or an upstream's error relayed).
    Json {
        status: u16,
        /// The session issued by this answer (to `initialize`).
        session: Option<String>,
        body: Bytes,
    },
    /// An event stream.
    Events {
        /// The session issued by this answer (to `initialize`).
        session: Option<String>,
        events: Events,
    },
    /// A status without a body (the end of a session; a server without a GET stream: 405).
    Status(u16),
}

/// The MCP headers of a request to `/mcp/{name}`.
#[derive(Debug, Clone, Default)]
pub struct McpHeaders {
    /// `Mcp-Session-Id`.
    pub session: Option<String>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<String>,
    /// `Last-Event-ID` (GET).
    pub last_event_id: Option<String>,
}

/// The MCP gateway's Streamable HTTP side. Cheap to clone.
#[derive(Clone)]
pub struct McpService {
    pub(crate) execute: ExecuteService,
    pub(crate) escalations: EscalationService,
    pub(crate) servers: McpServers,
    pub(crate) sessions: McpSessions,
    pub(crate) vault: Vault,
    pub(crate) egress: Egress,
    /// Cancelled when the gateway stops: held calls are withdrawn, streams end.
    pub(crate) stopping: CancellationToken,
    /// A held call's client hears progress this often (when it asked for progress).
    pub(crate) progress_every: Duration,
}

/// One request being relayed: who, to which server, in which session.
struct Relay {
    scope: TenantScope<Agent>,
    server: String,
    upstream: McpUpstream,
    session: Option<McpSession>,
    headers: McpHeaders,
    _slot: RelaySlot,
}

impl Relay {
    fn tenant_id(&self) -> &str {
        self.scope.tenant_id()
    }

    fn session_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.id.as_str())
    }
}

/// Which answer of the upstream the relay watches for, and what it does with it.
#[derive(Debug, Clone)]
enum Watch {
    /// Nothing: relayed as it comes.
    Nothing,
    /// The answer to `initialize`: a session is issued.
    Initialize(Option<(String, String)>),
    /// The answer to `tools/list` (request id key): its annotations are learned.
    ToolList(String),
    /// The answer to an allowed `tools/call`: its completion is recorded.
    Call {
        id: String,
        event_id: String,
        started: Instant,
    },
}

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => Self::NotFound("MCP session"),
            SessionError::Full => Self::Busy {
                code: "mcp_sessions_full",
                retry_after_s: 60,
                message: e.to_string(),
            },
            SessionError::Busy => Self::Busy {
                code: "mcp_busy",
                retry_after_s: 1,
                message: e.to_string(),
            },
        }
    }
}

impl McpService {
    /// A message from the client (`POST /mcp/{name}`).
    pub async fn post(
        &self,
        scope: &TenantScope<Agent>,
        server: &str,
        headers: McpHeaders,
        body: Bytes,
    ) -> Result<McpReply> {
        let relay = self.relay(scope, server, headers)?;
        let Ok(text) = std::str::from_utf8(&body) else {
            return Ok(jsonrpc_error_reply(
                400,
                None,
                ErrorCode::PARSE_ERROR,
                "the body is not UTF-8".into(),
            ));
        };
        match message::from_client(text) {
            FromClient::Call(call) => self.govern(relay, call, body).await,
            FromClient::BadCall(id, why) => {
                let id = id.and_then(|v| message::request_id(&v.to_string()));
                Ok(jsonrpc_error_reply(400, id, ErrorCode::INVALID_PARAMS, why))
            }
            FromClient::Refused(why) => Ok(jsonrpc_error_reply(
                400,
                None,
                ErrorCode::INVALID_REQUEST,
                why,
            )),
            FromClient::Cancelled(request) => {
                let cancelled = self.sessions.cancel(
                    relay.tenant_id(),
                    &relay.scope.key().key_id,
                    relay.session_id(),
                    &request,
                );
                if cancelled {
                    // Held here, never sent on: the server has nothing to cancel.
                    Ok(McpReply::Accepted)
                } else {
                    self.forward(relay, body, Watch::Nothing).await
                }
            }
            FromClient::Initialize(_, client) => {
                self.forward(relay, body, Watch::Initialize(client)).await
            }
            FromClient::Request(id, method) if method == "tools/list" => {
                self.forward(relay, body, Watch::ToolList(id)).await
            }
            FromClient::Request(..) | FromClient::Other => {
                self.forward(relay, body, Watch::Nothing).await
            }
        }
    }

    /// The server's own event stream (`GET /mcp/{name}`): requests and notifications it sends
    /// outside any answer, relayed.
    pub async fn listen(
        &self,
        scope: &TenantScope<Agent>,
        server: &str,
        headers: McpHeaders,
    ) -> Result<McpReply> {
        let relay = self.relay(scope, server, headers)?;
        let response = match self
            .send(&relay, reqwest::Method::GET, None, STREAM_TIMEOUT)
            .await
        {
            Ok(response) => response,
            Err(why) => return Err(unreachable_upstream(why)),
        };
        match response.status().as_u16() {
            405 => Ok(McpReply::Status(405)),
            200..=299 if is_event_stream(&response) => {
                Ok(self.events(relay, None, |this, relay, tx| async move {
                    this.pump(&relay, response, &Watch::Nothing, &tx).await;
                }))
            }
            _ => self.relay_other(&relay, response, None).await,
        }
    }

    /// Ends the client's session (`DELETE /mcp/{name}`): the upstream's too, when it issued
    /// one; the session's held calls are withdrawn.
    pub async fn end(
        &self,
        scope: &TenantScope<Agent>,
        server: &str,
        headers: McpHeaders,
    ) -> Result<McpReply> {
        if headers.session.is_none() {
            return Err(AppError::Invalid {
                code: "mcp_session_required",
                message: "DELETE ends a session: send its Mcp-Session-Id".into(),
            });
        }
        let relay = self.relay(scope, server, headers)?;
        let session = relay.session.clone().expect("checked above");
        if session.upstream.is_some()
            && let Err(why) = self
                .send(&relay, reqwest::Method::DELETE, None, CONNECT_TIMEOUT)
                .await
        {
            tracing::warn!(server, error = %why, "ending the upstream MCP session");
        }
        self.sessions.end(&session);
        Ok(McpReply::Status(200))
    }

    /// Checks the server and session of a request and takes a relay slot.
    fn relay(
        &self,
        scope: &TenantScope<Agent>,
        server: &str,
        headers: McpHeaders,
    ) -> Result<Relay> {
        let tenant_id = scope.tenant_id();
        let upstream = self
            .servers
            .get(tenant_id, server)
            .and_then(|s| s.upstream)
            .ok_or(AppError::NotFound("MCP server"))?;
        let slot = self.sessions.relay_slot(tenant_id)?;
        let session = headers
            .session
            .as_deref()
            .map(|id| {
                self.sessions
                    .get(tenant_id, server, &scope.key().key_id, id)
            })
            .transpose()?;
        Ok(Relay {
            scope: scope.clone(),
            server: server.to_owned(),
            upstream,
            session,
            headers,
            _slot: slot,
        })
    }

    /// Decides a `tools/call`, then relays it, answers it, or holds it.
    async fn govern(&self, relay: Relay, call: ToolCall, body: Bytes) -> Result<McpReply> {
        let client = call
            .client
            .clone()
            .or_else(|| relay.session.as_ref().and_then(|s| s.client.clone()));
        let annotations = self
            .sessions
            .annotations(relay.tenant_id(), &relay.server, &call.name);
        let context = message::context(
            &relay.server,
            &call.name,
            client.as_ref(),
            annotations,
            "streamable-http",
        );
        let key = relay.scope.key();
        let request = ExecuteRequest {
            session_id: relay
                .session_id()
                .map_or_else(|| format!("mcp-{}", relay.server), str::to_owned),
            agent_id: key.agent_id.clone().unwrap_or_else(|| key.key_id.clone()),
            action: format!("{}.{}", relay.server, call.name),
            client_hint: None,
            arguments: Value::Object(call.arguments.clone()).to_string(),
            context: context.to_string(),
            wait: Some(Duration::ZERO),
            target: None,
        };
        let outcome = match self.execute.execute(&relay.scope, request).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let text = format!(
                    "Writ could not decide this call, so it was not sent to the server: {e}"
                );
                return Ok(json_reply(200, message::error_result(call.id, text)));
            }
        };
        let d = &outcome.decision;
        match d.outcome {
            Outcome::Allow => {
                let watch = Watch::Call {
                    id: message::id_key(&id_value(&call)),
                    event_id: outcome.event_id.clone(),
                    started: Instant::now(),
                };
                self.forward(relay, body, watch).await
            }
            Outcome::Block => {
                let text = message::blocked_text(&d.reason, &d.codes, &outcome.event_id);
                Ok(json_reply(200, message::error_result(call.id, text)))
            }
            Outcome::Escalate => Ok(self.hold(relay, call, body, outcome)),
        }
    }

    /// Answers a held call with an event stream: progress while it is held, then the server's
    /// answer to exactly the held request once approved, or an `isError` result.
    fn hold(&self, relay: Relay, call: ToolCall, body: Bytes, opened: ExecuteOutcome) -> McpReply {
        let Some(esc) = opened.escalation_id.clone() else {
            let text = "Writ escalated this call without an escalation id; it was not sent".into();
            return json_reply(200, message::error_result(call.id, text));
        };
        let cancel = self.stopping.child_token();
        let held = self.sessions.hold(
            relay.tenant_id(),
            &relay.scope.key().key_id,
            relay.session_id(),
            &message::id_key(&id_value(&call)),
            cancel.clone(),
        );
        self.events(relay, None, move |this, relay, tx| async move {
            let _held = held;
            let mut step = 0.0;
            let progress = async |step: &mut f64, text: String| {
                if let Some(token) = &call.progress {
                    *step += 1.0;
                    let line = message::progress(token.clone(), *step, text);
                    let _ = tx.send(SseEvent::message(line)).await;
                }
            };
            progress(&mut step, message::held_text(&esc, &opened.decision.reason)).await;
            let member = match relay.scope.key().require::<Member>() {
                Ok(member) => member,
                Err(e) => {
                    tracing::error!(error = %e, "an agent key is not a member");
                    return;
                }
            };
            loop {
                let waited = tokio::select! {
                    () = tx.closed() => None,
                    () = cancel.cancelled() => None,
                    waited = this.escalations.wait_escalation(&member, &esc, this.progress_every) => Some(waited),
                };
                let Some(waited) = waited else {
                    // The client went away or cancelled, its session ended, or the gateway is
                    // stopping: nobody is left to receive the call's result.
                    this.withdraw(&relay, &esc).await;
                    return;
                };
                match waited {
                    Ok((e, _)) if e.status == Status::Pending => {
                        progress(&mut step, message::still_held_text(&esc)).await;
                    }
                    Ok((e, approved)) if e.status == Status::Approved => {
                        let watch = Watch::Call {
                            id: message::id_key(&id_value(&call)),
                            event_id: approved.event_id,
                            started: Instant::now(),
                        };
                        match this
                            .send(&relay, reqwest::Method::POST, Some(body), REQUEST_TIMEOUT)
                            .await
                        {
                            Ok(response) => this.pump(&relay, response, &watch, &tx).await,
                            Err(why) => {
                                let line = message::jsonrpc_error(
                                    Some(call.id.clone()),
                                    ErrorCode::INTERNAL_ERROR,
                                    format!("approved, but the MCP server could not be reached: {why}"),
                                );
                                let _ = tx.send(SseEvent::message(line)).await;
                            }
                        }
                        return;
                    }
                    Ok((e, ended)) => {
                        let d = &ended.decision;
                        let text = message::not_run_text(
                            &esc,
                            e.status.as_str(),
                            ended.actor_human_id.as_deref(),
                            &d.reason,
                            &d.codes,
                            &ended.event_id,
                        );
                        let line = message::error_result(call.id.clone(), text);
                        let _ = tx.send(SseEvent::message(line)).await;
                        return;
                    }
                    Err(e) => {
                        let text = format!(
                            "Writ could not follow this held call (escalation {esc}), so it was not sent to the server: {e}"
                        );
                        let line = message::error_result(call.id.clone(), text);
                        let _ = tx.send(SseEvent::message(line)).await;
                        this.withdraw(&relay, &esc).await;
                        return;
                    }
                }
            }
        })
    }

    /// Withdraws a held call nobody waits for (a reviewer may have decided it meanwhile).
    async fn withdraw(&self, relay: &Relay, esc: &str) {
        if let Err(e) = self.escalations.withdraw(&relay.scope, esc).await {
            tracing::info!(escalation = %esc, error = %e, "withdrawing a held MCP call");
        }
    }

    /// Sends the client's message to the server and relays its answer.
    async fn forward(&self, relay: Relay, body: Bytes, watch: Watch) -> Result<McpReply> {
        let response = match self
            .send(
                &relay,
                reqwest::Method::POST,
                Some(body.clone()),
                REQUEST_TIMEOUT,
            )
            .await
        {
            Ok(response) => response,
            Err(why) => {
                return Ok(match request_id_of(&body) {
                    Some(id) => jsonrpc_error_reply(
                        502,
                        Some(id),
                        ErrorCode::INTERNAL_ERROR,
                        format!("the MCP server could not be reached: {why}"),
                    ),
                    None => return Err(unreachable_upstream(why)),
                });
            }
        };
        let status = response.status().as_u16();
        if status == 404
            && let Some(session) = &relay.session
        {
            // The server ended its session: so does the gateway, and the client starts anew.
            self.sessions.end(session);
            return Err(AppError::NotFound("MCP session"));
        }
        if status == 202 {
            return Ok(McpReply::Accepted);
        }
        let session = match (&watch, status) {
            (Watch::Initialize(client), 200..=299) => Some(self.sessions.open(
                relay.tenant_id(),
                &relay.server,
                &relay.scope.key().key_id,
                header(response.headers(), "mcp-session-id"),
                client.clone(),
            )?),
            _ => None,
        };
        let session_id = session.as_ref().map(|s| s.id.clone());
        if !(200..300).contains(&status) {
            return self.relay_other(&relay, response, session_id).await;
        }
        if is_event_stream(&response) {
            return Ok(
                self.events(relay, session_id, move |this, relay, tx| async move {
                    this.pump(&relay, response, &watch, &tx).await;
                }),
            );
        }
        if !is_json(&response) {
            return self.relay_other(&relay, response, session_id).await;
        }
        match read_capped(response, MAX_MESSAGE_BYTES).await {
            Ok(body) => {
                if let Ok(text) = std::str::from_utf8(&body) {
                    self.observe(&relay, &watch, text);
                }
                Ok(McpReply::Json {
                    status: 200,
                    session: session_id,
                    body,
                })
            }
            Err(why) => Err(bad_upstream(format!("its answer: {why}"))),
        }
    }

    /// An event stream fed by `feed`, which runs on its own task holding the relay (and its
    /// slot) until it returns.
    fn events<F, Fut>(&self, relay: Relay, session: Option<String>, feed: F) -> McpReply
    where
        F: FnOnce(Self, Relay, mpsc::Sender<SseEvent>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUED);
        tokio::spawn(feed(self.clone(), relay, tx));
        McpReply::Events {
            session,
            events: Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        }
    }
}

/// The request id of a JSON-RPC request, if the body is one.
fn request_id_of(body: &[u8]) -> Option<rmcp::model::RequestId> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("method")?;
    message::request_id(&value.get("id")?.to_string())
}

/// A call's id as JSON.
fn id_value(call: &ToolCall) -> Value {
    serde_json::to_value(&call.id).unwrap_or(Value::Null)
}

fn json_reply(status: u16, line: String) -> McpReply {
    McpReply::Json {
        status,
        session: None,
        body: Bytes::from(line),
    }
}

fn jsonrpc_error_reply(
    status: u16,
    id: Option<rmcp::model::RequestId>,
    code: ErrorCode,
    message: String,
) -> McpReply {
    json_reply(status, message::jsonrpc_error(id, code, message))
}

fn unreachable_upstream(why: String) -> AppError {
    AppError::BadGateway {
        code: "mcp_upstream_unreachable",
        message: format!("the MCP server could not be reached: {why}"),
    }
}

fn bad_upstream(why: String) -> AppError {
    AppError::BadGateway {
        code: "mcp_upstream_invalid",
        message: format!("the MCP server's answer was refused: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_of_a_notification_or_response_is_none() {
        assert!(
            request_id_of(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_none()
        );
        assert!(request_id_of(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).is_none());
        assert!(request_id_of(br#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#).is_some());
    }
}
