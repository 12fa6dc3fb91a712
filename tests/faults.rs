//! Fault tests: kill -9, broker restart, database outage, SIGTERM under
//! load, and (modules `cluster`, `failover`) a broker node lost from a
//! three-node cluster and a Postgres failover to a synchronous standby.
//!
//! They restart shared services, so they are `#[ignore]`d in the parallel
//! suite and `deploy/local/test` runs them afterwards with `--ignored`, one
//! at a time.

#[path = "it/common/mod.rs"]
#[allow(dead_code)] // the fault tests use only part of the harness
mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

// The three-node broker cluster and the Postgres failover.
#[path = "faults/cluster.rs"]
mod cluster;
#[path = "faults/failover.rs"]
mod failover;
// Fair admission's scheduler killed mid-release.
#[path = "faults/admission.rs"]
mod admission;

use common::{duplicator::duplicate_every_phase_message, *};
use netra::config::Config;
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

fn stack(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/stack");
    let status = Command::new(script)
        .args(args)
        .status()
        .expect("run deploy/local/stack");
    assert!(status.success(), "deploy/local/stack {args:?} failed");
}

/// Starts `netra serve` as a child process on the test's database and namespace.
fn spawn_worker(config: &Config) -> Child {
    spawn_worker_with(config, &[])
}

/// [`spawn_worker`] with more settings.
fn spawn_worker_with(config: &Config, settings: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_netra"))
        .args(["serve", "--no-http"])
        .envs(settings.iter().copied())
        .env("NETRA_DATABASE_URL", database_url(config))
        .env("NETRA_NAMESPACE", &config.namespace)
        .env("NETRA_RETRY_INITIAL_MS", "50")
        .env("NETRA_REPUBLISH_AFTER_MS", "5000")
        // A killed worker's leases expire (and are swept) within seconds.
        .env("NETRA_LEASE_MS", "3000")
        .env("NETRA_SHUTDOWN_GRACE_MS", "10000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn netra serve")
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_topology(config: &Config) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let q = format!("{}.phase.reporting", config.namespace);
    loop {
        let conn = netra::broker::connect(config, "probe").await;
        if let Ok(conn) = conn {
            let ch = conn.create_channel().await.unwrap();
            let ok = ch
                .queue_declare(
                    q.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .is_ok();
            let _ = conn.close(200, "bye".into()).await;
            if ok {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "topology never declared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn prepared_db(config: &Config) -> sqlx::PgPool {
    let pool = netra::store::connect_url(&database_url(config), 4)
        .await
        .unwrap();
    netra::store::migrate(&pool).await.unwrap();
    load_sample(&pool, "chat-prod", 400).await;
    pool
}

async fn publish_requests(config: &Config, n: usize) {
    publish_load(config, "load", n, None).await;
}

/// Every (run, phase) has exactly one succeeded attempt and one output.
async fn assert_exactly_once(pool: &sqlx::PgPool, runs: usize) {
    let dupes: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT run_id, phase, count(*) FROM phase_attempts WHERE outcome = 'succeeded' GROUP BY 1, 2 HAVING count(*) <> 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        dupes.is_empty(),
        "phase effects recorded more than once: {dupes:?}"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n as usize, runs, "one run per request");
    let (missing,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM phase_outputs o WHERE o.run_id = r.id AND o.phase = 'reporting')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(missing, 0);
}

/// Polls `/readyz` until it reports `part` as `state` (bounded).
async fn wait_ready_reports(base: &str, part: &'static str, state: &'static str) {
    let url = format!("{base}/readyz");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let u = url.clone();
        let body: serde_json::Value = tokio::task::spawn_blocking(move || {
            let agent = http();
            agent
                .get(&u)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json().ok())
                .unwrap_or_default()
        })
        .await
        .unwrap();
        if body[part] == state {
            if state == "down" {
                assert_eq!(body["ready"], false);
            }
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never reported {part} {state}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "restarts shared services: deploy/local/test runs it alone, after the suite"]
async fn kill_9_at_random_points_loses_nothing_and_duplicates_nothing() {
    let (config, db) = test_config().await;
    let pool = prepared_db(&config).await;
    let mut worker = spawn_worker(&config);
    wait_topology(&config).await;
    publish_requests(&config, 200).await;
    for _ in 0..4 {
        let pause = rand::thread_rng().gen_range(200..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await; // fault timing, not synchronisation
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
        worker = spawn_worker(&config);
    }
    wait_all(&pool, 200, &["completed"]).await;
    assert_exactly_once(&pool, 200).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
#[ignore = "restarts shared services: deploy/local/test runs it alone, after the suite"]
async fn sigterm_under_load_exits_cleanly_and_loses_nothing() {
    let (config, db) = test_config().await;
    let pool = prepared_db(&config).await;
    let mut worker = spawn_worker(&config);
    wait_topology(&config).await;
    publish_requests(&config, 100).await;
    // Wait until work is in flight.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (done,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM runs WHERE status = 'completed'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if done >= 5 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = worker.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Grace is 10 s; allow for process start-up noise on a loaded machine.
    let status = wait_exit(&mut worker, Duration::from_secs(25)).await;
    assert!(status.success(), "worker exited with {status:?}");
    let mut worker = spawn_worker(&config);
    wait_all(&pool, 100, &["completed"]).await;
    assert_exactly_once(&pool, 100).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
#[ignore = "restarts shared services: deploy/local/test runs it alone, after the suite"]
async fn broker_restart_mid_flight_completes_every_run_once() {
    let (config, db) = test_config().await;
    prepared_db(&config).await.close().await;
    let t = TestApp::start_with(config.clone(), db, None).await;
    publish_requests(&config, 100).await;
    stack(&["stop-service", "rabbitmq"]);
    wait_ready_reports(&t.base(), "broker", "down").await;
    stack(&["start-service", "rabbitmq"]);
    wait_ready_reports(&t.base(), "broker", "up").await;
    t.wait_all(100, &["completed"]).await;
    assert_exactly_once(&t.pool, 100).await;
    t.finish().await;
}

#[tokio::test]
#[ignore = "restarts shared services: deploy/local/test runs it alone, after the suite"]
async fn database_outage_of_20s_dead_letters_nothing() {
    let (config, db) = test_config().await;
    prepared_db(&config).await.close().await;
    let t = TestApp::start_with(config.clone(), db, None).await;
    publish_requests(&config, 100).await;
    stack(&["stop-service", "postgres"]);
    // /readyz reports the outage while it lasts.
    wait_ready_reports(&t.base(), "database", "down").await;
    tokio::time::sleep(Duration::from_secs(20)).await; // the outage itself
    stack(&["start-service", "postgres"]);
    let runs = t.wait_all(100, &["completed", "dead_lettered"]).await;
    assert!(
        runs.iter().all(|r| r.status == "completed"),
        "a run was dead-lettered by the outage"
    );
    let (dl,): (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(dl, 0);
    assert_exactly_once(&t.pool, 100).await;
    t.finish().await;
}

/// Publishes `n` requests of mixed categories to `<ns>.intake`, with
/// message and correlation ids `{prefix}-{i}` and an optional `reply_to`.
async fn publish_load(config: &Config, prefix: &str, n: usize, reply_to: Option<&str>) {
    let conn = netra::broker::connect(config, "load").await.unwrap();
    let p = netra::broker::publisher::Publisher::open(&conn)
        .await
        .unwrap();
    let messages = [
        "Cut the cost of workload chat-prod",
        "Show the usage breakdown of workload chat-prod",
        "What is prompt caching?",
    ];
    for i in 0..n {
        let body = json!({"message": messages[i % messages.len()]});
        p.publish_routed(&netra::broker::publisher::Outgoing {
            exchange: format!("{}.intake", config.namespace),
            routing_key: String::new(),
            body: serde_json::to_vec(&body).unwrap(),
            message_id: Some(format!("{prefix}-{i}")),
            correlation_id: Some(format!("{prefix}-{i}")),
            reply_to: reply_to.map(str::to_string),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
}

async fn publish_with_replies(config: &Config, prefix: &str, n: usize, reply_to: &str) {
    publish_load(config, prefix, n, Some(reply_to)).await;
}

async fn completed(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'completed'")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Reads replies until the one for `last` arrives; returns how many
/// arrived per correlation id. `last` is published after everything else
/// has completed, so any duplicate produced before it is counted.
async fn replies_until(
    replies: &mut Replies,
    last: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    loop {
        let (cid, _) = replies.next().await;
        *seen.entry(cid.clone()).or_insert(0) += 1;
        if cid == last {
            return seen;
        }
    }
}

/// A blocking GET with a bounded client timeout; the status, or 0 when the
/// server did not answer within it.
async fn get_status(url: String, token: Option<String>) -> (u16, serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(t) = &token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(mut r) => {
                let status = r.status().as_u16();
                (status, r.body_mut().read_json().unwrap_or_default())
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    })
    .await
    .unwrap()
}

/// Stops Redis for `outage` with runs in flight and checks that runs keep
/// completing meanwhile, that `/readyz` and `/v1` answer throughout, and
/// that no run is lost, applied twice or answered twice.
async fn redis_outage_keeps_the_pipeline_going(outage: Duration) {
    let (config, db) = test_config().await;
    prepared_db(&config).await.close().await;
    let t = TestApp::start_with(config.clone(), db, None).await;
    let token = t.tenant("redis-outage").await;
    let base = t.base();
    let mut replies = Replies::open(&config).await;
    publish_with_replies(&config, "before", 150, &replies.queue).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while completed(&t.pool).await < 10 {
        assert!(tokio::time::Instant::now() < deadline, "nothing completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack(&["stop-service", "redis"]);
    let at_stop = completed(&t.pool).await;
    let end = tokio::time::Instant::now() + outage;
    let (mut round, mut published, mut degraded_seen) = (0, 150, false);
    let mut grew_during = false;
    let mut last = at_stop;
    while tokio::time::Instant::now() < end {
        // More work keeps arriving while Redis is down.
        publish_with_replies(&config, &format!("during{round}"), 10, &replies.queue).await;
        published += 10;
        round += 1;
        let (ready, body) = get_status(format!("{base}/readyz"), None).await;
        assert_eq!(
            ready, 200,
            "/readyz did not answer during the Redis outage: {body}"
        );
        if body["cache"] == "degraded" {
            degraded_seen = true;
        }
        let (api, body) = get_status(format!("{base}/v1/runs?limit=1"), Some(token.clone())).await;
        assert_eq!(
            api, 200,
            "/v1 did not answer during the Redis outage: {body}"
        );
        let now = completed(&t.pool).await;
        grew_during |= now > last;
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await; // pacing of the load, not synchronisation
    }
    let at_restart = completed(&t.pool).await;
    stack(&["start-service", "redis"]);
    eprintln!(
        "redis outage {outage:?}: {at_stop} completed at stop, {at_restart} at restart, {published} published"
    );
    assert!(
        degraded_seen,
        "/readyz never reported the cache as degraded"
    );
    assert!(
        grew_during && at_restart > at_stop,
        "runs did not complete while Redis was down ({at_stop} -> {at_restart})"
    );
    t.wait_all(published, &["completed"]).await;
    publish_with_replies(&config, "last", 1, &replies.queue).await;
    let seen = replies_until(&mut replies, "last-0").await;
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(seen.len(), published + 1, "a reply is missing");
    assert!(duplicated.is_empty(), "duplicate replies: {duplicated:?}");
    assert_exactly_once(&t.pool, published + 1).await;
    replies.close().await;
    t.finish().await;
}

#[tokio::test]
#[ignore = "restarts shared services: deploy/local/test runs it alone, after the suite"]
async fn redis_outage_of_10s_stalls_nothing() {
    redis_outage_keeps_the_pipeline_going(Duration::from_secs(10)).await;
}

#[tokio::test]
#[ignore = "restarts shared services: deploy/local/test runs it alone, after the suite"]
async fn redis_outage_of_60s_stalls_nothing() {
    redis_outage_keeps_the_pipeline_going(Duration::from_secs(60)).await;
}

#[tokio::test]
#[ignore = "a chaos scenario: deploy/local/test runs it with the fault tests"]
async fn every_message_duplicated_changes_nothing_twice_and_rarely_replies_twice() {
    let (config, db) = test_config().await;
    prepared_db(&config).await.close().await;
    let t = TestApp::start_with(config.clone(), db, None).await;
    let copies = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dup = duplicate_every_phase_message(&config, copies.clone()).await;
    let mut replies = Replies::open(&config).await;
    let n = 300;
    // Every request arrives twice as well.
    publish_with_replies(&config, "r", n, &replies.queue).await;
    publish_with_replies(&config, "r", n, &replies.queue).await;
    t.wait_all(n, &["completed"]).await;
    // Every phase message copied, and every copy handled by netra (each
    // copy, or the original it raced, ends as a duplicate), before the last
    // request goes in: any reply a copy caused arrives before the last one.
    let engine = &t.app.as_ref().unwrap().engine;
    let phases = netra::agents::standard().phases();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_messages")
            .fetch_one(&t.pool)
            .await
            .unwrap();
        let made = copies.load(std::sync::atomic::Ordering::Relaxed);
        let handled: u64 = phases.iter().map(|p| engine.metrics.duplicates(p)).sum();
        if made >= processed as u64 && handled >= made {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "copies not all made or handled: {processed} processed, {made} copied, {handled} duplicates"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish_with_replies(&config, "last", 1, &replies.queue).await;
    let seen = replies_until(&mut replies, "last-0").await;
    let extra: usize = seen.values().map(|c| c - 1).sum();
    dup.abort();
    let copies = copies.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "every message duplicated: {} runs, {copies} phase messages copied, {} distinct replies, {extra} duplicate replies",
        n + 1,
        seen.len()
    );
    // Every phase message of every run was copied (the shortest route has
    // two phases).
    assert!(copies >= 2 * n as u64, "only {copies} copies were made");
    assert_eq!(seen.len(), n + 1, "a reply is missing");
    assert!(
        extra * 100 <= n,
        "{extra} duplicate replies for {n} runs (more than 1%)"
    );
    assert_exactly_once(&t.pool, n + 1).await;
    let (stuck,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs WHERE status <> 'completed'")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(stuck, 0);
    replies.close().await;
    t.finish().await;
}
