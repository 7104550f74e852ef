//! Three real `writ serve` processes on one PostgreSQL store (a database of the tests' private
//! cluster), each with a data directory of its own and the same keys. Whatever process a
//! request reaches, each tenant's chain stays one gapless chain, caps hold, a held call is
//! decided exactly once and its waiter answered, configuration made through one process is in
//! force on the others, and a process killed with SIGKILL mid-load loses no acknowledged
//! decision.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::child::ChildGateway;
use writ_tests::gateway::{TestTenant, assert_chain_valid, recorded_spend};
use writ_tests::postgres::PgCluster;

const WRIT: &str = env!("CARGO_BIN_EXE_writ");

struct Nodes {
    nodes: Vec<Arc<ChildGateway>>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Three `writ serve` processes on a fresh database, ready.
async fn three_nodes() -> Nodes {
    let url = PgCluster::shared().database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<_> = dirs
        .iter()
        .map(|d| {
            Arc::new(ChildGateway::spawn_node(
                WRIT,
                d.path(),
                &url,
                Stdio::null(),
            ))
        })
        .collect();
    let client = reqwest::Client::new();
    for node in &nodes {
        node.wait_ready(&client).await;
    }
    Nodes { nodes, _dirs: dirs }
}

/// A tenant made through node 0 with `policy` active, known on every node with its policy
/// loaded there.
async fn tenant(n: &Nodes, policy: &str) -> TestTenant {
    let t = n.nodes[0].tenant("acme", Some(policy)).await;
    for node in &n.nodes[1..] {
        node.until_key_known(&t.reviewer).await;
        node.until_key_known(&t.agent).await;
        node.until_policy_loaded(&t.agent).await;
    }
    t
}

/// The decisions of `records` outside the probes' session.
fn decisions(records: &[Value]) -> usize {
    records
        .iter()
        .filter(|r| r["kind"] == "decision" && r["session_id"] != "probe")
        .count()
}

/// The resolutions of `records` with `code`.
fn resolutions(records: &[Value], code: &str) -> usize {
    records
        .iter()
        .filter(|r| r["kind"] == "escalation_resolved" && r["codes"] == json!([code]))
        .count()
}

/// Sends executes through `url` until a send fails; every event id answered goes in `acked`.
async fn agent(
    client: reqwest::Client,
    url: String,
    key: String,
    n: usize,
    acked: Arc<Mutex<Vec<String>>>,
) {
    for i in 0.. {
        let body = json!({
            "session_id": format!("n{n}"),
            "agent_id": format!("agent-{n}"),
            "action": "payments.initiate",
            "parameters": {"amount": 10 + i % 400, "currency": "GBP"},
        });
        let sent = client
            .post(format!("{url}/v1/gateway/execute?wait=0"))
            .header("X-PROVENANCE-API-KEY", &key)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        let Ok(response) = sent else { break };
        if response.status() != 200 {
            break;
        }
        let Ok(answer) = response.json::<Value>().await else {
            break;
        };
        acked
            .lock()
            .unwrap()
            .push(answer["event_id"].as_str().unwrap().to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_through_three_processes_make_one_gapless_chain_each_verifies() {
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
    // A session's calls, wherever they were made, are in its timeline on any process.
    let (status, session) = n.nodes[2]
        .call(Method::GET, "/v1/sessions/s0", Some(&t.reviewer), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(session["events"].as_array().unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_cap_holds_across_three_processes() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::SPEND_CAP).await;
    // Session cap 1000: 45 concurrent payments of 90 through three processes; at most 11 fit.
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
    let charged = recorded_spend(&records);
    assert!(
        charged <= 1000.0,
        "recorded spend {charged} exceeds the cap"
    );
    assert_eq!(charged, allowed as f64 * 90.0);
    assert!(allowed >= 1);
    assert_chain_valid(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_on_one_process_is_decided_once_through_two_others_and_its_waiter_answered() {
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
    // Two reviewers decide at once through the two other processes: exactly one stands.
    let path = format!("/v1/escalations/{id}/approve");
    let decide = |node: usize, note: &'static str| {
        let (node, reviewer, path) = (n.nodes[node].clone(), t.reviewer.clone(), path.clone());
        tokio::spawn(async move {
            node.call(
                Method::POST,
                &path,
                Some(&reviewer),
                Some(json!({"note": note})),
            )
            .await
        })
    };
    let approved_at = Instant::now();
    let (first, second) = (decide(1, "b"), decide(2, "c"));
    let mut statuses = vec![first.await.unwrap().0, second.await.unwrap().0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "exactly one decision stands");

    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting caller on the first process was answered")
        .unwrap();
    let waited = approved_at.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "ALLOW", "{answer}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    eprintln!("held on process 0, approved through 1 and 2: its caller answered in {waited:?}");
    let records = n.nodes[2].audit(&t.reviewer).await;
    let resolved = records
        .iter()
        .filter(|r| r["kind"] == "escalation_resolved");
    assert_eq!(resolved.count(), 1);
    assert_chain_valid(&records);
    for node in &n.nodes {
        let (status, waited) = node.wait_escalation(&t.agent, &id, 1).await;
        assert_eq!(status, 200, "{waited}");
        assert_eq!(waited["status"], "approved", "{waited}");
    }
}

/// On the real clock (a process has no other): the tenant's hold is set to its least, a
/// second, and every process runs its expiry sweeper over the same escalations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_on_one_process_expires_once_and_waiters_on_every_process_hear_it() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::PAYMENTS_LIMITS).await;
    let (status, body) = n.nodes[0]
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t.id),
            Some(&n.nodes[0].operator_key),
            Some(json!({"escalation_hold_s": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, answer) = n.nodes[0]
        .execute(
            &t.agent,
            "s",
            "payments.initiate",
            json!({"amount": 5000, "currency": "GBP"}),
        )
        .await;
    assert_eq!(answer["decision"], "ESCALATE", "{answer}");
    let id = answer["escalation_id"].as_str().unwrap().to_owned();
    let waiters: Vec<_> = n
        .nodes
        .iter()
        .map(|node| {
            let (node, key, id) = (node.clone(), t.agent.clone(), id.clone());
            tokio::spawn(async move { node.wait_escalation(&key, &id, 30).await })
        })
        .collect();
    for waiter in waiters {
        let (status, waited) = waiter.await.unwrap();
        assert_eq!(status, 200, "{waited}");
        assert_eq!(waited["status"], "expired", "{waited}");
        assert_eq!(waited["result"]["codes"], json!(["escalation_expired"]));
    }
    let records = n.nodes[2].audit(&t.reviewer).await;
    assert_eq!(
        resolutions(&records, "escalation_expired"),
        1,
        "expired once"
    );
    assert_chain_valid(&records);
}

/// Waits until `check` holds on `node`, asking every few milliseconds: how long it took.
async fn in_force<F, Fut>(what: &str, check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never took effect"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_revocations_catalog_and_limit_changes_through_one_process_reach_the_others() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::ALLOW_ALL).await;
    let (n0, n1, n2) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    let big = json!({"amount": 5000, "currency": "GBP"});
    // A catalog entry put through process 1 is resolved by process 2.
    let put = json!({"method": "GET", "url": "http://127.0.0.1:9/repos/{owner}"});
    let (status, body) = n1
        .call(
            Method::PUT,
            "/v1/catalog/github/github.repos.get",
            Some(&t.admin),
            Some(put),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let call = json!({"requestId": "r", "service": "github",
                      "toolCall": {"toolName": "github.repos.get", "arguments": {"owner": "acme"}},
                      "agent": {"agentId": "bot"}});
    let catalog = in_force("the catalog entry", || async {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/execute", n2.url))
            .bearer_auth(&t.agent)
            .json(&call)
            .send()
            .await
            .unwrap();
        r.status() == 202
    })
    .await;

    // Activated through process 0: process 2 decides with it once it has compiled it.
    let (_, body) = n2
        .execute(&t.agent, "s", "payments.initiate", big.clone())
        .await;
    assert_eq!(body["decision"], "ALLOW", "{body}");
    n0.client(&t.admin)
        .upload_policy(
            "limits",
            true,
            writ_tests::component(artifacts::PAYMENTS_LIMITS),
        )
        .await
        .unwrap();
    let activation = in_force("the activation", || async {
        let (_, body) = n2
            .execute(&t.agent, "s", "payments.initiate", big.clone())
            .await;
        body["decision"] == "ESCALATE"
    })
    .await;

    // A rate limit set through process 0 holds on process 2 (each process keeps its own bucket).
    let (status, body) = n0
        .call(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t.id),
            Some(&n0.operator_key),
            Some(json!({"rate_per_s": 1, "burst": 1, "queue_ms": 0})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let limit = in_force("the rate limit", || async {
        let (a, _) = n2.execute(&t.agent, "s", "email.send", json!({})).await;
        let (b, _) = n2.execute(&t.agent, "s", "email.send", json!({})).await;
        a == 429 || b == 429
    })
    .await;

    // Revoked through process 1: process 2 refuses the key.
    let operator = n1.client(&n1.operator_key);
    let keys = operator.keys(&t.id).await.unwrap();
    let agent_key = &keys.keys.iter().find(|k| k.role == "agent").unwrap().key_id;
    operator.revoke_key(agent_key).await.unwrap();
    let revocation = in_force("the revocation", || async {
        let (status, _) = n2.execute(&t.agent, "s", "email.send", json!({})).await;
        status == 401
    })
    .await;
    eprintln!(
        "in force on another process after: activation {activation:?} (compile included), \
         catalog {catalog:?}, rate limit {limit:?}, revocation {revocation:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_sent_through_three_processes_runs_once() {
    let n = three_nodes().await;
    let t = tenant(&n, artifacts::ALLOW_ALL).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback({
        let hits = hits.clone();
        move || {
            hits.fetch_add(1, Ordering::SeqCst);
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
        let (url, key, body) = (n.nodes[i % 3].url.clone(), t.agent.clone(), body.clone());
        sends.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/v1/execute"))
                .bearer_auth(key)
                .header("Idempotency-Key", "req-9")
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
        "every repeat, on every process, gets the first answer: {answers:?}"
    );
    assert_eq!(answers[0].0, 202, "{answers:?}");
    let job = answers[0].1["jobId"].as_str().unwrap();
    for node in &n.nodes {
        in_force("the job's end", || async {
            let (_, job) = node
                .call(
                    Method::GET,
                    &format!("/v1/jobs/{job}"),
                    Some(&t.agent),
                    None,
                )
                .await;
            job["status"] == "completed"
        })
        .await;
    }
    let records = n.nodes[1].audit(&t.reviewer).await;
    assert_eq!(decisions(&records), 1, "one evaluation, one record");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the downstream ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_sign_in_through_one_process_holds_on_the_others_until_signed_out_anywhere() {
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
    assert_eq!(status, 200, "signed in on another process");
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
        assert_eq!(status, 303, "signed out everywhere (process {node})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_provenance_client_holds_a_call_on_one_process_and_a_reviewer_decides_on_another()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writ_serve_processes_share_one_chain_and_a_killed_one_loses_no_acknowledged_decision()
 {
    let url = PgCluster::shared().database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<ChildGateway> = dirs
        .iter()
        .map(|d| ChildGateway::spawn_node(WRIT, d.path(), &url, Stdio::null()))
        .collect();
    let client = reqwest::Client::new();
    for node in &nodes {
        node.wait_ready(&client).await;
    }
    let t = nodes[0]
        .tenant("acme", Some(artifacts::PAYMENTS_LIMITS))
        .await;
    for node in &nodes[1..] {
        node.until_key_known(&t.agent).await;
        node.until_policy_loaded(&t.agent).await;
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut agents = Vec::new();
    for n in 0..24 {
        let node = &nodes[n % 3];
        agents.push(tokio::spawn(agent(
            client.clone(),
            node.url.clone(),
            t.agent.clone(),
            n,
            acked.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[1].kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The survivors' agents are stopped by killing them too, after the load ran on.
    let before_survivors_stop = acked.lock().unwrap().len();
    nodes[2].kill();
    nodes[0].kill();
    for a in agents {
        a.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(before_survivors_stop > 0 && acked.len() >= before_survivors_stop);

    // A process started afresh on the same store reads the whole chain.
    let dir = tempfile::tempdir().unwrap();
    let reader = ChildGateway::spawn_node(WRIT, dir.path(), &url, Stdio::null());
    reader.wait_ready(&client).await;
    let records = reader.audit(&t.admin).await;
    assert_chain_valid(&records);
    let in_chain: HashSet<&str> = records
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|e| !in_chain.contains(e.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let (status, verify) = reader
        .call(Method::GET, "/v1/audit/verify", Some(&t.admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(verify["ok"], true, "{verify}");
    eprintln!(
        "{} decisions acknowledged by three processes (one killed mid-load); chain of {} records",
        acked.len(),
        records.len()
    );
}
