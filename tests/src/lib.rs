//! Support for Writ's integration tests and benchmarks: the guest components built by
//! `writ-test-artifacts`, a shared engine, and call builders.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use writ_runtime::{
    CompiledPolicy, Engine, EngineConfig, Evaluation, FixedUsage, Limits, ToolCall, Window,
};

/// Paths of the guest components, built from `example-policies/` and `tests/guests/`.
pub use writ_test_artifacts as artifacts;

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

/// Compiles a guest component with the shared engine, once per test binary.
pub fn load(path: &str) -> CompiledPolicy {
    static LOADED: LazyLock<Mutex<HashMap<String, CompiledPolicy>>> =
        LazyLock::new(Default::default);
    let mut loaded = LOADED.lock().unwrap();
    loaded
        .entry(path.to_owned())
        .or_insert_with(|| {
            engine()
                .compile(&component(path))
                .unwrap_or_else(|e| panic!("load {path}: {e}"))
        })
        .clone()
}

/// Evaluates `call` with `policy` under `limits`, with the given usage values.
pub fn evaluate_with(
    policy: &CompiledPolicy,
    call: &ToolCall,
    limits: &Limits,
    usage: &[(&str, Window, f64)],
) -> Evaluation {
    let usage = FixedUsage(
        usage
            .iter()
            .map(|(c, w, v)| (((*c).to_owned(), *w), *v))
            .collect(),
    );
    engine().evaluate_blocking(policy, call, limits, Box::new(usage))
}

/// Evaluates `call` with `policy` under default limits and no usage.
pub fn evaluate(policy: &CompiledPolicy, call: &ToolCall) -> Evaluation {
    evaluate_with(policy, call, &Limits::default(), &[])
}

/// A call for `action` with `arguments` (a JSON value) and test identities.
pub fn call(action: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall {
        action: action.to_owned(),
        arguments: arguments.to_string(),
        context: "{}".to_owned(),
        agent_id: "agent-1".to_owned(),
        key_id: "key_test".to_owned(),
        session_id: "sess-1".to_owned(),
        tenant_id: "tenant-1".to_owned(),
        target: None,
        timestamp_ms: 1_700_000_000_000,
    }
}

pub mod browser;
pub mod child;
pub mod gateway;
pub mod http;
pub mod postgres;
pub mod tls;

/// The Python interpreter with the published SDKs and `blake3` (the `.venv` that
/// `scripts/test.sh` makes), or `WRIT_PYTHON`.
pub fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("WRIT_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python environment with the SDKs: run ./scripts/test.sh (it creates .venv), or set WRIT_PYTHON"
    );
    venv
}

/// Runs the independent verifier (`python/verify_export.py`, Python's `json` and `blake3` only)
/// on the JSON Lines `export`, with `args` (e.g. `--tenant ID`).
pub async fn run_verifier(export: &str, args: &[&str]) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), export).expect("write the export");
    tokio::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/verify_export.py"
        ))
        .arg(file.path())
        .args(args)
        .output()
        .await
        .expect("run the verifier")
}

/// Runs `python/<script>` under pytest with `env`, asserts it passed, and returns its output.
pub async fn run_pytest(script: &str, env: &[(&str, String)]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = tokio::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file below `dir`, recursively (to search a data directory byte by byte).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
