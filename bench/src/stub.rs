//! Stub agents (`--agents stub`): every phase returns a small fixed output
//! at once, without touching the store, and the outputs route a run through
//! all five phases. With them the benchmark measures netra's engine alone
//! (intake, start, input load, effect transaction, publishes, acks), which
//! is what the raw baseline mirrors.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use netra::{
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, AgentSet, PhaseInput},
};

struct Stub(&'static str);

impl Agent for Stub {
    fn phase(&self) -> &'static str {
        self.0
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a AgentContext,
        _input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        let out = match self.0 {
            "triage" => json!({"category": "optimization", "workload_ids": ["bench-w"]}),
            "data" => json!({"sufficiency": "sufficient", "caveats": []}),
            "reporting" => json!({"markdown": "# Report\n\nstub", "summary": "stub"}),
            _ => json!({"ok": true}),
        };
        Box::pin(async move { Ok(out) })
    }
}

/// The five phases, each answered by a stub.
pub fn agents() -> AgentSet {
    ["triage", "data", "optimization", "actions", "reporting"]
        .into_iter()
        .fold(AgentSet::default(), |set, p| set.with(Arc::new(Stub(p))))
}
