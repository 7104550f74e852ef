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
//! `call` also takes `context`, `agent_id`, `key_id`, `session_id`, `tenant_id`,
//! `timestamp_ms` and `target` (`{service, method, url, destructive}`). `usage` sets counters
//! before the case (windows: `session`, `minute`, `hour`, `day`, `all-time`). `expect` takes
//! `outcome` (required), `codes` (exact, in order), `reason_contains` and `charges`
//! (`[{counter, amount}]`, exact).
//!
//! A case may instead be a sequence, `steps` (each a `call` and an `expect`, and `repeat` to
//! make the same call several times): each allowed call's charges add to the usage the next
//! calls read, as the gateway records them (a `session` read counts the charges of the same
//! session, `minute`/`hour`/`day` those in the same UTC window of `timestamp_ms`), so a rate
//! limit or a spend cap is tested as it behaves:
//!
//! ```json
//! {"name": "the fourth payment in a minute is blocked",
//!  "steps": [
//!    {"call": {"action": "payments.initiate", "arguments": {"amount": 10}}, "repeat": 3,
//!     "expect": {"outcome": "allow"}},
//!    {"call": {"action": "payments.initiate", "arguments": {"amount": 10}},
//!     "expect": {"outcome": "block", "codes": ["rate_limited"]}}]}
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value;

use crate::decision::{Charge, Outcome, Target, ToolCall, Window};
use crate::engine::{CompiledPolicy, Engine};
use crate::evaluation::{Evaluation, Limits, UsageSource, UsageUnavailable};

/// Longest run of one step ([`Step::repeat`]).
const MAX_REPEAT: u32 = 10_000;

/// Why a cases file could not be read: where, and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// Not JSON, or not an array.
    #[error("cases file, line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// A case does not follow the schema.
    #[error("case {index} ({name}), at `{field}`: {message}")]
    Case {
        /// 1-based position in the file.
        index: usize,
        /// Its `name`, or `unnamed`.
        name: String,
        /// The field, as a path (`expect.charges[0].amount`), or `.` for the case itself.
        field: String,
        /// What was wrong.
        message: String,
    },
}

/// A call to evaluate, as a case writes it.
pub fn parse_call(text: &str) -> Result<ToolCall, CasesError> {
    let value: Value = serde_json::from_str(text).map_err(syntax)?;
    let call: CaseCall = serde_path_to_error::deserialize(value).map_err(|e| CasesError::Case {
        index: 1,
        name: "call".into(),
        field: e.path().to_string(),
        message: e.into_inner().to_string(),
    })?;
    Ok(to_call(&call))
}

fn syntax(e: serde_json::Error) -> CasesError {
    CasesError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

/// One test case: a call and what to expect, or a sequence of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case checks, shown in the table.
    pub name: String,
    #[serde(default)]
    call: Option<CaseCall>,
    #[serde(default)]
    usage: Vec<CaseUsage>,
    #[serde(default)]
    expect: Option<Expect>,
    #[serde(default)]
    steps: Option<Vec<Step>>,
}

/// One call of a sequence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    call: CaseCall,
    expect: Expect,
    /// How many times the call is made (each must meet `expect`).
    #[serde(default = "one")]
    repeat: u32,
}

fn one() -> u32 {
    1
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
    window: CaseWindow,
    value: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum CaseWindow {
    Session,
    Minute,
    Hour,
    Day,
    #[serde(alias = "all_time")]
    AllTime,
}

impl From<CaseWindow> for Window {
    fn from(w: CaseWindow) -> Self {
        match w {
            CaseWindow::Session => Window::Session,
            CaseWindow::Minute => Window::Minute,
            CaseWindow::Hour => Window::Hour,
            CaseWindow::Day => Window::Day,
            CaseWindow::AllTime => Window::AllTime,
        }
    }
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

/// Parses a cases file. An error names the case and the field.
pub fn parse(text: &str) -> Result<Vec<Case>, CasesError> {
    let values: Vec<Value> = serde_json::from_str(text).map_err(syntax)?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let name = value
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("unnamed")
                .to_owned();
            let wrong = |field: String, message: String| CasesError::Case {
                index: i + 1,
                name: name.clone(),
                field,
                message,
            };
            let case: Case = serde_path_to_error::deserialize(value)
                .map_err(|e| wrong(e.path().to_string(), e.into_inner().to_string()))?;
            match (&case.call, &case.expect, &case.steps) {
                (Some(_), Some(_), None) => {}
                (None, None, Some(steps)) if !steps.is_empty() => {
                    if let Some(k) = steps
                        .iter()
                        .position(|s| !(1..=MAX_REPEAT).contains(&s.repeat))
                    {
                        return Err(wrong(
                            format!("steps[{k}].repeat"),
                            format!("must be 1 to {MAX_REPEAT}"),
                        ));
                    }
                }
                _ => {
                    return Err(wrong(
                        ".".into(),
                        "a case has `call` and `expect`, or a non-empty `steps`".into(),
                    ));
                }
            }
            Ok(case)
        })
        .collect()
}

/// Runs every case against `policy`: a row per case, or per step of a sequence.
pub fn run(
    engine: &Engine,
    policy: &CompiledPolicy,
    cases: &[Case],
    limits: &Limits,
) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for case in cases {
        let ledger = Ledger::new(&case.usage);
        if let (Some(call), Some(expect)) = (&case.call, &case.expect) {
            let evaluation = ledger.evaluate(engine, policy, &to_call(call), limits);
            results.push(CaseResult {
                name: case.name.clone(),
                mismatches: mismatches(expect, &evaluation),
                evaluation,
            });
            continue;
        }
        for (k, step) in case.steps.iter().flatten().enumerate() {
            let call = to_call(&step.call);
            let name = match step.repeat {
                1 => format!("{} › {}", case.name, k + 1),
                n => format!("{} › {} (×{n})", case.name, k + 1),
            };
            let mut last = None;
            for i in 0..step.repeat {
                let evaluation = ledger.evaluate(engine, policy, &call, limits);
                let mut wrong = mismatches(&step.expect, &evaluation);
                if !wrong.is_empty() && step.repeat > 1 {
                    wrong.insert(0, format!("call {} of {}", i + 1, step.repeat));
                }
                let failed = !wrong.is_empty();
                last = Some(CaseResult {
                    name: name.clone(),
                    mismatches: wrong,
                    evaluation,
                });
                if failed {
                    break;
                }
            }
            results.extend(last);
        }
    }
    results
}

/// The usage a case's calls read: the counters it sets, and the charges of the calls allowed
/// so far (a sequence's), summed over the window each read asks for.
#[derive(Clone)]
struct Ledger {
    set: Arc<HashMap<(String, Window), f64>>,
    charged: Arc<Mutex<Vec<Charged>>>,
}

#[derive(Clone)]
struct Charged {
    counter: String,
    amount: f64,
    session_id: String,
    timestamp_ms: u64,
}

impl Ledger {
    fn new(usage: &[CaseUsage]) -> Self {
        Self {
            set: Arc::new(
                usage
                    .iter()
                    .map(|u| ((u.counter.clone(), u.window.into()), u.value))
                    .collect(),
            ),
            charged: Arc::default(),
        }
    }

    /// Evaluates `call`; an ALLOW's charges are recorded for the calls after it.
    fn evaluate(
        &self,
        engine: &Engine,
        policy: &CompiledPolicy,
        call: &ToolCall,
        limits: &Limits,
    ) -> Evaluation {
        let reader = LedgerRead {
            ledger: self.clone(),
            session_id: call.session_id.clone(),
            timestamp_ms: call.timestamp_ms,
        };
        let evaluation = engine.evaluate_blocking(policy, call, limits, Box::new(reader));
        if evaluation.decision.outcome == Outcome::Allow {
            let mut charged = self.charged.lock().unwrap_or_else(|e| e.into_inner());
            charged.extend(evaluation.decision.charges.iter().map(|c| Charged {
                counter: c.counter.clone(),
                amount: c.amount,
                session_id: call.session_id.clone(),
                timestamp_ms: call.timestamp_ms,
            }));
        }
        evaluation
    }
}

struct LedgerRead {
    ledger: Ledger,
    session_id: String,
    timestamp_ms: u64,
}

impl UsageSource for LedgerRead {
    fn usage(&mut self, counter: &str, window: Window) -> Result<f64, UsageUnavailable> {
        let set = self
            .ledger
            .set
            .get(&(counter.to_owned(), window))
            .copied()
            .unwrap_or(0.0);
        let same_window = |at: u64| match window {
            Window::Session | Window::AllTime => true,
            Window::Minute => at / 60_000 == self.timestamp_ms / 60_000,
            Window::Hour => at / 3_600_000 == self.timestamp_ms / 3_600_000,
            Window::Day => at / 86_400_000 == self.timestamp_ms / 86_400_000,
        };
        let charged = self
            .ledger
            .charged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let added: f64 = charged
            .iter()
            .filter(|c| c.counter == counter && same_window(c.timestamp_ms))
            .filter(|c| window != Window::Session || c.session_id == self.session_id)
            .map(|c| c.amount)
            .sum();
        Ok(set + added)
    }
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
            let show = |charges: &[Charge]| {
                let shown: Vec<_> = charges
                    .iter()
                    .map(|c| format!("{}={}", c.counter, c.amount))
                    .collect();
                format!("[{}]", shown.join(", "))
            };
            out.push(format!(
                "charges {} (expected {})",
                show(&d.charges),
                show(&expected)
            ));
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
