//! Reporting: executive summary, recommendations, action plan, metrics, next
//! steps, and the full report as Markdown (stored on the run and added to the
//! thread). When data was insufficient, the report asks for exactly what is
//! missing.

use std::fmt::Write;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::{
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, PhaseInput},
};

/// The reporting agent.
pub struct Reporting;

fn money(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |x| format!("${x:.2}"))
}

/// Builds the report from the upstream outputs (pure, for tests).
pub fn build(request: &Value, outputs: &std::collections::BTreeMap<String, Value>) -> Value {
    let null = Value::Null;
    let triage = outputs.get("triage").unwrap_or(&null);
    let data = outputs.get("data").unwrap_or(&null);
    let opt = outputs.get("optimization").unwrap_or(&null);
    let actions = outputs.get("actions").unwrap_or(&null);
    let question = request["message"].as_str().unwrap_or("");
    let mut md = String::new();
    let _ = writeln!(md, "# netra report\n\n> {question}\n");
    let summary;
    let mut next_steps: Vec<String> = Vec::new();
    if data["sufficiency"] == "insufficient" {
        let missing: Vec<String> = data["missing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        summary = format!(
            "More data is needed before this can be answered: {}.",
            missing.join("; ")
        );
        let _ = writeln!(md, "## Needs input\n\n{summary}\n");
        next_steps = missing;
    } else if triage["category"] == "question" {
        summary = "This is a general question: netra analyses workloads it has telemetry for. Name a workload (\"workload <id>\") and a goal (cost, latency, quality, throughput) to get an analysis.".to_string();
        let _ = writeln!(md, "## Answer\n\n{summary}\n");
    } else {
        let mut s = String::new();
        if let Some(cur) = opt["current_monthly_cost_usd"].as_f64() {
            let _ = write!(
                s,
                "Current spend is about {} per month; the recommendations save {} ({}%).",
                money(&json!(cur)),
                money(&opt["total_monthly_savings_usd"]),
                opt["savings_pct"]
            );
            if let Some(valid) = actions["validation"]["valid"].as_bool() {
                let _ = write!(
                    s,
                    " The plan {} the stated constraints.",
                    if valid { "meets" } else { "does NOT meet" }
                );
            }
        } else {
            let _ = write!(
                s,
                "Analysis of {} workload(s) over {} days.",
                data["workloads"].as_array().map_or(0, Vec::len),
                data["window_days"]
            );
        }
        summary = s;
        let _ = writeln!(md, "## Executive summary\n\n{summary}\n");
        let _ = writeln!(md, "## Metrics\n\n| workload | requests | p50 ms | p95 ms | error rate | peak/avg |\n|---|---|---|---|---|---|");
        for w in data["workloads"].as_array().into_iter().flatten() {
            let s = &w["summary"];
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                w["workload_id"].as_str().unwrap_or("?"),
                s["requests"],
                s["latency_ms"]["p50"],
                s["latency_ms"]["p95"],
                s["error_rate"],
                w["hourly"]["peak_to_average"]
            );
        }
        let _ = writeln!(md, "\n| model | requests | input tokens | output tokens | cost (window) |\n|---|---|---|---|---|");
        for w in data["workloads"].as_array().into_iter().flatten() {
            for m in w["models"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    m["model"].as_str().unwrap_or("?"),
                    m["requests"],
                    m["input_tokens"],
                    m["output_tokens"],
                    money(&m["cost_usd"])
                );
            }
        }
        if let Some(recs) = opt["recommendations"].as_array() {
            let _ = writeln!(md, "\n## Recommendations\n\n| # | recommendation | monthly savings | latency impact | risk | confidence |\n|---|---|---|---|---|---|");
            for (i, r) in recs.iter().enumerate() {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} ms | {} | {} |",
                    i + 1,
                    r["title"].as_str().unwrap_or(""),
                    money(&r["monthly_savings_usd"]),
                    r["latency_impact_ms"],
                    r["risk"].as_str().unwrap_or(""),
                    r["confidence"].as_str().unwrap_or("")
                );
            }
        }
        if let Some(plan) = actions["plan"].as_array() {
            let _ = writeln!(md, "\n## Action plan\n");
            for p in plan {
                let _ = writeln!(md, "**{}**\n", p["recommendation"].as_str().unwrap_or(""));
                for s in p["steps"].as_array().into_iter().flatten() {
                    let _ = writeln!(md, "1. {}", s.as_str().unwrap_or(""));
                }
                let _ = writeln!(md);
            }
        }
        for c in data["caveats"].as_array().into_iter().flatten() {
            next_steps.push(format!("Caveat: {}", c.as_str().unwrap_or("")));
        }
        next_steps
            .push("Re-run this analysis after the changes have been live for a week".to_string());
    }
    if !next_steps.is_empty() {
        let _ = writeln!(md, "## Next steps\n");
        for s in &next_steps {
            let _ = writeln!(md, "- {s}");
        }
    }
    json!({
        "executive_summary": summary,
        "recommendations": opt["recommendations"].clone(),
        "action_plan": actions["plan"].clone(),
        "metrics": data["workloads"].clone(),
        "next_steps": next_steps,
        "needs_input": data["sufficiency"] == "insufficient",
        "markdown": md,
    })
}

impl Agent for Reporting {
    fn phase(&self) -> &'static str {
        "reporting"
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move { Ok(build(&input.request, &input.outputs)) })
    }
}
