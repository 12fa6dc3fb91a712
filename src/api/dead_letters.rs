//! `/v1/dead-letters`: list, groups, show and replay, scoped to the tenant.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{auth::Tenant, error::ApiError};
use crate::{
    pipeline::{replay, Engine},
    store::dead_letters::{self, DeadLetter, DeadLetterFilter},
};

/// Query of `GET /v1/dead-letters`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this phase.
    pub phase: Option<String>,
    /// Error contains.
    pub error_contains: Option<String>,
    /// Only this group.
    pub fingerprint: Option<String>,
    /// Page size (max 500).
    pub limit: Option<i64>,
}

/// `GET /v1/dead-letters`.
pub async fn list(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = DeadLetterFilter {
        tenant: Some(tenant),
        phase: q.phase,
        error_contains: q.error_contains,
        fingerprint: q.fingerprint,
        limit: q.limit.unwrap_or(100).clamp(1, 500),
        ..Default::default()
    };
    Ok(Json(
        json!({"dead_letters": dead_letters::list(&engine.pool, &f).await?}),
    ))
}

/// `GET /v1/dead-letters/groups`.
pub async fn groups(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"groups": dead_letters::groups(&engine.pool, Some(&tenant)).await?}),
    ))
}

/// `GET /v1/dead-letters/{id}`.
pub async fn show(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let d = dead_letters::get(&engine.pool, id, Some(&tenant))
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    Ok(Json(json!(d)))
}

/// Body of `POST /v1/dead-letters/replay`.
#[derive(Debug, Deserialize, Default)]
pub struct ReplayBody {
    /// These dead letters.
    #[serde(default)]
    pub ids: Vec<Uuid>,
    /// Or this group.
    pub fingerprint: Option<String>,
    /// Limited to this phase.
    pub phase: Option<String>,
    /// JSON merge patch over the phase's inputs.
    pub patch: Option<Value>,
    /// Change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many.
    pub limit: Option<i64>,
}

/// `POST /v1/dead-letters/replay`.
pub async fn replay(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = ReplayBody::parse(&body)?;
    let targets = replay_targets(&engine, &tenant, &req).await?;
    let publisher = if req.dry_run {
        None
    } else {
        Some(
            engine
                .link
                .publisher()
                .ok_or(ApiError::Unavailable("broker"))?,
        )
    };
    let opts = replay::Options {
        dry_run: req.dry_run,
        patch: req.patch,
        rate: None,
        actor: format!("api:{tenant}"),
    };
    let r = replay::replay(
        &engine.pool,
        &engine.names,
        &engine.seal,
        publisher.as_ref(),
        &targets,
        &opts,
        |_| {},
    )
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    replay::evict_cached(engine.cache.as_ref(), &r.runs).await;
    Ok(Json(json!({
        "selected": targets.len(),
        "replayed": r.replayed,
        "already_replayed": r.skipped,
        "not_replayable": r.not_replayable,
        "would_replay": r.would_replay,
        "dry_run": req.dry_run,
    })))
}

impl ReplayBody {
    /// Decodes a body that says what to replay (`ids`, a `fingerprint` or a
    /// `phase`) with a `patch`, if any, keyed by phase.
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let req: ReplayBody = serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
            field: e
                .to_string()
                .split('`')
                .nth(1)
                .unwrap_or("body")
                .to_string(),
            message: e.to_string(),
        })?;
        if req.patch.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(ApiError::Invalid {
                field: "patch".into(),
                message: "must be an object keyed by phase".into(),
            });
        }
        if req.ids.is_empty() && req.fingerprint.is_none() && req.phase.is_none() {
            return Err(ApiError::Invalid {
                field: "ids".into(),
                message: "give ids, a fingerprint or a phase".into(),
            });
        }
        Ok(req)
    }
}

/// The tenant's dead letters a replay names: each of its `ids` (404 for one
/// that is not the tenant's), else the pending ones of its group or phase.
async fn replay_targets(
    engine: &Engine,
    tenant: &str,
    req: &ReplayBody,
) -> Result<Vec<DeadLetter>, ApiError> {
    if req.ids.is_empty() {
        let f = DeadLetterFilter {
            tenant: Some(tenant.to_string()),
            phase: req.phase.clone(),
            fingerprint: req.fingerprint.clone(),
            limit: req.limit.unwrap_or(1000).clamp(1, 10_000),
            ..Default::default()
        };
        return Ok(dead_letters::list(&engine.pool, &f).await?);
    }
    let mut targets = Vec::new();
    for id in &req.ids {
        targets.push(
            dead_letters::get(&engine.pool, *id, Some(tenant))
                .await?
                .ok_or(ApiError::NotFound("dead letter"))?,
        );
    }
    Ok(targets)
}
