//! Processes one phase message: dedup, start, run the agent under a timeout
//! with panics caught, commit the effect with its dedup record, publish the
//! follow-ups with confirms, and only then ack (docs/DESIGN.md invariants 1-4, 9).
//! A started attempt holds its run's lease while it runs and commits (see
//! [`super::lease`]).

use std::{collections::BTreeMap, time::Instant};

use chrono::Utc;
use lapin::message::Delivery;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{
    agent::{AgentContext, PhaseInput, Target},
    committer, dispatch, effects,
    envelope::{Envelope, Poison},
    retry,
    settle::{dead_letter_poison, settle},
    Engine,
};
use crate::{
    broker::publisher::Publisher,
    error::{ErrorClass, InfraError, PhaseError},
    metrics::{AgentCall, Outcome},
    store::{self, runs},
    telemetry::spans,
};

/// Handles a delivery from `<ns>.phase.<phase>` and acks or hands it back.
pub async fn handle(engine: Engine, publisher: Publisher, phase: &'static str, delivery: Delivery) {
    let span = spans::delivery(phase);
    let result = process(&engine, &publisher, phase, &delivery)
        .instrument(span.clone())
        .await;
    settle(&engine, &delivery, result).instrument(span).await;
}

/// A started attempt: its record, the agent's input, the data version its
/// tools read at, and the token of its lease.
struct Prepared {
    record: effects::AttemptRecord,
    input: PhaseInput,
    data_version: i64,
    lease_token: uuid::Uuid,
}

/// One phase message: decode, start, run, decide, commit, publish.
async fn process(
    engine: &Engine,
    publisher: &Publisher,
    phase: &'static str,
    delivery: &Delivery,
) -> Result<(), InfraError> {
    let t0 = Instant::now();
    let env = match decode(engine, phase, delivery) {
        Ok(env) => env,
        Err(p) => return dead_letter_poison(engine, publisher, phase, delivery, &p).await,
    };
    spans::record_envelope(&tracing::Span::current(), &env);
    let attempt = spans::phase_attempt(&env);
    let result = run_envelope(engine, publisher, phase, delivery, &env, t0)
        .instrument(attempt.clone())
        .await;
    if result.is_err() {
        attempt.in_scope(|| spans::outcome("handed_back"));
    }
    result
}

/// Starts and runs the attempt of a decoded envelope (in its phase span).
async fn run_envelope(
    engine: &Engine,
    publisher: &Publisher,
    phase: &'static str,
    delivery: &Delivery,
    env: &Envelope,
    t0: Instant,
) -> Result<(), InfraError> {
    let Some(prepared) = start(engine, publisher, phase, delivery, env, t0).await? else {
        return Ok(());
    };
    let token = prepared.lease_token;
    let heartbeat = super::lease::Heartbeat::start(engine, env.run_id, token);
    let result = run_started(engine, publisher, phase, delivery, env, prepared, t0).await;
    heartbeat.stop();
    if let Err(e) = &result {
        // The delivery goes back: its redelivery must not find this
        // attempt's lease live (a committed effect released it already).
        // During an outage the release waits for the database, as the
        // hand-back does anyway.
        if e.is_database_outage() {
            super::settle::wait_for_database(engine).await;
        }
        super::lease::release(engine, env.run_id, token).await;
    }
    result
}

/// Runs a started attempt, decides and commits its effect, and publishes
/// what it leads to.
async fn run_started(
    engine: &Engine,
    publisher: &Publisher,
    phase: &'static str,
    delivery: &Delivery,
    env: &Envelope,
    prepared: Prepared,
    t0: Instant,
) -> Result<(), InfraError> {
    let Prepared {
        record,
        input,
        data_version,
        lease_token,
    } = prepared;
    // Only a redelivered message can find its output in the agent output
    // cache: an output is cached when its effect failed to commit, and the
    // delivery is then handed back (or lost with the worker) and redelivered.
    let lookup = match agent_cache(engine) {
        Some(cache) if delivery.redelivered => Some((cache, cache_key(phase, &input))),
        _ => None,
    };
    let (result, input) = run_agent(engine, phase, input, lookup, data_version).await;
    // A transient failure during a database outage is the outage's fault
    // (the agents' tools read Postgres): hand the delivery back without
    // spending an attempt.
    if matches!(&result, Err(e) if e.class == ErrorClass::Transient)
        && !store::ping(&engine.pool).await
    {
        return Err(InfraError::Database(store::Error::from(
            sqlx::Error::PoolTimedOut,
        )));
    }
    if let Err(PhaseError {
        defer: Some(after),
        message,
        ..
    }) = &result
    {
        return defer(engine, env, *after, message, lease_token, t0).await;
    }
    let (effect, outcome) = decide(engine, phase, env, result, input.as_ref());
    let (committed, outcome) =
        commit(engine, phase, record, effect, outcome, input.as_ref()).await?;
    match committed {
        effects::Committed::Applied(follow_up) => {
            spans::outcome(spans::outcome_name(outcome));
            engine.metrics.record(phase, outcome, t0.elapsed());
            let published = publish_and_mark(engine, publisher, env, &follow_up).await;
            if published.is_err() && !publisher.is_connected() {
                publish_later(engine, env, follow_up);
            }
            published
        }
        effects::Committed::Duplicate(follow_up) => {
            spans::outcome("duplicate");
            engine
                .metrics
                .record(phase, Outcome::Duplicate, t0.elapsed());
            republish_for_duplicate(engine, publisher, delivery, env, &follow_up).await
        }
        effects::Committed::Fenced => {
            tracing::info!("the attempt lost its lease to another; its effect is discarded");
            spans::outcome("fenced");
            engine
                .metrics
                .record(phase, Outcome::Duplicate, t0.elapsed());
            Ok(())
        }
    }
}

/// How long the follow-ups of a committed effect whose connection was lost
/// wait for the next connection.
const PUBLISH_LATER_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// Publishes a committed effect's follow-ups on the process's next broker
/// connection, once there is one (within [`PUBLISH_LATER_WITHIN`]). For an
/// attempt whose connection was lost while its phase ran: its redelivery
/// found the lease live and was acked without running, so no copy of the
/// message is left to publish them (a phase message would still be
/// published again by the stale-run sweep; a reply would not).
fn publish_later(
    engine: &Engine,
    env: &Envelope,
    follow_up: Vec<crate::pipeline::outbound::Outbound>,
) {
    if follow_up.is_empty() {
        return;
    }
    let (engine, env) = (engine.clone(), env.clone());
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + PUBLISH_LATER_WITHIN;
        loop {
            if let Some(p) = engine.link.publisher() {
                match publish_and_mark(&engine, &p, &env, &follow_up).await {
                    Ok(()) => {
                        tracing::info!(run_id = %env.run_id, "published the follow-ups on the new connection");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "publishing the follow-ups failed; will try again")
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(run_id = %env.run_id, "no broker connection to publish the follow-ups on; the stale-run sweep publishes a phase message again");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
}

/// An attempt that could not run yet (a rate limit): the run goes back to
/// `retrying` at the same attempt, due after `after`, and the delivery is
/// acked. Nothing is marked processed, so the retry scheduler's copy of the
/// same step runs as if it were the first; the attempt is not spent.
async fn defer(
    engine: &Engine,
    env: &Envelope,
    after: std::time::Duration,
    message: &str,
    lease_token: uuid::Uuid,
    t0: Instant,
) -> Result<(), InfraError> {
    let at = Utc::now()
        + chrono::Duration::from_std(after).unwrap_or_else(|_| chrono::Duration::seconds(60));
    tracing::info!(%message, ?after, "attempt deferred; the phase runs again later");
    spans::outcome("deferred");
    runs::defer(
        &engine.pool,
        env,
        at,
        message,
        &engine.config.worker_id,
        Some(lease_token),
    )
    .await?;
    engine
        .metrics
        .record(&env.phase, Outcome::Retried, t0.elapsed());
    Ok(())
}

/// The envelope of a delivery, if netra sealed it and it is for this queue.
fn decode(engine: &Engine, phase: &str, delivery: &Delivery) -> Result<Envelope, Poison> {
    if !sealed_by_netra(engine, delivery) {
        return Err(Poison::new(
            "forged",
            "the envelope's authentication tag is missing or wrong: it was not published by netra",
        ));
    }
    let env = Envelope::decode(&delivery.data, engine.config.max_message_bytes, |p| {
        engine.knows_phase(p)
    })?;
    if env.phase != phase {
        return Err(Poison::new(
            "wrong_queue",
            format!(
                "message for phase `{}` arrived on the `{phase}` queue",
                env.phase
            ),
        ));
    }
    Ok(env)
}

/// Starts the attempt, or handles a message that cannot start (`None`): a
/// duplicate, a step another attempt holds the live lease of, a run not
/// waiting for this step, a run that does not exist.
///
/// A run is started only when it waits for exactly this step, and a step
/// is marked processed in the same transaction that moves the run past it,
/// so only a message that does not start can be a duplicate.
async fn start(
    engine: &Engine,
    publisher: &Publisher,
    phase: &'static str,
    delivery: &Delivery,
    env: &Envelope,
    t0: Instant,
) -> Result<Option<Prepared>, InfraError> {
    let start = engine.starter.start_phase(env).await?;
    match start {
        runs::Start::Started(run, inputs) => Ok(Some(prepare(engine, env, *run, inputs))),
        runs::Start::NotRunnable(run) => {
            match effects::processed_follow_up(&engine.hot, &env.message_id()).await? {
                Some(follow_up) => {
                    spans::outcome("duplicate");
                    republish_for_duplicate(engine, publisher, delivery, env, &follow_up).await?;
                    engine
                        .metrics
                        .record(phase, Outcome::Duplicate, t0.elapsed());
                }
                None => {
                    spans::outcome("not_waiting");
                    tracing::info!(status = %run.status, current_phase = ?run.phase, "run is not waiting for this step; message dropped");
                }
            }
            Ok(None)
        }
        runs::Start::Held { owner } => {
            // Another attempt is running this step (say, on a worker that
            // lost its broker connection but not its phase): it commits
            // the step; this copy holds no delivery while it works.
            tracing::info!(
                ?owner,
                "the step's lease is held by a live attempt; acked without running"
            );
            spans::outcome("held");
            engine
                .metrics
                .record(phase, Outcome::Duplicate, t0.elapsed());
            Ok(None)
        }
        runs::Start::Missing => {
            spans::outcome("unknown_run");
            let p = Poison::new("unknown_run", format!("run {} does not exist", env.run_id));
            dead_letter_poison(engine, publisher, phase, delivery, &p).await?;
            Ok(None)
        }
    }
}

/// The attempt record and the agent's input of a started attempt (upstream
/// outputs with the replay's patch applied).
fn prepare(engine: &Engine, env: &Envelope, run: runs::Run, inputs: runs::Inputs) -> Prepared {
    let runs::Inputs {
        mut outputs,
        thread,
        patch,
        data_version,
        lease_token,
    } = inputs;
    if let Some(p) = &patch {
        merge_patch_outputs(&mut outputs, p);
    }
    let record = effects::AttemptRecord {
        envelope: env.clone(),
        input: json!({
            "upstream": outputs.keys().collect::<Vec<_>>(),
            "patch": patch,
        }),
        started_at: Utc::now(),
        worker_id: engine.config.worker_id.clone(),
        reply_to: run.reply_to.clone(),
        lease_token: Some(lease_token),
    };
    let input = PhaseInput {
        run_id: run.id,
        tenant: run.tenant,
        thread_id: run.thread_id,
        request: run.request,
        thread,
        outputs,
        attempt: env.attempt,
        replay: env.replay,
    };
    Prepared {
        record,
        input,
        data_version,
        lease_token,
    }
}

/// The agent output cache, when it is on.
fn agent_cache(engine: &Engine) -> Option<&crate::cache::Cache> {
    engine
        .cache
        .as_ref()
        .filter(|_| engine.config.agent_cache_ttl_secs > 0)
}

/// What the attempt's outcome means for the run: the next phase or the end
/// (the supervisor's routing), a retry while attempts are left, or a dead
/// letter.
fn decide(
    engine: &Engine,
    phase: &str,
    env: &Envelope,
    result: Result<Value, PhaseError>,
    input: Option<&PhaseInput>,
) -> (effects::Effect, Outcome) {
    match result {
        Ok(output) => {
            let no_upstream = BTreeMap::new();
            let upstream = input.map_or(&no_upstream, |i| &i.outputs);
            let next = match engine.agents.router().next(phase, &output, upstream) {
                Ok(Target::Phase(p)) => effects::Next::Phase(p.to_string()),
                Ok(Target::Finish(f)) => effects::Next::Finish(f.status()),
                Err(e) => {
                    let error = PhaseError::permanent(e.to_string());
                    return (effects::Effect::DeadLetter { error }, Outcome::DeadLettered);
                }
            };
            (
                effects::Effect::Succeeded { output, next },
                Outcome::Processed,
            )
        }
        Err(error)
            if error.class == ErrorClass::Transient && env.attempt < engine.config.max_attempts =>
        {
            let delay = retry::delay_after(&engine.config, env.attempt);
            let at = Utc::now()
                + chrono::Duration::from_std(delay)
                    .unwrap_or_else(|_| chrono::Duration::seconds(60));
            tracing::info!(error = %error.message, ?delay, "transient failure; retry scheduled");
            (effects::Effect::Retry { error, at }, Outcome::Retried)
        }
        Err(mut error) => {
            if error.class == ErrorClass::Transient {
                error.message = format!(
                    "{} (attempts spent: {}/{})",
                    error.message, env.attempt, engine.config.max_attempts
                );
            }
            tracing::warn!(error = %error.message, class = %error.class, "phase failed; dead-lettering");
            (effects::Effect::DeadLetter { error }, Outcome::DeadLettered)
        }
    }
}

/// Commits the effect (successes and retries group-committed with other
/// deliveries'), and says how the attempt ended: a dead letter if the
/// database refused the output. If the commit fails, the agent's output is
/// cached for the redelivery.
async fn commit(
    engine: &Engine,
    phase: &str,
    record: effects::AttemptRecord,
    effect: effects::Effect,
    outcome: Outcome,
    input: Option<&PhaseInput>,
) -> Result<(effects::Committed, Outcome), InfraError> {
    let (committed, effect) = match effect {
        // A dead letter also indexes itself: it is written alone.
        effects::Effect::DeadLetter { .. } => {
            committer::commit_alone(&engine.hot, &record, effect).await
        }
        _ => engine.committer.commit(record, effect).await,
    };
    let outcome = match &effect {
        Some(effects::Effect::DeadLetter { .. }) => Outcome::DeadLettered,
        _ => outcome,
    };
    match committed {
        Ok(c) => Ok((c, outcome)),
        Err(e) => {
            // The agent's work is not lost with the commit: the redelivered
            // message finds it in the agent output cache.
            if let (Some(effects::Effect::Succeeded { output, .. }), Some(cache), Some(input)) =
                (&effect, agent_cache(engine), input)
            {
                cache
                    .put_agent_output(
                        &cache_key(phase, input),
                        &output.to_string(),
                        engine.config.agent_cache_ttl_secs,
                    )
                    .await;
            }
            Err(e.into())
        }
    }
}

/// True when the delivery carries the seal of its body (see [`super::seal`]).
pub(crate) fn sealed_by_netra(engine: &Engine, delivery: &Delivery) -> bool {
    let tag = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(super::seal::HEADER))
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
            lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        });
    tag.is_some_and(|t| engine.seal.verify(&delivery.data, &t))
}

/// Publishes a committed effect's follow-ups, then marks them dispatched.
pub(crate) async fn publish_and_mark(
    engine: &Engine,
    publisher: &Publisher,
    env: &Envelope,
    follow_up: &[crate::pipeline::outbound::Outbound],
) -> Result<(), InfraError> {
    dispatch::publish_all(engine, publisher, follow_up).await?;
    engine.dispatched.mark(env.message_id());
    Ok(())
}

/// A message that was processed before publishes its stored follow-ups
/// again only when they may be missing: they were never marked dispatched
/// (`follow_up` is then non-empty) and this is a redelivery, i.e. possibly
/// the very delivery whose worker died or failed between commit and
/// confirm. A first delivery of a second copy publishes nothing: the
/// delivery that committed publishes them, or comes back redelivered if it
/// cannot. So one duplicate no longer cascades through every later phase.
async fn republish_for_duplicate(
    engine: &Engine,
    publisher: &Publisher,
    delivery: &Delivery,
    env: &Envelope,
    follow_up: &[crate::pipeline::outbound::Outbound],
) -> Result<(), InfraError> {
    if follow_up.is_empty() || !delivery.redelivered {
        tracing::debug!(
            "duplicate delivery; its follow-ups are dispatched or still being published"
        );
        return Ok(());
    }
    tracing::debug!("redelivered duplicate; publishing its follow-ups again");
    publish_and_mark(engine, publisher, env, follow_up).await
}

/// The agent output cache key: a hash of everything the agent reads from the
/// message side (run, request, upstream outputs, thread). The run id is part
/// of it because agents also read telemetry, which may change between runs.
pub fn cache_key(phase: &str, input: &PhaseInput) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(phase.as_bytes());
    h.update(input.run_id.as_bytes());
    h.update(input.request.to_string().as_bytes());
    h.update(serde_json::to_vec(&input.outputs).unwrap_or_default());
    h.update(serde_json::to_vec(&input.thread).unwrap_or_default());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the agent, or reuses its cached output for unchanged inputs (the
/// redelivery of a phase whose earlier attempt computed but did not commit;
/// `lookup` is the cache and the key of the inputs). Hands the input back
/// unless the agent panicked or timed out.
async fn run_agent(
    engine: &Engine,
    phase: &str,
    input: PhaseInput,
    lookup: Option<(&crate::cache::Cache, String)>,
    data_version: i64,
) -> (Result<Value, PhaseError>, Option<PhaseInput>) {
    let t0 = Instant::now();
    if let Some((cache, key)) = lookup {
        if let Some(hit) = cache
            .get_agent_output(&key)
            .await
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        {
            engine
                .metrics
                .record_agent(phase, AgentCall::Cached, t0.elapsed());
            return (Ok(hit), Some(input));
        }
    }
    let (result, input) = run_agent_guarded(engine, phase, input, data_version).await;
    engine.metrics.record_agent(
        phase,
        if result.is_ok() {
            AgentCall::Ok
        } else {
            AgentCall::Error
        },
        t0.elapsed(),
    );
    (result, input)
}

/// Runs the agent in its own task: a panic becomes a permanent failure and a
/// hung agent a transient timeout; neither takes the consumer down.
async fn run_agent_guarded(
    engine: &Engine,
    phase: &str,
    input: PhaseInput,
    data_version: i64,
) -> (Result<Value, PhaseError>, Option<PhaseInput>) {
    let Some(agent) = engine.agents.get(phase) else {
        let e = PhaseError::permanent(format!("no agent serves phase `{phase}`"));
        return (Err(e), Some(input));
    };
    let ctx = AgentContext {
        pool: engine.pool.clone(),
        data_version: Some(data_version),
        memo: engine.memo.clone(),
        model: engine.model.clone(),
    };
    let task = tokio::spawn(
        async move {
            let result = agent.run(&ctx, &input).await;
            (result, input)
        }
        .instrument(tracing::Span::current()),
    );
    let abort = task.abort_handle();
    let failed = |e| (Err(e), None);
    let timeout = engine.config.timeout_for(phase);
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok((result, input))) => (result, Some(input)),
        Ok(Err(join)) if join.is_panic() => {
            let payload = join.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            failed(PhaseError::permanent(format!("agent panicked: {msg}")))
        }
        Ok(Err(_)) => failed(PhaseError::transient("agent task was cancelled")),
        Err(_) => {
            abort.abort();
            failed(PhaseError::transient(format!(
                "phase timed out after {} ms",
                timeout.as_millis()
            )))
        }
    }
}

/// Applies a JSON merge patch (RFC 7396) whose top-level keys are phase names.
pub fn merge_patch_outputs(outputs: &mut BTreeMap<String, Value>, patch: &Value) {
    if let Some(obj) = patch.as_object() {
        for (phase, p) in obj {
            let target = outputs.entry(phase.clone()).or_insert(Value::Null);
            merge_patch(target, p);
        }
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut outputs = BTreeMap::from([("data".to_string(), json!({"sufficiency": "partial"}))]);
        merge_patch_outputs(
            &mut outputs,
            &json!({"data": {"sufficiency": "sufficient"}}),
        );
        assert_eq!(outputs["data"]["sufficiency"], "sufficient");
    }
}
