//! `/v1/openapi.json`: the whole API as OpenAPI 3, generated from the live settings so public
//! endpoints show as unsecured (`security: []`).

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

pub fn document(svc: &Service) -> Value {
    let mut paths = Map::new();
    let mgmt = |summary: &str, ok: &str| op(summary, false, ok);
    paths.insert(
        "/v1/self".into(),
        json!({"get": mgmt("What the presented key can do", "200")}),
    );
    paths.insert("/v1/keys".into(), json!({"get": mgmt("List keys", "200"), "post": mgmt("Create a key (the value is shown once)", "201")}));
    paths.insert("/v1/keys/{id}".into(), json!({"get": mgmt("Get a key", "200"), "patch": mgmt("Change a key", "200"), "delete": mgmt("Revoke a key", "204")}));
    paths.insert(
        "/v1/keys/{id}/regenerate".into(),
        json!({"post": mgmt("New value, optional grace period for the old one", "200")}),
    );
    paths.insert("/v1/apis".into(), json!({"get": mgmt("List APIs", "200")}));
    paths.insert(
        "/v1/apis/{api}".into(),
        json!({"put": mgmt("Create an API", "201")}),
    );
    paths.insert("/v1/apis/{api}/public".into(), json!({"get": mgmt("Public operations", "200"), "put": mgmt("Set public operations", "200")}));
    paths.insert(
        "/v1/cors".into(),
        json!({"get": mgmt("CORS origins: the base, each owner's and the effective union", "200"), "put": mgmt("Set the base CORS origins", "200")}),
    );
    paths.insert(
        "/v1/cors/owners/{owner}".into(),
        json!({"put": mgmt("Set an owner's CORS origins", "200"), "delete": mgmt("Drop an owner's CORS origins", "200")}),
    );
    paths.insert(
        "/v1/apis/{api}/public/owners/{owner}".into(),
        json!({"put": mgmt("Set an owner's public operations of an API", "200"), "delete": mgmt("Drop an owner's public operations of an API", "200")}),
    );
    paths.insert(
        "/v1/owners".into(),
        json!({"get": mgmt("Every owner's settings entry", "200")}),
    );
    paths.insert(
        "/v1/owners/{owner}".into(),
        json!({"delete": mgmt("Drop an owner's whole settings entry", "204")}),
    );
    paths.insert(
        "/v1/members".into(),
        json!({"get": mgmt("List members", "200"), "post": mgmt("Add a member", "201")}),
    );
    paths.insert(
        "/v1/members/{name}".into(),
        json!({"delete": mgmt("Remove a member (revokes their personal key)", "204")}),
    );
    paths.insert(
        "/v1/roles".into(),
        json!({"get": mgmt("List roles", "200")}),
    );
    paths.insert(
        "/v1/roles/{name}".into(),
        json!({"put": mgmt("Define a role", "200")}),
    );
    paths.insert(
        "/v1/export".into(),
        json!({"post": mgmt("Export an environment (scope export:write)", "200")}),
    );
    paths.insert(
        "/v1/cache/purge".into(),
        json!({"post": mgmt("Purge caches (scope cache:purge)", "202")}),
    );
    paths.insert(
        "/v1/webhooks/replay".into(),
        json!({"post": mgmt("Replay webhooks (scope webhooks:write)", "202")}),
    );
    paths.insert("/v1/openapi.json".into(), json!({"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "success"}}}}));

    for (api, info) in svc.apis() {
        let effective = info.effective_ops();
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
