//! Tests of the embedded analyst's triage: the classic requests, bad
//! input, and the phrasing corpus (`tests/data/triage_corpus.jsonl`).

use super::*;
use serde_json::json;

fn classify_json(message: &str, workload_hint: Option<&str>) -> Value {
    serde_json::to_value(classify(message, workload_hint)).unwrap()
}

#[test]
fn extracts_constraints_from_the_classic_request() {
    let t = classify_json(
        "Cut the cost of workload chat-prod by 30% without pushing p95 latency over 2 s",
        None,
    );
    assert_eq!(t["category"], "optimization");
    assert_eq!(t["workload_ids"], json!(["chat-prod"]));
    assert_eq!(t["constraints"]["latency_slo_ms"], json!(2000.0));
    assert_eq!(t["constraints"]["target_reduction_pct"], json!(30.0));
    // Latency is a limit here ("without pushing … over 2 s"), not a goal.
    assert_eq!(t["priorities"], json!(["cost"]));
    assert!(t["sources"]["guards.latency"][0]
        .as_str()
        .unwrap()
        .contains("p95"));
    assert_eq!(t["window_hours"], Value::Null);
    assert_eq!(t["time_range_days"], 30);
}

#[test]
fn ambiguous_requests_get_a_clarifying_question() {
    let t = classify_json("what about workload chat-prod", None);
    assert_eq!(t["category"], "question");
    assert_eq!(t["ambiguous"], true);
    assert!(t["clarifying_question"]
        .as_str()
        .unwrap()
        .contains("chat-prod"));
    let t = classify_json("hello there", None);
    assert_eq!(t["ambiguous"], true);
    let t = classify_json("What is prompt caching?", None);
    assert_eq!(
        (t["ambiguous"].clone(), t["topic"].clone()),
        (json!(false), json!("prompt caching"))
    );
    let t = classify_json("cut cost of workload w keeping p95 under 2000", None);
    assert_eq!(t["constraints"]["latency_slo_ms"], Value::Null);
    assert!(t["unclear"][0].as_str().unwrap().contains("2000"));
    // Deterministic: the same text gives the same triage.
    assert_eq!(
        classify_json("reduce cost of workload a", None),
        classify_json("reduce cost of workload a", None)
    );
}

#[test]
fn analysis_needs_a_workload_and_questions_fall_through() {
    let t = classify_json(
        "Show the usage breakdown of workload w-1 for the last 7 days",
        None,
    );
    assert_eq!(t["category"], "analysis");
    assert_eq!(
        (t["time_range_days"].clone(), t["window_hours"].clone()),
        (json!(7), json!(168.0))
    );
    assert_eq!(
        classify_json("What is prompt caching?", None)["category"],
        "question"
    );
    assert_eq!(
        classify_json("reduce spend", Some("w-9"))["workload_ids"],
        json!(["w-9"])
    );
    assert_eq!(
        classify_json("keep p99 under 1500ms and lower cost", None)["constraints"]
            ["latency_slo_ms"],
        json!(1500.0)
    );
    assert_eq!(
        classify_json("budget $5,000 per month, cut cost", None)["constraints"]
            ["monthly_budget_usd"],
        json!(5000.0)
    );
}

#[test]
fn a_window_in_hours_is_kept_and_its_rounding_said() {
    let t = classify(
        "Show the cost of workload chat-prod for the last 2 hours",
        None,
    );
    assert_eq!((t.time_range_days, t.window_hours), (1, Some(2.0)));
    assert!(
        t.unclear.iter().any(|n| n.contains("last 2 hours")),
        "{:?}",
        t.unclear
    );
}

#[test]
fn the_tenants_workloads_are_matched_by_case_and_spelling() {
    let known = vec!["chat-prod".to_string(), "support-bot".to_string()];
    let t = read("Reduce the cost of CHAT-PROD and suport-bot", None, &known);
    assert_eq!(t.workload_ids, vec!["chat-prod", "support-bot"]);
    assert!(t.unclear.iter().any(|n| n.contains("suport-bot")));
    let t = read("Which one is cheaper?", None, &known);
    assert!(t.ambiguous);
    assert!(t
        .clarifying_question
        .unwrap()
        .contains("chat-prod, support-bot"));
}

#[test]
fn bad_input_is_read_without_panicking() {
    for text in [
        "",
        "\0\0\0",
        "💸💸💸 🚀",
        "workload",
        "workload ,,,",
        "last",
        "$",
        "%%%% 30%",
        "p95 under",
        "reduce by 99999999999999999999999999999999999999%",
        "budget $1e400",
        "last 99999999999 years",
        "keep p95 under 1e308 s",
        "budget of $99999999999999999999999999999999999999999999999999 grand a month",
    ] {
        let t = classify(text, None);
        assert!((0.0..=1.0).contains(&t.confidence), "{text}");
    }
    let huge = "cut the cost of workload chat-prod ".repeat(2_000);
    let t = classify(&huge, None);
    assert_eq!(t.workload_ids, vec!["chat-prod"]);
    assert!(t.unclear.iter().any(|n| n.contains("first")));
    let t = classify("last 99999999999 years", None);
    assert_eq!(t.time_range_days, 3650);
}

#[test]
fn old_outputs_without_the_new_fields_still_read() {
    let old =
        json!({"intent": "x", "category": "analysis", "workload_ids": ["w"], "time_range_days": 7});
    let t: TriageOutput = serde_json::from_value(old).unwrap();
    assert_eq!(
        (t.window_hours, t.confidence, t.sources.len()),
        (None, 0.0, 0)
    );
}

#[test]
fn a_follow_up_is_read_with_the_request_it_answers() {
    let known = vec!["chat-prod".to_string()];
    let earlier = ["Reduce the cost of workload chat-prod"];
    let text = follow_up("The data is in, go ahead", &earlier, &known, None);
    assert_eq!(read(&text, None, &known).category, Category::Optimization);
    // "Which workload?" answered with its id.
    let text = follow_up("chat-prod", &["reduce our latency"], &known, None);
    let t = read(&text, None, &known);
    assert_eq!(
        (t.category, t.priorities),
        (Category::Optimization, vec![Priority::Latency])
    );
    // A follow-up that stands on its own is read alone.
    let text = follow_up("What is batching?", &[], &known, None);
    assert_eq!(text, "What is batching?");
}

mod corpus;
