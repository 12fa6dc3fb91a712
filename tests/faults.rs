//! Fault tests: kill -9, broker restart, database outage, SIGTERM under load.
//!
//! They restart shared services, so they are `#[ignore]`d in the parallel
//! suite and `deploy/local/test` runs them afterwards with `--ignored`, one
//! at a time.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;
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
    Command::new(env!("CARGO_BIN_EXE_netra"))
        .args(["serve", "--no-http"])
        .env("NETRA_DATABASE_URL", database_url(config))
        .env("NETRA_NAMESPACE", &config.namespace)
        .env("NETRA_RETRY_INITIAL_MS", "50")
        .env("NETRA_REPUBLISH_AFTER_MS", "5000")
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
            exchange: String::new(),
            routing_key: format!("{}.requests", config.namespace),
            body: serde_json::to_vec(&body).unwrap(),
            message_id: Some(format!("load-{i}")),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
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
