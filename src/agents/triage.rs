//! Triage: intent, category, workload ids, time range, priorities and
//! constraints, extracted deterministically from the request text and context.

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::outputs::{Category, Constraints, Priority, TriageOutput};
use crate::{
    error::PhaseError,
    pipeline::agent::{AgentContext, PhaseInput, TypedAgent},
};

/// The triage agent.
pub struct Triage;

const OPTIMIZE_WORDS: &[&str] = &[
    "cut",
    "reduce",
    "lower",
    "optimi",
    "save",
    "saving",
    "cheaper",
    "spend less",
    "right-size",
    "rightsize",
    "improve",
    "speed up",
    "faster",
];
const ANALYSIS_WORDS: &[&str] = &[
    "analy",
    "breakdown",
    "break down",
    "show",
    "report",
    "trend",
    "how much",
    "how many",
    "summar",
    "usage",
    "what did",
    "profile",
];

/// Parses a number that may carry a unit: `2s`, `2 s`, `1500ms`, `2 seconds`.
fn latency_ms_after(text: &str, anchor: usize) -> Option<f64> {
    let tail = &text[anchor..];
    let start = tail.find(|c: char| c.is_ascii_digit())?;
    if start > 40 {
        return None;
    }
    let num_str: String = tail[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = num_str.parse().ok()?;
    let unit = tail[start + num_str.len()..].trim_start();
    if unit.starts_with("ms") || unit.starts_with("millis") {
        Some(value)
    } else if unit.starts_with('s') {
        Some(value * 1000.0)
    } else {
        None
    }
}

/// A number after a latency keyword that carries no unit (`p95 under 2000`):
/// reported as unclear instead of guessing ms or s.
fn unitless_latency(text: &str, anchor: usize) -> Option<String> {
    let tail = &text[anchor..];
    let start = tail.find(|c: char| c.is_ascii_digit())?;
    if start > 40 || latency_ms_after(text, anchor).is_some() {
        return None;
    }
    let num: String = tail[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    // Only a free-standing number (`under 2000`), not part of an id (`w-1`).
    let before = tail[..start].chars().last();
    let after = tail[start + num.len()..].chars().next();
    let free_before = before.is_some_and(|c| c.is_whitespace() || c == '<' || c == '=');
    let free_after = after.is_none_or(|c| c.is_whitespace() || ",.;)".contains(c));
    (free_before && free_after).then_some(num)
}

/// A percentage like `30%` or `30 percent`.
fn percent(text: &str) -> Option<f64> {
    let idx = text.find('%').or_else(|| text.find(" percent"))?;
    let head = text[..idx].trim_end();
    let digits: String = head
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let digits: String = digits.chars().rev().collect();
    digits.parse().ok()
}

/// A dollar amount like `$5,000` or `$5000/month`.
fn dollars(text: &str) -> Option<f64> {
    let idx = text.find('$')?;
    let digits: String = text[idx + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(|c| *c != ',')
        .collect();
    digits.parse().ok()
}

/// Days of a `last N days` / `past N weeks` phrase.
fn range_days(text: &str) -> Option<u32> {
    for key in ["last ", "past "] {
        if let Some(i) = text.find(key) {
            let rest = &text[i + key.len()..];
            let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let n: u32 = if n.is_empty() { 1 } else { n.parse().ok()? };
            let unit = rest[n.to_string().len().min(rest.len())..].trim_start();
            if unit.starts_with("day") || (n == 1 && rest.starts_with("day")) {
                return Some(n);
            }
            if unit.starts_with("week") || rest.starts_with("week") {
                return Some(n * 7);
            }
            if unit.starts_with("month") || rest.starts_with("month") {
                return Some(n * 30);
            }
        }
    }
    None
}

/// Workload ids named in the text as `workload <id>` or `workload:<id>`.
fn workloads_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_matches(|c: char| c == ',' || c == '.' || c == '?' || c == '"' || c == '\'');
        if let Some(id) = w.strip_prefix("workload:") {
            out.push(id.to_string());
        } else if w.eq_ignore_ascii_case("workload") {
            if let Some(next) = words.get(i + 1) {
                let id = next
                    .trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
                if !id.is_empty() && id.chars().any(|c| c.is_ascii_alphanumeric()) {
                    out.push(id.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The triage of one request text (pure, for tests).
pub fn classify(message: &str, workload_hint: Option<&str>) -> TriageOutput {
    let text = message.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let optimize = has(OPTIMIZE_WORDS);
    let analyse = has(ANALYSIS_WORDS);
    let mut workloads = workloads_in(message);
    if let Some(w) = workload_hint {
        if !workloads.iter().any(|x| x == w) {
            workloads.insert(0, w.to_string());
        }
    }
    let category = if optimize {
        Category::Optimization
    } else if analyse && !workloads.is_empty() {
        Category::Analysis
    } else {
        Category::Question
    };
    let priorities = priorities(&text, category);
    // Unknown or ambiguous requests are flagged with a clarifying question,
    // never guessed.
    let topic = TOPICS
        .iter()
        .find(|(k, _)| text.contains(k))
        .map(|(k, _)| *k);
    let clarifying = clarifying_question(category, &workloads, analyse || optimize, topic);
    TriageOutput {
        intent: intent(category, &priorities, &workloads),
        category,
        time_range_days: i64::from(range_days(&text).unwrap_or(30)),
        constraints: constraints(&text),
        data_needs: match category {
            Category::Question => Vec::new(),
            _ => vec!["request telemetry".to_string(), "model prices".to_string()],
        },
        topic: topic.map(str::to_string),
        ambiguous: clarifying.is_some(),
        clarifying_question: clarifying,
        unclear: unclear(&text),
        workload_ids: workloads,
        priorities,
        model: None,
    }
}

/// The goals the text names, in a fixed order; an optimization that names
/// none is about cost.
fn priorities(text: &str, category: Category) -> Vec<Priority> {
    let any = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let mut priorities = Vec::new();
    if any(&["cost", "spend", "cheap", "$", "bill"]) {
        priorities.push(Priority::Cost);
    }
    if any(&["latency", "p95", "p99", "fast", "slow"]) {
        priorities.push(Priority::Latency);
    }
    if any(&["quality", "accuracy"]) {
        priorities.push(Priority::Quality);
    }
    if any(&["throughput", "rate limit", "peak"]) {
        priorities.push(Priority::Throughput);
    }
    if priorities.is_empty() && category == Category::Optimization {
        priorities.push(Priority::Cost);
    }
    priorities
}

/// The hard limits the text states.
fn constraints(text: &str) -> Constraints {
    let latency_slo_ms = ["p95", "p99", "latency"].iter().find_map(|k| {
        text.find(k)
            .and_then(|i| latency_ms_after(text, i + k.len()))
    });
    let quality_floor = if text.contains("without losing quality")
        || text.contains("same quality")
        || text.contains("quality floor")
    {
        Some(3)
    } else if text.contains("quality") {
        Some(2)
    } else {
        None
    };
    Constraints {
        latency_slo_ms,
        latency_percentile: if text.contains("p99") { "p99" } else { "p95" }.to_string(),
        target_reduction_pct: percent(text),
        monthly_budget_usd: dollars(text),
        quality_floor,
    }
}

/// What netra will do, in one line.
fn intent(category: Category, priorities: &[Priority], workloads: &[String]) -> String {
    match category {
        Category::Optimization => format!(
            "optimize {} of {}",
            priorities
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            if workloads.is_empty() {
                "an unnamed workload".to_string()
            } else {
                workloads.join(", ")
            }
        ),
        Category::Analysis => format!("analyse workload {}", workloads.join(", ")),
        Category::Question => "answer a question".to_string(),
    }
}

/// The question to ask instead of guessing: a workload without a goal, an
/// analysis without a workload, or text netra recognises nothing in.
pub(crate) fn clarifying_question(
    category: Category,
    workloads: &[String],
    asks_for_work: bool,
    topic: Option<&str>,
) -> Option<String> {
    if category != Category::Question {
        None
    } else if !workloads.is_empty() {
        Some(format!(
            "What should netra do with workload {}: cut its cost, reduce its latency, keep its quality, plan its throughput, or show a usage breakdown?",
            workloads.join(", ")
        ))
    } else if asks_for_work {
        Some("Which workload do you mean? Name it as \"workload <id>\".".to_string())
    } else if topic.is_none() {
        Some("netra analyses the cost, latency, quality and throughput of LLM workloads it has telemetry for. Which workload, and which goal?".to_string())
    } else {
        None
    }
}

/// Parts of the text that were read but not applied.
fn unclear(text: &str) -> Vec<String> {
    ["p95", "p99", "latency"]
        .iter()
        .find_map(|k| {
            text.find(k)
                .and_then(|i| unitless_latency(text, i + k.len()))
        })
        .map(|n| format!("latency limit `{n}` has no unit (ms or s); it was not applied"))
        .into_iter()
        .collect()
}

/// Questions netra answers without data, by keyword (the reporting agent
/// holds the answers).
pub const TOPICS: &[(&str, &str)] = &[
    ("prompt caching", "prompt_caching"),
    ("caching", "prompt_caching"),
    ("batch", "batch_processing"),
    ("right-siz", "model_right_sizing"),
    ("rightsiz", "model_right_sizing"),
    ("self-host", "self_hosting"),
    ("self host", "self_hosting"),
    ("max tokens", "max_output_tokens"),
    ("max_tokens", "max_output_tokens"),
    ("output token", "max_output_tokens"),
    ("p95", "latency_percentiles"),
    ("percentile", "latency_percentiles"),
    ("peak", "capacity_for_peaks"),
    ("netra", "netra"),
];

impl TypedAgent for Triage {
    type Output = TriageOutput;

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<TriageOutput, PhaseError>> {
        Box::pin(async move {
            let message = input
                .request
                .get("message")
                .and_then(Value::as_str)
                .ok_or_else(|| PhaseError::permanent("request has no message text"))?;
            // A follow-up inherits the workload of the thread's earlier request.
            let mut text = message.to_string();
            for earlier in input.thread.iter().filter(|m| m.role == "user") {
                if workloads_in(message).is_empty() && !workloads_in(&earlier.content).is_empty() {
                    text = format!("{} {}", earlier.content, message);
                }
            }
            let hint = input.request.get("workload_id").and_then(Value::as_str);
            let embedded = classify(&text, hint);
            match &ctx.model {
                Some(model) if model.config().used_by(crate::model::Phase::Triage) => {
                    super::model_triage::triage(ctx, model, input, &text, hint, embedded).await
                }
                _ => Ok(embedded),
            }
        })
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(t["priorities"], json!(["cost", "latency"]));
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
        assert_eq!(
            classify_json(
                "Show the usage breakdown of workload w-1 for the last 7 days",
                None
            )["category"],
            "analysis"
        );
        assert_eq!(
            classify_json(
                "Show the usage breakdown of workload w-1 for the last 7 days",
                None
            )["time_range_days"],
            7
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
}
