//! Argon2id work (hashing a new value, verifying a presented one) runs on a pool of its own: one
//! thread per core and a bounded queue. Each check takes 19 MiB of memory; confined to a few
//! threads, that memory is reused instead of piling up in the allocator arenas of every
//! blocking thread, and a flood of checks can neither take every core nor queue without bound.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The queue is full: the caller answers 429 instead of waiting behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Argon2id queue is full")]
pub struct Busy;

pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// `threads` workers (at least one), at most `queue` jobs waiting.
    pub fn new(threads: usize, queue: usize) -> HashPool {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an Argon2id worker thread");
            }
        }
        HashPool { jobs }
    }

    /// One worker per core, 64 queued checks per core.
    pub fn per_core() -> HashPool {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        HashPool::new(cores, cores * 64)
    }

    /// Runs `f` on the pool unless the queue is full.
    pub async fn try_run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => rx.await.map_err(|_| Busy),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    /// Runs `f` on the pool, waiting for room in the queue: for writes the admin asked for, on a
    /// thread that may block.
    pub fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (tx, rx) = sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).map_err(|_| Busy)?;
        rx.recv().map_err(|_| Busy)
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while taking a job, never while running it.
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_refuses_beyond_the_queue() {
        let pool = Arc::new(HashPool::new(1, 1));
        assert_eq!(pool.try_run(|| 2 + 2).await, Ok(4));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let p = pool.clone();
        let blocker = tokio::spawn(async move {
            p.try_run(move || {
                let _ = started_tx.send(());
                let _ = wait.recv();
            })
            .await
        });
        started.await.unwrap();
        // The worker is busy: one job fits the queue, the next one is refused at once.
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.try_run(|| 1).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(pool.try_run(|| 1).await, Err(Busy));
        release.send(()).unwrap();
        assert_eq!(queued.await.unwrap(), Ok(1));
        blocker.await.unwrap().unwrap();
        assert_eq!(pool.run_blocking(|| 5u8), Ok(5));
    }
}
