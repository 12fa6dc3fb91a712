//! Bulk replays as rows: what a job selected, its rate, its progress and
//! whether an abort was asked for. The process that started a job writes
//! its progress after each dead letter; any process reads it, and any
//! process can ask for an abort, which the job sees at its next step.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    audit::{self, Said},
    Error,
};

/// A running job whose progress has not moved for this long is shown as
/// `interrupted` (its process died); its replayed dead letters stay
/// replayed, and the rest can be replayed again.
pub const STALE_SECS: f64 = 60.0;

/// A job to start.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Who and why.
    pub said: &'a Said,
    /// The tenant whose dead letters it replays (`None`: an operator's,
    /// across tenants).
    pub tenant: Option<&'a str>,
    /// What was asked for (ids, group, phase), as given.
    pub selection: Value,
    /// The dead letters, in order.
    pub targets: &'a [Uuid],
    /// The runs of those dead letters (for the audit trail).
    pub runs: &'a [Uuid],
    /// A merge patch over the phase's inputs, keyed by phase.
    pub patch: Option<&'a Value>,
    /// At most this many per second.
    pub rate: Option<f64>,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Its id.
    pub id: Uuid,
    /// Who started it.
    pub actor: String,
    /// The tenant, if one.
    pub tenant: Option<String>,
    /// Why.
    pub reason: String,
    /// What was asked for.
    pub selection: Value,
    /// How many dead letters it has.
    pub total: i32,
    /// The patch.
    pub patch: Option<Value>,
    /// Per second.
    pub rate: Option<f64>,
    /// `running`, `done`, `aborted`, `failed`, or `interrupted` (running,
    /// but its process stopped writing progress).
    pub state: String,
    /// Dead letters handled so far.
    pub done: i32,
    /// Of those, replayed.
    pub replayed: i32,
    /// Already replayed before.
    pub skipped: i32,
    /// Poison without a run.
    pub not_replayable: i32,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether an abort was asked for.
    pub abort_requested: bool,
    /// Started.
    pub created_at: DateTime<Utc>,
    /// Last progress.
    pub updated_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Progress counts after a step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Handled.
    pub done: i32,
    /// Replayed.
    pub replayed: i32,
    /// Already replayed.
    pub skipped: i32,
    /// Without a run.
    pub not_replayable: i32,
}

/// Starts a job, recording the action in the audit trail in the same
/// transaction (`replay`, or `patch` when it carries a patch).
pub async fn create(pool: &PgPool, job: &NewJob<'_>) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO replay_jobs (id, actor, tenant, reason, selection, targets, patch, rate) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id,
        job.said.actor,
        job.tenant,
        job.said.reason.as_str(),
        job.selection,
        job.targets,
        job.patch,
        job.rate,
    )
    .execute(&mut *tx)
    .await?;
    let target = format!("replay job {id}");
    audit::record(
        &mut *tx,
        &audit::Entry {
            said: job.said,
            tenant: job.tenant,
            action: if job.patch.is_some() {
                "patch"
            } else {
                "replay"
            },
            target: &target,
            runs: job.runs,
            detail: serde_json::json!({
                "job": id,
                "selection": job.selection,
                "dead_letters": job.targets.len(),
                "patch": job.patch,
                "rate": job.rate,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The dead letters of a job, in order.
pub async fn targets(pool: &PgPool, id: Uuid) -> Result<Vec<Uuid>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT targets FROM replay_jobs WHERE id = $1", id)
            .fetch_optional(pool)
            .await?
            .unwrap_or_default(),
    )
}

/// Writes a job's progress; answers whether an abort was asked for.
pub async fn progress(pool: &PgPool, id: Uuid, p: Progress) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        "UPDATE replay_jobs SET done = $2, replayed = $3, skipped = $4, not_replayable = $5, \
         updated_at = now() WHERE id = $1 RETURNING abort_requested",
        id,
        p.done,
        p.replayed,
        p.skipped,
        p.not_replayable,
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or(true))
}

/// Whether an abort was asked for (a gone job counts as aborted).
pub async fn abort_requested(pool: &PgPool, id: Uuid) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar!("SELECT abort_requested FROM replay_jobs WHERE id = $1", id)
            .fetch_optional(pool)
            .await?
            .unwrap_or(true),
    )
}

/// Ends a job: `done`, `aborted` or `failed` (with its error).
pub async fn finish(
    pool: &PgPool,
    id: Uuid,
    state: &str,
    error: Option<&str>,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE replay_jobs SET state = $2, error = $3, updated_at = now(), finished_at = now() \
         WHERE id = $1 AND state = 'running'",
        id,
        state,
        error,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Asks a running job to stop, recording who asked and why; `false` when
/// there is no such job the scope may see, or it already ended.
pub async fn request_abort(
    pool: &PgPool,
    id: Uuid,
    scope: Option<&str>,
    said: &Said,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        "UPDATE replay_jobs SET abort_requested = true \
         WHERE id = $1 AND state = 'running' AND ($2::text IS NULL OR tenant = $2) \
         RETURNING tenant, done, cardinality(targets) AS total",
        id,
        scope,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let target = format!("replay job {id}");
    audit::record(
        &mut *tx,
        &audit::Entry {
            said,
            tenant: row.tenant.as_deref(),
            action: "abort_replay",
            target: &target,
            runs: &[],
            detail: serde_json::json!({ "job": id, "done": row.done, "total": row.total }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

macro_rules! job_query {
    ($tail:literal, $($arg:expr),*) => {
        sqlx::query_as!(
            JobRow,
            r#"SELECT id, actor, tenant, reason, selection, cardinality(targets) AS "total!", patch,
               rate, CASE WHEN state = 'running'
                           AND updated_at < now() - make_interval(secs => $1)
                          THEN 'interrupted' ELSE state END AS "state!",
               done, replayed, skipped, not_replayable, error, abort_requested,
               created_at, updated_at, finished_at
             FROM replay_jobs WHERE ($2::text IS NULL OR tenant = $2) "# + $tail,
            STALE_SECS, $($arg),*
        )
    };
}

/// A job the scope may see (`None`: every tenant's).
pub async fn get(pool: &PgPool, id: Uuid, scope: Option<&str>) -> Result<Option<JobRow>, Error> {
    Ok(job_query!("AND id = $3", scope, id)
        .fetch_optional(pool)
        .await?)
}

/// The newest jobs the scope may see.
pub async fn list(pool: &PgPool, scope: Option<&str>, limit: i64) -> Result<Vec<JobRow>, Error> {
    Ok(job_query!(
        "ORDER BY created_at DESC LIMIT $3",
        scope,
        limit.clamp(1, 200)
    )
    .fetch_all(pool)
    .await?)
}
