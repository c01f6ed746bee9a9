//! A JSON HTTP client for CMS APIs: bearer auth, retries with exponential backoff that honour
//! `Retry-After`, and no retry of a non-idempotent call whose outcome is unknown.

use super::{CallStats, ProviderError, Result};
use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Exponential backoff with jitter (backon): `attempts` tries at most, the first wait `base`,
/// no wait over `max_wait`, and no more waiting in all than `budget` (`None`: no limit).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max_wait: Duration,
    pub budget: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(200),
            max_wait: Duration::from_secs(10),
            budget: None,
        }
    }
}

tokio::task_local! {
    /// Set for the CMS calls of one operator reconcile (see [`in_reconcile`]).
    static RECONCILE: Reconcile;
}

/// What an operator reconcile asks of every CMS call made inside it.
#[derive(Clone, Copy)]
pub struct Reconcile {
    /// When to stop waiting for retries: a call whose next wait would end past it fails now,
    /// and the caller's own backoff takes over.
    pub retry_deadline: tokio::time::Instant,
    /// When the reconcile's time is up: each call gets what is left of it (at most the
    /// client's 30 s), so an endpoint that accepts and never answers holds a worker no longer.
    pub deadline: tokio::time::Instant,
}

/// Runs `f` as one operator reconcile: every CMS call in it retries only until `deadline`, so
/// that one CMS that is down cannot hold an operator worker for minutes of `Retry-After`; and
/// no answer body reaches an error (and so the policy's status, readable by its namespace):
/// the endpoint is the tenant's choice, and could be an internal service whose answers are not
/// the tenant's to read. Bodies go to the debug log, truncated; only the few answers keyward
/// knows a CMS to give (`KNOWN_ANSWERS`) are kept.
pub async fn in_reconcile<F: std::future::Future>(limits: Reconcile, f: F) -> F::Output {
    RECONCILE.scope(limits, f).await
}

/// What is left of the reconcile's time for one call, if in a reconcile (`Some(ZERO)`: none).
fn time_left() -> Option<Duration> {
    RECONCILE
        .try_with(|r| {
            r.deadline
                .saturating_duration_since(tokio::time::Instant::now())
        })
        .ok()
}

/// CMS error messages shown as they are, also in a reconcile: fixed texts, not data.
const KNOWN_ANSWERS: [&str; 1] = ["Name already taken"];

/// Whether a wait of `delay` from now ends past the reconcile's deadline, if in one.
fn past_deadline(delay: Duration) -> bool {
    RECONCILE
        .try_with(|r| tokio::time::Instant::now() + delay > r.retry_deadline)
        .unwrap_or(false)
}

/// An answer that does not decode. Outside a reconcile (the CLI's user chose the endpoint) the
/// error says what was wrong; in one, what serde quotes back of the answer is withheld from
/// the error (and so from the status its namespace reads) and logged at debug, as answers are.
pub fn decode_error(endpoint: &str, detail: impl std::fmt::Display) -> ProviderError {
    let detail = detail.to_string();
    if RECONCILE.try_with(|_| ()).is_err() {
        return ProviderError::Decode {
            endpoint: endpoint.to_owned(),
            detail,
        };
    }
    let logged: String = detail.chars().take(500).collect();
    tracing::debug!(endpoint, detail = %logged, "CMS answer not understood (withheld from status)");
    ProviderError::Decode {
        endpoint: endpoint.to_owned(),
        detail: "its content withheld; the operator's debug log has it".into(),
    }
}

/// The message of an error answer as errors carry it: in a reconcile, withheld unless known.
fn shown(message: String, endpoint: &str, status: u16) -> String {
    if RECONCILE.try_with(|_| ()).is_err() || KNOWN_ANSWERS.contains(&message.as_str()) {
        return message;
    }
    let logged: String = message.chars().take(500).collect();
    tracing::debug!(endpoint, status, answer = %logged, "CMS error answer (withheld from status)");
    "answer withheld; the operator's debug log has it".into()
}

pub struct JsonClient {
    http: reqwest::Client,
    base: String,
    /// The bearer credential (a `SecretString`: never printed).
    token: secrecy::SecretString,
    /// The header a token goes in: `None`, `Authorization: Bearer`; else this header, alone
    /// (microCMS's `X-MICROCMS-API-KEY`).
    pub key_header: Option<&'static str>,
    /// Sent with every call besides the key (DatoCMS's `X-Api-Version`, say).
    pub headers: reqwest::header::HeaderMap,
    pub retry: RetryPolicy,
    pub stats: CallStats,
}

/// An HTTP client with rustls, the system's trust store (`SSL_CERT_FILE` and `SSL_CERT_DIR`
/// work), HTTP/2 where the server offers it, a 30 s timeout per call (10 s to connect), and
/// the CAs of `ca_pem` trusted too. There is no way to turn verification off.
fn http_client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        // A redirect would lead the credential past every check of the endpoint: it is an
        // answer like any other (an error).
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(GuardedResolver))
        .timeout(CALL_TIMEOUT)
        .connect_timeout(Duration::from_secs(10));
    if let Some(pem) = ca_pem {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ProviderError::Config {
                reason: format!("the CA is not PEM certificates: {e}"),
            })?;
        if certs.is_empty() {
            return Err(ProviderError::Config {
                reason: "the CA holds no PEM certificate".into(),
            });
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| ProviderError::Config {
        reason: format!("cannot set up the HTTP client: {e}"),
    })
}

/// Resolves names as the system does, without the link-local and cloud metadata addresses: a
/// connection's endpoint, a tenant's choice, must not lead the operator's requests (and the
/// credential they carry) to the instance metadata service of the node it runs on.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<std::net::SocketAddr> = all
                .into_iter()
                .filter(|a| !crate::model::is_metadata_address(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves to link-local (cloud metadata) addresses only; they are never called"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The longest a call may take (less, inside a reconcile whose time runs out).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether repeating a call whose answer was lost could do something twice.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    Yes,
    No,
}

impl JsonClient {
    pub fn new(base: &str, token: &str) -> JsonClient {
        JsonClient {
            // Without a CA of its own, building the client cannot fail; the fallback keeps the
            // same defaults but the timeouts.
            http: http_client(None).unwrap_or_else(|_| reqwest::Client::new()),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned().into(),
            key_header: None,
            headers: reqwest::header::HeaderMap::new(),
            retry: RetryPolicy::default(),
            stats: CallStats::default(),
        }
    }

    /// Trusts the CA certificates in `ca_pem` (PEM, one or more) besides the system's roots.
    pub fn trust(&mut self, ca_pem: &[u8]) -> Result<()> {
        self.http = http_client(Some(ca_pem))?;
        Ok(())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a call with the client's own token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<(StatusCode, Value)> {
        let token = secrecy::ExposeSecret::expose_secret(&self.token);
        self.call_as(token, method, path, body, idempotent).await
    }

    /// Sends a call with `token` as the bearer (for CMSes whose session token changes), counted
    /// in this client's stats as a read (GET) or a write. (A provider signs in through a client
    /// of its own, so signing in is never counted as a change.)
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<(StatusCode, Value)> {
        self.send(token, method, path, body, idempotent, None).await
    }

    /// Sends a call with the client's own token and `extra` headers for this call only
    /// (Contentful's `X-Contentful-Version`, say).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
        extra: &reqwest::header::HeaderMap,
    ) -> Result<(StatusCode, Value)> {
        let token = secrecy::ExposeSecret::expose_secret(&self.token);
        self.send(token, method, path, body, idempotent, Some(extra))
            .await
    }

    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
        extra: Option<&reqwest::header::HeaderMap>,
    ) -> Result<(StatusCode, Value)> {
        // An id of `..` (from a CMS's answer or an edited annotation) would reach another
        // resource: percent-encoding cannot stop it (URLs treat `%2e%2e` as `..` too).
        let segments = path.split(['?', '#']).next().unwrap_or_default().split('/');
        if segments
            .map(str::to_ascii_lowercase)
            .any(|s| matches!(s.as_str(), "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."))
        {
            return Err(ProviderError::Config {
                reason:
                    "a path with a '.' or '..' segment is never sent (an id of a key cannot be one)"
                        .into(),
            });
        }
        if method == Method::GET {
            self.stats.read();
        } else {
            self.stats.write();
        }
        let url = format!("{}{}", self.base, path);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.base)
            .with_max_delay(self.retry.max_wait)
            .with_max_times(self.retry.attempts.saturating_sub(1) as usize)
            .with_total_delay(self.retry.budget)
            .with_jitter();
        let retries = std::sync::atomic::AtomicU32::new(0);
        (|| self.attempt(token, &method, &url, body, idempotent, extra))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|f: &Failure| f.retry)
            // The server's own Retry-After (at most a minute) wins over the backoff's delay.
            .adjust(|f: &Failure, delay| {
                delay
                    .map(|d| f.retry_after.map_or(d, |r| r.min(Duration::from_secs(60))))
                    .filter(|d| !past_deadline(*d))
            })
            .notify(|f: &Failure, wait: Duration| {
                // Said once, without the error: the caller reports how it ended, with the error
                // (a success after a retry needs no error; KEYWARD_LOG=debug shows each one).
                let wait_ms = wait.as_millis() as u64;
                let retry = retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if retry == 1 {
                    tracing::warn!(%method, path, wait_ms, "CMS call failed; retrying");
                }
                tracing::debug!(%method, path, retry, wait_ms, error = %f.error, "CMS call failed");
            })
            .await
            .map_err(|f| f.error)
    }

    /// One try of a call: its answer, or what failed and whether it may be repeated.
    async fn attempt(
        &self,
        token: &str,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
        extra: Option<&reqwest::header::HeaderMap>,
    ) -> std::result::Result<(StatusCode, Value), Failure> {
        let mut rb = self
            .http
            .request(method.clone(), url)
            .headers(self.headers.clone());
        if let Some(h) = extra {
            rb = rb.headers(h.clone());
        }
        match time_left() {
            Some(Duration::ZERO) => {
                return Err(Failure {
                    error: ProviderError::Unreachable {
                        endpoint: self.base.clone(),
                        detail: "the reconcile's time (--reconcile-timeout) is up".into(),
                    },
                    retry: false,
                    retry_after: None,
                })
            }
            Some(left) => rb = rb.timeout(left.min(CALL_TIMEOUT)),
            None => {}
        }
        if !token.is_empty() {
            rb = match self.key_header {
                None => rb.bearer_auth(token),
                Some(name) => rb.header(name, self.key_header_value(token)?),
            };
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.unreachable(&e, idempotent)),
        };
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok((status, value));
        }
        // `{"message"}` (keyward, Contentful), `{"error": {"message"}}` (Strapi),
        // `{"errors": [{"message"}]}` (Directus) or `{"data": [{"attributes": {"code"}}]}`
        // (DatoCMS).
        let message = value
            .get("message")
            .or_else(|| value.pointer("/error/message"))
            .or_else(|| value.pointer("/errors/0/message"))
            .or_else(|| value.pointer("/data/0/attributes/code"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(300).collect());
        let message = shown(message, &self.base, status.as_u16());
        Err(Failure {
            error: ProviderError::Rejected {
                endpoint: self.base.clone(),
                status: status.as_u16(),
                message,
            },
            // 429 and 503 mean "not done, come back later"; other 5xx may have half-happened.
            retry: status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE
                || (status.is_server_error() && idempotent == Idempotent::Yes),
            retry_after,
        })
    }

    /// `token` as a header value marked sensitive; a token no header can carry (a line break,
    /// say) is refused without being shown.
    fn key_header_value(
        &self,
        token: &str,
    ) -> std::result::Result<reqwest::header::HeaderValue, Failure> {
        let mut v = reqwest::header::HeaderValue::from_str(token).map_err(|_| Failure {
            error: ProviderError::Config {
                reason: format!(
                    "a key sent to {} holds characters an HTTP header cannot carry",
                    self.base
                ),
            },
            retry: false,
            retry_after: None,
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// A call that got no answer. A TLS failure is configuration, never retried; a connect error
    /// means the request never left, so it is safe to repeat whatever it was.
    fn unreachable(&self, e: &reqwest::Error, idempotent: Idempotent) -> Failure {
        if let Some(detail) = super::tls::failure(e, &self.base) {
            return Failure {
                error: ProviderError::Tls {
                    endpoint: self.base.clone(),
                    detail,
                },
                retry: false,
                retry_after: None,
            };
        }
        Failure {
            error: ProviderError::Unreachable {
                endpoint: self.base.clone(),
                detail: describe(e),
            },
            // A request that could not be built (a header no value fits) fails the same way again.
            retry: !e.is_builder() && (e.is_connect() || idempotent == Idempotent::Yes),
            retry_after: None,
        }
    }
}

/// What one attempt of a call left: the error if it is the last, whether to try again, and
/// when the server asked to be called again.
struct Failure {
    error: ProviderError,
    retry: bool,
    retry_after: Option<Duration>,
}

/// `s` percent-encoded but for the unreserved characters (RFC 3986): a query value, or an id
/// as a path segment that cannot reach another path.
pub fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How long the CMS asks to wait before a retry, in seconds: the standard `Retry-After`, or
/// the reset header of CMSes that send their own (DatoCMS's `X-RateLimit-Reset`, Contentful's
/// `X-Contentful-RateLimit-Reset`).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    [
        reqwest::header::RETRY_AFTER.as_str(),
        "x-ratelimit-reset",
        "x-contentful-ratelimit-reset",
    ]
    .into_iter()
    .find_map(|name| headers.get(name))
    .and_then(|v| v.to_str().ok())
    .and_then(|v| v.trim().parse::<u64>().ok())
    .map(Duration::from_secs)
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
