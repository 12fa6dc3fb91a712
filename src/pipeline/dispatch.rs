//! Publishes the follow-ups of a committed effect, each confirmed by the
//! broker, before the delivery that caused them is acked. Phase messages
//! carry their authentication tag ([`super::seal`]); replies carry a
//! deterministic `message_id`, so upstream can de-duplicate the rare second
//! copy (replies are at least once).

use chrono::{DateTime, Utc};

use super::{envelope::Envelope, outbound::Outbound, seal::Seal, Engine};
use crate::{
    broker::publisher::{HeaderValue, Outgoing, Published, Publisher},
    broker::topology::Names,
    error::InfraError,
};

/// The message that carries a phase envelope, sealed.
pub fn phase_message(names: &Names, seal: &Seal, env: &Envelope) -> Outgoing {
    let body = env.to_bytes();
    let tag = seal.tag(&body);
    Outgoing {
        exchange: names.phases_exchange(),
        routing_key: env.phase.clone(),
        body,
        message_id: Some(env.message_id()),
        correlation_id: Some(env.correlation_id.clone()),
        reply_to: None,
        headers: vec![
            ("x-netra-phase".into(), HeaderValue::Text(env.phase.clone())),
            (
                "x-netra-attempt".into(),
                HeaderValue::Int(i64::from(env.attempt)),
            ),
            (
                "x-netra-replay".into(),
                HeaderValue::Int(i64::from(env.replay)),
            ),
            (
                "traceparent".into(),
                HeaderValue::Text(env.traceparent.clone()),
            ),
            (super::seal::HEADER.into(), HeaderValue::Text(tag)),
        ],
    }
}

/// The deterministic `message_id` of a run's reply:
/// `<run>:reply:<status>:<replay generation>`, one per outcome of each
/// replay generation, so a second copy is recognisable upstream and a
/// replay's own outcome is not mistaken for one.
pub fn reply_message_id(body: &serde_json::Value) -> Option<String> {
    let run = body["run_id"].as_str()?;
    let status = body["status"].as_str().unwrap_or("final");
    let replay = body["replay"].as_u64().unwrap_or(0);
    Some(format!("{run}:reply:{status}:{replay}"))
}

/// Publishes every follow-up; returns on the first broker failure (the
/// delivery is then not acked and comes back).
pub async fn publish_all(
    engine: &Engine,
    publisher: &Publisher,
    follow_up: &[Outbound],
) -> Result<(), InfraError> {
    for out in follow_up {
        match out {
            Outbound::Phase { envelope } => {
                publisher
                    .publish_routed(&phase_message(&engine.names, &engine.seal, envelope))
                    .await?;
            }
            Outbound::DeadLetter {
                envelope,
                error_class,
                error,
                attempts,
                first_failed_at,
                last_failed_at,
            } => {
                let mut msg = phase_message(&engine.names, &engine.seal, envelope);
                msg.exchange = engine.names.dlx();
                msg.headers.extend(failure_headers(
                    error_class,
                    error,
                    *attempts,
                    first_failed_at,
                    last_failed_at,
                ));
                publisher.publish_routed(&msg).await?;
            }
            Outbound::Reply {
                to,
                correlation_id,
                body,
            } => {
                let msg = reply_message(to, correlation_id, body);
                // A vanished reply queue must not block the run: the outcome
                // stays readable over HTTP.
                if publisher.publish(&msg).await? == Published::Unroutable {
                    tracing::warn!(reply_to = %to, "reply queue does not exist; reply dropped");
                }
            }
            // Off the path to the ack: Redis never holds a delivery.
            Outbound::Notify { run_id } => {
                if let Some(cache) = &engine.cache {
                    cache.notify_later(*run_id);
                }
            }
        }
    }
    Ok(())
}

/// The headers that say why a phase message was dead-lettered.
fn failure_headers(
    error_class: &str,
    error: &str,
    attempts: u32,
    first_failed_at: &DateTime<Utc>,
    last_failed_at: &DateTime<Utc>,
) -> [(String, HeaderValue); 5] {
    [
        ("x-netra-error".into(), HeaderValue::Text(error.to_string())),
        (
            "x-netra-error-class".into(),
            HeaderValue::Text(error_class.to_string()),
        ),
        (
            "x-netra-attempts".into(),
            HeaderValue::Int(i64::from(attempts)),
        ),
        (
            "x-netra-first-failure".into(),
            HeaderValue::Text(first_failed_at.to_rfc3339()),
        ),
        (
            "x-netra-last-failure".into(),
            HeaderValue::Text(last_failed_at.to_rfc3339()),
        ),
    ]
}

/// A run's reply, through the default exchange to its `reply_to` queue.
fn reply_message(to: &str, correlation_id: &str, body: &serde_json::Value) -> Outgoing {
    Outgoing {
        exchange: String::new(),
        routing_key: to.to_string(),
        body: serde_json::to_vec(body).unwrap_or_default(),
        message_id: reply_message_id(body),
        correlation_id: Some(correlation_id.to_string()),
        reply_to: None,
        headers: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_ids_differ_per_outcome_and_replay_generation() {
        let run = uuid::Uuid::new_v4();
        let body = |status: &str, replay: u32| {
            crate::pipeline::effects::outcome_body(run, replay, status, None, None)
        };
        let first = reply_message_id(&body("dead_lettered", 0)).unwrap();
        assert_eq!(first, format!("{run}:reply:dead_lettered:0"));
        assert_eq!(reply_message_id(&body("dead_lettered", 0)).unwrap(), first);
        assert_ne!(reply_message_id(&body("dead_lettered", 1)).unwrap(), first);
        assert_ne!(reply_message_id(&body("completed", 0)).unwrap(), first);
    }
}
