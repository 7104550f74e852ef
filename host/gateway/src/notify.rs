//! Webhook notifications of escalations: each tenant may register URLs; on
//! `escalation_opened` and `escalation_resolved` the gateway POSTs a JSON event, signed with
//! HMAC-SHA256 under the tenant's webhook secret over the time and the body
//! (`X-Writ-Signature: t=<ms>,v1=<hex>`), retried with exponential backoff, through the
//! egress guard.
//!
//! Delivery never slows a decision: events go on a bounded queue (full: dropped and logged)
//! and are sent by background tasks, each tenant's in its own lane ([`Lanes`]: at most 8 in
//! flight and 256 waiting per tenant, 64 in flight in all), so one tenant's slow endpoints
//! delay only its own events.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::egress::{Egress, EgressError, Outbound};
use crate::shares::Lanes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

/// Deliveries in flight, all tenants together.
const IN_FLIGHT: usize = 64;
/// Deliveries of one tenant in flight.
const TENANT_IN_FLIGHT: usize = 8;
/// Deliveries of one tenant waiting or in flight; beyond, its events are dropped (logged).
const TENANT_QUEUED: usize = 256;

/// Attempts per delivery (the first and the retries).
pub const ATTEMPTS: u32 = 5;
/// Delay before the first retry; doubled for each next one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// An event to deliver to a tenant's webhooks.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Whose event it is: deliveries queue in the tenant's own lane.
    pub tenant_id: String,
    /// Where to send it.
    pub urls: Vec<String>,
    /// The tenant's webhook secret.
    pub secret: String,
    /// `escalation_opened` or `escalation_resolved`.
    pub kind: &'static str,
    /// The JSON body.
    pub body: Value,
}

/// The `X-Writ-Signature` value of `body` sent at `t_ms` under `secret`:
/// `t=<ms>,v1=<hex HMAC-SHA256 of "<ms>.<body>">`. The time is signed with the body, so a
/// receiver that refuses old timestamps cannot be sent a captured delivery again later.
pub fn signature(secret: &str, t_ms: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t_ms},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The sending side of the delivery queue. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Notification>,
}

impl Notifier {
    /// Starts the delivery task on `tasks`; it and every delivery in flight stop at `cancel`
    /// (an event cut off by shutdown is not delivered).
    pub fn start(
        tasks: &TaskTracker,
        cancel: CancellationToken,
        egress: Egress,
        clock: SharedClock,
    ) -> Self {
        let (queue, mut rx) = mpsc::channel::<Notification>(10_000);
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        let lanes = Lanes::new(TENANT_IN_FLIGHT, TENANT_QUEUED);
        let deliveries = tasks.clone();
        tasks.spawn(async move {
            loop {
                let n = tokio::select! {
                    () = cancel.cancelled() => break,
                    n = rx.recv() => match n {
                        Some(n) => n,
                        None => break,
                    },
                };
                let bytes = serde_json::to_vec(&n.body).expect("events serialize");
                let secret = Arc::new(n.secret);
                for url in n.urls {
                    // The dispatcher never waits: a tenant whose endpoints are slow fills its
                    // own lane, and its further events are dropped, not everyone's delayed.
                    let Some(ticket) = lanes.try_enter(&n.tenant_id) else {
                        tracing::warn!(tenant = %n.tenant_id, url, "the tenant's webhook deliveries are queued at their bound; event dropped");
                        continue;
                    };
                    let (egress, bytes, secret, cancel, clock, in_flight) = (
                        egress.clone(),
                        bytes.clone(),
                        secret.clone(),
                        cancel.clone(),
                        clock.clone(),
                        in_flight.clone(),
                    );
                    deliveries.spawn(async move {
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = async {
                                let _tenant = ticket.slot().await;
                                let Ok(_permit) = in_flight.acquire_owned().await else { return };
                                deliver(&egress, &clock, &url, n.kind, bytes, &secret).await;
                            } => {}
                        }
                    });
                }
            }
        });
        Self { queue }
    }

    /// Queues an event; never waits. A full queue drops it (logged).
    pub fn send(&self, notification: Notification) {
        if notification.urls.is_empty() {
            return;
        }
        if let Err(e) = self.queue.try_send(notification) {
            tracing::warn!(error = %e, "webhook queue full; event dropped");
        }
    }
}

async fn deliver(
    egress: &Egress,
    clock: &SharedClock,
    url: &str,
    kind: &str,
    body: Vec<u8>,
    secret: &str,
) {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        tracing::error!(url, "webhook URL does not parse");
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-writ-event",
        HeaderValue::from_str(kind).expect("event kinds are ASCII"),
    );
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        // Signed at each attempt: a retry carries its own time.
        let signed = signature(secret, clock.now_ms(), &body);
        headers.insert(
            "x-writ-signature",
            HeaderValue::from_str(&signed).expect("signatures are ASCII"),
        );
        let sent = egress
            .send(Outbound {
                method: reqwest::Method::POST,
                url: parsed.clone(),
                headers: headers.clone(),
                body: Some(body.clone()),
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(5),
                redirects: 0,
            })
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(url, attempt, status = %r.status(), "webhook refused"),
            Err(e @ EgressError::Denied(_)) => {
                tracing::error!(url, error = %e, "webhook refused by the egress guard");
                return;
            }
            Err(e) => tracing::warn!(url, attempt, error = %e, "webhook unreachable"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(
        url,
        kind,
        "webhook delivery failed after {ATTEMPTS} attempts"
    );
}
