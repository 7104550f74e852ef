//! A store that cannot make records durable: the gateway acknowledges nothing until it can.

use reqwest::Method;
use serde_json::json;
use writ_tests::artifacts;
use writ_tests::gateway::TestGateway;

#[tokio::test]
async fn while_the_store_cannot_flush_nothing_is_acknowledged_and_readyz_says_why() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let payment = || json!({"amount": 10, "currency": "GBP"});
    assert_eq!(
        gw.execute(&t.agent, "s", "payments.initiate", payment())
            .await
            .0,
        200
    );

    gw.store().fail_flushes(true);
    for _ in 0..2 {
        let (status, answer) = gw
            .execute(&t.agent, "s", "payments.initiate", payment())
            .await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
    }
    let (status, ready) = gw.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["reason"].as_str().unwrap().contains("cannot flush"),
        "{ready}"
    );

    gw.store().fail_flushes(false);
    let (status, ready) = gw.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200, "{ready}");
    let (status, answer) = gw
        .execute(&t.agent, "s", "payments.initiate", payment())
        .await;
    assert_eq!(
        (status, answer["decision"].as_str()),
        (200, Some("ALLOW")),
        "{answer}"
    );
    let (_, verified) = gw
        .call(Method::GET, "/v1/audit/verify", Some(&t.admin), None)
        .await;
    assert_eq!(verified["ok"], true, "{verified}");
    let decisions = gw
        .audit(&t.admin)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "decision")
        .count();
    assert_eq!(
        decisions, 3,
        "the first call, the one whose flush failed (applied, never acknowledged), and the last; the refused one wrote nothing"
    );
}
