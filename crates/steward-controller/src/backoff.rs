//! Per-object exponential backoff, controller-runtime's defaults: 5 ms doubling to a 1000 s cap,
//! reset on success.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const BASE: Duration = Duration::from_millis(5);
const CAP: Duration = Duration::from_secs(1000);

#[derive(Debug, Default)]
pub struct Backoff {
    failures: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    /// Delay before the next attempt after `failures` consecutive failures.
    pub fn delay(failures: u32) -> Duration {
        let factor = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
        BASE.checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .map_or(CAP, |d| d.min(CAP))
    }

    /// Records a failure; returns when the object may be tried again.
    pub fn failed(&mut self, object: &str, now: Instant) -> Instant {
        let e = self.failures.entry(object.to_string()).or_insert((0, now));
        e.0 += 1;
        e.1 = now + Self::delay(e.0);
        e.1
    }

    pub fn succeeded(&mut self, object: &str) {
        self.failures.remove(object);
    }

    /// `Some(when)` if the object must wait.
    pub fn blocked_until(&self, object: &str, now: Instant) -> Option<Instant> {
        self.failures.get(object).map(|(_, t)| *t).filter(|t| *t > now)
    }

    pub fn next_ready(&self, now: Instant) -> Option<Instant> {
        self.failures.values().map(|(_, t)| *t).filter(|t| *t > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_cap_and_resets() {
        assert_eq!(Backoff::delay(1), Duration::from_millis(5));
        assert_eq!(Backoff::delay(2), Duration::from_millis(10));
        assert_eq!(Backoff::delay(11), Duration::from_millis(5 * 1024));
        assert_eq!(Backoff::delay(40), CAP);
        let mut b = Backoff::default();
        let now = Instant::now();
        let t = b.failed("Service/web", now);
        assert_eq!(b.blocked_until("Service/web", now), Some(t));
        b.succeeded("Service/web");
        assert_eq!(b.blocked_until("Service/web", now), None);
    }
}
