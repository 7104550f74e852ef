//! Times verifying and exporting a 100,000-record chain (and appending it, with group commit):
//! `cargo run --release -p writ-tests --example audit_scale -- [records]`.

use std::time::Instant;

use writ_gateway::audit::{AuditLog, Effects, Kind, RecordBody};
use writ_gateway::store::Store;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    let tenant = "ten_scale";

    let started = Instant::now();
    let writers = 64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(writers) {
                let mut r = RecordBody::new(Kind::Decision);
                r.action = Some("payments.initiate".into());
                r.agent_id = Some(format!("agent-{w}"));
                r.session_id = Some(format!("sess-{}", i % 100));
                r.arguments = Some(format!(r#"{{"amount":{i},"currency":"GBP"}}"#));
                r.outcome = Some("ALLOW".into());
                r.reason = Some("Payment within approved parameters".into());
                r.fuel = Some(13_000);
                r.latency_us = Some(10);
                log.append(tenant, r, Effects::default()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let append = started.elapsed();

    let started = Instant::now();
    let v = writ_gateway::verify::verify_chain(&store, tenant, None).unwrap();
    let verify = started.elapsed();
    assert!(v.ok() && v.records == n as u64);

    let started = Instant::now();
    let mut bytes = 0usize;
    let mut lines = 0usize;
    writ_gateway::verify::export(&store, tenant, None, |line| {
        bytes += line.len() + 1;
        lines += 1;
        true
    })
    .unwrap();
    let export = started.elapsed();
    assert_eq!(lines, n);

    println!("records: {n}");
    println!(
        "append (64 concurrent writers, durable): {append:?} ({:.0} records/s)",
        n as f64 / append.as_secs_f64()
    );
    println!("verify: {verify:?}");
    println!("export: {export:?} ({bytes} bytes)");
}
