//! Test harness: starts netra in-process against the local stack with a
//! fresh database and a fresh broker namespace per test, and waits on run
//! states with bounded deadlines (no fixed sleeps). A test app cleans up
//! its database and namespace when dropped, also when its test panics.
//!
//! Its modules are test doubles: [`fake_llm`], a model provider that
//! answers as the test scripts it, and [`wrapper`], an agent around a
//! standard one that counts, waits at a gate or fails as the test sets it up.

pub mod browser;
pub mod duplicator;
pub mod fake_llm;
pub mod wrapper;

use std::{collections::BTreeMap, time::Duration};

use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};
use netra::{
    app::{App, StartOptions},
    broker::{
        self,
        publisher::{Outgoing, Publisher},
    },
    config::Config,
    pipeline::agent::AgentSet,
    store::runs::Run,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Generous bound for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Loads `.local/stack/netra.env` into the environment when the variables
/// are not set already, so `cargo test` works right after `deploy/local/stack start`.
pub fn load_stack_env() {
    if std::env::var("NETRA_DATABASE_URL").is_ok() {
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/stack/netra.env");
    let Ok(text) = std::fs::read_to_string(&path) else {
        panic!(
            "NETRA_* variables are not set and {} is missing: run `deploy/local/stack start`",
            path.display()
        );
    };
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ").trim();
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('\'').trim_matches('"');
            if std::env::var(k).is_err() {
                // SAFETY: tests set these before any thread reads them; a
                // race only means both set the same value.
                unsafe { std::env::set_var(k, v) };
            }
        }
    }
}

/// The admin URL (the stack's `netra` database).
pub fn admin_url() -> String {
    load_stack_env();
    std::env::var("NETRA_DATABASE_URL").expect("NETRA_DATABASE_URL")
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

/// A base config for one test: own database, own namespace, fast retries.
pub async fn test_config() -> (Config, String) {
    load_stack_env();
    let admin = admin_url();
    let db = format!("netra_test_{}", Uuid::new_v4().simple());
    let pool = netra::store::connect_url(&admin, 1)
        .await
        .expect("admin connection");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .expect("create database");
    pool.close().await;
    let mut config = Config::from_env().expect("config");
    config.database_url = SecretString::from(with_database(&admin, &db));
    config.namespace = format!("t-{}", &Uuid::new_v4().simple().to_string()[..12]);
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.retry_initial = Duration::from_millis(50);
    config.retry_max = Duration::from_millis(400);
    config.shutdown_grace = Duration::from_secs(10);
    config.db_pool_size = 8;
    config.default_concurrency = 4;
    config.worker_id = format!("test-{}", std::process::id());
    // Most tests publish requests without user_id, as the local stack's
    // single tenant; the tenancy tests unset this.
    config.amqp_default_tenant = Some("default".into());
    // No language model unless a test sets one (tests/it/llm.rs): the
    // NETRA_LLM_* of the environment must not change what the others test.
    config.llm = netra::llm::config::LlmConfig::default();
    (config, db)
}

/// One test's netra.
pub struct TestApp {
    pub app: Option<App>,
    pub config: Config,
    pub db: String,
    pub pool: PgPool,
    /// Set by [`TestApp::finish`]; otherwise dropping cleans up.
    pub cleaned: bool,
}

impl Drop for TestApp {
    /// A test that panicked (or never called `finish`) still drops its
    /// database and deletes its namespace, on a runtime of its own (the
    /// test's may be unwinding); the app's tasks end with the test's runtime.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (config, db) = (self.config.clone(), self.db.clone());
        let app = self.app.take();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(cleanup(&config, &db));
            }
        })
        .join();
        drop(app);
    }
}

impl TestApp {
    /// Starts with the standard agents.
    pub async fn start() -> Self {
        let (config, db) = test_config().await;
        Self::start_with(config, db, None).await
    }

    /// Starts with a config and optional agents.
    pub async fn start_with(config: Config, db: String, agents: Option<AgentSet>) -> Self {
        let opts = StartOptions {
            agents,
            ..StartOptions::default()
        };
        Self::start_opts(config, db, opts).await
    }

    /// Starts with explicit start options (e.g. only some phases consumed).
    pub async fn start_opts(config: Config, db: String, opts: StartOptions) -> Self {
        let app = App::start(config.clone(), opts)
            .await
            .expect("netra starts");
        let pool = app.engine.pool.clone();
        let t = Self {
            app: Some(app),
            config,
            db,
            pool,
            cleaned: false,
        };
        t.wait_connected().await;
        t
    }

    /// A second netra on this app's database and broker namespace (another
    /// worker of the same deployment), with its own `config` (say, another
    /// worker id) and agents. It leaves the cleanup to this app: stop it
    /// (`peer.app.take()` and `shutdown`) before this one finishes.
    pub async fn start_peer(&self, mut config: Config, agents: Option<AgentSet>) -> TestApp {
        config.database_url = self.config.database_url.clone();
        config.namespace = self.config.namespace.clone();
        let mut peer = Self::start_with(config, self.db.clone(), agents).await;
        peer.cleaned = true;
        peer
    }

    fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    /// Base URL of the API.
    pub fn base(&self) -> String {
        format!("http://{}", self.app().http_addr.expect("http"))
    }

    /// Waits until the worker is connected (topology declared).
    pub async fn wait_connected(&self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !self.app().engine.link.is_up() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker did not connect"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes a request to `<ns>.requests`.
    pub async fn publish_request(
        &self,
        body: &Value,
        message_id: Option<&str>,
        reply_to: Option<&str>,
        correlation_id: Option<&str>,
    ) {
        publish(
            &self.config,
            &Outgoing {
                exchange: String::new(),
                routing_key: format!("{}.requests", self.config.namespace),
                body: serde_json::to_vec(body).unwrap(),
                message_id: message_id.map(str::to_string),
                correlation_id: correlation_id.map(str::to_string),
                reply_to: reply_to.map(str::to_string),
                headers: vec![],
            },
        )
        .await;
    }

    /// Publishes a phase envelope as netra does (sealed, to the phase exchange).
    pub async fn publish_envelope(&self, env: &netra::pipeline::envelope::Envelope) {
        let engine = &self.app().engine;
        let msg = netra::pipeline::dispatch::phase_message(&engine.names, &engine.seal, env);
        publish(&self.config, &msg).await;
    }

    /// Publishes raw bytes to a queue with netra's seal over them (so that
    /// a phase consumer looks past the seal into the body).
    pub async fn publish_sealed_raw(&self, queue: &str, body: Vec<u8>) {
        let tag = self.app().engine.seal.tag(&body);
        publish(
            &self.config,
            &Outgoing {
                exchange: String::new(),
                routing_key: queue.to_string(),
                body,
                headers: vec![(
                    netra::pipeline::seal::HEADER.into(),
                    netra::broker::publisher::HeaderValue::Text(tag),
                )],
                ..Default::default()
            },
        )
        .await;
    }

    /// Publishes raw bytes to a queue through the default exchange.
    pub async fn publish_raw(&self, queue: &str, body: Vec<u8>) {
        publish(
            &self.config,
            &Outgoing {
                exchange: String::new(),
                routing_key: queue.to_string(),
                body,
                ..Default::default()
            },
        )
        .await;
    }

    /// Waits until `n` runs exist and all are in one of `statuses`.
    pub async fn wait_all(&self, n: usize, statuses: &[&str]) -> Vec<Run> {
        wait_all(&self.pool, n, statuses).await
    }

    /// Waits until a run is in one of `statuses`.
    pub async fn wait_run(&self, id: Uuid, statuses: &[&str]) -> Run {
        wait_run(&self.pool, id, statuses).await
    }

    /// Messages ready in a queue.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        queue_depth(&self.config, queue).await
    }

    /// Creates a tenant and returns its token.
    pub async fn tenant(&self, name: &str) -> String {
        netra::store::tenants::create(&self.pool, name, None, &crate::common::said())
            .await
            .unwrap()
    }

    /// Creates an operator and returns its token.
    pub async fn operator(&self, name: &str) -> String {
        netra::store::operators::create(&self.pool, name, &said())
            .await
            .unwrap()
    }

    /// Stops netra, deletes the namespace's queues and drops the database.
    pub async fn finish(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        cleanup(&self.config, &self.db).await;
        self.cleaned = true;
    }
}

/// Who and why, for the audited actions a test takes itself.
pub fn said() -> netra::store::audit::Said {
    netra::store::audit::Said::new(
        "cli:test",
        netra::model::Reason::parse(Some("test setup")).unwrap(),
    )
}

/// Waits until `n` runs exist and all are in one of `statuses`.
pub async fn wait_all(pool: &PgPool, n: usize, statuses: &[&str]) -> Vec<Run> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        // The store's own column list: a column added to `Run` needs no
        // change here.
        let sql = format!(
            "SELECT {} FROM runs ORDER BY created_at, id",
            netra::store::runs::RUN_COLUMNS
        );
        let runs: Vec<Run> = sqlx::query_as(&sql)
            .fetch_all(pool)
            .await
            .unwrap_or_default();
        if runs.len() >= n && runs.iter().all(|r| statuses.contains(&r.status.as_str())) {
            return runs;
        }
        if tokio::time::Instant::now() > deadline {
            let mut by: BTreeMap<String, usize> = BTreeMap::new();
            for r in &runs {
                *by.entry(format!(
                    "{}({})",
                    r.status,
                    r.phase.clone().unwrap_or_default()
                ))
                .or_default() += 1;
            }
            panic!(
                "timed out: wanted {n} runs in {statuses:?}, have {} runs: {by:?}",
                runs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a run is in one of `statuses`.
pub async fn wait_run(pool: &PgPool, id: Uuid, statuses: &[&str]) -> Run {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(run)) = netra::store::runs::get(pool, id).await {
            if statuses.contains(&run.status.as_str()) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} stuck in {}({:?})",
                run.status,
                run.phase
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes one message with confirm.
pub async fn publish(config: &Config, msg: &Outgoing) {
    let conn = broker::connect(config, "test publisher").await.unwrap();
    let p = Publisher::open(&conn).await.unwrap();
    p.publish_routed(msg).await.unwrap();
    let _ = conn.close(200, ShortString::from("bye")).await;
}

/// Messages ready in a queue (passive declare).
pub async fn queue_depth(config: &Config, queue: &str) -> u32 {
    let conn = broker::connect(config, "test probe").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let n = q.message_count();
    let _ = conn.close(200, ShortString::from("bye")).await;
    n
}

/// Declares an exclusive queue named `queue` on `conn` (`""`: a
/// server-named one) and consumes it; returns its name and the consumer.
pub async fn consume_exclusive(conn: &lapin::Connection, queue: &str) -> (String, lapin::Consumer) {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().clone(),
            ShortString::from("t"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (q.name().as_str().to_string(), consumer)
}

/// The next message of a consumer, acked: (correlation id, JSON body).
pub async fn next_message(consumer: &mut lapin::Consumer) -> (String, Value) {
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("reply in time")
        .expect("stream")
        .expect("delivery");
    d.acker.ack(BasicAckOptions::default()).await.unwrap();
    let cid = d
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    (cid, serde_json::from_slice(&d.data).unwrap())
}

/// A reply queue and a receiver of its messages.
pub struct Replies {
    pub queue: String,
    conn: lapin::Connection,
    consumer: lapin::Consumer,
}

impl Replies {
    /// Declares an exclusive reply queue.
    pub async fn open(config: &Config) -> Self {
        let conn = broker::connect(config, "test replies").await.unwrap();
        let (queue, consumer) = consume_exclusive(&conn, "").await;
        Self {
            queue,
            conn,
            consumer,
        }
    }

    /// The next reply: (correlation id, body).
    pub async fn next(&mut self) -> (String, Value) {
        next_message(&mut self.consumer).await
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, ShortString::from("bye")).await;
    }
}

/// Deletes the namespace's queues and exchanges and drops the database.
pub async fn cleanup(config: &Config, db: &str) {
    if let Ok(conn) = broker::connect(config, "test cleanup").await {
        let names = netra::broker::topology::Names::new(&config.namespace);
        netra::broker::topology::delete(&conn, &names, &netra::agents::standard().phases()).await;
        let _ = conn.close(200, ShortString::from("bye")).await;
    }
    if let Ok(pool) = netra::store::connect_url(&admin_url(), 1).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// Exposes a config's database URL (tests only).
pub fn database_url(config: &Config) -> String {
    config.database_url.expose_secret().to_string()
}

/// A fresh migrated database without the rest of netra (for tests of the
/// store, the tools and ingest that need no broker); `cleanup` drops it.
pub async fn fresh_db() -> (Config, String, PgPool) {
    let (config, db) = test_config().await;
    let pool = netra::store::connect_url(&database_url(&config), 4)
        .await
        .unwrap();
    netra::store::migrate(&pool).await.unwrap();
    (config, db, pool)
}

/// Prices of a catalog model, read with SQL from the catalog table: input
/// and output per Mtok, the cached-input and the batch discounts.
pub async fn catalog_price(pool: &PgPool, id: &str) -> (f64, f64, f64, f64) {
    sqlx::query_as(
        "SELECT input_per_mtok, output_per_mtok, cached_input_discount, batch_discount FROM catalog_models WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Loads sample telemetry for a workload of the default tenant.
pub async fn load_sample(pool: &PgPool, workload: &str, requests: usize) {
    netra::sample::load(
        pool,
        "default",
        workload,
        &netra::sample::chat("gpt-4o", requests, 11),
    )
    .await
    .unwrap();
}

/// Creates a run directly in the store (as intake would), waiting at `first_phase`.
pub async fn create_run(
    pool: &PgPool,
    tenant: &str,
    correlation_id: &str,
    message: &str,
    first_phase: &str,
) -> Run {
    let new = netra::store::runs::NewRun {
        tenant: tenant.into(),
        thread_id: None,
        correlation_id: correlation_id.into(),
        request_message_id: None,
        reply_to: None,
        message: message.into(),
        workload_id: None,
        context: serde_json::json!({}),
        priority: 0,
        over_rate: false,
    };
    netra::store::runs::create_run(pool, &new, first_phase, "test", Default::default())
        .await
        .unwrap()
        .run
}

/// A blocking HTTP client that returns error statuses instead of failing.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}
