//! Where plans, expiry computations and renewal decisions get "now".
//!
//! It is the system clock, shifted by an offset that only tests move (`advance`), so a test
//! reaches a renewal window by moving this clock instead of sleeping through it. Clones share
//! the offset: a test keeps one and advances the clock of a running operator. The CMS keeps its
//! own clock, so keys still expire and overlaps still end in real time.

use chrono::{DateTime, Duration, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock, and every clone of it, forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_is_the_system_clock_until_advanced_and_clones_share_the_offset() {
        let c = Clock::system();
        let before = Utc::now();
        let now = c.now();
        assert!(
            now >= before && now - before < Duration::seconds(5),
            "{now}"
        );
        let shared = c.clone();
        shared.advance(Duration::days(3));
        let moved = c.now() - Utc::now();
        assert!(
            moved > Duration::days(3) - Duration::seconds(5) && moved <= Duration::days(3),
            "{moved}"
        );
    }
}
