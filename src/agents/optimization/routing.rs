//! Model changes other than right-sizing all traffic: a size-based route
//! (the requests under N input tokens to a smaller model, with their share
//! and its saving), a faster model (latency), an upgrade and a same-tier
//! comparison (quality). A change without a stated quality floor is always
//! paired with a shadow evaluation (`shadow_evaluation` in its fields) and
//! its `risk_reason` says why.

use serde_json::json;

use super::options::{detail, service_ms, slo_check, Limits, ModelUse};
use crate::{
    agents::{
        catalog::{Catalog, ModelPrice},
        outputs::Recommendation,
        round2,
    },
    store::telemetry::SizeShare,
};

/// The threshold a size-based route proposes: the median input length
/// (the other measured thresholds are listed in its figures).
pub const ROUTING_PERCENTILE: f64 = 0.5;

/// API models (not self-hosted) other than the current one that fit the
/// prompt and whose tier is within `tiers`.
fn api_models<'a>(
    cur: &'a ModelPrice,
    catalog: &'a Catalog,
    max_input: f64,
    tiers: std::ops::RangeInclusive<u8>,
) -> impl Iterator<Item = &'a ModelPrice> + 'a {
    catalog.models.iter().filter(move |m| {
        m.id != cur.id
            && m.provider != "self-hosted"
            && tiers.contains(&m.quality_tier)
            && f64::from(m.context_window) >= max_input
    })
}

/// The lowest tier a partial route may go to: the stated floor, else one
/// tier below the current model.
fn route_floor(cur: &ModelPrice, limits: &Limits) -> u8 {
    limits
        .quality_floor
        .unwrap_or(cur.quality_tier.saturating_sub(1).max(1))
}

/// Why a change to `alt` is risky, in words.
fn risk_reason(cur: &ModelPrice, alt: &ModelPrice, limits: &Limits, what: &str) -> String {
    match limits.quality_floor {
        None if alt.quality_tier < cur.quality_tier => format!(
            "no quality floor was stated and nothing shows {} (tier {}) answers {what} as well as {} (tier {}): shadow-evaluate on a labelled sample before routing",
            alt.id, alt.quality_tier, cur.id, cur.quality_tier
        ),
        _ => format!(
            "{} is within the quality floor but unmeasured on {what}: shadow-evaluate before routing",
            alt.id
        ),
    }
}

/// The saving of routing one share to `alt`, per month.
fn share_savings(u: &ModelUse, alt: &ModelPrice, s: &SizeShare) -> f64 {
    let (i, o) = (s.input_tokens as f64, s.output_tokens as f64);
    (u.current.cost(i, o) - alt.cost(i, o)) * u.factor
}

/// Size-based routing: the requests of the current model with at most the
/// median input length go to the cheapest API model of at least
/// [`route_floor`]; savings = (their cost now − their cost on it) × factor.
pub fn model_routing(
    u: &ModelUse,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Recommendation, String> {
    let cur = u.current;
    let mine: Vec<&SizeShare> = u.shares.iter().filter(|s| s.model == cur.id).collect();
    let Some(share) = mine
        .iter()
        .find(|s| s.percentile == ROUTING_PERCENTILE)
        .copied()
    else {
        return Err("no per-request input sizes to route by".into());
    };
    let floor = route_floor(cur, limits);
    let (i, o) = (share.input_tokens as f64, share.output_tokens as f64);
    let alt = api_models(
        u.current,
        catalog,
        share.threshold as f64,
        floor..=cur.quality_tier,
    )
    .filter(|a| a.cost(i, o) < cur.cost(i, o))
    .min_by(|a, b| a.cost(i, o).total_cmp(&b.cost(i, o)))
    .ok_or_else(|| {
        format!("no cheaper API model of quality tier >= {floor} for the small requests")
    })?;
    let out_per_req = o / (share.requests.max(1) as f64);
    let delta = service_ms(alt, out_per_req) - service_ms(cur, out_per_req);
    let p95 = slo_check(limits, u.p95_ms, delta, alt.typical_latency_ms)
        .map_err(|r| format!("{}: {r}", alt.id))?;
    let savings = share_savings(u, alt, share);
    let pct = share.requests as f64 / (u.requests.max(1) as f64) * 100.0;
    let options: Vec<_> = mine
        .iter()
        .map(|s| json!({"percentile": s.percentile, "max_input_tokens": s.threshold, "requests": s.requests, "share_of_requests": s.requests as f64 / (u.requests.max(1) as f64), "monthly_savings_usd": round2(share_savings(u, alt, s))}))
        .collect();
    let reason = risk_reason(cur, alt, limits, "these requests");
    Ok(Recommendation {
        kind: "model_routing".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!(
            "Route the {:.1}% of {} requests of {} with at most {} input tokens to {}",
            pct, cur.id, u.workload_id, share.threshold, alt.id
        ),
        detail: detail(json!({"from_model": cur.id, "to_model": alt.id, "max_input_tokens": share.threshold, "share": round2(pct / 100.0), "routed_requests": share.requests, "expected_p95_ms": p95.map(round2), "shadow_evaluation": true, "risk_reason": reason})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: round2(delta),
        risk: "medium".to_string(),
        confidence: u.confidence.to_string(),
        figures: json!({"routed_input_tokens": i, "routed_output_tokens": o, "routed_requests": share.requests, "requests": u.requests, "window_cost_usd": cur.cost(i, o), "window_cost_after_usd": alt.cost(i, o), "factor": u.factor, "thresholds": options}),
        basis: format!(
            "{} of {} requests on {} have at most {} input tokens (the median input length); their {:.0} input + {:.0} output tokens cost {:.4} USD on {} vs {:.4} USD on {} ({}/{} USD per Mtok, {} {}); difference x{:.4} = {:.2} USD/month; the rest stays on {}; latency of the routed requests {:+.1} ms from catalog latency and speed. Risk medium: {reason}",
            share.requests, u.requests, cur.id, share.threshold, i, o, cur.cost(i, o), cur.id, alt.cost(i, o), alt.id,
            alt.input_per_mtok, alt.output_per_mtok, alt.source, alt.as_of, u.factor, savings, cur.id, delta
        ),
    })
}

/// A model change's common figures: from, to, the cost difference per
/// month (positive: cheaper) and the latency change at the mean output.
fn change(u: &ModelUse, alt: &ModelPrice) -> (f64, f64) {
    let cur = u.current;
    let savings = (cur.cost(u.input_tokens, u.output_tokens)
        - alt.cost(u.input_tokens, u.output_tokens))
        * u.factor;
    let delta = service_ms(alt, u.avg_output_tokens) - service_ms(cur, u.avg_output_tokens);
    (savings, delta)
}

/// The catalog figures of a model, in words.
fn speed(m: &ModelPrice) -> String {
    format!(
        "{}: {} ms to first token, {} tokens/s, {}/{} USD per Mtok ({} {})",
        m.id,
        m.typical_latency_ms,
        m.output_tokens_per_s,
        m.input_per_mtok,
        m.output_per_mtok,
        m.source,
        m.as_of
    )
}

/// A faster model of at least the current tier (or the stated floor): the
/// one with the shortest catalog time for the mean output; its cost change
/// is stated (negative savings: it costs more).
pub fn faster_model(
    u: &ModelUse,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Recommendation, String> {
    let cur = u.current;
    let floor = limits.quality_floor.unwrap_or(cur.quality_tier);
    let now = service_ms(cur, u.avg_output_tokens);
    let alt = api_models(u.current, catalog, u.max_input_tokens, floor..=u8::MAX)
        .filter(|a| service_ms(a, u.avg_output_tokens) < now)
        .min_by(|a, b| {
            service_ms(a, u.avg_output_tokens).total_cmp(&service_ms(b, u.avg_output_tokens))
        })
        .ok_or_else(|| {
            format!(
                "no catalog model of quality tier >= {floor} is faster than {} at {:.1} mean output tokens",
                speed(cur), u.avg_output_tokens
            )
        })?;
    let (savings, delta) = change(u, alt);
    Ok(Recommendation {
        kind: "faster_model".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Serve {} of {} from the faster {}", cur.id, u.workload_id, alt.id),
        detail: detail(json!({"from_model": cur.id, "to_model": alt.id, "shadow_evaluation": true, "risk_reason": risk_reason(cur, alt, limits, "this workload")})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: round2(delta),
        risk: if alt.quality_tier < cur.quality_tier { "medium" } else { "low" }.to_string(),
        confidence: "medium".to_string(),
        figures: json!({"service_ms_before": now, "service_ms_after": service_ms(alt, u.avg_output_tokens), "avg_output_tokens": u.avg_output_tokens, "factor": u.factor}),
        basis: format!(
            "at {:.1} mean output tokens: {now:.1} ms on {} vs {:.1} ms on {} (catalog time to first token + output at catalog speed), {delta:+.1} ms; cost change {:+.2} USD/month for the same tokens",
            u.avg_output_tokens, speed(cur), service_ms(alt, u.avg_output_tokens), speed(alt), -savings
        ),
    })
}

/// A quality change to `alt`: an upgrade (`tier_gain` > 0) or a same-tier
/// comparison, with its cost (negative savings: it costs more).
fn quality_change(u: &ModelUse, alt: &ModelPrice, kind: &str) -> Recommendation {
    let cur = u.current;
    let (savings, delta) = change(u, alt);
    let gain = i64::from(alt.quality_tier) - i64::from(cur.quality_tier);
    let (title, saving) = if gain > 0 {
        (
            format!(
                "Upgrade {} of {} from {} to {} (tier {} → {})",
                u.workload_id, cur.id, cur.id, alt.id, cur.quality_tier, alt.quality_tier
            ),
            savings,
        )
    } else {
        (
            format!(
                "Compare {} (same tier {}) with {} on a labelled sample of {}",
                alt.id, alt.quality_tier, cur.id, u.workload_id
            ),
            0.0,
        )
    };
    Recommendation {
        kind: kind.to_string(),
        workload_id: u.workload_id.to_string(),
        title,
        detail: detail(json!({"from_model": cur.id, "to_model": alt.id, "tier_gain": gain, "monthly_cost_change_usd": round2(-savings), "shadow_evaluation": true})),
        monthly_savings_usd: round2(saving),
        latency_impact_ms: round2(delta),
        risk: "low".to_string(),
        confidence: u.confidence.to_string(),
        figures: json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "window_cost_usd": cur.cost(u.input_tokens, u.output_tokens), "window_cost_after_usd": alt.cost(u.input_tokens, u.output_tokens), "factor": u.factor}),
        basis: format!(
            "{:.0} input + {:.0} output tokens: {:.4} USD on {} vs {:.4} USD on {}, x{:.4} = {:+.2} USD/month if all traffic moved{}; latency {delta:+.1} ms (catalog); quality tiers are the catalog's, so measure on the workload before moving",
            u.input_tokens, u.output_tokens, cur.cost(u.input_tokens, u.output_tokens), speed(cur),
            alt.cost(u.input_tokens, u.output_tokens), speed(alt), u.factor, -savings,
            if gain > 0 { "" } else { " (the comparison itself costs only the sample)" }
        ),
    }
}

/// The cheapest API model of the tiers `tiers` as a quality change of
/// `kind`, or `none` when the catalog has none.
fn cheapest_of(
    u: &ModelUse,
    catalog: &Catalog,
    tiers: std::ops::RangeInclusive<u8>,
    kind: &str,
    none: String,
) -> Result<Recommendation, String> {
    let cost = |m: &&ModelPrice| m.cost(u.input_tokens, u.output_tokens);
    api_models(u.current, catalog, u.max_input_tokens, tiers)
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .map(|alt| quality_change(u, alt, kind))
        .ok_or(none)
}

/// Quality upgrade: the cheapest API model of a higher tier, with its cost.
pub fn model_upgrade(u: &ModelUse, catalog: &Catalog) -> Result<Recommendation, String> {
    let t = u.current.quality_tier;
    let none = format!("{} is at the top catalog quality tier ({t})", u.current.id);
    cheapest_of(
        u,
        catalog,
        t.saturating_add(1)..=u8::MAX,
        "model_upgrade",
        none,
    )
}

/// Same-tier comparison: the cheapest other API model of the current tier,
/// evaluated on a sample (nothing moves until it is measured).
pub fn quality_comparison(u: &ModelUse, catalog: &Catalog) -> Result<Recommendation, String> {
    let t = u.current.quality_tier;
    let none = format!("no other API model of tier {t} in the catalog");
    cheapest_of(u, catalog, t..=t, "quality_comparison", none)
}
