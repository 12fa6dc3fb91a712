//! The supply-configuration validation tool: checks a proposed supply
//! configuration (compute, storage, network, services) against the catalog
//! and the request's constraints. Hard checks (catalog, quality floor,
//! context window, latency SLO, budget, GPU capacity) decide `valid`; the
//! savings target is reported as a goal, not a hard limit. A check whose
//! expected figure is unknown (a latency SLO without latency telemetry) is
//! `unknown`: it neither passes nor fails.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{db_err, Tool, ToolContext};
use crate::{catalog::Catalog, error::PhaseError};

/// The tools of this module.
pub fn tools() -> Vec<Tool> {
    let obj = json!({"type": "object"});
    let num = json!({"type": ["number", "null"], "minimum": 0});
    vec![Tool {
        name: "validate_supply_config",
        description: "Validates a supply configuration against the catalog and the constraints (latency SLO, budget, quality floor, context window, GPU capacity)",
        parameters: json!({
            "type": "object", "additionalProperties": false, "required": ["config", "constraints", "expected"],
            "properties": {
                "config": {
                    "type": "object", "required": ["compute", "storage", "network", "services"],
                    "properties": {
                        "compute": {"type": "object", "required": ["models"], "properties": {
                            "models": {"type": "array", "items": {"type": "string"}},
                            "self_hosted": {"type": "array", "items": {"type": "object", "required": ["offer", "gpus", "model", "required_tokens_per_s"], "properties": {
                                "offer": {"type": "string"}, "model": {"type": "string"},
                                "gpus": {"type": "integer", "minimum": 1},
                                "required_tokens_per_s": {"type": "number", "minimum": 0},
                            }}},
                        }},
                        "storage": obj, "network": obj, "services": obj,
                    }
                },
                "constraints": {"type": "object", "properties": {
                    "latency_slo_ms": num, "monthly_budget_usd": num,
                    "quality_floor": {"type": ["integer", "null"], "minimum": 1, "maximum": 3},
                    "target_reduction_pct": num,
                }},
                "expected": {"type": "object", "properties": {
                    "p95_ms": num, "monthly_cost_usd": num, "savings_pct": num, "max_input_tokens": num,
                }},
            }
        }),
        handler: validate_tool,
    }]
}

fn validate_tool(ctx: &ToolContext, p: Value) -> BoxFuture<'_, Result<Value, PhaseError>> {
    Box::pin(async move {
        let c = Catalog::from_db(&ctx.pool, ctx.data_version)
            .await
            .map_err(|e| db_err("validate_supply_config", e))?;
        Ok(validate(
            &c,
            &p["config"],
            &p["constraints"],
            &p["expected"],
        ))
    })
}

fn check(
    name: &str,
    subject: &str,
    limit: Value,
    expected: Value,
    ok: bool,
    severity: &str,
) -> Value {
    json!({"check": name, "subject": subject, "limit": limit, "expected": expected, "ok": ok, "severity": severity})
}

/// Validates a configuration (pure, for tests): `valid` is true when no
/// `hard` check fails; a check whose expected figure is unknown (no latency
/// telemetry) has `ok: null` and is listed in `unknown`, neither met nor
/// violated.
pub fn validate(c: &Catalog, config: &Value, constraints: &Value, expected: &Value) -> Value {
    let mut checks = Vec::new();
    let floor = constraints["quality_floor"].as_u64();
    let max_input = expected["max_input_tokens"].as_f64();
    for id in config["compute"]["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        checks.extend(model_checks(c, id, floor, max_input));
    }
    for sh in config["compute"]["self_hosted"]
        .as_array()
        .into_iter()
        .flatten()
    {
        checks.push(gpu_capacity_check(c, sh));
    }
    checks.extend(constraint_checks(constraints, expected));
    let valid = all_pass(&checks, "hard");
    let meets_goals = all_pass(&checks, "goal");
    let unknown = unknowns(&checks);
    json!({"valid": valid, "meets_goals": meets_goals, "unknown": unknown, "checks": checks})
}

/// The checks of one hosted model: listed in the catalog, then its quality
/// tier against the floor and its context window against the longest input
/// (each when given).
fn model_checks(c: &Catalog, id: &str, floor: Option<u64>, max_input: Option<f64>) -> Vec<Value> {
    let Some(m) = c.model(id) else {
        return vec![check(
            "catalog",
            id,
            json!("listed in the catalog"),
            json!("missing"),
            false,
            "hard",
        )];
    };
    let mut checks = Vec::new();
    if let Some(f) = floor {
        checks.push(check(
            "quality_floor",
            id,
            json!(f),
            json!(m.quality_tier),
            u64::from(m.quality_tier) >= f,
            "hard",
        ));
    }
    if let Some(mi) = max_input {
        checks.push(check(
            "context_window",
            id,
            json!(m.context_window),
            json!(mi),
            mi <= f64::from(m.context_window),
            "hard",
        ));
    }
    checks
}

/// Whether a self-hosted deployment's GPUs serve the tokens per second it
/// needs, at the catalog's rate for the model's size class.
fn gpu_capacity_check(c: &Catalog, sh: &Value) -> Value {
    let offer = sh["offer"].as_str().unwrap_or("");
    let model = sh["model"].as_str().unwrap_or("");
    let need = sh["required_tokens_per_s"].as_f64().unwrap_or(0.0);
    let gpus = sh["gpus"].as_f64().unwrap_or(0.0);
    let per_gpu = c
        .gpus
        .iter()
        .find(|g| g.id == offer)
        .zip(c.model(model).and_then(|m| m.size_class.clone()))
        .and_then(|(g, class)| g.tokens_per_s.get(&class).copied());
    let capacity = per_gpu.map(|t| t * gpus);
    check(
        "gpu_capacity",
        &format!("{offer} serving {model}"),
        json!(need),
        json!(capacity),
        capacity.is_some_and(|cap| cap >= need),
        "hard",
    )
}

/// A constraint of the request, checked against an expected figure.
struct Limit {
    /// The constraint (and the name of its check).
    name: &'static str,
    /// The expected figure it limits.
    figure: &'static str,
    /// What the check is about.
    subject: &'static str,
    /// The figure must reach the limit (else stay within it).
    at_least: bool,
    /// `hard` or `goal`.
    severity: &'static str,
}

/// The latency SLO and the budget (hard limits), the savings target (a goal).
const LIMITS: [Limit; 3] = [
    Limit {
        name: "latency_slo_ms",
        figure: "p95_ms",
        subject: "p95 latency",
        at_least: false,
        severity: "hard",
    },
    Limit {
        name: "monthly_budget_usd",
        figure: "monthly_cost_usd",
        subject: "monthly cost",
        at_least: false,
        severity: "hard",
    },
    Limit {
        name: "target_reduction_pct",
        figure: "savings_pct",
        subject: "savings",
        at_least: true,
        severity: "goal",
    },
];

/// The checks of the [`LIMITS`] the request's constraints give, each
/// against its expected figure.
fn constraint_checks(constraints: &Value, expected: &Value) -> Vec<Value> {
    let mut checks = Vec::new();
    for l in &LIMITS {
        if let Some(limit) = constraints[l.name].as_f64() {
            let value = expected[l.figure].as_f64();
            let Some(x) = value else {
                checks.push(unknown(l.name, l.subject, limit, l.severity));
                continue;
            };
            let ok = if l.at_least { x >= limit } else { x <= limit };
            checks.push(check(
                l.name,
                l.subject,
                json!(limit),
                json!(x),
                ok,
                l.severity,
            ));
        }
    }
    checks
}

/// A constraint whose expected figure is not known (no latency
/// telemetry): `ok` is null, neither met nor violated.
fn unknown(name: &str, subject: &str, limit: f64, severity: &str) -> Value {
    json!({"check": name, "subject": subject, "limit": limit, "expected": null, "ok": null, "status": "unknown", "severity": severity})
}

/// True when no check of this severity fails (an unknown one does not).
fn all_pass(checks: &[Value], severity: &str) -> bool {
    checks
        .iter()
        .filter(|c| c["severity"] == severity)
        .all(|c| c["ok"] != false)
}

/// The names of the checks that could not be decided.
fn unknowns(checks: &[Value]) -> Vec<Value> {
    checks
        .iter()
        .filter(|c| c["ok"].is_null())
        .map(|c| c["check"].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(models: Value, self_hosted: Value) -> Value {
        json!({"compute": {"models": models, "self_hosted": self_hosted}, "storage": {}, "network": {}, "services": {}})
    }

    #[test]
    fn hard_checks_decide_validity() {
        let c = Catalog::embedded();
        let ok = validate(
            c,
            &cfg(json!(["gpt-4o-mini"]), json!([])),
            &json!({"latency_slo_ms": 2000.0, "monthly_budget_usd": 100.0, "quality_floor": 2, "target_reduction_pct": 90.0}),
            &json!({"p95_ms": 1500.0, "monthly_cost_usd": 80.0, "savings_pct": 40.0, "max_input_tokens": 5000}),
        );
        assert_eq!(ok["valid"], true, "{ok}");
        assert_eq!(ok["meets_goals"], false);
        // Quality floor 3 rejects a tier-2 model; an unknown model fails; SLO breached.
        let bad = validate(
            c,
            &cfg(json!(["gpt-4o-mini", "nope"]), json!([])),
            &json!({"latency_slo_ms": 1000.0, "quality_floor": 3}),
            &json!({"p95_ms": 1500.0}),
        );
        assert_eq!(bad["valid"], false);
        let failed: Vec<&str> = bad["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        assert_eq!(failed, vec!["quality_floor", "catalog", "latency_slo_ms"]);
    }

    #[test]
    fn an_slo_without_latency_data_is_unknown_not_violated() {
        let v = validate(
            Catalog::embedded(),
            &cfg(json!(["gpt-4o-mini"]), json!([])),
            &json!({"latency_slo_ms": 2000.0}),
            &json!({"p95_ms": null}),
        );
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["unknown"], json!(["latency_slo_ms"]));
        assert_eq!(v["checks"][0]["status"], "unknown");
        assert!(v["checks"][0]["ok"].is_null());
    }

    #[test]
    fn gpu_capacity_uses_the_size_class() {
        let c = Catalog::embedded();
        // 2 x H100 at 1800 tokens/s for 70b = 3600 >= 3000.
        let v = validate(
            c,
            &cfg(
                json!([]),
                json!([{"offer": "h100-80gb-ondemand", "gpus": 2, "model": "llama-3.1-70b", "required_tokens_per_s": 3000.0}]),
            ),
            &json!({}),
            &json!({}),
        );
        assert_eq!(v["valid"], true, "{v}");
        let v = validate(
            c,
            &cfg(
                json!([]),
                json!([{"offer": "h100-80gb-ondemand", "gpus": 1, "model": "llama-3.1-70b", "required_tokens_per_s": 3000.0}]),
            ),
            &json!({}),
            &json!({}),
        );
        assert_eq!(v["valid"], false);
    }
}
