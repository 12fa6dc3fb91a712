//! `netra bench --flood N`: what one tenant's flood costs another, under
//! fair admission.
//!
//! Two tenants share the in-process netra:
//! - tenant A is the deployment's default tenant: the requests without
//!   `user_id` that the rest of the benchmark publishes;
//! - tenant B (`bench-b`) is created by the step and mapped to the broker
//!   user of the benchmark's own connection (parsed from the AMQP URL):
//!   RabbitMQ accepts a `user_id` equal to the connection's user, so B's
//!   requests carry it, and B's exclusive reply queue is named under that
//!   user's reply prefix (`<ns>.reply.<user>.`), the only `reply_to` netra
//!   accepts from a mapped user. B gets its own copy of the sample workload.
//!
//! The step measures B's closed loop (K = `--flood-k`, warm-up and window
//! as the other steps) alone, then publishes A's N requests at once (all
//! confirmed), waits until runs wait for admission (A is over its share of
//! `NETRA_FAIR_IN_FLIGHT`), and measures B's same closed loop while A's
//! flood is in progress, counting A's completions in the same window. It
//! then waits for A's flood to drain (bounded by `--drain`, at least two
//! minutes, and cut short when no reply of A came for 15 s). It runs after the other steps of the sweep, so that whatever
//! a flood leaves behind disturbs none of them.

use std::{collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use tokio::time::Instant;

use super::{
    breakdown, driver, per, report::StepReport, request_texts, secs, stats, BenchArgs, Resources,
};
use driver::Client;
use netra::{
    broker::topology::Names,
    model::Reason,
    store::{audit::Said, tenants},
};
use stats::PgCounters;

/// Tenant B's name.
pub const TENANT_B: &str = "bench-b";

/// How long the step waits for the first waiting run of A's flood.
const WAIT_BOUND: Duration = Duration::from_secs(30);

/// The drain of A's flood stops early when no reply of A arrived for this
/// long (nothing is being released).
const STALL: Duration = Duration::from_secs(15);

/// The result of the flood step.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    /// Requests A publishes at once.
    pub flood_runs: usize,
    /// Runs B keeps in flight.
    pub k_b: usize,
    /// The runs in flight the tenants share (`NETRA_FAIR_IN_FLIGHT`, or
    /// `--fair-in-flight`).
    pub fair_in_flight: u32,
    /// The default weight of a tenant (both tenants have it).
    pub fair_weight: u32,
    /// Tenant A (the deployment's default tenant).
    pub tenant_a: String,
    /// Tenant B.
    pub tenant_b: String,
    /// B's broker user (the connection's).
    pub b_user: String,
    /// B's closed loop alone.
    pub b_alone: StepReport,
    /// B's closed loop during A's flood (commits, transaction ids and CPU
    /// per run count the runs of both tenants completed during the step).
    pub b_flood: StepReport,
    /// B's p50 during the flood / alone.
    pub p50_ratio: Option<f64>,
    /// B's p99 during the flood / alone.
    pub p99_ratio: Option<f64>,
    /// B's runs/s during the flood / alone.
    pub runs_per_s_ratio: Option<f64>,
    /// A's requests confirmed by the broker.
    pub a_confirmed: u64,
    /// Seconds to publish them all and have them confirmed.
    pub a_publish_s: f64,
    /// Seconds from the flood's first publish to the first waiting run
    /// (None: no run waited within the bound).
    pub a_first_wait_s: Option<f64>,
    /// A's requests taken in by intake (runs created) at the start of B's
    /// window (below `flood_runs`: the rest were still in the request queue,
    /// ahead of B's).
    pub a_taken_in_at_window_start: i64,
    /// A's runs waiting for admission at the start of B's window.
    pub a_waiting_at_window_start: i64,
    /// A's runs waiting at the end of B's window (0: the flood no longer
    /// waited for the whole window).
    pub a_waiting_at_window_end: i64,
    /// A's runs not finished (admitted or waiting) at the end of B's window.
    pub a_unfinished_at_window_end: i64,
    /// A's completions in B's window.
    pub a_completed_in_window: u64,
    /// A's completions per second in B's window.
    pub a_runs_per_s: f64,
    /// A's completions in all (flood to drain).
    pub a_completed: u64,
    /// A's requests not answered within the drain.
    pub a_lost: u64,
    /// The drain stopped because no reply of A came for 15 s.
    pub a_drain_stalled: bool,
    /// Final statuses of A's runs.
    pub a_statuses: BTreeMap<String, u64>,
    /// Seconds from the flood's first publish until its last reply (or the
    /// drain bound).
    pub a_drain_s: f64,
}

impl FloodReport {
    /// The human table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "flood (fair admission: NETRA_FAIR_IN_FLIGHT = {}, weight {} each): tenant A `{}` \
             publishes {} requests at once; tenant B `{}` (broker user {}) keeps K={} in flight; ms",
            self.fair_in_flight,
            self.fair_weight,
            self.tenant_a,
            self.flood_runs,
            self.tenant_b,
            self.b_user,
            self.k_b
        );
        let _ = writeln!(
            s,
            "{:<12} | {:>8} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>5} | {:>8} {:>9}",
            "", "B/s", "B p50", "B p90", "B p99", "B max", "B done", "lost", "A/s", "A done"
        );
        let row = |name: &str, b: &StepReport, a: Option<(f64, u64)>| {
            format!(
                "{name:<12} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>6} {:>5} | {:>8} {:>9}",
                b.runs_per_s,
                b.latency.p50_ms,
                b.latency.p90_ms,
                b.latency.p99_ms,
                b.latency.max_ms,
                b.completed,
                b.lost,
                a.map(|x| format!("{:.1}", x.0))
                    .unwrap_or_else(|| "-".into()),
                a.map(|x| x.1.to_string()).unwrap_or_else(|| "-".into()),
            )
        };
        let _ = writeln!(s, "{}", row("B alone", &self.b_alone, None));
        let _ = writeln!(
            s,
            "{}",
            row(
                "B in flood",
                &self.b_flood,
                Some((self.a_runs_per_s, self.a_completed_in_window))
            )
        );
        let r = |v: Option<f64>| v.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<12} | {:>8} {:>8} {:>8} {:>8}",
            "flood/alone",
            r(self.runs_per_s_ratio),
            r(self.p50_ratio),
            "",
            r(self.p99_ratio)
        );
        let _ = writeln!(
            s,
            "A: {} confirmed in {:.2} s; first run waiting after {}; at B's window start {} \
             taken in by intake; waiting at its start/end {}/{}, unfinished at its end {}; {} \
             completed in {:.1} s, lost {}, {}",
            self.a_confirmed,
            self.a_publish_s,
            self.a_first_wait_s
                .map(|x| format!("{x:.2} s"))
                .unwrap_or_else(|| "never (within 30 s)".into()),
            self.a_taken_in_at_window_start,
            self.a_waiting_at_window_start,
            self.a_waiting_at_window_end,
            self.a_unfinished_at_window_end,
            self.a_completed,
            self.a_drain_s,
            self.a_lost,
            statuses(&self.a_statuses)
        );
        let mut warnings = Vec::new();
        if self.a_first_wait_s.is_none() {
            warnings.push(format!(
                "no run of A waited: raise --flood above the budget ({})",
                self.fair_in_flight
            ));
        } else if self.a_waiting_at_window_end == 0 {
            warnings.push(
                "A's flood stopped waiting before B's window ended: raise --flood for a window \
                 wholly inside the flood"
                    .to_string(),
            );
        }
        if self.a_lost > 0 {
            warnings.push(format!(
                "A's flood did not drain ({} unanswered{}): are waiting runs released? (netra's log)",
                self.a_lost,
                if self.a_drain_stalled {
                    ", no reply for 15 s"
                } else {
                    ""
                }
            ));
        }
        for (name, b) in [("alone", &self.b_alone), ("in flood", &self.b_flood)] {
            if b.lost > 0 || b.statuses.keys().any(|k| k != "completed") {
                warnings.push(format!(
                    "B {name}: {}, lost {}",
                    statuses(&b.statuses),
                    b.lost
                ));
            }
        }
        if !warnings.is_empty() {
            let _ = writeln!(s, "  note: {}", warnings.join("; "));
        }
        s
    }
}

fn statuses(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The broker user of the AMQP URL(s): the user every connection of the
/// benchmark authenticates as (lapin's parsing, `guest` when absent).
pub fn amqp_user(amqp_url: &str) -> anyhow::Result<String> {
    let mut users = netra::config::amqp_urls(amqp_url).into_iter().map(|u| {
        lapin::uri::AMQPUri::from_str(u)
            .map(|uri| uri.authority.userinfo.username)
            .map_err(|e| anyhow::anyhow!("NETRA_AMQP_URL: {e}"))
    });
    let first = users.next().context("NETRA_AMQP_URL is empty")??;
    for other in users {
        anyhow::ensure!(
            other? == first,
            "the addresses of NETRA_AMQP_URL name different users: the flood step needs one"
        );
    }
    Ok(first)
}

/// A's runs waiting for admission, not finished, and in all.
async fn a_counts(pool: &PgPool, tenant: &str) -> anyhow::Result<(i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE wait_reason IS NOT NULL), \
                count(*) FILTER (WHERE finished_at IS NULL), count(*) \
         FROM runs WHERE tenant = $1",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}

async fn waiting(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE wait_reason IS NOT NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// Creates tenant B (mapped to `user`) with its copy of the sample workload.
async fn create_tenant_b(pool: &PgPool, user: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let said = Said::new(
        "cli:bench",
        Reason::parse(Some("netra bench --flood: the second tenant"))?,
    );
    tenants::create(pool, TENANT_B, Some(user), &said)
        .await
        .with_context(|| format!("creating tenant {TENANT_B} for broker user {user}"))?;
    netra::sample::load(
        pool,
        TENANT_B,
        "bench-w",
        &netra::sample::chat("gpt-4o", args.sample_rows, 11),
    )
    .await?;
    sqlx::query("ANALYZE llm_requests, workloads")
        .execute(pool)
        .await?;
    Ok(())
}

/// One closed loop of B, with its counters, CPU and breakdown.
struct Measured {
    out: driver::StepOutcome,
    step: StepReport,
    pg: PgCounters,
    cpu0: stats::Cpu,
}

async fn b_loop(
    res: &Resources,
    admin: &PgPool,
    pool: &PgPool,
    b: &mut Client,
    queue: &str,
    args: &BenchArgs,
) -> anyhow::Result<Measured> {
    let before = PgCounters::read(admin, &res.netra_db).await?;
    let cpu0 = stats::Cpu::read(&res.marker);
    let out = driver::closed_loop(
        b,
        queue,
        args.flood_k,
        secs(args.warmup),
        secs(args.window),
        secs(args.drain),
    )
    .await?;
    let cpu = stats::Cpu::read(&res.marker).per_run(&cpu0, out.completed_total);
    let delta = PgCounters::read(admin, &res.netra_db).await?.since(&before);
    let mut step = StepReport::from_outcome(&out, &delta);
    step.cpu = cpu;
    let (segments, phases) = breakdown(pool, &out.done).await?;
    step.segments = segments;
    step.phases_per_run = phases;
    Ok(Measured {
        out,
        step,
        pg: before,
        cpu0,
    })
}

/// A's replies, counted.
#[derive(Default)]
struct Tally {
    completed: u64,
    in_window: u64,
    in_step: u64,
    statuses: BTreeMap<String, u64>,
}

impl Tally {
    fn count(&mut self, d: driver::Done, window: (Instant, Instant), step: (Instant, Instant)) {
        self.completed += 1;
        if d.end >= window.0 && d.end < window.1 {
            self.in_window += 1;
        }
        if d.end >= step.0 && d.end <= step.1 {
            self.in_step += 1;
        }
        *self.statuses.entry(d.status).or_default() += 1;
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Runs the flood step with `a` (the sweep's client: tenant A) on netra's
/// request queue; returns the report and the runs completed (A and B).
pub async fn step(
    res: &Arc<Resources>,
    args: &BenchArgs,
    admin: &PgPool,
    pool: &PgPool,
    queue: &str,
    a: &mut Client,
) -> anyhow::Result<(FloodReport, u64)> {
    let n = args.flood;
    let tenant_a = res
        .config
        .amqp_default_tenant
        .clone()
        .unwrap_or_else(|| "bench".into());
    let user = amqp_user(&res.amqp_url)?;
    let fair = res.config.fair;
    eprintln!(
        "bench: flood, tenant {TENANT_B} as broker user {user}, K={} (fair budget {})",
        args.flood_k, fair.in_flight
    );
    create_tenant_b(pool, &user, args).await?;
    let names = Names::new(&res.config.namespace);
    let bodies = request_texts(args)
        .iter()
        .map(|m| serde_json::to_vec(&serde_json::json!({ "message": m })))
        .collect::<Result<Vec<_>, _>>()?;
    let mut b =
        Client::connect_as(&res.amqp_url, bodies, &names.reply_prefix(&user), &user).await?;
    let drain = secs(args.drain);

    // One run of B through every path: a refused request (user_id,
    // reply_to) would never be answered.
    let probe = driver::closed_loop(
        &mut b,
        queue,
        1,
        Duration::ZERO,
        Duration::from_millis(1),
        drain.min(secs(30.0)),
    )
    .await?;
    anyhow::ensure!(
        probe.completed_total == 1,
        "tenant {TENANT_B}'s first request got no reply (refused? see the dead-letter queue \
         of requests): {:?}",
        probe.statuses
    );
    let mut runs = 1u64;

    eprintln!("bench: flood, B alone");
    let alone = b_loop(res, admin, pool, &mut b, queue, args).await?;
    runs += alone.out.completed_total;

    eprintln!("bench: flood, A publishes {n} requests at once");
    let flood_start = Instant::now();
    let a_confirmed = a.flood(queue, n).await;
    let a_publish_s = flood_start.elapsed().as_secs_f64();
    let mut a_first_wait_s = None;
    if n as u64 <= u64::from(fair.in_flight) {
        eprintln!(
            "bench: flood of {n} within the budget of {}: no run of A will wait",
            fair.in_flight
        );
    } else {
        let bound = Instant::now() + WAIT_BOUND;
        while Instant::now() < bound {
            if waiting(pool).await? > 0 {
                a_first_wait_s = Some(flood_start.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A's counts at the start and the end of B's window, read beside it.
    eprintln!("bench: flood, B during A's flood");
    let t0 = Instant::now();
    let (from, to) = (t0 + secs(args.warmup), t0 + secs(args.warmup + args.window));
    let sampler = {
        let (pool, tenant) = (pool.clone(), tenant_a.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(from).await;
            let start = a_counts(&pool, &tenant).await;
            tokio::time::sleep_until(to).await;
            let end = a_counts(&pool, &tenant).await;
            (start, end)
        })
    };
    let mut during = b_loop(res, admin, pool, &mut b, queue, args).await?;
    let step_end = Instant::now();
    let (start_counts, end_counts) = sampler.await.context("the flood's sampler")?;
    let (a_waiting_start, _, a_taken_in) = start_counts?;
    let (a_waiting_end, a_unfinished_end, _) = end_counts?;

    // A's replies: those of the window, then the rest until the flood drains.
    let mut tally = Tally::default();
    while let Some(d) = a.try_next_done() {
        tally.count(d, (from, to), (t0, step_end));
    }
    // The step's commits, transaction ids and CPU, over both tenants' runs.
    let both = during.out.completed_total + tally.in_step;
    let delta = PgCounters::read(admin, &res.netra_db)
        .await?
        .since(&during.pg);
    during.step.commits_per_run = per(delta.xact_commit, both);
    during.step.xids_per_run = per(delta.next_xid, both);
    during.step.cpu = stats::Cpu::read(&res.marker).per_run(&during.cpu0, both);
    runs += during.out.completed_total;
    b.close().await;

    eprintln!("bench: flood, waiting for A's flood to drain");
    let hard_end = flood_start + drain.max(secs(120.0));
    let mut stalled = false;
    while tally.completed < a_confirmed {
        let Some(d) = a.next_done(hard_end.min(Instant::now() + STALL)).await else {
            stalled = Instant::now() < hard_end;
            break;
        };
        tally.count(d, (from, to), (t0, step_end));
    }
    let a_drain_s = flood_start.elapsed().as_secs_f64();
    let a_lost = a.forget_pending() as u64;
    runs += tally.completed;

    let (b_alone, b_flood) = (alone.step, during.step);
    let report = FloodReport {
        flood_runs: n,
        k_b: args.flood_k,
        fair_in_flight: fair.in_flight,
        fair_weight: fair.weight,
        tenant_a,
        tenant_b: TENANT_B.to_string(),
        b_user: user,
        p50_ratio: ratio(b_flood.latency.p50_ms, b_alone.latency.p50_ms),
        p99_ratio: ratio(b_flood.latency.p99_ms, b_alone.latency.p99_ms),
        runs_per_s_ratio: ratio(b_flood.runs_per_s, b_alone.runs_per_s),
        b_alone,
        b_flood,
        a_confirmed,
        a_publish_s,
        a_first_wait_s,
        a_taken_in_at_window_start: a_taken_in,
        a_waiting_at_window_start: a_waiting_start,
        a_waiting_at_window_end: a_waiting_end,
        a_unfinished_at_window_end: a_unfinished_end,
        a_completed_in_window: tally.in_window,
        a_runs_per_s: tally.in_window as f64 / args.window.max(1e-9),
        a_completed: tally.completed,
        a_lost,
        a_drain_stalled: stalled,
        a_statuses: tally.statuses,
        a_drain_s,
    };
    Ok((report, runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_of_the_url() {
        assert_eq!(
            amqp_user("amqp://netra:secret@127.0.0.1:5682/%2f").unwrap(),
            "netra"
        );
        assert_eq!(
            amqp_user("amqp://a%2Db:x@h:1/%2f, amqp://a-b:y@h:2/%2f").unwrap(),
            "a-b"
        );
        assert_eq!(amqp_user("amqp://127.0.0.1:5672/%2f").unwrap(), "guest");
        assert!(amqp_user("amqp://a:x@h:1/%2f,amqp://b:y@h:2/%2f").is_err());
    }
}
