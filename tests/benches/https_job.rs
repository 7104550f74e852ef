//! One downstream job end to end over HTTPS on loopback: `POST /v1/execute` to a real gateway,
//! the decision recorded, the job run through the egress guard (resolve, check, a new TLS
//! connection pinned to the checked address, the credential injected), its answer stored, and
//! the agent polling `GET /v1/jobs/{id}` until it is done. Beside it, the same request sent
//! straight to the HTTPS downstream with a fresh client, the floor of the TLS part.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use writ_client::wire::{CredentialUseBody, ToolBody};
use writ_tests::artifacts;
use writ_tests::gateway::TestGateway;
use writ_tests::tls::TestCa;

struct Setup {
    gw: TestGateway,
    agent: String,
    base: String,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    rt.block_on(async {
        let ca = TestCa::new();
        let base = ca
            .serve(axum::Router::new().fallback(|| async { axum::Json(json!({"ok": true})) }))
            .await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let mut config = TestGateway::config(&dir.path().join("data"));
        config.egress_ca_file = Some(ca_file);
        let gw = TestGateway::start_with(config).await;
        let t = gw.tenant("bench", Some(artifacts::ALLOW_ALL)).await;
        let admin = gw.client(&t.admin);
        admin
            .put_credential("svc", "s3cret", &[base.as_str()])
            .await
            .unwrap();
        let tool = ToolBody {
            method: "GET".into(),
            url: format!("{base}/items/{{id}}"),
            query: Vec::new(),
            body: Vec::new(),
            headers: Default::default(),
            credential: Some(CredentialUseBody {
                name: "svc".into(),
                header: "Authorization".into(),
                format: "Bearer {secret}".into(),
            }),
            destructive: false,
        };
        admin.put_tool("svc", "svc.get", &tool).await.unwrap();
        Setup {
            gw,
            agent: t.agent,
            base,
            ca_pem: ca.pem(),
            _dir: dir,
        }
    })
}

async fn one_job(s: &Setup, client: &reqwest::Client, i: u64) {
    let answer: Value = client
        .post(s.gw.url("/v1/execute"))
        .bearer_auth(&s.agent)
        .json(
            &json!({"service": "svc", "toolCall": {"toolName": "svc.get", "arguments": {"id": i}}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["jobId"].as_str().expect("a job").to_owned();
    loop {
        let job: Value = client
            .get(s.gw.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&s.agent)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match job["status"].as_str() {
            Some("completed") => return,
            Some("failed") => panic!("{job}"),
            _ => tokio::time::sleep(Duration::from_micros(200)).await,
        }
    }
}

fn https_job(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = setup(&rt);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut group = c.benchmark_group("https job");
    group.sample_size(30);
    group.bench_function("execute, run over HTTPS, poll until done", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    one_job(&s, &client, i).await;
                }
                started.elapsed()
            })
        })
    });
    let ca = reqwest::Certificate::from_pem(s.ca_pem.as_bytes()).unwrap();
    group.bench_function(
        "the downstream alone, a new TLS connection each time",
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for i in 0..iters {
                        let direct = reqwest::Client::builder()
                            .no_proxy()
                            .add_root_certificate(ca.clone())
                            .build()
                            .unwrap();
                        let r = direct
                            .get(format!("{}/items/{i}", s.base))
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success());
                        r.bytes().await.unwrap();
                    }
                    started.elapsed()
                })
            })
        },
    );
    group.finish();
}

criterion_group!(benches, https_job);
criterion_main!(benches);
