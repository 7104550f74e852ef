//! The values that cross the policy boundary, as the host sees them: the tool call a policy is
//! asked about, the decision it returns, and the failure codes the host substitutes when a
//! policy misbehaves.
//!
//! These are the host's own types; the generated WIT bindings are converted to and from them in
//! [`crate::evaluation`] only.

use std::fmt;

/// Codes the host puts on a BLOCK when it cannot let a policy's answer stand.
pub mod codes {
    /// The policy ran out of fuel (instructions).
    pub const FUEL_EXHAUSTED: &str = "policy_fuel_exhausted";
    /// The policy ran past its wall-clock deadline.
    pub const TIMEOUT: &str = "policy_timeout";
    /// The policy trapped, panicked or exited, or called a socket function.
    pub const TRAP: &str = "policy_trap";
    /// The policy asked for more memory than its limit.
    pub const MEMORY_LIMIT: &str = "policy_memory_limit";
    /// The policy returned a decision that breaks the contract's limits.
    pub const INVALID_RESULT: &str = "policy_invalid_result";
    /// The host could not read usage counters for the policy.
    pub const USAGE_UNAVAILABLE: &str = "usage_unavailable";
    /// The tenant has no active policy.
    pub const NO_ACTIVE_POLICY: &str = "no_active_policy";
    /// Concurrent calls kept changing the usage counters this call's policy read.
    pub const USAGE_CONFLICT: &str = "usage_conflict";
    /// The tenant has as many pending escalations as it may.
    pub const TOO_MANY_PENDING: &str = "too_many_pending_escalations";
    /// No human decided an escalated call before its deadline.
    pub const ESCALATION_EXPIRED: &str = "escalation_expired";
    /// A reviewer rejected an escalated call.
    pub const ESCALATION_REJECTED: &str = "escalation_rejected";
    /// The caller withdrew an escalated call before anyone decided it.
    pub const ESCALATION_WITHDRAWN: &str = "escalation_withdrawn";
    /// The host escalated an allowed irreversible call (DELETE, or destructive in the catalog).
    pub const IRREVERSIBLE_ACTION: &str = "irreversible_action";
    /// The tenant could not be loaded when the gateway started (see `/readyz`).
    pub const TENANT_UNAVAILABLE: &str = "tenant_unavailable";
}

/// The downstream HTTP request a tool call resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The downstream service, e.g. `github`.
    pub service: String,
    /// HTTP method, upper case.
    pub method: String,
    /// The resolved URL.
    pub url: String,
    /// Marked destructive in the tenant's tool catalog.
    pub destructive: bool,
}

/// A tool call to be evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// Logical action, e.g. `payments.initiate`.
    pub action: String,
    /// The arguments: a JSON object, as text.
    pub arguments: String,
    /// Caller-supplied context: a JSON object, as text (`{}` when none).
    pub context: String,
    /// The agent, as the request names it (checked when the key is bound to one).
    pub agent_id: String,
    /// The id of the key that made the call (`host.key-id`).
    pub key_id: String,
    /// The agent's session.
    pub session_id: String,
    /// The tenant whose policy evaluates the call.
    pub tenant_id: String,
    /// The downstream request, when the tenant's catalog knows it.
    pub target: Option<Target>,
    /// Milliseconds since the Unix epoch, stamped by the host.
    pub timestamp_ms: u64,
}

/// What the gateway does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "UPPERCASE")]
pub enum Outcome {
    /// The call goes ahead.
    Allow,
    /// The call is refused.
    Block,
    /// The call waits for a human.
    Escalate,
}

impl Outcome {
    /// The wire name: `ALLOW`, `BLOCK` or `ESCALATE`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount to add to a usage counter if the call goes ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The counter's name.
    pub counter: String,
    /// The amount: finite and not negative (checked before a decision leaves the evaluator).
    pub amount: f64,
}

/// A decision about one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Allow, block or escalate.
    pub outcome: Outcome,
    /// Human-readable explanation.
    pub reason: String,
    /// Machine-readable codes.
    pub codes: Vec<String>,
    /// Charges recorded if the call goes ahead.
    pub charges: Vec<Charge>,
}

impl Decision {
    /// A BLOCK with one code and no charges: what the host answers when it cannot let the
    /// policy's answer stand.
    pub fn block(code: &str, reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Block,
            reason: reason.into(),
            codes: vec![code.to_owned()],
            charges: Vec::new(),
        }
    }
}

/// A window over which usage counters are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "kebab-case")]
pub enum Window {
    /// The call's session.
    Session,
    /// The current UTC minute.
    Minute,
    /// The current UTC hour.
    Hour,
    /// The current UTC day.
    Day,
    /// All time.
    AllTime,
}

impl Window {
    /// Every window, in a fixed order.
    pub const ALL: [Window; 5] = [
        Self::Session,
        Self::Minute,
        Self::Hour,
        Self::Day,
        Self::AllTime,
    ];

    /// The lower-case name used in files and on the wire: `session`, `minute`, `hour`, `day`,
    /// `all-time`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses [`Window::as_str`]'s names.
    pub fn parse(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}
