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
    effect: &Effect,
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
    let (outcome, output, err_class, err_msg) = match (effect, cancelled) {
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
        match effect {
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
           SELECT $2, $3, $5, $6, $1, $7, $8, NULL, $10, $11, $12, $13, $14 FROM p), \
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
    .bind(stored_follow_up(&follow_up))
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
