//! `writ policy test` and `writ policy eval`: a component run locally in an engine of the
//! gateway's settings, against a cases file or one call.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use writ_runtime::{Engine, EngineConfig, FixedUsage, Limits, Window, cases};

/// The sandbox's limits for one evaluation, as the gateway's defaults set them.
#[derive(Args)]
pub struct LimitArgs {
    /// Fuel per evaluation.
    #[arg(long, default_value_t = Limits::default().fuel)]
    fuel: u64,
    /// Deadline per evaluation, in milliseconds.
    #[arg(long, default_value_t = Limits::default().deadline.as_millis() as u64)]
    deadline_ms: u64,
    /// Memory per evaluation, in MiB.
    #[arg(long, default_value_t = Limits::default().memory_bytes >> 20)]
    memory_mib: usize,
}

impl LimitArgs {
    /// The limits these arguments give.
    pub fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            deadline: Duration::from_millis(self.deadline_ms),
            memory_bytes: self.memory_mib << 20,
        }
    }
}

/// Compiles the component at `path` in an engine of the gateway's settings.
fn load_component(path: &PathBuf) -> anyhow::Result<(Engine, writ_runtime::CompiledPolicy)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let engine = Engine::new(&EngineConfig::default())
        .map_err(|e| anyhow::anyhow!("starting the engine: {e:#}"))?;
    let policy = engine
        .compile(&bytes)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok((engine, policy))
}

/// `writ policy eval`: one call, its decision, fuel, time and log.
pub fn eval(
    component: PathBuf,
    call: &str,
    usage: &[String],
    limits: Limits,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let call = cases::parse_call(call)?;
    let mut values = std::collections::HashMap::new();
    for entry in usage {
        let parsed = entry.rsplit_once('=').and_then(|(key, value)| {
            let (counter, window) = key.rsplit_once(':')?;
            Some((counter, Window::parse(window)?, value.parse::<f64>().ok()?))
        });
        let Some((counter, window, value)) = parsed else {
            anyhow::bail!(
                "--usage {entry:?}: expected COUNTER:WINDOW=VALUE, e.g. spend:session=120"
            );
        };
        values.insert((counter.to_owned(), window), value);
    }
    let (engine, policy) = load_component(&component)?;
    let e = engine.evaluate_blocking(&policy, &call, &limits, Box::new(FixedUsage(values)));
    let d = &e.decision;
    if json_out {
        let charges: Vec<_> = d
            .charges
            .iter()
            .map(|c| json!({"counter": c.counter, "amount": c.amount}))
            .collect();
        let logs: Vec<_> = e
            .logs
            .iter()
            .map(
                |l| json!({"level": format!("{:?}", l.level).to_lowercase(), "message": l.message}),
            )
            .collect();
        let out = json!({
            "decision": d.outcome.as_str(), "reason": d.reason, "codes": d.codes,
            "charges": charges, "fuel": e.fuel_consumed, "time_us": e.elapsed.as_micros() as u64,
            "logs": logs, "logs_dropped": e.logs_dropped,
        });
        println!("{out}");
    } else {
        println!("{}  {}", d.outcome, d.reason);
        if !d.codes.is_empty() {
            println!("codes    {}", d.codes.join(", "));
        }
        for c in &d.charges {
            println!("charge   {} += {}", c.counter, c.amount);
        }
        println!(
            "fuel     {} of {}\ntime     {} µs (a fresh instance and the evaluation)",
            e.fuel_consumed,
            limits.fuel,
            e.elapsed.as_micros()
        );
        for line in &e.logs {
            println!("log      [{:?}] {}", line.level, line.message);
        }
        if e.logs_dropped > 0 {
            println!("log      ({} more lines dropped)", e.logs_dropped);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `writ policy test`: a cases file against a component, as a table; exit 1 if a case fails.
pub fn test(
    component: PathBuf,
    cases_path: PathBuf,
    limits: Limits,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&cases_path)
        .with_context(|| format!("reading {}", cases_path.display()))?;
    let cases = cases::parse(&text)?;
    let (engine, policy) = load_component(&component)?;
    let results = cases::run(&engine, &policy, &cases, &limits);
    print!("{}", cases::table(&results));
    if verbose {
        for r in &results {
            for line in &r.evaluation.logs {
                println!("[{}] {:?}: {}", r.name, line.level, line.message);
            }
        }
    }
    Ok(if results.iter().all(|r| r.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
