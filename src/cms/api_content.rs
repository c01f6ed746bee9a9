//! The content API: `/api/{api}[/{id}]`, and the same under `/environments/{env}` (the plain path
//! is the `production` environment).

use super::auth::Client;
use super::content::Filter;
use super::error::CmsError;
use super::handler::{created_or_ok, scan, Checked, Ctx, PRODUCTION};
use super::input::fields;
use super::service::{ListQuery, WriteAs};
use crate::model::{ContentOp, ContentPermission, PermSet, SpecError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Ctx>> {
    let api = Router::new()
        .route("/api/{api}", get(list).post(create))
        .route(
            "/api/{api}/{id}",
            get(read).put(replace).patch(update).delete(remove),
        )
        .route("/api/{api}/{id}/publish", post(publish))
        .route("/api/{api}/{id}/close", post(close));
    Router::new()
        .merge(api.clone())
        .nest("/environments/{env}", api)
}

/// What a call reaches (the path parameters, from the route and from the `/environments/{env}`
/// prefix) and what the caller holds on that API.
struct Target {
    env: String,
    api: String,
    id: String,
    rights: PermSet,
}

impl Target {
    /// Whether the caller may read this API's drafts (and so see a draft key).
    fn may_read_drafts(&self) -> bool {
        self.rights.contains(ContentPermission::GetAllDrafts)
    }

    fn from(mut p: HashMap<String, String>) -> Target {
        Target {
            env: p.remove("env").unwrap_or_else(|| PRODUCTION.to_owned()),
            api: p.remove("api").unwrap_or_default(),
            id: p.remove("id").unwrap_or_default(),
            rights: PermSet::default(),
        }
    }
}

/// The content operation a handler serves, as a type: the check runs while axum extracts the
/// handler's arguments, before any query or body is read.
trait Serves: Send + Sync + 'static {
    const OP: ContentOp;
}

/// Declares marker types for [`Serves`].
macro_rules! serves {
    ($($name:ident => $op:expr;)*) => {$(
        struct $name;
        impl Serves for $name {
            const OP: ContentOp = $op;
        }
    )*};
}

serves! {
    List => ContentOp::List;
    Get => ContentOp::Get;
    Create => ContentOp::Create;
    Replace => ContentOp::Replace;
    Update => ContentOp::Update;
    Delete => ContentOp::Delete;
    Publish => ContentOp::Publish;
}

/// A call the caller may make, with its target.
type Granted<O> = Checked<O, Target>;

impl<O: Serves> FromRequestParts<Arc<Ctx>> for Granted<O> {
    type Rejection = CmsError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Self, CmsError> {
        let Ok(client) = Client::from_request_parts(parts, ctx).await;
        let p = Path::<HashMap<String, String>>::from_request_parts(parts, ctx)
            .await
            .map_err(|_| CmsError::BadRequest("the path is not valid UTF-8".into()))?;
        let mut t = Target::from(p.0);
        check_environment_name(&t.env)?;
        let principal = ctx.auth.authenticate(&ctx.svc, &client).await?;
        t.rights = ctx
            .auth
            .content(&ctx.svc, &principal, client.ip, &t.env, &t.api, O::OP)?;
        Ok(Checked::new(ctx, t))
    }
}

/// An environment in a path or a query is named as a key's environments are (a slug of at
/// most 63): anything else could never hold content, and is not stored.
pub(crate) fn check_environment_name(env: &str) -> Result<(), CmsError> {
    if crate::model::valid_slug(env) {
        return Ok(());
    }
    Err(SpecError::new(
        "environment",
        "is not an environment name (lowercase letters, digits, '-', '_', at most 63)",
    )
    .into())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    drafts: Option<String>,
    closed: Option<String>,
    filters: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// A query number in `0..=max` (default `default`); anything else is a 422 naming the field.
fn query_number(
    field: &str,
    raw: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, CmsError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.parse::<usize>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            SpecError::new(field, format!("must be a whole number from 0 to {max}")).into()
        })
}

/// A query flag: `true` or `false` (absent: false).
fn query_flag(field: &str, raw: Option<&str>) -> Result<bool, CmsError> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(SpecError::new(field, "must be true or false").into()),
    }
}

async fn list(g: Granted<List>, Query(params): Query<ListParams>) -> Result<Response, CmsError> {
    let (t, rights) = (&g.what, g.what.rights);
    let include_drafts = query_flag("drafts", params.drafts.as_deref())?;
    let include_closed = query_flag("closed", params.closed.as_deref())?;
    for (asked, perm) in [
        (include_drafts, ContentPermission::GetAllDrafts),
        (include_closed, ContentPermission::GetAllClosed),
    ] {
        if asked && !rights.contains(perm) {
            return Err(CmsError::Forbidden(format!(
                "this key lacks the {perm} permission on API '{}' (needed to list {})",
                t.api,
                if perm == ContentPermission::GetAllDrafts {
                    "drafts"
                } else {
                    "closed entries"
                }
            )));
        }
    }
    let filter = match params.filters.as_deref() {
        Some(f) => Filter::parse(f).map_err(CmsError::BadRequest)?,
        None => Filter::default(),
    };
    let limit = query_number("limit", params.limit.as_deref(), 10, 100)?;
    let offset = query_number("offset", params.offset.as_deref(), 0, 1_000_000_000)?;
    let q = ListQuery {
        include_drafts,
        include_closed,
        filter,
        q: params.q,
        limit,
        offset,
    };
    let (env, api) = (t.env.clone(), t.api.clone());
    let body = scan(&g.ctx, move |s| s.list(&env, &api, &q)).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadParams {
    draft_key: Option<String>,
}

async fn read(g: Granted<Get>, Query(params): Query<ReadParams>) -> Result<Json<Value>, CmsError> {
    let t = &g.what;
    Ok(Json(g.ctx.svc.get(
        &t.env,
        &t.api,
        &t.id,
        params.draft_key.as_deref(),
        t.rights.contains(ContentPermission::GetAllDrafts),
        t.rights.contains(ContentPermission::GetAllClosed),
    )?))
}

#[derive(Deserialize)]
struct WriteParams {
    status: Option<String>,
}

impl WriteParams {
    fn write_as(&self) -> Result<WriteAs, CmsError> {
        match self.status.as_deref() {
            None | Some("published") => Ok(WriteAs::Published),
            Some("draft") => Ok(WriteAs::Draft),
            Some(_) => Err(CmsError::BadRequest(
                "status must be 'draft' or 'published'".into(),
            )),
        }
    }
}

/// What a write sends: the body's fields, published or a draft (`?status=`). Read after the
/// `Granted` check, which needs only the head of the request.
struct EntryWrite {
    fields: Map<String, Value>,
    as_: WriteAs,
}

impl<S: Send + Sync> FromRequest<S> for EntryWrite {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Query(params) = Query::<WriteParams>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let raw = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let as_ = params.write_as().map_err(IntoResponse::into_response)?;
        let fields = fields(&raw).map_err(IntoResponse::into_response)?;
        Ok(EntryWrite { fields, as_ })
    }
}

async fn create(g: Granted<Create>, w: EntryWrite) -> Result<Response, CmsError> {
    let (body, _) = g
        .change(move |s, t| {
            let drafts = t.may_read_drafts();
            s.put_entry(&t.env, &t.api, None, w.fields, w.as_, false, drafts)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn replace(g: Granted<Replace>, w: EntryWrite) -> Result<Response, CmsError> {
    let (body, created) = g
        .change(move |s, t| {
            let drafts = t.may_read_drafts();
            s.put_entry(&t.env, &t.api, Some(&t.id), w.fields, w.as_, true, drafts)
        })
        .await?;
    Ok((created_or_ok(created), Json(body)).into_response())
}

async fn update(g: Granted<Update>, w: EntryWrite) -> Result<Json<Value>, CmsError> {
    let entry = g
        .change(move |s, t| {
            let drafts = t.may_read_drafts();
            s.patch_entry(&t.env, &t.api, &t.id, w.fields, w.as_, drafts)
        })
        .await?;
    Ok(Json(entry))
}

async fn remove(g: Granted<Delete>) -> Result<StatusCode, CmsError> {
    g.change(move |s, t| s.delete_entry(&t.env, &t.api, &t.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn publish(g: Granted<Publish>) -> Result<Json<Value>, CmsError> {
    Ok(Json(
        g.change(|s, t| s.publish(&t.env, &t.api, &t.id, t.may_read_drafts()))
            .await?,
    ))
}

async fn close(g: Granted<Publish>) -> Result<Json<Value>, CmsError> {
    Ok(Json(
        g.change(|s, t| s.close(&t.env, &t.api, &t.id, t.may_read_drafts()))
            .await?,
    ))
}
