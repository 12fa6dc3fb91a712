//! Options that change what a request carries or how its answer arrives:
//! prompt trimming (fewer input tokens: lower cost and time to first token)
//! and streaming (the answer shows from its first token).

use serde_json::json;

use super::options::{detail, service_ms, Limits, ModelUse, INPUT_HEAVY_SHARE};
use crate::agents::{catalog::ModelPrice, outputs::Recommendation, round2};

/// Input tokens' share of the model's cost on `serving`.
pub fn input_cost_share(u: &ModelUse, serving: &ModelPrice) -> f64 {
    let total = serving.cost(u.input_tokens, u.output_tokens);
    if total > 0.0 {
        serving.cost(u.input_tokens, 0.0) / total
    } else {
        0.0
    }
}

/// Prompt trimming of an input-heavy model use: savings = input tokens ×
/// trimmed share × input price × factor. It lowers time to first token
/// (less prefill), which the catalog does not quantify (impact stated 0).
pub fn prompt_trimming(
    u: &ModelUse,
    serving: &ModelPrice,
    limits: &Limits,
) -> Result<Recommendation, String> {
    let share = input_cost_share(u, serving);
    if share < INPUT_HEAVY_SHARE {
        return Err(format!(
            "input tokens are {:.1}% of the cost on {}; trimming is considered from {:.0}%",
            share * 100.0,
            serving.id,
            INPUT_HEAVY_SHARE * 100.0
        ));
    }
    let trimmed = u.input_tokens * limits.trim_share;
    let window = serving.cost(trimmed, 0.0);
    let savings = window * u.factor;
    Ok(Recommendation {
        kind: "prompt_trimming".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!(
            "Trim the prompts of {} on {} by {}% of their input tokens",
            u.workload_id,
            serving.id,
            round2(limits.trim_share * 100.0)
        ),
        detail: detail(json!({"model": serving.id, "trim_share": limits.trim_share, "input_cost_share": share, "shadow_evaluation": true,
            "risk_reason": "removed context can change answers: compare trimmed and full prompts on a sample first"})),
        monthly_savings_usd: round2(savings),
        latency_impact_ms: 0.0,
        risk: "medium".to_string(),
        confidence: "low".to_string(),
        figures: json!({"input_tokens": u.input_tokens, "trim_share": limits.trim_share, "input_per_mtok": serving.input_per_mtok, "input_cost_share": share, "factor": u.factor}),
        basis: format!(
            "input tokens are {:.1}% of the cost on {}; {:.0} input tokens x {} trimmed x {} USD per Mtok = {:.4} USD in the window, x{:.4} = {:.2} USD/month; time to first token falls with the prefill of fewer tokens (not quantified: the catalog has no prefill speed)",
            share * 100.0, serving.id, u.input_tokens, limits.trim_share, serving.input_per_mtok, window, u.factor, savings
        ),
    })
}

/// Streaming: the user sees the answer from its first token, so the wait
/// perceived falls by the generation time of the mean output at the
/// serving model's catalog speed. The telemetry does not say whether the
/// workload streams already (then this changes nothing).
pub fn streaming(u: &ModelUse, serving: &ModelPrice) -> Result<Recommendation, String> {
    if u.avg_output_tokens <= 0.0 {
        return Err("no output tokens to stream".into());
    }
    let whole = service_ms(serving, u.avg_output_tokens);
    let saved = whole - serving.typical_latency_ms;
    Ok(Recommendation {
        kind: "streaming".to_string(),
        workload_id: u.workload_id.to_string(),
        title: format!("Stream the answers of {} from {}", u.workload_id, serving.id),
        detail: detail(json!({"model": serving.id})),
        monthly_savings_usd: 0.0,
        latency_impact_ms: round2(-saved),
        risk: "low".to_string(),
        confidence: "low".to_string(),
        figures: json!({"avg_output_tokens": u.avg_output_tokens, "output_tokens_per_s": serving.output_tokens_per_s, "typical_latency_ms": serving.typical_latency_ms}),
        basis: format!(
            "the first token shows after {} ms instead of the whole answer after {whole:.1} ms ({:.1} mean output tokens at {} tokens/s, catalog): {saved:.1} ms less perceived wait; total time is unchanged, and if {} already streams nothing changes (the telemetry does not say)",
            serving.typical_latency_ms, u.avg_output_tokens, serving.output_tokens_per_s, u.workload_id
        ),
    })
}
