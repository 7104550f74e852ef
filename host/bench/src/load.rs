//! The load: keep-alive connections driving `POST /v1/gateway/execute`, and [`run_load`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
use tokio::net::TcpStream;

use crate::audit_window::scrape_metrics;
use crate::loopback::is_loopback;
use crate::report::merge;
use crate::{
    AuditWindow, BenchError, CallKind, Latency, MAX_CONNECTIONS, MAX_DURATION, MAX_REQUESTS, Mix,
    Report, Result, cpu_seconds, machine_cpu_ticks,
};

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
    /// The operator key, to read the gateway's `/metrics` (the audit writer's window).
    #[serde(skip)]
    pub metrics_key: Option<String>,
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

struct Shared {
    /// The gateways loaded, with their `Host` headers: connection `i` goes to the `i % n`th.
    targets: Vec<(SocketAddr, HeaderValue)>,
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
    run_load_spread(target, &[addr], keys, pid, config).await
}

/// [`run_load`] spread over several gateways (nodes of one store): connection `i` goes to
/// `addrs[i % n]`. CPU and `/metrics` are read from the first (`pid` is its process).
pub async fn run_load_spread(
    target: &str,
    addrs: &[SocketAddr],
    keys: &[String],
    pid: Option<u32>,
    config: &LoadConfig,
) -> Result<Report> {
    config.validate()?;
    let Some(&addr) = addrs.first() else {
        return Err(BenchError::Invalid("no gateway to load".into()));
    };
    if let Some(far) = addrs.iter().find(|a| !is_loopback(a.ip())) {
        return Err(BenchError::NotLoopback(far.to_string()));
    }
    if keys.is_empty() {
        return Err(BenchError::Invalid("no agent keys to load with".into()));
    }
    let keys = keys
        .iter()
        .map(|k| HeaderValue::from_str(k).map_err(|_| BenchError::Invalid("bad key".into())))
        .collect::<Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        targets: addrs
            .iter()
            .map(|a| {
                let host =
                    HeaderValue::from_str(&a.to_string()).expect("an address is a valid header");
                (*a, host)
            })
            .collect(),
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
    let metrics_key = config.metrics_key.clone();
    let at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu = (
            pid.and_then(cpu_seconds),
            cpu_seconds(std::process::id()),
            machine_cpu_ticks(),
        );
        (cpu, scrape_metrics(addr, metrics_key.as_deref()).await)
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
    let audit = match (
        metrics_at_start,
        scrape_metrics(addr, config.metrics_key.as_deref()).await,
    ) {
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

pub(crate) async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
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
pub(crate) fn execute_request(
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

pub(crate) async fn send(
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
pub(crate) fn decision_of(body: &[u8]) -> &'static str {
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
    let (addr, host) = &shared.targets[conn % shared.targets.len()];
    let mut sender = connect(*addr).await?;
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
        let answer = send(&mut sender, execute_request(path, host, key, body.clone())).await;
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
                sender = connect(*addr).await?;
            }
            Ok(_) => consecutive_failures = 0,
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let ok = LoadConfig {
            connections: 64,
            stop: Stop::Seconds(5.0),
            warmup_s: 1.0,
            mix: Mix::default(),
            metrics_key: None,
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
}
