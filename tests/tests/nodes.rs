//! Several gateways (nodes) on one PostgreSQL store, in the test's process so that they share
//! an injected clock: what happens across nodes when time passes (a dead node's lease runs
//! out; a held call's deadline passes). The scenarios that need no clock run with real
//! `writ serve` processes in `host/cli/tests/nodes.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use writ_gateway::clock::ManualClock;
use writ_tests::artifacts;
use writ_tests::gateway::{TestGateway, assert_chain_valid};
use writ_tests::postgres::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_node_died_is_marked_interrupted_by_another_and_never_run_again() {
    let clock = ManualClock::starting_now();
    let url = PgCluster::shared().database();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestGateway::start_node_with_clock(a_dir.path(), &url, clock.clone()).await;
    let b = TestGateway::start_node_with_clock(b_dir.path(), &url, clock.clone()).await;
    let t = a.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    b.until_key_known(&t.reviewer).await;
    // A downstream that takes the request and never answers.
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().fallback({
        let hits = hits.clone();
        move || {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<&'static str>()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (status, body) = a
        .call(
            Method::PUT,
            "/v1/catalog/slow/slow.call",
            Some(&t.admin),
            Some(json!({"method": "POST", "url": format!("{base}/call")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let call = json!({"requestId": "r1", "service": "slow",
                      "toolCall": {"toolName": "slow.call", "arguments": {}},
                      "agent": {"agentId": "bot"}});
    let r = reqwest::Client::new()
        .post(a.url("/v1/execute"))
        .bearer_auth(&t.agent)
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job_id = r.json::<serde_json::Value>().await.unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..200 {
        if hits.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the job is running on a"
    );

    // Node a goes away with its job in flight; past the lease, node b marks it interrupted.
    a.stop().await;
    clock.advance(writ_gateway::jobs::LEASE_MS + 1);
    let started = Instant::now();
    let job = loop {
        let (status, job) = b
            .call(
                Method::GET,
                &format!("/v1/jobs/{job_id}"),
                Some(&t.agent),
                None,
            )
            .await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "failed" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still {job}");
        clock.advance(1_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["executionError"], "interrupted", "{job}");
    let records = b.audit(&t.reviewer).await;
    assert!(
        records.iter().any(|r| r["kind"] == "job_finished"
            && r["detail"].as_str().unwrap().contains("interrupted")),
        "the interruption is recorded"
    );
    assert_chain_valid(&records);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "never run again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_on_one_node_expires_once_across_nodes_at_its_deadline_and_not_before() {
    let clock = ManualClock::starting_now();
    let url = PgCluster::shared().database();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(TestGateway::start_node_with_clock(a_dir.path(), &url, clock.clone()).await);
    let b = TestGateway::start_node_with_clock(b_dir.path(), &url, clock.clone()).await;
    let t = a.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    b.until_key_known(&t.reviewer).await;
    let (held_on, key) = (a.clone(), t.agent.clone());
    let waiting = tokio::spawn(async move {
        held_on
            .execute_waiting(
                &key,
                "s",
                "payments.initiate",
                json!({"amount": 5000, "currency": "GBP"}),
                None,
            )
            .await
    });
    let esc = b.pending_escalation(&t.reviewer).await;
    let id = esc["escalation_id"].as_str().unwrap().to_owned();
    // A second short of the tenant's hold (60 s), nothing expires on either node.
    clock.advance(59_000);
    let (status, waited) = b.wait_escalation(&t.agent, &id, 1).await;
    assert_eq!(status, 200, "{waited}");
    assert_eq!(waited["status"], "pending", "{waited}");

    // At the deadline both nodes' sweepers see it due; one expires it, once.
    clock.advance(1_000);
    let (status, answer) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the caller held on node a was answered")
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["codes"], json!(["escalation_expired"]), "{answer}");
    let (status, waited) = b.wait_escalation(&t.agent, &id, 1).await;
    assert_eq!(status, 200, "{waited}");
    assert_eq!(waited["status"], "expired", "{waited}");
    let records = b.audit(&t.reviewer).await;
    let expired = records
        .iter()
        .filter(|r| {
            r["kind"] == "escalation_resolved" && r["codes"] == json!(["escalation_expired"])
        })
        .count();
    assert_eq!(expired, 1, "expired once across both nodes");
    assert_chain_valid(&records);
}
