//! The drift checks' view of a connection's keys: one full CMS key listing per connection per
//! drift interval, shared by the checks of all its policies, and kept current by each policy's
//! own writes. A policy that wrote its keys reads them back right after (one filtered listing);
//! that read replaces its part of the shared listing, so the other policies' writes never make
//! the whole listing stale, and a cold start of many policies makes a handful of full listings,
//! not one per reconcile.

use crate::model::desired::{ConnectionId, LABEL_POLICY};
use crate::providers::LiveKey;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One connection's keys, by policy (the `keyward.dev/policy` label value).
#[derive(Default)]
struct Listing {
    /// When the last full listing began (what it shows is at least that recent).
    listed_at: Option<Instant>,
    by_policy: HashMap<String, Arc<Vec<LiveKey>>>,
    /// Policies whose part was read after their own writes, and when.
    patched_at: HashMap<String, Instant>,
    /// Policies whose writes are under way: their part is unknown until they read it back.
    writing: HashSet<String>,
}

#[derive(Default)]
pub struct SharedListings {
    listings: Mutex<HashMap<ConnectionId, Listing>>,
    /// Per connection: held while its full listing is renewed, so that the drift checks that
    /// find it out of date at once make one listing between them.
    renewing: Mutex<HashMap<ConnectionId, Arc<tokio::sync::Mutex<()>>>>,
}

impl SharedListings {
    /// The policy's keys, if what is known of them is younger than `max_age`: its own read
    /// after its last writes, or the connection's full listing.
    pub fn keys_of(
        &self,
        conn: &ConnectionId,
        policy: &str,
        max_age: Duration,
    ) -> Option<Arc<Vec<LiveKey>>> {
        let listings = self.listings.lock();
        let l = listings.get(conn)?;
        if l.writing.contains(policy) {
            return None;
        }
        let fresh = |at: Option<&Instant>| at.is_some_and(|t| t.elapsed() < max_age);
        if fresh(l.patched_at.get(policy)) || fresh(l.listed_at.as_ref()) {
            return Some(l.by_policy.get(policy).cloned().unwrap_or_default());
        }
        None
    }

    /// Keeps a full listing that began at `started`. A policy that wrote since then, or is
    /// writing, keeps its own part: the listing may have missed its writes.
    pub fn keep(&self, conn: &ConnectionId, keys: Vec<LiveKey>, started: Instant) {
        let mut grouped: HashMap<String, Vec<LiveKey>> = HashMap::new();
        for k in keys {
            if let Some(label) = k.spec.labels.get(LABEL_POLICY) {
                grouped.entry(label.clone()).or_default().push(k);
            }
        }
        let mut listings = self.listings.lock();
        let l = listings.entry(conn.clone()).or_default();
        let newer = |l: &Listing, p: &str| {
            l.writing.contains(p) || l.patched_at.get(p).is_some_and(|t| *t > started)
        };
        let kept: HashMap<String, Arc<Vec<LiveKey>>> = std::mem::take(&mut l.by_policy)
            .into_iter()
            .filter(|(p, _)| newer(l, p))
            .collect();
        let mut by_policy: HashMap<String, Arc<Vec<LiveKey>>> = grouped
            .into_iter()
            .filter(|(p, _)| !newer(l, p))
            .map(|(p, keys)| (p, Arc::new(keys)))
            .collect();
        by_policy.extend(kept);
        l.by_policy = by_policy;
        l.listed_at = Some(started);
    }

    /// Whether the policy's writes are under way (or failed before it read its keys back).
    pub fn is_writing(&self, conn: &ConnectionId, policy: &str) -> bool {
        self.listings
            .lock()
            .get(conn)
            .is_some_and(|l| l.writing.contains(policy))
    }

    /// keyward is about to write the policy's keys.
    pub fn writing(&self, conn: &ConnectionId, policy: &str) {
        let mut listings = self.listings.lock();
        let l = listings.entry(conn.clone()).or_default();
        l.writing.insert(policy.to_owned());
    }

    /// The policy's keys as read right after its writes. (Writes whose keys could not be read
    /// back leave the policy `writing`: its next check reads its own keys.)
    pub fn patch(&self, conn: &ConnectionId, policy: &str, keys: Vec<LiveKey>) {
        let mut listings = self.listings.lock();
        let l = listings.entry(conn.clone()).or_default();
        l.writing.remove(policy);
        l.by_policy.insert(policy.to_owned(), Arc::new(keys));
        l.patched_at.insert(policy.to_owned(), Instant::now());
    }

    /// The policy is gone: so is its part.
    pub fn drop_policy(&self, conn: &ConnectionId, policy: &str) {
        if let Some(l) = self.listings.lock().get_mut(conn) {
            l.by_policy.remove(policy);
            l.patched_at.remove(policy);
            l.writing.remove(policy);
        }
    }

    /// The lock to hold while renewing the connection's full listing.
    pub fn renewing(&self, conn: &ConnectionId) -> Arc<tokio::sync::Mutex<()>> {
        self.renewing
            .lock()
            .entry(conn.clone())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeySpec;
    use jiff::Timestamp;

    fn key(id: &str, policy: &str) -> LiveKey {
        let mut spec = KeySpec::default();
        spec.labels.insert(LABEL_POLICY.into(), policy.into());
        LiveKey {
            id: id.into(),
            spec,
            created_at: Timestamp::UNIX_EPOCH,
            rotated_at: None,
        }
    }

    fn ids(keys: Option<Arc<Vec<LiveKey>>>) -> Option<Vec<String>> {
        keys.map(|k| k.iter().map(|k| k.id.clone()).collect())
    }

    const AGE: Duration = Duration::from_secs(60);

    #[test]
    fn a_listing_is_shared_by_policy_and_kept_current_by_each_policys_writes() {
        let s = SharedListings::default();
        let c = ConnectionId::Default;
        assert_eq!(s.keys_of(&c, "ns.a", AGE), None, "nothing listed yet");
        s.keep(&c, vec![key("1", "ns.a"), key("2", "ns.b")], Instant::now());
        assert_eq!(ids(s.keys_of(&c, "ns.a", AGE)), Some(vec!["1".into()]));
        assert_eq!(ids(s.keys_of(&c, "ns.c", AGE)), Some(vec![]), "no keys");
        // a writes: its part is unknown until it reads it back; b's stays shared.
        s.writing(&c, "ns.a");
        assert_eq!(s.keys_of(&c, "ns.a", AGE), None);
        assert_eq!(ids(s.keys_of(&c, "ns.b", AGE)), Some(vec!["2".into()]));
        s.patch(&c, "ns.a", vec![key("1", "ns.a"), key("3", "ns.a")]);
        assert_eq!(
            ids(s.keys_of(&c, "ns.a", AGE)),
            Some(vec!["1".into(), "3".into()])
        );
        // An old listing is of no use, but a policy's own fresh read still is.
        assert_eq!(s.keys_of(&c, "ns.b", Duration::ZERO), None);
    }

    #[test]
    fn a_listing_that_began_before_a_policys_writes_keeps_that_policys_own_read() {
        let s = SharedListings::default();
        let c = ConnectionId::Default;
        let started = Instant::now();
        // While the full listing was under way, a wrote key 3 and read it back, and b started
        // writing: the listing lacks both.
        s.writing(&c, "ns.a");
        s.patch(&c, "ns.a", vec![key("1", "ns.a"), key("3", "ns.a")]);
        s.writing(&c, "ns.b");
        s.keep(&c, vec![key("1", "ns.a"), key("2", "ns.b")], started);
        assert_eq!(
            ids(s.keys_of(&c, "ns.a", AGE)),
            Some(vec!["1".into(), "3".into()])
        );
        assert_eq!(s.keys_of(&c, "ns.b", AGE), None, "b must read its own");
        assert!(s.is_writing(&c, "ns.b"));
        s.drop_policy(&c, "ns.b");
        assert_eq!(ids(s.keys_of(&c, "ns.b", AGE)), Some(vec![]));
    }
}
