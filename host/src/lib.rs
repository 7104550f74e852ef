//! Writ: a runtime authority for AI agents.
//!
//! Before an agent's tool call runs, Writ evaluates it against the tenant's policy — a
//! WebAssembly component run in a wasmtime sandbox — and answers ALLOW, BLOCK or ESCALATE.
//! See `ARCHITECTURE.md` at the repository root for the map.

mod bindings;
pub mod cases;
pub mod decision;
pub mod engine;
pub mod evaluation;

pub use decision::{Charge, Decision, Outcome, Target, ToolCall, Window};
pub use engine::{CompiledPolicy, Engine, EngineConfig, LoadError};
pub use evaluation::{Evaluation, FixedUsage, Limits, UsageRead, UsageSource};
