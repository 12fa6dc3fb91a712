//! Self-hosting that fits: an open-weight model's weights at
//! [`WEIGHT_BYTES`] per parameter plus the KV cache of the requests in
//! flight at the peak minute must fit the usable memory of the GPUs of one
//! replica (a power of two, for tensor parallelism); replicas cover the
//! peak minute's tokens/s. The cost is shown always-on and per million
//! tokens at 25, 50 and 100% busy, next to the current API and managed
//! inference of the same weights (the open-weight model's catalog token
//! price).

use serde_json::{json, Value};

use super::options::{detail, service_ms, slo_check, Limits, ModelUse, HOURS_PER_MONTH};
use crate::agents::{
    catalog::{Architecture, Catalog, GpuOffer, ModelPrice},
    outputs::Recommendation,
    round2,
};

/// Bytes per weight and per KV value: 16-bit (bf16/fp16) serving.
pub const WEIGHT_BYTES: f64 = 2.0;

/// Share of a GPU's memory the serving engine may use (vLLM's default
/// `gpu_memory_utilization`); the rest is activations and runtime.
pub const USABLE_MEMORY: f64 = 0.9;

/// The most GPUs one replica may span (one 8-GPU node).
pub const MAX_GPUS_PER_REPLICA: u32 = 8;

/// The busy levels the cost per million tokens is shown at.
pub const BUSY_LEVELS: [f64; 3] = [0.25, 0.5, 1.0];

/// How one open-weight model fits one GPU offer at the peak.
#[derive(Debug, Clone)]
pub struct Sizing<'a> {
    /// The model.
    pub model: &'a ModelPrice,
    /// The GPU offer.
    pub offer: &'a GpuOffer,
    /// Weights, GB.
    pub weights_gb: f64,
    /// KV cache of the requests in flight at the peak, GB.
    pub kv_gb: f64,
    /// Requests in flight at the peak minute (Little's law).
    pub in_flight: f64,
    /// GPUs per replica (memory).
    pub per_replica: u32,
    /// Replicas (throughput).
    pub replicas: u32,
    /// GPUs in all.
    pub gpus: u32,
    /// Tokens/s the peak minute needs.
    pub need_tps: f64,
    /// Tokens/s the GPUs serve.
    pub capacity_tps: f64,
    /// Always-on cost, USD per month.
    pub monthly_usd: f64,
}

/// GPUs of one replica: the memory of weights + KV cache over the usable
/// memory per GPU, rounded up to a power of two; never fewer than the
/// weights alone need.
pub fn gpus_for_memory(weights_gb: f64, kv_gb: f64, gpu_memory_gb: u32) -> Option<u32> {
    let usable = f64::from(gpu_memory_gb) * USABLE_MEMORY;
    if usable <= 0.0 {
        return None;
    }
    let need = ((weights_gb + kv_gb) / usable).ceil().max(1.0);
    let n = u32::try_from(need as u64)
        .ok()?
        .checked_next_power_of_two()?;
    (n <= MAX_GPUS_PER_REPLICA).then_some(n)
}

/// Sizes `model` on `offer` for the peak of `u`.
pub fn size<'a>(
    u: &ModelUse,
    model: &'a ModelPrice,
    arch: &Architecture,
    offer: &'a GpuOffer,
) -> Result<Sizing<'a>, String> {
    let class = model.size_class.as_deref().unwrap_or("");
    let tps = offer
        .tokens_per_s
        .get(class)
        .copied()
        .filter(|t| *t > 0.0)
        .ok_or_else(|| format!("{} has no tokens/s figure for {class}", offer.id))?;
    let p = &u.peak;
    let service_s = service_ms(model, u.avg_output_tokens) / 1000.0;
    let in_flight = (p.requests_per_minute / 60.0 * service_s).ceil().max(1.0);
    let kv_tokens = (in_flight * p.context_p95).max(p.context_max);
    let weights_gb = arch.weights_gb(WEIGHT_BYTES);
    let kv_gb = kv_tokens * arch.kv_bytes_per_token(WEIGHT_BYTES) / 1e9;
    let per_replica = gpus_for_memory(weights_gb, kv_gb, offer.memory_gb).ok_or_else(|| {
        format!(
            "{}: {weights_gb:.1} GB weights + {kv_gb:.1} GB KV cache do not fit {MAX_GPUS_PER_REPLICA} x {} GB",
            offer.id, offer.memory_gb
        )
    })?;
    let need_tps = p.tokens_per_s();
    let replicas = (need_tps / (tps * f64::from(per_replica))).ceil().max(1.0) as u32;
    let gpus = per_replica * replicas;
    Ok(Sizing {
        model,
        offer,
        weights_gb,
        kv_gb,
        in_flight,
        per_replica,
        replicas,
        gpus,
        need_tps,
        capacity_tps: tps * f64::from(gpus),
        monthly_usd: f64::from(gpus) * offer.hourly_usd * HOURS_PER_MONTH,
    })
}

/// The cheapest fitting (model, offer) of tier >= `min_tier`, or why none.
pub fn cheapest<'a>(
    u: &ModelUse,
    catalog: &'a Catalog,
    min_tier: u8,
) -> Result<Sizing<'a>, String> {
    let mut best: Option<Sizing<'a>> = None;
    let mut reasons = Vec::new();
    for m in catalog.models.iter().filter(|m| {
        m.provider == "self-hosted"
            && m.quality_tier >= min_tier
            && f64::from(m.context_window) >= u.max_input_tokens
    }) {
        let Some(arch) = &m.architecture else {
            reasons.push(format!("{}: no architecture in the catalog", m.id));
            continue;
        };
        for g in &catalog.gpus {
            match size(u, m, arch, g) {
                Ok(s) if best.as_ref().is_none_or(|b| s.monthly_usd < b.monthly_usd) => {
                    best = Some(s)
                }
                Ok(_) => {}
                Err(r) => reasons.push(format!("{}: {r}", m.id)),
            }
        }
    }
    best.ok_or_else(|| {
        if reasons.is_empty() {
            format!("no self-hostable model of quality tier >= {min_tier} with a GPU offer")
        } else {
            reasons.join("; ")
        }
    })
}

/// The cost per million tokens at each busy level, and the workload's own
/// utilization of the GPUs.
fn busy_table(s: &Sizing, monthly_tokens: f64) -> (Value, f64) {
    let full = s.capacity_tps * 3600.0 * HOURS_PER_MONTH;
    let rows: Vec<Value> = BUSY_LEVELS
        .iter()
        .map(|b| json!({"busy": b, "usd_per_mtok": round2(s.monthly_usd / (full * b) * 1e6)}))
        .collect();
    (
        json!(rows),
        if full > 0.0 {
            monthly_tokens / full
        } else {
            0.0
        },
    )
}

/// The comparison of a sizing with the API and managed inference, as
/// figures and words.
fn comparison(u: &ModelUse, s: &Sizing) -> (Value, String) {
    let api = u.current.cost(u.input_tokens, u.output_tokens) * u.factor;
    let managed = s.model.cost(u.input_tokens, u.output_tokens) * u.factor;
    let monthly_tokens = (u.input_tokens + u.output_tokens) * u.factor;
    let (busy, used) = busy_table(s, monthly_tokens);
    let busy_words: Vec<String> = BUSY_LEVELS
        .iter()
        .zip(busy.as_array().into_iter().flatten())
        .map(|(b, r)| format!("{:.0}% busy {} USD/Mtok", b * 100.0, r["usd_per_mtok"]))
        .collect();
    let figures = json!({
        "model": s.model.id, "offer": s.offer.id, "gpus": s.gpus, "gpus_per_replica": s.per_replica, "replicas": s.replicas,
        "weights_gb": s.weights_gb, "kv_cache_gb": s.kv_gb, "requests_in_flight": s.in_flight,
        "gpu_memory_gb": s.offer.memory_gb, "usable_memory_share": USABLE_MEMORY, "bytes_per_weight": WEIGHT_BYTES,
        "required_tokens_per_s": s.need_tps, "capacity_tokens_per_s": s.capacity_tps, "peak_requests_per_minute": u.peak.requests_per_minute,
        "gpu_monthly_usd": s.monthly_usd, "api_monthly_usd": api, "managed_monthly_usd": managed,
        "monthly_tokens": monthly_tokens, "utilization": used, "cost_at_busy": busy,
    });
    let a = s.model.architecture.as_ref();
    let basis = format!(
        "{} at {WEIGHT_BYTES} bytes/parameter = {:.1} GB weights ({}); {:.0} requests in flight at the peak ({:.2} requests/min, {}) x {:.0} tokens of context (p95 input + output; at least the longest, {:.0}) = {:.1} GB KV cache; ({:.1} + {:.1}) GB / ({} GB x {USABLE_MEMORY}) -> {} GPUs per replica (power of two); {:.1} tokens/s at the peak / {} tokens/s per GPU -> {} replica(s): {} x {} ({} USD/h, {} {}) = {:.2} USD/month always on, using {:.1}% of it; per Mtok {}; vs {:.2} USD/month on the {} API and {:.2} USD/month for managed inference of {} ({}/{} USD per Mtok, {})",
        s.model.id, s.weights_gb, a.map_or("", |a| a.source.as_str()), s.in_flight, u.peak.requests_per_minute, u.peak.source(),
        u.peak.context_p95, u.peak.context_max, s.kv_gb, s.weights_gb, s.kv_gb, s.offer.memory_gb, s.per_replica,
        s.need_tps, s.capacity_tps / f64::from(s.gpus.max(1)), s.replicas, s.gpus, s.offer.gpu, s.offer.hourly_usd,
        s.offer.source, s.offer.as_of, s.monthly_usd, used * 100.0, busy_words.join(", "), api, u.current.id,
        managed, s.model.id, s.model.input_per_mtok, s.model.output_per_mtok, s.model.source
    );
    (figures, basis)
}

/// The lowest tier self-hosting may go to: the stated floor, else one tier
/// below the current model (a change then paired with a shadow evaluation).
fn min_tier(u: &ModelUse, limits: &Limits) -> u8 {
    limits
        .quality_floor
        .unwrap_or(u.current.quality_tier.saturating_sub(1).max(1))
}

/// Self-hosting for cost: the cheapest fitting sizing, worth it when its
/// always-on cost is below the API's; savings = API − GPUs per month.
pub fn self_hosting(
    u: &ModelUse,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Recommendation, String> {
    if u.current.provider == "self-hosted" {
        return Err("already self-hostable".into());
    }
    let s = cheapest(u, catalog, min_tier(u, limits))?;
    let (figures, basis) = comparison(u, &s);
    let api = figures["api_monthly_usd"].as_f64().unwrap_or(0.0);
    let savings = api - s.monthly_usd;
    if savings <= 0.0 {
        return Err(format!("not worth it at this volume: {basis}"));
    }
    let delta =
        service_ms(s.model, u.avg_output_tokens) - service_ms(u.current, u.avg_output_tokens);
    let p95 = slo_check(limits, u.p95_ms, delta, s.model.typical_latency_ms)
        .map_err(|r| format!("{}: {r}", s.model.id))?;
    Ok(recommendation(
        u,
        &s,
        "self_hosting",
        savings,
        delta,
        p95,
        figures,
        basis,
    ))
}

/// Self-hosted capacity for throughput: the GPUs that serve the peak
/// minute. It claims no saving: its cost against the API is in
/// `monthly_cost_change_usd` and the basis.
pub fn self_hosted_capacity(
    u: &ModelUse,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Recommendation, String> {
    let s = cheapest(u, catalog, min_tier(u, limits))?;
    let (figures, basis) = comparison(u, &s);
    let api = figures["api_monthly_usd"].as_f64().unwrap_or(0.0);
    let delta =
        service_ms(s.model, u.avg_output_tokens) - service_ms(u.current, u.avg_output_tokens);
    let mut r = recommendation(
        u,
        &s,
        "self_hosted_capacity",
        0.0,
        delta,
        None,
        figures,
        basis,
    );
    r.detail.insert(
        "monthly_cost_change_usd".into(),
        json!(round2(s.monthly_usd - api)),
    );
    Ok(r)
}

/// The recommendation of a sizing.
#[allow(clippy::too_many_arguments)]
fn recommendation(
    u: &ModelUse,
    s: &Sizing,
    kind: &str,
    savings: f64,
    delta: f64,
    p95: Option<f64>,
    figures: Value,
    basis: String,
) -> Recommendation {
    let cur = u.current;
    let reason = format!(
        "{} is tier {} ({} is tier {}), nothing measures its answers on this workload, and the GPUs are run by you: shadow-evaluate before moving traffic",
        s.model.id, s.model.quality_tier, cur.id, cur.quality_tier
    );
    Recommendation {
        kind: kind.to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!(
            "Self-host {} on {} x {} ({} per replica) for {} traffic of {}",
            s.model.id, s.gpus, s.offer.gpu, s.per_replica, cur.id, u.workload_id
        ),
        detail: detail(
            json!({"from_model": cur.id, "to_model": s.model.id, "gpu_offer": s.offer.id, "gpus": s.gpus, "weights_gb": round2(s.weights_gb), "expected_p95_ms": p95.map(round2), "shadow_evaluation": true, "risk_reason": reason}),
        ),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: round2(delta),
        risk: "high".to_string(),
        confidence: if u.peak.per_minute {
            u.confidence
        } else {
            "low"
        }
        .to_string(),
        figures,
        basis: format!("{basis}. Risk high: {reason}"),
    }
}
