//! Leases on running attempts (docs/DESIGN.md "Rules the engine keeps",
//! Leases): a slow phase is run once even when its delivery comes back
//! while it runs; a lease that expired (its worker died) is retried without
//! spending an attempt; and the effect of an attempt that lost its lease is
//! discarded. Bounded waits on states, no timing thresholds.

use std::{
    future::Future,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use crate::common::{
    wrapper::{standard_with, Wrapper},
    *,
};
use netra::{pipeline::envelope::Envelope, store::runs::Run};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The standard agents with a slow triage: it counts its calls, then
/// waits until the test opens the gate (a model call that takes minutes),
/// then delegates; the slow agent, to count its calls and open its gate.
fn slow_triage() -> (netra::pipeline::agent::AgentSet, Arc<Wrapper>) {
    standard_with("triage", Wrapper::gated)
}

/// netra with a slow triage and leases of `lease`, and one request whose
/// triage has started and waits at the gate: the app, the slow agent, the
/// running run.
async fn slow_run_started(lease: Duration) -> (TestApp, Arc<Wrapper>, Run) {
    let (agents, slow) = slow_triage();
    let (mut config, db) = test_config().await;
    config.lease = lease;
    let t = TestApp::start_with(config, db, Some(agents)).await;
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        None,
        None,
        None,
    )
    .await;
    let counted = &slow;
    wait_until("the slow call started", move || async move {
        counted.calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    let run = t.wait_all(1, &["running"]).await.remove(0);
    (t, slow, run)
}

/// Waits (bounded) until `check` says yes; `what` names it in the panic.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn attempt_rows(pool: &PgPool, run: Uuid) -> Vec<(String, i32, String)> {
    sqlx::query_as(
        "SELECT phase, attempt, outcome FROM phase_attempts WHERE run_id = $1 ORDER BY id",
    )
    .bind(run)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn triage_rows(pool: &PgPool, run: Uuid) -> Vec<(i32, String)> {
    attempt_rows(pool, run)
        .await
        .into_iter()
        .filter(|(p, _, _)| p == "triage")
        .map(|(_, a, o)| (a, o))
        .collect()
}

/// The run's lease: (owner, token).
async fn lease(pool: &PgPool, run: Uuid) -> (Option<String>, Option<Uuid>) {
    sqlx::query_as("SELECT lease_owner, lease_token FROM runs WHERE id = $1")
        .bind(run)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How often the run reached `status`, by its history.
async fn times_reached(pool: &PgPool, run: Uuid, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM run_history WHERE run_id = $1 AND to_status = $2")
        .bind(run)
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack"),
    )
    .arg("rabbitmqctl")
    .args(args)
    .output()
    .expect("deploy/local/stack rabbitmqctl runs")
}

/// Closes (on the broker's side) every connection of netra worker
/// `worker_id` (named `netra <worker id>` in its client properties);
/// returns how many. The JSON listing names a connection's client, the
/// table listing the pid `close_connection` takes; both name its peer port.
fn close_connections_of(worker_id: &str) -> usize {
    let out = rabbitmqctl(&[
        "-q",
        "--formatter",
        "json",
        "list_connections",
        "peer_port",
        "client_properties",
    ]);
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON connection list");
    let name = Value::String(format!("netra {worker_id}")).to_string();
    let ports: Vec<String> = listed
        .iter()
        .filter(|c| c["client_properties"].to_string().contains(&name))
        .map(|c| c["peer_port"].to_string())
        .collect();
    let out = rabbitmqctl(&[
        "-q",
        "list_connections",
        "--no-table-headers",
        "pid",
        "peer_port",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((pid, port)) = line.split_once('\t') else {
            continue;
        };
        if ports.iter().any(|p| p == port.trim()) {
            let out = rabbitmqctl(&["close_connection", pid.trim(), "lease test"]);
            assert!(out.status.success(), "{out:?}");
            closed += 1;
        }
    }
    closed
}

#[tokio::test]
async fn a_redelivery_while_the_lease_is_live_does_not_run_the_phase_again() {
    let (agents, slow) = slow_triage();
    let (mut config, db) = test_config().await;
    let tag = Uuid::new_v4().simple().to_string();
    config.worker_id = format!("lease-a-{}", &tag[..8]);
    // The holder keeps calling the model after its connection is gone (the
    // grace bounds how long in-flight work may go on then).
    config.shutdown_grace = Duration::from_secs(60);
    // The holder's follow-ups go out on its next connection, not by the
    // stale-run sweep.
    config.republish_after = Duration::from_secs(3600);
    let a = TestApp::start_with(config.clone(), db, Some(agents.clone())).await;
    let mut config_b = config.clone();
    config_b.worker_id = format!("lease-b-{}", &tag[..8]);
    let mut b = a.start_peer(config_b, Some(agents)).await;
    let mut replies = Replies::open(&a.config).await;
    a.publish_request(
        &json!({"message": "What is prompt caching?"}),
        Some("slow-1"),
        Some(&replies.queue),
        Some("corr-slow"),
    )
    .await;
    let counted = &slow;
    wait_until("the slow call started", move || async move {
        counted.calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    let run = a.wait_all(1, &["running"]).await.remove(0);
    let (holder, _) = lease(&a.pool, run.id).await;
    let holder = holder.expect("the running attempt holds a lease");
    let other = if holder == a.config.worker_id {
        &b
    } else {
        assert_eq!(holder, b.config.worker_id);
        &a
    };
    let other_engine = &other.app.as_ref().expect("running").engine;

    // The holder loses its broker connection in the middle of the call: its
    // delivery comes back, to the other worker, which finds the lease live
    // and acks it without running the phase.
    assert!(close_connections_of(&holder) >= 1);
    wait_until(
        "the other worker acked the redelivery",
        move || async move { other_engine.metrics.duplicates("triage") >= 1 },
    )
    .await;
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1);

    // The call ends; the holder's commit moves the run on.
    slow.open(100);
    let done = a.wait_run(run.id, &["completed"]).await;
    assert_eq!(done.status, "completed");
    let (cid, body) = replies.next().await;
    assert_eq!(cid, "corr-slow");
    assert_eq!(body["status"], "completed");
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "the agent ran once");
    assert_eq!(
        triage_rows(&a.pool, run.id).await,
        vec![(1, "succeeded".to_string())]
    );
    assert_eq!(times_reached(&a.pool, run.id, "completed").await, 1);
    replies.close().await;
    if let Some(app) = b.app.take() {
        app.shutdown().await;
    }
    a.finish().await;
}

#[tokio::test]
async fn an_expired_lease_is_retried_without_spending_an_attempt() {
    let (mut config, db) = test_config().await;
    // Swept every half lease.
    config.lease = Duration::from_millis(600);
    let t = TestApp::start_with(config, db, None).await;
    let run = create_run(
        &t.pool,
        "default",
        "corr-dead",
        "What is prompt caching?",
        "triage",
    )
    .await;
    // A worker started triage and holds its lease (far from expiring)...
    sqlx::query(
        "UPDATE runs SET status = 'running', lease_owner = 'dead-worker', \
         lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 hour' \
         WHERE id = $1",
    )
    .bind(run.id)
    .execute(&t.pool)
    .await
    .unwrap();
    // ...so a copy of its step is acked without running...
    let env = Envelope::new(run.id, "triage", 1, 0, &run.correlation_id, &run.tenant);
    t.publish_envelope(&env).await;
    let engine = &t.app.as_ref().expect("running").engine;
    wait_until("the copy was acked without running", move || async move {
        engine.metrics.duplicates("triage") >= 1
    })
    .await;
    assert!(triage_rows(&t.pool, run.id).await.is_empty());
    // ...then the worker dies: nobody renews the lease, and it expires.
    sqlx::query("UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(run.id)
        .execute(&t.pool)
        .await
        .unwrap();
    let done = t.wait_run(run.id, &["completed"]).await;
    assert_eq!(done.status, "completed");
    // The step ran once more at the same attempt: nothing was spent.
    assert_eq!(
        triage_rows(&t.pool, run.id).await,
        vec![(1, "succeeded".to_string())]
    );
    let swept: Vec<(String, String, i32, Value)> = sqlx::query_as(
        "SELECT from_status, to_status, attempt, detail FROM run_history \
         WHERE run_id = $1 AND detail ? 'lease_expired'",
    )
    .bind(run.id)
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(
        (swept[0].0.as_str(), swept[0].1.as_str(), swept[0].2),
        ("running", "queued", 1)
    );
    assert_eq!(swept[0].3["lease_owner"], "dead-worker");
    assert_eq!(times_reached(&t.pool, run.id, "completed").await, 1);
    t.finish().await;
}

#[tokio::test]
async fn the_effect_of_an_attempt_that_lost_its_lease_is_discarded() {
    let (t, slow, run) = slow_run_started(Duration::from_secs(1)).await;
    let (_, first) = lease(&t.pool, run.id).await;
    assert!(first.is_some());
    // The lease expired meanwhile and another attempt took the step.
    sqlx::query(
        "UPDATE runs SET lease_owner = 'other-worker', lease_token = gen_random_uuid(), \
         lease_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(run.id)
    .execute(&t.pool)
    .await
    .unwrap();
    // The stale attempt ends: its effect is fenced.
    slow.open(100);
    let (pool, id) = (&t.pool, run.id);
    wait_until("the stale attempt was recorded", move || async move {
        !triage_rows(pool, id).await.is_empty()
    })
    .await;
    assert_eq!(
        triage_rows(&t.pool, run.id).await,
        vec![(1, "discarded".to_string())]
    );
    let after = netra::store::runs::get(&t.pool, run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.status.as_str(), after.phase.as_deref(), after.attempt),
        ("running", Some("triage"), 1)
    );
    assert_eq!(
        lease(&t.pool, run.id).await.0.as_deref(),
        Some("other-worker")
    );
    let (outputs, processed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM phase_outputs WHERE run_id = $1), \
         (SELECT count(*) FROM processed_messages WHERE run_id = $1)",
    )
    .bind(run.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((outputs, processed), (0, 0));
    // The other holder dies too: the sweep publishes the step again, and
    // the run completes once.
    sqlx::query("UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(run.id)
        .execute(&t.pool)
        .await
        .unwrap();
    t.wait_run(run.id, &["completed"]).await;
    assert_eq!(
        triage_rows(&t.pool, run.id).await,
        vec![(1, "discarded".to_string()), (1, "succeeded".to_string())]
    );
    assert_eq!(slow.calls.load(Ordering::SeqCst), 2);
    assert_eq!(times_reached(&t.pool, run.id, "completed").await, 1);
    t.finish().await;
}

#[tokio::test]
async fn a_slow_phase_keeps_its_lease_renewed_while_it_runs() {
    // Renewed every 300 ms, swept every 450 ms: without the renewals the
    // sweep would take the step from the slow attempt within a second.
    let (t, slow, run) = slow_run_started(Duration::from_millis(900)).await;
    let (_, token) = lease(&t.pool, run.id).await;
    assert!(token.is_some());
    let engine = &t.app.as_ref().expect("running").engine;
    assert_eq!(engine.leases.len(), 1, "the attempt's lease is held");
    // The expiry moves on, renewal after renewal, well past the lease
    // length, and the attempt keeps its token throughout.
    let pool = &t.pool;
    let seen = std::sync::Mutex::new(Vec::<chrono::DateTime<chrono::Utc>>::new());
    let seen_ref = &seen;
    wait_until("the lease was renewed four times", move || async move {
        let (expires, now_token): (Option<chrono::DateTime<chrono::Utc>>, Option<Uuid>) =
            sqlx::query_as("SELECT lease_expires_at, lease_token FROM runs WHERE id = $1")
                .bind(run.id)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(now_token, token, "the slow attempt lost its lease");
        let mut seen = seen_ref.lock().unwrap();
        if let Some(e) = expires {
            if seen.last().is_none_or(|last| e > *last) {
                seen.push(e);
            }
        }
        seen.len() >= 5
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(
        *seen.last().unwrap() - seen[0] > chrono::Duration::milliseconds(900),
        "the renewals outlasted one lease: {seen:?}"
    );
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1);
    slow.open(100);
    let done = t.wait_run(run.id, &["completed"]).await;
    assert_eq!(done.status, "completed");
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "the agent ran once");
    assert_eq!(
        triage_rows(&t.pool, run.id).await,
        vec![(1, "succeeded".to_string())]
    );
    let swept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_history WHERE run_id = $1 AND detail ? 'lease_expired'",
    )
    .bind(run.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(swept, 0, "the sweep never took the step");
    wait_until("no lease is held after the run", move || async move {
        engine.leases.is_empty()
    })
    .await;
    t.finish().await;
}
