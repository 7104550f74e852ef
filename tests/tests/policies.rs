//! The example policies, compiled to real components by the test build, evaluated by the real
//! engine: every outcome and code their READMEs promise.

use rstest::rstest;
use serde_json::json;
use writ_runtime::{Limits, Outcome, Target, Window};
use writ_tests::{artifacts, call, evaluate, evaluate_with, load};

#[rstest]
#[case::small_gbp(json!({"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"}), Outcome::Allow, &[])]
#[case::limit_eur(json!({"amount": 500, "currency": "EUR"}), Outcome::Allow, &[])]
#[case::small_usd(json!({"amount": 0.01, "currency": "USD"}), Outcome::Allow, &[])]
#[case::over_limit(json!({"amount": 800, "currency": "GBP"}), Outcome::Escalate, &["amount_over_limit"])]
#[case::jpy(json!({"amount": 100, "currency": "JPY"}), Outcome::Escalate, &["currency_not_preapproved"])]
#[case::large_jpy(json!({"amount": 900, "currency": "JPY"}), Outcome::Escalate, &["currency_not_preapproved", "amount_over_limit"])]
#[case::missing_amount(json!({"currency": "GBP"}), Outcome::Block, &["invalid_arguments"])]
#[case::string_amount(json!({"amount": "50", "currency": "GBP"}), Outcome::Block, &["invalid_arguments"])]
#[case::negative_amount(json!({"amount": -1, "currency": "GBP"}), Outcome::Block, &["invalid_arguments"])]
#[case::missing_currency(json!({"amount": 10}), Outcome::Block, &["invalid_arguments"])]
#[case::not_an_object(json!([50, "GBP"]), Outcome::Block, &["invalid_arguments"])]
fn payments_limits_decides_payments(
    #[case] arguments: serde_json::Value,
    #[case] outcome: Outcome,
    #[case] codes: &[&str],
) {
    let policy = load(artifacts::PAYMENTS_LIMITS);
    let e = evaluate(&policy, &call("payments.initiate", arguments));
    assert_eq!(e.decision.outcome, outcome, "{:?}", e.decision);
    assert_eq!(e.decision.codes, codes);
    assert!(e.fuel_consumed > 0);
}

#[test]
fn payments_limits_gives_the_seed_reason_for_allowed_payments() {
    let policy = load(artifacts::PAYMENTS_LIMITS);
    let e = evaluate(
        &policy,
        &call(
            "payments.initiate",
            json!({"amount": 50, "currency": "GBP"}),
        ),
    );
    assert_eq!(e.decision.reason, "Payment within approved parameters");
}

#[test]
fn payments_limits_allows_email_and_blocks_unknown_actions() {
    let policy = load(artifacts::PAYMENTS_LIMITS);
    let email = evaluate(&policy, &call("email.send", json!({"to": "a@b.c"})));
    assert_eq!(email.decision.outcome, Outcome::Allow);
    let other = evaluate(&policy, &call("github.repos.delete", json!({})));
    assert_eq!(other.decision.outcome, Outcome::Block);
    assert_eq!(other.decision.codes, ["action_not_allowed"]);
}

#[test]
fn allow_all_allows_anything() {
    let policy = load(artifacts::ALLOW_ALL);
    for action in ["payments.initiate", "github.repos.delete", ""] {
        let e = evaluate(&policy, &call(action, json!({})));
        assert_eq!(e.decision.outcome, Outcome::Allow, "{action}");
        assert!(e.decision.codes.is_empty());
    }
}

fn target(method: &str, destructive: bool) -> Target {
    Target {
        service: "github".into(),
        method: method.into(),
        url: "https://api.github.com/repos/acme/old".into(),
        destructive,
    }
}

#[rstest]
#[case::delete_method("github.repos.tidy", Some(target("DELETE", false)), Outcome::Escalate)]
#[case::delete_action("github.repos.delete", None, Outcome::Escalate)]
#[case::destroy_action("infra.cluster.destroy", None, Outcome::Escalate)]
#[case::destructive_post("stripe.charges.create", Some(target("POST", true)), Outcome::Escalate)]
#[case::plain_post("stripe.charges.search", Some(target("POST", false)), Outcome::Allow)]
#[case::get("github.repos.get", Some(target("GET", false)), Outcome::Allow)]
#[case::no_target("email.send", None, Outcome::Allow)]
fn irreversible_gate_escalates_irreversible_calls(
    #[case] action: &str,
    #[case] target: Option<Target>,
    #[case] outcome: Outcome,
) {
    let policy = load(artifacts::IRREVERSIBLE_GATE);
    let mut c = call(action, json!({}));
    c.target = target;
    let e = evaluate(&policy, &c);
    assert_eq!(e.decision.outcome, outcome, "{:?}", e.decision);
    if outcome == Outcome::Escalate {
        assert_eq!(e.decision.codes, ["irreversible_action"]);
    }
}

#[rstest]
#[case::within(100.0, 0.0, 0.0, Outcome::Allow, &[])]
#[case::session_cap_exact(100.0, 900.0, 900.0, Outcome::Allow, &[])]
#[case::session_cap(100.5, 900.0, 900.0, Outcome::Block, &["session_cap_exceeded"])]
#[case::day_cap(100.0, 0.0, 4_950.0, Outcome::Escalate, &["day_cap_exceeded"])]
fn spend_cap_reads_usage_and_charges(
    #[case] amount: f64,
    #[case] session: f64,
    #[case] day: f64,
    #[case] outcome: Outcome,
    #[case] codes: &[&str],
) {
    let policy = load(artifacts::SPEND_CAP);
    let e = evaluate_with(
        &policy,
        &call(
            "payments.initiate",
            json!({"amount": amount, "currency": "GBP"}),
        ),
        &Limits::default(),
        &[
            ("spend:GBP", Window::Session, session),
            ("spend:GBP", Window::Day, day),
        ],
    );
    assert_eq!(e.decision.outcome, outcome, "{:?}", e.decision);
    assert_eq!(e.decision.codes, codes);
    if outcome != Outcome::Block {
        assert_eq!(e.decision.charges.len(), 1);
        assert_eq!(e.decision.charges[0].counter, "spend:GBP");
        assert_eq!(e.decision.charges[0].amount, amount);
    }
    let session_read = e
        .usage_reads
        .iter()
        .find(|r| r.window == Window::Session)
        .expect("the policy read the session window");
    assert_eq!(session_read.counter, "spend:GBP");
    assert_eq!(session_read.value, session);
}

#[test]
fn rate_limit_counts_per_key_and_action_per_minute() {
    let policy = load(artifacts::RATE_LIMIT);
    let c = call("email.send", json!({}));
    let counter = "calls:key_test:email.send";
    let under = evaluate_with(
        &policy,
        &c,
        &Limits::default(),
        &[(counter, Window::Minute, 9.0)],
    );
    assert_eq!(under.decision.outcome, Outcome::Allow);
    assert_eq!(under.decision.charges[0].counter, counter);
    assert_eq!(under.decision.charges[0].amount, 1.0);
    let at = evaluate_with(
        &policy,
        &c,
        &Limits::default(),
        &[(counter, Window::Minute, 10.0)],
    );
    assert_eq!(at.decision.outcome, Outcome::Block);
    assert_eq!(at.decision.codes, ["rate_limited"]);
    let other_key = evaluate_with(
        &policy,
        &c,
        &Limits::default(),
        &[("calls:key_other:email.send", Window::Minute, 10.0)],
    );
    assert_eq!(other_key.decision.outcome, Outcome::Allow);
}

/// Each guest this crate builds is exercised by some test in this directory.
#[test]
fn every_guest_has_a_test() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let sources: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for (name, _) in artifacts::ALL {
        let constant = format!("artifacts::{}", name.replace('-', "_").to_uppercase());
        assert!(
            sources.contains(&constant),
            "guest `{name}` is built but no test uses {constant}"
        );
    }
}

#[rstest]
#[case::a_read(json!({"timezone": "UTC"}), json!({}), Outcome::Allow, &[])]
#[case::a_secret(json!({"text": "my Password is x"}), json!({}), Outcome::Block, &["secret_in_arguments"])]
#[case::declared_destructive(
    json!({"text": "hi"}),
    json!({"mcp": {"server": "notes", "annotations": {"destructiveHint": true}}}),
    Outcome::Escalate,
    &["destructive_tool"]
)]
#[case::declared_read_only(
    json!({"text": "hi"}),
    json!({"mcp": {"server": "notes", "annotations": {"readOnlyHint": true}}}),
    Outcome::Allow,
    &[]
)]
fn mcp_guard_blocks_secrets_and_escalates_tools_declared_destructive(
    #[case] arguments: serde_json::Value,
    #[case] context: serde_json::Value,
    #[case] outcome: Outcome,
    #[case] codes: &[&str],
) {
    let policy = load(artifacts::MCP_GUARD);
    let mut c = call("notes.write_note", arguments);
    c.context = context.to_string();
    let e = evaluate(&policy, &c);
    assert_eq!(e.decision.outcome, outcome, "{:?}", e.decision);
    assert_eq!(e.decision.codes, codes);
}
