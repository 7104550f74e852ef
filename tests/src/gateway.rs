//! A real gateway on a loopback ephemeral port with a store in a temp dir, driven over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use writ_gateway::clock::SharedClock;
use writ_gateway::server::{Gateway, ServeConfig};

use crate::http::Api;

/// Where a test gateway keeps its store.
#[derive(Debug, Clone)]
pub enum Backend {
    /// sled in the gateway's data directory.
    Sled,
    /// A database of its own (this URL) in the tests' private PostgreSQL cluster.
    Postgres(String),
}

impl Backend {
    /// A new, empty PostgreSQL store.
    pub fn postgres() -> Self {
        Self::Postgres(crate::postgres::PgCluster::shared().database())
    }

    /// The store a stopped gateway on this backend kept (its local files in `dir`), opened
    /// as an offline reader would, to read it or tamper with it.
    pub fn open_store(&self, dir: &Path) -> writ_gateway::store::Store {
        match self {
            Self::Sled => writ_gateway::store::Store::open(dir).expect("sled store"),
            Self::Postgres(url) => {
                let options = writ_store::PgOptions {
                    url: url.clone(),
                    hold: writ_store::Hold::Nothing,
                };
                writ_gateway::store::Store::open_postgres(&options, dir).expect("store")
            }
        }
    }

    /// Points `config` at this backend.
    pub fn apply(&self, config: &mut ServeConfig) {
        config.store_url = match self {
            Self::Sled => None,
            Self::Postgres(url) => Some(url.clone()),
        };
    }
}

/// A running gateway in the test's process, driven over HTTP through [`Api`].
pub struct TestGateway {
    /// Its address.
    pub addr: SocketAddr,
    /// The data directory (kept when the gateway was started in a caller's directory).
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    api: Api,
    store: writ_gateway::store::Store,
}

/// A tenant with one key of each role.
#[derive(Debug, Clone)]
pub struct TestTenant {
    /// The tenant id.
    pub id: String,
    /// Agent key (any agent id).
    pub agent: String,
    /// Reviewer key (subject `reviewer@example.com`).
    pub reviewer: String,
    /// Admin key.
    pub admin: String,
}

impl TestGateway {
    /// Starts a gateway with a fresh store in a temp dir.
    pub async fn start() -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut gw = Self::start_in(temp.path()).await;
        gw._temp = Some(temp);
        gw
    }

    /// Starts a gateway with a fresh store on `backend` (its local files in a temp dir).
    pub async fn start_on(backend: &Backend) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut gw = Self::start_in_on(temp.path(), backend).await;
        gw._temp = Some(temp);
        gw
    }

    /// Starts a gateway on the store on `backend`, its files in `dir` (kept after stop, for
    /// restart tests).
    pub async fn start_in_on(dir: &Path, backend: &Backend) -> Self {
        let mut config = Self::config(dir);
        backend.apply(&mut config);
        Self::start_with(config).await
    }

    /// Starts one of several gateway processes (nodes) serving the PostgreSQL store at `url`,
    /// with its local files in `dir` and the keys every node of the tests' stores is given.
    pub async fn start_node(dir: &Path, url: &str) -> Self {
        Self::start_node_with_clock(dir, url, writ_gateway::clock::system()).await
    }

    /// [`Self::start_node`], taking its time from `clock`.
    pub async fn start_node_with_clock(dir: &Path, url: &str, clock: SharedClock) -> Self {
        let mut config = Self::config(dir);
        config.app.clock = clock;
        config.store_url = Some(url.to_owned());
        config.master_key = Some("11".repeat(32));
        config.checkpoint_key = Some("22".repeat(32));
        Self::start_with(config).await
    }

    /// Starts a gateway with a fresh store in a temp dir and [`Self::config`]'s settings as
    /// `configure` changes them.
    pub async fn start_configured(configure: impl FnOnce(&mut ServeConfig)) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut config = Self::config(temp.path());
        configure(&mut config);
        let mut gw = Self::start_with(config).await;
        gw._temp = Some(temp);
        gw
    }

    /// Starts a gateway with a fresh store in a temp dir, taking its time from `clock`.
    pub async fn start_with_clock(clock: SharedClock) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut gw = Self::start_in_with_clock(temp.path(), clock).await;
        gw._temp = Some(temp);
        gw
    }

    /// Starts a gateway on the store in `dir`, taking its time from `clock`.
    pub async fn start_in_with_clock(dir: &Path, clock: SharedClock) -> Self {
        Self::start_in_on_with_clock(dir, &Backend::Sled, clock).await
    }

    /// Starts a gateway with a fresh store on `backend`, taking its time from `clock`.
    pub async fn start_on_with_clock(backend: &Backend, clock: SharedClock) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut gw = Self::start_in_on_with_clock(temp.path(), backend, clock).await;
        gw._temp = Some(temp);
        gw
    }

    /// Starts a gateway on the store on `backend` (its files in `dir`), taking its time from
    /// `clock`.
    pub async fn start_in_on_with_clock(dir: &Path, backend: &Backend, clock: SharedClock) -> Self {
        let mut config = Self::config(dir);
        config.app.clock = clock;
        backend.apply(&mut config);
        Self::start_with(config).await
    }

    /// Starts a gateway on the store in `dir` (kept after stop, for restart tests).
    pub async fn start_in(dir: &Path) -> Self {
        Self::start_with(Self::config(dir)).await
    }

    /// The settings [`Self::start_in`] uses: an ephemeral loopback port, the store in `dir`,
    /// a fixed operator key. Tests that change a setting start from these.
    pub fn config(dir: &Path) -> ServeConfig {
        let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
        config.operator_key = Some("wk_op_test_operator_key".into());
        // The tests' downstream services and webhook receivers listen on 127.0.0.1; the
        // gateway's own address stays refused.
        config.egress_allow = "127.0.0.1/32".into();
        // A debug build evaluates tens of times slower than a release one: tenants start with
        // no evaluation-time budget, and the tests of shares set one.
        config.app.tenant_defaults.eval_ms_per_s = 0;
        config
    }

    /// Starts a gateway with `config`.
    pub async fn start_with(config: ServeConfig) -> Self {
        Self::start_with_console(config, writ_console::ConsoleConfig::default()).await
    }

    /// Starts a gateway with `config`, its reviewer console with `console`.
    pub async fn start_with_console(
        config: ServeConfig,
        console: writ_console::ConsoleConfig,
    ) -> Self {
        let data_dir = config.data_dir.clone();
        let gateway = Gateway::open(config).await.expect("gateway opens");
        let addr = gateway.local_addr();
        let operator_key = gateway.operator_key.clone();
        let store = gateway.app.store().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve_with(
            move |app, stopping| {
                (
                    writ_console::router(app, console, stopping),
                    Some(writ_console::openapi()),
                )
            },
            async {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            api: Api::new(format!("http://{addr}"), operator_key),
            data_dir,
            _temp: None,
            shutdown: Some(tx),
            task: Some(task),
            store,
        }
    }

    /// Stops gracefully: in-flight requests finish, the store is flushed.
    pub async fn stop(mut self) {
        self.shutdown_now().await;
    }

    async fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve ends cleanly");
        }
    }

    /// The gateway's store (to make its flushes fail, as a failing disk would).
    pub fn store(&self) -> &writ_gateway::store::Store {
        &self.store
    }
}

impl std::ops::Deref for TestGateway {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The sum of every charge `records` hold.
pub fn recorded_spend(records: &[Value]) -> f64 {
    records
        .iter()
        .flat_map(|r| r["charges"].as_array().unwrap().clone())
        .map(|c| c["amount"].as_str().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Checks that `records` form a valid chain from seq 0: gapless, linked, and every hash
/// recomputed from the canonical encoding (keys sorted, no whitespace, `hash` left out).
pub fn assert_chain_valid(records: &[Value]) {
    let mut prev = [0u8; 32];
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(i as u64), "gap at {i}");
        assert_eq!(
            r["prev_hash"].as_str().unwrap(),
            hex::encode(prev),
            "link at {i}"
        );
        let mut body = r.as_object().unwrap().clone();
        body.remove("hash");
        let canonical = serde_json::to_vec(&sorted(&Value::Object(body))).unwrap();
        let mut h = blake3::Hasher::new();
        h.update(&prev);
        h.update(&canonical);
        let hash = h.finalize();
        assert_eq!(
            r["hash"].as_str().unwrap(),
            hash.to_hex().as_str(),
            "hash at {i}"
        );
        prev = *hash.as_bytes();
    }
}

/// `value` with every object's keys in lexicographic order, whatever serde_json's map order.
fn sorted(value: &Value) -> impl serde::Serialize {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Canonical<'a> {
        Object(std::collections::BTreeMap<&'a str, Canonical<'a>>),
        Array(Vec<Canonical<'a>>),
        Scalar(&'a Value),
    }
    fn go(v: &Value) -> Canonical<'_> {
        match v {
            Value::Object(m) => {
                Canonical::Object(m.iter().map(|(k, v)| (k.as_str(), go(v))).collect())
            }
            Value::Array(a) => Canonical::Array(a.iter().map(go).collect()),
            other => Canonical::Scalar(other),
        }
    }
    go(value)
}
