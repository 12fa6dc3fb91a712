//! `netra demo`: starts netra in-process on the local stack, loads sample
//! telemetry, publishes requests of each category to `<ns>.requests` with a
//! `reply_to` queue, prints the reports that come back, and shows a
//! `needs_input` conversation continued by a follow-up on its thread.

use crate::model::RunStatus;
use std::{collections::BTreeMap, time::Duration};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
    Channel, Connection, Consumer,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    app::{App, StartOptions},
    broker::{
        self,
        publisher::{Outgoing, Publisher},
    },
    config::Config,
    sample, store,
};

/// How long the demo waits for all replies.
const DEADLINE: Duration = Duration::from_secs(180);

/// A reply's label (which request it answers) and body.
type Outcome = (String, Value);

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    let (config, tenant) = demo_config()?;
    let app = App::start(config.clone(), StartOptions::default())
        .await
        .context("starting netra (is the stack running?)")?;
    if !app.wait_connected(Duration::from_secs(60)).await {
        bail!("netra did not connect to RabbitMQ within 60 s (is the stack running?)");
    }
    let pool = app.engine.pool.clone();
    println!(
        "netra demo: namespace {}, API on http://{}",
        app.engine.names.namespace(),
        app.http_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    load_samples(&pool, &tenant).await?;
    let gap_workload = format!("new-svc-{}", &Uuid::new_v4().simple().to_string()[..6]);

    let conn = broker::connect(&config, "netra demo client").await?;
    let mut client = Client::open(&conn, app.engine.names.intake_exchange()).await?;
    let pending = publish_requests(&client, &gap_workload).await?;
    let deadline = Instant::now() + DEADLINE;
    let mut outcomes = collect_replies(&mut client, pending, deadline).await?;
    if let Some((_, body)) = outcomes.iter().find(|(l, _)| l == "needs input") {
        let body = follow_up(&pool, &tenant, &gap_workload, &mut client, body, deadline).await?;
        outcomes.push(("follow-up".into(), body));
    }

    print_reports(&outcomes)?;
    if config.llm.enabled() {
        print_model_use(&pool, &outcomes).await?;
    }
    let failed = count_failed(&outcomes);
    print_where_to_look_next();
    let _ = conn.close(200, ShortString::from("bye")).await;
    app.shutdown().await;
    if failed > 0 {
        bail!("{failed} demo runs did not complete");
    }
    Ok(())
}

/// The settings from the environment, in the namespace `netra-demo` unless
/// one is set, with the HTTP API on a free port; and the tenant of the
/// demo's requests.
fn demo_config() -> anyhow::Result<(Config, String)> {
    let mut config = Config::from_env()?;
    if std::env::var("NETRA_NAMESPACE").is_err() {
        config.namespace = "netra-demo".into();
    }
    config.http_addr = "127.0.0.1:0".parse()?;
    // The demo's requests carry no user_id, so they need the deployment's
    // tenant for such requests (the local stack sets one; else "demo").
    let tenant = config
        .amqp_default_tenant
        .get_or_insert_with(|| "demo".to_string())
        .clone();
    Ok((config, tenant))
}

/// Loads the sample telemetry of the demo's workloads that have none yet.
async fn load_samples(pool: &PgPool, tenant: &str) -> anyhow::Result<()> {
    for (workload, spec) in [
        ("chat-prod", sample::chat("gpt-4o", 4000, 42)),
        ("support-bot", sample::chat("claude-3-5-sonnet", 1500, 7)),
    ] {
        if store::telemetry::request_count(pool, tenant, workload).await? == 0 {
            let n = sample::load(pool, tenant, workload, &spec).await?;
            println!("loaded {n} sample requests for workload {workload}");
        }
    }
    Ok(())
}

/// The demo's side of the broker: a publisher to the intake exchange and an
/// exclusive reply queue with its consumer.
struct Client {
    publisher: Publisher,
    replies: Consumer,
    reply_queue: String,
    exchange: String,
    /// The channel of the reply queue, open as long as the client.
    _channel: Channel,
}

impl Client {
    /// Declares the reply queue, consumes it and opens a publisher.
    async fn open(conn: &Connection, exchange: String) -> anyhow::Result<Self> {
        let channel = conn.create_channel().await?;
        let reply = channel
            .queue_declare(
                ShortString::from(""),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let replies = channel
            .basic_consume(
                reply.name().clone(),
                ShortString::from("demo"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            publisher: Publisher::open(conn).await?,
            replies,
            reply_queue: reply.name().as_str().to_string(),
            exchange,
            _channel: channel,
        })
    }

    /// Publishes a request to the intake exchange with a new correlation id
    /// (returned) and the reply queue as its `reply_to`.
    async fn publish(&self, body: &Value) -> anyhow::Result<String> {
        let cid = Uuid::new_v4().to_string();
        self.publisher
            .publish_routed(&Outgoing {
                exchange: self.exchange.clone(),
                routing_key: String::new(),
                body: serde_json::to_vec(body)?,
                message_id: Some(Uuid::new_v4().to_string()),
                correlation_id: Some(cid.clone()),
                reply_to: Some(self.reply_queue.clone()),
                headers: vec![],
            })
            .await?;
        Ok(cid)
    }

    /// The next reply, acked: its correlation id and body (`null` when it is
    /// not JSON); `None` when none came before `deadline`.
    async fn next_reply(&mut self, deadline: Instant) -> anyhow::Result<Option<(String, Value)>> {
        let next = tokio::time::timeout_at(deadline, self.replies.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            return Ok(None);
        };
        delivery.acker.ack(BasicAckOptions::default()).await?;
        let cid = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        Ok(Some((cid, body)))
    }
}

/// The demo's requests, one of each category, with their labels.
fn requests(gap_workload: &str) -> [(&'static str, Value); 4] {
    [
        (
            "optimization",
            json!({"message": "Cut the cost of workload chat-prod by 30% without pushing p95 latency over 3 s"}),
        ),
        (
            "analysis",
            json!({"message": "Show the usage breakdown of workload support-bot for the last 7 days"}),
        ),
        (
            "question",
            json!({"message": "What is prompt caching and when does it pay off?"}),
        ),
        (
            "needs input",
            json!({"message": format!("Reduce the cost of workload {gap_workload}")}),
        ),
    ]
}

/// Publishes the demo's requests; returns their labels by correlation id.
async fn publish_requests(
    client: &Client,
    gap_workload: &str,
) -> anyhow::Result<BTreeMap<String, &'static str>> {
    let mut pending = BTreeMap::new();
    for (label, body) in &requests(gap_workload) {
        let cid = client.publish(body).await?;
        println!("published {label:>12} request, correlation id {cid}");
        pending.insert(cid, *label);
    }
    Ok(pending)
}

/// Waits for a reply to every pending request, in the order they come.
async fn collect_replies(
    client: &mut Client,
    mut pending: BTreeMap<String, &'static str>,
    deadline: Instant,
) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    while !pending.is_empty() {
        let Some((cid, body)) = client.next_reply(deadline).await? else {
            bail!("timed out waiting for {} replies", pending.len());
        };
        if let Some(label) = pending.remove(&cid) {
            println!("reply for {label:>12}: status {}", status(&body));
            outcomes.push((label.to_string(), body));
        }
    }
    Ok(outcomes)
}

/// Continues the needs_input conversation of the run that `body` answered:
/// the data arrives, the user follows up on the run's thread. Returns the
/// follow-up's reply.
async fn follow_up(
    pool: &PgPool,
    tenant: &str,
    gap_workload: &str,
    client: &mut Client,
    body: &Value,
    deadline: Instant,
) -> anyhow::Result<Value> {
    let run_id: Uuid = body["run_id"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .context("reply without run id")?;
    let run = store::runs::get(pool, run_id)
        .await?
        .context("run vanished")?;
    let n = sample::load(
        pool,
        tenant,
        gap_workload,
        &sample::chat("gpt-4o-mini", 800, 3),
    )
    .await?;
    println!(
        "\nloaded {n} requests for {gap_workload}; following up on thread {}",
        run.thread_id
    );
    client
        .publish(&json!({"message": "The telemetry is loaded now, please go ahead.", "thread_id": run.thread_id}))
        .await?;
    let Some((_, body)) = client.next_reply(deadline).await? else {
        bail!("timed out waiting for the follow-up")
    };
    println!("reply for    follow-up: status {}", status(&body));
    Ok(body)
}

/// A reply's status, `?` when it has none.
fn status(body: &Value) -> &str {
    body["status"].as_str().unwrap_or("?")
}

/// Prints each reply's report (its JSON when it has no report).
fn print_reports(outcomes: &[Outcome]) -> anyhow::Result<()> {
    for (label, body) in outcomes {
        println!(
            "\n===================== {label}: {} =====================",
            status(body)
        );
        match body["result"]["markdown"].as_str() {
            Some(md) => println!("{md}"),
            None => println!("{}", serde_json::to_string_pretty(body)?),
        }
    }
    Ok(())
}

/// With a model configured: which phases of each run used it, with tokens,
/// latency and cost, from the call ledger.
async fn print_model_use(pool: &PgPool, outcomes: &[Outcome]) -> anyhow::Result<()> {
    println!("\n===================== the language model =====================");
    for (label, body) in outcomes {
        let Some(run_id) = body["run_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
            continue;
        };
        let calls = store::ledger::calls_of_run(pool, run_id).await?;
        println!("{label}:");
        if calls.is_empty() {
            println!("  no model call (the embedded analyst answered every phase)");
        }
        for c in &calls {
            let how = match (&c.call.error, c.call.reused_from) {
                (Some(e), _) => format!("failed: {e}"),
                (None, Some(from)) => format!("reused the answer of call {from}"),
                (None, None) => format!(
                    "{} + {} tokens, {:.0} ms, {}",
                    c.call.input_tokens,
                    c.call.output_tokens,
                    c.call.latency_ms,
                    c.call.cost_usd.map_or_else(
                        || "self-hosted (no price)".to_string(),
                        |u| format!("${u:.6}")
                    )
                ),
            };
            println!(
                "  {} {} ({}, {}): {how}",
                c.phase, c.call.purpose, c.call.model, c.call.prompt_version
            );
        }
        let note = &body["result"]["model"];
        if note.is_object() {
            println!(
                "  report prose: {}",
                if note["used"] == true {
                    "written by the model (every number grounded)"
                } else {
                    note["fallback"].as_str().unwrap_or("the template")
                }
            );
        }
    }
    Ok(())
}

/// How many replies are not of a run that ended with a result.
fn count_failed(outcomes: &[Outcome]) -> usize {
    outcomes
        .iter()
        .filter(|(_, b)| {
            let status = b["status"]
                .as_str()
                .and_then(|s| s.parse::<RunStatus>().ok());
            !status.is_some_and(RunStatus::has_result)
        })
        .count()
}

/// Prints the commands to try after the demo.
fn print_where_to_look_next() {
    println!("\nWhere to look next:");
    println!("  psql \"$NETRA_DATABASE_URL\" -c 'select status, count(*) from runs group by 1'");
    println!("  netra serve            # run the worker and the API (see README)");
    println!("  netra tenant create me --reason 'trying netra' # then: netra submit --token … --wait \"Cut the cost of workload chat-prod\"");
    println!("  netra dlq groups       # failures, grouped");
}
