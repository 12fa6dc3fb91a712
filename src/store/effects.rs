//! The effect transaction of a phase attempt: the attempt's outcome, the
//! run's next state, its history row, the phase output, the report message
//! and the message's dedup record (with the follow-ups it leads to) commit
//! together, or not at all (docs/DESIGN.md invariants 1 and 2).

use super::Error;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::runs::{processed_follow_up, Run, RunStatus, RUN_COLUMNS};
use crate::{
    error::PhaseError,
    model::{envelope::Envelope, outbound::Outbound},
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
    Finish(RunStatus),
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
) -> Result<Committed, Error> {
    let Effect::DeadLetter { error } = effect else {
        let mut done = commit_effects(pool, &[(rec, effect)]).await;
        return done
            .pop()
            .unwrap_or_else(|| Err(Error::internal("the effect statement gave no answer")));
    };
    let env = &rec.envelope;
    let replay = i32::try_from(env.replay).unwrap_or(i32::MAX);
    let mut tx = pool.begin().await?;
    let locked: Option<Run> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE"
    ))
    .bind(env.run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(locked) = locked else {
        return Err(Error::NotFound);
    };
    let mut follow_up = Vec::new();
    if locked.status != RunStatus::Cancelled {
        let first: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(
            "SELECT min(started_at) FROM phase_attempts WHERE run_id = $1 AND phase = $2 \
             AND replay = $3 AND outcome LIKE 'failed%'",
        )
        .bind(env.run_id)
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
            &RunRef::of(rec),
            RunStatus::DeadLettered,
            None,
            Some(&error.message),
        );
    }
    let planned = Planned {
        rec,
        effect,
        update: RunUpdate {
            error: Some(&error.message),
            ..RunUpdate::at_phase(RunStatus::DeadLettered, env)
        },
        follow_up,
    };
    let mut applied = apply_batch(&mut *tx, std::slice::from_ref(&planned)).await?;
    match applied.pop().transpose()? {
        Some(Applied::Duplicate) | None => {
            tx.rollback().await?;
            duplicate(pool, &env.message_id()).await
        }
        Some(Applied::Discarded) => {
            tx.commit().await?;
            Ok(Committed::Applied(Vec::new()))
        }
        Some(Applied::Done) => {
            tx.commit().await?;
            Ok(Committed::Applied(planned.follow_up))
        }
    }
}

/// Commits the effects of several phase attempts (successes and retries;
/// not dead letters) with as few statements as possible: every statement
/// takes a batch of attempts of distinct runs and messages (group commit).
/// Each attempt ends as [`commit_effect`] would have ended it alone; the
/// results are in the order of `items`. A failing statement commits none of
/// its attempts and fails them and those still waiting for theirs; the
/// attempts of earlier statements stay committed and keep their results.
pub async fn commit_effects(
    pool: &PgPool,
    items: &[(&AttemptRecord, &Effect)],
) -> Vec<Result<Committed, Error>> {
    let mut results: Vec<Option<Result<Committed, Error>>> =
        (0..items.len()).map(|_| None).collect();
    let mut planned: Vec<Option<Planned<'_>>> = Vec::with_capacity(items.len());
    for (k, (rec, effect)) in items.iter().enumerate() {
        let p = plan(rec, effect);
        if p.is_none() {
            results[k] = Some(Err(Error::internal("a dead letter cannot be batched")));
        }
        planned.push(p);
    }
    while planned.iter().any(Option::is_some) {
        // One statement per round: at most one attempt per run and message
        // (a second copy of a message waits for the next round, where it is
        // a duplicate).
        // (A message id names its run, so distinct runs mean distinct ids.)
        let pending: Vec<usize> = (0..planned.len())
            .filter(|&k| planned[k].is_some())
            .collect();
        let (positions, later) = super::batch::split_round(pending, |k| {
            planned[k].as_ref().map(|p| p.rec.envelope.run_id)
        });
        let round: Vec<Planned<'_>> = positions
            .iter()
            .filter_map(|&k| planned[k].take())
            .collect();
        let applied = match apply_batch(pool, &round).await {
            Ok(applied) => applied,
            Err(e) => {
                // This round and every later one fail.
                super::batch::fail_rest(&mut results, positions.into_iter().chain(later), e);
                break;
            }
        };
        for ((p, k), a) in round.into_iter().zip(positions).zip(applied) {
            results[k] = Some(match a {
                Ok(Applied::Duplicate) => duplicate(pool, &p.rec.envelope.message_id()).await,
                Ok(Applied::Discarded) => Ok(Committed::Applied(Vec::new())),
                Ok(Applied::Done) => Ok(Committed::Applied(p.follow_up)),
                Err(e) => Err(e),
            });
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::internal(
                    "a batch statement gave no answer for an item",
                ))
            })
        })
        .collect()
}

/// An attempt's effect, worked out before it is written.
struct Planned<'a> {
    rec: &'a AttemptRecord,
    effect: &'a Effect,
    update: RunUpdate<'a>,
    follow_up: Vec<Outbound>,
}

/// The new state of the run and the follow-ups of a success or a retry
/// (`None` for a dead letter, which needs the database to work them out).
fn plan<'a>(rec: &'a AttemptRecord, effect: &'a Effect) -> Option<Planned<'a>> {
    let env = &rec.envelope;
    let run = RunRef::of(rec);
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
                push_final(&mut follow_up, &run, *status, Some(output), None);
                RunUpdate {
                    result: Some(output),
                    ..RunUpdate::at_phase(*status, env)
                }
            }
        },
        Effect::Retry { error, at } => RunUpdate {
            attempt: i32::try_from(env.attempt)
                .unwrap_or(i32::MAX)
                .saturating_add(1),
            next_attempt_at: Some(*at),
            error: Some(&error.message),
            ..RunUpdate::at_phase(RunStatus::Retrying, env)
        },
        Effect::DeadLetter { .. } => return None,
    };
    Some(Planned {
        rec,
        effect,
        update,
        follow_up,
    })
}

/// What the run needs for the follow-ups of its effect.
struct RunRef<'a> {
    id: Uuid,
    replay: u32,
    correlation_id: &'a str,
    tenant: &'a str,
    reply_to: Option<&'a str>,
}

impl<'a> RunRef<'a> {
    fn of(rec: &'a AttemptRecord) -> Self {
        RunRef {
            id: rec.envelope.run_id,
            replay: rec.envelope.replay,
            correlation_id: &rec.envelope.correlation_id,
            tenant: &rec.envelope.tenant,
            reply_to: rec.reply_to.as_deref(),
        }
    }
}

/// The new state of a run after an effect.
struct RunUpdate<'a> {
    status: RunStatus,
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
            status: RunStatus::Queued,
            phase,
            attempt: 1,
            next_attempt_at: None,
            result: None,
            error: None,
        }
    }

    /// `status` at the message's phase and attempt.
    fn at_phase(status: RunStatus, env: &'a Envelope) -> Self {
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

/// The effect statement of a batch (its columns are bound from [`Columns`]).
const APPLY_EFFECTS: &str = include_str!("sql/apply_effects.sql");

/// What the effect statement did with one attempt.
enum Applied {
    /// The message was processed before; nothing changed.
    Duplicate,
    /// The run was cancelled: only the attempt, as `discarded`, and the dedup record.
    Discarded,
    /// The effect is applied.
    Done,
}

/// The stored follow-ups of a duplicate.
async fn duplicate(pool: &PgPool, message_id: &str) -> Result<Committed, Error> {
    let stored = processed_follow_up(pool, message_id)
        .await?
        .unwrap_or_default();
    Ok(Committed::Duplicate(stored))
}

/// The effect statement, for a batch of attempts of distinct runs and
/// messages: it locks their runs (in id order, so concurrent batches cannot
/// deadlock), writes each dedup record and, only where it was new, the
/// attempt; and, unless that run was cancelled, the output, the run's new
/// state, its history row and the report message. One round trip for the
/// whole batch; the results are in the order of `items` (an attempt whose
/// run does not exist gets [`Error::NotFound`], the others are written).
async fn apply_batch<'e, E: sqlx::PgExecutor<'e>>(
    ex: E,
    items: &[Planned<'_>],
) -> Result<Vec<Result<Applied, Error>>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let n = items.len();
    let mut c = Columns::default();
    for p in items {
        c.push(p);
    }
    let rows: Vec<(i64, bool, bool, bool)> = sqlx::query_as(APPLY_EFFECTS)
        .bind(&c.message_id)
        .bind(&c.run_id)
        .bind(&c.phase)
        .bind(&c.follow_up)
        .bind(&c.attempt)
        .bind(&c.replay)
        .bind(&c.outcome)
        .bind(&c.input)
        .bind(&c.output)
        .bind(&c.error_class)
        .bind(&c.error)
        .bind(&c.worker_id)
        .bind(&c.started_at)
        .bind(&c.status)
        .bind(&c.next_phase)
        .bind(&c.next_attempt)
        .bind(&c.next_replay)
        .bind(&c.next_attempt_at)
        .bind(&c.has_result)
        .bind(&c.run_error)
        .bind(&c.final_status)
        .bind(&c.detail)
        .bind(&c.report)
        .fetch_all(ex)
        .await?;
    if rows.len() != n {
        return Err(Error::internal(format!(
            "effect statement answered {} rows for {n} attempts",
            rows.len()
        )));
    }
    Ok(rows
        .into_iter()
        .map(|(_, found, inserted, live)| match (found, inserted, live) {
            (false, _, _) => Err(Error::NotFound),
            (_, false, _) => Ok(Applied::Duplicate),
            (_, _, false) => Ok(Applied::Discarded),
            _ => Ok(Applied::Done),
        })
        .collect())
}

/// The bind arrays of [`apply_batch`], one element per attempt.
#[derive(Default)]
struct Columns<'a> {
    message_id: Vec<String>,
    run_id: Vec<Uuid>,
    phase: Vec<&'a str>,
    follow_up: Vec<Value>,
    attempt: Vec<i32>,
    replay: Vec<i32>,
    outcome: Vec<&'static str>,
    input: Vec<&'a Value>,
    /// Serialized once here; stored as `json` (migration 0007).
    output: Vec<Option<String>>,
    error_class: Vec<Option<&'static str>>,
    error: Vec<Option<&'a str>>,
    worker_id: Vec<&'a str>,
    started_at: Vec<DateTime<Utc>>,
    status: Vec<&'static str>,
    next_phase: Vec<&'a str>,
    next_attempt: Vec<i32>,
    next_replay: Vec<i32>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    has_result: Vec<bool>,
    run_error: Vec<Option<&'a str>>,
    final_status: Vec<bool>,
    detail: Vec<Option<Value>>,
    report: Vec<Option<String>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, p: &'a Planned<'a>) {
        let env = &p.rec.envelope;
        let replay = i32::try_from(env.replay).unwrap_or(i32::MAX);
        let (outcome, output, error_class, error) = match p.effect {
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
        let u = &p.update;
        self.message_id.push(env.message_id());
        self.run_id.push(env.run_id);
        self.phase.push(&env.phase);
        self.follow_up.push(stored_follow_up(&p.follow_up));
        self.attempt
            .push(i32::try_from(env.attempt).unwrap_or(i32::MAX));
        self.replay.push(replay);
        self.outcome.push(outcome);
        self.input.push(&p.rec.input);
        self.output.push(output.map(Value::to_string));
        self.error_class.push(error_class);
        self.error.push(error);
        self.worker_id.push(&p.rec.worker_id);
        self.started_at.push(p.rec.started_at);
        self.status.push(u.status.as_str());
        self.next_phase.push(u.phase);
        self.next_attempt.push(u.attempt);
        self.next_replay.push(if u.status == RunStatus::Queued {
            0
        } else {
            replay
        });
        self.next_attempt_at.push(u.next_attempt_at);
        // A finishing run's result is the output of its last phase: bound
        // once, as the output.
        self.has_result.push(u.result.is_some());
        self.run_error.push(u.error);
        self.final_status.push(u.status.is_final());
        self.detail
            .push(u.next_attempt_at.map(|t| json!({ "next_attempt_at": t })));
        self.report.push(match u.result {
            Some(r) if u.status.has_result() => Some(report_text(r)),
            _ => None,
        });
    }
}

/// The follow-ups as stored with the dedup record: a reply's `result` is
/// left out, because it is the run's `result`, stored once in `runs` and put
/// back by [`super::runs::processed_follow_up`] (a report is ~14 KB).
fn stored_follow_up(follow_up: &[Outbound]) -> Value {
    let stored = follow_up.iter().map(|out| match out {
        // Copied without the result, which is not serialized at all.
        Outbound::Reply {
            to,
            correlation_id,
            body,
        } => {
            let body: serde_json::Map<String, Value> = body
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| match k.as_str() {
                    "result" => (k.clone(), Value::Null),
                    _ => (k.clone(), v.clone()),
                })
                .collect();
            serde_json::to_value(Outbound::Reply {
                to: to.clone(),
                correlation_id: correlation_id.clone(),
                body: Value::Object(body),
            })
        }
        other => serde_json::to_value(other),
    });
    Value::Array(stored.filter_map(Result::ok).collect())
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
    replay: u32,
    status: &str,
    result: Option<&Value>,
    error: Option<&str>,
) -> Value {
    json!({ "run_id": run_id, "replay": replay, "status": status, "result": result, "error": error })
}

fn push_final(
    follow_up: &mut Vec<Outbound>,
    run: &RunRef<'_>,
    status: RunStatus,
    result: Option<&Value>,
    error: Option<&str>,
) {
    if let Some(to) = run.reply_to {
        follow_up.push(Outbound::Reply {
            to: to.to_string(),
            correlation_id: run.correlation_id.to_string(),
            body: outcome_body(run.id, run.replay, status.as_str(), result, error),
        });
    }
    follow_up.push(Outbound::Notify { run_id: run.id });
}
