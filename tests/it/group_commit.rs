//! Group commit on the real Postgres: a batch of effects written by one
//! statement ends each of them exactly as it would have ended alone
//! (docs/DESIGN.md invariants 1 and 2), and one effect the database refuses does
//! not take its batch-mates along.

use crate::common::*;
use netra::{
    error::PhaseError,
    pipeline::{
        committer::write_batch,
        effects::{self, AttemptRecord, Committed, Effect, Next},
        envelope::Envelope,
        outbound::Outbound,
    },
    store::runs,
};
use serde_json::json;
use sqlx::PgPool;

/// A run waiting at `phase`, as the engine starts it.
async fn started(pool: &PgPool, corr: &str, phase: &str) -> (runs::Run, Envelope) {
    let run = create_run(pool, "default", corr, "x", phase).await;
    let env = Envelope::new(run.id, phase, 1, 0, corr, "default");
    let started = runs::start_phase(pool, &env, "test").await.unwrap();
    assert!(matches!(started, runs::Start::Started(..)));
    (run, env)
}

fn record(env: &Envelope, reply_to: Option<&str>) -> AttemptRecord {
    AttemptRecord {
        envelope: env.clone(),
        input: json!({"upstream": []}),
        started_at: chrono::Utc::now(),
        worker_id: "test".into(),
        reply_to: reply_to.map(str::to_string),
        lease_token: None,
    }
}

fn applied(outcome: &(Result<Committed, netra::store::Error>, Option<Effect>)) -> &[Outbound] {
    match &outcome.0 {
        Ok(Committed::Applied(f)) => f,
        other => panic!("expected an applied effect, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_ends_every_effect_as_if_it_were_committed_alone() {
    let (config, db, pool) = fresh_db().await;
    let (next, next_env) = started(&pool, "c-next", "triage").await;
    let (fin, fin_env) = started(&pool, "c-fin", "reporting").await;
    let (retry, retry_env) = started(&pool, "c-retry", "data").await;
    let (gone, gone_env) = started(&pool, "c-gone", "data").await;
    runs::cancel(&pool, Some("default"), gone.id, &crate::common::said())
        .await
        .unwrap();
    let report = json!({"markdown": "# done", "summary": "ok"});
    let at = chrono::Utc::now() + chrono::Duration::seconds(30);
    let batch = vec![
        (
            record(&next_env, None),
            Effect::Succeeded {
                output: json!({"category": "optimization"}),
                next: Next::Phase("data".into()),
            },
        ),
        (
            record(&fin_env, Some("reply-q")),
            Effect::Succeeded {
                output: report.clone(),
                next: Next::Finish(netra::model::RunStatus::Completed),
            },
        ),
        (
            record(&retry_env, None),
            Effect::Retry {
                error: PhaseError::transient("503 from dependency"),
                at,
            },
        ),
        (
            record(&gone_env, None),
            Effect::Succeeded {
                output: json!({"late": true}),
                next: Next::Phase("optimization".into()),
            },
        ),
        // A second copy of the first message, in the same batch.
        (
            record(&next_env, None),
            Effect::Succeeded {
                output: json!({"category": "optimization"}),
                next: Next::Phase("data".into()),
            },
        ),
    ];
    let out = write_batch(&pool, batch).await;
    assert_eq!(out.len(), 5);

    // Success with a next phase: queued(data), one follow-up.
    let f = applied(&out[0]);
    assert!(matches!(f, [Outbound::Phase { envelope }] if envelope.phase == "data"));
    let r = runs::get(&pool, next.id).await.unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.phase.as_deref(), r.attempt),
        ("queued", Some("data"), 1)
    );
    // Finish: completed, the result is the output, the reply carries it and
    // the report joins the thread.
    let f = applied(&out[1]);
    assert!(
        f.iter().any(|o| matches!(o, Outbound::Reply { to, body, .. } if to == "reply-q" && body["result"] == report)),
        "{f:?}"
    );
    let r = runs::get(&pool, fin.id).await.unwrap().unwrap();
    assert_eq!(r.status, "completed");
    assert_eq!(r.result, Some(report.clone()));
    assert!(r.finished_at.is_some());
    let (content,): (String,) =
        sqlx::query_as("SELECT content FROM messages WHERE run_id = $1 AND role = 'agent'")
            .bind(fin.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(content, "# done");
    // Retry: retrying, attempt 2, due at `at`, nothing to publish.
    assert!(applied(&out[2]).is_empty());
    let r = runs::get(&pool, retry.id).await.unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.attempt), ("retrying", 2));
    assert_eq!(
        r.next_attempt_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis())
    );
    // Cancelled meanwhile: a discarded attempt, no output, no follow-up.
    assert!(applied(&out[3]).is_empty());
    let r = runs::get(&pool, gone.id).await.unwrap().unwrap();
    assert_eq!(r.status, "cancelled");
    let (outcome,): (String,) =
        sqlx::query_as("SELECT outcome FROM phase_attempts WHERE run_id = $1")
            .bind(gone.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(outcome, "discarded");
    // The copy is a duplicate that leads to the same follow-ups.
    match &out[4].0 {
        Ok(Committed::Duplicate(f)) => assert_eq!(f, applied(&out[0])),
        other => panic!("expected a duplicate, got {other:?}"),
    }

    // Every run has one attempt; the live ones an output (if they
    // succeeded) and one history row for the transition out of `running`.
    for (id, outputs, moved) in [
        (next.id, 1, 1),
        (fin.id, 1, 1),
        (retry.id, 0, 1),
        (gone.id, 0, 0),
    ] {
        let (attempts, outs, history): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM phase_attempts WHERE run_id = $1), \
             (SELECT count(*) FROM phase_outputs WHERE run_id = $1), \
             (SELECT count(*) FROM run_history WHERE run_id = $1 AND from_status = 'running' \
                AND to_status <> 'cancelled')",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((attempts, outs, history), (1, outputs, moved), "run {id}");
    }
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn an_effect_the_database_refuses_fails_alone() {
    let (config, db, pool) = fresh_db().await;
    let (good, good_env) = started(&pool, "c-good", "triage").await;
    let (bad, bad_env) = started(&pool, "c-bad", "triage").await;
    sqlx::query(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON phase_outputs FOR EACH ROW \
         WHEN (NEW.run_id = '{}') EXECUTE FUNCTION refuse()",
        bad.id
    ))
    .execute(&pool)
    .await
    .unwrap();
    let effect = || Effect::Succeeded {
        output: json!({"category": "question"}),
        next: Next::Phase("reporting".into()),
    };
    let out = write_batch(
        &pool,
        vec![
            (record(&bad_env, None), effect()),
            (record(&good_env, None), effect()),
        ],
    )
    .await;
    match &out[0].0 {
        Err(e) => assert!(e.to_string().contains("refused by a test trigger"), "{e}"),
        other => panic!("the refused effect must fail, got {other:?}"),
    }
    assert!(
        matches!(&out[0].1, Some(Effect::Succeeded { .. })),
        "the effect is handed back for the agent output cache"
    );
    assert_eq!(applied(&out[1]).len(), 1);
    let status = |id| {
        let pool = pool.clone();
        async move { runs::get(&pool, id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(good.id).await, "queued");
    assert_eq!(
        status(bad.id).await,
        "running",
        "nothing of the refused effect is committed"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM processed_messages WHERE run_id = $1")
        .bind(bad.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    pool.close().await;
    cleanup(&config, &db).await;
}

fn request(tenant: &str, key: Option<&str>, thread: Option<uuid::Uuid>) -> runs::NewRun {
    runs::NewRun {
        tenant: tenant.into(),
        thread_id: thread,
        correlation_id: format!("c-{}", key.unwrap_or("none")),
        request_message_id: key.map(str::to_string),
        reply_to: None,
        message: "What is batching?".into(),
        workload_id: None,
        context: json!({}),
        priority: 0,
        over_rate: false,
    }
}

#[tokio::test]
async fn a_batch_of_requests_creates_each_run_as_if_it_came_alone() {
    let (config, db, pool) = fresh_db().await;
    let earlier = create_run(&pool, "default", "c-earlier", "first", "triage").await;
    let other_tenants = create_run(&pool, "other", "c-other", "theirs", "triage").await;
    let news = vec![
        request("default", Some("k1"), None),
        request("default", Some("k1"), None), // a copy in the same batch
        request("default", None, Some(earlier.thread_id)),
        request("default", None, Some(other_tenants.thread_id)),
        request("default", None, Some(uuid::Uuid::new_v4())),
        request("default", Some("k2"), None),
    ];
    let out = runs::create_runs(&pool, &news, "triage", "test", Default::default()).await;
    let ok = |k: usize| match &out[k] {
        Ok(a) => a,
        Err(e) => panic!("request {k}: {e}"),
    };
    assert!(ok(0).created);
    assert!(!ok(1).created, "the copy finds the run of the first");
    assert_eq!(ok(1).run.id, ok(0).run.id);
    assert!(ok(2).created);
    assert_eq!(
        ok(2).run.thread_id,
        earlier.thread_id,
        "a follow-up joins its thread"
    );
    for k in [3, 4] {
        assert!(
            matches!(&out[k], Err(runs::IntakeError::UnknownThread(_))),
            "request {k}: another tenant's or no thread is refused"
        );
    }
    assert!(ok(5).created);
    assert_ne!(
        ok(5).run.thread_id,
        ok(0).run.thread_id,
        "new threads are distinct"
    );
    // Each created run has its thread, its user message and its first
    // history row; nothing else was written.
    let (threads, messages, history): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM threads), \
         (SELECT count(*) FROM messages WHERE role = 'user'), \
         (SELECT count(*) FROM run_history WHERE to_status = 'queued')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((threads, messages, history), (4, 5, 5));
    let (content,): (String,) =
        sqlx::query_as("SELECT content FROM messages WHERE run_id = $1 AND role = 'user'")
            .bind(ok(2).run.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(content, "What is batching?");
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn requests_of_a_committed_round_keep_their_runs_when_a_later_round_fails() {
    // Round 1 creates the keyless request and k1; round 2 (the copy of k1)
    // fails in the database. The first two must report their runs, so that
    // nothing retries them and creates the keyless request twice.
    let (config, db, pool) = fresh_db().await;
    sqlx::query(
        "CREATE FUNCTION refuse_copies() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF EXISTS (SELECT 1 FROM runs WHERE request_message_id = NEW.request_message_id) \
         THEN RAISE EXCEPTION 'refused copy'; END IF; RETURN NEW; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_copies BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION refuse_copies()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let news = vec![
        request("default", None, None),
        request("default", Some("k1"), None),
        request("default", Some("k1"), None),
    ];
    let out = runs::create_runs(&pool, &news, "triage", "test", Default::default()).await;
    assert!(matches!(&out[0], Ok(a) if a.created), "{:?}", out[0]);
    assert!(matches!(&out[1], Ok(a) if a.created), "{:?}", out[1]);
    match &out[2] {
        Err(runs::IntakeError::Db(e)) => assert!(e.to_string().contains("refused copy"), "{e}"),
        other => panic!("the copy's round failed: {other:?}"),
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn a_late_copy_of_a_dead_letter_reply_does_not_carry_a_later_result() {
    // The dedup record stores replies without the result and puts the run's
    // result back for a duplicate; a dead-lettered reply had none, and must
    // not get the result a replay produced later.
    let (config, db, pool) = fresh_db().await;
    let (run, env) = started(&pool, "c-dl", "triage").await;
    let out = effects::commit_effect(
        &pool,
        &record(&env, Some("reply-q")),
        &Effect::DeadLetter {
            error: PhaseError::permanent("bad input"),
        },
    )
    .await
    .unwrap();
    assert!(matches!(out, Committed::Applied(_)));
    // A replay completed the run meanwhile.
    sqlx::query(
        "UPDATE runs SET status = 'completed', result = '{\"markdown\": \"later\"}' WHERE id = $1",
    )
    .bind(run.id)
    .execute(&pool)
    .await
    .unwrap();
    let again = effects::processed_follow_up(&pool, &env.message_id())
        .await
        .unwrap()
        .unwrap();
    let reply = again
        .iter()
        .find_map(|o| match o {
            Outbound::Reply { body, .. } => Some(body.clone()),
            _ => None,
        })
        .expect("a reply");
    assert_eq!(reply["status"], "dead_lettered");
    assert!(reply["result"].is_null(), "{reply}");
    pool.close().await;
    cleanup(&config, &db).await;
}
