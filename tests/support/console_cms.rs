//! A stand-in for the content APIs of microCMS and Kontent.ai, whose keys are made in their
//! consoles: it takes the keys it is given, in the header each vendor's own client sends them
//! in, answers in the vendor's shapes (`tests/console_keys.rs` runs the vendors' clients
//! from npm against it to check that), and records every request it gets.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A request as the stand-in saw it: enough to compare a client's with another's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The query's parameters, sorted.
    pub query: BTreeSet<String>,
    /// The headers that carried a key (`x-microcms-api-key`, `authorization`).
    pub key_headers: BTreeSet<String>,
    /// The status it answered.
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    keys: BTreeSet<String>,
    /// Keys that are keys, but without the right to read.
    readless: BTreeSet<String>,
    seen: Vec<Seen>,
}

#[derive(Clone, Default)]
pub struct ConsoleCms {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl ConsoleCms {
    /// Serves on a free loopback port: microCMS's list API under `/api/v1/{api}`, Kontent.ai's
    /// Delivery items under `/{environment}/items`.
    pub async fn start() -> ConsoleCms {
        let mut cms = ConsoleCms::default();
        let app = Router::new()
            .route("/api/v1/{api}", get(microcms_list))
            .route("/{environment}/items", get(kontent_items))
            .with_state(cms.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        cms.url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        cms
    }

    /// A key made in the console.
    pub fn make(&self, key: &str) {
        self.inner.lock().unwrap().keys.insert(key.to_owned());
    }

    /// A key made in the console without the right to read content.
    pub fn make_readless(&self, key: &str) {
        self.inner.lock().unwrap().readless.insert(key.to_owned());
    }

    /// A key revoked (or regenerated) in the console.
    pub fn revoke(&self, key: &str) {
        let mut i = self.inner.lock().unwrap();
        i.keys.remove(key);
        i.readless.remove(key);
    }

    /// Every request so far, and forgets them.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.inner.lock().unwrap().seen)
    }

    /// Records the request; then whether `key` is a key, one that may read, or neither.
    fn admit(
        &self,
        path: String,
        query: Option<String>,
        headers: &HeaderMap,
        key: Option<&str>,
    ) -> Access {
        let mut i = self.inner.lock().unwrap();
        let key_headers = ["x-microcms-api-key", "authorization"]
            .into_iter()
            .filter(|h| headers.contains_key(*h))
            .map(str::to_owned)
            .collect();
        let query = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let (access, answered) = match key {
            Some(k) if i.keys.contains(k) => (Access::Read, 200),
            Some(k) if i.readless.contains(k) => (Access::Forbidden, 403),
            _ => (Access::None, 401),
        };
        i.seen.push(Seen {
            method: "GET".into(),
            path,
            query,
            key_headers,
            answered,
        });
        access
    }
}

enum Access {
    Read,
    Forbidden,
    None,
}

/// microCMS: `GET /api/v1/{api}` with `X-MICROCMS-API-KEY`.
async fn microcms_list(
    State(cms): State<ConsoleCms>,
    Path(api): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get("x-microcms-api-key")
        .and_then(|v| v.to_str().ok());
    let message = |m: &str| Json(json!({ "message": m }));
    match cms.admit(format!("/api/v1/{api}"), query, &headers, key) {
        Access::None if key.is_none() => (
            StatusCode::UNAUTHORIZED,
            message("X-MICROCMS-API-KEY header is required."),
        )
            .into_response(),
        Access::None => (
            StatusCode::UNAUTHORIZED,
            message("X-MICROCMS-API-KEY header is invalid."),
        )
            .into_response(),
        Access::Forbidden => (StatusCode::FORBIDDEN, message("Forbidden.")).into_response(),
        Access::Read => Json(json!({
            "contents": [{ "id": "first", "createdAt": "2026-01-01T00:00:00.000Z" }],
            "totalCount": 1,
            "offset": 0,
            "limit": 1
        }))
        .into_response(),
    }
}

/// Kontent.ai: `GET /{environment}/items` with `Authorization: Bearer`.
async fn kontent_items(
    State(cms): State<ConsoleCms>,
    Path(environment): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        });
    let error = |status: StatusCode, code: u32, m: &str| {
        let body = json!({
            "message": m, "request_id": "0", "error_code": code, "specific_code": 0
        });
        (status, Json(body)).into_response()
    };
    match cms.admit(format!("/{environment}/items"), query, &headers, key) {
        Access::None => error(
            StatusCode::UNAUTHORIZED,
            6,
            "The provided API key is invalid or has expired.",
        ),
        Access::Forbidden => error(StatusCode::FORBIDDEN, 7, "The API key has no access here."),
        Access::Read => Json(json!({
            "items": [],
            "modular_content": {},
            "pagination": { "skip": 0, "limit": 1, "count": 0, "next_page": "" }
        }))
        .into_response(),
    }
}

/// One vendor's API on the stand-in, as a connection sees it: the provider, the endpoint and the
/// connection's key (`connection-key`, made here).
pub struct Vendor {
    pub cms: ConsoleCms,
    pub provider: keyward::policy::ProviderKind,
    pub endpoint: String,
}

impl Vendor {
    /// `provider` (microcms or kontent) on `cms`: a list API, or an environment.
    pub fn on(cms: &ConsoleCms, provider: keyward::policy::ProviderKind) -> Vendor {
        cms.make(super::console_cms::CONNECTION_KEY);
        let endpoint = match provider {
            keyward::policy::ProviderKind::Microcms => format!("{}/api/v1/news", cms.url),
            _ => format!("{}/env-1", cms.url),
        };
        Vendor {
            cms: cms.clone(),
            provider,
            endpoint,
        }
    }
}

/// The key each connection to the stand-in has.
pub const CONNECTION_KEY: &str = "connection-key";

impl super::Answers for Vendor {
    async fn status(&self, _: reqwest::Method, _: &str, key: &str) -> reqwest::StatusCode {
        let probe = match self.provider {
            keyward::policy::ProviderKind::Microcms => reqwest::Client::new()
                .get(&self.endpoint)
                .header("X-MICROCMS-API-KEY", key),
            _ => reqwest::Client::new()
                .get(format!("{}/items", self.endpoint))
                .bearer_auth(key),
        };
        probe.send().await.unwrap().status()
    }
}

impl super::Target for Vendor {
    fn connection(&self) -> (keyward::policy::ProviderKind, &str, String) {
        (self.provider, &self.endpoint, CONNECTION_KEY.to_owned())
    }
}
