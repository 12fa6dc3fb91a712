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
        render_phase_counters(&mut out, &map);
        render_phase_durations(&mut out, &map);
        let agents = self.agents.lock().map(|m| m.clone()).unwrap_or_default();
        render_agents(&mut out, &agents);
        let batches = self.batches.lock().map(|m| m.clone()).unwrap_or_default();
        render_batches(&mut out, &batches);
        out.push_str(extra);
        out
    }
}

/// The `# HELP` and `# TYPE` lines of a metric.
fn describe(out: &mut String, metric: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
}

/// `netra_phase_<outcome>_total`, per phase.
fn render_phase_counters(out: &mut String, map: &BTreeMap<String, PhaseStats>) {
    for (name, help) in [
        ("processed", "phase messages processed successfully"),
        ("failed", "phase attempts that failed"),
        ("retried", "failed attempts scheduled for retry"),
        ("dead_lettered", "phase messages dead-lettered"),
        ("duplicates", "duplicate deliveries skipped"),
    ] {
        describe(out, &format!("netra_phase_{name}_total"), help, "counter");
        for (phase, s) in map {
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
}

/// The histogram `netra_phase_duration_seconds`, per phase.
fn render_phase_durations(out: &mut String, map: &BTreeMap<String, PhaseStats>) {
    let metric = "netra_phase_duration_seconds";
    describe(out, metric, "handler duration", "histogram");
    for (phase, s) in map {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{metric}_bucket{{phase=\"{phase}\",le=\"{b}\"}} {}",
                s.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "{metric}_bucket{{phase=\"{phase}\",le=\"+Inf\"}} {}",
            s.count
        );
        let _ = writeln!(out, "{metric}_sum{{phase=\"{phase}\"}} {}", s.sum_s);
        let _ = writeln!(out, "{metric}_count{{phase=\"{phase}\"}} {}", s.count);
    }
}

/// `netra_agent_calls_total` by result and `netra_agent_seconds_total`, per
/// agent.
fn render_agents(out: &mut String, agents: &BTreeMap<String, (u64, u64, u64, f64)>) {
    describe(
        out,
        "netra_agent_calls_total",
        "agent calls by result",
        "counter",
    );
    for (phase, (ok, err, cached, _)) in agents {
        for (result, n) in [("ok", ok), ("error", err), ("cached", cached)] {
            let _ = writeln!(
                out,
                "netra_agent_calls_total{{phase=\"{phase}\",result=\"{result}\"}} {n}"
            );
        }
    }
    describe(
        out,
        "netra_agent_seconds_total",
        "time spent in agents",
        "counter",
    );
    for (phase, (_, _, _, secs)) in agents {
        let _ = writeln!(out, "netra_agent_seconds_total{{phase=\"{phase}\"}} {secs}");
    }
}

/// `netra_batches_total` and `netra_batch_items_total`, per kind of batch.
fn render_batches(out: &mut String, batches: &BTreeMap<&'static str, (u64, u64)>) {
    describe(
        out,
        "netra_batches_total",
        "group-committed statements by kind",
        "counter",
    );
    for (kind, (n, _)) in batches {
        let _ = writeln!(out, "netra_batches_total{{kind=\"{kind}\"}} {n}");
    }
    describe(
        out,
        "netra_batch_items_total",
        "items those statements carried",
        "counter",
    );
    for (kind, (_, items)) in batches {
        let _ = writeln!(out, "netra_batch_items_total{{kind=\"{kind}\"}} {items}");
    }
}

/// The call ledger's counters of this process (`None`: no language model
/// is configured, every counter is 0): `netra_llm_ledger_lookups_total` by
/// result (`hit`: a recorded answer reused, `miss`: the model called),
/// `netra_llm_call_failures_total`, `netra_llm_tokens_total` by kind
/// (`input`, `output`), `netra_llm_rate_limit_wait_seconds_total`, and
/// `netra_llm_model_tokens_total` per model, phase and kind.
pub fn render_ledger(stats: Option<&crate::llm::client::LedgerStats>) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let get = |f: fn(&crate::llm::client::LedgerStats) -> &std::sync::atomic::AtomicU64| {
        stats.map_or(0, |s| f(s).load(Relaxed))
    };
    let mut out = String::new();
    describe(
        &mut out,
        "netra_llm_ledger_lookups_total",
        "model requests answered from the call ledger (hit) or by calling the model (miss)",
        "counter",
    );
    let _ = writeln!(
        out,
        "netra_llm_ledger_lookups_total{{result=\"hit\"}} {}\nnetra_llm_ledger_lookups_total{{result=\"miss\"}} {}",
        get(|s| &s.hits),
        get(|s| &s.misses)
    );
    describe(
        &mut out,
        "netra_llm_call_failures_total",
        "model calls that failed",
        "counter",
    );
    let _ = writeln!(
        out,
        "netra_llm_call_failures_total {}",
        get(|s| &s.failures)
    );
    describe(
        &mut out,
        "netra_llm_tokens_total",
        "tokens paid for, by kind",
        "counter",
    );
    let _ = writeln!(
        out,
        "netra_llm_tokens_total{{kind=\"input\"}} {}\nnetra_llm_tokens_total{{kind=\"output\"}} {}",
        get(|s| &s.input_tokens),
        get(|s| &s.output_tokens)
    );
    describe(
        &mut out,
        "netra_llm_rate_limit_wait_seconds_total",
        "time model calls waited for the per-model rate limits",
        "counter",
    );
    let _ = writeln!(
        out,
        "netra_llm_rate_limit_wait_seconds_total {}",
        get(|s| &s.rate_limited_ms) as f64 / 1000.0
    );
    describe(
        &mut out,
        "netra_llm_model_tokens_total",
        "tokens paid for, per model, phase and kind",
        "counter",
    );
    for ((model, phase), (input, output)) in
        stats.map(|s| s.tokens_by_model_phase()).unwrap_or_default()
    {
        let (model, phase) = (label(&model), label(&phase));
        for (kind, n) in [("input", input), ("output", output)] {
            let _ = writeln!(
                out,
                "netra_llm_model_tokens_total{{model=\"{model}\",phase=\"{phase}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    out
}

/// The gauges of fair admission, per tenant with runs waiting or in flight
/// (read from the store when scraped): `netra_tenant_runs_waiting`,
/// `netra_tenant_runs_in_flight` and `netra_tenant_requests_spooled`.
pub fn render_tenants(counts: &[crate::store::fair::TenantCounts]) -> String {
    type Count = fn(&crate::store::fair::TenantCounts) -> i64;
    let gauges: [(&str, &str, Count); 3] = [
        (
            "netra_tenant_runs_waiting",
            "runs waiting to be admitted (fair admission), per tenant",
            |c| c.waiting,
        ),
        (
            "netra_tenant_runs_in_flight",
            "runs admitted and not finished, per tenant",
            |c| c.in_flight,
        ),
        (
            "netra_tenant_requests_spooled",
            "requests read during a backlog and not yet runs (the intake inbox), per tenant",
            |c| c.spooled,
        ),
    ];
    let mut out = String::new();
    for (name, help, count) in gauges {
        describe(&mut out, name, help, "gauge");
        for c in counts {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\"}} {}",
                label(&c.tenant),
                count(c)
            );
        }
    }
    out
}

/// A label value, escaped as the text format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_ledger_counters_with_escaped_labels() {
        use std::sync::atomic::Ordering::Relaxed;
        let off = render_ledger(None);
        assert!(off.contains("netra_llm_ledger_lookups_total{result=\"hit\"} 0"));
        assert!(off.contains("netra_llm_rate_limit_wait_seconds_total 0"));
        let stats = crate::llm::client::LedgerStats::default();
        stats.hits.store(2, Relaxed);
        stats.misses.store(3, Relaxed);
        stats.failures.store(1, Relaxed);
        stats.input_tokens.store(120, Relaxed);
        stats.output_tokens.store(30, Relaxed);
        stats.rate_limited_ms.store(1500, Relaxed);
        stats.add_tokens("m\"1", "triage", 100, 20);
        stats.add_tokens("m\"1", "triage", 20, 10);
        let text = render_ledger(Some(&stats));
        for line in [
            "netra_llm_ledger_lookups_total{result=\"hit\"} 2",
            "netra_llm_ledger_lookups_total{result=\"miss\"} 3",
            "netra_llm_call_failures_total 1",
            "netra_llm_tokens_total{kind=\"input\"} 120",
            "netra_llm_tokens_total{kind=\"output\"} 30",
            "netra_llm_rate_limit_wait_seconds_total 1.5",
            "netra_llm_model_tokens_total{model=\"m\\\"1\",phase=\"triage\",kind=\"input\"} 120",
            "netra_llm_model_tokens_total{model=\"m\\\"1\",phase=\"triage\",kind=\"output\"} 30",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn renders_the_tenant_gauges_with_escaped_labels() {
        use crate::store::fair::TenantCounts;
        let counts = [
            TenantCounts {
                tenant: "acme".into(),
                waiting: 3,
                in_flight: 2,
                spooled: 7,
            },
            TenantCounts {
                tenant: "a\"b\\c\nd".into(),
                waiting: 0,
                in_flight: 1,
                spooled: 0,
            },
        ];
        let text = render_tenants(&counts);
        for line in [
            "# TYPE netra_tenant_runs_waiting gauge",
            "# TYPE netra_tenant_runs_in_flight gauge",
            "netra_tenant_runs_waiting{tenant=\"acme\"} 3",
            "netra_tenant_runs_in_flight{tenant=\"acme\"} 2",
            "netra_tenant_requests_spooled{tenant=\"acme\"} 7",
            "netra_tenant_runs_waiting{tenant=\"a\\\"b\\\\c\\nd\"} 0",
            "netra_tenant_runs_in_flight{tenant=\"a\\\"b\\\\c\\nd\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

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
