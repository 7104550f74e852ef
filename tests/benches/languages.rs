//! `payments-limits` written in Rust, Python (componentize-py) and TypeScript (componentize-js):
//! one evaluation each (a fresh instance, then evaluate), on the same call, and the same with a
//! call that does almost nothing (`email.send`), which leaves mostly the cost of the fresh
//! instance and of entering the language's runtime. `cargo bench -p writ-tests --bench languages`.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use writ_runtime::{FixedUsage, Limits, Outcome};
use writ_tests::{artifacts, call, engine, load};

fn languages(c: &mut Criterion) {
    let limits = Limits::default();
    let payment = call(
        "payments.initiate",
        json!({"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"}),
    );
    let email = call("email.send", json!({"to": "a@example.com"}));
    for (language, component) in [
        ("rust", artifacts::PAYMENTS_LIMITS),
        ("python", artifacts::PAYMENTS_LIMITS_PYTHON),
        ("typescript", artifacts::PAYMENTS_LIMITS_TYPESCRIPT),
    ] {
        let policy = load(component);
        let mut group = c.benchmark_group(format!("payments-limits/{language}"));
        for (name, call) in [("payment", &payment), ("email", &email)] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let e = engine().evaluate_blocking(
                        &policy,
                        call,
                        &limits,
                        Box::new(FixedUsage::default()),
                    );
                    assert_eq!(e.decision.outcome, Outcome::Allow, "{:?}", e.decision);
                    e
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, languages);
criterion_main!(benches);
