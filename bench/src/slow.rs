//! `netra bench --slow-model K,…`: in-flight capacity with slow model calls
//! (one worker).
//!
//! Triage asks a model ([`crate::slow_server`], a child process) that
//! answers every call after a delay, through netra's own model client and
//! ledger; the other phases run `--agents` (with `stub`, the engine's own
//! cost is all that follows the call). For each K the
//! closed loop keeps K runs in flight, and a run's time is dominated by the
//! delay, so the most the worker can complete is the bound K ÷ delay (the
//! K start spread over one delay, so that they do not come back in waves).
//! The
//! step reports runs/s against that bound, the worker's RSS while the K runs
//! are in flight (sampled through the window; the model's sockets are in the
//! child), per 1,000 in flight, and the model calls per completed run (1.0:
//! nobody asked twice).

use std::{process::Stdio, sync::Arc, time::Duration};

use anyhow::Context;
use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    time::Instant,
};

use super::{driver, report::Machine, secs, stats, BenchArgs, Resources, Setup};
use netra::{config::Config, model::Phase};
use stats::Latency;

/// The slow model, a child process.
pub struct Server {
    /// Its base URL, up to `/v1`.
    pub base_url: String,
    stdin: ChildStdin,
    _child: Child,
}

impl Server {
    /// Starts `netra-bench --serve-slow-model MS` (this binary) and reads
    /// its address.
    pub async fn spawn(delay: Duration) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut child = Command::new(exe)
            .arg("--serve-slow-model")
            .arg(delay.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the slow model")?;
        let stdout = child.stdout.take().context("the slow model's stdout")?;
        let stdin = child.stdin.take().context("the slow model's stdin")?;
        let mut first = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut first),
        )
        .await
        .context("the slow model did not start within 10 s")??;
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("the slow model printed {first:?}"))?;
        Ok(Server {
            base_url: format!("http://{addr}/v1"),
            stdin,
            _child: child,
        })
    }

    /// Sets the delay of the calls that arrive from now on.
    pub async fn set_delay(&mut self, delay: Duration) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("{}\n", delay.as_millis()).as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

/// The delay of the step with `k` in flight: `--model-bound` makes the
/// bound the same at every K (delay = K ÷ bound); otherwise `--model-delay`.
pub fn delay_for(args: &BenchArgs, k: usize) -> Duration {
    match args.model_bound {
        Some(bound) if bound > 0.0 => secs(k as f64 / bound),
        _ => secs(args.model_delay),
    }
}

/// netra asks the slow model at `base_url` in triage, K calls at once.
pub fn configure(config: &mut Config, args: &BenchArgs, base_url: &str) {
    let max_k = args.slow_model.iter().copied().max().unwrap_or(1);
    let longest = args
        .slow_model
        .iter()
        .map(|&k| delay_for(args, k))
        .max()
        .unwrap_or_default();
    config.llm.base_url = Some(base_url.to_string());
    config.llm.model = "bench-slow".into();
    config.llm.phases = vec![Phase::Triage];
    config.llm.timeout = longest + Duration::from_secs(30);
    // A failed call fails the phase (no silent fallback to the analyst).
    config.llm.fallback = netra::llm::config::Fallback::Fail;
    let triage = u16::try_from(max_k).unwrap_or(u16::MAX);
    config.concurrency.insert("triage".into(), triage);
    config
        .phase_timeouts
        .insert("triage".into(), longest * 2 + Duration::from_secs(60));
}

/// One K.
#[derive(Debug, Clone, Serialize)]
pub struct SlowRow {
    /// Runs in flight.
    pub k: usize,
    /// The model's delay, s.
    pub delay_s: f64,
    /// K ÷ delay, runs/s.
    pub bound_runs_per_s: f64,
    /// Completions per second in the window.
    pub runs_per_s: f64,
    /// runs/s ÷ bound.
    pub of_bound: f64,
    /// Completions in the window.
    pub completed: u64,
    /// Requests sent but never answered within the drain.
    pub lost: u64,
    /// Client publish to reply.
    pub latency: Latency,
    /// Median RSS of this process (netra and the load generator) in the
    /// window, MiB.
    pub rss_mib: f64,
    /// Highest RSS in the window, MiB.
    pub rss_peak_mib: f64,
    /// (median RSS − idle RSS) per 1,000 runs in flight, MiB.
    pub rss_per_1000_mib: f64,
    /// Most open file descriptors of this process in the window.
    pub fds: u64,
    /// Model calls (not ledger hits) per run completed in the step.
    pub calls_per_run: f64,
    /// Final statuses of the step's runs.
    pub statuses: std::collections::BTreeMap<String, u64>,
}

/// The result of the slow-model mode.
#[derive(Debug, Clone, Serialize)]
pub struct SlowReport {
    /// Where it ran.
    pub machine: Machine,
    /// The agents after triage.
    pub agents: String,
    /// Triage's concurrency (prefetch).
    pub triage_concurrency: usize,
    /// RSS after start-up and one run, MiB.
    pub idle_rss_mib: f64,
    /// One per K.
    pub rows: Vec<SlowRow>,
}

impl SlowReport {
    /// The human table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "slow model: one worker, triage asks a model that answers after the delay; agents after triage: {}; idle RSS {:.1} MiB; {} cpus",
            self.agents, self.idle_rss_mib, self.machine.cpus
        );
        let _ = writeln!(
            s,
            "      K | delay s | bound/s |  runs/s | of bound |  p50 s |  p99 s | RSS MiB | peak MiB | MiB/1000 |   fds | calls/run | lost | statuses"
        );
        for r in &self.rows {
            let statuses = r
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                s,
                "{:>7} | {:>7.1} | {:>7.1} | {:>7.1} | {:>7.1}% | {:>6.2} | {:>6.2} | {:>7.1} | {:>8.1} | {:>8.2} | {:>5} | {:>9.3} | {:>4} | {}",
                r.k,
                r.delay_s,
                r.bound_runs_per_s,
                r.runs_per_s,
                r.of_bound * 100.0,
                r.latency.p50_ms / 1000.0,
                r.latency.p99_ms / 1000.0,
                r.rss_mib,
                r.rss_peak_mib,
                r.rss_per_1000_mib,
                r.fds,
                r.calls_per_run,
                r.lost,
                statuses,
            );
        }
        s
    }
}

/// RSS and open descriptors, sampled every 200 ms until stopped.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<(Instant, u64, u64)>>,
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

impl Sampler {
    fn start() -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => samples.push((Instant::now(), stats::rss_kib(), open_fds())),
                    _ = &mut stopped => return samples,
                }
            }
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> Vec<(Instant, u64, u64)> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

async fn model_calls(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM model_calls WHERE reused_from IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the steps.
pub async fn bench(
    res: &Arc<Resources>,
    args: &BenchArgs,
    server: &mut Server,
) -> anyhow::Result<SlowReport> {
    let agents = (args.agents == super::Agents::Stub).then(super::stub::with_model_triage);
    let mut setup = Setup::start(res, args, agents).await?;
    let drain_floor = secs(args.drain);
    // One run through every path (with a short delay), then the idle RSS.
    server.set_delay(Duration::from_millis(50)).await?;
    let idle = super::idle_after_one_run(&mut setup.client, &setup.queue, drain_floor).await?;
    let mut rows = Vec::new();
    for &k in &args.slow_model {
        let delay = delay_for(args, k);
        server.set_delay(delay).await?;
        // The K start over one delay, then one more delay to settle.
        let warmup = delay * 2 + Duration::from_secs(5);
        let window = secs(args.window).max(delay * 2);
        let drain = drain_floor.max(delay * 2 + Duration::from_secs(30));
        eprintln!(
            "bench: slow model, K={k}, delay {:.1} s: warm-up {:.0} s, window {:.0} s",
            delay.as_secs_f64(),
            warmup.as_secs_f64(),
            window.as_secs_f64()
        );
        let calls0 = model_calls(&setup.pool).await?;
        let sampler = Sampler::start();
        let t0 = Instant::now();
        let out = driver::closed_loop_ramped(
            &mut setup.client,
            &setup.queue,
            k,
            delay,
            warmup,
            window,
            drain,
        )
        .await?;
        let samples = sampler.stop().await;
        let calls = model_calls(&setup.pool).await? - calls0;
        let (from, to) = (t0 + warmup, t0 + warmup + window);
        let mut in_window: Vec<(u64, u64)> = samples
            .iter()
            .filter(|(at, _, _)| *at >= from && *at < to)
            .map(|&(_, rss, fds)| (rss, fds))
            .collect();
        in_window.sort_unstable();
        let median = in_window.get(in_window.len() / 2).map_or(0, |s| s.0);
        let peak = in_window.iter().map(|s| s.0).max().unwrap_or(0);
        let fds = in_window.iter().map(|s| s.1).max().unwrap_or(0);
        let bound = k as f64 / delay.as_secs_f64().max(1e-9);
        let runs_per_s = out.rate();
        rows.push(SlowRow {
            k,
            delay_s: delay.as_secs_f64(),
            bound_runs_per_s: bound,
            runs_per_s,
            of_bound: runs_per_s / bound,
            completed: out.completed,
            lost: out.lost,
            latency: Latency::of(&out.latency),
            rss_mib: mib(median),
            rss_peak_mib: mib(peak),
            rss_per_1000_mib: mib(median.saturating_sub(idle)) * 1000.0 / k as f64,
            fds,
            calls_per_run: calls as f64 / out.completed_total.max(1) as f64,
            statuses: out.statuses.iter().map(|(s, n)| (s.clone(), *n)).collect(),
        });
    }
    setup.client.close().await;
    Ok(SlowReport {
        machine: Machine::read(),
        agents: format!("{:?}", args.agents).to_lowercase(),
        triage_concurrency: args.slow_model.iter().copied().max().unwrap_or(1),
        idle_rss_mib: mib(idle),
        rows,
    })
}
