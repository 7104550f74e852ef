//! The `writ` command: parses arguments and hands over to the library (or, for the management
//! subcommands, to a running gateway's HTTP API).

mod bench;
mod mcp;
mod offline;
mod policy;
mod scaffold;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use writ_client::{Client, ClientError, wire};
use writ_console::ConsoleConfig;
use writ_gateway::server::{ConnectionLimits, Gateway, ServeConfig, demo_setup, shutdown_signal};
use writ_runtime::EngineConfig;

/// jemalloc rather than glibc's allocator, which was a large share of the workers' time under
/// load (docs/bench-log.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "writ", version, about = "Runtime authority for AI agents")]
struct Cli {
    /// How the log (on stderr) is written: `text` lines, or one JSON object a line.
    #[arg(long, global = true, env = "WRIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (tracing-subscriber's JSON format).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "WRIT_LISTEN", default_value = "127.0.0.1:4587")]
        listen: SocketAddr,
        /// Directory of the store and key files (with `--store`: the key files and this node's
        /// compiled policy artifacts).
        #[arg(long, env = "WRIT_DATA_DIR", default_value = "./writ-data")]
        data_dir: PathBuf,
        /// A PostgreSQL store (`postgres://user@host:port/db`) instead of sled in the data
        /// directory.
        #[arg(long = "store", env = "WRIT_STORE_URL", hide_env_values = true)]
        store_url: Option<String>,
        /// A file holding the vault's master key (64 hex digits) instead of the data
        /// directory's `master.key` (`WRIT_MASTER_KEY` gives it directly); every node of a
        /// store needs the same one.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// A file holding the checkpoint signing key (64 hex digits) instead of the data
        /// directory's `checkpoint.key` (`WRIT_CHECKPOINT_KEY` gives it directly).
        #[arg(long)]
        checkpoint_key_file: Option<PathBuf>,
        /// Set up a `demo` tenant with this policy component active, and print fresh keys.
        #[arg(long)]
        demo_policy: Option<PathBuf>,
        /// Instance slots in the sandbox's pool. Each reserves address space for the largest
        /// linear memory (about 4 GiB), so a tool that cannot reserve a terabyte (valgrind)
        /// needs fewer. Evaluations at once and warm slots are capped to it.
        #[arg(long, env = "WRIT_POOL_SLOTS", default_value_t = EngineConfig::default().max_instances,
              value_parser = clap::value_parser!(u32).range(1..=4096))]
        pool_slots: u32,
        /// Destinations outbound calls (jobs, webhooks) may reach although the egress guard
        /// refuses their range: comma-separated networks, addresses and host names, e.g.
        /// `10.1.2.0/24,billing.internal`. The gateway's own address stays refused.
        #[arg(long, env = "WRIT_EGRESS_ALLOW", default_value = "")]
        egress_allow: String,
        /// A PEM bundle of CAs to trust for outbound HTTPS besides the web PKI roots (an
        /// internal service with a private CA).
        #[arg(long, env = "WRIT_EGRESS_CA_FILE")]
        egress_ca_file: Option<PathBuf>,
        /// Serve `/metrics` without a key (its labels name every tenant); by default it needs
        /// the operator key.
        #[arg(long, env = "WRIT_METRICS_PUBLIC")]
        metrics_public: bool,
        /// The origin browsers reach the reviewer console at, when a proxy terminates TLS in
        /// front of the gateway (`https://writ.example.com`): its cookies are then `Secure` and
        /// its forms accepted only from this origin.
        #[arg(long, env = "WRIT_CONSOLE_ORIGIN")]
        console_origin: Option<url::Url>,
        /// Minutes a console session may go unused before it ends.
        #[arg(long, env = "WRIT_CONSOLE_IDLE_MINUTES", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(1..=1440))]
        console_idle_minutes: u64,
        /// The evaluation time a new tenant's policy may spend per second, in ms (0: no
        /// budget); the operator sets each tenant's own with `PATCH /v1/admin/tenants/{id}`.
        #[arg(long, env = "WRIT_TENANT_EVAL_MS_PER_S",
              default_value_t = writ_gateway::app::TenantLimits::default().eval_ms_per_s,
              value_parser = clap::value_parser!(u64).range(0..=60_000))]
        tenant_eval_ms_per_s: u64,
        /// Milliseconds a client has to send a request's line and headers (also how long a
        /// kept-alive connection may sit idle); then the connection is closed.
        #[arg(long, env = "WRIT_HEADER_TIMEOUT_MS",
              default_value_t = ConnectionLimits::default().header_timeout.as_millis() as u64,
              value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        header_timeout_ms: u64,
        /// Milliseconds a client has to send a request's whole body once the gateway reads it;
        /// then the answer is 408.
        #[arg(long, env = "WRIT_BODY_TIMEOUT_MS",
              default_value_t = ConnectionLimits::default().body_timeout.as_millis() as u64,
              value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        body_timeout_ms: u64,
        /// Connections open at once; further ones wait in the kernel's listen backlog until
        /// one closes. Mind the process's open-file limit (`ulimit -n`).
        #[arg(long, env = "WRIT_MAX_CONNECTIONS",
              default_value_t = ConnectionLimits::default().max_connections as u32,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        max_connections: u32,
    },
    /// Manage tenants on a running gateway (operator key).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage keys on a running gateway (operator or tenant admin key).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Work with policy components.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Verify or export audit chains from a stopped gateway's store.
    Audit {
        #[command(subcommand)]
        command: offline::AuditCommand,
    },
    /// Move a store between backends.
    Store {
        #[command(subcommand)]
        command: offline::StoreCommand,
    },
    /// Load a gateway on loopback and compare it with the bare-axum floor (see BENCHMARKS.md).
    Bench(Box<BenchArgs>),
    /// Govern an MCP server: run COMMAND as the server and relay between it and the MCP client
    /// on stdio, every `tools/call` decided by the gateway first (see README).
    Mcp(mcp::McpArgs),
    /// Serve the bench's floor route (started by `writ bench`).
    #[command(hide = true)]
    BenchFloor {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// The policy component every bench tenant runs (each gets its own copy).
    #[arg(long)]
    policy: PathBuf,
    /// A running gateway on loopback; default: start one on a temporary data directory.
    #[arg(long)]
    gateway: Option<String>,
    /// The started gateways' PostgreSQL store (`postgres://…`) instead of sled; an empty
    /// database is best (the bench adds its tenants).
    #[arg(long = "store", env = "WRIT_BENCH_STORE_URL", hide_env_values = true)]
    store_url: Option<String>,
    /// Gateways started on that store, the load spread over them (connection `i` to node
    /// `i % nodes`).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The operator key of `--gateway`.
    #[arg(long, env = "WRIT_OPERATOR_KEY", hide_env_values = true)]
    operator_key: Option<String>,
    /// Process id of `--gateway`, to report its memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Tenants to create, each with its own active policy; requests rotate over all of them.
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Stop after this many measured requests (instead of --duration).
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Stop after this many measured seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured load before each run, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Call mix: weights of payment (under the limit), email, unknown (action) and
    /// over_limit (payment, sent with ?wait=0).
    #[arg(long, default_value = "payment=70,email=15,unknown=10,over_limit=5")]
    mix: writ_bench::Mix,
    /// Skip the floor run.
    #[arg(long)]
    no_floor: bool,
    /// Rounds to run, each loading the floor and then the gateway (1..=10); with more than
    /// one, the report gives each round's ratio and their median, which is steadier on a
    /// machine whose speed drifts.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Before the load, hold this many escalations open at once and report the memory they
    /// take (on a tenant of their own).
    #[arg(long, default_value_t = 0)]
    held: usize,
    /// Also write the report as JSON to this file (`-`: standard output, table to stderr).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Noisy-neighbour mode: each round loads the bench tenants alone, then again while
    /// another tenant running this policy floods the gateway, and reports what the flood took
    /// (the floor is not run).
    #[arg(long)]
    flood_policy: Option<PathBuf>,
    /// The action the flood calls (with `tests/guests/hostile`: `spin` runs to the fuel or
    /// deadline bound).
    #[arg(long, default_value = "spin")]
    flood_action: String,
    /// The flood's connections.
    #[arg(long, default_value_t = 64)]
    flood_connections: usize,
    /// The flooding tenant's evaluation-time budget, ms per second.
    #[arg(long, default_value_t = 100)]
    flood_eval_ms_per_s: u64,
    /// The flooding tenant's evaluations at once.
    #[arg(long, default_value_t = 2)]
    flood_max_evaluations: usize,
}

/// Where the gateway is and which key to use.
#[derive(Args)]
struct Remote {
    /// The gateway's base URL.
    #[arg(long, env = "WRIT_GATEWAY", default_value = "http://127.0.0.1:4587")]
    gateway: String,
    /// The API key; defaults to `./writ-data/operator.key` when that file exists.
    #[arg(long, env = "WRIT_API_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints it as JSON.
    Create {
        /// Display name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key; prints it, with its secret (shown once), as JSON.
    Create {
        #[arg(long)]
        tenant: String,
        /// agent, reviewer or admin.
        #[arg(long)]
        role: String,
        /// Who holds the key (e.g. a reviewer's email).
        #[arg(long)]
        subject: String,
        /// Bind an agent key to this agent id.
        #[arg(long)]
        agent_id: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a key.
    Revoke {
        /// The key id (`key_…`).
        key_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Upload a policy component to a running gateway (tenant admin key).
    Push {
        /// The component (`.wasm`).
        component: PathBuf,
        /// A name for it.
        #[arg(long)]
        name: String,
        /// Make it the active policy.
        #[arg(long)]
        activate: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create a policy project (one rule, native tests, a cases file) and print how to test,
    /// build and push it.
    New {
        /// The policy's name (a-z, 0-9, -), also the project directory's unless `--dir`.
        name: String,
        /// The language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// Where to create it (default: ./NAME); must not exist, or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Writ checkout whose SDKs and WIT the project builds with (default: the one this
        /// `writ` was built from).
        #[arg(long)]
        writ_checkout: Option<PathBuf>,
    },
    /// Run a JSON file of test cases against a policy component; exits 1 if any fails.
    Test {
        /// The policy component (`.wasm`, built for wasm32-wasip2).
        component: PathBuf,
        /// The cases file (see `writ_runtime::cases` for the format).
        cases: PathBuf,
        #[command(flatten)]
        limits: policy::LimitArgs,
        /// Also print what the policy logged.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Evaluate one call against a policy component and print the decision, the fuel it burned,
    /// the time it took and what the policy logged.
    Eval {
        /// The policy component (`.wasm`).
        component: PathBuf,
        /// The call, as a cases file writes one, e.g.
        /// `{"action": "payments.initiate", "arguments": {"amount": 50, "currency": "GBP"}}`.
        #[arg(long)]
        call: String,
        /// A usage counter's value the policy reads, `COUNTER:WINDOW=VALUE` (windows: session,
        /// minute, hour, day, all-time); repeatable.
        #[arg(long = "usage", value_name = "COUNTER:WINDOW=VALUE")]
        usage: Vec<String>,
        #[command(flatten)]
        limits: policy::LimitArgs,
        /// Print the evaluation as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().init(),
    }
    let result = match cli.command {
        Command::Policy {
            command:
                PolicyCommand::Test {
                    component,
                    cases,
                    limits,
                    verbose,
                },
        } => policy::test(component, cases, limits.limits(), verbose),
        Command::Policy {
            command:
                PolicyCommand::New {
                    name,
                    lang,
                    dir,
                    writ_checkout,
                },
        } => scaffold::create(
            &dir.unwrap_or_else(|| PathBuf::from(&name)),
            &name,
            lang,
            &writ_checkout.unwrap_or_else(scaffold::default_checkout),
        )
        .map(|steps| {
            print!("{steps}");
            ExitCode::SUCCESS
        }),
        Command::Policy {
            command:
                PolicyCommand::Eval {
                    component,
                    call,
                    usage,
                    limits,
                    json,
                },
        } => policy::eval(component, &call, &usage, limits.limits(), json),
        Command::Audit { command } => offline::audit(command),
        Command::Store { command } => offline::store(command),
        command => tokio::runtime::Runtime::new()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(command))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            listen,
            data_dir,
            store_url,
            master_key_file,
            checkpoint_key_file,
            demo_policy,
            pool_slots,
            egress_allow,
            egress_ca_file,
            metrics_public,
            console_origin,
            console_idle_minutes,
            tenant_eval_ms_per_s,
            header_timeout_ms,
            body_timeout_ms,
            max_connections,
        } => {
            let mut config = ServeConfig::new(listen, data_dir);
            config.store_url = store_url;
            config.master_key = secret("WRIT_MASTER_KEY", master_key_file)?;
            config.checkpoint_key = secret("WRIT_CHECKPOINT_KEY", checkpoint_key_file)?;
            config.app = config.app.with_pool_slots(pool_slots);
            config.egress_allow = egress_allow;
            config.egress_ca_file = egress_ca_file;
            config.metrics_public = metrics_public;
            config.app.tenant_defaults.eval_ms_per_s = tenant_eval_ms_per_s;
            config.connections = ConnectionLimits {
                header_timeout: Duration::from_millis(header_timeout_ms),
                body_timeout: Duration::from_millis(body_timeout_ms),
                max_connections: max_connections as usize,
            };
            let console = ConsoleConfig {
                public_origin: console_origin,
                idle_timeout: Duration::from_secs(console_idle_minutes * 60),
                ..ConsoleConfig::default()
            };
            serve(config, console, demo_policy).await
        }
        Command::Tenant {
            command: TenantCommand::Create { name, remote },
        } => print_answer(client(&remote)?.create_tenant(&name).await),
        Command::Key {
            command:
                KeyCommand::Create {
                    tenant,
                    role,
                    subject,
                    agent_id,
                    remote,
                },
        } => {
            let key = wire::CreateKeyBody {
                role,
                subject,
                agent_id,
            };
            print_answer(client(&remote)?.create_key(&tenant, &key).await)
        }
        Command::Key {
            command: KeyCommand::Revoke { key_id, remote },
        } => print_answer(client(&remote)?.revoke_key(&key_id).await),
        Command::Policy {
            command:
                PolicyCommand::Push {
                    component,
                    name,
                    activate,
                    remote,
                },
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("reading {}", component.display()))?;
            print_answer(client(&remote)?.upload_policy(&name, activate, bytes).await)
        }
        Command::Bench(args) => bench::bench(*args).await,
        Command::Mcp(args) => mcp::run(args).await,
        Command::BenchFloor { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("listening on http://{}", listener.local_addr()?);
            axum::serve(listener, writ_bench::floor::router().into_make_service())
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command:
                PolicyCommand::Test { .. } | PolicyCommand::Eval { .. } | PolicyCommand::New { .. },
        }
        | Command::Audit { .. }
        | Command::Store { .. } => unreachable!("handled without a runtime"),
    }
}

/// A secret key in hex: from the environment variable `var`, else the file at `file`, else
/// `None` (the data directory's file).
fn secret(var: &str, file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(key) = std::env::var(var).ok().filter(|k| !k.is_empty()) {
        return Ok(Some(key));
    }
    file.map(|path| {
        std::fs::read_to_string(&path)
            .map(|k| k.trim().to_owned())
            .with_context(|| format!("reading {}", path.display()))
    })
    .transpose()
}

async fn serve(
    mut config: ServeConfig,
    console: ConsoleConfig,
    demo_policy: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    config.operator_key = std::env::var("WRIT_OPERATOR_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let gateway = Gateway::open(config).await?;
    let addr = gateway.local_addr();
    if gateway.operator_key_generated {
        println!(
            "Operator key (written to the data dir's operator.key, shown once): {}",
            gateway.operator_key
        );
    }
    if let Some(path) = demo_policy {
        let policy = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = path
            .file_stem()
            .map_or_else(|| "demo".into(), |s| s.to_string_lossy().into_owned());
        let keys = demo_setup(&gateway.app, &gateway.operator_key, &name, policy).await?;
        println!("Demo tenant {} with {name} active.", keys.tenant_id);
        println!("  agent key:    {}", keys.agent);
        println!("  reviewer key: {}", keys.reviewer);
        println!("  admin key:    {}", keys.admin);
        println!("Try:");
        println!(
            "  curl -s http://{addr}/v1/gateway/execute -H 'X-PROVENANCE-API-KEY: {}' \\\n    -H 'content-type: application/json' \\\n    -d '{{\"session_id\":\"s1\",\"agent_id\":\"agent-1\",\"action\":\"payments.initiate\",\"decision\":\"ALLOW\",\"parameters\":{{\"amount\":50,\"currency\":\"GBP\",\"recipient_id\":\"rec_abc123\"}}}}'",
            keys.agent
        );
    }
    println!("reviewer console: http://{addr}/console/");
    // Last, and alone on its line: `writ bench` and the tests read the address from it.
    println!("listening on http://{addr}");
    tracing::info!(%addr, "serving");
    gateway
        .serve_with(
            |app, stopping| {
                (
                    writ_console::router(app, console, stopping),
                    Some(writ_console::openapi()),
                )
            },
            shutdown_signal(),
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

fn api_key(remote: &Remote) -> anyhow::Result<String> {
    if let Some(key) = &remote.key {
        return Ok(key.clone());
    }
    std::fs::read_to_string("writ-data/operator.key")
        .map(|k| k.trim().to_owned())
        .context("no key: pass --key or set WRIT_API_KEY")
}

fn client(remote: &Remote) -> anyhow::Result<Client> {
    Ok(Client::new(&remote.gateway, &api_key(remote)?)?)
}

/// Prints the gateway's answer (or its error) as JSON; fails on an error.
fn print_answer<T: serde::Serialize>(answer: Result<T, ClientError>) -> anyhow::Result<ExitCode> {
    match answer {
        Ok(body) => {
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            let error = json!({"error": {"code": code, "message": message}});
            println!("{}", serde_json::to_string_pretty(&error)?);
            eprintln!("the gateway answered {status}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
