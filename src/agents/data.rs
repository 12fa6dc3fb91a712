//! Data, the primary agent: runs the data tools concurrently through the
//! tool dispatcher for every workload the request names, then rates data
//! sufficiency: `sufficient`, `partial` (named gaps, reported as caveats) or
//! `insufficient` (exactly what is missing; the run ends `needs_input`).
//! The catalog it used is kept in its output, so later phases (and replays)
//! compute from the same prices.

use futures_util::{future::BoxFuture, stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::{
    agents::upstream,
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, PhaseInput},
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

/// Rates one workload's tool results: the missing items (insufficient) and
/// the caveats (partial). Pure, for tests.
pub fn assess(
    workload: &str,
    metrics: &Value,
    cost: &Value,
    constraints: &Value,
) -> (Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut caveats = Vec::new();
    let n = metrics["requests"].as_i64().unwrap_or(0);
    if n == 0 {
        missing.push(format!(
            "request telemetry for workload {workload}: no requests recorded (ingest it with `netra ingest --workload {workload} --format csv|jsonl|azure FILE`, then reply on this thread)"
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
        let why = if constraints["latency_slo_ms"].is_number() {
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

impl Agent for Data {
    fn phase(&self) -> &'static str {
        "data"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            let triage = upstream(input, "triage")?;
            let workloads: Vec<String> = triage["workload_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let days = triage["time_range_days"]
                .as_i64()
                .unwrap_or(30)
                .clamp(1, 3650);
            if workloads.is_empty() {
                return Ok(json!({
                    "sufficiency": "insufficient",
                    "missing": ["a workload id: name the workload (\"workload <id>\") or pass workload_id with the request"],
                    "caveats": [], "workloads": [], "window_days": days,
                }));
            }
            let tools = Registry::standard();
            let tctx = ToolContext::for_agent(ctx, &input.tenant);
            // Every (workload, tool) call plus the catalog lookup, concurrently.
            let calls = workloads.iter().flat_map(|w| {
                WORKLOAD_TOOLS
                    .iter()
                    .map(move |t| (*t, json!({"workload_id": w, "days": days})))
            });
            let calls: Vec<(&str, Value)> = calls
                .chain(std::iter::once(("catalog_lookup", json!({"kind": "all"}))))
                .collect();
            let futures: Vec<BoxFuture<'_, Result<Value, PhaseError>>> = calls
                .iter()
                .map(|(name, params)| Box::pin(tools.call(&tctx, name, params.clone())) as _)
                .collect();
            let results: Vec<Value> = stream::iter(futures)
                .buffered(MAX_CONCURRENT_TOOLS)
                .try_collect()
                .await?;
            let catalog = results.last().cloned().unwrap_or(Value::Null);
            let mut out = Vec::new();
            let mut missing = Vec::new();
            let mut caveats = Vec::new();
            for (w, chunk) in workloads.iter().zip(results.chunks(WORKLOAD_TOOLS.len())) {
                let [metrics, cost, perf] = chunk else {
                    continue;
                };
                let (m, c) = assess(w, metrics, cost, &triage["constraints"]);
                let has_data = m.is_empty();
                missing.extend(m);
                caveats.extend(c);
                if has_data {
                    out.push(json!({"workload_id": w, "metrics": metrics, "cost": cost, "performance": perf}));
                }
            }
            let sufficiency = if !missing.is_empty() {
                "insufficient"
            } else if !caveats.is_empty() {
                "partial"
            } else {
                "sufficient"
            };
            Ok(json!({
                "sufficiency": sufficiency,
                "missing": missing,
                "caveats": caveats,
                "window_days": days,
                "workloads": out,
                "catalog": catalog,
                "tools_called": calls.iter().map(|(n, p)| json!({"tool": n, "parameters": p})).collect::<Vec<_>>(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sufficiency_names_missing_data_and_gaps() {
        let none = json!({"requests": 0});
        let (m, c) = assess("w-1", &none, &json!({}), &json!({}));
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("request telemetry for workload w-1"));
        assert!(c.is_empty());
        let thin = json!({"requests": 40, "span_hours": 3.0, "latency_ms": {"samples": 0}, "error_rate": 0.1});
        let cost = json!({"models": [{"model": "my-model", "cost_basis": "unknown"}]});
        let (m, c) = assess("w-1", &thin, &cost, &json!({"latency_slo_ms": 2000.0}));
        assert!(m.is_empty());
        assert_eq!(c.len(), 5, "{c:?}");
        assert!(c[2].contains("SLO"));
        assert!(c[4].contains("my-model"));
        let good = json!({"requests": 5000, "span_hours": 48.0, "latency_ms": {"samples": 5000}, "error_rate": 0.01});
        assert_eq!(
            assess("w", &good, &json!({"models": []}), &json!({})),
            (vec![], vec![])
        );
    }
}
