//! Actions: concrete steps for each kept recommendation, a supply
//! configuration, and its validation against the request's constraints.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::{
    agents::{round2, upstream},
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, PhaseInput},
};

/// The actions agent.
pub struct Actions;

/// Steps for one recommendation.
fn steps(rec: &Value) -> Vec<String> {
    let w = rec["workload_id"].as_str().unwrap_or("?");
    match rec["kind"].as_str() {
        Some("model_right_sizing") => vec![
            format!("Shadow 5% of {w} traffic to {} and compare quality on a labelled sample", rec["to_model"].as_str().unwrap_or("?")),
            format!("Route traffic of {w} from {} to {} behind a feature flag, ramping 10% → 50% → 100%", rec["from_model"].as_str().unwrap_or("?"), rec["to_model"].as_str().unwrap_or("?")),
            "Alert when p95 latency or the error rate exceeds the constraint; roll back on alert".to_string(),
        ],
        Some("prompt_caching") => vec![
            format!("Move the static system prompt and examples of {w} to the start of every request"),
            "Enable the provider's prompt caching and log cached-token counts".to_string(),
            "Verify the cache hit rate after a day; expect the stated savings only above a 30% prefix share".to_string(),
        ],
        _ => vec!["Review the recommendation with the workload owner".to_string()],
    }
}

impl Agent for Actions {
    fn phase(&self) -> &'static str {
        "actions"
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            let triage = upstream(input, "triage")?;
            let opt = upstream(input, "optimization")?;
            let constraints = &triage["constraints"];
            let recs = opt["recommendations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let plan: Vec<Value> = recs
                .iter()
                .map(|r| json!({"recommendation": r["title"], "steps": steps(r)}))
                .collect();
            let models: Vec<Value> = recs
                .iter()
                .filter(|r| r["kind"] == "model_right_sizing")
                .map(|r| json!({"workload_id": r["workload_id"], "model": r["to_model"]}))
                .collect();
            let worst_p95 = recs
                .iter()
                .filter_map(|r| r["expected_p95_ms"].as_f64())
                .fold(None, |acc: Option<f64>, x| {
                    Some(acc.map_or(x, |a| a.max(x)))
                });
            let current = opt["current_monthly_cost_usd"].as_f64().unwrap_or(0.0);
            let savings = opt["total_monthly_savings_usd"].as_f64().unwrap_or(0.0);
            let projected = round2((current - savings).max(0.0));
            let mut checks = Vec::new();
            if let Some(slo) = constraints["latency_slo_ms"].as_f64() {
                checks.push(json!({"constraint": "latency_slo_ms", "limit": slo, "expected": worst_p95, "ok": worst_p95.is_none_or(|p| p <= slo)}));
            }
            if let Some(budget) = constraints["monthly_budget_usd"].as_f64() {
                checks.push(json!({"constraint": "monthly_budget_usd", "limit": budget, "expected": projected, "ok": projected <= budget}));
            }
            if let Some(target) = constraints["target_reduction_pct"].as_f64() {
                let pct = opt["savings_pct"].as_f64().unwrap_or(0.0);
                checks.push(json!({"constraint": "target_reduction_pct", "limit": target, "expected": pct, "ok": pct >= target}));
            }
            let valid = checks.iter().all(|c| c["ok"] == true);
            Ok(json!({
                "plan": plan,
                "supply_configuration": {
                    "compute": {"models": models},
                    "storage": {"telemetry_retention_days": 90},
                    "network": {"region_affinity": "keep current"},
                    "services": {"prompt_cache": recs.iter().any(|r| r["kind"] == "prompt_caching")},
                },
                "projected_monthly_cost_usd": projected,
                "validation": {"valid": valid, "checks": checks},
            }))
        })
    }
}
