//! `/v1/replays`: bulk replays in the background, at a rate, with progress
//! any process can read and an abort any process can ask for; and
//! `GET /v1/audit`, the trail of every action taken.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    auth::Caller,
    dead_letters::{replay_targets, start_job, ReplayBody},
    error::ApiError,
};
use crate::{
    model::{Principal, Reason},
    pipeline::{replay, Engine},
    store::{
        audit::{self, AuditFilter, Said},
        replay_jobs::{self, JobRow},
    },
};

/// Starts a bulk replay in the background for `who` and returns its job;
/// the console and `POST /v1/replays` share it.
pub async fn start(engine: &Engine, who: &Principal, req: &ReplayBody) -> Result<JobRow, ApiError> {
    let said = Said::new(who.actor(), Reason::parse(req.reason.as_deref())?);
    let targets = replay_targets(engine, who.scope(), req).await?;
    let publisher = engine
        .link
        .publisher()
        .ok_or(ApiError::Unavailable("broker"))?;
    let (job, opts) = start_job(engine, &said, req, &targets, req.rate).await?;
    let engine2 = engine.clone();
    tokio::spawn(async move {
        let e = &engine2;
        match replay::run_job(
            &e.pool,
            &e.names,
            &e.seal,
            Some(&publisher),
            &targets,
            &opts,
            |_| {},
        )
        .await
        {
            Ok(r) => replay::evict_cached(e.cache.as_ref(), &r.runs).await,
            Err(err) => tracing::warn!(%job, error = %err, "replay job failed"),
        }
    });
    replay_jobs::get(&engine.pool, job, who.scope())
        .await?
        .ok_or(ApiError::NotFound("replay job"))
}

/// `POST /v1/replays`: 202 with the job.
pub async fn create(
    State(engine): State<Engine>,
    Caller(who): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req = ReplayBody::parse(&body)?;
    if req.dry_run {
        return Err(ApiError::Invalid {
            field: "dry_run".into(),
            message: "a background replay cannot be a dry run: use POST /v1/dead-letters/replay"
                .into(),
        });
    }
    let job = start(&engine, &who, &req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(job))))
}

/// `GET /v1/replays`.
pub async fn list(
    State(engine): State<Engine>,
    Caller(who): Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"replays": replay_jobs::list(&engine.pool, who.scope(), 50).await?}),
    ))
}

/// `GET /v1/replays/{id}`.
pub async fn get(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let job = replay_jobs::get(&engine.pool, id, who.scope())
        .await?
        .ok_or(ApiError::NotFound("replay job"))?;
    Ok(Json(json!(job)))
}

/// Body of an action that needs only a reason.
#[derive(Debug, Deserialize, Default)]
pub struct ReasonBody {
    /// Why.
    pub reason: Option<String>,
}

impl ReasonBody {
    /// Decodes `{"reason": …}` (an empty body has no reason) into a checked
    /// reason.
    pub fn parse(body: &[u8]) -> Result<Reason, ApiError> {
        let b: ReasonBody = if body.iter().all(u8::is_ascii_whitespace) {
            ReasonBody::default()
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
                field: "reason".into(),
                message: format!("the body must be {{\"reason\": \"…\"}}: {e}"),
            })?
        };
        Ok(Reason::parse(b.reason.as_deref())?)
    }
}

/// Asks a job to stop for `who`, recording why; 404 when `who` may not see
/// it, 409 when it already ended.
pub async fn abort_job(
    engine: &Engine,
    who: &Principal,
    id: Uuid,
    reason: Reason,
) -> Result<JobRow, ApiError> {
    let said = Said::new(who.actor(), reason);
    let job = replay_jobs::get(&engine.pool, id, who.scope())
        .await?
        .ok_or(ApiError::NotFound("replay job"))?;
    if !replay_jobs::request_abort(&engine.pool, id, who.scope(), &said).await? {
        return Err(ApiError::Conflict(format!(
            "replay job {id} is {}: only a running job can be aborted",
            job.state
        )));
    }
    replay_jobs::get(&engine.pool, id, who.scope())
        .await?
        .ok_or(ApiError::NotFound("replay job"))
}

/// `POST /v1/replays/{id}/abort` with `{"reason": …}`.
pub async fn abort(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let reason = ReasonBody::parse(&body)?;
    Ok(Json(json!(abort_job(&engine, &who, id, reason).await?)))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Only actions on this run.
    pub run: Option<Uuid>,
    /// Older than this id (`next_before` of the previous page).
    pub before: Option<i64>,
    /// Page size (1-500, default 100).
    pub limit: Option<i64>,
}

/// `GET /v1/audit`: a tenant sees the actions on its own data; an operator
/// sees every action.
pub async fn audit_log(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let rows = audit::list(
        &engine.pool,
        &AuditFilter {
            tenant: who.scope().map(str::to_string),
            run: q.run,
            before: q.before,
            limit,
        },
    )
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({"audit": rows, "next_before": next})))
}
