//! End-to-end pipeline behaviour on the real RabbitMQ, Postgres and Redis.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use crate::common::{
    wrapper::{standard_with, Wrapper},
    *,
};
use futures_util::future::BoxFuture;
use netra::{
    error::PhaseError,
    pipeline::{
        agent::{Agent, AgentContext, AgentSet, PhaseInput},
        envelope::Envelope,
    },
};
use serde_json::{json, Value};
use uuid::Uuid;

async fn attempt_rows(t: &TestApp, run: Uuid) -> Vec<(String, i32, String)> {
    sqlx::query_as(
        "SELECT phase, attempt, outcome FROM phase_attempts WHERE run_id = $1 ORDER BY id",
    )
    .bind(run)
    .fetch_all(&t.pool)
    .await
    .unwrap()
}

async fn phases_run(t: &TestApp, run: Uuid) -> Vec<String> {
    attempt_rows(t, run)
        .await
        .into_iter()
        .filter(|(_, _, o)| o == "succeeded")
        .map(|(p, _, _)| p)
        .collect()
}

#[tokio::test]
async fn each_category_follows_the_routing_table() {
    let t = TestApp::start().await;
    load_sample(&t.pool, "chat-prod", 600).await;
    let cases = [
        (
            "Cut the cost of workload chat-prod by 30% without pushing p95 latency over 3 s",
            vec!["triage", "data", "optimization", "actions", "reporting"],
            "completed",
        ),
        (
            "Show the usage breakdown of workload chat-prod for the last 7 days",
            vec!["triage", "data", "reporting"],
            "completed",
        ),
        (
            "What is prompt caching?",
            vec!["triage", "reporting"],
            "completed",
        ),
        (
            "Reduce the cost of workload nothing-here",
            vec!["triage", "data", "reporting"],
            "needs_input",
        ),
    ];
    for (i, (msg, _, _)) in cases.iter().enumerate() {
        t.publish_request(
            &json!({"message": msg}),
            Some(&format!("req-{i}")),
            None,
            Some(&format!("corr-{i}")),
        )
        .await;
    }
    let runs = t.wait_all(4, &["completed", "needs_input"]).await;
    for (i, (_, phases, status)) in cases.iter().enumerate() {
        let run = runs
            .iter()
            .find(|r| r.correlation_id == format!("corr-{i}"))
            .expect("run per request");
        assert_eq!(&run.status, status, "case {i}");
        assert_eq!(&phases_run(&t, run.id).await, phases, "case {i}");
        let report = run.result.as_ref().expect("result");
        assert!(report["markdown"]
            .as_str()
            .unwrap()
            .starts_with("# netra report"));
        // Every transition is in the history, starting with queued.
        let history = netra::store::runs::history(&t.pool, run.id).await.unwrap();
        assert_eq!(history.first().unwrap().to_status, "queued");
        assert_eq!(history.last().unwrap().to_status, *status);
        // The thread holds the user message and the agent report.
        let msgs = netra::store::threads::messages(&t.pool, run.thread_id)
            .await
            .unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
            vec!["user", "agent"]
        );
    }
    let needs = runs.iter().find(|r| r.status == "needs_input").unwrap();
    assert!(needs.result.as_ref().unwrap()["markdown"]
        .as_str()
        .unwrap()
        .contains("nothing-here"));
    t.finish().await;
}

#[tokio::test]
async fn http_submit_and_status_end_to_end() {
    let t = TestApp::start().await;
    load_sample(&t.pool, "w1", 300).await;
    let token = t.tenant("default").await;
    let base = t.base();
    let tok = token.clone();
    let created: Value = tokio::task::spawn_blocking(move || {
        let agent = http();
        let mut r = agent
            .post(&format!("{base}/v1/runs"))
            .header("authorization", &format!("Bearer {tok}"))
            .send_json(json!({"message": "Cut the cost of workload w1"}))
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        r.body_mut().read_json().unwrap()
    })
    .await
    .unwrap();
    let id: Uuid = created["run_id"].as_str().unwrap().parse().unwrap();
    let base = t.base();
    let done: Value = tokio::task::spawn_blocking(move || {
        let agent = http();
        loop {
            let mut r = agent
                .get(&format!("{base}/v1/runs/{id}?wait=30"))
                .header("authorization", &format!("Bearer {token}"))
                .call()
                .unwrap();
            let v: Value = r.body_mut().read_json().unwrap();
            if v["status"] == "completed" {
                return v;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(done["phase"], "reporting");
    assert!(done["history"].as_array().unwrap().len() >= 10);
    assert!(done["result"]["recommendations"].as_array().is_some());
    t.finish().await;
}

#[tokio::test]
async fn same_request_message_id_makes_one_run_and_reply_carries_correlation_id() {
    let t = TestApp::start().await;
    let mut replies = Replies::open(&t.config).await;
    for _ in 0..3 {
        t.publish_request(
            &json!({"message": "What is batching?"}),
            Some("same-key"),
            Some(&replies.queue),
            Some("corr-x"),
        )
        .await;
    }
    let (cid, body) = replies.next().await;
    assert_eq!(cid, "corr-x");
    assert_eq!(body["status"], "completed");
    let runs = t.wait_all(1, &["completed"]).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(body["run_id"], json!(runs[0].id));
    // The copies left no thread behind.
    let (threads,): (i64,) = sqlx::query_as("SELECT count(*) FROM threads")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(threads, 1);
    assert!(body["result"]["markdown"].is_string(), "{body}");
    // A duplicate of the final phase message publishes no second reply: its
    // follow-ups were confirmed and marked dispatched.
    wait_dispatched(&t, runs[0].id, "reporting").await;
    let env = Envelope::new(runs[0].id, "reporting", 1, 0, "corr-x", &runs[0].tenant);
    t.publish_envelope(&env).await;
    let engine = &t.app.as_ref().unwrap().engine;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while engine.metrics.duplicates("reporting") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "duplicate never handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next reply on the queue is the next request's, not a copy.
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        None,
        Some(&replies.queue),
        Some("corr-next"),
    )
    .await;
    let (cid_next, _) = replies.next().await;
    assert_eq!(
        cid_next, "corr-next",
        "a duplicate published its reply again"
    );
    replies.close().await;
    t.finish().await;
}

#[tokio::test]
async fn duplicate_delivery_changes_state_once() {
    let t = TestApp::start().await;
    load_sample(&t.pool, "dup", 200).await;
    for i in 0..5 {
        t.publish_request(
            &json!({"message": "Cut the cost of workload dup"}),
            Some(&format!("d-{i}")),
            None,
            None,
        )
        .await;
    }
    let runs = t.wait_all(5, &["completed"]).await;
    // Deliver every phase message of every run again, twice.
    let ns = t.config.namespace.clone();
    for run in &runs {
        for (phase, attempt, _) in attempt_rows(&t, run.id).await {
            let env = Envelope::new(
                run.id,
                &phase,
                attempt as u32,
                0,
                &run.correlation_id,
                &run.tenant,
            );
            for _ in 0..2 {
                t.publish_envelope(&env).await;
            }
        }
    }
    // Wait until the duplicates are consumed, then check nothing changed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for p in ["triage", "data", "optimization", "actions", "reporting"] {
        while t.queue_depth(&format!("{ns}.phase.{p}")).await > 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let runs_after = t.wait_all(5, &["completed"]).await;
    for (a, b) in runs.iter().zip(&runs_after) {
        assert_eq!(
            a.updated_at, b.updated_at,
            "a duplicate changed run {}",
            a.id
        );
        let per_phase: Vec<(String, i64)> = sqlx::query_as(
            "SELECT phase, count(*) FROM phase_attempts WHERE run_id = $1 GROUP BY phase",
        )
        .bind(a.id)
        .fetch_all(&t.pool)
        .await
        .unwrap();
        assert!(per_phase.iter().all(|(_, n)| *n == 1), "{per_phase:?}");
    }
    t.finish().await;
}

/// The standard agents with the agent of `phase` failing its first
/// `fail_times` calls (transient or permanent), then delegating.
fn with_flaky(phase: &'static str, fail_times: u32, permanent: bool) -> AgentSet {
    let error = if permanent {
        PhaseError::permanent("injected permanent failure")
    } else {
        PhaseError::transient("injected 503 from dependency")
    };
    standard_with(phase, |w| w.failing_first(fail_times, error)).0
}

#[tokio::test]
async fn transient_failure_retries_with_growing_delays_then_completes() {
    let (config, db) = test_config().await;
    let t = TestApp::start_with(config, db, Some(with_flaky("triage", 2, false))).await;
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    let run = t.wait_all(1, &["completed"]).await.remove(0);
    let attempts = attempt_rows(&t, run.id).await;
    let triage: Vec<_> = attempts.iter().filter(|(p, _, _)| p == "triage").collect();
    assert_eq!(
        triage
            .iter()
            .map(|(_, a, o)| (*a, o.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1, "failed_transient"),
            (2, "failed_transient"),
            (3, "succeeded")
        ]
    );
    // The history shows retrying with next_attempt_at, and the delays grow.
    let history = netra::store::runs::history(&t.pool, run.id).await.unwrap();
    let retries: Vec<_> = history
        .iter()
        .filter(|h| h.to_status == "retrying")
        .collect();
    assert_eq!(retries.len(), 2);
    let delay = |h: &netra::store::runs::HistoryRow| {
        let at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(h.detail.as_ref().unwrap()["next_attempt_at"].clone()).unwrap();
        at - h.at
    };
    assert!(delay(retries[0]) < delay(retries[1]), "delays must grow");
    t.finish().await;
}

#[tokio::test]
async fn always_transient_dead_letters_after_max_attempts() {
    let (mut config, db) = test_config().await;
    config.max_attempts = 3;
    let t = TestApp::start_with(config, db, Some(with_flaky("triage", u32::MAX, false))).await;
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    let run = t.wait_all(1, &["dead_lettered"]).await.remove(0);
    let attempts = attempt_rows(&t, run.id).await;
    assert_eq!(attempts.len(), 3);
    assert!(run.error.as_ref().unwrap().contains("attempts spent: 3/3"));
    let ns = &t.config.namespace;
    let dl: (String, i32) =
        sqlx::query_as("SELECT error_class, attempts FROM dead_letters WHERE run_id = $1")
            .bind(run.id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(dl, ("transient".to_string(), 3));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while t.queue_depth(&format!("{ns}.dlq.triage")).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letter not in the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.finish().await;
}

#[tokio::test]
async fn permanent_failure_dead_letters_after_one_attempt() {
    let (config, db) = test_config().await;
    let t = TestApp::start_with(config, db, Some(with_flaky("triage", u32::MAX, true))).await;
    let mut replies = Replies::open(&t.config).await;
    t.publish_request(
        &json!({"message": "What is caching?"}),
        None,
        Some(&replies.queue),
        Some("c-perm"),
    )
    .await;
    let (cid, body) = replies.next().await;
    assert_eq!(
        (cid.as_str(), body["status"].as_str()),
        ("c-perm", Some("dead_lettered"))
    );
    let run = t.wait_all(1, &["dead_lettered"]).await.remove(0);
    assert_eq!(attempt_rows(&t, run.id).await.len(), 1);
    assert_eq!(
        t.queue_depth(&format!("{}.dlq.triage", t.config.namespace))
            .await,
        1
    );
    replies.close().await;
    t.finish().await;
}

struct Panicky;
impl Agent for Panicky {
    fn phase(&self) -> &'static str {
        "triage"
    }
    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            if input.request["message"] == "boom" {
                panic!("agent exploded");
            }
            // The real triage reads the tenant's workloads: it gets the
            // real context.
            netra::agents::standard()
                .get("triage")
                .unwrap()
                .run(ctx, input)
                .await
        })
    }
}

#[tokio::test]
async fn panicking_agent_dead_letters_and_the_consumer_lives_on() {
    let (config, db) = test_config().await;
    let agents = netra::agents::standard().with(Arc::new(Panicky));
    let t = TestApp::start_with(config, db, Some(agents)).await;
    t.publish_request(&json!({"message": "boom"}), Some("a"), None, Some("boom"))
        .await;
    t.publish_request(
        &json!({"message": "What is caching?"}),
        Some("b"),
        None,
        Some("fine"),
    )
    .await;
    let runs = t.wait_all(2, &["completed", "dead_lettered"]).await;
    let boom = runs.iter().find(|r| r.correlation_id == "boom").unwrap();
    assert_eq!(boom.status, "dead_lettered");
    assert!(boom
        .error
        .as_ref()
        .unwrap()
        .contains("agent panicked: agent exploded"));
    assert_eq!(
        runs.iter()
            .find(|r| r.correlation_id == "fine")
            .unwrap()
            .status,
        "completed"
    );
    t.finish().await;
}

struct Hung;
impl Agent for Hung {
    fn phase(&self) -> &'static str {
        "triage"
    }
    fn run<'a>(
        &'a self,
        _: &'a AgentContext,
        _: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            std::future::pending::<()>().await;
            Ok(Value::Null)
        })
    }
}

#[tokio::test]
async fn hung_agent_times_out_as_transient_and_frees_the_slot() {
    let (mut config, db) = test_config().await;
    config.phase_timeout = Duration::from_millis(300);
    config.max_attempts = 2;
    config.concurrency.insert("triage".into(), 1);
    let agents = netra::agents::standard().with(Arc::new(Hung));
    let t = TestApp::start_with(config, db, Some(agents)).await;
    for i in 0..3 {
        t.publish_request(
            &json!({"message": "anything"}),
            Some(&format!("h{i}")),
            None,
            None,
        )
        .await;
    }
    // With one slot, three runs can only all finish if each hung attempt is cut off.
    let runs = t.wait_all(3, &["dead_lettered"]).await;
    for r in runs {
        assert!(r.error.unwrap().contains("timed out"));
        let rows = attempt_rows(&t, r.id).await;
        assert_eq!(
            rows.iter().map(|x| x.2.as_str()).collect::<Vec<_>>(),
            vec!["failed_transient", "failed_transient"]
        );
    }
    t.finish().await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_once_and_others_go_on() {
    let t = TestApp::start().await;
    let ns = t.config.namespace.clone();
    let q = format!("{ns}.phase.triage");
    let valid = Envelope::new(Uuid::new_v4(), "triage", 1, 0, "c", "default");
    let mut unknown_schema = serde_json::to_value(&valid).unwrap();
    unknown_schema["v"] = json!(99);
    let mut missing = serde_json::to_value(&valid).unwrap();
    missing.as_object_mut().unwrap().remove("run_id");
    let wrong_phase = Envelope::new(Uuid::new_v4(), "nonsense", 1, 0, "c", "default");
    let poisons: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"{not json".to_vec()),
        ("not_utf8", vec![0xff, 0xfe, 0x00]),
        ("oversized", vec![b' '; t.config.max_message_bytes + 1]),
        (
            "unknown_schema",
            serde_json::to_vec(&unknown_schema).unwrap(),
        ),
        ("unknown_phase", wrong_phase.to_bytes()),
        ("invalid_envelope", serde_json::to_vec(&missing).unwrap()),
        ("unknown_run", valid.to_bytes()),
    ];
    for (_, body) in &poisons {
        t.publish_sealed_raw(&q, body.clone()).await;
    }
    // A well-formed envelope without netra's seal is forged.
    t.publish_raw(&q, valid.to_bytes()).await;
    let poisons: Vec<(&str, Vec<u8>)> = poisons
        .into_iter()
        .chain([("forged", valid.to_bytes())])
        .collect();
    t.publish_raw(&format!("{ns}.requests"), b"[1,2,3]".to_vec())
        .await;
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    t.wait_all(1, &["completed"]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let kinds: Vec<(String,)> = sqlx::query_as(
            "SELECT split_part(error, ':', 1) FROM dead_letters ORDER BY created_at",
        )
        .fetch_all(&t.pool)
        .await
        .unwrap();
        if kinds.len() > poisons.len() {
            let kinds: Vec<String> = kinds.into_iter().map(|(k,)| k).collect();
            for (kind, _) in &poisons {
                assert!(
                    kinds.contains(&kind.to_string()),
                    "{kind} missing in {kinds:?}"
                );
            }
            assert!(kinds.contains(&"invalid_request".to_string()));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "poisons not all indexed: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        t.queue_depth(&format!("{ns}.dlq.triage")).await,
        poisons.len() as u32
    );
    assert_eq!(t.queue_depth(&format!("{ns}.dlq.requests")).await, 1);
    assert_eq!(t.queue_depth(&q).await, 0);
    t.finish().await;
}

#[tokio::test]
async fn topology_redeclaration_is_harmless() {
    let t = TestApp::start().await;
    let ns = t.config.namespace.clone();
    // A message waiting in a phase queue survives re-declaration.
    t.publish_raw(&format!("{ns}.dlq.data"), b"keep me".to_vec())
        .await;
    let conn = netra::broker::connect(&t.config, "redeclare")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let names = netra::broker::topology::Names::new(&ns);
    let phases = netra::agents::standard().phases();
    for _ in 0..3 {
        netra::broker::topology::declare(&ch, &names, &phases)
            .await
            .unwrap();
    }
    assert_eq!(t.queue_depth(&format!("{ns}.dlq.data")).await, 1);
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    t.wait_all(1, &["completed"]).await;
    let _ = conn.close(200, "bye".into()).await;
    t.finish().await;
}

#[tokio::test]
async fn cancelled_run_is_processed_no_further() {
    let (config, db) = test_config().await;
    let t = TestApp::start_with(config, db, Some(with_flaky("triage", u32::MAX, false))).await;
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    let run = t.wait_all(1, &["retrying"]).await.remove(0);
    let (after, changed) =
        netra::store::runs::cancel(&t.pool, Some("default"), run.id, &crate::common::said())
            .await
            .unwrap()
            .unwrap();
    assert!(changed);
    assert_eq!(after.status, "cancelled");
    // The scheduler never republishes a cancelled run; it stays cancelled.
    let again =
        netra::store::runs::cancel(&t.pool, Some("default"), run.id, &crate::common::said())
            .await
            .unwrap()
            .unwrap();
    assert!(!again.1);
    let r = t.wait_run(run.id, &["cancelled"]).await;
    assert!(r.finished_at.is_some());
    t.finish().await;
}

#[tokio::test]
async fn waiting_retry_holds_no_delivery_and_no_consumer_slot() {
    // One triage slot; the first run fails and waits 30 s for its retry. The
    // second run can only get through the same slot if the first delivery
    // was acked instead of held during the wait.
    let (mut config, db) = test_config().await;
    config.concurrency.insert("triage".into(), 1);
    config.retry_initial = Duration::from_secs(30);
    config.retry_max = Duration::from_secs(30);
    let t = TestApp::start_with(config, db, Some(with_flaky("triage", 1, false))).await;
    t.publish_request(
        &json!({"message": "What is caching?"}),
        Some("first"),
        None,
        Some("first"),
    )
    .await;
    let first = t.wait_all(1, &["retrying"]).await.remove(0);
    t.publish_request(
        &json!({"message": "What is batching?"}),
        Some("second"),
        None,
        Some("second"),
    )
    .await;
    let runs = t.wait_all(2, &["retrying", "completed"]).await;
    let second = runs.iter().find(|r| r.correlation_id == "second").unwrap();
    t.wait_run(second.id, &["completed"]).await;
    let first_now = netra::store::runs::get(&t.pool, first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_now.status, "retrying");
    assert!(first_now.next_attempt_at.is_some());
    assert_eq!(
        t.queue_depth(&format!("{}.phase.triage", t.config.namespace))
            .await,
        0
    );
    t.finish().await;
}

#[tokio::test]
async fn pending_retry_survives_a_restart_of_every_worker() {
    let (mut config, db) = test_config().await;
    config.retry_initial = Duration::from_secs(2);
    config.retry_max = Duration::from_secs(2);
    let mut t = TestApp::start_with(
        config.clone(),
        db.clone(),
        Some(with_flaky("triage", u32::MAX, false)),
    )
    .await;
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    let run = t.wait_all(1, &["retrying"]).await.remove(0);
    // Every worker stops while the retry waits; a new one (healthy agent) starts.
    t.app.take().unwrap().shutdown().await;
    let t2 = TestApp::start_with(config, db, None).await;
    let done = t2.wait_run(run.id, &["completed"]).await;
    assert_eq!(done.status, "completed");
    let rows = attempt_rows(&t2, run.id).await;
    assert_eq!(rows[0].2, "failed_transient");
    assert_eq!(
        rows.iter()
            .filter(|r| r.0 == "triage" && r.2 == "succeeded")
            .count(),
        1
    );
    t2.finish().await;
}

#[tokio::test]
async fn phase_result_arriving_after_cancel_is_discarded() {
    // Triage blocks until released, then delegates: the test acts while it runs.
    let (agents, gate) = standard_with("triage", Wrapper::gated);
    let (config, db) = test_config().await;
    let t = TestApp::start_with(config, db, Some(agents)).await;
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    let run = t.wait_all(1, &["running"]).await.remove(0);
    netra::store::runs::cancel(&t.pool, Some("default"), run.id, &crate::common::said())
        .await
        .unwrap();
    gate.open(10);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let rows = attempt_rows(&t, run.id).await;
        if !rows.is_empty() {
            assert_eq!(
                rows,
                vec![("triage".to_string(), 1, "discarded".to_string())]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late result was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = netra::store::runs::get(&t.pool, run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status, "cancelled");
    assert!(after.result.is_none());
    let (outputs,): (i64,) = sqlx::query_as("SELECT count(*) FROM phase_outputs WHERE run_id = $1")
        .bind(run.id)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(outputs, 0);
    assert_eq!(
        t.queue_depth(&format!("{}.phase.reporting", t.config.namespace))
            .await,
        0
    );
    t.finish().await;
}

#[tokio::test]
async fn concurrent_copies_of_one_message_apply_once() {
    // Both copies of the triage message are inside the agent at the same time
    // (held by the gate); only one effect may commit, and the run goes on.
    // Triage blocks until released, then delegates: the test acts while it runs.
    let (agents, gate) = standard_with("triage", Wrapper::gated);
    let (config, db) = test_config().await;
    let t = TestApp::start_with(config, db, Some(agents)).await;
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    let run = t.wait_all(1, &["running"]).await.remove(0);
    let env = Envelope::new(run.id, "triage", 1, 0, &run.correlation_id, &run.tenant);
    t.publish_envelope(&env).await;
    // Wait until the copy is delivered too (the queue is empty again).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while t
        .queue_depth(&format!("{}.phase.triage", t.config.namespace))
        .await
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.open(10);
    t.wait_run(run.id, &["completed"]).await;
    let rows = attempt_rows(&t, run.id).await;
    assert_eq!(
        rows.iter().filter(|r| r.0 == "triage").count(),
        1,
        "{rows:?}"
    );
    assert_eq!(phases_run(&t, run.id).await, vec!["triage", "reporting"]);
    t.finish().await;
}

#[tokio::test]
async fn an_output_whose_commit_failed_is_reused_by_the_redelivery() {
    // The effect transaction of the first triage attempt fails (an injected
    // error in Postgres); the computed output goes to the agent output cache
    // and the delivery is handed back; the redelivered message must reuse it
    // instead of running the agent again.
    let (config, db) = test_config().await;
    let (agents, counted) = standard_with("triage", |w| w);
    let t = TestApp::start_with(config, db, Some(agents)).await;
    for sql in [
        "CREATE SEQUENCE fail_once",
        "CREATE FUNCTION fail_first_triage_output() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF nextval('fail_once') = 1 THEN RAISE EXCEPTION 'injected commit failure'; END IF; \
         RETURN NEW; END $$",
        "CREATE TRIGGER fail_first_triage_output BEFORE INSERT ON phase_outputs FOR EACH ROW \
         WHEN (NEW.phase = 'triage') EXECUTE FUNCTION fail_first_triage_output()",
    ] {
        sqlx::query(sql).execute(&t.pool).await.unwrap();
    }
    t.publish_request(&json!({"message": "What is caching?"}), None, None, None)
        .await;
    let run = t.wait_all(1, &["completed"]).await.remove(0);
    let (failures,): (i64,) = sqlx::query_as("SELECT last_value FROM fail_once")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(
        failures, 2,
        "the first commit failed, the second went through"
    );
    assert_eq!(
        counted.calls.load(Ordering::SeqCst),
        1,
        "the agent ran once; the redelivery took its output from the cache"
    );
    let attempts = attempt_rows(&t, run.id).await;
    assert_eq!(
        attempts.iter().filter(|(p, _, _)| p == "triage").count(),
        1,
        "{attempts:?}"
    );
    assert_eq!(phases_run(&t, run.id).await, vec!["triage", "reporting"]);
    t.finish().await;
}

/// Waits until the follow-ups of a run's phase are marked dispatched.
async fn wait_dispatched(t: &TestApp, run: Uuid, phase: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let done: Option<bool> = sqlx::query_scalar(
            "SELECT bool_and(dispatched) FROM processed_messages WHERE run_id = $1 AND phase = $2",
        )
        .bind(run)
        .bind(phase)
        .fetch_one(&t.pool)
        .await
        .unwrap();
        if done == Some(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked dispatched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
