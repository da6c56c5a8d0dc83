//! What the router knows about each backend: requests in flight, recent latency, and
//! passive health — a backend that fails `failures` times in a row is ejected (tried only
//! after every healthy one) for the cooldown, then tried again.

use crate::config::HealthPolicy;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct BackendHealth {
    in_flight: AtomicU32,
    /// Exponentially weighted mean latency in microseconds; 0 before the first success.
    latency_us: AtomicU64,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

/// Counts a request in flight until dropped.
pub struct InFlight<'a>(&'a BackendHealth);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BackendHealth {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Mean recent latency (`None` before any success).
    pub fn latency(&self) -> Option<Duration> {
        let us = self.latency_us.load(Ordering::Relaxed);
        (us > 0).then(|| Duration::from_micros(us))
    }

    pub fn success(&self, latency: Duration) {
        self.failures.store(0, Ordering::Relaxed);
        *self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let new = (latency.as_micros() as u64).max(1);
        let old = self.latency_us.load(Ordering::Relaxed);
        // Weight 0.3 for the newest sample.
        let mean = if old == 0 { new } else { (old * 7 + new * 3) / 10 };
        self.latency_us.store(mean.max(1), Ordering::Relaxed);
    }

    /// Records a failure; returns true when it ejects the backend.
    pub fn failure(&self, policy: &HealthPolicy, now: Instant) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= policy.failures {
            self.failures.store(0, Ordering::Relaxed);
            *self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(now + policy.cooldown);
            return true;
        }
        false
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_eject_until_the_cooldown_ends() {
        let policy = HealthPolicy { failures: 2, cooldown: Duration::from_secs(10) };
        let h = BackendHealth::default();
        let t0 = Instant::now();
        assert!(!h.failure(&policy, t0));
        assert!(!h.is_ejected(t0));
        assert!(h.failure(&policy, t0));
        assert!(h.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!h.is_ejected(t0 + Duration::from_secs(11)));
        h.success(Duration::from_millis(10));
        assert!(!h.is_ejected(t0));
        assert_eq!(h.latency(), Some(Duration::from_millis(10)));
        h.success(Duration::from_millis(20));
        assert_eq!(h.latency(), Some(Duration::from_millis(13)));
        let g = h.start();
        assert_eq!(h.in_flight(), 1);
        drop(g);
        assert_eq!(h.in_flight(), 0);
    }
}
