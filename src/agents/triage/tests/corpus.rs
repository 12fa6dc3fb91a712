//! The phrasing corpus: every line of `tests/data/triage_corpus.jsonl` is a
//! request and the triage a person would give it. The hit rate is printed;
//! below 95% the test fails.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::agents::outputs::TriageOutput;

const CORPUS: &str = include_str!("../../../../tests/data/triage_corpus.jsonl");

/// The tenant's workloads the corpus is read against.
const KNOWN: &[&str] = &[
    "batch-etl",
    "chat-prod",
    "code-assist",
    "doc-summarizer",
    "netra-llm",
    "search-rerank",
    "support-bot",
];

/// One line of the corpus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    text: String,
    kind: String,
    category: String,
    #[serde(default)]
    workloads: Vec<String>,
    #[serde(default)]
    priorities: Vec<String>,
    #[serde(default)]
    constraints: serde_json::Map<String, Value>,
    #[serde(default)]
    window_hours: Option<f64>,
    #[serde(default)]
    needs_input: bool,
}

/// What differs between the triage and the case (empty: a hit).
fn differences(case: &Case, t: &TriageOutput) -> Vec<String> {
    let mut d = Vec::new();
    let mut check = |field: &str, got: Value, want: Value| {
        if got != want {
            d.push(format!("{field}: got {got}, want {want}"));
        }
    };
    check("category", json!(t.category.as_str()), json!(case.category));
    check("workloads", json!(t.workload_ids), json!(case.workloads));
    check(
        "priorities",
        json!(t.priorities.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
        json!(case.priorities),
    );
    let c = &t.constraints;
    for (field, got) in [
        ("latency_slo_ms", c.latency_slo_ms),
        ("target_reduction_pct", c.target_reduction_pct),
        ("monthly_budget_usd", c.monthly_budget_usd),
        ("quality_floor", c.quality_floor.map(f64::from)),
    ] {
        let want = case.constraints.get(field).and_then(Value::as_f64);
        check(field, json!(got), json!(want));
    }
    check(
        "window_hours",
        json!(t.window_hours),
        json!(case.window_hours),
    );
    check("needs_input", json!(t.ambiguous), json!(case.needs_input));
    d
}

#[test]
fn the_corpus_is_read_as_people_read_it() {
    let known: Vec<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    let cases: Vec<Case> = CORPUS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let mut misses = Vec::new();
    let mut by_kind: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for case in &cases {
        let t = super::read(&case.text, None, &known);
        let d = differences(case, &t);
        let e = by_kind.entry(case.kind.as_str()).or_default();
        e.1 += 1;
        if d.is_empty() {
            e.0 += 1;
        } else {
            misses.push(format!("{:?} [{}]: {}", case.text, case.kind, d.join("; ")));
        }
    }
    let hits = cases.len() - misses.len();
    let rate = hits as f64 / cases.len() as f64;
    println!(
        "triage corpus: {hits}/{} = {:.1}%",
        cases.len(),
        rate * 100.0
    );
    for (kind, (h, n)) in &by_kind {
        println!("  {kind}: {h}/{n}");
    }
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(rate >= 0.95, "hit rate {:.1}% is below 95%", rate * 100.0);
}
