//! Triage by the language model, grounded.
//!
//! The model answers in JSON-schema structured output: intent, category,
//! workloads, priorities, constraints and time window, each number with the
//! span of the request that states it. netra checks the answer on arrival:
//!
//! - against the schema (the server enforces it too, but a weak model or a
//!   proxy may not);
//! - each workload must be one of the tenant's, or be matched to one by
//!   spelling (recorded as "did you mean"), or be written in the request
//!   itself (a workload with no telemetry yet, which the data phase asks
//!   for); an id found nowhere is invented, and the answer is refused;
//! - each number must come with a span that is in the request and states it
//!   ([`crate::llm::grounding::check_span`]); otherwise the number is
//!   dropped and the drop recorded.
//!
//! A refused answer is asked again once, with what was wrong. After that,
//! or when the model cannot be reached, the embedded analyst decides
//! (`NETRA_LLM_FALLBACK=embedded`, the default) or the phase fails
//! (`fail`); the output's `model` note says which model took part and what
//! was wrong.

use serde::Deserialize;
use serde_json::json;

use super::{
    outputs::{Category, Constraints, ModelNote, Priority, TriageOutput},
    triage::{clarifying_question, topic_of, window},
};
use crate::{
    error::PhaseError,
    llm::{
        client::{Answered, ModelClient},
        config::Fallback,
        grounding::{check_span, Kind},
        prompts, ChatMessage, ModelError, OutputSchema,
    },
    model::Phase,
    pipeline::agent::{AgentContext, PhaseInput},
};

/// The ledger purpose of the first ask.
const TRIAGE_ASK: &str = "triage";
/// The ledger purpose of the ask after a refused answer.
const TRIAGE_ASK_AGAIN: &str = "triage_retry";

/// The model's answer, as the schema has it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    intent: String,
    category: Category,
    workloads: Vec<String>,
    priorities: Vec<Priority>,
    constraints: Vec<Stated>,
    time_window: Window,
}

/// A number the model read from the request, with the words that state it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stated {
    kind: ConstraintKind,
    value: f64,
    span: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ConstraintKind {
    LatencySloMs,
    TargetReductionPct,
    MonthlyBudgetUsd,
    QualityFloor,
}

impl ConstraintKind {
    fn as_str(self) -> &'static str {
        match self {
            ConstraintKind::LatencySloMs => "latency_slo_ms",
            ConstraintKind::TargetReductionPct => "target_reduction_pct",
            ConstraintKind::MonthlyBudgetUsd => "monthly_budget_usd",
            ConstraintKind::QualityFloor => "quality_floor",
        }
    }
}

/// The time window the request names (`days` 0: none).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    days: f64,
    span: String,
}

/// The JSON schema of [`Answer`] (strict: every field required, nothing else).
pub fn schema() -> OutputSchema {
    // Built once: every request shares it (thousands of calls in flight).
    static SCHEMA: std::sync::LazyLock<OutputSchema> = std::sync::LazyLock::new(build_schema);
    SCHEMA.clone()
}

fn build_schema() -> OutputSchema {
    // Bounded lengths and counts keep a weak model from rambling past its
    // token budget inside a string (the answer would be cut short, and
    // refused); llama.cpp's grammar honours them.
    let text = |max: u32| json!({"type": "string", "maxLength": max});
    OutputSchema {
        name: Phase::Triage.as_str().into(),
        schema: std::sync::Arc::new(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["intent", "category", "workloads", "priorities", "constraints", "time_window"],
            "properties": {
                "intent": text(160),
                "category": {"type": "string", "enum": ["optimization", "analysis", "question"]},
                "workloads": {"type": "array", "maxItems": 8, "items": text(64)},
                "priorities": {"type": "array", "maxItems": 4, "items": {"type": "string", "enum": ["cost", "latency", "quality", "throughput"]}},
                "constraints": {"type": "array", "maxItems": 4, "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["kind", "value", "span"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["latency_slo_ms", "target_reduction_pct", "monthly_budget_usd", "quality_floor"]},
                        "value": {"type": "number"},
                        "span": text(80),
                    },
                }},
                "time_window": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["days", "span"],
                    "properties": {"days": {"type": "number"}, "span": text(80)},
                },
            },
        })),
    }
}

/// Triage of `text` by the model, checked against the tenant's `known`
/// workloads; the embedded analyst's `embedded` triage where the model
/// cannot be used.
pub async fn triage(
    ctx: &AgentContext,
    model: &ModelClient,
    input: &PhaseInput,
    text: &str,
    hint: Option<&str>,
    known: &[String],
    embedded: TriageOutput,
) -> Result<TriageOutput, PhaseError> {
    let scope = ctx.call_scope(input, Phase::Triage);
    let mut note = ModelNote {
        provider: "openai-compatible".into(),
        model: model.config().model.clone(),
        prompt_version: prompts::TRIAGE.version().to_string(),
        reused: true,
        ..ModelNote::default()
    };
    let mut messages = vec![ChatMessage::new("user", user_message(text, known))];
    let mut refused = String::new();
    // The first ask, and the one after a refusal (their ledger purposes).
    for purpose in [TRIAGE_ASK, TRIAGE_ASK_AGAIN] {
        let request = model.request(&prompts::TRIAGE, messages.clone(), Some(schema()));
        let answered = match model
            .call(&scope, purpose, &prompts::TRIAGE, &request)
            .await
        {
            Ok(a) => a,
            Err(e) => return fall_back(model, note, embedded, e),
        };
        account(&mut note, &answered);
        match checked(&answered.answer.content, text, hint, known, &mut note) {
            Ok(mut out) => {
                note.used = true;
                fill_from_embedded(&mut out, &embedded, text);
                out.model = Some(note);
                return Ok(out);
            }
            Err(why) => {
                tracing::info!(%why, purpose, "model triage refused");
                messages.push(ChatMessage::new(
                    "assistant",
                    answered.answer.content.clone(),
                ));
                messages.push(ChatMessage::new(
                    "user",
                    format!("Your answer was refused: {why}. Answer again, following the schema and the rules."),
                ));
                refused = why;
            }
        }
    }
    let why = format!("the model's answer was refused twice; the last time: {refused}");
    match model.config().fallback {
        Fallback::Embedded => {
            note.fallback = Some(why);
            Ok(with_note(embedded, note))
        }
        // The same request gets the same answer (and a replay reuses it from
        // the ledger): asking again in a later attempt would not help.
        Fallback::Fail => Err(PhaseError::permanent(why)),
    }
}

/// The request and the tenant's workloads, as the model reads them.
///
/// `netra-llm` (netra's own calls, a workload as soon as the tenant has
/// one) is not listed: the list would change because of the very call it
/// is in, and a replay's request would never match the ledger's. A request
/// that names `netra-llm` still gets it (it is matched like any id).
fn user_message(text: &str, known: &[String]) -> String {
    let shown: Vec<&str> = known
        .iter()
        .map(String::as_str)
        .filter(|k| *k != crate::store::ledger::WORKLOAD)
        .collect();
    let list = if shown.is_empty() {
        "(none yet)".to_string()
    } else {
        shown.join(", ")
    };
    format!("Request:\n{text}\n\nKnown workloads of this tenant: {list}")
}

/// Adds an answer's tokens and latency to the note.
fn account(note: &mut ModelNote, a: &Answered) {
    note.calls.push(a.ledger_id);
    note.reused &= a.reused;
    note.input_tokens += a.answer.input_tokens;
    note.output_tokens += a.answer.output_tokens;
    note.latency_ms += a.latency_ms;
}

/// The model could not be used: the embedded analyst decides, or the phase
/// fails, as `NETRA_LLM_FALLBACK` says. An outage of the ledger's database
/// and a rate limit are never a reason to fall back
/// ([`ModelError::may_fall_back`]).
fn fall_back(
    model: &ModelClient,
    mut note: ModelNote,
    embedded: TriageOutput,
    e: ModelError,
) -> Result<TriageOutput, PhaseError> {
    match model.config().fallback {
        Fallback::Embedded if e.may_fall_back() => {
            note.reused = false;
            note.fallback = Some(e.to_string());
            Ok(with_note(embedded, note))
        }
        _ => Err(e.into()),
    }
}

fn with_note(mut out: TriageOutput, note: ModelNote) -> TriageOutput {
    out.model = Some(note);
    out
}

/// The model's answer, checked: `Err` says why it is refused; drops and
/// spelling matches go into `note`.
fn checked(
    content: &str,
    text: &str,
    hint: Option<&str>,
    known: &[String],
    note: &mut ModelNote,
) -> Result<TriageOutput, String> {
    let answer: Answer = serde_json::from_str(content.trim())
        .map_err(|e| format!("the answer does not follow the schema ({e})"))?;
    let mut workload_ids = Vec::new();
    for w in &answer.workloads {
        let id = known_workload(w, text, known, note)?;
        if !workload_ids.contains(&id) {
            workload_ids.push(id);
        }
    }
    if let Some(h) = hint {
        if !workload_ids.iter().any(|x| x == h) {
            workload_ids.insert(0, h.to_string());
        }
    }
    let mut out = TriageOutput {
        intent: answer.intent.trim().to_string(),
        category: answer.category,
        workload_ids,
        priorities: dedup(answer.priorities),
        constraints: constraints(&answer.constraints, text, note),
        ..TriageOutput::default()
    };
    for w in &answer.workloads {
        out.sources
            .entry("workload_ids".into())
            .or_default()
            .push(w.clone());
    }
    for s in &answer.constraints {
        if constraint_kept(&out.constraints, s) {
            out.sources
                .entry(format!("constraints.{}", s.kind.as_str()))
                .or_default()
                .push(s.span.clone());
        }
    }
    if answer.time_window.days > 0.0 {
        match check_span(
            text,
            &answer.time_window.span,
            answer.time_window.days,
            Kind::Days,
        ) {
            Ok(()) => {
                let hours = answer.time_window.days * 24.0;
                let (days, unserved) = window::served(hours, answer.time_window.span.trim());
                out.time_range_days = days;
                out.window_hours = Some(hours);
                out.unclear.extend(unserved);
                out.sources
                    .entry("window".into())
                    .or_default()
                    .push(answer.time_window.span.clone());
            }
            Err(why) => note.dropped.push(format!(
                "time window of {} days: {why}",
                answer.time_window.days
            )),
        }
    }
    Ok(out)
}

/// True when the constraint `s` stated is the one the output holds.
fn constraint_kept(c: &Constraints, s: &Stated) -> bool {
    let held = match s.kind {
        ConstraintKind::LatencySloMs => c.latency_slo_ms,
        ConstraintKind::TargetReductionPct => c.target_reduction_pct,
        ConstraintKind::MonthlyBudgetUsd => c.monthly_budget_usd,
        ConstraintKind::QualityFloor => c.quality_floor.map(f64::from),
    };
    held.is_some_and(|v| (v - s.value).abs() < 1e-9 || s.kind == ConstraintKind::QualityFloor)
}

fn dedup(mut v: Vec<Priority>) -> Vec<Priority> {
    let mut seen = Vec::new();
    v.retain(|p| {
        let new = !seen.contains(p);
        seen.push(*p);
        new
    });
    v
}

/// A workload id as the tenant knows it. The request must name it: the
/// id itself (any case), or a word of the request spelled close to a known
/// id (recorded as "did you mean"); the known ids are shown to the model to
/// match spellings, not to pick from. An id the request names but the
/// tenant has no telemetry for is kept (the data phase asks for it); any
/// other id is invented, and the answer refused.
fn known_workload(
    written: &str,
    text: &str,
    known: &[String],
    note: &mut ModelNote,
) -> Result<String, String> {
    let w = written.trim();
    let named = |id: &str| written_in(text, id);
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(w) && named(k)) {
        return Ok(k.clone());
    }
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .filter(|t| t.len() >= 3)
        .collect();
    let close = known
        .iter()
        .filter_map(|k| {
            let best = words
                .iter()
                .map(|t| strsim::normalized_levenshtein(&k.to_lowercase(), &t.to_lowercase()))
                .fold(0.0, f64::max);
            let like_written = strsim::normalized_levenshtein(&k.to_lowercase(), &w.to_lowercase());
            (best >= 0.75 && like_written >= 0.75).then_some((best, k))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, k)) = close {
        if !k.eq_ignore_ascii_case(w) || !named(k) {
            note.did_you_mean
                .push(format!("`{w}`: did you mean `{k}`?"));
        }
        return Ok(k.clone());
    }
    if written_in(text, w) {
        return Ok(w.to_string());
    }
    Err(format!("workload `{w}` is not named in the request"))
}

/// True when `id` is a whole word of `text` (not a piece of one: `chat` is
/// not written in "workload chat-prod").
fn written_in(text: &str, id: &str) -> bool {
    let is_id = |c: char| c.is_alphanumeric() || c == '-' || c == '_' || c == ':';
    !id.is_empty()
        && text
            .split(|c: char| !is_id(c))
            .flat_map(|word| [word, word.trim_start_matches("workload:")])
            .any(|word| {
                word.trim_end_matches(['-', '_', ':'])
                    .eq_ignore_ascii_case(id)
            })
}

/// The constraints whose spans state them; the others are dropped.
fn constraints(stated: &[Stated], text: &str, note: &mut ModelNote) -> Constraints {
    let mut c = Constraints {
        latency_percentile: if text.to_lowercase().contains("p99") {
            "p99"
        } else {
            "p95"
        }
        .to_string(),
        ..Constraints::default()
    };
    for s in stated {
        let kind = match s.kind {
            ConstraintKind::LatencySloMs => Kind::LatencyMs,
            ConstraintKind::TargetReductionPct => Kind::Percent,
            ConstraintKind::MonthlyBudgetUsd => Kind::Usd,
            ConstraintKind::QualityFloor => Kind::Tier,
        };
        let in_range = match s.kind {
            ConstraintKind::TargetReductionPct => (0.0..=100.0).contains(&s.value),
            ConstraintKind::QualityFloor => (1.0..=3.0).contains(&s.value),
            _ => s.value > 0.0 && s.value.is_finite(),
        };
        if let Err(why) = check_span(text, &s.span, s.value, kind).and_then(|()| {
            if in_range {
                Ok(())
            } else {
                Err(format!("{} is out of range", s.value))
            }
        }) {
            note.dropped
                .push(format!("{} {}: {why}", s.kind.as_str(), s.value));
            continue;
        }
        match s.kind {
            ConstraintKind::LatencySloMs => c.latency_slo_ms = Some(s.value),
            ConstraintKind::TargetReductionPct => c.target_reduction_pct = Some(s.value),
            ConstraintKind::MonthlyBudgetUsd => c.monthly_budget_usd = Some(s.value),
            ConstraintKind::QualityFloor => c.quality_floor = Some(s.value.round() as u8),
        }
    }
    c
}

/// What the model is not asked for: the topic of a question, the data the
/// phase needs, the clarifying question, the unclear parts, the confidence.
/// A window the model did not read (or read in days when it is stated in
/// hours, which its schema cannot say) is the embedded analyst's.
fn fill_from_embedded(out: &mut TriageOutput, embedded: &TriageOutput, text: &str) {
    out.topic = topic_of(text);
    out.data_needs = match out.category {
        Category::Question => Vec::new(),
        _ => vec!["request telemetry".to_string(), "model prices".to_string()],
    };
    let asks_for_work = embedded.category != Category::Question;
    out.clarifying_question = clarifying_question(
        out.category,
        &out.workload_ids,
        asks_for_work,
        out.topic.as_deref(),
    );
    out.ambiguous = out.clarifying_question.is_some();
    let window_note = |n: &String| n.starts_with(window::NOTE_PREFIX);
    if out.window_hours.is_none() && embedded.window_hours.is_some() {
        out.time_range_days = embedded.time_range_days;
        out.window_hours = embedded.window_hours;
        if let Some(words) = embedded.sources.get("window") {
            out.sources.insert("window".into(), words.clone());
        }
        out.unclear = embedded.unclear.clone();
    } else {
        let model_notes = std::mem::take(&mut out.unclear);
        out.unclear = embedded
            .unclear
            .iter()
            .filter(|n| !window_note(n))
            .cloned()
            .collect();
        out.unclear.extend(model_notes);
    }
    if out.intent.is_empty() {
        out.intent = embedded.intent.clone();
    }
    // The model's reading is as sure as the embedded analyst's when they
    // agree on what to do and with which workloads; less when they do not.
    let agrees = out.category == embedded.category && out.workload_ids == embedded.workload_ids;
    out.confidence = if agrees {
        embedded.confidence.max(0.5)
    } else {
        embedded.confidence.min(0.5)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        content: &str,
        text: &str,
        known: &[&str],
    ) -> (Result<TriageOutput, String>, ModelNote) {
        let known: Vec<String> = known.iter().map(|s| s.to_string()).collect();
        let mut note = ModelNote::default();
        (checked(content, text, None, &known, &mut note), note)
    }

    #[test]
    fn grounded_answers_are_taken_and_inventions_dropped() {
        let text = "Decrease the spend of workload Chat-Prod by 30% keeping p95 under 2 s, for our 3 services";
        let answer = json!({
            "intent": "cut cost", "category": "optimization", "workloads": ["chat-prod"],
            "priorities": ["cost", "latency", "cost"],
            "constraints": [
                {"kind": "target_reduction_pct", "value": 30, "span": "by 30%"},
                {"kind": "latency_slo_ms", "value": 2000, "span": "under 2 s"},
                {"kind": "monthly_budget_usd", "value": 3, "span": "our 3 services"},
            ],
            "time_window": {"days": 0, "span": ""},
        });
        let (out, note) = check(&answer.to_string(), text, &["chat-prod", "support-bot"]);
        let out = out.unwrap();
        assert_eq!(out.workload_ids, vec!["chat-prod"]);
        assert_eq!(out.priorities, vec![Priority::Cost, Priority::Latency]);
        assert_eq!(out.constraints.target_reduction_pct, Some(30.0));
        assert_eq!(out.constraints.latency_slo_ms, Some(2000.0));
        assert_eq!(out.constraints.monthly_budget_usd, None);
        assert_eq!(note.dropped.len(), 1, "{:?}", note.dropped);
        assert_eq!(out.time_range_days, 30);
    }

    #[test]
    fn workloads_are_matched_or_refused() {
        let answer = |w: &str| {
            json!({"intent": "x", "category": "analysis", "workloads": [w], "priorities": [],
                   "constraints": [], "time_window": {"days": 7, "span": "last 7 days"}})
            .to_string()
        };
        let text = "show usage of workload chat-prd for the last 7 days";
        let (out, note) = check(&answer("chat-prd"), text, &["chat-prod"]);
        let out = out.unwrap();
        assert_eq!(out.workload_ids, vec!["chat-prod"]);
        assert_eq!(out.time_range_days, 7);
        assert_eq!(note.did_you_mean.len(), 1);
        // Written in the request but unknown: kept (the data phase asks for its data).
        let (out, _) = check(
            &answer("new-svc"),
            "cut cost of workload new-svc",
            &["chat-prod"],
        );
        assert_eq!(out.unwrap().workload_ids, vec!["new-svc"]);
        // Found nowhere: invented.
        assert!(check(&answer("ghost"), text, &["chat-prod"]).0.is_err());
        // Known, but not what the request names: invented too.
        assert!(
            check(&answer("support-bot"), text, &["chat-prod", "support-bot"])
                .0
                .is_err()
        );
        // A piece of a word of the request is not a workload written in it.
        let (out, _) = check(&answer("new"), "cut cost of workload new-svc", &[]);
        assert!(out.is_err());
        let (out, _) = check(&answer("new-svc"), "cut cost of workload:new-svc.", &[]);
        assert_eq!(out.unwrap().workload_ids, vec!["new-svc"]);
        // Not the schema.
        assert!(check("{\"intent\": 1}", text, &[]).0.is_err());
        assert!(check("not json", text, &[]).0.is_err());
    }
}
