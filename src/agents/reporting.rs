//! Reporting: executive summary, recommendations, action plan, metrics, next
//! steps, and the full report as Markdown (stored on the run and added to the
//! thread). When data was insufficient the report asks for exactly what is
//! missing; an ambiguous request gets a clarifying question, not a guess.
//! The prose is assembled from computed figures only, so an LLM can later
//! take over the wording without touching the numbers. Every window is
//! named as it is (the data's actual span), the monthly factor and a
//! less-than-a-day extrapolation are stated, a constraint that could not
//! be checked is "unknown", and batching's latency is "up to 24 h".

use std::{collections::BTreeMap, fmt::Write};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::{
    agents::{
        optimization::monthly_factor,
        outputs::{
            ActionsOutput, Category, DataOutput, OptimizationOutput, ReportOutput, Sufficiency,
            TriageOutput,
        },
        round2,
    },
    error::PhaseError,
    pipeline::agent::{parse_output, AgentContext, PhaseInput, PhaseOutput, TypedAgent},
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

/// The per-workload metrics shown in the report (raw, unrounded figures):
/// the window is the data's span (`span`, `window_hours`), the monthly
/// factor exactly 720 ÷ its hours, and the rates those of the metrics tool.
fn metrics(data: &DataOutput) -> Vec<Value> {
    data.workloads
        .iter()
        .map(|w| {
            let m = &w.metrics;
            let r = &m["rate"];
            let factor = monthly_factor(m["span_hours"].as_f64().unwrap_or(0.0));
            let short = m["less_than_a_day"] != false;
            json!({
                "workload_id": w.workload_id,
                "requests": m["requests"], "errors": m["errors"], "error_rate": m["error_rate"],
                "input_tokens": m["tokens"]["input_total"], "output_tokens": m["tokens"]["output_total"],
                "span": m["span"], "first_ts": m["first_ts"], "last_ts": m["last_ts"],
                "span_hours": m["span_hours"], "window_hours": r["window_hours"],
                "monthly_factor": factor, "less_than_a_day": short,
                "confidence": if short { "low" } else { "high" },
                "latency_ms": m["latency_ms"], "ttft_ms": m["ttft_ms"],
                "output_tokens_p95": m["tokens"]["output"]["p95"],
                "peak_per_hour": r["peak_per_hour"], "peak_hour": r["peak_hour"],
                "avg_per_hour": r["avg_per_hour"], "peak_to_average": r["peak_to_average"],
                "peak_per_minute": r["peak_per_minute"], "peak_minute": r["peak_minute"],
                "avg_per_minute": r["avg_per_minute"],
                "peak_to_average_minute": r["peak_to_average_minute"],
                "window_cost_usd": w.cost["total_cost_usd"],
                "monthly_cost_usd": w.cost["total_cost_usd"].as_f64().map(|c| round2(c * factor)),
                "models": w.cost["models"],
            })
        })
        .collect()
}

/// The windows of the workloads, named as they are: the data's actual
/// span (one phrase when every workload has the same).
fn windows(metrics: &[Value]) -> String {
    let spans: Vec<&str> = metrics.iter().filter_map(|m| m["span"].as_str()).collect();
    match spans.as_slice() {
        [] => "no data".to_string(),
        [first, rest @ ..] if rest.iter().all(|s| s == first) => first.to_string(),
        _ => metrics
            .iter()
            .map(|m| {
                format!(
                    "{} over {}",
                    m["workload_id"].as_str().unwrap_or("?"),
                    m["span"].as_str().unwrap_or("no data")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// How the monthly figures relate to the window: the factor (one phrase
/// when every workload has the same), and that less than a day makes them
/// an extrapolation of low confidence.
fn extrapolation(metrics: &[Value]) -> String {
    let factors: Vec<String> = metrics
        .iter()
        .map(|m| format!("x{}", num(&m["monthly_factor"], 4)))
        .collect();
    let mut s = match factors.as_slice() {
        [first, rest @ ..] if rest.iter().all(|f| f == first) => {
            format!("a 30-day month is 720 h / the window's hours ({first})")
        }
        _ => format!(
            "a 30-day month is 720 h / each window's hours ({})",
            factors.join(", ")
        ),
    };
    if metrics.iter().any(|m| m["less_than_a_day"] == true) {
        s.push_str("; less than a day of data, so the monthly figures are an extrapolation and confidence is low");
    }
    s
}

/// The outputs a report is built from: those of the phases that ran.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    /// Triage (always ran; the default reads as an analysis).
    pub triage: TriageOutput,
    /// Data (the default is neither sufficient nor insufficient).
    pub data: DataOutput,
    /// Optimization, when the run is one.
    pub optimization: Option<OptimizationOutput>,
    /// Actions, when the run is an optimization.
    pub actions: Option<ActionsOutput>,
}

impl Upstream {
    /// The typed outputs of a phase input.
    pub fn of(input: &PhaseInput) -> Result<Self, PhaseError> {
        Ok(Upstream {
            triage: input.output_if_ran()?.unwrap_or_default(),
            data: input.output_if_ran()?.unwrap_or_default(),
            optimization: input.output_if_ran()?,
            actions: input.output_if_ran()?,
        })
    }

    /// The typed outputs of stored outputs by phase name.
    pub fn from_outputs(outputs: &BTreeMap<String, Value>) -> Result<Self, PhaseError> {
        fn get<T: PhaseOutput>(outputs: &BTreeMap<String, Value>) -> Result<Option<T>, PhaseError> {
            outputs
                .get(T::PHASE.as_str())
                .map(parse_output::<T>)
                .transpose()
        }
        Ok(Upstream {
            triage: get(outputs)?.unwrap_or_default(),
            data: get(outputs)?.unwrap_or_default(),
            optimization: get(outputs)?,
            actions: get(outputs)?,
        })
    }
}

/// The parts of a report as it is assembled.
struct Draft {
    md: String,
    summary: String,
    next_steps: Vec<String>,
    caveats: Vec<String>,
    metrics: Vec<Value>,
}

/// Builds the report from the upstream outputs (pure, for tests).
pub fn build(request: &Value, up: &Upstream) -> ReportOutput {
    let question = request["message"].as_str().unwrap_or("");
    // A request triage could not act on ends `needs_input` too (the
    // supervisor's route); the report says so in the same flag.
    let needs_input = up.data.sufficiency == Sufficiency::Insufficient || up.triage.ambiguous;
    let mut caveats = up.data.caveats.clone();
    caveats.extend(up.triage.unclear.iter().cloned());
    let mut d = Draft {
        md: format!("# netra report\n\n> {question}\n\n"),
        summary: String::new(),
        next_steps: Vec::new(),
        caveats,
        metrics: metrics(&up.data),
    };
    if up.data.sufficiency == Sufficiency::Insufficient {
        needs_input_section(&mut d, &up.data);
    } else if up.triage.category == Category::Question {
        question_section(&mut d, &up.triage);
    } else {
        analysis_sections(&mut d, up);
    }
    if !d.next_steps.is_empty() {
        let _ = writeln!(d.md, "## Next steps\n");
        for s in &d.next_steps {
            let _ = writeln!(d.md, "- {s}");
        }
    }
    let opt = up.optimization.as_ref();
    let actions = up.actions.as_ref();
    ReportOutput {
        executive_summary: d.summary,
        recommendations: opt.map(|o| o.recommendations.clone()),
        action_plan: actions.map(|a| a.plan.clone()),
        metrics: d.metrics,
        next_steps: d.next_steps,
        needs_input,
        clarifying_question: up.triage.clarifying_question.clone(),
        caveats: d.caveats,
        current_monthly_cost_usd: opt.map(|o| o.current_monthly_cost_usd),
        total_monthly_savings_usd: opt.map(|o| o.total_monthly_savings_usd),
        supply_configuration: actions.map(|a| a.supply_configuration.clone()),
        validation: actions.map(|a| a.validation.clone()),
        markdown: d.md,
        why: None,
        model: None,
        model_usage: None,
    }
}

/// The data was insufficient: say exactly what is missing.
fn needs_input_section(d: &mut Draft, data: &DataOutput) {
    d.summary = format!(
        "More data is needed before this can be answered: {}.",
        data.missing.join("; ")
    );
    let _ = writeln!(d.md, "## Needs input\n\n{}\n", d.summary);
    d.next_steps = data.missing.clone();
}

/// A question: the clarifying question triage asked, or the answer.
fn question_section(d: &mut Draft, triage: &TriageOutput) {
    if let Some(q) = &triage.clarifying_question {
        d.summary = format!("The request is ambiguous, so nothing was guessed. {q}");
        let _ = writeln!(d.md, "## Clarification needed\n\n{}\n", d.summary);
        d.next_steps.push(q.clone());
    } else {
        d.summary = answer(triage.topic.as_deref().unwrap_or("")).to_string();
        let _ = writeln!(d.md, "## Answer\n\n{}\n", d.summary);
        d.next_steps.push(
            "Name a workload and a goal to get an analysis computed from its telemetry".to_string(),
        );
    }
}

/// An analysis or an optimization: summary, metrics, recommendations,
/// action plan, caveats and next steps.
fn analysis_sections(d: &mut Draft, up: &Upstream) {
    d.summary = summary(d, up);
    let _ = writeln!(d.md, "## Executive summary\n\n{}\n", d.summary);
    metrics_tables(&mut d.md, &d.metrics, &up.data);
    if let Some(opt) = &up.optimization {
        recommendations_section(&mut d.md, opt);
    }
    if let Some(actions) = &up.actions {
        action_plan_section(&mut d.md, actions);
    }
    if !d.caveats.is_empty() {
        let _ = writeln!(d.md, "## Caveats\n");
        for c in &d.caveats {
            let _ = writeln!(d.md, "- {c}");
        }
        let _ = writeln!(d.md);
    }
    let actions = up.actions.as_ref();
    if actions.is_some_and(|a| a.validation["valid"] == false) {
        d.next_steps.push(
            "Resolve the failed checks of the supply configuration before rolling out".to_string(),
        );
    }
    for p in actions.into_iter().flat_map(|a| a.plan.iter()).take(3) {
        if let Some(first) = p.steps.first() {
            d.next_steps.push(first.clone());
        }
    }
    for c in &d.caveats {
        d.next_steps.push(format!("Close the data gap: {c}"));
    }
    d.next_steps
        .push("Re-run this analysis after the changes have been live for a week".to_string());
}

/// What the plan does for the goals asked (none stated: cost): its first
/// recommendations, in rank order, with the latency they take off.
fn goal_sentence(up: &Upstream, opt: &OptimizationOutput) -> String {
    let goals: Vec<&str> = up.triage.priorities.iter().map(|p| p.as_str()).collect();
    let goal = if goals.is_empty() {
        "cost".to_string()
    } else {
        goals.join(" and ")
    };
    let top: Vec<String> = opt
        .recommendations
        .iter()
        .take(3)
        .map(|r| {
            if r.latency_impact_ms < 0.0 {
                format!("{} ({} ms)", r.title, num(&json!(r.latency_impact_ms), 0))
            } else {
                r.title.clone()
            }
        })
        .collect();
    if top.is_empty() {
        format!(" For {goal}, no option applies (see Left out).")
    } else {
        format!(" For {goal}: {}.", top.join("; "))
    }
}

/// The executive summary of an analysis or an optimization.
fn summary(d: &Draft, up: &Upstream) -> String {
    let mut s = String::new();
    if let Some(opt) = &up.optimization {
        let _ = write!(
            s,
            "Over {}, current spend is {} per month; the {} recommendations save {} per month ({}%), to {}.",
            windows(&d.metrics),
            money(&json!(opt.current_monthly_cost_usd)),
            opt.recommendations.len(),
            money(&json!(opt.total_monthly_savings_usd)),
            num(&json!(opt.savings_pct), 2),
            money(&json!(opt.projected_monthly_cost_usd)),
        );
        s.push_str(&goal_sentence(up, opt));
        if let Some(t) = opt.target_reduction_pct {
            let met = if opt.meets_target == Some(true) {
                ""
            } else {
                "NOT "
            };
            let _ = write!(s, " The {t}% target is {met}met.");
        }
        if let Some(a) = &up.actions {
            s.push_str(&validity(&a.validation));
        }
    } else {
        let total: f64 = d
            .metrics
            .iter()
            .filter_map(|m| m["monthly_cost_usd"].as_f64())
            .sum();
        let _ = write!(
            s,
            "{} workload(s) over {}: {} requests, about {} per month.",
            d.metrics.len(),
            windows(&d.metrics),
            d.metrics
                .iter()
                .filter_map(|m| m["requests"].as_i64())
                .sum::<i64>(),
            money(&json!(round2(total)))
        );
    }
    if !d.metrics.is_empty() {
        let _ = write!(s, " Monthly figures: {}.", extrapolation(&d.metrics));
    }
    if !d.caveats.is_empty() {
        let _ = write!(
            s,
            " Data is {} ({} caveats below).",
            up.data.sufficiency.as_str(),
            d.caveats.len()
        );
    }
    s
}

/// Whether the supply configuration meets the hard constraints: a check
/// that could not be decided (no latency telemetry) is named as unknown,
/// not as a failure.
fn validity(validation: &Value) -> String {
    let Some(valid) = validation["valid"].as_bool() else {
        return String::new();
    };
    let unknown: Vec<&str> = validation["unknown"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match (valid, unknown.is_empty()) {
        (true, true) => " The supply configuration meets the hard constraints.".to_string(),
        (true, false) => format!(
            " The supply configuration meets the hard constraints that could be checked; {} is unknown (no telemetry to check it against), not violated.",
            unknown.join(", ")
        ),
        (false, _) => " The supply configuration does NOT meet the hard constraints.".to_string(),
    }
}

/// The latency impact of a recommendation as it is: its note when it has
/// one (an output cap cannot slow requests; batching takes up to 24 h for
/// the batched share), else the estimate in ms.
fn latency_text(r: &crate::agents::outputs::Recommendation) -> String {
    match r.str_field("latency_note") {
        Some(note) => note.to_string(),
        None => format!("{} ms", num(&json!(r.latency_impact_ms), 2)),
    }
}

/// The window and rate table: the data's span, its hours and monthly
/// factor, and the averages and peaks per hour and per minute.
fn rates_table(md: &mut String, metrics: &[Value]) {
    let _ = writeln!(md, "\n| workload | window | hours | monthly factor | avg/h | peak/h | peak/avg (hour) | avg/min | peak/min | peak minute | peak/avg (minute) |\n|---|---|---|---|---|---|---|---|---|---|---|");
    for m in metrics {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m["workload_id"].as_str().unwrap_or("?"),
            m["span"].as_str().unwrap_or("n/a"),
            num(&m["window_hours"], 4),
            num(&m["monthly_factor"], 4),
            num(&m["avg_per_hour"], 2),
            m["peak_per_hour"],
            num(&m["peak_to_average"], 2),
            num(&m["avg_per_minute"], 2),
            m["peak_per_minute"],
            m["peak_minute"].as_str().unwrap_or("n/a"),
            num(&m["peak_to_average_minute"], 2),
        );
    }
}

/// The metrics tables: per workload, its window and rates, per model's
/// cost, per model's performance.
fn metrics_tables(md: &mut String, metrics: &[Value], data: &DataOutput) {
    let _ = writeln!(md, "## Metrics\n\n| workload | requests | input tokens | output tokens | p50 ms | p95 ms | p99 ms | error rate | peak/avg (hour) | monthly cost |\n|---|---|---|---|---|---|---|---|---|---|");
    for m in metrics {
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
    rates_table(md, metrics);
    let _ = writeln!(md, "\n| model | requests | input tokens | output tokens | window cost | basis |\n|---|---|---|---|---|---|");
    for m in metrics {
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
    for w in &data.workloads {
        for p in w.performance["models"].as_array().into_iter().flatten() {
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
}

/// The recommendations, how each figure was computed, what was left out
/// and the assumptions.
fn recommendations_section(md: &mut String, opt: &OptimizationOutput) {
    let recs = &opt.recommendations;
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
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                r.title,
                money(&json!(r.monthly_savings_usd)),
                latency_text(r),
                r.risk,
                r.confidence
            );
        }
        let _ = writeln!(md, "\nHow each figure was computed:\n");
        for (i, r) in recs.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, r.basis);
        }
    }
    left_out_section(md, &opt.excluded);
    let _ = writeln!(md, "\nAssumptions:\n");
    for a in &opt.assumptions {
        let _ = writeln!(md, "- {a}");
    }
}

/// The options left out, each with the reason (a goal not asked, a
/// constraint, missing data).
fn left_out_section(md: &mut String, excluded: &[crate::agents::outputs::Excluded]) {
    if excluded.is_empty() {
        return;
    }
    let _ = writeln!(md, "\nLeft out:\n");
    for e in excluded {
        let on = if e.model.is_empty() {
            e.workload_id.clone()
        } else {
            format!("{} on {}", e.model, e.workload_id)
        };
        let _ = writeln!(md, "- {} ({on}): {}", e.kind, e.reason);
    }
}

/// The steps per recommendation, the supply configuration and its checks.
fn action_plan_section(md: &mut String, actions: &ActionsOutput) {
    let _ = writeln!(md, "\n## Action plan\n");
    for p in &actions.plan {
        let _ = writeln!(md, "**{}**\n", p.recommendation);
        for s in &p.steps {
            let _ = writeln!(md, "1. {s}");
        }
        let _ = writeln!(md);
    }
    let Some(checks) = actions.validation["checks"].as_array() else {
        return;
    };
    let _ = writeln!(
        md,
        "### Supply configuration\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(&actions.supply_configuration).unwrap_or_default()
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
            match c["ok"].as_bool() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "unknown",
            }
        );
    }
    let _ = writeln!(md);
}

impl TypedAgent for Reporting {
    type Output = ReportOutput;

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<ReportOutput, PhaseError>> {
        Box::pin(async move {
            let report = build(&input.request, &Upstream::of(input)?);
            let Some(model) = &ctx.model else {
                return Ok(report);
            };
            let report = if model.config().used_by(crate::model::Phase::Reporting) {
                super::model_prose::rewrite(ctx, model, input, report).await?
            } else {
                report
            };
            with_model_usage(model, input, report).await
        })
    }
}

/// Adds the run's model calls so far to the report: a table in the
/// Markdown and `model_usage` (per phase: calls, ledger hits, tokens, cost).
async fn with_model_usage(
    model: &crate::llm::client::ModelClient,
    input: &PhaseInput,
    mut report: ReportOutput,
) -> Result<ReportOutput, PhaseError> {
    let phases = model
        .usage_of_run(input.run_id)
        .await
        .map_err(|e| PhaseError::transient(e.to_string()))?;
    if phases.is_empty() {
        return Ok(report);
    }
    let _ = writeln!(
        report.markdown,
        "\n## Model usage\n\n| phase | calls | from the ledger | input tokens | output tokens | cost |\n|---|---|---|---|---|---|"
    );
    for p in &phases {
        let u = &p.usage;
        let _ = writeln!(
            report.markdown,
            "| {} | {} | {} | {} | {} | {} |",
            p.phase,
            u.calls,
            u.ledger_hits,
            u.input_tokens,
            u.output_tokens,
            u.cost_usd.map_or_else(
                || "self-hosted (no price)".to_string(),
                |c| format!("${c:.6}")
            )
        );
    }
    report.model_usage = serde_json::to_value(&phases).ok();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(request: &Value, outputs: &BTreeMap<String, Value>) -> Value {
        serde_json::to_value(build(request, &Upstream::from_outputs(outputs).unwrap())).unwrap()
    }

    #[test]
    fn windows_unknown_checks_and_batching_latency_are_stated_as_they_are() {
        let short = json!({"workload_id": "a", "span": "the data's 58 minutes, 10:02–11:00 UTC on 2023-11-16", "monthly_factor": 744.827_586, "less_than_a_day": true});
        assert_eq!(
            windows(std::slice::from_ref(&short)),
            "the data's 58 minutes, 10:02–11:00 UTC on 2023-11-16"
        );
        let e = extrapolation(std::slice::from_ref(&short));
        assert!(
            e.contains("(x744.8276)") && e.contains("confidence is low"),
            "{e}"
        );
        let long = json!({"workload_id": "b", "span": "the data's 4.0 days, …", "monthly_factor": 7.5, "less_than_a_day": false});
        assert!(windows(&[short, long.clone()]).starts_with("a over the data's 58 minutes"));
        assert!(!extrapolation(&[long]).contains("low"));
        let v = json!({"valid": true, "unknown": ["latency_slo_ms"]});
        assert!(
            validity(&v).contains("latency_slo_ms is unknown"),
            "{}",
            validity(&v)
        );
        assert!(validity(&json!({"valid": false})).contains("does NOT meet"));
        let batch = crate::agents::outputs::Recommendation {
            latency_impact_ms: crate::agents::optimization::BATCH_LATENCY_MS,
            detail: detail_of(
                json!({"latency_note": "up to 24 h for the batched 10% of requests"}),
            ),
            ..Default::default()
        };
        assert_eq!(
            latency_text(&batch),
            "up to 24 h for the batched 10% of requests"
        );
        let faster = crate::agents::outputs::Recommendation {
            latency_impact_ms: -12.5,
            ..Default::default()
        };
        assert_eq!(latency_text(&faster), "-12.50 ms");
    }

    fn detail_of(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn needs_input_and_clarification_are_explicit() {
        let mut o = BTreeMap::new();
        o.insert("triage".to_string(), json!({"category": "optimization"}));
        o.insert(
            "data".to_string(),
            json!({"sufficiency": "insufficient", "missing": ["request telemetry for workload x"]}),
        );
        let r = report(&json!({"message": "cut cost of workload x"}), &o);
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
        let r = report(&json!({"message": "hm"}), &q);
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
