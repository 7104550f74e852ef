//! `spend-cap`: caps what an agent can spend, using usage counters.
//!
//! Every allowed `payments.initiate` is charged to `spend:<currency>`. A payment that would take
//! the session's total over [`SESSION_CAP`] is blocked (`session_cap_exceeded`); one that would
//! take the tenant's total for the current UTC day over [`DAY_CAP`] is escalated
//! (`day_cap_exceeded`). Other actions are allowed and charge nothing.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use serde::Deserialize;
use writ_policy::{Decision, Policy, ToolCall, Window};

/// Most a session may spend in one currency.
pub const SESSION_CAP: f64 = 1_000.0;

/// Most a tenant may spend in one currency per UTC day without a human.
pub const DAY_CAP: f64 = 5_000.0;

/// Session and day spend caps.
pub struct SpendCap;

#[derive(Deserialize)]
struct Payment {
    amount: f64,
    currency: String,
}

impl Policy for SpendCap {
    fn evaluate(call: &ToolCall) -> Decision {
        if call.action() != "payments.initiate" {
            return Decision::allow("not a payment");
        }
        let p = match call.arguments::<Payment>() {
            Ok(p) if p.amount.is_finite() && p.amount > 0.0 && !p.currency.is_empty() => p,
            _ => {
                return Decision::block("payment needs a positive amount and a currency")
                    .code("invalid_arguments");
            }
        };
        let counter = format!("spend:{}", p.currency);
        let session = call.usage(&counter, Window::Session);
        if session + p.amount > SESSION_CAP {
            return Decision::block(format!(
                "session spend would reach {} {}, over the cap of {SESSION_CAP}",
                session + p.amount,
                p.currency
            ))
            .code("session_cap_exceeded");
        }
        let day = call.usage(&counter, Window::Day);
        if day + p.amount > DAY_CAP {
            return Decision::escalate(format!(
                "today's spend would reach {} {}, over the cap of {DAY_CAP}",
                day + p.amount,
                p.currency
            ))
            .code("day_cap_exceeded")
            .charge(counter, p.amount);
        }
        Decision::allow("within spend caps").charge(counter, p.amount)
    }
}

writ_policy::export_policy!(SpendCap);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use writ_policy::Outcome;

    fn pay(amount: f64, session: f64, day: f64) -> Decision {
        SpendCap::evaluate(
            &ToolCall::builder("payments.initiate")
                .arguments(json!({"amount": amount, "currency": "GBP"}))
                .usage("spend:GBP", Window::Session, session)
                .usage("spend:GBP", Window::Day, day)
                .build(),
        )
    }

    #[test]
    fn allows_and_charges_within_caps() {
        let d = pay(100.0, 0.0, 0.0);
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(d.charges.len(), 1);
        assert_eq!(d.charges[0].counter, "spend:GBP");
        assert_eq!(d.charges[0].amount, 100.0);
    }

    #[test]
    fn allows_exactly_up_to_the_session_cap() {
        assert_eq!(pay(100.0, 900.0, 900.0).outcome, Outcome::Allow);
    }

    #[test]
    fn blocks_over_the_session_cap() {
        let d = pay(100.01, 900.0, 900.0);
        assert_eq!(d.outcome, Outcome::Block);
        assert_eq!(d.codes, ["session_cap_exceeded"]);
        assert!(d.charges.is_empty());
    }

    #[test]
    fn escalates_over_the_day_cap_and_charges_on_approval() {
        let d = pay(100.0, 0.0, 4_950.0);
        assert_eq!(d.outcome, Outcome::Escalate);
        assert_eq!(d.codes, ["day_cap_exceeded"]);
        assert_eq!(d.charges.len(), 1);
    }

    #[test]
    fn counters_are_per_currency() {
        let d = SpendCap::evaluate(
            &ToolCall::builder("payments.initiate")
                .arguments(json!({"amount": 500, "currency": "EUR"}))
                .usage("spend:GBP", Window::Session, 1_000.0)
                .build(),
        );
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(d.charges[0].counter, "spend:EUR");
    }

    #[test]
    fn blocks_malformed_payments_and_allows_other_actions() {
        let d = SpendCap::evaluate(
            &ToolCall::builder("payments.initiate")
                .arguments(json!({"amount": "lots"}))
                .build(),
        );
        assert_eq!(d.codes, ["invalid_arguments"]);
        assert!(SpendCap::evaluate(&ToolCall::builder("email.send").build()).is_allow());
    }
}
