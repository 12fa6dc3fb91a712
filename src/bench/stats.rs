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
