//! Data, the primary agent: runs the data tools concurrently through the
//! tool dispatcher for every workload the request names, then rates data
//! sufficiency: `sufficient`, `partial` (named gaps, reported as caveats) or
//! `insufficient` (exactly what is missing; the run ends `needs_input`).
//! The window is the one the request states, or the default days; less
//! than a day of data, a zero-length window and a stated window the data
//! cannot fill are caveats that name the data's actual span.
//! The catalog it used is kept in its output, so later phases (and replays)
//! compute from the same prices.

use futures_util::{future::BoxFuture, stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::{
    optimization::monthly_factor,
    outputs::{Constraints, DataOutput, Sufficiency, ToolCall, TriageOutput, WorkloadData},
};
use crate::{
    error::PhaseError,
    pipeline::agent::{AgentContext, PhaseInput, TypedAgent},
    tools::{telemetry::duration_words, Registry, ToolContext},
};

/// The data agent.
pub struct Data;

/// Fewer requests than this make an analysis `partial`.
pub const MIN_REQUESTS: i64 = 100;

/// A window shorter than this (hours) misses daily seasonality: `partial`
/// (the metrics' `less_than_a_day`, counted in whole clock minutes).
pub const MIN_SPAN_HOURS: f64 = 24.0;

/// An error rate above this is called out as a caveat.
pub const HIGH_ERROR_RATE: f64 = 0.05;

/// Tool calls in flight at once for one run (results keep their order), so
/// a request naming many workloads cannot exhaust the connection pool.
pub const MAX_CONCURRENT_TOOLS: usize = 4;

/// The workload tools the data phase runs for each workload.
pub const WORKLOAD_TOOLS: [&str; 3] = ["workload_metrics", "cost_breakdown", "performance"];

/// Rates one workload of `tenant`: the missing items (insufficient) and
/// the caveats (partial). `requested_hours` is the window the request
/// stated, if it stated one. Pure, for tests.
pub fn assess(
    tenant: &str,
    workload: &str,
    metrics: &Value,
    cost: &Value,
    constraints: &Constraints,
    requested_hours: Option<f64>,
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
    caveats.extend(window_caveats(workload, metrics, requested_hours));
    if metrics["latency_ms"]["samples"].as_i64().unwrap_or(0) == 0 {
        let why = if constraints.latency_slo_ms.is_some() {
            "the latency SLO is unknown for it, not violated: options that may slow requests (a model change; batching unless a latency-tolerant share is declared) are held back, while options that cannot (prompt caching, output caps, prompt trimming) are kept"
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

/// The caveats of the window: a zero-length one (not extrapolated), less
/// than a day (extrapolated, low confidence), and a stated window the data
/// cannot fill (more than a minute of it without data).
fn window_caveats(workload: &str, metrics: &Value, requested_hours: Option<f64>) -> Vec<String> {
    let mut caveats = Vec::new();
    let hours = metrics["span_hours"].as_f64().unwrap_or(0.0);
    let span = metrics["span"].as_str().unwrap_or("the data's span");
    if hours <= 0.0 {
        caveats.push(format!(
            "workload {workload}'s requests all carry one timestamp: the window has zero length, so there are no rates and the monthly figures are the window's own (factor 1, not extrapolated)"
        ));
    } else if metrics["less_than_a_day"] != false {
        caveats.push(format!(
            "workload {workload}'s telemetry covers {span}, less than a day: monthly figures extrapolate it x{:.4} (720 h / {hours:.4} h), daily seasonality is not captured, and confidence is low",
            monthly_factor(hours)
        ));
    }
    if let Some(r) = requested_hours.filter(|r| (r - hours) * 3600.0 > 60.0) {
        caveats.push(format!(
            "the requested window, the last {}, holds only {span} of workload {workload}'s telemetry; the figures are for that span",
            duration_words(r * 3600.0)
        ));
    }
    caveats
}

/// The window the request states, in hours, if it states one: triage's
/// `window_hours`, or (an output of an older triage) a `time_range_days`
/// other than the default 30.
pub fn stated_window_hours(triage: &TriageOutput) -> Option<f64> {
    let days = triage.time_range_days;
    triage
        .window_hours
        .or_else(|| (days != TriageOutput::default().time_range_days).then_some(days as f64 * 24.0))
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
            let hours = stated_window_hours(&triage).map(|h| h.clamp(0.01, 87_600.0));
            let days = hours.map_or(triage.time_range_days, |h| (h / 24.0).ceil() as i64);
            let days = days.clamp(1, 3650);
            if triage.workload_ids.is_empty() {
                return Ok(DataOutput {
                    sufficiency: Sufficiency::Insufficient,
                    missing: vec!["a workload id: name the workload (\"workload <id>\") or pass workload_id with the request".to_string()],
                    window_days: days,
                    ..DataOutput::default()
                });
            }
            let calls = tool_calls(&triage.workload_ids, days, hours);
            let tctx = ToolContext::for_agent(ctx, &input.tenant);
            let results = call_all(&tctx, &calls).await?;
            Ok(rate(&input.tenant, &triage, (days, hours), calls, results))
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

/// Every (workload, tool) call, then the catalog lookup; a stated window
/// in hours is passed as it is (it replaces the days).
fn tool_calls(workloads: &[String], days: i64, hours: Option<f64>) -> Vec<ToolCall> {
    let parameters = |w: &String| match hours {
        Some(h) => json!({"workload_id": w, "days": days, "hours": h}),
        None => json!({"workload_id": w, "days": days}),
    };
    let per_workload = workloads.iter().flat_map(|w| {
        WORKLOAD_TOOLS.iter().map(move |t| ToolCall {
            tool: t.to_string(),
            parameters: parameters(w),
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
    (days, hours): (i64, Option<f64>),
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
        let (m, c) = assess(tenant, w, metrics, cost, &triage.constraints, hours);
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
        let (m, c) = assess(
            "acme",
            "w-1",
            &none,
            &json!({}),
            &Constraints::default(),
            None,
        );
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("request telemetry for workload w-1"));
        assert!(
            m[0].contains("`netra ingest --tenant acme --workload w-1 --format"),
            "the hint names the tenant: {}",
            m[0]
        );
        assert!(c.is_empty());
        let thin = json!({"requests": 40, "span_hours": 3.0, "less_than_a_day": true,
            "span": "the data's 3 h 00 min, 10:00–13:00 UTC on 2026-01-01",
            "latency_ms": {"samples": 0}, "error_rate": 0.1});
        let cost = json!({"models": [{"model": "my-model", "cost_basis": "unknown"}]});
        let slo = Constraints {
            latency_slo_ms: Some(2000.0),
            ..Constraints::default()
        };
        let (m, c) = assess("acme", "w-1", &thin, &cost, &slo, None);
        assert!(m.is_empty());
        assert_eq!(c.len(), 5, "{c:?}");
        assert!(
            c[1].contains("10:00–13:00 UTC") && c[1].contains("x240.0000"),
            "{}",
            c[1]
        );
        assert!(
            c[2].contains("SLO is unknown for it, not violated"),
            "{}",
            c[2]
        );
        assert!(c[4].contains("my-model"));
        let good = json!({"requests": 5000, "span_hours": 48.0, "less_than_a_day": false, "latency_ms": {"samples": 5000}, "error_rate": 0.01});
        let none = Constraints::default();
        let models = json!({"models": []});
        assert_eq!(
            assess("acme", "w", &good, &models, &none, None),
            (vec![], vec![])
        );
        // A stated window the data fills, and one it cannot.
        assert_eq!(
            assess("acme", "w", &good, &models, &none, Some(48.0)),
            (vec![], vec![])
        );
        let (_, c) = assess("acme", "w", &good, &models, &none, Some(720.0));
        assert!(c.len() == 1 && c[0].contains("the last 30.0 days"), "{c:?}");
    }

    #[test]
    fn a_zero_window_is_not_extrapolated_and_a_stated_window_is_read() {
        let instant = json!({"requests": 200, "span_hours": 0.0, "less_than_a_day": true, "latency_ms": {"samples": 200}});
        let (_, c) = assess(
            "t",
            "w",
            &instant,
            &json!({}),
            &Constraints::default(),
            None,
        );
        assert!(
            c.len() == 1 && c[0].contains("zero length") && c[0].contains("factor 1"),
            "{c:?}"
        );
        let calls = tool_calls(&["w".to_string()], 1, Some(2.0));
        assert_eq!(
            calls[0].parameters,
            json!({"workload_id": "w", "days": 1, "hours": 2.0})
        );
        let triage = TriageOutput {
            time_range_days: 7,
            ..TriageOutput::default()
        };
        assert_eq!(stated_window_hours(&triage), Some(168.0));
        assert_eq!(stated_window_hours(&TriageOutput::default()), None);
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
