//! `writ policy test`: run a file of cases (a call in, the expected outcome and codes out)
//! against a compiled policy, the way `opa test` serves Rego authors.
//!
//! The file is a JSON array of cases:
//!
//! ```json
//! [
//!   {
//!     "name": "small GBP payment is allowed",
//!     "call": {"action": "payments.initiate", "arguments": {"amount": 50, "currency": "GBP"}},
//!     "usage": [{"counter": "spend:GBP", "window": "session", "value": 900}],
//!     "expect": {"outcome": "allow", "codes": []}
//!   }
//! ]
//! ```
//!
//! `call` also takes `context`, `agent_id`, `session_id`, `tenant_id`, `timestamp_ms` and
//! `target` (`{service, method, url, destructive}`). `expect` takes `outcome` (required),
//! `codes` (exact, in order), `reason_contains` and `charges` (`[{counter, amount}]`, exact).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use crate::decision::{Charge, Outcome, Target, ToolCall, Window};
use crate::engine::{CompiledPolicy, Engine};
use crate::evaluation::{Evaluation, FixedUsage, Limits};

/// Why a cases file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// Not valid JSON, or not the cases schema.
    #[error("cases file: {0}")]
    Parse(#[from] serde_json::Error),
    /// A case names an unknown usage window.
    #[error("case `{case}`: unknown window `{window}` (session, minute, hour, day, all-time)")]
    Window {
        /// The case's name.
        case: String,
        /// The window as written.
        window: String,
    },
}

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case checks, shown in the table.
    pub name: String,
    call: CaseCall,
    #[serde(default)]
    usage: Vec<CaseUsage>,
    expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseCall {
    action: String,
    #[serde(default = "empty_object")]
    arguments: Value,
    #[serde(default = "empty_object")]
    context: Value,
    #[serde(default = "default_agent")]
    agent_id: String,
    #[serde(default = "default_key")]
    key_id: String,
    #[serde(default = "default_session")]
    session_id: String,
    #[serde(default = "default_tenant")]
    tenant_id: String,
    #[serde(default)]
    target: Option<CaseTarget>,
    #[serde(default)]
    timestamp_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseTarget {
    service: String,
    method: String,
    url: String,
    #[serde(default)]
    destructive: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseUsage {
    counter: String,
    window: String,
    value: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    outcome: ExpectedOutcome,
    #[serde(default)]
    codes: Option<Vec<String>>,
    #[serde(default)]
    reason_contains: Option<String>,
    #[serde(default)]
    charges: Option<Vec<ExpectedCharge>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ExpectedOutcome {
    #[serde(alias = "ALLOW")]
    Allow,
    #[serde(alias = "BLOCK")]
    Block,
    #[serde(alias = "ESCALATE")]
    Escalate,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedCharge {
    counter: String,
    amount: f64,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}
fn default_agent() -> String {
    "test-agent".into()
}

fn default_key() -> String {
    "key_test".into()
}

fn default_session() -> String {
    "test-session".into()
}
fn default_tenant() -> String {
    "test-tenant".into()
}

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// What did not match; empty when the case passed.
    pub mismatches: Vec<String>,
    /// The evaluation.
    pub evaluation: Evaluation,
}

impl CaseResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Parses a cases file, checking every window name.
pub fn parse(text: &str) -> Result<Vec<Case>, CasesError> {
    let cases: Vec<Case> = serde_json::from_str(text)?;
    for case in &cases {
        if let Some(u) = case
            .usage
            .iter()
            .find(|u| Window::parse(&u.window).is_none())
        {
            return Err(CasesError::Window {
                case: case.name.clone(),
                window: u.window.clone(),
            });
        }
    }
    Ok(cases)
}

/// Runs every case against `policy`.
pub fn run(
    engine: &Engine,
    policy: &CompiledPolicy,
    cases: &[Case],
    limits: &Limits,
) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|case| {
            let usage: HashMap<_, _> = case
                .usage
                .iter()
                .filter_map(|u| Some(((u.counter.clone(), Window::parse(&u.window)?), u.value)))
                .collect();
            let evaluation = engine.evaluate_blocking(
                policy,
                &to_call(&case.call),
                limits,
                Box::new(FixedUsage(usage)),
            );
            CaseResult {
                name: case.name.clone(),
                mismatches: mismatches(&case.expect, &evaluation),
                evaluation,
            }
        })
        .collect()
}

fn to_call(call: &CaseCall) -> ToolCall {
    ToolCall {
        action: call.action.clone(),
        arguments: call.arguments.to_string(),
        context: call.context.to_string(),
        agent_id: call.agent_id.clone(),
        key_id: call.key_id.clone(),
        session_id: call.session_id.clone(),
        tenant_id: call.tenant_id.clone(),
        target: call.target.as_ref().map(|t| Target {
            service: t.service.clone(),
            method: t.method.to_ascii_uppercase(),
            url: t.url.clone(),
            destructive: t.destructive,
        }),
        timestamp_ms: call.timestamp_ms,
    }
}

fn mismatches(expect: &Expect, evaluation: &Evaluation) -> Vec<String> {
    let d = &evaluation.decision;
    let mut out = Vec::new();
    let outcome = match expect.outcome {
        ExpectedOutcome::Allow => Outcome::Allow,
        ExpectedOutcome::Block => Outcome::Block,
        ExpectedOutcome::Escalate => Outcome::Escalate,
    };
    if d.outcome != outcome {
        out.push(format!("outcome {} (expected {outcome})", d.outcome));
    }
    if let Some(codes) = &expect.codes
        && &d.codes != codes
    {
        out.push(format!("codes {:?} (expected {codes:?})", d.codes));
    }
    if let Some(needle) = &expect.reason_contains
        && !d.reason.contains(needle.as_str())
    {
        out.push(format!("reason {:?} lacks {needle:?}", d.reason));
    }
    if let Some(charges) = &expect.charges {
        let expected: Vec<Charge> = charges
            .iter()
            .map(|c| Charge {
                counter: c.counter.clone(),
                amount: c.amount,
            })
            .collect();
        if d.charges != expected {
            let got: Vec<_> = d
                .charges
                .iter()
                .map(|c| format!("{}={}", c.counter, c.amount))
                .collect();
            out.push(format!("charges {got:?} differ"));
        }
    }
    out
}

/// Renders results as a pass/fail table with a closing `N passed, M failed` line.
pub fn table(results: &[CaseResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<width$} {:<9} {:>10} {:>9}  CODES / MISMATCH",
        "RESULT", "CASE", "OUTCOME", "FUEL", "TIME"
    );
    for r in results {
        let e = &r.evaluation;
        let detail = if r.passed() {
            e.decision.codes.join(",")
        } else {
            r.mismatches.join("; ")
        };
        let _ = writeln!(
            out,
            "{:<6} {:<width$} {:<9} {:>10} {:>7}µs  {detail}",
            if r.passed() { "PASS" } else { "FAIL" },
            r.name,
            e.decision.outcome.as_str(),
            e.fuel_consumed,
            e.elapsed.as_micros(),
        );
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    let _ = writeln!(out, "{} passed, {failed} failed", results.len() - failed);
    out
}
