//! The load harness behind `writ bench`: it drives `POST /v1/gateway/execute` on a gateway on
//! loopback with C keep-alive connections and a configurable mix of calls, for N requests or T
//! seconds, and reports requests/s and latency percentiles. The same load is run against the
//! floor (a bare axum route that parses the same JSON, [`crate::api::floor_router`]) seconds
//! apart, so Writ is reported as a ratio of what the machine can do at all.
//!
//! Also here: setting up bench tenants over the HTTP API (each with its own copy of the policy,
//! so every tenant compiles and holds its own component), holding escalations open to measure
//! their memory, and reading a process's resident memory and CPU time and the machine's idle
//! time.
//!
//! Everything is bounded (connections, requests, seconds) and refuses any address that is not
//! loopback: this is a tool for measuring one's own machine, not for loading someone else's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;

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
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP failed on a connection that had worked.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// Setting up tenants, keys or policies over the API failed.
    #[error("setting up the gateway: {0}")]
    Setup(String),
}

/// Result of the load harness.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Parses `http://host:port` and resolves it, refusing anything but loopback.
pub fn loopback_addr(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Invalid(format!("`{url}`: only http:// URLs are supported")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|e| BenchError::Invalid(format!("`{url}`: {e}")))?
        .collect();
    match addrs.iter().find(|a| is_loopback(a.ip())) {
        Some(addr) if addrs.iter().all(|a| is_loopback(a.ip())) => Ok(*addr),
        _ => Err(BenchError::NotLoopback(authority.to_owned())),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A kind of call in the load mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// `payments.initiate` under the limit in a pre-approved currency (ALLOW under
    /// payments-limits).
    Payment,
    /// `email.send` (ALLOW).
    Email,
    /// An action the policy does not know (BLOCK `action_not_allowed`).
    Unknown,
    /// A payment over the limit, sent with `?wait=0` (ESCALATE, not held).
    OverLimit,
}

/// Pre-approved currencies the payments rotate over.
const CURRENCIES: [&str; 3] = ["GBP", "EUR", "USD"];

impl CallKind {
    const ALL: [Self; 4] = [Self::Payment, Self::Email, Self::Unknown, Self::OverLimit];

    fn name(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Email => "email",
            Self::Unknown => "unknown",
            Self::OverLimit => "over_limit",
        }
    }

    /// The request path and body of the `i`th call of this kind on connection `conn`.
    fn request(self, conn: usize, i: usize) -> (&'static str, Bytes) {
        let (path, action, parameters) = match self {
            Self::Payment => (
                "/v1/gateway/execute",
                "payments.initiate",
                json!({
                    "amount": 1 + (i * 37) % 499,
                    "currency": CURRENCIES[i % 3],
                    "recipient_id": format!("rec_{:06}", i % 1000),
                }),
            ),
            Self::Email => (
                "/v1/gateway/execute",
                "email.send",
                json!({
                    "to": format!("customer{i}@example.com"),
                    "subject": format!("Invoice {i}"),
                    "body": "Please find your invoice attached.",
                }),
            ),
            Self::Unknown => (
                "/v1/gateway/execute",
                "github.repos.delete",
                json!({"owner": "acme", "repo": format!("repo-{i}")}),
            ),
            Self::OverLimit => (
                "/v1/gateway/execute?wait=0",
                "payments.initiate",
                json!({
                    "amount": 501 + (i * 97) % 9000,
                    "currency": "GBP",
                    "recipient_id": format!("rec_{:06}", i % 1000),
                }),
            ),
        };
        let body = json!({
            "session_id": format!("bench-{conn}-{}", i % 16),
            "agent_id": format!("bench-agent-{conn}"),
            "action": action,
            "decision": "ALLOW",
            "parameters": parameters,
        });
        (path, Bytes::from(body.to_string()))
    }
}

/// Relative weights of the call kinds, e.g. `payment=70,email=15,unknown=10,over_limit=5`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mix(BTreeMap<CallKind, u32>);

impl Default for Mix {
    fn default() -> Self {
        "payment=70,email=15,unknown=10,over_limit=5"
            .parse()
            .expect("the default mix parses")
    }
}

impl FromStr for Mix {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self> {
        let mut weights = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| {
                BenchError::Invalid(format!("mix entry `{part}`: want kind=weight"))
            })?;
            let kind = CallKind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    BenchError::Invalid(format!(
                        "mix kind `{name}`: want payment, email, unknown or over_limit"
                    ))
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w| *w <= 1000)
                .ok_or_else(|| {
                    BenchError::Invalid(format!("mix weight `{weight}`: want 0..=1000"))
                })?;
            weights.insert(kind, weight);
        }
        if weights.values().all(|w| *w == 0) {
            return Err(BenchError::Invalid("the mix has no weight".into()));
        }
        Ok(Self(weights))
    }
}

impl Mix {
    /// One cycle of the mix, interleaved (smooth weighted round robin), so a short run still
    /// sees every kind in proportion.
    fn cycle(&self) -> Vec<CallKind> {
        let total: i64 = self.0.values().map(|w| i64::from(*w)).sum();
        let mut current: BTreeMap<CallKind, i64> = self.0.keys().map(|k| (*k, 0)).collect();
        (0..total)
            .map(|_| {
                for (kind, c) in current.iter_mut() {
                    *c += i64::from(self.0[kind]);
                }
                let (&kind, _) = current
                    .iter()
                    .max_by_key(|(k, c)| (**c, std::cmp::Reverse(**k)))
                    .expect("the mix has kinds");
                *current.get_mut(&kind).expect("present") -= total;
                kind
            })
            .collect()
    }
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// After this many measured requests.
    Requests(u64),
    /// After this long (measured, after the warm-up).
    Seconds(f64),
}

/// How to load a target.
#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    /// Concurrent keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// When to stop.
    pub stop: Stop,
    /// Unmeasured load first, seconds.
    pub warmup_s: f64,
    /// The call mix.
    pub mix: Mix,
}

impl LoadConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(BenchError::Invalid(format!(
                "connections must be 1..={MAX_CONNECTIONS}"
            )));
        }
        let max_s = MAX_DURATION.as_secs_f64();
        match self.stop {
            Stop::Requests(n) if !(1..=MAX_REQUESTS).contains(&n) => {
                return Err(BenchError::Invalid(format!(
                    "requests must be 1..={MAX_REQUESTS}"
                )));
            }
            Stop::Seconds(s) if !(s > 0.0 && s <= max_s) => {
                return Err(BenchError::Invalid(format!(
                    "duration must be over 0 and at most {max_s} s"
                )));
            }
            _ => {}
        }
        if !(0.0..=60.0).contains(&self.warmup_s) {
            return Err(BenchError::Invalid("warm-up must be 0..=60 s".into()));
        }
        Ok(())
    }
}

/// Latency percentiles of a run, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `floor` or `writ`.
    pub target: String,
    /// Which round of a multi-round run (from 1); each round loads the floor, then the gateway.
    pub round: usize,
    /// Concurrent connections.
    pub connections: usize,
    /// Measured requests answered or failed.
    pub requests: u64,
    /// Failed requests: transport errors and non-2xx answers.
    pub errors: u64,
    /// Measured wall time, seconds.
    pub seconds: f64,
    /// `requests / seconds`.
    pub requests_per_second: f64,
    /// Latency of every measured request (answered or not), microseconds.
    pub latency_us: Latency,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// 2xx answers by `decision`.
    pub decisions: BTreeMap<String, u64>,
    /// Requests sent by kind.
    pub sent: BTreeMap<CallKind, u64>,
    /// CPU time (user + system, all threads) the target's process spent per measured request,
    /// microseconds, when its process id is known (Linux).
    pub server_cpu_us_per_request: Option<f64>,
    /// CPU time the load generator (this process) spent per measured request, microseconds.
    pub client_cpu_us_per_request: Option<f64>,
    /// Share of the machine's CPU time that went unused (idle or waiting on I/O) in the
    /// measured window, percent (Linux). With the generator and the target sharing the cores,
    /// time left here is time neither had work to run: e.g. every connection waiting on a disk.
    pub machine_idle_percent: Option<f64>,
    /// The gateway's durable audit over the measured window (a gateway only: the floor has
    /// none), from its `/metrics` read when the window opened and when it closed.
    pub audit: Option<AuditWindow>,
}

/// What the gateway's audit writer did in a measured window: its batches (group commits), each
/// one transaction and one durable flush, which every request in the batch waits on before it
/// is answered. From the writer's histograms in `/metrics`, so the flush times are bounds: the
/// upper edge of the bucket the percentile falls in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditWindow {
    /// Batches written.
    pub batches: u64,
    /// Records written in them.
    pub records: u64,
    /// Share of the batches that held a single record, percent.
    pub single_record_percent: f64,
    /// The median flush took at most this long, microseconds (`None`: beyond the histogram).
    pub flush_p50_us: Option<f64>,
    /// The 99th-percentile flush took at most this long, microseconds.
    pub flush_p99_us: Option<f64>,
    /// Time spent in flushes as a share of the window, percent. The writer flushes one batch
    /// at a time, so this is how much of the window some batch was waiting on the disk.
    pub flushing_percent: f64,
}

impl AuditWindow {
    /// The window between two `/metrics` texts of the same gateway, `seconds` long; `None` if
    /// either lacks the writer's histograms or nothing was written.
    pub fn between(start: &str, end: &str, seconds: f64) -> Option<Self> {
        let histogram = |name| -> Option<Scraped> {
            Scraped::parse(end, name)?.since(&Scraped::parse(start, name)?)
        };
        let (batch, flush) = (
            histogram("writ_audit_batch_records")?,
            histogram("writ_audit_flush_seconds")?,
        );
        if batch.count == 0 || seconds <= 0.0 {
            return None;
        }
        let single = batch.buckets.first().filter(|(le, _)| *le == 1.0)?.1;
        let micros = |q| {
            flush
                .upper_bound(q)
                .filter(|s| s.is_finite())
                .map(|s| s * 1e6)
        };
        Some(Self {
            batches: batch.count,
            records: batch.sum.round() as u64,
            single_record_percent: 100.0 * single as f64 / batch.count as f64,
            flush_p50_us: micros(0.50),
            flush_p99_us: micros(0.99),
            flushing_percent: 100.0 * flush.sum / seconds,
        })
    }
}

/// One histogram of an OpenMetrics text: cumulative counts by bucket upper bound, sum, count.
#[derive(Debug, Default, PartialEq)]
struct Scraped {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Scraped {
    /// The histogram `name` in `text`, if it has one (and it parses).
    fn parse(text: &str, name: &str) -> Option<Self> {
        let mut histogram = Self::default();
        let mut found = false;
        for line in text.lines() {
            let Some((series, value)) = line.strip_prefix(name).and_then(|l| l.rsplit_once(' '))
            else {
                continue;
            };
            match series {
                "_sum" => histogram.sum = value.parse().ok()?,
                "_count" => histogram.count = value.parse().ok()?,
                _ => match series
                    .strip_prefix("_bucket{le=\"")
                    .and_then(|s| s.strip_suffix("\"}"))
                {
                    Some("+Inf") => histogram.buckets.push((f64::INFINITY, value.parse().ok()?)),
                    Some(le) => histogram
                        .buckets
                        .push((le.parse().ok()?, value.parse().ok()?)),
                    None => continue,
                },
            }
            found = true;
        }
        found.then_some(histogram)
    }

    /// What was added since `earlier` (the same histogram, read before); `None` if the
    /// buckets differ or a count went down (another process, or a restart).
    fn since(&self, earlier: &Self) -> Option<Self> {
        if self.buckets.len() != earlier.buckets.len() {
            return None;
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|(&(le, now), &(was_le, then))| {
                (le == was_le).then_some((le, now.checked_sub(then)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            buckets,
            sum: self.sum - earlier.sum,
            count: self.count.checked_sub(earlier.count)?,
        })
    }

    /// The upper bound of the bucket the `q` quantile falls in.
    fn upper_bound(&self, q: f64) -> Option<f64> {
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(le, _)| *le)
    }
}

/// An HTTP client for the gateway on loopback: never through a proxy the environment names.
fn loopback_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| BenchError::Setup(format!("an HTTP client: {e}")))
}

/// The `/metrics` text of the gateway at `addr`, if it serves one.
async fn scrape_metrics(addr: SocketAddr) -> Option<String> {
    let response = loopback_client()
        .ok()?
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

struct Shared {
    addr: SocketAddr,
    host: HeaderValue,
    keys: Vec<HeaderValue>,
    measure_from: Instant,
    stop: Stop,
    claimed: AtomicU64,
}

struct ConnStats {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    decisions: BTreeMap<String, u64>,
    sent: BTreeMap<CallKind, u64>,
    errors: u64,
    last: Option<Instant>,
}

/// Loads `addr`'s `POST /v1/gateway/execute` with `config`, authenticating each request with
/// one of `keys` (agent keys, rotated so every tenant is touched), and reports. With the
/// target's `pid`, also the CPU time it spent per measured request.
pub async fn run_load(
    target: &str,
    addr: SocketAddr,
    keys: &[String],
    pid: Option<u32>,
    config: &LoadConfig,
) -> Result<Report> {
    config.validate()?;
    if !is_loopback(addr.ip()) {
        return Err(BenchError::NotLoopback(addr.to_string()));
    }
    if keys.is_empty() {
        return Err(BenchError::Invalid("no agent keys to load with".into()));
    }
    let keys = keys
        .iter()
        .map(|k| HeaderValue::from_str(k).map_err(|_| BenchError::Invalid("bad key".into())))
        .collect::<Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        addr,
        host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header"),
        keys,
        measure_from: Instant::now() + Duration::from_secs_f64(config.warmup_s),
        stop: config.stop,
        claimed: AtomicU64::new(0),
    });
    let cycle = config.mix.cycle();
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..config.connections {
        let requests: Vec<(CallKind, &'static str, Bytes)> = cycle
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let (path, body) = kind.request(conn, i);
                (*kind, path, body)
            })
            .collect();
        tasks.spawn(connection(conn, shared.clone(), requests));
    }
    // CPU time of the target, of this process and of the machine, and the target's
    // `/metrics`, read when the measured window opens (CPU first: `/metrics` is a round trip).
    let measure_from = shared.measure_from;
    let at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu = (
            pid.and_then(cpu_seconds),
            cpu_seconds(std::process::id()),
            machine_cpu_ticks(),
        );
        (cpu, scrape_metrics(addr).await)
    });
    let mut latency = latency_histogram();
    let (mut statuses, mut decisions, mut sent) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let (mut errors, mut last) = (0, shared.measure_from);
    while let Some(joined) = tasks.join_next().await {
        let stats =
            joined.map_err(|e| BenchError::Invalid(format!("a connection task failed: {e}")))??;
        latency.add(&stats.latency).expect("same bounds");
        merge(&mut statuses, stats.statuses);
        merge(&mut decisions, stats.decisions);
        merge(&mut sent, stats.sent);
        errors += stats.errors;
        last = last.max(stats.last.unwrap_or(last));
    }
    let seconds = last.duration_since(shared.measure_from).as_secs_f64();
    let requests = latency.len();
    let ((server_start, client_start, machine_start), metrics_at_start) =
        at_start.await.unwrap_or_default();
    let per_request = |start: Option<f64>, end: Option<f64>| match (start, end) {
        (Some(start), Some(end)) if requests > 0 => Some((end - start) * 1e6 / requests as f64),
        _ => None,
    };
    let server_cpu_us_per_request = per_request(server_start, pid.and_then(cpu_seconds));
    let client_cpu_us_per_request = per_request(client_start, cpu_seconds(std::process::id()));
    let machine_idle_percent = match (machine_start, machine_cpu_ticks()) {
        (Some(start), Some(end)) => end.idle_percent_since(&start),
        _ => None,
    };
    let audit = match (metrics_at_start, scrape_metrics(addr).await) {
        (Some(start), Some(end)) => AuditWindow::between(&start, &end, seconds),
        _ => None,
    };
    Ok(Report {
        target: target.to_owned(),
        round: 1,
        connections: config.connections,
        requests,
        errors,
        seconds,
        requests_per_second: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        latency_us: Latency {
            p50: latency.value_at_quantile(0.50),
            p90: latency.value_at_quantile(0.90),
            p99: latency.value_at_quantile(0.99),
            max: latency.max(),
            mean: latency.mean(),
        },
        statuses,
        decisions,
        sent,
        server_cpu_us_per_request,
        client_cpu_us_per_request,
        machine_idle_percent,
        audit,
    })
}

fn merge<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| BenchError::Connect { addr, source })?;
    stream
        .set_nodelay(true)
        .map_err(|source| BenchError::Connect { addr, source })?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; errors surface on the sender.
        let _ = conn.await;
    });
    Ok(sender)
}

/// An execute request: `body` to `path`, authenticated with `key`.
fn execute_request(
    path: &str,
    host: &HeaderValue,
    key: &HeaderValue,
    body: Bytes,
) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json")
        .header("x-provenance-api-key", key)
        .body(Full::new(body))
        .expect("a valid request")
}

/// A latency histogram in microseconds, up to an hour, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The `decision` of an execute answer, without parsing the whole body.
fn decision_of(body: &[u8]) -> &'static str {
    const FIELD: &[u8] = br#""decision":""#;
    let Some(at) = body.windows(FIELD.len()).position(|w| w == FIELD) else {
        return "none";
    };
    let rest = &body[at + FIELD.len()..];
    ["ALLOW", "BLOCK", "ESCALATE"]
        .into_iter()
        .find(|d| rest.starts_with(d.as_bytes()) && rest.get(d.len()) == Some(&b'"'))
        .unwrap_or("other")
}

async fn connection(
    conn: usize,
    shared: Arc<Shared>,
    requests: Vec<(CallKind, &'static str, Bytes)>,
) -> Result<ConnStats> {
    let mut stats = ConnStats {
        latency: latency_histogram(),
        statuses: BTreeMap::new(),
        decisions: BTreeMap::new(),
        sent: BTreeMap::new(),
        errors: 0,
        last: None,
    };
    let mut sender = connect(shared.addr).await?;
    let mut consecutive_failures = 0;
    for j in 0.. {
        let started = Instant::now();
        let measured = started >= shared.measure_from;
        if measured {
            let done = match shared.stop {
                Stop::Requests(n) => shared.claimed.fetch_add(1, Ordering::Relaxed) >= n,
                Stop::Seconds(s) => started.duration_since(shared.measure_from).as_secs_f64() >= s,
            };
            if done {
                break;
            }
        }
        let (kind, path, body) = &requests[j % requests.len()];
        let key = &shared.keys[(conn + j) % shared.keys.len()];
        let answer = send(
            &mut sender,
            execute_request(path, &shared.host, key, body.clone()),
        )
        .await;
        let finished = Instant::now();
        if measured {
            let micros = finished.duration_since(started).as_micros() as u64;
            stats.latency.saturating_record(micros.max(1));
            *stats.sent.entry(*kind).or_default() += 1;
            stats.last = Some(finished);
            match &answer {
                Ok((status, body)) => {
                    *stats.statuses.entry(status.as_u16()).or_default() += 1;
                    if status.is_success() {
                        *stats
                            .decisions
                            .entry(decision_of(body).to_owned())
                            .or_default() += 1;
                    } else {
                        stats.errors += 1;
                    }
                }
                Err(_) => stats.errors += 1,
            }
        }
        match answer {
            Err(e) => {
                consecutive_failures += 1;
                if consecutive_failures > 10 {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                sender = connect(shared.addr).await?;
            }
            Ok(_) => consecutive_failures = 0,
        }
    }
    Ok(stats)
}

/// A tenant set up for a bench run: its id and keys.
#[derive(Debug, Clone)]
pub struct BenchTenant {
    /// The tenant id.
    pub id: String,
    /// An agent key (any agent id).
    pub agent_key: String,
    /// A reviewer key.
    pub reviewer_key: String,
}

/// `policy` with a custom section naming `tag` appended: the same rules, but a distinct
/// component (and policy id), so each bench tenant compiles and holds its own copy as it would
/// with its own policy.
pub fn distinct_component(policy: &[u8], tag: &str) -> Vec<u8> {
    use wasm_encoder::ComponentSection as _;
    let mut bytes = policy.to_vec();
    wasm_encoder::CustomSection {
        name: "writ-bench".into(),
        data: tag.as_bytes().into(),
    }
    .append_to_component(&mut bytes);
    bytes
}

/// The pending-escalation cap of the tenants the bench creates: more than any bounded run opens.
pub const BENCH_MAX_PENDING: usize = 100_000_000;
/// The escalation hold of the tenants the bench creates, seconds: longer than any bounded run.
pub const BENCH_HOLD_S: u64 = 24 * 3600;

/// Creates `count` tenants named `{prefix}-{i}` on the gateway at `base` (operator key), each
/// with its own copy of `policy` active and an agent and reviewer key,
/// and with [`BENCH_MAX_PENDING`] and [`BENCH_HOLD_S`] as its escalation limits.
pub async fn setup_tenants(
    base: &str,
    operator_key: &str,
    policy: &[u8],
    prefix: &str,
    count: usize,
) -> Result<Vec<BenchTenant>> {
    let client = loopback_client()?;
    let base = base.trim_end_matches('/');
    let call = async |method: reqwest::Method, path: String, key: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request).await
    };
    let mut tenants = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let tenant = call(
            reqwest::Method::POST,
            "/v1/admin/tenants".into(),
            operator_key,
            Some(json!({"name": name})),
        )
        .await?;
        let id = field(&tenant, "tenant_id")?;
        // Over-limit calls must stay ESCALATE for the whole run: no pending cap to reach, and
        // no hold that runs out (and turns the run into one that also expires escalations).
        call(
            reqwest::Method::PATCH,
            format!("/v1/admin/tenants/{id}"),
            operator_key,
            Some(json!({
                "max_pending_escalations": BENCH_MAX_PENDING,
                "escalation_hold_s": BENCH_HOLD_S,
            })),
        )
        .await?;
        let mut keys = Vec::new();
        for role in ["admin", "agent", "reviewer"] {
            let key = call(
                reqwest::Method::POST,
                format!("/v1/admin/tenants/{id}/keys"),
                operator_key,
                Some(json!({"role": role, "subject": format!("{role}@{name}.bench")})),
            )
            .await?;
            keys.push(field(&key, "api_key")?);
        }
        let upload = client
            .post(format!("{base}/v1/policies?name={name}&activate=true"))
            .bearer_auth(&keys[0])
            .header("content-type", "application/wasm")
            .body(distinct_component(policy, &name));
        answer(upload).await?;
        tenants.push(BenchTenant {
            id,
            agent_key: keys[1].clone(),
            reviewer_key: keys[2].clone(),
        });
    }
    Ok(tenants)
}

async fn answer(request: reqwest::RequestBuilder) -> Result<Value> {
    let response = request
        .send()
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| BenchError::Setup(format!("{status}: {e}")))?;
    if !status.is_success() {
        return Err(BenchError::Setup(format!("{status}: {body}")));
    }
    Ok(body)
}

fn field(v: &Value, name: &str) -> Result<String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Setup(format!("no `{name}` in {v}")))
}

/// Resident memory of process `pid`, bytes (Linux `/proc`; `None` elsewhere).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time process `pid` has spent, user and system, all threads, seconds (Linux `/proc`;
/// `None` elsewhere). `/proc` counts it in the kernel's user-visible tick of 1/100 s.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`;
    // `utime` and `stime` are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The machine's CPU time so far, all CPUs, in the kernel's ticks: `/proc/stat`'s `cpu` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// Idle, and idle waiting on I/O.
    pub unused: u64,
    /// Everything: user, nice, system, idle, I/O wait, interrupts, soft interrupts, steal.
    pub total: u64,
}

impl CpuTicks {
    /// The share of the time between `start` and `self` that went unused, percent; `None` if
    /// no time passed.
    pub fn idle_percent_since(&self, start: &CpuTicks) -> Option<f64> {
        let total = self.total.checked_sub(start.total).filter(|t| *t > 0)?;
        let unused = self.unused.saturating_sub(start.unused);
        Some(100.0 * unused as f64 / total as f64)
    }

    /// Parses `/proc/stat`.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal, then guest time already counted
        // in user and nice.
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        Some(Self {
            unused: ticks.get(3)? + ticks.get(4).copied().unwrap_or(0),
            total: ticks.iter().sum(),
        })
    }
}

/// The machine's CPU time so far (Linux `/proc`; `None` elsewhere).
pub fn machine_cpu_ticks() -> Option<CpuTicks> {
    CpuTicks::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// What holding escalations open cost.
#[derive(Debug, Clone, Serialize)]
pub struct HeldReport {
    /// Escalations held at once.
    pub held: usize,
    /// The gateway's resident memory before, bytes.
    pub rss_idle_bytes: Option<u64>,
    /// The gateway's resident memory with all of them held, bytes.
    pub rss_held_bytes: Option<u64>,
    /// Held calls that were then answered BLOCK after the reviewer rejected them.
    pub answered: usize,
}

/// Holds `count` escalations of `tenant` open at once (each an over-limit payment on its own
/// connection, waiting for a human), reads the gateway's memory (`pid`), then rejects them all
/// as the tenant's reviewer and checks every held call was answered BLOCK.
pub async fn hold_escalations(
    base: &str,
    addr: SocketAddr,
    tenant: &BenchTenant,
    count: usize,
    pid: Option<u32>,
) -> Result<HeldReport> {
    if !(1..=MAX_HELD).contains(&count) {
        return Err(BenchError::Invalid(format!("held must be 1..={MAX_HELD}")));
    }
    let base = base.trim_end_matches('/');
    let client = loopback_client()?;
    let pending = async || -> Result<Vec<String>> {
        let list = answer(
            client
                .get(format!("{base}/v1/escalations/pending"))
                .bearer_auth(&tenant.reviewer_key),
        )
        .await?;
        Ok(list["escalations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["escalation_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    };
    // Warm the tenant's policy and the instance pool first (a few hundred calls that are not
    // held), so the difference measured is the held calls, not first-use costs.
    let warm = LoadConfig {
        connections: 16,
        stop: Stop::Requests(400),
        warmup_s: 0.0,
        mix: "payment=1".parse()?,
    };
    run_load(
        "warm-up",
        addr,
        std::slice::from_ref(&tenant.agent_key),
        None,
        &warm,
    )
    .await?;
    let before = pending().await?.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_bytes = pid.and_then(rss_bytes);

    let key = HeaderValue::from_str(&tenant.agent_key)
        .map_err(|_| BenchError::Invalid("bad key".into()))?;
    let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..count {
        let (key, host) = (key.clone(), host.clone());
        calls.spawn(async move {
            let (_, body) = CallKind::OverLimit.request(i, i);
            let mut sender = connect(addr).await?;
            let request = execute_request("/v1/gateway/execute?wait=300", &host, &key, body);
            let (status, body) = send(&mut sender, request).await?;
            Ok::<_, BenchError>(status.is_success() && decision_of(&body) == "BLOCK")
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let ids = loop {
        let ids = pending().await?;
        if ids.len() >= before + count {
            break ids;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "only {} of {count} escalations opened in 120 s",
                ids.len() - before
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_held_bytes = pid.and_then(rss_bytes);

    for id in ids {
        answer(
            client
                .post(format!("{base}/v1/escalations/{id}/reject"))
                .bearer_auth(&tenant.reviewer_key)
                .json(&json!({"note": "writ bench: released"})),
        )
        .await?;
    }
    let mut answered = 0;
    while let Some(joined) = calls.join_next().await {
        let blocked =
            joined.map_err(|e| BenchError::Invalid(format!("a held call failed: {e}")))??;
        answered += usize::from(blocked);
    }
    Ok(HeldReport {
        held: count,
        rss_idle_bytes,
        rss_held_bytes,
        answered,
    })
}

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

/// The reports as a table: one row per run, then Writ as a share of the floor. `cpu µs/req` is
/// the target's CPU per request, `gen µs/req` the load generator's: on shared cores both come
/// out of the same machine, so the generator's cost per request is part of each target's.
pub fn table(reports: &[Report]) -> String {
    let rounds = reports.iter().map(|r| r.round).max().unwrap_or(1);
    let mut out = format!(
        "{:<6} {:>5} {:>5} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7}\n",
        "target",
        "round",
        "conns",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cpu µs/req",
        "gen µs/req",
        "idle %"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    let one_decimal = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
    for r in reports {
        out += &format!(
            "{:<6} {:>5} {:>5} {:>9} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>11} {:>11} {:>7}\n",
            r.target,
            r.round,
            r.connections,
            r.requests,
            r.errors,
            r.requests_per_second,
            ms(r.latency_us.p50),
            ms(r.latency_us.p90),
            ms(r.latency_us.p99),
            ms(r.latency_us.max),
            one_decimal(r.server_cpu_us_per_request),
            one_decimal(r.client_cpu_us_per_request),
            one_decimal(r.machine_idle_percent),
        );
    }
    let ratios = ratios(reports);
    if let Some(median) = median(&ratios) {
        if rounds == 1 {
            out += &format!("writ / floor: {median:.1}% of the floor's requests/s\n");
        } else {
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.1}%")).collect();
            out += &format!(
                "writ / floor: median {median:.1}% of the floor's requests/s over {} rounds ({})\n",
                ratios.len(),
                each.join(", ")
            );
        }
    }
    let mut decisions: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for r in reports {
        merge(
            decisions.entry(r.target.as_str()).or_default(),
            r.decisions.clone(),
        );
    }
    for (target, counts) in decisions.iter().filter(|(_, c)| !c.is_empty()) {
        out += &format!("{target} decisions: {counts:?}\n");
    }
    let bound = |us: Option<f64>| {
        us.map_or("beyond the histogram".to_owned(), |us| {
            format!("≤ {us:.0} µs")
        })
    };
    for r in reports {
        if let Some(a) = &r.audit {
            out += &format!(
                "{} round {} audit: {} batches of {:.1} records ({:.0}% single), flush p50 {}, p99 {}, flushing {:.0}% of the window\n",
                r.target,
                r.round,
                a.batches,
                a.records as f64 / a.batches as f64,
                a.single_record_percent,
                bound(a.flush_p50_us),
                bound(a.flush_p99_us),
                a.flushing_percent,
            );
        }
    }
    out
}

/// Writ's requests/s as a percentage of the floor's, for each round that loaded both (in
/// round order).
pub fn ratios(reports: &[Report]) -> Vec<f64> {
    let of = |target: &str, round: usize| {
        reports
            .iter()
            .find(|r| r.target == target && r.round == round)
    };
    let rounds = reports.iter().map(|r| r.round).max().unwrap_or(0);
    (1..=rounds)
        .filter_map(|round| match (of("floor", round), of("writ", round)) {
            (Some(floor), Some(writ)) if floor.requests_per_second > 0.0 => {
                Some(100.0 * writ.requests_per_second / floor.requests_per_second)
            }
            _ => None,
        })
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_interleaves_in_proportion() {
        let mix: Mix = "payment=3,email=1".parse().unwrap();
        let cycle = mix.cycle();
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.iter().filter(|k| **k == CallKind::Payment).count(), 3);
        // Interleaved, not all payments first.
        assert_ne!(cycle.last(), Some(&CallKind::Email));
        let default = Mix::default().cycle();
        assert_eq!(default.len(), 100);
        assert_eq!(
            default
                .iter()
                .filter(|k| **k == CallKind::OverLimit)
                .count(),
            5
        );
        for bad in [
            "",
            "payment",
            "payment=x",
            "bogus=1",
            "payment=0",
            "payment=1001",
        ] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_targets() {
        assert!(loopback_addr("http://127.0.0.1:4587").is_ok());
        assert!(loopback_addr("http://[::1]:4587/v1").is_ok());
        assert!(loopback_addr("http://localhost:4587").is_ok());
        assert!(matches!(
            loopback_addr("http://10.1.2.3:80"),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(loopback_addr("https://127.0.0.1:4587").is_err());
    }

    #[test]
    fn bounds_are_checked() {
        let ok = LoadConfig {
            connections: 64,
            stop: Stop::Seconds(5.0),
            warmup_s: 1.0,
            mix: Mix::default(),
        };
        assert!(ok.validate().is_ok());
        for bad in [
            LoadConfig {
                connections: 0,
                ..ok.clone()
            },
            LoadConfig {
                connections: MAX_CONNECTIONS + 1,
                ..ok.clone()
            },
            LoadConfig {
                stop: Stop::Requests(0),
                ..ok.clone()
            },
            LoadConfig {
                stop: Stop::Seconds(601.0),
                ..ok.clone()
            },
            LoadConfig {
                stop: Stop::Seconds(f64::NAN),
                ..ok.clone()
            },
            LoadConfig {
                warmup_s: 61.0,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decision_is_read_from_the_answer() {
        assert_eq!(
            decision_of(br#"{"decision":"ALLOW","reason":"x"}"#),
            "ALLOW"
        );
        assert_eq!(
            decision_of(br#"{"reason":"x","decision":"ESCALATE"}"#),
            "ESCALATE"
        );
        assert_eq!(decision_of(br#"{"decision":"ALLOWED"}"#), "other");
        assert_eq!(decision_of(br#"{"error":{}}"#), "none");
    }

    fn report(target: &str, round: usize, requests_per_second: f64) -> Report {
        Report {
            target: target.into(),
            round,
            connections: 1,
            requests: 1,
            errors: 0,
            seconds: 1.0,
            requests_per_second,
            latency_us: Latency {
                p50: 1,
                p90: 1,
                p99: 1,
                max: 1,
                mean: 1.0,
            },
            statuses: BTreeMap::new(),
            decisions: BTreeMap::from([("ALLOW".to_owned(), 1)]),
            sent: BTreeMap::new(),
            server_cpu_us_per_request: None,
            client_cpu_us_per_request: None,
            machine_idle_percent: None,
            audit: None,
        }
    }

    #[test]
    fn idle_time_is_read_from_proc_stat() {
        let at = |user: u64, idle: u64, iowait: u64| {
            CpuTicks::parse(&format!(
                "cpu  {user} 0 100 {idle} {iowait} 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2\n"
            ))
            .expect("parses")
        };
        assert_eq!(
            at(1000, 400, 100),
            CpuTicks {
                unused: 500,
                total: 1610
            }
        );
        // 900 more ticks, of which 90 idle and 10 waiting on I/O.
        let percent = at(1800, 490, 110).idle_percent_since(&at(1000, 400, 100));
        assert_eq!(percent, Some(100.0 * 100.0 / 900.0));
        assert_eq!(
            at(1000, 400, 100).idle_percent_since(&at(1000, 400, 100)),
            None
        );
        assert_eq!(CpuTicks::parse("cpu0 1 2 3\n"), None);
        assert_eq!(CpuTicks::parse("cpu  1 x 3 4\n"), None);
        if cfg!(target_os = "linux") {
            assert!(machine_cpu_ticks().is_some_and(|t| t.total >= t.unused));
        }
    }

    #[test]
    fn audit_window_is_read_from_the_writer_histograms() {
        let metrics = crate::metrics::Metrics::default();
        let writer = &metrics.audit_writer;
        let batch = |records: f64, flush_s: f64| {
            writer.batch_records.observe(records);
            writer.flush_seconds.observe(flush_s);
        };
        batch(5.0, 1e-4); // before the window
        let start = metrics.render();
        for (records, flush_s) in [(1.0, 50e-6), (1.0, 100e-6), (10.0, 300e-6), (40.0, 2e-3)] {
            batch(records, flush_s);
        }
        let end = metrics.render();

        let window = AuditWindow::between(&start, &end, 0.0049).expect("a window");
        assert_eq!((window.batches, window.records), (4, 52));
        assert_eq!(window.single_record_percent, 50.0);
        // Bounds are the buckets' upper edges (10 µs doubling): 100 µs is in the 160 µs bucket,
        // 2 ms in the 2.56 ms one.
        let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-6);
        assert!(close(window.flush_p50_us, 160.0), "{window:?}");
        assert!(close(window.flush_p99_us, 2560.0), "{window:?}");
        assert!((window.flushing_percent - 50.0).abs() < 1e-9);
        let mut writ = report("writ", 1, 30.0);
        writ.audit = Some(window);
        let table = table(&[report("floor", 1, 100.0), writ]);
        assert!(
            table.contains(
                "writ round 1 audit: 4 batches of 13.0 records (50% single), \
                 flush p50 ≤ 160 µs, p99 ≤ 2560 µs, flushing 50% of the window"
            ),
            "{table}"
        );

        // Nothing written in the window, a target without the writer's histograms (the
        // floor), and counts that went down (another process) give no window.
        assert_eq!(AuditWindow::between(&end, &end, 1.0), None);
        assert_eq!(AuditWindow::between("", &end, 1.0), None);
        assert_eq!(AuditWindow::between(&end, &start, 1.0), None);
    }

    #[test]
    fn ratios_pair_each_round_and_the_median_is_reported() {
        let reports = [
            report("floor", 1, 100.0),
            report("writ", 1, 30.0),
            report("floor", 2, 80.0),
            report("writ", 2, 20.0),
            report("floor", 3, 50.0),
            report("writ", 3, 20.0),
        ];
        assert_eq!(ratios(&reports), [30.0, 25.0, 40.0]);
        assert_eq!(median(&ratios(&reports)), Some(30.0));
        assert_eq!(median(&[25.0, 40.0]), Some(32.5));
        assert_eq!(median(&[]), None);
        // A round without the floor (`--no-floor`) has no ratio.
        assert!(ratios(&[report("writ", 1, 30.0)]).is_empty());

        let table = table(&reports);
        assert!(
            table.contains(
                "median 30.0% of the floor's requests/s over 3 rounds (30.0%, 25.0%, 40.0%)"
            ),
            "{table}"
        );
        // Decisions are summed over the rounds.
        assert!(table.contains("writ decisions: {\"ALLOW\": 3}"), "{table}");
        let one = super::table(&reports[..2]);
        assert!(
            one.contains("writ / floor: 30.0% of the floor's requests/s"),
            "{one}"
        );
    }

    #[test]
    fn the_table_gives_the_target_and_the_generator_cpu_per_request() {
        let mut writ = report("writ", 1, 30.0);
        writ.server_cpu_us_per_request = Some(130.26);
        writ.client_cpu_us_per_request = Some(35.5);
        let table = table(&[report("floor", 1, 100.0), writ]);
        let lines: Vec<&str> = table.lines().collect();
        let columns = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let header = columns(lines[0]);
        let at = |name: &str| header.iter().position(|h| h == name).expect(name);
        // "cpu µs/req" and "gen µs/req" are two words each in the header.
        assert_eq!(
            &header[at("cpu")..at("cpu") + 4],
            ["cpu", "µs/req", "gen", "µs/req"]
        );
        let floor = columns(lines[1]);
        let writ = columns(lines[2]);
        let n = floor.len();
        assert_eq!(&floor[n - 3..], ["n/a", "n/a", "n/a"], "{table}");
        assert_eq!(&writ[n - 3..], ["130.3", "35.5", "n/a"], "{table}");
    }
}
