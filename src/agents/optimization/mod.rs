//! Optimization: recommendations computed from the data phase's tool
//! results, the per-request input sizes of the telemetry and the catalog,
//! each with expected monthly savings, latency impact, risk, confidence and
//! a `basis` naming the numbers used; chosen and ranked by the request's
//! goals ([`goals`]: triage's priorities) and filtered by its constraints
//! (latency SLO, quality floor; the budget is checked on the whole plan).
//!
//! Per model the cost options form one chain, so their savings add up
//! without double counting: first one model change (right-sizing all
//! traffic within the quality floor, routing the small requests to a
//! smaller model, or self-hosting, whichever saves most), then — on what
//! is still served by the API afterwards — a max-output-token cap, prompt
//! trimming, prompt caching, and batching of a stated latency-tolerant
//! share. Latency, quality and throughput options ([`routing`],
//! [`latency`], [`self_hosting`]) stand alone. Each saving is the window
//! figure times [`monthly_factor`]. Everything here is pure: the same data
//! output and input sizes give the same figures.

use std::collections::BTreeMap;

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
    store::telemetry::{self as stored, SizeShare, Window},
};

/// The optimization agent.
pub struct Optimization;

pub mod goals;
pub mod latency;
pub mod options;
pub mod routing;
pub mod self_hosting;

pub use goals::{rank, Goals};
pub use options::*;

/// The input-size shares of each workload, by workload id.
pub type Shares = BTreeMap<String, Vec<SizeShare>>;

/// Reads a number of the metrics (0 when absent).
fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Builds the per-model inputs of one workload of the data output.
fn model_uses<'a>(
    w: &'a WorkloadData,
    catalog: &'a Catalog,
    shares: &'a [SizeShare],
) -> (Vec<ModelUse<'a>>, Vec<Excluded>) {
    let wid = w.workload_id.as_str();
    let m = &w.metrics;
    let span = num(&m["span_hours"]);
    let n = m["requests"].as_i64().unwrap_or(0);
    let peak = peak_of(m);
    // Less than a day of data is an extrapolation: low confidence.
    let confidence = if m["less_than_a_day"] == true {
        "low"
    } else if span >= 24.0 && n >= crate::agents::data::MIN_REQUESTS {
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
        let pf = |k: &str| perf.map_or(0.0, |p| num(&p[k]));
        let requests = c["requests"].as_i64().unwrap_or(n);
        let share = if n > 0 {
            requests as f64 / n as f64
        } else {
            0.0
        };
        uses.push(ModelUse {
            workload_id: wid,
            current: cur,
            input_tokens: num(&c["input_tokens"]),
            output_tokens: num(&c["output_tokens"]),
            avg_output_tokens: pf("avg_output_tokens"),
            tokens_above_cap: pf("output_tokens_above_cap"),
            output_cap: perf.and_then(|p| p["output_cap"].as_i64()),
            requests_above_cap: perf
                .and_then(|p| p["requests_above_cap"].as_i64())
                .unwrap_or(0),
            p95_ms: m["latency_ms"]["p95"].as_f64(),
            max_input_tokens: num(&m["tokens"]["input"]["max"]),
            requests,
            shares,
            peak: Peak {
                requests_per_minute: peak.requests_per_minute * share,
                ..peak
            },
            factor: monthly_factor(span),
            confidence,
        });
    }
    (uses, skipped)
}

/// What the options of one workload are collected into.
struct Collect<'g> {
    goals: &'g Goals,
    recs: Vec<Recommendation>,
    out: Vec<Excluded>,
}

impl Collect<'_> {
    /// Keeps a considered option or records why it does not apply; answers
    /// whether it was kept. An option the goals exclude is not computed.
    fn take(
        &mut self,
        kind: &str,
        u: &ModelUse,
        f: impl FnOnce() -> Result<Recommendation, String>,
    ) -> bool {
        if !self.goals.considers(kind) {
            return false;
        }
        match f() {
            Ok(r) => {
                self.recs.push(r);
                true
            }
            Err(r) => {
                self.out.push(excluded(kind, u, r));
                false
            }
        }
    }
}

/// Recommendations for one workload of the data output: (kept, excluded).
pub fn recommend(
    w: &WorkloadData,
    limits: &Limits,
    catalog: &Catalog,
    goals: &Goals,
    shares: &[SizeShare],
) -> (Vec<Recommendation>, Vec<Excluded>) {
    let (uses, skipped) = model_uses(w, catalog, shares);
    let mut c = Collect {
        goals,
        recs: Vec::new(),
        out: skipped,
    };
    for u in &uses {
        cost_chain(u, catalog, limits, &mut c);
        c.take("faster_model", u, || {
            routing::faster_model(u, catalog, limits)
        });
        c.take("streaming", u, || latency::streaming(u, u.current));
        c.take("model_upgrade", u, || routing::model_upgrade(u, catalog));
        c.take("quality_comparison", u, || {
            routing::quality_comparison(u, catalog)
        });
        c.take("self_hosted_capacity", u, || {
            self_hosting::self_hosted_capacity(u, catalog, limits)
        });
    }
    if goals.considers("capacity_for_peaks") {
        match peak_capacity(&w.workload_id, &w.metrics) {
            Ok(r) => c.recs.push(r),
            Err(reason) => c.out.push(Excluded {
                kind: "capacity_for_peaks".into(),
                workload_id: w.workload_id.clone(),
                model: String::new(),
                reason,
            }),
        }
    }
    if goals.considers("provisioned_throughput") {
        c.out.push(Excluded {
            kind: "provisioned_throughput".into(),
            workload_id: w.workload_id.clone(),
            model: String::new(),
            reason: "the catalog has no provisioned or committed-throughput offer to price".into(),
        });
    }
    c.out.extend(goals.left_out(&w.workload_id));
    (c.recs, c.out)
}

/// What the API still serves after the model change: the use (its tokens)
/// and the model; `None` when everything is self-hosted.
type Rest<'a> = Option<(ModelUse<'a>, &'a ModelPrice)>;

/// The model change of the cost chain (step 1): the largest saving of
/// right-sizing, size-based routing and self-hosting among those the goals
/// consider; the others are left out as superseded.
fn model_change<'a>(
    u: &ModelUse<'a>,
    catalog: &'a Catalog,
    limits: &Limits,
    c: &mut Collect,
) -> Rest<'a> {
    let kinds = ["model_right_sizing", "model_routing", "self_hosting"];
    let mut found: Vec<(&str, Recommendation)> = Vec::new();
    for kind in kinds.into_iter().filter(|k| c.goals.considers(k)) {
        let r = match kind {
            "model_right_sizing" => right_sizing(u, catalog, limits),
            "model_routing" => routing::model_routing(u, catalog, limits),
            _ => self_hosting::self_hosting(u, catalog, limits),
        };
        match r {
            Ok(r) => found.push((kind, r)),
            Err(reason) => c.out.push(excluded(kind, u, reason)),
        }
    }
    found.sort_by(|a, b| b.1.monthly_savings_usd.total_cmp(&a.1.monthly_savings_usd));
    let mut found = found.into_iter();
    let Some((kind, chosen)) = found.next() else {
        return Some((u.clone(), u.current));
    };
    for (other, _) in found {
        c.out.push(excluded(
            other,
            u,
            format!("superseded by {kind}, which saves more"),
        ));
    }
    let rest = after_change(u, catalog, kind, &chosen);
    c.recs.push(chosen);
    rest
}

/// What the API serves after a model change of `kind`.
fn after_change<'a>(
    u: &ModelUse<'a>,
    catalog: &'a Catalog,
    kind: &str,
    rec: &Recommendation,
) -> Rest<'a> {
    match kind {
        "self_hosting" => None,
        "model_routing" => {
            let f = &rec.figures;
            let (i, o) = (
                num(&f["routed_input_tokens"]),
                num(&f["routed_output_tokens"]),
            );
            let keep = if u.output_tokens > 0.0 {
                (u.output_tokens - o) / u.output_tokens
            } else {
                0.0
            };
            let rest = ModelUse {
                input_tokens: u.input_tokens - i,
                output_tokens: u.output_tokens - o,
                tokens_above_cap: u.tokens_above_cap * keep,
                requests: u.requests - f["routed_requests"].as_i64().unwrap_or(0),
                ..u.clone()
            };
            Some((rest, u.current))
        }
        _ => {
            let to = rec.str_field("to_model").and_then(|id| catalog.model(id));
            Some((u.clone(), to.unwrap_or(u.current)))
        }
    }
}

/// The cost chain of one model: the model change, then on what the API
/// still serves the output cap, prompt trimming, prompt caching and
/// batching, each on the tokens the previous ones leave.
fn cost_chain(u: &ModelUse, catalog: &Catalog, limits: &Limits, c: &mut Collect) {
    let Some((mut rest, serving)) = model_change(u, catalog, limits, c) else {
        c.out.push(excluded(
            "token_options",
            u,
            "self-hosted GPUs are paid by the hour; token-priced options do not apply".into(),
        ));
        return;
    };
    if c.take("max_output_tokens", &rest, || output_cap(&rest, serving)) {
        rest.output_tokens -= rest.tokens_above_cap;
        rest.tokens_above_cap = 0.0;
    }
    if c.take("prompt_trimming", &rest, || {
        latency::prompt_trimming(&rest, serving, limits)
    }) {
        rest.input_tokens *= 1.0 - limits.trim_share;
    }
    let cached = c.take("prompt_caching", &rest, || {
        prompt_caching(&rest, serving, limits)
    });
    c.take("batch_processing", &rest, || {
        batch(&rest, serving, limits, false, cached)
    });
}

/// The limits of a request: triage constraints plus context overrides.
pub fn limits(constraints: &Constraints, context: &Value) -> Limits {
    let share = |k: &str| context[k].as_f64().filter(|x| (0.0..=1.0).contains(x));
    Limits {
        latency_slo_ms: constraints.latency_slo_ms,
        quality_floor: constraints.quality_floor,
        cacheable_share: share("cacheable_input_share").unwrap_or(CACHEABLE_INPUT_SHARE),
        batch_share: share("batch_eligible_share").unwrap_or(0.0),
        batch_share_declared: share("batch_eligible_share").is_some(),
        trim_share: share("prompt_trim_share").unwrap_or(PROMPT_TRIM_SHARE),
    }
}

/// The approach, in words, for the goals asked.
fn strategy(goals: &Goals, recs: &[Recommendation]) -> String {
    if recs.is_empty() {
        return format!(
            "no change: no option for {} beats the current setup within the constraints",
            goals.words()
        );
    }
    let parts: Vec<&str> = goals
        .asked
        .iter()
        .map(|g| match g {
            Priority::Cost => "cost: per model the largest-saving model change (same-tier right-sizing, routing the small requests, or self-hosting that fits), then an output cap, prompt trimming, caching and batching of a stated share",
            Priority::Latency => "latency: faster models, shorter generations, trimmed prompts, streaming and headroom at the minute peak",
            Priority::Quality => "quality: upgrades and same-tier comparisons, with their cost",
            Priority::Throughput => "throughput: rate limits and capacity at the minute peak, batching, and self-hosted capacity",
        })
        .collect();
    parts.join("; ")
}

/// The whole optimization output from the triage and data outputs and the
/// input-size shares (pure).
pub fn optimize(
    triage: &TriageOutput,
    data: &DataOutput,
    context: &Value,
    catalog: &Catalog,
    shares: &Shares,
) -> OptimizationOutput {
    let limits = limits(&triage.constraints, context);
    let goals = Goals::of(&triage.priorities);
    let mut recs = Vec::new();
    let mut left_out = Vec::new();
    let mut current = 0.0;
    for w in &data.workloads {
        current += num(&w.cost["total_cost_usd"]) * monthly_factor(num(&w.metrics["span_hours"]));
        let s = shares.get(&w.workload_id).map_or(&[][..], Vec::as_slice);
        let (kept, out) = recommend(w, &limits, catalog, &goals, s);
        recs.extend(kept);
        left_out.extend(out);
    }
    rank(&mut recs, &goals.asked);
    let total: f64 = recs.iter().map(|r| r.monthly_savings_usd).sum();
    let c = &triage.constraints;
    let pct = if current > 0.0 {
        total.min(current) / current * 100.0
    } else {
        0.0
    };
    let projected = (current - total).max(0.0);
    OptimizationOutput {
        strategy: strategy(&goals, &recs),
        priorities: goals.asked.clone(),
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
        assumptions: assumptions(&limits, &goals, context),
    }
}

/// What the figures assume, in words.
fn assumptions(limits: &Limits, goals: &Goals, context: &Value) -> Vec<String> {
    let from = |k: &str| {
        if context[k].is_number() {
            " (from the request)"
        } else {
            ""
        }
    };
    vec![
        if goals.defaulted {
            "no goal was stated: the options for cost are considered".to_string()
        } else {
            format!("the goals asked ({}) decide which options are considered and how they rank; the others are listed as left out", goals.words())
        },
        format!("monthly figures scale the observed window to a {HOURS_PER_MONTH}-hour month (factor = 720 / window hours)"),
        match limits.quality_floor {
            Some(f) => format!("model changes keep quality tier >= {f} (from the request)"),
            None => "without a stated quality floor all traffic is never moved to a lower tier; routing the small requests or self-hosting may go one tier down, always after a shadow evaluation (risk says why)".to_string(),
        },
        "costs use catalog list prices for the window's token sums; savings of one model's cost options are chained (model change, then cap, trimming, caching, batching on what the API still serves), so they add up".to_string(),
        "size-based routing sends the requests at or under the model's median input length (percentile_disc of input tokens in the window); the 25th and 75th percentile thresholds are in its figures".to_string(),
        format!("prompt trimming assumes {}% of input tokens can be removed{}", round2(limits.trim_share * 100.0), from("prompt_trim_share")),
        format!("prompt caching assumes {}% of input tokens are a repeated prefix{}", round2(limits.cacheable_share * 100.0), from("cacheable_input_share")),
        if limits.batch_share_declared {
            format!("batching moves the stated {}% of requests that tolerate up to 24 h (from the request)", round2(limits.batch_share * 100.0))
        } else {
            "batching needs a stated latency-tolerant share (context.batch_eligible_share); none was given".to_string()
        },
        "latency impact of a model change = difference of catalog typical time to first token plus mean output tokens at catalog speed, added to the observed p95 (never below the new model's typical time to first token)".to_string(),
        format!("capacity and self-hosting are sized for the busiest clock minute (busiest hour / 60 when minutes are not measured) with {PEAK_HEADROOM}x headroom for rate limits"),
        format!("self-hosting: weights at {} bytes per parameter plus the KV cache of the requests in flight at the peak minute must fit {}% of the GPUs' memory; GPUs billed 720 h/month; managed inference of the same weights is priced at the open-weight model's catalog token price", self_hosting::WEIGHT_BYTES, self_hosting::USABLE_MEMORY * 100.0),
    ]
}

/// The input-size shares of the workloads of a data output.
async fn read_shares(
    ctx: &AgentContext,
    tenant: &str,
    data: &DataOutput,
) -> Result<Shares, PhaseError> {
    // The window the data phase read: a stated one in hours, else its days.
    let hours = data
        .tools_called
        .iter()
        .flatten()
        .find_map(|c| {
            c.parameters
                .get("hours")
                .and_then(serde_json::Value::as_f64)
        })
        .unwrap_or(data.window_days as f64 * 24.0);
    let mut out = Shares::new();
    for w in &data.workloads {
        let win = Window {
            tenant,
            workload: &w.workload_id,
            hours,
        };
        let rows = stored::input_size_shares(&ctx.pool, win)
            .await
            .map_err(|e| crate::tools::db_err("input_size_shares", e))?;
        out.insert(w.workload_id.clone(), rows);
    }
    Ok(out)
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
                Some(c) if !c.models.is_empty() => with_architectures(c),
                _ => Catalog::from_db(&ctx.pool, ctx.data_version)
                    .await
                    .map_err(|e| crate::tools::db_err("catalog_lookup", e))?,
            };
            let shares = read_shares(ctx, &input.tenant, &data).await?;
            Ok(optimize(
                &triage,
                &data,
                &input.request["context"],
                &catalog,
                &shares,
            ))
        })
    }
}

/// A stored catalog with the architectures of the build's file where it
/// has none (outputs written before they were in the catalog).
fn with_architectures(mut c: Catalog) -> Catalog {
    for m in c.models.iter_mut().filter(|m| m.architecture.is_none()) {
        m.architecture = Catalog::embedded()
            .model(&m.id)
            .and_then(|e| e.architecture.clone());
    }
    c
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
                        "tokens": {"total": 1_200_000, "input": {"max": 4000, "p95": 2000}, "output": {"max": 1000, "p95": 400}},
                        "rate": {"peak_to_average": 1.5, "peak_per_hour": 150, "avg_per_hour": 100, "peak_per_minute": 6, "avg_per_minute": 1.67}},
            "cost": {"total_cost_usd": 4.5, "models": [{"model": "gpt-4o", "requests": 1000, "input_tokens": 1_000_000, "output_tokens": 200_000}]},
            "performance": {"models": [{"model": "gpt-4o", "avg_output_tokens": avg_out, "output_cap": cap, "output_tokens_above_cap": above, "requests_above_cap": 50}]},
        }))
        .unwrap()
    }

    /// Half the requests (500) have at most 800 input tokens: 200k input, 100k output tokens.
    fn shares() -> Vec<SizeShare> {
        let s = |pct: f64, threshold: i64, requests: i64, i: i64, o: i64| SizeShare {
            model: "gpt-4o".into(),
            threshold,
            percentile: pct,
            requests,
            input_tokens: i,
            output_tokens: o,
        };
        vec![
            s(0.25, 400, 250, 60_000, 40_000),
            s(0.5, 800, 500, 200_000, 100_000),
            s(0.75, 1500, 750, 500_000, 150_000),
        ]
    }

    fn find<'a>(recs: &'a [Value], kind: &str) -> &'a Value {
        recs.iter().find(|r| r["kind"] == kind).unwrap()
    }

    fn run(goals: &[Priority], c: Value, ctx: Value) -> (Vec<Value>, Vec<Value>) {
        let l = limits(&constraints(c), &ctx);
        let (recs, out) = recommend(
            &workload(1500.0, 100.0, 20_000, 400),
            &l,
            Catalog::embedded(),
            &Goals::of(goals),
            &shares(),
        );
        (as_json(&recs), as_json(&out))
    }

    #[test]
    fn chained_savings_with_a_quality_floor_match_hand_computation() {
        // 10 h window, factor 720/10 = 72; 1M input + 0.2M output tokens on gpt-4o.
        let (recs, out) = run(
            &[Priority::Cost],
            json!({"latency_slo_ms": 2000.0, "quality_floor": 2}),
            json!({"batch_eligible_share": 0.5}),
        );
        // Right-sizing within the floor: gpt-4o 4.5 USD vs gpt-4o-mini 0.15 + 0.12 = 0.27;
        // (4.5 - 0.27) * 72 = 304.56. Routing the small half saves less (superseded).
        let rs = find(&recs, "model_right_sizing");
        assert_eq!(rs["to_model"], "gpt-4o-mini");
        assert_eq!(rs["monthly_savings_usd"], json!(304.56));
        assert!(out.iter().any(|e| e["kind"] == "model_routing"
            && e["reason"].as_str().unwrap().contains("superseded")));
        // Latency: (600 + 100/120*1000) - (900 + 100/90*1000) = -577.78.
        assert_eq!(rs["latency_impact_ms"], json!(-577.78));
        // Cap on mini: 20,000 * 0.6/1M = 0.012 * 72 = 0.86; mean latency 20,000/1000/120 s = -166.67 ms.
        let cap = find(&recs, "max_output_tokens");
        assert_eq!(cap["monthly_savings_usd"], json!(0.86));
        assert_eq!(cap["latency_impact_ms"], json!(-166.67));
        // Trimming: input 0.15 of 0.15 + 180k*0.6/1M = 0.258 USD (58%); 1M * 0.2 * 0.15/1M = 0.03 * 72 = 2.16.
        assert_eq!(
            find(&recs, "prompt_trimming")["monthly_savings_usd"],
            json!(2.16)
        );
        // Caching on the 0.8M trimmed input: 0.8M * 0.3 * 0.15/1M * 0.5 = 0.018 * 72 = 1.296.
        assert_eq!(
            find(&recs, "prompt_caching")["monthly_savings_usd"],
            json!(1.3)
        );
        // Batch: (0.12 + 0.108 - 0.018) * 0.5 share * 0.5 discount = 0.0525 * 72 = 3.78.
        assert_eq!(
            find(&recs, "batch_processing")["monthly_savings_usd"],
            json!(3.78)
        );
    }

    #[test]
    fn without_a_floor_only_the_small_requests_move_after_a_shadow_evaluation() {
        let (recs, out) = run(&[Priority::Cost], json!({}), json!({}));
        assert!(recs.iter().all(|r| r["kind"] != "model_right_sizing"));
        let why = out
            .iter()
            .find(|e| e["kind"] == "model_right_sizing")
            .unwrap();
        assert!(why["reason"].as_str().unwrap().contains("no quality floor"));
        // The 500 requests of at most 800 input tokens: gpt-4o 0.5 + 1.0 = 1.5 USD,
        // mini 0.03 + 0.06 = 0.09; 1.41 * 72 = 101.52.
        let r = find(&recs, "model_routing");
        assert_eq!(r["monthly_savings_usd"], json!(101.52));
        assert_eq!(
            (r["max_input_tokens"].clone(), r["share"].clone()),
            (json!(800), json!(0.5))
        );
        assert_eq!(
            (r["risk"].clone(), r["shadow_evaluation"].clone()),
            (json!("medium"), json!(true))
        );
        assert!(r["risk_reason"]
            .as_str()
            .unwrap()
            .contains("no quality floor"));
        // The cap applies to what stays on gpt-4o: 20,000 * (100k/200k) * 10/1M * 72 = 7.2.
        assert_eq!(
            find(&recs, "max_output_tokens")["monthly_savings_usd"],
            json!(7.2)
        );
        // No stated latency-tolerant share: no batching.
        assert!(out.iter().any(|e| e["kind"] == "batch_processing"
            && e["reason"]
                .as_str()
                .unwrap()
                .contains("batch_eligible_share")));
    }

    #[test]
    fn each_goal_gets_its_own_options_and_the_rest_is_left_out_with_a_reason() {
        let kinds = |g: Priority| {
            let (recs, out) = run(&[g], json!({}), json!({}));
            let mut k: Vec<String> = recs
                .iter()
                .map(|r| r["kind"].as_str().unwrap().to_string())
                .collect();
            k.sort();
            (k, out)
        };
        let (cost, _) = kinds(Priority::Cost);
        let (lat, lat_out) = kinds(Priority::Latency);
        let (qual, _) = kinds(Priority::Quality);
        let (thr, _) = kinds(Priority::Throughput);
        assert!(cost.contains(&"model_routing".to_string()), "{cost:?}");
        assert!(
            lat.contains(&"streaming".to_string())
                && lat.contains(&"capacity_for_peaks".to_string()),
            "{lat:?}"
        );
        assert!(!lat.iter().any(|k| k.starts_with("model_")), "{lat:?}");
        // gpt-4o is top tier: a same-tier comparison with its cost, no downgrade.
        assert_eq!(qual, vec!["quality_comparison".to_string()]);
        assert!(
            thr.contains(&"self_hosted_capacity".to_string())
                && thr.contains(&"capacity_for_peaks".to_string()),
            "{thr:?}"
        );
        for (a, b) in [
            (&cost, &lat),
            (&cost, &qual),
            (&cost, &thr),
            (&lat, &qual),
            (&lat, &thr),
            (&qual, &thr),
        ] {
            assert_ne!(a, b);
        }
        assert!(lat_out.iter().any(|e| e["kind"] == "model_routing"
            && e["reason"] == "answers cost; the request asks for latency"));
    }

    #[test]
    fn a_70b_model_never_gets_fewer_gpus_than_its_weights_need() {
        // 70.6B parameters x 2 bytes = 141.2 GB: more than one 80 GB GPU (72 GB usable).
        assert_eq!(self_hosting::gpus_for_memory(141.2, 0.0, 80), Some(2));
        assert_eq!(self_hosting::gpus_for_memory(141.2, 10.0, 80), Some(4));
        assert_eq!(self_hosting::gpus_for_memory(141.2, 0.0, 24), Some(8));
        let c = Catalog::embedded();
        let m = c.model("llama-3.1-70b").unwrap();
        let a = m.architecture.as_ref().unwrap();
        let w = workload(1500.0, 100.0, 0, 400);
        let sh = shares();
        let (uses, _) = model_uses(&w, c, &sh);
        for rpm in [0.1, 6.0, 600.0] {
            let u = ModelUse {
                peak: Peak {
                    requests_per_minute: rpm,
                    ..uses[0].peak
                },
                ..uses[0].clone()
            };
            for g in c.gpus.iter().filter(|g| g.tokens_per_s.contains_key("70b")) {
                let s = self_hosting::size(&u, m, a, g).unwrap();
                let memory = f64::from(s.per_replica * g.memory_gb) * self_hosting::USABLE_MEMORY;
                assert!(
                    s.gpus >= 2 && memory >= s.weights_gb + s.kv_gb,
                    "{rpm} {}: {s:?}",
                    g.id
                );
            }
        }
        // 6 requests/min: mean output 100 tokens -> 800 + 100/60*1000 = 2466.67 ms in service,
        // 6/60 * 2.47 s -> 1 in flight; KV for max(1 x 2400, 5000) tokens x 327,680 B = 1.64 GB;
        // (141.2 + 1.64) / 72 -> 2 GPUs per replica; 6 rpm x 1200 tokens / 60 = 120 tokens/s < 2 x 900.
        let u = &uses[0];
        let a100 = c
            .gpus
            .iter()
            .find(|g| g.id == "a100-80gb-ondemand")
            .unwrap();
        let s = self_hosting::size(u, m, a, a100).unwrap();
        assert_eq!((s.per_replica, s.replicas, s.gpus), (2, 1, 2));
        assert!((s.kv_gb - 5000.0 * 327_680.0 / 1e9).abs() < 1e-9);
        assert!((s.monthly_usd - 2.0 * 1.79 * 720.0).abs() < 1e-9);
    }

    #[test]
    fn self_hosting_shows_cost_when_busy_and_managed_inference() {
        let l = limits(&constraints(json!({})), &json!({}));
        let (recs, _) = run(&[Priority::Throughput], json!({}), json!({}));
        let r = find(&recs, "self_hosted_capacity");
        let f = &r["figures"];
        assert_eq!(f["cost_at_busy"].as_array().unwrap().len(), 3);
        // Managed llama-3.1-70b: (1M x 0.6 + 0.2M x 0.8) / 1M = 0.76 USD x 72 = 54.72.
        assert!((f["managed_monthly_usd"].as_f64().unwrap() - 54.72).abs() < 1e-9);
        // 2 x A100 always on = 2577.6 USD/month; the API costs 4.5 x 72 = 324 -> not worth it for cost.
        assert_eq!(f["gpus"], json!(2));
        assert_eq!(r["monthly_savings_usd"], json!(0.0));
        assert_eq!(r["monthly_cost_change_usd"], json!(2253.6));
        let w = workload(1500.0, 100.0, 0, 400);
        let sh = shares();
        let (uses, _) = model_uses(&w, Catalog::embedded(), &sh);
        let err = self_hosting::self_hosting(&uses[0], Catalog::embedded(), &l).unwrap_err();
        assert!(
            err.starts_with("not worth it") && err.contains("managed inference"),
            "{err}"
        );
    }

    #[test]
    fn peak_capacity_reads_the_minute_peak_or_falls_back_to_the_hour() {
        let m = json!({"requests": 100, "tokens": {"total": 150_000}, "rate": {"peak_per_minute": 10.0, "peak_per_hour": 600.0}});
        let r = serde_json::to_value(peak_capacity("w", &m).unwrap()).unwrap();
        // 10 x 1.2 = 12 rpm; 10 x 1500 tokens x 1.2 = 18,000 tpm.
        assert_eq!(
            (
                r["requests_per_minute"].clone(),
                r["tokens_per_minute"].clone()
            ),
            (json!(12), json!(18000))
        );
        assert_eq!(r["confidence"], "high");
        let m = json!({"requests": 100, "tokens": {"total": 150_000}, "rate": {"peak_per_hour": 600.0}});
        let r = serde_json::to_value(peak_capacity("w", &m).unwrap()).unwrap();
        assert_eq!(
            (r["requests_per_minute"].clone(), r["confidence"].clone()),
            (json!(12), json!("low"))
        );
    }
}
