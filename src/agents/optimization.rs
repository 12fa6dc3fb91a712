//! Optimization: recommendations computed from the data phase's telemetry
//! summary and the supply catalog, each with expected monthly savings,
//! latency impact, risk and confidence, filtered by the request's
//! constraints and ranked by savings.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::{
    agents::{
        catalog::{Catalog, ModelPrice},
        round2, upstream,
    },
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, PhaseInput},
};

/// The optimization agent.
pub struct Optimization;

/// Share of input tokens assumed to be a repeated prefix (system prompt,
/// few-shot examples) that prompt caching can serve. Stated in the output.
pub const CACHEABLE_INPUT_SHARE: f64 = 0.3;

/// Hours in the 30-day month the savings are quoted for.
pub const HOURS_PER_MONTH: f64 = 720.0;

/// Estimated end-to-end time of a request of `out_tokens` on a model.
fn service_ms(m: &ModelPrice, out_tokens: f64) -> f64 {
    m.typical_latency_ms + out_tokens / m.output_tokens_per_s.max(1.0) * 1000.0
}

/// Factor from the observed window to a 30-day month (window at least 1 h).
pub fn monthly_factor(span_hours: f64) -> f64 {
    HOURS_PER_MONTH / span_hours.max(1.0)
}

/// Recommendations for one workload (pure: the data summary in, figures out).
pub fn recommend(workload: &Value, constraints: &Value, catalog: &Catalog) -> Vec<Value> {
    let span = workload["summary"]["span_hours"].as_f64().unwrap_or(0.0);
    let factor = monthly_factor(span);
    let p95 = workload["summary"]["latency_ms"]["p95"].as_f64();
    let avg_out = workload["summary"]["avg_output_tokens"]
        .as_f64()
        .unwrap_or(0.0);
    let slo = constraints["latency_slo_ms"].as_f64();
    let floor = constraints["quality_floor"].as_u64().map(|q| q as u8);
    let wid = workload["workload_id"].as_str().unwrap_or("?");
    let mut recs = Vec::new();
    for m in workload["models"].as_array().into_iter().flatten() {
        let model = m["model"].as_str().unwrap_or("");
        let Some(cur) = catalog.model(model) else {
            continue;
        };
        let input = m["input_tokens"].as_f64().unwrap_or(0.0);
        let output = m["output_tokens"].as_f64().unwrap_or(0.0);
        let cur_cost = cur.cost(input, output);
        let min_tier = floor.unwrap_or(cur.quality_tier.saturating_sub(1).max(1));
        // Right-sizing: the cheapest model that keeps quality and the SLO.
        let best = catalog
            .models
            .iter()
            .filter(|alt| alt.id != cur.id && alt.quality_tier >= min_tier)
            .map(|alt| {
                let delta = service_ms(alt, avg_out) - service_ms(cur, avg_out);
                (alt, alt.cost(input, output), delta)
            })
            .filter(|(_, cost, _)| *cost < cur_cost)
            .filter(|(_, _, delta)| match (slo, p95) {
                (Some(slo), Some(p95)) => p95 + delta <= slo,
                _ => true,
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((alt, alt_cost, delta)) = best {
            let savings = (cur_cost - alt_cost) * factor;
            recs.push(json!({
                "kind": "model_right_sizing",
                "workload_id": wid,
                "title": format!("Route {model} traffic of {wid} to {}", alt.id),
                "from_model": model, "to_model": alt.id,
                "monthly_savings_usd": round2(savings),
                "latency_impact_ms": round2(delta),
                "expected_p95_ms": p95.map(|p| round2(p + delta)),
                "risk": if alt.quality_tier < cur.quality_tier { "medium" } else { "low" },
                "confidence": if span >= 24.0 { "high" } else { "medium" },
                "basis": format!("window cost {:.4} USD on {model} vs {:.4} USD on {} for the same tokens, x{:.2} to a month", cur_cost, alt_cost, alt.id, factor),
            }));
        }
        // Prompt caching of the repeated input prefix.
        if cur.cached_input_discount > 0.0 && input > 0.0 {
            let savings = input * CACHEABLE_INPUT_SHARE * cur.input_per_mtok / 1e6
                * cur.cached_input_discount
                * factor;
            recs.push(json!({
                "kind": "prompt_caching",
                "workload_id": wid,
                "title": format!("Enable prompt caching for {model} on {wid}"),
                "model": model,
                "monthly_savings_usd": round2(savings),
                "latency_impact_ms": 0.0,
                "risk": "low",
                "confidence": "medium",
                "basis": format!("{CACHEABLE_INPUT_SHARE} of {input} input tokens at a {} discount, x{:.2} to a month", cur.cached_input_discount, factor),
            }));
        }
    }
    recs.sort_by(|a, b| {
        b["monthly_savings_usd"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&a["monthly_savings_usd"].as_f64().unwrap_or(0.0))
    });
    recs
}

impl Agent for Optimization {
    fn phase(&self) -> &'static str {
        "optimization"
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            let triage = upstream(input, "triage")?;
            let data = upstream(input, "data")?;
            let catalog = Catalog::embedded();
            let mut recs = Vec::new();
            let mut current = 0.0;
            for w in data["workloads"].as_array().into_iter().flatten() {
                let factor = monthly_factor(w["summary"]["span_hours"].as_f64().unwrap_or(0.0));
                current += w["models"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["cost_usd"].as_f64())
                    .sum::<f64>()
                    * factor;
                recs.extend(recommend(w, &triage["constraints"], catalog));
            }
            let total: f64 = recs
                .iter()
                .filter_map(|r| r["monthly_savings_usd"].as_f64())
                .sum();
            let target = triage["constraints"]["target_reduction_pct"].as_f64();
            let achieved_pct = if current > 0.0 {
                round2(total.min(current) / current * 100.0)
            } else {
                0.0
            };
            Ok(json!({
                "strategy": if recs.is_empty() { "no change: no option beats the current setup within the constraints" } else { "cheapest option per workload within the constraints, then caching" },
                "current_monthly_cost_usd": round2(current),
                "recommendations": recs,
                "total_monthly_savings_usd": round2(total),
                "savings_pct": achieved_pct,
                "target_reduction_pct": target,
                "meets_target": target.map(|t| achieved_pct >= t),
                "assumptions": [format!("prompt caching assumes {}% of input tokens are a repeated prefix", CACHEABLE_INPUT_SHARE * 100.0), "monthly figures scale the observed window to 720 hours".to_string()],
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_sizing_savings_match_hand_computation() {
        // 10 h window: 1M input + 0.2M output tokens on gpt-4o.
        let w = json!({
            "workload_id": "w", "summary": {"span_hours": 10.0, "latency_ms": {"p95": 1500.0}, "avg_output_tokens": 100.0},
            "models": [{"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 200_000}],
        });
        let c = Catalog::embedded();
        let recs = recommend(&w, &json!({"latency_slo_ms": 2000.0}), c);
        let rs = recs
            .iter()
            .find(|r| r["kind"] == "model_right_sizing")
            .unwrap();
        // gpt-4o: 2.5 + 0.2*10 = 4.5 USD; cheapest tier>=2 within SLO is gpt-4o-mini:
        // 0.15 + 0.2*0.6 = 0.27 USD; (4.5-0.27)*72 = 304.56.
        assert_eq!(rs["to_model"], "gpt-4o-mini");
        assert_eq!(rs["monthly_savings_usd"], json!(304.56));
        // Caching: 1M*0.3*2.5/1M*0.5*72 = 27.0
        let pc = recs.iter().find(|r| r["kind"] == "prompt_caching").unwrap();
        assert_eq!(pc["monthly_savings_usd"], json!(27.0));
    }

    #[test]
    fn tight_slo_filters_slower_models() {
        let w = json!({
            "workload_id": "w", "summary": {"span_hours": 10.0, "latency_ms": {"p95": 1000.0}, "avg_output_tokens": 500.0},
            "models": [{"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 200_000}],
        });
        let recs = recommend(&w, &json!({"latency_slo_ms": 1000.0}), Catalog::embedded());
        for r in recs.iter().filter(|r| r["kind"] == "model_right_sizing") {
            assert!(r["expected_p95_ms"].as_f64().unwrap() <= 1000.0);
        }
    }
}
