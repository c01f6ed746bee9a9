//! A stand-in for DatoCMS: the Content Management API's API tokens, roles, environments,
//! models and site, in the shapes its official client's types describe (`tests/datocms.rs`
//! checks every exchange against `@datocms/cma-client`'s `resources.json` and
//! `RawApiTypes.ts`), and enough of the content APIs to tell which token may do what.
//!
//! - A token's value is only in the answers to its create and regenerate (`token: null`
//!   elsewhere); a regenerated or deleted token answers 401 at once.
//! - Every management call needs the admin token and `X-Api-Version: 3`.
//! - Errors are DatoCMS's `{"data": [{"type": "api_error", "attributes": {"code", ...}}]}`:
//!   401, 404, 422 (`INVALID_FIELD`: a role name taken, an attribute the schema does not have;
//!   `NON_EDITABLE_ACCESS_TOKEN`), and 429 with `X-RateLimit-Reset` on demand.
//! - Content: `POST /graphql` reads a model (`{ allArticles { id } }`), or the project
//!   (`{ _site { locales } }`), as the Content Delivery API would, with `X-Environment` and `X-Include-Drafts`; `POST /items`, `PUT` and `DELETE
//!   /items/{id}` write as the Content Management API would. A token may when its flags allow
//!   the API and its role's entries allow the action on that model in that environment.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The admin token the stand-in accepts for management calls.
pub const ADMIN: &str = "dato-admin-token";
/// The project's environments; the first is the primary one.
pub const ENVIRONMENTS: [&str; 2] = ["main", "staging"];
/// The models: (id, api_key); `block` is a block model, which no key reads on its own.
pub const MODELS: [(&str, &str); 4] = [
    ("m-articles", "articles"),
    ("m-authors", "authors"),
    ("m-notes", "notes"),
    ("m-block", "block"),
];

pub use super::vendor_types::Exchange;

#[derive(Clone, Debug)]
struct StoredToken {
    name: String,
    value: String,
    role: Option<String>,
    cda: bool,
    cda_preview: bool,
    cma: bool,
    hardcoded: Option<&'static str>,
}

#[derive(Default)]
struct Inner {
    tokens: BTreeMap<String, StoredToken>,
    roles: BTreeMap<String, Value>,
    next: u64,
    exchanges: Vec<Exchange>,
    /// Management calls still to refuse with 429.
    throttle: u32,
    throttled: u32,
}

#[derive(Clone)]
pub struct DatoCmsStandIn {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

fn error(status: StatusCode, code: &str, details: Value) -> Response {
    let body = json!({"data": [{"id": format!("err-{code}"), "type": "api_error",
        "attributes": {"code": code, "details": details}}]});
    (status, axum::Json(body)).into_response()
}

/// The attributes a role's create and update take (`RoleCreateSchema`).
const ROLE_ATTRIBUTES: &[&str] = &[
    "name",
    "can_edit_favicon",
    "can_edit_site",
    "can_edit_schema",
    "can_manage_menu",
    "can_edit_environment",
    "can_promote_environments",
    "environments_access",
    "can_manage_users",
    "can_manage_shared_filters",
    "can_manage_search_indexes",
    "can_manage_upload_collections",
    "can_manage_build_triggers",
    "can_manage_webhooks",
    "can_manage_environments",
    "can_manage_sso",
    "can_access_audit_log",
    "can_manage_workflows",
    "can_manage_access_tokens",
    "can_perform_site_search",
    "can_access_build_events_log",
    "can_access_search_index_events_log",
    "positive_item_type_permissions",
    "negative_item_type_permissions",
    "positive_upload_permissions",
    "negative_upload_permissions",
    "positive_build_trigger_permissions",
    "negative_build_trigger_permissions",
    "positive_search_index_permissions",
    "negative_search_index_permissions",
];

impl Inner {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn token_json(&self, id: &str, t: &StoredToken, with_value: bool) -> Value {
        json!({
            "type": "access_token",
            "id": id,
            "attributes": {
                "name": t.name,
                "token": if with_value { json!(t.value) } else { Value::Null },
                "can_access_cda": t.cda,
                "can_access_cda_preview": t.cda_preview,
                "can_access_cma": t.cma,
                "hardcoded_type": t.hardcoded,
                "last_cma_access": "never",
                "last_cda_access": "never",
            },
            "relationships": {"role": {"data": t.role.as_ref().map(|r| json!({"type": "role", "id": r}))}},
        })
    }

    /// A role as DatoCMS answers it: every attribute, defaults for those not given, and its
    /// final permissions (no inheritance here: the same).
    fn role_json(id: &str, given: &Value) -> Value {
        let mut a = serde_json::Map::new();
        for &f in ROLE_ATTRIBUTES {
            let default = if f.starts_with("can_") {
                json!(false)
            } else if f.ends_with("_permissions") {
                json!([])
            } else if f == "environments_access" {
                json!("all")
            } else {
                json!("")
            };
            a.insert(f.into(), given.get(f).cloned().unwrap_or(default));
        }
        let mut finals = a.clone();
        finals.remove("name");
        json!({
            "type": "role",
            "id": id,
            "attributes": a,
            "relationships": {"inherits_permissions_from": {"data": []}},
            "meta": {"final_permissions": finals},
        })
    }

    /// Whether token `value` may `action` on model `model` in `env` through `api` (`cda`,
    /// `preview` or `cma`): `None` when it is no token.
    fn may(&self, value: &str, api: &str, action: &str, model: &str, env: &str) -> Option<bool> {
        let t = self.tokens.values().find(|t| t.value == value)?;
        let surface = match api {
            "cda" => t.cda,
            "preview" => t.cda_preview,
            _ => t.cma,
        };
        let Some(role) = t.role.as_ref().and_then(|r| self.roles.get(r)) else {
            return Some(surface && t.hardcoded.is_some());
        };
        let hits = |list: &str| {
            role["attributes"][list]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    (e["action"] == action || e["action"] == "all")
                        && e["environment"] == env
                        && (e["item_type"].is_null() || e["item_type"] == model)
                })
        };
        Some(
            surface
                && hits("positive_item_type_permissions")
                && !hits("negative_item_type_permissions"),
        )
    }
}

impl DatoCmsStandIn {
    /// Serves on a free loopback port, with DatoCMS's two factory tokens and a token of a
    /// collaborator's making (none of them keyward's).
    pub async fn start() -> DatoCmsStandIn {
        let mut inner = Inner::default();
        for (id, name, hardcoded, cma) in [
            ("t-readonly", "Read-only API token", Some("readonly"), false),
            ("t-admin", "Full-access API token", Some("admin"), true),
        ] {
            let value = if cma {
                ADMIN.to_owned()
            } else {
                "dato-readonly".to_owned()
            };
            inner.tokens.insert(
                id.into(),
                StoredToken {
                    name: name.into(),
                    value,
                    role: None,
                    cda: true,
                    cda_preview: cma,
                    cma,
                    hardcoded,
                },
            );
        }
        let role = Inner::role_json(
            "r-zapier",
            &json!({"name": "Zapier",
            "positive_item_type_permissions": [{"action": "read", "environment": "main", "item_type": null, "on_creator": "anyone"}]}),
        );
        inner.roles.insert("r-zapier".into(), role);
        inner.tokens.insert(
            "t-zapier".into(),
            StoredToken {
                name: "Zapier".into(),
                value: "dato-zapier".into(),
                role: Some("r-zapier".into()),
                cda: true,
                cda_preview: false,
                cma: false,
                hardcoded: None,
            },
        );
        let cms = DatoCmsStandIn {
            inner: Arc::new(Mutex::new(inner)),
            url: String::new(),
        };
        let app = Router::new()
            .route("/graphql", post(graphql))
            .route("/items", post(item_write))
            .route(
                "/items/{id}",
                axum::routing::put(item_write).delete(item_write),
            )
            .fallback(management)
            .with_state(cms.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        DatoCmsStandIn { url, ..cms }
    }

    /// Every management exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.inner.lock().unwrap().exchanges.clone()
    }

    /// The next `n` management calls answer 429 (`X-RateLimit-Reset: 1`).
    pub fn throttle(&self, n: u32) {
        self.inner.lock().unwrap().throttle = n;
    }

    /// How many calls were refused with 429.
    pub fn throttled(&self) -> u32 {
        self.inner.lock().unwrap().throttled
    }

    /// The tokens: id -> (name, role id).
    pub fn tokens(&self) -> BTreeMap<String, (String, Option<String>)> {
        let i = self.inner.lock().unwrap();
        i.tokens
            .iter()
            .map(|(id, t)| (id.clone(), (t.name.clone(), t.role.clone())))
            .collect()
    }

    /// Role `id` as DatoCMS answers it.
    pub fn role(&self, id: &str) -> Option<Value> {
        self.inner.lock().unwrap().roles.get(id).cloned()
    }

    /// Changes a role's attributes by hand, as in the console.
    pub fn edit_role(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut i = self.inner.lock().unwrap();
        let r = i.roles.get_mut(id).unwrap();
        f(&mut r["attributes"]);
    }

    /// Sets a token's flags by hand, as in the console.
    pub fn edit_token(&self, id: &str, cda_preview: bool, cma: bool) {
        let mut i = self.inner.lock().unwrap();
        let t = i.tokens.get_mut(id).unwrap();
        (t.cda_preview, t.cma) = (cda_preview, cma);
    }

    /// Deletes a token by hand.
    pub fn delete_token(&self, id: &str) {
        self.inner.lock().unwrap().tokens.remove(id);
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

fn json_body(body: &Bytes) -> Option<Value> {
    (!body.is_empty()).then(|| serde_json::from_slice(body).unwrap_or(Value::Null))
}

/// The Content Delivery API: `{ allArticles { id } }` reads model `articles`.
async fn graphql(State(cms): State<DatoCmsStandIn>, headers: HeaderMap, body: Bytes) -> Response {
    let q = json_body(&body)
        .and_then(|v| v["query"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let model = q
        .split("all")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_lowercase();
    let env = headers
        .get("x-environment")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(ENVIRONMENTS[0])
        .to_owned();
    let drafts = headers.get("x-include-drafts").is_some_and(|v| v == "true");
    let i = cms.inner.lock().unwrap();
    if q.contains("_site") {
        // The project itself: any token with access to the API may read it.
        let key = bearer(&headers);
        return match i.tokens.values().find(|t| t.value == key) {
            None => error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHORIZATION_HEADER",
                json!({}),
            ),
            Some(t) if t.cda => (
                StatusCode::OK,
                axum::Json(json!({"data": {"_site": {"locales": ["en"]}}})),
            )
                .into_response(),
            Some(_) => error(StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS", json!({})),
        };
    }
    let Some((id, _)) = MODELS.iter().find(|(_, api)| *api == model) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            json!({"query": q}),
        );
    };
    let surface = if drafts { "preview" } else { "cda" };
    match i.may(&bearer(&headers), surface, "read", id, &env) {
        None => error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHORIZATION_HEADER",
            json!({}),
        ),
        Some(true) => (
            StatusCode::OK,
            axum::Json(json!({"data": {format!("all{model}"): []}})),
        )
            .into_response(),
        // The model is not in the token's schema.
        Some(false) => error(StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS", json!({})),
    }
}

/// The Content Management API's record writes: the model is the create's `item_type`, or the
/// id's prefix (`item-articles`).
async fn item_write(
    State(cms): State<DatoCmsStandIn>,
    method: Method,
    headers: HeaderMap,
    id: Option<Path<String>>,
    body: Bytes,
) -> Response {
    let model = match &id {
        Some(Path(id)) => format!("m-{}", id.strip_prefix("item-").unwrap_or(id)),
        None => json_body(&body)
            .and_then(|v| {
                v.pointer("/data/relationships/item_type/data/id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default(),
    };
    let action = match method {
        Method::POST => "create",
        Method::PUT => "update",
        _ => "delete",
    };
    let env = headers
        .get("x-environment")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(ENVIRONMENTS[0])
        .to_owned();
    let i = cms.inner.lock().unwrap();
    match i.may(&bearer(&headers), "cma", action, &model, &env) {
        None => error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHORIZATION_HEADER",
            json!({}),
        ),
        Some(true) => (
            StatusCode::OK,
            axum::Json(json!({"data": {"type": "item", "id": "item-1"}})),
        )
            .into_response(),
        Some(false) => error(StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS", json!({})),
    }
}

/// Every management call: recorded with its answer.
async fn management(
    State(cms): State<DatoCmsStandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = json_body(&body);
    let mut i = cms.inner.lock().unwrap();
    let path = uri.path().to_owned();
    let (status, response, reset) = if i.throttle > 0 {
        i.throttle -= 1;
        i.throttled += 1;
        let e = json!({"data": [{"id": "err-429", "type": "api_error", "attributes": {"code": "RATE_LIMIT_EXCEEDED", "details": {}}}]});
        (StatusCode::TOO_MANY_REQUESTS, e, true)
    } else {
        let (s, v) = answer(&mut i, &method, &path, &headers, request.as_ref());
        (s, v, false)
    };
    i.exchanges.push(Exchange {
        method: method.to_string(),
        path: uri.to_string(),
        request,
        status: status.as_u16(),
        response: response.clone(),
    });
    let mut r = (status, axum::Json(response)).into_response();
    if reset {
        r.headers_mut()
            .insert("x-ratelimit-reset", "1".parse().unwrap());
    }
    r.headers_mut()
        .insert("x-ratelimit-remaining", "59".parse().unwrap());
    r
}

fn err(code: &str, details: Value) -> Value {
    json!({"data": [{"id": format!("err-{code}"), "type": "api_error", "attributes": {"code": code, "details": details}}]})
}

/// The answer to a management call, after its authentication.
fn answer(
    i: &mut Inner,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    if headers.get("x-api-version").is_none_or(|v| v != "3") {
        return (
            StatusCode::PRECONDITION_FAILED,
            err("INVALID_API_VERSION", json!({})),
        );
    }
    if bearer(headers) != ADMIN || !i.tokens.values().any(|t| t.value == ADMIN) {
        return (
            StatusCode::UNAUTHORIZED,
            err("INVALID_AUTHORIZATION_HEADER", json!({})),
        );
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["site"]) => (StatusCode::OK, site()),
        ("GET", ["environments"]) => (
            StatusCode::OK,
            json!({"data": ENVIRONMENTS.iter().enumerate().map(|(n, e)| json!({
            "type": "environment", "id": e,
            "meta": {"status": "ready", "read_only_mode": false, "created_at": "2026-01-01T00:00:00Z",
                "last_data_change_at": "2026-01-01T00:00:00Z", "primary": n == 0,
                "forked_from": if n == 0 { Value::Null } else { json!("main") }}})).collect::<Vec<_>>()}),
        ),
        ("GET", ["item-types"]) => (
            StatusCode::OK,
            json!({"data": MODELS.iter().map(|(id, api)| item_type(id, api)).collect::<Vec<_>>()}),
        ),
        ("GET", ["access_tokens"]) => {
            let data: Vec<Value> = i
                .tokens
                .iter()
                .map(|(id, t)| i.token_json(id, t, false))
                .collect();
            (StatusCode::OK, json!({"data": data}))
        }
        ("GET", ["roles"]) => (
            StatusCode::OK,
            json!({"data": i.roles.values().cloned().collect::<Vec<_>>()}),
        ),
        (_, ["access_tokens", ..]) => tokens(i, method, &parts[1..], body),
        (_, ["roles", ..]) => roles(i, method, &parts[1..], body),
        _ => (StatusCode::NOT_FOUND, err("NOT_FOUND", json!({}))),
    }
}

/// The `data.attributes` of a create or update, if they are all the schema's `allowed`.
fn attributes<'a>(
    body: Option<&'a Value>,
    kind: &str,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, (StatusCode, Value)> {
    let d = body.and_then(|b| b.get("data"));
    let a = d
        .filter(|d| d["type"] == kind)
        .and_then(|d| d["attributes"].as_object());
    let Some(a) = a else {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            err(
                "INVALID_FORMAT",
                json!({"messages": ["data.type or data.attributes"]}),
            ),
        ));
    };
    if let Some(bad) = a.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            err(
                "INVALID_FIELD",
                json!({"field": bad, "code": "VALIDATION_INVALID"}),
            ),
        ));
    }
    Ok(a)
}

const TOKEN_ATTRIBUTES: [&str; 4] = [
    "name",
    "can_access_cda",
    "can_access_cda_preview",
    "can_access_cma",
];

fn tokens(
    i: &mut Inner,
    method: &Method,
    rest: &[&str],
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let not_found = (StatusCode::NOT_FOUND, err("NOT_FOUND", json!({})));
    match (method.as_str(), rest) {
        ("POST", []) => {
            let a = match attributes(body, "access_token", &TOKEN_ATTRIBUTES) {
                Ok(a) => a.clone(),
                Err(e) => return e,
            };
            let role = body
                .and_then(|b| b.pointer("/data/relationships/role/data/id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if role.as_ref().is_none_or(|r| !i.roles.contains_key(r))
                || TOKEN_ATTRIBUTES.iter().any(|f| a.get(*f).is_none())
            {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    err(
                        "INVALID_FIELD",
                        json!({"field": "role", "code": "VALIDATION_REQUIRED"}),
                    ),
                );
            }
            let id = i.id("t");
            let value = format!("dato-{:032x}", rand::random::<u128>());
            let t = StoredToken {
                name: a["name"].as_str().unwrap_or_default().to_owned(),
                value,
                role,
                cda: a["can_access_cda"] == true,
                cda_preview: a["can_access_cda_preview"] == true,
                cma: a["can_access_cma"] == true,
                hardcoded: None,
            };
            let v = json!({"data": i.token_json(&id, &t, true)});
            i.tokens.insert(id, t);
            (StatusCode::CREATED, v)
        }
        ("GET", [id]) => match i.tokens.get(*id) {
            Some(t) => (StatusCode::OK, json!({"data": i.token_json(id, t, false)})),
            None => not_found,
        },
        ("PUT", [id]) => {
            let a = match attributes(body, "access_token", &TOKEN_ATTRIBUTES) {
                Ok(a) => a.clone(),
                Err(e) => return e,
            };
            let role = body
                .and_then(|b| b.pointer("/data/relationships/role/data/id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let Some(t) = i.tokens.get(*id).cloned() else {
                return not_found;
            };
            if t.hardcoded.is_some() {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    err("NON_EDITABLE_ACCESS_TOKEN", json!({})),
                );
            }
            if TOKEN_ATTRIBUTES.iter().any(|f| a.get(*f).is_none()) {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    err(
                        "INVALID_FIELD",
                        json!({"field": "can_access_cda", "code": "VALIDATION_REQUIRED"}),
                    ),
                );
            }
            let t = StoredToken {
                name: a["name"].as_str().unwrap_or_default().to_owned(),
                role: role.or(t.role),
                cda: a["can_access_cda"] == true,
                cda_preview: a["can_access_cda_preview"] == true,
                cma: a["can_access_cma"] == true,
                ..t
            };
            let v = json!({"data": i.token_json(id, &t, false)});
            i.tokens.insert((*id).to_owned(), t);
            (StatusCode::OK, v)
        }
        ("POST", [id, "regenerate_token"]) => {
            let Some(t) = i.tokens.get_mut(*id) else {
                return not_found;
            };
            t.value = format!("dato-{:032x}", rand::random::<u128>());
            let t = t.clone();
            (StatusCode::OK, json!({"data": i.token_json(id, &t, true)}))
        }
        ("DELETE", [id]) => match i.tokens.remove(*id) {
            Some(t) => (StatusCode::OK, json!({"data": i.token_json(id, &t, false)})),
            None => not_found,
        },
        _ => not_found,
    }
}

fn roles(
    i: &mut Inner,
    method: &Method,
    rest: &[&str],
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let not_found = (StatusCode::NOT_FOUND, err("NOT_FOUND", json!({})));
    let taken = |i: &Inner, name: &Value, except: &str| {
        i.roles
            .iter()
            .any(|(id, r)| id != except && r["attributes"]["name"] == *name)
    };
    match (method.as_str(), rest) {
        ("POST", []) | ("PUT", [_]) => {
            let a = match attributes(body, "role", ROLE_ATTRIBUTES) {
                Ok(a) => Value::Object(a.clone()),
                Err(e) => return e,
            };
            let id = match rest {
                [id] => (*id).to_owned(),
                _ => i.id("r"),
            };
            if rest.len() == 1 && !i.roles.contains_key(&id) {
                return not_found;
            }
            if a.get("name")
                .is_none_or(|n| n.as_str().is_none_or(str::is_empty))
                || taken(i, &a["name"], &id)
            {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    err(
                        "INVALID_FIELD",
                        json!({"field": "name", "code": "VALIDATION_UNIQUE"}),
                    ),
                );
            }
            let mut merged = i
                .roles
                .get(&id)
                .map(|r| r["attributes"].clone())
                .unwrap_or(json!({}));
            for (k, v) in a.as_object().into_iter().flatten() {
                merged[k] = v.clone();
            }
            let r = Inner::role_json(&id, &merged);
            i.roles.insert(id, r.clone());
            (
                if rest.is_empty() {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                json!({"data": r}),
            )
        }
        ("GET", [id]) => match i.roles.get(*id) {
            Some(r) => (StatusCode::OK, json!({"data": r})),
            None => not_found,
        },
        ("DELETE", [id]) => {
            if i.tokens.values().any(|t| t.role.as_deref() == Some(*id)) {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    err(
                        "INVALID_FIELD",
                        json!({"field": "base", "code": "VALIDATION_ROLE_IN_USE"}),
                    ),
                );
            }
            match i.roles.remove(*id) {
                Some(r) => (StatusCode::OK, json!({"data": r})),
                None => not_found,
            }
        }
        _ => not_found,
    }
}

fn item_type(id: &str, api: &str) -> Value {
    let none = json!({"data": null});
    json!({
        "type": "item_type", "id": id,
        "attributes": {"name": api, "api_key": api, "collection_appearance": "table", "singleton": false,
            "all_locales_required": true, "sortable": false, "modular_block": api == "block",
            "draft_mode_active": true, "draft_saving_active": false, "tree": false,
            "ordering_direction": null, "ordering_meta": null, "has_singleton_item": false,
            "hint": null, "inverse_relationships_enabled": false},
        "relationships": {"singleton_item": none, "fields": {"data": []}, "fieldsets": {"data": []},
            "presentation_title_field": none, "presentation_image_field": none, "title_field": none,
            "image_preview_field": none, "excerpt_field": none, "ordering_field": none, "workflow": none},
        "meta": {"has_singleton_item": false},
    })
}

fn site() -> Value {
    json!({"data": {
        "type": "site", "id": "s-1",
        "attributes": {"name": "Stand-in", "domain": null, "google_maps_api_token": null, "imgix_host": null,
            "internal_domain": "stand-in.admin.datocms.com", "locales": ["en"], "timezone": "UTC",
            "no_index": false, "favicon": null, "last_data_change_at": null, "require_2fa": false,
            "ip_tracking_enabled": false, "force_use_of_sandbox_environments": false,
            "assets_cdn_default_settings": {"image": {}, "video": {}},
            "theme": {"type": "monochromatic", "hue": 190, "logo": null}, "global_seo": null},
        "relationships": {"account": {"data": null}, "owner": {"data": {"type": "account", "id": "a-1"}},
            "item_types": {"data": MODELS.iter().map(|(id, _)| json!({"type": "item_type", "id": id})).collect::<Vec<_>>()}},
        "meta": {"created_at": "2026-01-01T00:00:00Z", "draft_mode_default": true, "improved_timezone_management": true,
            "improved_hex_management": true, "improved_gql_multilocale_fields": true, "improved_gql_visibility_control": true,
            "improved_boolean_fields": true, "improved_validation_at_publishing": true,
            "improved_exposure_of_inline_blocks_in_cda": true, "improved_items_listing": true,
            "milliseconds_in_datetime": true, "non_localized_focal_points": true, "allow_custom_theme": false},
    }})
}

impl super::Target for DatoCmsStandIn {
    fn connection(&self) -> (keyward::policy::ProviderKind, &str, String) {
        (
            keyward::policy::ProviderKind::Datocms,
            &self.url,
            ADMIN.to_owned(),
        )
    }
}

impl super::Answers for DatoCmsStandIn {
    /// The status of a content call on model `api`: a read through the Content Delivery API,
    /// a write through the Content Management API. 200 allowed, 403 not, 401 unknown key.
    async fn status(&self, method: Method, api: &str, key: &str) -> StatusCode {
        let http = reqwest::Client::new();
        let rb = match method {
            Method::GET => http
                .post(format!("{}/graphql", self.url))
                .json(&json!({"query": format!("{{ all{api} {{ id }} }}")})),
            Method::POST => http.post(format!("{}/items", self.url)).json(&json!({"data": {
                "type": "item", "attributes": {},
                "relationships": {"item_type": {"data": {"type": "item_type", "id": format!("m-{api}")}}}}})),
            Method::DELETE => http.delete(format!("{}/items/item-{api}", self.url)),
            _ => http
                .put(format!("{}/items/item-{api}", self.url))
                .json(&json!({"data": {"type": "item", "id": format!("item-{api}"), "attributes": {}}})),
        };
        let status = rb.bearer_auth(key).send().await.unwrap().status().as_u16();
        StatusCode::from_u16(status).unwrap()
    }
}
