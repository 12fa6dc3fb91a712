//! One scenario from start to end, isolated from the others: its own
//! database (created and dropped as tests/it/common does, with the sample
//! telemetry of `prepared_db` in tests/faults.rs) and broker namespace, two
//! `netra serve` workers, its reply queue, then the load with the faults
//! injected into it, the bounded wait for every run to settle, a final
//! marker request (every reply a run caused arrives before the marker's,
//! as in tests/faults.rs `replies_until`), the counts, and the cleanup —
//! which also happens, through drop guards, when the scenario fails.

use std::{
    path::PathBuf,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use netra::broker::{publisher::Outgoing, topology::Names};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    common::{self, database_url, duplicator::duplicate_every_phase_message},
    guards::{Cleanup, Task},
    poison,
    scenario::{Faults, Scenario},
    stack::{with_database, Stack},
    tally::{self, Tally},
    traffic::{self, Broker, Item, Plan, Replies, Sender},
    waits,
    workers::{supervise, Spec, Workers},
};

/// What every scenario runs with.
pub struct Env {
    pub stack: Stack,
    pub bin: PathBuf,
    pub log_dir: PathBuf,
    pub runs: usize,
    pub seed: u64,
    /// How long runs may take to settle after the last fault healed.
    pub settle: Duration,
}

/// A counted scenario.
pub struct Outcome {
    pub tally: Tally,
    pub notes: Vec<String>,
    /// Reasons it fails beyond the counts (messages never confirmed).
    pub failures: Vec<String>,
}

/// The good requests, in turn: three complete, the last one needs input
/// (a workload without telemetry).
const MESSAGES: [&str; 4] = [
    "Cut the cost of workload chat-prod",
    "Show the usage breakdown of workload chat-prod",
    "What is prompt caching?",
    "Cut the cost of workload chat-staging",
];

/// Runs one scenario.
pub async fn run(scenario: Scenario, env: &Env) -> Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(env.seed ^ fnv1a(scenario.name()));
    let (mut config, db) = common::test_config().await;
    let suffix = Uuid::new_v4().simple().to_string();
    config.namespace = format!("chaos-{}-{}", scenario.name(), &suffix[..8]);
    // The suite's own netra connections (the duplicator, the cleanup) go
    // to node 1, whatever NETRA_AMQP_URL lists.
    config.amqp_url = env.stack.node_url(1).to_string().into();
    let names = Names::new(&config.namespace);
    let reply_queue = format!("chaos.{}.replies", config.namespace);
    let cleanup = Cleanup {
        config: config.clone(),
        db: db.clone(),
        broker: Broker::new(&env.stack.amqp_urls, None),
        reply_queue: reply_queue.clone(),
        done: false,
    };

    let url = database_url(&config);
    let pool = netra::store::connect_url(&url, 4)
        .await
        .context("connecting to the scenario's database")?;
    netra::store::migrate(&pool)
        .await
        .context("migrating the scenario's database")?;
    common::load_sample(&pool, "chat-prod", 400).await;
    let foreign_thread = poison::foreign_thread(&pool).await?;
    pool.close().await;

    let worker_db = match (scenario.uses_standby(), &env.stack.database_urls) {
        (true, Some(both)) => with_database(both, &db),
        _ => url.clone(),
    };
    let workers = Arc::new(Mutex::new(Workers::start(
        Spec {
            bin: env.bin.clone(),
            amqp_urls: scenario.worker_amqp_urls(&env.stack),
            database_url: worker_db.clone(),
            namespace: config.namespace.clone(),
            log_dir: env.log_dir.clone(),
            label: scenario.name().to_string(),
        },
        2,
    )?));
    let _supervisor = Task::spawn(supervise(Arc::downgrade(&workers)));
    let probe = Broker::new(&env.stack.amqp_urls, None);
    waits::topology(&probe, &names, &env.log_dir).await?;

    let target = scenario.target(&env.stack, &names, &mut rng).await?;
    let broker = Broker::new(&env.stack.amqp_urls, target.node);
    let replies = Replies::open(broker.clone(), reply_queue.clone()).await?;
    let copies = Arc::new(AtomicU64::new(0));
    let _duplicator = match scenario {
        Scenario::Duplicates => Some(Task(Some(
            duplicate_every_phase_message(&config, copies.clone()).await,
        ))),
        _ => None,
    };
    let ctx = poison::Ctx {
        names: names.clone(),
        max_bytes: config.max_message_bytes,
        foreign_thread,
        phases: netra::agents::standard().phases(),
    };
    let plan = plan(scenario, env.runs, &ctx, &replies.queue, &mut rng);
    let (faults_done, done_rx) = watch::channel(false);
    let load = Task::spawn(traffic::publish(Sender::new(broker.clone()), plan, done_rx));

    let pool =
        waits::writable_db(&worker_db, tokio::time::Instant::now() + waits::START_BOUND).await?;
    waits::first_completion(&pool, &env.log_dir).await?;
    pool.close().await;
    let pause = rng.gen_range(200..1000);
    tokio::time::sleep(Duration::from_millis(pause)).await; // fault timing
    let mut faults = Faults {
        stack: &env.stack,
        workers: &workers,
        rng: &mut rng,
        target,
        heals: Vec::new(),
        notes: Vec::new(),
        restore: None,
    };
    let injected = faults.inject(scenario).await;
    let _ = faults_done.send(true);
    let Faults {
        heals,
        mut notes,
        restore,
        ..
    } = faults;
    injected?;
    let sent = load.join().await?;
    let mut failures = Vec::new();
    if sent.unconfirmed > 0 {
        failures.push(format!(
            "{} messages never confirmed ({})",
            sent.unconfirmed,
            sent.first_error.as_deref().unwrap_or("?")
        ));
    }

    let deadline = tokio::time::Instant::now() + env.settle;
    let pool = waits::writable_db(&worker_db, deadline).await?;
    tally::settle(&pool, &sent, &replies, deadline).await;
    if scenario == Scenario::Duplicates {
        if let Err(e) = waits::quiet(&probe, &names, &copies).await {
            notes.push(format!("{e:#}"));
        }
        let made = copies.load(std::sync::atomic::Ordering::Relaxed);
        notes.push(format!("{made} phase messages copied"));
    }
    let marker = format!("{}-marker", names.namespace());
    let mut sender = Sender::new(broker.clone());
    sender
        .send(
            &request(&names, &marker, MESSAGES[2], &replies.queue),
            Duration::from_secs(60),
        )
        .await?;
    sender.close().await;
    let marker_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while replies.count(&marker) == 0 && tokio::time::Instant::now() < marker_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if replies.count(&marker) == 0 {
        notes.push(
            "the final marker got no reply within 60 s: duplicated replies may be undercounted"
                .into(),
        );
    }
    let tally = tally::count(&pool, &sent, &replies.snapshot(), &heals, &marker).await?;
    pool.close().await;

    let exits = {
        let mut w = workers.lock().unwrap_or_else(|p| p.into_inner());
        w.kill_all();
        w.unexpected_exits
    };
    if let Some(restore) = restore {
        if let Err(e) = restore.now().await {
            failures.push(format!("restoring the stack: {e:#}"));
        }
    }
    if exits > 0 {
        notes.push(format!("{exits} unexpected worker exits (restarted)"));
    }
    if !sent.poison.is_empty() {
        notes.push(format!("{} poison published", sent.poison.len()));
    }
    notes.extend(
        tally
            .poison_misfiled
            .iter()
            .map(|m| format!("poison dead-lettered differently: {m}")),
    );
    let unmeasured = tally.recovery_ms.iter().filter(|r| r.is_none()).count();
    if unmeasured > 0 {
        notes.push(format!(
            "{unmeasured} faults saw no completion after healing"
        ));
    }
    replies.close().await;
    cleanup.finish().await;
    Ok(Outcome {
        tally,
        notes,
        failures,
    })
}

/// A stable hash of a scenario's name: each scenario draws from its own
/// sequence of the seed, whichever scenarios run with it.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A good request with message and correlation id `id`.
fn request(names: &Names, id: &str, message: &str, reply_to: &str) -> Outgoing {
    Outgoing {
        exchange: names.intake_exchange(),
        routing_key: String::new(),
        body: serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default(),
        message_id: Some(id.to_string()),
        correlation_id: Some(id.to_string()),
        reply_to: Some(reply_to.to_string()),
        headers: vec![],
    }
}

/// The scenario's load: `runs` good requests (each twice in `duplicates`,
/// the copy a few requests later; with poison at random places in
/// `poison`), the last tenth held back until the faults healed.
fn plan(
    scenario: Scenario,
    runs: usize,
    ctx: &poison::Ctx,
    reply_to: &str,
    rng: &mut StdRng,
) -> Plan {
    let ns = ctx.names.namespace();
    let mut items: Vec<Item> = (0..runs)
        .map(|i| {
            let id = format!("{ns}-r{i}");
            let message = request(
                &ctx.names,
                &id,
                MESSAGES[rng.gen_range(0..MESSAGES.len())],
                reply_to,
            );
            Item::Good { id, message }
        })
        .collect();
    match scenario {
        Scenario::Duplicates => {
            let mut out = Vec::with_capacity(2 * runs);
            let mut pending: Vec<(usize, Item)> = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                out.push(item.clone());
                pending.push((i + rng.gen_range(0..8), item));
                pending.retain(|(due, copy)| {
                    let now = *due <= i;
                    if now {
                        out.push(copy.clone());
                    }
                    !now
                });
            }
            out.extend(pending.into_iter().map(|(_, copy)| copy));
            items = out;
        }
        Scenario::Poison => {
            for (j, kind) in poison::kinds((runs / 5).max(8), rng)
                .into_iter()
                .enumerate()
            {
                let id = format!("{ns}-p{j}");
                let message = poison::message(kind, &id, ctx, rng);
                let at = rng.gen_range(0..=items.len());
                items.insert(at, Item::Poison { id, kind, message });
            }
        }
        _ => {}
    }
    let tail = (items.len() / 10).max(1).min(items.len());
    Plan {
        tail_from: items.len() - tail,
        items,
        window: scenario.window(),
    }
}
