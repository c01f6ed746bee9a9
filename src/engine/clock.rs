//! Where plans, expiry computations and renewal decisions get "now".
//!
//! It is the system clock, shifted by an offset that only tests move (`advance`), so a test
//! reaches a renewal window by moving this clock instead of sleeping through it. Clones share
//! the offset: a test keeps one and advances the clock of a running operator. The CMS keeps its
//! own clock, so keys still expire and overlaps still end in real time.

use jiff::{SignedDuration, Timestamp};
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

    pub fn now(&self) -> Timestamp {
        let offset = SignedDuration::from_millis(self.offset_ms.load(Ordering::Relaxed));
        let now = Timestamp::now();
        now.checked_add(offset).unwrap_or(if offset.is_negative() {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
    }

    /// Moves this clock, and every clone of it, forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_is_the_system_clock_until_advanced_and_clones_share_the_offset() {
        let c = Clock::system();
        let before = Timestamp::now();
        let now = c.now();
        assert!(
            now >= before && now.duration_since(before) < SignedDuration::from_secs(5),
            "{now}"
        );
        let shared = c.clone();
        shared.advance(crate::model::days(3));
        let moved = c.now().duration_since(Timestamp::now());
        assert!(
            moved > crate::model::days(3) - SignedDuration::from_secs(5)
                && moved <= crate::model::days(3),
            "{moved}"
        );
    }
}
