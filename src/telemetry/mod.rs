//! Logs and traces (docs/DESIGN.md, "Tracing and logs").
//!
//! Logs go to standard error, filtered by `RUST_LOG` (default `info`, with
//! sqlx and lapin at `warn`), as text or, with `NETRA_LOG_FORMAT=json`, one
//! JSON object per line that carries the fields of its spans (inside a
//! phase, `span.trace_id`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the
//! spans of [`spans`] are also exported over OTLP ([`otlp`]); without it no
//! exporter is built and the logs are all there is. [`shutdown`] flushes
//! the exporter: the CLI calls it when a command ends, `netra serve` after
//! its graceful shutdown.

pub mod otlp;
pub mod spans;

use std::sync::Mutex;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::{level_filters::LevelFilter, Level, Metadata};
use tracing_subscriber::{
    filter::{filter_fn, EnvFilter, FilterFn},
    fmt::{self, MakeWriter},
    layer::SubscriberExt,
    util::SubscriberInitExt,
    Layer,
};

/// The log filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn";

/// How log lines are written (`NETRA_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the current span and of
    /// every span it is in.
    Json,
}

impl LogFormat {
    /// Reads `NETRA_LOG_FORMAT`: `text` (also when unset or empty) or `json`.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var("NETRA_LOG_FORMAT") {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(LogFormat::Text),
        }
    }

    /// `text` or `json` (case-insensitive; empty is `text`).
    pub fn parse(value: &str) -> Result<Self, Error> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(Error::LogFormat(value.to_string())),
        }
    }
}

/// A setting that stops the start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `NETRA_LOG_FORMAT` names no format.
    #[error("NETRA_LOG_FORMAT: `{0}` is not a log format (use text or json)")]
    LogFormat(String),
    /// The OTLP exporter cannot be built (the message names the setting,
    /// never an endpoint's URL).
    #[error("OpenTelemetry export: {0}")]
    Exporter(String),
}

/// The exporting provider, kept for [`shutdown`].
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// Installs the global subscriber once; later calls are no-ops. Lenient:
/// a bad `NETRA_LOG_FORMAT` logs text, an exporter that cannot be built
/// exports nothing, and each says so in a warning.
pub fn init() {
    init_with_default(DEFAULT_FILTER);
}

/// Like [`init`], with another filter when `RUST_LOG` is not set.
pub fn init_with_default(default: &str) {
    let mut warnings = Vec::new();
    let format = LogFormat::from_env().unwrap_or_else(|e| {
        warnings.push(format!("{e}; logging text"));
        LogFormat::Text
    });
    let provider = otlp::provider().unwrap_or_else(|e| {
        warnings.push(format!("{e}; no traces are exported"));
        None
    });
    install(format, default, provider, warnings);
}

/// Like [`init_with_default`], but a bad setting (`NETRA_LOG_FORMAT`, an
/// OTLP endpoint that is not a URL) is an error: the CLI's start-up check.
pub fn try_init(default: &str) -> Result<(), Error> {
    let format = LogFormat::from_env()?;
    let provider = otlp::provider()?;
    install(format, default, provider, Vec::new());
    Ok(())
}

/// Installs the subscriber (unless one is installed already), keeps the
/// provider for [`shutdown`], and logs `warnings`.
fn install(
    format: LogFormat,
    default: &str,
    provider: Option<SdkTracerProvider>,
    warnings: Vec<String>,
) {
    let tracer = provider.as_ref().map(|p| p.tracer("netra"));
    let installed = subscriber(format, log_filter(default), std::io::stderr, tracer)
        .try_init()
        .is_ok();
    if let Some(p) = provider {
        if installed {
            if let Ok(mut slot) = PROVIDER.lock() {
                *slot = Some(p);
            }
            tracing::info!("exporting traces over OTLP (http/protobuf)");
            for w in otlp::protocol_warnings() {
                tracing::warn!("{w}");
            }
        } else {
            // Another subscriber was first: this provider has no spans.
            let _ = p.shutdown();
        }
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
}

/// Flushes and stops the exporter, if there is one (at most 5 s): the end
/// of a command and of `netra serve`'s graceful shutdown.
pub async fn shutdown() {
    let provider = PROVIDER.lock().ok().and_then(|mut p| p.take());
    let Some(provider) = provider else { return };
    // The export runs on this runtime: wait for it off the runtime's threads.
    match tokio::task::spawn_blocking(move || provider.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing the trace exporter failed"),
        Err(e) => tracing::warn!(error = %e, "flushing the trace exporter failed"),
    }
}

/// The log filter: `RUST_LOG`, else `default`; the exported spans are left
/// out (the delivery span holds what they would add to a line).
fn log_filter(default: &str) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let asked = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(spans::TARGET));
    without_exported_spans(filter, asked)
}

fn without_exported_spans(filter: EnvFilter, asked: bool) -> EnvFilter {
    if asked {
        return filter;
    }
    match format!("{}=off", spans::TARGET).parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// What is exported: the spans of [`spans`], and netra's log events at
/// `info` and above inside them (as span events), except the exporter's own.
fn export_filter() -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    filter_fn(|meta| {
        let target = meta.target();
        if meta.is_span() {
            return target == spans::TARGET;
        }
        let netra = target == "netra" || target.starts_with("netra::");
        netra && !target.starts_with("netra::telemetry") && *meta.level() <= Level::INFO
    })
    .with_max_level_hint(LevelFilter::INFO)
}

/// The subscriber: logs in `format` to `writer` through `filter`, and the
/// exported spans through `tracer` when there is one.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    tracer: Option<SdkTracer>,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let export = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(export_filter())
    });
    let logs = match format {
        LogFormat::Text => fmt::layer().with_writer(writer).with_target(false).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(export)
        .with(logs.with_filter(filter))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceContextExt;
    use serde_json::Value;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;
    use crate::model::envelope::Envelope;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Buffer) -> Vec<Value> {
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn log_formats_parse_and_an_unknown_one_is_an_error() {
        assert_eq!(LogFormat::parse("json").unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse(" JSON ").unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse("text").unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse("").unwrap(), LogFormat::Text);
        let e = LogFormat::parse("xml").unwrap_err().to_string();
        assert!(e.contains("NETRA_LOG_FORMAT") && e.contains("xml"), "{e}");
    }

    #[test]
    fn json_lines_inside_a_phase_carry_the_trace_id() {
        let buf = Buffer::default();
        let writer = {
            let buf = buf.clone();
            move || buf.clone()
        };
        // A provider without an exporter: spans get their ids, nothing leaves.
        let provider = SdkTracerProvider::builder().build();
        let filter = without_exported_spans(EnvFilter::new("info"), false);
        let sub = subscriber(
            LogFormat::Json,
            filter,
            writer,
            Some(provider.tracer("test")),
        );
        let run = uuid::Uuid::new_v4();
        let env = Envelope::new(run, "data", 2, 1, "corr-1", "acme");
        let trace = run.simple().to_string();
        tracing::subscriber::with_default(sub, || {
            let delivery = spans::delivery("data");
            let _d = delivery.enter();
            spans::record_envelope(&delivery, &env);
            let phase = spans::phase_attempt(&env);
            // The attempt's span is in the run's trace, under the envelope's span.
            let cx = phase.context();
            assert_eq!(cx.span().span_context().trace_id().to_string(), trace);
            let _p = phase.enter();
            let tool = spans::tool_call("workload_metrics", "acme");
            assert_eq!(
                tool.context().span().span_context().trace_id().to_string(),
                trace
            );
            let _t = tool.enter();
            tracing::warn!(rows = 3, "inside a tool call");
        });
        tracing::subscriber::with_default(
            subscriber(
                LogFormat::Json,
                EnvFilter::new("info"),
                {
                    let buf = buf.clone();
                    move || buf.clone()
                },
                None,
            ),
            || tracing::info!("outside any phase"),
        );
        let lines = lines(&buf);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let inside = &lines[0];
        assert_eq!(inside["message"], "inside a tool call", "{inside}");
        assert_eq!(inside["rows"], 3, "{inside}");
        assert_eq!(inside["level"], "WARN", "{inside}");
        assert_eq!(inside["span"]["name"], "delivery", "{inside}");
        assert_eq!(inside["span"]["trace_id"], trace.as_str(), "{inside}");
        assert_eq!(inside["span"]["run_id"], run.to_string(), "{inside}");
        assert_eq!(inside["span"]["attempt"], 2, "{inside}");
        // The exported spans are not in the log lines.
        assert_eq!(
            inside["spans"].as_array().map(Vec::len),
            Some(1),
            "{inside}"
        );
        assert!(lines[1].get("span").is_none(), "{}", lines[1]);
        let _ = provider.shutdown();
    }

    /// Keeps what it is given.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collect {
        fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send
        {
            self.0.lock().unwrap().extend(batch);
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn model_spans_say_whether_the_ledger_answered_and_failures_are_errors() {
        let spans_out = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans_out.clone())
            .build();
        let sub = subscriber(
            LogFormat::Text,
            EnvFilter::new("off"),
            std::io::sink,
            Some(provider.tracer("test")),
        );
        let answer = crate::llm::ChatAnswer {
            content: "{}".into(),
            input_tokens: 100,
            output_tokens: 20,
            cached_tokens: 0,
            model: "m-2025".into(),
            finish_reason: Some("stop".into()),
        };
        let call = spans::ModelCall {
            provider: "openai-compatible",
            model: "m",
            purpose: "triage",
            prompt_version: "triage/1+abc",
            max_tokens: 512,
            temperature: 0.0,
            seed: 7,
        };
        tracing::subscriber::with_default(sub, || {
            let miss = spans::model_call(&call);
            spans::record_answer(&miss, &answer, false, 1, 12.5);
            drop(miss);
            let hit = spans::model_call(&call);
            spans::record_answer(&hit, &answer, true, 2, 0.0);
            drop(hit);
            let tool = spans::tool_call("catalog_lookup", "acme");
            spans::failed(&tool, "permanent");
        });
        let got = spans_out.0.lock().unwrap().clone();
        let attr = |s: &opentelemetry_sdk::trace::SpanData, k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        use opentelemetry::Value as V;
        assert_eq!(got.len(), 3, "{got:#?}");
        let (miss, hit, tool) = (&got[0], &got[1], &got[2]);
        assert_eq!(miss.name, "chat m");
        assert_eq!(miss.span_kind, opentelemetry::trace::SpanKind::Client);
        assert_eq!(attr(miss, "gen_ai.operation.name"), Some(V::from("chat")));
        assert_eq!(attr(miss, "gen_ai.request.model"), Some(V::from("m")));
        assert_eq!(attr(miss, "gen_ai.response.model"), Some(V::from("m-2025")));
        assert_eq!(attr(miss, "gen_ai.usage.input_tokens"), Some(V::I64(100)));
        assert_eq!(attr(miss, "gen_ai.usage.output_tokens"), Some(V::I64(20)));
        assert_eq!(attr(miss, "netra.llm.ledger"), Some(V::from("miss")));
        // A hit reused the recorded answer and paid nothing.
        assert_eq!(attr(hit, "netra.llm.ledger"), Some(V::from("hit")));
        assert_eq!(attr(hit, "gen_ai.usage.input_tokens"), Some(V::I64(0)));
        assert_eq!(attr(hit, "netra.llm.ledger_row"), Some(V::I64(2)));
        assert_eq!(tool.name, "execute_tool catalog_lookup");
        assert_eq!(attr(tool, "error.type"), Some(V::from("permanent")));
        assert!(
            matches!(tool.status, opentelemetry::trace::Status::Error { .. }),
            "{tool:#?}"
        );
        let _ = provider.shutdown();
    }

    #[test]
    fn an_invalid_traceparent_is_derived_again_from_the_step() {
        let run = uuid::Uuid::new_v4();
        let mut env = Envelope::new(run, "triage", 1, 0, "c", "t");
        env.traceparent = "garbage".into();
        assert_eq!(spans::trace_id(&env), run.simple().to_string());
        let provider = SdkTracerProvider::builder().build();
        let sub = subscriber(
            LogFormat::Text,
            EnvFilter::new("off"),
            std::io::sink,
            Some(provider.tracer("test")),
        );
        tracing::subscriber::with_default(sub, || {
            let phase = spans::phase_attempt(&env);
            let cx = phase.context();
            assert_eq!(
                cx.span().span_context().trace_id().to_string(),
                run.simple().to_string()
            );
        });
        let _ = provider.shutdown();
    }
}
