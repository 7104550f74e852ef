//! The load harness behind `writ bench`, end to end: bench tenants set up over the HTTP API,
//! a bounded load on a real gateway and on the floor, and what the report says about them
//! checked against the gateway's own audit log.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;

use writ_bench::{self as bench, CallKind, LoadConfig, Mix, Report, Stop};
use writ_tests::gateway::{TestGateway, assert_chain_valid};
use writ_tests::{artifacts, component};

const REQUESTS: u64 = 400;

/// Loads `target` at `addr` with [`REQUESTS`] calls of the default mix on 4 connections, and
/// checks that every one was answered.
async fn load(target: &str, addr: SocketAddr, keys: &[String]) -> Report {
    let config = LoadConfig {
        connections: 4,
        stop: Stop::Requests(REQUESTS),
        warmup_s: 0.0,
        mix: Mix::default(),
        metrics_key: Some("wk_op_test_operator_key".into()),
    };
    let report = bench::run_load(target, addr, keys, None, &config)
        .await
        .expect("load runs");
    assert_eq!(
        (report.requests, report.errors),
        (REQUESTS, 0),
        "{report:?}"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_load_is_answered_recorded_and_reported() {
    let gw = TestGateway::start().await;
    let base = format!("http://{}", gw.addr);
    let policy = component(artifacts::PAYMENTS_LIMITS);
    let tenants = bench::setup_tenants(&base, &gw.operator_key, &policy, "bench", 2)
        .await
        .expect("tenants set up");
    let keys: Vec<String> = tenants.iter().map(|t| t.agent_key.clone()).collect();

    let report = load("writ", gw.addr, &keys).await;
    assert_eq!(report.sent.values().sum::<u64>(), REQUESTS);
    // Each kind of call gets the decision payments-limits gives it.
    let sent = |kind| report.sent.get(&kind).copied().unwrap_or(0);
    let decided = |d: &str| report.decisions.get(d).copied().unwrap_or(0);
    assert!(sent(CallKind::OverLimit) > 0 && sent(CallKind::Unknown) > 0);
    assert_eq!(decided("ESCALATE"), sent(CallKind::OverLimit));
    assert_eq!(decided("BLOCK"), sent(CallKind::Unknown));
    assert_eq!(
        decided("ALLOW"),
        sent(CallKind::Payment) + sent(CallKind::Email)
    );

    // Every answered call is in its tenant's chain (a decision, or an escalation opened),
    // both tenants were loaded, and the chains verify.
    let mut recorded = BTreeMap::new();
    for tenant in &tenants {
        let records = gw.audit(&tenant.reviewer_key).await;
        assert_chain_valid(&records);
        let decisions = records
            .iter()
            .filter(|r| r["kind"] == "decision" || r["kind"] == "escalation_opened")
            .count();
        assert!(decisions > 0, "tenant {} was not loaded", tenant.id);
        recorded.insert(tenant.id.clone(), decisions as u64);
    }
    assert_eq!(recorded.values().sum::<u64>(), REQUESTS, "{recorded:?}");

    // The writer's window: the records it wrote while the window was open, in durable
    // batches. `/metrics` is read as the window opens, while the first calls are already in
    // flight, so some may be written before it: most are not.
    let audit = report.audit.as_ref().expect("the gateway's audit window");
    assert!(
        audit.records <= REQUESTS && audit.records * 2 >= REQUESTS,
        "{audit:?}"
    );
    assert!(audit.batches >= 1 && audit.batches <= audit.records);
    assert!(audit.flush_p50_us.is_some() && audit.flush_p50_us <= audit.flush_p99_us);
    assert!(audit.flushing_percent > 0.0, "{audit:?}");
    let table = bench::table(std::slice::from_ref(&report));
    assert!(table.contains("writ round 1 audit: "), "{table}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_answers_the_same_load_without_an_audit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, writ_bench::floor::router()).into_future());

    let keys = ["wk_no_key_is_checked".to_owned()];
    let report = load("floor", addr, &keys).await;
    assert_eq!(
        report.decisions,
        BTreeMap::from([("ALLOW".to_owned(), REQUESTS)])
    );
    assert!(report.audit.is_none(), "the floor records nothing");
    server.abort();
}
