//! Child processes the bench starts: the gateway and the floor.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{BenchError, Result, loopback_addr};

/// A child process serving HTTP on loopback (the gateway or the floor) started by the bench;
/// it prints `listening on http://ADDR` on standard output once bound. Killed on drop.
pub struct Spawned {
    child: tokio::process::Child,
    // Kept open so the child's later prints do not fail on a closed pipe.
    _stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Spawned {
    /// Starts `command` and waits (at most 120 s) for its `listening on` line.
    pub async fn start(mut command: tokio::process::Command) -> Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("starting {command:?}: {e}")))?;
        let mut lines =
            tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return loopback_addr(url.trim()).ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| BenchError::Setup(format!("{command:?} did not say where it listens")))?;
        Ok(Self {
            child,
            _stdout: lines,
            addr,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
