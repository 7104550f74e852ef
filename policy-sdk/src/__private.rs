//! Glue between the generated component bindings and the SDK's types. Not public API: used by
//! [`export_policy!`](crate::export_policy) and the wasm32 paths of the SDK.

#![allow(missing_docs)]

#[allow(unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy_world",
        default_bindings_module: "writ_policy::__private::bindings",
        runtime_path: "writ_policy::__private::wit_bindgen::rt",
    });
}

pub use wit_bindgen;

use bindings::writ::policy::{host, types};

use crate::{Decision, Level, Outcome, Policy, Target, ToolCall, Window};

/// Runs policy `P` on one call from the host: the body of the exported `evaluate`.
pub fn run<P: Policy>(call: types::ToolCall) -> types::Decision {
    std::panic::set_hook(Box::new(|info| {
        host::log(host::Level::Error, &format!("policy panicked: {info}"));
    }));
    let call = ToolCall::from_host(
        call.action,
        call.arguments,
        call.context,
        call.agent_id,
        call.session_id,
        call.tenant_id,
        call.target.map(|t| Target {
            service: t.service,
            method: t.method,
            url: t.url,
            destructive: t.destructive,
        }),
        call.timestamp_ms,
    );
    into_wit(P::evaluate(&call))
}

fn into_wit(decision: Decision) -> types::Decision {
    types::Decision {
        outcome: match decision.outcome {
            Outcome::Allow => types::Outcome::Allow,
            Outcome::Block => types::Outcome::Block,
            Outcome::Escalate => types::Outcome::Escalate,
        },
        reason: decision.reason,
        codes: decision.codes,
        charges: decision
            .charges
            .into_iter()
            .map(|c| types::Charge {
                counter: c.counter,
                amount: c.amount,
            })
            .collect(),
    }
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => host::Level::Debug,
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
        Level::Error => host::Level::Error,
    };
    host::log(level, message);
}

pub(crate) fn usage(counter: &str, window: Window) -> f64 {
    let window = match window {
        Window::Session => types::Window::Session,
        Window::Minute => types::Window::Minute,
        Window::Hour => types::Window::Hour,
        Window::Day => types::Window::Day,
        Window::AllTime => types::Window::AllTime,
    };
    host::usage(counter, window)
}
