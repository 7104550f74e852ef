//! A noisy neighbour: one tenant's calls sent as fast as they are answered, alongside a measured
//! load of another tenant, to see what the first can take from the second.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::loopback::is_loopback;
use crate::{BenchError, MAX_CONNECTIONS, Result};

/// What the flood's calls were answered, by HTTP status (0: no answer).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodReport {
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
}

/// A running flood; [`Flood::stop`] ends it.
pub struct Flood {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<BTreeMap<u16, u64>>,
}

impl Flood {
    /// Starts `connections` keep-alive connections to `addr`, each sending `action` calls with
    /// `key` as soon as the last is answered. A call refused with 429 is sent again 10 ms
    /// later: the pause keeps this process's own CPU for the measured load, not the gateway's.
    pub fn start(addr: SocketAddr, key: &str, action: &str, connections: usize) -> Result<Self> {
        if !is_loopback(addr.ip()) {
            return Err(BenchError::NotLoopback(addr.to_string()));
        }
        if !(1..=MAX_CONNECTIONS).contains(&connections) {
            return Err(BenchError::Invalid(format!(
                "flood connections must be 1..={MAX_CONNECTIONS}"
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("http://{addr}/v1/gateway/execute?wait=0");
        let body = serde_json::json!({
            "session_id": "flood", "agent_id": "flood", "action": action, "parameters": {},
        })
        .to_string();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let (stop, url, body, key) = (stop.clone(), url.clone(), body.clone(), key.to_owned());
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| BenchError::Invalid(e.to_string()))?;
            tasks.spawn(async move {
                let mut statuses = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = client
                        .post(&url)
                        .header("X-PROVENANCE-API-KEY", &key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let status = match sent {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    *statuses.entry(status).or_insert(0) += 1;
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                statuses
            });
        }
        Ok(Self { stop, tasks })
    }

    /// Stops the flood and waits for its calls in flight.
    pub async fn stop(mut self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = FloodReport::default();
        while let Some(Ok(statuses)) = self.tasks.join_next().await {
            for (status, n) in statuses {
                *report.statuses.entry(status).or_insert(0) += n;
            }
        }
        report
    }
}
