//! `{{name}}`, a Writ policy: refunds up to 100 go ahead, larger ones wait for a human, and
//! each API key may issue at most five refunds a minute. Other actions are allowed.

use writ_policy::{Decision, Policy, ToolCall, Window};

/// The largest refund that needs no human.
pub const LIMIT: f64 = 100.0;

/// Refunds one key may issue in a minute.
pub const PER_MINUTE: f64 = 5.0;

/// The policy.
pub struct Refunds;

impl Policy for Refunds {
    fn evaluate(call: &ToolCall) -> Decision {
        if call.action() != "refunds.issue" {
            return Decision::allow("not a refund");
        }
        let Ok(amount) = call.arg::<f64>("amount") else {
            return Decision::block("a refund needs a numeric amount").code("invalid_arguments");
        };
        // Counted per key: an agent chooses its session and agent id, not its key.
        let counter = format!("refunds:{}", call.key_id());
        if call.usage(&counter, Window::Minute) >= PER_MINUTE {
            return Decision::block("this key has issued its refunds for the minute")
                .code("rate_limited");
        }
        if amount > LIMIT {
            return Decision::escalate(format!("a refund of {amount} needs a human"))
                .code("refund_over_limit")
                .charge(counter, 1.0);
        }
        Decision::allow("refund within limits").charge(counter, 1.0)
    }
}

writ_policy::export_policy!(Refunds);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refund(amount: f64, issued_this_minute: f64) -> Decision {
        let call = ToolCall::builder("refunds.issue")
            .arguments(json!({ "amount": amount }))
            .key_id("key_a")
            .usage("refunds:key_a", Window::Minute, issued_this_minute)
            .build();
        Refunds::evaluate(&call)
    }

    #[test]
    fn a_small_refund_is_allowed_and_counted() {
        let d = refund(20.0, 0.0);
        assert!(d.is_allow());
        assert_eq!(d.charges.len(), 1);
    }

    #[test]
    fn a_large_refund_is_escalated() {
        assert_eq!(refund(250.0, 0.0).codes, ["refund_over_limit"]);
    }

    #[test]
    fn the_sixth_refund_of_a_minute_is_blocked() {
        assert_eq!(refund(20.0, 5.0).codes, ["rate_limited"]);
    }
}
