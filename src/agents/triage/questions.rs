//! What triage says back: the topic of a question netra answers without
//! data, the one question it asks when it cannot act on a request, and the
//! one-line intent.

use super::text::Token;
use crate::agents::outputs::{Category, Priority};

/// Questions netra answers without data, by their words; the key is what
/// the reporting agent answers by (`topic`).
const TOPICS: &[(&[&str], &str)] = &[
    (&["prompt", "caching"], "prompt caching"),
    (&["prompt", "cache"], "prompt caching"),
    (&["caching"], "caching"),
    (&["cache"], "caching"),
    (&["cached"], "caching"),
    (&["batch"], "batch"),
    (&["batching"], "batch"),
    (&["batches"], "batch"),
    (&["right-size"], "right-siz"),
    (&["right-sizing"], "right-siz"),
    (&["right", "size"], "right-siz"),
    (&["right", "sizing"], "right-siz"),
    (&["rightsize"], "rightsiz"),
    (&["rightsizing"], "rightsiz"),
    (&["self-host"], "self-host"),
    (&["self-hosting"], "self-host"),
    (&["self-hosted"], "self-host"),
    (&["selfhost"], "self-host"),
    (&["self", "host"], "self host"),
    (&["self", "hosting"], "self host"),
    (&["max", "tokens"], "max tokens"),
    (&["max_tokens"], "max_tokens"),
    (&["output", "tokens"], "output token"),
    (&["output", "token"], "output token"),
    (&["p95"], "p95"),
    (&["percentile"], "percentile"),
    (&["percentiles"], "percentile"),
    (&["peak"], "peak"),
    (&["peaks"], "peak"),
    (&["netra"], "netra"),
];

/// The topic of `tokens` (the first of [`TOPICS`] they contain) and its words.
pub fn topic(tokens: &[Token]) -> Option<(&'static str, String)> {
    TOPICS.iter().find_map(|(words, key)| {
        tokens.windows(words.len()).find_map(|w| {
            w.iter()
                .zip(words.iter())
                .all(|(t, x)| t.lower == *x)
                .then(|| {
                    (
                        *key,
                        w.iter()
                            .map(|t| t.raw.as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                    )
                })
        })
    })
}

/// The topic of `text`, as [`topic`] reads it.
pub fn topic_of(text: &str) -> Option<String> {
    topic(&super::text::tokens(text)).map(|(k, _)| k.to_string())
}

/// The tenant's workloads, for a question (netra's own calls left out).
fn listed(known: &[String]) -> String {
    let shown: Vec<&str> = known
        .iter()
        .map(String::as_str)
        .filter(|k| *k != crate::store::ledger::WORKLOAD)
        .take(8)
        .collect();
    if shown.is_empty() {
        String::new()
    } else {
        let more = if known.len() > shown.len() + 1 {
            ", …"
        } else {
            ""
        };
        format!(" This tenant's workloads: {}{more}.", shown.join(", "))
    }
}

/// What a goal asks netra to do, as words.
fn goal_phrase(p: Priority) -> &'static str {
    match p {
        Priority::Cost => "cut the cost of",
        Priority::Latency => "reduce the latency of",
        Priority::Quality => "improve the quality of",
        Priority::Throughput => "plan the throughput of",
    }
}

/// The question for a goal or a look without a workload.
pub fn which_workload(priorities: &[Priority], look: bool, known: &[String]) -> String {
    let what = match (look, priorities.first()) {
        (true, _) | (false, None) => "analyse".to_string(),
        (false, Some(p)) => goal_phrase(*p).to_string(),
    };
    format!(
        "Which workload should netra {what}? Name it as \"workload <id>\".{}",
        listed(known)
    )
}

/// The question for workloads without a goal.
pub fn what_to_do(workloads: &[String]) -> String {
    format!(
        "What should netra do with workload {}: cut its cost, reduce its latency, keep its quality, plan its throughput, or show a usage breakdown?",
        workloads.join(", ")
    )
}

/// The question for a request in a language the analyst does not read.
pub fn in_english(language: &str, workloads: &[String]) -> String {
    let about = if workloads.is_empty() {
        String::new()
    } else {
        format!(" about workload {}", workloads.join(", "))
    };
    format!(
        "This request looks like {language}, and netra's embedded analyst reads English only, so nothing was guessed. Could you restate it{about} in English, with the workload and the goal (for example \"cut the cost of workload chat-prod by 20%\")?"
    )
}

/// The question for a request netra recognises nothing in.
pub fn generic(known: &[String]) -> String {
    format!(
        "netra analyses the cost, latency, quality and throughput of LLM workloads it has telemetry for. Which workload, and which goal?{}",
        listed(known)
    )
}

/// The question a triage with `category` and `workloads` needs (for a
/// category read by the language model): none unless it is a question;
/// then what to do with the workloads, which workload, or both.
pub fn clarifying_question(
    category: Category,
    workloads: &[String],
    asks_for_work: bool,
    topic: Option<&str>,
) -> Option<String> {
    if category != Category::Question {
        None
    } else if !workloads.is_empty() {
        Some(what_to_do(workloads))
    } else if asks_for_work {
        Some(which_workload(&[], false, &[]))
    } else if topic.is_none() {
        Some(generic(&[]))
    } else {
        None
    }
}

/// What netra will do, in one line.
pub fn intent(
    category: Category,
    ambiguous: bool,
    priorities: &[Priority],
    workloads: &[String],
) -> String {
    match category {
        Category::Optimization => format!(
            "optimize {} of {}",
            priorities
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            workloads.join(", ")
        ),
        Category::Analysis => format!("analyse workload {}", workloads.join(", ")),
        Category::Question if ambiguous => "ask what the request means".to_string(),
        Category::Question => "answer a question".to_string(),
    }
}
