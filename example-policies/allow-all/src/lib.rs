//! `allow-all`: the smallest possible policy. Every call is allowed.
//!
//! Useful as a baseline for measuring the sandbox's own cost, and as a template.

#![cfg_attr(target_arch = "wasm32", no_std)]

use writ_policy::{Decision, Policy, ToolCall};

/// Allows every call.
pub struct AllowAll;

impl Policy for AllowAll {
    fn evaluate(_call: &ToolCall) -> Decision {
        Decision::allow("allow-all policy")
    }
}

writ_policy::export_policy!(AllowAll);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_any_action() {
        for action in ["payments.initiate", "github.repos.delete", ""] {
            let d = AllowAll::evaluate(&ToolCall::builder(action).build());
            assert!(d.is_allow(), "{action}");
            assert!(d.codes.is_empty());
            assert!(d.charges.is_empty());
        }
    }
}
