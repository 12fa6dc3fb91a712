//! The pipeline engine: consume, dedup, persist, publish, retry, dead-letter.
//!
//! It knows phases only by name and agents only through
//! [`agent::Agent`]; the routing is the agent set's [`agent::Router`]
//! (netra's is `crate::agents::supervisor`).
//!
//! - [`intake`] turns upstream requests into runs;
//! - [`worker`] processes one phase message;
//! - [`settle`] acks, hands back or dead-letters a delivery (every consumer);
//! - [`effects`] works out what an attempt's effect writes and leads to
//!   (the store writes it, [`committer`] batches it);
//! - [`dispatch`] publishes the follow-ups of a committed effect;
//! - [`crashloop`] indexes what RabbitMQ dead-letters by its delivery limit;
//! - [`seal`] authenticates phase envelopes;
//! - [`lease`] renews, releases and sweeps the leases of running attempts;
//! - [`retry`] computes backoff and re-publishes due retries (and the steps
//!   whose lease expired);
//! - [`consumer`] is the generic consume loop (prefetch, concurrency, shutdown);
//! - [`service`] owns the broker connection and restarts everything on loss.

pub mod admission;
pub mod agent;
pub mod batcher;
pub mod committer;
pub mod consumer;
pub mod crashloop;
pub mod dispatch;
pub mod dispatched;
pub mod effects;
/// The phase message (lives in [`crate::model`], shared with the store).
pub use crate::model::envelope;
pub mod inbox;
pub mod intake;
pub mod lease;
/// What a processed message leads to (lives in [`crate::model`]).
pub use crate::model::outbound;
pub mod replay;
pub mod retry;
pub mod seal;
pub mod service;
pub mod settle;
pub mod shutdown;
pub mod starter;
pub mod tenant_facts;
pub mod worker;

use std::sync::Arc;

use sqlx::PgPool;

use crate::{broker::topology::Names, cache::Cache, config::Config, metrics::Metrics};

/// Everything the engine's tasks share.
#[derive(Clone)]
pub struct Engine {
    /// Settings.
    pub config: Arc<Config>,
    /// The store.
    pub pool: PgPool,
    /// Pool for the "phase started" marks, committed with
    /// `synchronous_commit = off` (see [`crate::store::connect_relaxed`]).
    pub marks: PgPool,
    /// Pool for the per-message statements (AMQP intake, effect
    /// transactions), with plans cached per connection (see
    /// [`crate::store::connect_hot`]); the API and the agents use `pool`.
    pub hot: PgPool,
    /// Queue names.
    pub names: Names,
    /// The agents, and the router between them.
    pub agents: agent::AgentSet,
    /// Status cache and long-poll wake-ups (optional: Postgres is the truth).
    pub cache: Option<Cache>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The broker link of this process, shared with the HTTP API.
    pub link: Arc<BrokerLink>,
    /// The agents' read results, memoized by data version.
    pub memo: Arc<crate::memo::Memo>,
    /// Group commit of effects (successes and retries); with
    /// `NETRA_COMMIT_BATCH=1` every batch is one effect.
    pub committer: committer::Committer,
    /// Batched phase starts.
    pub starter: starter::Starter,
    /// Batched intake of AMQP requests.
    pub creator: intake::Creator,
    /// Broker users' tenants and tenants' request rates, as intake reads
    /// them.
    pub tenant_facts: Arc<tenant_facts::TenantFacts>,
    /// Marks follow-ups dispatched once confirmed.
    pub dispatched: dispatched::DispatchMarks,
    /// Signs and checks phase envelopes.
    pub seal: Arc<seal::Seal>,
    /// Per-tenant and per-address rate limits.
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    /// The language model the agents call, when one is configured.
    pub model: Option<Arc<crate::llm::client::ModelClient>>,
    /// The leases of the attempts this process runs, renewed together.
    pub leases: Arc<lease::Keeper>,
}

/// The current broker connection state, for `/readyz` and the API's publishes.
#[derive(Default)]
pub struct BrokerLink {
    publisher: std::sync::RwLock<Option<crate::broker::publisher::Publisher>>,
    probe: std::sync::RwLock<Option<lapin::Channel>>,
}

impl BrokerLink {
    /// A publisher while connected.
    pub fn publisher(&self) -> Option<crate::broker::publisher::Publisher> {
        self.publisher
            .read()
            .ok()
            .and_then(|p| p.clone())
            .filter(|p| p.is_connected())
    }

    /// Sets (or clears) the publisher after a (re)connect or a loss.
    pub fn set(&self, p: Option<crate::broker::publisher::Publisher>) {
        if let Ok(mut guard) = self.publisher.write() {
            *guard = p;
        }
    }

    /// True while connected.
    pub fn is_up(&self) -> bool {
        self.publisher().is_some()
    }

    /// Sets (or clears) the channel used to read queue depths.
    pub fn set_probe(&self, ch: Option<lapin::Channel>) {
        if let Ok(mut guard) = self.probe.write() {
            *guard = ch;
        }
    }

    /// Messages ready in each named queue (passive declares); queues that
    /// cannot be read are left out.
    pub async fn queue_depths(&self, queues: &[String]) -> Vec<(String, u32)> {
        let Some(ch) = self.probe.read().ok().and_then(|c| c.clone()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for q in queues {
            let opts = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if let Ok(info) = ch
                .queue_declare(q.as_str().into(), opts, Default::default())
                .await
            {
                out.push((q.clone(), info.message_count()));
            }
        }
        out
    }
}

/// The engine's Postgres pools, named by purpose.
pub struct Pools {
    /// The API, the agents' tools, the schedulers.
    pub main: PgPool,
    /// The "phase started" marks, committed with `synchronous_commit = off`
    /// (see [`crate::store::connect_relaxed`]).
    pub marks: PgPool,
    /// The per-message statements (intake, effects), with plans cached per
    /// connection (see [`crate::store::connect_hot`]).
    pub hot: PgPool,
}

impl Engine {
    /// An engine over the given parts; starts the batchers of intake,
    /// starts, effects and dispatch marks (needs a Tokio runtime). With
    /// `NETRA_COMMIT_BATCH=1` each batch holds one item: the unbatched case.
    pub fn new(
        config: Config,
        pools: Pools,
        agents: agent::AgentSet,
        cache: Option<Cache>,
        seal: seal::Seal,
    ) -> Self {
        let names = Names::new(&config.namespace);
        let memo = Arc::new(crate::memo::Memo::new(config.memo_entries));
        let limiter = Arc::new(crate::ratelimit::RateLimiter::new());
        let metrics = Arc::new(Metrics::default());
        let first = agents.router().first();
        let batch = config.commit_batch.max(1);
        let Pools { main, marks, hot } = pools;
        let model = model_client(&config, &main, cache.as_ref(), &limiter);
        Self {
            committer: committer::Committer::start(
                hot.clone(),
                metrics.clone(),
                batch,
                config.commit_concurrency,
            ),
            // Requests come in bursts shared by every tenant: larger
            // batches drain them into Postgres fast (1 stays 1: the
            // unbatched path).
            creator: intake::creator(
                hot.clone(),
                first,
                metrics.clone(),
                if batch == 1 {
                    1
                } else {
                    batch.max(crate::config::INTAKE_BATCH)
                },
                config.fair,
            ),
            tenant_facts: Arc::default(),
            starter: starter::Starter::start(
                marks.clone(),
                config.worker_id.clone(),
                config.lease,
                metrics.clone(),
                batch,
                config.commit_concurrency,
            ),
            dispatched: dispatched::DispatchMarks::start(marks.clone()),
            leases: lease::Keeper::start(marks.clone(), config.lease),
            config: Arc::new(config),
            pool: main,
            marks,
            hot,
            names,
            agents,
            cache,
            metrics,
            link: Arc::new(BrokerLink::default()),
            memo,
            seal: Arc::new(seal),
            limiter,
            model,
        }
    }

    /// The number of model calls answered from the ledger and made, when a
    /// model is configured.
    pub fn ledger_stats(&self) -> Option<&crate::llm::client::LedgerStats> {
        self.model.as_deref().map(|m| &*m.stats)
    }

    /// True when `phase` is served by an agent.
    pub fn knows_phase(&self, phase: &str) -> bool {
        self.agents.get(phase).is_some()
    }
}

/// The model client of the configured endpoint (none without one; a client
/// that cannot be built is logged, and the agents run the embedded analyst).
fn model_client(
    config: &Config,
    pool: &PgPool,
    cache: Option<&Cache>,
    limiter: &Arc<crate::ratelimit::RateLimiter>,
) -> Option<Arc<crate::llm::client::ModelClient>> {
    if !config.llm.enabled() {
        return None;
    }
    match crate::llm::openai::OpenAiCompatible::new(&config.llm) {
        Ok(endpoint) => Some(Arc::new(crate::llm::client::ModelClient::new(
            Arc::new(endpoint),
            config.llm.clone(),
            pool.clone(),
            cache.cloned(),
            limiter.clone(),
        ))),
        Err(e) => {
            tracing::error!(error = %e, "the language model is configured but unusable; using the embedded analyst");
            None
        }
    }
}
