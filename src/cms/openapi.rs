//! `/v1/openapi.json`: the whole API as OpenAPI 3. For a caller that may read the settings
//! (`settings:manage`) it is generated from them: each API's paths, public endpoints shown as
//! unsecured (`security: []`). Anyone else gets the generic description (`/api/{api}`): the
//! API names are not handed to anonymous callers, as `GET /v1/apis` does not hand them out.

use super::service::Service;
use crate::model::ContentOp;
use serde_json::{json, Map, Value};

fn op(summary: &str, public: bool, ok: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            ok: {"description": "success"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": {"$ref": "#/components/responses/Forbidden"},
            "429": {"$ref": "#/components/responses/RateLimited"}
        }
    });
    if public {
        o["security"] = json!([]);
    }
    o
}

/// An operation of the management API: method, summary, success status.
type Operation = (&'static str, &'static str, &'static str);

/// The management API: each path and its operations.
const MANAGEMENT: &[(&str, &[Operation])] = &[
    (
        "/v1/self",
        &[("get", "What the presented key can do", "200")],
    ),
    (
        "/v1/keys",
        &[
            ("get", "List keys", "200"),
            ("post", "Create a key (the value is shown once)", "201"),
        ],
    ),
    (
        "/v1/keys/{id}",
        &[
            ("get", "Get a key", "200"),
            ("patch", "Change a key", "200"),
            ("delete", "Revoke a key", "204"),
        ],
    ),
    (
        "/v1/keys/{id}/regenerate",
        &[(
            "post",
            "New value, optional grace period for the old one",
            "200",
        )],
    ),
    ("/v1/apis", &[("get", "List APIs", "200")]),
    ("/v1/apis/{api}", &[("put", "Create an API", "201")]),
    (
        "/v1/apis/{api}/public",
        &[
            ("get", "Public operations", "200"),
            ("put", "Set public operations", "200"),
        ],
    ),
    (
        "/v1/cors",
        &[
            (
                "get",
                "CORS origins: the base, each owner's and the effective union",
                "200",
            ),
            ("put", "Set the base CORS origins", "200"),
        ],
    ),
    (
        "/v1/cors/owners/{owner}",
        &[
            ("put", "Set an owner's CORS origins", "200"),
            ("delete", "Drop an owner's CORS origins", "200"),
        ],
    ),
    (
        "/v1/apis/{api}/public/owners/{owner}",
        &[
            ("put", "Set an owner's public operations of an API", "200"),
            (
                "delete",
                "Drop an owner's public operations of an API",
                "200",
            ),
        ],
    ),
    (
        "/v1/owners",
        &[("get", "Every owner's settings entry", "200")],
    ),
    (
        "/v1/owners/{owner}",
        &[("delete", "Drop an owner's whole settings entry", "204")],
    ),
    (
        "/v1/members",
        &[
            ("get", "List members", "200"),
            ("post", "Add a member", "201"),
        ],
    ),
    (
        "/v1/members/{name}",
        &[(
            "delete",
            "Remove a member (revokes their personal key)",
            "204",
        )],
    ),
    ("/v1/roles", &[("get", "List roles", "200")]),
    ("/v1/roles/{name}", &[("put", "Define a role", "200")]),
    (
        "/v1/export",
        &[("post", "Export an environment (scope export:write)", "200")],
    ),
    (
        "/v1/cache/purge",
        &[("post", "Purge caches (scope cache:purge)", "202")],
    ),
    (
        "/v1/webhooks/replay",
        &[("post", "Replay webhooks (scope webhooks:write)", "202")],
    ),
];

/// The document; `per_api`: each API by name (only for callers that may read the settings).
pub fn document(svc: &Service, per_api: bool) -> Value {
    let mut paths = Map::new();
    for (path, ops) in MANAGEMENT {
        let item: Map<String, Value> = ops
            .iter()
            .map(|(method, summary, ok)| ((*method).to_owned(), op(summary, false, ok)))
            .collect();
        paths.insert((*path).to_owned(), Value::Object(item));
    }
    paths.insert("/v1/openapi.json".into(), json!({"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "success"}}}}));
    content_paths(svc, per_api, &mut paths);
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "keyward reference CMS", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": [{"bearer": []}, {"apiKey": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}
            },
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}},
            "responses": {"Unauthorized": error, "Forbidden": error, "RateLimited": error}
        }
    })
}

/// The content API's paths: of each API by name, or of `{api}`; an operation a settings entry
/// made public needs no key.
fn content_paths(svc: &Service, per_api: bool, paths: &mut Map<String, Value>) {
    let apis = match per_api {
        true => svc.apis().into_iter().map(|(a, i)| (a, Some(i))).collect(),
        false => vec![("{api}".to_owned(), None)],
    };
    for (api, info) in apis {
        let effective = info.map(|i| i.effective_ops()).unwrap_or_default();
        let public = |o: ContentOp| effective.contains(&o);
        paths.insert(
            format!("/api/{api}"),
            json!({
                "get": op(&format!("List {api} entries"), public(ContentOp::List), "200"),
                "post": op(&format!("Create a {api} entry"), public(ContentOp::Create), "201"),
            }),
        );
        paths.insert(
            format!("/api/{api}/{{id}}"),
            json!({
                "get": op(&format!("Get a {api} entry"), public(ContentOp::Get), "200"),
                "put": op(&format!("Create or replace a {api} entry"), public(ContentOp::Update), "200"),
                "patch": op(&format!("Update a {api} entry"), public(ContentOp::Update), "200"),
                "delete": op(&format!("Delete a {api} entry"), public(ContentOp::Delete), "204"),
            }),
        );
        paths.insert(
            format!("/api/{api}/{{id}}/publish"),
            json!({"post": op(&format!("Publish a {api} entry"), public(ContentOp::Publish), "200")}),
        );
        paths.insert(
            format!("/api/{api}/{{id}}/close"),
            json!({"post": op(&format!("Close a {api} entry"), public(ContentOp::Publish), "200")}),
        );
    }
}
