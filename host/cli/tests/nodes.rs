//! Three real `writ serve` processes on one PostgreSQL store (the tests' private cluster), under
//! load through all three at once; one is killed with SIGKILL mid-load. Every decision any node
//! acknowledged is in the chain, which is one gapless chain that verifies; the survivors go on.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::child::ChildGateway;
use writ_tests::gateway::assert_chain_valid;
use writ_tests::postgres::PgCluster;

const WRIT: &str = env!("CARGO_BIN_EXE_writ");

/// Sends executes through `url` until a send fails; every event id answered goes in `acked`.
async fn agent(
    client: reqwest::Client,
    url: String,
    key: String,
    n: usize,
    acked: Arc<Mutex<Vec<String>>>,
) {
    for i in 0.. {
        let body = json!({
            "session_id": format!("n{n}"),
            "agent_id": format!("agent-{n}"),
            "action": "payments.initiate",
            "parameters": {"amount": 10 + i % 400, "currency": "GBP"},
        });
        let sent = client
            .post(format!("{url}/v1/gateway/execute?wait=0"))
            .header("X-PROVENANCE-API-KEY", &key)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        let Ok(response) = sent else { break };
        if response.status() != 200 {
            break;
        }
        let Ok(answer) = response.json::<Value>().await else {
            break;
        };
        acked
            .lock()
            .unwrap()
            .push(answer["event_id"].as_str().unwrap().to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writ_serve_processes_share_one_chain_and_a_killed_one_loses_no_acknowledged_decision()
 {
    let url = PgCluster::shared().database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<ChildGateway> = dirs
        .iter()
        .map(|d| ChildGateway::spawn_node(WRIT, d.path(), &url, Stdio::null()))
        .collect();
    let client = reqwest::Client::new();
    for node in &nodes {
        node.wait_ready(&client).await;
    }
    let (_, admin, agent_key) = nodes[0].tenant(&client, artifacts::PAYMENTS_LIMITS).await;
    // Every node has heard of the key and compiled the policy before the load starts.
    for node in &nodes[1..] {
        for _ in 0..1200 {
            let answer: Value = client
                .post(format!("{}/v1/gateway/execute?wait=0", node.url))
                .header("X-PROVENANCE-API-KEY", &agent_key)
                .json(&json!({"session_id": "probe", "agent_id": "p", "action": "probe", "parameters": {}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            if answer["decision"].is_string() && answer["codes"] != json!(["no_active_policy"]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut agents = Vec::new();
    for n in 0..24 {
        let node = &nodes[n % 3];
        agents.push(tokio::spawn(agent(
            client.clone(),
            node.url.clone(),
            agent_key.clone(),
            n,
            acked.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[1].kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The survivors' agents are stopped by killing them too, after the load ran on.
    let before_survivors_stop = acked.lock().unwrap().len();
    nodes[2].kill();
    nodes[0].kill();
    for a in agents {
        a.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(before_survivors_stop > 0 && acked.len() >= before_survivors_stop);

    // A node started afresh on the same store reads the whole chain.
    let dir = tempfile::tempdir().unwrap();
    let reader = ChildGateway::spawn_node(WRIT, dir.path(), &url, Stdio::null());
    reader.wait_ready(&client).await;
    let records = reader.all_records(&client, &admin).await;
    assert_chain_valid(&records);
    let in_chain: HashSet<&str> = records
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|e| !in_chain.contains(e.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let verify: Value = client
        .get(format!("{}/v1/audit/verify", reader.url))
        .header("X-PROVENANCE-API-KEY", &admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    eprintln!(
        "{} decisions acknowledged by three nodes (one killed mid-load); chain of {} records",
        acked.len(),
        records.len()
    );
}
