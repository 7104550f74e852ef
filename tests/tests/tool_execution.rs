//! The Tenet contract: `POST /v1/execute` resolves a logical tool call through the tenant's
//! catalog, governs it, injects the stored credential and runs it as a job against a
//! downstream service on loopback that records what it received.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use rstest::rstest;
use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::gateway::{Backend, TestGateway, TestTenant};

const SECRET: &str = "ghp_DOWNSTREAMsecret0987654321";

type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A downstream that records (method, path and query, Authorization, body) and answers JSON.
async fn downstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new().fallback({
        let seen = seen.clone();
        move |req: axum::extract::Request| {
            let seen = seen.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let auth = parts
                    .headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                seen.lock().unwrap().push((
                    parts.method.to_string(),
                    parts.uri.to_string(),
                    auth,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                axum::Json(json!({"ok": true, "path": parts.uri.path()}))
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

async fn setup(gw: &TestGateway, policy: &str, base: &str) -> TestTenant {
    let t = gw.tenant("acme", Some(policy)).await;
    let (status, _) = gw
        .call(
            Method::PUT,
            "/v1/credentials/github",
            Some(&t.admin),
            Some(json!({"secret": SECRET, "origins": [base]})),
        )
        .await;
    assert_eq!(status, 204);
    let credential =
        json!({"name": "github", "header": "Authorization", "format": "Bearer {secret}"});
    for (tool, method) in [
        ("github.repos.get", "GET"),
        ("github.repos.delete", "DELETE"),
    ] {
        let (status, body) = gw
            .call(
                Method::PUT,
                &format!("/v1/catalog/github/{tool}"),
                Some(&t.admin),
                Some(json!({"method": method, "url": format!("{base}/repos/{{owner}}/{{repo}}"), "query": ["ref"], "credential": credential})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    t
}

async fn tenet(gw: &TestGateway, key: &str, tool: &str, args: Value) -> (u16, Value) {
    execute_body(
        gw,
        key,
        json!({"requestId": "r1", "service": "github", "toolCall": {"toolName": tool, "arguments": args},
               "agent": {"agentId": "bot"}, "context": {"env": "production"}}),
    )
    .await
}

/// `POST /v1/execute` with `body` and `key` as the bearer; the status and the JSON answer.
async fn execute_body(gw: &TestGateway, key: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.url("/v1/execute"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn finished_job(gw: &TestGateway, key: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = gw
            .call(Method::GET, &format!("/v1/jobs/{id}"), Some(key), None)
            .await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "completed" || job["status"] == "failed" {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "job never finished: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn allowed_call_runs_downstream_with_the_injected_credential(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let (base, seen) = downstream().await;
    let t = setup(&gw, artifacts::ALLOW_ALL, &base).await;
    let (status, answer) = tenet(
        &gw,
        &t.agent,
        "github.repos.get",
        json!({"owner": "acme corp", "repo": "old", "ref": "main"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["decision"], "ALLOW");
    let job = finished_job(&gw, &t.agent, answer["jobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["execution"]["status"], 200);
    let body: Value = serde_json::from_str(job["execution"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["ok"], true);
    assert!(job["execution"]["durationMs"].is_u64());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (method, uri, auth, _) = &seen[0];
    assert_eq!(method, "GET");
    assert_eq!(uri, "/repos/acme%20corp/old?ref=main");
    assert_eq!(auth, &format!("Bearer {SECRET}"));
    // The chain records the job (never the secret or the body).
    let export = gw
        .request(Method::GET, "/v1/audit/export", Some(&t.admin), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(export.contains("job_finished"));
    assert!(!export.contains(SECRET));
    assert!(!job.to_string().contains(SECRET));
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn delete_is_escalated_by_the_gate_and_never_reaches_downstream(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let (base, seen) = downstream().await;
    let t = setup(&gw, artifacts::ALLOW_ALL, &base).await;
    let (status, answer) = tenet(
        &gw,
        &t.agent,
        "github.repos.delete",
        json!({"owner": "acme", "repo": "old"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["decision"], "ESCALATE");
    assert!(answer["reviewId"].as_str().unwrap().starts_with("esc_"));
    assert!(
        answer["reasonCodes"]
            .as_array()
            .unwrap()
            .contains(&json!("irreversible_action"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen.lock().unwrap().is_empty());
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn blocked_unknown_and_uncatalogued_calls(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let (base, seen) = downstream().await;
    let t = setup(&gw, artifacts::PAYMENTS_LIMITS, &base).await;
    let (status, answer) = tenet(
        &gw,
        &t.agent,
        "github.repos.get",
        json!({"owner": "a", "repo": "b"}),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["decision"], "BLOCK");
    assert_eq!(answer["reasonCodes"], json!(["action_not_allowed"]));
    let (status, answer) = tenet(&gw, &t.agent, "github.repos.rename", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "unknown_tool");
    let (status, answer) = tenet(&gw, &t.agent, "github.repos.get", json!({"owner": "a"})).await;
    assert_eq!(status, 400, "a missing URL argument: {answer}");
    // A service without a catalog: decided, nothing to run.
    let (status, answer) = execute_body(&gw, &t.agent, json!({"service": "mail", "toolCall": {"toolName": "email.send", "arguments": {"to": "x"}}})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["decision"], "ALLOW");
    assert!(answer.get("jobId").is_none());
    let (status, _) = tenet(&gw, "wk_live_wrong", "github.repos.get", json!({})).await;
    assert_eq!(status, 401);
    assert!(
        seen.lock().unwrap().is_empty(),
        "a blocked call reached the downstream"
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn approved_escalation_runs_what_the_reviewer_saw_exactly_once(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let (base, seen) = downstream().await;
    let t = setup(&gw, artifacts::ALLOW_ALL, &base).await;
    let (_, answer) = tenet(
        &gw,
        &t.agent,
        "github.repos.delete",
        json!({"owner": "acme", "repo": "old"}),
    )
    .await;
    let review = answer["reviewId"].as_str().unwrap().to_owned();
    let (_, esc) = gw
        .call(
            Method::GET,
            &format!("/v1/escalations/{review}"),
            Some(&t.reviewer),
            None,
        )
        .await;
    assert_eq!(esc["request"]["method"], "DELETE");
    assert_eq!(esc["request"]["url"], format!("{base}/repos/acme/old"));
    // The catalog changes after the escalation: the approval still runs what was reviewed.
    let (other_base, other_seen) = downstream().await;
    gw.call(
        Method::PUT,
        "/v1/catalog/github/github.repos.delete",
        Some(&t.admin),
        Some(json!({"method": "DELETE", "url": format!("{other_base}/elsewhere/{{repo}}")})),
    )
    .await;
    let (status, decided) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{review}/approve"),
            Some(&t.reviewer),
            Some(json!({"note": "ok"})),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    let job = finished_job(&gw, &t.agent, decided["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    let (status, _) = gw
        .call(
            Method::POST,
            &format!("/v1/escalations/{review}/approve"),
            Some(&t.reviewer),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "a second approval runs nothing");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "exactly once");
    assert_eq!(seen[0].0, "DELETE");
    assert_eq!(seen[0].1, "/repos/acme/old");
    assert_eq!(
        seen[0].2,
        format!("Bearer {SECRET}"),
        "the credential is injected at run time"
    );
    assert!(other_seen.lock().unwrap().is_empty());
    // A rejected one never reaches the downstream.
    let (_, answer) = tenet(
        &gw,
        &t.agent,
        "github.repos.delete",
        json!({"owner": "acme", "repo": "keep"}),
    )
    .await;
    let review = answer["reviewId"].as_str().unwrap();
    gw.call(
        Method::POST,
        &format!("/v1/escalations/{review}/reject"),
        Some(&t.reviewer),
        Some(json!({"note": "no"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.len(), 1);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn an_idempotency_key_runs_once_however_often_it_is_sent(#[case] backend: Backend) {
    let gw = Arc::new(TestGateway::start_on(&backend).await);
    let (base, seen) = downstream().await;
    let t = setup(&gw, artifacts::ALLOW_ALL, &base).await;
    let body = json!({"requestId": "req-42", "service": "github",
                      "toolCall": {"toolName": "github.repos.get", "arguments": {"owner": "acme", "repo": "r"}},
                      "agent": {"agentId": "bot"}});
    let mut sends = Vec::new();
    for _ in 0..10 {
        let (gw, key, body) = (gw.clone(), t.agent.clone(), body.clone());
        sends.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(gw.url("/v1/execute"))
                .bearer_auth(key)
                .header("Idempotency-Key", "req-42")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every repeat gets the first answer"
    );
    assert_eq!(answers[0].0, 202);
    finished_job(&gw, &t.agent, answers[0].1["jobId"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().unwrap().len(), 1, "the downstream ran once");
    let records = gw.audit(&t.admin).await;
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "decision").count(),
        1,
        "one evaluation, one record"
    );
    // The same key with another body is refused.
    let mut other = body.clone();
    other["toolCall"]["arguments"]["repo"] = json!("other");
    let r = reqwest::Client::new()
        .post(gw.url("/v1/execute"))
        .bearer_auth(&t.agent)
        .header("Idempotency-Key", "req-42")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    // The stored answer goes to no other key: one bound to another agent is refused, and
    // another key's identical request is not the same request.
    for (role_body, status, code) in [
        (
            json!({"role": "agent", "subject": "x", "agent_id": "someone-else"}),
            403,
            "forbidden",
        ),
        (
            json!({"role": "agent", "subject": "y"}),
            422,
            "idempotency_key_reused",
        ),
    ] {
        let (_, key) = gw
            .call(
                Method::POST,
                &format!("/v1/admin/tenants/{}/keys", t.id),
                Some(&t.admin),
                Some(role_body),
            )
            .await;
        let r = reqwest::Client::new()
            .post(gw.url("/v1/execute"))
            .bearer_auth(key["api_key"].as_str().unwrap())
            .header("Idempotency-Key", "req-42")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{error}");
    }
    // A key that is not text is refused, not silently ignored (which would run the call).
    let records = gw.audit(&t.admin).await.len();
    let r = reqwest::Client::new()
        .post(gw.url("/v1/execute"))
        .bearer_auth(&t.agent)
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"req-\xff\xfe").unwrap(),
        )
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        gw.audit(&t.admin).await.len(),
        records,
        "nothing was decided"
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn a_custom_named_destructive_tool_cannot_slip_past_the_gate(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let (base, seen) = downstream().await;
    let t = setup(&gw, artifacts::ALLOW_ALL, &base).await;
    gw.call(
        Method::PUT,
        "/v1/catalog/stripe/stripe.refresh",
        Some(&t.admin),
        Some(json!({"method": "POST", "url": format!("{base}/v1/charges"), "body": ["amount"], "destructive": true})),
    )
    .await;
    let (status, answer) = execute_body(&gw, &t.agent, json!({"service": "stripe", "toolCall": {"toolName": "stripe.refresh", "arguments": {"amount": 5000}}})).await;
    assert_eq!(status, 202);
    assert_eq!(answer["decision"], "ESCALATE");
    assert!(
        answer["reasonCodes"]
            .as_array()
            .unwrap()
            .contains(&json!("irreversible_action"))
    );
    // The tenant may turn the gate off; then the policy's ALLOW stands.
    let op = gw.operator_key.clone();
    let (status, body) = gw
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t.id),
            Some(&op),
            Some(json!({"irreversible_gate": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"]["irreversible_gate"], false);
    let (_, answer) = execute_body(&gw, &t.agent, json!({"service": "stripe", "toolCall": {"toolName": "stripe.refresh", "arguments": {"amount": 5000}}})).await;
    assert_eq!(answer["decision"], "ALLOW");
    finished_job(&gw, &t.agent, answer["jobId"].as_str().unwrap()).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].3, r#"{"amount":5000}"#,
        "the JSON body as the catalog places it"
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn downstream_responses_are_capped_and_redirects_stay_on_the_host(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let elsewhere = downstream().await.0.replace("127.0.0.1", "localhost");
    let app = axum::Router::new()
        .route("/big", axum::routing::get(|| async { "x".repeat(2 << 20) }))
        .route(
            "/away",
            axum::routing::get(move || {
                let to = format!("{elsewhere}/landed");
                async move { axum::response::Redirect::temporary(&to) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for (tool, path) in [("big", "/big"), ("away", "/away")] {
        gw.call(
            Method::PUT,
            &format!("/v1/catalog/odd/{tool}"),
            Some(&t.admin),
            Some(json!({"method": "GET", "url": format!("{base}{path}")})),
        )
        .await;
    }
    let run = |tool: &'static str| {
        let (gw, key) = (&gw, t.agent.clone());
        async move {
            let (_, answer) = execute_body(
                gw,
                &key,
                json!({"service": "odd", "toolCall": {"toolName": tool}}),
            )
            .await;
            finished_job(gw, &key, answer["jobId"].as_str().unwrap()).await
        }
    };
    let big = run("big").await;
    assert_eq!(big["status"], "failed");
    assert_eq!(big["executionError"], "response_too_large");
    let away = run("away").await;
    assert_eq!(away["status"], "completed");
    assert_eq!(
        away["execution"]["status"], 307,
        "the redirect to another host was not followed"
    );
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test]
async fn the_policy_sees_the_catalog_target(#[case] backend: Backend) {
    let gw = TestGateway::start_on(&backend).await;
    let (base, _) = downstream().await;
    let t = gw.tenant("acme", Some(artifacts::HOSTILE)).await;
    gw.call(
        Method::PUT,
        "/v1/catalog/mailer/echo-target",
        Some(&t.admin),
        Some(json!({"method": "POST", "url": format!("{base}/send/{{to}}"), "destructive": false})),
    )
    .await;
    let (_, answer) = execute_body(&gw, &t.agent, json!({"service": "mailer", "toolCall": {"toolName": "echo-target", "arguments": {"to": "a b"}}})).await;
    assert_eq!(
        answer["reason"],
        format!("mailer POST {base}/send/a%20b false")
    );
}

/// A downstream that counts the requests it receives and answers none of them for 30 s.
async fn hanging_downstream() -> (String, Arc<Mutex<usize>>) {
    let hits: Arc<Mutex<usize>> = Arc::default();
    let app = axum::Router::new().fallback({
        let hits = hits.clone();
        move || {
            let hits = hits.clone();
            async move {
                *hits.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

/// With eight of one tenant's jobs stuck on a downstream that hangs (as many as the gateway
/// sends at once), only four of them hold workers, and another tenant's job runs at once.
#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::postgres())]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_downstream_hangs_does_not_hold_the_workers_others_need(
    #[case] backend: Backend,
) {
    let gw = TestGateway::start_on(&backend).await;
    let (hanging, hits) = hanging_downstream().await;
    let (base, seen) = downstream().await;
    let slow = setup(&gw, artifacts::ALLOW_ALL, &hanging).await;
    let quick = setup(&gw, artifacts::ALLOW_ALL, &base).await;
    for i in 0..8 {
        let (status, answer) = tenet(
            &gw,
            &slow.agent,
            "github.repos.get",
            json!({"owner": "acme", "repo": format!("r{i}")}),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
    }
    let started = Instant::now();
    while *hits.lock().unwrap() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the jobs never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, answer) = tenet(
        &gw,
        &quick.agent,
        "github.repos.get",
        json!({"owner": "acme", "repo": "r"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let job = finished_job(&gw, &quick.agent, answer["jobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        *hits.lock().unwrap(),
        4,
        "the slow tenant holds four workers, not eight"
    );
}
