//! The OTLP trace exporter: built only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, speaking OTLP over
//! HTTP with protobuf bodies (`http/protobuf`).
//!
//! The exporter's HTTP client is netra's own reqwest (rustls, with the
//! certificates of `NETRA_TLS_CA_FILE` beside the web's roots): the SDK's
//! batch processor exports from a thread of its own, and each request is
//! run on the process's tokio runtime, so no second HTTP stack or runtime
//! is built. An export that fails is logged once when it starts failing
//! and once when it works again, never with the endpoint's URL.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};

use super::Error;

/// The service name when `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) does not say.
pub const DEFAULT_SERVICE_NAME: &str = "netra";

/// The one protocol this build exports.
const PROTOCOL: &str = "http/protobuf";

/// The variables that turn export on; the first is the spec's general one.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// True when an OTLP endpoint is configured.
pub fn configured() -> bool {
    ENDPOINT_VARS.iter().any(|v| var(v).is_some())
}

/// The tracer provider exporting to the configured endpoint, or `None`
/// when no endpoint is set. Must be called on a tokio runtime (the export
/// requests run on it).
pub fn provider() -> Result<Option<SdkTracerProvider>, Error> {
    if !configured() {
        return Ok(None);
    }
    for name in ENDPOINT_VARS {
        if let Some(value) = var(name) {
            check_endpoint(name, &value)?;
        }
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Exporter("the OTLP exporter needs a tokio runtime to send from".into())
    })?;
    let client = ReqwestOnRuntime::new(runtime, timeout())?;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client)
        .build()
        // The builder's errors may quote the endpoint, which can carry a
        // password: say what failed without it.
        .map_err(|e| Error::Exporter(redact(&e.to_string())))?;
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build(),
    ))
}

/// What the protocol variables ask for that this build does not do
/// (it exports `http/protobuf` whatever they say), to log once logging is up.
pub fn protocol_warnings() -> Vec<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .filter_map(|name| {
        let p = var(name)?;
        (!p.trim().eq_ignore_ascii_case(PROTOCOL))
            .then(|| format!("{name}={p} is not supported by this build; exporting {PROTOCOL}"))
    })
    .collect()
}

/// The process as a resource: its service name (default
/// [`DEFAULT_SERVICE_NAME`]), version, instance (`NETRA_WORKER_ID` when
/// set) and pid, with what `OTEL_RESOURCE_ATTRIBUTES` adds.
pub fn resource() -> Resource {
    let mut b = Resource::builder();
    let named_in_attributes = var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
        a.split(',').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, _)| k.trim() == "service.name")
        })
    });
    if var("OTEL_SERVICE_NAME").is_none() && !named_in_attributes {
        b = b.with_service_name(DEFAULT_SERVICE_NAME);
    }
    b = b
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("process.pid", i64::from(std::process::id())));
    if let Some(id) = var("NETRA_WORKER_ID") {
        b = b.with_attribute(KeyValue::new("service.instance.id", id));
    }
    b.build()
}

/// An endpoint must be an `http://` or `https://` URL; the error names
/// the variable, never its value.
fn check_endpoint(name: &str, value: &str) -> Result<(), Error> {
    match reqwest::Url::parse(value.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        _ => Err(Error::Exporter(format!(
            "{name} is not an http:// or https:// URL"
        ))),
    }
}

/// The export timeout: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
/// `OTEL_EXPORTER_OTLP_TIMEOUT` in milliseconds, default 10 s.
fn timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|v| var(v).and_then(|ms| ms.trim().parse::<u64>().ok()))
    .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// Replaces every configured endpoint's text in `text`.
fn redact(text: &str) -> String {
    ENDPOINT_VARS
        .iter()
        .filter_map(|v| var(v))
        .fold(text.to_string(), |t, e| t.replace(e.trim(), "<endpoint>"))
}

/// An OTLP HTTP client: reqwest, each request run on the runtime of the
/// process (the batch processor's thread has none).
#[derive(Debug, Clone)]
struct ReqwestOnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// True while exports fail (so a failure is logged once).
    failing: Arc<AtomicBool>,
}

impl ReqwestOnRuntime {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        let ca = crate::tls::ca_from_env().map_err(|e| Error::Exporter(e.to_string()))?;
        if let Some(ca) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca.pem.as_bytes())
                .map_err(|e| Error::Exporter(format!("NETRA_TLS_CA_FILE: {e}")))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Exporter(format!("HTTP client: {e}")))?;
        Ok(ReqwestOnRuntime {
            client,
            runtime,
            failing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Notes how an export went; logs a change.
    fn note(&self, failure: Option<String>) {
        match failure {
            Some(why) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %why, "OTLP trace export failed; spans are dropped until it works again");
                }
            }
            None => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("OTLP trace export works again");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ReqwestOnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move {
                let r = client.execute(request).await?;
                let (status, headers) = (r.status(), r.headers().clone());
                let body = r.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await;
        let (status, headers, body) = match sent {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                let e = e.without_url();
                self.note(Some(e.to_string()));
                return Err(Box::new(e));
            }
            Err(join) => {
                self.note(Some(join.to_string()));
                return Err(Box::new(join));
            }
        };
        self.note((!status.is_success()).then(|| format!("the collector answered {status}")));
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_urls_and_errors_do_not_quote_them() {
        assert!(check_endpoint("X", "http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("X", "https://collector:4318/base").is_ok());
        for bad in [
            "collector:4318",
            "grpc://u:hunter2@c:4317",
            "not a url hunter2",
        ] {
            let e = check_endpoint("X", bad).unwrap_err().to_string();
            assert!(e.contains('X') && !e.contains("hunter2"), "{e}");
        }
    }
}
