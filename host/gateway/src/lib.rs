//! Writ: a runtime authority for AI agents.
//!
//! Before an agent's tool call runs, Writ evaluates it against the tenant's policy — a
//! WebAssembly component run in a wasmtime sandbox — and answers ALLOW, BLOCK or ESCALATE,
//! recording every decision in a hash-chained audit log before answering. See
//! `ARCHITECTURE.md` at the repository root for the map.

pub mod access;
pub mod api;
pub mod app;
pub mod audit;
mod catalog;
pub mod checkpoint;
pub mod clock;
pub mod degraded;
pub mod egress;
mod error;
mod escalations;
pub mod jobs;
pub mod mcp_servers;
pub mod mcp_sessions;
pub mod metrics;
pub mod migrate;
mod notify;
pub mod page;
mod policies;
pub mod policy_log;
pub mod server;
pub mod service;
pub mod shares;
pub mod sse;
pub use writ_store as store;
mod tenants;
pub mod usage;
mod vault;
pub mod verify;

/// Whether `s` is usable as an id or name from a client: 1 to 256 bytes, no control characters.
pub fn valid_name(s: &str) -> bool {
    (1..=256).contains(&s.len()) && !s.chars().any(char::is_control)
}
