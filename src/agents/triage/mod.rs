//! Triage by the embedded analyst: intent, category, workloads, time
//! window, priorities and constraints, read from the request text the way
//! a person would, offline and deterministically.
//!
//! The text is split into words and clauses ([`text`]); words are matched
//! whole, by their lemmas, and misspellings by edit distance ([`vocab`]).
//! Goals are read clause by clause, so negation ("don't change anything")
//! and guards ("without losing quality") reach only their clause
//! ([`goals`]). A number is a limit only when the text ties it to a metric
//! and a unit ([`numbers`]); a window only when it is stated ([`window`]).
//! Workloads are matched against the tenant's, case-insensitively and by
//! spelling ([`workloads`]). What to do with it is [`decide`]d. A request in another language ([`language`])
//! or one that cannot be acted on gets one question back ([`questions`]),
//! never a guess; the run then ends `needs_input`.
//!
//! [`read`] is the whole reading, pure; the agent only fetches the tenant's
//! workloads and the thread.

pub mod decide;
pub mod goals;
pub mod language;
pub mod numbers;
pub mod questions;
pub mod text;
pub mod vocab;
pub mod window;
pub mod workloads;

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::outputs::{Category, Constraints, Priority, TriageOutput};
use crate::{
    error::PhaseError,
    pipeline::agent::{AgentContext, PhaseInput, TypedAgent},
};
pub use questions::{clarifying_question, topic_of};

/// The triage agent.
pub struct Triage;

/// Known workloads read for matching (as many as the model is shown).
const KNOWN_WORKLOADS: i64 = 200;

/// The window read when the request states none, days.
const DEFAULT_DAYS: i64 = 30;

/// The triage of one request text without the tenant's workloads (ids are
/// taken as written).
pub fn classify(message: &str, workload_hint: Option<&str>) -> TriageOutput {
    read(message, workload_hint, &[])
}

/// The words of the request each field came from, by field name.
type Sources = BTreeMap<String, Vec<String>>;

fn add(sources: &mut Sources, key: &str, words: String) {
    sources.entry(key.to_string()).or_default().push(words);
}

/// The triage of one request text, given the tenant's workload ids (pure).
pub fn read(message: &str, workload_hint: Option<&str>, known: &[String]) -> TriageOutput {
    let tokens = text::tokens(message);
    let cues = vocab::cues(&tokens);
    let (window, mut unclear) = window::stated(&tokens);
    let window_tokens = window.as_ref().map(|w| w.tokens.clone());
    let goals = goals::read(&tokens, &cues, window_tokens.clone());
    let limits = numbers::read(&tokens, &cues, window_tokens);
    let named = workloads::named(&tokens, known);
    let topic = questions::topic(&tokens);
    let language = language::not_english(message, &tokens);
    let mut sources = Sources::new();

    let workload_ids = workload_ids(&named, workload_hint, &mut unclear, &mut sources);
    let decided = decide::decide(&decide::Asked {
        goals: &goals,
        limits: &limits,
        workloads: &workload_ids,
        topic: topic.as_ref().map(|(k, _)| *k),
        language: language.as_deref(),
        known,
    });
    goal_sources(&goals, &decided, &mut sources);
    if let Some(lang) = &language {
        add(&mut sources, "language", lang.clone());
    }
    let constraints = constraints(limits, &goals, &mut unclear, &mut sources);
    let (time_range_days, window_hours) = match &window {
        Some(w) => {
            let (days, note) = window::served(w.hours, &w.words);
            unclear.extend(note);
            add(&mut sources, "window", w.words.clone());
            (days, Some(w.hours))
        }
        None => (DEFAULT_DAYS, None),
    };
    if message.chars().count() > text::MAX_CHARS {
        unclear.push(format!(
            "only the first {} characters of the request were read",
            text::MAX_CHARS
        ));
    }
    let topic_key = topic.map(|(k, w)| {
        add(&mut sources, "topic", w);
        k.to_string()
    });
    let corrected = named.iter().filter(|n| n.corrected).count() + goals.typos.len();
    let confidence = confidence(&decided, language.is_some(), corrected, unclear.len());
    let category = decided.category;
    TriageOutput {
        intent: questions::intent(
            category,
            decided.clarifying.is_some(),
            &decided.priorities,
            &workload_ids,
        ),
        category,
        time_range_days,
        window_hours,
        constraints,
        data_needs: match category {
            Category::Question => Vec::new(),
            _ => vec!["request telemetry".to_string(), "model prices".to_string()],
        },
        topic: topic_key,
        ambiguous: decided.clarifying.is_some(),
        clarifying_question: decided.clarifying,
        unclear,
        workload_ids,
        priorities: decided.priorities,
        confidence,
        sources,
        model: None,
    }
}

/// The ids of the workloads named, the request's `workload_id` first; a
/// misspelled id matched to the tenant's is noted.
fn workload_ids(
    named: &[workloads::Named],
    hint: Option<&str>,
    unclear: &mut Vec<String>,
    sources: &mut Sources,
) -> Vec<String> {
    let mut ids: Vec<String> = named.iter().map(|n| n.id.clone()).collect();
    for n in named {
        add(sources, "workload_ids", n.written.clone());
        if n.corrected {
            unclear.push(format!(
                "workload `{}` was read as `{}`, the closest of the tenant's workloads",
                n.written, n.id
            ));
        }
    }
    if let Some(h) = hint {
        if !ids.iter().any(|x| x == h) {
            ids.insert(0, h.to_string());
            add(sources, "workload_ids", format!("workload_id: {h}"));
        }
    }
    ids
}

/// The words of the goals, the guards and the verbs that decided the route.
fn goal_sources(goals: &goals::Reading, decided: &decide::Decided, sources: &mut Sources) {
    for (p, w) in &goals.priorities {
        if decided.priorities.contains(p) {
            add(sources, &format!("priorities.{}", p.as_str()), w.clone());
        }
    }
    if decided.defaulted {
        add(
            sources,
            "priorities.cost",
            "(no goal named: cost, netra's default)".to_string(),
        );
    }
    for (p, w) in &goals.guards {
        add(sources, &format!("guards.{}", p.as_str()), w.clone());
    }
    let verbs = goals.change.iter().chain(&goals.advice).chain(&goals.look);
    for w in verbs.chain(&goals.hands_off) {
        add(sources, "category", w.clone());
    }
}

/// The limits read, with a quality floor of 3 for a guarded quality
/// ("without losing quality").
fn constraints(
    limits: numbers::Limits,
    goals: &goals::Reading,
    unclear: &mut Vec<String>,
    sources: &mut Sources,
) -> Constraints {
    let mut constraints = limits.constraints;
    for (k, w) in limits.sources {
        add(sources, &k, w);
    }
    unclear.extend(limits.notes);
    if constraints.quality_floor.is_none() {
        if let Some((_, w)) = goals.guards.iter().find(|(p, _)| *p == Priority::Quality) {
            constraints.quality_floor = Some(3);
            add(sources, "constraints.quality_floor", w.clone());
        }
    }
    constraints
}

/// How sure the reading is: high when it acts on what it read, lower for
/// each assumption, correction and note, low when it asks.
fn confidence(decided: &decide::Decided, foreign: bool, corrected: usize, notes: usize) -> f64 {
    let base: f64 = match (&decided.clarifying, decided.category) {
        (Some(_), _) if foreign => 0.1,
        (Some(_), _) => 0.3,
        (None, Category::Question) => 0.8,
        (None, _) => 0.95,
    };
    let assumed = if decided.defaulted { 0.15 } else { 0.0 };
    let c = base - assumed - 0.1 * corrected as f64 - 0.05 * notes as f64;
    (c.clamp(0.05, 1.0) * 100.0).round() / 100.0
}

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
            let known = crate::store::workloads::ids(&ctx.pool, &input.tenant, KNOWN_WORKLOADS)
                .await
                .map_err(|e| PhaseError::transient(format!("workloads of the tenant: {e}")))?;
            let hint = input.request.get("workload_id").and_then(Value::as_str);
            let text = with_thread(message, input, &known, hint);
            let embedded = read(&text, hint, &known);
            match &ctx.model {
                Some(model) if model.config().used_by(crate::model::Phase::Triage) => {
                    super::model_triage::triage(ctx, model, input, &text, hint, &known, embedded)
                        .await
                }
                _ => Ok(embedded),
            }
        })
    }
}

/// A follow-up is read together with an earlier request of its thread: the
/// latest one that names a workload, when the follow-up names none ("the
/// data is in, go ahead"), or the latest one that together with it can be
/// acted on, when it cannot be alone ("chat-prod" after "which workload?").
fn with_thread(message: &str, input: &PhaseInput, known: &[String], hint: Option<&str>) -> String {
    let earlier: Vec<&str> = input
        .thread
        .iter()
        .rev()
        .filter(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .collect();
    follow_up(message, &earlier, known, hint)
}

/// [`with_thread`] on the thread's earlier user messages, latest first (pure).
fn follow_up(message: &str, earlier: &[&str], known: &[String], hint: Option<&str>) -> String {
    let names = |t: &str| !workloads::named(&text::tokens(t), known).is_empty();
    let joined = |e: &str| format!("{e}. {message}");
    if !names(message) {
        if let Some(e) = earlier.iter().find(|e| names(e)) {
            return joined(e);
        }
    }
    if read(message, hint, known).ambiguous {
        if let Some(e) = earlier
            .iter()
            .find(|e| !read(&joined(e), hint, known).ambiguous)
        {
            return joined(e);
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests;
