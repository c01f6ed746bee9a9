//! The content API: `/api/{api}[/{id}]`, and the same under `/environments/{env}` (the plain path
//! is the `production` environment).

use super::auth::Client;
use super::content::Filter;
use super::error::CmsError;
use super::input::fields;
use super::service::{ListQuery, WriteAs};
use super::{blocking, Ctx, PRODUCTION};
use crate::model::{ContentOp, ContentPermission, PermSet};
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
    drafts: Option<bool>,
    closed: Option<bool>,
    filters: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list(
    State(ctx): State<Arc<Ctx>>,
    Path(p): Path<HashMap<String, String>>,
    Query(params): Query<ListParams>,
    client: Client,
) -> Result<Json<Value>, CmsError> {
    let t = Target::from(p);
    let rights = gate(&ctx, &client, &t, ContentOp::List).await?;
    let include_drafts = params.drafts.unwrap_or(false);
    let include_closed = params.closed.unwrap_or(false);
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
    let limit = params.limit.unwrap_or(10);
    if limit > 100 {
        return Err(CmsError::BadRequest("limit must be at most 100".into()));
    }
    let q = ListQuery {
        include_drafts,
        include_closed,
        filter,
        q: params.q,
        limit,
        offset: params.offset.unwrap_or(0),
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
