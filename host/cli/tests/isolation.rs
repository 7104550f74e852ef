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
    let victim = gw.tenant("victim", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (victim_admin, victim) = (victim.admin, victim.agent);
    let attacker = gw.tenant("attacker", Some(artifacts::ALLOW_ALL)).await;
    let (attacker_id, attacker_admin, attacker) = (attacker.id, attacker.admin, attacker.agent);
    // This test is about what the records hold, not the tenant's share of evaluation time
    // (large arguments take a while to evaluate in a debug build).
    let unlimited = writ_client::wire::PatchTenantBody {
        eval_ms_per_s: Some(0),
        ..Default::default()
    };
    writ_client::Client::with_http(client.clone(), &gw.url, writ_tests::child::OPERATOR)
        .patch_tenant(&attacker_id, &unlimited)
        .await
        .unwrap();

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
        .audit(&attacker_admin)
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

/// A gateway whose store holds one tenant with an active policy that no longer loads and
/// another whose chain head does not decode still starts: those two are degraded (named with
/// what failed in `/readyz` for the operator, counted in the metrics), their calls are blocked
/// (recorded where the chain takes it, 503 where it does not), a third tenant serves, and
/// activating a policy again repairs the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_cannot_be_loaded_is_degraded_and_the_others_serve() {
    use writ_tests::child::OPERATOR;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut gw = spawn(dir.path());
    gw.wait_ready(&client).await;
    let t = gw.tenant("t", Some(artifacts::ALLOW_ALL)).await;
    let (no_policy, no_policy_admin, no_policy_agent) = (t.id, t.admin, t.agent);
    let t = gw.tenant("t", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (bad_chain, _, bad_chain_agent) = (t.id, t.admin, t.agent);
    let t = gw.tenant("t", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (_, _, healthy_agent) = (t.id, t.admin, t.agent);
    let payment = json!({"amount": 10, "currency": "GBP"});
    for agent in [&no_policy_agent, &bad_chain_agent, &healthy_agent] {
        assert_eq!(execute(&client, &gw, agent, payment.clone()).await.0, 200);
    }
    gw.kill();

    // ALLOW_ALL is active only for the first tenant: its files go.
    let policy_id = blake3::hash(&writ_tests::component(artifacts::ALLOW_ALL))
        .to_hex()
        .to_string();
    for ext in ["wasm", "cwasm"] {
        std::fs::remove_file(
            dir.path()
                .join("policies")
                .join(format!("{policy_id}.{ext}")),
        )
        .unwrap();
    }
    {
        let store = writ_gateway::store::Store::open(dir.path()).unwrap();
        let last = gw_last_seq(&store, &bad_chain);
        writ_gateway::audit::replace_stored_record(&store, &bad_chain, last, Some(b"not a record"))
            .unwrap();
        store.flush().unwrap();
    }

    gw = spawn(dir.path());
    gw.wait_ready(&client).await;
    let public: Value = client
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(public["degraded_tenants"], 2, "{public}");
    assert!(
        public.get("degraded").is_none(),
        "tenant ids are for the operator: {public}"
    );
    let detail: Value = client
        .get(format!("{}/readyz", gw.url))
        .header("X-PROVENANCE-API-KEY", OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reasons: std::collections::HashMap<&str, &str> = detail["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["tenant_id"].as_str().unwrap(),
                d["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        reasons[no_policy.as_str()].starts_with("policy: "),
        "{detail}"
    );
    assert!(
        reasons[bad_chain.as_str()].starts_with("chain: "),
        "{detail}"
    );
    let metrics = client
        .get(format!("{}/metrics", gw.url))
        .header("X-PROVENANCE-API-KEY", OPERATOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("writ_tenants_degraded 2"), "{metrics}");

    let (status, answer) = execute(&client, &gw, &no_policy_agent, payment.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "BLOCK");
    assert_eq!(answer["codes"], json!(["tenant_unavailable"]), "{answer}");
    // Its head is known from its head row (the broken record is not needed to chain on): the
    // refusal is recorded after it, blocked like the other degraded tenant's.
    let (status, answer) = execute(&client, &gw, &bad_chain_agent, payment.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "BLOCK");
    assert_eq!(answer["codes"], json!(["tenant_unavailable"]), "{answer}");
    let (status, answer) = execute(&client, &gw, &healthy_agent, payment.clone()).await;
    assert_eq!(
        (status, answer["decision"].as_str()),
        (200, Some("ALLOW")),
        "{answer}"
    );

    writ_client::Client::with_http(client.clone(), &gw.url, &no_policy_admin)
        .upload_policy("again", true, writ_tests::component(artifacts::ALLOW_ALL))
        .await
        .unwrap();
    let (status, answer) = execute(&client, &gw, &no_policy_agent, payment).await;
    assert_eq!(
        (status, answer["decision"].as_str()),
        (200, Some("ALLOW")),
        "{answer}"
    );
}

/// The seq of a tenant's last stored record.
fn gw_last_seq(store: &writ_gateway::store::Store, tenant_id: &str) -> u64 {
    writ_gateway::audit::stored_records(store, tenant_id, 0)
        .map(|r| r.unwrap().0)
        .last()
        .unwrap()
}
