//! netra-bench (`netra bench`): throughput, latency and memory of netra against a raw
//! lapin + Postgres baseline, on the local stack.
//!
//! One invocation:
//! 1. creates two fresh databases (netra's and the baseline's) and uses its
//!    own broker namespaces (`bench-<id>` and `bench-<id>-raw`);
//! 2. starts netra in-process (`netra::app::App::start`) without the HTTP
//!    API, loads a small sample workload, and reads the idle RSS;
//! 3. memory probe: publishes N requests at once and samples the RSS while
//!    they are in flight;
//! 4. closed loop: for each K, keeps K runs in flight against netra and
//!    against the raw baseline ([`raw`]), alternating which goes first,
//!    with a warm-up and a fixed measuring window per step;
//! 5. open loop: fixed arrival rates at fractions of netra's best closed-loop
//!    rate, latency from each run's intended start;
//! 6. flood (`--flood N`, off by default): a second tenant's latency alone
//!    and while the default tenant floods netra ([`flood`]);
//! 7. stops everything, deletes its queues and drops its databases (also on
//!    Ctrl-C), and prints a table or JSON.

mod driver;
mod flood;
mod raw;
mod report;
mod slow;
pub mod slow_server;
mod stats;
mod stub;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use lapin::types::ShortString;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use driver::{Client, Done, StepOutcome};
use netra::{
    app::{App, StartOptions},
    broker,
    config::Config,
};
use report::{ClosedRow, Memory, OpenRow, Report, Segment, StepReport, Totals};
use stats::{Latency, PgCounters};

/// The default request: an optimization, which runs all five phases.
pub const DEFAULT_REQUEST: &str =
    "Cut the cost of workload bench-w by 30% without pushing p95 latency over 3 s";

/// Which baseline to measure next to netra.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// A minimal lapin consumer/publisher doing one transaction per hop.
    Raw,
    /// netra only.
    None,
}

/// Which agents netra runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Agents {
    /// netra's five agents (the data agent queries the sample telemetry).
    Standard,
    /// Stubs that answer at once without the store: the engine alone.
    Stub,
}

/// Options of `netra bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON to this file (with the table on stdout).
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
    /// Baseline measured in the same invocation, alternating with netra.
    #[arg(long, value_enum, default_value_t = Baseline::Raw)]
    pub baseline: Baseline,
    /// The agents netra runs.
    #[arg(long, value_enum, default_value_t = Agents::Standard)]
    pub agents: Agents,
    /// Runs in flight of the closed-loop steps (`none`: no closed loop).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,128", value_parser = parse_k)]
    pub k: Vec<usize>,
    /// Warm-up of each step, seconds (not measured).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Measuring window of each step, seconds.
    #[arg(long, default_value_t = 8.0)]
    pub window: f64,
    /// Open-loop arrival rates as fractions of netra's best closed-loop rate
    /// (`none`: no open loop).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75", value_parser = parse_fraction)]
    pub open: Vec<f64>,
    /// Runs published at once for the memory probe (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub inflight: usize,
    /// Flood step, after the others: requests the default tenant (A)
    /// publishes at once while a second tenant (B) keeps `--flood-k` runs in
    /// flight, against B alone (0: skip). Use more than the fair budget
    /// (`--fair-in-flight`), so that A's runs wait for admission.
    #[arg(long, default_value_t = 0)]
    pub flood: usize,
    /// Runs tenant B keeps in flight in the flood step.
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub flood_k: usize,
    /// The runs in flight tenants share under fair admission
    /// (`config.fair.in_flight`) for the in-process netra (default: netra's,
    /// `NETRA_FAIR_IN_FLIGHT` or 1024).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub fair_in_flight: Option<u32>,
    /// Sample telemetry rows of the benchmark workload.
    #[arg(long, default_value_t = 200)]
    pub sample_rows: usize,
    /// Request text; repeat to cycle through a mix (default: an optimization
    /// request on the sample workload, which runs all five phases).
    #[arg(long = "request")]
    pub requests: Vec<String>,
    /// How long a step may take to drain its in-flight runs, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub drain: f64,
    /// A Postgres setting for both bench databases (`ALTER DATABASE … SET`),
    /// e.g. `default_toast_compression=lz4`, to try a tuning without code
    /// changes; repeatable.
    #[arg(long = "pg-set", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pub pg_set: Vec<(String, String)>,
    /// SQL run on netra's bench database after its migrations, before any
    /// load (e.g. an index or storage change under evaluation); repeatable.
    #[arg(long = "pg-exec", value_name = "SQL")]
    pub pg_exec: Vec<String>,
    /// Keep the databases (for inspection); the queues are deleted anyway.
    #[arg(long)]
    pub keep_db: bool,
    /// Slow-model mode, instead of the sweep: one worker whose triage asks a
    /// model that answers after `--model-delay`, at each of these numbers of
    /// runs in flight (e.g. `1000,5000,10000`).
    #[arg(long, value_delimiter = ',')]
    pub slow_model: Vec<usize>,
    /// The slow model's delay per call, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub model_delay: f64,
    /// Instead of a fixed delay, the same bound at every K: each step's
    /// delay is K ÷ this many runs/s.
    #[arg(long)]
    pub model_bound: Option<f64>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("use NAME=VALUE")?;
    let (k, v) = (k.trim(), v.trim());
    let ok_name = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    let ok_value = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok_name && ok_value {
        Ok((k.to_string(), v.to_string()))
    } else {
        Err(
            "NAME: lowercase letters, digits, '_', '.'; VALUE: letters, digits, '_', '.', '-'"
                .into(),
        )
    }
}

fn parse_k(s: &str) -> Result<usize, String> {
    match s.trim() {
        "" | "none" => Ok(0),
        v => v
            .parse::<usize>()
            .map_err(|e| format!("{e}"))
            .and_then(|k| {
                if k > 0 {
                    Ok(k)
                } else {
                    Err("use a positive K, or none".into())
                }
            }),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim() {
        "" | "none" => Ok(0.0),
        v => v.parse::<f64>().map_err(|e| format!("{e}")).and_then(|f| {
            if (0.0..=10.0).contains(&f) {
                Ok(f)
            } else {
                Err("use a fraction such as 0.5".into())
            }
        }),
    }
}

/// Everything that must be cleaned up, whatever happens.
struct Resources {
    admin_url: String,
    amqp_url: String,
    config: Config,
    netra_db: String,
    raw_db: String,
    raw_ns: String,
    /// In the names of both databases.
    marker: String,
    app: tokio::sync::Mutex<Option<App>>,
    raw: tokio::sync::Mutex<Option<raw::Raw>>,
    keep_db: bool,
}

fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, rest) = url
        .rsplit_once('/')
        .context("NETRA_DATABASE_URL has no database path")?;
    let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
    Ok(format!("{base}/{db}{query}"))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let base = Config::from_env()?;
    let id = Uuid::new_v4().simple().to_string()[..12].to_string();
    let admin_url = base.database_url.expose_secret().to_string();
    let mut config = base.clone();
    config.namespace = format!("bench-{id}");
    // The benchmark's requests carry no user_id: they belong to one tenant.
    config
        .amqp_default_tenant
        .get_or_insert_with(|| "bench".to_string());
    config.http_addr = "127.0.0.1:0".parse()?;
    config.shutdown_grace = Duration::from_secs(3);
    if let Some(m) = args.fair_in_flight {
        config.fair.in_flight = m;
    }
    let mut slow_server = None;
    if !args.slow_model.is_empty() {
        let server = slow::Server::spawn(secs(args.model_delay)).await?;
        slow::configure(&mut config, &args, &server.base_url);
        slow_server = Some(server);
    }
    let netra_db = format!("netra_bench_{id}");
    config.database_url = SecretString::from(with_database(&admin_url, &netra_db)?);
    let res = Arc::new(Resources {
        amqp_url: base.amqp_url.expose_secret().to_string(),
        admin_url,
        config,
        raw_db: format!("netra_bench_{id}_raw"),
        netra_db,
        raw_ns: format!("bench-{id}-raw"),
        marker: format!("netra_bench_{id}"),
        app: tokio::sync::Mutex::new(None),
        raw: tokio::sync::Mutex::new(None),
        keep_db: args.keep_db,
    });
    let outcome = tokio::select! {
        r = measure(&res, &args, slow_server.as_mut()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("bench: cleaning up (namespace {})", res.config.namespace);
    cleanup(&res).await;
    let (json, table) = outcome?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The sweep, or the slow-model mode: the report as JSON and as a table.
async fn measure(
    res: &Arc<Resources>,
    args: &BenchArgs,
    slow_server: Option<&mut slow::Server>,
) -> anyhow::Result<(String, String)> {
    match slow_server {
        Some(server) => {
            let report = slow::bench(res, args, server).await?;
            Ok((serde_json::to_string_pretty(&report)?, report.table()))
        }
        None => {
            let report = bench(res, args).await?;
            Ok((serde_json::to_string_pretty(&report)?, report.table()))
        }
    }
}

/// netra started in-process on fresh databases, with the sample workload,
/// and a load generator connected.
struct Setup {
    admin: PgPool,
    pool: PgPool,
    queue: String,
    client: Client,
}

impl Setup {
    /// Creates both databases, starts netra with `agents` (default: the
    /// standard five), loads the sample workload and connects the client.
    async fn start(
        res: &Arc<Resources>,
        args: &BenchArgs,
        agents: Option<netra::pipeline::agent::AgentSet>,
    ) -> anyhow::Result<Setup> {
        let admin = admin_pool(res).await?;
        for db in [&res.netra_db, &res.raw_db] {
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin)
                .await
                .with_context(|| format!("CREATE DATABASE {db} (the role needs CREATEDB)"))?;
            for (k, v) in &args.pg_set {
                sqlx::query(&format!("ALTER DATABASE {db} SET {k} = '{v}'"))
                    .execute(&admin)
                    .await
                    .with_context(|| format!("ALTER DATABASE {db} SET {k}"))?;
            }
        }
        let requests = request_texts(args);
        let bodies = requests
            .iter()
            .map(|m| serde_json::to_vec(&serde_json::json!({ "message": m })))
            .collect::<Result<Vec<_>, _>>()?;
        eprintln!(
            "bench: starting netra (namespace {}, database {})",
            res.config.namespace, res.netra_db
        );
        let opts = StartOptions {
            http: false,
            agents,
            ..StartOptions::default()
        };
        let app = App::start(res.config.clone(), opts)
            .await
            .context("starting netra (is the stack running?)")?;
        let engine = app.engine.clone();
        *res.app.lock().await = Some(app);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !engine.link.is_up() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "netra did not connect to RabbitMQ"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pool = engine.pool.clone();
        netra::sample::load(
            &pool,
            res.config.amqp_default_tenant.as_deref().unwrap_or("bench"),
            "bench-w",
            &netra::sample::chat("gpt-4o", args.sample_rows, 11),
        )
        .await?;
        for sql in &args.pg_exec {
            sqlx::raw_sql(sql)
                .execute(&pool)
                .await
                .with_context(|| format!("--pg-exec {sql}"))?;
        }
        // The supply catalog in Postgres, where the agents read it (idempotent).
        netra::agents::catalog::load_catalog(&pool).await?;
        // Statistics for the sample, as autovacuum would gather them within a
        // minute of a bulk load: without them the planner estimates one row and
        // the telemetry tools' window queries re-run their `max(ts)` per row
        // (about 45 times slower), and the sweep would measure whenever
        // autovacuum happens to analyze the table.
        sqlx::query("ANALYZE llm_requests, workloads")
            .execute(&pool)
            .await?;
        let queue = engine.names.requests();
        let client = Client::connect(&res.amqp_url, bodies).await?;
        Ok(Setup {
            admin,
            pool,
            queue,
            client,
        })
    }
}

/// Runs one request through every code path, then reads the idle RSS (KiB).
async fn idle_after_one_run(
    client: &mut Client,
    queue: &str,
    drain: Duration,
) -> anyhow::Result<u64> {
    let probe = driver::closed_loop(
        client,
        queue,
        1,
        Duration::ZERO,
        Duration::from_millis(1),
        drain,
    )
    .await?;
    anyhow::ensure!(
        probe.completed_total == 1,
        "the first run did not complete within {drain:?}: {:?}",
        probe.statuses
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(stats::rss_kib())
}

/// `--request`s, or the default request.
fn request_texts(args: &BenchArgs) -> Vec<String> {
    if args.requests.is_empty() {
        vec![DEFAULT_REQUEST.to_string()]
    } else {
        args.requests.clone()
    }
}

async fn admin_pool(res: &Resources) -> anyhow::Result<PgPool> {
    netra::store::connect_url(&res.admin_url, 2)
        .await
        .context("connecting to NETRA_DATABASE_URL (is the stack running?)")
}

async fn bench(res: &Arc<Resources>, args: &BenchArgs) -> anyhow::Result<Report> {
    let agents = (args.agents == Agents::Stub).then(stub::agents);
    let Setup {
        admin,
        pool,
        queue: netra_queue,
        mut client,
    } = Setup::start(res, args, agents).await?;
    let warmup = secs(args.warmup);
    let window = secs(args.window);
    let drain = secs(args.drain);
    let requests = request_texts(args);

    // Idle memory, after one run has touched every code path.
    let idle_rss = idle_after_one_run(&mut client, &netra_queue, drain).await?;
    let redis_url = res.config.redis_url.expose_secret().to_string();
    let redis_before = stats::redis_used_memory(&redis_url).await;
    let netra_start = PgCounters::read(&admin, &res.netra_db).await?;
    let mut netra_runs = 0u64;
    let mut memory = Memory {
        idle_rss_mib: kib_to_mib(idle_rss),
        ..Memory::default()
    };
    if args.inflight > 0 {
        eprintln!("bench: memory probe, {} runs at once", args.inflight);
        let (peak, at_full, done, took) = driver::burst(
            &mut client,
            &netra_queue,
            args.inflight,
            drain.max(secs(120.0)),
        )
        .await?;
        netra_runs += done;
        memory.burst_runs = args.inflight as u64;
        memory.burst_completed = done;
        memory.burst_seconds = took;
        memory.rss_all_in_flight_mib = kib_to_mib(at_full);
        memory.peak_rss_mib = kib_to_mib(peak);
        memory.rss_per_1000_in_flight_mib =
            kib_to_mib(peak.saturating_sub(idle_rss)) * 1000.0 / args.inflight as f64;
    }

    // The raw baseline, with netra's prefetch and pool size.
    if args.baseline == Baseline::Raw {
        let raw = raw::Raw::start(
            &res.amqp_url,
            &with_database(&res.admin_url, &res.raw_db)?,
            &res.raw_ns,
            res.config.default_concurrency,
            res.config.db_pool_size,
        )
        .await?;
        *res.raw.lock().await = Some(raw);
    }
    let raw_start = PgCounters::read(&admin, &res.raw_db).await?;
    let mut raw_runs = 0u64;
    let raw_queue = raw::RawNames::new(&res.raw_ns).requests();

    let mut closed = Vec::new();
    for (i, &k) in args.k.iter().filter(|&&k| k > 0).enumerate() {
        let mut order = vec![true];
        if args.baseline == Baseline::Raw {
            // Alternate which goes first so drift does not favour one.
            if i % 2 == 0 {
                order.push(false);
            } else {
                order.insert(0, false);
            }
        }
        let mut row = ClosedRow {
            k,
            netra: StepReport::default(),
            raw: None,
            ratio: None,
        };
        for is_netra in order {
            let (queue, db, label) = if is_netra {
                (&netra_queue, &res.netra_db, "netra")
            } else {
                (&raw_queue, &res.raw_db, "raw")
            };
            eprintln!("bench: closed loop K={k} {label}");
            let before = PgCounters::read(&admin, db).await?;
            let cpu0 = stats::Cpu::read(&res.marker);
            let out = driver::closed_loop(&mut client, queue, k, warmup, window, drain).await?;
            let cpu = stats::Cpu::read(&res.marker).per_run(&cpu0, out.completed_total);
            let after = PgCounters::read(&admin, db).await?;
            let delta = after.since(&before);
            let mut step = StepReport::from_outcome(&out, &delta);
            step.cpu = cpu;
            if is_netra {
                netra_runs += out.completed_total;
                let (segments, phases) = breakdown(&pool, &out.done).await?;
                step.segments = segments;
                step.phases_per_run = phases;
                row.netra = step;
            } else {
                raw_runs += out.completed_total;
                row.raw = Some(step);
            }
        }
        row.ratio = row
            .raw
            .as_ref()
            .filter(|r| r.runs_per_s > 0.0)
            .map(|r| row.netra.runs_per_s / r.runs_per_s);
        closed.push(row);
    }

    let saturation = closed
        .iter()
        .map(|r| r.netra.runs_per_s)
        .fold(0.0f64, f64::max);
    let mut open = Vec::new();
    for &f in &args.open {
        let rate = f * saturation;
        if rate <= 0.0 {
            continue;
        }
        eprintln!("bench: open loop {:.0}% = {rate:.1} runs/s", f * 100.0);
        let before = PgCounters::read(&admin, &res.netra_db).await?;
        let cpu0 = stats::Cpu::read(&res.marker);
        let out = driver::open_loop(&mut client, &netra_queue, rate, window, drain).await?;
        let cpu = stats::Cpu::read(&res.marker).per_run(&cpu0, out.completed_total);
        let after = PgCounters::read(&admin, &res.netra_db).await?;
        let delta = after.since(&before);
        netra_runs += out.completed_total;
        let mut step = StepReport::from_outcome(&out, &delta);
        step.cpu = cpu;
        let (segments, phases) = breakdown(&pool, &out.done).await?;
        step.segments = segments;
        step.phases_per_run = phases;
        open.push(OpenRow {
            fraction: f,
            target_runs_per_s: rate,
            netra: step,
        });
    }
    let mut flood = None;
    if args.flood > 0 {
        let (report, runs) =
            flood::step(res, args, &admin, &pool, &netra_queue, &mut client).await?;
        netra_runs += runs;
        flood = Some(report);
    }
    client.close().await;
    memory.hwm_mib = kib_to_mib(stats::hwm_kib());
    if let (Some(before), Some(after)) = (redis_before, stats::redis_used_memory(&redis_url).await)
    {
        memory.redis_growth_mib = after.saturating_sub(before) as f64 / 1024.0 / 1024.0;
    }

    // Totals: stop both so that every backend flushes its statistics.
    if let Some(app) = res.app.lock().await.take() {
        app.shutdown().await;
    }
    if let Some(raw) = res.raw.lock().await.take() {
        raw.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let netra_delta = PgCounters::read(&admin, &res.netra_db)
        .await?
        .since(&netra_start);
    let raw_delta = PgCounters::read(&admin, &res.raw_db)
        .await?
        .since(&raw_start);
    admin.close().await;

    let settings = report::Settings {
        namespace: res.config.namespace.clone(),
        warmup_s: args.warmup,
        window_s: args.window,
        prefetch: res.config.default_concurrency,
        db_pool: res.config.db_pool_size,
        sample_rows: args.sample_rows,
        requests,
        baseline: format!("{:?}", args.baseline).to_lowercase(),
        agents: format!("{:?}", args.agents).to_lowercase(),
        pg_settings: args
            .pg_set
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(args.pg_exec.iter().cloned())
            .collect(),
    };
    Ok(Report {
        machine: report::Machine::read(),
        settings,
        memory,
        closed,
        open,
        flood,
        totals: Totals {
            netra_runs,
            netra_commits_per_run: per(netra_delta.xact_commit, netra_runs),
            raw_runs,
            raw_commits_per_run: per(raw_delta.xact_commit, raw_runs),
        },
    })
}

fn per(n: i64, runs: u64) -> Option<f64> {
    (runs > 0).then(|| n as f64 / runs as f64)
}

fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

type AttemptTimes = (Uuid, DateTime<Utc>, String, DateTime<Utc>, DateTime<Utc>);

/// Where the end-to-end time of the window's runs went, from the runs and
/// phase_attempts tables: the request hop (client publish to the run row),
/// per phase the wait (previous commit, publish, queue, dedup check, start
/// transition, input load) and the run (agent and effect transaction up to
/// its commit), and the reply (last commit to the client's receipt).
async fn breakdown(pool: &PgPool, done: &[Done]) -> anyhow::Result<(Vec<Segment>, f64)> {
    let by_run: BTreeMap<Uuid, &Done> = done
        .iter()
        .filter_map(|d| d.run_id.map(|id| (id, d)))
        .collect();
    if by_run.is_empty() {
        return Ok((Vec::new(), 0.0));
    }
    let ids: Vec<Uuid> = by_run.keys().copied().collect();
    let rows: Vec<AttemptTimes> = sqlx::query_as(
        "SELECT r.id, r.created_at, pa.phase, pa.started_at, pa.finished_at \
         FROM runs r JOIN phase_attempts pa ON pa.run_id = r.id \
         WHERE r.id = ANY($1) ORDER BY r.id, pa.id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut order: Vec<String> = vec!["request".into()];
    let mut hists: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    let template = stats::histogram()?;
    let mut rec = |name: String, us: i64, order: &mut Vec<String>| {
        if !order.contains(&name) {
            order.push(name.clone());
        }
        stats::record_us(hists.entry(name).or_insert_with(|| template.clone()), us);
    };
    let us = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_microseconds().unwrap_or(0);
    let mut attempts = 0usize;
    let mut i = 0;
    while i < rows.len() {
        let run = rows[i].0;
        let created = rows[i].1;
        let Some(d) = by_run.get(&run) else {
            i += 1;
            continue;
        };
        rec("request".into(), us(d.start_wall, created), &mut order);
        let mut prev = created;
        while i < rows.len() && rows[i].0 == run {
            let (_, _, phase, started, finished) = &rows[i];
            rec(format!("{phase} wait"), us(prev, *started), &mut order);
            rec(format!("{phase} run"), us(*started, *finished), &mut order);
            prev = *finished;
            attempts += 1;
            i += 1;
        }
        let end_wall = d.start_wall
            + chrono::Duration::from_std(d.end.saturating_duration_since(d.start))
                .unwrap_or_default();
        rec("reply".into(), us(prev, end_wall), &mut order);
    }
    let mut segments: Vec<Segment> = order
        .into_iter()
        .filter(|n| n != "reply")
        .chain(std::iter::once("reply".to_string()))
        .filter_map(|name| {
            hists.get(&name).map(|h| Segment {
                name: name.clone(),
                latency: Latency::of(h),
            })
        })
        .collect();
    segments.dedup_by(|a, b| a.name == b.name);
    Ok((segments, attempts as f64 / by_run.len() as f64))
}

/// Stops netra and the baseline, deletes the namespaces' queues and drops
/// the databases. Every step is best effort.
async fn cleanup(res: &Resources) {
    if let Some(app) = res.app.lock().await.take() {
        app.shutdown().await;
    }
    if let Some(raw) = res.raw.lock().await.take() {
        raw.stop().await;
    }
    // Status cache and agent outputs under the namespace (TTL up to an hour).
    if let Err(e) =
        stats::redis_delete_namespace(res.config.redis_url.expose_secret(), &res.config.namespace)
            .await
    {
        eprintln!("bench: could not delete the namespace's Redis keys: {e}");
    }
    if let Ok(conn) = broker::connect_url(&res.amqp_url, "netra bench cleanup").await {
        let names = netra::broker::topology::Names::new(&res.config.namespace);
        netra::broker::topology::delete(&conn, &names, &netra::agents::standard().phases()).await;
        // The baseline's queues, if it was interrupted before it stopped.
        raw::delete_topology(&conn, &raw::RawNames::new(&res.raw_ns)).await;
        let _ = conn.close(200, ShortString::from("bye")).await;
    }
    if res.keep_db {
        eprintln!("bench: kept databases {} and {}", res.netra_db, res.raw_db);
        return;
    }
    if let Ok(admin) = admin_pool(res).await {
        for db in [&res.netra_db, &res.raw_db] {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&admin)
                .await;
        }
        admin.close().await;
    }
}

impl StepReport {
    fn from_outcome(out: &StepOutcome, delta: &PgCounters) -> Self {
        let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &out.statuses {
            statuses.insert(k.clone(), *v);
        }
        Self {
            runs_per_s: out.rate(),
            completed: out.completed,
            completed_step: out.completed_total,
            sent: out.sent,
            lost: out.lost,
            latency: Latency::of(&out.latency),
            statuses,
            commits_per_run: per(delta.xact_commit, out.completed_total),
            xids_per_run: per(delta.next_xid, out.completed_total),
            segments: Vec::new(),
            phases_per_run: 0.0,
            cpu: stats::CpuUse::default(),
        }
    }
}
