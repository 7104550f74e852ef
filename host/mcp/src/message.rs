//! What a proxy reads in a message, and the messages it writes itself, for both ways in (the
//! stdio proxy and the gateway's Streamable HTTP endpoint). Messages it does not act on are
//! passed on as they came; the rest are parsed with the SDK's types.

use rmcp::model::{
    CallToolResult, ClientJsonRpcMessage, ClientRequest, ContentBlock, ErrorCode, ErrorData,
    GetMeta as _, JsonRpcMessage, JsonRpcRequest, NumberOrString, ProgressNotification,
    ProgressNotificationParam, ProgressToken, RequestId, ServerJsonRpcMessage, ServerNotification,
    ServerResult,
};
use serde_json::{Map, Value};

/// A request id as a map key: its JSON text (`1` and `"1"` differ, as they do in JSON-RPC).
pub type IdKey = String;

/// The key of `id`.
pub fn id_key(id: &Value) -> IdKey {
    id.to_string()
}

/// A `tools/call` request, parsed.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: RequestId,
    pub name: String,
    pub arguments: Map<String, Value>,
    pub progress: Option<ProgressToken>,
    /// The client as a 2026-07-28 request names itself in `_meta` (name, version).
    pub client: Option<(String, String)>,
}

/// What a line from the client is, to the proxy.
#[derive(Debug)]
pub enum FromClient {
    /// A `tools/call` request: decided before anything is sent.
    Call(ToolCall),
    /// A `tools/call` the proxy cannot read: refused with this error, never forwarded.
    BadCall(Option<Value>, String),
    /// `notifications/cancelled` for request `id`.
    Cancelled(IdKey),
    /// `initialize`, with the client's name and version.
    Initialize(IdKey, Option<(String, String)>),
    /// Another request: forwarded; its answer is awaited under its id.
    Request(IdKey, String),
    /// A notification, a response to the server, or anything else valid: forwarded.
    Other,
    /// Not JSON, or a batch that holds a `tools/call`: refused.
    Refused(String),
}

/// Reads a line from the client.
pub fn from_client(line: &str) -> FromClient {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return FromClient::Refused(format!("not JSON: {e}")),
    };
    if let Value::Array(items) = &value {
        // Batches (protocol 2025-03-26 only) pass on unless one would smuggle a tool call.
        return if items
            .iter()
            .any(|m| m.get("method") == Some(&"tools/call".into()))
        {
            FromClient::Refused(
                "a batch holding a tools/call cannot be governed; send it alone".into(),
            )
        } else {
            FromClient::Other
        };
    }
    let id = value.get("id").cloned();
    let Some(method) = value.get("method").and_then(Value::as_str) else {
        return FromClient::Other;
    };
    match (method, id) {
        ("tools/call", id) => parse_call(line, id),
        ("notifications/cancelled", _) => value
            .pointer("/params/requestId")
            .map_or(FromClient::Other, |id| FromClient::Cancelled(id_key(id))),
        ("initialize", Some(id)) => {
            let info = value.pointer("/params/clientInfo");
            let field = |k: &str| info.and_then(|i| i.get(k)).and_then(Value::as_str);
            let client =
                field("name").map(|n| (n.to_owned(), field("version").unwrap_or("").to_owned()));
            FromClient::Initialize(id_key(&id), client)
        }
        (method, Some(id)) => FromClient::Request(id_key(&id), method.to_owned()),
        _ => FromClient::Other,
    }
}

fn parse_call(line: &str, id: Option<Value>) -> FromClient {
    let Some(raw_id) = id else {
        return FromClient::BadCall(None, "tools/call must be a request (with an id)".into());
    };
    let parsed = serde_json::from_str::<ClientJsonRpcMessage>(line);
    match parsed {
        Ok(JsonRpcMessage::Request(JsonRpcRequest { id, request, .. })) => {
            let meta = request.get_meta();
            let (progress, client) = (
                meta.get_progress_token(),
                meta.client_info()
                    .map(|i| (i.name.to_string(), i.version.to_string())),
            );
            match request {
                ClientRequest::CallToolRequest(call) => FromClient::Call(ToolCall {
                    id,
                    name: call.params.name.to_string(),
                    arguments: call.params.arguments.clone().unwrap_or_default(),
                    progress,
                    client,
                }),
                _ => FromClient::BadCall(
                    Some(raw_id),
                    "tools/call needs params with a tool name".into(),
                ),
            }
        }
        // The SDK reads a tools/call it cannot parse as a custom request: refused here.
        Ok(_) => FromClient::BadCall(Some(raw_id), "tools/call must be a request".into()),
        Err(e) => FromClient::BadCall(Some(raw_id), format!("tools/call does not parse: {e}")),
    }
}

/// What a line from the server is, to the proxy.
#[derive(Debug)]
pub enum FromServer {
    /// A response (result or error) to the client's request `id`.
    Response(IdKey, Value),
    /// Responses in a batch.
    Batch(Vec<IdKey>),
    /// A request or notification of the server's.
    Other,
    /// Not JSON-RPC.
    Invalid(String),
}

/// Reads a line from the server.
pub fn from_server(line: &str) -> FromServer {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return FromServer::Invalid(format!("not JSON: {e}")),
    };
    match value {
        Value::Array(items) => FromServer::Batch(
            items
                .iter()
                .filter(|m| m.get("method").is_none())
                .filter_map(|m| m.get("id").map(id_key))
                .collect(),
        ),
        Value::Object(ref o) if o.get("jsonrpc") != Some(&"2.0".into()) => {
            FromServer::Invalid("not JSON-RPC 2.0".into())
        }
        Value::Object(ref o) if o.get("method").is_none() => match o.get("id") {
            Some(id) => FromServer::Response(id_key(id), value.clone()),
            None => FromServer::Invalid("a response without an id".into()),
        },
        Value::Object(_) => FromServer::Other,
        _ => FromServer::Invalid("not a JSON-RPC message".into()),
    }
}

/// The tools' annotations in a `tools/list` result, by tool name.
pub fn annotations(result: &Value) -> Vec<(String, Value)> {
    result
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    let name = t.get("name")?.as_str()?.to_owned();
                    Some((name, t.get("annotations").cloned().unwrap_or(Value::Null)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a response is a failed tool call: a JSON-RPC error or `isError: true`.
pub fn is_error(response: &Value) -> bool {
    response.get("error").is_some()
        || response.pointer("/result/isError") == Some(&Value::Bool(true))
}

/// A `CallToolResult` with `isError` and one text block, as the line the client reads.
pub fn error_result(id: RequestId, text: String) -> String {
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    // Clients of the protocols before 2026-07-28 do not know `resultType`.
    result.result_type = None;
    let message = ServerJsonRpcMessage::response(ServerResult::CallToolResult(result), id);
    serde_json::to_string(&message).expect("a result serializes")
}

/// A JSON-RPC error answering `id` (`null` when the request's id could not be read).
pub fn jsonrpc_error(id: Option<RequestId>, code: ErrorCode, message: String) -> String {
    let message = ServerJsonRpcMessage::error(ErrorData::new(code, message, None), id);
    serde_json::to_string(&message).expect("an error serializes")
}

/// The context a tool call is evaluated with: the MCP server, the tool, the client (from
/// `initialize` or the request's `_meta`), how the call came in, and the tool's annotations
/// from the server's `tools/list`, passed on as the untrusted hints they are.
pub fn context(
    server: &str,
    tool: &str,
    client: Option<&(String, String)>,
    annotations: Value,
    transport: &str,
) -> Value {
    serde_json::json!({
        "mcp": {
            "server": server,
            "tool": tool,
            "client": client.map(|(name, version)| serde_json::json!({"name": name, "version": version})),
            "transport": transport,
            "annotations": annotations,
            "annotations_source": "the MCP server's tools/list (hints, not verified)",
        }
    })
}

/// What a blocked call's client reads: the reason, the codes and the event id.
pub fn blocked_text(reason: &str, codes: &[String], event_id: &str) -> String {
    let codes = if codes.is_empty() {
        "none".to_owned()
    } else {
        codes.join(", ")
    };
    format!("Blocked by Writ: {reason} (codes: {codes}; event {event_id})")
}

/// What the client of a held call that will not run reads: how its escalation ended.
pub fn not_run_text(
    escalation_id: &str,
    status: &str,
    decided_by: Option<&str>,
    reason: &str,
    codes: &[String],
    event_id: &str,
) -> String {
    let by = decided_by.map_or(String::new(), |a| format!(" by {a}"));
    format!(
        "Not run: escalation {escalation_id} was {status}{by}: {reason} (codes: {}; event {event_id})",
        codes.join(", ")
    )
}

/// The first progress text of a held call.
pub fn held_text(escalation_id: &str, reason: &str) -> String {
    format!("Held for a human reviewer (escalation {escalation_id}): {reason}")
}

/// The progress text of a call still held.
pub fn still_held_text(escalation_id: &str) -> String {
    format!("Still waiting for a reviewer (escalation {escalation_id})")
}

/// A progress notification for a held call.
pub fn progress(token: ProgressToken, progress: f64, message: String) -> String {
    let message = ServerJsonRpcMessage::notification(ServerNotification::ProgressNotification(
        ProgressNotification::new(
            ProgressNotificationParam::new(token, progress).with_message(message),
        ),
    ));
    serde_json::to_string(&message).expect("a notification serializes")
}

/// A request id read back from its key (for answering requests the proxy tracked by key).
pub fn request_id(key: &str) -> Option<RequestId> {
    match serde_json::from_str::<Value>(key).ok()? {
        Value::Number(n) => n.as_i64().map(NumberOrString::Number),
        Value::String(s) => Some(NumberOrString::String(s.into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_call_is_read_with_its_progress_token() {
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":1},"_meta":{"progressToken":"t"}}}"#;
        let FromClient::Call(call) = from_client(line) else {
            panic!("not a call");
        };
        assert_eq!(call.name, "x");
        assert_eq!(call.arguments["a"], 1);
        assert!(call.progress.is_some());
    }

    #[test]
    fn what_could_smuggle_a_tool_call_past_the_gateway_is_refused() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
        ] {
            assert!(
                matches!(from_client(line), FromClient::BadCall(..)),
                "{line}"
            );
        }
        for line in [
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}]"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":NaN}}}"#,
        ] {
            assert!(
                matches!(from_client(line), FromClient::Refused(_)),
                "{line}"
            );
        }
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        assert!(matches!(from_client(batch), FromClient::Other));
    }

    #[test]
    fn an_error_result_is_a_call_tool_result_with_is_error() {
        let line = error_result(NumberOrString::Number(7), "Blocked".into());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"]["isError"], true);
        assert_eq!(v["result"]["content"][0]["text"], "Blocked");
    }
}
