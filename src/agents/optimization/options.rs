//! What the options share ([`ModelUse`], [`Limits`], the assumptions) and
//! the token-priced kinds, one function each: right-sizing to a cheaper API
//! model of the same quality (or of the stated floor), a max-output-token
//! cap, prompt caching, batch processing and peak capacity planning. Each
//! takes one model's use of one workload and returns the recommendation, or
//! why it does not apply; [`super`] chains them per model and
//! [`super::goals`] decides which are considered and how they rank.

use serde_json::{json, Map, Value};

use crate::{
    agents::{
        catalog::{Catalog, ModelPrice},
        outputs::{Excluded, Recommendation},
        round2,
    },
    store::telemetry::SizeShare,
};

/// Share of input tokens assumed to be a repeated prefix (system prompt,
/// few-shot examples) that prompt caching serves, unless the request's
/// context gives `cacheable_input_share`. Stated in the output.
pub const CACHEABLE_INPUT_SHARE: f64 = 0.3;

/// Share of input tokens assumed removable by trimming prompts (duplicate
/// context, unused instructions or retrieved passages) unless the context
/// gives `prompt_trim_share`. Stated in the output.
pub const PROMPT_TRIM_SHARE: f64 = 0.2;

/// Input tokens must be at least this share of a model's cost for prompt
/// trimming to be considered (an input-heavy workload).
pub const INPUT_HEAVY_SHARE: f64 = 0.5;

/// Hours in the 30-day month the savings are quoted for.
pub const HOURS_PER_MONTH: f64 = 720.0;

/// Headroom over the observed peak when sizing capacity.
pub const PEAK_HEADROOM: f64 = 1.2;

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
    /// Requests of this model in the window.
    pub requests: i64,
    /// Its requests at or under input-size thresholds (size-based routing).
    pub shares: &'a [SizeShare],
    /// The load at the busiest minute attributable to this model.
    pub peak: Peak,
    /// Window-to-month factor.
    pub factor: f64,
    /// `high` when the window is long and large enough.
    pub confidence: &'static str,
}

/// The load at the busiest minute, for sizing capacity and GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Peak {
    /// Requests in the busiest clock minute.
    pub requests_per_minute: f64,
    /// True when measured per minute (`rate.peak_per_minute`); false when
    /// it is the busiest hour ÷ 60 (the data phase did not measure minutes).
    pub per_minute: bool,
    /// Mean input + output tokens per request.
    pub tokens_per_request: f64,
    /// Context of a typical long request: p95 input + p95 output tokens.
    pub context_p95: f64,
    /// The longest context seen: max input + max output tokens.
    pub context_max: f64,
}

impl Peak {
    /// Tokens per second at the peak minute.
    pub fn tokens_per_s(&self) -> f64 {
        self.requests_per_minute * self.tokens_per_request / 60.0
    }

    /// How the peak was measured, in words.
    pub fn source(&self) -> &'static str {
        if self.per_minute {
            "busiest clock minute"
        } else {
            "busiest hour / 60 (no per-minute peak measured)"
        }
    }
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
    /// Share of input tokens trimming removes.
    pub trim_share: f64,
}

/// An option left out, and why.
pub fn excluded(kind: &str, u: &ModelUse, reason: String) -> Excluded {
    Excluded {
        kind: kind.to_string(),
        workload_id: u.workload_id.to_string(),
        model: u.current.id.clone(),
        reason,
    }
}

/// The fields of a recommendation's kind, from a JSON object.
pub fn detail(fields: Value) -> Map<String, Value> {
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
pub(super) fn slo_check(
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

/// Right-sizing of all traffic: the cheapest catalog model that keeps the
/// stated quality floor (without one: the current tier, so all traffic is
/// never moved down a tier silently), fits the largest prompt and keeps the
/// SLO; savings = (cost on current − cost on it) × factor for the same tokens.
pub fn right_sizing(
    u: &ModelUse,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Recommendation, String> {
    let cur = u.current;
    let min_tier = limits.quality_floor.unwrap_or(cur.quality_tier);
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
            let why = if limits.quality_floor.is_none() {
                " (no quality floor was stated, so all traffic is not moved to a lower tier; state one to consider it)"
            } else {
                ""
            };
            format!("no cheaper model of quality tier >= {min_tier}{why}")
        } else {
            reasons.join("; ")
        });
    };
    let savings = (cur_cost - alt_cost) * u.factor;
    Ok(Recommendation {
        kind: "model_right_sizing".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Route {} traffic of {} to {}", cur.id, u.workload_id, alt.id),
        detail: detail(json!({"from_model": cur.id, "to_model": alt.id, "expected_p95_ms": p95.map(round2), "shadow_evaluation": true,
            "risk_reason": if alt.quality_tier < cur.quality_tier { format!("{} is tier {} (below {}'s {}) but within the stated floor; its answers are not measured on this workload: shadow-evaluate first", alt.id, alt.quality_tier, cur.id, cur.quality_tier) } else { format!("same quality tier {}; answers are not measured on this workload: shadow-evaluate first", alt.quality_tier) }})),
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

/// Output-token cap at the observed p95: the tokens above it are not
/// generated; savings = tokens above cap × output price × factor. Shorter
/// generations: the mean latency falls by the tokens no longer generated
/// per request at the serving model's catalog speed.
pub fn output_cap(u: &ModelUse, serving: &ModelPrice) -> Result<Recommendation, String> {
    let Some(cap) = u.output_cap else {
        return Err("no output-token distribution".into());
    };
    if u.tokens_above_cap <= 0.0 {
        return Err(format!("no request exceeds the p95 cap of {cap} tokens"));
    }
    let window = u.tokens_above_cap * serving.output_per_mtok / 1e6;
    let savings = window * u.factor;
    let faster_ms =
        u.tokens_above_cap / (u.requests.max(1) as f64) / serving.output_tokens_per_s.max(1.0)
            * 1000.0;
    Ok(Recommendation {
        kind: "max_output_tokens".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Cap max output tokens of {} on {} at {cap}", u.workload_id, serving.id),
        detail: detail(json!({"model": serving.id, "cap": cap, "latency_note": "cannot increase latency: only the capped requests change, and they finish sooner"})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: round2(-faster_ms),
        risk: "medium".to_string(),
        confidence: u.confidence.to_string(),
        figures: json!({"tokens_above_cap": u.tokens_above_cap, "requests_above_cap": u.requests_above_cap, "output_per_mtok": serving.output_per_mtok, "factor": u.factor}),
        basis: format!(
            "{} requests exceed the p95 output length of {cap} tokens by {:.0} tokens in total; at {} USD per Mtok output on {} that is {:.4} USD in the window, x{:.4} = {:.2} USD/month; only those requests get shorter (truncated) answers; mean latency {:.1} ms lower ({:.0} tokens / {} requests at {} tokens/s, catalog)",
            u.requests_above_cap, u.tokens_above_cap, serving.output_per_mtok, serving.id, window, u.factor, savings,
            faster_ms, u.tokens_above_cap, u.requests, serving.output_tokens_per_s
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
        // An assumed cacheable share: medium at best, low on an
        // extrapolated window.
        confidence: if u.confidence == "low" { "low" } else { "medium" }.to_string(),
        figures: json!({"input_tokens": u.input_tokens, "cacheable_share": limits.cacheable_share, "input_per_mtok": serving.input_per_mtok, "cached_input_discount": serving.cached_input_discount, "factor": u.factor}),
        basis: format!(
            "{:.0} input tokens x {} cacheable share x {} USD per Mtok x {} cached discount = {:.4} USD in the window, x{:.4} = {:.2} USD/month",
            u.input_tokens, limits.cacheable_share, serving.input_per_mtok, serving.cached_input_discount, window, u.factor, savings
        ),
    })
}

/// Batch processing of the latency-tolerant share: savings = share ×
/// (cost on the serving model after the cap and caching) × batch discount ×
/// factor. Only a share the requester declared
/// (`context.batch_eligible_share`) is moved: netra cannot tell from the
/// telemetry which requests can wait (those then leave the interactive SLO).
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
    if !limits.batch_share_declared {
        return Err("no latency-tolerant share was stated: give context.batch_eligible_share (the share of requests that can wait up to 24 h)".into());
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
        confidence: if limits.batch_share_declared && u.confidence != "low" {
            "medium"
        } else {
            "low"
        }
        .to_string(),
        figures: json!({"remaining_window_cost_usd": remaining, "share": limits.batch_share, "batch_discount": serving.batch_discount, "factor": u.factor}),
        basis: format!(
            "{:.4} USD window cost on {} (after the cap and caching above) x {} share x {} batch discount = {:.4} USD, x{:.4} = {:.2} USD/month; batched requests complete within 24 h (their latency impact: up to 24 h), outside the interactive latency",
            remaining, serving.id, limits.batch_share, serving.batch_discount, window, u.factor, savings
        ),
    })
}

/// The load at the busiest minute of a workload's metrics:
/// `rate.peak_per_minute`, or the busiest hour ÷ 60 without it.
pub fn peak_of(metrics: &Value) -> Peak {
    let rate = &metrics["rate"];
    let tokens = &metrics["tokens"];
    let (rpm, per_minute) = match rate["peak_per_minute"].as_f64() {
        Some(p) => (p, true),
        None => (rate["peak_per_hour"].as_f64().unwrap_or(0.0) / 60.0, false),
    };
    let n = metrics["requests"].as_f64().unwrap_or(0.0);
    let total = tokens["total"].as_f64().unwrap_or(0.0);
    let f = |a: &str, b: &str| tokens[a][b].as_f64().unwrap_or(0.0);
    Peak {
        requests_per_minute: rpm,
        per_minute,
        tokens_per_request: if n > 0.0 { total / n } else { 0.0 },
        context_p95: f("input", "p95") + f("output", "p95"),
        context_max: f("input", "max") + f("output", "max"),
    }
}

/// Capacity for peaks: rate limits (or reserved throughput) sized for the
/// busiest minute with headroom, requests and tokens. No savings; it keeps
/// bursts from being throttled (latency) and served (throughput).
pub fn peak_capacity(workload: &str, metrics: &Value) -> Result<Recommendation, String> {
    let p = peak_of(metrics);
    if p.requests_per_minute <= 0.0 {
        return Err("no request rate measured".into());
    }
    let rpm = (p.requests_per_minute * PEAK_HEADROOM).ceil() as i64;
    let tpm = (p.requests_per_minute * p.tokens_per_request * PEAK_HEADROOM).ceil() as i64;
    let avg = metrics["rate"]["avg_per_minute"]
        .as_f64()
        .or_else(|| metrics["rate"]["avg_per_hour"].as_f64().map(|h| h / 60.0));
    Ok(Recommendation {
        kind: "capacity_for_peaks".to_string(),
        workload_id: workload.to_string(),
        title: format!("Provision {workload} for its peak minute: {rpm} requests/min, {tpm} tokens/min"),
        detail: detail(json!({"requests_per_minute": rpm, "tokens_per_minute": tpm})),
        monthly_savings_usd: 0.0,
        latency_impact_ms: 0.0,
        risk: "low".to_string(),
        confidence: if p.per_minute { "high" } else { "low" }.to_string(),
        figures: json!({"peak_requests_per_minute": p.requests_per_minute, "per_minute": p.per_minute, "avg_requests_per_minute": avg, "tokens_per_request": p.tokens_per_request, "headroom": PEAK_HEADROOM}),
        basis: format!(
            "{:.2} requests at the peak ({}) x {PEAK_HEADROOM} headroom = {rpm} requests/min; x {:.1} mean tokens per request = {tpm} tokens/min (average {} requests/min); limits below these throttle the peak",
            p.requests_per_minute, p.source(), p.tokens_per_request, avg.map_or_else(|| "unknown".to_string(), |a| format!("{a:.2}"))
        ),
    })
}
