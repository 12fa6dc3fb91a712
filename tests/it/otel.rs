//! Traces over OTLP: two `netra serve` processes with disjoint phases
//! export to a receiver started here, which decodes the protobuf bodies
//! (`opentelemetry-proto`). One run is one trace whose id is the run id,
//! across both processes; each phase attempt is a span under its
//! envelope's `traceparent`, with the tool and model calls it made as its
//! children, and the model call carries the `gen_ai.*` attributes with the
//! token counts the (fake) model reported. The processes are stopped with
//! SIGTERM, and what they export is flushed on that path.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::StatusCode, routing::post, Router};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, KeyValue},
};
use prost::Message;
use serde_json::json;

use crate::common::{
    fake_llm::{FakeLlm, Reply},
    *,
};

const REQUEST: &str = "Cut the cost of workload chat-prod by 30% keeping p95 under 2 s";

/// One span as it arrived, with its process's resource.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, any_value::Value>,
    resource: BTreeMap<String, any_value::Value>,
}

impl Received {
    fn text(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(any_value::Value::IntValue(n)) => Some(*n),
            _ => None,
        }
    }

    fn pid(&self) -> Option<i64> {
        match self.resource.get("process.pid") {
            Some(any_value::Value::IntValue(n)) => Some(*n),
            _ => None,
        }
    }

    fn service(&self) -> Option<&str> {
        match self.resource.get("service.name") {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn map(kvs: &[KeyValue]) -> BTreeMap<String, any_value::Value> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.as_ref()?.value.clone()?)))
        .collect()
}

/// An OTLP/HTTP trace receiver on a free port of 127.0.0.1.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<Received>>>>,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "text/plain")],
            vec![],
        );
    };
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let resource = map(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Received {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: map(&s.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        vec![],
    )
}

impl Receiver {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            endpoint,
            spans,
            task,
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// A `netra serve` process, its standard error collected.
struct Worker {
    child: std::process::Child,
    log: std::thread::JoinHandle<String>,
}

impl Worker {
    fn spawn(
        config: &netra::config::Config,
        llm: &str,
        otlp: &str,
        id: &str,
        args: &[&str],
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netra"));
        cmd.arg("serve")
            .args(args)
            .arg("--no-http")
            .env("NETRA_DATABASE_URL", database_url(config))
            .env("NETRA_NAMESPACE", &config.namespace)
            .env("NETRA_WORKER_ID", id)
            .env("NETRA_AMQP_DEFAULT_TENANT", "default")
            .env("NETRA_LLM_BASE_URL", llm)
            .env("NETRA_LLM_MODEL", "gpt-4o-mini")
            .env("NETRA_LLM_PHASES", "triage")
            .env("NETRA_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for var in [
            "NETRA_LLM_API_KEY",
            "NETRA_LLM_RPM",
            "NETRA_LLM_TPM",
            "NETRA_LLM_FALLBACK",
            "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Worker { child, log }
    }

    fn pid(&self) -> i64 {
        i64::from(self.child.id())
    }

    /// SIGTERM, then its exit status and log (a bounded wait).
    async fn stop(mut self) -> (bool, String) {
        assert!(Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let waited = tokio::time::timeout(
            DEADLINE,
            tokio::task::spawn_blocking(move || {
                let status = self.child.wait().unwrap();
                (status.success(), self.log.join().unwrap_or_default())
            }),
        )
        .await;
        waited.expect("the worker exits after SIGTERM").unwrap()
    }
}

/// The span id of the `traceparent` netra gives a step.
fn step_span_id(run: uuid::Uuid, phase: &str) -> String {
    let tp = netra::model::envelope::traceparent(run, phase, 1, 0);
    tp.split('-').nth(2).unwrap().to_string()
}

#[tokio::test]
async fn one_run_is_one_trace_across_two_worker_processes() {
    let (config, db, pool) = fresh_db().await;
    load_sample(&pool, "chat-prod", 600).await;
    let answer = json!({
        "intent": "cut the cost of chat-prod",
        "category": "optimization",
        "workloads": ["chat-prod"],
        "priorities": ["cost", "latency"],
        "constraints": [
            {"kind": "target_reduction_pct", "value": 30, "span": "by 30%"},
            {"kind": "latency_slo_ms", "value": 2000, "span": "under 2 s"},
        ],
        "time_window": {"days": 0, "span": ""},
    });
    let llm = FakeLlm::start(vec![], Reply::json_counted(&answer, 321, 54)).await;
    let receiver = Receiver::start().await;
    let front = Worker::spawn(
        &config,
        &llm.base_url(),
        &receiver.endpoint,
        "otel-front",
        &["--phases", "triage,data"],
    );
    let back = Worker::spawn(
        &config,
        &llm.base_url(),
        &receiver.endpoint,
        "otel-back",
        &[
            "--phases",
            "optimization,actions,reporting",
            "--no-requests",
        ],
    );
    let (front_pid, back_pid) = (front.pid(), back.pid());

    // Publish once the front worker has declared its queues.
    let conn = netra::broker::connect(&config, "otel test").await.unwrap();
    let publisher = netra::broker::publisher::Publisher::open(&conn)
        .await
        .unwrap();
    let msg = netra::broker::publisher::Outgoing {
        exchange: String::new(),
        routing_key: format!("{}.requests", config.namespace),
        body: serde_json::to_vec(&json!({"message": REQUEST})).unwrap(),
        correlation_id: Some("otel-1".into()),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while publisher.publish_routed(&msg).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never declared its queues"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    let run = wait_all(&pool, 1, &["completed", "needs_input", "dead_lettered"])
        .await
        .remove(0);
    let (front_ok, front_log) = front.stop().await;
    let (back_ok, back_log) = back.stop().await;
    assert_eq!(run.status.as_str(), "completed", "{front_log}\n{back_log}");
    assert!(front_ok && back_ok, "{front_log}\n{back_log}");
    assert_eq!(llm.requests(), 1, "the model was asked once");

    let spans = receiver.spans();
    let trace = run.id.simple().to_string();
    let logs = format!("{front_log}\n{back_log}");
    let phases: BTreeMap<String, Received> = spans
        .iter()
        .filter(|s| s.name.starts_with("phase "))
        .map(|s| {
            (
                s.text("netra.phase").unwrap_or_default().to_string(),
                s.clone(),
            )
        })
        .collect();
    let names: BTreeSet<&str> = phases.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["actions", "data", "optimization", "reporting", "triage"]),
        "{spans:#?}\n{logs}"
    );
    // (a) One trace, whose id is the run id, from two processes.
    for (phase, s) in &phases {
        assert_eq!(s.trace_id, trace, "{phase}: {s:#?}");
        assert_eq!(s.name, format!("phase {phase}"));
        // Its parent is the step's span of the envelope's traceparent.
        assert_eq!(s.parent_span_id, step_span_id(run.id, phase), "{phase}");
        assert_eq!(s.text("netra.run_id"), Some(run.id.to_string().as_str()));
        assert_eq!(s.int("netra.attempt"), Some(1), "{s:#?}");
        assert_eq!(s.int("netra.replay"), Some(0), "{s:#?}");
        assert_eq!(s.text("netra.tenant"), Some("default"), "{s:#?}");
        assert_eq!(s.text("netra.outcome"), Some("processed"), "{s:#?}");
        assert_eq!(s.service(), Some("netra"), "{s:#?}");
        let pid = if ["triage", "data"].contains(&phase.as_str()) {
            front_pid
        } else {
            back_pid
        };
        assert_eq!(s.pid(), Some(pid), "{phase} came from the other process");
    }
    let phase_of = |parent: &str| {
        phases
            .iter()
            .find(|(_, s)| s.span_id == parent)
            .map(|(p, _)| p.as_str())
    };
    // (b) Tool spans under the phases that call tools.
    let tools: Vec<&Received> = spans
        .iter()
        .filter(|s| s.text("gen_ai.operation.name") == Some("execute_tool"))
        .collect();
    let tool_phases: BTreeSet<&str> = tools
        .iter()
        .map(|t| {
            assert_eq!(t.trace_id, trace, "{t:#?}");
            assert_eq!(
                t.name,
                format!("execute_tool {}", t.text("gen_ai.tool.name").unwrap())
            );
            phase_of(&t.parent_span_id).unwrap_or_else(|| panic!("orphan tool span {t:#?}"))
        })
        .collect();
    assert_eq!(
        tool_phases,
        BTreeSet::from(["actions", "data"]),
        "{tools:#?}"
    );
    assert!(
        tools
            .iter()
            .any(|t| t.text("gen_ai.tool.name") == Some("workload_metrics")),
        "{tools:#?}"
    );
    // A model span under triage, with the gen_ai attributes and the tokens
    // the model reported.
    let models: Vec<&Received> = spans
        .iter()
        .filter(|s| s.text("gen_ai.operation.name") == Some("chat"))
        .collect();
    assert_eq!(models.len(), 1, "{models:#?}");
    let m = models[0];
    assert_eq!(m.trace_id, trace);
    assert_eq!(phase_of(&m.parent_span_id), Some("triage"), "{m:#?}");
    assert_eq!(m.name, "chat gpt-4o-mini");
    assert_eq!(m.text("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(m.text("gen_ai.provider.name"), Some("openai-compatible"));
    assert_eq!(m.text("gen_ai.system"), Some("openai-compatible"));
    assert_eq!(m.int("gen_ai.usage.input_tokens"), Some(321), "{m:#?}");
    assert_eq!(m.int("gen_ai.usage.output_tokens"), Some(54), "{m:#?}");
    assert_eq!(m.text("netra.llm.ledger"), Some("miss"), "{m:#?}");
    assert_eq!(m.pid(), Some(front_pid));

    cleanup(&config, &db).await;
}
