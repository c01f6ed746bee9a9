//! The audit trail (`keyward cms serve --audit-log FILE`): one JSON line per write request to
//! the management API (keys, APIs, public endpoints, CORS, settings owners, members, roles,
//! and the service operations): when, who (the admin token, a key's id, no credential, or one
//! that did not pass), from which address, what (the route, and the concrete path when it
//! succeeded), the id of what it created, and the answer's status. Never a value: no request or
//! response body is read, and a path is written only once it named something that exists (a key
//! pasted into a URL by mistake answers 404 and is not written).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// One line of the trail.
#[derive(Debug, Serialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub at: String,
    /// `admin`, `key ID`, `anonymous` (no credential) or `unauthenticated` (a credential that
    /// did not pass).
    pub who: String,
    pub client: String,
    /// `METHOD /route/{param}`.
    pub action: String,
    /// The concrete path, when the change succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The id of the key (or the name of the member) the request created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub status: u16,
    /// `done` (2xx), `refused` (4xx), `failed` (5xx), or `abandoned` (no answer was sent:
    /// the client went or the request's time ran out; status 0).
    pub result: &'static str,
}

impl AuditLog {
    /// Opens (or creates, readable by its owner only) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let mut opts = std::fs::OpenOptions::new();
        opts.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(opts.open(path)?),
        })
    }

    /// Appends one line; a failure is logged (the change it records is already made).
    pub fn write(&self, entry: &impl Serialize) {
        let line = match serde_json::to_string(entry) {
            Ok(l) => l + "\n",
            Err(e) => return tracing::error!(error = %e, "audit entry not serializable"),
        };
        // One write per line, under the lock: lines never interleave.
        let written = match self.file.lock() {
            Ok(mut f) => f.write_all(line.as_bytes()),
            Err(_) => Err(std::io::Error::other("the audit log's lock is poisoned")),
        };
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
        }
    }
}

/// Who a request was authenticated as: set by the authentication, read once the answer is
/// made (a request extension).
#[derive(Clone, Debug, Default)]
pub struct Caller(Arc<OnceLock<String>>);

impl Caller {
    pub fn set(&self, who: String) {
        let _ = self.0.set(who);
    }
}

/// What a request created (a response extension): a key's id, a member's name.
#[derive(Clone, Debug)]
pub struct Created(pub String);

fn audited(method: &Method, path: &str) -> bool {
    path.starts_with("/v1/")
        && matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
}

/// The middleware: records every write request to the management API in `log`.
pub async fn record(State(log): State<Arc<AuditLog>>, mut req: Request, next: Next) -> Response {
    if !audited(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let caller = Caller::default();
    req.extensions_mut().insert(caller.clone());
    let mut pending = Pending {
        log,
        caller,
        client: req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default(),
        action: format!(
            "{} {}",
            req.method(),
            req.extensions()
                .get::<MatchedPath>()
                .map_or("(no such route)", |m| m.as_str())
        ),
        path: req.uri().path().to_owned(),
        answered: false,
    };
    let response = next.run(req).await;
    let entry = pending.entry(
        response.status(),
        response.extensions().get::<Created>().map(|c| c.0.clone()),
    );
    pending.answered = true;
    let log = pending.log.clone();
    // A file write: off the async workers.
    let _ = tokio::task::spawn_blocking(move || log.write(&entry)).await;
    response
}

/// A request being served; dropped unanswered (its connection closed, its time up), it is
/// still written, as abandoned: its change may have been made.
struct Pending {
    log: Arc<AuditLog>,
    caller: Caller,
    client: String,
    action: String,
    path: String,
    answered: bool,
}

impl Pending {
    fn entry(&self, status: StatusCode, created: Option<String>) -> AuditEntry {
        AuditEntry {
            at: crate::model::rfc3339(jiff::Timestamp::now()),
            who: self
                .caller
                .0
                .get()
                .cloned()
                .unwrap_or_else(|| "unauthenticated".into()),
            client: self.client.clone(),
            action: self.action.clone(),
            path: status.is_success().then(|| self.path.clone()),
            created,
            status: status.as_u16(),
            result: match status.as_u16() {
                200..=299 => "done",
                400..=499 => "refused",
                _ => "failed",
            },
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            let entry = AuditEntry {
                status: 0,
                result: "abandoned",
                path: None,
                ..self.entry(StatusCode::OK, None)
            };
            self.log.write(&entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_dropped_before_its_answer_is_written_as_abandoned_without_its_path() {
        let dir = tempfile::tempdir().expect("a directory");
        let log = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl")).expect("opened"));
        let caller = Caller::default();
        caller.set("admin".into());
        let pending = Pending {
            log,
            caller,
            client: "10.0.0.1".into(),
            action: "POST /v1/keys".into(),
            path: "/v1/keys/kw_pasted_value".into(),
            answered: false,
        };
        drop(pending);
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("written");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["result"], "abandoned");
        assert_eq!(line["status"], 0);
        assert_eq!(line["who"], "admin");
        assert!(line.get("path").is_none(), "{line}");
    }
}
