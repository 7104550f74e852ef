//! A gateway whose PostgreSQL store goes away (the tests' private cluster stopped as a crash
//! stops it, its own in this test binary) fails closed: no call is allowed without a durable
//! record; when the database is back, it serves again on its own.

use std::time::{Duration, Instant};

use serde_json::json;
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, assert_chain_valid};
use writ_tests::postgres::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_database_goes_away_answers_503_and_recovers_when_it_returns() {
    let gw = TestGateway::start_on(&Backend::postgres()).await;
    let t = gw.tenant("acme", Some(artifacts::SPEND_CAP)).await;
    let pay = json!({"amount": 10, "currency": "GBP"});
    let (status, body) = gw
        .execute(&t.agent, "s", "payments.initiate", pay.clone())
        .await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (200, Some("ALLOW")),
        "{body}"
    );

    PgCluster::shared().stop();
    for _ in 0..3 {
        let (status, body) = gw
            .execute(&t.agent, "s", "payments.initiate", pay.clone())
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    }

    PgCluster::shared().start_again();
    let back = Instant::now();
    let answered = loop {
        let (status, body) = gw
            .execute(&t.agent, "s", "payments.initiate", pay.clone())
            .await;
        if status == 200 {
            break body;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "not back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answered["decision"], "ALLOW", "{answered}");
    let records = gw.audit(&t.reviewer).await;
    assert_chain_valid(&records);
    // Two ALLOWs, each recorded and charged once; nothing from the outage.
    let allowed = records
        .iter()
        .filter(|r| r["kind"] == "decision" && r["outcome"] == "ALLOW")
        .count();
    assert_eq!(allowed, 2);
}
