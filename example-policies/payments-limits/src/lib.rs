//! `payments-limits`: the Provenance seed's payment scenario.
//!
//! - `payments.initiate` in GBP, EUR or USD up to 500 is allowed;
//! - above 500 is escalated (`amount_over_limit`);
//! - any other currency is escalated for a human (`currency_not_preapproved`);
//! - a missing or non-numeric amount, or a missing currency, is blocked (`invalid_arguments`);
//! - `email.send` is allowed;
//! - any other action is blocked (`action_not_allowed`).

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use writ_policy::{Decision, Policy, ToolCall};

/// The largest payment allowed without a human.
pub const LIMIT: f64 = 500.0;

/// Currencies that need no human.
pub const PREAPPROVED: [&str; 3] = ["GBP", "EUR", "USD"];

/// The seed's payment limits.
pub struct PaymentsLimits;

struct Payment {
    amount: f64,
    currency: String,
}

impl Policy for PaymentsLimits {
    fn evaluate(call: &ToolCall) -> Decision {
        match call.action() {
            "payments.initiate" => payment(call),
            "email.send" => Decision::allow("Email sending is allowed"),
            other => Decision::block(format!("Action `{other}` is not allowed by this policy"))
                .code("action_not_allowed"),
        }
    }
}

fn payment(call: &ToolCall) -> Decision {
    let amount = match call.arg::<f64>("amount") {
        Ok(amount) if amount.is_finite() && amount > 0.0 => amount,
        Ok(_) => {
            return Decision::block("Payment amount must be a positive number")
                .code("invalid_arguments");
        }
        Err(e) => {
            return Decision::block(format!("Malformed payment arguments: {e}"))
                .code("invalid_arguments");
        }
    };
    let currency = match call.arg::<String>("currency") {
        Ok(currency) => currency,
        Err(e) => {
            return Decision::block(format!("Malformed payment arguments: {e}"))
                .code("invalid_arguments");
        }
    };
    let payment = Payment { amount, currency };
    let mut decision: Option<Decision> = None;
    if !PREAPPROVED.contains(&payment.currency.as_str()) {
        decision = Some(
            Decision::escalate(format!(
                "Currency {} is not pre-approved: a human must review",
                payment.currency
            ))
            .code("currency_not_preapproved"),
        );
    }
    if payment.amount > LIMIT {
        decision = Some(
            decision
                .unwrap_or_else(|| {
                    Decision::escalate(format!(
                        "Payment of {} {} is over the {LIMIT} limit: a human must review",
                        payment.amount, payment.currency
                    ))
                })
                .code("amount_over_limit"),
        );
    }
    decision.unwrap_or_else(|| Decision::allow("Payment within approved parameters"))
}

writ_policy::export_policy!(PaymentsLimits);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use writ_policy::Outcome;

    fn pay(args: serde_json::Value) -> Decision {
        PaymentsLimits::evaluate(
            &ToolCall::builder("payments.initiate")
                .arguments(args)
                .build(),
        )
    }

    #[test]
    fn allows_small_payments_in_preapproved_currencies() {
        for currency in PREAPPROVED {
            let d = pay(json!({"amount": 500, "currency": currency, "recipient_id": "rec_abc123"}));
            assert_eq!(d.outcome, Outcome::Allow, "{currency}");
            assert_eq!(d.reason, "Payment within approved parameters");
            assert!(d.codes.is_empty());
        }
    }

    #[test]
    fn escalates_payments_over_the_limit() {
        let d = pay(json!({"amount": 800, "currency": "GBP", "recipient_id": "rec_xyz789"}));
        assert_eq!(d.outcome, Outcome::Escalate);
        assert_eq!(d.codes, ["amount_over_limit"]);
    }

    #[test]
    fn escalates_other_currencies() {
        let d = pay(json!({"amount": 100, "currency": "JPY", "recipient_id": "rec_jpy001"}));
        assert_eq!(d.outcome, Outcome::Escalate);
        assert_eq!(d.codes, ["currency_not_preapproved"]);
    }

    #[test]
    fn large_payment_in_other_currency_carries_both_codes() {
        let d = pay(json!({"amount": 9000, "currency": "JPY"}));
        assert_eq!(d.outcome, Outcome::Escalate);
        assert_eq!(d.codes, ["currency_not_preapproved", "amount_over_limit"]);
    }

    #[test]
    fn blocks_malformed_amounts() {
        for args in [
            json!({"currency": "GBP"}),
            json!({"amount": "fifty", "currency": "GBP"}),
            json!({"amount": null, "currency": "GBP"}),
            json!({"amount": -5, "currency": "GBP"}),
            json!({"amount": 0, "currency": "GBP"}),
            json!({"amount": 10}),
            json!([1, 2]),
        ] {
            let d = pay(args.clone());
            assert_eq!(d.outcome, Outcome::Block, "{args}");
            assert_eq!(d.codes, ["invalid_arguments"], "{args}");
        }
    }

    #[test]
    fn allows_email() {
        let d = PaymentsLimits::evaluate(&ToolCall::builder("email.send").build());
        assert_eq!(d.outcome, Outcome::Allow);
    }

    #[test]
    fn blocks_unknown_actions() {
        let d = PaymentsLimits::evaluate(&ToolCall::builder("github.repos.delete").build());
        assert_eq!(d.outcome, Outcome::Block);
        assert_eq!(d.codes, ["action_not_allowed"]);
    }
}
