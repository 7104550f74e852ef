//! The gateway over HTTP: a real server on a loopback port, a real store (sled in a temp dir;
//! for the tests whose behaviour is the store's, PostgreSQL in the private test cluster too),
//! real components uploaded through the API.

use reqwest::Method;
use rstest::rstest;
use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, assert_chain_valid, recorded_spend};

fn decisions(records: &[Value]) -> usize {
    records.iter().filter(|r| r["kind"] == "decision").count()
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn execute_answers_every_outcome_and_records_it_first(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let cases = [
        (
            "payments.initiate",
            json!({"amount": 50, "currency": "GBP", "recipient_id": "r"}),
            "ALLOW",
            vec![],
        ),
        (
            "payments.initiate",
            json!({"amount": 800, "currency": "GBP"}),
            "ESCALATE",
            vec!["amount_over_limit"],
        ),
        (
            "payments.initiate",
            json!({"amount": 100, "currency": "JPY"}),
            "ESCALATE",
            vec!["currency_not_preapproved"],
        ),
        (
            "payments.initiate",
            json!({"amount": "x", "currency": "GBP"}),
            "BLOCK",
            vec!["invalid_arguments"],
        ),
        ("email.send", json!({"to": "a@b.c"}), "ALLOW", vec![]),
        (
            "github.repos.delete",
            json!({}),
            "BLOCK",
            vec!["action_not_allowed"],
        ),
    ];
    for (action, params, outcome, codes) in cases {
        let (status, body) = gw.execute(&t.agent, "sess-1", action, params).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"], outcome, "{action}: {body}");
        assert_eq!(body["codes"], json!(codes));
        assert_eq!(body["session_id"], "sess-1");
        assert!(body["policy_id"].as_str().unwrap().len() == 64);
        assert_eq!(body["escalation_id"].is_string(), outcome == "ESCALATE");
        let event_id = body["event_id"].as_str().unwrap();
        let (status, record) = gw
            .call(
                Method::GET,
                &format!("/v1/audit/events/{event_id}"),
                Some(&t.admin),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(record["outcome"], outcome);
        assert_eq!(record["action"], action);
        assert_eq!(record["client_hint"], "ALLOW");
        assert_eq!(record["agent_id"], "agent-1");
        assert!(record["fuel"].as_u64().unwrap() > 0);
    }
    let records = gw.audit(&t.reviewer).await;
    assert_chain_valid(&records);
    let (status, session) = gw
        .call(Method::GET, "/v1/sessions/sess-1", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(session["allowed"], 2);
    assert_eq!(session["blocked"], 2);
    assert_eq!(session["escalated"], 2);
    assert_eq!(session["events"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn client_hint_never_changes_the_outcome() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    for hint in ["ALLOW", "BLOCK", "ESCALATE"] {
        let (_, body) = gw
            .call(
                Method::POST,
                "/v1/gateway/execute",
                Some(&t.agent),
                Some(
                    json!({"session_id": "s", "agent_id": "a", "action": "github.repos.delete",
                            "decision": hint, "parameters": {}}),
                ),
            )
            .await;
        assert_eq!(body["decision"], "BLOCK", "hint {hint}");
    }
}

#[tokio::test]
async fn tenant_without_active_policy_is_blocked_and_recorded() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("empty", None).await;
    let (status, body) = gw.execute(&t.agent, "s", "email.send", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["decision"], "BLOCK");
    assert_eq!(body["codes"], json!(["no_active_policy"]));
    let records = gw.audit(&t.admin).await;
    assert_eq!(decisions(&records), 1);
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_records_nothing() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let deep = format!(
        r#"{{"session_id":"s","agent_id":"a","action":"x","parameters":{{"a":{}1{}}}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let huge = format!(
        r#"{{"session_id":"s","agent_id":"a","action":"x","parameters":{{"a":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_json"),
        (
            r#"{"session_id":"s","agent_id":"a","parameters":{}}"#.into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s","agent_id":"a","action":"x","parameters":[1]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s","agent_id":"a","action":"x","parameters":"p"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"","agent_id":"a","action":"x","parameters":{}}"#.into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s\u0000","agent_id":"a","action":"x","parameters":{}}"#.into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s","agent_id":"a","action":"x","decision":"MAYBE","parameters":{}}"#
                .into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s","agent_id":"a","action":"x","parameters":{},"context":[]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "{\"session_id\":\"s\",\"agent_id\":\"a\",\"action\":\"x\",\"parameters\": \n\t[{}]}"
                .into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s","agent_id":"a","action":"x","parameters":null}"#.into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s","agent_id":"a","action":"x","parameters":{},"context":"{}"}"#
                .into(),
            400,
            "invalid_request",
        ),
        (
            r#"{"session_id":"s","agent_id":"a","action":"x","parameters":{"a":1,}}"#.into(),
            400,
            "invalid_json",
        ),
        (deep, 400, "too_deep"),
        (huge, 413, "payload_too_large"),
    ];
    for (body, status, code) in cases {
        let shown: String = body.chars().take(80).collect();
        let (got, error) = gw.execute_raw(&t.agent, "", body).await;
        assert_eq!(got, status, "{shown}: {error}");
        assert_eq!(error["error"]["code"], code, "{shown}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(
        decisions(&gw.audit(&t.admin).await),
        0,
        "a bad request was recorded"
    );
}

/// The arguments are kept as the text the agent sent (validated, not re-encoded): the policy
/// reads that text, and the audit record holds it byte for byte.
#[tokio::test]
async fn arguments_are_evaluated_and_recorded_as_the_text_sent() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let send = |arguments: &'static str, context: &'static str| {
        let body = format!(
            r#"{{"session_id":"s","agent_id":"a","action":"payments.initiate","parameters": {arguments} ,"context":{context}}}"#
        );
        let (gw, key) = (&gw, &t.agent);
        async move {
            let (status, answer) = gw.execute_raw(key, "?wait=0", body).await;
            assert_eq!(status, 200);
            answer
        }
    };
    let under = "{\n  \"recipient_id\": \"rec_1\",\n  \"amount\": 20, \"currency\": \"USD\"\n}";
    let over = r#"{"currency":"USD","amount":  5000,"recipient_id":"rec_2"}"#;
    assert_eq!(send(under, "null").await["decision"], "ALLOW");
    assert_eq!(
        send(over, r#"{"env": "prod"}"#).await["decision"],
        "ESCALATE"
    );
    let recorded: Vec<Value> = gw
        .audit(&t.admin)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "decision" || r["kind"] == "escalation_opened")
        .map(|r| r["arguments"].clone())
        .collect();
    assert_eq!(recorded, vec![json!(under), json!(over)]);
}

#[tokio::test]
async fn keys_are_accepted_from_all_three_headers_and_only_while_live() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let body = json!({"session_id": "s", "agent_id": "a", "action": "x", "parameters": {}});
    let client = reqwest::Client::new();
    for (name, value) in [
        ("X-PROVENANCE-API-KEY", t.agent.clone()),
        ("Authorization", format!("Bearer {}", t.agent)),
        ("X-API-Key", t.agent.clone()),
    ] {
        let r = client
            .post(gw.url("/v1/gateway/execute"))
            .header(name, value)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    for key in [None, Some("wk_live_not_a_key"), Some("")] {
        let (status, error) = gw
            .call(Method::POST, "/v1/gateway/execute", key, Some(body.clone()))
            .await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(error["error"]["code"], "unauthorized");
    }
    // Revoke the agent key: it stops working at once.
    let (_, keys) = gw
        .call(
            Method::GET,
            &format!("/v1/admin/tenants/{}/keys", t.id),
            Some(&t.admin),
            None,
        )
        .await;
    let agent_key_id = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "agent")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        keys.to_string().find("wk_live_").is_none(),
        "a secret was listed"
    );
    let (status, _) = gw
        .call(
            Method::DELETE,
            &format!("/v1/admin/keys/{agent_key_id}"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = gw
        .call(
            Method::POST,
            "/v1/gateway/execute",
            Some(&t.agent),
            Some(body),
        )
        .await;
    assert_eq!(status, 401);
    let kinds: Vec<String> = gw
        .audit(&t.admin)
        .await
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"key_created".to_owned()));
    assert!(kinds.contains(&"key_revoked".to_owned()));
}

#[tokio::test]
async fn agent_key_bound_to_an_agent_cannot_act_as_another() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let (status, key) = gw
        .call(
            Method::POST,
            &format!("/v1/admin/tenants/{}/keys", t.id),
            Some(&t.admin),
            Some(json!({"role": "agent", "subject": "bot", "agent_id": "bot-1"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["api_key"].as_str().unwrap();
    let as_agent = |agent: &str| json!({"session_id": "s", "agent_id": agent, "action": "x", "parameters": {}});
    let (status, _) = gw
        .call(
            Method::POST,
            "/v1/gateway/execute",
            Some(secret),
            Some(as_agent("bot-1")),
        )
        .await;
    assert_eq!(status, 200);
    let (status, error) = gw
        .call(
            Method::POST,
            "/v1/gateway/execute",
            Some(secret),
            Some(as_agent("bot-2")),
        )
        .await;
    assert_eq!(status, 403, "{error}");
}

/// Each route with a key of each role, and with another tenant's keys.
#[tokio::test]
async fn every_route_checks_role_and_tenant() {
    let gw = TestGateway::start().await;
    let a = gw.tenant("a", Some(artifacts::ALLOW_ALL)).await;
    let b = gw.tenant("b", Some(artifacts::ALLOW_ALL)).await;
    let (_, done) = gw.execute(&a.agent, "sa", "x", json!({})).await;
    let event = done["event_id"].as_str().unwrap().to_owned();
    let (_, list) = gw
        .call(Method::GET, "/v1/policies", Some(&a.admin), None)
        .await;
    let policy = list["active_policy_id"].as_str().unwrap().to_owned();
    let op = gw.operator_key.clone();

    let exec = json!({"session_id": "s", "agent_id": "a", "action": "x", "parameters": {}});
    // (method, path, body, [(key, expected status)])
    type Row<'a> = (Method, String, Option<Value>, Vec<(&'a str, u16)>);
    let table: Vec<Row> = vec![
        (
            Method::POST,
            "/v1/gateway/execute".into(),
            Some(exec),
            vec![
                (&a.agent, 200),
                (&a.reviewer, 403),
                (&a.admin, 403),
                (&op, 403),
            ],
        ),
        (
            Method::POST,
            "/v1/admin/tenants".into(),
            Some(json!({"name": "n"})),
            vec![
                (&a.agent, 403),
                (&a.reviewer, 403),
                (&a.admin, 403),
                (&op, 201),
            ],
        ),
        (
            Method::PATCH,
            format!("/v1/admin/tenants/{}", a.id),
            Some(json!({"fuel": 1000000})),
            vec![
                (&a.agent, 403),
                (&a.reviewer, 403),
                (&a.admin, 403),
                (&op, 200),
            ],
        ),
        (
            Method::POST,
            format!("/v1/admin/tenants/{}/keys", a.id),
            Some(json!({"role": "agent", "subject": "s"})),
            vec![
                (&a.agent, 403),
                (&a.reviewer, 403),
                (&a.admin, 201),
                (&b.admin, 404),
                (&op, 201),
            ],
        ),
        (
            Method::GET,
            format!("/v1/admin/tenants/{}/keys", a.id),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 403),
                (&a.admin, 200),
                (&b.admin, 404),
                (&op, 200),
            ],
        ),
        (
            Method::GET,
            "/v1/policies".into(),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 200),
                (&a.admin, 200),
                (&op, 403),
            ],
        ),
        (
            Method::POST,
            format!("/v1/policies/{policy}/activate"),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 403),
                (&a.admin, 200),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 200),
                (&a.admin, 200),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            format!("/v1/audit/events/{event}"),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 200),
                (&a.admin, 200),
                (&b.admin, 404),
                (&b.reviewer, 404),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            "/v1/sessions/sa".into(),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 200),
                (&a.admin, 200),
                (&b.admin, 404),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            "/v1/audit/verify".into(),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 200),
                (&a.admin, 200),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            "/v1/audit/export".into(),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 200),
                (&a.admin, 200),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            "/v1/escalations".into(),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 200),
                (&a.admin, 200),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            "/v1/webhooks".into(),
            None,
            vec![
                (&a.agent, 403),
                (&a.reviewer, 403),
                (&a.admin, 200),
                (&op, 403),
            ],
        ),
        (
            Method::GET,
            "/v1/audit/public-key".into(),
            None,
            vec![(&a.agent, 200), (&op, 200)],
        ),
    ];
    for (method, path, body, expectations) in table {
        for (key, expected) in expectations {
            let (status, answer) = gw
                .call(method.clone(), &path, Some(key), body.clone())
                .await;
            assert_eq!(status, expected, "{method} {path}: {answer}");
            if status >= 400 {
                assert!(answer["error"]["code"].is_string(), "{answer}");
                assert!(
                    !answer.to_string().contains(&a.id) || expected != 404,
                    "404 leaked data: {answer}"
                );
            }
        }
    }
    // The other tenant's admin cannot activate a policy it does not have, nor revoke a key.
    let (status, _) = gw
        .call(
            Method::POST,
            &format!("/v1/policies/{policy}/activate"),
            Some(&b.admin),
            None,
        )
        .await;
    assert_eq!(
        status, 200,
        "the same component uploaded by both tenants is each one's own"
    );
    let (_, keys) = gw
        .call(
            Method::GET,
            &format!("/v1/admin/tenants/{}/keys", a.id),
            Some(&a.admin),
            None,
        )
        .await;
    let a_key = keys["keys"][0]["key_id"].as_str().unwrap().to_owned();
    let (status, _) = gw
        .call(
            Method::DELETE,
            &format!("/v1/admin/keys/{a_key}"),
            Some(&b.admin),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // B's audit never holds A's records.
    let b_records = gw.audit(&b.admin).await;
    assert!(b_records.iter().all(|r| r["tenant_id"] == b.id.as_str()));
}

#[tokio::test]
async fn policy_upload_validates_and_names_the_problem() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", None).await;
    let forbidden =
        wat::parse_str(r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#)
            .unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (wat::parse_str("(module)").unwrap(), "core module"),
        (b"hello".to_vec(), "not a WebAssembly component"),
        (wat::parse_str("(component)").unwrap(), "evaluate"),
        (forbidden, "wasi:http/outgoing-handler@0.2.0"),
    ];
    for (bytes, needle) in cases {
        let (status, body) = gw.upload(&t.admin, "bad", bytes, true).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_policy");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    let (status, body) = gw
        .upload(
            &t.admin,
            "bad name!",
            writ_tests::component(artifacts::ALLOW_ALL),
            false,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = gw
        .upload(&t.admin, "huge", vec![0u8; (32 << 20) + 1], false)
        .await;
    assert_eq!(status, 413, "{body}");
    let (_, list) = gw
        .call(Method::GET, "/v1/policies", Some(&t.admin), None)
        .await;
    assert_eq!(list["policies"], json!([]), "nothing half-written");
    assert_eq!(list["active_policy_id"], Value::Null);

    let bytes = writ_tests::component(artifacts::PAYMENTS_LIMITS);
    let (status, body) = gw.upload(&t.admin, "payments", bytes.clone(), false).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["policy_id"], blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(body["size"], bytes.len());
    assert_eq!(body["activated"], false);
}

#[tokio::test]
async fn only_a_tenant_admin_uploads_policies() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", None).await;
    let bytes = writ_tests::component(artifacts::ALLOW_ALL);
    let op = gw.operator_key.clone();
    for key in [&t.agent, &t.reviewer, &op] {
        let (status, body) = gw.upload(key, "p", bytes.clone(), true).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = gw.upload("wk_live_nope", "p", bytes.clone(), true).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = gw.upload(&t.admin, "p", bytes, true).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn hostile_policy_is_blocked_through_the_gateway() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::HOSTILE)).await;
    for (action, code) in [
        ("spin", "policy_fuel_exhausted"),
        ("grow", "policy_memory_limit"),
        ("panic", "policy_trap"),
        ("nan-charge", "policy_invalid_result"),
    ] {
        let (status, body) = gw.execute(&t.agent, "s", action, json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(body["decision"], "BLOCK", "{action}");
        assert_eq!(body["codes"], json!([code]), "{action}");
    }
    let (_, body) = gw.execute(&t.agent, "s", "fine", json!({})).await;
    assert_eq!(body["decision"], "ALLOW");
}

#[tokio::test]
async fn tenant_limits_apply_to_evaluation() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::HOSTILE)).await;
    let op = gw.operator_key.clone();
    let (status, body) = gw
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t.id),
            Some(&op),
            Some(json!({"fuel": 900000000, "deadline_ms": 30})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"]["deadline_ms"], 30);
    let (_, body) = gw.execute(&t.agent, "s", "spin", json!({})).await;
    assert_eq!(body["codes"], json!(["policy_timeout"]));
    for bad in [
        json!({"fuel": 0}),
        json!({"memory_mib": 100000}),
        json!({"deadline_ms": 3600000}),
        json!({"nope": 1}),
    ] {
        let (status, body) = gw
            .call(
                Method::PATCH,
                &format!("/v1/admin/tenants/{}", t.id),
                Some(&op),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

/// Policies that loop until stopped share the gateway's worker threads instead of holding them:
/// with four times as many of them running as there are workers, another tenant's calls are
/// answered while they run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_policies_do_not_hold_the_workers() {
    let gw = std::sync::Arc::new(TestGateway::start().await);
    let hostile = gw.tenant("hostile", Some(artifacts::HOSTILE)).await;
    let good = gw.tenant("good", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (status, body) = gw
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", hostile.id),
            Some(&gw.operator_key),
            Some(json!({"fuel": 1000000000, "deadline_ms": 10000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Each spinner runs until its billion fuel is spent: tens of milliseconds of its own time,
    // interleaved at every epoch tick (1 ms) with the others and with the calls below.
    let spinners: Vec<_> = (0..8)
        .map(|i| {
            let (gw, key) = (gw.clone(), hostile.agent.clone());
            tokio::spawn(async move {
                gw.execute(&key, &format!("spin-{i}"), "spin", json!({}))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let (gw, key) = (gw.clone(), good.agent.clone());
            tokio::spawn(async move {
                let payment = json!({"amount": 10 + i, "currency": "GBP"});
                gw.execute(&key, &format!("s{i}"), "payments.initiate", payment)
                    .await
            })
        })
        .collect();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(
            (status, body["decision"].as_str()),
            (200, Some("ALLOW")),
            "{body}"
        );
    }
    assert!(
        spinners.iter().any(|s| !s.is_finished()),
        "every looping policy had been stopped before the other tenant's calls were answered"
    );
    for spinner in spinners {
        let (status, body) = spinner.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["decision"], "BLOCK", "{body}");
        assert_eq!(body["codes"], json!(["policy_fuel_exhausted"]), "{body}");
    }
}

#[tokio::test]
async fn activation_and_rollback_are_atomic_under_concurrent_calls() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", None).await;
    let (_, allow) = gw
        .upload(
            &t.admin,
            "allow-all",
            writ_tests::component(artifacts::ALLOW_ALL),
            true,
        )
        .await;
    let (_, payments) = gw
        .upload(
            &t.admin,
            "payments",
            writ_tests::component(artifacts::PAYMENTS_LIMITS),
            false,
        )
        .await;
    let allow_id = allow["policy_id"].as_str().unwrap().to_owned();
    let payments_id = payments["policy_id"].as_str().unwrap().to_owned();

    let gw = std::sync::Arc::new(gw);
    let mut calls = Vec::new();
    for i in 0..8 {
        let (gw, key) = (gw.clone(), t.agent.clone());
        calls.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for j in 0..15 {
                let (status, body) = gw
                    .execute(
                        &key,
                        &format!("s{i}"),
                        "github.repos.delete",
                        json!({"j": j}),
                    )
                    .await;
                assert_eq!(status, 200);
                seen.push((
                    body["policy_id"].as_str().unwrap().to_owned(),
                    body["decision"].as_str().unwrap().to_owned(),
                ));
            }
            seen
        }));
    }
    for k in 0..6 {
        let id = if k % 2 == 0 { &payments_id } else { &allow_id };
        let (status, body) = gw
            .call(
                Method::POST,
                &format!("/v1/policies/{id}/activate"),
                Some(&t.admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for call in calls {
        for (policy, decision) in call.await.unwrap() {
            // Every answer is the one its own policy gives: no call saw half a switch.
            let expected = if policy == allow_id { "ALLOW" } else { "BLOCK" };
            assert_eq!(decision, expected, "policy {policy}");
        }
    }
    let records = gw.audit(&t.admin).await;
    assert_chain_valid(&records);
    let activations: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "policy_activated")
        .collect();
    assert_eq!(activations.len(), 7);
    assert_eq!(activations.last().unwrap()["policy_id"], allow_id.as_str());
    let (_, list) = gw
        .call(Method::GET, "/v1/policies", Some(&t.admin), None)
        .await;
    assert_eq!(list["active_policy_id"], allow_id.as_str());
    assert_eq!(
        list["policies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["active"] == true)
            .count(),
        1
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn restart_keeps_policies_keys_and_continues_the_chain(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in_on(dir.path(), &backend).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    for i in 0..5 {
        gw.execute(&t.agent, "s", "email.send", json!({"i": i}))
            .await;
    }
    let before = gw.audit(&t.admin).await;
    gw.stop().await;

    let gw = TestGateway::start_in_on(dir.path(), &backend).await;
    // The session index and event ids of records written before the restart still resolve
    // (the session entries were still in memory at the stop: they are rebuilt from the chain).
    let event_id = before.last().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, event) = gw
        .call(
            Method::GET,
            &format!("/v1/audit/events/{event_id}"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(event, *before.last().unwrap());
    let (status, body) = gw
        .execute(
            &t.agent,
            "s",
            "payments.initiate",
            json!({"amount": 800, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 200, "keys survive a restart");
    assert_eq!(
        body["codes"],
        json!(["amount_over_limit"]),
        "the policy is still active"
    );
    let after = gw.audit(&t.admin).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.last().unwrap()["seq"], before.len() as u64);
    assert_chain_valid(&after);
    let (status, session) = gw
        .call(Method::GET, "/v1/sessions/s", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(session["events"].as_array().unwrap().len(), 6);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn concurrent_payments_never_exceed_the_spend_cap(#[case] backend: Backend) {
    let gw = std::sync::Arc::new(TestGateway::start_on(&backend).await);
    let t = gw.tenant("acme", Some(artifacts::SPEND_CAP)).await;
    // Session cap 1000: 40 concurrent payments of 90 in one session; at most 11 fit.
    let mut calls = Vec::new();
    for i in 0..40 {
        let (gw, key) = (gw.clone(), t.agent.clone());
        calls.push(tokio::spawn(async move {
            gw.execute(
                &key,
                "cap-session",
                "payments.initiate",
                json!({"amount": 90, "currency": "GBP", "i": i}),
            )
            .await
        }));
    }
    let mut allowed = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200);
        match body["decision"].as_str().unwrap() {
            "ALLOW" => allowed += 1,
            "BLOCK" => assert!(
                body["codes"] == json!(["session_cap_exceeded"])
                    || body["codes"] == json!(["usage_conflict"]),
                "{body}"
            ),
            other => panic!("unexpected {other}"),
        }
    }
    let records = gw.audit(&t.admin).await;
    let charged = recorded_spend(&records);
    assert!(
        charged <= 1000.0,
        "recorded spend {charged} exceeds the cap"
    );
    assert_eq!(charged, allowed as f64 * 90.0);
    assert!(allowed >= 1);
    assert_chain_valid(&records);
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let gw = TestGateway::start().await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    gw.execute(&t.agent, "s", "x", json!({})).await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = gw.call(Method::GET, path, None, None).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("ok")),
            "{path}"
        );
    }
    // The metrics name every tenant: without the operator key they are refused.
    for key in [
        None,
        Some(t.admin.as_str()),
        Some(t.agent.as_str()),
        Some("wk_live_forged"),
    ] {
        let status = gw
            .request(Method::GET, "/metrics", key, None)
            .await
            .status();
        assert!(status == 401 || status == 403, "{key:?}: {status}");
    }
    let metrics = gw
        .request(Method::GET, "/metrics", Some(&gw.operator_key), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            r#"writ_decisions_total{{tenant="{}",outcome="ALLOW"}} 1"#,
            t.id
        )),
        "{metrics}"
    );
    assert!(metrics.contains("writ_evaluation_seconds_count 1"));
    assert!(metrics.contains("writ_evaluation_fuel_count 1"));
    assert!(metrics.contains("writ_audit_append_seconds_count"));
    // The audit writer's batches (the call's record and the set-up's administrative ones):
    // each batch flushed once, and every record in one.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let batches = value("writ_audit_batch_records_count");
    assert!(batches >= 1.0, "{metrics}");
    assert_eq!(
        value("writ_audit_flush_seconds_count"),
        batches,
        "{metrics}"
    );
    let (_, records) = gw
        .call(Method::GET, "/v1/audit", Some(&t.admin), None)
        .await;
    assert_eq!(
        value("writ_audit_batch_records_sum"),
        records["records"].as_array().map_or(0, Vec::len) as f64,
        "{records}"
    );
    let (status, spec) = gw.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/gateway/execute",
        "/v1/policies",
        "/v1/policies/{policy_id}/activate",
        "/v1/admin/tenants",
        "/v1/admin/tenants/{tenant_id}/keys",
        "/v1/admin/keys/{key_id}",
        "/v1/audit",
        "/v1/sessions/{session_id}",
        "/console/signin",
        "/console/signout",
        "/console/inbox/stream",
        "/console/escalations/{id}/decide",
        "/console/audit/export",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["console_session"]["in"], "cookie",
        "{}",
        spec["components"]["securitySchemes"]
    );
    let (status, body) = gw.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn operator_key_is_generated_once_into_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        writ_gateway::server::ServeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
        )
    };
    let first = writ_gateway::server::Gateway::open(config()).await.unwrap();
    assert!(first.operator_key_generated);
    assert!(first.operator_key.starts_with("wk_op_"));
    let file = dir.path().join("operator.key");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        first.operator_key
    );
    let key = first.operator_key.clone();
    drop(first);
    let gw = TestGateway::start_with(config()).await;
    assert_eq!(gw.operator_key, key, "the same key on restart");
    let (status, _) = gw
        .call(
            Method::POST,
            "/v1/admin/tenants",
            Some(&key),
            Some(json!({"name": "t"})),
        )
        .await;
    assert_eq!(status, 201);
    // Nothing in the store holds the secret.
    gw.stop().await;
    let mut found = false;
    for entry in writ_tests::files_under(dir.path()) {
        if entry.file_name() != Some(std::ffi::OsStr::new("operator.key")) {
            let bytes = std::fs::read(&entry).unwrap();
            found |= bytes.windows(key.len()).any(|w| w == key.as_bytes());
        }
    }
    assert!(!found, "the operator key was written to the store");
}

/// A pool with fewer slots than the calls arriving at once: evaluations wait for a slot rather
/// than fail for want of one, so each call gets its policy's decision. The policy runs long
/// enough to yield at epoch ticks, which is when a worker would start another evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_pool_slots_wait_for_one() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = TestGateway::config(temp.path());
    config.app = config.app.with_pool_slots(2);
    let gw = std::sync::Arc::new(TestGateway::start_with(config).await);
    let t = gw.tenant("acme", Some(artifacts::HOSTILE)).await;
    // Fuel and time for a few milliseconds of counting: several epoch ticks.
    let (status, body) = gw
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t.id),
            Some(&gw.operator_key),
            Some(json!({"fuel": 1_000_000_000u64, "deadline_ms": 10_000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let iterations = 3_000_000u64;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (gw, key) = (gw.clone(), t.agent.clone());
        calls.spawn(async move {
            let params = json!({"iterations": iterations});
            gw.execute(&key, &format!("s{i}"), "burn", params).await
        });
    }
    for (status, body) in calls.join_all().await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"], "ALLOW", "{body}");
        assert_eq!(body["reason"], format!("counted to {iterations}"), "{body}");
    }
    let Ok(gw) = std::sync::Arc::try_unwrap(gw) else {
        panic!("the calls are done")
    };
    gw.stop().await;
}

#[tokio::test]
async fn metrics_are_public_only_when_the_operator_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestGateway::config(dir.path());
    config.metrics_public = true;
    let gw = TestGateway::start_with(config).await;
    let response = gw.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("writ_audit_append_seconds")
    );
}
