//! The published `tenet-python` SDK, unmodified, against a live gateway: the seed's quickstart
//! (`tests/python/test_tenet_python.py`), with an HTTPS downstream service on loopback whose
//! certificate a CA made for the run signs (the gateway trusts it through its egress CA file).

use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};
use writ_tests::gateway::TestGateway;
use writ_tests::tls::TestCa;
use writ_tests::{artifacts, run_pytest};

/// A downstream over HTTPS that echoes what it received and lists it at `/seen`.
async fn downstream(ca: &TestCa) -> String {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/seen",
            axum::routing::get({
                let seen = seen.clone();
                move || {
                    let seen = seen.clone();
                    async move { axum::Json(Value::Array(seen.lock().unwrap().clone())) }
                }
            }),
        )
        .fallback({
            let seen = seen.clone();
            move |req: axum::extract::Request| {
                let seen = seen.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                    let received: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock()
                        .unwrap()
                        .push(json!({"path": parts.uri.path(), "auth": parts.headers.get("authorization").map(|v| v.to_str().unwrap())}));
                    axum::Json(json!({"received": received}))
                }
            }
        });
    ca.serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenet_python_quickstart_works_unmodified() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut config = TestGateway::config(&dir.path().join("data"));
    config.egress_ca_file = Some(ca_file.clone());
    let gw = TestGateway::start_with(config).await;
    let base = downstream(&ca).await;
    assert!(base.starts_with("https://"));
    let t = gw.tenant("sdk", Some(artifacts::PAYMENTS_LIMITS)).await;
    gw.call(
        Method::PUT,
        "/v1/credentials/mailer",
        Some(&t.admin),
        Some(json!({"secret": "mail-secret", "origins": [base]})),
    )
    .await;
    let tools = [
        (
            "mail",
            "email.send",
            "POST",
            format!("{base}/send"),
            json!(["to", "template"]),
            true,
        ),
        (
            "github",
            "github.repos.delete",
            "DELETE",
            format!("{base}/repos/{{owner}}/{{repo}}"),
            json!([]),
            false,
        ),
        (
            "payments",
            "payments.initiate",
            "POST",
            format!("{base}/pay"),
            json!(["amount", "currency"]),
            false,
        ),
    ];
    for (service, tool, method, url, body, credential) in tools {
        let mut entry = json!({"method": method, "url": url, "body": body});
        if credential {
            entry["credential"] =
                json!({"name": "mailer", "header": "Authorization", "format": "Bearer {secret}"});
        }
        let (status, answer) = gw
            .call(
                Method::PUT,
                &format!("/v1/catalog/{service}/{tool}"),
                Some(&t.admin),
                Some(entry),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let stdout = run_pytest(
        "test_tenet_python.py",
        &[
            ("TENET_API_URL", gw.url("")),
            ("TENET_API_KEY", t.agent.clone()),
            ("WRIT_DOWNSTREAM_SEEN", format!("{base}/seen")),
            // Python's own check of what the downstream received trusts the run's CA too.
            ("SSL_CERT_FILE", ca_file.display().to_string()),
        ],
    )
    .await;
    assert!(stdout.contains("6 passed"), "{stdout}");
}
