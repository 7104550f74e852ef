//! The `writ` binary's `policy test` subcommand, run as a user would.

use std::process::Command;

use writ_tests::artifacts;

fn writ() -> Command {
    Command::new(env!("CARGO_BIN_EXE_writ"))
}

fn cases_file(name: &str) -> String {
    format!(
        "{}/../example-policies/{name}/cases.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn policy_test_passes_the_shipped_cases() {
    let out = writ()
        .args(["policy", "test", artifacts::PAYMENTS_LIMITS])
        .arg(cases_file("payments-limits"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "6 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn policy_test_fails_with_a_table_naming_the_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.json");
    std::fs::write(
        &cases,
        serde_json::json!([
            {"name": "right", "call": {"action": "email.send"}, "expect": {"outcome": "allow"}},
            {"name": "wrong", "call": {"action": "email.send"}, "expect": {"outcome": "block", "codes": ["nope"]}}
        ])
        .to_string(),
    )
    .unwrap();
    let out = writ()
        .args(["policy", "test", artifacts::PAYMENTS_LIMITS])
        .arg(&cases)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("outcome ALLOW (expected BLOCK)"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "1 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn policy_test_refuses_a_component_with_a_forbidden_import() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("evil.wasm");
    std::fs::write(
        &component,
        wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#).unwrap(),
    )
    .unwrap();
    let out = writ()
        .args(["policy", "test"])
        .arg(&component)
        .arg(cases_file("payments-limits"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("wasi:sockets/tcp@0.2.0"), "{stderr}");
}
