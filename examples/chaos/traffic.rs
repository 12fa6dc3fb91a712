//! The suite's own broker traffic, which must outlive the faults it
//! injects: connections that fail over between the nodes (avoiding the
//! node a scenario is about to stop), a publisher that republishes a
//! request until the broker confirms it (a request's message id makes a
//! repeat create no second run), a reply collector on a durable quorum
//! queue that reconnects and counts replies per correlation id, and the
//! paced load of one scenario.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{FieldTable, ShortString},
    Connection,
};
use netra::broker::publisher::{Outgoing, Publisher};
use tokio::sync::watch;

use crate::poison::Kind;

/// Time one connection attempt, or one confirmed publish, may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts while a broker node is down.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The broker nodes the suite may use, in the order it tries them.
#[derive(Debug, Clone)]
pub struct Broker {
    urls: Vec<String>,
}

impl Broker {
    /// All of `urls` (node N at index N-1), node `avoid` (1-based) last.
    pub fn new(urls: &[String], avoid: Option<usize>) -> Self {
        let mut order: Vec<String> = Vec::with_capacity(urls.len());
        for (i, u) in urls.iter().enumerate() {
            if Some(i + 1) != avoid {
                order.push(u.clone());
            }
        }
        if let Some(n) = avoid.filter(|n| (1..=urls.len()).contains(n)) {
            order.push(urls[n - 1].clone());
        }
        Self { urls: order }
    }

    /// Connects to the first node that answers.
    pub async fn connect(&self, name: &str) -> Result<Connection> {
        let mut last = anyhow!("no broker URL");
        for url in &self.urls {
            match tokio::time::timeout(ATTEMPT_TIMEOUT, netra::broker::connect_url(url, name)).await
            {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => last = e.into(),
                Err(_) => last = anyhow!("connecting timed out after {ATTEMPT_TIMEOUT:?}"),
            }
        }
        Err(last.context(format!("no RabbitMQ node accepted the connection `{name}`")))
    }

    /// Deletes a queue (best effort: the end of a scenario).
    pub async fn delete_queue(&self, queue: &str) {
        if let Ok(conn) = self.connect("chaos cleanup").await {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
                    .await;
            }
            let _ = conn.close(200, ShortString::from("bye")).await;
        }
    }
}

/// A confirming publisher that reconnects.
pub struct Sender {
    broker: Broker,
    link: Option<(Connection, Publisher)>,
}

impl Sender {
    /// A publisher over `broker` (connected on first use).
    pub fn new(broker: Broker) -> Self {
        Self { broker, link: None }
    }

    /// Publishes `msg` until the broker confirms it (routed), reconnecting
    /// in between, for at most `within`.
    pub async fn send(&mut self, msg: &Outgoing, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let error = match self.try_send(msg).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some((conn, _)) = self.link.take() {
                let _ = conn.close(200, ShortString::from("bye")).await;
            }
            if tokio::time::Instant::now() + RETRY_PAUSE > deadline {
                return Err(error.context(format!(
                    "message {} not confirmed within {within:?}",
                    msg.message_id.as_deref().unwrap_or("?")
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn try_send(&mut self, msg: &Outgoing) -> Result<()> {
        if self.link.is_none() {
            let conn = self.broker.connect("chaos publisher").await?;
            let publisher = Publisher::open(&conn).await?;
            self.link = Some((conn, publisher));
        }
        let Some((_, publisher)) = &self.link else {
            bail!("not connected");
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, publisher.publish_routed(msg))
            .await
            .map_err(|_| anyhow!("no confirm within {ATTEMPT_TIMEOUT:?}"))??;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        if let Some((conn, _)) = self.link.take() {
            let _ = conn.close(200, ShortString::from("bye")).await;
        }
    }
}

/// Replies per correlation id.
pub type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// Collects the replies of a scenario from a durable quorum queue (it
/// survives a broker node's stop, and replies published while the
/// collector reconnects wait in it).
pub struct Replies {
    /// The queue requests name as `reply_to`.
    pub queue: String,
    seen: Seen,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Replies {
    /// Declares `queue` and starts consuming it.
    pub async fn open(broker: Broker, queue: String) -> Result<Self> {
        let conn = broker.connect("chaos replies").await?;
        declare_reply_queue(&conn, &queue).await?;
        let _ = conn.close(200, ShortString::from("bye")).await;
        let seen: Seen = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(collect(broker, queue.clone(), seen.clone(), stopped));
        Ok(Self {
            queue,
            seen,
            stop,
            task,
        })
    }

    /// Replies seen for `cid`.
    pub fn count(&self, cid: &str) -> u32 {
        self.lock().get(cid).copied().unwrap_or(0)
    }

    /// Replies seen so far, per correlation id.
    pub fn snapshot(&self) -> HashMap<String, u32> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panicking collector cannot leave the map half-updated.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops collecting.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn declare_reply_queue(conn: &Connection, queue: &str) -> Result<lapin::Channel> {
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        ShortString::from(queue),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        netra::broker::topology::quorum_args(None),
    )
    .await
    .with_context(|| format!("declaring the reply queue {queue}"))?;
    Ok(ch)
}

/// Consumes until stopped, reconnecting after any failure.
async fn collect(broker: Broker, queue: String, seen: Seen, mut stopped: watch::Receiver<bool>) {
    while !*stopped.borrow() {
        match consume(&broker, &queue, &seen, &mut stopped).await {
            Ok(()) => return,
            Err(e) => {
                crate::log(format!("reply collector reconnecting: {e:#}"));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

async fn consume(
    broker: &Broker,
    queue: &str,
    seen: &Seen,
    stopped: &mut watch::Receiver<bool>,
) -> Result<()> {
    let conn = broker.connect("chaos replies").await?;
    let result = consume_on(&conn, queue, seen, stopped).await;
    // Closed on every way out, so that no delivery stays unacked on a
    // connection nobody reads any more.
    let _ = conn.close(200, ShortString::from("bye")).await;
    result
}

async fn consume_on(
    conn: &Connection,
    queue: &str,
    seen: &Seen,
    stopped: &mut watch::Receiver<bool>,
) -> Result<()> {
    let ch = declare_reply_queue(conn, queue).await?;
    ch.basic_qos(256, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from("chaos"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        tokio::select! {
            d = consumer.next() => {
                let d = d.ok_or_else(|| anyhow!("the reply consumer ended"))??;
                let cid = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_default();
                {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let n = seen.entry(cid).or_insert(0);
                    // A redelivery after the collector lost its connection
                    // before its ack arrived is the same reply, not a second
                    // one (a reply netra publishes twice is new both times).
                    if !(d.redelivered && *n > 0) {
                        *n += 1;
                    }
                }
                d.acker.ack(BasicAckOptions::default()).await?;
            }
            _ = stopped.changed() => return Ok(()),
        }
    }
}

/// One message of a scenario's load.
#[derive(Debug, Clone)]
pub enum Item {
    /// A good request (`message_id` = correlation id = the id).
    Good { id: String, message: Outgoing },
    /// A poison message of a kind.
    Poison {
        id: String,
        kind: Kind,
        message: Outgoing,
    },
}

/// What a scenario publishes, and how: `items[..tail_from]` paced evenly
/// over `window`, the rest once the faults are over (so that there is work
/// to complete after the last heal).
#[derive(Debug, Clone)]
pub struct Plan {
    pub items: Vec<Item>,
    pub tail_from: usize,
    pub window: Duration,
}

/// What the broker confirmed.
#[derive(Debug, Default)]
pub struct Sent {
    /// Good requests confirmed at least once.
    pub good: BTreeSet<String>,
    /// Poison messages confirmed.
    pub poison: Vec<(String, Kind)>,
    /// Messages never confirmed, and the first reason.
    pub unconfirmed: usize,
    pub first_error: Option<String>,
}

/// Publishes a plan; `faults_done` turns true when the last fault healed.
pub async fn publish(
    mut sender: Sender,
    plan: Plan,
    mut faults_done: watch::Receiver<bool>,
) -> Sent {
    let mut sent = Sent::default();
    let head = plan.tail_from.min(plan.items.len());
    let step = plan.window / u32::try_from(head.max(1)).unwrap_or(u32::MAX);
    let start = tokio::time::Instant::now();
    for (i, item) in plan.items.iter().enumerate() {
        if i < head {
            tokio::time::sleep_until(start + step * u32::try_from(i).unwrap_or(u32::MAX)).await;
        } else if i == head {
            while !*faults_done.borrow() {
                if faults_done.changed().await.is_err() {
                    break;
                }
            }
        }
        let (msg, id) = match item {
            Item::Good { id, message } | Item::Poison { id, message, .. } => (message, id),
        };
        // Two minutes for a broker node to come back; once one message
        // failed that, the broker is gone and the rest fail fast.
        let within = Duration::from_secs(if sent.unconfirmed == 0 { 120 } else { 5 });
        match sender.send(msg, within).await {
            Ok(()) => match item {
                Item::Good { .. } => {
                    sent.good.insert(id.clone());
                }
                Item::Poison { kind, .. } => sent.poison.push((id.clone(), *kind)),
            },
            Err(e) => {
                sent.unconfirmed += 1;
                sent.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    sender.close().await;
    sent
}
