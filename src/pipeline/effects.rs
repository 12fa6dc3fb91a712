//! The effect of a phase attempt, as the pipeline decides it: the run's new
//! state, its history row, the attempt row, the report that joins the
//! thread, and the follow-ups it leads to (the next phase message, the dead
//! letter, the reply, the notification), with the copy of them stored in
//! the message's dedup record. The store writes those rows in one
//! transaction ([`crate::store::effects`]) and says whether they were
//! applied, discarded (a cancelled run) or a duplicate; this module turns
//! that into what to publish ([`Committed`]).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::{ErrorClass, PhaseError},
    model::{envelope::Envelope, outbound::Outbound, RunStatus},
    store::{
        self,
        dead_letters::PhaseDeadLetter,
        effects::{AttemptOutcome, EffectRows, NewAttempt, RunChange, Written},
        runs::Processed,
    },
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

/// The facts about an attempt that go into its rows.
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
    /// The token of the lease the attempt started with (see
    /// [`super::lease`]): its effect is discarded if the run no longer holds
    /// it. `None`: written whoever holds the lease (a crash loop's dead
    /// letter).
    pub lease_token: Option<Uuid>,
}

/// What the effect transaction ended with.
#[derive(Debug)]
pub enum Committed {
    /// The effect is committed; publish these.
    Applied(Vec<Outbound>),
    /// The message was processed before; publish its stored follow-ups again.
    Duplicate(Vec<Outbound>),
    /// The attempt lost its lease (it expired and another attempt took the
    /// step): its effect is discarded and nothing is published; the attempt
    /// that holds the lease moves the run on.
    Fenced,
}

/// Commits the effect of a phase attempt together with its dedup record.
///
/// A success or a retry is one statement (one round trip, no explicit
/// transaction): it locks the run, and applies nothing but an empty
/// `discarded` attempt if the run was cancelled meanwhile, or if the attempt
/// lost its lease (fenced: see [`Committed::Fenced`]). A dead letter also
/// reads the phase's earlier failures (its follow-ups name the first) and
/// indexes the dead letter, in one transaction with the same statement.
pub async fn commit_effect(
    pool: &PgPool,
    rec: &AttemptRecord,
    effect: &Effect,
) -> Result<Committed, store::Error> {
    let Effect::DeadLetter { error } = effect else {
        let mut done = commit_effects(pool, &[(rec, effect)]).await;
        return done
            .pop()
            .unwrap_or_else(|| Err(store::Error::internal("the effect gave no answer")));
    };
    let env = &rec.envelope;
    let message_id = env.message_id();
    let entry = PhaseDeadLetter {
        run_id: env.run_id,
        phase: &env.phase,
        message_id: &message_id,
        error_class: error.class.as_str(),
        error: &error.message,
        attempts: db_int(env.attempt),
        replay: db_int(env.replay),
        last_failed_at: rec.started_at,
    };
    let (written, follow_up) =
        store::effects::write_dead_letter(pool, &entry, rec.lease_token, |first_failed_at| {
            let planned = plan_dead_letter(rec, effect, error, first_failed_at);
            (planned.rows, planned.follow_up)
        })
        .await?;
    Ok(committed(written, follow_up))
}

/// Commits the effects of several phase attempts (successes and retries;
/// not dead letters) with as few statements as possible: every statement
/// takes a batch of attempts of distinct runs and messages (group commit,
/// see [`store::effects::write_effects`]). Each attempt ends as
/// [`commit_effect`] would have ended it alone; the results are in the
/// order of `items`. A failing statement commits none of its attempts and
/// fails them and those still waiting for theirs; the attempts of earlier
/// statements stay committed and keep their results.
pub async fn commit_effects(
    pool: &PgPool,
    items: &[(&AttemptRecord, &Effect)],
) -> Vec<Result<Committed, store::Error>> {
    let mut results: Vec<Option<Result<Committed, store::Error>>> =
        (0..items.len()).map(|_| None).collect();
    let (mut positions, mut rows, mut follow_ups) = (Vec::new(), Vec::new(), Vec::new());
    for (k, (rec, effect)) in items.iter().enumerate() {
        match plan(rec, effect) {
            Some(planned) => {
                positions.push(k);
                rows.push(planned.rows);
                follow_ups.push(planned.follow_up);
            }
            None => {
                results[k] = Some(Err(store::Error::internal(
                    "a dead letter cannot be batched",
                )));
            }
        }
    }
    let written = store::effects::write_effects(pool, &rows).await;
    for ((k, written), follow_up) in positions.into_iter().zip(written).zip(follow_ups) {
        results[k] = Some(written.map(|w| committed(w, follow_up)));
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(store::Error::internal("the effect gave no answer"))))
        .collect()
}

/// The follow-ups stored with a processed message, to publish again for a
/// duplicate: empty once they were dispatched (confirmed by the broker);
/// `None` when the message was never processed.
pub async fn processed_follow_up(
    pool: &PgPool,
    message_id: &str,
) -> Result<Option<Vec<Outbound>>, store::Error> {
    Ok(store::runs::processed(pool, message_id)
        .await?
        .map(follow_up_of))
}

/// What the store's answer means for the deliverer: what to publish.
fn committed(written: Written, follow_up: Vec<Outbound>) -> Committed {
    match written {
        Written::Applied => Committed::Applied(follow_up),
        Written::Discarded => Committed::Applied(Vec::new()),
        Written::Fenced => Committed::Fenced,
        Written::Duplicate(stored) => {
            Committed::Duplicate(stored.map(follow_up_of).unwrap_or_default())
        }
    }
}

/// The follow-ups of a dedup record: none once dispatched; else as stored,
/// with each reply's result put back (it is stored once, as the run's
/// result; see [`stored_follow_up`]).
fn follow_up_of(p: Processed) -> Vec<Outbound> {
    if p.dispatched {
        return Vec::new();
    }
    let mut follow_up: Vec<Outbound> = serde_json::from_value(p.follow_up).unwrap_or_default();
    for out in &mut follow_up {
        if let Outbound::Reply { body, .. } = out {
            // Only a reply of an outcome with a result had one (a
            // dead-lettered run's reply has none, even if a replay
            // completed the run later).
            let had_result = body["status"]
                .as_str()
                .and_then(|s| s.parse::<RunStatus>().ok())
                .is_some_and(RunStatus::has_result);
            if had_result && body["result"].is_null() {
                if let (Some(slot), Some(r)) = (body.get_mut("result"), &p.result) {
                    *slot = r.clone();
                }
            }
        }
    }
    follow_up
}

/// An attempt's effect, worked out before it is written: its rows and the
/// follow-ups to publish once they are committed.
struct Planned<'a> {
    rows: EffectRows<'a>,
    follow_up: Vec<Outbound>,
}

/// A count as Postgres stores it (`int4`).
fn db_int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The rows and follow-ups of a success or a retry (`None` for a dead
/// letter, whose follow-ups need the time of the phase's first failure).
fn plan<'a>(rec: &'a AttemptRecord, effect: &'a Effect) -> Option<Planned<'a>> {
    let env = &rec.envelope;
    let run = RunRef::of(rec);
    let mut follow_up = Vec::new();
    let change = match effect {
        Effect::Succeeded { output, next } => match next {
            Next::Phase(p) => {
                follow_up.push(Outbound::Phase {
                    envelope: Envelope::new(run.id, p, 1, 0, run.correlation_id, run.tenant),
                });
                queued(p)
            }
            Next::Finish(status) => {
                push_final(&mut follow_up, &run, *status, Some(output), None);
                RunChange {
                    result_is_output: true,
                    ..at_phase(*status, env)
                }
            }
        },
        Effect::Retry { error, at } => RunChange {
            attempt: db_int(env.attempt).saturating_add(1),
            next_attempt_at: Some(*at),
            error: Some(&error.message),
            detail: Some(json!({ "next_attempt_at": at })),
            ..at_phase(RunStatus::Retrying, env)
        },
        Effect::DeadLetter { .. } => return None,
    };
    Some(planned(rec, effect, change, follow_up))
}

/// The rows and follow-ups of a dead letter whose phase first failed at
/// `first_failed_at` (this failure's time if none did before): the failed
/// message to the dead-letter queue, the reply and the notification.
fn plan_dead_letter<'a>(
    rec: &'a AttemptRecord,
    effect: &'a Effect,
    error: &'a PhaseError,
    first_failed_at: DateTime<Utc>,
) -> Planned<'a> {
    let env = &rec.envelope;
    let mut follow_up = vec![Outbound::DeadLetter {
        envelope: env.clone(),
        error_class: error.class.as_str().to_string(),
        error: error.message.clone(),
        attempts: env.attempt,
        first_failed_at,
        last_failed_at: rec.started_at,
    }];
    push_final(
        &mut follow_up,
        &RunRef::of(rec),
        RunStatus::DeadLettered,
        None,
        Some(&error.message),
    );
    let change = RunChange {
        error: Some(&error.message),
        ..at_phase(RunStatus::DeadLettered, env)
    };
    planned(rec, effect, change, follow_up)
}

/// The rows of an attempt whose run changes by `change` and which leads to
/// `follow_up`: the attempt row, the report of a result, the stored copy.
fn planned<'a>(
    rec: &'a AttemptRecord,
    effect: &'a Effect,
    change: RunChange<'a>,
    follow_up: Vec<Outbound>,
) -> Planned<'a> {
    let output = match effect {
        Effect::Succeeded { output, .. } => Some(output),
        _ => None,
    };
    // A finishing run's report joins its thread.
    let report = match output {
        Some(r) if change.result_is_output && change.status.has_result() => Some(report_text(r)),
        _ => None,
    };
    Planned {
        rows: EffectRows {
            message_id: rec.envelope.message_id(),
            attempt: attempt_row(rec, effect),
            change,
            report,
            follow_up: stored_follow_up(&follow_up),
        },
        follow_up,
    }
}

/// The attempt row of an effect.
fn attempt_row<'a>(rec: &'a AttemptRecord, effect: &'a Effect) -> NewAttempt<'a> {
    let env = &rec.envelope;
    let (outcome, output, error) = match effect {
        Effect::Succeeded { output, .. } => (AttemptOutcome::Succeeded, Some(output), None),
        Effect::Retry { error, .. } | Effect::DeadLetter { error } => (
            if error.class == ErrorClass::Transient {
                AttemptOutcome::FailedTransient
            } else {
                AttemptOutcome::FailedPermanent
            },
            None,
            Some(error),
        ),
    };
    NewAttempt {
        run_id: env.run_id,
        phase: &env.phase,
        attempt: db_int(env.attempt),
        replay: db_int(env.replay),
        outcome,
        input: &rec.input,
        output,
        error_class: error.map(|e| e.class.as_str()),
        error: error.map(|e| e.message.as_str()),
        worker_id: &rec.worker_id,
        started_at: rec.started_at,
        lease_token: rec.lease_token,
    }
}

/// `queued(phase)`, first attempt, first replay generation.
fn queued(phase: &str) -> RunChange<'_> {
    RunChange {
        status: RunStatus::Queued,
        phase,
        attempt: 1,
        replay: 0,
        next_attempt_at: None,
        result_is_output: false,
        error: None,
        detail: None,
    }
}

/// `status` at the message's phase, attempt and replay generation.
fn at_phase(status: RunStatus, env: &Envelope) -> RunChange<'_> {
    RunChange {
        status,
        phase: &env.phase,
        attempt: db_int(env.attempt),
        // A queued run starts its phase's replay generation over.
        replay: if status == RunStatus::Queued {
            0
        } else {
            db_int(env.replay)
        },
        next_attempt_at: None,
        result_is_output: false,
        error: None,
        detail: None,
    }
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

/// The follow-ups as stored with the dedup record: a reply's `result` is
/// left out, because it is the run's `result`, stored once in `runs` and put
/// back by [`processed_follow_up`] (a report is ~14 KB).
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

/// The reply (when the run has a `reply_to`) and the notification of a
/// final outcome.
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
