//! Processes one phase message: dedup, start, run the agent under a timeout
//! with panics caught, commit the effect with its dedup record, publish the
//! follow-ups with confirms, and only then ack (docs/DESIGN.md invariants 1-4, 9).

use std::{collections::BTreeMap, time::Instant};

use chrono::Utc;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
};
use serde_json::{json, Value};
use tracing::Instrument;

use super::{
    agent::{AgentContext, PhaseInput, Target},
    committer, dispatch, effects,
    envelope::{Envelope, Poison},
    retry, Engine,
};
use crate::{
    broker::publisher::{HeaderValue, Outgoing, Publisher},
    error::{ErrorClass, InfraError, PhaseError},
    metrics::{AgentCall, Outcome},
    store::{self, dead_letters, runs},
};

/// Handles a delivery from `<ns>.phase.<phase>` and acks or hands it back.
pub async fn handle(engine: Engine, publisher: Publisher, phase: &'static str, delivery: Delivery) {
    let span = tracing::info_span!(
        "delivery",
        phase,
        run_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        attempt = tracing::field::Empty,
        message_id = tracing::field::Empty,
    );
    let result = process(&engine, &publisher, phase, &delivery)
        .instrument(span.clone())
        .await;
    settle(&engine, &delivery, result).instrument(span).await;
}

/// Acks a handled delivery; on an infrastructure failure waits for the
/// database (if that was it) and hands the delivery back without spending an
/// attempt.
pub async fn settle(engine: &Engine, delivery: &Delivery, result: Result<(), InfraError>) {
    match result {
        Ok(()) => {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "infrastructure failure; handing the delivery back");
            if e.is_database_outage() {
                wait_for_database(engine).await;
            } else {
                // Not an outage we can wait out: back off by how often this
                // message came back already, instead of a hot requeue loop
                // (RabbitMQ's delivery limit ends it; the message is then
                // indexed as a crash loop, see `crate::pipeline::crashloop`).
                tokio::time::sleep(handback_delay(delivery)).await;
            }
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

/// How long a delivery that failed for a non-outage infrastructure reason
/// waits before it is handed back: 100 ms doubled per earlier delivery
/// (RabbitMQ's `x-delivery-count`), at most 5 s.
pub fn handback_delay(delivery: &Delivery) -> std::time::Duration {
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongLongInt(n) => Some(*n),
            lapin::types::AMQPValue::LongInt(n) => Some(i64::from(*n)),
            lapin::types::AMQPValue::ShortInt(n) => Some(i64::from(*n)),
            lapin::types::AMQPValue::LongUInt(n) => Some(i64::from(*n)),
            _ => None,
        })
        .unwrap_or(if delivery.redelivered { 1 } else { 0 });
    let exp = u32::try_from(count.clamp(0, 6)).unwrap_or(6);
    std::time::Duration::from_millis(100 * 2u64.pow(exp)).min(std::time::Duration::from_secs(5))
}

/// Waits (with capped exponential backoff) until Postgres answers again.
pub async fn wait_for_database(engine: &Engine) {
    let mut delay = std::time::Duration::from_millis(100);
    let deadline = Instant::now()
        + engine
            .config
            .shutdown_grace
            .max(std::time::Duration::from_secs(60));
    while !store::ping(&engine.pool).await && Instant::now() < deadline {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(2));
    }
}

/// A started attempt: its record, the agent's input, and the data version
/// its tools read at.
struct Prepared {
    record: effects::AttemptRecord,
    input: PhaseInput,
    data_version: i64,
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
    record_span(&env);
    let Some(Prepared {
        record,
        input,
        data_version,
    }) = start(engine, publisher, phase, delivery, &env, t0).await?
    else {
        return Ok(());
    };
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
    let (effect, outcome) = decide(engine, phase, &env, result, input.as_ref());
    let (committed, outcome) =
        commit(engine, phase, record, effect, outcome, input.as_ref()).await?;
    match committed {
        effects::Committed::Applied(follow_up) => {
            engine.metrics.record(phase, outcome, t0.elapsed());
            publish_and_mark(engine, publisher, &env, &follow_up).await
        }
        effects::Committed::Duplicate(follow_up) => {
            engine
                .metrics
                .record(phase, Outcome::Duplicate, t0.elapsed());
            republish_for_duplicate(engine, publisher, delivery, &env, &follow_up).await
        }
    }
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

/// Fills the delivery span's fields from the envelope.
fn record_span(env: &Envelope) {
    let span = tracing::Span::current();
    span.record("run_id", tracing::field::display(env.run_id));
    span.record("correlation_id", env.correlation_id.as_str());
    span.record("attempt", env.attempt);
    span.record("message_id", env.message_id().as_str());
}

/// Starts the attempt, or handles a message that cannot start (`None`): a
/// duplicate, a run not waiting for this step, a run that does not exist.
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
                    republish_for_duplicate(engine, publisher, delivery, env, &follow_up).await?;
                    engine
                        .metrics
                        .record(phase, Outcome::Duplicate, t0.elapsed());
                }
                None => {
                    tracing::info!(status = %run.status, current_phase = ?run.phase, "run is not waiting for this step; message dropped");
                }
            }
            Ok(None)
        }
        runs::Start::Missing => {
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
    let task = tokio::spawn(async move {
        let result = agent.run(&ctx, &input).await;
        (result, input)
    });
    let abort = task.abort_handle();
    let failed = |e| (Err(e), None);
    match tokio::time::timeout(engine.config.phase_timeout, task).await {
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
                engine.config.phase_timeout.as_millis()
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

/// An id with each NUL written as the text `\u0000`, cut to the 255 bytes
/// of an AMQP short string (at a character boundary).
pub fn printable_id(id: &str) -> String {
    let mut text = id.replace('\0', "\\u0000");
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// Sends an unprocessable message to `<ns>.dlq.<queue>` with its reason,
/// indexes it, and lets the caller ack it: it never blocks the consumer.
pub async fn dead_letter_poison(
    engine: &Engine,
    publisher: &Publisher,
    queue_phase: &str,
    delivery: &Delivery,
    poison: &Poison,
) -> Result<(), InfraError> {
    // A reason may quote the input (a parse error of a field holding NUL):
    // stored with NUL escaped, or indexing would fail on every delivery.
    let reason = poison.reason.replace('\0', "\\u0000");
    tracing::warn!(kind = poison.kind, reason = %reason, "poison message; dead-lettering");
    // The ids as the index and the dead-letter queue can keep them: a
    // message refused for a NUL in an id must not fail to be indexed (it
    // would come back over and over instead of being dead-lettered once).
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| printable_id(s.as_str()));
    let msg = Outgoing {
        exchange: engine.names.dlx(),
        routing_key: queue_phase.to_string(),
        body: delivery.data.clone(),
        message_id: message_id.clone(),
        correlation_id: delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| printable_id(s.as_str())),
        reply_to: None,
        headers: vec![
            (
                "x-netra-error".into(),
                HeaderValue::Text(format!("{}: {reason}", poison.kind)),
            ),
            (
                "x-netra-error-class".into(),
                HeaderValue::Text("permanent".into()),
            ),
            ("x-netra-attempts".into(), HeaderValue::Int(1)),
            (
                "x-netra-phase".into(),
                HeaderValue::Text(queue_phase.to_string()),
            ),
        ],
    };
    publisher.publish_routed(&msg).await?;
    dead_letters::insert_poison(
        &engine.pool,
        &engine.names.dlq(queue_phase),
        queue_phase,
        message_id.as_deref(),
        poison.kind,
        &reason,
        &delivery.data,
    )
    .await?;
    engine.metrics.record(
        queue_phase,
        Outcome::DeadLettered,
        std::time::Duration::ZERO,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ids_escape_nul_and_stay_short_strings() {
        assert_eq!(printable_id("m"), "m");
        assert_eq!(printable_id("a\0b"), "a\\u0000b");
        let long = printable_id(&"\0".repeat(255));
        assert!(long.len() <= 255 && !long.contains('\0'), "{long}");
        let wide = printable_id(&"é".repeat(200));
        assert!(wide.len() <= 255 && wide.chars().all(|c| c == 'é'));
    }

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
