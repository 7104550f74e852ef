//! The parts of a call's hot path, one by one: key lookup, parsing the request JSON, one
//! evaluation, audit append (without flush, and with a durable flush per batch of 1, 8 and 64
//! records, each batch one store transaction as the audit writer commits it), and a usage
//! counter read; then escalation bookkeeping (open and resolve 10,000).
//! `cargo bench -p writ-tests --bench hot_path`.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use writ_gateway::access::{Agent, Require, Reviewer, TenantScope};
use writ_gateway::app::{App, ExecuteRequest};
use writ_gateway::audit::{AuditLog, Effects, Kind, RecordBody};
use writ_gateway::server::{Gateway, ServeConfig, demo_setup};
use writ_gateway::store::Store;
use writ_gateway::usage::{CallScope, StoreUsage};
use writ_runtime::{FixedUsage, Limits, UsageSource, Window};
use writ_tests::{artifacts, call, component, engine, load};
use writ_wire::ExecuteBody;

/// A gateway's application (not serving) on a temp store, with the demo tenant set up.
struct Setup {
    app: App,
    agent: String,
    reviewer: String,
    _dir: tempfile::TempDir,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
        config.operator_key = Some("wk_op_bench_operator".into());
        let gateway = Gateway::open(config).await.unwrap();
        let keys = demo_setup(
            &gateway.app,
            &gateway.operator_key,
            "payments_limits",
            component(artifacts::PAYMENTS_LIMITS),
        )
        .await
        .unwrap();
        Setup {
            app: gateway.app.clone(),
            agent: keys.agent,
            reviewer: keys.reviewer,
            _dir: dir,
        }
    })
}

fn decision_record(i: u64) -> RecordBody {
    let mut r = RecordBody::new(Kind::Decision);
    r.action = Some("payments.initiate".into());
    r.agent_id = Some("agent-1".into());
    r.session_id = Some(format!("sess-{}", i % 100));
    r.arguments = Some(format!(
        r#"{{"amount":{},"currency":"GBP","recipient_id":"rec_abc123"}}"#,
        i % 500
    ));
    r.client_hint = Some("ALLOW".into());
    r.outcome = Some("ALLOW".into());
    r.reason = Some("Payment within approved parameters".into());
    r.policy_id = Some("pol_0123456789abcdef".into());
    r.fuel = Some(13_000);
    r.latency_us = Some(10);
    r
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("hot path");

    let s = setup(&rt);
    group.bench_function("key lookup", |b| {
        b.iter(|| s.app.tenants().authenticate(&s.agent).expect("known key"))
    });

    let body = json!({
        "session_id": "sess-1",
        "agent_id": "agent-1",
        "action": "payments.initiate",
        "decision": "ALLOW",
        "parameters": {"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"},
    })
    .to_string();
    group.bench_function("parse request JSON", |b| {
        b.iter(|| {
            writ_gateway::api::parse_json::<ExecuteBody>(body.as_bytes(), 64).expect("parses")
        })
    });

    let policy = load(artifacts::PAYMENTS_LIMITS);
    let payment = call(
        "payments.initiate",
        json!({"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"}),
    );
    let limits = Limits::default();
    group.bench_function("evaluate payments-limits", |b| {
        b.iter(|| {
            engine().evaluate_blocking(&policy, &payment, &limits, Box::new(FixedUsage::default()))
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = {
        let _enter = rt.enter();
        AuditLog::start(store.clone())
    };
    // As on the gateway's audit writer: this thread writes the log buffers it fills or seals.
    store.write_log_buffers_on_this_thread();
    let mut seq = 0u64;
    group.bench_function("audit append, no flush", |b| {
        b.iter_batched(
            || {
                seq += 1;
                decision_record(seq)
            },
            |record| {
                let mut written =
                    log.write_batch(vec![("ten_bench".into(), record, Effects::default())]);
                written.pop().unwrap().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    for batch in [1u64, 8, 64] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("audit append, durable flush per {batch}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let records: Vec<_> = (0..batch)
                        .map(|_| {
                            seq += 1;
                            (
                                "ten_bench".to_owned(),
                                decision_record(seq),
                                Effects::default(),
                            )
                        })
                        .collect();
                    let started = Instant::now();
                    for written in log.write_batch(records) {
                        written.unwrap();
                    }
                    store.flush().unwrap();
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    group.throughput(Throughput::Elements(1));

    let scope = CallScope {
        tenant_id: "ten_bench".into(),
        session_id: "sess-1".into(),
        timestamp_ms: writ_gateway::clock::Clock::now_ms(&writ_gateway::clock::SystemClock),
    };
    let counter = scope.key("spend", Window::Day);
    let charged = log.write_batch(vec![(
        "ten_bench".into(),
        decision_record(0),
        Effects {
            add: vec![(counter, 50.0)],
            ..Effects::default()
        },
    )]);
    assert!(charged[0].is_ok());
    let mut usage = StoreUsage {
        store: store.clone(),
        scope,
    };
    group.bench_function("usage counter read", |b| {
        b.iter(|| {
            let v = usage.usage("spend", Window::Day).unwrap();
            assert_eq!(v, 50.0);
            v
        })
    });
    group.finish();
}

fn escalations(c: &mut Criterion) {
    const N: usize = 10_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = setup(&rt);
    let agent: TenantScope<Agent> = s
        .app
        .tenants()
        .authenticate(&s.agent)
        .unwrap()
        .require()
        .unwrap();
    let reviewer: TenantScope<Reviewer> = s
        .app
        .tenants()
        .authenticate(&s.reviewer)
        .unwrap()
        .require()
        .unwrap();
    let mut group = c.benchmark_group("escalations");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("open and resolve 10,000", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let mut opens = tokio::task::JoinSet::new();
                    for i in 0..N {
                        let (app, agent) = (s.app.clone(), agent.clone());
                        opens.spawn(async move {
                            let outcome = app
                                .execute()
                                .execute(
                                    &agent,
                                    ExecuteRequest {
                                        session_id: format!("sess-{}", i % 100),
                                        agent_id: "agent-1".into(),
                                        action: "payments.initiate".into(),
                                        client_hint: None,
                                        arguments: format!(
                                            r#"{{"amount":{},"currency":"GBP"}}"#,
                                            600 + i
                                        ),
                                        context: "{}".into(),
                                        wait: Some(Duration::ZERO),
                                        target: None,
                                    },
                                )
                                .await
                                .unwrap();
                            outcome.escalation_id.expect("escalated")
                        });
                    }
                    let ids = opens.join_all().await;
                    let mut resolves = tokio::task::JoinSet::new();
                    for (i, id) in ids.into_iter().enumerate() {
                        let (app, reviewer) = (s.app.clone(), reviewer.clone());
                        resolves.spawn(async move {
                            app.escalations()
                                .decide(&reviewer, &id, i % 2 == 0, None)
                                .await
                                .unwrap()
                        });
                    }
                    resolves.join_all().await;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path, escalations);
criterion_main!(benches);
