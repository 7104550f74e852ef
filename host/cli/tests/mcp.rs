//! `writ mcp` between a real MCP client and real MCP servers, both from the official Python SDK
//! (`tests/python/mcp_client.py`, `tests/python/mcp_server.py`), and a published server
//! (`mcp-server-time` from PyPI), against a real gateway on loopback whose tenant runs the
//! `mcp-guard` example policy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use writ_gateway::clock::ManualClock;
use writ_tests::gateway::{TestGateway, TestTenant};
use writ_tests::{artifacts, python};

const WRIT: &str = env!("CARGO_BIN_EXE_writ");

fn script(name: &str) -> String {
    format!("{}/../../tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The `writ mcp` command line that runs `server` (the test server when `None`) for `key`.
fn proxy(gateway: &str, key: &str, name: &str, server: Option<Vec<String>>) -> Vec<String> {
    let mut command: Vec<String> = [
        WRIT,
        "mcp",
        "--gateway",
        gateway,
        "--key",
        key,
        "--server",
        name,
        "--agent-id",
        "desktop-agent",
        "--session",
        "mcp-session-1",
        "--progress-every-s",
        "1",
        "--",
    ]
    .map(str::to_owned)
    .to_vec();
    command.extend(server.unwrap_or_else(|| {
        vec![
            python().to_string_lossy().into_owned(),
            script("mcp_server.py"),
        ]
    }));
    command
}

/// Runs the Python MCP client's `scenario` through `command`; returns what it saw.
async fn client(command: &[String], record: &Path, scenario: &[&str]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(python())
            .arg(script("mcp_client.py"))
            .args(scenario)
            .env("MCP_COMMAND", serde_json::to_string(command).unwrap())
            .env("MCP_RECORD_FILE", record)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the MCP client finished")
    .expect("the MCP client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// The tool invocations the test server recorded.
fn invocations(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Setup {
    gw: TestGateway,
    t: TestTenant,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(gw: TestGateway) -> Setup {
    let t = gw.tenant("acme", Some(artifacts::MCP_GUARD)).await;
    let dir = tempfile::tempdir().unwrap();
    Setup {
        record: dir.path().join("invocations.jsonl"),
        gw,
        t,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_call_reaches_the_server_a_blocked_one_never_does_and_the_rest_passes_through() {
    let s = setup(TestGateway::start().await).await;
    let command = proxy(&s.gw.url(""), &s.t.agent, "notes", None);
    let seen = client(&command, &s.record, &["basic"]).await;

    assert_eq!(seen["server"], "writ-test-server", "{seen}");
    assert_eq!(
        seen["tools"]["write_note"]["destructive_hint"], true,
        "{seen}"
    );
    assert_eq!(seen["echo"], json!([false, "hello"]), "{seen}");
    assert_eq!(
        seen["resource"],
        json!(["writ test server resource"]),
        "{seen}"
    );
    assert_eq!(seen["slow_count"], json!([false, "counted to 3"]), "{seen}");
    // The server's own progress notifications reach the client.
    assert_eq!(
        seen["server_progress"].as_array().unwrap().len(),
        3,
        "{seen}"
    );
    let blocked = seen["blocked"][1].as_str().unwrap();
    assert_eq!(seen["blocked"][0], true, "{seen}");
    for part in ["Blocked by Writ", "secret_in_arguments", "evt_"] {
        assert!(blocked.contains(part), "{blocked}");
    }
    let calls = invocations(&s.record);
    assert_eq!(
        calls,
        vec![
            json!({"tool": "echo", "text": "hello"}),
            json!({"tool": "slow_count", "n": 3})
        ],
        "the blocked call never reached the server"
    );

    // Each decision and each completion is in the chain, under the key's agent and session.
    let records = s.gw.audit(&s.t.reviewer).await;
    let decisions: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "decision")
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("notes.echo", "ALLOW"),
            ("notes.slow_count", "ALLOW"),
            ("notes.echo", "BLOCK")
        ]
    );
    let completed: Vec<Value> = records
        .iter()
        .filter(|r| r["kind"] == "tool_completed")
        .map(|r| serde_json::from_str(r["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(completed.len(), 2, "{completed:?}");
    assert!(
        completed
            .iter()
            .all(|c| c["is_error"] == false && c["result_bytes"].as_u64() > Some(0))
    );
    assert!(
        records
            .iter()
            .filter(|r| r["kind"] == "decision")
            .all(|r| r["session_id"] == "mcp-session-1" && r["agent_id"] == "desktop-agent")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_approved_by_a_reviewer_reaches_the_server_once_with_the_held_arguments() {
    let s = setup(TestGateway::start().await).await;
    let command = proxy(&s.gw.url(""), &s.t.agent, "notes", None);
    let record = s.record.clone();
    let run = tokio::spawn(async move { client(&command, &record, &["held", "ship it"]).await });

    let esc = s.gw.pending_escalation(&s.t.reviewer).await;
    assert_eq!(esc["action"], "notes.write_note", "{esc}");
    assert_eq!(esc["codes"], json!(["destructive_tool"]), "{esc}");
    assert!(invocations(&s.record).is_empty(), "held, not sent");
    let id = esc["escalation_id"].as_str().unwrap();
    let approved =
        s.gw.client(&s.t.reviewer)
            .approve(id, Some("fine"))
            .await
            .unwrap();
    assert_eq!(approved.status, "approved");

    let seen = run.await.unwrap();
    assert_eq!(seen["held"], json!([false, "noted: ship it"]), "{seen}");
    let progress = seen["progress"].as_array().unwrap();
    assert!(
        progress[0]
            .as_str()
            .unwrap()
            .contains("Held for a human reviewer"),
        "{seen}"
    );
    assert_eq!(
        invocations(&s.record),
        vec![json!({"tool": "write_note", "text": "ship it"})]
    );
    // Its completion names the approval that let it through.
    let records = s.gw.audit(&s.t.reviewer).await;
    let approval = records
        .iter()
        .find(|r| r["kind"] == "escalation_resolved")
        .unwrap();
    let completed = records
        .iter()
        .find(|r| r["kind"] == "tool_completed")
        .expect("the completion is recorded");
    let detail: Value = serde_json::from_str(completed["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["of"], approval["event_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_expired_calls_never_reach_the_server_and_say_why() {
    let clock = ManualClock::starting_now();
    let s = setup(TestGateway::start_with_clock(clock.clone()).await).await;
    let command = proxy(&s.gw.url(""), &s.t.agent, "notes", None);

    let (cmd, record) = (command.clone(), s.record.clone());
    let run = tokio::spawn(async move { client(&cmd, &record, &["held", "rejected one"]).await });
    let id = s.gw.pending_escalation(&s.t.reviewer).await["escalation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.gw.client(&s.t.reviewer)
        .reject(&id, Some("not today"))
        .await
        .unwrap();
    let seen = run.await.unwrap();
    let text = seen["held"][1].as_str().unwrap();
    assert_eq!(seen["held"][0], true, "{seen}");
    for part in [&id, "rejected", "reviewer@example.com", "not today"] {
        assert!(text.contains(part), "{text}");
    }

    let (cmd, record) = (command.clone(), s.record.clone());
    let run = tokio::spawn(async move { client(&cmd, &record, &["held", "expired one"]).await });
    s.gw.pending_escalation(&s.t.reviewer).await;
    // Past the tenant's hold: the proxy's next wait finds it expired.
    clock.advance(61_000);
    let seen = run.await.unwrap();
    assert_eq!(seen["held"][0], true, "{seen}");
    assert!(
        seen["held"][1].as_str().unwrap().contains("expired"),
        "{seen}"
    );

    assert!(invocations(&s.record).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cancels_a_held_call_withdraws_its_escalation() {
    let s = setup(TestGateway::start().await).await;
    let command = proxy(&s.gw.url(""), &s.t.agent, "notes", None);
    let seen = client(&command, &s.record, &["cancel", "draft", "3"]).await;
    assert_ne!(seen["cancelled"], false, "{seen}");
    assert_eq!(
        seen["after"],
        json!([false, "after the cancel"]),
        "the session goes on: {seen}"
    );

    let list =
        s.gw.client(&s.t.reviewer)
            .escalations(Some("withdrawn"))
            .await
            .unwrap();
    assert_eq!(list.escalations.len(), 1, "{:?}", list.escalations);
    assert_eq!(
        invocations(&s.record),
        vec![json!({"tool": "echo", "text": "after the cancel"})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_exits_mid_session_ends_it_with_an_error_not_a_hang() {
    let s = setup(TestGateway::start().await).await;
    let command = proxy(&s.gw.url(""), &s.t.agent, "notes", None);
    let seen = client(&command, &s.record, &["crash"]).await;
    let crash = seen["crash"].to_string();
    assert!(
        crash.contains("exited") || seen.get("session_error").is_some(),
        "the client learned the server is gone: {seen}"
    );
    assert_eq!(invocations(&s.record), vec![json!({"tool": "crash"})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_cannot_be_reached_fails_the_call_closed() {
    let s = setup(TestGateway::start().await).await;
    // A loopback port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let command = proxy(&dead, &s.t.agent, "notes", None);
    let seen = client(&command, &s.record, &["echo", "hello"]).await;
    assert_eq!(seen["echo"][0], true, "{seen}");
    assert!(
        seen["echo"][1]
            .as_str()
            .unwrap()
            .contains("could not decide"),
        "{seen}"
    );
    assert!(
        invocations(&s.record).is_empty(),
        "nothing reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_mcp_server_runs_through_the_proxy() {
    let s = setup(TestGateway::start().await).await;
    let time_server = python().with_file_name("mcp-server-time");
    let command = proxy(
        &s.gw.url(""),
        &s.t.agent,
        "time",
        Some(vec![
            time_server.to_string_lossy().into_owned(),
            "--local-timezone".into(),
            "UTC".into(),
        ]),
    );
    let seen = client(&command, &s.record, &["time"]).await;
    assert_eq!(seen["time"][0], false, "{seen}");
    assert!(seen["time"][1].as_str().unwrap().contains("UTC"), "{seen}");
    // The server's own error result passes through as it is.
    assert_eq!(seen["bad_zone"][0], true, "{seen}");
    let records = s.gw.audit(&s.t.reviewer).await;
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "time.get_current_time" && r["outcome"] == "ALLOW")
    );
}
