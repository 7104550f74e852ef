//! `POST /v1/events/{event_id}/completion`: how an allowed call went, reported by the key that
//! made it, once, and recorded in the chain.

use reqwest::Method;
use rstest::rstest;
use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, assert_chain_valid};

fn report() -> Value {
    json!({"is_error": false, "result_bytes": 120, "duration_ms": 7})
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn the_key_that_made_an_allowed_call_reports_its_completion_once(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (_, allowed) = gw
        .execute(&t.agent, "s", "email.send", json!({"to": "a@b"}))
        .await;
    let (_, blocked) = gw.execute(&t.agent, "s", "shell.exec", json!({})).await;
    let path = |e: &Value| format!("/v1/events/{}/completion", e["event_id"].as_str().unwrap());

    // Not the caller's key, not an allowed call, not a record of this tenant: refused.
    let stranger = gw.tenant("globex", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (status, _) = gw
        .call(
            Method::POST,
            &path(&allowed),
            Some(&stranger.agent),
            Some(report()),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .call(
            Method::POST,
            &path(&allowed),
            Some(&t.reviewer),
            Some(report()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = gw
        .call(
            Method::POST,
            &path(&blocked),
            Some(&t.agent),
            Some(report()),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = gw
        .call(
            Method::POST,
            &path(&allowed),
            Some(&t.agent),
            Some(json!({"is_error": false})),
        )
        .await;
    assert_eq!(status, 400, "a report has every field");

    let (status, body) = gw
        .call(
            Method::POST,
            &path(&allowed),
            Some(&t.agent),
            Some(report()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, again) = gw
        .call(
            Method::POST,
            &path(&allowed),
            Some(&t.agent),
            Some(report()),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "already_completed");

    let records = gw.audit(&t.reviewer).await;
    let completed: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "tool_completed")
        .collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["event_id"], body["event_id"]);
    assert_eq!(completed[0]["action"], "email.send");
    let detail: Value = serde_json::from_str(completed[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        detail,
        json!({"of": allowed["event_id"], "is_error": false, "result_bytes": 120, "duration_ms": 7})
    );
    assert_chain_valid(&records);
}
