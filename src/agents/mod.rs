//! The agents: one file per phase, each a [`TypedAgent`] turning persisted
//! inputs into its typed output ([`outputs`]), and the [`supervisor`] that
//! routes between them. The numbers are computed from telemetry and the
//! catalog by the embedded analyst, so netra works offline.
//!
//! [`TypedAgent`]: crate::pipeline::agent::TypedAgent

pub mod actions;
/// The supply catalog (lives in [`crate::catalog`], shared with the tools).
pub use crate::catalog;
pub mod data;
pub mod model_prose;
pub mod model_triage;
pub mod optimization;
pub mod outputs;
pub mod reporting;
pub mod supervisor;
pub mod triage;

use std::sync::Arc;

use crate::pipeline::agent::AgentSet;

/// The five agents of netra's pipeline, routed by the [`supervisor`].
pub fn standard() -> AgentSet {
    AgentSet::new(Arc::new(supervisor::Supervisor))
        .typed(triage::Triage)
        .typed(data::Data)
        .typed(optimization::Optimization)
        .typed(actions::Actions)
        .typed(reporting::Reporting)
}

/// Rounds to cents (or to 2 decimals for any figure shown to people).
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
