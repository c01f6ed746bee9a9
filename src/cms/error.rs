//! Errors of the reference CMS and the JSON bodies they answer with. Messages name what is wrong
//! and never contain a key value.

use super::store::StoreError;
use crate::model::SpecError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
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
    Escalation(super::rights::Missing),
    #[error("too many requests; retry in {}s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
}

impl From<super::rights::Missing> for CmsError {
    fn from(m: super::rights::Missing) -> CmsError {
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
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::Store(_) => "internal",
        }
    }
}

impl IntoResponse for CmsError {
    fn into_response(self) -> Response {
        if let Self::Store(e) = &self {
            tracing::error!(error = %e, "store failure");
        }
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        if let Self::Invalid(e) = &self {
            body["field"] = json!(e.path);
        }
        if let Self::Escalation(missing) = &self {
            body["reason"] = json!("escalation");
            body["missing"] = json!(missing.0);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if let Self::RateLimited(wait) = self {
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
