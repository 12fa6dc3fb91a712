//! Reporting: executive summary, recommendations, action plan, metrics, next
//! steps, and the full report as Markdown (stored on the run and added to the
//! thread). When data was insufficient the report asks for exactly what is
//! missing; an ambiguous request gets a clarifying question, not a guess.
//! The prose is assembled from computed figures only, so an LLM can later
//! take over the wording without touching the numbers.

use std::{collections::BTreeMap, fmt::Write};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::{
    agents::{optimization::monthly_factor, round2},
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, PhaseInput},
};

/// The reporting agent.
pub struct Reporting;

fn money(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |x| format!("${x:.2}"))
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |x| format!("{x:.digits$}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

/// Short answers to the questions netra recognises without data (by the
/// `topic` triage found).
fn answer(topic: &str) -> &'static str {
    match topic {
        "prompt caching" | "caching" => "Prompt caching bills a repeated prompt prefix (system prompt, examples) at a discount (50–90% in the catalog) when it is sent first and unchanged. netra estimates it as input tokens × cacheable share × input price × discount.",
        "batch" => "Batch APIs process requests within 24 hours at about half price. They suit latency-tolerant traffic (reports, evaluations, back-fills), not interactive calls.",
        "right-siz" | "rightsiz" => "Right-sizing routes a workload to the cheapest model that keeps its quality tier and latency SLO; netra prices the workload's actual tokens on each catalog model.",
        "self-host" | "self host" => "Self-hosting pays for GPUs by the hour instead of tokens. It breaks even when the monthly API bill exceeds GPUs × hourly price × 720; netra sizes the GPUs for the peak hour's tokens/s.",
        "max tokens" | "max_tokens" | "output token" => "A max-output-token cap at the observed p95 of output length stops the longest 5% of answers early; the saving is the tokens above the cap times the output price.",
        "p95" | "percentile" => "p95 latency is the time within which 95% of requests finish; netra computes it from per-request telemetry with percentile_cont.",
        "peak" => "Capacity for peaks sizes rate limits or reserved throughput for the busiest hour plus headroom, using the workload's peak-to-average ratio.",
        _ => "netra analyses LLM workloads it has telemetry for: name a workload (\"workload <id>\") and a goal (cost, latency, quality, throughput).",
    }
}

/// The per-workload metrics shown in the report (raw, unrounded figures).
fn metrics(data: &Value) -> Vec<Value> {
    data["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let m = &w["metrics"];
            let factor = monthly_factor(m["span_hours"].as_f64().unwrap_or(0.0));
            json!({
                "workload_id": w["workload_id"],
                "requests": m["requests"], "errors": m["errors"], "error_rate": m["error_rate"],
                "input_tokens": m["tokens"]["input_total"], "output_tokens": m["tokens"]["output_total"],
                "span_hours": m["span_hours"], "monthly_factor": factor,
                "latency_ms": m["latency_ms"], "ttft_ms": m["ttft_ms"],
                "output_tokens_p95": m["tokens"]["output"]["p95"],
                "peak_per_hour": m["rate"]["peak_per_hour"], "avg_per_hour": m["rate"]["avg_per_hour"],
                "peak_to_average": m["rate"]["peak_to_average"],
                "window_cost_usd": w["cost"]["total_cost_usd"],
                "monthly_cost_usd": w["cost"]["total_cost_usd"].as_f64().map(|c| round2(c * factor)),
                "models": w["cost"]["models"],
            })
        })
        .collect()
}

/// Builds the report from the upstream outputs (pure, for tests).
pub fn build(request: &Value, outputs: &BTreeMap<String, Value>) -> Value {
    let null = Value::Null;
    let triage = outputs.get("triage").unwrap_or(&null);
    let data = outputs.get("data").unwrap_or(&null);
    let opt = outputs.get("optimization").unwrap_or(&null);
    let actions = outputs.get("actions").unwrap_or(&null);
    let question = request["message"].as_str().unwrap_or("");
    let needs_input = data["sufficiency"] == "insufficient";
    let mut md = String::new();
    let _ = writeln!(md, "# netra report\n\n> {question}\n");
    let summary;
    let mut next_steps: Vec<String> = Vec::new();
    let mut caveats = strings(&data["caveats"]);
    caveats.extend(strings(&triage["unclear"]));
    let metrics = metrics(data);
    if needs_input {
        let missing = strings(&data["missing"]);
        summary = format!(
            "More data is needed before this can be answered: {}.",
            missing.join("; ")
        );
        let _ = writeln!(md, "## Needs input\n\n{summary}\n");
        next_steps = missing;
    } else if triage["category"] == "question" {
        if let Some(q) = triage["clarifying_question"].as_str() {
            summary = format!("The request is ambiguous, so nothing was guessed. {q}");
            let _ = writeln!(md, "## Clarification needed\n\n{summary}\n");
            next_steps.push(q.to_string());
        } else {
            summary = answer(triage["topic"].as_str().unwrap_or("")).to_string();
            let _ = writeln!(md, "## Answer\n\n{summary}\n");
            next_steps.push(
                "Name a workload and a goal to get an analysis computed from its telemetry"
                    .to_string(),
            );
        }
    } else {
        let mut s = String::new();
        if let Some(cur) = opt["current_monthly_cost_usd"].as_f64() {
            let _ = write!(
                s,
                "Current spend is {} per month; the {} recommendations save {} per month ({}%), to {}.",
                money(&json!(cur)),
                opt["recommendations"].as_array().map_or(0, Vec::len),
                money(&opt["total_monthly_savings_usd"]),
                num(&opt["savings_pct"], 2),
                money(&opt["projected_monthly_cost_usd"]),
            );
            if let Some(t) = opt["target_reduction_pct"].as_f64() {
                let _ = write!(
                    s,
                    " The {t}% target is {}met.",
                    if opt["meets_target"] == true {
                        ""
                    } else {
                        "NOT "
                    }
                );
            }
            if let Some(valid) = actions["validation"]["valid"].as_bool() {
                let _ = write!(
                    s,
                    " The supply configuration {} the hard constraints.",
                    if valid { "meets" } else { "does NOT meet" }
                );
            }
        } else {
            let total: f64 = metrics
                .iter()
                .filter_map(|m| m["monthly_cost_usd"].as_f64())
                .sum();
            let _ = write!(
                s,
                "{} workload(s) over the last {} days: {} requests, about {} per month.",
                metrics.len(),
                data["window_days"],
                metrics
                    .iter()
                    .filter_map(|m| m["requests"].as_i64())
                    .sum::<i64>(),
                money(&json!(round2(total)))
            );
        }
        if !caveats.is_empty() {
            let _ = write!(
                s,
                " Data is {} ({} caveats below).",
                data["sufficiency"].as_str().unwrap_or("partial"),
                caveats.len()
            );
        }
        summary = s;
        let _ = writeln!(md, "## Executive summary\n\n{summary}\n");
        let _ = writeln!(md, "## Metrics\n\n| workload | requests | input tokens | output tokens | p50 ms | p95 ms | p99 ms | error rate | peak/avg | monthly cost |\n|---|---|---|---|---|---|---|---|---|---|");
        for m in &metrics {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {}% | {} | {} |",
                m["workload_id"].as_str().unwrap_or("?"),
                m["requests"],
                m["input_tokens"],
                m["output_tokens"],
                num(&m["latency_ms"]["p50"], 1),
                num(&m["latency_ms"]["p95"], 1),
                num(&m["latency_ms"]["p99"], 1),
                num(&json!(m["error_rate"].as_f64().unwrap_or(0.0) * 100.0), 2),
                num(&m["peak_to_average"], 2),
                money(&m["monthly_cost_usd"]),
            );
        }
        let _ = writeln!(md, "\n| model | requests | input tokens | output tokens | window cost | basis |\n|---|---|---|---|---|---|");
        for m in &metrics {
            for x in m["models"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    x["model"].as_str().unwrap_or("?"),
                    x["requests"],
                    x["input_tokens"],
                    x["output_tokens"],
                    money(&x["cost_usd"]),
                    x["cost_basis"].as_str().unwrap_or("")
                );
            }
        }
        let _ = writeln!(md, "\n| model | p50 ms | p95 ms | TTFT p95 ms | error rate | p95 output tokens | tokens above it |\n|---|---|---|---|---|---|---|");
        for w in data["workloads"].as_array().into_iter().flatten() {
            for p in w["performance"]["models"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {}% | {} | {} |",
                    p["model"].as_str().unwrap_or("?"),
                    num(&p["latency_ms"]["p50"], 1),
                    num(&p["latency_ms"]["p95"], 1),
                    num(&p["ttft_p95_ms"], 1),
                    num(&json!(p["error_rate"].as_f64().unwrap_or(0.0) * 100.0), 2),
                    p["output_cap"],
                    p["output_tokens_above_cap"]
                );
            }
        }
        if let Some(recs) = opt["recommendations"].as_array() {
            let _ = writeln!(md, "\n## Recommendations\n");
            if recs.is_empty() {
                let _ = writeln!(
                    md,
                    "No option beats the current setup within the constraints.\n"
                );
            } else {
                let _ = writeln!(md, "| # | recommendation | monthly savings | latency impact | risk | confidence |\n|---|---|---|---|---|---|");
                for (i, r) in recs.iter().enumerate() {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} ms | {} | {} |",
                        i + 1,
                        r["title"].as_str().unwrap_or(""),
                        money(&r["monthly_savings_usd"]),
                        num(&r["latency_impact_ms"], 2),
                        r["risk"].as_str().unwrap_or(""),
                        r["confidence"].as_str().unwrap_or("")
                    );
                }
                let _ = writeln!(md, "\nHow each figure was computed:\n");
                for (i, r) in recs.iter().enumerate() {
                    let _ = writeln!(md, "{}. {}", i + 1, r["basis"].as_str().unwrap_or(""));
                }
            }
            let excluded: Vec<&Value> = opt["excluded"].as_array().into_iter().flatten().collect();
            if !excluded.is_empty() {
                let _ = writeln!(md, "\nLeft out:\n");
                for e in excluded {
                    let _ = writeln!(
                        md,
                        "- {} ({} on {}): {}",
                        e["kind"].as_str().unwrap_or("?"),
                        e["model"].as_str().unwrap_or("?"),
                        e["workload_id"].as_str().unwrap_or("?"),
                        e["reason"].as_str().unwrap_or("")
                    );
                }
            }
            let _ = writeln!(md, "\nAssumptions:\n");
            for a in strings(&opt["assumptions"]) {
                let _ = writeln!(md, "- {a}");
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
            if let Some(checks) = actions["validation"]["checks"].as_array() {
                let _ = writeln!(
                    md,
                    "### Supply configuration\n\n```json\n{}\n```\n",
                    serde_json::to_string_pretty(&actions["supply_configuration"])
                        .unwrap_or_default()
                );
                let _ = writeln!(
                    md,
                    "| check | subject | limit | expected | ok |\n|---|---|---|---|---|"
                );
                for c in checks {
                    let _ = writeln!(
                        md,
                        "| {} ({}) | {} | {} | {} | {} |",
                        c["check"].as_str().unwrap_or(""),
                        c["severity"].as_str().unwrap_or(""),
                        c["subject"].as_str().unwrap_or(""),
                        c["limit"],
                        c["expected"],
                        if c["ok"] == true { "yes" } else { "NO" }
                    );
                }
                let _ = writeln!(md);
            }
        }
        if !caveats.is_empty() {
            let _ = writeln!(md, "## Caveats\n");
            for c in &caveats {
                let _ = writeln!(md, "- {c}");
            }
            let _ = writeln!(md);
        }
        if actions["validation"]["valid"] == false {
            next_steps.push(
                "Resolve the failed checks of the supply configuration before rolling out"
                    .to_string(),
            );
        }
        for p in actions["plan"].as_array().into_iter().flatten().take(3) {
            if let Some(first) = p["steps"].get(0).and_then(Value::as_str) {
                next_steps.push(first.to_string());
            }
        }
        for c in &caveats {
            next_steps.push(format!("Close the data gap: {c}"));
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
        "metrics": metrics,
        "next_steps": next_steps,
        "needs_input": needs_input,
        "clarifying_question": triage["clarifying_question"].clone(),
        "caveats": caveats,
        "current_monthly_cost_usd": opt["current_monthly_cost_usd"].clone(),
        "total_monthly_savings_usd": opt["total_monthly_savings_usd"].clone(),
        "supply_configuration": actions["supply_configuration"].clone(),
        "validation": actions["validation"].clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_input_and_clarification_are_explicit() {
        let mut o = BTreeMap::new();
        o.insert("triage".to_string(), json!({"category": "optimization"}));
        o.insert(
            "data".to_string(),
            json!({"sufficiency": "insufficient", "missing": ["request telemetry for workload x"]}),
        );
        let r = build(&json!({"message": "cut cost of workload x"}), &o);
        assert_eq!(r["needs_input"], true);
        assert!(r["markdown"]
            .as_str()
            .unwrap()
            .contains("request telemetry for workload x"));
        let mut q = BTreeMap::new();
        q.insert(
            "triage".to_string(),
            json!({"category": "question", "clarifying_question": "Which workload?"}),
        );
        let r = build(&json!({"message": "hm"}), &q);
        assert_eq!(r["needs_input"], false);
        assert!(r["executive_summary"]
            .as_str()
            .unwrap()
            .contains("Which workload?"));
        for key in [
            "markdown",
            "executive_summary",
            "recommendations",
            "action_plan",
            "metrics",
            "next_steps",
            "needs_input",
        ] {
            assert!(r.get(key).is_some(), "{key}");
        }
    }
}
