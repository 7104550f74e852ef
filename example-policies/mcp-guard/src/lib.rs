//! `mcp-guard`: tool calls of MCP servers governed through `writ mcp` (action
//! `<server>.<tool>`, the MCP details in the call's context under `mcp`).
//!
//! - arguments that mention a secret (`secret`, `password`, `api_key`) are blocked
//!   (`secret_in_arguments`): nothing a model read should leave that way;
//! - a tool its server declares destructive (`destructiveHint`) is escalated for a human
//!   (`destructive_tool`). The hint comes from the server and is not verified, so it is only
//!   ever used to add caution, never to allow;
//! - anything else is allowed.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use serde::Deserialize;
use writ_policy::{Decision, Policy, ToolCall};

/// Words that mark an argument as a secret.
const SECRET_WORDS: [&str; 3] = ["secret", "password", "api_key"];

/// Governs MCP tool calls.
pub struct McpGuard;

#[derive(Deserialize, Default)]
struct Context {
    #[serde(default)]
    mcp: Option<Mcp>,
}

#[derive(Deserialize, Default)]
struct Mcp {
    #[serde(default)]
    annotations: Option<Annotations>,
}

#[derive(Deserialize, Default)]
struct Annotations {
    #[serde(default, rename = "destructiveHint")]
    destructive_hint: Option<bool>,
}

impl Policy for McpGuard {
    fn evaluate(call: &ToolCall) -> Decision {
        let arguments = call.arguments_json().to_ascii_lowercase();
        if let Some(word) = SECRET_WORDS.iter().find(|w| arguments.contains(*w)) {
            return Decision::block(format!(
                "The arguments of `{}` mention a {word}: not sent",
                call.action()
            ))
            .code("secret_in_arguments");
        }
        let context: Context = call.context().unwrap_or_default();
        let destructive = context
            .mcp
            .and_then(|m| m.annotations)
            .and_then(|a| a.destructive_hint)
            .unwrap_or(false);
        if destructive {
            let action: String = call.action().into();
            return Decision::escalate(format!(
                "`{action}` is declared destructive by its server: a human must review"
            ))
            .code("destructive_tool");
        }
        Decision::allow("MCP tool call allowed")
    }
}

writ_policy::export_policy!(McpGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use writ_policy::Outcome;

    fn call(action: &str, arguments: serde_json::Value, context: serde_json::Value) -> ToolCall {
        ToolCall::builder(action)
            .arguments(arguments)
            .context(context)
            .build()
    }

    #[test]
    fn a_read_is_allowed() {
        let d = McpGuard::evaluate(&call(
            "time.get_current_time",
            json!({"timezone": "UTC"}),
            json!({}),
        ));
        assert_eq!(d.outcome, Outcome::Allow);
    }

    #[test]
    fn a_secret_in_the_arguments_is_blocked() {
        let d = McpGuard::evaluate(&call(
            "notes.echo",
            json!({"text": "my PASSWORD is x"}),
            json!({}),
        ));
        assert!(d.is_block() && d.has_code("secret_in_arguments"), "{d:?}");
    }

    #[test]
    fn a_tool_its_server_calls_destructive_is_escalated() {
        let context = json!({"mcp": {"server": "notes", "annotations": {"destructiveHint": true}}});
        let d = McpGuard::evaluate(&call("notes.write_note", json!({"text": "hi"}), context));
        assert!(d.is_escalate() && d.has_code("destructive_tool"), "{d:?}");
    }
}
