//! The broker topology of DESIGN.md, declared idempotently at every
//! (re)connect. Names are prefixed by the namespace so that tests and
//! tenants of one broker never see each other's queues.

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
    Channel, ExchangeKind,
};

use crate::error::InfraError;

/// Redeliveries after which RabbitMQ dead-letters a phase message by itself:
/// a backstop against crash loops (netra's own retries use attempts, not
/// redeliveries).
pub const DELIVERY_LIMIT: i64 = 50;

/// The names of one namespace.
#[derive(Debug, Clone)]
pub struct Names {
    ns: String,
}

impl Names {
    /// Names under a namespace.
    pub fn new(ns: &str) -> Self {
        Self { ns: ns.to_string() }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// `<ns>.requests`.
    pub fn requests(&self) -> String {
        format!("{}.requests", self.ns)
    }

    /// `<ns>.phases`, the direct exchange routing phase messages.
    pub fn phases_exchange(&self) -> String {
        format!("{}.phases", self.ns)
    }

    /// `<ns>.phase.<phase>`.
    pub fn phase_queue(&self, phase: &str) -> String {
        format!("{}.phase.{phase}", self.ns)
    }

    /// `<ns>.dlx`, the dead-letter exchange.
    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.ns)
    }

    /// `<ns>.dlq.<phase>` (and `<ns>.dlq.requests`).
    pub fn dlq(&self, phase: &str) -> String {
        format!("{}.dlq.{phase}", self.ns)
    }
}

/// Arguments of a durable quorum queue; with a dead-letter target, also the
/// delivery limit (crash-loop backstop) and at-least-once dead-lettering.
pub fn quorum_args(dlx: Option<(&str, &str)>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some((exchange, key)) = dlx {
        t.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        t.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
        t.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(key.into()),
        );
        t.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        t.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    t
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), InfraError> {
    ch.queue_declare(
        ShortString::from(name),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    Ok(())
}

async fn exchange(ch: &Channel, name: &str) -> Result<(), InfraError> {
    ch.exchange_declare(
        ShortString::from(name),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), InfraError> {
    ch.queue_bind(
        ShortString::from(queue),
        ShortString::from(exchange),
        ShortString::from(key),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Declares everything; harmless when it already exists.
pub async fn declare(ch: &Channel, names: &Names, phases: &[&str]) -> Result<(), InfraError> {
    let dlx = names.dlx();
    exchange(ch, &names.phases_exchange()).await?;
    exchange(ch, &dlx).await?;
    queue(ch, &names.requests(), quorum_args(Some((&dlx, "requests")))).await?;
    queue(ch, &names.dlq("requests"), quorum_args(None)).await?;
    bind(ch, &names.dlq("requests"), &dlx, "requests").await?;
    for phase in phases {
        let q = names.phase_queue(phase);
        queue(ch, &q, quorum_args(Some((&dlx, phase)))).await?;
        bind(ch, &q, &names.phases_exchange(), phase).await?;
        let dlq = names.dlq(phase);
        queue(ch, &dlq, quorum_args(None)).await?;
        bind(ch, &dlq, &dlx, phase).await?;
    }
    Ok(())
}

/// Deletes everything [`declare`] created (tests and benchmarks clean up
/// their namespaces with it); missing queues are not an error.
pub async fn delete(conn: &lapin::Connection, names: &Names, phases: &[&str]) {
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let mut queues = vec![names.requests(), names.dlq("requests")];
    for p in phases {
        queues.push(names.phase_queue(p));
        queues.push(names.dlq(p));
    }
    for q in queues {
        let _ = ch
            .queue_delete(ShortString::from(q.as_str()), Default::default())
            .await;
    }
    for x in [names.phases_exchange(), names.dlx()] {
        let _ = ch
            .exchange_delete(ShortString::from(x.as_str()), Default::default())
            .await;
    }
}
