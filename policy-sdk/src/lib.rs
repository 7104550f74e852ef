//! Write Writ policies in Rust.
//!
//! A Writ policy decides whether an AI agent's tool call may go ahead. It is compiled to a
//! WebAssembly component for `wasm32-wasip2` and uploaded to the gateway, which runs it in a
//! sandbox: a fresh instance for every call, with fuel, deadline and memory limits, and no
//! filesystem, network, environment, clock or randomness.
//!
//! A policy author depends on this crate alone, implements [`Policy`], and exports the
//! implementation with [`export_policy!`]. The same code runs natively under plain
//! `cargo test`: build a call with [`ToolCall::builder`], set the usage counters the test needs,
//! and assert on the [`Decision`].
//!
//! ```
//! use writ_policy::{Decision, Policy, ToolCall, Window};
//!
//! /// Allows payments of at most 100 per session, charged to `spend`.
//! pub struct SmallPayments;
//!
//! impl Policy for SmallPayments {
//!     fn evaluate(call: &ToolCall) -> Decision {
//!         if call.action() != "payments.initiate" {
//!             return Decision::block("only payments are allowed").code("action_not_allowed");
//!         }
//!         let Ok(amount) = call.arg::<f64>("amount") else {
//!             return Decision::block("amount must be a number").code("invalid_arguments");
//!         };
//!         if call.usage("spend", Window::Session) + amount > 100.0 {
//!             return Decision::escalate("session spend over 100").code("session_cap");
//!         }
//!         Decision::allow("small payment").charge("spend", amount)
//!     }
//! }
//!
//! writ_policy::export_policy!(SmallPayments);
//!
//! // Natively, in a unit test:
//! let call = ToolCall::builder("payments.initiate")
//!     .arguments(serde_json::json!({ "amount": 30 }))
//!     .usage("spend", Window::Session, 80.0)
//!     .build();
//! let decision = SmallPayments::evaluate(&call);
//! assert!(decision.is_escalate());
//! assert_eq!(decision.codes, ["session_cap"]);
//! ```
//!
//! Build the component with `cargo build --release --target wasm32-wasip2` on a crate whose
//! `[lib]` has `crate-type = ["cdylib", "rlib"]`. A policy needs little stack; linking with a
//! 64 KiB one instead of Rust's default 1 MiB keeps each fresh instance small and roughly
//! halves the sandbox's per-call cost. In `.cargo/config.toml`:
//!
//! ```toml
//! [target.wasm32-wasip2]
//! rustflags = ["-C", "link-arg=-zstack-size=65536"]
//! ```
//!
//! What `std` reaches through WASI is answered from the call alone, so a replayed call decides
//! the same: `println!` and `eprintln!` go to the policy's log (as [`log`] lines, capped),
//! `SystemTime::now()` is the call's timestamp, `Instant` stands still (a sleep returns at once),
//! `HashMap`'s random keys come from a stream seeded by the call, the environment is empty, no
//! file can be opened, and `std::process::exit` blocks the call. Prefer [`log`], which has
//! levels; a panic's message reaches the gateway's log on its own.
//!
//! # Sessions are the agent's word
//!
//! The session id, and the agent id unless the key is bound to one, are chosen by the agent: a
//! cap kept per session is dodged by starting a new session. Key per-caller limits on
//! [`ToolCall::key_id`] (the authenticated key) or on a bound agent id.
//!
//! # Lean policies
//!
//! Rust's standard library links about twenty WASI functions into every component (for
//! printing, the environment, exiting), which the gateway links at every call's fresh instance.
//! A policy that needs nothing of `std` beyond `alloc` can leave them out: turn this crate's
//! default `std` feature off and make the crate `no_std` on wasm32. The component then imports
//! only `writ:policy`, and each evaluation costs less (BENCHMARKS.md has the figures). The SDK gives such a policy what `std` would: a
//! heap (wasi-libc's `malloc`), a panic handler that logs the message and traps (the call is
//! blocked), and the canonical ABI's `cabi_realloc`. Natively, for unit tests, the crate is
//! ordinary `std` Rust either way.
//!
//! ```toml
//! [dependencies]
//! writ-policy = { version = "0.1", default-features = false }
//! ```
//!
//! ```ignore
//! #![cfg_attr(target_arch = "wasm32", no_std)]
//!
//! extern crate alloc;
//!
//! use alloc::format;
//! use writ_policy::{Decision, Policy, ToolCall};
//! ```
//!
//! `String`, `Vec`, `format!` and `BTreeMap` come from `alloc`; `HashMap`, `std::io` and the
//! like are not there. If any crate the policy links uses `std`, the build fails with a
//! duplicate `panic_impl`: keep the `std` feature for such a policy. The example policies are
//! all lean.

#![warn(missing_docs)]
#![no_std]

extern crate alloc;
// Natively (unit tests) and with the `std` feature, the standard library is there to use.
#[cfg(any(feature = "std", not(target_arch = "wasm32")))]
extern crate std;

// Lets the generated bindings name this crate by its public path from inside it too.
extern crate self as writ_policy;

mod call;
mod decision;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

pub use call::{ArgError, Target, ToolCall, ToolCallBuilder};
pub use decision::{Charge, Decision, Outcome};

/// How the SDK's panic handler starts the error line it logs through `host.log` before the
/// instance traps. The gateway recognises a panic by it and puts the message in the BLOCK's
/// reason; both sides use this one constant.
pub const PANIC_LOG_PREFIX: &str = "policy panicked: ";

/// A policy: a pure function from a tool call to a decision.
///
/// Implement it on a unit struct and export that struct with [`export_policy!`].
pub trait Policy {
    /// Decides one tool call.
    fn evaluate(call: &ToolCall) -> Decision;
}

/// A window over which [`ToolCall::usage`] sums a counter's charges.
///
/// The minute, hour and day are fixed UTC windows containing the call's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    /// The call's session.
    Session,
    /// The current UTC minute.
    Minute,
    /// The current UTC hour.
    Hour,
    /// The current UTC day.
    Day,
    /// Everything ever charged to the counter by this tenant.
    AllTime,
}

/// Severity of a [`log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail for policy authors.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the policy handled.
    Warn,
    /// Something the policy could not handle.
    Error,
}

/// Writes a line to the gateway's log, tagged with the tenant and policy.
///
/// The gateway keeps at most 64 lines per evaluation, each cut to 2048 bytes. Natively (in unit
/// tests) the line goes to standard error.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    __private::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    std::eprintln!("[{level:?}] {message}");
}

/// Exports a [`Policy`] implementation as the component's `evaluate` function.
///
/// Use it once per policy crate. Natively it only checks that the type implements [`Policy`].
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WritPolicyExport;

            impl $crate::__private::bindings::Guest for WritPolicyExport {
                fn evaluate(
                    call: $crate::__private::bindings::writ::policy::types::ToolCall,
                ) -> $crate::__private::bindings::writ::policy::types::Decision {
                    $crate::__private::run::<$policy>(call)
                }
            }

            $crate::__private::bindings::export_policy_world!(
                WritPolicyExport with_types_in $crate::__private::bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            const fn assert_policy<P: $crate::Policy>() {}
            assert_policy::<$policy>();
        };
    };
}
