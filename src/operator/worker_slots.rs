//! Worker slots per connection: how many reconciles one connection's policies may run at once.
//!
//! Every connection may run its share (`--workers-per-connection`). One that answers may run
//! more, up to every worker but one share, so that a cold start of many policies on one CMS
//! keeps that CMS busy while a policy elsewhere still finds a free worker. "Answers" means:
//! its last reconcile ended well and quickly, recently, and none of its running reconciles has
//! been running long. A CMS that hangs never gets past its share: its reconciles end at their
//! deadline, which is not quick, and a running one that takes long stops any new borrowing.

use crate::model::desired::ConnectionId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connection that answered may borrow slots without answering again.
const HEALTHY_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Running {
    /// When each running reconcile began.
    started: Vec<Instant>,
    /// Until when the connection counts as answering.
    healthy_until: Option<Instant>,
}

/// One connection's running reconciles.
#[derive(Default)]
pub struct ConnectionSlots {
    running: Mutex<Running>,
    /// Woken when a slot is given back.
    freed: tokio::sync::Notify,
}

/// A worker slot held by one reconcile; it is given back when dropped.
pub struct Slot {
    conn: Arc<ConnectionSlots>,
    started: Instant,
    quick: Duration,
    ok: bool,
}

impl Slot {
    /// The reconcile ended well (a quick one makes its connection count as answering).
    pub fn succeeded(&mut self) {
        self.ok = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut r = self.conn.running.lock();
        if let Some(i) = r.started.iter().position(|s| *s == self.started) {
            r.started.swap_remove(i);
        }
        if self.ok && self.started.elapsed() < self.quick {
            r.healthy_until = Some(Instant::now() + HEALTHY_FOR);
        }
        drop(r);
        self.conn.freed.notify_waiters();
    }
}

pub struct WorkerSlots {
    by_connection: Mutex<HashMap<ConnectionId, Arc<ConnectionSlots>>>,
    /// What every connection may run.
    share: usize,
    /// What a connection that answers may run.
    most: usize,
    /// A reconcile shorter than this answered quickly.
    quick: Duration,
}

impl WorkerSlots {
    /// Slots for `workers` reconciles at once, `share` each connection's own; a reconcile
    /// quicker than half of `reconcile_timeout` (at most 5 s) counts as answering.
    pub fn new(workers: usize, share: usize, reconcile_timeout: Duration) -> WorkerSlots {
        let share = share.max(1);
        WorkerSlots {
            by_connection: Mutex::new(HashMap::new()),
            share,
            most: workers.saturating_sub(share).max(share),
            quick: (reconcile_timeout / 2).min(Duration::from_secs(5)),
        }
    }

    /// A slot on `conn`, if it may run one more reconcile now.
    pub fn take(&self, conn: ConnectionId) -> Option<Slot> {
        let slots = self.by_connection.lock().entry(conn).or_default().clone();
        let now = Instant::now();
        let mut r = slots.running.lock();
        let n = r.started.len();
        let answering = r.healthy_until.is_some_and(|t| t > now)
            && r.started
                .iter()
                .all(|s| now.duration_since(*s) < self.quick);
        if n >= self.share && !(answering && n < self.most) {
            return None;
        }
        // Distinct start times, so that a slot gives back its own entry.
        let started = r.started.iter().copied().fold(now, |t, s| {
            if s >= t {
                s + Duration::from_nanos(1)
            } else {
                t
            }
        });
        r.started.push(started);
        drop(r);
        Some(Slot {
            conn: slots,
            started,
            quick: self.quick,
            ok: false,
        })
    }

    /// A slot on `conn`, waiting up to `within` for one to be given back: a reconcile that
    /// meets its connection's quick ones (drift checks) goes right after them, instead of a
    /// second later.
    pub async fn take_within(&self, conn: ConnectionId, within: Duration) -> Option<Slot> {
        let deadline = tokio::time::Instant::now() + within;
        let slots = self
            .by_connection
            .lock()
            .entry(conn.clone())
            .or_default()
            .clone();
        loop {
            let freed = slots.freed.notified();
            if let Some(s) = self.take(conn.clone()) {
                return Some(s);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Forgets the connections not in `keep` that no reconcile holds.
    pub fn retain(&self, keep: impl Fn(&ConnectionId) -> bool) {
        self.by_connection
            .lock()
            .retain(|id, s| keep(id) || Arc::strong_count(s) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str) -> ConnectionId {
        ConnectionId::ClusterCmsConnection { name: name.into() }
    }

    #[test]
    fn a_connection_runs_its_share_and_borrows_only_while_it_answers() {
        let w = WorkerSlots::new(8, 2, Duration::from_secs(60));
        let mut a: Vec<Slot> = (0..2).filter_map(|_| w.take(conn("a"))).collect();
        assert_eq!(a.len(), 2);
        assert!(
            w.take(conn("a")).is_none(),
            "its share, until it has answered"
        );
        assert!(
            w.take(conn("b")).is_some(),
            "another connection has its own share"
        );
        // One reconcile ends well and quickly: the connection answers, and may run up to six
        // (every worker but one share).
        let mut first = a.pop().unwrap();
        first.succeeded();
        drop(first);
        let more: Vec<Slot> = (0..10).filter_map(|_| w.take(conn("a"))).collect();
        assert_eq!(more.len(), 5, "six running in all");
        drop((a, more));
    }

    #[test]
    fn a_connection_whose_reconciles_fail_or_take_long_keeps_its_share() {
        let w = WorkerSlots::new(8, 2, Duration::from_millis(20));
        // Failed: not answering.
        drop(w.take(conn("a")).unwrap());
        let held: Vec<Slot> = (0..4).filter_map(|_| w.take(conn("a"))).collect();
        assert_eq!(held.len(), 2);
        drop(held);
        // Succeeded, but slower than half the reconcile timeout: not answering either.
        let mut slow = w.take(conn("a")).unwrap();
        std::thread::sleep(Duration::from_millis(15));
        slow.succeeded();
        drop(slow);
        let held: Vec<Slot> = (0..4).filter_map(|_| w.take(conn("a"))).collect();
        assert_eq!(held.len(), 2);
        drop(held);
        // Answering, but one running reconcile takes long: no new borrowing.
        let mut quick = w.take(conn("a")).unwrap();
        quick.succeeded();
        drop(quick);
        let long = w.take(conn("a")).unwrap();
        std::thread::sleep(Duration::from_millis(15));
        let held: Vec<Slot> = (0..4).filter_map(|_| w.take(conn("a"))).collect();
        assert_eq!(held.len(), 1, "its share with the long one");
        drop((long, held));
    }

    #[tokio::test]
    async fn a_waiting_reconcile_gets_the_slot_given_back_and_stops_waiting_at_its_limit() {
        let w = Arc::new(WorkerSlots::new(8, 1, Duration::from_secs(60)));
        let held = w.take(conn("a")).unwrap();
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.take_within(conn("a"), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(got.unwrap().unwrap().is_some(), "the slot given back");
        let _held = w.take(conn("b")).unwrap();
        let t = Instant::now();
        assert!(w
            .take_within(conn("b"), Duration::from_millis(50))
            .await
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
