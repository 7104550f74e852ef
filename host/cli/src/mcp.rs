//! `writ mcp`: the MCP proxy on stdio (`writ-mcp`). Its standard output is the protocol's, so
//! everything it says to a person goes to standard error.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use writ_client::Client;
use writ_mcp::{Ended, ProxyConfig};

#[derive(Args)]
pub struct McpArgs {
    /// The gateway's base URL.
    #[arg(long, env = "WRIT_GATEWAY_URL")]
    gateway: String,
    /// An agent key of the tenant whose policy governs the calls.
    #[arg(long, env = "WRIT_API_KEY", hide_env_values = true)]
    key: String,
    /// The agent id the calls are made as.
    #[arg(long, default_value = "mcp-client")]
    agent_id: String,
    /// The server's name in actions (`<server>.<tool>`); the command's file name by default.
    #[arg(long)]
    server: Option<String>,
    /// The session the calls are recorded under; a new one per run by default.
    #[arg(long)]
    session: Option<String>,
    /// Seconds between progress notifications to a held call's client.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    progress_every_s: u64,
    /// The MCP server's command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<OsString>,
}

/// Runs the proxy until the client or the server ends.
pub async fn run(args: McpArgs) -> anyhow::Result<ExitCode> {
    let gateway = Client::new(&args.gateway, &args.key)?;
    let mut command = args.command.into_iter();
    let program = command.next().expect("clap requires the command");
    let server = args.server.unwrap_or_else(|| server_name(&program));
    let config = ProxyConfig {
        server,
        agent_id: args.agent_id,
        session_id: args
            .session
            .unwrap_or_else(|| format!("mcp-{}", ulid::Ulid::new().to_string().to_lowercase())),
        progress_every: Duration::from_secs(args.progress_every_s),
    };
    let (ended, status) = writ_mcp::run_stdio(gateway, config, program, command.collect()).await?;
    let status = status.map_or("unknown".into(), |s| s.to_string());
    match ended {
        Ended::ClientClosed => Ok(ExitCode::SUCCESS),
        Ended::ServerExited => {
            eprintln!("writ mcp: the MCP server exited ({status})");
            Ok(ExitCode::FAILURE)
        }
        Ended::ServerInvalid(why) => {
            eprintln!(
                "writ mcp: the MCP server wrote an invalid message ({why}); stopped it ({status})"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The server's default name: the command's file name without its extension, e.g. `server`
/// for `./server.py`.
fn server_name(program: &OsString) -> String {
    Path::new(program)
        .file_stem()
        .map_or_else(|| "mcp".into(), |s| s.to_string_lossy().into_owned())
}
