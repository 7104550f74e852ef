//! The gateway's Streamable HTTP MCP endpoint (`/mcp/{name}`) between a real MCP client and a
//! real remote MCP server, both from the official Python SDK (`tests/python/mcp_client.py`,
//! `tests/python/mcp_server.py --http`), the server on loopback, registered in the tenant's
//! catalog with a vault credential; the tenant runs the `mcp-guard` example policy.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use writ_client::wire::CreateKeyBody;
use writ_gateway::clock::ManualClock;
use writ_tests::gateway::{TestGateway, TestTenant};
use writ_tests::{artifacts, python};

/// The credential the gateway injects; the client never holds it.
const UPSTREAM_TOKEN: &str = "upstream-token-7f3a9c";

fn script(name: &str) -> String {
    format!("{}/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test MCP server, over Streamable HTTP on loopback.
struct Upstream {
    port: u16,
    record: PathBuf,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Upstream {
    async fn start(json_answers: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("invocations.jsonl");
        let port = free_port();
        let mut command = tokio::process::Command::new(python());
        command
            .arg(script("mcp_server.py"))
            .args(["--http", &port.to_string()])
            .env("MCP_RECORD_FILE", &record)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        if json_answers {
            command.arg("--json");
        }
        let child = command.spawn().expect("the MCP server started");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    port,
                    record,
                    child,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the MCP server did not listen on {port}");
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The tool invocations it recorded, with the Authorization header each came with.
    fn invocations(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

struct Setup {
    gw: TestGateway,
    t: TestTenant,
    up: Upstream,
}

/// A gateway whose tenant lists the upstream as `notes`, with its credential.
async fn setup(gw: TestGateway, json_answers: bool) -> Setup {
    let t = gw.tenant("acme", Some(artifacts::MCP_GUARD)).await;
    let up = Upstream::start(json_answers).await;
    register(&gw, &t, &up).await;
    Setup { gw, t, up }
}

async fn register(gw: &TestGateway, t: &TestTenant, up: &Upstream) {
    let (status, body) = gw
        .call(
            Method::PUT,
            "/v1/credentials/notes-token",
            Some(&t.admin),
            Some(json!({"secret": UPSTREAM_TOKEN, "origins": [up.origin()]})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = gw
        .call(
            Method::PUT,
            "/v1/mcp/servers/notes",
            Some(&t.admin),
            Some(json!({
                "url": format!("{}/mcp", up.origin()),
                "credential": {"name": "notes-token", "header": "Authorization", "format": "Bearer {secret}"},
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credential"]["name"], "notes-token", "{body}");
}

/// Runs the Python MCP client's `scenario` against `/mcp/notes` with `key`, on its own task:
/// what it saw.
fn spawn_client(s: &Setup, key: &str, scenario: &[&str]) -> tokio::task::JoinHandle<Value> {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(script("mcp_client.py"))
        .args(scenario)
        .env("MCP_URL", s.gw.url("/mcp/notes"))
        .env("MCP_KEY", key)
        .kill_on_drop(true);
    tokio::spawn(async move {
        let out = tokio::time::timeout(Duration::from_secs(90), command.output())
            .await
            .expect("the MCP client finished")
            .expect("the MCP client ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            !stdout.contains(UPSTREAM_TOKEN) && !stderr.contains(UPSTREAM_TOKEN),
            "the client never sees the upstream's credential"
        );
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
    })
}

/// [`spawn_client`], awaited.
async fn client(s: &Setup, key: &str, scenario: &[&str]) -> Value {
    spawn_client(s, key, scenario).await.unwrap()
}

/// Posts one raw message to `/mcp/notes`: status, headers, body text.
async fn post(
    gw: &TestGateway,
    key: Option<&str>,
    session: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = reqwest::Client::new()
        .post(gw.url("/mcp/notes"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    if let Some(session) = session {
        r = r.header("mcp-session-id", session);
    }
    let response = r.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw-client","version":"0.1"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_an_allowed_call_reaches_the_server_with_the_tenants_credential_and_a_blocked_one_never_does()
 {
    let s = setup(TestGateway::start().await, false).await;
    let seen = client(&s, &s.t.agent, &["basic"]).await;

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
    assert_eq!(
        seen["server_progress"].as_array().unwrap().len(),
        3,
        "the server's progress reaches the client: {seen}"
    );
    assert_eq!(seen["blocked"][0], true, "{seen}");
    let blocked = seen["blocked"][1].as_str().unwrap();
    for part in ["Blocked by Writ", "secret_in_arguments", "evt_"] {
        assert!(blocked.contains(part), "{blocked}");
    }

    let calls = s.up.invocations();
    let tools: Vec<&str> = calls.iter().map(|c| c["tool"].as_str().unwrap()).collect();
    assert_eq!(
        tools,
        ["echo", "slow_count"],
        "the blocked call never reached the server"
    );
    let bearer = format!("Bearer {UPSTREAM_TOKEN}");
    assert!(
        calls
            .iter()
            .all(|c| c["auth"] == bearer.as_str() && !c.to_string().contains(&s.t.agent)),
        "each call carried the tenant's credential, never the agent's key: {calls:?}"
    );

    let records = s.gw.audit(&s.t.reviewer).await;
    let decisions: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").collect();
    let outcomes: Vec<(&str, &str)> = decisions
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("notes.echo", "ALLOW"),
            ("notes.slow_count", "ALLOW"),
            ("notes.echo", "BLOCK")
        ]
    );
    // One gateway session for the client's whole MCP session.
    let session = decisions[0]["session_id"].as_str().unwrap();
    assert!(session.starts_with("ws_"), "{session}");
    assert!(decisions.iter().all(|r| r["session_id"] == session));
    let completed = records
        .iter()
        .filter(|r| r["kind"] == "tool_completed")
        .count();
    assert_eq!(completed, 2, "each allowed call's completion is recorded");
    let chain = serde_json::to_string(&records).unwrap();
    assert!(
        !chain.contains(UPSTREAM_TOKEN),
        "the secret is never recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_in_json_rather_than_events_is_relayed_the_same() {
    let s = setup(TestGateway::start().await, true).await;
    let seen = client(&s, &s.t.agent, &["echo", "plain json"]).await;
    assert_eq!(seen["echo"], json!([false, "plain json"]), "{seen}");
    assert_eq!(s.up.invocations().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_held_call_approved_by_a_reviewer_reaches_the_server_once_with_the_held_arguments()
 {
    let s = setup(TestGateway::start().await, false).await;
    let run = spawn_client(&s, &s.t.agent, &["held", "ship it"]);

    let esc = s.gw.pending_escalation(&s.t.reviewer).await;
    assert_eq!(esc["action"], "notes.write_note", "{esc}");
    assert_eq!(esc["codes"], json!(["destructive_tool"]), "{esc}");
    assert!(s.up.invocations().is_empty(), "held, not sent");
    let id = esc["escalation_id"].as_str().unwrap();
    let approved =
        s.gw.client(&s.t.reviewer)
            .approve(id, Some("fine"))
            .await
            .unwrap();
    assert_eq!(approved.status, "approved");

    let seen = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the held call was answered")
        .unwrap();
    assert_eq!(seen["held"], json!([false, "noted: ship it"]), "{seen}");
    assert!(
        seen["progress"][0]
            .as_str()
            .unwrap()
            .contains("Held for a human reviewer"),
        "{seen}"
    );
    let calls = s.up.invocations();
    assert_eq!(calls.len(), 1, "exactly once: {calls:?}");
    assert_eq!(calls[0]["text"], "ship it");
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
async fn over_http_rejected_and_expired_calls_never_reach_the_server_and_say_why() {
    let clock = ManualClock::starting_now();
    let s = setup(TestGateway::start_with_clock(clock.clone()).await, false).await;

    let run = spawn_client(&s, &s.t.agent, &["held", "rejected one"]);
    let id = s.gw.pending_escalation(&s.t.reviewer).await["escalation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.gw.client(&s.t.reviewer)
        .reject(&id, Some("not today"))
        .await
        .unwrap();
    let seen = run.await.unwrap();
    assert_eq!(seen["held"][0], true, "{seen}");
    let text = seen["held"][1].as_str().unwrap();
    for part in [id.as_str(), "rejected", "reviewer@example.com", "not today"] {
        assert!(text.contains(part), "{text}");
    }

    let run = spawn_client(&s, &s.t.agent, &["held", "expired one"]);
    s.gw.pending_escalation(&s.t.reviewer).await;
    clock.advance(61_000);
    let seen = run.await.unwrap();
    assert_eq!(seen["held"][0], true, "{seen}");
    assert!(
        seen["held"][1].as_str().unwrap().contains("expired"),
        "{seen}"
    );
    assert!(s.up.invocations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_client_that_cancels_a_held_call_withdraws_its_escalation() {
    let s = setup(TestGateway::start().await, false).await;
    let seen = client(&s, &s.t.agent, &["cancel", "draft", "3"]).await;
    assert_ne!(seen["cancelled"], false, "{seen}");
    assert_eq!(
        seen["after"],
        json!([false, "after the cancel"]),
        "the session goes on: {seen}"
    );
    let mut withdrawn = Vec::new();
    for _ in 0..100 {
        withdrawn =
            s.gw.client(&s.t.reviewer)
                .escalations(Some("withdrawn"))
                .await
                .unwrap()
                .escalations;
        if !withdrawn.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    let tools: Vec<Value> =
        s.up.invocations()
            .iter()
            .map(|c| c["text"].clone())
            .collect();
    assert_eq!(tools, [json!("after the cancel")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_server_that_dies_mid_call_is_an_error_to_the_client_not_a_hang() {
    let s = setup(TestGateway::start().await, false).await;
    let seen = client(&s, &s.t.agent, &["crash"]).await;
    assert_eq!(seen["crash"][0], "raised", "{seen}");
    assert!(
        seen["crash"][2]
            .as_str()
            .unwrap()
            .contains("the MCP server's answer broke off"),
        "the client learned the server is gone: {seen}"
    );
    assert_eq!(s.up.invocations().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_reached_is_a_json_rpc_error_and_nothing_is_completed() {
    let mut s = setup(TestGateway::start().await, false).await;
    s.up.stop().await;
    let (status, _, body) = post(&s.gw, Some(&s.t.agent), None, INITIALIZE).await;
    assert_eq!(status, 502, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["id"], 1, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{error}"
    );
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let (status, _, body) = post(&s.gw, Some(&s.t.agent), None, call).await;
    assert_eq!(status, 502, "{body}");
    let records = s.gw.audit(&s.t.reviewer).await;
    assert!(records.iter().any(|r| r["action"] == "notes.echo"));
    assert!(!records.iter().any(|r| r["kind"] == "tool_completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_only_its_own_keys_and_only_agents_of_the_tenant_reach_the_server() {
    let s = setup(TestGateway::start().await, false).await;
    let (status, headers, body) = post(&s.gw, Some(&s.t.agent), None, INITIALIZE).await;
    assert_eq!(status, 200, "{body}");
    let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
    assert!(
        session.starts_with("ws_"),
        "the gateway's own id: {session}"
    );
    assert!(body.contains("writ-test-server"), "{body}");

    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    let (status, _, body) = post(&s.gw, Some(&s.t.agent), Some(&session), ping).await;
    assert_eq!(status, 200, "{body}");

    // Another agent key of the same tenant cannot ride on the session.
    let operator = s.gw.client(&s.gw.operator_key);
    let other = operator
        .create_key(
            &s.t.id,
            &CreateKeyBody {
                role: "agent".into(),
                subject: "another-agent".into(),
                agent_id: None,
            },
        )
        .await
        .unwrap()
        .api_key;
    let (status, _, body) = post(&s.gw, Some(&other), Some(&session), ping).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = post(&s.gw, Some(&s.t.agent), Some("ws_made_up"), ping).await;
    assert_eq!(status, 404);

    // Only agent keys; another tenant does not have the server.
    for key in [&s.t.reviewer, &s.t.admin] {
        let (status, _, _) = post(&s.gw, Some(key), None, INITIALIZE).await;
        assert_eq!(status, 403);
    }
    let (status, _, _) = post(&s.gw, None, None, INITIALIZE).await;
    assert_eq!(status, 401);
    let stranger = s.gw.tenant("stranger", Some(artifacts::MCP_GUARD)).await;
    let (status, _, body) = post(&s.gw, Some(&stranger.agent), None, INITIALIZE).await;
    assert_eq!(status, 404, "{body}");

    // The server's own event stream opens through the gateway, in the session.
    let stream = reqwest::Client::new()
        .get(s.gw.url("/mcp/notes"))
        .bearer_auth(&s.t.agent)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    drop(stream);

    // DELETE ends it: then it is gone for its own key too.
    let response = reqwest::Client::new()
        .delete(s.gw.url("/mcp/notes"))
        .bearer_auth(&s.t.agent)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _, _) = post(&s.gw, Some(&s.t.agent), Some(&session), ping).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_could_smuggle_a_call_past_the_policy_is_refused_before_the_server_sees_it() {
    let s = setup(TestGateway::start().await, false).await;
    for body in [
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}]"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"text":"x"}}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#,
        "not json",
    ] {
        let (status, _, answer) = post(&s.gw, Some(&s.t.agent), None, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error: Value = serde_json::from_str(&answer).unwrap();
        assert!(
            error["error"]["code"].is_i64(),
            "a JSON-RPC error: {answer}"
        );
    }
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(2 << 20)
    );
    let (status, _, _) = post(&s.gw, Some(&s.t.agent), None, &huge).await;
    assert_eq!(status, 413);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let (status, _, _) = post(&s.gw, Some(&s.t.agent), None, &deep).await;
    assert_eq!(status, 400);
    assert!(s.up.invocations().is_empty());
}

#[tokio::test]
async fn an_upstream_is_registered_only_where_the_egress_guard_and_its_credential_allow() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", None).await;
    let (status, _) = gw
        .call(
            Method::PUT,
            "/v1/credentials/tok",
            Some(&t.admin),
            Some(json!({"secret": "s", "origins": ["http://127.0.0.1:9"]})),
        )
        .await;
    assert_eq!(status, 204);
    let put = async |body: Value| {
        gw.call(
            Method::PUT,
            "/v1/mcp/servers/remote",
            Some(&t.admin),
            Some(body),
        )
        .await
    };
    let credential = json!({"name": "tok", "header": "Authorization", "format": "Bearer {secret}"});
    for (body, code) in [
        // Refused at the decision point: no connection is made to any of these.
        (
            json!({"url": "http://169.254.169.254/mcp"}),
            "egress_denied",
        ),
        (json!({"url": "http://10.0.0.7/mcp"}), "egress_denied"),
        (
            json!({"url": "http://[::ffff:169.254.169.254]/mcp"}),
            "egress_denied",
        ),
        (
            json!({"url": "http://127.0.0.1:10/mcp", "credential": credential}),
            "credential_origin_mismatch",
        ),
        (
            json!({"url": "http://user:pw@127.0.0.1:9/mcp"}),
            "invalid_request",
        ),
        (json!({"url": "file:///etc/passwd"}), "invalid_request"),
        (
            json!({"url": "http://127.0.0.1:9/mcp", "credential": {"name": "tok", "header": "Host", "format": "{secret}"}}),
            "invalid_request",
        ),
        (json!({"credential": credential}), "invalid_request"),
    ] {
        let (status, answer) = put(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let (status, answer) =
        put(json!({"url": "http://127.0.0.1:9/mcp", "credential": credential})).await;
    assert_eq!(status, 200, "{answer}");
    let records = gw.audit(&t.reviewer).await;
    let put = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "catalog_put")
        .expect("the change is recorded");
    let detail: Value = serde_json::from_str(put["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["url"], "http://127.0.0.1:9/mcp");
    assert_eq!(detail["credential"], "tok");
}
