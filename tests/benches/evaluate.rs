//! One evaluation (fresh instance + evaluate) of each example policy in the sandbox, beside the
//! same rules run natively (the floor): the policy crate itself, compiled for the host and
//! called through the SDK's native `ToolCall`. `cargo bench -p writ-tests --bench evaluate`.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use writ_policy::{Decision, Policy, ToolCall};
use writ_runtime::{FixedUsage, Limits, Window};
use writ_tests::{artifacts, call, engine, load};

/// One policy's case: the component, the call, the usage values it reads, and its native twin.
struct Case {
    name: &'static str,
    component: &'static str,
    action: &'static str,
    arguments: Value,
    usage: Vec<(&'static str, Window, f64)>,
    native: fn(&ToolCall) -> Decision,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "payments-limits",
            component: artifacts::PAYMENTS_LIMITS,
            action: "payments.initiate",
            arguments: json!({"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"}),
            usage: vec![],
            native: payments_limits::PaymentsLimits::evaluate,
        },
        Case {
            name: "allow-all",
            component: artifacts::ALLOW_ALL,
            action: "email.send",
            arguments: json!({"to": "a@example.com"}),
            usage: vec![],
            native: allow_all::AllowAll::evaluate,
        },
        Case {
            name: "irreversible-gate",
            component: artifacts::IRREVERSIBLE_GATE,
            action: "github.repos.get",
            arguments: json!({"owner": "acme", "repo": "writ"}),
            usage: vec![],
            native: irreversible_gate::IrreversibleGate::evaluate,
        },
        Case {
            name: "spend-cap",
            component: artifacts::SPEND_CAP,
            action: "payments.initiate",
            arguments: json!({"amount": 50, "currency": "GBP"}),
            usage: vec![
                ("spend:GBP", Window::Session, 100.0),
                ("spend:GBP", Window::Day, 1000.0),
            ],
            native: spend_cap::SpendCap::evaluate,
        },
        Case {
            name: "rate-limit",
            component: artifacts::RATE_LIMIT,
            action: "email.send",
            arguments: json!({"to": "a@example.com"}),
            usage: vec![("calls:key_test:email.send", Window::Minute, 3.0)],
            native: rate_limit::RateLimit::evaluate,
        },
    ]
}

fn evaluate(c: &mut Criterion) {
    let limits = Limits::default();
    for case in cases() {
        let mut group = c.benchmark_group(case.name);
        let policy = load(case.component);
        let wasm_call = call(case.action, case.arguments.clone());
        let usage = FixedUsage(
            case.usage
                .iter()
                .map(|(counter, window, v)| (((*counter).to_owned(), *window), *v))
                .collect(),
        );
        group.bench_function("wasm: fresh instance + evaluate", |b| {
            b.iter(|| {
                let e = engine().evaluate_blocking(
                    &policy,
                    &wasm_call,
                    &limits,
                    Box::new(usage.clone()),
                );
                assert!(!e.decision.codes.iter().any(|c| c.starts_with("policy_")));
                e
            })
        });

        let mut builder = ToolCall::builder(case.action)
            .agent_id("agent-1")
            .session_id("sess-1")
            .arguments(case.arguments.clone());
        for (counter, window, v) in &case.usage {
            builder = builder.usage(*counter, sdk_window(*window), *v);
        }
        let native_call = builder.build();
        group.bench_function("native floor", |b| {
            b.iter(|| {
                // A fresh call each time, as the guest parses its arguments afresh per instance.
                let call = native_call.clone();
                (case.native)(&call)
            })
        });
        group.finish();
    }
}

fn sdk_window(w: Window) -> writ_policy::Window {
    match w {
        Window::Minute => writ_policy::Window::Minute,
        Window::Hour => writ_policy::Window::Hour,
        Window::Day => writ_policy::Window::Day,
        Window::Session => writ_policy::Window::Session,
        Window::AllTime => writ_policy::Window::AllTime,
    }
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
