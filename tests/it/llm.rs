//! The language-model path through the real pipeline (triage by the model).
//!
//! The first tests talk to [`FakeLlm`], a provider that misbehaves on
//! purpose (429 with `Retry-After`, 500, timeouts, bodies cut short or not
//! JSON, answers off the schema or with invented numbers): transient
//! failures are retried and every try is a ledger row, a refused answer is
//! asked again once with what was wrong, and what cannot be used falls back
//! to the embedded analyst (or dead-letters with `NETRA_LLM_FALLBACK=fail`).
//!
//! The last tests talk to a real llama-server (SmolLM2-135M, tiny and weak:
//! they check structure, never wisdom), at `NETRA_LLM_TEST_URL` (a base URL
//! up to `/v1`; `NETRA_LLM_TEST_MODEL` names the model). deploy/local/test
//! starts the server and sets both; without them those tests skip, saying
//! so.

use std::time::Duration;

use crate::common::{
    fake_llm::{FakeLlm, Reply},
    wrapper::standard_with,
    *,
};
use netra::{
    broker::{publisher::Publisher, topology::Names},
    config::Config,
    error::PhaseError,
    llm::config::{Fallback, LlmConfig},
    model::Phase,
    pipeline::{agent::AgentSet, replay},
    store::{
        dead_letters::{self, DeadLetterFilter},
        ledger::{self, CallRow},
        runs::Run,
    },
};
use serde_json::{json, Value};
use uuid::Uuid;

const REQUEST: &str = "Cut the cost of workload chat-prod by 30% keeping p95 under 2 s";

/// What a good model answers to [`REQUEST`].
fn good_answer() -> Value {
    json!({
        "intent": "cut the cost of chat-prod",
        "category": "optimization",
        "workloads": ["chat-prod"],
        "priorities": ["cost", "latency"],
        "constraints": [
            {"kind": "target_reduction_pct", "value": 30, "span": "by 30%"},
            {"kind": "latency_slo_ms", "value": 2000, "span": "under 2 s"},
        ],
        "time_window": {"days": 0, "span": ""},
    })
}

fn model_config(base_url: String, model: &str) -> LlmConfig {
    LlmConfig {
        base_url: Some(base_url),
        model: model.into(),
        timeout: Duration::from_secs(30),
        retries: 2,
        // Triage's calls only: these tests count the requests of one
        // phase's calls (reporting's prose has tests of its own).
        phases: vec![Phase::Triage],
        ..LlmConfig::default()
    }
}

/// netra with the model at `base_url` (tuned by `tune`), and telemetry of
/// `chat-prod`.
async fn start_at(base_url: String, model: &str, tune: impl FnOnce(&mut Config)) -> TestApp {
    let (mut config, db) = test_config().await;
    config.llm = model_config(base_url, model);
    tune(&mut config);
    start_loaded(config, db, None).await
}

async fn start_loaded(config: Config, db: String, agents: Option<AgentSet>) -> TestApp {
    let t = TestApp::start_with(config, db, agents).await;
    load_sample(&t.pool, "chat-prod", 600).await;
    t
}

/// Submits `text` and waits for its run to be in one of `statuses`.
async fn submit(t: &TestApp, text: &str, statuses: &[&str]) -> Run {
    let corr = Uuid::new_v4().to_string();
    t.publish_request(&json!({"message": text}), None, None, Some(&corr))
        .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM runs WHERE correlation_id = $1")
                .bind(&corr)
                .fetch_optional(&t.pool)
                .await
                .unwrap();
        if let Some((id,)) = found {
            return t.wait_run(id, statuses).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run for the request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn triage_output(t: &TestApp, run: Uuid) -> Value {
    sqlx::query_scalar("SELECT output FROM phase_outputs WHERE run_id = $1 AND phase = 'triage'")
        .bind(run)
        .fetch_one(&t.pool)
        .await
        .unwrap()
}

async fn calls(t: &TestApp, run: Uuid) -> Vec<CallRow> {
    ledger::calls_of_run(&t.pool, run).await.unwrap()
}

/// The embedded analyst's triage of `text`, as stored.
fn embedded(text: &str) -> Value {
    serde_json::to_value(netra::agents::triage::classify(text, None)).unwrap()
}

/// A triage output without its model note.
fn without_note(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("model");
    }
    v
}

#[tokio::test]
async fn transient_failures_are_retried_and_every_try_is_in_the_ledger() {
    let fake = FakeLlm::start(
        vec![
            Reply::error_500(),
            Reply::CutShort,
            Reply::Hang(Duration::from_secs(600)),
        ],
        Reply::json(&good_answer()),
    )
    .await;
    let t = start_at(fake.base_url(), "fake-model", |c| {
        c.llm.timeout = Duration::from_secs(3);
        c.llm.retries = 3;
    })
    .await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    assert_eq!(fake.requests(), 4);
    let rows = calls(&t, run.id).await;
    let errors: Vec<String> = rows
        .iter()
        .map(|r| r.call.error.clone().unwrap_or_default())
        .collect();
    assert_eq!(rows.len(), 4, "{errors:?}");
    assert!(errors[0].contains("HTTP 500"), "{errors:?}");
    assert!(errors[1].contains("cut short"), "{errors:?}");
    assert!(errors[2].contains("timed out"), "{errors:?}");
    let answer = &rows[3];
    assert!(answer.call.error.is_none());
    assert!(answer.call.input_tokens > 0 && answer.call.output_tokens > 0);
    assert!(rows
        .iter()
        .all(|r| r.call.purpose == "triage" && r.attempt == 1 && r.call.reused_from.is_none()));
    let triage = triage_output(&t, run.id).await;
    let note = &triage["model"];
    assert_eq!(note["used"], json!(true), "{note}");
    assert_eq!(note["fallback"], Value::Null, "{note}");
    assert_eq!(note["calls"], json!([answer.id]));
    assert_eq!(note["reused"], json!(false));
    assert_eq!(triage["constraints"]["latency_slo_ms"], json!(2000.0));
    assert_eq!(triage["constraints"]["target_reduction_pct"], json!(30.0));
    t.finish().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake = FakeLlm::start(vec![Reply::too_many(1)], Reply::json(&good_answer())).await;
    let t = start_at(fake.base_url(), "fake-model", |_| {}).await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    // Asked again once, and not before the server said.
    assert_eq!((fake.requests(), fake.early()), (2, 0));
    let rows = calls(&t, run.id).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]
            .call
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("HTTP 429"),
        "{:?}",
        rows[0].call.error
    );
    assert!(rows[1].call.error.is_none());
    assert_eq!(
        triage_output(&t, run.id).await["model"]["used"],
        json!(true)
    );
    t.finish().await;
}

#[tokio::test]
async fn a_retry_after_longer_than_the_rate_wait_is_not_waited_out_nor_cut_short() {
    let fake = FakeLlm::start(vec![Reply::too_many(3600)], Reply::json(&good_answer())).await;
    let t = start_at(fake.base_url(), "fake-model", |c| {
        c.llm.rate_limit_wait = Duration::from_secs(1);
    })
    .await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    // Not called again within the hour it asked for: the embedded analyst
    // decided, and the note says why.
    assert_eq!((fake.requests(), fake.early()), (1, 0));
    let triage = triage_output(&t, run.id).await;
    let note = &triage["model"];
    assert_eq!(note["used"], json!(false));
    assert!(
        note["fallback"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 429"),
        "{note}"
    );
    assert_eq!(without_note(triage), embedded(REQUEST));
    t.finish().await;
}

#[tokio::test]
async fn an_answer_off_the_schema_is_asked_again_with_the_error_then_the_embedded_analyst_decides()
{
    let fake = FakeLlm::start(
        vec![
            Reply::Answer(r#"{"intent": 1}"#.into()),
            Reply::Answer(r#"{"intent": "cut cost", "category": "cheaper"}"#.into()),
        ],
        Reply::json(&good_answer()),
    )
    .await;
    let t = start_at(fake.base_url(), "fake-model", |_| {}).await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    assert_eq!(fake.requests(), 2, "asked again once, not more");
    // The second request holds the refused answer and why it was refused.
    let second = &fake.bodies()[1];
    let messages = second["messages"].as_array().unwrap();
    let n = messages.len();
    assert_eq!(messages[n - 2]["role"], "assistant");
    assert_eq!(messages[n - 2]["content"], r#"{"intent": 1}"#);
    let feedback = messages[n - 1]["content"].as_str().unwrap();
    assert!(
        feedback.contains("refused") && feedback.contains("schema"),
        "{feedback}"
    );
    assert_eq!(second["response_format"]["type"], "json_schema");
    let rows = calls(&t, run.id).await;
    assert_eq!(
        rows.iter()
            .map(|r| r.call.purpose.as_str())
            .collect::<Vec<_>>(),
        vec!["triage", "triage_retry"]
    );
    let triage = triage_output(&t, run.id).await;
    let note = triage["model"].clone();
    assert_eq!(note["used"], json!(false));
    let why = note["fallback"].as_str().unwrap_or_default();
    assert!(
        why.contains("refused twice") && why.contains("schema"),
        "{note}"
    );
    assert_eq!(note["calls"], json!([rows[0].id, rows[1].id]));
    assert_eq!(without_note(triage), embedded(REQUEST));
    t.finish().await;
}

#[tokio::test]
async fn an_answer_taken_on_the_second_ask_records_no_fallback() {
    let fake = FakeLlm::start(
        vec![Reply::Answer("not JSON at all".into())],
        Reply::json(&good_answer()),
    )
    .await;
    let t = start_at(fake.base_url(), "fake-model", |_| {}).await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    assert_eq!(fake.requests(), 2);
    let note = &triage_output(&t, run.id).await["model"];
    assert_eq!(note["used"], json!(true), "{note}");
    assert_eq!(note["fallback"], Value::Null, "{note}");
    assert_eq!(note["calls"].as_array().map(Vec::len), Some(2));
    t.finish().await;
}

#[tokio::test]
async fn invented_numbers_are_dropped_and_recorded() {
    let mut answer = good_answer();
    // A latency SLO whose span is not in the request, and a budget whose
    // span states no amount of money.
    answer["constraints"] = json!([
        {"kind": "target_reduction_pct", "value": 30, "span": "by 30%"},
        {"kind": "latency_slo_ms", "value": 1500, "span": "under 1.5 s"},
        {"kind": "monthly_budget_usd", "value": 95, "span": "p95"},
    ]);
    let fake = FakeLlm::start(Vec::new(), Reply::json(&answer)).await;
    let t = start_at(fake.base_url(), "fake-model", |_| {}).await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    assert_eq!(fake.requests(), 1);
    let triage = triage_output(&t, run.id).await;
    let note = &triage["model"];
    assert_eq!(note["used"], json!(true), "{note}");
    let dropped: Vec<&str> = note["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(
        dropped[0].contains("1500") && dropped[0].contains("not in the request"),
        "{dropped:?}"
    );
    assert!(dropped[1].contains("95"), "{dropped:?}");
    assert_eq!(triage["constraints"]["latency_slo_ms"], Value::Null);
    assert_eq!(triage["constraints"]["monthly_budget_usd"], Value::Null);
    assert_eq!(triage["constraints"]["target_reduction_pct"], json!(30.0));
    t.finish().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_falls_back_at_once() {
    let fake = FakeLlm::start(
        vec![Reply::Raw("<html>502 bad gateway</html>".into())],
        Reply::json(&good_answer()),
    )
    .await;
    let t = start_at(fake.base_url(), "fake-model", |_| {}).await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    assert_eq!(fake.requests(), 1, "a permanent failure is not retried");
    let triage = triage_output(&t, run.id).await;
    let note = &triage["model"];
    assert_eq!(note["used"], json!(false));
    assert!(
        note["fallback"]
            .as_str()
            .unwrap_or_default()
            .contains("not JSON"),
        "{note}"
    );
    assert_eq!(without_note(triage), embedded(REQUEST));
    let rows = calls(&t, run.id).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].call.error.is_some());
    t.finish().await;
}

#[tokio::test]
async fn transient_failures_that_outlast_the_retries_fall_back() {
    let fake = FakeLlm::start(Vec::new(), Reply::error_500()).await;
    let t = start_at(fake.base_url(), "fake-model", |c| c.llm.retries = 1).await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.error);
    assert_eq!(fake.requests(), 2);
    assert_eq!(calls(&t, run.id).await.len(), 2);
    let triage = triage_output(&t, run.id).await;
    assert!(
        triage["model"]["fallback"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 500"),
        "{triage}"
    );
    assert_eq!(without_note(triage), embedded(REQUEST));
    t.finish().await;
}

#[tokio::test]
async fn with_fallback_fail_a_permanent_error_dead_letters_the_run() {
    let fake = FakeLlm::start(
        Vec::new(),
        Reply::Status {
            code: 400,
            retry_after: None,
            body: r#"{"error":{"message":"unsupported parameter"}}"#.into(),
        },
    )
    .await;
    let t = start_at(fake.base_url(), "fake-model", |c| {
        c.llm.fallback = Fallback::Fail;
    })
    .await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "dead_lettered");
    assert_eq!(run.phase.as_deref(), Some("triage"));
    let error = run.error.unwrap_or_default();
    assert!(error.contains("HTTP 400"), "{error}");
    assert_eq!(fake.requests(), 1, "dead-lettered at once");
    let f = DeadLetterFilter {
        phase: Some("triage".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(dead_letters::list(&t.pool, &f).await.unwrap().len(), 1);
    t.finish().await;
}

#[tokio::test]
async fn with_fallback_fail_transient_errors_spend_the_attempts_then_dead_letter() {
    let fake = FakeLlm::start(Vec::new(), Reply::error_500()).await;
    let t = start_at(fake.base_url(), "fake-model", |c| {
        c.llm.fallback = Fallback::Fail;
        c.llm.retries = 0;
        c.max_attempts = 2;
    })
    .await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "dead_lettered");
    assert!(run.error.unwrap_or_default().contains("HTTP 500"));
    assert_eq!(fake.requests(), 2);
    let attempts: Vec<i32> = calls(&t, run.id).await.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![1, 2]);
    t.finish().await;
}

#[tokio::test]
async fn with_fallback_fail_an_answer_refused_twice_dead_letters_the_run() {
    let fake = FakeLlm::start(Vec::new(), Reply::Answer("[]".into())).await;
    let t = start_at(fake.base_url(), "fake-model", |c| {
        c.llm.fallback = Fallback::Fail;
    })
    .await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert_eq!(run.status.as_str(), "dead_lettered");
    let error = run.error.unwrap_or_default();
    assert!(error.contains("refused twice"), "{error}");
    assert_eq!(fake.requests(), 2);
    t.finish().await;
}

// ---- the real model ---------------------------------------------------------

/// The real server's base URL and model, or `None` (the test skips, and
/// says so).
fn real_model(test: &str) -> Option<(String, String)> {
    let url = std::env::var("NETRA_LLM_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let Some(url) = url else {
        eprintln!(
            "SKIPPED {test}: NETRA_LLM_TEST_URL is not set (deploy/local/test starts \
             llama-server and sets it; by hand: deploy/local/llm start, then \
             NETRA_LLM_TEST_URL=http://127.0.0.1:8093/v1)"
        );
        return None;
    };
    let model =
        std::env::var("NETRA_LLM_TEST_MODEL").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    Some((url, model))
}

/// Settings for the real, slow, shared model: small answers (the weak model
/// fills any budget; small ones keep the retry's prompt within its
/// context), long limits (a loaded machine), no time limit that a slow
/// answer could trip.
fn for_real_model(c: &mut Config) {
    c.llm.max_tokens = 96;
    c.llm.timeout = Duration::from_secs(300);
    c.phase_timeout = Duration::from_secs(900);
}

/// Checks the model note and the ledger rows of a run triaged by the real
/// model: tokens, latency and prompt version recorded; the answer used, or
/// the fallback said.
async fn assert_recorded(t: &TestApp, run: Uuid) -> Value {
    let triage = triage_output(t, run).await;
    let note = triage["model"].clone();
    assert!(
        note["used"] == json!(true) || note["fallback"].is_string(),
        "neither used nor a fallback recorded: {note}"
    );
    let rows = calls(t, run).await;
    assert!(!rows.is_empty(), "no ledger rows");
    for r in &rows {
        assert_eq!(r.phase, "triage");
        assert!(r.call.prompt_version.starts_with("triage/"), "{r:?}");
        assert!(r.call.reused_from.is_none(), "{r:?}");
        if r.call.error.is_none() {
            assert!(r.call.input_tokens > 0 && r.call.output_tokens > 0, "{r:?}");
            assert!(r.call.latency_ms > 0.0, "{r:?}");
        }
    }
    let answered: Vec<i64> = rows
        .iter()
        .filter(|r| r.call.error.is_none())
        .map(|r| r.id)
        .collect();
    assert!(!answered.is_empty(), "the model never answered: {rows:?}");
    assert_eq!(note["calls"], json!(answered), "{note}");
    assert!(note["input_tokens"].as_u64().unwrap_or(0) > 0, "{note}");
    assert!(note["latency_ms"].as_f64().unwrap_or(0.0) > 0.0, "{note}");
    triage
}

#[tokio::test]
async fn real_model_triage_is_in_the_ledger_with_tokens_and_latency() {
    let Some((url, model)) = real_model("real_model_triage_is_in_the_ledger") else {
        return;
    };
    let t = start_at(url, &model, for_real_model).await;
    let run = submit(&t, REQUEST, &["completed", "needs_input", "dead_lettered"]).await;
    assert!(
        ["completed", "needs_input"].contains(&run.status.as_str()),
        "{:?}",
        run.error
    );
    let triage = assert_recorded(&t, run.id).await;
    eprintln!("real model's triage note: {}", triage["model"]);
    t.finish().await;
}

/// The figures of a report that do not depend on how they are worded.
fn figures(report: &Value) -> Value {
    let recommendations: Vec<Value> = report["recommendations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            json!({
                "kind": r["kind"], "workload_id": r["workload_id"],
                "monthly_savings_usd": r["monthly_savings_usd"],
                "latency_impact_ms": r["latency_impact_ms"], "figures": r["figures"],
            })
        })
        .collect();
    json!({
        "current_monthly_cost_usd": report["current_monthly_cost_usd"],
        "total_monthly_savings_usd": report["total_monthly_savings_usd"],
        "recommendations": recommendations,
        "metrics": report["metrics"],
    })
}

/// What of a triage the later phases compute from.
fn reading(triage: &Value) -> Value {
    json!({
        "category": triage["category"], "workload_ids": triage["workload_ids"],
        "constraints": triage["constraints"], "priorities": triage["priorities"],
        "time_range_days": triage["time_range_days"],
    })
}

#[tokio::test]
async fn real_model_reports_the_embedded_analysts_figures() {
    let Some((url, model)) = real_model("real_model_reports_the_embedded_analysts_figures") else {
        return;
    };
    let with_model = start_at(url, &model, for_real_model).await;
    let (config, db) = test_config().await;
    let without = start_loaded(config, db, None).await;
    let requests = [REQUEST, "Reduce the cost of workload chat-prod"];
    let mut compared = 0;
    for text in requests {
        let statuses = ["completed", "needs_input", "dead_lettered"];
        let a = submit(&with_model, text, &statuses).await;
        let b = submit(&without, text, &statuses).await;
        assert_eq!(b.status.as_str(), "completed", "{:?}", b.error);
        assert!(
            ["completed", "needs_input"].contains(&a.status.as_str()),
            "{:?}",
            a.error
        );
        let ta = assert_recorded(&with_model, a.id).await;
        let tb = triage_output(&without, b.id).await;
        assert!(tb.get("model").is_none_or(Value::is_null));
        // Figures are comparable only where triage read the same workload,
        // constraints and category: the weak model may read them otherwise
        // (its note says how), and then its report answers another question.
        if reading(&ta) != reading(&tb) {
            eprintln!(
                "not compared (triage read `{text}` differently): model {} / embedded {}",
                reading(&ta),
                reading(&tb)
            );
            continue;
        }
        assert_eq!(a.status, b.status);
        let (ra, rb) = (a.result.unwrap(), b.result.unwrap());
        assert!(rb["current_monthly_cost_usd"].as_f64().unwrap_or(0.0) > 0.0);
        assert_eq!(figures(&ra), figures(&rb), "for `{text}`");
        compared += 1;
    }
    assert!(compared > 0, "no request was read alike by both triages");
    with_model.finish().await;
    without.finish().await;
}

#[tokio::test]
async fn real_model_a_replay_reuses_the_ledger_and_asks_nothing() {
    let Some((url, model)) = real_model("real_model_a_replay_reuses_the_ledger") else {
        return;
    };
    a_replay_reuses_the_ledger(FakeLlm::proxy(&url).await, &model, for_real_model).await;
}

/// The same with the fake model, which always answers well: the ledger
/// hits are checked without a real model too.
#[tokio::test]
async fn a_replay_reuses_the_ledger_and_asks_nothing() {
    let fake = FakeLlm::start(Vec::new(), Reply::json(&good_answer())).await;
    a_replay_reuses_the_ledger(fake, "gpt-4o-mini", |_| {}).await;
}

/// A run triaged by the model at `proxy` (which counts the requests; the
/// config tuned by `tune`) dead-letters after the model call; its replay
/// reuses each recorded answer, as a row of its own, and asks nothing.
async fn a_replay_reuses_the_ledger(proxy: FakeLlm, model: &str, tune: impl FnOnce(&mut Config)) {
    // The real triage, then a permanent failure in replay generation 0: the
    // model call completed and was recorded, the phase dead-letters.
    let (agents, _) = standard_with("triage", |w| {
        w.failing_after_in_replay_0(PhaseError::permanent("injected after the model call"))
    });
    let (mut config, db) = test_config().await;
    config.llm = model_config(proxy.base_url(), model);
    tune(&mut config);
    let t = start_loaded(config, db, Some(agents)).await;
    let run = submit(&t, REQUEST, &["dead_lettered", "completed"]).await;
    assert_eq!(run.status.as_str(), "dead_lettered");
    assert!(run
        .error
        .unwrap_or_default()
        .contains("injected after the model call"));
    let asked = proxy.requests();
    let first = calls(&t, run.id).await;
    assert!(asked > 0 && first.len() == asked, "{asked} {first:?}");
    assert!(first.iter().all(|r| r.call.error.is_none()), "{first:?}");

    let f = DeadLetterFilter {
        phase: Some("triage".into()),
        limit: 10,
        ..Default::default()
    };
    let targets = dead_letters::list(&t.pool, &f).await.unwrap();
    assert_eq!(targets.len(), 1);
    let conn = netra::broker::connect(&t.config, "replay").await.unwrap();
    let p = Publisher::open(&conn).await.unwrap();
    let opts = replay::Options {
        actor: "operator:test".into(),
        ..Default::default()
    };
    let names = Names::new(&t.config.namespace);
    let seal = &t.app.as_ref().unwrap().engine.seal;
    let r = replay::replay(&t.pool, &names, seal, Some(&p), &targets, &opts, |_| {})
        .await
        .unwrap();
    assert_eq!(r.replayed, 1);
    let _ = conn.close(200, "bye".into()).await;
    t.wait_run(run.id, &["completed", "needs_input"]).await;
    // Triage ran again, as replay generation 1 (the phases after it start
    // their own generations over).
    let history = netra::store::runs::history(&t.pool, run.id).await.unwrap();
    assert!(history.iter().any(|h| h.to_status == "running"
        && h.phase.as_deref() == Some("triage")
        && h.replay == 1));

    // Nothing new reached the server; each recorded answer was reused, as a
    // row of its own of replay generation 1.
    assert_eq!(proxy.requests(), asked, "the replay called the model");
    let all = calls(&t, run.id).await;
    let reused: Vec<&CallRow> = all.iter().filter(|r| r.replay == 1).collect();
    assert_eq!(reused.len(), first.len(), "{all:?}");
    for (again, original) in reused.iter().zip(&first) {
        assert_eq!(again.call.reused_from, Some(original.id));
        assert_eq!((again.call.input_tokens, again.call.output_tokens), (0, 0));
        assert_eq!(again.call.purpose, original.call.purpose);
    }
    let note = &triage_output(&t, run.id).await["model"];
    assert_eq!(note["reused"], json!(true), "{note}");
    t.finish().await;
}
