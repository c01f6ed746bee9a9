//! A stand-in for Contentful: one space's Delivery API keys (with their paired Preview API
//! keys) and environments through the Content Management API, in the shapes the types of its
//! official management client describe (`tests/contentful.rs` checks every exchange against
//! `contentful-management`'s entity types), and the delivery and preview APIs' answer to a key.
//!
//! - Listings are paginated (`skip`, `limit`, `total`), at most `page_cap` items a page.
//! - An update needs `X-Contentful-Version`: a stale version answers 409 `VersionMismatch`.
//! - Key names are unique in the space: 422 `ValidationFailed`.
//! - 429 `RateLimitExceeded` with `X-Contentful-RateLimit-Reset`, on demand.
//! - A new key answers 401 on the delivery and preview APIs until its propagation delay has
//!   passed; a deleted key answers 401 at once.
//! - Errors are Contentful's `{"sys": {"type": "Error", "id"}, "message", "requestId"}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The management token the stand-in accepts.
pub const ADMIN: &str = "contentful-cma-token";
pub const SPACE: &str = "space1";
/// The space's environments.
pub const ENVIRONMENTS: [&str; 2] = ["master", "staging"];

pub use super::vendor_types::Exchange;

#[derive(Clone, Debug)]
struct Key {
    version: u64,
    name: String,
    description: String,
    environments: Vec<String>,
    delivery: String,
    preview: String,
    preview_id: String,
    created: String,
    /// When it starts to answer on the delivery and preview APIs.
    live_from: Instant,
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<String, Key>,
    next: u64,
    exchanges: Vec<Exchange>,
    throttle: u32,
    throttled: u32,
    conflicts: u32,
    conflicted: u32,
    page_cap: usize,
    propagation: Duration,
}

#[derive(Clone)]
pub struct ContentfulStandIn {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
    /// The connection's endpoint: the space.
    pub endpoint: String,
}

fn err(id: &str, message: &str) -> Value {
    json!({"sys": {"type": "Error", "id": id}, "message": message, "requestId": "req-1"})
}

fn link(kind: &str, id: &str) -> Value {
    json!({"sys": {"type": "Link", "linkType": kind, "id": id}})
}

fn sys(kind: &str, id: &str, version: u64, created: &str) -> Value {
    json!({"type": kind, "id": id, "version": version, "createdAt": created, "updatedAt": created,
        "space": link("Space", SPACE)})
}

impl Key {
    fn json(&self, id: &str) -> Value {
        json!({
            "sys": sys("ApiKey", id, self.version, &self.created),
            "name": self.name,
            "description": self.description,
            "accessToken": self.delivery,
            "environments": self.environments.iter().map(|e| link("Environment", e)).collect::<Vec<_>>(),
            "preview_api_key": link("PreviewApiKey", &self.preview_id),
            "policies": [{"effect": "allow", "action": "all"}],
        })
    }
}

impl ContentfulStandIn {
    /// Serves on a free loopback port, with one key a member made (not keyward's).
    pub async fn start() -> ContentfulStandIn {
        let mut inner = Inner {
            page_cap: 100,
            ..Inner::default()
        };
        inner.keys.insert(
            "k-website".into(),
            Key {
                version: 1,
                name: "Website".into(),
                description: "made by hand".into(),
                environments: vec!["master".into()],
                delivery: "cf-website".into(),
                preview: "cf-website-preview".into(),
                preview_id: "p-website".into(),
                created: "2026-01-01T00:00:00Z".into(),
                live_from: Instant::now(),
            },
        );
        let cms = ContentfulStandIn {
            inner: Arc::new(Mutex::new(inner)),
            url: String::new(),
            endpoint: String::new(),
        };
        let app = Router::new().fallback(handle).with_state(cms.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        ContentfulStandIn {
            endpoint: format!("{url}/spaces/{SPACE}"),
            url,
            ..cms
        }
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.inner.lock().unwrap().exchanges.clone()
    }

    /// At most `n` items a page.
    pub fn page_cap(&self, n: usize) {
        self.inner.lock().unwrap().page_cap = n;
    }

    /// New keys answer only after `d`.
    pub fn propagation(&self, d: Duration) {
        self.inner.lock().unwrap().propagation = d;
    }

    /// The next `n` management calls answer 429.
    pub fn throttle(&self, n: u32) {
        self.inner.lock().unwrap().throttle = n;
    }

    pub fn throttled(&self) -> u32 {
        self.inner.lock().unwrap().throttled
    }

    /// The next `n` updates meet a key someone else changed in between (409).
    pub fn conflict(&self, n: u32) {
        self.inner.lock().unwrap().conflicts = n;
    }

    pub fn conflicted(&self) -> u32 {
        self.inner.lock().unwrap().conflicted
    }

    /// The keys: id -> (name, environments).
    pub fn keys(&self) -> BTreeMap<String, (String, Vec<String>)> {
        let i = self.inner.lock().unwrap();
        i.keys
            .iter()
            .map(|(id, k)| (id.clone(), (k.name.clone(), k.environments.clone())))
            .collect()
    }

    /// Changes a key's environments by hand, as in the web app.
    pub fn set_environments(&self, id: &str, envs: &[&str]) {
        let mut i = self.inner.lock().unwrap();
        let k = i.keys.get_mut(id).unwrap();
        k.environments = envs.iter().map(|e| (*e).to_owned()).collect();
        k.version += 1;
    }

    /// The status a delivery (`preview`: preview) API read of `environment` answers `token`.
    pub async fn reads(&self, token: &str, environment: &str) -> u16 {
        reqwest::Client::new()
            .get(format!(
                "{}/environments/{environment}/content_types?limit=1",
                self.endpoint
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn json_body(body: &Bytes) -> Option<Value> {
    (!body.is_empty()).then(|| serde_json::from_slice(body).unwrap_or(Value::Null))
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

async fn handle(
    State(cms): State<ContentfulStandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parts: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let mut i = cms.inner.lock().unwrap();
    let token = bearer(&headers);
    // The delivery and preview APIs: a key's token reads its environments.
    if let ["spaces", SPACE, "environments", env, "content_types"] = parts.as_slice() {
        if token != ADMIN {
            let ok = i.keys.values().any(|k| {
                (k.delivery == token || k.preview == token)
                    && k.environments.iter().any(|e| e == env)
                    && Instant::now() >= k.live_from
            });
            let (status, v) = if ok {
                (
                    StatusCode::OK,
                    json!({"sys": {"type": "Array"}, "total": 0, "skip": 0, "limit": 1, "items": []}),
                )
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    err(
                        "AccessTokenInvalid",
                        "The access token you sent could not be found or is invalid.",
                    ),
                )
            };
            return (status, axum::Json(v)).into_response();
        }
    }
    let request = json_body(&body);
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (status, response, reset) = if i.throttle > 0 {
        i.throttle -= 1;
        i.throttled += 1;
        (StatusCode::TOO_MANY_REQUESTS, err("RateLimitExceeded", "You have exceeded the rate limit of the Organization this Space belongs to by making too many API requests within a short timespan. Please wait a moment before trying the request again."), true)
    } else if token != ADMIN {
        (
            StatusCode::UNAUTHORIZED,
            err(
                "AccessTokenInvalid",
                "The access token you sent could not be found or is invalid.",
            ),
            false,
        )
    } else {
        let (s, v) = answer(&mut i, &method, &parts, &headers, &query, request.as_ref());
        (s, v, false)
    };
    i.exchanges.push(Exchange {
        method: method.to_string(),
        path: uri.to_string(),
        request,
        status: status.as_u16(),
        response: response.clone(),
    });
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    let mut r = (status, axum::Json(response)).into_response();
    r.headers_mut().insert(
        "content-type",
        "application/vnd.contentful.management.v1+json"
            .parse()
            .unwrap(),
    );
    if reset {
        r.headers_mut()
            .insert("x-contentful-ratelimit-reset", "1".parse().unwrap());
    }
    r
}

/// A page of `items` as Contentful lists them.
fn page(items: Vec<Value>, query: &BTreeMap<String, String>, cap: usize) -> Value {
    let skip: usize = query.get("skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        .min(cap);
    let total = items.len();
    let items: Vec<Value> = items.into_iter().skip(skip).take(limit).collect();
    json!({"sys": {"type": "Array"}, "total": total, "skip": skip, "limit": limit, "items": items})
}

fn answer(
    i: &mut Inner,
    method: &Method,
    parts: &[&str],
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            err("NotFound", "The resource could not be found."),
        )
    };
    let created = "2026-01-01T00:00:00Z";
    match (method.as_str(), parts) {
        ("GET", ["spaces", SPACE]) => (
            StatusCode::OK,
            json!({
            "sys": {"type": "Space", "id": SPACE, "version": 1, "createdAt": created, "updatedAt": created,
                "organization": {"sys": {"id": "org1"}}},
            "name": "Stand-in"}),
        ),
        ("GET", ["spaces", SPACE, "environments"]) => {
            let items = ENVIRONMENTS
                .iter()
                .map(|e| json!({"sys": {"type": "Environment", "id": e, "version": 1, "createdAt": created,
                    "updatedAt": created, "status": link("Status", "ready"), "space": link("Space", SPACE)},
                    "name": e}))
                .collect();
            (StatusCode::OK, page(items, query, i.page_cap))
        }
        ("GET", ["spaces", SPACE, "api_keys"]) => {
            let items = i.keys.iter().map(|(id, k)| k.json(id)).collect();
            (StatusCode::OK, page(items, query, i.page_cap))
        }
        ("POST", ["spaces", SPACE, "api_keys"]) => {
            let Some(b) = body.filter(|b| b["name"].is_string()) else {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    err("ValidationFailed", "Validation error"),
                );
            };
            let name = b["name"].as_str().unwrap_or_default().to_owned();
            if i.keys.values().any(|k| k.name == name) {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"sys": {"type": "Error", "id": "ValidationFailed"},
                    "message": "Validation error", "details": {"errors": [{"name": "taken", "path": ["name"], "value": name}]}, "requestId": "req-1"}),
                );
            }
            i.next += 1;
            let id = format!("k{}", i.next);
            let key = Key {
                version: 1,
                name,
                description: b["description"].as_str().unwrap_or_default().to_owned(),
                environments: environments_of(b),
                delivery: format!("cf-{:032x}", rand::random::<u128>()),
                preview: format!("cf-preview-{:032x}", rand::random::<u128>()),
                preview_id: format!("p{}", i.next),
                created: jiff::Timestamp::now().to_string(),
                live_from: Instant::now() + i.propagation,
            };
            let v = key.json(&id);
            i.keys.insert(id, key);
            (StatusCode::CREATED, v)
        }
        ("GET", ["spaces", SPACE, "api_keys", id]) => match i.keys.get(*id) {
            Some(k) => (StatusCode::OK, k.json(id)),
            None => not_found(),
        },
        ("PUT", ["spaces", SPACE, "api_keys", id]) => {
            if i.conflicts > 0 {
                i.conflicts -= 1;
                i.conflicted += 1;
                if let Some(k) = i.keys.get_mut(*id) {
                    k.version += 1;
                }
            }
            let Some(k) = i.keys.get(*id).cloned() else {
                return not_found();
            };
            let sent: Option<u64> = headers
                .get("x-contentful-version")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            if sent != Some(k.version) {
                return (StatusCode::CONFLICT, err("VersionMismatch", "Version mismatch error. The version you specified was incorrect. This may be due to someone else editing the content."));
            }
            let Some(b) = body.filter(|b| b["name"].is_string()) else {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    err("ValidationFailed", "Validation error"),
                );
            };
            let k = Key {
                version: k.version + 1,
                name: b["name"].as_str().unwrap_or_default().to_owned(),
                description: b["description"].as_str().unwrap_or_default().to_owned(),
                environments: environments_of(b),
                ..k
            };
            let v = k.json(id);
            i.keys.insert((*id).to_owned(), k);
            (StatusCode::OK, v)
        }
        ("DELETE", ["spaces", SPACE, "api_keys", id]) => match i.keys.remove(*id) {
            Some(_) => (StatusCode::NO_CONTENT, Value::Null),
            None => not_found(),
        },
        ("GET", ["spaces", SPACE, "preview_api_keys", id]) => {
            match i.keys.values().find(|k| k.preview_id == *id) {
                Some(k) => (
                    StatusCode::OK,
                    json!({
                    "sys": {"type": "PreviewApiKey", "id": id, "version": 1, "createdAt": k.created, "updatedAt": k.created},
                    "name": k.name, "description": k.description, "accessToken": k.preview}),
                ),
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

fn environments_of(b: &Value) -> Vec<String> {
    b["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.pointer("/sys/id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

impl super::Target for ContentfulStandIn {
    fn connection(&self) -> (keyward::policy::ProviderKind, &str, String) {
        (
            keyward::policy::ProviderKind::Contentful,
            &self.endpoint,
            ADMIN.to_owned(),
        )
    }
}

impl super::Answers for ContentfulStandIn {
    /// The status of a read of environment `at` with `key`: 200, or 401 for a key that does
    /// not read it. The delivery APIs have no writes: any other method is not allowed (403).
    async fn status(&self, method: Method, at: &str, key: &str) -> StatusCode {
        if method != Method::GET {
            return StatusCode::FORBIDDEN;
        }
        StatusCode::from_u16(self.reads(key, at).await).unwrap()
    }
}
