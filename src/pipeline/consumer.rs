//! The generic consume loop: prefetch bounds the deliveries in flight (the
//! per-phase concurrency), each delivery is handled in its own task, and on
//! shutdown the consumer is cancelled and in-flight work gets a grace period.
//! What is not acked by then returns to the queue when the channel closes.

use std::{sync::Arc, time::Duration};

use futures_util::{future::BoxFuture, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
    Channel,
};
use tokio::task::JoinSet;

use super::shutdown::Shutdown;
use crate::error::InfraError;

/// Handles one delivery, acking or nacking it itself.
pub type Handler = Arc<dyn Fn(Delivery) -> BoxFuture<'static, ()> + Send + Sync>;

/// Consumes `queue` until shutdown (Ok) or until the channel fails (Err).
pub async fn run(
    channel: Channel,
    queue: String,
    prefetch: u16,
    handler: Handler,
    mut shutdown: Shutdown,
    grace: Duration,
) -> Result<(), InfraError> {
    channel
        .basic_qos(prefetch.max(1), BasicQosOptions::default())
        .await?;
    let tag = format!("netra-{}-{}", queue, uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from(tag.as_str()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut tasks = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.wait() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    tasks.spawn((handler)(delivery));
                }
                Some(Err(e)) => break Err(InfraError::from(e)),
                None => break Err(InfraError::Broker(format!("consumer of {queue} was cancelled"))),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    };
    if result.is_ok() {
        // Bounded: a broker that does not answer must not stall shutdown.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            channel.basic_cancel(
                ShortString::from(tag.as_str()),
                BasicCancelOptions::default(),
            ),
        )
        .await;
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(queue = %queue, left = tasks.len(), "grace period over; unfinished deliveries go back to the queue");
        tasks.abort_all();
    }
    // The channel closes with the connection; closing it here races the
    // connection close of the serve loop.
    result
}
