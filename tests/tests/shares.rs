//! Fair shares: a tenant over its call rate is refused with 429 and `Retry-After`, and a tenant
//! whose policy spins to its deadline on every call cannot take the evaluation slots its
//! neighbours need.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use writ_gateway::clock::ManualClock;
use writ_tests::artifacts;
use writ_tests::gateway::TestGateway;

const PAYMENT: fn() -> Value = || json!({"amount": 10, "currency": "GBP"});

#[tokio::test]
async fn a_tenant_over_its_call_rate_gets_429_with_retry_after_and_its_neighbour_does_not() {
    let clock = ManualClock::starting_now();
    let gw = TestGateway::start_with_clock(clock.clone()).await;
    let t = gw.tenant("busy", Some(artifacts::PAYMENTS_LIMITS)).await;
    let neighbour = gw.tenant("quiet", Some(artifacts::PAYMENTS_LIMITS)).await;
    gw.set_limits(&t, json!({"rate_per_s": 2, "burst": 2, "queue_ms": 0}))
        .await;
    for _ in 0..2 {
        assert_eq!(
            gw.execute(&t.agent, "s", "payments.initiate", PAYMENT())
                .await
                .0,
            200
        );
    }
    let recorded = gw.audit(&t.admin).await.len();
    let r = gw
        .request(
            Method::POST,
            "/v1/gateway/execute?wait=0",
            Some(&t.agent),
            Some(json!({"session_id": "s", "agent_id": "a", "action": "payments.initiate", "parameters": PAYMENT()})),
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limited", "{error}");
    assert_eq!(
        gw.audit(&t.admin).await.len(),
        recorded,
        "a refused call is not evaluated or recorded"
    );
    assert_eq!(
        gw.execute(&neighbour.agent, "s", "payments.initiate", PAYMENT())
            .await
            .0,
        200
    );
    clock.advance(1_000);
    assert_eq!(
        gw.execute(&t.agent, "s", "payments.initiate", PAYMENT())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn limits_out_of_bounds_are_refused() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", None).await;
    for limits in [
        json!({"max_evaluations": 0}),
        json!({"queue_ms": 600_000}),
        json!({"max_queued": 0}),
    ] {
        let (status, body) = gw
            .call(
                Method::PATCH,
                &format!("/v1/admin/tenants/{}", t.id),
                Some(&gw.operator_key),
                Some(limits),
            )
            .await;
        assert_eq!(status, 400, "{body}");
    }
}

/// 32 calls at a time whose policy spins until its fuel or deadline runs out (about a second)
/// would hold every one of the gateway's 16 evaluation slots, and a neighbour's call would wait
/// behind them for rounds of that second; capped at 2 slots and a budget of evaluation time, the
/// flood leaves the slots to the neighbour, whose calls are each answered inside a second while
/// the flood goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_spinning_to_its_deadline_cannot_take_the_slots_its_neighbour_needs() {
    let gw = Arc::new(TestGateway::start().await);
    let flood = gw.tenant("flood", Some(artifacts::HOSTILE)).await;
    let neighbour = gw
        .tenant("neighbour", Some(artifacts::PAYMENTS_LIMITS))
        .await;
    gw.set_limits(&flood,
        json!({"fuel": 1_000_000_000, "deadline_ms": 2_000, "max_evaluations": 2, "eval_ms_per_s": 1_000, "queue_ms": 10_000}),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let (spun, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flooders: Vec<_> = (0..32)
        .map(|_| {
            let (gw, key, stop) = (gw.clone(), flood.agent.clone(), stop.clone());
            let (spun, refused) = (spun.clone(), refused.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, answer) = gw.execute(&key, "s", "spin", json!({})).await;
                    match status {
                        200 => {
                            assert_eq!(answer["decision"], "BLOCK", "{answer}");
                            spun.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => panic!("{other}: {answer}"),
                    }
                }
            })
        })
        .collect();
    // Let the flood fill whatever it can take.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    for i in 0..40 {
        let answer: Value = client
            .post(gw.url("/v1/gateway/execute?wait=0"))
            .header("X-PROVENANCE-API-KEY", &neighbour.agent)
            .timeout(Duration::from_millis(1_000))
            .json(&json!({"session_id": "n", "agent_id": "n", "action": "payments.initiate", "parameters": PAYMENT()}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("neighbour call {i} was not answered in time: {e}"))
            .json()
            .await
            .unwrap();
        assert_eq!(answer["decision"], "ALLOW", "{answer}");
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    assert!(spun.load(Ordering::Relaxed) > 0, "the flood's calls ran");
}
