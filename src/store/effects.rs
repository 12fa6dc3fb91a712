//! The effect transaction of a phase attempt: the attempt's outcome, the
//! run's next state, its history row, the phase output, the report message
//! and the message's dedup record (with the follow-ups it leads to) commit
//! together, or not at all (DESIGN.md invariants 1 and 2).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::runs::{processed_follow_up, Run, FINAL_STATUSES, RUN_COLUMNS};
use crate::{
    error::PhaseError,
    pipeline::{envelope::Envelope, outbound::Outbound},
};

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
    /// The run's `reply_to`, for the reply of a final outcome.
    pub reply_to: Option<String>,
}

/// What the effect transaction ended with.
#[derive(Debug)]
pub enum Committed {
    /// The effect is committed; publish these.
    Applied(Vec<Outbound>),
    /// The message was processed before; publish its stored follow-ups again.
    Duplicate(Vec<Outbound>),
}

/// Commits the effect of a phase attempt together with its dedup record.
///
/// A success or a retry is one statement (one round trip, no explicit
/// transaction): it locks the run, and applies nothing but an empty
/// `discarded` attempt if the run was cancelled meanwhile. A dead letter also
/// reads the phase's earlier failures and indexes the dead letter, in one
/// transaction with the same statement.
pub async fn commit_effect(
    pool: &PgPool,
    rec: &AttemptRecord,
    effect: &Effect,
) -> Result<Committed, sqlx::Error> {
    let env = &rec.envelope;
    let replay = i32::try_from(env.replay).unwrap_or(i32::MAX);
    let run = RunRef {
        id: env.run_id,
        correlation_id: &env.correlation_id,
        tenant: &env.tenant,
        reply_to: rec.reply_to.as_deref(),
    };
    let mut follow_up = Vec::new();
    let update = match effect {
        Effect::Succeeded { output, next } => match next {
            Next::Phase(p) => {
                follow_up.push(Outbound::Phase {
                    envelope: Envelope::new(run.id, p, 1, 0, run.correlation_id, run.tenant),
                });
                RunUpdate::queued(p)
            }
            Next::Finish(status) => {
                push_final(&mut follow_up, &run, status, Some(output), None);
                RunUpdate {
                    result: Some(output),
                    ..RunUpdate::at_phase(status, env)
                }
            }
        },
        Effect::Retry { error, at } => RunUpdate {
            attempt: i32::try_from(env.attempt)
                .unwrap_or(i32::MAX)
                .saturating_add(1),
            next_attempt_at: Some(*at),
            error: Some(&error.message),
            ..RunUpdate::at_phase("retrying", env)
        },
        Effect::DeadLetter { error } => {
            let mut tx = pool.begin().await?;
            let locked: Option<Run> = sqlx::query_as(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE"
            ))
            .bind(env.run_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(locked) = locked else {
                return Err(sqlx::Error::RowNotFound);
            };
            if locked.status != "cancelled" {
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
                    &locked,
                    env,
                    error,
                    first_failed_at,
                    rec.started_at,
                )
                .await?;
                push_final(
                    &mut follow_up,
                    &run,
                    "dead_lettered",
                    None,
                    Some(&error.message),
                );
            }
            let update = RunUpdate {
                error: Some(&error.message),
                ..RunUpdate::at_phase("dead_lettered", env)
            };
            let applied = apply(&mut *tx, rec, effect, &update, &follow_up).await?;
            return match applied {
                Applied::Duplicate => {
                    tx.rollback().await?;
                    duplicate(pool, &env.message_id()).await
                }
                Applied::Discarded => {
                    tx.commit().await?;
                    Ok(Committed::Applied(Vec::new()))
                }
                Applied::Done => {
                    tx.commit().await?;
                    Ok(Committed::Applied(follow_up))
                }
            };
        }
    };
    match apply(pool, rec, effect, &update, &follow_up).await? {
        Applied::Duplicate => duplicate(pool, &env.message_id()).await,
        Applied::Discarded => Ok(Committed::Applied(Vec::new())),
        Applied::Done => Ok(Committed::Applied(follow_up)),
    }
}

/// What the run needs for the follow-ups of its effect.
struct RunRef<'a> {
    id: Uuid,
    correlation_id: &'a str,
    tenant: &'a str,
    reply_to: Option<&'a str>,
}

/// The new state of a run after an effect.
struct RunUpdate<'a> {
    status: &'static str,
    phase: &'a str,
    attempt: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    result: Option<&'a Value>,
    error: Option<&'a str>,
}

impl<'a> RunUpdate<'a> {
    /// `queued(phase)`, first attempt.
    fn queued(phase: &'a str) -> Self {
        RunUpdate {
            status: "queued",
            phase,
            attempt: 1,
            next_attempt_at: None,
            result: None,
            error: None,
        }
    }

    /// `status` at the message's phase and attempt.
    fn at_phase(status: &'static str, env: &'a Envelope) -> Self {
        RunUpdate {
            status,
            phase: &env.phase,
            attempt: i32::try_from(env.attempt).unwrap_or(i32::MAX),
            next_attempt_at: None,
            result: None,
            error: None,
        }
    }
}

/// What the effect statement did.
enum Applied {
    /// The message was processed before; nothing changed.
    Duplicate,
    /// The run was cancelled: only the attempt, as `discarded`, and the dedup record.
    Discarded,
    /// The effect is applied.
    Done,
}

/// The stored follow-ups of a duplicate.
async fn duplicate(pool: &PgPool, message_id: &str) -> Result<Committed, sqlx::Error> {
    let stored = processed_follow_up(pool, message_id)
        .await?
        .unwrap_or_default();
    Ok(Committed::Duplicate(stored))
}

/// The effect statement: it locks the run, writes the dedup record and, only
/// if it was new, the attempt; and, unless the run was cancelled, the output,
/// the run's new state, its history row and the report message. One round
/// trip instead of six.
async fn apply<'e, E: sqlx::PgExecutor<'e>>(
    ex: E,
    rec: &AttemptRecord,
    effect: &Effect,
    update: &RunUpdate<'_>,
    follow_up: &[Outbound],
) -> Result<Applied, sqlx::Error> {
    let env = &rec.envelope;
    let attempt = i32::try_from(env.attempt).unwrap_or(i32::MAX);
    let replay = i32::try_from(env.replay).unwrap_or(i32::MAX);
    let (outcome, output, err_class, err_msg) = match effect {
        Effect::Succeeded { output, .. } => ("succeeded", Some(output), None, None),
        Effect::Retry { error, .. } | Effect::DeadLetter { error } => (
            if error.class == crate::error::ErrorClass::Transient {
                "failed_transient"
            } else {
                "failed_permanent"
            },
            None,
            Some(error.class.as_str()),
            Some(error.message.as_str()),
        ),
    };
    let status = update.status;
    let next_replay = if status == "queued" { 0 } else { replay };
    let report = match (update.result, status) {
        (Some(r), "completed" | "needs_input") => Some(report_text(r)),
        _ => None,
    };
    let (found, inserted, live): (i64, i64, i64) = sqlx::query_as(
        "WITH run AS (SELECT id, status, thread_id FROM runs WHERE id = $2 FOR UPDATE), \
         live AS (SELECT status, thread_id FROM run WHERE status <> 'cancelled'), \
         p AS ( \
           INSERT INTO processed_messages (message_id, run_id, phase, follow_up) \
           SELECT $1, $2, $3, CASE WHEN EXISTS (SELECT 1 FROM live) THEN $4 ELSE '[]'::jsonb END FROM run \
           ON CONFLICT (message_id) DO NOTHING RETURNING 1 AS ok), \
         a AS ( \
           INSERT INTO phase_attempts (run_id, phase, attempt, replay, message_id, outcome, input, \
             error_class, error, worker_id, started_at, finished_at) \
           SELECT $2, $3, $5, $6, $1, \
             CASE WHEN EXISTS (SELECT 1 FROM live) THEN $7 ELSE 'discarded' END, $8, \
             CASE WHEN EXISTS (SELECT 1 FROM live) THEN $10 END, \
             CASE WHEN EXISTS (SELECT 1 FROM live) THEN $11 END, $12, $13, now() FROM p), \
         o AS ( \
           INSERT INTO phase_outputs (run_id, phase, replay, output) \
           SELECT $2, $3, $6, $9 FROM p, live WHERE $9::jsonb IS NOT NULL \
           ON CONFLICT (run_id, phase) DO UPDATE SET replay = EXCLUDED.replay, output = EXCLUDED.output, \
             created_at = now()), \
         r AS ( \
           UPDATE runs SET status = $14, phase = $15, attempt = $16, replay = $17, next_attempt_at = $18, \
             result = COALESCE($19, result), error = $20, updated_at = now(), \
             finished_at = CASE WHEN $21 THEN now() ELSE NULL END \
           WHERE id = $2 AND EXISTS (SELECT 1 FROM p) AND EXISTS (SELECT 1 FROM live)), \
         h AS ( \
           INSERT INTO run_history (run_id, actor, from_status, to_status, phase, attempt, replay, error, detail) \
           SELECT $2, $12, live.status, $14, $15, $16, $17, $11, $22 FROM p, live), \
         m AS ( \
           INSERT INTO messages (thread_id, run_id, role, content) \
           SELECT live.thread_id, $2, 'agent', $23 FROM p, live WHERE $23::text IS NOT NULL) \
         SELECT (SELECT count(*) FROM run), (SELECT count(*) FROM p), (SELECT count(*) FROM live)",
    )
    .bind(env.message_id())
    .bind(env.run_id)
    .bind(&env.phase)
    .bind(stored_follow_up(follow_up))
    .bind(attempt)
    .bind(replay)
    .bind(outcome)
    .bind(&rec.input)
    .bind(output)
    .bind(err_class)
    .bind(err_msg)
    .bind(&rec.worker_id)
    .bind(rec.started_at)
    .bind(status)
    .bind(update.phase)
    .bind(update.attempt)
    .bind(next_replay)
    .bind(update.next_attempt_at)
    .bind(update.result)
    .bind(update.error)
    .bind(FINAL_STATUSES.contains(&status))
    .bind(update.next_attempt_at.map(|t| json!({ "next_attempt_at": t })))
    .bind(&report)
    .fetch_one(ex)
    .await?;
    Ok(match (found, inserted, live) {
        (0, _, _) => return Err(sqlx::Error::RowNotFound),
        (_, 0, _) => Applied::Duplicate,
        (_, _, 0) => Applied::Discarded,
        _ => Applied::Done,
    })
}

/// The follow-ups as stored with the dedup record: a reply's `result` is
/// left out, because it is the run's `result`, stored once in `runs` and put
/// back by [`super::runs::processed_follow_up`] (a report is ~14 KB).
fn stored_follow_up(follow_up: &[Outbound]) -> Value {
    let mut v = serde_json::to_value(follow_up).unwrap_or(Value::Array(vec![]));
    for out in v.as_array_mut().into_iter().flatten() {
        if out["kind"] == "reply" {
            if let Some(result) = out.pointer_mut("/body/result") {
                *result = Value::Null;
            }
        }
    }
    v
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
    run: &RunRef<'_>,
    status: &str,
    result: Option<&Value>,
    error: Option<&str>,
) {
    if let Some(to) = run.reply_to {
        follow_up.push(Outbound::Reply {
            to: to.to_string(),
            correlation_id: run.correlation_id.to_string(),
            body: outcome_body(run.id, status, result, error),
        });
    }
    follow_up.push(Outbound::Notify { run_id: run.id });
}
