//! The decision a policy returns, and its builders.

use alloc::string::String;
use alloc::vec::Vec;

/// What the gateway should do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let the call go ahead.
    Allow,
    /// Refuse the call.
    Block,
    /// Hold the call until a human reviewer approves or rejects it.
    Escalate,
}

/// An amount added to a named usage counter if, and only if, the call goes ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The counter's name, e.g. `spend:GBP`.
    pub counter: String,
    /// The amount: finite and not negative, or the gateway blocks the call as invalid.
    pub amount: f64,
}

/// A policy's answer for one call.
///
/// Build one with [`Decision::allow`], [`Decision::block`] or [`Decision::escalate`], then add
/// codes and charges:
///
/// ```
/// use writ_policy::{Decision, Outcome};
///
/// let d = Decision::escalate("amount over 500").code("amount_over_limit").charge("spend:GBP", 800.0);
/// assert_eq!(d.outcome, Outcome::Escalate);
/// assert!(d.has_code("amount_over_limit"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Allow, block or escalate.
    pub outcome: Outcome,
    /// Human-readable explanation, shown to agents and reviewers (at most 4096 bytes).
    pub reason: String,
    /// Machine-readable codes, e.g. `amount_over_limit` (at most 32, each 1 to 64 bytes of
    /// `a-z`, `0-9`, `_`, `.` or `-`).
    pub codes: Vec<String>,
    /// Charges recorded when the call is allowed, or when a human later approves it.
    pub charges: Vec<Charge>,
}

impl Decision {
    fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.into(),
            codes: Vec::new(),
            charges: Vec::new(),
        }
    }

    /// Lets the call go ahead.
    pub fn allow(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Allow, reason)
    }

    /// Refuses the call.
    pub fn block(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Block, reason)
    }

    /// Holds the call for a human reviewer.
    pub fn escalate(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Escalate, reason)
    }

    /// Adds a machine-readable code.
    #[must_use]
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.codes.push(code.into());
        self
    }

    /// Adds a charge to `counter`, recorded only if the call goes ahead.
    #[must_use]
    pub fn charge(mut self, counter: impl Into<String>, amount: f64) -> Self {
        self.charges.push(Charge {
            counter: counter.into(),
            amount,
        });
        self
    }

    /// Whether the outcome is [`Outcome::Allow`].
    pub fn is_allow(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// Whether the outcome is [`Outcome::Block`].
    pub fn is_block(&self) -> bool {
        self.outcome == Outcome::Block
    }

    /// Whether the outcome is [`Outcome::Escalate`].
    pub fn is_escalate(&self) -> bool {
        self.outcome == Outcome::Escalate
    }

    /// Whether the decision carries `code`.
    pub fn has_code(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c == code)
    }
}
