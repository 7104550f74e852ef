//! Escalations over HTTP against a live gateway: held calls approved, rejected, expired,
//! disconnected, restarted and raced; the reviewer API and its rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use rstest::rstest;
use serde_json::{Value, json};
use writ_gateway::clock::ManualClock;
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, TestTenant, assert_chain_valid};

const OVER_LIMIT: fn() -> Value =
    || json!({"amount": 800, "currency": "GBP", "recipient_id": "rec_xyz789"});

/// Polls until the tenant has `n` pending escalations; returns their ids, oldest first.
async fn pending(gw: &TestGateway, reviewer: &str, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let (status, list) = gw
            .call(Method::GET, "/v1/escalations/pending", Some(reviewer), None)
            .await;
        assert_eq!(status, 200, "{list}");
        let ids: Vec<String> = list["escalations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["escalation_id"].as_str().unwrap().to_owned())
            .collect();
        if ids.len() >= n {
            return ids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {} pending",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn decide(gw: &TestGateway, key: &str, id: &str, verb: &str, note: &str) -> (u16, Value) {
    gw.call(
        Method::POST,
        &format!("/v1/escalations/{id}/{verb}"),
        Some(key),
        Some(json!({"note": note})),
    )
    .await
}

async fn held(
    gw: &Arc<TestGateway>,
    t: &TestTenant,
    params: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let (gw, key) = (gw.clone(), t.agent.clone());
    tokio::spawn(async move {
        gw.execute_waiting(&key, "sess-h", "payments.initiate", params, None)
            .await
    })
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn approved_call_is_allowed_with_the_reviewer_as_actor(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let call = held(&gw, &t, OVER_LIMIT()).await;
    let id = pending(&gw, &t.reviewer, 1).await.remove(0);
    let (status, esc) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{id}"),
            Some(&t.reviewer),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(esc["status"], "pending");
    assert_eq!(esc["action"], "payments.initiate");
    assert_eq!(esc["parameters"]["amount"], 800);
    assert_eq!(esc["codes"], json!(["amount_over_limit"]));
    assert_eq!(esc["agent_id"], "agent-1");
    assert_eq!(esc["call_hash"].as_str().unwrap().len(), 64);

    let (status, decided) = decide(&gw, &t.reviewer, &id, "approve", "Verified with CFO").await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["decision"], "ALLOW");
    assert_eq!(body["reason"], "Verified with CFO");
    assert_eq!(body["actor_human_id"], "reviewer@example.com");
    assert_eq!(body["escalation_id"], id.as_str());
    let records = gw.audit(&t.admin).await;
    assert_chain_valid(&records);
    let resolved: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "escalation_resolved")
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["actor"], "reviewer@example.com");
    assert_eq!(resolved[0]["event_id"], body["event_id"]);
    let detail: Value = serde_json::from_str(resolved[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["note"], "Verified with CFO");
    assert!(detail["held_ms"].as_u64().is_some());
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "escalation_opened" && r["escalation_id"] == id.as_str())
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn rejected_call_is_blocked_with_the_note(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let call = held(
        &gw,
        &t,
        json!({"amount": 100, "currency": "JPY", "recipient_id": "rec_jpy001"}),
    )
    .await;
    let id = pending(&gw, &t.reviewer, 1).await.remove(0);
    let (status, _) = decide(&gw, &t.admin, &id, "reject", "JPY not authorised").await;
    assert_eq!(status, 200, "a tenant admin may decide too");
    let (_, body) = call.await.unwrap();
    assert_eq!(body["decision"], "BLOCK");
    assert_eq!(body["reason"], "JPY not authorised");
    assert_eq!(body["codes"], json!(["escalation_rejected"]));
    let (_, list) = gw
        .call(
            Method::GET,
            "/v1/escalations?status=rejected",
            Some(&t.reviewer),
            None,
        )
        .await;
    assert_eq!(list["escalations"].as_array().unwrap().len(), 1);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn the_key_that_made_a_held_call_withdraws_it_and_no_one_else_can(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let call = held(
        &gw,
        &t,
        json!({"amount": 900, "currency": "GBP", "recipient_id": "rec_1"}),
    )
    .await;
    let id = pending(&gw, &t.reviewer, 1).await.remove(0);
    let path = format!("/v1/escalations/{id}/withdraw");

    // Another agent key of the tenant, a reviewer and another tenant's agent cannot.
    let other = gw
        .client(&t.admin)
        .create_key(
            &t.id,
            &writ_client::wire::CreateKeyBody {
                role: "agent".into(),
                subject: "someone-else".into(),
                agent_id: None,
            },
        )
        .await
        .unwrap()
        .api_key;
    let stranger = gw.tenant("globex", Some(artifacts::PAYMENTS_LIMITS)).await;
    for (key, status) in [(&other, 404), (&t.reviewer, 403), (&stranger.agent, 404)] {
        let (got, body) = gw.call(Method::POST, &path, Some(key), None).await;
        assert_eq!(got, status, "{body}");
    }

    let (status, esc) = gw.call(Method::POST, &path, Some(&t.agent), None).await;
    assert_eq!(status, 200, "{esc}");
    assert_eq!(esc["status"], "withdrawn", "{esc}");
    let (_, answer) = call.await.unwrap();
    assert_eq!(answer["decision"], "BLOCK", "{answer}");
    assert_eq!(answer["codes"], json!(["escalation_withdrawn"]), "{answer}");

    // Exactly once: neither a reviewer nor a second withdrawal changes it.
    let (status, _) = decide(&gw, &t.reviewer, &id, "approve", "too late").await;
    assert_eq!(status, 409);
    let (status, _) = gw.call(Method::POST, &path, Some(&t.agent), None).await;
    assert_eq!(status, 409);
    let records = gw.audit(&t.reviewer).await;
    let resolved: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "escalation_resolved")
        .collect();
    assert_eq!(resolved.len(), 1);
    let detail: Value = serde_json::from_str(resolved[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["status"], "withdrawn");
    assert_eq!(resolved[0]["key_subject"], "agent-owner");
    assert_chain_valid(&records);
}

/// Polls (bounded) until escalation `id` has `status`.
async fn until_status(gw: &TestGateway, reviewer: &str, id: &str, status: &str) {
    let started = Instant::now();
    loop {
        let (_, esc) = gw
            .call(
                Method::GET,
                &format!("/v1/escalations/{id}"),
                Some(reviewer),
                None,
            )
            .await;
        if esc["status"] == status {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still {}",
            esc["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn unanswered_escalation_expires_and_later_decisions_conflict(#[case] backend: Backend) {
    let clock = ManualClock::starting_now();
    let gw = Arc::new(TestGateway::start_on_with_clock(&backend, clock.clone()).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    // A held call is answered BLOCK once its deadline passes (the tenant's hold, 60 s).
    let call = held(&gw, &t, OVER_LIMIT()).await;
    let id = pending(&gw, &t.reviewer, 1).await.remove(0);
    clock.advance(60_000);
    let (_, body) = call.await.unwrap();
    assert_eq!(body["decision"], "BLOCK");
    assert_eq!(body["codes"], json!(["escalation_expired"]));
    assert_eq!(body["escalation_id"], id.as_str());
    let (status, error) = decide(&gw, &t.reviewer, &id, "approve", "too late").await;
    assert_eq!(status, 409, "{error}");
    // An escalation nobody waits for expires too, through the sweeper.
    let (_, early) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert_eq!(early["decision"], "ESCALATE");
    let eid = early["escalation_id"].as_str().unwrap();
    clock.advance(59_999);
    let (_, esc) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{eid}"),
            Some(&t.reviewer),
            None,
        )
        .await;
    assert_eq!(
        esc["status"], "pending",
        "a millisecond before its deadline"
    );
    clock.advance(1);
    until_status(&gw, &t.reviewer, eid, "expired").await;
    let records = gw.audit(&t.admin).await;
    let expired = records
        .iter()
        .filter(|r| {
            r["kind"] == "escalation_resolved" && r["codes"] == json!(["escalation_expired"])
        })
        .count();
    assert_eq!(expired, 2);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn a_decision_that_arrives_at_the_deadline_expires_the_escalation(#[case] backend: Backend) {
    let clock = ManualClock::starting_now();
    let gw = TestGateway::start_on_with_clock(&backend, clock.clone()).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (_, early) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    let id = early["escalation_id"].as_str().unwrap();
    // Past the deadline, before the sweeper has run: the decision expires it instead.
    clock.advance(60_000);
    let (status, error) = decide(&gw, &t.reviewer, id, "approve", "late").await;
    assert_eq!(status, 409, "{error}");
    assert!(
        ["escalation_expired", "already_resolved"]
            .contains(&error["error"]["code"].as_str().unwrap()),
        "{error}"
    );
    until_status(&gw, &t.reviewer, id, "expired").await;
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn wait_zero_answers_at_once_and_the_wait_endpoint_fetches_the_outcome(
    #[case] backend: Backend,
) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let started = Instant::now();
    let (_, body) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(body["decision"], "ESCALATE");
    let id = body["escalation_id"].as_str().unwrap().to_owned();
    let waiter = {
        let (gw, key, id) = (gw.clone(), t.agent.clone(), id.clone());
        tokio::spawn(async move {
            gw.call(
                Method::GET,
                &format!("/v1/escalations/{id}/wait?timeout=20"),
                Some(&key),
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    decide(&gw, &t.reviewer, &id, "approve", "").await;
    let (status, answer) = waiter.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "approved");
    assert_eq!(answer["result"]["decision"], "ALLOW");
    assert_eq!(
        answer["result"]["reason"], body["reason"],
        "no note: the policy's reason"
    );
    // A pending one answers ESCALATE when the timeout runs out.
    let (_, other) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    let oid = other["escalation_id"].as_str().unwrap();
    let (_, answer) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{oid}/wait?timeout=0"),
            Some(&t.agent),
            None,
        )
        .await;
    assert_eq!(answer["status"], "pending");
    assert_eq!(answer["result"]["decision"], "ESCALATE");
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn only_reviewers_of_the_tenant_who_do_not_hold_the_calling_key_decide(
    #[case] backend: Backend,
) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let other = gw.tenant("other", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (_, body) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    let id = body["escalation_id"].as_str().unwrap();
    // Whoever holds the agent key that made the call ("agent-owner") holds this one too.
    let (_, self_reviewer) = gw
        .call(
            Method::POST,
            &format!("/v1/admin/tenants/{}/keys", t.id),
            Some(&t.admin),
            Some(json!({"role": "reviewer", "subject": "agent-owner"})),
        )
        .await;
    let self_reviewer = self_reviewer["api_key"].as_str().unwrap();
    for (key, status) in [
        (t.agent.as_str(), 403),
        (other.reviewer.as_str(), 404),
        (other.admin.as_str(), 404),
        (self_reviewer, 403),
    ] {
        let (got, error) = decide(&gw, key, id, "approve", "").await;
        assert_eq!(got, status, "{error}");
    }
    let (status, _) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{id}"),
            Some(&other.reviewer),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .call(Method::GET, "/v1/escalations", Some(&t.agent), None)
        .await;
    assert_eq!(status, 403);
    // The Provenance form: the approver is the key's subject, whatever the body claims.
    let (status, decided) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/decide"),
            Some(&t.reviewer),
            Some(json!({"decision": "APPROVE", "reason": "ok", "approver_id": "someone-else"})),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["decided_by"], "reviewer@example.com");
    let (status, _) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/decide"),
            Some(&t.reviewer),
            Some(json!({"decision": "MAYBE"})),
        )
        .await;
    assert_eq!(status, 400);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn concurrent_decisions_resolve_exactly_once(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let mut calls = Vec::new();
    for _ in 0..20 {
        calls.push(held(&gw, &t, OVER_LIMIT()).await);
    }
    let ids = pending(&gw, &t.reviewer, 20).await;
    let mut races = Vec::new();
    for id in ids {
        for verb in ["approve", "reject", "approve", "reject"] {
            let (gw, key, id) = (gw.clone(), t.reviewer.clone(), id.clone());
            races.push(tokio::spawn(async move {
                let (status, _) = decide(&gw, &key, &id, verb, verb).await;
                (id, verb, status)
            }));
        }
    }
    let mut winners = std::collections::HashMap::new();
    for race in races {
        let (id, verb, status) = race.await.unwrap();
        match status {
            200 => assert!(winners.insert(id, verb).is_none(), "two winners"),
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 20);
    for call in calls {
        let (_, body) = call.await.unwrap();
        let verb = winners[body["escalation_id"].as_str().unwrap()];
        let expected = if verb == "approve" { "ALLOW" } else { "BLOCK" };
        assert_eq!(body["decision"], expected);
        assert_eq!(body["reason"], verb);
    }
    let records = gw.audit(&t.admin).await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r["kind"] == "escalation_resolved")
            .count(),
        20
    );
    assert_chain_valid(&records);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn approval_records_the_charges_then_and_not_before(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::SPEND_CAP)).await;
    // 900 + 4200 today is over the 5000 day cap: escalated, charge pending.
    let (_, first) = gw
        .execute(
            &t.agent,
            "s1",
            "payments.initiate",
            json!({"amount": 900, "currency": "EUR"}),
        )
        .await;
    assert_eq!(first["decision"], "ALLOW");
    for s in 2..6 {
        gw.execute(
            &t.agent,
            &format!("s{s}"),
            "payments.initiate",
            json!({"amount": 1000, "currency": "EUR"}),
        )
        .await;
    }
    let (_, big) = gw
        .execute(
            &t.agent,
            "s9",
            "payments.initiate",
            json!({"amount": 200, "currency": "EUR"}),
        )
        .await;
    assert_eq!(big["decision"], "ESCALATE", "{big}");
    let charged = |records: &[Value]| -> f64 {
        records
            .iter()
            .flat_map(|r| r["charges"].as_array().unwrap().clone())
            .map(|c| c["amount"].as_str().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        charged(&gw.audit(&t.admin).await),
        4900.0,
        "nothing charged while pending"
    );
    let id = big["escalation_id"].as_str().unwrap();
    decide(&gw, &t.reviewer, id, "approve", "one-off").await;
    assert_eq!(
        charged(&gw.audit(&t.admin).await),
        5100.0,
        "charged on approval"
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn pending_cap_blocks_new_escalations(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let op = gw.operator_key.clone();
    let (status, patched) = gw
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t.id),
            Some(&op),
            Some(json!({"max_pending_escalations": 2})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["limits"]["max_pending_escalations"], 2);
    for _ in 0..2 {
        let (_, b) = gw
            .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
            .await;
        assert_eq!(b["decision"], "ESCALATE");
    }
    let (_, b) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert_eq!(b["decision"], "BLOCK");
    assert_eq!(b["codes"], json!(["too_many_pending_escalations"]));
    let (_, rec) = gw
        .call(
            Method::GET,
            &format!("/v1/audit/events/{}", b["event_id"].as_str().unwrap()),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(rec["codes"], json!(["too_many_pending_escalations"]));
    // Deciding one frees a slot.
    let id = pending(&gw, &t.reviewer, 2).await.remove(0);
    decide(&gw, &t.reviewer, &id, "reject", "no").await;
    let (_, b) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert_eq!(b["decision"], "ESCALATE");
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn disconnected_client_does_not_cancel_the_escalation(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let sent = impatient
        .post(gw.url("/v1/gateway/execute"))
        .header("X-PROVENANCE-API-KEY", &t.agent)
        .json(&json!({"session_id": "s", "agent_id": "agent-1", "action": "payments.initiate", "parameters": OVER_LIMIT()}))
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up");
    let id = pending(&gw, &t.reviewer, 1).await.remove(0);
    let (status, _) = decide(&gw, &t.reviewer, &id, "approve", "fine").await;
    assert_eq!(status, 200);
    let (_, answer) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{id}/wait?timeout=5"),
            Some(&t.agent),
            None,
        )
        .await;
    assert_eq!(answer["result"]["decision"], "ALLOW");
    assert_eq!(answer["result"]["actor_human_id"], "reviewer@example.com");
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn pending_escalations_survive_a_restart_and_overdue_ones_expire(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let gw = TestGateway::start_in_on_with_clock(dir.path(), &backend, clock.clone()).await;
    let short = gw.tenant("short", Some(artifacts::PAYMENTS_LIMITS)).await;
    let long = gw.tenant("long", Some(artifacts::PAYMENTS_LIMITS)).await;
    let op = gw.operator_key.clone();
    gw.call(
        Method::PATCH,
        &format!("/v1/admin/tenants/{}", short.id),
        Some(&op),
        Some(json!({"escalation_hold_s": 1})),
    )
    .await;
    let (_, a) = gw
        .execute(&short.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    let (_, b) = gw
        .execute(&long.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    gw.stop().await;
    clock.advance(1_500);

    let gw = TestGateway::start_in_on_with_clock(dir.path(), &backend, clock.clone()).await;
    let a_id = a["escalation_id"].as_str().unwrap();
    let b_id = b["escalation_id"].as_str().unwrap();
    let (_, answer) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{a_id}/wait?timeout=5"),
            Some(&short.agent),
            None,
        )
        .await;
    assert_eq!(answer["status"], "expired", "{answer}");
    assert_eq!(answer["result"]["codes"], json!(["escalation_expired"]));
    let (_, esc) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{b_id}"),
            Some(&long.reviewer),
            None,
        )
        .await;
    assert_eq!(esc["status"], "pending");
    let (status, _) = decide(&gw, &long.reviewer, b_id, "approve", "after restart").await;
    assert_eq!(status, 200);
    let (_, answer) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{b_id}/wait?timeout=5"),
            Some(&long.agent),
            None,
        )
        .await;
    assert_eq!(answer["result"]["decision"], "ALLOW");
    assert_eq!(answer["result"]["reason"], "after restart");
    let records = gw.audit(&short.admin).await;
    assert_chain_valid(&records);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "escalation_resolved"
                && r["codes"] == json!(["escalation_expired"]))
    );
}

/// 1,000 calls held at once, resolved by a reviewer loop.
#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_calls_each_get_their_outcome(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let n = 1000;
    let mut calls = Vec::new();
    for i in 0..n {
        let (gw, key) = (gw.clone(), t.agent.clone());
        calls.push(tokio::spawn(async move {
            gw.execute_waiting(
                &key,
                &format!("load-{i}"),
                "payments.initiate",
                json!({"amount": 600 + i, "currency": "GBP"}),
                None,
            )
            .await
        }));
    }
    let ids = pending(&gw, &t.reviewer, n).await;
    eprintln!("gateway RSS with {n} calls held: {} KiB", rss_kib());
    for id in &ids {
        let (_, esc) = gw
            .call(
                Method::GET,
                &format!("/v1/escalations/{id}"),
                Some(&t.reviewer),
                None,
            )
            .await;
        let amount = esc["parameters"]["amount"].as_u64().unwrap();
        let verb = if amount.is_multiple_of(2) {
            "approve"
        } else {
            "reject"
        };
        let (status, _) = decide(&gw, &t.reviewer, id, verb, &format!("{verb} {amount}")).await;
        assert_eq!(status, 200);
    }
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200);
        let reason = body["reason"].as_str().unwrap();
        let amount: u64 = reason.split(' ').nth(1).unwrap().parse().unwrap();
        let expected = if amount.is_multiple_of(2) {
            "ALLOW"
        } else {
            "BLOCK"
        };
        assert_eq!(body["decision"], expected, "{body}");
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A webhook receiver on loopback: records what it gets; fails the first `fail_first`
/// deliveries with a 500, or hangs when `hang`.
async fn receiver(
    fail_first: usize,
    hang: bool,
) -> (
    String,
    Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>,
) {
    use axum::http::{HeaderMap, StatusCode};
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let (got, seen) = (got.clone(), seen.clone());
                async move {
                    if hang {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    got.lock().unwrap().push((
                        header("x-writ-event"),
                        header("x-writ-signature"),
                        body.to_vec(),
                    ));
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_never_slow_a_decision() {
    use hmac::{Hmac, Mac};
    let gw = Arc::new(TestGateway::start().await);
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (good, good_got) = receiver(0, false).await;
    let (flaky, flaky_got) = receiver(2, false).await;
    let (hanging, _) = receiver(0, true).await;
    let (status, _) = gw
        .call(
            Method::PUT,
            "/v1/webhooks",
            Some(&t.agent),
            Some(json!({"urls": [good]})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = gw
        .call(
            Method::PUT,
            "/v1/webhooks",
            Some(&t.admin),
            Some(json!({"urls": ["ftp://x"]})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, set) = gw
        .call(
            Method::PUT,
            "/v1/webhooks",
            Some(&t.admin),
            Some(json!({"urls": [good, flaky, hanging]})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let secret = set["secret"].as_str().unwrap().to_owned();
    let (_, listed) = gw
        .call(Method::GET, "/v1/webhooks", Some(&t.admin), None)
        .await;
    assert!(listed.get("secret").is_none(), "the secret is shown once");

    let started = Instant::now();
    let (_, body) = gw
        .execute(&t.agent, "s", "payments.initiate", OVER_LIMIT())
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a hanging webhook slowed the decision"
    );
    let id = body["escalation_id"].as_str().unwrap().to_owned();
    decide(&gw, &t.reviewer, &id, "approve", "ok").await;

    for got in [&good_got, &flaky_got] {
        let started = Instant::now();
        while got.lock().unwrap().len() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "events not delivered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let events = got.lock().unwrap().clone();
        let kinds: std::collections::HashSet<&str> =
            events.iter().map(|(k, _, _)| k.as_str()).collect();
        assert!(kinds.contains("escalation_opened") && kinds.contains("escalation_resolved"));
        for (kind, signature, body) in &events {
            // `t=<ms>,v1=<hex HMAC of "<ms>.<body>">`: the time is signed with the body.
            let (t, v1) = signature
                .strip_prefix("t=")
                .and_then(|s| s.split_once(",v1="))
                .unwrap_or_else(|| panic!("{signature}"));
            let sent_ms: u64 = t.parse().unwrap();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            assert!(now_ms.abs_diff(sent_ms) < 60_000, "signed now: {signature}");
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{t}.").as_bytes());
            mac.update(body);
            assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
            // The same signature does not cover the body at another time.
            let mut replayed = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            replayed.update(format!("{}.", sent_ms + 300_000).as_bytes());
            replayed.update(body);
            assert_ne!(v1, hex::encode(replayed.finalize().into_bytes()));
            let event: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(event["type"], kind.as_str());
            assert_eq!(event["escalation_id"], id.as_str());
            assert_eq!(
                event["console_path"],
                format!("/console/escalations/{id}"),
                "the reviewer's link"
            );
            if kind == "escalation_resolved" {
                assert_eq!(event["status"], "approved");
                assert_eq!(event["decided_by"], "reviewer@example.com");
            }
        }
    }
}
