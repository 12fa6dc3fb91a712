//! Settling a delivery, shared by every consumer (phases, intake, crash
//! loops): ack what was handled; hand back what failed on infrastructure
//! (after waiting out a database outage, or a backoff by delivery count);
//! and dead-letter what can never be processed (poison), with its reason,
//! so it never blocks a queue.

use std::time::Instant;

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
};

use super::{envelope::Poison, Engine};
use crate::{
    broker::publisher::{HeaderValue, Outgoing, Publisher},
    error::InfraError,
    metrics::Outcome,
    store::{self, dead_letters},
};

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
}
