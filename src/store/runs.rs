//! Runs: intake, reads, the start of a phase (with its inputs), retries,
//! cancels, the transition history and the dedup records of processed
//! messages. The effect transaction of a phase attempt lives in
//! [`super::effects`].

use std::collections::BTreeMap;

use super::{
    audit::{self, Said},
    Error,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::model::{envelope::Envelope, ThreadMessage};

pub use crate::model::RunStatus;

/// A run as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Run {
    /// Run id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: String,
    /// Conversation thread.
    pub thread_id: Uuid,
    /// Correlation id carried by every message of the run.
    pub correlation_id: String,
    /// Idempotency key of the request that created it.
    pub request_message_id: Option<String>,
    /// Where the final outcome is published.
    pub reply_to: Option<String>,
    /// The upstream request.
    pub request: Value,
    /// Current status.
    pub status: RunStatus,
    /// Current (or last) phase.
    pub phase: Option<String>,
    /// Attempt of the current phase.
    pub attempt: i32,
    /// Replay generation of the current phase.
    pub replay: i32,
    /// When the next attempt is due, while `retrying`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Final result (the last phase's output).
    pub result: Option<Value>,
    /// Final error, when dead-lettered.
    pub error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// The request's priority (0-9): waiting runs of a tenant are released
    /// highest first.
    pub priority: i16,
    /// Why the run waits to be admitted (`tenant over its share`, `over
    /// its rate`); none once admitted (docs/DESIGN.md "Fair admission").
    pub wait_reason: Option<String>,
}

impl Run {
    /// True once the run can change no more (short of a replay).
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// The envelope of the run's current step; none while the run waits
    /// to be admitted (nothing publishes a waiting run's step).
    pub fn envelope(&self) -> Option<Envelope> {
        if self.wait_reason.is_some() {
            return None;
        }
        let phase = self.phase.as_deref()?;
        Some(Envelope::new(
            self.id,
            phase,
            u32::try_from(self.attempt).unwrap_or(1),
            u32::try_from(self.replay).unwrap_or(0),
            &self.correlation_id,
            &self.tenant,
        ))
    }
}

/// The columns of [`Run`], for the statements assembled at run time (the
/// batch statements in `sql/*.sql` return them). A unit test checks the
/// list against [`Run`]'s fields; [`select_runs!`] spells the same list out
/// for the compile-time checked queries, which check it against [`Run`].
pub const RUN_COLUMNS: &str =
    "id, tenant, thread_id, correlation_id, request_message_id, reply_to, \
     request, status, phase, attempt, replay, next_attempt_at, result, error, created_at, \
     updated_at, finished_at, priority, wait_reason";

/// A compile-time checked `query_as!` of [`Run`] rows: `SELECT` the run
/// columns `FROM runs`, then `$rest` (a string literal: conditions, order,
/// locks) with its arguments.
macro_rules! select_runs {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::store::runs::Run,
            r#"SELECT id, tenant, thread_id, correlation_id, request_message_id, reply_to,
             request, status AS "status: crate::model::RunStatus", phase, attempt, replay,
             next_attempt_at, result, error, created_at, updated_at, finished_at, priority,
             wait_reason FROM runs "#
                + $rest
            $(, $arg)*
        )
    };
}
pub(super) use select_runs;

pub use super::requests::{create_run, create_runs, create_runs_on, Accepted, IntakeError, NewRun};

/// One transition of a run: a row of its history, never overwritten
/// (docs/DESIGN.md "Run states").
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    /// The run.
    pub run_id: Uuid,
    /// Who (worker id, `api`, `operator:<name>`, `scheduler`).
    pub actor: &'a str,
    /// The status it left (none for a run's first row).
    pub from: Option<RunStatus>,
    /// The status it reached.
    pub to: RunStatus,
    /// The phase it is at.
    pub phase: Option<&'a str>,
    /// The attempt of that phase.
    pub attempt: Option<i32>,
    /// The replay generation.
    pub replay: i32,
    /// The failure that caused it, if any.
    pub error: Option<&'a str>,
    /// Extra detail (next attempt time, the replayed dead letter and patch, …).
    pub detail: Option<Value>,
}

/// Appends one transition to a run's history.
pub(super) async fn insert_history(
    tx: &mut Transaction<'_, Postgres>,
    t: &Transition<'_>,
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO run_history (run_id, actor, from_status, to_status, phase, attempt, replay, error, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        t.run_id,
        t.actor,
        t.from.map(RunStatus::as_str),
        t.to.as_str(),
        t.phase,
        t.attempt,
        t.replay,
        t.error,
        t.detail,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A run by id, any tenant (for the engine).
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Run>, Error> {
    Ok(select_runs!("WHERE id = $1", id)
        .fetch_optional(pool)
        .await?)
}

/// A run by id, only if it belongs to `tenant`.
pub async fn get_for_tenant(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Run>, Error> {
    Ok(select_runs!("WHERE id = $1 AND tenant = $2", id, tenant)
        .fetch_optional(pool)
        .await?)
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs with this correlation id.
    pub correlation_id: Option<String>,
    /// Only runs in this status.
    pub status: Option<String>,
    /// Keyset cursor: runs created after this (created_at, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Page size.
    pub limit: i64,
}

/// A page of a tenant's runs, oldest first.
pub async fn list(pool: &PgPool, tenant: &str, f: &RunFilter) -> Result<Vec<Run>, Error> {
    let (after_ts, after_id) = match f.after {
        Some((ts, id)) => (Some(ts), Some(id)),
        None => (None, None),
    };
    Ok(select_runs!(
        "WHERE tenant = $1 \
         AND ($2::text IS NULL OR correlation_id = $2) \
         AND ($3::text IS NULL OR status = $3) \
         AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5)) \
         ORDER BY created_at, id LIMIT $6",
        tenant,
        f.correlation_id.as_deref(),
        f.status.as_deref(),
        after_ts,
        after_id as Option<Uuid>,
        f.limit,
    )
    .fetch_all(pool)
    .await?)
}

/// One row of a run's transition history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    /// Sequence.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (worker id, `api`, `operator:<name>`, `scheduler`).
    pub actor: String,
    /// From status.
    pub from_status: Option<String>,
    /// To status.
    pub to_status: String,
    /// Phase.
    pub phase: Option<String>,
    /// Attempt.
    pub attempt: Option<i32>,
    /// Replay generation.
    pub replay: i32,
    /// Error, for failures.
    pub error: Option<String>,
    /// Extra detail (next attempt time, patch, …).
    pub detail: Option<Value>,
}

/// A run's transition history, oldest first.
pub async fn history(pool: &PgPool, run_id: Uuid) -> Result<Vec<HistoryRow>, Error> {
    Ok(sqlx::query_as!(
        HistoryRow,
        "SELECT id, at, actor, from_status, to_status, phase, attempt, replay, error, detail \
         FROM run_history WHERE run_id = $1 ORDER BY id",
        run_id,
    )
    .fetch_all(pool)
    .await?)
}

/// One attempt of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    /// Phase.
    pub phase: String,
    /// Attempt.
    pub attempt: i32,
    /// Replay generation.
    pub replay: i32,
    /// `succeeded`, `failed_transient`, `failed_permanent`, `discarded`.
    pub outcome: String,
    /// Error class, for failures.
    pub error_class: Option<String>,
    /// Error, for failures.
    pub error: Option<String>,
    /// Worker that ran it.
    pub worker_id: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
}

/// Every phase attempt of a run, oldest first.
pub async fn attempts(pool: &PgPool, run_id: Uuid) -> Result<Vec<AttemptRow>, Error> {
    Ok(sqlx::query_as!(
        AttemptRow,
        "SELECT phase, attempt, replay, outcome, error_class, error, worker_id, started_at, finished_at \
         FROM phase_attempts WHERE run_id = $1 ORDER BY id",
        run_id,
    )
    .fetch_all(pool)
    .await?)
}

/// A processed message's dedup record, as stored.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    /// The follow-ups the message led to, as stored (a reply without its
    /// result, which is the run's: see `result`).
    pub follow_up: Value,
    /// The run's result now (`None` if it has none, or the run is gone).
    pub result: Option<Value>,
    /// True once every follow-up was confirmed by the broker (see
    /// [`mark_dispatched`]): a duplicate then publishes nothing again.
    pub dispatched: bool,
}

/// The dedup record of a processed message, with its run's result; `None`
/// when the message was never processed.
pub async fn processed(pool: &PgPool, message_id: &str) -> Result<Option<Processed>, Error> {
    Ok(sqlx::query_as!(
        Processed,
        r#"SELECT p.follow_up, r.result AS "result?", p.dispatched FROM processed_messages p
         LEFT JOIN runs r ON r.id = p.run_id WHERE p.message_id = $1"#,
        message_id,
    )
    .fetch_optional(pool)
    .await?)
}

pub use super::starts::{start_phase, start_phases, Inputs, Start};

/// The persisted inputs of a phase: upstream outputs and the thread so far.
pub async fn load_inputs(
    pool: &PgPool,
    run: &Run,
) -> Result<(BTreeMap<String, Value>, Vec<ThreadMessage>), Error> {
    let outputs = sqlx::query!(
        "SELECT phase, output FROM phase_outputs WHERE run_id = $1",
        run.id,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.phase, r.output))
    .collect();
    let thread = sqlx::query_as!(
        ThreadMessage,
        r#"SELECT role AS "role!", content AS "content!" FROM (SELECT id, role, content FROM messages
         WHERE thread_id = $1 AND (run_id IS NULL OR run_id <> $2) ORDER BY id DESC LIMIT 20) m
         ORDER BY id"#,
        run.thread_id,
        run.id,
    )
    .fetch_all(pool)
    .await?;
    Ok((outputs, thread))
}

/// Moves up to `limit` runs whose retry is due back to `queued(phase)`, in
/// one transaction (other schedulers skip the runs it locked), and returns
/// them as they were: the caller publishes their messages after the commit,
/// so no row lock is held while the broker confirms.
pub async fn requeue_due_retries(
    pool: &PgPool,
    limit: i64,
    actor: &str,
) -> Result<Vec<Run>, Error> {
    let mut tx = pool.begin().await?;
    let due = due_retries(&mut tx, limit).await?;
    for run in &due {
        requeue_retry(&mut tx, run, actor).await?;
    }
    tx.commit().await?;
    Ok(due)
}

/// Runs whose retry is due, locked for this transaction (other schedulers skip them).
async fn due_retries(tx: &mut Transaction<'_, Postgres>, limit: i64) -> Result<Vec<Run>, Error> {
    // The status is written out, not bound: the planner needs the literal
    // to use the partial index runs_retry_due (migrations/0001_core.sql).
    Ok(select_runs!(
        "WHERE status = 'retrying' AND next_attempt_at <= now() \
         ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Moves a due retry back to `queued(phase)`.
async fn requeue_retry(
    tx: &mut Transaction<'_, Postgres>,
    run: &Run,
    actor: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE runs SET status = $3, next_attempt_at = NULL, updated_at = now() \
         WHERE id = $1 AND status = $4 AND attempt = $2",
        run.id,
        run.attempt,
        RunStatus::Queued.as_str(),
        RunStatus::Retrying.as_str(),
    )
    .execute(&mut **tx)
    .await?;
    insert_history(
        tx,
        &Transition {
            run_id: run.id,
            actor,
            from: Some(RunStatus::Retrying),
            to: RunStatus::Queued,
            phase: run.phase.as_deref(),
            attempt: Some(run.attempt),
            replay: run.replay,
            error: None,
            detail: None,
        },
    )
    .await
}

/// Runs that have sat `queued` for longer than `stale_secs`: their message may
/// never have reached the broker (a crash or outage right after commit), so
/// the sweeper publishes it again; dedup makes that harmless.
pub async fn stale_queued(pool: &PgPool, stale_secs: f64, limit: i64) -> Result<Vec<Run>, Error> {
    Ok(select_runs!(
        "WHERE status = $3 AND wait_reason IS NULL \
         AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2",
        stale_secs,
        limit,
        RunStatus::Queued.as_str(),
    )
    .fetch_all(pool)
    .await?)
}

/// Marks a stale run as seen now, so the sweeper does not republish it on
/// every tick.
pub async fn touch(pool: &PgPool, run_id: Uuid) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE runs SET updated_at = now() WHERE id = $1 AND status = $2",
        run_id,
        RunStatus::Queued.as_str(),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts a running attempt back to `retrying` at the same attempt, due at
/// `at`, without marking its message processed (a deferral: the attempt did
/// not count), and releases its lease. Nothing changes unless the run is
/// running exactly this step and, given a `lease_token`, still holds it.
pub async fn defer(
    pool: &PgPool,
    env: &Envelope,
    at: DateTime<Utc>,
    reason: &str,
    actor: &str,
    lease_token: Option<Uuid>,
) -> Result<bool, Error> {
    let attempt = i32::try_from(env.attempt).unwrap_or(i32::MAX);
    let replay = i32::try_from(env.replay).unwrap_or(i32::MAX);
    let mut tx = pool.begin().await?;
    let moved = sqlx::query!(
        "UPDATE runs SET status = $5, next_attempt_at = $6, updated_at = now(),
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
         WHERE id = $1 AND phase = $2 AND attempt = $3 AND replay = $4 AND status = $7
           AND ($8::uuid IS NULL OR lease_token = $8)",
        env.run_id,
        env.phase,
        attempt,
        replay,
        RunStatus::Retrying.as_str(),
        at,
        RunStatus::Running.as_str(),
        lease_token,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if moved {
        insert_history(
            &mut tx,
            &Transition {
                run_id: env.run_id,
                actor,
                from: Some(RunStatus::Running),
                to: RunStatus::Retrying,
                phase: Some(&env.phase),
                attempt: Some(attempt),
                replay,
                error: Some(reason),
                detail: Some(serde_json::json!({"deferred": true, "next_attempt_at": at})),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(moved)
}

/// Cancels a run unless it already ended, recording who and why in the
/// audit trail in the same transaction. Only a run of `scope` (a tenant; `None` for
/// every tenant's) is found. Returns the run after the call.
pub async fn cancel(
    pool: &PgPool,
    scope: Option<&str>,
    id: Uuid,
    said: &Said,
) -> Result<Option<(Run, bool)>, Error> {
    let mut tx = pool.begin().await?;
    let run = select_runs!(
        "WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) FOR UPDATE",
        id,
        scope
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(run) = run else {
        return Ok(None);
    };
    if run.is_final() {
        tx.commit().await?;
        return Ok(Some((run, false)));
    }
    sqlx::query!(
        "UPDATE runs SET status = $2, next_attempt_at = NULL, updated_at = now(), \
         finished_at = now(), wait_reason = NULL WHERE id = $1",
        id,
        RunStatus::Cancelled.as_str(),
    )
    .execute(&mut *tx)
    .await?;
    insert_history(
        &mut tx,
        &Transition {
            run_id: id,
            actor: &said.actor,
            from: Some(run.status),
            to: RunStatus::Cancelled,
            phase: run.phase.as_deref(),
            attempt: Some(run.attempt),
            replay: run.replay,
            error: None,
            detail: Some(serde_json::json!({ "reason": said.reason.as_str() })),
        },
    )
    .await?;
    let target = format!("run {id}");
    audit::record(
        &mut *tx,
        &audit::Entry {
            said,
            tenant: Some(&run.tenant),
            action: "cancel",
            target: &target,
            runs: &[id],
            detail: serde_json::json!({ "from": run.status, "phase": run.phase }),
        },
    )
    .await?;
    tx.commit().await?;
    let updated = get(pool, id).await?.unwrap_or(run);
    Ok(Some((updated, true)))
}

/// Counts of runs by status (for metrics).
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query!(
        r#"SELECT status, count(*) AS "count!" FROM runs GROUP BY status ORDER BY status"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// Marks the follow-ups of processed messages as dispatched (every one was
/// confirmed by the broker), so that their duplicates publish nothing again.
pub async fn mark_dispatched(pool: &PgPool, message_ids: &[String]) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE processed_messages SET dispatched = true \
         WHERE message_id = ANY($1) AND NOT dispatched",
        message_ids,
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_columns_are_the_fields_of_run() {
        let now = Utc::now();
        let run = Run {
            id: Uuid::nil(),
            tenant: String::new(),
            thread_id: Uuid::nil(),
            correlation_id: String::new(),
            request_message_id: None,
            reply_to: None,
            request: Value::Null,
            status: RunStatus::Queued,
            phase: None,
            attempt: 1,
            replay: 0,
            next_attempt_at: None,
            result: None,
            error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            priority: 0,
            wait_reason: None,
        };
        let fields: Vec<String> = match serde_json::to_value(&run) {
            Ok(Value::Object(o)) => o.keys().cloned().collect(),
            other => panic!("{other:?}"),
        };
        let mut columns: Vec<String> = RUN_COLUMNS
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        columns.sort();
        let mut fields = fields;
        fields.sort();
        assert_eq!(columns, fields);
    }
}
