//! Hardening of the AMQP side, against the real broker: NUL in requests,
//! the crash-loop backstop (RabbitMQ's delivery limit), tenancy without a
//! shared default, least privileges of tenant broker users, and forged
//! phase envelopes.

use std::{
    sync::{
        atomic::{AtomicI64, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::common::*;
use futures_util::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    protocol::BasicProperties,
    types::{AMQPValue, FieldTable, ShortString},
};
use netra::{
    app::StartOptions,
    broker::{
        publisher::{HeaderValue, Outgoing, Published, Publisher},
        topology::{Names, DELIVERY_LIMIT},
    },
    pipeline::{envelope::Envelope, service::ServeOptions},
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use uuid::Uuid;

// ---- helpers ----------------------------------------------------------------

/// `(message_id, error)` of the indexed dead letters of a phase, oldest first.
async fn dead_letter_rows(t: &TestApp, phase: &str) -> Vec<(Option<String>, String)> {
    sqlx::query_as(
        "SELECT message_id, error FROM dead_letters WHERE phase = $1 ORDER BY created_at, id",
    )
    .bind(phase)
    .fetch_all(&t.pool)
    .await
    .unwrap()
}

/// Waits until a phase has at least `n` indexed dead letters.
async fn wait_dead_letters(t: &TestApp, phase: &str, n: usize) -> Vec<(Option<String>, String)> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let rows = dead_letter_rows(t, phase).await;
        if rows.len() >= n {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} dead letters of {phase}; have {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_count(t: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&t.pool)
        .await
        .unwrap()
}

fn header_text(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// One message taken from a queue.
struct Taken {
    message_id: Option<String>,
    correlation_id: Option<String>,
    error: Option<String>,
    attempts: Option<i64>,
}

/// Takes (and acks) every ready message of a queue.
async fn drain(t: &TestApp, queue: &str) -> Vec<Taken> {
    let conn = netra::broker::connect(&t.config, "test drain")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(ShortString::from(queue), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let p = &m.delivery.properties;
        out.push(Taken {
            message_id: p.message_id().as_ref().map(|s| s.as_str().to_string()),
            correlation_id: p.correlation_id().as_ref().map(|s| s.as_str().to_string()),
            error: header_text(p, "x-netra-error"),
            attempts: header_int(p, "x-netra-attempts"),
        });
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
    out
}

fn stack_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack")
}

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(stack_script())
        .arg("rabbitmqctl")
        .args(args)
        .output()
        .expect("deploy/local/stack rabbitmqctl runs")
}

/// A tenant's broker user, created with exactly netra's least privileges
/// and deleted on drop (also when the test fails).
struct BrokerUser {
    name: String,
    url: String,
}

impl BrokerUser {
    fn create(t: &TestApp, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let password = Uuid::new_v4().simple().to_string();
        let out = rabbitmqctl(&["add_user", &name, &password]);
        assert!(
            out.status.success(),
            "add_user {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = Self {
            url: with_credentials(t.config.amqp_url.expose_secret(), &name, &password),
            name,
        };
        let p =
            netra::broker::permissions::for_tenant(&Names::new(&t.config.namespace), &user.name);
        let out = rabbitmqctl(&[
            "set_permissions",
            "-p",
            "/",
            &user.name,
            &p.configure,
            &p.write,
            &p.read,
        ]);
        assert!(
            out.status.success(),
            "set_permissions {}: {}",
            user.name,
            String::from_utf8_lossy(&out.stderr)
        );
        user
    }

    async fn connect(&self) -> lapin::Connection {
        netra::broker::connect_url(&self.url, &format!("test tenant {}", self.name))
            .await
            .unwrap()
    }

    /// `<ns>.reply.<user>.<suffix>`.
    fn reply_queue(&self, t: &TestApp, suffix: &str) -> String {
        format!(
            "{}{suffix}",
            Names::new(&t.config.namespace).reply_prefix(&self.name)
        )
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_user", &self.name]);
    }
}

/// The stack's AMQP URL with other credentials.
fn with_credentials(base: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = base.split_once("://").expect("AMQP URL has a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

/// An exclusive queue of a given name on a connection, and its messages.
struct Inbox {
    queue: String,
    consumer: lapin::Consumer,
}

impl Inbox {
    async fn open(conn: &lapin::Connection, queue: &str) -> Self {
        let (queue, consumer) = consume_exclusive(conn, queue).await;
        Self { queue, consumer }
    }

    /// The next message: (correlation id, body).
    async fn next(&mut self) -> (String, Value) {
        next_message(&mut self.consumer).await
    }
}

/// A request to `<ns>.intake` as a broker user (with its `user_id`).
async fn request_as(
    conn: &lapin::Connection,
    t: &TestApp,
    user: &str,
    message: &str,
    message_id: &str,
    reply_to: &str,
) {
    let p = Publisher::open(conn).await.unwrap();
    let published = p
        .publish_as(
            &Outgoing {
                exchange: Names::new(&t.config.namespace).intake_exchange(),
                routing_key: String::new(),
                body: serde_json::to_vec(&json!({ "message": message })).unwrap(),
                message_id: Some(message_id.into()),
                correlation_id: Some(format!("corr-{message_id}")),
                reply_to: Some(reply_to.into()),
                headers: vec![],
            },
            Some(user),
        )
        .await
        .expect("the tenant may publish requests to the intake exchange");
    assert_eq!(published, Published::Confirmed);
}

/// The AMQP reply code of a channel or connection error.
fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

/// Publishes on a fresh confirm channel and returns the broker's refusal;
/// panics if the broker accepted (confirmed) the message.
async fn publish_refused(
    conn: &lapin::Connection,
    exchange: &str,
    routing_key: &str,
    user_id: Option<&str>,
) -> lapin::Error {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut props = BasicProperties::default();
    if let Some(u) = user_id {
        props = props.with_user_id(ShortString::from(u));
    }
    let attempt = async {
        ch.basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions::default(),
            br#"{"message": "What is prompt caching?"}"#,
            props,
        )
        .await?
        .await
    };
    match tokio::time::timeout(DEADLINE, attempt)
        .await
        .expect("the broker answers in time")
    {
        Ok(c) => panic!("the broker accepted a publish to {exchange:?}/{routing_key:?}: {c:?}"),
        Err(e) => e,
    }
}

fn assert_access_refused(what: &str, e: &lapin::Error) {
    assert_eq!(
        reply_code(e),
        Some(403),
        "{what}: expected ACCESS_REFUSED, got {e}"
    );
}

// ---- 1. NUL over AMQP -------------------------------------------------------

#[tokio::test]
async fn nul_in_a_request_is_dead_lettered_once_and_listed_by_the_cli() {
    let t = TestApp::start().await;
    let names = Names::new(&t.config.namespace);
    // `serde_json` writes the NUL of the message as the JSON escape \u0000.
    let body = serde_json::to_vec(&json!({"message": "Cut\u{0}the cost"})).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("\\u0000"));
    let valid_body = serde_json::to_vec(&json!({"message": "What is prompt caching?"})).unwrap();
    // A NUL in a uuid field: its parse error quotes the NUL, and the
    // stored reason must not (Postgres would refuse it on every delivery).
    let thread_body =
        br#"{"message": "x", "thread_id": "\u0000aaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"}"#.to_vec();
    let cases: [(&str, Vec<u8>, &str, &str); 4] = [
        ("nul-body", body, "corr-body", "message: must not contain"),
        ("nul-thread", thread_body, "corr-thread", "invalid request"),
        (
            "nul-corr",
            valid_body.clone(),
            "corr\u{0}x",
            "property correlation_id must not contain",
        ),
        (
            "nul\u{0}mid",
            valid_body.clone(),
            "corr-mid",
            "property message_id must not contain",
        ),
    ];
    for (mid, body, cid, _) in &cases {
        publish(
            &t.config,
            &Outgoing {
                exchange: String::new(),
                routing_key: names.requests(),
                body: body.clone(),
                message_id: Some(mid.to_string()),
                correlation_id: Some(cid.to_string()),
                ..Default::default()
            },
        )
        .await;
    }
    let rows = wait_dead_letters(&t, "requests", 4).await;
    for (_, _, _, names_the_field) in &cases {
        let n = rows
            .iter()
            .filter(|(_, e)| e.starts_with("invalid_request") && e.contains(names_the_field))
            .count();
        assert_eq!(n, 1, "one dead letter naming `{names_the_field}`: {rows:?}");
    }
    assert_eq!(run_count(&t).await, 0, "a NUL request created a run");
    // The index keeps the NUL of a message id as the text \u0000.
    assert!(
        rows.iter()
            .any(|(m, e)| m.as_deref() == Some("nul\\u0000mid") && e.contains("message_id")),
        "{rows:?}"
    );

    // A valid request published afterwards still completes ...
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        Some("valid"),
        None,
        Some("corr-valid"),
    )
    .await;
    let runs = t.wait_all(1, &["completed"]).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].correlation_id, "corr-valid");
    // ... and, the requests before it all handled, each NUL request was
    // dead-lettered exactly once: one index row, one queue copy (a looping
    // message would publish a copy per delivery), and nothing left behind.
    assert_eq!(dead_letter_rows(&t, "requests").await.len(), 4);
    assert_eq!(t.queue_depth(&names.dlq("requests")).await, 4);
    assert_eq!(t.queue_depth(&names.requests()).await, 0);
    assert_eq!(t.queue_depth(&names.crashloop_queue()).await, 0);

    // The CLI shows them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netra"))
        .args(["dlq", "list", "--phase", "requests"])
        .env("NETRA_DATABASE_URL", database_url(&t.config))
        .env("NETRA_NAMESPACE", &t.config.namespace)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dlq list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), cases.len(), "{stdout}");
    for (_, _, _, names_the_field) in &cases {
        assert!(
            lines.iter().any(|l| l.contains("requests")
                && l.contains("invalid_request")
                && l.contains(names_the_field)),
            "`dlq list` does not show the dead letter naming `{names_the_field}`:\n{stdout}"
        );
    }

    let copies = drain(&t, &names.dlq("requests")).await;
    assert_eq!(
        copies.len(),
        cases.len(),
        "one copy per dead-lettered request"
    );
    for (mid, _, cid, names_the_field) in &cases {
        let n = copies
            .iter()
            .filter(|c| {
                c.error.as_deref().is_some_and(|e| {
                    e.starts_with("invalid_request") && e.contains(names_the_field)
                })
            })
            .count();
        assert_eq!(n, 1, "one queue copy naming `{names_the_field}`");
        // The copy of a request with a valid property keeps it.
        if !mid.contains('\0') {
            assert!(copies.iter().any(|c| c.message_id.as_deref() == Some(*mid)));
        }
        if !cid.contains('\0') {
            assert!(copies
                .iter()
                .any(|c| c.correlation_id.as_deref() == Some(*cid)));
        }
    }
    assert!(copies
        .iter()
        .any(|c| c.message_id.as_deref() == Some("nul\\u0000mid")));
    assert!(copies
        .iter()
        .any(|c| c.correlation_id.as_deref() == Some("corr\\u0000x")));
    assert!(copies.iter().all(|c| c.attempts == Some(1)));
    t.finish().await;
}

// ---- 2. crash loop ----------------------------------------------------------

#[tokio::test]
async fn a_crash_looping_phase_message_dead_letters_its_run() {
    let (mut config, db) = test_config().await;
    // The stale-run sweeper must not publish a second copy meanwhile.
    config.republish_after = Duration::from_secs(3600);
    let phases: Vec<String> = netra::agents::standard()
        .phases()
        .into_iter()
        .filter(|p| *p != "triage")
        .map(str::to_string)
        .collect();
    let opts = StartOptions {
        serve: ServeOptions {
            phases: Some(phases),
            ..ServeOptions::default()
        },
        ..StartOptions::default()
    };
    let mut t = TestApp::start_opts(config, db, opts).await;
    let names = Names::new(&t.config.namespace);
    let mut replies = Replies::open(&t.config).await;
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        Some("loop"),
        Some(&replies.queue),
        Some("corr-loop"),
    )
    .await;
    let run = t.wait_all(1, &["queued"]).await.remove(0);
    assert_eq!(run.phase.as_deref(), Some("triage"));

    // A consumer that crashes on it: hands it back, again and again.
    let conn = netra::broker::connect(&t.config, "test crasher")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            ShortString::from(names.phase_queue("triage").as_str()),
            ShortString::from("crasher"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let deliveries = Arc::new(AtomicU32::new(0));
    let max_count = Arc::new(AtomicI64::new(0));
    let (d, m) = (deliveries.clone(), max_count.clone());
    let crasher = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            d.fetch_add(1, Ordering::SeqCst);
            if let Some(n) = header_int(&delivery.properties, "x-delivery-count") {
                m.fetch_max(n, Ordering::SeqCst);
            }
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    });

    let run = t.wait_run(run.id, &["dead_lettered"]).await;
    let _ = conn.close(200, ShortString::from("bye")).await;
    crasher.await.unwrap();
    assert_eq!(
        run.error.as_deref(),
        Some(netra::pipeline::crashloop::REASON)
    );
    assert_eq!(
        run.error.as_deref(),
        Some("delivery limit reached (crash loop)")
    );
    let n = deliveries.load(Ordering::SeqCst);
    assert!(
        i64::from(n) > DELIVERY_LIMIT,
        "dead-lettered after {n} deliveries, before the delivery limit"
    );
    assert!(max_count.load(Ordering::SeqCst) >= DELIVERY_LIMIT);

    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT phase, error, status FROM dead_letters WHERE run_id = $1")
            .bind(run.id)
            .fetch_all(&t.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(
            "triage".to_string(),
            "delivery limit reached (crash loop)".to_string(),
            "pending".to_string()
        )]
    );
    let (cid, body) = replies.next().await;
    assert_eq!(cid, "corr-loop");
    assert_eq!(body["status"], "dead_lettered");
    assert_eq!(body["run_id"], json!(run.id));

    // Stopped (so that nothing is in flight, and anything unacked is back
    // in its queue): the message sits in the phase's dead-letter queue.
    t.app.take().unwrap().shutdown().await;
    assert_eq!(t.queue_depth(&names.phase_queue("triage")).await, 0);
    assert_eq!(t.queue_depth(&names.crashloop_queue()).await, 0);
    assert_eq!(t.queue_depth(&names.dlq("triage")).await, 1);
    replies.close().await;
    t.finish().await;
}

/// A crash-looped request (as RabbitMQ dead-letters it by the delivery
/// limit of `<ns>.requests`, with `x-death`) whose message id holds a NUL is
/// indexed once, not handed back on the crash-loop queue forever.
#[tokio::test]
async fn a_crash_looped_request_with_nul_in_its_message_id_is_indexed_once() {
    let t = TestApp::start().await;
    let names = Names::new(&t.config.namespace);
    let mut death = FieldTable::default();
    death.insert(
        "queue".into(),
        AMQPValue::LongString(names.requests().as_str().into()),
    );
    death.insert(
        "reason".into(),
        AMQPValue::LongString("delivery_limit".into()),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
    );
    let conn = netra::broker::connect(&t.config, "test rabbit")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            ShortString::from(""),
            ShortString::from(names.crashloop_queue().as_str()),
            BasicPublishOptions::default(),
            br#"{"message": "What is prompt caching?"}"#,
            BasicProperties::default()
                .with_message_id(ShortString::from("loop\u{0}ed"))
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = conn.close(200, ShortString::from("bye")).await;
    let rows = wait_dead_letters(&t, "requests", 1).await;
    assert_eq!(
        rows,
        vec![(
            Some("loop\\u0000ed".to_string()),
            format!("delivery_limit: {}", netra::pipeline::crashloop::REASON)
        )]
    );
    // Stopped, nothing is in flight: the crash-loop queue is empty and the
    // request's dead-letter queue holds the one copy.
    let mut t = t;
    t.app.take().unwrap().shutdown().await;
    assert_eq!(t.queue_depth(&names.crashloop_queue()).await, 0);
    assert_eq!(t.queue_depth(&names.dlq("requests")).await, 1);
    let pool = netra::store::connect_url(&database_url(&t.config), 1)
        .await
        .unwrap();
    let (indexed, runs): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM runs)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((indexed, runs), (1, 0));
    pool.close().await;
    t.finish().await;
}

// ---- 3. tenancy without a shared default -----------------------------------

#[tokio::test]
async fn without_a_default_tenant_anonymous_and_unmapped_requests_are_unauthorized() {
    let (mut config, db) = test_config().await;
    config.amqp_default_tenant = None;
    let t = TestApp::start_with(config, db, None).await;
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        Some("anon"),
        None,
        None,
    )
    .await;
    let rows = wait_dead_letters(&t, "requests", 1).await;
    assert_eq!(rows[0].0.as_deref(), Some("anon"));
    assert!(rows[0].1.starts_with("unauthorized"), "{rows:?}");
    assert!(rows[0].1.contains("user_id"), "{rows:?}");

    // A real broker user, with a tenant's permissions, but mapped to no tenant.
    let stranger = BrokerUser::create(&t, "nts");
    let conn = stranger.conn_with_inbox(&t).await;
    request_as(
        &conn.0,
        &t,
        &stranger.name,
        "What is prompt caching?",
        "unmapped",
        &conn.1.queue,
    )
    .await;
    let rows = wait_dead_letters(&t, "requests", 2).await;
    let (_, error) = rows
        .iter()
        .find(|(m, _)| m.as_deref() == Some("unmapped"))
        .expect("the unmapped request is dead-lettered");
    assert!(error.starts_with("unauthorized"), "{error}");
    assert!(error.contains(&stranger.name), "{error}");
    assert_eq!(run_count(&t).await, 0);
    let _ = conn.0.close(200, ShortString::from("bye")).await;
    t.finish().await;
}

impl BrokerUser {
    /// A connection of this user and an inbox on its reply queue `….x`.
    async fn conn_with_inbox(&self, t: &TestApp) -> (lapin::Connection, Inbox) {
        let conn = self.connect().await;
        let inbox = Inbox::open(&conn, &self.reply_queue(t, "x")).await;
        (conn, inbox)
    }
}

// ---- 4. least privilege -----------------------------------------------------

#[tokio::test]
async fn a_tenant_broker_user_reaches_only_the_intake_and_its_own_replies() {
    let (mut config, db) = test_config().await;
    config.amqp_default_tenant = None;
    let t = TestApp::start_with(config, db, None).await;
    let names = Names::new(&t.config.namespace);
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    let (tenant_a, tenant_b) = (format!("a-{suffix}"), format!("b-{suffix}"));
    let user_a = BrokerUser::create(&t, "nta");
    let user_b = BrokerUser::create(&t, "ntb");
    netra::store::tenants::create(
        &t.pool,
        &tenant_a,
        Some(&user_a.name),
        &crate::common::said(),
    )
    .await
    .unwrap();
    netra::store::tenants::create(
        &t.pool,
        &tenant_b,
        Some(&user_b.name),
        &crate::common::said(),
    )
    .await
    .unwrap();
    let (conn_a, mut inbox_a) = user_a.conn_with_inbox(&t).await;
    let (conn_b, mut inbox_b) = user_b.conn_with_inbox(&t).await;
    assert_eq!(
        inbox_a.queue,
        format!("{}.reply.{}.x", names.namespace(), user_a.name)
    );

    // A's request through the intake exchange, answered in A's queue.
    request_as(
        &conn_a,
        &t,
        &user_a.name,
        "What is prompt caching?",
        "a-1",
        &inbox_a.queue,
    )
    .await;
    let (cid, body) = inbox_a.next().await;
    assert_eq!(cid, "corr-a-1");
    assert_eq!(body["status"], "completed");
    let run = t.wait_all(1, &["completed"]).await.remove(0);
    assert_eq!(run.tenant, tenant_a);
    assert_eq!(body["run_id"], json!(run.id));
    assert_eq!(run.reply_to.as_deref(), Some(inbox_a.queue.as_str()));

    // Everything else is refused by the broker itself.
    let triage = names.phase_queue("triage");
    let refused = [
        (
            "the phase exchange",
            names.phases_exchange(),
            "triage".to_string(),
        ),
        (
            "a phase queue through the default exchange",
            String::new(),
            triage.clone(),
        ),
        ("a dead-letter queue", String::new(), names.dlq("triage")),
        (
            "the dead-letter exchange",
            names.dlx(),
            "triage".to_string(),
        ),
        ("B's reply queue", String::new(), inbox_b.queue.clone()),
    ];
    for (what, exchange, key) in &refused {
        let e = publish_refused(&conn_a, exchange, key, None).await;
        assert_access_refused(what, &e);
    }
    // Nor can A pass itself off as B (RabbitMQ checks user_id).
    let e = publish_refused(&conn_a, &names.intake_exchange(), "", Some(&user_b.name)).await;
    assert_eq!(reply_code(&e), Some(406), "user_id of another user: {e}");
    // Nor read B's replies, nor declare queues under B's prefix.
    let ch = conn_a.create_channel().await.unwrap();
    let e = ch
        .basic_get(
            ShortString::from(inbox_b.queue.as_str()),
            BasicGetOptions::default(),
        )
        .await
        .expect_err("A read B's reply queue");
    assert_access_refused("reading B's reply queue", &e);
    let ch = conn_a.create_channel().await.unwrap();
    let e = ch
        .queue_declare(
            ShortString::from(user_b.reply_queue(&t, "y").as_str()),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("A declared a queue under B's prefix");
    assert_access_refused("declaring under B's prefix", &e);
    // Nothing reached the queues.
    assert_eq!(t.queue_depth(&triage).await, 0);
    assert_eq!(t.queue_depth(&names.dlq("triage")).await, 0);
    // A's connection survived the refusals (channel errors only).
    assert!(conn_a.status().connected());

    // A request from A naming B's queue as reply_to is refused by netra.
    request_as(
        &conn_a,
        &t,
        &user_a.name,
        "What is prompt caching?",
        "a-2",
        &inbox_b.queue,
    )
    .await;
    let rows = wait_dead_letters(&t, "requests", 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.as_deref(), Some("a-2"));
    assert!(rows[0].1.starts_with("forbidden_reply_to"), "{rows:?}");
    assert_eq!(
        run_count(&t).await,
        1,
        "the forbidden request created a run"
    );

    // No cross-tenant read: B's telemetry is invisible to A.
    netra::sample::load(
        &t.pool,
        &tenant_b,
        "wl-b",
        &netra::sample::chat("gpt-4o", 300, 3),
    )
    .await
    .unwrap();
    request_as(
        &conn_a,
        &t,
        &user_a.name,
        "Cut the cost of workload wl-b",
        "a-3",
        &inbox_a.queue,
    )
    .await;
    let (cid, body) = inbox_a.next().await;
    assert_eq!(cid, "corr-a-3");
    assert_eq!(body["status"], "needs_input", "{body}");
    let run_a: Uuid = body["run_id"].as_str().unwrap().parse().unwrap();
    let run_a = t.wait_run(run_a, &["needs_input"]).await;
    assert_eq!(run_a.tenant, tenant_a);
    let markdown = run_a.result.as_ref().unwrap()["markdown"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(markdown.contains("no requests recorded"), "{markdown}");
    assert!(markdown.contains("wl-b"), "{markdown}");
    // The same question from B finds B's data (so A's miss is the scoping).
    // B's first message is its own reply: none came for A's forbidden request.
    request_as(
        &conn_b,
        &t,
        &user_b.name,
        "Cut the cost of workload wl-b",
        "b-1",
        &inbox_b.queue,
    )
    .await;
    let (cid, body) = inbox_b.next().await;
    assert_eq!(
        cid, "corr-b-1",
        "B's queue received a message not meant for it"
    );
    assert_eq!(body["status"], "completed", "{body}");
    let run_b: Uuid = body["run_id"].as_str().unwrap().parse().unwrap();
    let run_b = t.wait_run(run_b, &["completed"]).await;
    assert_eq!(run_b.tenant, tenant_b);

    let _ = conn_a.close(200, ShortString::from("bye")).await;
    let _ = conn_b.close(200, ShortString::from("bye")).await;
    t.finish().await;
    drop((user_a, user_b));
}

// ---- 5. forged envelopes ----------------------------------------------------

#[tokio::test]
async fn an_unsealed_or_missealed_envelope_is_dead_lettered_as_forged() {
    let t = TestApp::start().await;
    let names = Names::new(&t.config.namespace);
    let mut replies = Replies::open(&t.config).await;
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        Some("forge"),
        Some(&replies.queue),
        Some("corr-forge"),
    )
    .await;
    let (cid, _) = replies.next().await;
    assert_eq!(cid, "corr-forge");
    let run = t.wait_all(1, &["completed"]).await.remove(0);
    let env = Envelope::new(run.id, "reporting", 1, 0, &run.correlation_id, &run.tenant);
    let body = env.to_bytes();

    // No seal at all.
    t.publish_raw(&names.phase_queue("reporting"), body.clone())
        .await;
    // A seal made with another key.
    let wrong = netra::pipeline::seal::Seal::new(b"not the deployment's key").tag(&body);
    publish(
        &t.config,
        &Outgoing {
            exchange: names.phases_exchange(),
            routing_key: "reporting".into(),
            body: body.clone(),
            headers: vec![(
                netra::pipeline::seal::HEADER.into(),
                HeaderValue::Text(wrong),
            )],
            ..Default::default()
        },
    )
    .await;
    let rows = wait_dead_letters(&t, "reporting", 2).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|(_, e)| e.starts_with("forged")),
        "{rows:?}"
    );

    // The run did not move, reporting ran once.
    let after = t.wait_run(run.id, &["completed"]).await;
    assert_eq!(after.updated_at, run.updated_at);
    assert_eq!(after.result, run.result);
    let (reporting,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM phase_attempts WHERE run_id = $1 AND phase = 'reporting'",
    )
    .bind(run.id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(reporting, 1);
    let copies = drain(&t, &names.dlq("reporting")).await;
    assert_eq!(copies.len(), 2);
    assert!(copies
        .iter()
        .all(|c| c.error.as_deref().is_some_and(|e| e.starts_with("forged"))));
    // No second reply: the next one on the queue is the next request's.
    t.publish_request(
        &json!({"message": "What is batching?"}),
        Some("next"),
        Some(&replies.queue),
        Some("corr-next"),
    )
    .await;
    let (cid, _) = replies.next().await;
    assert_eq!(cid, "corr-next", "a forged envelope published a reply");
    replies.close().await;
    t.finish().await;
}

#[tokio::test]
async fn a_request_cannot_aim_its_reply_into_the_namespace() {
    let t = TestApp::start().await;
    let names = Names::new(&t.config.namespace);
    // Without user_id (the deployment's tenant): any queue outside the
    // namespace is fine, but not a phase queue, whose consumer would take
    // a forged "reply" for a phase message.
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        Some("aimed"),
        Some(&names.phase_queue("triage")),
        Some("corr-aimed"),
    )
    .await;
    let rows = wait_dead_letters(&t, "requests", 1).await;
    assert!(rows[0].1.starts_with("forbidden_reply_to"), "{rows:?}");
    assert_eq!(run_count(&t).await, 0);
    t.finish().await;
}
