//! The MCP proxy behind `writ mcp`: it runs an MCP server as a child process and stands between
//! it and the MCP client on stdio. Every JSON-RPC message is relayed unchanged, byte for byte,
//! except the client's `tools/call` requests, which the gateway decides first:
//!
//! - **ALLOW**: the request goes to the server as the client sent it; when the server answers,
//!   the proxy reports the completion (error flag, result size, duration) to the chain.
//! - **BLOCK**: the server never sees it; the client gets a `CallToolResult` with `isError`
//!   naming the reason, the codes and the event id.
//! - **ESCALATE**: the call is held until a reviewer decides (progress notifications meanwhile,
//!   when the client sent a `progressToken`); approved, the held request goes on; rejected,
//!   expired or withdrawn, an `isError` result. The client's `notifications/cancelled` for a held
//!   call withdraws its escalation.
//!
//! It fails closed: a gateway that cannot be reached, a `tools/call` whose parameters do not
//! parse, a line that is not JSON, a batch holding a `tools/call`: none reaches the server. The
//! protocol's types come from the official SDK (`rmcp`); messages the proxy does not act on are
//! not re-encoded, because re-encoding through typed models drops and reorders fields.

pub mod message;
mod proxy;

pub use proxy::{Ended, ProxyConfig, relay, run_stdio};
