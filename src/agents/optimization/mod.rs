//! Optimization: recommendations computed from the data phase's tool
//! results and the catalog it used, each with expected monthly savings,
//! latency impact, risk, confidence and a `basis` naming the numbers used;
//! filtered by the constraints (latency SLO, quality floor; the budget is
//! checked on the whole plan) and ranked by the request's priorities.
//!
//! Per model the options form one chain, so their savings add up without
//! double counting: first a model change (right-sizing to a cheaper API
//! model, or self-hosting on GPUs, whichever saves more), then — on the
//! model that serves afterwards — a max-output-token cap, prompt caching,
//! and batch processing of the latency-tolerant share. Each saving is the
//! window figure times [`monthly_factor`]. Everything here is pure: the same
//! data output gives the same figures.

use std::cmp::Ordering;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    agents::{
        catalog::{Catalog, ModelPrice},
        outputs::{
            Constraints, DataOutput, Excluded, OptimizationOutput, Priority, Recommendation,
            TriageOutput, WorkloadData,
        },
        round2,
    },
    error::PhaseError,
    pipeline::agent::{AgentContext, PhaseInput, TypedAgent},
};

/// The optimization agent.
pub struct Optimization;

pub mod options;

pub use options::*;

/// Builds the per-model inputs of one workload of the data output.
fn model_uses<'a>(w: &'a WorkloadData, catalog: &'a Catalog) -> (Vec<ModelUse<'a>>, Vec<Excluded>) {
    let wid = w.workload_id.as_str();
    let m = &w.metrics;
    let span = m["span_hours"].as_f64().unwrap_or(0.0);
    let n = m["requests"].as_i64().unwrap_or(0);
    let factor = monthly_factor(span);
    let total_tokens = m["tokens"]["total"].as_f64().unwrap_or(0.0);
    let peak_tokens = m["rate"]["peak_tokens_per_hour"].as_f64().unwrap_or(0.0);
    let confidence = if span >= 24.0 && n >= crate::agents::data::MIN_REQUESTS {
        "high"
    } else {
        "medium"
    };
    let mut uses = Vec::new();
    let mut skipped = Vec::new();
    for c in w.cost["models"].as_array().into_iter().flatten() {
        let id = c["model"].as_str().unwrap_or("");
        let Some(cur) = catalog.model(id) else {
            skipped.push(Excluded {
                kind: "all".to_string(),
                workload_id: wid.to_string(),
                model: id.to_string(),
                reason: "model not in the supply catalog".to_string(),
            });
            continue;
        };
        let perf = w.performance["models"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["model"] == id);
        let input = c["input_tokens"].as_f64().unwrap_or(0.0);
        let output = c["output_tokens"].as_f64().unwrap_or(0.0);
        uses.push(ModelUse {
            workload_id: wid,
            current: cur,
            input_tokens: input,
            output_tokens: output,
            avg_output_tokens: perf
                .and_then(|p| p["avg_output_tokens"].as_f64())
                .unwrap_or(0.0),
            tokens_above_cap: perf
                .and_then(|p| p["output_tokens_above_cap"].as_f64())
                .unwrap_or(0.0),
            output_cap: perf.and_then(|p| p["output_cap"].as_i64()),
            requests_above_cap: perf
                .and_then(|p| p["requests_above_cap"].as_i64())
                .unwrap_or(0),
            p95_ms: m["latency_ms"]["p95"].as_f64(),
            max_input_tokens: m["tokens"]["input"]["max"].as_f64().unwrap_or(0.0),
            peak_tokens_per_hour: if total_tokens > 0.0 {
                peak_tokens * (input + output) / total_tokens
            } else {
                0.0
            },
            factor,
            confidence,
        });
    }
    (uses, skipped)
}

/// Recommendations for one workload of the data output: (kept, excluded).
pub fn recommend(
    w: &WorkloadData,
    limits: &Limits,
    catalog: &Catalog,
) -> (Vec<Recommendation>, Vec<Excluded>) {
    let (uses, mut out) = model_uses(w, catalog);
    let mut recs = Vec::new();
    for u in &uses {
        match model_change(u, catalog, limits, &mut recs, &mut out) {
            Some(serving) => token_options(u, serving, limits, &mut recs, &mut out),
            None => out.push(excluded(
                "token_options",
                u,
                "self-hosted GPUs are paid by the hour; token-priced options do not apply".into(),
            )),
        }
    }
    if let Some(r) = peak_capacity(&w.workload_id, &w.metrics) {
        recs.push(r);
    }
    (recs, out)
}

/// The model change (step 1): the larger saving of right-sizing and
/// self-hosting. Answers the model that serves afterwards, or `None` when
/// it is self-hosted.
fn model_change<'a>(
    u: &ModelUse<'a>,
    catalog: &'a Catalog,
    limits: &Limits,
    recs: &mut Vec<Recommendation>,
    out: &mut Vec<Excluded>,
) -> Option<&'a ModelPrice> {
    let rs = ("model_right_sizing", right_sizing(u, catalog, limits));
    let sh = ("self_hosting", self_hosting(u, catalog, limits));
    let savings =
        |r: &Result<Recommendation, String>| r.as_ref().ok().map(|v| v.monthly_savings_usd);
    let (chosen, other) = match (savings(&rs.1), savings(&sh.1)) {
        (Some(a), Some(b)) if b > a => (sh, rs),
        (None, Some(_)) => (sh, rs),
        _ => (rs, sh),
    };
    let mut serving = Some(u.current);
    match chosen.1 {
        Ok(rec) => {
            serving = if chosen.0 == "self_hosting" {
                None
            } else {
                Some(
                    rec.str_field("to_model")
                        .and_then(|id| catalog.model(id))
                        .unwrap_or(u.current),
                )
            };
            if other.1.is_ok() {
                out.push(excluded(
                    other.0,
                    u,
                    format!("superseded by {} which saves more", chosen.0),
                ));
            }
            recs.push(rec);
        }
        Err(r) => out.push(excluded(chosen.0, u, r)),
    }
    if let Err(r) = other.1 {
        out.push(excluded(other.0, u, r));
    }
    serving
}

/// Steps 2 to 4: the output cap, prompt caching and batching, on the model
/// that serves after the model change.
fn token_options(
    u: &ModelUse<'_>,
    serving: &ModelPrice,
    limits: &Limits,
    recs: &mut Vec<Recommendation>,
    out: &mut Vec<Excluded>,
) {
    let capped = match output_cap(u, serving) {
        Ok(r) => {
            recs.push(r);
            true
        }
        Err(r) => {
            out.push(excluded("max_output_tokens", u, r));
            false
        }
    };
    let cached = match prompt_caching(u, serving, limits) {
        Ok(r) => {
            recs.push(r);
            true
        }
        Err(r) => {
            out.push(excluded("prompt_caching", u, r));
            false
        }
    };
    match batch(u, serving, limits, capped, cached) {
        Ok(r) => recs.push(r),
        Err(r) => out.push(excluded("batch_processing", u, r)),
    }
}

fn risk_rank(v: &Recommendation) -> u8 {
    match v.risk.as_str() {
        "low" => 0,
        "medium" => 1,
        _ => 2,
    }
}

/// Orders recommendations by the request's priorities, in their order:
/// cost (larger savings first), latency (smaller latency impact first),
/// quality (lower risk first), throughput (capacity first); ties by kind.
pub fn rank(recs: &mut [Recommendation], priorities: &[Priority]) {
    let capacity = |v: &Recommendation| v.kind == "capacity_for_peaks";
    recs.sort_by(|a, b| {
        for p in priorities {
            let o = match p {
                Priority::Cost => b.monthly_savings_usd.total_cmp(&a.monthly_savings_usd),
                Priority::Latency => a.latency_impact_ms.total_cmp(&b.latency_impact_ms),
                Priority::Quality => risk_rank(a).cmp(&risk_rank(b)),
                Priority::Throughput => capacity(b).cmp(&capacity(a)),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        b.monthly_savings_usd
            .total_cmp(&a.monthly_savings_usd)
            .then_with(|| a.kind.cmp(&b.kind))
    });
}

/// The limits of a request: triage constraints plus context overrides.
pub fn limits(constraints: &Constraints, context: &Value) -> Limits {
    let share = |k: &str| context[k].as_f64().filter(|x| (0.0..=1.0).contains(x));
    Limits {
        latency_slo_ms: constraints.latency_slo_ms,
        quality_floor: constraints.quality_floor,
        cacheable_share: share("cacheable_input_share").unwrap_or(CACHEABLE_INPUT_SHARE),
        batch_share: share("batch_eligible_share").unwrap_or(BATCH_ELIGIBLE_SHARE),
        batch_share_declared: share("batch_eligible_share").is_some(),
    }
}

/// The whole optimization output from the triage and data outputs (pure).
pub fn optimize(
    triage: &TriageOutput,
    data: &DataOutput,
    context: &Value,
    catalog: &Catalog,
) -> OptimizationOutput {
    let limits = limits(&triage.constraints, context);
    let mut recs = Vec::new();
    let mut left_out = Vec::new();
    let mut current = 0.0;
    for w in &data.workloads {
        let factor = monthly_factor(w.metrics["span_hours"].as_f64().unwrap_or(0.0));
        current += w.cost["total_cost_usd"].as_f64().unwrap_or(0.0) * factor;
        let (kept, out) = recommend(w, &limits, catalog);
        recs.extend(kept);
        left_out.extend(out);
    }
    rank(&mut recs, &triage.priorities);
    let total: f64 = recs.iter().map(|r| r.monthly_savings_usd).sum();
    let c = &triage.constraints;
    let pct = if current > 0.0 {
        total.min(current) / current * 100.0
    } else {
        0.0
    };
    let projected = (current - total).max(0.0);
    OptimizationOutput {
        strategy: if recs.iter().any(|r| r.monthly_savings_usd > 0.0) {
            "per model: the cheaper of right-sizing and self-hosting within the constraints, then an output cap, prompt caching and batching on the model that serves"
        } else {
            "no change: no option beats the current setup within the constraints"
        }
        .to_string(),
        priorities: triage.priorities.clone(),
        current_monthly_cost_usd: round2(current),
        recommendations: recs,
        excluded: left_out,
        total_monthly_savings_usd: round2(total),
        projected_monthly_cost_usd: round2(projected),
        savings_pct: round2(pct),
        target_reduction_pct: c.target_reduction_pct,
        meets_target: c.target_reduction_pct.map(|t| pct >= t),
        monthly_budget_usd: c.monthly_budget_usd,
        meets_budget: c.monthly_budget_usd.map(|b| projected <= b),
        catalog_version: catalog.version.clone(),
        assumptions: assumptions(&limits, context),
    }
}

/// What the figures assume, in words.
fn assumptions(limits: &Limits, context: &Value) -> Vec<String> {
    vec![
        format!("monthly figures scale the observed window to a {HOURS_PER_MONTH}-hour month (factor = 720 / window hours)"),
        match limits.quality_floor {
            Some(f) => format!("model changes keep quality tier >= {f} (from the request)"),
            None => "without a stated quality floor, model changes may go one quality tier down (risk: medium)".to_string(),
        },
        "costs use catalog list prices for the window's token sums; savings of one model's options are chained (model change, then cap, caching, batching on the serving model), so they add up".to_string(),
        format!("prompt caching assumes {}% of input tokens are a repeated prefix{}", round2(limits.cacheable_share * 100.0), if context["cacheable_input_share"].is_number() { " (from the request)" } else { "" }),
        format!("batching assumes {}% of requests tolerate up to 24 h{}", round2(limits.batch_share * 100.0), if limits.batch_share_declared { " (from the request)" } else { "" }),
        "latency impact of a model change = difference of catalog typical time to first token plus mean output tokens at catalog speed, added to the observed p95 (never below the new model's typical time to first token)".to_string(),
        "self-hosting capacity: GPU tokens/s (catalog, input + output tokens) must cover the peak hour's tokens/s; GPUs billed 720 h/month".to_string(),
    ]
}

impl TypedAgent for Optimization {
    type Output = OptimizationOutput;

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<OptimizationOutput, PhaseError>> {
        Box::pin(async move {
            let triage: TriageOutput = input.output()?;
            let data: DataOutput = input.output()?;
            // The catalog the data phase read, so a replay computes the same figures.
            let stored = data
                .catalog
                .as_ref()
                .and_then(|c| Catalog::deserialize(c).ok());
            let catalog = match stored {
                Some(c) if !c.models.is_empty() => c,
                _ => Catalog::from_db(&ctx.pool, ctx.data_version)
                    .await
                    .map_err(|e| crate::tools::db_err("catalog_lookup", e))?,
            };
            Ok(optimize(
                &triage,
                &data,
                &input.request["context"],
                &catalog,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn as_json<T: serde::Serialize>(items: &[T]) -> Vec<Value> {
        items
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    fn constraints(v: Value) -> Constraints {
        serde_json::from_value(v).unwrap()
    }

    fn workload(p95: f64, avg_out: f64, above: i64, cap: i64) -> WorkloadData {
        serde_json::from_value(json!({
            "workload_id": "w",
            "metrics": {"requests": 1000, "span_hours": 10.0, "latency_ms": {"p95": p95},
                        "tokens": {"total": 1_200_000, "input": {"max": 4000}},
                        "rate": {"peak_to_average": 1.5, "peak_per_hour": 150, "avg_per_hour": 100, "peak_tokens_per_hour": 180_000}},
            "cost": {"total_cost_usd": 4.5, "models": [{"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 200_000}]},
            "performance": {"models": [{"model": "gpt-4o", "avg_output_tokens": avg_out, "output_cap": cap, "output_tokens_above_cap": above, "requests_above_cap": 50}]},
        }))
        .unwrap()
    }

    fn find<'a>(recs: &'a [Value], kind: &str) -> &'a Value {
        recs.iter().find(|r| r["kind"] == kind).unwrap()
    }

    #[test]
    fn chained_savings_match_hand_computation() {
        // 10 h window, factor 720/10 = 72; 1M input + 0.2M output tokens on gpt-4o.
        let c = Catalog::embedded();
        let l = limits(
            &constraints(json!({"latency_slo_ms": 2000.0})),
            &json!({"batch_eligible_share": 0.5}),
        );
        let (recs, _) = recommend(&workload(1500.0, 100.0, 20_000, 400), &l, c);
        let recs = as_json(&recs);
        // Right-sizing: gpt-4o 1M*2.5/1M + 0.2M*10/1M = 4.5 USD; gpt-4o-mini
        // 0.15 + 0.2*0.6 = 0.27 USD (cheapest of tier >= 2); (4.5-0.27)*72 = 304.56.
        let rs = find(&recs, "model_right_sizing");
        assert_eq!(rs["to_model"], "gpt-4o-mini");
        assert_eq!(rs["monthly_savings_usd"], json!(304.56));
        // Latency: (600 + 100/120*1000) - (900 + 100/90*1000) = 1433.33 - 2011.11 = -577.78.
        assert_eq!(rs["latency_impact_ms"], json!(-577.78));
        // Output cap on gpt-4o-mini: 20,000 tokens * 0.6/1M = 0.012 USD * 72 = 0.864 -> 0.86.
        assert_eq!(
            find(&recs, "max_output_tokens")["monthly_savings_usd"],
            json!(0.86)
        );
        // Caching on mini: 1M * 0.3 * 0.15/1M * 0.5 = 0.0225 USD * 72 = 1.62.
        assert_eq!(
            find(&recs, "prompt_caching")["monthly_savings_usd"],
            json!(1.62)
        );
        // Batch on mini: (0.15 + 180,000*0.6/1M - 0.0225) = 0.2355 USD * 0.5 share * 0.5 discount
        // = 0.058875 * 72 = 4.239 -> 4.24.
        assert_eq!(
            find(&recs, "batch_processing")["monthly_savings_usd"],
            json!(4.24)
        );
    }

    #[test]
    fn self_hosting_break_even_matches_hand_computation() {
        let c = Catalog::embedded();
        let cur = c.model("gpt-4o").unwrap();
        // 100M input + 20M output tokens in 720 h (factor 1): API = 250 + 200 = 450 USD/month.
        // Peak hour 7.2M tokens = 2000 tokens/s; llama-3.1-70b (tier 2) on H100 at
        // 1800 tokens/s needs 2 GPUs = 2*2.99*720 = 4305.60; on A100 (900 tokens/s) 3 GPUs =
        // 3*1.79*720 = 3866.40 -> cheapest, but still above 450: not worth it.
        let u = ModelUse {
            workload_id: "w",
            current: cur,
            input_tokens: 100e6,
            output_tokens: 20e6,
            avg_output_tokens: 200.0,
            tokens_above_cap: 0.0,
            output_cap: None,
            requests_above_cap: 0,
            p95_ms: Some(1000.0),
            max_input_tokens: 1000.0,
            peak_tokens_per_hour: 7.2e6,
            factor: 1.0,
            confidence: "high",
        };
        let err = self_hosting(&u, c, &Limits::default()).unwrap_err();
        assert!(err.contains("3866.40"), "{err}");
        // Break-even: 3866.40 / (450 / 120M tokens) = 1,031,040,000 tokens/month.
        assert!(err.contains("1031040000"), "{err}");
        // Ten times the volume (factor 10): API 4500 > 3866.40 -> saves 633.60.
        let big = ModelUse { factor: 10.0, ..u };
        let rec = serde_json::to_value(self_hosting(&big, c, &Limits::default()).unwrap()).unwrap();
        assert_eq!(rec["monthly_savings_usd"], json!(633.6));
        assert_eq!(rec["gpus"], json!(3.0));
    }

    #[test]
    fn tight_slo_filters_model_changes_and_undeclared_batching() {
        let c = Catalog::embedded();
        let l = limits(&constraints(json!({"latency_slo_ms": 1.0})), &json!({}));
        let (recs, out) = recommend(&workload(1000.0, 500.0, 0, 900), &l, c);
        let (recs, out) = (as_json(&recs), as_json(&out));
        assert!(recs
            .iter()
            .all(|r| r["kind"] != "model_right_sizing" && r["kind"] != "self_hosting"));
        assert!(out
            .iter()
            .any(|e| e["kind"] == "model_right_sizing"
                && e["reason"].as_str().unwrap().contains("SLO")));
        assert!(out.iter().any(|e| e["kind"] == "batch_processing"));
        assert!(out.iter().any(|e| e["kind"] == "max_output_tokens"));
        // Caching on gpt-4o remains: 1M*0.3*2.5/1M*0.5 = 0.375 * 72 = 27.0.
        assert_eq!(
            find(&recs, "prompt_caching")["monthly_savings_usd"],
            json!(27.0)
        );
    }

    #[test]
    fn peak_capacity_and_ranking_follow_priorities() {
        let m = json!({"rate": {"peak_to_average": 3.0, "peak_per_hour": 600.0, "avg_per_hour": 200.0, "peak_tokens_per_hour": 900_000.0}});
        let r = serde_json::to_value(peak_capacity("w", &m).unwrap()).unwrap();
        // 600/60*1.2 = 12 rpm; 900,000/60*1.2 = 18,000 tpm.
        assert_eq!(
            (
                r["requests_per_minute"].clone(),
                r["tokens_per_minute"].clone()
            ),
            (json!(12), json!(18000))
        );
        assert!(peak_capacity("w", &json!({"rate": {"peak_to_average": 1.2, "peak_per_hour": 1.0, "avg_per_hour": 1.0, "peak_tokens_per_hour": 1.0}})).is_none());
        let recs = vec![
            json!({"kind": "a", "monthly_savings_usd": 10.0, "latency_impact_ms": 50.0, "risk": "high"}),
            json!({"kind": "b", "monthly_savings_usd": 5.0, "latency_impact_ms": -10.0, "risk": "low"}),
            r,
        ];
        let mut recs: Vec<Recommendation> = recs
            .into_iter()
            .map(|r| serde_json::from_value(r).unwrap())
            .collect();
        rank(&mut recs, &[Priority::Cost]);
        assert_eq!(recs[0].kind, "a");
        rank(&mut recs, &[Priority::Latency]);
        assert_eq!(recs[0].kind, "b");
        rank(&mut recs, &[Priority::Throughput, Priority::Cost]);
        assert_eq!(recs[0].kind, "capacity_for_peaks");
    }
}
