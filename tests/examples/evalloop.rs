//! Evaluates policies in a loop, for profilers and for comparing components on a machine whose
//! speed drifts: `cargo run --release -p writ-tests --example evalloop -- [iterations]
//! [component.wasm ...]`. With several components, batches of each alternate, so a drift
//! affects all of them alike. Prints the median time per evaluation of each (default:
//! `payments-limits`).

use std::time::Instant;

use serde_json::json;
use writ_runtime::{Engine, EngineConfig};
use writ_runtime::{FixedUsage, Limits};
use writ_tests::{artifacts, call, component};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let mut paths: Vec<String> = args.collect();
    if paths.is_empty() {
        paths.push(artifacts::PAYMENTS_LIMITS.to_owned());
    }
    let mut config = EngineConfig::default();
    if let Some(keep) = std::env::var("KEEP_RESIDENT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.memory_keep_resident = keep;
    }
    let engine = Engine::new(&config).unwrap();
    let policies: Vec<_> = paths
        .iter()
        .map(|path| engine.compile(&component(path)).unwrap())
        .collect();
    let c = call(
        "payments.initiate",
        json!({"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"}),
    );
    let limits = Limits::default();
    let batch = 5_000;
    let mut times = vec![Vec::new(); policies.len()];
    for _ in 0..(n / batch).max(1) {
        for (policy, times) in policies.iter().zip(&mut times) {
            let started = Instant::now();
            for _ in 0..batch {
                let e =
                    engine.evaluate_blocking(policy, &c, &limits, Box::new(FixedUsage::default()));
                assert!(!e.decision.codes.iter().any(|c| c.starts_with("policy_")));
            }
            times.push(started.elapsed() / batch);
        }
    }
    for (path, times) in paths.iter().zip(&mut times) {
        times.sort();
        println!(
            "{path}: per evaluation over batches of {batch}: min {:?}, median {:?}",
            times[0],
            times[times.len() / 2]
        );
    }
}
