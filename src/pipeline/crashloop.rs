//! Messages RabbitMQ dead-lettered by itself, after the delivery limit of
//! their queue (`x-delivery-limit`, the crash-loop backstop): they arrive on
//! `<ns>.dlq.crashloop` with RabbitMQ's `x-death` header, and netra indexes
//! each one with the reason "delivery limit reached (crash loop)" and moves
//! it to the dead-letter queue of its phase, so that nothing in a
//! dead-letter queue is invisible to `netra dlq`.
//!
//! A sealed phase envelope of a known run dead-letters that run (its history
//! says why, upstream gets the outcome, and a replay can resume it); any
//! other message is indexed like a poison message of its queue.

use chrono::Utc;
use lapin::{message::Delivery, types::AMQPValue};
use serde_json::json;

use super::{
    committer,
    effects::{AttemptRecord, Committed, Effect},
    envelope::Envelope,
    envelope::Poison,
    settle, worker, Engine,
};
use crate::{
    broker::publisher::Publisher,
    error::{InfraError, PhaseError},
    store::runs,
};

/// The reason every such dead letter carries.
pub const REASON: &str = "delivery limit reached (crash loop)";

/// Handles one delivery from `<ns>.dlq.crashloop`.
pub async fn handle(engine: Engine, publisher: Publisher, delivery: Delivery) {
    let result = process(&engine, &publisher, &delivery).await;
    settle::settle(&engine, &delivery, result).await;
}

/// The queue a message was dead-lettered from (the newest `x-death` entry).
pub fn death_queue(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("queue")? {
        AMQPValue::LongString(q) => Some(q.to_string()),
        AMQPValue::ShortString(q) => Some(q.as_str().to_string()),
        _ => None,
    }
}

async fn process(
    engine: &Engine,
    publisher: &Publisher,
    delivery: &Delivery,
) -> Result<(), InfraError> {
    let prefix = engine.names.phase_queue("");
    let phase = death_queue(delivery)
        .and_then(|q| q.strip_prefix(prefix.as_str()).map(str::to_string))
        .and_then(|p| engine.agents.phases().into_iter().find(|k| *k == p));
    let Some(phase) = phase else {
        // From `<ns>.requests` (or unknown): indexed as a poison request.
        let p = Poison::new("delivery_limit", REASON);
        return settle::dead_letter_poison(engine, publisher, "requests", delivery, &p).await;
    };
    let env = worker::sealed_by_netra(engine, delivery)
        .then(|| {
            Envelope::decode(&delivery.data, engine.config.max_message_bytes, |p| {
                engine.knows_phase(p)
            })
            .ok()
        })
        .flatten()
        .filter(|env| env.phase == phase);
    let run = match &env {
        Some(env) => runs::get(&engine.hot, env.run_id).await?,
        None => None,
    };
    let (Some(env), Some(run)) = (env, run) else {
        let p = Poison::new("delivery_limit", REASON);
        return settle::dead_letter_poison(engine, publisher, phase, delivery, &p).await;
    };
    tracing::warn!(run_id = %run.id, phase, "delivery limit reached; dead-lettering the run");
    let record = AttemptRecord {
        envelope: env.clone(),
        input: json!({"crash_loop": true}),
        started_at: Utc::now(),
        worker_id: engine.config.worker_id.clone(),
        reply_to: run.reply_to.clone(),
        // The crash loop ends the step whoever holds its lease.
        lease_token: None,
    };
    let effect = Effect::DeadLetter {
        error: PhaseError::permanent(REASON),
    };
    match committer::commit_alone(&engine.hot, &record, effect)
        .await
        .0?
    {
        Committed::Applied(follow_up) => {
            worker::publish_and_mark(engine, publisher, &env, &follow_up).await
        }
        // Processed after all, but maybe never dispatched (its follow-ups
        // failed to publish until the limit): this is the last copy of the
        // message, so publish what it led to, if that is still pending.
        Committed::Duplicate(follow_up) if !follow_up.is_empty() => {
            worker::publish_and_mark(engine, publisher, &env, &follow_up).await
        }
        Committed::Duplicate(_) | Committed::Fenced => Ok(()),
    }
}
