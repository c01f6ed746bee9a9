//! The connection layer of the reference CMS: how many connections, how long a client may take,
//! and what a client gets when hyper refuses a request before the router sees it.
//!
//! - At most `max_connections` are served; beyond that new connections wait in the listen queue
//!   (they are not accepted, so the process never runs out of file descriptors).
//! - A request must send its whole head within `header_timeout` of its first byte; a connection
//!   idle between requests is closed after `idle_timeout`. A watchdog per connection enforces
//!   both, so hundreds of half-sent requests cannot hold the server.
//! - hyper answers an over-long URI (414), too large a head (431) or a malformed request (400)
//!   itself, with an empty body. `Guarded` rewrites those answers on the wire into the JSON
//!   error bodies every other answer has.
//! - With [`Tls`], every connection is HTTPS (HTTP/2 or HTTP/1.1 by ALPN); the TLS handshake
//!   gets the header timeout too, and the certificate can be reloaded without a restart.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// The default `--max-body`: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Limits of the connection layer (`keyward cms serve` flags).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// `--header-timeout`: from a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// Keep-alive connections with no request in flight close after this.
    pub idle_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-body`: the most a body may hold, and so what a body of unknown length reserves.
    pub max_body: usize,
    /// `--max-bodies-in-flight`: bytes of request bodies being read or held, over every
    /// connection; a body waits for room before it is read (then 503).
    pub bodies_in_flight: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_body: DEFAULT_MAX_BODY,
            bodies_in_flight: DEFAULT_BODIES_IN_FLIGHT,
        }
    }
}

/// The default `--max-bodies-in-flight`: 64 MiB.
pub const DEFAULT_BODIES_IN_FLIGHT: usize = 64 * 1024 * 1024;

/// HTTP/2 streams one connection may have open at once (hyper's default is 200, each of which
/// could hold a body: the bodies of one connection are bounded below too).
const H2_MAX_STREAMS: u32 = 64;
/// How much a stream may send before the server reads it: what HTTP/2 buffers for a body that
/// waits for room.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// The same for a whole connection: room for every stream's window, so streams whose bodies
/// wait can never use up the window that the bodies being read need (4 MiB).
const H2_CONNECTION_WINDOW: u32 = H2_MAX_STREAMS * H2_STREAM_WINDOW;
/// The header list HTTP/2 decodes at most; beyond it the HTTP/2 layer refuses the stream. Heads
/// over [`MAX_HEAD_BYTES`] but under this get the same JSON 431 as over HTTP/1.1.
const H2_MAX_HEADER_LIST: u32 = 4 * MAX_HEAD_BYTES as u32;
/// Bodies of one connection held at once, in multiples of `--max-body`.
const BODIES_PER_CONNECTION: usize = 4;
/// How long a body waits for room before the answer is 503.
const BODY_WAIT: Duration = Duration::from_secs(10);

/// Room for request bodies, in KiB: one budget for the whole server, one per connection.
#[derive(Clone)]
struct BodyBudget {
    total: Arc<Semaphore>,
    connection: Arc<Semaphore>,
}

/// KiB (rounded up) as semaphore permits.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    /// Waits for room for a body of `len` bytes (`None`: unknown, so the most a body may hold),
    /// first on the connection, then on the server.
    async fn reserve(
        &self,
        len: Option<u64>,
        limits: &ConnLimits,
    ) -> Option<(
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedSemaphorePermit,
    )> {
        let bytes = len
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(limits.max_body)
            .min(limits.max_body);
        let n = kib(bytes).max(1);
        let wait = async {
            let mine = self.connection.clone().acquire_many_owned(n).await.ok()?;
            let all = self.total.clone().acquire_many_owned(n).await.ok()?;
            Some((mine, all))
        };
        tokio::time::timeout(BODY_WAIT, wait).await.ok().flatten()
    }
}

/// The size of a request head as HTTP/2 counts a header list (RFC 7541 4.1: name, value and 32
/// bytes per field), pseudo-headers included.
fn header_list_size<B>(req: &hyper::Request<B>) -> usize {
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 32)
        .sum();
    fields + req.uri().to_string().len() + req.method().as_str().len() + 4 * 32
}

/// The PEM files of `--tls-cert` and `--tls-key`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The server's TLS settings, replaceable while serving (`reload`, on SIGHUP).
pub struct Tls {
    files: TlsFiles,
    acceptor: parking_lot::RwLock<tokio_rustls::TlsAcceptor>,
}

impl Tls {
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let acceptor = acceptor(&files)?;
        Ok(Tls {
            files,
            acceptor: parking_lot::RwLock::new(acceptor),
        })
    }

    /// Reads the certificate and key again; on an error the current ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.files)?;
        *self.acceptor.write() = fresh;
        Ok(())
    }

    fn current(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.read().clone()
    }
}

fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    // Regular files of a bounded size only: a FIFO would block a SIGHUP reload forever.
    let read = |path: &std::path::Path, what: &str| {
        crate::files::read_small(path, crate::files::MAX_SMALL_FILE)
            .map_err(|e| TlsError(format!("cannot read the {what}: {e}")))
    };
    let cert_pem = read(&files.cert, "certificate")?;
    let key_pem = read(&files.key, "private key")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError(format!(
                "cannot read the certificate {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{} holds no certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError(format!(
            "cannot read the private key {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("the certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The largest request head hyper reads (beyond it: 431).
const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Serves `app` on `listener` until `shutdown` turns true, then finishes the requests in flight.
/// The hottest call, a GET of one entry, is answered before `app` with `ctx` (see
/// `api_content::read_hot`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    ctx: Arc<super::handler::Ctx>,
    limits: ConnLimits,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let bodies = Arc::new(Semaphore::new(kib(limits.bodies_in_flight) as usize));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(io::Error::other)?,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset while queued: wait, never exit.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, ctx, shutdown) = (app.clone(), ctx.clone(), shutdown.clone());
        let tls = tls.as_ref().map(|t| t.current());
        let budget = BodyBudget {
            total: bodies.clone(),
            connection: Arc::new(Semaphore::new(kib(limits
                .max_body
                .saturating_mul(BODIES_PER_CONNECTION))
                as usize)),
        };
        let conn = Conn {
            peer,
            app,
            ctx,
            limits,
            budget,
        };
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, conn, shutdown).await,
                // The handshake is part of the head: it gets the same time.
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => serve_connection(tls_stream, conn, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    // Stopping: new connections are refused at once instead of waiting in the listen queue.
    drop(listener);
    // Every connection holds a slot until it ends: taking them all waits for the last one.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Resolves once the server is told to stop.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // A dropped sender counts as a stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One accepted connection: who, what serves it, its limits and its room for bodies.
struct Conn {
    peer: SocketAddr,
    app: Router,
    ctx: Arc<super::handler::Ctx>,
    limits: ConnLimits,
    budget: BodyBudget,
}

/// Answers one request: an HTTP/2 head over the limit gets the JSON 431 HTTP/1.1 gets, and a
/// body is read only once there is room for it (on its connection and on the server).
async fn answer(
    req: hyper::Request<Incoming>,
    app: Router,
    ctx: Arc<super::handler::Ctx>,
    limits: ConnLimits,
    budget: BodyBudget,
) -> Result<axum::response::Response, std::convert::Infallible> {
    use axum::response::IntoResponse;
    use hyper::body::Body as _;
    if req.version() == hyper::Version::HTTP_2 && header_list_size(&req) > MAX_HEAD_BYTES {
        let status = axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        let body = super::error::status_body(status, None);
        return Ok((status, axum::Json(body)).into_response());
    }
    let _room = if req.body().is_end_stream() {
        if let Some(answered) = super::api_content::read_hot(&ctx, &req).await {
            return Ok(answered);
        }
        None
    } else {
        let len = req.body().size_hint().exact();
        match budget.reserve(len, &limits).await {
            Some(room) => Some(room),
            None => {
                let busy = super::error::CmsError::Busy(Duration::from_secs(1));
                return Ok(busy.into_response());
            }
        }
    };
    app.oneshot(req).await
}

async fn serve_connection<S>(stream: S, conn: Conn, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        app,
        ctx,
        limits,
        budget,
    } = conn;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Guarded::new(stream, activity.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = InFlight::start(activity.clone());
            let (app, ctx, budget) = (app.clone(), ctx.clone(), budget.clone());
            async move {
                let resp = answer(req, app, ctx, limits, budget).await;
                drop(busy);
                resp
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's own timer covers the wait for the next request (idle keep-alive); the
        // watchdog below the shorter limit on a head that has started.
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(H2_MAX_HEADER_LIST);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1))) => {
                if activity.overdue(&limits) {
                    tracing::debug!(%peer, "closing a connection that was too slow or idle too long");
                    return;
                }
            }
            _ = stopped(&mut shutdown), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, for its watchdog: requests in flight, when the current head
/// started arriving, and when the connection last went idle (milliseconds since it opened).
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// 0 when no head is arriving; otherwise 1 + the millisecond its first byte came.
    head_started: AtomicU64,
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: with no request in flight, they start a new head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now_ms() + 1;
            let _ = self
                .head_started
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// When the watchdog should look again.
    fn deadline(&self, limits: &ConnLimits) -> tokio::time::Instant {
        let base = tokio::time::Instant::from_std(self.opened);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return tokio::time::Instant::now() + limits.idle_timeout;
        }
        let ms = match self.head_started.load(Ordering::Acquire) {
            0 => self.idle_since.load(Ordering::Acquire) + millis(limits.idle_timeout),
            started => started - 1 + millis(limits.header_timeout),
        };
        base + Duration::from_millis(ms)
    }

    fn overdue(&self, limits: &ConnLimits) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && tokio::time::Instant::now() >= self.deadline(limits)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// A request in flight on a connection; dropping it marks the connection idle again.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_started.store(0, Ordering::Release);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.0.now_ms();
            self.0.idle_since.store(now, Ordering::Release);
        }
    }
}

/// The client's stream, watched: reads feed the watchdog, and hyper's own bodiless error
/// answers are replaced by JSON ones.
struct Guarded<S> {
    inner: S,
    activity: Arc<Activity>,
    /// A replacement answer still to be written.
    pending: Vec<u8>,
    written: usize,
}

impl<S> Guarded<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Guarded<S> {
        Guarded {
            inner,
            activity,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(replacement) = json_error_answer(buf) {
            this.pending = replacement;
            // The replacement is queued; it goes out now or with the next flush.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// If `head` is an answer hyper wrote itself (a 4xx with an empty body and no content type; the
/// router's answers always carry JSON), the same status with a JSON error body.
fn json_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 4")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 4"))?;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let lower = head[..end].to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if !has(b"\r\ncontent-length: 0") || has(b"\r\ncontent-type:") || end + 4 != head.len() {
        return None;
    }
    let code: u16 = std::str::from_utf8(rest.get(..2)?)
        .ok()?
        .parse::<u16>()
        .ok()?
        + 400;
    let status = axum::http::StatusCode::from_u16(code).ok()?;
    let body = super::error::status_body(status, None).to_string();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            body.len()
        )
        .into_bytes(),
    )
}

/// Middleware: every error answer is JSON with an `error` field, also the ones the router and
/// its extractors make (404, 405, 413, a query that does not parse), and never repeats the
/// credential the request presented.
pub async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Cheap clones of the header values: the key is only read back for an error answer.
    let presented = super::auth::Presented::of(req.headers());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let text = match presented.key().filter(|p| !p.is_empty()) {
        Some(p) => text.replace(p, "…"),
        None => text,
    };
    let body = super::error::status_body(status, Some(text)).to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_bodiless_errors_are_rewritten() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(json_error_answer(hyper_414).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(out.contains("content-type: application/json"), "{out}");
        assert!(
            out.ends_with(r#""error":"uri_too_long","message":"URI Too Long"}"#)
                || out.contains("uri_too_long"),
            "{out}"
        );
        let router_404 =
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(json_error_answer(router_404).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(json_error_answer(ok).is_none());
    }
}
