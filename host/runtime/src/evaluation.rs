//! Evaluating one tool call: a fresh store and instance per call, fuel, deadline and memory
//! limits, the host functions a policy may call, and turning every failure into a BLOCK.
//!
//! **Fail closed:** [`Engine::evaluate`] returns a [`Decision`] in every case. Nothing a policy
//! does — trap, loop, exhaust memory, return nonsense — can produce an ALLOW it did not cleanly
//! return.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use crate::bindings::{
    self, HostRuleBroken, WasiDenied, WitCharge, WitDecision, WitOutcome, WitTarget, WitToolCall,
    WitWindow,
};
use crate::decision::{Charge, Decision, Outcome, ToolCall, Window, codes};
use crate::engine::{CompiledPolicy, Engine};
use crate::wasi::CallWasi;

/// Lines of a policy's log kept per evaluation.
pub const MAX_LOG_LINES: usize = 64;
/// Bytes of one log line kept.
pub const MAX_LOG_LINE: usize = 2048;
/// Distinct usage counters one evaluation may read before it is stopped.
pub const MAX_USAGE_READS: usize = 256;
/// Longest counter name a policy may read or charge.
pub const MAX_COUNTER_NAME: usize = 128;
/// Longest reason a decision may carry.
pub const MAX_REASON: usize = 4096;
/// Most codes a decision may carry.
pub const MAX_CODES: usize = 32;
/// Longest code.
pub const MAX_CODE: usize = 64;
/// Most charges a decision may carry.
pub const MAX_CHARGES: usize = 32;

/// Per-call sandbox limits (a tenant setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, Wasm instructions) one evaluation may burn.
    pub fuel: u64,
    /// Wall-clock time one evaluation may run, instantiation included (time it spends yielded
    /// to other tasks, waiting for a worker, does not count).
    pub deadline: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 50_000_000,
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
        }
    }
}

/// Answers a policy's `usage(counter, window)` calls for one evaluation.
///
/// The implementation is bound to the call's tenant, session and timestamp.
pub trait UsageSource: Send {
    /// The sum of charges against `counter` in `window`.
    fn usage(&mut self, counter: &str, window: Window) -> Result<f64, UsageUnavailable>;
}

/// Usage counters could not be read: the evaluation stops and the call is blocked with
/// [`codes::USAGE_UNAVAILABLE`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("usage counters are unavailable")]
pub struct UsageUnavailable;

/// Usage values fixed in advance; unset counters read 0. For tests and `writ policy test`.
#[derive(Debug, Clone, Default)]
pub struct FixedUsage(pub HashMap<(String, Window), f64>);

impl UsageSource for FixedUsage {
    fn usage(&mut self, counter: &str, window: Window) -> Result<f64, UsageUnavailable> {
        Ok(self
            .0
            .get(&(counter.to_owned(), window))
            .copied()
            .unwrap_or(0.0))
    }
}

/// A usage value a policy read: the gateway checks it is unchanged before committing charges.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRead {
    /// The counter.
    pub counter: String,
    /// The window.
    pub window: Window,
    /// What the policy was told.
    pub value: f64,
}

/// A line a policy logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Severity.
    pub level: LogLevel,
    /// The message, cut to [`MAX_LOG_LINE`] bytes.
    pub message: String,
}

/// Severity of a policy's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// The result of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The decision: the policy's, or a BLOCK the host substituted.
    pub decision: Decision,
    /// Fuel burned.
    pub fuel_consumed: u64,
    /// Wall time, instantiation included.
    pub elapsed: Duration,
    /// Usage values the policy read, each (counter, window) once.
    pub usage_reads: Vec<UsageRead>,
    /// What the policy logged (at most [`MAX_LOG_LINES`]).
    pub logs: Vec<LogLine>,
    /// Log lines dropped past [`MAX_LOG_LINES`].
    pub logs_dropped: usize,
}

/// Per-call host state: the `T` in `Store<T>`. Created for one evaluation and dropped with it.
pub struct CallState {
    memory_limit: usize,
    memory_limit_hit: bool,
    usage: Box<dyn UsageSource>,
    usage_reads: Vec<UsageRead>,
    logs: Vec<LogLine>,
    logs_dropped: usize,
    key_id: String,
    /// The call's WASI, for a component that imports any.
    pub(crate) wasi: Option<CallWasi>,
}

impl CallState {
    /// Adds what the policy wrote to stdout and stderr to its log, within the same bounds.
    fn take_output(&mut self) {
        let Some(wasi) = &self.wasi else { return };
        let (lines, dropped) = wasi.take_output();
        for line in lines {
            if self.logs.len() >= MAX_LOG_LINES {
                self.logs_dropped += 1;
            } else {
                self.logs.push(line);
            }
        }
        self.logs_dropped += dropped;
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_limit_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::writ::policy::types::Host for CallState {}

impl bindings::Host for CallState {
    fn log(&mut self, level: bindings::Level, mut message: String) -> wasmtime::Result<()> {
        if self.logs.len() >= MAX_LOG_LINES {
            self.logs_dropped += 1;
            return Ok(());
        }
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let level = match level {
            bindings::Level::Debug => LogLevel::Debug,
            bindings::Level::Info => LogLevel::Info,
            bindings::Level::Warn => LogLevel::Warn,
            bindings::Level::Error => LogLevel::Error,
        };
        // Only kept: the caller decides where the lines go (the gateway's `PolicyLog` emits
        // them escaped and rate-limited per tenant; `writ policy test -v` prints them).
        self.logs.push(LogLine { level, message });
        Ok(())
    }

    fn key_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.key_id.clone())
    }

    fn usage(&mut self, counter: String, window: WitWindow) -> wasmtime::Result<f64> {
        if counter.len() > MAX_COUNTER_NAME {
            return Err(HostRuleBroken(format!(
                "usage counter name is {} bytes, over the limit of {MAX_COUNTER_NAME}",
                counter.len()
            ))
            .into());
        }
        let window = match window {
            WitWindow::Session => Window::Session,
            WitWindow::Minute => Window::Minute,
            WitWindow::Hour => Window::Hour,
            WitWindow::Day => Window::Day,
            WitWindow::AllTime => Window::AllTime,
        };
        if let Some(read) = self
            .usage_reads
            .iter()
            .find(|r| r.window == window && r.counter == counter)
        {
            return Ok(read.value);
        }
        if self.usage_reads.len() >= MAX_USAGE_READS {
            return Err(HostRuleBroken(format!(
                "read more than {MAX_USAGE_READS} distinct usage counters"
            ))
            .into());
        }
        let value = self.usage.usage(&counter, window)?;
        self.usage_reads.push(UsageRead {
            counter,
            window,
            value,
        });
        Ok(value)
    }
}

impl Engine {
    /// Evaluates `call` with `policy` in a fresh instance under `limits`.
    ///
    /// Always returns a decision: any failure of the policy is a BLOCK with one of the
    /// `policy_*` codes in [`codes`]. The policy runs on a fiber on the polling thread, and
    /// yields at every epoch tick ([`crate::engine::EngineConfig::epoch_tick`]) until its own
    /// running time reaches `limits.deadline`, so an async worker running a policy that loops
    /// is shared with other tasks, never held for more than a tick at a time.
    pub async fn evaluate(
        &self,
        policy: &CompiledPolicy,
        call: &ToolCall,
        limits: &Limits,
        usage: Box<dyn UsageSource>,
    ) -> Evaluation {
        let started = Instant::now();
        let mut store = Store::new(
            self.wasmtime(),
            CallState {
                memory_limit: limits.memory_bytes,
                memory_limit_hit: false,
                usage,
                usage_reads: Vec::new(),
                logs: Vec::new(),
                logs_dropped: 0,
                key_id: call.key_id.clone(),
                // A lean component imports no WASI: nothing to prepare for it.
                wasi: policy.imports_wasi().then(|| CallWasi::new(call)),
            },
        );
        store.limiter(|state| state);
        // At every epoch tick while the policy runs: stop it once its own running time has
        // reached the deadline, or else yield to the runtime and run on at the next tick. Time
        // spent yielded, waiting for a worker, is not the policy's: under load it would
        // otherwise run a good policy out of time.
        let resumed = Arc::new(AtomicU64::new(0)); // when it last resumed: ns after `started`
        let mut ran = Duration::ZERO;
        let budget = limits.deadline;
        let since = |started: Instant| started.elapsed().as_nanos() as u64;
        store.epoch_deadline_callback(move |_| {
            ran += Duration::from_nanos(since(started).saturating_sub(resumed.load(Relaxed)));
            if ran >= budget {
                return Ok(UpdateDeadline::Interrupt);
            }
            let resumed = resumed.clone();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    yield_once().await;
                    resumed.store(since(started), Relaxed);
                }),
            ))
        });
        store.set_epoch_deadline(1);
        let result = async {
            store.set_fuel(limits.fuel)?;
            let instance = policy.pre().instantiate_async(&mut store).await?;
            instance.call_evaluate(&mut store, to_wit(call)).await
        }
        .await;
        let fuel_consumed = limits.fuel - store.get_fuel().unwrap_or(0);
        let elapsed = started.elapsed();
        let mut state = store.into_data();
        state.take_output();
        let decision = match result {
            Ok(decision) => {
                from_wit(decision).unwrap_or_else(|why| Decision::block(codes::INVALID_RESULT, why))
            }
            Err(error) => failure(&error, &state, limits),
        };
        Evaluation {
            decision,
            fuel_consumed,
            elapsed,
            usage_reads: state.usage_reads,
            logs: state.logs,
            logs_dropped: state.logs_dropped,
        }
    }

    /// [`Engine::evaluate`], blocking the calling thread until the decision: for tools, tests
    /// and benchmarks. It works on any thread, but on an async worker it holds the worker.
    pub fn evaluate_blocking(
        &self,
        policy: &CompiledPolicy,
        call: &ToolCall,
        limits: &Limits,
        usage: Box<dyn UsageSource>,
    ) -> Evaluation {
        futures_executor::block_on(self.evaluate(policy, call, limits, usage))
    }
}

/// Gives the executor back its thread once: wakes its own task and returns `Pending` the first
/// time it is polled. Tokio queues a task that woke itself while running behind the others;
/// unlike `tokio::task::yield_now`, this also works on an executor that is not Tokio's, or
/// inside `block_on` on a Tokio worker (`Engine::evaluate_blocking`).
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

fn to_wit(call: &ToolCall) -> WitToolCall<'_> {
    WitToolCall {
        action: &call.action,
        arguments: &call.arguments,
        context: &call.context,
        agent_id: &call.agent_id,
        session_id: &call.session_id,
        tenant_id: &call.tenant_id,
        target: call.target.as_ref().map(|t| WitTarget {
            service: &t.service,
            method: &t.method,
            url: &t.url,
            destructive: t.destructive,
        }),
        timestamp_ms: call.timestamp_ms,
    }
}

/// Checks a policy's answer against the contract's limits and converts it.
fn from_wit(d: WitDecision) -> Result<Decision, String> {
    if d.reason.len() > MAX_REASON {
        return Err(format!(
            "policy returned a reason of {} bytes, over the limit of {MAX_REASON}",
            d.reason.len()
        ));
    }
    if d.codes.len() > MAX_CODES {
        return Err(format!(
            "policy returned {} codes, over the limit of {MAX_CODES}",
            d.codes.len()
        ));
    }
    if let Some(code) = d.codes.iter().find(|c| !valid_code(c)) {
        return Err(format!(
            "policy returned the code {:?}: codes are 1 to {MAX_CODE} bytes of a-z, 0-9, _, . or -",
            truncated(code, MAX_CODE + 8)
        ));
    }
    if d.charges.len() > MAX_CHARGES {
        return Err(format!(
            "policy returned {} charges, over the limit of {MAX_CHARGES}",
            d.charges.len()
        ));
    }
    for WitCharge { counter, amount } in &d.charges {
        if counter.is_empty() || counter.len() > MAX_COUNTER_NAME {
            return Err(format!(
                "policy charged a counter named with {} bytes: names are 1 to {MAX_COUNTER_NAME}",
                counter.len()
            ));
        }
        if !amount.is_finite() || *amount < 0.0 {
            return Err(format!(
                "policy charged {amount} to `{}`: charges must be finite and not negative",
                truncated(counter, MAX_COUNTER_NAME)
            ));
        }
    }
    Ok(Decision {
        outcome: match d.outcome {
            WitOutcome::Allow => Outcome::Allow,
            WitOutcome::Block => Outcome::Block,
            WitOutcome::Escalate => Outcome::Escalate,
        },
        reason: d.reason,
        codes: d.codes,
        charges: d
            .charges
            .into_iter()
            .map(|c| Charge {
                counter: c.counter,
                amount: c.amount,
            })
            .collect(),
    })
}

fn valid_code(code: &str) -> bool {
    (1..=MAX_CODE).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The BLOCK for an evaluation that did not return a decision.
fn failure(error: &wasmtime::Error, state: &CallState, limits: &Limits) -> Decision {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => {
                return Decision::block(
                    codes::FUEL_EXHAUSTED,
                    format!("policy used all of its {} fuel", limits.fuel),
                );
            }
            Trap::Interrupt => {
                return Decision::block(
                    codes::TIMEOUT,
                    format!("policy ran past its {:?} deadline", limits.deadline),
                );
            }
            _ => {}
        }
    }
    if state.memory_limit_hit {
        return Decision::block(
            codes::MEMORY_LIMIT,
            format!(
                "policy tried to grow its memory past the {} MiB limit",
                limits.memory_bytes >> 20
            ),
        );
    }
    if error.downcast_ref::<UsageUnavailable>().is_some() {
        return Decision::block(
            codes::USAGE_UNAVAILABLE,
            "usage counters could not be read; the call is blocked",
        );
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Decision::block(codes::TRAP, format!("policy exited with status {}", exit.0));
    }
    if let Some(denied) = error.downcast_ref::<WasiDenied>() {
        return Decision::block(codes::TRAP, format!("policy {denied}"));
    }
    if let Some(broken) = error.downcast_ref::<HostRuleBroken>() {
        return Decision::block(codes::TRAP, format!("policy {broken}"));
    }
    let panic = state.logs.iter().rev().find(|l| {
        l.level == LogLevel::Error && l.message.starts_with(writ_policy::PANIC_LOG_PREFIX)
    });
    if let Some(panic) = panic {
        return Decision::block(codes::TRAP, panic.message.clone());
    }
    // A language runtime (componentize-js) writes an uncaught exception's message to stderr
    // (then its stack and its own abort notice), then traps.
    let said = state
        .logs
        .iter()
        .find(|l| l.level == LogLevel::Warn && !l.message.trim().is_empty())
        .map(|l| format!("; its stderr said: {}", truncated(l.message.trim(), 1024)))
        .unwrap_or_default();
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => Decision::block(codes::TRAP, "policy overflowed its stack"),
        Some(trap) => Decision::block(codes::TRAP, format!("policy trapped: {trap}{said}")),
        None => {
            tracing::warn!(error = format!("{error:#}"), "policy evaluation failed");
            Decision::block(codes::TRAP, "policy could not be run")
        }
    }
}
