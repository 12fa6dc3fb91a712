//! Stub agents (`--agents stub`): every phase returns a small fixed output
//! at once, without touching the store, and the outputs route a run through
//! all five phases. With them the benchmark measures netra's engine alone
//! (intake, start, input load, effect transaction, publishes, acks), which
//! is what the raw baseline mirrors.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use netra::{
    agents::supervisor::Supervisor,
    error::PhaseError,
    model::Phase,
    pipeline::agent::{Agent, AgentContext, AgentSet, PhaseInput},
};

struct Stub(Phase);

impl Agent for Stub {
    fn phase(&self) -> &'static str {
        self.0.as_str()
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a AgentContext,
        _input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        let out = match self.0 {
            Phase::Triage => json!({"category": "optimization", "workload_ids": ["bench-w"]}),
            Phase::Data => json!({"sufficiency": "sufficient", "caveats": []}),
            Phase::Reporting => json!({"markdown": "# Report\n\nstub", "summary": "stub"}),
            _ => json!({"ok": true}),
        };
        Box::pin(async move { Ok(out) })
    }
}

/// The five phases, each answered by a stub, routed by netra's supervisor.
pub fn agents() -> AgentSet {
    Phase::ALL
        .into_iter()
        .fold(AgentSet::new(Arc::new(Supervisor)), |set, p| {
            set.with(Arc::new(Stub(p)))
        })
}

/// netra's own triage (which asks the model when one is configured), and
/// stubs for the other phases: the slow-model mode's agents.
pub fn with_model_triage() -> AgentSet {
    Phase::ALL.into_iter().filter(|p| *p != Phase::Triage).fold(
        AgentSet::new(Arc::new(Supervisor)).typed(netra::agents::triage::Triage),
        |set, p| set.with(Arc::new(Stub(p))),
    )
}
