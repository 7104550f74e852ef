//! Setting up bench tenants over the API, and holding escalations open to measure them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use serde::Serialize;
use writ_client::Client;
use writ_client::wire::{CreateKeyBody, PatchTenantBody};

use crate::load::{connect, decision_of, execute_request, send};
use crate::{BenchError, CallKind, LoadConfig, MAX_HELD, Result, Stop, rss_bytes, run_load};

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
    let operator = Client::new(base, operator_key)?;
    let mut tenants = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let id = operator.create_tenant(&name).await?.tenant_id;
        // Over-limit calls must stay ESCALATE for the whole run: no pending cap to reach, and
        // no hold that runs out (and turns the run into one that also expires escalations).
        let limits = PatchTenantBody {
            max_pending_escalations: Some(BENCH_MAX_PENDING),
            escalation_hold_s: Some(BENCH_HOLD_S),
            // Checked on every call as for any tenant, but never binding: the load measures
            // the gateway, not this tenant's share of it.
            eval_ms_per_s: Some(60_000),
            max_evaluations: Some(1_024),
            ..PatchTenantBody::default()
        };
        operator.patch_tenant(&id, &limits).await?;
        let mut keys = Vec::new();
        for role in ["admin", "agent", "reviewer"] {
            let key = CreateKeyBody {
                role: role.into(),
                subject: format!("{role}@{name}.bench"),
                agent_id: None,
            };
            keys.push(operator.create_key(&id, &key).await?.api_key);
        }
        operator
            .with_key(&keys[0])
            .upload_policy(&name, true, distinct_component(policy, &name))
            .await?;
        tenants.push(BenchTenant {
            id,
            agent_key: keys[1].clone(),
            reviewer_key: keys[2].clone(),
        });
    }
    Ok(tenants)
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
/// Waits (at most two minutes) until the gateway at `addr` takes `agent_key` and has its
/// tenant's policy loaded: another node of a store hears of both, and compiles the policy,
/// after the set-up made them through the first. Each probe is one recorded decision.
pub async fn wait_until_serving(addr: std::net::SocketAddr, agent_key: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let probe = serde_json::json!({
        "session_id": "bench-probe", "agent_id": "bench-probe", "action": "bench.probe",
        "parameters": {},
    });
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(120) {
        let answer = client
            .post(format!("http://{addr}/v1/gateway/execute?wait=0"))
            .header("X-PROVENANCE-API-KEY", agent_key)
            .json(&probe)
            .send()
            .await;
        if let Ok(r) = answer
            && r.status() == 200
            && let Ok(body) = r.json::<serde_json::Value>().await
            && body["codes"] != serde_json::json!(["no_active_policy"])
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(BenchError::Invalid(format!(
        "the gateway on {addr} did not take the bench's keys and policy within two minutes"
    )))
}

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
    let reviewer = Client::new(base, &tenant.reviewer_key)?;
    let pending = async || -> Result<Vec<String>> {
        let list = reviewer.pending_escalations().await?;
        Ok(list
            .escalations
            .into_iter()
            .map(|e| e.escalation_id)
            .collect())
    };
    // Warm the tenant's policy and the instance pool first (a few hundred calls that are not
    // held), so the difference measured is the held calls, not first-use costs.
    let warm = LoadConfig {
        connections: 16,
        stop: Stop::Requests(400),
        warmup_s: 0.0,
        mix: "payment=1".parse()?,
        metrics_key: None,
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
        reviewer.reject(&id, Some("writ bench: released")).await?;
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
