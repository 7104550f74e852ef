//! A real gateway on a loopback ephemeral port with a store in a temp dir, driven over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use writ_client::wire::CreateKeyBody;
use writ_gateway::clock::SharedClock;
use writ_gateway::server::{Gateway, ServeConfig};

use crate::component;

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

    fn apply(&self, config: &mut ServeConfig) {
        config.store_url = match self {
            Self::Sled => None,
            Self::Postgres(url) => Some(url.clone()),
        };
    }
}

/// A running gateway.
pub struct TestGateway {
    /// Its address.
    pub addr: SocketAddr,
    /// The operator key.
    pub operator_key: String,
    /// The data directory (kept when the gateway was started in a caller's directory).
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    client: Client,
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
        let mut config = Self::config(dir);
        config.app.clock = clock;
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
            operator_key,
            data_dir,
            _temp: None,
            shutdown: Some(tx),
            task: Some(task),
            store,
            client: Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
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

    /// Sets `t`'s limits with the operator key (`PATCH /v1/admin/tenants/{id}`); asserts 200.
    pub async fn set_limits(&self, t: &TestTenant, limits: Value) {
        let (status, body) = self
            .call(
                Method::PATCH,
                &format!("/v1/admin/tenants/{}", t.id),
                Some(&self.operator_key),
                Some(limits),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The gateway's store (to make its flushes fail, as a failing disk would).
    pub fn store(&self) -> &writ_gateway::store::Store {
        &self.store
    }

    /// The base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request with `key` in `X-PROVENANCE-API-KEY` and an optional JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut r = self.client.request(method, self.url(path));
        if let Some(key) = key {
            r = r.header("X-PROVENANCE-API-KEY", key);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        r.send().await.expect("request sent")
    }

    /// Like [`Self::request`] but returns the status and the JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self.request(method, path, key, body).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// `POST /v1/gateway/execute?wait=0` with the Provenance body: an escalated call is
    /// answered ESCALATE at once.
    pub async fn execute(
        &self,
        key: &str,
        session: &str,
        action: &str,
        parameters: Value,
    ) -> (u16, Value) {
        self.execute_waiting(key, session, action, parameters, Some(0))
            .await
    }

    /// `POST /v1/gateway/execute` (`query` after the path, e.g. `?wait=0`) with `body` sent
    /// as it is, for bodies a `Value` cannot express (malformed, or spaced as an agent spaced it).
    pub async fn execute_raw(&self, key: &str, query: &str, body: String) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url(&format!("/v1/gateway/execute{query}")))
            .header("X-PROVENANCE-API-KEY", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    }

    /// `POST /v1/gateway/execute`, holding an escalated call up to `wait` seconds (the tenant's
    /// hold when `None`).
    pub async fn execute_waiting(
        &self,
        key: &str,
        session: &str,
        action: &str,
        parameters: Value,
        wait: Option<u64>,
    ) -> (u16, Value) {
        let path = match wait {
            Some(w) => format!("/v1/gateway/execute?wait={w}"),
            None => "/v1/gateway/execute".to_owned(),
        };
        self.call(
            Method::POST,
            &path,
            Some(key),
            Some(json!({
                "session_id": session,
                "agent_id": "agent-1",
                "action": action,
                "decision": "ALLOW",
                "parameters": parameters,
            })),
        )
        .await
    }

    /// Uploads a component as the tenant admin.
    pub async fn upload(
        &self,
        admin: &str,
        name: &str,
        bytes: Vec<u8>,
        activate: bool,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/policies?name={name}&activate={activate}")))
            .header("X-PROVENANCE-API-KEY", admin)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("upload sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A typed API client acting with `key`.
    pub fn client(&self, key: &str) -> writ_client::Client {
        writ_client::Client::with_http(self.client.clone(), &self.url(""), key)
    }

    /// Creates a tenant with an agent, reviewer and admin key, and `policy` (a guest path)
    /// active if given.
    pub async fn tenant(&self, name: &str, policy: Option<&str>) -> TestTenant {
        let operator = self.client(&self.operator_key);
        let id = operator
            .create_tenant(name)
            .await
            .expect("tenant created")
            .tenant_id;
        let key = async |role: &str, subject: &str| {
            let key = CreateKeyBody {
                role: role.into(),
                subject: subject.into(),
                agent_id: None,
            };
            operator
                .create_key(&id, &key)
                .await
                .expect("key created")
                .api_key
        };
        let agent = key("agent", "agent-owner").await;
        let reviewer = key("reviewer", "reviewer@example.com").await;
        let admin = key("admin", "admin@example.com").await;
        if let Some(path) = policy {
            self.client(&admin)
                .upload_policy("policy", true, component(path))
                .await
                .expect("policy uploaded");
        }
        TestTenant {
            id,
            agent,
            reviewer,
            admin,
        }
    }

    /// The oldest pending escalation of the reviewer's tenant, once there is one (polled
    /// every 100 ms for at most 30 s: a call held by another process appears when it does).
    pub async fn pending_escalation(&self, reviewer: &str) -> Value {
        for _ in 0..300 {
            let (_, page) = self
                .call(Method::GET, "/v1/escalations/pending", Some(reviewer), None)
                .await;
            if let Some(e) = page["escalations"].get(0) {
                return e.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no escalation appeared");
    }

    /// Every audit record of the key's tenant.
    pub async fn audit(&self, key: &str) -> Vec<Value> {
        let client = self.client(key);
        let mut out = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let page = client
                .audit(None, after, Some(1000))
                .await
                .expect("audit page");
            out.extend(page.records);
            match page.next_after_seq {
                Some(a) => after = Some(a),
                None => return out,
            }
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
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
