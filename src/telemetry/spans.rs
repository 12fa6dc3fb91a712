//! The spans of a run (docs/DESIGN.md, "Tracing and logs").
//!
//! - `delivery` (logs only): one per phase message; its fields, `trace_id`
//!   among them, are on every log line written while the message is
//!   handled.
//! - `phase <name>` (exported): one per phase attempt, whose remote parent
//!   is the envelope's W3C `traceparent` (trace id = run id), so the
//!   attempts of one run, in any process, are one trace.
//! - `execute_tool <name>` and `chat <model>` (exported): one per tool call
//!   and one per model call, children of the attempt that makes them; the
//!   model's carries the `gen_ai.*` attributes.
//!
//! Exported spans have the target [`TARGET`], which the log output leaves
//! out (the delivery span already says what they would), and fields that
//! follow the OpenTelemetry semantic conventions where there is one, and
//! `netra.*` otherwise. Without an exporter they are disabled, and their
//! fields are never computed.

use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{llm::ChatAnswer, model::envelope::Envelope};

/// The target of every exported span.
pub const TARGET: &str = "netra::otel";

/// The span of handling one delivery from `<ns>.phase.<phase>`, for the
/// logs; [`record_envelope`] fills it once the envelope is decoded.
pub fn delivery(phase: &'static str) -> Span {
    tracing::info_span!(
        target: "netra::pipeline::worker",
        "delivery",
        phase,
        run_id = Empty,
        trace_id = Empty,
        correlation_id = Empty,
        attempt = Empty,
        message_id = Empty,
    )
}

/// Fills a [`delivery`] span's fields from the envelope.
pub fn record_envelope(span: &Span, env: &Envelope) {
    span.record("run_id", tracing::field::display(env.run_id));
    span.record("trace_id", trace_id(env).as_str());
    span.record("correlation_id", env.correlation_id.as_str());
    span.record("attempt", env.attempt);
    span.record("message_id", env.message_id().as_str());
}

/// The trace id of an envelope's run, as 32 hex digits: its `traceparent`'s,
/// which is the run id's.
pub fn trace_id(env: &Envelope) -> String {
    match env.traceparent.split('-').nth(1) {
        Some(t) if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) => {
            t.to_ascii_lowercase()
        }
        _ => env.run_id.simple().to_string(),
    }
}

/// The span of one phase attempt, `phase <name>`, child of the envelope's
/// `traceparent` (a step netra sealed always has a valid one; were it not
/// valid, the one the step would have is derived again).
pub fn phase_attempt(env: &Envelope) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "phase",
        otel.name = format!("phase {}", env.phase),
        otel.kind = "consumer",
        otel.status_code = Empty,
        netra.run_id = %env.run_id,
        netra.phase = env.phase.as_str(),
        netra.attempt = i64::from(env.attempt),
        netra.replay = i64::from(env.replay),
        netra.tenant = env.tenant.as_str(),
        netra.correlation_id = env.correlation_id.as_str(),
        netra.outcome = Empty,
        messaging.system = "rabbitmq",
        "messaging.operation.type" = "process",
        messaging.message.id = env.message_id().as_str(),
    );
    if !span.is_disabled() {
        // Fails only if no OpenTelemetry layer sees the span: nothing to
        // parent then.
        let _ = span.set_parent(remote_parent(env));
    }
    span
}

/// The context the envelope's `traceparent` names.
fn remote_parent(env: &Envelope) -> opentelemetry::Context {
    let extract = |tp: String| {
        let carrier = std::collections::HashMap::from([("traceparent".to_string(), tp)]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        cx.span().span_context().is_valid().then_some(cx)
    };
    extract(env.traceparent.clone())
        .or_else(|| {
            extract(crate::model::envelope::traceparent(
                env.run_id,
                &env.phase,
                env.attempt,
                env.replay,
            ))
        })
        .unwrap_or_default()
}

/// Records how the current phase attempt ended (`netra.outcome`:
/// `processed`, `retried`, `dead_lettered`, `deferred`, `duplicate`,
/// `fenced`, `held`, `not_waiting`, `unknown_run`, `handed_back`); a dead
/// letter and a hand-back are errors.
pub fn outcome(outcome: &'static str) {
    let span = Span::current();
    span.record("netra.outcome", outcome);
    if matches!(outcome, "dead_lettered" | "unknown_run" | "handed_back") {
        span.record("otel.status_code", "error");
    }
}

/// The `netra.outcome` of an attempt counted as `o` in the metrics.
pub fn outcome_name(o: crate::metrics::Outcome) -> &'static str {
    use crate::metrics::Outcome;
    match o {
        Outcome::Processed => "processed",
        Outcome::Retried => "retried",
        Outcome::DeadLettered => "dead_lettered",
        Outcome::Duplicate => "duplicate",
    }
}

/// The span of one tool call, `execute_tool <name>`; `netra.memo` says
/// whether the memo answered (`hit`), was asked in vain (`miss`) or not at
/// all (`off`).
pub fn tool_call(name: &str, tenant: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "execute_tool",
        otel.name = format!("execute_tool {name}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = name,
        "gen_ai.tool.type" = "function",
        netra.tenant = tenant,
        netra.memo = Empty,
        "error.type" = Empty,
    )
}

/// Marks `span` failed with `kind` (`error.type`).
pub fn failed(span: &Span, kind: &str) {
    span.record("otel.status_code", "error");
    span.record("error.type", kind);
}

/// What a model call is, for its span.
#[derive(Debug, Clone, Copy)]
pub struct ModelCall<'a> {
    /// The provider, as the ledger names it (`openai-compatible`).
    pub provider: &'a str,
    /// The model asked.
    pub model: &'a str,
    /// Why the agent asks (`triage`, `report_prose`, …).
    pub purpose: &'a str,
    /// The prompt's version.
    pub prompt_version: &'a str,
    /// The answer's token budget.
    pub max_tokens: u32,
    /// The sampling temperature.
    pub temperature: f64,
    /// The seed sent.
    pub seed: u64,
}

/// The span of one model call, `chat <model>`, with the `gen_ai.*`
/// attributes of the request; [`record_answer`] adds the answer's.
pub fn model_call(call: &ModelCall<'_>) -> Span {
    tracing::info_span!(
        target: TARGET,
        "chat",
        otel.name = format!("chat {}", call.model),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.system = call.provider,
        gen_ai.provider.name = call.provider,
        gen_ai.request.model = call.model,
        gen_ai.request.max_tokens = i64::from(call.max_tokens),
        gen_ai.request.temperature = call.temperature,
        gen_ai.request.seed = i64::try_from(call.seed).unwrap_or(i64::MAX),
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        netra.llm.purpose = call.purpose,
        netra.llm.prompt_version = call.prompt_version,
        netra.llm.ledger = Empty,
        netra.llm.ledger_row = Empty,
        netra.llm.latency_ms = Empty,
        "error.type" = Empty,
    )
}

/// Records a model call's answer: a ledger hit (`netra.llm.ledger = hit`,
/// the recorded answer reused) paid no tokens, so its usage is 0; a miss
/// has the tokens the model reported.
pub fn record_answer(
    span: &Span,
    answer: &ChatAnswer,
    reused: bool,
    ledger_row: i64,
    latency_ms: f64,
) {
    let paid = |n: u32| if reused { 0 } else { i64::from(n) };
    span.record("netra.llm.ledger", if reused { "hit" } else { "miss" });
    span.record("netra.llm.ledger_row", ledger_row);
    span.record("netra.llm.latency_ms", latency_ms);
    span.record("gen_ai.usage.input_tokens", paid(answer.input_tokens));
    span.record("gen_ai.usage.output_tokens", paid(answer.output_tokens));
    if !answer.model.is_empty() {
        span.record("gen_ai.response.model", answer.model.as_str());
    }
    if let Some(reason) = &answer.finish_reason {
        span.record("gen_ai.response.finish_reasons", reason.as_str());
    }
}
