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
