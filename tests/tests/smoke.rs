use writ::{Limits, Outcome, FixedUsage};
use writ_tests::{artifacts, call, engine, load};

#[test]
fn smoke() {
    let t = std::time::Instant::now();
    let p = load(artifacts::PAYMENTS_LIMITS);
    eprintln!("compile {:?}", t.elapsed());
    for _ in 0..3 {
    let e = engine().evaluate(&p, &call("payments.initiate", serde_json::json!({"amount": 50, "currency": "GBP"})), &Limits::default(), Box::new(FixedUsage::default()));
    eprintln!("{:?}", e);
    assert_eq!(e.decision.outcome, Outcome::Allow);
    }
}
