//! Fair shares: what one tenant may take of the gateway at once, so that a tenant whose agents
//! flood it, or whose policy runs to its deadline on every call, cannot starve the others.
//!
//! Per tenant, from its [`TenantLimits`]:
//! - a **call rate** (token bucket: `rate_per_s`, `burst`);
//! - an **evaluation-time budget** (`eval_ms_per_s`): every evaluation's wall time is charged to
//!   a bucket refilled at that rate, holding at most one second's worth; while it is in debt the
//!   tenant's calls wait;
//! - a cap on its **evaluations at once** (`max_evaluations`), under the gateway's own slots.
//!
//! A call that cannot be admitted at once waits, asleep, for its turn (so a flood of calls costs
//! the gateway no CPU while it waits), unless its wait would pass `queue_ms` or `max_queued` of
//! the tenant's calls are already waiting so: then it is refused, 429 with `Retry-After`. Counting calls alone would not do: one call can burn milliseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::clock::SharedClock;
use crate::error::{AppError, Result};
use crate::tenants::TenantLimits;

/// Every tenant's share. Cheap to clone.
#[derive(Clone)]
pub struct Shares {
    clock: SharedClock,
    tenants: Arc<Mutex<HashMap<String, Arc<Share>>>>,
}

/// One tenant's buckets and slots.
pub struct Share {
    buckets: Mutex<Buckets>,
    slots: Semaphore,
    /// The `max_evaluations` the slots were made for.
    slot_count: usize,
    queued: AtomicUsize,
}

struct Buckets {
    /// Calls that may start now (negative: reserved ahead).
    tokens: f64,
    /// Evaluation time that may be spent now, ms (negative: in debt).
    budget_ms: f64,
    /// When they were last refilled, ms since the epoch.
    at_ms: u64,
}

/// A call admitted for evaluation: it takes the tenant's evaluation slots through
/// [`Admitted::slot`] and charges its evaluations' time to the tenant's budget.
pub struct Admitted {
    share: Arc<Share>,
    charge: bool,
}

/// A call's place among its tenant's calls waiting for admission, given back when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admitted {
    /// One of the tenant's evaluation slots (waits for one).
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>> {
        self.share.slots.acquire().await.map_err(AppError::internal)
    }

    /// Charges an evaluation's wall time to the tenant's budget.
    pub fn spent(&self, elapsed: Duration) {
        if self.charge {
            let mut buckets = self.share.buckets.lock().expect("share lock");
            buckets.budget_ms -= elapsed.as_secs_f64() * 1000.0;
        }
    }
}

impl Shares {
    /// Shares timed by `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            tenants: Arc::default(),
        }
    }

    fn share(&self, tenant_id: &str, limits: &TenantLimits) -> Arc<Share> {
        let mut tenants = self.tenants.lock().expect("shares lock");
        match tenants.get(tenant_id) {
            Some(share) if share.slot_count == limits.max_evaluations => share.clone(),
            _ => {
                let share = Arc::new(Share {
                    buckets: Mutex::new(Buckets {
                        tokens: f64::from(limits.burst.max(1)),
                        budget_ms: limits.eval_ms_per_s as f64,
                        at_ms: self.clock.now_ms(),
                    }),
                    slots: Semaphore::new(limits.max_evaluations),
                    slot_count: limits.max_evaluations,
                    queued: AtomicUsize::new(0),
                });
                tenants.insert(tenant_id.to_owned(), share.clone());
                share
            }
        }
    }

    /// Admits a call of `tenant_id`: waits for a rate token and for its evaluation budget to be
    /// out of debt, or refuses it ([`AppError::RateLimited`]) when that wait would pass
    /// `queue_ms` or too many of its calls are waiting already.
    pub async fn admit(&self, tenant_id: &str, limits: &TenantLimits) -> Result<Admitted> {
        let share = self.share(tenant_id, limits);
        let wait = {
            let mut b = share.buckets.lock().expect("share lock");
            let now = self.clock.now_ms();
            let elapsed_s = now.saturating_sub(b.at_ms) as f64 / 1000.0;
            b.at_ms = b.at_ms.max(now);
            let max_wait_s = limits.queue_ms as f64 / 1000.0;
            let budget_wait_s = if limits.eval_ms_per_s > 0 {
                let rate = limits.eval_ms_per_s as f64;
                b.budget_ms = (b.budget_ms + elapsed_s * rate).min(rate);
                (-b.budget_ms / rate).max(0.0)
            } else {
                0.0
            };
            if budget_wait_s > max_wait_s {
                return Err(limited(
                    budget_wait_s,
                    "this tenant has used its share of evaluation time",
                ));
            }
            let token_wait_s = if limits.rate_per_s > 0 {
                let rate = f64::from(limits.rate_per_s);
                b.tokens = (b.tokens + elapsed_s * rate).min(f64::from(limits.burst.max(1)));
                let wait = (1.0 - b.tokens).max(0.0) / rate;
                if wait > max_wait_s {
                    return Err(limited(wait, "this tenant's call rate is over its limit"));
                }
                b.tokens -= 1.0;
                wait
            } else {
                0.0
            };
            budget_wait_s.max(token_wait_s)
        };
        if wait > 0.0 {
            let waiting = Waiting(&share.queued);
            if share.queued.fetch_add(1, Ordering::Relaxed) >= limits.max_queued {
                return Err(limited(wait, "too many of this tenant's calls are waiting"));
            }
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            drop(waiting);
        }
        Ok(Admitted {
            charge: limits.eval_ms_per_s > 0,
            share,
        })
    }
}

fn limited(retry_after_s: f64, why: &str) -> AppError {
    let retry_after_s = (retry_after_s.ceil() as u64).max(1);
    AppError::RateLimited {
        retry_after_s,
        message: format!("{why}; retry after {retry_after_s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limits(rate_per_s: u32, burst: u32, eval_ms_per_s: u64, queue_ms: u64) -> TenantLimits {
        TenantLimits {
            rate_per_s,
            burst,
            eval_ms_per_s,
            queue_ms,
            ..TenantLimits::default()
        }
    }

    #[tokio::test]
    async fn a_tenant_over_its_rate_is_refused_until_its_bucket_refills_and_others_are_not() {
        let clock = ManualClock::new(1_000_000);
        let shares = Shares::new(clock.clone());
        let l = limits(2, 2, 0, 0);
        for _ in 0..2 {
            shares.admit("a", &l).await.unwrap();
        }
        let refused = shares.admit("a", &l).await.err().unwrap();
        assert!(
            matches!(
                refused,
                AppError::RateLimited {
                    retry_after_s: 1,
                    ..
                }
            ),
            "{refused:?}"
        );
        shares.admit("b", &l).await.unwrap();
        clock.advance(500);
        shares.admit("a", &l).await.unwrap();
        assert!(shares.admit("a", &l).await.is_err());
    }

    #[tokio::test]
    async fn evaluation_time_spent_past_the_budget_refuses_until_it_is_repaid() {
        let clock = ManualClock::new(1_000_000);
        let shares = Shares::new(clock.clone());
        let l = limits(0, 0, 100, 0);
        let first = shares.admit("a", &l).await.unwrap();
        first.spent(Duration::from_millis(300));
        drop(first);
        let refused = shares.admit("a", &l).await.err().unwrap();
        assert!(
            matches!(
                refused,
                AppError::RateLimited {
                    retry_after_s: 2,
                    ..
                }
            ),
            "{refused:?}"
        );
        shares.admit("b", &l).await.unwrap();
        clock.advance(2_000);
        shares.admit("a", &l).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_waiting_calls_are_refused_and_their_places_are_given_back() {
        let shares = Shares::new(ManualClock::new(0));
        let l = TenantLimits {
            max_queued: 2,
            ..limits(1, 1, 0, 10_000)
        };
        // Calls that need not wait take no place, however many are in flight.
        shares.admit("a", &l).await.unwrap();
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let (shares, l) = (shares.clone(), l);
                tokio::spawn(async move { shares.admit("a", &l).await.map(|_| ()) })
            })
            .collect();
        while shares.share("a", &l).queued.load(Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = shares.admit("a", &l).await.err().unwrap();
        assert!(
            matches!(refused, AppError::RateLimited { .. }),
            "{refused:?}"
        );
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(shares.share("a", &l).queued.load(Ordering::Relaxed), 0);
    }
}

/// Per-tenant lanes into a shared pool of background work (downstream jobs, webhook
/// deliveries): each tenant may have at most `running` items in the pool at once and
/// `queued` items waiting or running, so a tenant whose downstream is slow fills its own lane
/// and not the pool. Cheap to clone.
#[derive(Clone)]
pub struct Lanes {
    running: usize,
    queued: usize,
    lanes: Arc<Mutex<HashMap<String, Arc<Lane>>>>,
}

struct Lane {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
}

/// An item's place in its tenant's lane, given back when dropped.
pub struct Ticket {
    lane: Arc<Lane>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.lane.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ticket {
    /// One of the lane's running slots (waits for one).
    pub async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.lane
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("lanes are never closed")
    }
}

impl Lanes {
    /// Lanes of `running` slots and `queued` places per tenant.
    pub fn new(running: usize, queued: usize) -> Self {
        Self {
            running,
            queued,
            lanes: Arc::default(),
        }
    }

    fn lane(&self, tenant_id: &str) -> Arc<Lane> {
        self.lanes
            .lock()
            .expect("lanes lock")
            .entry(tenant_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Lane {
                    slots: Arc::new(Semaphore::new(self.running)),
                    queued: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// A place in the tenant's lane, if it has one free.
    pub fn try_enter(&self, tenant_id: &str) -> Option<Ticket> {
        let lane = self.lane(tenant_id);
        let before = lane.queued.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket { lane };
        (before < self.queued).then_some(ticket)
    }

    /// A place in the tenant's lane even if it is full (for work already committed to).
    pub fn enter(&self, tenant_id: &str) -> Ticket {
        let lane = self.lane(tenant_id);
        lane.queued.fetch_add(1, Ordering::Relaxed);
        Ticket { lane }
    }

    /// Whether the tenant's lane has no free place.
    pub fn full(&self, tenant_id: &str) -> bool {
        self.lane(tenant_id).queued.load(Ordering::Relaxed) >= self.queued
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    #[tokio::test]
    async fn a_full_lane_refuses_its_tenant_only_and_frees_places_as_items_finish() {
        let lanes = Lanes::new(1, 2);
        let a1 = lanes.try_enter("a").unwrap();
        let a2 = lanes.try_enter("a").unwrap();
        assert!(lanes.try_enter("a").is_none());
        assert!(lanes.full("a"));
        let b = lanes.try_enter("b").unwrap();
        let running = a1.slot().await;
        assert!(
            a2.lane.slots.try_acquire().is_err(),
            "one running item per tenant"
        );
        let _b_running = b.slot().await;
        drop((running, a1));
        assert!(!lanes.full("a"));
        let _forced = lanes.enter("a");
        assert!(lanes.full("a"));
    }
}
