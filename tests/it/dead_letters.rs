//! Dead-letter operations: group replay of many runs, patches, interrupted
//! replays, dry runs and tenant scoping.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::common::*;
use futures_util::future::BoxFuture;
use netra::{
    broker::{publisher::Publisher, topology::Names},
    error::PhaseError,
    pipeline::{
        agent::{Agent, AgentContext, AgentSet, PhaseInput},
        replay,
    },
    store::dead_letters::{self, DeadLetterFilter},
};
use serde_json::{json, Value};

/// Fails permanently while `broken` is set; otherwise the real agent.
struct Switchable {
    inner: Arc<dyn Agent>,
    broken: Arc<AtomicBool>,
}

impl Agent for Switchable {
    fn phase(&self) -> &'static str {
        self.inner.phase()
    }
    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            if self.broken.load(Ordering::SeqCst) {
                return Err(PhaseError::permanent(format!(
                    "catalog lookup failed for run {}",
                    input.run_id
                )));
            }
            self.inner.run(ctx, input).await
        })
    }
}

async fn broken_optimization() -> (TestApp, Arc<AtomicBool>) {
    let broken = Arc::new(AtomicBool::new(true));
    let base = netra::agents::standard();
    let agents: AgentSet = base.clone().with(Arc::new(Switchable {
        inner: base.get("optimization").unwrap(),
        broken: broken.clone(),
    }));
    let (mut config, db) = test_config().await;
    config.default_concurrency = 16;
    config.db_pool_size = 24;
    let t = TestApp::start_with(config, db, Some(agents)).await;
    load_sample(&t.pool, "w", 300).await;
    (t, broken)
}

async fn publish_runs(t: &TestApp, n: usize) {
    let conn = netra::broker::connect(&t.config, "load").await.unwrap();
    let p = Publisher::open(&conn).await.unwrap();
    for i in 0..n {
        p.publish_routed(&netra::broker::publisher::Outgoing {
            exchange: String::new(),
            routing_key: format!("{}.requests", t.config.namespace),
            body: serde_json::to_vec(&json!({"message": "Cut the cost of workload w"})).unwrap(),
            message_id: Some(format!("r{i}")),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
}

async fn group_targets(t: &TestApp) -> Vec<dead_letters::DeadLetter> {
    let groups = dead_letters::groups(&t.pool, None).await.unwrap();
    assert_eq!(groups.len(), 1, "one failure, one group: {groups:?}");
    assert!(groups[0]
        .fingerprint
        .contains("catalog lookup failed for run #"));
    let f = DeadLetterFilter {
        fingerprint: Some(groups[0].fingerprint.clone()),
        limit: 100_000,
        ..Default::default()
    };
    dead_letters::list(&t.pool, &f).await.unwrap()
}

async fn succeeded(t: &TestApp, phase: &str) -> Vec<(uuid::Uuid, i64)> {
    sqlx::query_as("SELECT run_id, count(*) FROM phase_attempts WHERE phase = $1 AND outcome = 'succeeded' GROUP BY 1")
        .bind(phase)
        .fetch_all(&t.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn group_replay_of_1000_runs_resumes_at_the_failed_phase() {
    let (t, broken) = broken_optimization().await;
    publish_runs(&t, 1000).await;
    t.wait_all(1000, &["dead_lettered"]).await;
    let targets = group_targets(&t).await;
    assert_eq!(targets.len(), 1000);
    broken.store(false, Ordering::SeqCst);
    let names = Names::new(&t.config.namespace);
    let conn = netra::broker::connect(&t.config, "replay").await.unwrap();
    let p = Publisher::open(&conn).await.unwrap();
    let opts = replay::Options {
        actor: "operator:test".into(),
        ..Default::default()
    };
    let r = replay::replay(
        &t.pool,
        &names,
        &t.app.as_ref().unwrap().engine.seal,
        Some(&p),
        &targets,
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(r.replayed, 1000);
    t.wait_all(1000, &["completed"]).await;
    for phase in ["triage", "data"] {
        let rows = succeeded(&t, phase).await;
        assert_eq!(rows.len(), 1000);
        assert!(
            rows.iter().all(|(_, n)| *n == 1),
            "{phase} ran again on replay"
        );
    }
    // History: the failure, then the replay linked to it, then completion.
    let run = targets[0].run_id.unwrap();
    let h = netra::store::runs::history(&t.pool, run).await.unwrap();
    let dl = h
        .iter()
        .position(|x| x.to_status == "dead_lettered")
        .unwrap();
    let rq = h
        .iter()
        .position(|x| x.to_status == "queued" && x.replay == 1)
        .unwrap();
    assert!(dl < rq);
    assert_eq!(
        h[rq].detail.as_ref().unwrap()["replay_of"],
        json!(targets.iter().find(|d| d.run_id == Some(run)).unwrap().id)
    );
    assert_eq!(h[rq].actor, "operator:test");
    assert_eq!(h.last().unwrap().to_status, "completed");
    // Queue and index agree: the replayed copies can be drained, none pending.
    let ch = conn.create_channel().await.unwrap();
    let drained = replay::drain_replayed(&t.pool, &ch, &names, "optimization")
        .await
        .unwrap();
    assert_eq!(drained, 1000);
    assert_eq!(t.queue_depth(&names.dlq("optimization")).await, 0);
    let pending = dead_letters::list(
        &t.pool,
        &DeadLetterFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pending.is_empty());
    let _ = conn.close(200, "bye".into()).await;
    t.finish().await;
}

#[tokio::test]
async fn dry_run_changes_nothing_and_patch_changes_the_input() {
    let (t, broken) = broken_optimization().await;
    publish_runs(&t, 3).await;
    t.wait_all(3, &["dead_lettered"]).await;
    let names = Names::new(&t.config.namespace);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while t.queue_depth(&names.dlq("optimization")).await != 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let targets = group_targets(&t).await;
    let before = dead_letters::list(
        &t.pool,
        &DeadLetterFilter {
            limit: 100,
            include_replayed: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dry = replay::Options {
        dry_run: true,
        actor: "t".into(),
        ..Default::default()
    };
    let r = replay::replay(
        &t.pool,
        &names,
        &t.app.as_ref().unwrap().engine.seal,
        None,
        &targets,
        &dry,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((r.would_replay, r.replayed), (3, 0));
    let after = dead_letters::list(
        &t.pool,
        &DeadLetterFilter {
            limit: 100,
            include_replayed: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        before
            .iter()
            .map(|d| (&d.id, &d.status))
            .collect::<Vec<_>>(),
        after.iter().map(|d| (&d.id, &d.status)).collect::<Vec<_>>()
    );
    assert_eq!(t.queue_depth(&names.dlq("optimization")).await, 3);
    t.wait_all(3, &["dead_lettered"]).await;

    // Replay one with a patch that tightens the latency SLO the optimization reads.
    broken.store(false, Ordering::SeqCst);
    let conn = netra::broker::connect(&t.config, "replay").await.unwrap();
    let p = Publisher::open(&conn).await.unwrap();
    let patch = json!({"triage": {"constraints": {"latency_slo_ms": 1.0}}});
    let opts = replay::Options {
        patch: Some(patch.clone()),
        actor: "operator:test".into(),
        ..Default::default()
    };
    let one = &targets[..1];
    replay::replay(
        &t.pool,
        &names,
        &t.app.as_ref().unwrap().engine.seal,
        Some(&p),
        one,
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    let run = t.wait_run(one[0].run_id.unwrap(), &["completed"]).await;
    // With a 1 ms SLO no model switch is allowed: only caching remains.
    let recs = run.result.unwrap()["recommendations"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        recs.iter().all(|r| r["kind"] != "model_right_sizing"),
        "{recs:?}"
    );
    let h = netra::store::runs::history(&t.pool, run.id).await.unwrap();
    assert!(h
        .iter()
        .any(|x| x.detail.as_ref().is_some_and(|d| d["patch"] == patch)));
    let _ = conn.close(200, "bye".into()).await;
    t.finish().await;
}

#[tokio::test]
async fn replay_command_killed_midway_and_run_again_completes_each_run_once() {
    let (t, broken) = broken_optimization().await;
    publish_runs(&t, 60).await;
    t.wait_all(60, &["dead_lettered"]).await;
    broken.store(false, Ordering::SeqCst);
    let fingerprint = group_targets(&t).await[0].fingerprint.clone();
    let cli = |rate: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_netra"));
        c.args([
            "dlq",
            "replay",
            "--group",
            &fingerprint,
            "--rate",
            rate,
            "--reason",
            "catalog fixed",
        ])
        .env("NETRA_DATABASE_URL", database_url(&t.config))
        .env("NETRA_NAMESPACE", &t.config.namespace)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        c
    };
    // First run: slow, killed with SIGKILL once some runs were replayed.
    let mut child = cli("20").spawn().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM dead_letters WHERE status = 'replayed'")
                .fetch_one(&t.pool)
                .await
                .unwrap();
        if n >= 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replay made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (replayed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM dead_letters WHERE status = 'replayed'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert!(
        replayed < 60,
        "the kill came too late to interrupt anything"
    );
    // Second run: to the end.
    let status = cli("1000").status().unwrap();
    assert!(status.success());
    t.wait_all(60, &["completed"]).await;
    let rows = succeeded(&t, "optimization").await;
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|(_, n)| *n == 1));
    for phase in ["triage", "data"] {
        assert!(succeeded(&t, phase).await.iter().all(|(_, n)| *n == 1));
    }
    // Every replayed copy is gone from the queue once replays are done.
    let names = Names::new(&t.config.namespace);
    assert_eq!(t.queue_depth(&names.dlq("optimization")).await, 0);
    t.finish().await;
}

#[tokio::test]
async fn a_replay_that_fails_again_returns_to_the_dlq_with_its_replay_count() {
    let (t, _broken) = broken_optimization().await;
    publish_runs(&t, 1).await;
    let run = t.wait_all(1, &["dead_lettered"]).await.remove(0);
    let names = Names::new(&t.config.namespace);
    let conn = netra::broker::connect(&t.config, "replay").await.unwrap();
    let p = Publisher::open(&conn).await.unwrap();
    let opts = replay::Options {
        actor: "t".into(),
        ..Default::default()
    };
    let targets = group_targets(&t).await;
    replay::replay(
        &t.pool,
        &names,
        &t.app.as_ref().unwrap().engine.seal,
        Some(&p),
        &targets,
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    // Still broken: it fails again, as replay generation 1.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let again = loop {
        let rows = dead_letters::list(
            &t.pool,
            &DeadLetterFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        if let Some(d) = rows.into_iter().find(|d| d.replay == 1) {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(again.run_id, Some(run.id));
    assert_eq!(again.status, "pending");
    // Its queue copy carries the replay generation.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut found = false;
    while let Some(msg) = ch
        .basic_get(
            names.dlq("optimization").as_str().into(),
            Default::default(),
        )
        .await
        .unwrap()
    {
        let headers = msg
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        if let Some(lapin::types::AMQPValue::LongLongInt(1)) = headers.inner().get("x-netra-replay")
        {
            found = true;
        }
        msg.delivery.acker.ack(Default::default()).await.unwrap();
    }
    assert!(found, "no dead letter with x-netra-replay = 1 in the queue");
    let _ = conn.close(200, "bye".into()).await;
    t.finish().await;
}
