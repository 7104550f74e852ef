//! `rate-limit`: at most [`PER_MINUTE`] calls per UTC minute for each API key and action.
//!
//! Each allowed call charges 1 to `calls:<key id>:<action>`; a call that finds [`PER_MINUTE`]
//! already charged in the current minute is blocked (`rate_limited`). The counter is keyed by
//! the key that made the call, which the caller cannot choose, not by the `agent_id` it names.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use writ_policy::{Decision, Policy, ToolCall, Window};

/// Calls allowed per key and action in one UTC minute.
pub const PER_MINUTE: f64 = 10.0;

/// Per-key, per-action rate limit.
pub struct RateLimit;

impl Policy for RateLimit {
    fn evaluate(call: &ToolCall) -> Decision {
        let key = call.key_id();
        let counter = format!("calls:{key}:{}", call.action());
        let used = call.usage(&counter, Window::Minute);
        if used + 1.0 > PER_MINUTE {
            return Decision::block(format!(
                "key {key} has made {used} `{}` calls this minute (limit {PER_MINUTE})",
                call.action()
            ))
            .code("rate_limited");
        }
        Decision::allow("within rate limit").charge(counter, 1.0)
    }
}

writ_policy::export_policy!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use writ_policy::Outcome;

    fn call(key: &str, used: f64) -> Decision {
        RateLimit::evaluate(
            &ToolCall::builder("email.send")
                .key_id(key)
                .usage(format!("calls:{key}:email.send"), Window::Minute, used)
                .build(),
        )
    }

    #[test]
    fn allows_and_charges_one_under_the_limit() {
        let d = call("key_1", 9.0);
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(d.charges[0].counter, "calls:key_1:email.send");
        assert_eq!(d.charges[0].amount, 1.0);
    }

    #[test]
    fn blocks_at_the_limit() {
        let d = call("key_1", 10.0);
        assert_eq!(d.outcome, Outcome::Block);
        assert_eq!(d.codes, ["rate_limited"]);
        assert!(d.charges.is_empty());
    }

    #[test]
    fn counts_each_key_apart_whatever_agent_it_names() {
        let d = RateLimit::evaluate(
            &ToolCall::builder("email.send")
                .key_id("key_2")
                .agent_id("a1")
                .usage("calls:key_1:email.send", Window::Minute, 10.0)
                .build(),
        );
        assert!(d.is_allow());
        let renamed = RateLimit::evaluate(
            &ToolCall::builder("email.send")
                .key_id("key_1")
                .agent_id("someone-else")
                .usage("calls:key_1:email.send", Window::Minute, 10.0)
                .build(),
        );
        assert!(!renamed.is_allow());
    }
}
