//! Postgres failover (`deploy/local/stack start --postgres-standby`): netra
//! is given both hosts, the primary stops at once with runs in flight, the
//! synchronous standby is promoted, and netra carries on against it. Every
//! effect netra acknowledged before the failover (a run whose reply had
//! arrived) must be on the promoted standby, counted.

use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::cluster::{stack_output, until_completed_beyond};
use super::*;

/// The multi-host URL of the primary and the standby
/// (`NETRA_STACK_DATABASE_URLS`), with database `db`.
fn both_hosts(db: &str) -> String {
    load_stack_env();
    let urls = std::env::var("NETRA_STACK_DATABASE_URLS").unwrap_or_else(|_| {
        panic!(
            "NETRA_STACK_DATABASE_URLS is not set: start the stack with `deploy/local/stack start --postgres-standby` (deploy/local/test does) and eval its env"
        )
    });
    let (base, _) = urls.rsplit_once('/').expect("a database URL has a path");
    format!("{base}/{db}")
}

/// The standby alone (the second host of the multi-host URL), with `db`.
fn standby_only(db: &str) -> String {
    let url = both_hosts(db);
    let (scheme_user, rest) = url.split_once('@').expect("credentials in the URL");
    let (hosts, path) = rest.split_once('/').expect("a path");
    let second = hosts.split(',').nth(1).expect("two hosts");
    format!("{scheme_user}@{second}/{path}")
}

/// Is the standby still in recovery (not promoted)?
async fn in_recovery(url: &str) -> bool {
    let pool = netra::store::connect_url(url, 1).await.expect("standby");
    let r: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&pool)
        .await
        .expect("pg_is_in_recovery");
    pool.close().await;
    r
}

#[tokio::test]
#[ignore = "stops the Postgres primary: deploy/local/test runs it alone, after the suite"]
async fn failover_to_the_synchronous_standby_keeps_every_acknowledged_effect() {
    let (mut config, db) = test_config().await;
    prepared_db(&config).await.close().await;
    assert!(
        in_recovery(&standby_only(&db)).await,
        "the standby is not a standby"
    );
    config.database_url = SecretString::from(both_hosts(&db));
    // Steps whose start mark or lease a fault lost are published again soon.
    config.republish_after = Duration::from_secs(5);
    config.lease = Duration::from_secs(3);
    let t = TestApp::start_with(config.clone(), db.clone(), None).await;
    let mut replies = Replies::open(&config).await;
    let n = 300;
    publish_with_replies(&config, "f", n, &replies.queue).await;

    // Replies that arrived before the failover: each is a run whose last
    // effect netra committed (on both hosts: the standby is synchronous)
    // and acknowledged.
    let mut acknowledged = std::collections::BTreeSet::new();
    while acknowledged.len() < 40 {
        let (cid, _) = replies.next().await;
        acknowledged.insert(cid);
    }
    let t0 = Instant::now();
    stack(&["postgres-failover"]);
    assert!(!in_recovery(&standby_only(&db)).await, "not promoted");

    // netra finds the promoted standby and completes every run there.
    let promoted = netra::store::connect_url(&standby_only(&db), 2)
        .await
        .expect("the promoted standby");
    let before = completed(&promoted).await;
    let resumed = until_completed_beyond(&promoted, before, t0).await;
    wait_all(&promoted, n, &["completed"]).await;

    // Counted: every acknowledged run is completed on the new primary, with
    // its report.
    let ids: Vec<String> = acknowledged.iter().cloned().collect();
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs r WHERE r.correlation_id = ANY($1) AND r.status = 'completed' \
         AND EXISTS (SELECT 1 FROM phase_outputs o WHERE o.run_id = r.id AND o.phase = 'reporting')",
    )
    .bind(&ids)
    .fetch_one(&promoted)
    .await
    .expect("count");
    publish_with_replies(&config, "last", 1, &replies.queue).await;
    let mut seen = replies_until(&mut replies, "last-0").await;
    for cid in &acknowledged {
        *seen.entry(cid.clone()).or_insert(0) += 1;
    }
    let missing = (0..n)
        .filter(|i| !seen.contains_key(&format!("f-{i}")))
        .count();
    eprintln!(
        "failover: {n} runs, {} acknowledged before it, {kept} of them on the promoted standby; runs completed again {} ms after the primary stopped; {missing} replies missing",
        acknowledged.len(),
        resumed.as_millis()
    );
    assert_eq!(
        kept as usize,
        acknowledged.len(),
        "an acknowledged effect was lost"
    );
    assert_eq!(missing, 0, "replies missing");
    assert_exactly_once(&promoted, n + 1).await;
    let mut t = t;
    if let Some(app) = t.app.take() {
        app.shutdown().await;
    }
    t.cleaned = true;
    replies.close().await;
    promoted.close().await;
    t.pool.close().await;

    // The stack again: the primary back on its port, a new standby from it.
    stack(&["start-service", "postgres"]);
    let _ = stack_output(&["status"]);
    cleanup(&config, &db).await;
}
