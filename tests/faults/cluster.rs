//! The three-node RabbitMQ cluster (`deploy/local/stack start
//! --rabbitmq-nodes 3`): netra is given the three nodes' addresses, and
//! loses the node that leads its phase queues, then another one killed with
//! kill -9, with runs in flight. Nothing may be lost or applied twice, every
//! run must end, and the time until runs complete again is printed.

use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::*;

/// The three nodes' URLs (`NETRA_STACK_AMQP_URLS`, printed by `stack env`
/// when the stack runs three nodes).
pub fn cluster_urls() -> Vec<String> {
    load_stack_env();
    let urls = std::env::var("NETRA_STACK_AMQP_URLS").unwrap_or_else(|_| {
        panic!(
            "NETRA_STACK_AMQP_URLS is not set: start the stack with `deploy/local/stack start --rabbitmq-nodes 3` (deploy/local/test does) and eval its env"
        )
    });
    let urls: Vec<String> = urls.split(',').map(str::to_string).collect();
    assert_eq!(urls.len(), 3, "NETRA_STACK_AMQP_URLS lists three nodes");
    urls
}

/// The output of a `deploy/local/stack` command (trimmed).
pub fn stack_output(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/stack");
    let out = Command::new(script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run deploy/local/stack");
    assert!(out.status.success(), "deploy/local/stack {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until more than `before` runs have completed; the time it took.
pub async fn until_completed_beyond(pool: &sqlx::PgPool, before: i64, since: Instant) -> Duration {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while completed(pool).await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run completed within {DEADLINE:?} of the fault ({before} before it)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    since.elapsed()
}

/// The members of each of the namespace's quorum queues, as the main node
/// lists them.
fn queue_members(namespace: &str) -> Vec<(String, usize)> {
    let listing = stack_output(&[
        "rabbitmqctl",
        "-q",
        "list_queues",
        "name",
        "members",
        "--no-table-headers",
    ]);
    listing
        .lines()
        .filter(|l| l.starts_with(&format!("{namespace}.")))
        .map(|l| {
            let (name, members) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (name.to_string(), members.matches('@').count())
        })
        .collect()
}

#[tokio::test]
#[ignore = "stops broker nodes: deploy/local/test runs it alone, after the suite"]
async fn losing_the_leader_node_then_another_loses_nothing_and_applies_nothing_twice() {
    let urls = cluster_urls();
    let (mut config, db) = test_config().await;
    config.amqp_url = SecretString::from(urls.join(","));
    // Steps whose start mark or lease a fault lost are published again soon.
    config.republish_after = Duration::from_secs(5);
    config.lease = Duration::from_secs(3);
    prepared_db(&config).await.close().await;
    let t = TestApp::start_with(config.clone(), db, None).await;

    // netra's quorum queues have a member on each node.
    let members = queue_members(&config.namespace);
    assert!(
        members.iter().any(|(q, _)| q.ends_with(".phase.triage")),
        "no phase queue listed: {members:?}"
    );
    for (queue, n) in &members {
        if queue.contains(".phase.") || queue.ends_with(".requests") {
            assert_eq!(*n, 3, "{queue} has {n} members, not one per node");
        }
    }

    // The node that leads the triage queue is stopped; another is killed.
    let leader: usize = stack_output(&[
        "rabbitmq-leader",
        &format!("{}.phase.triage", config.namespace),
    ])
    .parse()
    .expect("a node number");
    let killed = if leader == 3 { 2 } else { 3 };
    let spare = 6 - leader - killed;
    // The test's own reply queue lives on the node that stays up (a reply
    // queue is the client's, and an exclusive queue dies with its node).
    let mut on_spare = config.clone();
    on_spare.amqp_url = SecretString::from(urls[spare - 1].clone());
    let mut replies = Replies::open(&on_spare).await;

    let n = 600;
    publish_with_replies(&on_spare, "c", n, &replies.queue).await;
    let before = until_some_completed(&t.pool, 10).await;

    let t0 = Instant::now();
    stack(&["rabbitmq-node", "stop", &leader.to_string()]);
    let done = completed(&t.pool).await;
    let after_stop = until_completed_beyond(&t.pool, done, t0).await;

    stack(&["rabbitmq-node", "start", &leader.to_string()]);
    let t1 = Instant::now();
    stack(&["rabbitmq-node", "kill", &killed.to_string()]);
    let done = completed(&t.pool).await;
    let after_kill = until_completed_beyond(&t.pool, done, t1).await;
    stack(&["rabbitmq-node", "start", &killed.to_string()]);

    let runs = t.wait_all(n, &["completed"]).await;
    assert_eq!(runs.len(), n);
    publish_with_replies(&on_spare, "last", 1, &replies.queue).await;
    let seen = replies_until(&mut replies, "last-0").await;
    let missing: Vec<String> = (0..n)
        .map(|i| format!("c-{i}"))
        .filter(|c| !seen.contains_key(c))
        .collect();
    let twice: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "cluster: {n} runs ({before} completed before the faults); leader node {leader} stopped: runs completed again after {} ms; node {killed} killed: after {} ms; {twice} duplicate replies",
        after_stop.as_millis(),
        after_kill.as_millis()
    );
    assert!(missing.is_empty(), "replies missing: {missing:?}");
    assert_exactly_once(&t.pool, n + 1).await;
    replies.close().await;
    t.finish().await;
}

/// Waits until at least `n` runs completed; how many had.
async fn until_some_completed(pool: &sqlx::PgPool, n: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let c = completed(pool).await;
        if c >= n {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {c} runs completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
