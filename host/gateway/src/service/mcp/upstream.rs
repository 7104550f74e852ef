//! The upstream side of the relay: sending a client's message to the MCP server through the
//! egress guard with the tenant's credential, and reading its answers back within bounds.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rmcp::model::ErrorCode;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use writ_mcp::message::{self, FromServer};

use super::{CONNECT_TIMEOUT, MAX_ERROR_BYTES, McpReply, McpService, Relay, Watch, bad_upstream};
use crate::egress::Outbound;
use crate::error::Result;
use crate::service::completion::Completion;
use crate::sse::{
    MAX_MESSAGE_BYTES, SseEvent, header, is_event_stream, is_json, read_capped, sse_events,
};

impl McpService {
    /// Relays the server's answer (JSON or events) into `tx`, watching for `watch`'s message,
    /// until it ends, the client goes, or the gateway stops. A request left unanswered by a
    /// broken stream is answered with an error.
    pub(super) async fn pump(
        &self,
        relay: &Relay,
        response: reqwest::Response,
        watch: &Watch,
        tx: &mpsc::Sender<SseEvent>,
    ) {
        let status = response.status().as_u16();
        let answered = if !(200..300).contains(&status) {
            Err(format!("it answered HTTP {status}"))
        } else if is_event_stream(&response) {
            let mut events = sse_events(response);
            let mut answered = Ok(false);
            loop {
                let next = tokio::select! {
                    () = tx.closed() => break,
                    () = self.stopping.cancelled() => break,
                    next = events.next() => next,
                };
                match next {
                    None => break,
                    Some(Err(why)) => {
                        answered = Err(why);
                        break;
                    }
                    Some(Ok(event)) => {
                        if self.observe(relay, watch, &event.data) {
                            answered = Ok(true);
                        }
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                }
            }
            answered
        } else {
            match read_capped(response, MAX_MESSAGE_BYTES).await {
                Ok(body) => {
                    let text = String::from_utf8_lossy(&body).into_owned();
                    let seen = self.observe(relay, watch, &text);
                    let _ = tx.send(SseEvent::message(text)).await;
                    Ok(seen)
                }
                Err(why) => Err(why),
            }
        };
        let id = match watch {
            Watch::Call { id, .. } | Watch::ToolList(id) => Some(id),
            _ => None,
        };
        if let (Err(why), Some(id)) = (answered, id) {
            let line = message::jsonrpc_error(
                message::request_id(id),
                ErrorCode::INTERNAL_ERROR,
                format!("the MCP server's answer broke off: {why}"),
            );
            let _ = tx.send(SseEvent::message(line)).await;
        }
    }

    /// Reads a message from the server for what the relay watches: whether it was the answer.
    pub(super) fn observe(&self, relay: &Relay, watch: &Watch, text: &str) -> bool {
        let (id, value) = match message::from_server(text) {
            FromServer::Response(id, value) => (id, value),
            _ => return false,
        };
        match watch {
            Watch::ToolList(want) if *want == id => {
                self.sessions.learn_tools(
                    relay.tenant_id(),
                    &relay.server,
                    message::annotations(&value),
                );
                true
            }
            Watch::Call {
                id: want,
                event_id,
                started,
            } if *want == id => {
                let completion = Completion {
                    is_error: message::is_error(&value),
                    result_bytes: text.len() as u64,
                    duration_ms: started.elapsed().as_millis() as u64,
                };
                let (execute, scope, event_id) =
                    (self.execute.clone(), relay.scope.clone(), event_id.clone());
                tokio::spawn(async move {
                    if let Err(e) = execute.complete(&scope, &event_id, completion).await {
                        tracing::warn!(event_id, error = %e, "recording an MCP completion");
                    }
                });
                true
            }
            _ => false,
        }
    }

    /// Relays an answer that is neither a JSON message nor events: an upstream's 4xx as it
    /// is (bounded), its 5xx as 502.
    pub(super) async fn relay_other(
        &self,
        relay: &Relay,
        response: reqwest::Response,
        session: Option<String>,
    ) -> Result<McpReply> {
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            let kind = header(response.headers(), "content-type").unwrap_or_default();
            return Err(bad_upstream(format!(
                "it answered with content type `{kind}`, not JSON or events"
            )));
        }
        let json = is_json(&response);
        let body = read_capped(response, MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        tracing::info!(
            server = relay.server,
            status,
            "an MCP server refused a request"
        );
        if !json || status >= 500 {
            return Err(bad_upstream(format!("it answered HTTP {status}")));
        }
        Ok(McpReply::Json {
            status,
            session,
            body,
        })
    }

    /// Sends a request to the relay's upstream through the egress guard, with the transport's
    /// headers and the tenant's credential for that origin, nothing of the client's else.
    pub(super) async fn send(
        &self,
        relay: &Relay,
        method: reqwest::Method,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> std::result::Result<reqwest::Response, String> {
        let url = relay.upstream.parsed_url().map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        let accept = if method == reqwest::Method::GET {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        };
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static(accept));
        if body.is_some() {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let mut set = |name: &'static str, value: Option<&str>| {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        set(
            "mcp-session-id",
            relay.session.as_ref().and_then(|s| s.upstream.as_deref()),
        );
        set(
            "mcp-protocol-version",
            relay.headers.protocol_version.as_deref(),
        );
        if method == reqwest::Method::GET {
            set("last-event-id", relay.headers.last_event_id.as_deref());
        }
        if let Some(credential) = &relay.upstream.credential {
            let origin = url.origin().ascii_serialization();
            let tenant_id = relay.tenant_id();
            let bound = self
                .vault
                .origins(tenant_id, &credential.name)
                .map_err(|e| e.to_string())?
                .is_some_and(|origins| origins.contains(&origin));
            let secret = self
                .vault
                .open(tenant_id, &credential.name)
                .map_err(|e| e.to_string())?;
            let (true, Some(secret)) = (bound, secret) else {
                return Err(format!(
                    "credential `{}` is missing or no longer bound to {origin}",
                    credential.name
                ));
            };
            let mut value = HeaderValue::from_str(&credential.format.replace("{secret}", &secret))
                .map_err(|_| {
                    format!(
                        "credential `{}` is not a valid header value",
                        credential.name
                    )
                })?;
            value.set_sensitive(true);
            let name = HeaderName::from_bytes(credential.header.as_bytes())
                .map_err(|_| format!("`{}` is not a header name", credential.header))?;
            headers.insert(name, value);
        }
        self.egress
            .send(Outbound {
                method,
                url,
                headers,
                body: body.map(|b| b.to_vec()),
                connect_timeout: CONNECT_TIMEOUT,
                timeout,
                redirects: 0,
            })
            .await
            .map_err(|e| e.to_string())
    }
}
