//! The raw baseline: the same hops as a netra run (the request hop and five
//! phase hops) through the same kind of queues (quorum, durable, persistent
//! messages, `mandatory` publishes with publisher confirms, manual acks
//! after commit and confirm, the same prefetch and one task per delivery),
//! with one Postgres transaction per hop of a similar shape (a dedup row, a
//! run row update, a history row) and nothing else: no agents, no reads of
//! persisted state, no routing table, no status transitions before the
//! effect.
//!
//! Topology under `<ns>`: exchange `<ns>.hops` (direct), queues
//! `<ns>.requests` and `<ns>.hop.<1..5>`, dead-letter exchange `<ns>.dlx`.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{FieldTable, ShortString},
    Channel, Connection, ExchangeKind,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use netra::broker::{
    self,
    publisher::{Outgoing, Publisher},
    topology::quorum_args,
};

/// Phase hops after the request hop (netra's optimization path has five).
pub const HOPS: u32 = 5;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS raw_runs (id uuid PRIMARY KEY, correlation_id text NOT NULL, \
     reply_to text, status text NOT NULL, hop integer NOT NULL, \
     created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS raw_processed (message_id text PRIMARY KEY, run_id uuid NOT NULL, \
     hop integer NOT NULL, processed_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS raw_history (id bigserial PRIMARY KEY, run_id uuid NOT NULL, \
     hop integer NOT NULL, status text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
];

/// The message between hops (a claim check, like netra's envelope).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HopMessage {
    v: u32,
    run_id: Uuid,
    hop: u32,
    correlation_id: String,
    reply_to: Option<String>,
    traceparent: String,
}

/// Queue names of the baseline.
#[derive(Debug, Clone)]
pub struct RawNames {
    ns: String,
}

impl RawNames {
    /// Names under `ns`.
    pub fn new(ns: &str) -> Self {
        Self { ns: ns.to_string() }
    }
    /// `<ns>.requests`.
    pub fn requests(&self) -> String {
        format!("{}.requests", self.ns)
    }
    fn hop(&self, h: u32) -> String {
        format!("{}.hop.{h}", self.ns)
    }
    fn exchange(&self) -> String {
        format!("{}.hops", self.ns)
    }
    fn dlx(&self) -> String {
        format!("{}.dlx", self.ns)
    }
}

async fn declare(ch: &Channel, names: &RawNames) -> anyhow::Result<()> {
    for x in [names.exchange(), names.dlx()] {
        ch.exchange_declare(
            ShortString::from(x.as_str()),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(
        ShortString::from(names.requests().as_str()),
        durable,
        quorum_args(Some(&names.dlx())),
    )
    .await?;
    for h in 1..=HOPS {
        let q = names.hop(h);
        ch.queue_declare(
            ShortString::from(q.as_str()),
            durable,
            quorum_args(Some(&names.dlx())),
        )
        .await?;
        ch.queue_bind(
            ShortString::from(q.as_str()),
            ShortString::from(names.exchange().as_str()),
            ShortString::from(format!("hop{h}").as_str()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Deletes the baseline's queues and exchanges.
pub async fn delete_topology(conn: &Connection, names: &RawNames) {
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let mut queues = vec![names.requests()];
    queues.extend((1..=HOPS).map(|h| names.hop(h)));
    for q in queues {
        let _ = ch
            .queue_delete(ShortString::from(q.as_str()), QueueDeleteOptions::default())
            .await;
    }
    for x in [names.exchange(), names.dlx()] {
        let _ = ch
            .exchange_delete(
                ShortString::from(x.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = ch.close(200, ShortString::from("bye")).await;
}

/// A running baseline.
pub struct Raw {
    conn: Connection,
    pool: PgPool,
    names: RawNames,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    pool: PgPool,
    names: RawNames,
    publisher: Publisher,
}

impl Raw {
    /// Creates the tables, declares the queues and starts the consumers.
    pub async fn start(
        amqp_url: &str,
        database_url: &str,
        ns: &str,
        prefetch: u16,
        pool_size: u32,
    ) -> anyhow::Result<Self> {
        let pool = netra::store::connect_url(database_url, pool_size).await?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await?;
        }
        let names = RawNames::new(ns);
        let conn = broker::connect_url(amqp_url, "netra bench raw baseline").await?;
        let ch = conn.create_channel().await?;
        declare(&ch, &names).await?;
        let _ = ch.close(200, ShortString::from("declared")).await;
        let mut tasks = Vec::new();
        for hop in 0..=HOPS {
            // One publisher and one consuming channel per queue, as netra has.
            let shared = Arc::new(Shared {
                pool: pool.clone(),
                names: names.clone(),
                publisher: Publisher::open(&conn).await?,
            });
            let channel = conn.create_channel().await?;
            channel
                .basic_qos(prefetch.max(1), BasicQosOptions::default())
                .await?;
            let queue = if hop == 0 {
                names.requests()
            } else {
                names.hop(hop)
            };
            let mut consumer = channel
                .basic_consume(
                    ShortString::from(queue.as_str()),
                    ShortString::from(format!("raw-{hop}").as_str()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tasks.push(tokio::spawn(async move {
                let _channel = channel;
                while let Some(Ok(delivery)) = consumer.next().await {
                    let s = shared.clone();
                    tokio::spawn(async move { handle(&s, hop, delivery).await });
                }
            }));
        }
        Ok(Self {
            conn,
            pool,
            names,
            tasks,
        })
    }

    /// Stops consuming, deletes the topology and closes the pool.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        delete_topology(&self.conn, &self.names).await;
        let _ = self.conn.close(200, ShortString::from("bye")).await;
        self.pool.close().await;
    }
}

async fn handle(s: &Shared, hop: u32, delivery: Delivery) {
    match process(s, hop, &delivery).await {
        Ok(()) => {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, hop, "raw baseline hop failed; requeued");
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

async fn process(s: &Shared, hop: u32, delivery: &Delivery) -> anyhow::Result<()> {
    let props = &delivery.properties;
    let msg = if hop == 0 {
        // The request: its message_id is the idempotency key.
        let key = props
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        HopMessage {
            v: 1,
            run_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()),
            hop: 0,
            correlation_id: props
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            reply_to: props.reply_to().as_ref().map(|r| r.as_str().to_string()),
            traceparent: String::new(),
        }
    } else {
        serde_json::from_slice(&delivery.data)?
    };
    let message_id = format!("{}:{hop}", msg.run_id);
    let last = hop == HOPS;
    let status = if last { "completed" } else { "queued" };

    let mut tx = s.pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO raw_processed (message_id, run_id, hop) VALUES ($1, $2, $3) \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&message_id)
    .bind(msg.run_id)
    .bind(i32::try_from(hop).unwrap_or(0))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if fresh {
        if hop == 0 {
            sqlx::query(
                "INSERT INTO raw_runs (id, correlation_id, reply_to, status, hop) \
                 VALUES ($1, $2, $3, 'queued', 0)",
            )
            .bind(msg.run_id)
            .bind(&msg.correlation_id)
            .bind(&msg.reply_to)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE raw_runs SET status = $2, hop = $3, updated_at = now() WHERE id = $1",
            )
            .bind(msg.run_id)
            .bind(status)
            .bind(i32::try_from(hop).unwrap_or(0))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("INSERT INTO raw_history (run_id, hop, status) VALUES ($1, $2, $3)")
            .bind(msg.run_id)
            .bind(i32::try_from(hop).unwrap_or(0))
            .bind(status)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }

    // Publish the follow-up (again, for a duplicate: ids are deterministic).
    let out = if last {
        let Some(to) = msg.reply_to.clone() else {
            return Ok(());
        };
        Outgoing {
            exchange: String::new(),
            routing_key: to,
            body: serde_json::to_vec(&serde_json::json!({
                "run_id": msg.run_id, "status": "completed", "result": null, "error": null,
            }))?,
            message_id: None,
            correlation_id: Some(msg.correlation_id.clone()),
            reply_to: None,
            headers: vec![],
        }
    } else {
        let next = HopMessage {
            hop: hop + 1,
            ..msg.clone()
        };
        Outgoing {
            exchange: s.names.exchange(),
            routing_key: format!("hop{}", hop + 1),
            body: serde_json::to_vec(&next)?,
            message_id: Some(format!("{}:{}", msg.run_id, hop + 1)),
            correlation_id: Some(msg.correlation_id.clone()),
            reply_to: None,
            headers: vec![],
        }
    };
    if last {
        // A vanished reply queue must not block the run.
        s.publisher.publish(&out).await?;
    } else {
        s.publisher.publish_routed(&out).await?;
    }
    Ok(())
}
