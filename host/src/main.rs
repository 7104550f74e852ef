//! The `writ` command: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use writ::{Engine, EngineConfig, Limits, cases};

#[derive(Parser)]
#[command(name = "writ", version, about = "Runtime authority for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with policy components.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a JSON file of test cases against a policy component; exits 1 if any fails.
    Test {
        /// The policy component (`.wasm`, built for wasm32-wasip2).
        component: PathBuf,
        /// The cases file (see `writ::cases` for the format).
        cases: PathBuf,
        /// Fuel per evaluation.
        #[arg(long, default_value_t = Limits::default().fuel)]
        fuel: u64,
        /// Deadline per evaluation, in milliseconds.
        #[arg(long, default_value_t = Limits::default().deadline.as_millis() as u64)]
        deadline_ms: u64,
        /// Memory per evaluation, in MiB.
        #[arg(long, default_value_t = Limits::default().memory_bytes >> 20)]
        memory_mib: usize,
        /// Also print what the policy logged.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Policy {
            command:
                PolicyCommand::Test {
                    component,
                    cases: cases_path,
                    fuel,
                    deadline_ms,
                    memory_mib,
                    verbose,
                },
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("reading {}", component.display()))?;
            let text = std::fs::read_to_string(&cases_path)
                .with_context(|| format!("reading {}", cases_path.display()))?;
            let cases = cases::parse(&text)?;
            let engine = Engine::new(&EngineConfig::default())
                .map_err(|e| anyhow::anyhow!("starting the engine: {e:#}"))?;
            let policy = engine
                .compile(&bytes)
                .with_context(|| format!("loading {}", component.display()))?;
            let limits = Limits {
                fuel,
                deadline: Duration::from_millis(deadline_ms),
                memory_bytes: memory_mib << 20,
            };
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
    }
}
