//! The effect statement of phase attempts: for each attempt, its row, the
//! run's new state with its history row, the phase output, the report
//! message and the message's dedup record (with the follow-ups it leads to,
//! as stored JSON) commit together, or not at all (docs/DESIGN.md
//! invariants 1 and 2).
//!
//! What those rows say (the next state, the report, the follow-ups) is the
//! pipeline's decision (`src/pipeline/effects.rs`); this module writes them
//! and says what became of each: [`Written`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    batch::{fail_rest, split_round},
    dead_letters::{self, PhaseDeadLetter},
    runs::{processed, select_runs, Processed, RunStatus},
    Error,
};

/// How an attempt ended, as its row records it (a cancelled run's attempt
/// is written `discarded` instead, by the statement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The phase produced its output.
    Succeeded,
    /// A failure worth retrying.
    FailedTransient,
    /// A failure that happens on every attempt.
    FailedPermanent,
}

impl AttemptOutcome {
    /// The stored name (`phase_attempts.outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::FailedTransient => "failed_transient",
            AttemptOutcome::FailedPermanent => "failed_permanent",
        }
    }
}

/// The row of one phase attempt (`phase_attempts`), and the phase output.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    /// The run.
    pub run_id: Uuid,
    /// The phase.
    pub phase: &'a str,
    /// Attempt number of the phase.
    pub attempt: i32,
    /// Replay generation of the phase.
    pub replay: i32,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The input, as a reference to the persisted state.
    pub input: &'a Value,
    /// The phase output (`phase_outputs`), for a success; serialized once
    /// here and stored as `json` (migration 0007).
    pub output: Option<&'a Value>,
    /// `transient` or `permanent`, for a failure.
    pub error_class: Option<&'a str>,
    /// The failure, for a failure.
    pub error: Option<&'a str>,
    /// The worker that ran it (also the actor of the history row).
    pub worker_id: &'a str,
    /// Start of the handler.
    pub started_at: DateTime<Utc>,
    /// The lease token the attempt started with: its effect is fenced
    /// (discarded) unless the run still holds it. `None` writes the effect
    /// whoever holds the lease (a crash loop's dead letter, tests).
    pub lease_token: Option<Uuid>,
}

/// The run's new state after an attempt. Its history row is this change:
/// by the attempt's worker, from the status the run had when the statement
/// locked it (the start mark may have been lost), to `status` at `phase`,
/// `attempt` and `replay`, with `error` and `detail`.
#[derive(Debug, Clone)]
pub struct RunChange<'a> {
    /// The new status (`finished_at` is set when it is final).
    pub status: RunStatus,
    /// The phase the run is at (queued for, or last ran).
    pub phase: &'a str,
    /// Its attempt.
    pub attempt: i32,
    /// Its replay generation.
    pub replay: i32,
    /// When the next attempt is due, for a retry.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The run's result is the attempt's output (bound once, as the output).
    pub result_is_output: bool,
    /// The run's error (and the history row's).
    pub error: Option<&'a str>,
    /// Extra detail of the history row (the next attempt time of a retry).
    pub detail: Option<Value>,
}

/// Everything one attempt's effect writes.
#[derive(Debug, Clone)]
pub struct EffectRows<'a> {
    /// The dedup record's key: the message's deterministic id. A second
    /// effect with the same key writes nothing ([`Written::Duplicate`]).
    pub message_id: String,
    /// The attempt row (and output).
    pub attempt: NewAttempt<'a>,
    /// The run's new state and history row (not written if the run was
    /// cancelled meanwhile).
    pub change: RunChange<'a>,
    /// The agent message that joins the run's thread, if any.
    pub report: Option<String>,
    /// The follow-ups as stored with the dedup record, for duplicates to
    /// publish again (`[]` is stored instead if the run was cancelled).
    pub follow_up: Value,
}

/// What became of one attempt's effect.
#[derive(Debug)]
pub enum Written {
    /// Everything is committed.
    Applied,
    /// The message was processed before; nothing changed. Its dedup record
    /// as stored (`None` if it vanished meanwhile).
    Duplicate(Option<Processed>),
    /// The run was cancelled: only the attempt (as `discarded`) and an empty
    /// dedup record are committed.
    Discarded,
    /// The attempt lost its lease (it expired and the step went to another
    /// attempt): only the attempt, as `discarded`, is committed; no dedup
    /// record, so the attempt holding the lease commits the step.
    Fenced,
}

/// Writes the effects of several attempts with as few statements as
/// possible: each statement takes a round of attempts of distinct runs
/// (group commit; a second copy of a message waits for the next round,
/// where it is a duplicate). Each ends as it would have ended alone; the
/// results are in the order of `items`. A failing statement commits none of
/// its round and fails it and the later rounds; earlier rounds stay
/// committed and keep their results.
pub async fn write_effects(pool: &PgPool, items: &[EffectRows<'_>]) -> Vec<Result<Written, Error>> {
    let mut results: Vec<Option<Result<Written, Error>>> = (0..items.len()).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        // (A message id names its run, so distinct runs mean distinct ids.)
        let (round, later) = split_round(pending, |k| Some(items[k].attempt.run_id));
        let batch: Vec<&EffectRows<'_>> = round.iter().map(|&k| &items[k]).collect();
        let applied = match apply_batch(pool, &batch).await {
            Ok(applied) => applied,
            Err(e) => {
                // This round and every later one fail.
                fail_rest(&mut results, round.into_iter().chain(later), e);
                break;
            }
        };
        pending = later;
        for (k, a) in round.into_iter().zip(applied) {
            results[k] = Some(match a {
                Ok(Applied::Duplicate) => processed(pool, &items[k].message_id)
                    .await
                    .map(Written::Duplicate),
                Ok(Applied::Discarded) => Ok(Written::Discarded),
                Ok(Applied::Fenced) => Ok(Written::Fenced),
                Ok(Applied::Done) => Ok(Written::Applied),
                Err(e) => Err(e),
            });
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::internal("the effect statement gave no answer"))))
        .collect()
}

/// Writes the effect of an attempt that dead-letters its run, in one
/// transaction: it locks the run, reads when the phase first failed in this
/// replay generation (this failure's time if none did before), indexes the
/// dead letter (unless the run was cancelled), and runs the effect
/// statement with the rows `plan` builds from that first failure time
/// (their stored follow-ups name it). `plan`'s other result comes back
/// with what was written. A duplicate rolls everything back.
///
/// With a `lease_token`, an attempt that lost its lease indexes nothing
/// and writes only its `discarded` attempt ([`Written::Fenced`]).
pub async fn write_dead_letter<'a, T>(
    pool: &PgPool,
    entry: &PhaseDeadLetter<'_>,
    lease_token: Option<Uuid>,
    plan: impl FnOnce(DateTime<Utc>) -> (EffectRows<'a>, T),
) -> Result<(Written, T), Error> {
    let mut tx = pool.begin().await?;
    let locked = select_runs!("WHERE id = $1 FOR UPDATE", entry.run_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(locked) = locked else {
        return Err(Error::NotFound);
    };
    let fenced = match lease_token {
        Some(token) => {
            let held =
                sqlx::query_scalar!("SELECT lease_token FROM runs WHERE id = $1", entry.run_id)
                    .fetch_one(&mut *tx)
                    .await?;
            held != Some(token)
        }
        None => false,
    };
    let live = locked.status != RunStatus::Cancelled && !fenced;
    let first_failed_at = if live {
        let first = sqlx::query_scalar!(
            "SELECT min(started_at) FROM phase_attempts WHERE run_id = $1 AND phase = $2 \
             AND replay = $3 AND outcome LIKE 'failed%'",
            entry.run_id,
            entry.phase,
            entry.replay,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let first_failed_at = first.flatten().unwrap_or(entry.last_failed_at);
        dead_letters::insert_for_run(&mut tx, &locked.tenant, entry, first_failed_at).await?;
        first_failed_at
    } else {
        entry.last_failed_at
    };
    let (rows, planned) = plan(first_failed_at);
    let mut applied = apply_batch(&mut *tx, &[&rows]).await?;
    let written = match applied.pop().transpose()? {
        Some(Applied::Duplicate) | None => {
            tx.rollback().await?;
            Written::Duplicate(processed(pool, &rows.message_id).await?)
        }
        Some(Applied::Discarded) => {
            tx.commit().await?;
            Written::Discarded
        }
        Some(Applied::Fenced) => {
            tx.commit().await?;
            Written::Fenced
        }
        Some(Applied::Done) => {
            tx.commit().await?;
            Written::Applied
        }
    };
    Ok((written, planned))
}

/// The effect statement of a batch (its columns are bound from [`Columns`]).
/// It stays a runtime query: it binds one array per column (`UNNEST`).
const APPLY_EFFECTS: &str = include_str!("sql/apply_effects.sql");

/// What the effect statement did with one attempt.
enum Applied {
    /// The message was processed before; nothing changed.
    Duplicate,
    /// The run was cancelled: only the attempt, as `discarded`, and the dedup record.
    Discarded,
    /// The attempt lost its lease: only the attempt, as `discarded`.
    Fenced,
    /// The effect is applied.
    Done,
}

/// The effect statement, for a batch of attempts of distinct runs and
/// messages: it locks their runs (in id order, so concurrent batches cannot
/// deadlock), writes each dedup record and, only where it was new, the
/// attempt; and, unless that run was cancelled, the output, the run's new
/// state, its history row and the report message; and, for an attempt that
/// lost its lease, only its `discarded` attempt. One round trip for the
/// whole batch; the results are in the order of `items` (an attempt whose
/// run does not exist gets [`Error::NotFound`], the others are written).
async fn apply_batch<'e, E: sqlx::PgExecutor<'e>>(
    ex: E,
    items: &[&EffectRows<'_>],
) -> Result<Vec<Result<Applied, Error>>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let n = items.len();
    let mut c = Columns::default();
    for rows in items {
        c.push(rows);
    }
    let rows: Vec<(i64, bool, bool, bool, bool, bool)> = sqlx::query_as(APPLY_EFFECTS)
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
        .bind(&c.lease_token)
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
        .map(|(_, found, inserted, live, fenced, processed_before)| {
            match (found, fenced, processed_before, inserted, live) {
                (false, ..) => Err(Error::NotFound),
                (_, true, true, _, _) => Ok(Applied::Duplicate),
                (_, true, false, _, _) => Ok(Applied::Fenced),
                (_, _, _, false, _) => Ok(Applied::Duplicate),
                (_, _, _, _, false) => Ok(Applied::Discarded),
                _ => Ok(Applied::Done),
            }
        })
        .collect())
}

/// The bind arrays of [`apply_batch`], one element per attempt.
#[derive(Default)]
struct Columns<'a> {
    message_id: Vec<&'a str>,
    run_id: Vec<Uuid>,
    phase: Vec<&'a str>,
    follow_up: Vec<&'a Value>,
    attempt: Vec<i32>,
    replay: Vec<i32>,
    outcome: Vec<&'static str>,
    input: Vec<&'a Value>,
    /// Serialized once here; stored as `json` (migration 0007).
    output: Vec<Option<String>>,
    error_class: Vec<Option<&'a str>>,
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
    detail: Vec<Option<&'a Value>>,
    report: Vec<Option<&'a str>>,
    lease_token: Vec<Option<Uuid>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, rows: &'a EffectRows<'a>) {
        let a = &rows.attempt;
        let u = &rows.change;
        self.message_id.push(&rows.message_id);
        self.run_id.push(a.run_id);
        self.phase.push(a.phase);
        self.follow_up.push(&rows.follow_up);
        self.attempt.push(a.attempt);
        self.replay.push(a.replay);
        self.outcome.push(a.outcome.as_str());
        self.input.push(a.input);
        self.output.push(a.output.map(Value::to_string));
        self.error_class.push(a.error_class);
        self.error.push(a.error);
        self.worker_id.push(a.worker_id);
        self.started_at.push(a.started_at);
        self.status.push(u.status.as_str());
        self.next_phase.push(u.phase);
        self.next_attempt.push(u.attempt);
        self.next_replay.push(u.replay);
        self.next_attempt_at.push(u.next_attempt_at);
        self.has_result.push(u.result_is_output);
        self.run_error.push(u.error);
        self.final_status.push(u.status.is_final());
        self.detail.push(u.detail.as_ref());
        self.report.push(rows.report.as_deref());
        self.lease_token.push(a.lease_token);
    }
}
