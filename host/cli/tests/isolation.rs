//! One tenant cannot take the gateway down for the others, across a restart: the real `writ`
//! binary as a child process, restarted on the same data directory.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::child::ChildGateway;

fn spawn(dir: &std::path::Path) -> ChildGateway {
    ChildGateway::spawn(env!("CARGO_BIN_EXE_writ"), dir, Stdio::null())
}

async fn execute(
    client: &reqwest::Client,
    gw: &ChildGateway,
    key: &str,
    parameters: Value,
) -> (u16, Value) {
    let r = client
        .post(format!("{}/v1/gateway/execute?wait=0", gw.url))
        .header("X-PROVENANCE-API-KEY", key)
        .timeout(Duration::from_secs(60))
        .json(&json!({
            "session_id": "s", "agent_id": "a", "action": "payments.initiate",
            "parameters": parameters,
        }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn verify(client: &reqwest::Client, gw: &ChildGateway, key: &str) -> Value {
    client
        .get(format!("{}/v1/audit/verify", gw.url))
        .header("X-PROVENANCE-API-KEY", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The attack: 3 × 64 concurrent calls of about 1 MiB from one agent key, whose `parameters`
/// are `"` characters that double when stored. Those over the record bound are refused with
/// 413 before evaluation; those just under it are recorded in blocks that read back; after a
/// restart every tenant serves and every chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flooding_oversized_records_cannot_stop_the_gateway_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut gw = spawn(dir.path());
    gw.wait_ready(&client).await;
    let (_, victim_admin, victim) = gw.tenant(&client, artifacts::PAYMENTS_LIMITS).await;
    let (_, attacker_admin, attacker) = gw.tenant(&client, artifacts::ALLOW_ALL).await;

    // Each `"` is sent as `\"` and stored escaped again: a body of about 1 MiB, a record of 2.
    let over = "\"".repeat((1 << 19) - 100);
    let under = "\"".repeat(300 << 10);
    let mut recorded = 0;
    for round in 0..3 {
        let calls: Vec<_> = (0..64)
            .map(|i| {
                let (client, url, key) = (client.clone(), gw.url.clone(), attacker.clone());
                let q = if i % 2 == 0 {
                    over.clone()
                } else {
                    under.clone()
                };
                tokio::spawn(async move {
                    let gw = ChildGateway::attach(url);
                    execute(&client, &gw, &key, json!({ "q": q })).await
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let (status, answer) = call.await.unwrap();
            if i % 2 == 0 {
                assert_eq!(status, 413, "round {round}: {answer}");
                assert_eq!(answer["error"]["code"], "record_too_large");
            } else {
                assert_eq!(status, 200, "round {round}: {answer}");
                recorded += 1;
            }
        }
    }
    let page = client
        .get(format!("{}/v1/audit?limit=2", gw.url))
        .header("X-PROVENANCE-API-KEY", &attacker_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(verify(&client, &gw, &attacker_admin).await["ok"], true);

    gw.kill();
    gw = spawn(dir.path());
    gw.wait_ready(&client).await;
    for admin in [&attacker_admin, &victim_admin] {
        let verified = verify(&client, &gw, admin).await;
        assert_eq!(verified["ok"], true, "{verified}");
    }
    let decisions = gw
        .all_records(&client, &attacker_admin)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "decision")
        .count();
    assert_eq!(
        decisions, recorded,
        "every acknowledged call, and only those"
    );
    let (status, answer) = execute(
        &client,
        &gw,
        &victim,
        json!({"amount": 10, "currency": "GBP"}),
    )
    .await;
    assert_eq!(
        (status, answer["decision"].as_str()),
        (200, Some("ALLOW")),
        "{answer}"
    );
}
