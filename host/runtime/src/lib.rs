//! Writ's policy runtime: the host side of the WebAssembly boundary.
//!
//! A policy is a component built against the `writ:policy` world in `wit/`. [`Engine`] loads it
//! into a [`CompiledPolicy`] and evaluates a [`ToolCall`] in a fresh, sandboxed instance per
//! call (fuel, deadline, memory cap), answering a [`Decision`]; any misbehaviour is a BLOCK.
//! [`cases`] runs a file of expected decisions against a component (`writ policy test`).
//! Nothing here knows HTTP or storage.

#![warn(missing_docs)]

mod bindings;
pub mod cases;
pub mod decision;
pub mod engine;
pub mod evaluation;
mod wasi;

pub use decision::{Charge, Decision, Outcome, Target, ToolCall, Window};
pub use engine::{CompiledPolicy, Engine, EngineConfig, LoadError};
pub use evaluation::{Evaluation, FixedUsage, Limits, UsageRead, UsageSource};
