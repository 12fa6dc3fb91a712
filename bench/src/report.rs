//! The benchmark's result: a JSON document and a human table.

use std::{collections::BTreeMap, fmt::Write};

use serde::Serialize;

use super::{
    flood::FloodReport,
    stats::{CpuUse, Latency},
};

/// The whole result of one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub settings: Settings,
    /// Process memory.
    pub memory: Memory,
    /// Closed-loop steps, one per K.
    pub closed: Vec<ClosedRow>,
    /// Open-loop steps (netra only).
    pub open: Vec<OpenRow>,
    /// The flood step (`--flood`), if it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodReport>,
    /// Postgres transactions per run over the whole invocation.
    pub totals: Totals,
}

/// The machine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
    /// Total memory, GiB.
    pub mem_gib: f64,
}

impl Machine {
    /// Reads /proc.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model,
            mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

/// The settings of the invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// netra's namespace (the baseline's is `<namespace>-raw`).
    pub namespace: String,
    /// Warm-up per closed-loop step, s.
    pub warmup_s: f64,
    /// Measuring window per step, s.
    pub window_s: f64,
    /// Prefetch (= concurrent handlers) per queue, netra and baseline.
    pub prefetch: u16,
    /// Postgres pool size, netra and baseline.
    pub db_pool: u32,
    /// Telemetry rows of the sample workload.
    pub sample_rows: usize,
    /// The request texts, cycled.
    pub requests: Vec<String>,
    /// `raw` or `none`.
    pub baseline: String,
    /// `standard` or `stub`.
    pub agents: String,
    /// `--pg-set` settings of the bench databases.
    pub pg_settings: Vec<String>,
}

/// Process memory (netra runs in this process).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// VmRSS after start-up and one run, before load.
    pub idle_rss_mib: f64,
    /// Runs published at once by the memory probe.
    pub burst_runs: u64,
    /// Of which completed.
    pub burst_completed: u64,
    /// How long they took.
    pub burst_seconds: f64,
    /// VmRSS with all of them published and none answered yet.
    pub rss_all_in_flight_mib: f64,
    /// Highest VmRSS while they were in flight.
    pub peak_rss_mib: f64,
    /// (peak - idle) scaled to 1,000 in-flight runs.
    pub rss_per_1000_in_flight_mib: f64,
    /// VmHWM at the end of the sweep (netra, client and baseline).
    pub hwm_mib: f64,
    /// Growth of Redis `used_memory` from before the memory probe to the end
    /// of the sweep (netra's status cache and agent output cache; other users
    /// of the same Redis add to it).
    pub redis_growth_mib: f64,
}

/// One step's measurements.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepReport {
    /// Completions per second in the measuring window.
    pub runs_per_s: f64,
    /// Completions in the window.
    pub completed: u64,
    /// Completions during the whole step (warm-up and drain included).
    pub completed_step: u64,
    /// Requests sent during the step.
    pub sent: u64,
    /// Requests not answered within the drain time.
    pub lost: u64,
    /// End-to-end latency of the window's runs (client publish, or intended
    /// start in the open loop, to the reply).
    pub latency: Latency,
    /// Final statuses of the window's runs.
    pub statuses: BTreeMap<String, u64>,
    /// `xact_commit` of the system's database over the step / completions of
    /// the step (read-only transactions count; backends flush their counters
    /// at most once a second, so a step's value is approximate).
    pub commits_per_run: Option<f64>,
    /// Transaction ids assigned in the whole cluster over the step /
    /// completions: writing transactions (a WAL flush each). Includes any
    /// other activity on the cluster.
    pub xids_per_run: Option<f64>,
    /// Where the time went (netra only).
    pub segments: Vec<Segment>,
    /// Phase attempts per run (netra only).
    pub phases_per_run: f64,
    /// CPU time per run over the whole step (warm-up and drain included).
    pub cpu: CpuUse,
}

/// A part of the end-to-end time.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// `request`, `<phase> wait`, `<phase> run` or `reply`.
    pub name: String,
    /// Its latency.
    pub latency: Latency,
}

/// One closed-loop K.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedRow {
    /// Runs in flight.
    pub k: usize,
    /// netra.
    pub netra: StepReport,
    /// The raw baseline.
    pub raw: Option<StepReport>,
    /// netra runs/s / raw runs/s.
    pub ratio: Option<f64>,
}

/// One open-loop rate.
#[derive(Debug, Clone, Serialize)]
pub struct OpenRow {
    /// Fraction of netra's best closed-loop rate.
    pub fraction: f64,
    /// Arrival rate, runs/s.
    pub target_runs_per_s: f64,
    /// netra.
    pub netra: StepReport,
}

/// Transactions per run over the whole invocation, read after both systems
/// stopped (so every backend flushed its counters).
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// netra runs completed (memory probe, closed and open loops).
    pub netra_runs: u64,
    /// `xact_commit` of netra's database / netra runs (includes the retry
    /// scheduler's polls, 5 per second, also while the baseline runs).
    pub netra_commits_per_run: Option<f64>,
    /// Baseline runs completed.
    pub raw_runs: u64,
    /// `xact_commit` of the baseline's database / baseline runs.
    pub raw_commits_per_run: Option<f64>,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let st = &self.settings;
        let _ = writeln!(
            s,
            "netra bench: {} CPUs ({}), {} GiB; warm-up {} s + window {} s per step; \
             prefetch {} per queue, pool {}; baseline {}",
            m.cpus,
            m.cpu_model,
            m.mem_gib,
            st.warmup_s,
            st.window_s,
            st.prefetch,
            st.db_pool,
            st.baseline
        );
        let _ = writeln!(s, "requests: {:?}", st.requests);
        if !st.pg_settings.is_empty() {
            let _ = writeln!(s, "postgres settings: {}", st.pg_settings.join(", "));
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "closed loop (K runs in flight; latency = client publish to reply, ms)"
        );
        let _ = writeln!(
            s,
            "{:>4} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8} {:>8} | {:>7} {:>7} {:>7} | {:>8} {:>8} | {:>6} {:>6}",
            "K", "netra/s", "raw/s", "ratio", "n p50", "n p90", "n p99", "n max", "r p50",
            "r p99", "r max", "n tx/run", "r tx/run", "n xid", "r xid"
        );
        for r in &self.closed {
            let n = &r.netra;
            let raw = r.raw.clone().unwrap_or_default();
            let _ = writeln!(
                s,
                "{:>4} | {:>8.1} {:>8} {:>6} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>7} {:>7} {:>7} | {:>8} {:>8} | {:>6} {:>6}",
                r.k,
                n.runs_per_s,
                r.raw.as_ref().map(|x| format!("{:.1}", x.runs_per_s)).unwrap_or_else(|| "-".into()),
                opt(r.ratio, 2),
                n.latency.p50_ms,
                n.latency.p90_ms,
                n.latency.p99_ms,
                n.latency.max_ms,
                r.raw.as_ref().map(|_| format!("{:.1}", raw.latency.p50_ms)).unwrap_or_else(|| "-".into()),
                r.raw.as_ref().map(|_| format!("{:.1}", raw.latency.p99_ms)).unwrap_or_else(|| "-".into()),
                r.raw.as_ref().map(|_| format!("{:.1}", raw.latency.max_ms)).unwrap_or_else(|| "-".into()),
                opt(n.commits_per_run, 1),
                opt(raw.commits_per_run, 1),
                opt(n.xids_per_run, 1),
                opt(raw.xids_per_run, 1),
            );
        }
        let bad: Vec<String> = self
            .closed
            .iter()
            .flat_map(|r| {
                let mut v = vec![("netra", r.k, &r.netra)];
                if let Some(x) = &r.raw {
                    v.push(("raw", r.k, x));
                }
                v
            })
            .filter(|(_, _, x)| x.lost > 0 || x.statuses.keys().any(|k| k != "completed"))
            .map(|(who, k, x)| format!("{who} K={k}: {:?}, lost {}", x.statuses, x.lost))
            .collect();
        if !bad.is_empty() {
            let _ = writeln!(s, "  not all completed: {}", bad.join("; "));
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "CPU per run (ms, whole step; self = this process: netra or the baseline, plus the \
             load generator; pg = postgres backends of the bench databases and the background \
             processes; all = the whole machine; other% = CPU share of everything else, e.g. \
             other users' tests: high values mean a disturbed measurement; cap = runs/s the CPUs \
             would sustain at self+broker+pg+redis per run with nothing else running)"
        );
        let _ = writeln!(
            s,
            "{:>4} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>5}",
            "K",
            "n cpu%",
            "self",
            "broker",
            "pg",
            "redis",
            "all",
            "other%",
            "r cpu%",
            "self",
            "broker",
            "pg",
            "all",
            "other%",
            "n cap",
            "r cap",
            "ratio"
        );
        for r in &self.closed {
            let c = &r.netra.cpu;
            let mut line = format!(
                "{:>4} | {:>5.0}% {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>5.0}% |",
                r.k,
                c.utilization_pct,
                c.this_ms,
                c.broker_ms,
                c.postgres_ms,
                c.redis_ms,
                c.all_ms,
                c.foreign_pct
            );
            if let Some(raw) = &r.raw {
                let c = &raw.cpu;
                let _ = write!(
                    line,
                    " {:>5.0}% {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>5.0}%",
                    c.utilization_pct,
                    c.this_ms,
                    c.broker_ms,
                    c.postgres_ms,
                    c.all_ms,
                    c.foreign_pct
                );
            } else {
                line.push_str(&" ".repeat(48));
            }
            let cpus = self.machine.cpus;
            let n_cap = r.netra.cpu.capacity(cpus);
            let r_cap = r.raw.as_ref().and_then(|x| x.cpu.capacity(cpus));
            let ratio = match (n_cap, r_cap) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let _ = write!(
                line,
                " | {:>6} {:>6} {:>5}",
                opt(n_cap, 0),
                opt(r_cap, 0),
                opt(ratio, 2)
            );
            let _ = writeln!(s, "{line}");
        }
        if !self.open.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "open loop, netra (fixed arrival rate; latency from each run's intended start, ms)"
            );
            let _ = writeln!(
                s,
                "{:>5} | {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>5}",
                "load", "target/s", "done/s", "p50", "p90", "p99", "max", "lost"
            );
            for o in &self.open {
                let n = &o.netra;
                let _ = writeln!(
                    s,
                    "{:>4.0}% | {:>8.1} {:>8.1} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>5}",
                    o.fraction * 100.0,
                    o.target_runs_per_s,
                    n.runs_per_s,
                    n.latency.p50_ms,
                    n.latency.p90_ms,
                    n.latency.p99_ms,
                    n.latency.max_ms,
                    n.lost
                );
            }
        }
        // Where the time goes: K=1 (no queueing), the largest K, and the
        // middle open-loop rate.
        let mut cols: Vec<(String, &StepReport)> = Vec::new();
        if let Some(r) = self.closed.first() {
            cols.push((format!("K={}", r.k), &r.netra));
        }
        if let Some(r) = self.closed.last().filter(|_| self.closed.len() > 1) {
            cols.push((format!("K={}", r.k), &r.netra));
        }
        if let Some(o) = self.open.get(self.open.len() / 2) {
            cols.push((format!("open {:.0}%", o.fraction * 100.0), &o.netra));
        }
        if !cols.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "where the time goes, netra (ms; wait = previous commit, confirm, queue, dedup \
                 check, start transition, input load; run = agent + effect transaction)"
            );
            let mut header = format!("{:<22}", "segment");
            for (name, _) in &cols {
                let _ = write!(header, " | {:>19}", format!("{name} p50/p99"));
            }
            let _ = writeln!(s, "{header}");
            let names: Vec<String> = cols
                .iter()
                .flat_map(|(_, r)| r.segments.iter().map(|x| x.name.clone()))
                .fold(Vec::new(), |mut acc, n| {
                    if !acc.contains(&n) {
                        acc.push(n);
                    }
                    acc
                });
            for name in names {
                let mut line = format!("{name:<22}");
                for (_, r) in &cols {
                    let cell = r
                        .segments
                        .iter()
                        .find(|x| x.name == name)
                        .map(|x| format!("{:.2} / {:.2}", x.latency.p50_ms, x.latency.p99_ms))
                        .unwrap_or_else(|| "-".into());
                    let _ = write!(line, " | {cell:>19}");
                }
                let _ = writeln!(s, "{line}");
            }
            let mut line = format!("{:<22}", "phases per run");
            for (_, r) in &cols {
                let _ = write!(line, " | {:>19.2}", r.phases_per_run);
            }
            let _ = writeln!(s, "{line}");
        }
        if let Some(f) = &self.flood {
            let _ = writeln!(s);
            s.push_str(&f.table());
        }
        let mem = &self.memory;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "memory (netra in-process): idle RSS {:.1} MiB; {} runs published at once: RSS {:.1} MiB \
             with all in flight, peak {:.1} MiB => {:.1} MiB per 1,000 in-flight runs \
             ({} completed in {:.1} s); VmHWM at the end {:.1} MiB",
            mem.idle_rss_mib,
            mem.burst_runs,
            mem.rss_all_in_flight_mib,
            mem.peak_rss_mib,
            mem.rss_per_1000_in_flight_mib,
            mem.burst_completed,
            mem.burst_seconds,
            mem.hwm_mib
        );
        let _ = writeln!(
            s,
            "redis (shared): used_memory grew {:.1} MiB over the {} netra runs ({:.1} KiB per run), \
             held until the cache TTL expires; the bench deletes its keys at the end",
            mem.redis_growth_mib,
            self.totals.netra_runs,
            if self.totals.netra_runs > 0 {
                mem.redis_growth_mib * 1024.0 / self.totals.netra_runs as f64
            } else {
                0.0
            }
        );
        let t = &self.totals;
        let _ = writeln!(
            s,
            "postgres transactions per run (xact_commit, whole invocation): netra {} over {} runs, \
             raw {} over {} runs",
            opt(t.netra_commits_per_run, 2),
            t.netra_runs,
            opt(t.raw_commits_per_run, 2),
            t.raw_runs
        );
        s
    }
}
