//! The embedded reference CMS key service (`keyward cms serve`): the key model of the seed
//! documents over HTTP, persistent in SQLite. keyward's default backend and the reference for
//! every other provider.

mod api_content;
mod api_management;
pub mod audit;
pub(crate) mod auth;
pub(crate) mod content;
pub(crate) mod error;
mod handler;
pub(crate) mod hashing;
pub(crate) mod input;
pub mod keys;
pub(crate) mod limits;
mod openapi;
pub(crate) mod rights;
pub mod secret;
pub mod server;
pub mod service;
pub(crate) mod store;
pub mod verifier;

use crate::model::Tier;
use auth::Auth;
use axum::http::{header, HeaderName, Method};
use axum::routing::get;
use axum::Router;
use handler::Ctx;
pub use handler::PRODUCTION;
pub use limits::Rate;
pub use server::DEFAULT_MAX_BODY;
use service::Service;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The bootstrap admin token, as a `SecretString`. Debug output never shows it.
#[derive(Clone)]
pub struct AdminToken(secrecy::SecretString);

impl AdminToken {
    pub fn new(value: String) -> AdminToken {
        AdminToken(value.into())
    }

    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

/// Settings of one reference CMS instance.
#[derive(Clone, Debug)]
pub struct CmsConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub plan: Option<Tier>,
    /// From `KEYWARD_CMS_ADMIN_TOKEN`; otherwise read from or written to `DIR/admin-token`.
    pub admin_token: Option<AdminToken>,
    pub public_rate: Rate,
    pub key_rate: Rate,
    /// `--verify-rate`: values needing an Argon2id check per second per client address and key.
    pub verify_rate: Rate,
    /// `--max-body`: the largest request body, in bytes (beyond it: 413).
    pub max_body: usize,
    /// Header and idle timeouts, and the connection cap.
    pub conn: server::ConnLimits,
    /// How long to wait for another process's lock on the data directory (zero: refuse at once).
    pub lock_wait: std::time::Duration,
    /// `--tls-cert` and `--tls-key`: serve HTTPS.
    pub tls: Option<server::TlsFiles>,
    /// `--max-entries`, `--max-api-bytes`, `--max-answer-bytes` (an entry's size is bounded by
    /// `max_body`).
    pub content: service::ContentLimits,
    /// `--audit-log`: one JSON line per write request to the management API.
    pub audit_log: Option<PathBuf>,
}

/// The default `--verify-rate`: a client gets this many values per second checked with Argon2id
/// per key (a legitimate one needs one per new value).
pub const DEFAULT_VERIFY_RATE: u32 = 5;

impl CmsConfig {
    /// Defaults for a data directory: loopback on a free port, no plan limit.
    pub fn new(data_dir: impl Into<PathBuf>) -> CmsConfig {
        CmsConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            plan: None,
            admin_token: None,
            public_rate: Rate::new(20).unwrap_or(Rate {
                per_second: std::num::NonZeroU32::MIN,
                burst: std::num::NonZeroU32::MIN,
            }),
            key_rate: Rate::new(1000).unwrap_or(Rate {
                per_second: std::num::NonZeroU32::MIN,
                burst: std::num::NonZeroU32::MIN,
            }),
            verify_rate: Rate::new(DEFAULT_VERIFY_RATE).unwrap_or(Rate {
                per_second: std::num::NonZeroU32::MIN,
                burst: std::num::NonZeroU32::MIN,
            }),
            max_body: DEFAULT_MAX_BODY,
            conn: server::ConnLimits::default(),
            lock_wait: std::time::Duration::ZERO,
            tls: None,
            content: service::ContentLimits::default(),
            audit_log: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Locked(#[from] crate::dirlock::LockError),
    #[error("KEYWARD_CMS_ADMIN_TOKEN {0}")]
    AdminToken(&'static str),
    #[error(transparent)]
    Tls(#[from] server::TlsError),
    // Causes are in the messages, not `source`s: printed once whichever way they are shown.
    #[error("cannot use data directory {path}: {cause}")]
    DataDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot open the CMS database: {0}")]
    Store(store::StoreError),
    #[error("cannot open the audit log {path}: {cause}")]
    AuditLog {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
}

impl From<store::StoreError> for StartError {
    fn from(e: store::StoreError) -> StartError {
        StartError::Store(e)
    }
}

/// A running reference CMS.
pub struct RunningCms {
    pub addr: SocketAddr,
    pub admin_token: AdminToken,
    /// Where a generated admin token was written (None when it came from the environment).
    pub admin_token_path: Option<PathBuf>,
    pub service: Arc<Service>,
    ctx: Arc<Ctx>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    tls: Option<Arc<server::Tls>>,
    /// Held while serving: one writer per data directory.
    _lock: crate::dirlock::DirLock,
}

impl RunningCms {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The TLS settings, to reload them (SIGHUP) while serving; `None` for plain HTTP.
    pub fn tls(&self) -> Option<Arc<server::Tls>> {
        self.tls.clone()
    }

    /// Write requests this instance has served (for "zero writes" checks and benchmarks).
    pub fn writes(&self) -> u64 {
        self.ctx.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Key listings (`GET /v1/keys`) this instance has served.
    pub fn key_listings(&self) -> u64 {
        self.ctx
            .key_listings
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves until the process is stopped.
    pub async fn wait(self) -> std::io::Result<()> {
        let RunningCms {
            task,
            shutdown,
            _lock,
            ..
        } = self;
        let r = task.await.unwrap_or(Ok(()));
        drop((shutdown, _lock));
        r
    }

    /// Stops accepting, finishes in-flight requests, then releases the data directory.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Serves until `stop` resolves (SIGTERM, say), then stops accepting, gives the requests
    /// in flight up to `grace` to finish (then abandons them: every write already answered is
    /// committed), writes the database's log into it, and releases the data directory.
    pub async fn serve_until(
        self,
        stop: impl std::future::Future<Output = ()>,
        grace: std::time::Duration,
    ) -> std::io::Result<()> {
        let RunningCms {
            mut task,
            shutdown,
            service,
            _lock,
            ..
        } = self;
        tokio::select! {
            r = &mut task => return r.unwrap_or(Ok(())),
            _ = stop => {}
        }
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "stopping: no new connections; finishing the requests in flight"
        );
        let _ = shutdown.send(true);
        match tokio::time::timeout(grace, &mut task).await {
            Ok(_) => tracing::info!("every request in flight was answered"),
            Err(_) => {
                task.abort();
                tracing::warn!("requests still running after the grace: abandoned");
            }
        }
        let checkpointed = tokio::task::spawn_blocking(move || service.checkpoint()).await;
        match checkpointed {
            Ok(Ok(())) => tracing::info!("database checkpointed; stopped"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "checkpoint failed; the log is replayed at the next start")
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint stopped"),
        }
        drop(_lock);
        Ok(())
    }
}

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 16;

fn resolve_admin_token(cfg: &CmsConfig) -> Result<(AdminToken, Option<PathBuf>), StartError> {
    if let Some(t) = &cfg.admin_token {
        // A token that differs from what a client sends after trimming would never match.
        if t.expose().trim() != t.expose() {
            return Err(StartError::AdminToken(
                "has surrounding whitespace; set it without spaces or newlines",
            ));
        }
        if t.expose().len() < MIN_ADMIN_TOKEN {
            return Err(StartError::AdminToken("must be at least 16 characters"));
        }
        return Ok((t.clone(), None));
    }
    let path = cfg.data_dir.join("admin-token");
    let io_err = |cause| StartError::DataDir {
        path: path.clone(),
        cause,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => {
            return Ok((AdminToken::new(s.trim().to_owned()), Some(path)))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let token = format!("kwadmin_{}", secret::random_token(32));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(io_err)?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err)?;
    Ok((AdminToken::new(token), Some(path)))
}

/// The router with CORS (deny by default, origins from the live settings), the body limit, a
/// request timeout, JSON for every error answer, and panics caught as 500.
pub fn router(ctx: Arc<Ctx>, max_body: usize, audit: Option<Arc<audit::AuditLog>>) -> Router {
    let svc = ctx.svc.clone();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            svc.cors_allows(origin.as_bytes())
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
        ])
        .max_age(std::time::Duration::from_secs(600));
    let routes = Router::new()
        .merge(api_management::routes())
        .merge(api_content::routes())
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx);
    // Innermost but for the routes: it sees each request's route and caller, and every answer
    // (408s and caught panics are made outside it: those changes did not happen).
    let routes = match audit {
        Some(log) => routes.layer(axum::middleware::from_fn_with_state(log, audit::record)),
        None => routes,
    };
    routes
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(cors)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            handler::REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn(server::json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::PanicAnswer,
        ))
}

/// What a started CMS holds of its data directory.
struct OpenedDataDir {
    lock: crate::dirlock::DirLock,
    tls: Option<Arc<server::Tls>>,
    admin_token: AdminToken,
    admin_token_path: Option<PathBuf>,
    svc: Arc<Service>,
}

/// Locks the data directory (before anything else is read or written), then loads the TLS
/// files, the admin token and the database.
fn open_data_dir(cfg: &CmsConfig) -> Result<OpenedDataDir, StartError> {
    let lock = crate::dirlock::lock(&cfg.data_dir, "data directory", cfg.lock_wait)?;
    let tls = cfg
        .tls
        .clone()
        .map(server::Tls::load)
        .transpose()?
        .map(Arc::new);
    let (admin_token, admin_token_path) = resolve_admin_token(cfg)?;
    let limits = service::ContentLimits {
        max_entry_bytes: cfg.max_body,
        ..cfg.content
    };
    let svc = Arc::new(Service::open(&cfg.data_dir, cfg.plan, limits)?);
    Ok(OpenedDataDir {
        lock,
        tls,
        admin_token,
        admin_token_path,
        svc,
    })
}

/// Every minute, the rate limiters drop the buckets of clients that went quiet, until the
/// server stops.
async fn forget_idle_clients(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = every.tick() => ctx.auth.forget_idle(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The audit trail `--audit-log` names, opened to append.
fn open_audit_log(cfg: &CmsConfig) -> Result<Option<Arc<audit::AuditLog>>, StartError> {
    let Some(path) = &cfg.audit_log else {
        return Ok(None);
    };
    let log = audit::AuditLog::open(path).map_err(|cause| StartError::AuditLog {
        path: path.clone(),
        cause,
    })?;
    Ok(Some(Arc::new(log)))
}

/// Locks and opens the data directory and starts serving on `cfg.listen`.
pub async fn start(cfg: CmsConfig) -> Result<RunningCms, StartError> {
    // The lock, the files and the database are blocking work: off the async workers.
    let opened = {
        let owned = cfg.clone();
        tokio::task::spawn_blocking(move || open_data_dir(&owned))
            .await
            .map_err(|e| StartError::DataDir {
                path: cfg.data_dir.clone(),
                cause: std::io::Error::other(e),
            })??
    };
    let OpenedDataDir {
        lock,
        tls,
        admin_token,
        admin_token_path,
        svc,
    } = opened;
    if svc.effective_cors().contains("*") {
        tracing::warn!(
            "CORS origin '*' is configured: every web page can read this CMS's responses"
        );
    }
    let ctx = Arc::new(Ctx {
        svc: svc.clone(),
        writes: Default::default(),
        key_listings: Default::default(),
        scans: tokio::sync::Semaphore::new(handler::scan_slots()),
        auth: Auth::new(
            admin_token.expose(),
            cfg.public_rate,
            cfg.key_rate,
            cfg.verify_rate,
        ),
    });
    let audit = open_audit_log(&cfg)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|cause| StartError::Listen {
            addr: cfg.listen,
            cause,
        })?;
    let addr = listener.local_addr().map_err(|cause| StartError::Listen {
        addr: cfg.listen,
        cause,
    })?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = router(ctx.clone(), cfg.max_body, audit);
    let conn = server::ConnLimits {
        max_body: cfg.max_body,
        ..cfg.conn
    };
    let task = tokio::spawn(server::serve(
        listener,
        app,
        ctx.clone(),
        conn,
        tls.clone(),
        rx.clone(),
    ));
    tokio::spawn(forget_idle_clients(ctx.clone(), rx));
    // A missing plan is an absent field, not `None`: JSON logs show plain values.
    let plan = cfg.plan.map(Tier::as_str);
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), plan, "reference CMS listening");
    Ok(RunningCms {
        addr,
        ctx,
        admin_token,
        admin_token_path,
        service: svc,
        shutdown: tx,
        task,
        tls,
        _lock: lock,
    })
}
