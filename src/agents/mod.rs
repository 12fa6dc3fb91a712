//! The agents: one file per phase, each turning persisted inputs into one
//! JSON output. The numbers are computed from telemetry and the catalog by
//! the embedded analyst, so netra works offline.

pub mod actions;
/// The supply catalog (lives in [`crate::catalog`], shared with the tools).
pub use crate::catalog;
pub mod data;
pub mod optimization;
pub mod reporting;
pub mod triage;

use std::sync::Arc;

use crate::pipeline::agent::AgentSet;

/// The five agents of netra's pipeline.
pub fn standard() -> AgentSet {
    AgentSet::default()
        .with(Arc::new(triage::Triage))
        .with(Arc::new(data::Data))
        .with(Arc::new(optimization::Optimization))
        .with(Arc::new(actions::Actions))
        .with(Arc::new(reporting::Reporting))
}

/// Reads a field of an upstream output.
pub(crate) fn upstream<'a>(
    input: &'a crate::pipeline::agent::PhaseInput,
    phase: &str,
) -> Result<&'a serde_json::Value, crate::error::PhaseError> {
    input.outputs.get(phase).ok_or_else(|| {
        crate::error::PhaseError::permanent(format!("missing output of phase `{phase}`"))
    })
}

/// Rounds to cents (or to 2 decimals for any figure shown to people).
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
