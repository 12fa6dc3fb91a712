//! The contract between the engine and the agents.
//!
//! An agent turns the run's persisted inputs into one output. It never
//! publishes, never calls another phase, and never writes run state: the
//! engine persists its output and the router (the supervisor) decides what
//! comes next.
//!
//! Agents are written against the typed side of the contract: a
//! [`TypedAgent`] declares its output type, a serde struct that names its
//! phase ([`PhaseOutput::PHASE`]), and reads the outputs of the phases before
//! it as their types ([`PhaseInput::output`]). [`AgentSet::typed`] erases the
//! type once, at registration; the engine sees [`Agent`]s that return JSON,
//! which is what it stores and what a replay patch edits.

use std::{collections::BTreeMap, sync::Arc};

use futures_util::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    error::PhaseError,
    model::{Phase, RunStatus},
};

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
    /// Outputs of the phases that already ran, by phase name, as stored
    /// (read them typed with [`PhaseInput::output`]).
    pub outputs: BTreeMap<String, Value>,
    /// The attempt number of this phase.
    pub attempt: u32,
    /// The replay generation (for the call ledger; not part of what the
    /// agent output cache keys on, so a replay can reuse a cached output).
    #[serde(skip)]
    pub replay: u32,
}

impl PhaseInput {
    /// The output of an earlier phase, as its type; a missing output is a
    /// permanent error (the routing ran that phase before this one).
    pub fn output<T: PhaseOutput>(&self) -> Result<T, PhaseError> {
        self.output_if_ran::<T>()?
            .ok_or_else(|| PhaseError::permanent(format!("missing output of phase `{}`", T::PHASE)))
    }

    /// The output of an earlier phase, if that phase ran in this run.
    pub fn output_if_ran<T: PhaseOutput>(&self) -> Result<Option<T>, PhaseError> {
        self.outputs
            .get(T::PHASE.as_str())
            .map(parse_output::<T>)
            .transpose()
    }
}

/// Reads a stored output as its type. An output that does not fit (a replay
/// patch that set a field to the wrong type, say) is a permanent error that
/// names the phase and the field.
pub fn parse_output<T: PhaseOutput>(value: &Value) -> Result<T, PhaseError> {
    T::deserialize(value).map_err(|e| {
        PhaseError::permanent(format!(
            "the output of phase `{}` does not fit its type: {e}",
            T::PHASE
        ))
    })
}

/// The output type of one phase. Its JSON is what the engine stores in
/// `phase_outputs` and shows in the API, so a change to a type is a change
/// to the stored shape (keep old fields readable: runs in flight during an
/// upgrade read outputs the previous build wrote).
pub trait PhaseOutput: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The phase that produces it.
    const PHASE: Phase;
}

/// A phase implementation with a typed output.
pub trait TypedAgent: Send + Sync + 'static {
    /// What the phase produces (and which phase it is).
    type Output: PhaseOutput;

    /// Computes the phase output from its inputs.
    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Self::Output, PhaseError>>;
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
    /// The language model, when one is configured (none: the agents run the
    /// embedded analyst alone).
    pub model: Option<Arc<crate::llm::client::ModelClient>>,
}

impl AgentContext {
    /// A context without data version or memo (tests, one-off calls).
    pub fn unmemoized(pool: sqlx::PgPool) -> Self {
        AgentContext {
            pool,
            data_version: None,
            memo: Arc::new(crate::memo::Memo::default()),
            model: None,
        }
    }

    /// Where a model call of `input`'s phase attempt is recorded.
    pub fn call_scope(&self, input: &PhaseInput, phase: Phase) -> crate::store::ledger::CallScope {
        crate::store::ledger::CallScope {
            tenant: input.tenant.clone(),
            run_id: input.run_id,
            phase: phase.as_str().to_string(),
            attempt: i32::try_from(input.attempt).unwrap_or(i32::MAX),
            replay: i32::try_from(input.replay).unwrap_or(i32::MAX),
        }
    }
}

/// A phase implementation as the engine sees it: JSON out. Agents implement
/// [`TypedAgent`]; this is the erased form (and what tests use to wrap an
/// agent, e.g. to inject failures).
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

/// A [`TypedAgent`] with its type erased.
struct Erased<A>(A);

impl<A: TypedAgent> Agent for Erased<A> {
    fn phase(&self) -> &'static str {
        A::Output::PHASE.as_str()
    }

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            let output = self.0.run(ctx, input).await?;
            serde_json::to_value(&output).map_err(|e| {
                PhaseError::permanent(format!(
                    "the output of phase `{}` cannot be serialized: {e}",
                    A::Output::PHASE
                ))
            })
        })
    }
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// The analysis is done.
    Completed,
    /// The user must supply something; a follow-up message continues.
    NeedsInput,
}

impl Final {
    /// The run status it becomes.
    pub fn status(self) -> RunStatus {
        match self {
            Final::Completed => RunStatus::Completed,
            Final::NeedsInput => RunStatus::NeedsInput,
        }
    }
}

/// Where a run goes after a phase succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Run this phase next.
    Phase(&'static str),
    /// End the run.
    Finish(Final),
}

/// The router could not decide: a bug in the routing or an output that does
/// not fit its type, not a transient fault. The run is dead-lettered with
/// this message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NoRoute(pub String);

/// The routing of a pipeline (the supervisor): which phase a run starts
/// with, and what comes after each phase given the outputs so far.
pub trait Router: Send + Sync {
    /// The phase every run starts with.
    fn first(&self) -> &'static str;

    /// What comes after `phase`, given its `output` and the outputs of the
    /// phases before it (by phase name).
    fn next(
        &self,
        phase: &str,
        output: &Value,
        upstream: &BTreeMap<String, Value>,
    ) -> Result<Target, NoRoute>;
}

/// The agents of a pipeline, by phase name, and the router between them.
#[derive(Clone)]
pub struct AgentSet {
    agents: BTreeMap<&'static str, Arc<dyn Agent>>,
    router: Arc<dyn Router>,
}

impl AgentSet {
    /// No agents yet, routed by `router`.
    pub fn new(router: Arc<dyn Router>) -> Self {
        AgentSet {
            agents: BTreeMap::new(),
            router,
        }
    }

    /// Adds (or replaces) the agent of its phase.
    pub fn with(mut self, agent: Arc<dyn Agent>) -> Self {
        self.agents.insert(agent.phase(), agent);
        self
    }

    /// Adds (or replaces) a typed agent, erasing its type.
    pub fn typed<A: TypedAgent>(self, agent: A) -> Self {
        self.with(Arc::new(Erased(agent)))
    }

    /// The agent of a phase.
    pub fn get(&self, phase: &str) -> Option<Arc<dyn Agent>> {
        self.agents.get(phase).cloned()
    }

    /// All phase names.
    pub fn phases(&self) -> Vec<&'static str> {
        self.agents.keys().copied().collect()
    }

    /// The routing between the phases.
    pub fn router(&self) -> &Arc<dyn Router> {
        &self.router
    }
}
