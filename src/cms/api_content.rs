//! The content API: `/api/{api}[/{id}]`, and the same under `/environments/{env}` (the plain path
//! is the `production` environment).

use super::auth::Client;
use super::content::Filter;
use super::error::CmsError;
use super::input::fields;
use super::service::{ListQuery, WriteAs};
use super::{blocking, Ctx, PRODUCTION};
use crate::model::{ContentOp, ContentPermission, PermSet, SpecError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
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

/// Path parameters, from the route and from the `/environments/{env}` prefix.
struct Target {
    env: String,
    api: String,
    id: String,
}

impl Target {
    fn from(mut p: HashMap<String, String>) -> Target {
        Target {
            env: p.remove("env").unwrap_or_else(|| PRODUCTION.to_owned()),
            api: p.remove("api").unwrap_or_default(),
            id: p.remove("id").unwrap_or_default(),
        }
    }
}

async fn gate(ctx: &Ctx, client: &Client, t: &Target, op: ContentOp) -> Result<PermSet, CmsError> {
    let p = ctx.auth.authenticate(&ctx.svc, client).await?;
    ctx.auth
        .content(&ctx.svc, &p, client.ip, &t.env, &t.api, op)
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

async fn list(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    Query(params): Query<ListParams>,
    client: Client,
) -> Result<Json<Value>, CmsError> {
    let t = Target::from(p);
    let rights = gate(&ctx, &client, &t, ContentOp::List).await?;
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
    Ok(Json(ctx.svc.list(&t.env, &t.api, &q)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadParams {
    draft_key: Option<String>,
}

async fn read(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    Query(params): Query<ReadParams>,
    client: Client,
) -> Result<Json<Value>, CmsError> {
    let t = Target::from(p);
    let rights = gate(&ctx, &client, &t, ContentOp::Get).await?;
    Ok(Json(ctx.svc.get(
        &t.env,
        &t.api,
        &t.id,
        params.draft_key.as_deref(),
        rights.contains(ContentPermission::GetAllDrafts),
        rights.contains(ContentPermission::GetAllClosed),
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
            Some(other) => Err(CmsError::BadRequest(format!(
                "status must be 'draft' or 'published', not '{other}'"
            ))),
        }
    }
}

async fn create(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    Query(params): Query<WriteParams>,
    client: Client,
    raw: Bytes,
) -> Result<Response, CmsError> {
    let t = Target::from(p);
    gate(&ctx, &client, &t, ContentOp::Create).await?;
    let (as_, f) = (params.write_as()?, fields(&raw)?);
    let (body, _) = blocking(&ctx, move |s| {
        s.put_entry(&t.env, &t.api, None, f, as_, false)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn replace(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    Query(params): Query<WriteParams>,
    client: Client,
    raw: Bytes,
) -> Result<Response, CmsError> {
    let t = Target::from(p);
    gate(&ctx, &client, &t, ContentOp::Replace).await?;
    let (as_, f) = (params.write_as()?, fields(&raw)?);
    let (body, created) = blocking(&ctx, move |s| {
        s.put_entry(&t.env, &t.api, Some(&t.id), f, as_, true)
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

async fn update(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    Query(params): Query<WriteParams>,
    client: Client,
    raw: Bytes,
) -> Result<Json<Value>, CmsError> {
    let t = Target::from(p);
    gate(&ctx, &client, &t, ContentOp::Update).await?;
    let (as_, f) = (params.write_as()?, fields(&raw)?);
    Ok(Json(
        blocking(&ctx, move |s| s.patch_entry(&t.env, &t.api, &t.id, f, as_)).await?,
    ))
}

async fn remove(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    client: Client,
) -> Result<StatusCode, CmsError> {
    let t = Target::from(p);
    gate(&ctx, &client, &t, ContentOp::Delete).await?;
    blocking(&ctx, move |s| s.delete_entry(&t.env, &t.api, &t.id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn publish(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    client: Client,
) -> Result<Json<Value>, CmsError> {
    let t = Target::from(p);
    gate(&ctx, &client, &t, ContentOp::Publish).await?;
    Ok(Json(
        blocking(&ctx, move |s| s.publish(&t.env, &t.api, &t.id)).await?,
    ))
}

async fn close(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    client: Client,
) -> Result<Json<Value>, CmsError> {
    let t = Target::from(p);
    gate(&ctx, &client, &t, ContentOp::Publish).await?;
    Ok(Json(
        blocking(&ctx, move |s| s.close(&t.env, &t.api, &t.id)).await?,
    ))
}
