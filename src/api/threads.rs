//! `/v1/threads`: the conversation, and follow-ups that continue it.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{auth::Tenant, error::ApiError, runs};
use crate::{pipeline::Engine, store::threads};

/// `GET /v1/threads/{id}`.
pub async fn get(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let t = threads::get(&engine.pool, &tenant, id)
        .await?
        .ok_or(ApiError::NotFound("thread"))?;
    let msgs = threads::messages(&engine.pool, id).await?;
    Ok(Json(
        json!({"id": t.id, "created_at": t.created_at, "message_count": msgs.len()}),
    ))
}

/// `GET /v1/threads/{id}/messages`.
pub async fn messages(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    threads::get(&engine.pool, &tenant, id)
        .await?
        .ok_or(ApiError::NotFound("thread"))?;
    let msgs = threads::messages(&engine.pool, id).await?;
    Ok(Json(json!({"thread_id": id, "messages": msgs})))
}

/// `POST /v1/threads/{id}/messages`: a follow-up starts a new run in the
/// thread, which sees the thread's earlier messages.
pub async fn follow_up(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = runs::idempotency_key(&headers)?;
    threads::get(&engine.pool, &tenant, id)
        .await?
        .ok_or(ApiError::NotFound("thread"))?;
    let mut req = runs::parse_body(&body)?;
    req.thread_id = Some(id);
    runs::enqueue(&engine, tenant, req, key).await
}
