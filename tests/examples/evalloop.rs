//! Evaluates `payments-limits` in a loop, for profilers: `cargo run --release -p writ-tests
//! --example evalloop -- [iterations]`. Prints the mean time per evaluation.

use std::time::Instant;

use serde_json::json;
use writ::{Engine, EngineConfig};
use writ::{FixedUsage, Limits};
use writ_tests::{artifacts, call, component};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut config = EngineConfig::default();
    if let Some(keep) = std::env::var("KEEP_RESIDENT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.memory_keep_resident = keep;
    }
    let engine = Engine::new(&config).unwrap();
    let policy = engine
        .compile(&component(artifacts::PAYMENTS_LIMITS))
        .unwrap();
    let c = call(
        "payments.initiate",
        json!({"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"}),
    );
    let limits = Limits::default();
    let batch = 10_000;
    let mut times = Vec::new();
    for _ in 0..(n / batch).max(1) {
        let started = Instant::now();
        for _ in 0..batch {
            let e = engine.evaluate_blocking(&policy, &c, &limits, Box::new(FixedUsage::default()));
            assert!(e.decision.codes.is_empty());
        }
        times.push(started.elapsed() / batch);
    }
    times.sort();
    println!(
        "per evaluation over batches of {batch}: min {:?}, median {:?}",
        times[0],
        times[times.len() / 2]
    );
}
