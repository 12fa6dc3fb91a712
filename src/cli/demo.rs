//! `netra demo`: starts netra in-process on the local stack, loads sample
//! telemetry, publishes requests of each category to `<ns>.requests` with a
//! `reply_to` queue, prints the reports that come back, and shows a
//! `needs_input` conversation continued by a follow-up on its thread.

use crate::model::RunStatus;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use serde_json::{json, Value};
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

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
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
    let app = App::start(config.clone(), StartOptions::default())
        .await
        .context("starting netra (is the stack running?)")?;
    let pool = app.engine.pool.clone();
    println!(
        "netra demo: namespace {}, API on http://{}",
        app.engine.names.namespace(),
        app.http_addr.map(|a| a.to_string()).unwrap_or_default()
    );

    for (workload, spec) in [
        ("chat-prod", sample::chat("gpt-4o", 4000, 42)),
        ("support-bot", sample::chat("claude-3-5-sonnet", 1500, 7)),
    ] {
        if store::telemetry::request_count(&pool, &tenant, workload).await? == 0 {
            let n = sample::load(&pool, &tenant, workload, &spec).await?;
            println!("loaded {n} sample requests for workload {workload}");
        }
    }
    let gap_workload = format!("new-svc-{}", &Uuid::new_v4().simple().to_string()[..6]);

    let conn = broker::connect(&config, "netra demo client").await?;
    let ch = conn.create_channel().await?;
    let reply = ch
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
    let reply_queue = reply.name().as_str().to_string();
    let mut replies = ch
        .basic_consume(
            reply.name().clone(),
            ShortString::from("demo"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let publisher = Publisher::open(&conn).await?;
    let requests = [
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
    ];
    let mut pending = std::collections::BTreeMap::new();
    for (label, body) in &requests {
        let cid = Uuid::new_v4().to_string();
        publisher
            .publish_routed(&Outgoing {
                exchange: app.engine.names.intake_exchange(),
                routing_key: String::new(),
                body: serde_json::to_vec(body)?,
                message_id: Some(Uuid::new_v4().to_string()),
                correlation_id: Some(cid.clone()),
                reply_to: Some(reply_queue.clone()),
                headers: vec![],
            })
            .await?;
        println!("published {label:>12} request, correlation id {cid}");
        pending.insert(cid, *label);
    }

    let mut outcomes: Vec<(String, Value)> = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !pending.is_empty() {
        let next = tokio::time::timeout_at(deadline, replies.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            bail!("timed out waiting for {} replies", pending.len());
        };
        delivery.acker.ack(BasicAckOptions::default()).await?;
        let cid = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        if let Some(label) = pending.remove(&cid) {
            println!(
                "reply for {label:>12}: status {}",
                body["status"].as_str().unwrap_or("?")
            );
            outcomes.push((label.to_string(), body));
        }
    }

    // Continue the needs_input conversation: the data arrives, the user follows up.
    if let Some((_, body)) = outcomes.iter().find(|(l, _)| l == "needs input") {
        let run_id: Uuid = body["run_id"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .context("reply without run id")?;
        let run = store::runs::get(&pool, run_id)
            .await?
            .context("run vanished")?;
        let n = sample::load(
            &pool,
            &tenant,
            &gap_workload,
            &sample::chat("gpt-4o-mini", 800, 3),
        )
        .await?;
        println!(
            "\nloaded {n} requests for {gap_workload}; following up on thread {}",
            run.thread_id
        );
        let cid = Uuid::new_v4().to_string();
        publisher
            .publish_routed(&Outgoing {
                exchange: app.engine.names.intake_exchange(),
                routing_key: String::new(),
                body: serde_json::to_vec(&json!({"message": "The telemetry is loaded now, please go ahead.", "thread_id": run.thread_id}))?,
                message_id: Some(Uuid::new_v4().to_string()),
                correlation_id: Some(cid.clone()),
                reply_to: Some(reply_queue.clone()),
                headers: vec![],
            })
            .await?;
        let next = tokio::time::timeout_at(deadline, replies.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            bail!("timed out waiting for the follow-up")
        };
        delivery.acker.ack(BasicAckOptions::default()).await?;
        let body: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        println!(
            "reply for    follow-up: status {}",
            body["status"].as_str().unwrap_or("?")
        );
        outcomes.push(("follow-up".into(), body));
    }

    for (label, body) in &outcomes {
        println!(
            "\n===================== {label}: {} =====================",
            body["status"].as_str().unwrap_or("?")
        );
        match body["result"]["markdown"].as_str() {
            Some(md) => println!("{md}"),
            None => println!("{}", serde_json::to_string_pretty(body)?),
        }
    }
    let failed = outcomes
        .iter()
        .filter(|(_, b)| {
            let status = b["status"]
                .as_str()
                .and_then(|s| s.parse::<RunStatus>().ok());
            !status.is_some_and(RunStatus::has_result)
        })
        .count();
    println!("\nWhere to look next:");
    println!("  psql \"$NETRA_DATABASE_URL\" -c 'select status, count(*) from runs group by 1'");
    println!("  netra serve            # run the worker and the API (see README)");
    println!("  netra tenant create me # then: netra submit --token … --wait \"Cut the cost of workload chat-prod\"");
    println!("  netra dlq groups       # failures, grouped");
    let _ = conn.close(200, ShortString::from("bye")).await;
    app.shutdown().await;
    if failed > 0 {
        bail!("{failed} demo runs did not complete");
    }
    Ok(())
}
