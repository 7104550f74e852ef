//! The load harness behind `writ bench`: it drives `POST /v1/gateway/execute` on a gateway on
//! loopback with C keep-alive connections and a configurable mix of calls, for N requests or T
//! seconds, and reports requests/s and latency percentiles. The same load is run against the
//! floor (a bare axum route that parses the same JSON, [`floor::router`]) seconds
//! apart, so Writ is reported as a ratio of what the machine can do at all.
//!
//! Also here: setting up bench tenants over the HTTP API (each with its own copy of the policy,
//! so every tenant compiles and holds its own component), holding escalations open to measure
//! their memory, and reading a process's resident memory and CPU time and the machine's idle
//! time.
//!
//! With a noisy neighbour ([`Flood`]), the same load runs alone and then beside another tenant
//! flooding the gateway with calls whose policy burns its fuel, and the two are compared.
//!
//! Everything is bounded (connections, requests, seconds) and refuses any address that is not
//! loopback: this is a tool for measuring one's own machine, not for loading someone else's.

pub mod floor;

mod audit_window;
mod flood;
mod load;
mod loopback;
mod mix;
mod procfs;
mod report;
mod setup;
mod spawn;

use std::net::SocketAddr;
use std::time::Duration;

pub use audit_window::AuditWindow;
pub use flood::{Flood, FloodReport};
pub use load::{LoadConfig, Stop, run_load, run_load_spread};
pub use loopback::loopback_addr;
pub use mix::{CallKind, Mix};
pub use procfs::{CpuTicks, cpu_seconds, machine_cpu_ticks, rss_bytes};
pub use report::{Latency, Report, median, ratios, table};
pub use setup::{
    BENCH_HOLD_S, BENCH_MAX_PENDING, BenchTenant, HeldReport, distinct_component, hold_escalations,
    setup_tenants, wait_until_serving,
};
pub use spawn::Spawned;

/// Most connections a run may open.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most requests a run may send.
pub const MAX_REQUESTS: u64 = 10_000_000;
/// Longest a run (or its warm-up) may last.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most escalations [`hold_escalations`] may hold open.
pub const MAX_HELD: usize = 10_000;

/// Errors of the load harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The target is not a loopback address.
    #[error("`{0}` is not a loopback address: writ bench only loads this machine")]
    NotLoopback(String),
    /// A setting is out of bounds or malformed.
    #[error("{0}")]
    Invalid(String),
    /// A connection could not be opened.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// HTTP failed on a connection that had worked.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// Setting up tenants, keys or policies over the API failed.
    #[error("setting up the gateway: {0}")]
    Setup(String),
    /// A call to the gateway's API failed.
    #[error("setting up the gateway: {0}")]
    Client(#[from] writ_client::ClientError),
}

/// Result of the load harness.
pub type Result<T> = std::result::Result<T, BenchError>;
