//! The load generator: publishes requests to a `<ns>.requests` queue with
//! `reply_to` set to an exclusive reply queue and a fresh correlation id,
//! and matches the replies. The same client drives netra and the raw
//! baseline, so both pay the same client-side costs.
//!
//! - closed loop: K requests in flight; a reply triggers the next request;
//! - open loop: requests at fixed intended start times; latency is measured
//!   from the intended start, so a stalled system is charged for every run
//!   it delayed (no coordinated omission);
//! - burst: N requests at once (the memory probe);
//! - flood: N requests at once, returning once all are confirmed.
//!
//! A client publishes without `user_id` (the deployment's default tenant),
//! or, from [`Client::connect_as`], with `user_id` set to the connection's
//! broker user and its reply queue under that user's reply prefix.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::{
    options::{BasicConsumeOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
    Connection,
};
use serde::Deserialize;
use tokio::{
    sync::mpsc,
    time::{sleep_until, Instant},
};
use uuid::Uuid;

use super::stats;
use netra::broker::{
    self,
    publisher::{Outgoing, Published, Publisher},
};

/// A finished request, as the client saw it.
#[derive(Debug, Clone)]
pub struct Done {
    /// Intended start (closed loop: the submit time).
    pub start: Instant,
    /// Wall-clock time of the intended start.
    pub start_wall: DateTime<Utc>,
    /// When the reply arrived.
    pub end: Instant,
    /// The run, from the reply body.
    pub run_id: Option<Uuid>,
    /// Final status from the reply body (`publish_failed` when the request
    /// never reached the broker).
    pub status: String,
}

struct Pending {
    start: Instant,
    start_wall: DateTime<Utc>,
}

#[derive(Deserialize)]
struct ReplyBody {
    #[serde(default)]
    run_id: Option<Uuid>,
    #[serde(default)]
    status: Option<String>,
}

/// A connection with a confirm-mode publisher and an exclusive reply queue.
pub struct Client {
    conn: Connection,
    publisher: Publisher,
    reply_queue: String,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    reader: tokio::task::JoinHandle<()>,
    bodies: Vec<Vec<u8>>,
    next_body: usize,
    /// The `user_id` property of every request (None: none).
    user_id: Option<String>,
}

impl Client {
    /// Connects and starts consuming a server-named reply queue; requests
    /// carry no `user_id`.
    pub async fn connect(amqp_url: &str, bodies: Vec<Vec<u8>>) -> anyhow::Result<Self> {
        Self::open(amqp_url, bodies, String::new(), None).await
    }

    /// Connects as a tenant's broker user: requests carry `user_id` = `user`
    /// (RabbitMQ refuses it unless it is the connection's user) and the
    /// reply queue is `<reply_prefix><uuid>`.
    pub async fn connect_as(
        amqp_url: &str,
        bodies: Vec<Vec<u8>>,
        reply_prefix: &str,
        user: &str,
    ) -> anyhow::Result<Self> {
        let name = format!("{reply_prefix}{}", Uuid::new_v4().simple());
        Self::open(amqp_url, bodies, name, Some(user.to_string())).await
    }

    async fn open(
        amqp_url: &str,
        bodies: Vec<Vec<u8>>,
        reply_queue: String,
        user_id: Option<String>,
    ) -> anyhow::Result<Self> {
        let conn = broker::connect_url(amqp_url, "netra bench client").await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                ShortString::from(reply_queue),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let reply_queue = q.name().as_str().to_string();
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                ShortString::from("bench-replies"),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let publisher = Publisher::open(&conn).await?;
        let pending: Arc<Mutex<HashMap<String, Pending>>> = Arc::default();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (p, tx) = (pending.clone(), done_tx.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let end = Instant::now();
                let Some(cid) = d.properties.correlation_id().as_ref() else {
                    continue;
                };
                let Some(pend) = p.lock().ok().and_then(|mut m| m.remove(cid.as_str())) else {
                    // A duplicate reply (a republished final step): ignored.
                    continue;
                };
                let body: Option<ReplyBody> = serde_json::from_slice(&d.data).ok();
                let (run_id, status) = match body {
                    Some(b) => (b.run_id, b.status.unwrap_or_else(|| "unknown".into())),
                    None => (None, "undecodable_reply".into()),
                };
                let _ = tx.send(Done {
                    start: pend.start,
                    start_wall: pend.start_wall,
                    end,
                    run_id,
                    status,
                });
            }
        });
        anyhow::ensure!(!bodies.is_empty(), "no request bodies");
        Ok(Self {
            conn,
            publisher,
            reply_queue,
            pending,
            done_tx,
            done_rx,
            reader,
            bodies,
            next_body: 0,
            user_id,
        })
    }

    /// Publishes one request to `queue` (the publish and its confirm run in
    /// their own task); `start` is the intended start.
    pub fn submit(&mut self, queue: &str, start: Instant) {
        drop(self.submit_task(queue, start));
    }

    /// Publishes `n` requests to `queue` at once and returns when every
    /// publish is confirmed (or failed): how many were confirmed.
    pub async fn flood(&mut self, queue: &str, n: usize) -> u64 {
        let tasks: Vec<_> = (0..n)
            .map(|_| self.submit_task(queue, Instant::now()))
            .collect();
        let mut confirmed = 0u64;
        for t in tasks {
            if matches!(t.await, Ok(true)) {
                confirmed += 1;
            }
        }
        confirmed
    }

    /// [`Client::submit`]; the task's result is true once the publish is
    /// confirmed and routed.
    fn submit_task(&mut self, queue: &str, start: Instant) -> tokio::task::JoinHandle<bool> {
        let cid = Uuid::new_v4().to_string();
        let start_wall =
            Utc::now() - chrono::Duration::from_std(start.elapsed()).unwrap_or_default();
        if let Ok(mut m) = self.pending.lock() {
            m.insert(cid.clone(), Pending { start, start_wall });
        }
        let body = self.bodies[self.next_body % self.bodies.len()].clone();
        self.next_body = self.next_body.wrapping_add(1);
        let msg = Outgoing {
            exchange: String::new(),
            routing_key: queue.to_string(),
            body,
            message_id: Some(Uuid::new_v4().to_string()),
            correlation_id: Some(cid.clone()),
            reply_to: Some(self.reply_queue.clone()),
            headers: vec![],
        };
        let (publisher, pending, tx, user) = (
            self.publisher.clone(),
            self.pending.clone(),
            self.done_tx.clone(),
            self.user_id.clone(),
        );
        tokio::spawn(async move {
            let outcome = match publisher.publish_as(&msg, user.as_deref()).await {
                Ok(Published::Confirmed) => Ok(()),
                Ok(Published::Unroutable) => Err("unroutable".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let confirmed = outcome.is_ok();
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "bench request not published");
                let removed = pending.lock().ok().and_then(|mut m| m.remove(&cid));
                if let Some(p) = removed {
                    let _ = tx.send(Done {
                        start: p.start,
                        start_wall: p.start_wall,
                        end: Instant::now(),
                        run_id: None,
                        status: "publish_failed".into(),
                    });
                }
            }
            confirmed
        })
    }

    /// Forgets requests still pending (after a drain timeout).
    pub fn forget_pending(&mut self) -> usize {
        let n = self
            .pending
            .lock()
            .map(|mut m| {
                let n = m.len();
                m.clear();
                n
            })
            .unwrap_or(0);
        while self.done_rx.try_recv().is_ok() {}
        n
    }

    /// The next finished request, or None at `deadline`.
    pub async fn next_done(&mut self, deadline: Instant) -> Option<Done> {
        tokio::select! {
            d = self.done_rx.recv() => d,
            _ = sleep_until(deadline) => None,
        }
    }

    /// A finished request if one is there, without waiting.
    pub fn try_next_done(&mut self) -> Option<Done> {
        self.done_rx.try_recv().ok()
    }

    /// Closes the connection (the reply queue goes with it).
    pub async fn close(self) {
        self.reader.abort();
        let _ = self.conn.close(200, ShortString::from("bye")).await;
    }
}

/// What one load step produced.
pub struct StepOutcome {
    /// Requests that completed inside the measuring window.
    pub completed: u64,
    /// Every request that completed during the step (warm-up and drain too).
    pub completed_total: u64,
    /// Length of the measuring window.
    pub window: Duration,
    /// End-to-end latency of the requests completed in the window.
    pub latency: Histogram<u64>,
    /// Finished requests of the window (for the per-phase breakdown).
    pub done: Vec<Done>,
    /// Final statuses of the window's requests.
    pub statuses: HashMap<String, u64>,
    /// Requests given up on after the drain timeout.
    pub lost: u64,
    /// Requests sent during the step.
    pub sent: u64,
}

impl StepOutcome {
    fn new(window: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            completed: 0,
            completed_total: 0,
            window,
            latency: stats::histogram()?,
            done: Vec::new(),
            statuses: HashMap::new(),
            lost: 0,
            sent: 0,
        })
    }

    fn count(&mut self, d: Done, in_window: bool, keep: bool) {
        self.completed_total += 1;
        if in_window {
            self.completed += 1;
            stats::record(&mut self.latency, d.end.saturating_duration_since(d.start));
            *self.statuses.entry(d.status.clone()).or_default() += 1;
            if keep {
                self.done.push(d);
            }
        }
    }

    /// Completions per second inside the window.
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Keeps `k` requests in flight for `warmup + measure`, then drains.
pub async fn closed_loop(
    client: &mut Client,
    queue: &str,
    k: usize,
    warmup: Duration,
    measure: Duration,
    drain: Duration,
) -> anyhow::Result<StepOutcome> {
    closed_loop_ramped(client, queue, k, Duration::ZERO, warmup, measure, drain).await
}

/// [`closed_loop`], with the first `k` requests spread evenly over `ramp`
/// (part of the warm-up) instead of sent at once: with slow calls, K sent
/// together would come back together, and the system would see waves of K
/// instead of a steady K in flight.
pub async fn closed_loop_ramped(
    client: &mut Client,
    queue: &str,
    k: usize,
    ramp: Duration,
    warmup: Duration,
    measure: Duration,
    drain: Duration,
) -> anyhow::Result<StepOutcome> {
    let t0 = Instant::now();
    let warm_end = t0 + warmup;
    let end = warm_end + measure;
    let mut out = StepOutcome::new(measure)?;
    let step = ramp
        .checked_div(u32::try_from(k.max(1)).unwrap_or(u32::MAX))
        .unwrap_or_default();
    let mut started = 0usize;
    let mut in_flight = 0usize;
    let hard_end = end + drain;
    while started < k || in_flight > 0 {
        let next_start =
            (started < k).then(|| t0 + step * u32::try_from(started).unwrap_or(u32::MAX));
        let done = match next_start {
            Some(at) if at <= Instant::now() => None,
            Some(at) => tokio::select! {
                biased;
                d = client.done_rx.recv() => Some(d),
                _ = sleep_until(at) => None,
            },
            None => Some(client.next_done(hard_end).await),
        };
        match done {
            None => {
                client.submit(queue, Instant::now());
                out.sent += 1;
                started += 1;
                in_flight += 1;
            }
            Some(None) => break,
            Some(Some(d)) => {
                in_flight -= 1;
                let in_window = d.end >= warm_end && d.end < end;
                out.count(d, in_window, true);
                if Instant::now() < end {
                    client.submit(queue, Instant::now());
                    out.sent += 1;
                    in_flight += 1;
                }
            }
        }
    }
    out.lost = client.forget_pending() as u64;
    Ok(out)
}

/// Sends requests at `rate` per second for `measure`, at fixed intended
/// start times, then drains. Every request sent is in the window.
pub async fn open_loop(
    client: &mut Client,
    queue: &str,
    rate: f64,
    measure: Duration,
    drain: Duration,
) -> anyhow::Result<StepOutcome> {
    anyhow::ensure!(rate > 0.0, "open-loop rate must be positive");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let n = (measure.as_secs_f64() * rate).round().max(1.0) as u64;
    let t0 = Instant::now();
    let mut out = StepOutcome::new(measure)?;
    let mut sent = 0u64;
    let mut finished = 0u64;
    let hard_end = t0 + measure + drain;
    loop {
        if sent < n {
            let intended = t0 + interval.mul_f64(sent as f64);
            tokio::select! {
                biased;
                _ = sleep_until(intended) => {
                    client.submit(queue, intended);
                    sent += 1;
                }
                d = client.done_rx.recv() => {
                    let Some(d) = d else { break };
                    finished += 1;
                    out.count(d, true, true);
                }
            }
        } else {
            if finished >= sent {
                break;
            }
            let Some(d) = client.next_done(hard_end).await else {
                break;
            };
            finished += 1;
            out.count(d, true, true);
        }
    }
    out.sent = sent;
    // The achieved rate is completions over the time the arrivals spanned.
    out.window = interval.mul_f64(n as f64);
    out.lost = client.forget_pending() as u64;
    Ok(out)
}

/// Sends `n` requests at once and samples this process's RSS until they
/// are all answered. Returns (peak RSS KiB, RSS KiB once all were sent and
/// confirmed or at the first reply, completions, seconds).
pub async fn burst(
    client: &mut Client,
    queue: &str,
    n: usize,
    drain: Duration,
) -> anyhow::Result<(u64, u64, u64, f64)> {
    let t0 = Instant::now();
    for _ in 0..n {
        client.submit(queue, Instant::now());
    }
    let mut peak = stats::rss_kib();
    let mut at_full = 0u64;
    let mut finished = 0u64;
    let hard_end = t0 + drain;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while (finished as usize) < n {
        tokio::select! {
            d = client.done_rx.recv() => {
                if d.is_none() { break; }
                if finished == 0 {
                    at_full = at_full.max(stats::rss_kib());
                }
                finished += 1;
            }
            _ = tick.tick() => {
                let rss = stats::rss_kib();
                peak = peak.max(rss);
                if finished == 0 {
                    at_full = rss;
                }
                if Instant::now() > hard_end { break; }
            }
        }
    }
    client.forget_pending();
    Ok((peak, at_full, finished, t0.elapsed().as_secs_f64()))
}
