//! The `writ` binary's `policy test` and `policy eval` subcommands, and its management
//! commands, run as a user would.

use std::process::Command;

use writ_tests::artifacts;

fn writ() -> Command {
    Command::new(env!("CARGO_BIN_EXE_writ"))
}

fn cases_file(name: &str) -> String {
    format!(
        "{}/../../example-policies/{name}/cases.json",
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
        wat::parse_str(r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#)
            .unwrap(),
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
    assert!(
        stderr.contains("wasi:http/outgoing-handler@0.2.0"),
        "{stderr}"
    );
}

/// Writes `cases` to a file and runs `writ policy test` of `component` on it.
fn policy_test(component: &str, cases: serde_json::Value) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, cases.to_string()).unwrap();
    writ()
        .args(["policy", "test", component])
        .arg(&file)
        .output()
        .unwrap()
}

#[test]
fn a_failed_charges_expectation_prints_what_came_and_what_was_expected() {
    let out = policy_test(
        artifacts::SPEND_CAP,
        serde_json::json!([{"name": "charges", "call": {"action": "payments.initiate",
            "arguments": {"amount": 50, "currency": "GBP"}},
            "expect": {"outcome": "allow", "charges": [{"counter": "spend:GBP", "amount": 60}]}}]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("charges [spend:GBP=50] (expected [spend:GBP=60])"),
        "{stdout}"
    );
}

#[test]
fn a_malformed_cases_file_is_reported_once_naming_the_case_and_the_field() {
    let out = policy_test(
        artifacts::PAYMENTS_LIMITS,
        serde_json::json!([
            {"name": "fine", "call": {"action": "email.send"}, "expect": {"outcome": "allow"}},
            {"name": "typo", "call": {"action": "email.send"},
             "expect": {"outcome": "allow", "charges": [{"counter": "c", "amount": "ten"}]}}
        ]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("case 2 (typo), at `expect.charges[0].amount`"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("invalid type").count(), 1, "{stderr}");
}

#[test]
fn a_sequence_carries_each_allowed_call_s_charges_to_the_next_so_a_rate_limit_is_tested() {
    let send = serde_json::json!({"action": "email.send", "arguments": {"to": "a@example.com"}});
    let out = policy_test(
        artifacts::RATE_LIMIT,
        serde_json::json!([{"name": "ten a minute", "steps": [
            {"call": send, "repeat": 10, "expect": {"outcome": "allow"}},
            {"call": send, "expect": {"outcome": "block", "codes": ["rate_limited"]}},
            {"call": {"action": "email.send", "timestamp_ms": 60_000}, "expect": {"outcome": "allow"}},
            {"call": {"action": "email.send", "key_id": "key_other"}, "expect": {"outcome": "allow"}}
        ]}]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ten a minute › 1 (×10)"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "4 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn policy_eval_prints_one_decision_with_its_fuel_and_time() {
    let call =
        r#"{"action": "payments.initiate", "arguments": {"amount": 800, "currency": "GBP"}}"#;
    let out = writ()
        .args(["policy", "eval", artifacts::SPEND_CAP, "--call", call])
        .args(["--usage", "spend:GBP:session=950"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("BLOCK") || stdout.starts_with("ESCALATE"),
        "{stdout}"
    );
    assert!(stdout.contains("\nfuel "), "{stdout}");
    assert!(stdout.contains("\ntime "), "{stdout}");

    let out = writ()
        .args([
            "policy",
            "eval",
            artifacts::PAYMENTS_LIMITS,
            "--json",
            "--call",
            call,
        ])
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["decision"], "ESCALATE", "{answer}");
    assert_eq!(answer["codes"], serde_json::json!(["amount_over_limit"]));
    assert!(answer["fuel"].as_u64().unwrap() > 0);

    let out = writ()
        .args(["policy", "eval", artifacts::PAYMENTS_LIMITS, "--call", call])
        .args(["--usage", "spend=3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("COUNTER:WINDOW=VALUE"));
}

/// `writ tenant create`, `writ key create` and `writ policy push` against a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_commands_drive_a_running_gateway() {
    let gw = writ_tests::gateway::TestGateway::start().await;
    let url = gw.url("");
    let op = gw.operator_key.clone();
    let run = |args: Vec<String>, key: String| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let out = writ()
                .args(&args)
                .env("WRIT_GATEWAY", &url)
                .env("WRIT_API_KEY", &key)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{args:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
        })
    };
    let tenant = run(
        vec!["tenant".into(), "create".into(), "acme".into()],
        op.clone(),
    )
    .await
    .unwrap();
    let tenant_id = tenant["tenant_id"].as_str().unwrap().to_owned();
    let admin = run(
        [
            "key",
            "create",
            "--tenant",
            &tenant_id,
            "--role",
            "admin",
            "--subject",
            "ops@acme.example",
        ]
        .map(String::from)
        .to_vec(),
        op.clone(),
    )
    .await
    .unwrap();
    let admin_key = admin["api_key"].as_str().unwrap().to_owned();
    let agent = run(
        [
            "key",
            "create",
            "--tenant",
            &tenant_id,
            "--role",
            "agent",
            "--subject",
            "bot",
        ]
        .map(String::from)
        .to_vec(),
        admin_key.clone(),
    )
    .await
    .unwrap();
    let pushed = run(
        [
            "policy",
            "push",
            artifacts::PAYMENTS_LIMITS,
            "--name",
            "payments",
            "--activate",
        ]
        .map(String::from)
        .to_vec(),
        admin_key,
    )
    .await
    .unwrap();
    assert_eq!(pushed["activated"], true);
    let (status, body) = gw
        .execute(
            agent["api_key"].as_str().unwrap(),
            "s",
            "payments.initiate",
            serde_json::json!({"amount": 800, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["codes"], serde_json::json!(["amount_over_limit"]));
}

/// `writ audit verify --checkpoint` and `writ audit export` on a stopped gateway's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_and_export_work_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = writ_tests::gateway::TestGateway::config(dir.path());
    config.app.checkpoint_every_records = 1;
    let gw = writ_tests::gateway::TestGateway::start_with(config).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    for i in 0..6 {
        gw.execute(&t.agent, "s", "x", serde_json::json!({ "i": i }))
            .await;
    }
    let mut note = String::new();
    for _ in 0..50 {
        let r = gw
            .request(
                reqwest::Method::GET,
                "/v1/audit/checkpoint",
                Some(&t.admin),
                None,
            )
            .await;
        if r.status() == 200 {
            note = r.text().await.unwrap();
            if note.lines().nth(1) == Some("10") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(note.lines().nth(1), Some("10"), "{note}");
    gw.stop().await;
    let cp = dir.path().join("checkpoint.txt");
    std::fs::write(&cp, &note).unwrap();

    let run = |args: &[&str]| {
        writ()
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let cp_arg = cp.to_str().unwrap();
    let out = run(&["audit", "verify", "--checkpoint", cp_arg]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 10);
    assert_eq!(report["checkpoint_size"], 10);

    let out = run(&["audit", "export", "--tenant", &t.id]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);

    // Cut the tail: the chain alone still verifies, the checkpoint does not.
    {
        let store = writ_gateway::store::Store::open(dir.path()).unwrap();
        for seq in (8..10).rev() {
            writ_gateway::audit::replace_stored_record(&store, &t.id, seq, None).unwrap();
        }
        store.flush().unwrap();
    }
    assert!(run(&["audit", "verify"]).status.success());
    let out = run(&["audit", "verify", "--checkpoint", cp_arg]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report["problem"], "truncated");
    assert_eq!(report["broken_seq"], 8);

    // A checkpoint whose signature does not verify is refused.
    std::fs::write(&cp, note.replacen("\n10\n", "\n11\n", 1)).unwrap();
    let out = run(&["audit", "verify", "--checkpoint", cp_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bad_checkpoint"));
}

/// `writ audit verify` only reads: on a data dir without a checkpoint key it creates none; it
/// verifies the chain alone, and asks for the gateway's verifier key to check a checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_writes_nothing_into_the_store_it_inspects() {
    let dir = tempfile::tempdir().unwrap();
    let gw = writ_tests::gateway::TestGateway::start_in(dir.path()).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    gw.execute(&t.agent, "s", "x", serde_json::json!({})).await;
    let (_, key) = gw
        .call(reqwest::Method::GET, "/v1/audit/public-key", None, None)
        .await;
    gw.stop().await;
    let note = {
        let store = writ_gateway::store::Store::open(dir.path()).unwrap();
        let note = store
            .get_raw(writ_gateway::store::Table::Checkpoints, t.id.as_bytes())
            .unwrap()
            .expect("a checkpoint signed at shutdown");
        String::from_utf8(note.to_vec()).unwrap()
    };
    let cp = dir.path().join("checkpoint.txt");
    std::fs::write(&cp, note).unwrap();
    let key_file = dir.path().join("checkpoint.key");
    std::fs::remove_file(&key_file).unwrap();

    let verify = |extra: &[&str]| {
        writ()
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let out = verify(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!key_file.exists(), "a read-only command created a key");

    let cp_arg = cp.to_str().unwrap();
    let out = verify(&["--checkpoint", cp_arg]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--public-key"), "{}", stderr(&out));
    assert!(!key_file.exists());

    let vkey = key["verifier_key"].as_str().unwrap();
    let out = verify(&["--checkpoint", cp_arg, "--public-key", vkey]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!key_file.exists());
}

/// `writ serve --log-format json`: every line it logs, from start to stop, is a JSON object.
#[test]
fn serve_with_log_format_json_logs_one_json_object_a_line() {
    use std::io::{BufRead as _, Read as _, Write as _};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let mut child = writ()
        .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("WRIT_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("writ serve did not start");
    // A request, then SIGTERM: the shutdown's lines too.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: writ\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("writ serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = stderr.join().unwrap();
    assert!(status.success(), "{log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{log}"));
            assert!(event.is_object(), "{line}");
            event
        })
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect();
    for expected in ["serving", "shutting down", "stopped; store flushed"] {
        assert!(messages.contains(&expected), "{expected:?} in {log}");
    }
    assert!(events.iter().all(|e| e["level"].is_string()), "{log}");
}
