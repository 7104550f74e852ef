//! Support for Writ's integration tests and benchmarks: the guest components built by
//! `build.rs`, a shared engine, and call builders.

use std::sync::LazyLock;

use writ::{CompiledPolicy, Engine, EngineConfig, ToolCall};

/// Paths of the guest components, built from `example-policies/` and `tests/guests/`.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

/// One engine shared by a test binary, as the gateway shares one per process.
pub fn engine() -> &'static Engine {
    static ENGINE: LazyLock<Engine> =
        LazyLock::new(|| Engine::new(&EngineConfig::default()).expect("engine"));
    &ENGINE
}

/// Reads a guest component's bytes.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Compiles a guest component with the shared engine.
pub fn load(path: &str) -> CompiledPolicy {
    engine()
        .compile(&component(path))
        .unwrap_or_else(|e| panic!("load {path}: {e}"))
}

/// A call for `action` with `arguments` (a JSON value) and test identities.
pub fn call(action: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall {
        action: action.to_owned(),
        arguments: arguments.to_string(),
        context: "{}".to_owned(),
        agent_id: "agent-1".to_owned(),
        session_id: "sess-1".to_owned(),
        tenant_id: "tenant-1".to_owned(),
        target: None,
        timestamp_ms: 1_700_000_000_000,
    }
}
