//! A JSON HTTP client for CMS APIs: bearer auth, retries with exponential backoff that honour
//! `Retry-After`, and no retry of a non-idempotent call whose outcome is unknown.

use super::{CallStats, ProviderError, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(200),
            max_wait: Duration::from_secs(10),
        }
    }
}

pub struct JsonClient {
    http: reqwest::Client,
    base: String,
    /// The bearer credential (a `SecretString`: never printed).
    token: secrecy::SecretString,
    pub retry: RetryPolicy,
    pub stats: CallStats,
}

/// Whether repeating a call whose answer was lost could do something twice.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    Yes,
    No,
}

impl JsonClient {
    pub fn new(base: &str, token: &str) -> JsonClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        JsonClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned().into(),
            retry: RetryPolicy::default(),
            stats: CallStats::default(),
        }
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

    /// Sends a call with `token` as the bearer (for CMSes whose session token changes).
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<(StatusCode, Value)> {
        if method == Method::GET {
            self.stats.read();
        } else {
            self.stats.write();
        }
        self.call_uncounted(token, method, path, body, idempotent)
            .await
    }

    /// A call that is neither a read nor a write of managed state (signing in).
    pub async fn call_uncounted(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{}", self.base, path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb = self.http.request(method.clone(), &url);
            if !token.is_empty() {
                rb = rb.bearer_auth(token);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let last = attempt >= self.retry.attempts;
            let backoff = self
                .retry
                .base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(self.retry.max_wait);
            match rb.send().await {
                Err(e) => {
                    // A connect error means the request never left: safe to repeat whatever it was.
                    let safe = e.is_connect() || idempotent == Idempotent::Yes;
                    if last || !safe {
                        return Err(ProviderError::Unreachable {
                            endpoint: self.base.clone(),
                            detail: describe(&e),
                        });
                    }
                    tracing::warn!(%method, path, attempt, error = %describe(&e), "CMS unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.unwrap_or_default();
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status.is_success() {
                        return Ok((status, value));
                    }
                    // 429 and 503 mean "not done, come back later"; other 5xx may have half-happened.
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE
                        || (status.is_server_error() && idempotent == Idempotent::Yes);
                    if !retryable || last {
                        // `{"message"}` (keyward) or `{"error": {"message"}}` (Strapi).
                        let message = value
                            .get("message")
                            .or_else(|| value.pointer("/error/message"))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .unwrap_or_else(|| text.chars().take(300).collect());
                        return Err(ProviderError::Rejected {
                            endpoint: self.base.clone(),
                            status: status.as_u16(),
                            message,
                        });
                    }
                    let wait = retry_after
                        .map(|r| r.min(Duration::from_secs(60)))
                        .unwrap_or(backoff);
                    tracing::warn!(%method, path, attempt, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "CMS asked to retry");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
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
