//! Outbound calls against a live gateway: HTTPS with a CA the operator adds, the egress guard
//! on catalog entries, redirects and webhooks, credentials bound to their origins, and URL
//! templates that keep their destination. Every connection here is to a loopback address; the
//! internal and metadata ranges are refused at the guard's decision, before any connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use writ_tests::artifacts;
use writ_tests::gateway::{TestGateway, TestTenant};
use writ_tests::tls::TestCa;

const SECRET: &str = "ghp_egress_secret_value";

/// A downstream that records each request's path and `Authorization` header, and answers with
/// them (so an echo of the credential can be seen).
fn echo(seen: Arc<Mutex<Vec<(String, String)>>>) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = seen.clone();
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            let path = req.uri().path().to_owned();
            seen.lock().unwrap().push((path.clone(), auth.clone()));
            (
                [("x-echo", auth.clone())],
                axum::Json(json!({"path": path, "authorization": auth})),
            )
        }
    })
}

/// Serves `router` over plain HTTP on `ip` (a loopback address); the base URL.
async fn serve_http(ip: &str, router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

async fn start(allow: &str, ca_pem: Option<&str>) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestGateway::config(dir.path());
    config.egress_allow = allow.into();
    if let Some(pem) = ca_pem {
        let path = dir.path().join("egress-ca.pem");
        std::fs::write(&path, pem).unwrap();
        config.egress_ca_file = Some(path);
    }
    (TestGateway::start_with(config).await, dir)
}

async fn put_credential(gw: &TestGateway, t: &TestTenant, origins: &[&str]) -> (u16, Value) {
    gw.call(
        Method::PUT,
        "/v1/credentials/github",
        Some(&t.admin),
        Some(json!({"secret": SECRET, "origins": origins})),
    )
    .await
}

async fn put_tool(
    gw: &TestGateway,
    t: &TestTenant,
    tool: &str,
    url: &str,
    credential: bool,
) -> (u16, Value) {
    let mut body = json!({"method": "GET", "url": url});
    if credential {
        body["credential"] =
            json!({"name": "github", "header": "Authorization", "format": "Bearer {secret}"});
    }
    gw.call(
        Method::PUT,
        &format!("/v1/catalog/github/{tool}"),
        Some(&t.admin),
        Some(body),
    )
    .await
}

/// Runs `tool` through `POST /v1/execute` and waits (bounded) for its job; the job.
async fn run(gw: &TestGateway, t: &TestTenant, tool: &str, args: Value) -> Value {
    let r = reqwest::Client::new()
        .post(gw.url("/v1/execute"))
        .bearer_auth(&t.agent)
        .json(&json!({"service": "github", "toolCall": {"toolName": tool, "arguments": args}}))
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    let id = answer["jobId"]
        .as_str()
        .unwrap_or_else(|| panic!("no job: {answer}"))
        .to_owned();
    let started = Instant::now();
    loop {
        let (_, job) = gw
            .call(Method::GET, &format!("/v1/jobs/{id}"), Some(&t.agent), None)
            .await;
        if job["status"] == "completed" || job["status"] == "failed" {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_job_runs_over_https_with_the_operators_ca_and_fails_without_it() {
    let ca = TestCa::new();
    let seen = Arc::default();
    let base = ca.serve(echo(Arc::clone(&seen))).await;
    let (gw, _dir) = start("127.0.0.1/32", Some(&ca.pem())).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    assert_eq!(put_credential(&gw, &t, &[&base]).await.0, 204);
    let (status, body) = put_tool(
        &gw,
        &t,
        "github.repos.get",
        &format!("{base}/repos/{{repo}}"),
        true,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let job = run(&gw, &t, "github.repos.get", json!({"repo": "writ"})).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["execution"]["status"], 200);
    assert_eq!(
        seen.lock().unwrap()[0],
        ("/repos/writ".to_owned(), format!("Bearer {SECRET}"))
    );

    // The downstream echoed the credential: the stored answer has it redacted.
    let stored = job.to_string();
    assert!(!stored.contains(SECRET), "{stored}");
    assert!(stored.contains("[redacted]"), "{stored}");

    // A gateway that does not trust the CA refuses the connection.
    let (untrusting, _dir) = start("127.0.0.1/32", None).await;
    let t = untrusting.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    put_credential(&untrusting, &t, &[&base]).await;
    put_tool(
        &untrusting,
        &t,
        "github.repos.get",
        &format!("{base}/repos/{{repo}}"),
        true,
    )
    .await;
    let job = run(&untrusting, &t, "github.repos.get", json!({"repo": "writ"})).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["executionError"].as_str().unwrap();
    assert!(error.starts_with("downstream:"), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(seen.lock().unwrap().len(), 1, "no request reached it");
}

#[tokio::test]
async fn literal_internal_destinations_are_refused_when_they_are_put() {
    // With the operator's allowlist opening 127.0.0.1 only, the rest of loopback and the
    // gateway's own address stay refused; without it, every spelling of loopback is.
    let (opened, _dir) = start("127.0.0.1/32", None).await;
    let t = opened.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let own = format!("http://{}/", opened.addr);
    for url in ["http://127.0.0.2:8080/", own.as_str()] {
        let (status, body) = put_tool(&opened, &t, "x", url, false).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "egress_denied", "{url}: {body}");
    }
    let (gw, _dir) = start("", None).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    for url in [
        "http://169.254.169.254/latest/api/token",
        "http://[fd00:ec2::254]/latest",
        "http://10.0.0.1/admin",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::1]/",
        "http://127.1/",
    ] {
        let (status, body) = put_tool(&gw, &t, "x", url, false).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "egress_denied", "{url}: {body}");
        let (status, body) = gw
            .call(
                Method::PUT,
                "/v1/webhooks",
                Some(&t.admin),
                Some(json!({"urls": [url]})),
            )
            .await;
        assert_eq!(status, 400, "webhook {url}: {body}");
        assert_eq!(body["error"]["code"], "egress_denied");
    }
    let (_, catalog) = gw
        .call(Method::GET, "/v1/catalog", Some(&t.admin), None)
        .await;
    assert_eq!(catalog["tools"], json!([]), "nothing half-written");
}

#[tokio::test]
async fn a_name_that_resolves_inward_is_refused_when_the_job_runs_unless_the_operator_opened_it() {
    let seen = Arc::default();
    let base = serve_http("127.0.0.1", echo(Arc::clone(&seen))).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let by_name = format!("http://localhost.:{port}/x");

    let (closed, _dir) = start("", None).await;
    let t = closed.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let (status, body) = put_tool(&closed, &t, "x", &by_name, false).await;
    assert_eq!(status, 200, "a name is resolved when the job runs: {body}");
    let job = run(&closed, &t, "x", json!({})).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["executionError"].as_str().unwrap();
    assert!(error.starts_with("egress_denied:"), "{error}");
    assert!(error.contains("loopback"), "{error}");
    assert!(seen.lock().unwrap().is_empty());
    // The job's end is recorded just after its state is stored.
    let started = Instant::now();
    while !closed.audit(&t.admin).await.iter().any(|r| {
        r["kind"] == "job_finished" && r["detail"].as_str().unwrap().contains("egress_denied")
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the refusal is recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (open, _dir) = start("localhost", None).await;
    let t = open.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    put_tool(&open, &t, "x", &by_name, false).await;
    let job = run(&open, &t, "x", json!({})).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_redirect_to_a_refused_destination_is_not_followed() {
    let reached = Arc::new(AtomicUsize::new(0));
    let inside = {
        let reached = reached.clone();
        serve_http(
            "127.0.0.2",
            axum::Router::new().fallback(move || {
                reached.fetch_add(1, Ordering::SeqCst);
                async { "inside" }
            }),
        )
        .await
    };
    let hop = format!("{inside}/secret");
    let outside = serve_http(
        "127.0.0.1",
        axum::Router::new()
            .route(
                "/away",
                axum::routing::get(move || {
                    let hop = hop.clone();
                    async move { axum::response::Redirect::temporary(&hop) }
                }),
            )
            .route(
                "/here",
                axum::routing::get(|| async { axum::response::Redirect::temporary("/landed") }),
            )
            .route("/landed", axum::routing::get(|| async { "landed" })),
    )
    .await;
    let (gw, _dir) = start("127.0.0.1/32", None).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    put_tool(&gw, &t, "away", &format!("{outside}/away"), false).await;
    put_tool(&gw, &t, "here", &format!("{outside}/here"), false).await;
    let away = run(&gw, &t, "away", json!({})).await;
    assert_eq!(away["status"], "completed", "{away}");
    assert_eq!(away["execution"]["status"], 307, "answered, not followed");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the refused host was never reached"
    );
    let here = run(&gw, &t, "here", json!({})).await;
    assert_eq!(here["execution"]["status"], 200, "{here}");
    assert_eq!(here["execution"]["body"], "landed");
}

#[tokio::test]
async fn a_credential_goes_only_to_the_origins_it_is_bound_to() {
    let seen = Arc::default();
    let base = serve_http("127.0.0.1", echo(Arc::clone(&seen))).await;
    let (gw, _dir) = start("127.0.0.1/32", None).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let (status, body) = put_credential(&gw, &t, &[]).await;
    assert_eq!(status, 400, "origins are required: {body}");
    assert_eq!(
        put_credential(&gw, &t, &["https://api.github.com"]).await.0,
        204
    );
    // An entry that would send it to a host the admin controls is refused.
    let (status, body) = put_tool(&gw, &t, "leak", &format!("{base}/echo"), true).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "credential_origin_mismatch");
    // Bound to the echo's origin, the entry is put; rebound elsewhere, the job refuses to send.
    assert_eq!(put_credential(&gw, &t, &[&base]).await.0, 204);
    assert_eq!(
        put_tool(&gw, &t, "leak", &format!("{base}/echo"), true)
            .await
            .0,
        200
    );
    assert_eq!(
        put_credential(&gw, &t, &["https://api.github.com"]).await.0,
        204
    );
    let job = run(&gw, &t, "leak", json!({})).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["executionError"]
            .as_str()
            .unwrap()
            .starts_with("credential_origin_mismatch"),
        "{job}"
    );
    assert!(seen.lock().unwrap().is_empty(), "the secret was never sent");
}

#[tokio::test]
async fn templates_keep_their_destination() {
    let seen = Arc::default();
    let base = serve_http("127.0.0.1", echo(Arc::clone(&seen))).await;
    let (gw, _dir) = start("127.0.0.1/32", None).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let host = base.trim_start_matches("http://");
    for url in [
        "http://{h}/repos".to_owned(),
        format!("http://{host}{{suffix}}/v1"),
        format!("{{scheme}}://{host}/v1"),
    ] {
        let (status, body) = put_tool(&gw, &t, "bad", &url, false).await;
        assert_eq!(status, 400, "{url}: {body}");
    }
    let template = format!("{base}/orgs/acme/repos/{{r}}/collaborators/{{u}}");
    assert_eq!(put_tool(&gw, &t, "collab", &template, false).await.0, 200);
    for dots in ["..", ".", "%2e%2e", "%2E.", "%252e%252e"] {
        let r = reqwest::Client::new()
            .post(gw.url("/v1/execute"))
            .bearer_auth(&t.agent)
            .json(&json!({"service": "github", "toolCall": {"toolName": "collab", "arguments": {"r": dots, "u": "mallory"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{dots}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unresolvable", "{dots}: {body}");
    }
    let job = run(&gw, &t, "collab", json!({"r": "writ", "u": "alice"})).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        seen.lock().unwrap().last().unwrap().0,
        "/orgs/acme/repos/writ/collaborators/alice"
    );
}

#[tokio::test]
async fn every_change_that_governs_calls_is_in_the_chain_with_who_made_it() {
    let seen = Arc::default();
    let base = serve_http("127.0.0.1", echo(Arc::clone(&seen))).await;
    let (gw, _dir) = start("127.0.0.1/32", None).await;
    let t = gw.tenant("acme", Some(artifacts::ALLOW_ALL)).await;
    let op = gw.operator_key.clone();
    assert_eq!(put_credential(&gw, &t, &[&base]).await.0, 204);
    assert_eq!(
        put_tool(&gw, &t, "get", &format!("{base}/r/{{id}}"), true)
            .await
            .0,
        200
    );
    let job = run(&gw, &t, "get", json!({"id": "7"})).await;
    assert_eq!(job["status"], "completed", "{job}");
    let path = format!("/v1/admin/tenants/{}", t.id);
    let hooks = json!({"urls": [format!("{base}/hook")]});
    // Each change in turn, with the answer it must get.
    for (method, path, key, body, expected) in [
        (Method::PUT, "/v1/webhooks", &t.admin, Some(hooks), 200),
        (
            Method::PUT,
            "/v1/webhooks",
            &t.admin,
            Some(json!({"urls": []})),
            200,
        ),
        (
            Method::PATCH,
            path.as_str(),
            &op,
            Some(json!({"irreversible_gate": false})),
            200,
        ),
        (
            Method::DELETE,
            "/v1/catalog/github/get",
            &t.admin,
            None,
            204,
        ),
        (
            Method::DELETE,
            "/v1/catalog/github/get",
            &t.admin,
            None,
            404,
        ),
        (
            Method::DELETE,
            "/v1/credentials/github",
            &t.admin,
            None,
            204,
        ),
    ] {
        let (status, answer) = gw.call(method.clone(), path, Some(key), body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }

    let export = gw
        .request(Method::GET, "/v1/audit/export", Some(&t.admin), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!export.contains(SECRET), "the secret is in no record");
    let records: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let detail =
        |r: &Value| -> Value { serde_json::from_str(r["detail"].as_str().unwrap()).unwrap() };
    let of = |kind: &str| -> Vec<&Value> { records.iter().filter(|r| r["kind"] == kind).collect() };
    for (kind, actor) in [
        ("credential_put", "admin@example.com"),
        ("catalog_put", "admin@example.com"),
        ("webhooks_set", "admin@example.com"),
        ("webhooks_removed", "admin@example.com"),
        ("catalog_deleted", "admin@example.com"),
        ("credential_deleted", "admin@example.com"),
        ("tenant_limits_changed", "operator"),
    ] {
        let found = of(kind);
        assert_eq!(found.len(), 1, "{kind}");
        assert_eq!(found[0]["actor"], actor, "{kind}");
        assert!(
            detail(found[0])["key_id"]
                .as_str()
                .unwrap()
                .starts_with("key_"),
            "{kind}"
        );
    }
    assert_eq!(detail(of("credential_put")[0])["origins"], json!([base]));
    assert_eq!(detail(of("catalog_put")[0])["credential"], "github");
    let limits = detail(of("tenant_limits_changed")[0]);
    assert_eq!(limits["old"]["irreversible_gate"], true);
    assert_eq!(limits["new"]["irreversible_gate"], false);
    // The decision records the downstream request it resolved to, never the secret.
    let decision = of("decision")
        .into_iter()
        .find(|r| r["action"] == "get")
        .expect("the call's decision");
    let request = &detail(decision)["request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(request["url"], format!("{base}/r/7"));
    assert_eq!(request["credential"], "github");

    // The independent verifier recomputes every record, the new kinds included.
    let out = writ_tests::run_verifier(&export, &["--tenant", &t.id]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("ok {}", records.len())),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_webhook_secret_is_sealed_at_rest_and_signs_after_a_restart() {
    // (signature header, body) of each delivery.
    type Deliveries = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let got: Deliveries = Arc::default();
    let receiver = {
        let got = got.clone();
        axum::Router::new().fallback(move |req: axum::extract::Request| {
            let got = got.clone();
            async move {
                let signature = req.headers()["x-writ-signature"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                got.lock().unwrap().push((signature, body.to_vec()));
                "ok"
            }
        })
    };
    let hook = format!("{}/hook", serve_http("127.0.0.1", receiver).await);
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in(dir.path()).await;
    let t = gw.tenant("acme", Some(artifacts::PAYMENTS_LIMITS)).await;
    let (status, set) = gw
        .call(
            Method::PUT,
            "/v1/webhooks",
            Some(&t.admin),
            Some(json!({"urls": [hook]})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let secret = set["secret"].as_str().unwrap().to_owned();
    gw.stop().await;
    for file in writ_tests::files_under(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the webhook secret is in clear in {}",
            file.display()
        );
    }

    let gw = TestGateway::start_in(dir.path()).await;
    let over = json!({"amount": 800, "currency": "GBP", "recipient_id": "r"});
    let (_, held) = gw.execute(&t.agent, "s", "payments.initiate", over).await;
    assert_eq!(held["decision"], "ESCALATE", "{held}");
    let started = Instant::now();
    while got.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "no delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (signature, body) = got.lock().unwrap()[0].clone();
    let (t_ms, v1) = signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap();
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t_ms}.").as_bytes());
    mac.update(&body);
    assert_eq!(
        v1,
        hex::encode(mac.finalize().into_bytes()),
        "signed with the same secret"
    );
}
