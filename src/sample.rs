//! Seeded sample telemetry, shaped like the public Azure LLM inference trace
//! (bursty arrivals, long-tailed prompt and completion lengths) plus latency.
//! The demo, the benchmark and the tests generate their data with it, so
//! nothing is downloaded.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::store::telemetry::RequestRecord;

/// A workload to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Model of every request.
    pub model: String,
    /// Number of requests.
    pub requests: usize,
    /// Hours the requests span.
    pub hours: u32,
    /// Mean prompt tokens.
    pub mean_input: f64,
    /// Mean completion tokens.
    pub mean_output: f64,
    /// Base latency (time to first token), ms.
    pub base_latency_ms: f64,
    /// Generation speed, tokens/s.
    pub tokens_per_s: f64,
    /// Share of failed requests.
    pub error_rate: f64,
    /// RNG seed.
    pub seed: u64,
}

/// The fixed start of generated windows.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Exponentially distributed sample with the given mean.
fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

/// Generates the requests of a spec, in time order.
pub fn generate(spec: &Spec) -> Vec<RequestRecord> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let span_ms = i64::from(spec.hours.max(1)) * 3_600_000;
    let mut times: Vec<i64> = (0..spec.requests)
        .map(|_| {
            // Two thirds uniform, one third in bursts around the daily peak.
            if rng.gen_bool(0.33) {
                let peak = span_ms / 2;
                (peak + (exp(&mut rng, 600_000.0) as i64) * if rng.gen_bool(0.5) { 1 } else { -1 })
                    .clamp(0, span_ms - 1)
            } else {
                rng.gen_range(0..span_ms)
            }
        })
        .collect();
    times.sort_unstable();
    times
        .into_iter()
        .map(|t| {
            let input = (exp(&mut rng, spec.mean_input).round() as i32).max(1);
            let output = (exp(&mut rng, spec.mean_output).round() as i32).max(1);
            let ttft = spec.base_latency_ms * rng.gen_range(0.7..1.6);
            let latency = ttft + f64::from(output) / spec.tokens_per_s * 1000.0;
            let failed = rng.gen_bool(spec.error_rate.clamp(0.0, 1.0));
            RequestRecord {
                ts: epoch() + Duration::milliseconds(t),
                model: spec.model.clone(),
                input_tokens: input,
                output_tokens: output,
                latency_ms: Some((latency * 10.0).round() / 10.0),
                ttft_ms: Some((ttft * 10.0).round() / 10.0),
                status: if failed { "error".into() } else { "ok".into() },
                cost_usd: None,
            }
        })
        .collect()
}

/// A chat workload on a frontier model.
pub fn chat(model: &str, requests: usize, seed: u64) -> Spec {
    Spec {
        model: model.to_string(),
        requests,
        hours: 24,
        mean_input: 1200.0,
        mean_output: 220.0,
        base_latency_ms: 350.0,
        tokens_per_s: 400.0,
        error_rate: 0.01,
        seed,
    }
}

/// Inserts a generated workload for a tenant (in batches).
pub async fn load(
    pool: &sqlx::PgPool,
    tenant: &str,
    workload: &str,
    spec: &Spec,
) -> Result<usize, sqlx::Error> {
    crate::store::telemetry::ensure_workload(pool, tenant, workload).await?;
    let rows = generate(spec);
    let mut conn = pool.acquire().await?;
    for chunk in rows.chunks(crate::ingest::BATCH) {
        crate::store::telemetry::insert_batch(&mut conn, tenant, workload, chunk).await?;
    }
    crate::store::telemetry::analyze(pool).await?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_seeded_and_ordered() {
        let a = generate(&chat("gpt-4o", 500, 7));
        let b = generate(&chat("gpt-4o", 500, 7));
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].ts <= w[1].ts));
        assert!(a
            .iter()
            .all(|r| r.ts >= epoch() && r.ts < epoch() + Duration::hours(24)));
    }
}
