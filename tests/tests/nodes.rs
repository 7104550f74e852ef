//! Several gateway processes (nodes) on one PostgreSQL store: three real gateways on loopback
//! ports serving one database of the tests' private cluster. Whatever node a request reaches,
//! each tenant's chain stays one gapless chain, caps hold, a held call is decided exactly once
//! and its waiter answered, and configuration made through one node is in force on the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use writ_tests::artifacts;
use writ_tests::gateway::{TestGateway, TestTenant, assert_chain_valid};
use writ_tests::postgres::PgCluster;

struct Nodes {
    nodes: Vec<Arc<TestGateway>>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Three nodes on a fresh database, each with a data directory of its own and the same keys.
async fn three_nodes() -> Nodes {
    let url = PgCluster::shared().database();
    let (mut nodes, mut dirs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        nodes.push(Arc::new(TestGateway::start_node(dir.path(), &url).await));
        dirs.push(dir);
    }
    Nodes { nodes, _dirs: dirs }
}

/// Waits until `key` authenticates on `node` (its creation reached it): how long it took.
async fn known_on(node: &TestGateway, key: &str) -> Duration {
    let started = Instant::now();
    for _ in 0..1500 {
        let (status, _) = node
            .call(Method::GET, "/v1/escalations/pending", Some(key), None)
            .await;
        if status != 401 {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the key never reached the node");
}

/// A tenant made through node 0 with `policy` active, known on every node with its policy
/// loaded there (each node compiles it from the component the database holds; until then its
/// calls are blocked `no_active_policy`, which the probes, in session `probe`, wait out).
async fn tenant(n: &Nodes, policy: &str) -> TestTenant {
    let t = n.nodes[0].tenant("acme", Some(policy)).await;
    for node in &n.nodes[1..] {
        known_on(node, &t.reviewer).await;
        known_on(node, &t.agent).await;
        for _ in 0..600 {
            let (_, body) = node.execute(&t.agent, "probe", "probe", json!({})).await;
            if body["codes"] != json!(["no_active_policy"]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    t
}

/// The decisions of `records` outside the probes' session.
fn decisions(records: &[serde_json::Value]) -> usize {
    records
        .iter()
        .filter(|r| r["kind"] == "decision" && r["session_id"] != "probe")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_three_nodes_make_one_gapless_chain() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::PAYMENTS_LIMITS).await;
    let mut calls = Vec::new();
    for i in 0..60 {
        let (node, key) = (n.nodes[i % 3].clone(), t.agent.clone());
        calls.push(tokio::spawn(async move {
            node.execute(&key, &format!("s{}", i % 5), "email.send", json!({"i": i}))
                .await
        }));
    }
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    for node in &n.nodes {
        let records = node.audit(&t.reviewer).await;
        assert_chain_valid(&records);
        assert_eq!(decisions(&records), 60);
        let (status, verified) = node
            .call(Method::GET, "/v1/audit/verify", Some(&t.reviewer), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(verified["ok"], true, "{verified}");
    }
    // A session's calls, wherever they were made, are in its timeline on any node.
    let (status, session) = n.nodes[2]
        .call(Method::GET, "/v1/sessions/s0", Some(&t.reviewer), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(session["events"].as_array().unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_cap_holds_across_three_nodes() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::SPEND_CAP).await;
    // Session cap 1000: 45 concurrent payments of 90 through three nodes; at most 11 fit.
    let mut calls = Vec::new();
    for i in 0..45 {
        let (node, key) = (n.nodes[i % 3].clone(), t.agent.clone());
        calls.push(tokio::spawn(async move {
            node.execute(
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
        assert_eq!(status, 200, "{body}");
        if body["decision"] == "ALLOW" {
            allowed += 1;
        }
    }
    let records = n.nodes[1].audit(&t.reviewer).await;
    let charged: f64 = records
        .iter()
        .flat_map(|r| r["charges"].as_array().unwrap().clone())
        .map(|c| c["amount"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        charged <= 1000.0,
        "recorded spend {charged} exceeds the cap"
    );
    assert_eq!(charged, allowed as f64 * 90.0);
    assert!(allowed >= 1);
    assert_chain_valid(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_on_one_node_is_decided_once_through_others_and_its_waiter_answered() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::PAYMENTS_LIMITS).await;
    let (held_on, key) = (n.nodes[0].clone(), t.agent.clone());
    let waiting = tokio::spawn(async move {
        held_on
            .execute_waiting(
                &key,
                "s",
                "payments.initiate",
                json!({"amount": 5000, "currency": "GBP"}),
                Some(60),
            )
            .await
    });
    let esc = n.nodes[1].pending_escalation(&t.reviewer).await;
    let id = esc["escalation_id"].as_str().unwrap().to_owned();
    // Two reviewers decide at once through two other nodes: exactly one decision stands.
    let path = format!("/v1/escalations/{id}/approve");
    let (b, c) = (n.nodes[1].clone(), n.nodes[2].clone());
    let (reviewer_b, reviewer_c) = (t.reviewer.clone(), t.reviewer.clone());
    let (pb, pc) = (path.clone(), path.clone());
    let approved_at = Instant::now();
    let first = tokio::spawn(async move {
        b.call(
            Method::POST,
            &pb,
            Some(&reviewer_b),
            Some(json!({"note": "b"})),
        )
        .await
    });
    let second = tokio::spawn(async move {
        c.call(
            Method::POST,
            &pc,
            Some(&reviewer_c),
            Some(json!({"note": "c"})),
        )
        .await
    });
    let mut statuses = vec![first.await.unwrap().0, second.await.unwrap().0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "exactly one decision stands");

    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting caller on the first node was answered")
        .unwrap();
    let waited = approved_at.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    let records = n.nodes[2].audit(&t.reviewer).await;
    let resolutions = records
        .iter()
        .filter(|r| r["kind"] == "escalation_resolved")
        .count();
    assert_eq!(resolutions, 1);
    assert_chain_valid(&records);
    // Any node answers the wait.
    let (status, waited) = n.nodes[2]
        .call(
            Method::GET,
            &format!("/v1/escalations/{id}/wait?timeout=1"),
            Some(&t.agent),
            None,
        )
        .await;
    assert_eq!(status, 200, "{waited}");
    assert_eq!(waited["status"], "approved", "{waited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_and_a_revocation_through_one_node_are_in_force_on_the_others() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::ALLOW_ALL).await;
    let big = json!({"amount": 5000, "currency": "GBP"});
    let (_, body) = n.nodes[2]
        .execute(&t.agent, "s", "payments.initiate", big.clone())
        .await;
    assert_eq!(body["decision"], "ALLOW", "{body}");

    // Activated through node 0: node 2 decides with it once it has compiled it (a debug build
    // compiles for seconds; the notification itself arrives within milliseconds).
    n.nodes[0]
        .client(&t.admin)
        .upload_policy(
            "limits",
            true,
            writ_tests::component(artifacts::PAYMENTS_LIMITS),
        )
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let (_, body) = n.nodes[2]
            .execute(&t.agent, "s", "payments.initiate", big.clone())
            .await;
        if body["decision"] == "ESCALATE" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node 2 still decides with the old policy: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Revoked through node 1: node 2 refuses the key.
    let operator = n.nodes[1].client(&n.nodes[1].operator_key);
    let keys = operator.keys(&t.id).await.unwrap();
    let agent_key = keys
        .keys
        .iter()
        .find(|k| k.role == "agent")
        .unwrap()
        .key_id
        .clone();
    operator.revoke_key(&agent_key).await.unwrap();
    let started = Instant::now();
    loop {
        let (status, _) = n.nodes[2]
            .execute(&t.agent, "s", "email.send", json!({}))
            .await;
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "node 2 still takes the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_sent_through_three_nodes_runs_once() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::ALLOW_ALL).await;
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().fallback({
        let hits = hits.clone();
        move || {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::Json(json!({"ok": true})) }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (status, body) = n.nodes[0]
        .call(
            Method::PUT,
            "/v1/catalog/github/github.repos.get",
            Some(&t.admin),
            Some(json!({"method": "GET", "url": format!("{base}/repos/{{owner}}/{{repo}}")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body = json!({"requestId": "req-9", "service": "github",
                      "toolCall": {"toolName": "github.repos.get", "arguments": {"owner": "acme", "repo": "r"}},
                      "agent": {"agentId": "bot"}});
    let mut sends = Vec::new();
    for i in 0..9 {
        let (node, key, body) = (n.nodes[i % 3].clone(), t.agent.clone(), body.clone());
        sends.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(node.url("/v1/execute"))
                .bearer_auth(key)
                .header("Idempotency-Key", "req-9")
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }));
    }
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every repeat, on every node, gets the first answer: {answers:?}"
    );
    assert_eq!(answers[0].0, 202, "{answers:?}");
    let records = n.nodes[1].audit(&t.reviewer).await;
    assert_eq!(decisions(&records), 1, "one evaluation, one record");
    for _ in 0..100 {
        if hits.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the downstream ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_node_died_is_marked_interrupted_by_another_and_never_run_again() {
    let clock = writ_gateway::clock::ManualClock::starting_now();
    let url = PgCluster::shared().database();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestGateway::start_node_with_clock(a_dir.path(), &url, clock.clone()).await;
    let b = TestGateway::start_node_with_clock(b_dir.path(), &url, clock.clone()).await;
    let t = a.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    known_on(&b, &t.reviewer).await;
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
async fn a_console_sign_in_through_one_node_holds_on_the_others_until_signed_out_anywhere() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::ALLOW_ALL).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = browser
        .post(n.nodes[0].url("/console/signin"))
        .header("origin", n.nodes[0].url(""))
        .form(&[("key", t.reviewer.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = |node: usize| {
        let (browser, cookie, url) = (
            browser.clone(),
            cookie.clone(),
            n.nodes[node].url("/console/audit"),
        );
        async move {
            let r = browser
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, html) = page(1).await;
    assert_eq!(status, 200, "signed in on another node");
    let at = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    let csrf = html[at..at + 64].to_owned();
    let signed_out = browser
        .post(n.nodes[2].url("/console/signout"))
        .header("origin", n.nodes[2].url(""))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 303);
    for node in 0..3 {
        let (status, _) = page(node).await;
        assert_eq!(status, 303, "signed out everywhere (node {node})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_provenance_client_holds_a_call_on_one_node_and_a_reviewer_decides_on_another()
 {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::PAYMENTS_LIMITS).await;
    let stdout = writ_tests::run_pytest(
        "test_provenance_client.py",
        &[
            ("WRIT_URL", n.nodes[0].url("")),
            ("WRIT_REVIEWER_URL", n.nodes[2].url("")),
            ("WRIT_AGENT_KEY", t.agent.clone()),
            ("WRIT_ADMIN_KEY", t.admin.clone()),
            ("WRIT_REVIEWER_KEY", t.reviewer.clone()),
        ],
    )
    .await;
    assert!(stdout.contains("11 passed"), "{stdout}");
}
