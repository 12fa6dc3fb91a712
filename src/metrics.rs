//! In-process counters and handler-duration histograms, rendered in the
//! Prometheus text format by `/metrics`.

use std::{collections::BTreeMap, fmt::Write, sync::Mutex, time::Duration};

/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Default, Clone)]
struct PhaseStats {
    processed: u64,
    failed: u64,
    retried: u64,
    dead_lettered: u64,
    duplicates: u64,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_s: f64,
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The phase succeeded.
    Processed,
    /// Failed; will be retried.
    Retried,
    /// Failed; dead-lettered.
    DeadLettered,
    /// A duplicate, already processed.
    Duplicate,
}

/// All counters of this process.
#[derive(Debug, Default)]
pub struct Metrics {
    phases: Mutex<BTreeMap<String, PhaseStats>>,
    /// Per agent: (ok, error, cached) calls and seconds spent.
    agents: Mutex<BTreeMap<String, (u64, u64, u64, f64)>>,
    /// Per kind of batched statement (starts, effects, requests): batches
    /// and the items they carried.
    batches: Mutex<BTreeMap<&'static str, (u64, u64)>>,
}

/// How an agent call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCall {
    /// Returned an output.
    Ok,
    /// Returned an error, panicked or timed out.
    Error,
    /// Served from the agent output cache.
    Cached,
}

impl Metrics {
    /// Records one handled delivery of `phase`.
    pub fn record(&self, phase: &str, outcome: Outcome, took: Duration) {
        let Ok(mut map) = self.phases.lock() else {
            return;
        };
        let s = map.entry(phase.to_string()).or_default();
        match outcome {
            Outcome::Processed => s.processed += 1,
            Outcome::Retried => {
                s.failed += 1;
                s.retried += 1;
            }
            Outcome::DeadLettered => {
                s.failed += 1;
                s.dead_lettered += 1;
            }
            Outcome::Duplicate => s.duplicates += 1,
        }
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
        s.count += 1;
        s.sum_s += secs;
    }

    /// Deliveries of `phase` handled as duplicates so far.
    pub fn duplicates(&self, phase: &str) -> u64 {
        self.phases
            .lock()
            .ok()
            .and_then(|m| m.get(phase).map(|s| s.duplicates))
            .unwrap_or(0)
    }

    /// Records one agent call.
    pub fn record_agent(&self, phase: &str, call: AgentCall, took: Duration) {
        let Ok(mut map) = self.agents.lock() else {
            return;
        };
        let e = map.entry(phase.to_string()).or_default();
        match call {
            AgentCall::Ok => e.0 += 1,
            AgentCall::Error => e.1 += 1,
            AgentCall::Cached => e.2 += 1,
        }
        e.3 += took.as_secs_f64();
    }

    /// Records one batched statement of `kind` carrying `items` items.
    pub fn record_batch(&self, kind: &'static str, items: usize) {
        if let Ok(mut map) = self.batches.lock() {
            let e = map.entry(kind).or_default();
            e.0 += 1;
            e.1 += items as u64;
        }
    }

    /// Prometheus text for the counters; `extra` lines are appended as is.
    pub fn render(&self, extra: &str) -> String {
        let map = self.phases.lock().map(|m| m.clone()).unwrap_or_default();
        let mut out = String::new();
        for (name, help) in [
            ("processed", "phase messages processed successfully"),
            ("failed", "phase attempts that failed"),
            ("retried", "failed attempts scheduled for retry"),
            ("dead_lettered", "phase messages dead-lettered"),
            ("duplicates", "duplicate deliveries skipped"),
        ] {
            let _ = writeln!(
                out,
                "# HELP netra_phase_{name}_total {help}\n# TYPE netra_phase_{name}_total counter"
            );
            for (phase, s) in &map {
                let v = match name {
                    "processed" => s.processed,
                    "failed" => s.failed,
                    "retried" => s.retried,
                    "dead_lettered" => s.dead_lettered,
                    _ => s.duplicates,
                };
                let _ = writeln!(out, "netra_phase_{name}_total{{phase=\"{phase}\"}} {v}");
            }
        }
        let _ = writeln!(out, "# HELP netra_phase_duration_seconds handler duration\n# TYPE netra_phase_duration_seconds histogram");
        for (phase, s) in &map {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "netra_phase_duration_seconds_bucket{{phase=\"{phase}\",le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "netra_phase_duration_seconds_bucket{{phase=\"{phase}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "netra_phase_duration_seconds_sum{{phase=\"{phase}\"}} {}",
                s.sum_s
            );
            let _ = writeln!(
                out,
                "netra_phase_duration_seconds_count{{phase=\"{phase}\"}} {}",
                s.count
            );
        }
        let agents = self.agents.lock().map(|m| m.clone()).unwrap_or_default();
        let _ = writeln!(out, "# HELP netra_agent_calls_total agent calls by result\n# TYPE netra_agent_calls_total counter");
        for (phase, (ok, err, cached, _)) in &agents {
            for (result, n) in [("ok", ok), ("error", err), ("cached", cached)] {
                let _ = writeln!(
                    out,
                    "netra_agent_calls_total{{phase=\"{phase}\",result=\"{result}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP netra_agent_seconds_total time spent in agents\n# TYPE netra_agent_seconds_total counter");
        for (phase, (_, _, _, secs)) in &agents {
            let _ = writeln!(out, "netra_agent_seconds_total{{phase=\"{phase}\"}} {secs}");
        }
        let batches = self.batches.lock().map(|m| m.clone()).unwrap_or_default();
        let _ = writeln!(out, "# HELP netra_batches_total group-committed statements by kind\n# TYPE netra_batches_total counter");
        for (kind, (n, _)) in &batches {
            let _ = writeln!(out, "netra_batches_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP netra_batch_items_total items those statements carried\n# TYPE netra_batch_items_total counter");
        for (kind, (_, items)) in &batches {
            let _ = writeln!(out, "netra_batch_items_total{{kind=\"{kind}\"}} {items}");
        }
        out.push_str(extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record("triage", Outcome::Processed, Duration::from_millis(20));
        m.record("triage", Outcome::DeadLettered, Duration::from_millis(2));
        let text = m.render("");
        assert!(text.contains("netra_phase_processed_total{phase=\"triage\"} 1"));
        assert!(text.contains("netra_phase_dead_lettered_total{phase=\"triage\"} 1"));
        assert!(
            text.contains("netra_phase_duration_seconds_bucket{phase=\"triage\",le=\"0.005\"} 1")
        );
        assert!(
            text.contains("netra_phase_duration_seconds_bucket{phase=\"triage\",le=\"0.025\"} 2")
        );
    }
}
