//! The broker topology of docs/DESIGN.md, declared idempotently at every
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

/// The dead-letter routing key RabbitMQ uses for messages over the
/// delivery limit (netra's own dead letters use the phase name).
pub const CRASHLOOP_KEY: &str = "crashloop";

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

    /// `<ns>.intake`, the fanout exchange upstream services publish
    /// requests to (bound to `<ns>.requests`): a tenant's broker user may
    /// write to it and to nothing else (see [`super::permissions`]).
    pub fn intake_exchange(&self) -> String {
        format!("{}.intake", self.ns)
    }

    /// The prefix of a broker user's own reply queues:
    /// `<ns>.reply.<user>.` (the user may declare and read only those).
    pub fn reply_prefix(&self, user: &str) -> String {
        format!("{}.reply.{user}.", self.ns)
    }

    /// `<ns>.dlq.crashloop`: where RabbitMQ dead-letters a message by its
    /// delivery limit; netra indexes each one and moves it to the
    /// dead-letter queue of its phase (see [`crate::pipeline::crashloop`]).
    pub fn crashloop_queue(&self) -> String {
        self.dlq(CRASHLOOP_KEY)
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

/// Arguments of a durable quorum queue; with a dead-letter exchange, also
/// the delivery limit (crash-loop backstop, dead-lettered with the routing
/// key [`CRASHLOOP_KEY`]) and at-least-once dead-lettering.
pub fn quorum_args(dlx: Option<&str>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(exchange) = dlx {
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
            AMQPValue::LongString(CRASHLOOP_KEY.into()),
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
    .await
    .map_err(|e| {
        let text = e.to_string();
        if text.contains("PRECONDITION_FAILED") {
            // A queue of an older netra: RabbitMQ cannot change a queue's
            // arguments, so say what to do instead of reconnecting blindly.
            tracing::error!(queue = name, "queue exists with other arguments (declared by an older netra?); see README, 'Upgrading'");
            InfraError::Broker(format!(
                "queue {name} exists with other arguments than this version declares ({text}); see README, 'Upgrading'"
            ))
        } else {
            InfraError::from(e)
        }
    })?;
    Ok(())
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) -> Result<(), InfraError> {
    ch.exchange_declare(
        ShortString::from(name),
        kind,
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
    exchange(ch, &names.phases_exchange(), ExchangeKind::Direct).await?;
    exchange(ch, &dlx, ExchangeKind::Direct).await?;
    exchange(ch, &names.intake_exchange(), ExchangeKind::Fanout).await?;
    queue(ch, &names.requests(), quorum_args(Some(&dlx))).await?;
    bind(ch, &names.requests(), &names.intake_exchange(), "").await?;
    queue(ch, &names.dlq("requests"), quorum_args(None)).await?;
    bind(ch, &names.dlq("requests"), &dlx, "requests").await?;
    queue(ch, &names.crashloop_queue(), quorum_args(None)).await?;
    bind(ch, &names.crashloop_queue(), &dlx, CRASHLOOP_KEY).await?;
    for phase in phases {
        let q = names.phase_queue(phase);
        queue(ch, &q, quorum_args(Some(&dlx))).await?;
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
    let mut queues = vec![
        names.requests(),
        names.dlq("requests"),
        names.crashloop_queue(),
    ];
    for p in phases {
        queues.push(names.phase_queue(p));
        queues.push(names.dlq(p));
    }
    for q in queues {
        let _ = ch
            .queue_delete(ShortString::from(q.as_str()), Default::default())
            .await;
    }
    for x in [
        names.phases_exchange(),
        names.dlx(),
        names.intake_exchange(),
    ] {
        let _ = ch
            .exchange_delete(ShortString::from(x.as_str()), Default::default())
            .await;
    }
}
