//! What every HTTP handler of the reference CMS shares: the service context, the scans and
//! writes run off the async workers, and `Checked`, a request that passed its permission check.

use super::auth::Auth;
use super::error::CmsError;
use super::service::Service;
use std::sync::Arc;

/// The environment of the plain `/api/...` paths.
pub const PRODUCTION: &str = "production";

/// A request that takes longer than this (a slowly sent body, say) answers 408.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Shared by every handler.
pub struct Ctx {
    pub svc: Arc<Service>,
    pub auth: Auth,
    /// Write requests served (every write goes through `blocking`).
    pub writes: std::sync::atomic::AtomicU64,
    /// Key listings served (`GET /v1/keys`), for the operator's drift-check figures.
    pub key_listings: std::sync::atomic::AtomicU64,
    /// Scans (listings, searches, exports) running at once: fewer than the cores, so scans of
    /// large APIs always leave a core to everything else.
    pub scans: tokio::sync::Semaphore,
}

/// How long a scan waits for its turn before the answer is 503 (with `Retry-After`).
const SCAN_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many scans may run at once on this machine: one core is always left to the rest.
pub fn scan_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// Runs a scan (a listing, a search, an export) on the blocking pool, at most
/// `scan_slots` at once: however large the API and however many anonymous searches come,
/// they never run on the async workers that serve every other request.
pub async fn scan<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Service) -> Result<T, CmsError> + Send + 'static,
) -> Result<T, CmsError> {
    let _turn = tokio::time::timeout(SCAN_QUEUE_WAIT, ctx.scans.acquire())
        .await
        .map_err(|_| CmsError::Busy(std::time::Duration::from_secs(1)))?
        .map_err(|_| CmsError::Busy(std::time::Duration::from_secs(1)))?;
    let svc = ctx.svc.clone();
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| CmsError::Aborted(e.to_string()))?
}

/// Runs a write (SQLite commit, maybe Argon2id) off the async workers.
pub async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Service) -> Result<T, CmsError> + Send + 'static,
) -> Result<T, CmsError> {
    ctx.writes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let svc = ctx.svc.clone();
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| CmsError::Aborted(e.to_string()))?
}

/// A request that passed its permission check (`M` names the check): the service context and
/// what the check established about the caller.
pub struct Checked<M, A> {
    pub ctx: Arc<Ctx>,
    pub what: A,
    check: std::marker::PhantomData<M>,
}

impl<M, A: Send + 'static> Checked<M, A> {
    pub fn new(ctx: &Arc<Ctx>, what: A) -> Self {
        Checked {
            ctx: ctx.clone(),
            what,
            check: std::marker::PhantomData,
        }
    }

    /// Runs a change on the blocking pool, with what the check established.
    pub async fn change<T: Send + 'static>(
        self,
        f: impl FnOnce(&Service, &A) -> Result<T, CmsError> + Send + 'static,
    ) -> Result<T, CmsError> {
        let what = self.what;
        blocking(&self.ctx, move |s| f(s, &what)).await
    }
}

/// `201 Created` for something new, `200 OK` for something replaced.
pub fn created_or_ok(created: bool) -> axum::http::StatusCode {
    if created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    }
}
