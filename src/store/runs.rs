//! Runs, their transition history, phase attempts, phase outputs and the
//! message dedup records.
//!
//! The pipeline's effects are written here as single transactions: the
//! effect of a message, its dedup record and the follow-ups it leads to
//! commit together (DESIGN.md invariants 1 and 2).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{
    error::PhaseError,
    pipeline::{agent::ThreadMessage, envelope::Envelope, outbound::Outbound},
};

/// Run statuses (DESIGN.md "Run states").
pub const FINAL_STATUSES: [&str; 4] = ["completed", "needs_input", "dead_lettered", "cancelled"];

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
    pub status: String,
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
}

impl Run {
    /// True once the run can change no more (short of a replay).
    pub fn is_final(&self) -> bool {
        FINAL_STATUSES.contains(&self.status.as_str())
    }

    /// The envelope of the run's current step.
    pub fn envelope(&self) -> Option<Envelope> {
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

const RUN_COLUMNS: &str = "id, tenant, thread_id, correlation_id, request_message_id, reply_to, \
     request, status, phase, attempt, replay, next_attempt_at, result, error, created_at, \
     updated_at, finished_at";

/// A request accepted for processing.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Owning tenant.
    pub tenant: String,
    /// Continue this thread, or start a new one.
    pub thread_id: Option<Uuid>,
    /// Correlation id (generated upstream of here when absent).
    pub correlation_id: String,
    /// Idempotency key.
    pub request_message_id: Option<String>,
    /// Reply queue.
    pub reply_to: Option<String>,
    /// The user's message.
    pub message: String,
    /// Optional workload id.
    pub workload_id: Option<String>,
    /// Optional free-form context.
    pub context: Value,
}

/// Why a request cannot become a run.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The thread does not exist for this tenant.
    #[error("unknown thread {0}")]
    UnknownThread(Uuid),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Result of accepting a request.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The run.
    pub run: Run,
    /// False when the idempotency key matched an existing run.
    pub created: bool,
}

/// Creates the run (and thread) of a request, or finds the run an earlier
/// copy of the same request created. The thread, the run, the user's message
/// and the first history row are written by one statement in one transaction.
pub async fn create_run(
    pool: &PgPool,
    new: &NewRun,
    first_phase: &str,
    actor: &str,
) -> Result<Accepted, IntakeError> {
    let new_thread = new.thread_id.is_none();
    let thread_id = new.thread_id.unwrap_or_else(Uuid::new_v4);
    let request = json!({
        "message": new.message,
        "workload_id": new.workload_id,
        "context": new.context,
    });
    let mut tx = pool.begin().await?;
    let created: Option<Run> = sqlx::query_as(&format!(
        "WITH t AS (INSERT INTO threads (id, tenant) SELECT $3, $2 WHERE $9 RETURNING id), \
         ok AS (SELECT 1 AS ok WHERE $9 OR EXISTS (SELECT 1 FROM threads WHERE id = $3 AND tenant = $2)), \
         r AS (INSERT INTO runs (id, tenant, thread_id, correlation_id, request_message_id, reply_to, \
                 request, status, phase, attempt, replay) \
               SELECT $1, $2, $3, $4, $5, $6, $7, 'queued', $8, 1, 0 FROM ok \
               ON CONFLICT (tenant, request_message_id) WHERE request_message_id IS NOT NULL DO NOTHING \
               RETURNING {RUN_COLUMNS}), \
         m AS (INSERT INTO messages (thread_id, run_id, role, content) SELECT thread_id, id, 'user', $10 FROM r), \
         h AS (INSERT INTO run_history (run_id, actor, to_status, phase, attempt, replay) \
               SELECT id, $11, 'queued', $8, 1, 0 FROM r) \
         SELECT {RUN_COLUMNS} FROM r"
    ))
    .bind(Uuid::new_v4())
    .bind(&new.tenant)
    .bind(thread_id)
    .bind(&new.correlation_id)
    .bind(&new.request_message_id)
    .bind(&new.reply_to)
    .bind(&request)
    .bind(first_phase)
    .bind(new_thread)
    .bind(&new.message)
    .bind(actor)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(run) = created {
        tx.commit().await?;
        return Ok(Accepted { run, created: true });
    }
    // Nothing was inserted: an earlier copy of the request made the run, or
    // the thread is not this tenant's.
    tx.rollback().await?;
    if let Some(key) = &new.request_message_id {
        if let Some(run) = find_by_request_id(pool, &new.tenant, key).await? {
            return Ok(Accepted {
                run,
                created: false,
            });
        }
    }
    Err(IntakeError::UnknownThread(thread_id))
}

async fn find_by_request_id(
    pool: &PgPool,
    tenant: &str,
    key: &str,
) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 AND request_message_id = $2"
    ))
    .bind(tenant)
    .bind(key)
    .fetch_optional(pool)
    .await
}

/// Appends one transition to a run's history.
#[allow(clippy::too_many_arguments)]
pub async fn insert_history(
    tx: &mut Transaction<'_, Postgres>,
    run_id: Uuid,
    actor: &str,
    from: Option<&str>,
    to: &str,
    phase: Option<&str>,
    attempt: Option<i32>,
    replay: i32,
    error: Option<&str>,
    detail: Option<Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO run_history (run_id, actor, from_status, to_status, phase, attempt, replay, error, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(run_id)
    .bind(actor)
    .bind(from)
    .bind(to)
    .bind(phase)
    .bind(attempt)
    .bind(replay)
    .bind(error)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A run by id, any tenant (for the engine).
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A run by id, only if it belongs to `tenant`.
pub async fn get_for_tenant(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND tenant = $2"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await
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
pub async fn list(pool: &PgPool, tenant: &str, f: &RunFilter) -> Result<Vec<Run>, sqlx::Error> {
    let (after_ts, after_id) = match f.after {
        Some((ts, id)) => (Some(ts), Some(id)),
        None => (None, None),
    };
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 \
         AND ($2::text IS NULL OR correlation_id = $2) \
         AND ($3::text IS NULL OR status = $3) \
         AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5)) \
         ORDER BY created_at, id LIMIT $6"
    ))
    .bind(tenant)
    .bind(&f.correlation_id)
    .bind(&f.status)
    .bind(after_ts)
    .bind(after_id)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

/// One row of a run's transition history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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
pub async fn history(pool: &PgPool, run_id: Uuid) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, from_status, to_status, phase, attempt, replay, error, detail \
         FROM run_history WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// One attempt of one phase.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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
pub async fn attempts(pool: &PgPool, run_id: Uuid) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT phase, attempt, replay, outcome, error_class, error, worker_id, started_at, finished_at \
         FROM phase_attempts WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// The stored follow-ups of an already processed message, if it was.
pub async fn processed_follow_up(
    pool: &PgPool,
    message_id: &str,
) -> Result<Option<Vec<Outbound>>, sqlx::Error> {
    let row: Option<(Value,)> =
        sqlx::query_as("SELECT follow_up FROM processed_messages WHERE message_id = $1")
            .bind(message_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(v,)| serde_json::from_value(v).unwrap_or_default()))
}

/// What a phase reads: upstream outputs, the thread so far, and the
/// operator's patch when this is a patched replay.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Outputs of the phases that ran, by phase.
    pub outputs: BTreeMap<String, Value>,
    /// Earlier messages of the thread (up to 20, oldest first).
    pub thread: Vec<ThreadMessage>,
    /// JSON merge patch recorded with the replay, if any.
    pub patch: Option<Value>,
}

/// Outcome of trying to start a phase.
#[derive(Debug)]
pub enum Start {
    /// The run is now `running(phase)`; here are its inputs.
    Started(Box<Run>, Inputs),
    /// The run is not waiting for this step (final, cancelled, or moved on).
    NotRunnable(Box<Run>),
    /// No such run.
    Missing,
}

#[derive(sqlx::FromRow)]
struct StartedRow {
    #[sqlx(flatten)]
    run: Run,
    outputs: sqlx::types::Json<BTreeMap<String, Value>>,
    thread: sqlx::types::Json<Vec<ThreadMessage>>,
    patch: Option<Value>,
}

/// Marks a run `running(phase)` if it is waiting for exactly this step, and
/// reads the phase's inputs in the same statement (one round trip).
pub async fn start_phase(pool: &PgPool, env: &Envelope, actor: &str) -> Result<Start, sqlx::Error> {
    let started: Option<StartedRow> = sqlx::query_as(&format!(
        "WITH prev AS (SELECT status FROM runs WHERE id = $1), \
         u AS (UPDATE runs SET status = 'running', updated_at = now() \
               WHERE id = $1 AND phase = $2 AND attempt = $3 AND replay = $4 \
               AND status IN ('queued', 'running', 'retrying') RETURNING {RUN_COLUMNS}), \
         h AS (INSERT INTO run_history (run_id, actor, from_status, to_status, phase, attempt, replay) \
               SELECT u.id, $5, prev.status, 'running', $2, $3, $4 FROM u, prev) \
         SELECT u.*, \
           (SELECT coalesce(jsonb_object_agg(o.phase, o.output), '{{}}'::jsonb) \
              FROM phase_outputs o WHERE o.run_id = $1 AND o.phase <> $2) AS outputs, \
           (SELECT coalesce(jsonb_agg(jsonb_build_object('role', m.role, 'content', m.content) ORDER BY m.id), '[]'::jsonb) \
              FROM (SELECT id, role, content FROM messages WHERE thread_id = u.thread_id \
                    AND (run_id IS NULL OR run_id <> $1) ORDER BY id DESC LIMIT 20) m) AS thread, \
           (SELECT h.detail->'patch' FROM run_history h WHERE $4 > 0 AND h.run_id = $1 AND h.phase = $2 \
              AND h.replay = $4 AND h.to_status = 'queued' AND h.detail ? 'patch' ORDER BY h.id DESC LIMIT 1) AS patch \
         FROM u"
    ))
    .bind(env.run_id)
    .bind(&env.phase)
    .bind(i32::try_from(env.attempt).unwrap_or(i32::MAX))
    .bind(i32::try_from(env.replay).unwrap_or(i32::MAX))
    .bind(actor)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = started {
        let inputs = Inputs {
            outputs: row.outputs.0,
            thread: row.thread.0,
            patch: row.patch.filter(|p| !p.is_null()),
        };
        return Ok(Start::Started(Box::new(row.run), inputs));
    }
    Ok(match get(pool, env.run_id).await? {
        Some(run) => Start::NotRunnable(Box::new(run)),
        None => Start::Missing,
    })
}

/// The persisted inputs of a phase: upstream outputs and the thread so far.
pub async fn load_inputs(
    pool: &PgPool,
    run: &Run,
) -> Result<(BTreeMap<String, Value>, Vec<ThreadMessage>), sqlx::Error> {
    let rows = sqlx::query("SELECT phase, output FROM phase_outputs WHERE run_id = $1")
        .bind(run.id)
        .fetch_all(pool)
        .await?;
    let mut outputs = BTreeMap::new();
    for row in rows {
        outputs.insert(
            row.try_get::<String, _>("phase")?,
            row.try_get::<Value, _>("output")?,
        );
    }
    let msgs = sqlx::query(
        "SELECT role, content FROM (SELECT id, role, content FROM messages \
         WHERE thread_id = $1 AND (run_id IS NULL OR run_id <> $2) ORDER BY id DESC LIMIT 20) m \
         ORDER BY id",
    )
    .bind(run.thread_id)
    .bind(run.id)
    .fetch_all(pool)
    .await?;
    let thread = msgs
        .into_iter()
        .map(|r| {
            Ok(ThreadMessage {
                role: r.try_get("role")?,
                content: r.try_get("content")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((outputs, thread))
}

/// What one phase attempt did.
#[derive(Debug, Clone)]
pub enum Effect {
    /// The phase produced `output`; the run goes on to `next`.
    Succeeded {
        /// The phase output.
        output: Value,
        /// What the supervisor chose.
        next: Next,
    },
    /// A transient failure with attempts left: retry at `at`.
    Retry {
        /// The failure.
        error: PhaseError,
        /// When the next attempt is due.
        at: DateTime<Utc>,
    },
    /// Permanent, or attempts spent: dead-letter.
    DeadLetter {
        /// The failure.
        error: PhaseError,
    },
}

/// The step after a successful phase.
#[derive(Debug, Clone)]
pub enum Next {
    /// Queue this phase.
    Phase(String),
    /// Finish with this status; the output is the run's result.
    Finish(&'static str),
}

/// The facts about an attempt that go into its history row.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The message being processed.
    pub envelope: Envelope,
    /// The input, as a reference to the persisted state.
    pub input: Value,
    /// Start of the handler.
    pub started_at: DateTime<Utc>,
    /// Worker id.
    pub worker_id: String,
}

/// What the effect transaction ended with.
#[derive(Debug)]
pub enum Committed {
    /// The effect is committed; publish these.
    Applied(Vec<Outbound>),
    /// The message was processed before; publish its stored follow-ups again.
    Duplicate(Vec<Outbound>),
}

/// The new state of a run after an effect: status, phase, attempt, next
/// attempt time, result, error.
type RunUpdate = (
    &'static str,
    Option<String>,
    i32,
    Option<DateTime<Utc>>,
    Option<Value>,
    Option<String>,
);

/// Commits the effect of a phase attempt together with its dedup record.
pub async fn commit_effect(
    pool: &PgPool,
    rec: &AttemptRecord,
    effect: Effect,
) -> Result<Committed, sqlx::Error> {
    let env = &rec.envelope;
    let message_id = env.message_id();
    let attempt = i32::try_from(env.attempt).unwrap_or(i32::MAX);
    let replay = i32::try_from(env.replay).unwrap_or(i32::MAX);
    let mut tx = pool.begin().await?;
    let run: Option<Run> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE"
    ))
    .bind(env.run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(run) = run else {
        return Err(sqlx::Error::RowNotFound);
    };
    let now = Utc::now();
    let cancelled = run.status == "cancelled";
    let (outcome, output, err_class, err_msg) = match (&effect, cancelled) {
        (_, true) => ("discarded", None, None, None),
        (Effect::Succeeded { output, .. }, _) => ("succeeded", Some(output.clone()), None, None),
        (Effect::Retry { error, .. }, _) | (Effect::DeadLetter { error }, _) => (
            if error.class == crate::error::ErrorClass::Transient {
                "failed_transient"
            } else {
                "failed_permanent"
            },
            None,
            Some(error.class.as_str()),
            Some(error.message.clone()),
        ),
    };

    let mut follow_up = Vec::new();
    let mut run_update: Option<RunUpdate> = None;
    if !cancelled {
        match &effect {
            Effect::Succeeded { output, next } => match next {
                Next::Phase(p) => {
                    follow_up.push(Outbound::Phase {
                        envelope: Envelope::new(run.id, p, 1, 0, &run.correlation_id, &run.tenant),
                    });
                    run_update = Some(("queued", Some(p.clone()), 1, None, None, None));
                }
                Next::Finish(status) => {
                    run_update = Some((
                        status,
                        Some(env.phase.clone()),
                        attempt,
                        None,
                        Some(output.clone()),
                        None,
                    ));
                    push_final(&mut follow_up, &run, status, Some(output), None);
                }
            },
            Effect::Retry { error, at } => {
                run_update = Some((
                    "retrying",
                    Some(env.phase.clone()),
                    attempt + 1,
                    Some(*at),
                    None,
                    Some(error.message.clone()),
                ));
            }
            Effect::DeadLetter { error } => {
                let first: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(
                    "SELECT min(started_at) FROM phase_attempts WHERE run_id = $1 AND phase = $2 \
                     AND replay = $3 AND outcome LIKE 'failed%'",
                )
                .bind(run.id)
                .bind(&env.phase)
                .bind(replay)
                .fetch_optional(&mut *tx)
                .await?;
                let first_failed_at = first.and_then(|(t,)| t).unwrap_or(rec.started_at);
                follow_up.push(Outbound::DeadLetter {
                    envelope: env.clone(),
                    error_class: error.class.as_str().to_string(),
                    error: error.message.clone(),
                    attempts: env.attempt,
                    first_failed_at,
                    last_failed_at: rec.started_at,
                });
                super::dead_letters::insert_for_run(
                    &mut tx,
                    &run,
                    env,
                    error,
                    first_failed_at,
                    rec.started_at,
                )
                .await?;
                run_update = Some((
                    "dead_lettered",
                    Some(env.phase.clone()),
                    attempt,
                    None,
                    None,
                    Some(error.message.clone()),
                ));
                push_final(
                    &mut follow_up,
                    &run,
                    "dead_lettered",
                    None,
                    Some(&error.message),
                );
            }
        }
    }

    // One statement writes the dedup record and, only if it was new, the
    // attempt, the output, the run's new state, its history row and the
    // report message: one round trip instead of six.
    let (has_update, status, next_phase, next_attempt, at, result, error) = match &run_update {
        Some((status, phase, next_attempt, at, result, error)) => (
            true,
            *status,
            phase.clone(),
            *next_attempt,
            *at,
            result.clone(),
            error.clone(),
        ),
        None => (false, "", None, attempt, None, None, None),
    };
    let next_replay = if status == "queued" { 0 } else { replay };
    let history_attempt = if status == "queued" { 1 } else { next_attempt };
    let report = match (&result, status) {
        (Some(r), "completed" | "needs_input") => Some(report_text(r)),
        _ => None,
    };
    let (inserted,): (i64,) = sqlx::query_as(
        "WITH p AS ( \
           INSERT INTO processed_messages (message_id, run_id, phase, follow_up) VALUES ($1, $2, $3, $4) \
           ON CONFLICT (message_id) DO NOTHING RETURNING 1 AS ok), \
         a AS ( \
           INSERT INTO phase_attempts (run_id, phase, attempt, replay, message_id, outcome, input, output, \
             error_class, error, worker_id, started_at, finished_at) \
           SELECT $2, $3, $5, $6, $1, $7, $8, $9, $10, $11, $12, $13, $14 FROM p), \
         o AS ( \
           INSERT INTO phase_outputs (run_id, phase, replay, output) \
           SELECT $2, $3, $6, $9 FROM p WHERE $9::jsonb IS NOT NULL \
           ON CONFLICT (run_id, phase) DO UPDATE SET replay = EXCLUDED.replay, output = EXCLUDED.output, \
             created_at = now()), \
         r AS ( \
           UPDATE runs SET status = $16, phase = $17, attempt = $18, replay = $19, next_attempt_at = $20, \
             result = COALESCE($21, result), error = $22, updated_at = now(), \
             finished_at = CASE WHEN $23 THEN now() ELSE NULL END \
           WHERE id = $2 AND $15 AND EXISTS (SELECT 1 FROM p)), \
         h AS ( \
           INSERT INTO run_history (run_id, actor, from_status, to_status, phase, attempt, replay, error, detail) \
           SELECT $2, $12, $24, $16, $17, $25, $19, $11, $26 FROM p WHERE $15), \
         m AS ( \
           INSERT INTO messages (thread_id, run_id, role, content) \
           SELECT $27, $2, 'agent', $28 FROM p WHERE $28::text IS NOT NULL) \
         SELECT count(*) FROM p",
    )
    .bind(&message_id)
    .bind(run.id)
    .bind(&env.phase)
    .bind(serde_json::to_value(&follow_up).unwrap_or(Value::Array(vec![])))
    .bind(attempt)
    .bind(replay)
    .bind(outcome)
    .bind(&rec.input)
    .bind(&output)
    .bind(err_class)
    .bind(&err_msg)
    .bind(&rec.worker_id)
    .bind(rec.started_at)
    .bind(now)
    .bind(has_update)
    .bind(status)
    .bind(&next_phase)
    .bind(next_attempt)
    .bind(next_replay)
    .bind(at)
    .bind(&result)
    .bind(&error)
    .bind(FINAL_STATUSES.contains(&status))
    .bind(&run.status)
    .bind(history_attempt)
    .bind(at.map(|t| json!({ "next_attempt_at": t })))
    .bind(run.thread_id)
    .bind(&report)
    .fetch_one(&mut *tx)
    .await?;
    if inserted == 0 {
        tx.rollback().await?;
        let stored = processed_follow_up(pool, &message_id)
            .await?
            .unwrap_or_default();
        return Ok(Committed::Duplicate(stored));
    }
    tx.commit().await?;
    Ok(Committed::Applied(follow_up))
}

/// The text of a result that goes into the thread: its `markdown` field, or
/// the JSON itself.
pub fn report_text(result: &Value) -> String {
    result
        .get("markdown")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| result.to_string())
}

/// The reply body of a final outcome.
pub fn outcome_body(
    run_id: Uuid,
    status: &str,
    result: Option<&Value>,
    error: Option<&str>,
) -> Value {
    json!({ "run_id": run_id, "status": status, "result": result, "error": error })
}

fn push_final(
    follow_up: &mut Vec<Outbound>,
    run: &Run,
    status: &str,
    result: Option<&Value>,
    error: Option<&str>,
) {
    if let Some(to) = &run.reply_to {
        follow_up.push(Outbound::Reply {
            to: to.clone(),
            correlation_id: run.correlation_id.clone(),
            body: outcome_body(run.id, status, result, error),
        });
    }
    follow_up.push(Outbound::Notify { run_id: run.id });
}

/// Runs whose retry is due, locked for this transaction (other schedulers skip them).
pub async fn due_retries(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<Run>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'retrying' AND next_attempt_at <= now() \
         ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Moves a due retry back to `queued(phase)`.
pub async fn requeue_retry(
    tx: &mut Transaction<'_, Postgres>,
    run: &Run,
    actor: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET status = 'queued', next_attempt_at = NULL, updated_at = now() \
         WHERE id = $1 AND status = 'retrying' AND attempt = $2",
    )
    .bind(run.id)
    .bind(run.attempt)
    .execute(&mut **tx)
    .await?;
    insert_history(
        tx,
        run.id,
        actor,
        Some("retrying"),
        "queued",
        run.phase.as_deref(),
        Some(run.attempt),
        run.replay,
        None,
        None,
    )
    .await
}

/// Runs that have sat `queued` for longer than `stale_secs`: their message may
/// never have reached the broker (a crash or outage right after commit), so
/// the sweeper publishes it again; dedup makes that harmless.
pub async fn stale_queued(
    pool: &PgPool,
    stale_secs: f64,
    limit: i64,
) -> Result<Vec<Run>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'queued' \
         AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2"
    ))
    .bind(stale_secs)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks a stale run as seen now, so the sweeper does not republish it on
/// every tick.
pub async fn touch(pool: &PgPool, run_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE runs SET updated_at = now() WHERE id = $1 AND status = 'queued'")
        .bind(run_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Cancels a run unless it already ended. Returns the run after the call.
pub async fn cancel(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
    actor: &str,
) -> Result<Option<(Run, bool)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let run: Option<Run> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND tenant = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(run) = run else {
        return Ok(None);
    };
    if run.is_final() {
        tx.commit().await?;
        return Ok(Some((run, false)));
    }
    sqlx::query(
        "UPDATE runs SET status = 'cancelled', next_attempt_at = NULL, updated_at = now(), finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    insert_history(
        &mut tx,
        id,
        actor,
        Some(&run.status),
        "cancelled",
        run.phase.as_deref(),
        Some(run.attempt),
        run.replay,
        None,
        None,
    )
    .await?;
    tx.commit().await?;
    let updated = get(pool, id).await?.unwrap_or(run);
    Ok(Some((updated, true)))
}

/// Counts of runs by status (for metrics).
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
}
