//! `/v1/dead-letters`: list, groups, show and replay, scoped to the tenant.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{auth::Caller, error::ApiError};
use crate::{
    model::{Phase, Reason},
    pipeline::{replay, Engine},
    store::{
        audit::Said,
        dead_letters::{self, DeadLetter, DeadLetterFilter},
    },
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
    Caller(who): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = DeadLetterFilter {
        tenant: who.scope().map(str::to_string),
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
    Caller(who): Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"groups": dead_letters::groups(&engine.pool, who.scope()).await?}),
    ))
}

/// `GET /v1/dead-letters/{id}`.
pub async fn show(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let d = dead_letters::get(&engine.pool, id, who.scope())
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
    /// Why (required unless `dry_run`; it goes in the audit trail).
    pub reason: Option<String>,
    /// At most this many per second (`POST /v1/replays` only).
    pub rate: Option<f64>,
}

/// `POST /v1/dead-letters/replay`: replays at once and answers the counts
/// (a dry run changes nothing and needs no reason). Recorded as a replay job
/// and in the audit trail, like `POST /v1/replays`, which replays in the
/// background at a rate.
pub async fn replay(
    State(engine): State<Engine>,
    Caller(who): Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = ReplayBody::parse(&body)?;
    let targets = replay_targets(&engine, who.scope(), &req).await?;
    // A dry run, or a selection of nothing, changes nothing: no reason
    // needed.
    if req.dry_run || targets.is_empty() {
        let mut v = preview(&targets);
        v["dry_run"] = json!(req.dry_run);
        return Ok(Json(v));
    }
    let said = Said::new(who.actor(), Reason::parse(req.reason.as_deref())?);
    let publisher = engine
        .link
        .publisher()
        .ok_or(ApiError::Unavailable("broker"))?;
    let (job, opts) = start_job(&engine, &said, &req, &targets, None).await?;
    let r = replay::run_job(
        &engine.pool,
        &engine.names,
        &engine.seal,
        Some(&publisher),
        &targets,
        &opts,
        |_| {},
    )
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    replay::evict_cached(engine.cache.as_ref(), &r.runs).await;
    Ok(Json(json!({
        "job": job,
        "selected": targets.len(),
        "replayed": r.replayed,
        "already_replayed": r.skipped,
        "not_replayable": r.not_replayable,
        "would_replay": r.would_replay,
        "dry_run": false,
    })))
}

/// What a replay of `targets` would do, changing nothing: which runs, at
/// which phase.
pub fn preview(targets: &[DeadLetter]) -> Value {
    let would: Vec<Value> = targets
        .iter()
        .filter(|d| d.status == "pending" && d.run_id.is_some())
        .map(|d| json!({"dead_letter": d.id, "run_id": d.run_id, "phase": d.phase, "tenant": d.tenant}))
        .collect();
    json!({
        "selected": targets.len(),
        "replayed": 0,
        "already_replayed": 0,
        "not_replayable": targets.iter().filter(|d| d.run_id.is_none()).count(),
        "would_replay": would.len(),
        "runs": would,
        "dry_run": true,
    })
}

/// Records a replay job for `targets` (and its audit entry) and returns it
/// with the options that run it.
pub async fn start_job(
    engine: &Engine,
    said: &Said,
    req: &ReplayBody,
    targets: &[DeadLetter],
    rate: Option<f64>,
) -> Result<(Uuid, replay::Options), ApiError> {
    let job = replay::start_job(
        &engine.pool,
        &replay::JobRequest {
            said,
            selection: json!({"ids": req.ids, "fingerprint": req.fingerprint, "phase": req.phase}),
            targets,
            patch: req.patch.as_ref(),
            rate,
        },
    )
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let opts = replay::Options {
        dry_run: false,
        patch: req.patch.clone(),
        rate,
        actor: said.actor.clone(),
        job: Some(job),
    };
    Ok((job, opts))
}

impl ReplayBody {
    /// Decodes a body that says what to replay (`ids`, a `fingerprint` or a
    /// `phase`) with a `patch`, if any, keyed by phase.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let req: ReplayBody = serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
            field: e
                .to_string()
                .split('`')
                .nth(1)
                .unwrap_or("body")
                .to_string(),
            message: e.to_string(),
        })?;
        req.validate()?;
        Ok(req)
    }

    /// Checks a request built or decoded: a patch keyed by phase, a rate in
    /// range, and something named to replay.
    pub fn validate(&self) -> Result<(), ApiError> {
        let req = self;
        if let Some(p) = &req.patch {
            check_patch(p)?;
        }
        if req
            .rate
            .is_some_and(|r| !(r.is_finite() && r > 0.0 && r <= 1000.0))
        {
            return Err(ApiError::Invalid {
                field: "rate".into(),
                message: "must be a number of replays per second, above 0 and at most 1000".into(),
            });
        }
        if req.ids.is_empty() && req.fingerprint.is_none() && req.phase.is_none() {
            return Err(ApiError::Invalid {
                field: "ids".into(),
                message: "give ids, a fingerprint or a phase".into(),
            });
        }
        Ok(())
    }
}

/// Checks a replay's patch: a JSON object whose keys are phase names.
pub fn check_patch(patch: &Value) -> Result<(), ApiError> {
    let Some(p) = patch.as_object() else {
        return Err(ApiError::Invalid {
            field: "patch".into(),
            message: "must be an object keyed by phase".into(),
        });
    };
    match p.keys().find(|k| k.parse::<Phase>().is_err()) {
        Some(k) => Err(ApiError::Invalid {
            field: "patch".into(),
            message: format!("{k:?} is not a phase: the patch is keyed by phase name"),
        }),
        None => Ok(()),
    }
}

/// The tenant's dead letters a replay names: each of its `ids` (404 for one
/// that is not the tenant's), else the pending ones of its group or phase.
pub async fn replay_targets(
    engine: &Engine,
    scope: Option<&str>,
    req: &ReplayBody,
) -> Result<Vec<DeadLetter>, ApiError> {
    if req.ids.is_empty() {
        let f = DeadLetterFilter {
            tenant: scope.map(str::to_string),
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
            dead_letters::get(&engine.pool, *id, scope)
                .await?
                .ok_or(ApiError::NotFound("dead letter"))?,
        );
    }
    Ok(targets)
}
