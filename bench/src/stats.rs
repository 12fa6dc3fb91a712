//! Latency histograms (hdrhistogram, microseconds), process memory and
//! Postgres counters.

use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::PgPool;

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// Records a duration in microseconds (saturating at the bounds).
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// Records a signed microsecond value (negative clock skew counts as 1 µs).
pub fn record_us(h: &mut Histogram<u64>, us: i64) {
    h.saturating_record(u64::try_from(us).unwrap_or(0).max(1));
}

/// p50/p90/p99/max of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
}

impl Latency {
    /// Summarizes a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| (us as f64) / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// Resident set size of this process in KiB (`VmRSS` of /proc/self/status).
pub fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn hwm_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Counters of one database, and the cluster's transaction id counter.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgCounters {
    /// `pg_stat_database.xact_commit` of the database (read-only
    /// transactions included; flushed by backends at most once a second).
    pub xact_commit: i64,
    /// Next transaction id of the cluster: its growth counts the
    /// transactions that wrote (and so flushed WAL at commit), in every
    /// database of the cluster.
    pub next_xid: i64,
}

impl PgCounters {
    /// Reads the counters of `db` through an admin pool.
    pub async fn read(admin: &PgPool, db: &str) -> Result<Self, sqlx::Error> {
        let (xact_commit, next_xid): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = $1), \
             txid_snapshot_xmax(txid_current_snapshot())",
        )
        .bind(db)
        .fetch_one(admin)
        .await?;
        Ok(Self {
            xact_commit: xact_commit.unwrap_or(0),
            next_xid,
        })
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            xact_commit: self.xact_commit - earlier.xact_commit,
            next_xid: self.next_xid - earlier.next_xid,
        }
    }
}

/// CPU seconds used so far, by component, and the machine's busy/total
/// time (from /proc; clock ticks are 1/100 s on Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// This process: netra, the load generator and the raw baseline.
    pub this: f64,
    /// RabbitMQ (`beam.smp`).
    pub broker: f64,
    /// `postgres` processes serving the benchmark's databases, and the
    /// cluster's background processes (WAL writer, checkpointer, ...).
    pub postgres: f64,
    /// `postgres` backends of other databases (other users of the stack).
    pub postgres_foreign: f64,
    /// `redis-server`.
    pub redis: f64,
    /// Busy CPU seconds of the machine (all CPUs).
    pub busy: f64,
    /// Elapsed CPU seconds of the machine (all CPUs, busy + idle).
    pub total: f64,
}

const TICK_S: f64 = 0.01;

fn proc_ticks(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the comm: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) * TICK_S))
}

impl Cpu {
    /// Reads the counters now; `db_marker` is a substring of the names of
    /// the benchmark's databases.
    pub fn read(db_marker: &str) -> Self {
        let mut c = Self::default();
        if let Some((_, t)) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| proc_ticks(&s))
        {
            c.this = t;
        }
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Some((comm, t)) = std::fs::read_to_string(e.path().join("stat"))
                    .ok()
                    .and_then(|s| proc_ticks(&s))
                else {
                    continue;
                };
                match comm.as_str() {
                    "beam.smp" => c.broker += t,
                    "postgres" => {
                        // `postgres: <user> <database> <client> <state>` for a
                        // backend, `postgres: <role>` for background processes.
                        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                        let cmd = String::from_utf8_lossy(&cmd);
                        let words = cmd.split_whitespace().count();
                        if words >= 4 && !cmd.contains(db_marker) {
                            c.postgres_foreign += t;
                        } else {
                            c.postgres += t;
                        }
                    }
                    "redis-server" => c.redis += t,
                    _ => {}
                }
            }
        }
        if let Some(line) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
        {
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            let total: f64 = v.iter().take(8).sum();
            c.total = total * TICK_S;
            c.busy = (total - idle) * TICK_S;
        }
        c
    }

    /// Use between `earlier` and `self`, per run.
    pub fn per_run(&self, earlier: &Self, runs: u64) -> CpuUse {
        let n = runs.max(1) as f64;
        let ms = |a: f64, b: f64| (a - b) * 1000.0 / n;
        let total = self.total - earlier.total;
        CpuUse {
            utilization_pct: if total > 0.0 {
                (self.busy - earlier.busy) / total * 100.0
            } else {
                0.0
            },
            this_ms: ms(self.this, earlier.this),
            broker_ms: ms(self.broker, earlier.broker),
            postgres_ms: ms(self.postgres, earlier.postgres),
            redis_ms: ms(self.redis, earlier.redis),
            all_ms: ms(self.busy, earlier.busy),
            ours_ms: ms(self.this, earlier.this)
                + ms(self.broker, earlier.broker)
                + ms(self.postgres, earlier.postgres)
                + ms(self.redis, earlier.redis),
            foreign_pct: if total > 0.0 {
                let ours = (self.this - earlier.this)
                    + (self.broker - earlier.broker)
                    + (self.postgres - earlier.postgres)
                    + (self.redis - earlier.redis);
                ((self.busy - earlier.busy - ours) / total * 100.0).max(0.0)
            } else {
                0.0
            },
        }
    }
}

/// CPU time per run of a step, by component.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    /// Busy share of all CPUs over the step, %.
    pub utilization_pct: f64,
    /// This process (netra or the baseline, plus the load generator), ms/run.
    pub this_ms: f64,
    /// RabbitMQ, ms/run.
    pub broker_ms: f64,
    /// Postgres (the benchmark's backends and the background processes), ms/run.
    pub postgres_ms: f64,
    /// Redis, ms/run.
    pub redis_ms: f64,
    /// The whole machine, ms/run.
    pub all_ms: f64,
    /// This process + broker + Postgres + Redis, ms/run: the CPU a run
    /// costs the stack, whatever else runs on the machine.
    pub ours_ms: f64,
    /// Share of all CPUs used by anything else (other users' tests and
    /// databases, the kernel's own threads), %: a measurement taken while
    /// this is high is disturbed.
    pub foreign_pct: f64,
}

impl CpuUse {
    /// Runs/s the machine's CPUs could sustain at this CPU cost per run if
    /// nothing else ran: a throughput estimate that other users' load on a
    /// shared machine does not distort (as much).
    pub fn capacity(&self, cpus: usize) -> Option<f64> {
        (self.ours_ms > 0.0).then(|| cpus as f64 * 1000.0 / self.ours_ms)
    }
}

/// Redis: `used_memory` in bytes (INFO memory).
pub async fn redis_used_memory(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Redis: deletes every key under `<ns>:`; returns how many.
pub async fn redis_delete_namespace(url: &str, ns: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{ns}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
