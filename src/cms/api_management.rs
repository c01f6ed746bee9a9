//! The management API under `/v1`: keys, APIs, CORS, public endpoints, members, roles, and the
//! scope-granted service operations.

use super::auth::Client;
use super::error::CmsError;
use super::input::body;
use super::rights::Rights;
use super::service::{KeyPatch, OwnerWrite, Role};
use super::{blocking, Ctx};
use crate::model::{ContentOp, KeySpec, ManagementPermission as MP, ServiceOp};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route(
            "/v1/keys/{id}",
            get(get_key).patch(patch_key).delete(revoke_key),
        )
        .route("/v1/keys/{id}/regenerate", post(regenerate_key))
        .route("/v1/apis", get(list_apis))
        .route("/v1/apis/{api}", put(put_api))
        .route("/v1/apis/{api}/public", get(get_public).put(put_public))
        .route("/v1/cors", get(get_cors).put(put_cors))
        .route(
            "/v1/cors/owners/{owner}",
            put(put_owner_cors).delete(delete_owner_cors),
        )
        .route(
            "/v1/apis/{api}/public/owners/{owner}",
            put(put_owner_public).delete(delete_owner_public),
        )
        .route("/v1/owners", get(list_owners))
        .route("/v1/owners/{owner}", axum::routing::delete(delete_owner))
        .route("/v1/members", post(add_member).get(list_members))
        .route("/v1/members/{name}", axum::routing::delete(remove_member))
        .route("/v1/roles", get(list_roles))
        .route("/v1/roles/{name}", put(put_role))
        .route("/v1/export", post(export))
        .route("/v1/cache/purge", post(purge_cache))
        .route("/v1/webhooks/replay", post(replay_webhooks))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/self", get(whoami))
}

/// Authenticates, checks the management permission, and returns what the caller holds.
async fn gate(ctx: &Ctx, client: &Client, needed: MP) -> Result<Rights, CmsError> {
    let p = ctx.auth.authenticate(&ctx.svc, client).await?;
    ctx.auth.management(&ctx.svc, &p, needed)?;
    ctx.auth.rights(&ctx.svc, &p)
}

/// As [`gate`], for changes that apply to every environment (APIs, public endpoints, CORS).
async fn gate_everywhere(ctx: &Ctx, client: &Client, needed: MP) -> Result<(), CmsError> {
    Ok(gate(ctx, client, needed)
        .await?
        .require_every_environment()?)
}

async fn create_key(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    raw: Bytes,
) -> Result<Response, CmsError> {
    let caller = gate(&ctx, &client, MP::KeysManage).await?;
    let spec: KeySpec = body(&raw)?;
    let (record, key) = blocking(&ctx, move |s| s.create_key(spec, &caller)).await?;
    let mut v = record.to_json();
    v["key"] = json!(key.expose());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Deserialize)]
struct KeyFilter {
    /// `name=value`: only keys with this label.
    label: Option<String>,
}

async fn list_keys(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Query(filter): Query<KeyFilter>,
) -> Result<Json<Value>, CmsError> {
    let caller = gate(&ctx, &client, MP::KeysManage).await?;
    ctx.key_listings
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wanted = match filter.label.as_deref() {
        None => None,
        Some(l) => Some(
            l.split_once('=')
                .ok_or_else(|| CmsError::BadRequest("label must be name=value".into()))?,
        ),
    };
    let keys: Vec<Value> = ctx
        .svc
        .list_keys()
        .iter()
        .filter(|k| caller.sees_environments_of(&k.spec))
        .filter(|k| wanted.is_none_or(|(n, v)| k.spec.labels.get(n).map(String::as_str) == Some(v)))
        .map(|k| k.to_json())
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

async fn get_key(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(id): Path<String>,
) -> Result<Json<Value>, CmsError> {
    let caller = gate(&ctx, &client, MP::KeysManage).await?;
    let record = ctx.svc.get_key(&id)?;
    if !caller.sees_environments_of(&record.spec) {
        return Err(CmsError::NotFound(format!(
            "there is no key with id '{id}'"
        )));
    }
    Ok(Json(record.to_json()))
}

async fn patch_key(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let caller = gate(&ctx, &client, MP::KeysManage).await?;
    let patch: KeyPatch = body(&raw)?;
    let record = blocking(&ctx, move |s| s.patch_key(&id, patch, &caller)).await?;
    Ok(Json(record.to_json()))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Regenerate {
    /// Seconds, with millisecond precision.
    grace_seconds: Option<f64>,
    expires_at: Option<Timestamp>,
}

/// The longest grace a regenerate may give the old value.
const MAX_GRACE_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// A grace period in range, to the millisecond; anything else is refused, never converted.
fn grace(seconds: f64) -> Result<SignedDuration, CmsError> {
    if !(0.0..=MAX_GRACE_SECONDS).contains(&seconds) {
        return Err(crate::model::SpecError::new(
            "graceSeconds",
            "must be a number of seconds between 0 and 2592000 (30 days)",
        )
        .into());
    }
    // In range, so the product fits an i64 with room to spare.
    Ok(SignedDuration::from_millis(
        (seconds * 1000.0).round() as i64
    ))
}

async fn regenerate_key(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let caller = gate(&ctx, &client, MP::KeysManage).await?;
    let req: Regenerate = if raw.is_empty() {
        Regenerate::default()
    } else {
        body(&raw)?
    };
    let grace = req.grace_seconds.map(grace).transpose()?;
    let (record, key) = blocking(&ctx, move |s| {
        s.regenerate_key(&id, grace, req.expires_at, &caller)
    })
    .await?;
    let mut v = record.to_json();
    v["key"] = json!(key.expose());
    Ok(Json(v))
}

async fn revoke_key(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(id): Path<String>,
) -> Result<StatusCode, CmsError> {
    let caller = gate(&ctx, &client, MP::KeysManage).await?;
    blocking(&ctx, move |s| s.revoke_key(&id, &caller)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_apis(State(ctx): State<Arc<Ctx>>, client: Client) -> Result<Json<Value>, CmsError> {
    gate(&ctx, &client, MP::SettingsManage).await?;
    let apis: Vec<Value> = ctx
        .svc
        .apis()
        .into_iter()
        .map(|(name, a)| json!({"name": name, "createdAt": crate::model::rfc3339(a.created_at), "publicOperations": a.public_ops, "effectiveOperations": a.effective_ops()}))
        .collect();
    Ok(Json(json!({ "apis": apis })))
}

async fn put_api(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(api): Path<String>,
) -> Result<Response, CmsError> {
    gate_everywhere(&ctx, &client, MP::SettingsManage).await?;
    let name = api.clone();
    let created = blocking(&ctx, move |s| s.put_api(&name)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "name": api }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicOps {
    operations: Vec<ContentOp>,
}

async fn get_public(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(api): Path<String>,
) -> Result<Json<Value>, CmsError> {
    gate(&ctx, &client, MP::SettingsManage).await?;
    let info = ctx.svc.apis().remove(&api);
    let owners: serde_json::Map<String, Value> = ctx
        .svc
        .owners()
        .into_iter()
        .filter_map(|(o, e)| Some((o, json!(e.public_endpoints.get(&api)?))))
        .collect();
    Ok(Json(json!({
        "operations": ctx.svc.public_ops(&api)?,
        "owners": owners,
        "effective": info.map(|i| i.effective_ops()),
    })))
}

async fn put_public(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(api): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    gate_everywhere(&ctx, &client, MP::SettingsManage).await?;
    let req: PublicOps = body(&raw)?;
    let ops = blocking(&ctx, move |s| s.set_public_ops(&api, req.operations)).await?;
    Ok(Json(json!({ "operations": ops })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cors {
    origins: Vec<String>,
}

async fn get_cors(State(ctx): State<Arc<Ctx>>, client: Client) -> Result<Json<Value>, CmsError> {
    gate(&ctx, &client, MP::SettingsManage).await?;
    let owners: serde_json::Map<String, Value> = ctx
        .svc
        .owners()
        .into_iter()
        .filter(|(_, e)| !e.origins.is_empty())
        .map(|(o, e)| (o, json!(e.origins)))
        .collect();
    Ok(Json(json!({
        "origins": ctx.svc.cors_origins(),
        "owners": owners,
        "effective": ctx.svc.effective_cors(),
    })))
}

/// Replaces part of an owner's entry and answers with the whole entry.
async fn write_owner(
    ctx: &Arc<Ctx>,
    client: &Client,
    owner: String,
    write: OwnerWrite,
) -> Result<Json<Value>, CmsError> {
    gate_everywhere(ctx, client, MP::SettingsManage).await?;
    let entry = blocking(ctx, move |s| s.write_owner(&owner, write)).await?;
    Ok(Json(json!(entry)))
}

async fn put_owner_cors(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(owner): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let req: Cors = body(&raw)?;
    write_owner(&ctx, &client, owner, OwnerWrite::Origins(req.origins)).await
}

async fn delete_owner_cors(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(owner): Path<String>,
) -> Result<Json<Value>, CmsError> {
    write_owner(&ctx, &client, owner, OwnerWrite::Origins(Vec::new())).await
}

async fn put_owner_public(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path((api, owner)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let req: PublicOps = body(&raw)?;
    let ops = req.operations;
    write_owner(&ctx, &client, owner, OwnerWrite::Public { api, ops }).await
}

async fn delete_owner_public(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path((api, owner)): Path<(String, String)>,
) -> Result<Json<Value>, CmsError> {
    let ops = Vec::new();
    write_owner(&ctx, &client, owner, OwnerWrite::Public { api, ops }).await
}

#[derive(Deserialize)]
struct OwnerFilter {
    /// Only this owner's entry.
    owner: Option<String>,
}

async fn list_owners(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Query(filter): Query<OwnerFilter>,
) -> Result<Json<Value>, CmsError> {
    gate(&ctx, &client, MP::SettingsManage).await?;
    let mut owners = ctx.svc.owners();
    if let Some(o) = &filter.owner {
        owners.retain(|name, _| name == o);
    }
    Ok(Json(json!({ "owners": owners })))
}

async fn delete_owner(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(owner): Path<String>,
) -> Result<StatusCode, CmsError> {
    let _entry = write_owner(&ctx, &client, owner, OwnerWrite::Remove).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_cors(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    gate_everywhere(&ctx, &client, MP::SettingsManage).await?;
    let req: Cors = body(&raw)?;
    let origins = blocking(&ctx, move |s| s.set_cors_origins(req.origins)).await?;
    Ok(Json(json!({ "origins": origins })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    name: String,
    role: String,
}

async fn add_member(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    raw: Bytes,
) -> Result<Response, CmsError> {
    let caller = gate(&ctx, &client, MP::MembersManage).await?;
    let req: NewMember = body(&raw)?;
    let m = blocking(&ctx, move |s| s.add_member(&req.name, &req.role, &caller)).await?;
    Ok((StatusCode::CREATED, Json(json!(m))).into_response())
}

async fn list_members(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
) -> Result<Json<Value>, CmsError> {
    gate(&ctx, &client, MP::MembersRead).await?;
    Ok(Json(json!({ "members": ctx.svc.members() })))
}

async fn remove_member(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(name): Path<String>,
) -> Result<StatusCode, CmsError> {
    let caller = gate(&ctx, &client, MP::MembersManage).await?;
    blocking(&ctx, move |s| s.remove_member(&name, &caller)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_roles(State(ctx): State<Arc<Ctx>>, client: Client) -> Result<Json<Value>, CmsError> {
    gate(&ctx, &client, MP::MembersRead).await?;
    Ok(Json(json!({ "roles": ctx.svc.roles() })))
}

async fn put_role(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Path(name): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let caller = gate(&ctx, &client, MP::MembersManage).await?;
    let mut role: Role = body(&raw)?;
    role.name = name;
    let role = blocking(&ctx, move |s| s.put_role(role, &caller)).await?;
    Ok(Json(json!(role)))
}

/// `?environment=E` of the scope-granted operations (default `production`).
#[derive(Deserialize)]
struct EnvQuery {
    environment: Option<String>,
}

impl EnvQuery {
    fn env(&self) -> &str {
        self.environment.as_deref().unwrap_or(super::PRODUCTION)
    }
}

/// Authenticates a scope-granted operation in the query's environment.
async fn service_gate(
    ctx: &Ctx,
    client: &Client,
    op: ServiceOp,
    q: &EnvQuery,
) -> Result<(), CmsError> {
    let p = ctx.auth.authenticate(&ctx.svc, client).await?;
    ctx.auth.service_op(&ctx.svc, &p, op, q.env())
}

async fn export(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Query(q): Query<EnvQuery>,
) -> Result<Json<Value>, CmsError> {
    service_gate(&ctx, &client, ServiceOp::Export, &q).await?;
    Ok(Json(ctx.svc.export(q.env())))
}

/// The reference CMS has no CDN in front of it: a purge is authorized, logged and acknowledged,
/// so clients and policies can be tested against the `cache:purge` scope.
async fn purge_cache(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Query(q): Query<EnvQuery>,
) -> Result<Response, CmsError> {
    service_gate(&ctx, &client, ServiceOp::CachePurge, &q).await?;
    tracing::info!("cache purge requested");
    Ok((StatusCode::ACCEPTED, Json(json!({ "purged": true }))).into_response())
}

/// As with purges: the reference CMS sends no webhooks, so a replay has nothing to resend.
async fn replay_webhooks(
    State(ctx): State<Arc<Ctx>>,
    client: Client,
    Query(q): Query<EnvQuery>,
) -> Result<Response, CmsError> {
    service_gate(&ctx, &client, ServiceOp::WebhooksReplay, &q).await?;
    tracing::info!("webhook replay requested");
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": 0 }))).into_response())
}

/// What the presented key (or the admin token) can do: any valid credential may ask this of
/// itself. `environments: null` means every environment.
async fn whoami(State(ctx): State<Arc<Ctx>>, client: Client) -> Result<Json<Value>, CmsError> {
    let p = ctx.auth.authenticate(&ctx.svc, &client).await?;
    let rights = ctx.auth.rights(&ctx.svc, &p)?;
    let mut v = match &p {
        super::auth::Principal::Key(entry) => {
            let r = &entry.record;
            json!({"id": r.id, "name": r.spec.name, "kind": r.spec.kind.as_str(),
                   "type": r.spec.key_type.as_str(), "expiresAt": crate::model::rfc3339(r.expires_at())})
        }
        _ => json!({"admin": true}),
    };
    v["rights"] = rights.to_json();
    Ok(Json(v))
}

async fn openapi(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    Json(super::openapi::document(&ctx.svc))
}
