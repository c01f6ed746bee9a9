//! Errors of the reference CMS and the JSON bodies they answer with. Messages name what is wrong
//! and never contain a key value.

use super::store::StoreError;
use crate::model::SpecError;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("{0}")]
    Invalid(#[from] SpecError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PlanLimit(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The caller would hand out (or touch) a right it does not hold itself.
    #[error("refused: this would need {0}, which the caller does not hold")]
    Escalation(Missing),
    #[error("too many requests; retry in {}s", .0.as_secs().max(1))]
    RateLimited(Duration),
    /// One entry would grow past what an entry may hold.
    #[error("{0}")]
    TooLarge(String),
    /// An API would hold more entries or bytes than its limit (`reason` says which).
    #[error("{message}")]
    Storage {
        reason: &'static str,
        message: String,
    },
    /// Too much shared work is under way (scans of large APIs); try again shortly.
    #[error("the server is busy; retry in {}s", .0.as_secs().max(1))]
    Busy(Duration),
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
    /// The request's work stopped before it finished (its task panicked): the server's fault,
    /// not the request's. The detail goes to the log only.
    #[error("internal error: the request's work stopped")]
    Aborted(String),
}

impl From<Missing> for CmsError {
    fn from(m: Missing) -> CmsError {
        CmsError::Escalation(m)
    }
}

impl CmsError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PlanLimit(_) | Self::Forbidden(_) | Self::Escalation(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Storage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) | Self::Aborted(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PlanLimit(_) => "plan_limit",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) | Self::Escalation(_) => "forbidden",
            Self::RateLimited(_) => "rate_limited",
            Self::TooLarge(_) => "payload_too_large",
            Self::Storage { .. } => "insufficient_storage",
            Self::Busy(_) => "busy",
            Self::Store(_) | Self::Aborted(_) => "internal",
        }
    }
}

impl IntoResponse for CmsError {
    fn into_response(self) -> Response {
        match &self {
            Self::Store(e) => tracing::error!(error = %e, "store failure"),
            Self::Aborted(e) => tracing::error!(error = %e, "a request's work stopped"),
            _ => {}
        }
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        if let Self::Invalid(e) = &self {
            body["field"] = json!(e.path);
        }
        if let Self::Escalation(missing) = &self {
            body["reason"] = json!("escalation");
            body["missing"] = json!(missing.0);
        }
        match &self {
            Self::Storage { reason, .. } => body["reason"] = json!(reason),
            Self::TooLarge(_) => body["reason"] = json!("entry_size"),
            _ => {}
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if let Self::RateLimited(wait) | Self::Busy(wait) = self {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The `error` code of an answer that has no more specific one, by status.
fn status_code_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "invalid",
        429 => "rate_limited",
        431 => "headers_too_large",
        500..=599 => "internal",
        _ => "error",
    }
}

/// The JSON body of an error answer that did not come from a handler.
pub fn status_body(status: StatusCode, message: Option<String>) -> Value {
    let message = message
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    json!({"error": status_code_name(status), "message": message})
}

/// A right the caller would need and does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Missing(pub String);

/// A handler that panicked answers 500 in JSON (and the connection lives on); what panicked is
/// logged, not sent.
#[derive(Clone, Copy)]
pub struct PanicAnswer;

impl tower_http::catch_panic::ResponseForPanic for PanicAnswer {
    type ResponseBody = Body;

    fn response_for_panic(
        &mut self,
        err: Box<dyn std::any::Any + Send + 'static>,
    ) -> axum::http::Response<Body> {
        let what = err
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| err.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %what, "a handler panicked");
        let body = status_body(StatusCode::INTERNAL_SERVER_ERROR, None);
        (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_that_stopped_is_the_servers_fault_and_says_no_more() {
        let e = CmsError::Aborted("task 7 panicked with 'secret detail'".into());
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.code(), "internal");
        assert!(!e.to_string().contains("secret detail"), "{e}");
    }
}
