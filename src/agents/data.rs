//! Data, the primary agent: runs the data tools concurrently through the
//! tool dispatcher for every workload the request names, then rates data
//! sufficiency: `sufficient`, `partial` (named gaps, reported as caveats) or
//! `insufficient` (exactly what is missing; the run ends `needs_input`).
//! The catalog it used is kept in its output, so later phases (and replays)
//! compute from the same prices.

use futures_util::{future::BoxFuture, stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::outputs::{Constraints, DataOutput, Sufficiency, ToolCall, TriageOutput, WorkloadData};
use crate::{
    error::PhaseError,
    pipeline::agent::{AgentContext, PhaseInput, TypedAgent},
    tools::{Registry, ToolContext},
};

/// The data agent.
pub struct Data;

/// Fewer requests than this make an analysis `partial`.
pub const MIN_REQUESTS: i64 = 100;

/// A window shorter than this (hours) misses daily seasonality: `partial`.
pub const MIN_SPAN_HOURS: f64 = 24.0;

/// An error rate above this is called out as a caveat.
pub const HIGH_ERROR_RATE: f64 = 0.05;

/// Tool calls in flight at once for one run (results keep their order), so
/// a request naming many workloads cannot exhaust the connection pool.
pub const MAX_CONCURRENT_TOOLS: usize = 4;

/// The workload tools the data phase runs for each workload.
pub const WORKLOAD_TOOLS: [&str; 3] = ["workload_metrics", "cost_breakdown", "performance"];

/// Rates one workload of `tenant`: the missing items (insufficient) and
/// the caveats (partial). Pure, for tests.
pub fn assess(
    tenant: &str,
    workload: &str,
    metrics: &Value,
    cost: &Value,
    constraints: &Constraints,
) -> (Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut caveats = Vec::new();
    let n = metrics["requests"].as_i64().unwrap_or(0);
    if n == 0 {
        missing.push(format!(
            "request telemetry for workload {workload}: no requests recorded (ingest it with `{}`, then reply on this thread)",
            ingest_hint(tenant, workload)
        ));
        return (missing, caveats);
    }
    if n < MIN_REQUESTS {
        caveats.push(format!(
            "workload {workload} has only {n} requests in the window (fewer than {MIN_REQUESTS}); figures are indicative"
        ));
    }
    let span = metrics["span_hours"].as_f64().unwrap_or(0.0);
    if span < MIN_SPAN_HOURS {
        caveats.push(format!(
            "workload {workload}'s telemetry spans {span:.2} hours (less than {MIN_SPAN_HOURS} h); monthly figures extrapolate it and daily seasonality is not captured"
        ));
    }
    if metrics["latency_ms"]["samples"].as_i64().unwrap_or(0) == 0 {
        let why = if constraints.latency_slo_ms.is_some() {
            "options that change latency cannot be checked against the SLO and are left out"
        } else {
            "latency impact is estimated from the catalog only"
        };
        caveats.push(format!(
            "workload {workload} has no per-request latency (latency_ms); {why}"
        ));
    }
    let error_rate = metrics["error_rate"].as_f64().unwrap_or(0.0);
    if error_rate > HIGH_ERROR_RATE {
        caveats.push(format!(
            "workload {workload} has an error rate of {:.2}%; fix errors before optimizing cost",
            error_rate * 100.0
        ));
    }
    for m in cost["models"].as_array().into_iter().flatten() {
        if m["cost_basis"] == "unknown" {
            caveats.push(format!(
                "model {} of workload {workload} is not in the supply catalog and has no recorded cost; its cost is unknown",
                m["model"].as_str().unwrap_or("?")
            ));
        }
    }
    (missing, caveats)
}

impl TypedAgent for Data {
    type Output = DataOutput;

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<DataOutput, PhaseError>> {
        Box::pin(async move {
            let triage: TriageOutput = input.output()?;
            let days = triage.time_range_days.clamp(1, 3650);
            if triage.workload_ids.is_empty() {
                return Ok(DataOutput {
                    sufficiency: Sufficiency::Insufficient,
                    missing: vec!["a workload id: name the workload (\"workload <id>\") or pass workload_id with the request".to_string()],
                    window_days: days,
                    ..DataOutput::default()
                });
            }
            let calls = tool_calls(&triage.workload_ids, days);
            let tctx = ToolContext::for_agent(ctx, &input.tenant);
            let results = call_all(&tctx, &calls).await?;
            Ok(rate(&input.tenant, &triage, days, calls, results))
        })
    }
}

/// The command that ingests a workload's telemetry for the tenant that
/// asked (without `--tenant` the rows would land where it cannot see them).
pub fn ingest_hint(tenant: &str, workload: &str) -> String {
    format!(
        "netra ingest --tenant {} --workload {} --format csv|jsonl|azure FILE",
        shell_word(tenant),
        shell_word(workload)
    )
}

/// A word a shell reads as it is: single-quoted unless it is plain.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Every (workload, tool) call, then the catalog lookup.
fn tool_calls(workloads: &[String], days: i64) -> Vec<ToolCall> {
    let per_workload = workloads.iter().flat_map(|w| {
        WORKLOAD_TOOLS.iter().map(move |t| ToolCall {
            tool: t.to_string(),
            parameters: json!({"workload_id": w, "days": days}),
        })
    });
    per_workload
        .chain(std::iter::once(ToolCall {
            tool: "catalog_lookup".to_string(),
            parameters: json!({"kind": "all"}),
        }))
        .collect()
}

/// Runs the calls concurrently ([`MAX_CONCURRENT_TOOLS`] at a time); the
/// results keep the calls' order.
async fn call_all(tctx: &ToolContext, calls: &[ToolCall]) -> Result<Vec<Value>, PhaseError> {
    let tools = Registry::standard();
    let futures: Vec<BoxFuture<'_, Result<Value, PhaseError>>> = calls
        .iter()
        .map(|c| Box::pin(tools.call(tctx, &c.tool, c.parameters.clone())) as _)
        .collect();
    stream::iter(futures)
        .buffered(MAX_CONCURRENT_TOOLS)
        .try_collect()
        .await
}

/// Rates the tool results of every workload of `tenant` (pure).
fn rate(
    tenant: &str,
    triage: &TriageOutput,
    days: i64,
    calls: Vec<ToolCall>,
    results: Vec<Value>,
) -> DataOutput {
    let catalog = results.last().cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let mut caveats = Vec::new();
    for (w, chunk) in triage
        .workload_ids
        .iter()
        .zip(results.chunks(WORKLOAD_TOOLS.len()))
    {
        let [metrics, cost, perf] = chunk else {
            continue;
        };
        let (m, c) = assess(tenant, w, metrics, cost, &triage.constraints);
        let has_data = m.is_empty();
        missing.extend(m);
        caveats.extend(c);
        if has_data {
            out.push(WorkloadData {
                workload_id: w.clone(),
                metrics: metrics.clone(),
                cost: cost.clone(),
                performance: perf.clone(),
            });
        }
    }
    let sufficiency = if !missing.is_empty() {
        Sufficiency::Insufficient
    } else if !caveats.is_empty() {
        Sufficiency::Partial
    } else {
        Sufficiency::Sufficient
    };
    DataOutput {
        sufficiency,
        missing,
        caveats,
        window_days: days,
        workloads: out,
        catalog: Some(catalog),
        tools_called: Some(calls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sufficiency_names_missing_data_and_gaps() {
        let none = json!({"requests": 0});
        let (m, c) = assess("acme", "w-1", &none, &json!({}), &Constraints::default());
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("request telemetry for workload w-1"));
        assert!(
            m[0].contains("`netra ingest --tenant acme --workload w-1 --format"),
            "the hint names the tenant: {}",
            m[0]
        );
        assert!(c.is_empty());
        let thin = json!({"requests": 40, "span_hours": 3.0, "latency_ms": {"samples": 0}, "error_rate": 0.1});
        let cost = json!({"models": [{"model": "my-model", "cost_basis": "unknown"}]});
        let slo = Constraints {
            latency_slo_ms: Some(2000.0),
            ..Constraints::default()
        };
        let (m, c) = assess("acme", "w-1", &thin, &cost, &slo);
        assert!(m.is_empty());
        assert_eq!(c.len(), 5, "{c:?}");
        assert!(c[2].contains("SLO"));
        assert!(c[4].contains("my-model"));
        let good = json!({"requests": 5000, "span_hours": 48.0, "latency_ms": {"samples": 5000}, "error_rate": 0.01});
        assert_eq!(
            assess(
                "acme",
                "w",
                &good,
                &json!({"models": []}),
                &Constraints::default()
            ),
            (vec![], vec![])
        );
    }

    #[test]
    fn the_ingest_hint_quotes_what_a_shell_would_split() {
        assert_eq!(
            ingest_hint("default", "chat-prod"),
            "netra ingest --tenant default --workload chat-prod --format csv|jsonl|azure FILE"
        );
        assert!(ingest_hint("t", "my bot's").contains(r"--workload 'my bot'\''s'"));
    }
}
