//! The recommendation kinds, one function each: right-sizing to a cheaper
//! API model, self-hosting on GPUs, a max-output-token cap, prompt caching,
//! batch processing and peak capacity planning, with the assumptions they
//! share. Each takes one model's use of one workload ([`ModelUse`]) and
//! returns the recommendation, or why it does not apply; [`super`] chains
//! them per model and ranks the result.

use serde_json::{json, Map, Value};

use crate::agents::{
    catalog::{Catalog, GpuOffer, ModelPrice},
    outputs::{Excluded, Recommendation},
    round2,
};

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

/// Factor from the observed window to a 30-day month: exactly 720 ÷ the
/// window's hours (last request − first), with no floor. A zero window
/// (every request at one instant, or none) cannot be extrapolated: its
/// factor is 1, the window's own figures, and the data phase says so.
pub fn monthly_factor(span_hours: f64) -> f64 {
    if span_hours > 0.0 {
        HOURS_PER_MONTH / span_hours
    } else {
        1.0
    }
}

/// The latency a batched request may wait: the batch APIs complete
/// within 24 h (as `latency_impact_ms` of batching, for the batched share).
pub const BATCH_LATENCY_MS: f64 = 24.0 * 3_600_000.0;

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
pub(super) fn excluded(kind: &str, u: &ModelUse, reason: String) -> Excluded {
    Excluded {
        kind: kind.to_string(),
        workload_id: u.workload_id.to_string(),
        model: u.current.id.clone(),
        reason,
    }
}

/// The fields of a recommendation's kind, from a JSON object.
fn detail(fields: Value) -> Map<String, Value> {
    match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The expected p95 after a model change: observed p95 plus the estimated
/// change, but never below the new model's typical time to first token.
/// Without latency telemetry the check is unknown, not failed: the change
/// is held back with that reason (and the estimated change), unless the
/// new model's typical latency alone already exceeds the SLO (a known
/// violation).
fn slo_check(
    limits: &Limits,
    p95: Option<f64>,
    delta: f64,
    floor_ms: f64,
) -> Result<Option<f64>, String> {
    let expected = p95.map(|p| (p + delta).max(floor_ms));
    match (limits.latency_slo_ms, p95, expected) {
        (Some(slo), _, _) if floor_ms > slo => Err(format!(
            "its typical latency alone ({floor_ms} ms, catalog) exceeds the {slo} ms SLO"
        )),
        (Some(slo), Some(p), Some(e)) if e > slo => Err(format!(
            "expected p95 {e:.1} ms (observed {p:.1} {delta:+.1}, at least {floor_ms} ms) exceeds the {slo} ms SLO"
        )),
        (Some(slo), None, _) => Err(format!(
            "latency against the {slo} ms SLO is unknown, not violated: the workload has no latency telemetry (catalog estimate {delta:+.1} ms per request); held back until latency is measured"
        )),
        _ => Ok(expected),
    }
}

/// Right-sizing: the cheapest catalog model that keeps the quality floor
/// (default: at most one tier down), fits the largest prompt and keeps the
/// SLO; savings = (cost on current − cost on it) × factor for the same tokens.
pub fn right_sizing(
    u: &ModelUse,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Recommendation, String> {
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
    Ok(Recommendation {
        kind: "model_right_sizing".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Route {} traffic of {} to {}", cur.id, u.workload_id, alt.id),
        detail: detail(json!({"from_model": cur.id, "to_model": alt.id, "expected_p95_ms": p95.map(round2)})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: round2(delta),
        risk: if alt.quality_tier < cur.quality_tier { "medium" } else { "low" }.to_string(),
        confidence: u.confidence.to_string(),
        figures: json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "window_cost_usd": cur_cost, "window_cost_after_usd": alt_cost, "factor": u.factor}),
        basis: format!(
            "{:.0} input + {:.0} output tokens cost {:.4} USD on {} ({}/{} USD per Mtok) vs {:.4} USD on {} ({}/{} USD per Mtok, {} {}); difference x{:.4} (720 h / window) = {:.2} USD/month; latency {:+.1} ms from catalog typical latency and speed at {:.1} mean output tokens",
            u.input_tokens, u.output_tokens, cur_cost, cur.id, cur.input_per_mtok, cur.output_per_mtok,
            alt_cost, alt.id, alt.input_per_mtok, alt.output_per_mtok, alt.source, alt.as_of, u.factor, savings, delta, u.avg_output_tokens
        ),
    })
}

/// Self-hosting break-even: the cheapest GPU offer able to serve the peak
/// hour's tokens with a self-hostable model of sufficient quality. GPUs =
/// ceil(peak tokens/s ÷ offer tokens/s for the model's size class);
/// monthly GPU cost = GPUs × hourly price × 720; savings = API cost per month
/// − GPU cost; break-even = the monthly tokens at which both cost the same.
pub fn self_hosting(
    u: &ModelUse,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Recommendation, String> {
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
    Ok(Recommendation {
        kind: "self_hosting".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!(
            "Self-host {} on {gpus} x {} for {} traffic of {}",
            m.id, g.gpu, cur.id, u.workload_id
        ),
        detail: detail(
            json!({"from_model": cur.id, "to_model": m.id, "gpu_offer": g.id, "gpus": gpus, "expected_p95_ms": p95.map(round2)}),
        ),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: round2(delta),
        risk: "high".to_string(),
        confidence: u.confidence.to_string(),
        figures,
        basis,
    })
}

/// Output-token cap at the observed p95: the tokens above it are not
/// generated; savings = tokens above cap × output price × factor.
pub fn output_cap(u: &ModelUse, serving: &ModelPrice) -> Result<Recommendation, String> {
    let Some(cap) = u.output_cap else {
        return Err("no output-token distribution".into());
    };
    if u.tokens_above_cap <= 0.0 {
        return Err(format!("no request exceeds the p95 cap of {cap} tokens"));
    }
    let window = u.tokens_above_cap * serving.output_per_mtok / 1e6;
    let savings = window * u.factor;
    Ok(Recommendation {
        kind: "max_output_tokens".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Cap max output tokens of {} on {} at {cap}", u.workload_id, serving.id),
        detail: detail(json!({"model": serving.id, "cap": cap, "latency_note": "cannot increase latency: only the capped requests change, and they finish sooner"})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: 0.0,
        risk: "medium".to_string(),
        confidence: u.confidence.to_string(),
        figures: json!({"tokens_above_cap": u.tokens_above_cap, "requests_above_cap": u.requests_above_cap, "output_per_mtok": serving.output_per_mtok, "factor": u.factor}),
        basis: format!(
            "{} requests exceed the p95 output length of {cap} tokens by {:.0} tokens in total; at {} USD per Mtok output on {} that is {:.4} USD in the window, x{:.4} = {:.2} USD/month; only those requests get shorter (truncated) answers",
            u.requests_above_cap, u.tokens_above_cap, serving.output_per_mtok, serving.id, window, u.factor, savings
        ),
    })
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
) -> Result<Recommendation, String> {
    if serving.cached_input_discount <= 0.0 || u.input_tokens <= 0.0 {
        return Err(format!("{} has no cached-input discount", serving.id));
    }
    let window = caching_window(u, serving, limits);
    let savings = window * u.factor;
    Ok(Recommendation {
        kind: "prompt_caching".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Enable prompt caching for {} on {}", serving.id, u.workload_id),
        detail: detail(json!({"model": serving.id, "latency_note": "cannot increase latency: a cached prefix is billed and processed no slower"})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: 0.0,
        risk: "low".to_string(),
        confidence: "medium".to_string(),
        figures: json!({"input_tokens": u.input_tokens, "cacheable_share": limits.cacheable_share, "input_per_mtok": serving.input_per_mtok, "cached_input_discount": serving.cached_input_discount, "factor": u.factor}),
        basis: format!(
            "{:.0} input tokens x {} cacheable share x {} USD per Mtok x {} cached discount = {:.4} USD in the window, x{:.4} = {:.2} USD/month",
            u.input_tokens, limits.cacheable_share, serving.input_per_mtok, serving.cached_input_discount, window, u.factor, savings
        ),
    })
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
) -> Result<Recommendation, String> {
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
    Ok(Recommendation {
        kind: "batch_processing".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Send the latency-tolerant {}% of {} to the {} batch API", round2(limits.batch_share * 100.0), u.workload_id, serving.id),
        detail: detail(json!({"model": serving.id, "share": limits.batch_share, "latency_note": format!("up to 24 h for the batched {}% of requests; the others are unchanged", round2(limits.batch_share * 100.0))})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: BATCH_LATENCY_MS,
        risk: "low".to_string(),
        confidence: if limits.batch_share_declared { "medium" } else { "low" }.to_string(),
        figures: json!({"remaining_window_cost_usd": remaining, "share": limits.batch_share, "batch_discount": serving.batch_discount, "factor": u.factor}),
        basis: format!(
            "{:.4} USD window cost on {} (after the cap and caching above) x {} share x {} batch discount = {:.4} USD, x{:.4} = {:.2} USD/month; batched requests complete within 24 h (their latency impact: up to 24 h), outside the interactive latency",
            remaining, serving.id, limits.batch_share, serving.batch_discount, window, u.factor, savings
        ),
    })
}

/// Capacity for peaks: rate limits (or reserved throughput) sized for the
/// peak hour with headroom. No savings; it protects latency under bursts.
pub fn peak_capacity(workload: &str, metrics: &Value) -> Option<Recommendation> {
    let ratio = metrics["rate"]["peak_to_average"].as_f64()?;
    let peak = metrics["rate"]["peak_per_hour"].as_f64()?;
    let peak_tokens = metrics["rate"]["peak_tokens_per_hour"].as_f64()?;
    let avg = metrics["rate"]["avg_per_hour"].as_f64()?;
    if ratio < BURSTY_RATIO {
        return None;
    }
    let rpm = (peak / 60.0 * PEAK_HEADROOM).ceil() as i64;
    let tpm = (peak_tokens / 60.0 * PEAK_HEADROOM).ceil() as i64;
    Some(Recommendation {
        kind: "capacity_for_peaks".to_string(),
        workload_id: workload.to_string(),
        title: format!("Provision {workload} for its peak: {rpm} requests/min, {tpm} tokens/min"),
        detail: detail(json!({"requests_per_minute": rpm, "tokens_per_minute": tpm})),
        monthly_savings_usd: 0.0,
        latency_impact_ms: 0.0,
        risk: "low".to_string(),
        confidence: "high".to_string(),
        figures: json!({"peak_per_hour": peak, "avg_per_hour": avg, "peak_to_average": ratio, "peak_tokens_per_hour": peak_tokens, "headroom": PEAK_HEADROOM}),
        basis: format!(
            "peak hour {peak:.0} requests vs {avg:.2} average per hour (peak-to-average {ratio:.2} >= {BURSTY_RATIO}); {peak:.0}/60 x {PEAK_HEADROOM} = {rpm} requests/min and {peak_tokens:.0}/60 x {PEAK_HEADROOM} = {tpm} tokens/min keep bursts from being throttled"
        ),
    })
}
