//! The real `writ` binary as a child process on a loopback port, for tests that kill and
//! restart a gateway on the same data directory.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::Api;

/// The operator key every child gateway is started with.
pub const OPERATOR: &str = "wk_op_child_test_operator";

/// A `writ serve` child process, driven over HTTP through [`Api`].
pub struct ChildGateway {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    api: Api,
}

impl ChildGateway {
    /// Starts `writ` (at `bin`) serving `dir`, its log (at debug level) going to `stderr`.
    pub fn spawn(bin: &str, dir: &Path, stderr: Stdio) -> Self {
        Self::start(bin, dir, stderr, &[("RUST_LOG", "debug")])
    }

    /// Starts `writ` (at `bin`) as one node of the PostgreSQL store at `store_url`, its local
    /// files in `dir`, with the keys every node of a store is given.
    pub fn spawn_node(bin: &str, dir: &Path, store_url: &str, stderr: Stdio) -> Self {
        let (master, checkpoint) = ("33".repeat(32), "44".repeat(32));
        let env = [
            ("WRIT_STORE_URL", store_url),
            ("WRIT_MASTER_KEY", master.as_str()),
            ("WRIT_CHECKPOINT_KEY", checkpoint.as_str()),
        ];
        Self::start(bin, dir, stderr, &env)
    }

    /// `writ serve` on a free loopback port with the tests' settings and `env` besides.
    fn start(bin: &str, dir: &Path, stderr: Stdio, env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .env("WRIT_OPERATOR_KEY", OPERATOR)
            // The tests' downstream services listen on 127.0.0.1.
            .env("WRIT_EGRESS_ALLOW", "127.0.0.1/32")
            // A debug build evaluates tens of times slower than a release one.
            .env("WRIT_TENANT_EVAL_MS_PER_S", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self::with(Some(child), format!("http://127.0.0.1:{port}"))
    }

    fn with(child: Option<Child>, url: String) -> Self {
        Self {
            child,
            api: Api::new(url.clone(), OPERATOR.to_owned()),
            url,
        }
    }

    /// A handle on a gateway already running at `url`, for tasks that only send it requests
    /// (dropping it kills nothing).
    pub fn attach(url: String) -> Self {
        Self::with(None, url)
    }

    /// Waits until `/readyz` answers 200 (at most a minute).
    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "gateway did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and waits for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl std::ops::Deref for ChildGateway {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
