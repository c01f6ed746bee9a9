//! Rate limits: requests per second with a burst, per client address, per key, and per
//! (client address, key) for verifications that need Argon2id.

use super::error::CmsError;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;

/// Requests per second and burst for a rate limiter.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    pub fn new(per_second: u32) -> Option<Rate> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        Some(Rate { per_second, burst })
    }

    pub fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

pub type Limiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// Takes one request from `key`'s bucket, or says how long to wait (429 with `Retry-After`).
pub fn limit<K: std::hash::Hash + Eq + Clone>(
    limiter: &Limiter<K>,
    key: &K,
) -> Result<(), CmsError> {
    limiter.check_key(key).map_err(|not_until| {
        CmsError::RateLimited(not_until.wait_time_from(DefaultClock::default().now()))
    })
}

/// A keyed limiter for `rate`.
pub fn keyed<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> Limiter<K> {
    RateLimiter::keyed(rate.quota())
}
