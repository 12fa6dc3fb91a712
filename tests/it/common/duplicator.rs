//! A test double for a network or broker that delivers every phase message
//! twice: [`duplicate_every_phase_message`] copies each message published to
//! the phase exchange once more. Used by the fault test of duplicated
//! deliveries (`tests/faults.rs`) and by the chaos suite's `duplicates`
//! scenario (`examples/chaos.rs`); the parallel suite does not use it.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use netra::{
    broker::publisher::{HeaderValue, Outgoing, Publisher},
    config::Config,
};

/// Copies every phase message once more: a queue bound to the phase
/// exchange for every phase receives each message, and the copy is
/// published back to the exchange marked (header `x-test-copy`), so the
/// copy itself is not copied again. `copies` counts the copies published.
/// The queue is auto-deleted when the returned task ends (abort it).
#[allow(dead_code)] // used by tests/faults.rs and examples/chaos.rs, not by tests/it
pub async fn duplicate_every_phase_message(
    config: &Config,
    copies: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let conn = netra::broker::connect(config, "duplicator")
        .await
        .expect("the duplicator connects to RabbitMQ");
    let ch = conn
        .create_channel()
        .await
        .expect("the duplicator opens a channel");
    let q = format!("{}.test.duplicator", config.namespace);
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .expect("the duplicator declares its queue");
    for phase in netra::agents::standard().phases() {
        ch.queue_bind(
            q.as_str().into(),
            format!("{}.phases", config.namespace).as_str().into(),
            phase.into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .expect("the duplicator binds its queue to the phase exchange (declared by netra)");
    }
    let publisher = Publisher::open(&conn)
        .await
        .expect("the duplicator opens a publisher");
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "dup".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect("the duplicator consumes its queue");
    let ns = config.namespace.clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let _conn = conn;
        while let Some(Ok(d)) = consumer.next().await {
            let headers = d.properties.headers().clone().unwrap_or_default();
            let is_copy = headers.inner().contains_key("x-test-copy");
            if !is_copy {
                let mut out: Vec<(String, HeaderValue)> = Vec::new();
                for (k, v) in headers.inner() {
                    let v = match v {
                        lapin::types::AMQPValue::LongString(s) => HeaderValue::Text(s.to_string()),
                        lapin::types::AMQPValue::LongLongInt(n) => HeaderValue::Int(*n),
                        lapin::types::AMQPValue::LongInt(n) => HeaderValue::Int(i64::from(*n)),
                        _ => continue,
                    };
                    out.push((k.as_str().to_string(), v));
                }
                out.push(("x-test-copy".into(), HeaderValue::Int(1)));
                let msg = Outgoing {
                    exchange: format!("{ns}.phases"),
                    routing_key: d.routing_key.as_str().to_string(),
                    body: d.data.clone(),
                    message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
                    correlation_id: d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|m| m.to_string()),
                    reply_to: None,
                    headers: out,
                };
                if publisher.publish_routed(&msg).await.is_ok() {
                    copies.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
    })
}
