//! Fair admission under kill -9: two `netra serve` processes release a
//! backlog of waiting runs (each runs the scheduler, so they also race for
//! the same tenant), and one of them is killed at random moments. No run may
//! be lost, released twice, or applied twice.

use super::*;

#[tokio::test]
#[ignore = "kills workers: deploy/local/test runs it with the fault tests"]
async fn killing_the_scheduler_mid_release_loses_no_run_and_releases_none_twice() {
    let (config, db) = test_config().await;
    let pool = prepared_db(&config).await;
    // Four runs in flight at a time: the rest wait and are released as
    // runs finish, so releases go on all the time.
    let settings = [("NETRA_FAIR_IN_FLIGHT", "4")];
    let mut workers = vec![
        spawn_worker_with(&config, &settings),
        spawn_worker_with(&config, &settings),
    ];
    wait_topology(&config).await;
    let n = 200;
    publish_requests(&config, n).await;
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE wait_reason IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    let mut rng = rand::thread_rng();
    for _ in 0..6 {
        let pause = rng.gen_range(100..900);
        tokio::time::sleep(Duration::from_millis(pause)).await; // fault timing, not synchronisation
        let k = rng.gen_range(0..workers.len());
        workers[k].kill().unwrap(); // SIGKILL
        workers[k].wait().unwrap();
        workers[k] = spawn_worker_with(&config, &settings);
    }
    wait_all(&pool, n, &["completed"]).await;
    let released_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT run_id FROM run_history WHERE detail ? 'released' \
         GROUP BY run_id HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (released, admitted_at_intake): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM run_history h WHERE h.run_id = r.id AND h.detail ? 'released')), \
                count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM run_history h WHERE h.run_id = r.id AND h.detail ? 'waiting')) \
         FROM runs r",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    eprintln!(
        "admission under kill -9: {n} runs, {admitted_at_intake} admitted at intake, {released} released by a scheduler ({waiting} waiting when the kills began)"
    );
    assert_eq!(released_twice, 0, "a run was released twice");
    assert_eq!(
        released + admitted_at_intake,
        n as i64,
        "a run was neither admitted at intake nor released"
    );
    assert!(released > 0, "no run waited: the test proves nothing");
    assert_exactly_once(&pool, n).await;
    for mut w in workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
#[ignore = "kills workers: deploy/local/test runs it with the fault tests"]
async fn killing_workers_mid_drain_loses_no_spooled_request_and_makes_none_twice() {
    let (config, db) = test_config().await;
    let pool = prepared_db(&config).await;
    let settings = [("NETRA_FAIR_IN_FLIGHT", "4")];
    let mut workers = vec![
        spawn_worker_with(&config, &settings),
        spawn_worker_with(&config, &settings),
    ];
    wait_topology(&config).await;
    // A backlog on `<ns>.requests` (nobody reads it while it is published),
    // so that intake's batches are full and it spools.
    for w in &mut workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    let n = 3000;
    // Each with its idempotency key (`message_id`): a request redelivered
    // after a kill before its ack is read, and spooled, again, and only the
    // key makes the copies one run (as on the direct path); what the inbox
    // adds is that a spooled row becomes its run once, or stays.
    publish_load(&config, "spool", n, None).await;
    for w in &mut workers {
        *w = spawn_worker_with(&config, &settings);
    }
    let mut rng = rand::thread_rng();
    for _ in 0..6 {
        let pause = rng.gen_range(100..900);
        tokio::time::sleep(Duration::from_millis(pause)).await; // fault timing, not synchronisation
        let k = rng.gen_range(0..workers.len());
        workers[k].kill().unwrap(); // SIGKILL
        workers[k].wait().unwrap();
        workers[k] = spawn_worker_with(&config, &settings);
    }
    // Every request becomes a run and the inbox empties (bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let (runs, spooled) = loop {
        let (runs, spooled): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM intake_inbox)",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or((0, -1));
        if runs >= n as i64 && spooled == 0 {
            break (runs, spooled);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{runs} runs of {n} requests, {spooled} still spooled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (distinct, via_inbox): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT correlation_id) FROM runs), \
                (SELECT count(*) FROM run_history WHERE actor = $1 AND from_status IS NULL)",
    )
    .bind(netra::pipeline::inbox::ACTOR)
    .fetch_one(&pool)
    .await
    .unwrap();
    eprintln!("inbox under kill -9: {n} requests, {runs} runs, {via_inbox} through the inbox, {spooled} left");
    assert_eq!(
        runs, n as i64,
        "a spooled request became two runs, or was lost"
    );
    assert_eq!(distinct, n as i64, "a request's run is missing or doubled");
    assert!(
        via_inbox > 0,
        "no request was spooled: the test proves nothing"
    );
    for mut w in workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    pool.close().await;
    cleanup(&config, &db).await;
}
