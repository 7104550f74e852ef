//! Running the gateway: open the store, load the app, bind, serve until a shutdown signal,
//! then finish in-flight requests and flush the store.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::access::Require;
use crate::api::{self, BodyLimits};
use crate::app::{App, AppConfig};
use crate::egress::{EgressPolicy, parse_allowlist};
use crate::store::Store;
use crate::tenants::new_operator_secret;

/// How `writ serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the store (sled's) and key files live; with `store_url`, the key files and this
    /// process's compiled policy artifacts.
    pub data_dir: PathBuf,
    /// A PostgreSQL store (`postgres://…`, `--store`) instead of sled in `data_dir`; any
    /// number of processes may serve the same one.
    pub store_url: Option<String>,
    /// The operator key; when `None`, read from (or created in) `<data_dir>/operator.key`.
    pub operator_key: Option<String>,
    /// The vault's master key (64 hex digits); when `None`, read from (or created in)
    /// `<data_dir>/master.key`.
    pub master_key: Option<String>,
    /// The checkpoint signing key (64 hex digits); when `None`, read from (or created in)
    /// `<data_dir>/checkpoint.key`. Nodes of one store are given the same one.
    pub checkpoint_key: Option<String>,
    /// Gateway settings.
    pub app: AppConfig,
    /// Request body limits.
    pub limits: BodyLimits,
    /// Destinations the egress guard opens: comma-separated networks, addresses and host names
    /// (`--egress-allow`).
    pub egress_allow: String,
    /// A PEM bundle of CAs trusted for outbound HTTPS besides the web PKI roots
    /// (`--egress-ca-file`).
    pub egress_ca_file: Option<PathBuf>,
    /// Serve `/metrics` without a key (`--metrics-public`); otherwise the operator key.
    pub metrics_public: bool,
    /// Connection limits and timeouts.
    pub connections: ConnectionLimits,
    /// Bounds on reads of a whole chain: exports and verifications running at once (gateway
    /// and tenant), and how long an export waits on a client that has stopped reading.
    pub chain_reads: crate::service::audit::ChainReadLimits,
}

/// Limits on clients' connections, so slow or idle clients cannot hold the gateway's
/// connections (or memory) indefinitely.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's line and headers (`--header-timeout-ms`),
    /// counted from when the gateway starts waiting for them: from the connection's start, and
    /// on a kept-alive connection from the end of the previous response, so it also closes a
    /// connection idle that long. The connection is closed without an answer.
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body once the handler starts reading it
    /// (`--body-timeout-ms`). When it runs out the answer is 408 (`request_timeout`) and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// Connections open at once (`--max-connections`). At the cap the gateway stops accepting;
    /// further connections wait in the kernel's listen backlog (then are refused by it) until
    /// one closes.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

impl ServeConfig {
    /// Defaults for `data_dir`, listening on `listen`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            store_url: None,
            operator_key: None,
            master_key: None,
            checkpoint_key: None,
            app: AppConfig::default(),
            limits: BodyLimits::default(),
            egress_allow: String::new(),
            egress_ca_file: None,
            metrics_public: false,
            connections: ConnectionLimits::default(),
            chain_reads: Default::default(),
        }
    }
}

/// A gateway bound to its address, ready to serve.
pub struct Gateway {
    /// The app (for tests and the demo set-up).
    pub app: App,
    listener: TcpListener,
    limits: BodyLimits,
    metrics_public: bool,
    connections: ConnectionLimits,
    /// The operator key in force.
    pub operator_key: String,
    /// Whether the operator key was generated by this start (print it once).
    pub operator_key_generated: bool,
}

/// Reads the operator key file, or creates it (mode 0600) with a new key.
fn operator_key_file(data_dir: &Path) -> anyhow::Result<(String, bool)> {
    let path = data_dir.join("operator.key");
    match std::fs::read_to_string(&path) {
        Ok(key) => return Ok((key.trim().to_owned(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let key = new_operator_secret();
    write_private(&path, key.as_bytes())?;
    Ok((key, true))
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

impl Gateway {
    /// Opens the store, loads everything, and binds the listener.
    pub async fn open(config: ServeConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let store = match &config.store_url {
            None => Store::open(&config.data_dir)
                .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
            Some(url) => {
                let options = writ_store::PgOptions {
                    url: url.clone(),
                    hold: writ_store::Hold::Serving,
                };
                let dir = config.data_dir.clone();
                // Connecting and migrating wait on the database: off the async workers.
                tokio::task::spawn_blocking(move || Store::open_postgres(&options, &dir))
                    .await?
                    .context("opening the PostgreSQL store")?
            }
        };
        let signer = match &config.checkpoint_key {
            Some(hex_key) => crate::checkpoint::CheckpointSigner::from_hex(hex_key)?,
            None => crate::checkpoint::CheckpointSigner::load_or_create(&config.data_dir)?,
        };
        let master_key = crate::vault::master_key(&config.data_dir, config.master_key.as_deref())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let mut app_config = config.app.clone();
        let (allow_nets, allow_hosts) = parse_allowlist(&config.egress_allow)
            .map_err(|e| anyhow::anyhow!("--egress-allow: {e}"))?;
        app_config.egress = EgressPolicy {
            allow_nets,
            allow_hosts,
            own: vec![listener.local_addr()?],
        };
        if let Some(path) = &config.egress_ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            use rustls::pki_types::pem::PemObject as _;
            app_config.egress_roots = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|certs| !certs.is_empty())
                .with_context(|| format!("{}: not a PEM bundle of certificates", path.display()))?;
        }
        let app = App::open(store, app_config, signer, &master_key)?;
        app.audit().set_chain_read_limits(config.chain_reads);
        let (operator_key, operator_key_generated) = match config.operator_key {
            Some(key) => (key, false),
            None => operator_key_file(&config.data_dir)?,
        };
        app.tenants().tenants().install_operator_key(&operator_key);
        Ok(Self {
            app,
            listener,
            limits: config.limits,
            metrics_public: config.metrics_public,
            connections: config.connections,
            operator_key,
            operator_key_generated,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; then stops accepting, lets in-flight requests
    /// finish, and flushes the store.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.serve_with(|_, _| (axum::Router::new(), None), shutdown)
            .await
    }

    /// [`Self::serve`], with the routes `extra` makes (from the app and a token cancelled when
    /// shutdown begins, which long-lived responses such as event streams must end on) served
    /// beside the API's on the same listener, and described in `/openapi.json` by the document
    /// it returns with them.
    pub async fn serve_with(
        self,
        extra: impl FnOnce(App, CancellationToken) -> (axum::Router, Option<utoipa::openapi::OpenApi>),
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = self.app.stopping().clone();
        let (routes, doc) = extra(self.app.clone(), stopping.clone());
        let router =
            api::router_documenting(self.app.clone(), self.limits, self.metrics_public, doc)
                .merge(routes);
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
        };
        accept_loop(self.listener, router, self.connections, shutdown).await;
        self.app
            .shutdown()
            .await
            .context("stopping the background tasks and signing the shutdown checkpoints")?;
        let app = self.app;
        tokio::task::spawn_blocking(move || app.flush())
            .await?
            .context("flushing the store")?;
        tracing::info!("stopped; store flushed");
        Ok(())
    }
}

/// Accepts connections until `shutdown` completes, each served on its own task while it holds
/// one of `limits.max_connections` permits; then stops accepting, shuts the open connections
/// down gracefully (a request in flight is answered, an idle connection closed) and waits for
/// them.
async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        // Answers are small and written whole: without it, Nagle's algorithm can hold one
        // back until the client's delayed acknowledgement.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            serve_request(router.clone(), body_timeout, request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection. Errors about one connection (reset before it was accepted) are skipped;
/// others (out of file descriptors) are logged and retried after a second, as `axum::serve`
/// does.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                tracing::error!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One request through the router, its body given `body_timeout` to arrive; a request whose
/// body ran out of time is answered 408, whatever the handler made of the failed read.
async fn serve_request(
    router: axum::Router,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| DeadlineBody {
        inner: body,
        limit: body_timeout,
        deadline: None,
        timed_out: timed_out.clone(),
    });
    let response = router.oneshot(request).await?;
    if !timed_out.load(Ordering::Relaxed) {
        return Ok(response);
    }
    let body = serde_json::json!({
        "error": {
            "code": "request_timeout",
            "message": format!("the request body did not arrive within {body_timeout:?}"),
        }
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    // The rest of the body may still come; the connection cannot be reused.
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    Ok(response)
}

/// A request body that fails with [`BodyTimedOut`] once `limit` has passed since it was first
/// found not ready (so a body already received, or never read, starts no timer).
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// The request body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut(limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Keys minted for the demo tenant.
#[derive(Debug, Clone)]
pub struct DemoKeys {
    /// The demo tenant.
    pub tenant_id: String,
    /// An agent key (any agent id).
    pub agent: String,
    /// A reviewer key.
    pub reviewer: String,
    /// An admin key.
    pub admin: String,
}

/// Sets up the `demo` tenant (created on first use) with `policy` active, and mints a fresh
/// agent, reviewer and admin key for it: secrets are shown once, so each start prints new ones.
pub async fn demo_setup(
    app: &App,
    operator_key: &str,
    policy_name: &str,
    policy: Vec<u8>,
) -> anyhow::Result<DemoKeys> {
    let service = app.tenants();
    let operator = service
        .authenticate(operator_key)
        .context("the operator key is not installed")?;
    let tenant = match service
        .tenants()
        .all()
        .into_iter()
        .find(|t| t.name == "demo")
    {
        Some(t) => t,
        None => service.create_tenant(&operator.require_operator("the demo set-up")?, "demo")?,
    };
    let manager = operator.manage_keys_of(&tenant.id)?;
    let mint = async |role, subject: &str| -> anyhow::Result<String> {
        let (_, secret) = service.create_key(&manager, role, subject, None).await?;
        Ok(secret)
    };
    use crate::tenants::Role;
    let agent = mint(Role::Agent, "demo-agent").await?;
    let reviewer = mint(Role::Reviewer, "reviewer@demo.example").await?;
    let admin = mint(Role::Admin, "admin@demo.example").await?;
    let admin_scope = service
        .authenticate(&admin)
        .context("the demo admin key")?
        .require()?;
    app.policies()
        .upload(&admin_scope, policy_name, policy.into(), true)
        .await?;
    Ok(DemoKeys {
        tenant_id: tenant.id,
        agent,
        reviewer,
        admin,
    })
}
