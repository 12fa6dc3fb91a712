//! Publishes the follow-ups of a committed effect, each confirmed by the
//! broker, before the delivery that caused them is acked.

use super::{envelope::Envelope, outbound::Outbound, Engine};
use crate::{
    broker::publisher::{HeaderValue, Outgoing, Published, Publisher},
    broker::topology::Names,
    error::InfraError,
};

/// The message that carries a phase envelope.
pub fn phase_message(names: &Names, env: &Envelope) -> Outgoing {
    Outgoing {
        exchange: names.phases_exchange(),
        routing_key: env.phase.clone(),
        body: env.to_bytes(),
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
        ],
    }
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
                    .publish_routed(&phase_message(&engine.names, envelope))
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
                let mut msg = phase_message(&engine.names, envelope);
                msg.exchange = engine.names.dlx();
                msg.headers.extend([
                    ("x-netra-error".into(), HeaderValue::Text(error.clone())),
                    (
                        "x-netra-error-class".into(),
                        HeaderValue::Text(error_class.clone()),
                    ),
                    (
                        "x-netra-attempts".into(),
                        HeaderValue::Int(i64::from(*attempts)),
                    ),
                    (
                        "x-netra-first-failure".into(),
                        HeaderValue::Text(first_failed_at.to_rfc3339()),
                    ),
                    (
                        "x-netra-last-failure".into(),
                        HeaderValue::Text(last_failed_at.to_rfc3339()),
                    ),
                ]);
                publisher.publish_routed(&msg).await?;
            }
            Outbound::Reply {
                to,
                correlation_id,
                body,
            } => {
                let msg = Outgoing {
                    exchange: String::new(),
                    routing_key: to.clone(),
                    body: serde_json::to_vec(body).unwrap_or_default(),
                    message_id: None,
                    correlation_id: Some(correlation_id.clone()),
                    reply_to: None,
                    headers: vec![],
                };
                // A vanished reply queue must not block the run: the outcome
                // stays readable over HTTP.
                if publisher.publish(&msg).await? == Published::Unroutable {
                    tracing::warn!(reply_to = %to, "reply queue does not exist; reply dropped");
                }
            }
            Outbound::Notify { run_id } => {
                if let Some(cache) = &engine.cache {
                    cache.notify(*run_id).await;
                }
            }
        }
    }
    Ok(())
}
