//! Identity comes from the key: every record names the key that acted and who holds it,
//! separation of duties compares holders, and limits keyed by the calling key cannot be reset
//! by renaming the agent or the session.

use reqwest::Method;
use rstest::rstest;
use serde_json::{Value, json};
use writ_gateway::audit::{AuditLog, Kind, RecordBody, stored_records};
use writ_gateway::store::Store;
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, TestTenant};

/// Creates a key of `role` held by `subject` in the tenant; returns (secret, key id).
async fn key(gw: &TestGateway, t: &TestTenant, role: &str, subject: &str) -> (String, String) {
    let (status, key) = gw
        .call(
            Method::POST,
            &format!("/v1/admin/tenants/{}/keys", t.id),
            Some(&t.admin),
            Some(json!({"role": role, "subject": subject})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    (
        key["api_key"].as_str().unwrap().to_owned(),
        key["key_id"].as_str().unwrap().to_owned(),
    )
}

async fn execute(
    gw: &TestGateway,
    key: &str,
    agent: &str,
    session: &str,
    action: &str,
    parameters: Value,
) -> Value {
    let (status, answer) = gw
        .call(
            Method::POST,
            "/v1/gateway/execute?wait=0",
            Some(key),
            Some(json!({"session_id": session, "agent_id": agent, "action": action, "parameters": parameters})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn every_record_names_the_key_that_acted_and_who_holds_it(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (agent, agent_key) = key(&gw, &t, "agent", "alice").await;
    let (reviewer, reviewer_key) = key(&gw, &t, "reviewer", "bob").await;
    execute(
        &gw,
        &agent,
        "a",
        "s",
        "payments.initiate",
        json!({"amount": 10, "currency": "GBP"}),
    )
    .await;
    let held = execute(
        &gw,
        &agent,
        "a",
        "s",
        "payments.initiate",
        json!({"amount": 5000, "currency": "GBP"}),
    )
    .await;
    let id = held["escalation_id"].as_str().unwrap();
    let (status, _) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/approve"),
            Some(&reviewer),
            Some(json!({"note": "ok"})),
        )
        .await;
    assert_eq!(status, 200);

    let records = gw.audit(&t.admin).await;
    let by_kind =
        |kind: &str| -> Vec<&Value> { records.iter().filter(|r| r["kind"] == kind).collect() };
    for r in &records {
        assert_eq!(r["version"], 2, "{r}");
        assert!(
            r.get("key_id").is_some() && r.get("key_subject").is_some(),
            "{r}"
        );
    }
    for r in by_kind("decision")
        .into_iter()
        .chain(by_kind("escalation_opened"))
    {
        assert_eq!(
            (r["key_id"].as_str(), r["key_subject"].as_str()),
            (Some(agent_key.as_str()), Some("alice")),
            "{r}"
        );
        assert_eq!(
            r["agent_id"], "a",
            "the claimed agent id is kept beside the key"
        );
    }
    let resolved = by_kind("escalation_resolved");
    assert_eq!(
        (
            resolved[0]["key_id"].as_str(),
            resolved[0]["key_subject"].as_str()
        ),
        (Some(reviewer_key.as_str()), Some("bob"))
    );
    let activated = by_kind("policy_activated");
    assert_eq!(activated[0]["key_subject"], "admin@example.com");
    let created: Vec<&Value> = by_kind("key_created");
    assert!(
        created
            .iter()
            .all(|r| r["key_id"].as_str().is_some_and(|k| k.starts_with("key_")))
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn one_person_holding_an_agent_key_and_a_reviewer_key_cannot_approve_their_own_call(
    #[case] backend: Backend,
) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (agent, _) = key(&gw, &t, "agent", "mallory").await;
    let (own_reviewer, _) = key(&gw, &t, "reviewer", "mallory").await;
    // A reviewer named like the agent the call claims to be is someone else.
    let (named_like_the_agent, _) = key(&gw, &t, "reviewer", "finance-bot").await;
    let held = execute(
        &gw,
        &agent,
        "finance-bot",
        "s",
        "payments.initiate",
        json!({"amount": 5000, "currency": "GBP"}),
    )
    .await;
    let id = held["escalation_id"].as_str().unwrap();
    let (status, refused) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/approve"),
            Some(&own_reviewer),
            Some(json!({"note": "mine"})),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    let (status, approved) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/approve"),
            Some(&named_like_the_agent),
            Some(json!({"note": "ok"})),
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["decided_by"], "finance-bot");
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn renaming_the_agent_or_session_does_not_reset_a_limit_keyed_by_the_calling_key(
    #[case] backend: Backend,
) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::RATE_LIMIT)).await;
    let (second, _) = key(&gw, &t, "agent", "other").await;
    for i in 0..10 {
        let answer = execute(
            &gw,
            &t.agent,
            &format!("agent-{i}"),
            &format!("s{i}"),
            "email.send",
            json!({}),
        )
        .await;
        assert_eq!(answer["decision"], "ALLOW", "{answer}");
    }
    let renamed = execute(
        &gw,
        &t.agent,
        "a-fresh-name",
        "a-fresh-session",
        "email.send",
        json!({}),
    )
    .await;
    assert_eq!(renamed["decision"], "BLOCK", "{renamed}");
    assert_eq!(renamed["codes"], json!(["rate_limited"]));
    let other_key = execute(&gw, &second, "agent-0", "s0", "email.send", json!({})).await;
    assert_eq!(other_key["decision"], "ALLOW", "{other_key}");
}

/// A chain begun before records named their key (format 1) and continued after (format 2)
/// verifies in the gateway and in the independent Python verifier; a format 1 record given a
/// format 2 field does not.
#[tokio::test]
async fn a_chain_of_both_record_formats_verifies_in_the_gateway_and_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    let record = |n: u64, v1: bool| {
        let mut r = RecordBody::new(Kind::Decision);
        r.action = Some("payments.initiate".into());
        r.arguments = Some(format!(r#"{{"amount":{n}}}"#));
        if v1 {
            (r.key_id, r.key_subject, r.version) = (None, None, None);
        } else {
            r.acted_by("key_1", "alice");
        }
        ("ten_a".to_owned(), r, Default::default())
    };
    let items = vec![
        record(0, true),
        record(1, true),
        record(2, false),
        record(3, false),
    ];
    for written in log.write_batch(items) {
        written.unwrap();
    }
    store.flush().unwrap();
    let verified = writ_gateway::verify::verify_chain(&store, "ten_a", None).unwrap();
    assert!(verified.ok(), "{:?}", verified.broken);
    let export: String = stored_records(&store, "ten_a", 0)
        .map(|r| String::from_utf8(r.unwrap().1).unwrap() + "\n")
        .collect();
    assert!(!export.lines().next().unwrap().contains("version"));
    assert!(
        export
            .lines()
            .nth(2)
            .unwrap()
            .contains(r#""key_subject":"alice""#)
    );
    let out = writ_tests::run_verifier(&export, &["--tenant", "ten_a"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok 4 3 "), "{stdout}");

    let relabelled = export.replacen(r#""fuel":null,"#, r#""fuel":null,"key_id":null,"#, 1);
    let out = writ_tests::run_verifier(&relabelled, &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("broken 0 unknown_format"));
}
