//! The management API under `/v1`: keys, APIs, CORS, public endpoints, members, roles, and the
//! scope-granted service operations.

use super::audit::Created;
use super::auth::Client;
use super::error::CmsError;
use super::handler::{created_or_ok, scan, Checked, Ctx, PRODUCTION};
use super::input::body;
use super::keys::KeyRecord;
use super::rights::Rights;
use super::rights::Role;
use super::secret::RawKey;
use super::service::{KeyPatch, OwnerWrite};
use super::verifier::KeyEntry;
use crate::model::{ContentOp, KeySpec, ManagementPermission as MP, ServiceOp};
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
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

/// The management permission a handler needs, as a type: the check runs while axum extracts
/// the handler's arguments, so no handler can forget it or run it after reading the body.
trait Needs: Send + Sync + 'static {
    const PERMISSION: MP;
    /// Changes to APIs, public endpoints and CORS apply to every environment.
    const EVERY_ENVIRONMENT: bool;
}

/// Declares marker types for [`Needs`].
macro_rules! needs {
    ($($name:ident => $permission:expr, every environment: $every:expr;)*) => {$(
        struct $name;
        impl Needs for $name {
            const PERMISSION: MP = $permission;
            const EVERY_ENVIRONMENT: bool = $every;
        }
    )*};
}

needs! {
    Keys => MP::KeysManage, every environment: false;
    ReadSettings => MP::SettingsManage, every environment: false;
    WriteSettings => MP::SettingsManage, every environment: true;
    ReadMembers => MP::MembersRead, every environment: false;
    WriteMembers => MP::MembersManage, every environment: false;
}

/// A caller that holds `P`, with what it holds.
type Caller<P> = Checked<P, Rights>;

impl<P: Needs> FromRequestParts<Arc<Ctx>> for Caller<P> {
    type Rejection = CmsError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Self, CmsError> {
        let Ok(client) = Client::from_request_parts(parts, ctx).await;
        let p = ctx.auth.authenticate(&ctx.svc, &client).await?;
        ctx.auth.management(&ctx.svc, &p, P::PERMISSION)?;
        let rights = ctx.auth.rights(&ctx.svc, &p)?;
        if P::EVERY_ENVIRONMENT {
            rights.require_every_environment()?;
        }
        Ok(Checked::new(ctx, rights))
    }
}

/// A key's record with its raw value: the only answer that ever carries it.
fn with_value(record: &KeyRecord, key: &RawKey) -> Value {
    let mut v = record.to_json();
    v["key"] = json!(key.expose());
    v
}

async fn create_key(c: Caller<Keys>, raw: Bytes) -> Result<Response, CmsError> {
    let spec: KeySpec = body(&raw)?;
    let (record, key) = c.change(move |s, who| s.create_key(spec, who)).await?;
    let created = Extension(Created(record.id.clone()));
    Ok((
        StatusCode::CREATED,
        created,
        Json(with_value(&record, &key)),
    )
        .into_response())
}

#[derive(Deserialize)]
struct KeyFilter {
    /// `name=value`: only keys with this label.
    label: Option<String>,
}

async fn list_keys(c: Caller<Keys>, Query(filter): Query<KeyFilter>) -> Result<Response, CmsError> {
    c.ctx
        .key_listings
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wanted = match filter.label.as_deref() {
        None => None,
        Some(l) => Some(
            l.split_once('=')
                .ok_or_else(|| CmsError::BadRequest("label must be name=value".into()))?,
        ),
    };
    let entries = c.ctx.svc.list_keys();
    let labelled = |e: &KeyEntry| {
        wanted.is_none_or(|(n, v)| e.record.spec.labels.get(n).map(String::as_str) == Some(v))
    };
    let shown = entries
        .iter()
        .filter(|e| c.what.sees_environments_of(&e.record.spec) && labelled(e))
        .map(|e| &*e.json);
    // `{"keys": [...]}` from the records rendered when they were stored.
    let mut body = String::from(r#"{"keys":["#);
    for (i, json) in shown.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(json);
    }
    body.push_str("]}");
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn get_key(c: Caller<Keys>, Path(id): Path<String>) -> Result<Json<Value>, CmsError> {
    let record = c.ctx.svc.get_key(&id)?;
    if !c.what.sees_environments_of(&record.spec) {
        return Err(super::service::no_key());
    }
    Ok(Json(record.to_json()))
}

async fn patch_key(
    c: Caller<Keys>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let patch: KeyPatch = body(&raw)?;
    let record = c.change(move |s, who| s.patch_key(&id, patch, who)).await?;
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
    c: Caller<Keys>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let req: Regenerate = if raw.is_empty() {
        Regenerate::default()
    } else {
        body(&raw)?
    };
    let grace = req.grace_seconds.map(grace).transpose()?;
    let (record, key) = c
        .change(move |s, who| s.regenerate_key(&id, grace, req.expires_at, who))
        .await?;
    Ok(Json(with_value(&record, &key)))
}

async fn revoke_key(c: Caller<Keys>, Path(id): Path<String>) -> Result<StatusCode, CmsError> {
    c.change(move |s, who| s.revoke_key(&id, who)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_apis(c: Caller<ReadSettings>) -> Json<Value> {
    let apis: Vec<Value> = c
        .ctx
        .svc
        .apis()
        .into_iter()
        .map(|(name, a)| json!({"name": name, "createdAt": crate::model::rfc3339(a.created_at), "publicOperations": a.public_ops, "effectiveOperations": a.effective_ops()}))
        .collect();
    Json(json!({ "apis": apis }))
}

async fn put_api(c: Caller<WriteSettings>, Path(api): Path<String>) -> Result<Response, CmsError> {
    let name = api.clone();
    let created = c.change(move |s, _| s.put_api(&name)).await?;
    Ok((created_or_ok(created), Json(json!({ "name": api }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicOps {
    operations: Vec<ContentOp>,
}

async fn get_public(
    c: Caller<ReadSettings>,
    Path(api): Path<String>,
) -> Result<Json<Value>, CmsError> {
    let svc = &c.ctx.svc;
    let info = svc.apis().remove(&api);
    let owners: serde_json::Map<String, Value> = svc
        .owners()
        .into_iter()
        .filter_map(|(o, e)| Some((o, json!(e.public_endpoints.get(&api)?))))
        .collect();
    Ok(Json(json!({
        "operations": svc.public_ops(&api)?,
        "owners": owners,
        "effective": info.map(|i| i.effective_ops()),
    })))
}

async fn put_public(
    c: Caller<WriteSettings>,
    Path(api): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let req: PublicOps = body(&raw)?;
    let ops = c
        .change(move |s, who| s.set_public_ops(&api, req.operations, who))
        .await?;
    Ok(Json(json!({ "operations": ops })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cors {
    origins: Vec<String>,
}

async fn get_cors(c: Caller<ReadSettings>) -> Json<Value> {
    let svc = &c.ctx.svc;
    let owners: serde_json::Map<String, Value> = svc
        .owners()
        .into_iter()
        .filter(|(_, e)| !e.origins.is_empty())
        .map(|(o, e)| (o, json!(e.origins)))
        .collect();
    Json(json!({
        "origins": svc.cors_origins(),
        "owners": owners,
        "effective": svc.effective_cors(),
    }))
}

/// Replaces part of an owner's entry and answers with the whole entry.
async fn write_owner(
    c: Caller<WriteSettings>,
    owner: String,
    write: OwnerWrite,
) -> Result<Json<Value>, CmsError> {
    let entry = c
        .change(move |s, who| s.write_owner(&owner, write, who))
        .await?;
    Ok(Json(json!(entry)))
}

async fn put_owner_cors(
    c: Caller<WriteSettings>,
    Path(owner): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let req: Cors = body(&raw)?;
    write_owner(c, owner, OwnerWrite::Origins(req.origins)).await
}

async fn delete_owner_cors(
    c: Caller<WriteSettings>,
    Path(owner): Path<String>,
) -> Result<Json<Value>, CmsError> {
    write_owner(c, owner, OwnerWrite::Origins(Vec::new())).await
}

async fn put_owner_public(
    c: Caller<WriteSettings>,
    Path((api, owner)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let ops = body::<PublicOps>(&raw)?.operations;
    write_owner(c, owner, OwnerWrite::Public { api, ops }).await
}

async fn delete_owner_public(
    c: Caller<WriteSettings>,
    Path((api, owner)): Path<(String, String)>,
) -> Result<Json<Value>, CmsError> {
    let ops = Vec::new();
    write_owner(c, owner, OwnerWrite::Public { api, ops }).await
}

#[derive(Deserialize)]
struct OwnerFilter {
    /// Only this owner's entry.
    owner: Option<String>,
}

async fn list_owners(c: Caller<ReadSettings>, Query(filter): Query<OwnerFilter>) -> Json<Value> {
    let mut owners = c.ctx.svc.owners();
    if let Some(o) = &filter.owner {
        owners.retain(|name, _| name == o);
    }
    Json(json!({ "owners": owners }))
}

async fn delete_owner(
    c: Caller<WriteSettings>,
    Path(owner): Path<String>,
) -> Result<StatusCode, CmsError> {
    let _entry = write_owner(c, owner, OwnerWrite::Remove).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_cors(c: Caller<WriteSettings>, raw: Bytes) -> Result<Json<Value>, CmsError> {
    let req: Cors = body(&raw)?;
    let origins = c
        .change(move |s, _| s.set_cors_origins(req.origins))
        .await?;
    Ok(Json(json!({ "origins": origins })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    name: String,
    role: String,
}

async fn add_member(c: Caller<WriteMembers>, raw: Bytes) -> Result<Response, CmsError> {
    let req: NewMember = body(&raw)?;
    let req_name = req.name.clone();
    let m = c
        .change(move |s, who| s.add_member(&req.name, &req.role, who))
        .await?;
    let created = Extension(Created(req_name));
    Ok((StatusCode::CREATED, created, Json(json!(m))).into_response())
}

async fn list_members(c: Caller<ReadMembers>) -> Json<Value> {
    Json(json!({ "members": c.ctx.svc.members() }))
}

async fn remove_member(
    c: Caller<WriteMembers>,
    Path(name): Path<String>,
) -> Result<StatusCode, CmsError> {
    c.change(move |s, who| s.remove_member(&name, who)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_roles(c: Caller<ReadMembers>) -> Json<Value> {
    Json(json!({ "roles": c.ctx.svc.roles() }))
}

async fn put_role(
    c: Caller<WriteMembers>,
    Path(name): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let mut role: Role = body(&raw)?;
    role.name = name;
    let role = c.change(move |s, who| s.put_role(role, who)).await?;
    Ok(Json(json!(role)))
}

/// `?environment=E` of the scope-granted operations (default `production`).
#[derive(Deserialize)]
struct EnvQuery {
    environment: Option<String>,
}

impl EnvQuery {
    fn env(&self) -> &str {
        self.environment.as_deref().unwrap_or(PRODUCTION)
    }
}

/// The scope-granted operation a handler performs, as a type (as [`Needs`] is for management).
trait Performs: Send + Sync + 'static {
    const OP: ServiceOp;
}

macro_rules! performs {
    ($($name:ident;)*) => {$(
        struct $name;
        impl Performs for $name {
            const OP: ServiceOp = ServiceOp::$name;
        }
    )*};
}

performs! {
    Export;
    CachePurge;
    WebhooksReplay;
}

/// A caller allowed `O` in the query's environment, with that environment.
type Serviced<O> = Checked<O, String>;

impl<O: Performs> FromRequestParts<Arc<Ctx>> for Serviced<O> {
    type Rejection = CmsError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Self, CmsError> {
        let Ok(client) = Client::from_request_parts(parts, ctx).await;
        let Query(q) = Query::<EnvQuery>::from_request_parts(parts, ctx)
            .await
            .map_err(|e| CmsError::BadRequest(super::input::redact(&e.body_text())))?;
        super::api_content::check_environment_name(q.env())?;
        let p = ctx.auth.authenticate(&ctx.svc, &client).await?;
        ctx.auth.service_op(&ctx.svc, &p, O::OP, q.env())?;
        Ok(Checked::new(ctx, q.env().to_owned()))
    }
}

async fn export(c: Serviced<Export>) -> Result<Json<Value>, CmsError> {
    let env = c.what.clone();
    Ok(Json(scan(&c.ctx, move |s| Ok(s.export(&env))).await?))
}

/// The reference CMS has no CDN in front of it: a purge is authorized, logged and acknowledged,
/// so clients and policies can be tested against the `cache:purge` scope.
async fn purge_cache(_: Serviced<CachePurge>) -> Response {
    tracing::info!("cache purge requested");
    (StatusCode::ACCEPTED, Json(json!({ "purged": true }))).into_response()
}

/// As with purges: the reference CMS sends no webhooks, so a replay has nothing to resend.
async fn replay_webhooks(_: Serviced<WebhooksReplay>) -> Response {
    tracing::info!("webhook replay requested");
    (StatusCode::ACCEPTED, Json(json!({ "replayed": 0 }))).into_response()
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

/// Needs no key; a caller that may read the settings gets each API by name.
async fn openapi(State(ctx): State<Arc<Ctx>>, client: Client) -> Result<Json<Value>, CmsError> {
    let p = ctx.auth.authenticate(&ctx.svc, &client).await?;
    let per_api = ctx
        .auth
        .management(&ctx.svc, &p, MP::SettingsManage)
        .is_ok();
    Ok(Json(super::openapi::document(&ctx.svc, per_api)))
}
