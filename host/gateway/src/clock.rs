//! The gateway's one source of time. Production reads the system clock; tests inject a
//! [`ManualClock`] and advance it, so expiry and windows are tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Milliseconds since the Unix epoch, from wherever the gateway takes its time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Signalled when the clock jumps ahead (a test clock does; the system clock never
    /// signals), so a task sleeping until some time re-reads it.
    fn jumped(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// A clock shared by every part of one gateway.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until told to move.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
    jumped: Arc<Notify>,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            ms: AtomicU64::new(now_ms),
            jumped: Arc::default(),
        })
    }

    /// A clock reading the system's time now.
    pub fn starting_now() -> Arc<Self> {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward by `ms`, and wakes the tasks sleeping on it.
    pub fn advance(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
        self.jumped.notify_waiters();
        // A stored permit: a sleeper between reading the time and waiting still wakes.
        self.jumped.notify_one();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }

    fn jumped(&self) -> Option<Arc<Notify>> {
        Some(self.jumped.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(250);
        assert_eq!(clock.now_ms(), 1_250);
    }

    #[test]
    fn the_system_clock_is_past_2025() {
        assert!(SystemClock.now_ms() > 1_735_689_600_000);
    }
}
