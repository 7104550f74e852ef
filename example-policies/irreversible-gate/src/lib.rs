//! `irreversible-gate`: no irreversible action without a human.
//!
//! Escalates (`irreversible_action`) any call whose target method is DELETE, whose action ends
//! in `.delete` or `.destroy`, or whose target is a POST the tenant's catalog marks destructive.
//! Everything else is allowed. Risk comes from what the call does, not only what it is named.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use writ_policy::{Decision, Policy, ToolCall};

/// Escalates irreversible calls.
pub struct IrreversibleGate;

impl Policy for IrreversibleGate {
    fn evaluate(call: &ToolCall) -> Decision {
        let escalate = |why: String| Decision::escalate(why).code("irreversible_action");
        if let Some(target) = call.target() {
            if target.method.eq_ignore_ascii_case("DELETE") {
                return escalate(format!("DELETE {} is irreversible", target.url));
            }
            if target.method.eq_ignore_ascii_case("POST") && target.destructive {
                return escalate(format!(
                    "POST {} is marked destructive in the tool catalog",
                    target.url
                ));
            }
        }
        let action = call.action();
        if action.ends_with(".delete") || action.ends_with(".destroy") {
            return escalate(format!("`{action}` is irreversible"));
        }
        Decision::allow("reversible action")
    }
}

writ_policy::export_policy!(IrreversibleGate);

#[cfg(test)]
mod tests {
    use super::*;
    use writ_policy::{Outcome, Target};

    fn target(method: &str, destructive: bool) -> Target {
        Target {
            service: "github".into(),
            method: method.into(),
            url: "https://api.github.com/repos/acme/old".into(),
            destructive,
        }
    }

    fn eval(action: &str, target: Option<Target>) -> Decision {
        let mut b = ToolCall::builder(action);
        if let Some(t) = target {
            b = b.target(t);
        }
        IrreversibleGate::evaluate(&b.build())
    }

    #[test]
    fn escalates_delete_method_whatever_the_name() {
        let d = eval("github.repos.tidy", Some(target("DELETE", false)));
        assert_eq!(d.outcome, Outcome::Escalate);
        assert_eq!(d.codes, ["irreversible_action"]);
    }

    #[test]
    fn escalates_delete_and_destroy_actions() {
        for action in ["github.repos.delete", "infra.cluster.destroy"] {
            assert_eq!(eval(action, None).outcome, Outcome::Escalate, "{action}");
        }
    }

    #[test]
    fn escalates_destructive_posts_only() {
        assert_eq!(
            eval("stripe.charges.create", Some(target("POST", true))).outcome,
            Outcome::Escalate
        );
        assert_eq!(
            eval("stripe.charges.list", Some(target("POST", false))).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn allows_reads() {
        assert_eq!(
            eval("github.repos.get", Some(target("GET", false))).outcome,
            Outcome::Allow
        );
        assert_eq!(
            eval("github.repos.deleted_list", None).outcome,
            Outcome::Allow
        );
    }
}
