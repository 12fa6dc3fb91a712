//! The contract between the engine and the agents.
//!
//! An agent turns the run's persisted inputs into one JSON output. It never
//! publishes, never calls another phase, and never writes run state: the
//! engine persists its output and the supervisor decides what comes next.

use std::{collections::BTreeMap, sync::Arc};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::PhaseError;

pub use crate::model::ThreadMessage;

/// Everything a phase may read, assembled from Postgres.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseInput {
    /// The run.
    pub run_id: Uuid,
    /// Its tenant; tools only see this tenant's data.
    pub tenant: String,
    /// Its conversation thread.
    pub thread_id: Uuid,
    /// The upstream request: `message`, `workload_id`, `context`.
    pub request: Value,
    /// Earlier messages of the thread (oldest first), for follow-ups.
    pub thread: Vec<ThreadMessage>,
    /// Outputs of the phases that already ran, by phase name.
    pub outputs: BTreeMap<String, Value>,
    /// The attempt number of this phase.
    pub attempt: u32,
}

/// What agents may use while they work.
#[derive(Clone)]
pub struct AgentContext {
    /// The store, for the tools that read telemetry and the catalog.
    pub pool: sqlx::PgPool,
    /// The version of that data when the phase started (`None`: unknown,
    /// nothing is memoized).
    pub data_version: Option<i64>,
    /// Read results memoized by data version, shared by the process.
    pub memo: Arc<crate::memo::Memo>,
}

impl AgentContext {
    /// A context without data version or memo (tests, one-off calls).
    pub fn unmemoized(pool: sqlx::PgPool) -> Self {
        AgentContext {
            pool,
            data_version: None,
            memo: Arc::new(crate::memo::Memo::default()),
        }
    }
}

/// A phase implementation.
pub trait Agent: Send + Sync {
    /// The phase this agent serves (and the name of its queue).
    fn phase(&self) -> &'static str;

    /// Computes the phase output from its inputs.
    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>>;
}

/// The agents of a pipeline, by phase name.
#[derive(Clone, Default)]
pub struct AgentSet {
    agents: BTreeMap<&'static str, Arc<dyn Agent>>,
}

impl AgentSet {
    /// Adds (or replaces) the agent of its phase.
    pub fn with(mut self, agent: Arc<dyn Agent>) -> Self {
        self.agents.insert(agent.phase(), agent);
        self
    }

    /// The agent of a phase.
    pub fn get(&self, phase: &str) -> Option<Arc<dyn Agent>> {
        self.agents.get(phase).cloned()
    }

    /// All phase names.
    pub fn phases(&self) -> Vec<&'static str> {
        self.agents.keys().copied().collect()
    }
}
