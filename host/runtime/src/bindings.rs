//! The one place the WIT world in `wit/` is turned into Rust (`bindgen!`), and the typed errors
//! host functions trap with. Everything else uses the host's own types in [`crate::decision`].

#![allow(missing_docs)]

use wasmtime::component::{HasSelf, Linker};

use crate::evaluation::CallState;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "policy",
    imports: { default: trappable },
    // `evaluate` is called with `call_async`: a policy runs on a fiber that yields to the
    // runtime at every epoch tick (see `Engine::evaluate`).
    exports: { default: async },
    // The call is lowered into the guest straight from the host's strings, not from copies.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub use self::writ::policy::host::{Host, Level};
pub use self::writ::policy::types::{
    Charge as WitCharge, Decision as WitDecision, HttpTarget as WitTarget, Outcome as WitOutcome,
    ToolCall as WitToolCall, Window as WitWindow,
};

/// A policy called a WASI function the sandbox does not answer (a socket's): it traps.
#[derive(Debug, thiserror::Error)]
#[error("called `{function}`, but policies have no network")]
pub struct WasiDenied {
    /// `interface#function`.
    pub function: String,
}

/// A policy broke a rule of a host function, e.g. read too many usage counters.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostRuleBroken(pub String);

/// Adds `writ:policy/host` to a linker.
pub(crate) fn add_host_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    self::writ::policy::host::add_to_linker::<CallState, HasSelf<CallState>>(linker, |state| {
        state
    })?;
    self::writ::policy::types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |state| state)
}
