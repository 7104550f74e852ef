//! Usage counters: where a counter's value lives for each window, the [`UsageSource`] that
//! answers a policy from the store, and the effects a decision's charges have.
//!
//! A charge of `amount` to `counter` adds `amount` to five rows, one per window: the call's
//! session, its UTC minute, hour and day (buckets of the call's timestamp), and all time. A read
//! is one row lookup.

use crate::audit::Effects;
use crate::store::Store;
use crate::tenants::tenant_key;
use writ_runtime::decision::{Charge, Window};
use writ_runtime::evaluation::{UsageRead, UsageSource, UsageUnavailable};

/// Where a call is, for the windows: its session and timestamp.
#[derive(Debug, Clone)]
pub struct CallScope {
    pub tenant_id: String,
    /// The call's session.
    pub session_id: String,
    /// The call's timestamp, ms since the epoch.
    pub timestamp_ms: u64,
}

impl CallScope {
    /// The store key of `counter` in `window` for this call.
    pub fn key(&self, counter: &str, window: Window) -> Vec<u8> {
        let bucket = match window {
            Window::Session => format!("s:{}", self.session_id),
            Window::Minute => format!("m:{}", self.timestamp_ms / 60_000),
            Window::Hour => format!("h:{}", self.timestamp_ms / 3_600_000),
            Window::Day => format!("d:{}", self.timestamp_ms / 86_400_000),
            Window::AllTime => "a".to_owned(),
        };
        tenant_key(&self.tenant_id, &[bucket.as_bytes(), counter.as_bytes()])
    }

    /// The effects of committing a decision: the reads to re-check, the charges to add.
    pub fn effects(&self, reads: &[UsageRead], charges: &[Charge]) -> Effects {
        Effects {
            expect: reads
                .iter()
                .map(|r| (self.key(&r.counter, r.window), r.value))
                .collect(),
            add: charges
                .iter()
                .flat_map(|c| {
                    Window::ALL
                        .into_iter()
                        .map(|w| (self.key(&c.counter, w), c.amount))
                })
                .collect(),
            ..Effects::default()
        }
    }
}

/// Answers `usage` from the store for one call.
pub struct StoreUsage {
    pub store: Store,
    /// The call's scope.
    pub scope: CallScope,
}

impl UsageSource for StoreUsage {
    fn usage(&mut self, counter: &str, window: Window) -> Result<f64, UsageUnavailable> {
        self.store
            .usage(&self.scope.key(counter, window))
            .map_err(|e| {
                tracing::error!(error = %e, "usage read failed");
                UsageUnavailable
            })
    }
}

/// A counter's value in one of the windows that are current now.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterNow {
    pub counter: String,
    /// `hour`, `day` or `all-time`.
    pub window: &'static str,
    pub value: f64,
}

/// The tenant's counters in the current UTC hour and day and all time, at most `limit` per
/// window (in counter order): what the console shows of usage.
pub fn counters_now(
    store: &Store,
    tenant_id: &str,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<CounterNow>, crate::store::StoreError> {
    let windows = [
        ("hour", format!("h:{}", now_ms / 3_600_000)),
        ("day", format!("d:{}", now_ms / 86_400_000)),
        ("all-time", "a".to_owned()),
    ];
    let mut out = Vec::new();
    for (window, bucket) in windows {
        let prefix = tenant_key(tenant_id, &[bucket.as_bytes(), b""]);
        for row in store
            .iter_prefix_from(crate::store::Table::Usage, &prefix, &prefix)
            .take(limit)
        {
            let (key, _) = row?;
            let counter = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            out.push(CounterNow {
                value: store.usage(&key)?,
                counter,
                window,
            });
        }
    }
    Ok(out)
}
