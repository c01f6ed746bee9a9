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
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value};
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

    /// From the path's captures, decoded (the plain path is the `production` environment).
    fn from(p: &RawPathParams) -> Target {
        let mut t = Target {
            env: PRODUCTION.to_owned(),
            api: String::new(),
            id: String::new(),
            rights: PermSet::default(),
        };
        for (name, value) in p {
            match name {
                "env" => t.env = value.to_owned(),
                "api" => t.api = value.to_owned(),
                "id" => t.id = value.to_owned(),
                _ => {}
            }
        }
        t
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
        let client = Client::of(&parts.headers, &parts.extensions);
        let p = RawPathParams::from_request_parts(parts, ctx)
            .await
            .map_err(|_| CmsError::BadRequest("the path is not valid UTF-8".into()))?;
        let t = grant(ctx, &client, Target::from(&p), O::OP).await?;
        Ok(Checked::new(ctx, t))
    }
}

/// The permission check of every content call: the environment's name, who the caller is, and
/// what it holds on the API for `op` (rate limits included).
async fn grant(
    ctx: &Ctx,
    client: &Client,
    mut t: Target,
    op: ContentOp,
) -> Result<Target, CmsError> {
    check_environment_name(&t.env)?;
    let principal = ctx.auth.authenticate(&ctx.svc, client).await?;
    t.rights = ctx
        .auth
        .content(&ctx.svc, &principal, client.ip, &t.env, &t.api, op)?;
    Ok(t)
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

async fn read(g: Granted<Get>, Query(params): Query<ReadParams>) -> Result<Response, CmsError> {
    entry_answer(&g.ctx, &g.what, &params)
}

/// One entry's answer: the bytes rendered when it was first read since its last write.
fn entry_answer(ctx: &Ctx, t: &Target, params: &ReadParams) -> Result<Response, CmsError> {
    let answer = ctx.svc.get(
        &t.env,
        &t.api,
        &t.id,
        params.draft_key.as_deref(),
        t.rights.contains(ContentPermission::GetAllDrafts),
        t.rights.contains(ContentPermission::GetAllClosed),
    )?;
    Ok(([(header::CONTENT_TYPE, JSON)], answer).into_response())
}

/// The hottest call, `GET` of one entry, answered before the router and its layers (their
/// per-request work was most of this call's cost). It takes only requests the router would
/// answer the same way, through the same check (`grant`) and the same answer: no body, no
/// `Origin` (CORS has nothing to answer; the `Vary` its layer adds to every answer is added
/// here), a path of exactly `/api/{api}/{id}` or `/environments/{env}/api/{api}/{id}` with no
/// percent-encoding, a query that parses. Everything else is left to the router (`None`). The
/// router's request timeout and panic answer hold here too.
pub async fn read_hot<B>(ctx: &Arc<Ctx>, req: &axum::http::Request<B>) -> Option<Response> {
    if req.method() != axum::http::Method::GET || req.headers().contains_key(header::ORIGIN) {
        return None;
    }
    let t = hot_target(req.uri().path())?;
    let Query(params) = Query::<ReadParams>::try_from_uri(req.uri()).ok()?;
    let client = Client::of(req.headers(), req.extensions());
    let answer = async move {
        match grant(ctx, &client, t, ContentOp::Get).await {
            Ok(t) => entry_answer(ctx, &t, &params),
            Err(e) => Err(e),
        }
        .unwrap_or_else(IntoResponse::into_response)
    };
    let answer = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(answer));
    let mut resp = match tokio::time::timeout(super::handler::REQUEST_TIMEOUT, answer).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(panic)) => {
            use tower_http::catch_panic::ResponseForPanic;
            super::error::PanicAnswer.response_for_panic(panic)
        }
        Err(_) => {
            let status = StatusCode::REQUEST_TIMEOUT;
            (status, Json(super::error::status_body(status, None))).into_response()
        }
    };
    resp.headers_mut().insert(header::VARY, CORS_VARY);
    Some(resp)
}

/// What the CORS layer says on every answer it sees.
const CORS_VARY: axum::http::HeaderValue = axum::http::HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

/// The entry a hot-path `path` names, or `None` for any path the router should see.
fn hot_target(path: &str) -> Option<Target> {
    if path.contains('%') {
        return None;
    }
    let (env, rest) = match path.strip_prefix("/environments/") {
        Some(r) => {
            let (env, rest) = r.split_once('/')?;
            (env, rest)
        }
        None => (PRODUCTION, path.strip_prefix('/')?),
    };
    let (api, id) = rest.strip_prefix("api/")?.split_once('/')?;
    if env.is_empty() || api.is_empty() || id.is_empty() || id.contains('/') {
        return None;
    }
    Some(Target {
        env: env.to_owned(),
        api: api.to_owned(),
        id: id.to_owned(),
        rights: PermSet::default(),
    })
}

/// The content type of every JSON answer (axum's `Json` sets the same).
const JSON: axum::http::HeaderValue = axum::http::HeaderValue::from_static("application/json");

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_path_takes_exactly_the_two_entry_paths_without_percent_encoding() {
        let at = |p: &str| hot_target(p).map(|t| (t.env, t.api, t.id));
        let t = |e: &str, a: &str, i: &str| Some((e.to_owned(), a.to_owned(), i.to_owned()));
        assert_eq!(at("/api/blog/abc"), t(PRODUCTION, "blog", "abc"));
        assert_eq!(
            at("/environments/staging/api/blog/abc"),
            t("staging", "blog", "abc")
        );
        for routed in [
            "/api/blog",
            "/api/blog/",
            "/api//abc",
            "/api/blog/abc/",
            "/api/blog/abc/publish",
            "/api/blog/%61bc",
            "/environments//api/blog/abc",
            "/environments/staging/v1/keys",
            "/v1/keys/abc",
            "api/blog/abc",
            "/apis/blog/abc",
        ] {
            assert_eq!(at(routed), None, "{routed}");
        }
    }
}
