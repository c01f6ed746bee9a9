//! The connection layer of the reference CMS: how many connections, how long a client may take,
//! and what a client gets when hyper refuses a request before the router sees it.
//!
//! - At most `max_connections` are served; beyond that new connections wait in the listen queue
//!   (they are not accepted, so the process never runs out of file descriptors).
//! - A request must send its whole head within `header_timeout` of its first byte; a connection
//!   idle between requests is closed after `idle_timeout`. A watchdog per connection enforces
//!   both, so hundreds of half-sent requests cannot hold the server.
//! - hyper answers an over-long URI (414), too large a head (431) or a malformed request (400)
//!   itself, with an empty body. [`Guarded`] rewrites those answers on the wire into the JSON
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

/// Limits of the connection layer (`keyward cms serve` flags).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// `--header-timeout`: from a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// Keep-alive connections with no request in flight close after this.
    pub idle_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
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
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
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
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let (app, shutdown) = (app.clone(), shutdown.clone());
        let tls = tls.as_ref().map(|t| t.current());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, peer, app, limits, shutdown).await,
                // The handshake is part of the head: it gets the same time.
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(tls_stream, peer, app, limits, shutdown).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
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

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Guarded::new(stream, activity.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = InFlight::start(activity.clone());
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await;
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
