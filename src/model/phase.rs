//! The phases of netra's pipeline, as a type (docs/DESIGN.md "Phases and
//! routing"). The engine itself routes phase *names* (whatever its agents
//! serve, each a queue); the agents, the supervisor and everything else that
//! means a particular phase name it through this enum, so a typo is a compile
//! error.

/// One phase of the pipeline. Stored as its name in `runs.phase`,
/// `phase_attempts.phase` and the envelope.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Phase {
    /// Reads the request: intent, category, workloads, constraints.
    Triage,
    /// Runs the data tools and rates data sufficiency.
    Data,
    /// Computes the recommendations.
    Optimization,
    /// Turns recommendations into steps and a validated supply configuration.
    Actions,
    /// Writes the report.
    Reporting,
}

impl Phase {
    /// Every phase, in pipeline order.
    pub const ALL: [Phase; 5] = [
        Phase::Triage,
        Phase::Data,
        Phase::Optimization,
        Phase::Actions,
        Phase::Reporting,
    ];

    /// The phase's name: its queue, its key in a run's outputs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Triage => "triage",
            Phase::Data => "data",
            Phase::Optimization => "optimization",
            Phase::Actions => "actions",
            Phase::Reporting => "reporting",
        }
    }
}

/// A name that is not a phase.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown phase `{0}`")]
pub struct UnknownPhase(pub String);

names!(Phase, UnknownPhase);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!("nope".parse::<Phase>().is_err());
    }
}
