//! Policies written in Python (componentize-py) and TypeScript (componentize-js), built by the
//! test build with the real toolchains and the repository's SDKs: they pass the same cases as
//! the Rust one, fail closed the same way when hostile, see only the deterministic WASI, run
//! in a gateway, and their SDKs' native tests pass.

use std::time::Duration;

use rstest::rstest;
use serde_json::json;
use writ_runtime::evaluation::LogLevel;
use writ_runtime::{Limits, Outcome, cases};
use writ_tests::gateway::TestGateway;
use writ_tests::{artifacts, call, engine, evaluate_with, load};

/// The Rust example's cases: every port of `payments-limits` must pass them unchanged.
const PAYMENTS_CASES: &str = include_str!("../../example-policies/payments-limits/cases.json");

/// A debug build interprets Python tens of times slower than a release one: the deadline is
/// lifted so that what stops a hostile guest is the bound under test, not the clock.
fn limits() -> Limits {
    Limits {
        deadline: Duration::from_secs(30),
        ..Limits::default()
    }
}

#[rstest]
#[case::rust(artifacts::PAYMENTS_LIMITS)]
#[case::python(artifacts::PAYMENTS_LIMITS_PYTHON)]
#[case::typescript(artifacts::PAYMENTS_LIMITS_TYPESCRIPT)]
fn payments_limits_passes_the_same_cases_in_every_language(#[case] guest: &str) {
    let policy = load(guest);
    let cases = cases::parse(PAYMENTS_CASES).unwrap();
    let results = cases::run(engine(), &policy, &cases, &limits());
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{}", cases::table(&results));
    assert_eq!(results.len(), 6);
}

#[rstest]
#[case::python_loop(artifacts::HOSTILE_PYTHON, "spin", "policy_fuel_exhausted")]
#[case::python_memory(artifacts::HOSTILE_PYTHON, "grow", "policy_memory_limit")]
#[case::python_exception(artifacts::HOSTILE_PYTHON, "raise", "policy_trap")]
#[case::python_huge_reason(artifacts::HOSTILE_PYTHON, "huge-reason", "policy_invalid_result")]
// CPython's socket module fails before it reaches WASI; had it, the socket function would trap.
#[case::python_socket(artifacts::HOSTILE_PYTHON, "socket", "no_network")]
#[case::js_loop(artifacts::HOSTILE_JS, "spin", "policy_fuel_exhausted")]
#[case::js_memory(artifacts::HOSTILE_JS, "grow", "policy_memory_limit")]
#[case::js_exception(artifacts::HOSTILE_JS, "raise", "policy_trap")]
#[case::js_huge_reason(artifacts::HOSTILE_JS, "huge-reason", "policy_invalid_result")]
fn a_hostile_guest_in_another_language_is_blocked_with_the_right_code(
    #[case] guest: &str,
    #[case] action: &str,
    #[case] code: &str,
) {
    let policy = load(guest);
    // The socket's port is the test's own listener: refused before any connection is tried.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let e = evaluate_with(
        &policy,
        &call(action, json!({"port": port})),
        &limits(),
        &[],
    );
    assert_eq!(
        e.decision.outcome,
        Outcome::Block,
        "{action}: {:?}",
        e.decision
    );
    assert_eq!(e.decision.codes, [code], "{action}: {}", e.decision.reason);
    assert!(e.decision.charges.is_empty());
    assert!(
        listener.accept().is_err(),
        "{action}: a connection reached the listener"
    );
    if action == "raise" {
        assert!(
            e.decision.reason.contains("hostile exception")
                || e.decision.reason.contains("raised on purpose"),
            "the exception reaches the reason: {}",
            e.decision.reason
        );
    }
}

#[test]
fn a_python_policy_sees_the_call_s_time_a_replayable_random_stream_no_environment_and_no_files() {
    let policy = load(artifacts::HOSTILE_PYTHON);
    let decide =
        |action: &str, arguments| evaluate_with(&policy, &call(action, arguments), &limits(), &[]);
    let at = call("clock", json!({})).timestamp_ms;
    assert_eq!(
        decide("clock", json!({})).decision.reason,
        (u128::from(at) * 1_000_000).to_string()
    );
    let first = decide("random", json!({"n": 1})).decision.reason;
    assert_eq!(decide("random", json!({"n": 1})).decision.reason, first);
    assert_ne!(decide("random", json!({"n": 2})).decision.reason, first);
    assert_eq!(decide("env", json!({})).decision.reason, "{}");
    let file = decide("file", json!({})).decision;
    assert_eq!(file.codes, ["no_files"], "{file:?}");

    let printed = decide("print", json!({}));
    assert_eq!(printed.decision.outcome, Outcome::Allow);
    let lines: Vec<_> = printed
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert!(
        lines.contains(&(LogLevel::Info, "hello from a policy"))
            && lines.contains(&(LogLevel::Warn, "hello from a policy, on stderr")),
        "{lines:?}"
    );
}

#[test]
fn a_javascript_policy_sees_the_call_s_time_and_a_replayable_random_stream_and_its_console_is_logged()
 {
    let policy = load(artifacts::HOSTILE_JS);
    let decide =
        |action: &str, arguments| evaluate_with(&policy, &call(action, arguments), &limits(), &[]);
    let at = call("clock", json!({})).timestamp_ms;
    assert_eq!(decide("clock", json!({})).decision.reason, at.to_string());
    let first = decide("random", json!({"n": 1})).decision.reason;
    assert_eq!(decide("random", json!({"n": 1})).decision.reason, first);
    assert_ne!(decide("random", json!({"n": 2})).decision.reason, first);
    let printed = decide("print", json!({}));
    assert_eq!(printed.decision.outcome, Outcome::Allow);
    let messages: Vec<_> = printed.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        messages.contains(&"hello from a policy") && messages.contains(&"and from its stderr"),
        "{messages:?}"
    );
}

#[rstest]
#[case::python(artifacts::PAYMENTS_LIMITS_PYTHON)]
#[case::typescript(artifacts::PAYMENTS_LIMITS_TYPESCRIPT)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_takes_the_upload_and_decides_with_it(#[case] guest: &str) {
    let gw = TestGateway::start_configured(|config| {
        config.app.tenant_defaults.deadline_ms = 30_000;
    })
    .await;
    let t = gw.tenant("acme", Some(guest)).await;
    let (status, body) = gw
        .execute(
            &t.agent,
            "s",
            "payments.initiate",
            json!({"amount": 800, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "ESCALATE", "{body}");
    assert_eq!(body["codes"], json!(["amount_over_limit"]));
    let (_, body) = gw
        .execute(&t.agent, "s", "email.send", json!({"to": "a@example.com"}))
        .await;
    assert_eq!(body["decision"], "ALLOW", "{body}");
}

#[tokio::test]
async fn the_python_sdk_and_the_python_example_pass_their_native_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tokio::process::Command::new(writ_tests::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("policy-sdk-python"))
        .arg(root.join("example-policies/payments-limits-python"))
        .env("PYTHONPATH", root.join("policy-sdk-python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed"), "{stdout}");
}

#[rstest]
#[case::sdk("policy-sdk-typescript")]
#[case::example("example-policies/payments-limits-typescript")]
#[tokio::test]
async fn the_typescript_sdk_and_the_typescript_example_pass_their_native_tests(
    #[case] project: &str,
) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tokio::process::Command::new("npm")
        .args(["test", "--silent", "--prefix"])
        .arg(root.join(project))
        .output()
        .await
        .expect("run npm test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
