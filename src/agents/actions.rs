//! Actions: concrete steps for each kept recommendation, the supply
//! configuration they add up to (compute, storage, network, services), and
//! its validation against the constraints by the `validate_supply_config`
//! tool.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::{
    agents::{
        outputs::{
            ActionsOutput, DataOutput, OptimizationOutput, PlanItem, Recommendation, TriageOutput,
        },
        round2,
    },
    error::PhaseError,
    pipeline::agent::{AgentContext, PhaseInput, TypedAgent},
    tools::{Registry, ToolContext},
};

/// The actions agent.
pub struct Actions;

fn num(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |x| format!("{x:.0}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// The shadow evaluation that comes first for a model change.
fn shadow(rec: &Recommendation, which: &str) -> String {
    let f = |name: &str| s(rec.field(name)).to_string();
    format!(
        "Shadow-evaluate first: send a copy of {which} of {} to {} and compare its answers with {} on a labelled sample; go on only if they hold ({})",
        rec.workload_id,
        f("to_model"),
        f("from_model"),
        rec.str_field("risk_reason").unwrap_or("quality is not measured on this workload")
    )
}

/// The p95 to alert above, in words (today's when no latency was measured).
fn expected_p95(rec: &Recommendation) -> String {
    match rec.field("expected_p95_ms").as_f64() {
        Some(p) => format!("the expected {p:.0} ms"),
        None => "today's (not measured yet: record latency first)".to_string(),
    }
}

/// Steps for a model change of all or part of the traffic.
fn model_change_steps(rec: &Recommendation) -> Vec<String> {
    let w = rec.workload_id.as_str();
    let f = |name: &str| rec.field(name);
    match rec.kind.as_str() {
        "model_routing" => vec![
            shadow(rec, &format!("the requests with at most {} input tokens", f("max_input_tokens"))),
            format!("Route {w}'s requests with at most {} input tokens from {} to {} behind a feature flag, ramping 10% → 50% → 100% of them over a week", f("max_input_tokens"), s(f("from_model")), s(f("to_model"))),
            format!("Alert when p95 latency of the routed requests rises above {} or their error rate rises; roll back on alert", expected_p95(rec)),
        ],
        "model_upgrade" | "quality_comparison" => vec![
            shadow(rec, "5% of the traffic"),
            format!("Move {w} to {} only where the labelled sample shows better answers; the monthly cost changes by {} USD", s(f("to_model")), f("monthly_cost_change_usd")),
        ],
        "faster_model" => vec![
            shadow(rec, "5% of the traffic"),
            format!("Route {w} from {} to {} behind a feature flag and compare time to first token and p95 latency", s(f("from_model")), s(f("to_model"))),
        ],
        _ => vec![
            shadow(rec, "5% of the traffic"),
            format!("Route {w} from {} to {} behind a feature flag, ramping 10% → 50% → 100% over a week", s(f("from_model")), s(f("to_model"))),
            format!("Alert when p95 latency rises above {} or the error rate rises; roll back on alert", expected_p95(rec)),
        ],
    }
}

/// Steps for self-hosting (for cost or for capacity).
fn self_hosting_steps(rec: &Recommendation) -> Vec<String> {
    let w = rec.workload_id.as_str();
    let f = |name: &str| rec.field(name);
    vec![
        shadow(rec, "5% of the traffic"),
        format!("Provision {} x {} ({} GB of weights, KV cache for the peak in flight) and deploy {} with a serving engine (vLLM or TGI)", f("gpus"), s(f("gpu_offer")), f("weights_gb"), s(f("to_model"))),
        format!("Load-test at the peak of {:.2} tokens/s before moving traffic", rec.figures["required_tokens_per_s"].as_f64().unwrap_or(0.0)),
        format!("Move {w} from {} with a gradual ramp; keep the API as fallback", s(f("from_model"))),
    ]
}

/// Steps for one recommendation (pure).
pub fn steps(rec: &Recommendation) -> Vec<String> {
    let w = rec.workload_id.as_str();
    let f = |name: &str| rec.field(name);
    match rec.kind.as_str() {
        "model_right_sizing" | "model_routing" | "model_upgrade" | "quality_comparison"
        | "faster_model" => model_change_steps(rec),
        "self_hosting" | "self_hosted_capacity" => self_hosting_steps(rec),
        "max_output_tokens" => vec![
            format!("Set max_tokens = {} on {w}'s calls to {}", f("cap"), s(f("model"))),
            "Log finish_reason = length and review truncated answers weekly".to_string(),
        ],
        "prompt_trimming" => vec![
            format!("Measure which parts of {w}'s prompts the answers use (duplicate context, unused instructions or retrieved passages)"),
            format!("Compare answers with trimmed and full prompts on a labelled sample, then remove about {}% of input tokens", num(&json!(f("trim_share").as_f64().unwrap_or(0.0) * 100.0))),
        ],
        "streaming" => vec![
            format!("Check whether {w} already streams (stream = true); if not, stream answers from {} to its users", s(f("model"))),
            "Measure time to first token as the latency users see".to_string(),
        ],
        "prompt_caching" => vec![
            format!("Put the static system prompt and examples of {w} first in every request"),
            format!("Enable prompt caching on {} and log cached-token counts", s(f("model"))),
            "Compare the measured cached share with the assumed one after a day".to_string(),
        ],
        "batch_processing" => vec![
            format!("Tag the latency-tolerant requests of {w} (reports, evaluations, back-fills)"),
            format!("Submit them through the {} batch API and collect results within 24 h", s(f("model"))),
        ],
        "capacity_for_peaks" => vec![
            format!("Raise the provider limits of {w} to {} requests/min and {} tokens/min", f("requests_per_minute"), f("tokens_per_minute")),
            "Alert on 429 responses; queue and retry with backoff instead of failing".to_string(),
        ],
        _ => vec!["Review the recommendation with the workload owner".to_string()],
    }
}

/// The supply configuration the recommendations add up to, and the figures
/// it is validated with (pure).
pub fn supply_configuration(data: &DataOutput, opt: &OptimizationOutput) -> (Value, Value) {
    let recs = &opt.recommendations;
    let of = |kind: &'static str| recs.iter().filter(move |r| r.kind == kind);
    let mut routes = Vec::new();
    let mut models = Vec::new();
    let mut worst_p95: Option<f64> = None;
    let mut max_input: Option<f64> = None;
    for w in &data.workloads {
        let wid = &w.workload_id;
        let p95 = w.metrics["latency_ms"]["p95"].as_f64();
        if let Some(x) = w.metrics["tokens"]["input"]["max"].as_f64() {
            max_input = Some(max_input.map_or(x, |m: f64| m.max(x)));
        }
        let mut w_p95 = p95;
        for m in w.cost["models"].as_array().into_iter().flatten() {
            let change = recs.iter().find(|r| {
                r.workload_id == *wid
                    && *r.field("from_model") == m["model"]
                    && (r.kind == "model_right_sizing" || r.kind == "self_hosting")
            });
            let serving = change.map_or(&m["model"], |r| r.field("to_model"));
            if let Some(r) = change {
                w_p95 = r.field("expected_p95_ms").as_f64().or(w_p95);
            }
            routes.push(json!({"workload_id": wid, "from_model": m["model"], "model": serving}));
            if !models.contains(serving) && change.is_none_or(|r| r.kind != "self_hosting") {
                models.push(serving.clone());
            }
            for r in of("model_routing")
                .filter(|r| r.workload_id == *wid && *r.field("from_model") == m["model"])
            {
                routes.push(json!({"workload_id": wid, "from_model": m["model"], "model": r.field("to_model"), "when_input_tokens_at_most": r.field("max_input_tokens")}));
                if !models.contains(r.field("to_model")) {
                    models.push(r.field("to_model").clone());
                }
            }
        }
        if let Some(p) = w_p95 {
            worst_p95 = Some(worst_p95.map_or(p, |x: f64| x.max(p)));
        }
    }
    let self_hosted: Vec<Value> = of("self_hosting")
        .map(|r| json!({"offer": r.field("gpu_offer"), "gpus": r.field("gpus").as_f64().unwrap_or(1.0) as i64, "model": r.field("to_model"), "required_tokens_per_s": r.figures["required_tokens_per_s"]}))
        .collect();
    let config = json!({
        "compute": {"models": models, "routes": routes, "self_hosted": self_hosted},
        "storage": {
            "telemetry_retention_days": 90,
            "prompt_cache": if of("prompt_caching").next().is_some() { "provider-managed prefix cache" } else { "none" },
            "model_weights_gb": if self_hosted.is_empty() { Value::Null } else { json!(round2(of("self_hosting").filter_map(|r| r.field("weights_gb").as_f64()).sum::<f64>())) },
        },
        "network": {
            "region_affinity": "keep the current region",
            "egress": if self_hosted.is_empty() { "provider APIs over TLS" } else { "provider APIs over TLS; private endpoint for self-hosted models" },
        },
        "services": {
            "prompt_caching": of("prompt_caching").map(|r| json!({"workload_id": r.workload_id, "model": r.field("model")})).collect::<Vec<_>>(),
            "batch_api": of("batch_processing").map(|r| json!({"workload_id": r.workload_id, "model": r.field("model"), "share": r.field("share")})).collect::<Vec<_>>(),
            "max_output_tokens": of("max_output_tokens").map(|r| json!({"workload_id": r.workload_id, "model": r.field("model"), "cap": r.field("cap")})).collect::<Vec<_>>(),
            "rate_limits": of("capacity_for_peaks").map(|r| json!({"workload_id": r.workload_id, "requests_per_minute": r.field("requests_per_minute"), "tokens_per_minute": r.field("tokens_per_minute")})).collect::<Vec<_>>(),
        },
    });
    let expected = json!({
        "p95_ms": worst_p95.map(|p| round2(p.max(0.0))),
        "monthly_cost_usd": opt.projected_monthly_cost_usd.max(0.0),
        "savings_pct": opt.savings_pct.max(0.0),
        "max_input_tokens": max_input,
    });
    (config, expected)
}

impl TypedAgent for Actions {
    type Output = ActionsOutput;

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<ActionsOutput, PhaseError>> {
        Box::pin(async move {
            let triage: TriageOutput = input.output()?;
            let data: DataOutput = input.output()?;
            let opt: OptimizationOutput = input.output()?;
            let plan: Vec<PlanItem> = opt
                .recommendations
                .iter()
                .map(|r| PlanItem {
                    recommendation: r.title.clone(),
                    kind: r.kind.clone(),
                    workload_id: r.workload_id.clone(),
                    steps: steps(r),
                })
                .collect();
            let (config, expected) = supply_configuration(&data, &opt);
            let c = &triage.constraints;
            let constraints = json!({
                "latency_slo_ms": c.latency_slo_ms, "monthly_budget_usd": c.monthly_budget_usd,
                "quality_floor": c.quality_floor, "target_reduction_pct": c.target_reduction_pct,
            });
            let tctx = ToolContext::for_agent(ctx, &input.tenant);
            let validation = Registry::standard()
                .call(
                    &tctx,
                    "validate_supply_config",
                    json!({"config": config, "constraints": constraints, "expected": expected}),
                )
                .await?;
            Ok(ActionsOutput {
                plan,
                supply_configuration: config,
                expected,
                projected_monthly_cost_usd: opt.projected_monthly_cost_usd,
                validation,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_follows_the_recommendations() {
        let data = json!({"workloads": [{"workload_id": "w",
            "metrics": {"latency_ms": {"p95": 2000.0}, "tokens": {"input": {"max": 3000}}},
            "cost": {"models": [{"model": "gpt-4o"}]}}]});
        let opt = json!({"projected_monthly_cost_usd": 50.0, "savings_pct": 40.0, "recommendations": [
            {"kind": "model_right_sizing", "workload_id": "w", "from_model": "gpt-4o", "to_model": "gpt-4o-mini", "expected_p95_ms": 1400.0},
            {"kind": "max_output_tokens", "workload_id": "w", "model": "gpt-4o-mini", "cap": 700},
        ]});
        let data: DataOutput = serde_json::from_value(data).unwrap();
        let opt: OptimizationOutput = serde_json::from_value(opt).unwrap();
        let (config, expected) = supply_configuration(&data, &opt);
        assert_eq!(config["compute"]["models"], json!(["gpt-4o-mini"]));
        assert_eq!(config["services"]["max_output_tokens"][0]["cap"], 700);
        assert_eq!(expected["p95_ms"], json!(1400.0));
        assert_eq!(expected["max_input_tokens"], json!(3000.0));
        assert_eq!(steps(&opt.recommendations[1]).len(), 2);
    }

    #[test]
    fn every_model_change_starts_with_a_shadow_evaluation() {
        for kind in [
            "model_right_sizing",
            "model_routing",
            "self_hosting",
            "model_upgrade",
            "faster_model",
        ] {
            let r: Recommendation =
                serde_json::from_value(json!({"kind": kind, "workload_id": "w",
                "from_model": "gpt-4o", "to_model": "gpt-4o-mini", "max_input_tokens": 800,
                "risk_reason": "no quality floor was stated"}))
                .unwrap();
            let first = &steps(&r)[0];
            assert!(
                first.starts_with("Shadow-evaluate") && first.contains("no quality floor"),
                "{kind}: {first}"
            );
        }
    }
}
