//! One evaluation (fresh instance + evaluate) of each example policy in the sandbox, beside the
//! same rules run natively (the floor). `cargo bench -p writ-tests --bench evaluate`.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use writ::{FixedUsage, Limits};
use writ_policy::Policy;
use writ_tests::{artifacts, call, engine, load};

fn payments_limits(c: &mut Criterion) {
    let args = json!({"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"});
    let mut group = c.benchmark_group("payments-limits");

    let policy = load(artifacts::PAYMENTS_LIMITS);
    let wasm_call = call("payments.initiate", args.clone());
    let limits = Limits::default();
    group.bench_function("wasm: fresh instance + evaluate", |b| {
        b.iter(|| {
            let e = engine().evaluate(
                &policy,
                &wasm_call,
                &limits,
                Box::new(FixedUsage::default()),
            );
            assert!(e.decision.codes.is_empty());
            e
        })
    });

    let native_call = writ_policy::ToolCall::builder("payments.initiate")
        .arguments(args)
        .build();
    group.bench_function("native floor", |b| {
        b.iter(|| {
            // A fresh call each time, as the guest parses its arguments afresh per instance.
            let call = native_call.clone();
            payments_limits::PaymentsLimits::evaluate(&call)
        })
    });
    group.finish();
}

fn other_policies(c: &mut Criterion) {
    let mut group = c.benchmark_group("fresh instance + evaluate");
    let limits = Limits::default();
    for (name, path, action, args) in [
        ("allow-all", artifacts::ALLOW_ALL, "email.send", json!({})),
        (
            "irreversible-gate",
            artifacts::IRREVERSIBLE_GATE,
            "github.repos.get",
            json!({"owner": "acme"}),
        ),
        (
            "spend-cap",
            artifacts::SPEND_CAP,
            "payments.initiate",
            json!({"amount": 50, "currency": "GBP"}),
        ),
        ("rate-limit", artifacts::RATE_LIMIT, "email.send", json!({})),
    ] {
        let policy = load(path);
        let call = call(action, args);
        group.bench_function(name, |b| {
            b.iter(|| engine().evaluate(&policy, &call, &limits, Box::new(FixedUsage::default())))
        });
    }
    group.finish();
}

criterion_group!(benches, payments_limits, other_policies);
criterion_main!(benches);
