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
use serde_json::{json, Value};

use crate::{
    agents::{
        catalog::{Catalog, GpuOffer, ModelPrice},
        round2, upstream,
    },
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, PhaseInput},
};

/// The optimization agent.
pub struct Optimization;

/// Share of input tokens assumed to be a repeated prefix (system prompt,
/// few-shot examples) that prompt caching serves, unless the request's
/// context gives `cacheable_input_share`. Stated in the output.
pub const CACHEABLE_INPUT_SHARE: f64 = 0.3;

/// Share of requests assumed latency-tolerant (can wait for the batch API)
/// unless the context gives `batch_eligible_share`. Stated in the output.
pub const BATCH_ELIGIBLE_SHARE: f64 = 0.1;

/// Hours in the 30-day month the savings are quoted for.
pub const HOURS_PER_MONTH: f64 = 720.0;

/// Headroom over the observed peak when sizing capacity.
pub const PEAK_HEADROOM: f64 = 1.2;

/// A peak-to-average ratio at or above this calls for peak capacity planning.
pub const BURSTY_RATIO: f64 = 2.0;

/// Factor from the observed window to a 30-day month (window at least 1 h).
pub fn monthly_factor(span_hours: f64) -> f64 {
    HOURS_PER_MONTH / span_hours.max(1.0)
}

/// Estimated end-to-end time of a request of `out_tokens` on a model:
/// typical time to first token plus generation at its typical speed.
pub fn service_ms(m: &ModelPrice, out_tokens: f64) -> f64 {
    m.typical_latency_ms + out_tokens / m.output_tokens_per_s.max(1.0) * 1000.0
}

/// What the options of one model are computed from.
#[derive(Debug, Clone)]
pub struct ModelUse<'a> {
    /// Workload id.
    pub workload_id: &'a str,
    /// The model in use, from the catalog.
    pub current: &'a ModelPrice,
    /// Input tokens in the window.
    pub input_tokens: f64,
    /// Output tokens in the window.
    pub output_tokens: f64,
    /// Mean output tokens per request.
    pub avg_output_tokens: f64,
    /// Output tokens above the p95 cap (the tokens a cap would not generate).
    pub tokens_above_cap: f64,
    /// The cap (observed p95 of output tokens).
    pub output_cap: Option<i64>,
    /// Requests longer than the cap.
    pub requests_above_cap: i64,
    /// Observed workload p95 latency, ms.
    pub p95_ms: Option<f64>,
    /// Largest prompt seen (context-window check).
    pub max_input_tokens: f64,
    /// Peak tokens per hour attributable to this model.
    pub peak_tokens_per_hour: f64,
    /// Window-to-month factor.
    pub factor: f64,
    /// `high` when the window is long and large enough.
    pub confidence: &'static str,
}

/// The constraints the options are filtered by.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Latency SLO on the workload's p95, ms.
    pub latency_slo_ms: Option<f64>,
    /// Minimum quality tier.
    pub quality_floor: Option<u8>,
    /// Share of input tokens that caching serves.
    pub cacheable_share: f64,
    /// Share of requests that may go to the batch API.
    pub batch_share: f64,
    /// True when the batch share was declared by the requester (then the
    /// batched requests are outside the interactive SLO).
    pub batch_share_declared: bool,
}

/// An option left out, and why.
fn excluded(kind: &str, u: &ModelUse, reason: String) -> Value {
    json!({"kind": kind, "workload_id": u.workload_id, "model": u.current.id, "reason": reason})
}

/// The expected p95 after a model change: observed p95 plus the estimated
/// change, but never below the new model's typical time to first token.
fn slo_check(
    limits: &Limits,
    p95: Option<f64>,
    delta: f64,
    floor_ms: f64,
) -> Result<Option<f64>, String> {
    let expected = p95.map(|p| (p + delta).max(floor_ms));
    match (limits.latency_slo_ms, p95, expected) {
        (Some(slo), Some(p), Some(e)) if e > slo => Err(format!(
            "expected p95 {e:.1} ms (observed {p:.1} {delta:+.1}, at least {floor_ms} ms) exceeds the {slo} ms SLO"
        )),
        (Some(_), None, _) => Err("no latency telemetry to check the SLO against".into()),
        _ => Ok(expected),
    }
}

/// Right-sizing: the cheapest catalog model that keeps the quality floor
/// (default: at most one tier down), fits the largest prompt and keeps the
/// SLO; savings = (cost on current − cost on it) × factor for the same tokens.
pub fn right_sizing(u: &ModelUse, catalog: &Catalog, limits: &Limits) -> Result<Value, String> {
    let cur = u.current;
    let min_tier = limits
        .quality_floor
        .unwrap_or(cur.quality_tier.saturating_sub(1).max(1));
    let cur_cost = cur.cost(u.input_tokens, u.output_tokens);
    let mut reasons = Vec::new();
    let mut best: Option<(&ModelPrice, f64, f64, Option<f64>)> = None;
    for alt in catalog.models.iter().filter(|a| a.id != cur.id) {
        let cost = alt.cost(u.input_tokens, u.output_tokens);
        if cost >= cur_cost || alt.quality_tier < min_tier {
            continue;
        }
        if f64::from(alt.context_window) < u.max_input_tokens {
            reasons.push(format!("{}: context window too small", alt.id));
            continue;
        }
        let delta = service_ms(alt, u.avg_output_tokens) - service_ms(cur, u.avg_output_tokens);
        match slo_check(limits, u.p95_ms, delta, alt.typical_latency_ms) {
            Ok(p95) => {
                if best.is_none_or(|b| cost < b.1) {
                    best = Some((alt, cost, delta, p95));
                }
            }
            Err(r) => reasons.push(format!("{}: {r}", alt.id)),
        }
    }
    let Some((alt, alt_cost, delta, p95)) = best else {
        return Err(if reasons.is_empty() {
            format!("no cheaper model of quality tier >= {min_tier}")
        } else {
            reasons.join("; ")
        });
    };
    let savings = (cur_cost - alt_cost) * u.factor;
    Ok(json!({
        "kind": "model_right_sizing",
        "workload_id": u.workload_id,
        "title": format!("Route {} traffic of {} to {}", cur.id, u.workload_id, alt.id),
        "from_model": cur.id, "to_model": alt.id,
        "monthly_savings_usd": round2(savings),
        "latency_impact_ms": round2(delta),
        "expected_p95_ms": p95.map(round2),
        "risk": if alt.quality_tier < cur.quality_tier { "medium" } else { "low" },
        "confidence": u.confidence,
        "figures": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "window_cost_usd": cur_cost, "window_cost_after_usd": alt_cost, "factor": u.factor},
        "basis": format!(
            "{:.0} input + {:.0} output tokens cost {:.4} USD on {} ({}/{} USD per Mtok) vs {:.4} USD on {} ({}/{} USD per Mtok, {} {}); difference x{:.4} (720 h / window) = {:.2} USD/month; latency {:+.1} ms from catalog typical latency and speed at {:.1} mean output tokens",
            u.input_tokens, u.output_tokens, cur_cost, cur.id, cur.input_per_mtok, cur.output_per_mtok,
            alt_cost, alt.id, alt.input_per_mtok, alt.output_per_mtok, alt.source, alt.as_of, u.factor, savings, delta, u.avg_output_tokens
        ),
    }))
}

/// Self-hosting break-even: the cheapest GPU offer able to serve the peak
/// hour's tokens with a self-hostable model of sufficient quality. GPUs =
/// ceil(peak tokens/s ÷ offer tokens/s for the model's size class);
/// monthly GPU cost = GPUs × hourly price × 720; savings = API cost per month
/// − GPU cost; break-even = the monthly tokens at which both cost the same.
pub fn self_hosting(u: &ModelUse, catalog: &Catalog, limits: &Limits) -> Result<Value, String> {
    let cur = u.current;
    if cur.provider == "self-hosted" {
        return Err("already self-hostable".into());
    }
    let min_tier = limits
        .quality_floor
        .unwrap_or(cur.quality_tier.saturating_sub(1).max(1));
    let api_monthly = cur.cost(u.input_tokens, u.output_tokens) * u.factor;
    let monthly_tokens = (u.input_tokens + u.output_tokens) * u.factor;
    let need_tps = u.peak_tokens_per_hour / 3600.0;
    let mut best: Option<(&ModelPrice, &GpuOffer, f64, f64)> = None;
    for m in catalog.models.iter().filter(|m| {
        m.provider == "self-hosted"
            && m.quality_tier >= min_tier
            && f64::from(m.context_window) >= u.max_input_tokens
    }) {
        let Some(class) = &m.size_class else { continue };
        for g in &catalog.gpus {
            let Some(tps) = g.tokens_per_s.get(class).copied().filter(|t| *t > 0.0) else {
                continue;
            };
            let gpus = (need_tps / tps).ceil().max(1.0);
            let monthly = gpus * g.hourly_usd * HOURS_PER_MONTH;
            if best.is_none_or(|b| monthly < b.3) {
                best = Some((m, g, gpus, monthly));
            }
        }
    }
    let Some((m, g, gpus, gpu_monthly)) = best else {
        return Err(format!(
            "no self-hostable model of quality tier >= {min_tier} with a GPU offer"
        ));
    };
    let per_token = if monthly_tokens > 0.0 {
        api_monthly / monthly_tokens
    } else {
        0.0
    };
    let break_even_tokens = if per_token > 0.0 {
        gpu_monthly / per_token
    } else {
        f64::INFINITY
    };
    let savings = api_monthly - gpu_monthly;
    let figures = json!({"api_monthly_usd": api_monthly, "gpu_monthly_usd": gpu_monthly, "gpus": gpus, "offer": g.id, "model": m.id, "required_tokens_per_s": need_tps, "monthly_tokens": monthly_tokens, "break_even_monthly_tokens": break_even_tokens});
    let basis = format!(
        "peak hour {:.0} tokens = {:.2} tokens/s needs {gpus} x {} ({} tokens/s for {}, {} USD/h, {} {}) = {:.2} USD/month vs {:.2} USD/month on the {} API ({:.0} tokens/month); break-even at {:.0} tokens/month",
        u.peak_tokens_per_hour, need_tps, g.gpu, g.tokens_per_s.get(m.size_class.as_deref().unwrap_or("")).copied().unwrap_or(0.0), m.id, g.hourly_usd, g.source, g.as_of, gpu_monthly, api_monthly, cur.id, monthly_tokens, break_even_tokens
    );
    if savings <= 0.0 {
        return Err(format!("not worth it at this volume: {basis}"));
    }
    let delta = service_ms(m, u.avg_output_tokens) - service_ms(cur, u.avg_output_tokens);
    let p95 = slo_check(limits, u.p95_ms, delta, m.typical_latency_ms)
        .map_err(|r| format!("{}: {r}", m.id))?;
    Ok(json!({
        "kind": "self_hosting",
        "workload_id": u.workload_id,
        "title": format!("Self-host {} on {gpus} x {} for {} traffic of {}", m.id, g.gpu, cur.id, u.workload_id),
        "from_model": cur.id, "to_model": m.id, "gpu_offer": g.id, "gpus": gpus,
        "monthly_savings_usd": round2(savings),
        "latency_impact_ms": round2(delta),
        "expected_p95_ms": p95.map(round2),
        "risk": "high",
        "confidence": u.confidence,
        "figures": figures,
        "basis": basis,
    }))
}

/// Output-token cap at the observed p95: the tokens above it are not
/// generated; savings = tokens above cap × output price × factor.
pub fn output_cap(u: &ModelUse, serving: &ModelPrice) -> Result<Value, String> {
    let Some(cap) = u.output_cap else {
        return Err("no output-token distribution".into());
    };
    if u.tokens_above_cap <= 0.0 {
        return Err(format!("no request exceeds the p95 cap of {cap} tokens"));
    }
    let window = u.tokens_above_cap * serving.output_per_mtok / 1e6;
    let savings = window * u.factor;
    Ok(json!({
        "kind": "max_output_tokens",
        "workload_id": u.workload_id,
        "title": format!("Cap max output tokens of {} on {} at {cap}", u.workload_id, serving.id),
        "model": serving.id, "cap": cap,
        "monthly_savings_usd": round2(savings),
        "latency_impact_ms": 0.0,
        "risk": "medium",
        "confidence": u.confidence,
        "figures": {"tokens_above_cap": u.tokens_above_cap, "requests_above_cap": u.requests_above_cap, "output_per_mtok": serving.output_per_mtok, "factor": u.factor},
        "basis": format!(
            "{} requests exceed the p95 output length of {cap} tokens by {:.0} tokens in total; at {} USD per Mtok output on {} that is {:.4} USD in the window, x{:.4} = {:.2} USD/month; only those requests get shorter (truncated) answers",
            u.requests_above_cap, u.tokens_above_cap, serving.output_per_mtok, serving.id, window, u.factor, savings
        ),
    }))
}

/// The input cost on the serving model that caching removes, per window.
fn caching_window(u: &ModelUse, serving: &ModelPrice, limits: &Limits) -> f64 {
    u.input_tokens * limits.cacheable_share * serving.input_per_mtok / 1e6
        * serving.cached_input_discount
}

/// Prompt caching of the repeated input prefix: savings = input tokens ×
/// cacheable share × input price × cached discount × factor.
pub fn prompt_caching(
    u: &ModelUse,
    serving: &ModelPrice,
    limits: &Limits,
) -> Result<Value, String> {
    if serving.cached_input_discount <= 0.0 || u.input_tokens <= 0.0 {
        return Err(format!("{} has no cached-input discount", serving.id));
    }
    let window = caching_window(u, serving, limits);
    let savings = window * u.factor;
    Ok(json!({
        "kind": "prompt_caching",
        "workload_id": u.workload_id,
        "title": format!("Enable prompt caching for {} on {}", serving.id, u.workload_id),
        "model": serving.id,
        "monthly_savings_usd": round2(savings),
        "latency_impact_ms": 0.0,
        "risk": "low",
        "confidence": "medium",
        "figures": {"input_tokens": u.input_tokens, "cacheable_share": limits.cacheable_share, "input_per_mtok": serving.input_per_mtok, "cached_input_discount": serving.cached_input_discount, "factor": u.factor},
        "basis": format!(
            "{:.0} input tokens x {} cacheable share x {} USD per Mtok x {} cached discount = {:.4} USD in the window, x{:.4} = {:.2} USD/month",
            u.input_tokens, limits.cacheable_share, serving.input_per_mtok, serving.cached_input_discount, window, u.factor, savings
        ),
    }))
}

/// Batch processing of the latency-tolerant share: savings = share ×
/// (cost on the serving model after the cap and caching) × batch discount ×
/// factor. With a latency SLO, only a share the requester declared is
/// moved (those requests then leave the interactive SLO).
pub fn batch(
    u: &ModelUse,
    serving: &ModelPrice,
    limits: &Limits,
    capped: bool,
    cached: bool,
) -> Result<Value, String> {
    if serving.batch_discount <= 0.0 {
        return Err(format!("{} has no batch discount", serving.id));
    }
    if limits.latency_slo_ms.is_some() && !limits.batch_share_declared {
        return Err("a latency SLO applies and no latency-tolerant share was declared (context.batch_eligible_share)".into());
    }
    let out = u.output_tokens - if capped { u.tokens_above_cap } else { 0.0 };
    let remaining = serving.cost(u.input_tokens, out)
        - if cached {
            caching_window(u, serving, limits)
        } else {
            0.0
        };
    let window = remaining * limits.batch_share * serving.batch_discount;
    let savings = window * u.factor;
    Ok(json!({
        "kind": "batch_processing",
        "workload_id": u.workload_id,
        "title": format!("Send the latency-tolerant {}% of {} to the {} batch API", round2(limits.batch_share * 100.0), u.workload_id, serving.id),
        "model": serving.id, "share": limits.batch_share,
        "monthly_savings_usd": round2(savings),
        "latency_impact_ms": 0.0,
        "risk": "low",
        "confidence": if limits.batch_share_declared { "medium" } else { "low" },
        "figures": {"remaining_window_cost_usd": remaining, "share": limits.batch_share, "batch_discount": serving.batch_discount, "factor": u.factor},
        "basis": format!(
            "{:.4} USD window cost on {} (after the cap and caching above) x {} share x {} batch discount = {:.4} USD, x{:.4} = {:.2} USD/month; batched requests complete within 24 h, outside the interactive latency",
            remaining, serving.id, limits.batch_share, serving.batch_discount, window, u.factor, savings
        ),
    }))
}

/// Capacity for peaks: rate limits (or reserved throughput) sized for the
/// peak hour with headroom. No savings; it protects latency under bursts.
pub fn peak_capacity(workload: &str, metrics: &Value) -> Option<Value> {
    let ratio = metrics["rate"]["peak_to_average"].as_f64()?;
    let peak = metrics["rate"]["peak_per_hour"].as_f64()?;
    let peak_tokens = metrics["rate"]["peak_tokens_per_hour"].as_f64()?;
    let avg = metrics["rate"]["avg_per_hour"].as_f64()?;
    if ratio < BURSTY_RATIO {
        return None;
    }
    let rpm = (peak / 60.0 * PEAK_HEADROOM).ceil() as i64;
    let tpm = (peak_tokens / 60.0 * PEAK_HEADROOM).ceil() as i64;
    Some(json!({
        "kind": "capacity_for_peaks",
        "workload_id": workload,
        "title": format!("Provision {workload} for its peak: {rpm} requests/min, {tpm} tokens/min"),
        "requests_per_minute": rpm, "tokens_per_minute": tpm,
        "monthly_savings_usd": 0.0,
        "latency_impact_ms": 0.0,
        "risk": "low",
        "confidence": "high",
        "figures": {"peak_per_hour": peak, "avg_per_hour": avg, "peak_to_average": ratio, "peak_tokens_per_hour": peak_tokens, "headroom": PEAK_HEADROOM},
        "basis": format!(
            "peak hour {peak:.0} requests vs {avg:.2} average per hour (peak-to-average {ratio:.2} >= {BURSTY_RATIO}); {peak:.0}/60 x {PEAK_HEADROOM} = {rpm} requests/min and {peak_tokens:.0}/60 x {PEAK_HEADROOM} = {tpm} tokens/min keep bursts from being throttled"
        ),
    }))
}

/// Builds the per-model inputs of one workload of the data output.
fn model_uses<'a>(w: &'a Value, catalog: &'a Catalog) -> (Vec<ModelUse<'a>>, Vec<Value>) {
    let wid = w["workload_id"].as_str().unwrap_or("?");
    let m = &w["metrics"];
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
    for c in w["cost"]["models"].as_array().into_iter().flatten() {
        let id = c["model"].as_str().unwrap_or("");
        let Some(cur) = catalog.model(id) else {
            skipped.push(json!({"kind": "all", "workload_id": wid, "model": id, "reason": "model not in the supply catalog"}));
            continue;
        };
        let perf = w["performance"]["models"]
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
pub fn recommend(w: &Value, limits: &Limits, catalog: &Catalog) -> (Vec<Value>, Vec<Value>) {
    let (uses, mut out) = model_uses(w, catalog);
    let mut recs = Vec::new();
    for u in &uses {
        // 1. The model change: the larger saving of right-sizing and self-hosting.
        let rs = ("model_right_sizing", right_sizing(u, catalog, limits));
        let sh = ("self_hosting", self_hosting(u, catalog, limits));
        let savings = |r: &Result<Value, String>| {
            r.as_ref()
                .ok()
                .and_then(|v| v["monthly_savings_usd"].as_f64())
        };
        let (chosen, other) = match (savings(&rs.1), savings(&sh.1)) {
            (Some(a), Some(b)) if b > a => (sh, rs),
            (None, Some(_)) => (sh, rs),
            _ => (rs, sh),
        };
        let mut serving = u.current;
        let mut self_hosted = false;
        match chosen.1 {
            Ok(rec) => {
                self_hosted = chosen.0 == "self_hosting";
                serving = rec["to_model"]
                    .as_str()
                    .and_then(|id| catalog.model(id))
                    .unwrap_or(u.current);
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
        if self_hosted {
            out.push(excluded(
                "token_options",
                u,
                "self-hosted GPUs are paid by the hour; token-priced options do not apply".into(),
            ));
            continue;
        }
        // 2-4. On the model that serves afterwards.
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
    if let Some(r) = peak_capacity(w["workload_id"].as_str().unwrap_or("?"), &w["metrics"]) {
        recs.push(r);
    }
    (recs, out)
}

fn risk_rank(v: &Value) -> u8 {
    match v["risk"].as_str() {
        Some("low") => 0,
        Some("medium") => 1,
        _ => 2,
    }
}

/// Orders recommendations by the request's priorities, in their order:
/// cost (larger savings first), latency (smaller latency impact first),
/// quality (lower risk first), throughput (capacity first); ties by kind.
pub fn rank(recs: &mut [Value], priorities: &[String]) {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    recs.sort_by(|a, b| {
        for p in priorities {
            let o = match p.as_str() {
                "cost" => f(b, "monthly_savings_usd").total_cmp(&f(a, "monthly_savings_usd")),
                "latency" => f(a, "latency_impact_ms").total_cmp(&f(b, "latency_impact_ms")),
                "quality" => risk_rank(a).cmp(&risk_rank(b)),
                "throughput" => {
                    (b["kind"] == "capacity_for_peaks").cmp(&(a["kind"] == "capacity_for_peaks"))
                }
                _ => Ordering::Equal,
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        f(b, "monthly_savings_usd")
            .total_cmp(&f(a, "monthly_savings_usd"))
            .then_with(|| a["kind"].as_str().cmp(&b["kind"].as_str()))
    });
}

/// The limits of a request: triage constraints plus context overrides.
pub fn limits(constraints: &Value, context: &Value) -> Limits {
    let share = |k: &str| context[k].as_f64().filter(|x| (0.0..=1.0).contains(x));
    Limits {
        latency_slo_ms: constraints["latency_slo_ms"].as_f64(),
        quality_floor: constraints["quality_floor"]
            .as_u64()
            .and_then(|q| u8::try_from(q).ok()),
        cacheable_share: share("cacheable_input_share").unwrap_or(CACHEABLE_INPUT_SHARE),
        batch_share: share("batch_eligible_share").unwrap_or(BATCH_ELIGIBLE_SHARE),
        batch_share_declared: share("batch_eligible_share").is_some(),
    }
}

/// The whole optimization output from the triage and data outputs (pure).
pub fn optimize(triage: &Value, data: &Value, context: &Value, catalog: &Catalog) -> Value {
    let limits = limits(&triage["constraints"], context);
    let mut recs = Vec::new();
    let mut left_out = Vec::new();
    let mut current = 0.0;
    for w in data["workloads"].as_array().into_iter().flatten() {
        let factor = monthly_factor(w["metrics"]["span_hours"].as_f64().unwrap_or(0.0));
        current += w["cost"]["total_cost_usd"].as_f64().unwrap_or(0.0) * factor;
        let (kept, out) = recommend(w, &limits, catalog);
        recs.extend(kept);
        left_out.extend(out);
    }
    let priorities: Vec<String> = triage["priorities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    rank(&mut recs, &priorities);
    let total: f64 = recs
        .iter()
        .filter_map(|r| r["monthly_savings_usd"].as_f64())
        .sum();
    let target = triage["constraints"]["target_reduction_pct"].as_f64();
    let pct = if current > 0.0 {
        total.min(current) / current * 100.0
    } else {
        0.0
    };
    let budget = triage["constraints"]["monthly_budget_usd"].as_f64();
    let projected = (current - total).max(0.0);
    json!({
        "strategy": if recs.iter().any(|r| r["monthly_savings_usd"].as_f64().unwrap_or(0.0) > 0.0) {
            "per model: the cheaper of right-sizing and self-hosting within the constraints, then an output cap, prompt caching and batching on the model that serves"
        } else {
            "no change: no option beats the current setup within the constraints"
        },
        "priorities": priorities,
        "current_monthly_cost_usd": round2(current),
        "recommendations": recs,
        "excluded": left_out,
        "total_monthly_savings_usd": round2(total),
        "projected_monthly_cost_usd": round2(projected),
        "savings_pct": round2(pct),
        "target_reduction_pct": target,
        "meets_target": target.map(|t| pct >= t),
        "monthly_budget_usd": budget,
        "meets_budget": budget.map(|b| projected <= b),
        "catalog_version": catalog.version,
        "assumptions": [
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
        ],
    })
}

impl Agent for Optimization {
    fn phase(&self) -> &'static str {
        "optimization"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            let triage = upstream(input, "triage")?;
            let data = upstream(input, "data")?;
            // The catalog the data phase read, so a replay computes the same figures.
            let catalog = match serde_json::from_value::<Catalog>(data["catalog"].clone()) {
                Ok(c) if !c.models.is_empty() => c,
                _ => Catalog::from_db(&ctx.pool, ctx.data_version)
                    .await
                    .map_err(|e| crate::tools::db_err("catalog_lookup", e))?,
            };
            Ok(optimize(triage, data, &input.request["context"], &catalog))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(p95: f64, avg_out: f64, above: i64, cap: i64) -> Value {
        json!({
            "workload_id": "w",
            "metrics": {"requests": 1000, "span_hours": 10.0, "latency_ms": {"p95": p95},
                        "tokens": {"total": 1_200_000, "input": {"max": 4000}},
                        "rate": {"peak_to_average": 1.5, "peak_per_hour": 150, "avg_per_hour": 100, "peak_tokens_per_hour": 180_000}},
            "cost": {"total_cost_usd": 4.5, "models": [{"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 200_000}]},
            "performance": {"models": [{"model": "gpt-4o", "avg_output_tokens": avg_out, "output_cap": cap, "output_tokens_above_cap": above, "requests_above_cap": 50}]},
        })
    }

    fn find<'a>(recs: &'a [Value], kind: &str) -> &'a Value {
        recs.iter().find(|r| r["kind"] == kind).unwrap()
    }

    #[test]
    fn chained_savings_match_hand_computation() {
        // 10 h window, factor 720/10 = 72; 1M input + 0.2M output tokens on gpt-4o.
        let c = Catalog::embedded();
        let l = limits(
            &json!({"latency_slo_ms": 2000.0}),
            &json!({"batch_eligible_share": 0.5}),
        );
        let (recs, _) = recommend(&workload(1500.0, 100.0, 20_000, 400), &l, c);
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
        let rec = self_hosting(&big, c, &Limits::default()).unwrap();
        assert_eq!(rec["monthly_savings_usd"], json!(633.6));
        assert_eq!(rec["gpus"], json!(3.0));
    }

    #[test]
    fn tight_slo_filters_model_changes_and_undeclared_batching() {
        let c = Catalog::embedded();
        let l = limits(&json!({"latency_slo_ms": 1.0}), &json!({}));
        let (recs, out) = recommend(&workload(1000.0, 500.0, 0, 900), &l, c);
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
        let r = peak_capacity("w", &m).unwrap();
        // 600/60*1.2 = 12 rpm; 900,000/60*1.2 = 18,000 tpm.
        assert_eq!(
            (
                r["requests_per_minute"].clone(),
                r["tokens_per_minute"].clone()
            ),
            (json!(12), json!(18000))
        );
        assert!(peak_capacity("w", &json!({"rate": {"peak_to_average": 1.2, "peak_per_hour": 1.0, "avg_per_hour": 1.0, "peak_tokens_per_hour": 1.0}})).is_none());
        let mut recs = vec![
            json!({"kind": "a", "monthly_savings_usd": 10.0, "latency_impact_ms": 50.0, "risk": "high"}),
            json!({"kind": "b", "monthly_savings_usd": 5.0, "latency_impact_ms": -10.0, "risk": "low"}),
            r,
        ];
        rank(&mut recs, &["cost".into()]);
        assert_eq!(recs[0]["kind"], "a");
        rank(&mut recs, &["latency".into()]);
        assert_eq!(recs[0]["kind"], "b");
        rank(&mut recs, &["throughput".into(), "cost".into()]);
        assert_eq!(recs[0]["kind"], "capacity_for_peaks");
    }
}
