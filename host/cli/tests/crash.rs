//! Durable before acknowledged, under SIGKILL: the real `writ` binary as a child process, 32
//! concurrent agents, killed mid-flight at a different point each round, restarted on the same
//! data dir. Every event id any agent received must be in the chain, the chain must verify with
//! no gaps, and the gateway must continue it at the next seq.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::child::ChildGateway;
use writ_tests::gateway::assert_chain_valid;

fn spawn(dir: &std::path::Path) -> ChildGateway {
    spawn_logging(dir, Stdio::null())
}

fn spawn_logging(dir: &std::path::Path, stderr: Stdio) -> ChildGateway {
    ChildGateway::spawn(env!("CARGO_BIN_EXE_writ"), dir, stderr)
}

async fn wait_ready(client: &reqwest::Client, gw: &ChildGateway) {
    gw.wait_ready(client).await;
}

async fn post(client: &reqwest::Client, url: &str, key: &str, body: Value) -> Value {
    let r = client
        .post(url)
        .header("X-PROVENANCE-API-KEY", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_decision_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut gw = spawn(dir.path());
    wait_ready(&client, &gw).await;

    let t = gw.tenant("t", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (admin, agent) = (t.admin, t.agent);

    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    for (round, kill_after_ms) in [300u64, 900, 1700].into_iter().enumerate() {
        let mut agents = Vec::new();
        for a in 0..32 {
            let (client, url, key, received) = (
                client.clone(),
                gw.url.clone(),
                agent.clone(),
                received.clone(),
            );
            agents.push(tokio::spawn(async move {
                for i in 0.. {
                    let body = json!({
                        "session_id": format!("r{round}-a{a}"),
                        "agent_id": format!("agent-{a}"),
                        "action": "payments.initiate",
                        "parameters": {"amount": 10 + i % 700, "currency": "GBP"},
                    });
                    let sent = client
                        .post(format!("{url}/v1/gateway/execute?wait=0"))
                        .header("X-PROVENANCE-API-KEY", &key)
                        .timeout(Duration::from_secs(10))
                        .json(&body)
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    let Ok(answer) = response.json::<Value>().await else {
                        break;
                    };
                    let event = answer["event_id"].as_str().unwrap().to_owned();
                    received.lock().unwrap().push(event);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        gw.kill();
        for a in agents {
            a.await.unwrap();
        }
        let before_restart = received.lock().unwrap().len();
        assert!(
            before_restart > 0,
            "round {round}: no decision was made before the kill"
        );

        gw = spawn(dir.path());
        wait_ready(&client, &gw).await;
        let records = gw.audit(&admin).await;
        assert_chain_valid(&records);
        let in_chain: std::collections::HashSet<&str> = records
            .iter()
            .map(|r| r["event_id"].as_str().unwrap())
            .collect();
        let missing: Vec<String> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|e| !in_chain.contains(e.as_str()))
            .cloned()
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged but lost: {missing:?}"
        );
        let verify: Value = client
            .get(format!("{}/v1/audit/verify", gw.url))
            .header("X-PROVENANCE-API-KEY", &admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(verify["ok"], true, "{verify}");

        // The chain continues at the next seq.
        let next = post(
            &client,
            &format!("{}/v1/gateway/execute", gw.url),
            &agent,
            json!({"session_id": "after", "agent_id": "a", "action": "email.send", "parameters": {}}),
        )
        .await;
        let event = next["event_id"].as_str().unwrap();
        received.lock().unwrap().push(event.to_owned());
        let record: Value = client
            .get(format!("{}/v1/audit/events/{event}", gw.url))
            .header("X-PROVENANCE-API-KEY", &admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(record["seq"], records.len() as u64, "round {round}");
        eprintln!(
            "round {round}: killed after {kill_after_ms} ms with {before_restart} acknowledged; chain has {} records",
            records.len()
        );
    }
    gw.kill();
}

/// A job interrupted by a restart is marked failed (`interrupted`) and recorded, never re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_job_is_failed_not_re_run() {
    let hits = Arc::new(Mutex::new(0usize));
    let app = axum::Router::new().fallback({
        let hits = hits.clone();
        move || {
            let hits = hits.clone();
            async move {
                *hits.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let downstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut gw = spawn(dir.path());
    wait_ready(&client, &gw).await;
    let t = gw.tenant("t", Some(artifacts::ALLOW_ALL)).await;
    let (admin, agent) = (t.admin, t.agent);
    let put = client
        .put(format!("{}/v1/catalog/pay/pay.send", gw.url))
        .header("X-PROVENANCE-API-KEY", &admin)
        .json(&json!({"method": "POST", "url": format!("{downstream}/send")}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let answer: Value = client
        .post(format!("{}/v1/execute", gw.url))
        .bearer_auth(&agent)
        .json(&json!({"service": "pay", "toolCall": {"toolName": "pay.send", "arguments": {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = answer["jobId"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while *hits.lock().unwrap() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the job never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.kill();

    gw = spawn(dir.path());
    wait_ready(&client, &gw).await;
    let state: Value = client
        .get(format!("{}/v1/jobs/{job}", gw.url))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["status"], "failed", "{state}");
    assert_eq!(state["executionError"], "interrupted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*hits.lock().unwrap(), 1, "the payment was not sent twice");
    let records = gw.audit(&admin).await;
    assert!(
        records.iter().any(|r| r["kind"] == "job_finished"
            && r["detail"].as_str().unwrap().contains("interrupted")),
        "the interruption is recorded"
    );
    gw.kill();
}

/// A downstream credential appears in no response, no log line (at debug level) and no audit
/// export, even as it is injected into a downstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_logs_responses_or_the_audit() {
    const SECRET: &str = "sk_live_NEVERLOGTHIS_4242";
    let app = axum::Router::new().fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let downstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let client = reqwest::Client::new();
    let mut gw = spawn_logging(&dir.path().join("data"), Stdio::from(log));
    wait_ready(&client, &gw).await;
    let t = gw.tenant("t", Some(artifacts::ALLOW_ALL)).await;
    let (admin, agent) = (t.admin, t.agent);
    let mut responses = String::new();
    let mut send = async |r: reqwest::RequestBuilder| {
        let text = r
            .header("X-PROVENANCE-API-KEY", &admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        responses.push_str(&text);
    };
    send(
        client
            .put(format!("{}/v1/credentials/stripe", gw.url))
            .json(&json!({"secret": SECRET, "origins": [downstream]})),
    )
    .await;
    send(
        client
            .put(format!("{}/v1/catalog/stripe/stripe.charges.list", gw.url))
            .json(&json!({
        "method": "GET", "url": format!("{downstream}/charges"),
        "credential": {"name": "stripe", "header": "Authorization", "format": "Bearer {secret}"}})),
    )
    .await;
    send(client.get(format!("{}/v1/credentials", gw.url))).await;
    send(client.get(format!("{}/v1/catalog", gw.url))).await;
    let answer: Value = client
        .post(format!("{}/v1/execute", gw.url))
        .bearer_auth(&agent)
        .json(&json!({"service": "stripe", "toolCall": {"toolName": "stripe.charges.list", "arguments": {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    responses.push_str(&answer.to_string());
    let job = answer["jobId"].as_str().unwrap();
    let started = Instant::now();
    loop {
        let state = client
            .get(format!("{}/v1/jobs/{job}", gw.url))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if state.contains("completed") {
            responses.push_str(&state);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    responses.push_str(
        &client
            .get(format!("{}/v1/audit/export", gw.url))
            .header("X-PROVENANCE-API-KEY", &admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    gw.kill();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("decision"), "the log was captured");
    assert!(!logs.contains(SECRET), "the secret was logged");
    assert!(!responses.contains(SECRET), "the secret was in a response");
}
