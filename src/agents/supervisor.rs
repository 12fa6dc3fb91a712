//! The supervisor: the routing of netra's pipeline, in one place.
//!
//! Phases never call each other. After a phase succeeds, the engine asks the
//! supervisor what comes next, given the outputs persisted so far; the
//! answer is another phase or a final status. This is the whole flow of
//! docs/DESIGN.md ("Phases and routing"):
//!
//! ```text
//! request ─► triage ─┬─ question ───────────────────────────► reporting ─► done
//!                    ├─ analysis ──► data ──────────────────► reporting
//!                    └─ optimization ► data ─► optimization ─► actions ─► reporting
//!                                      └─ data insufficient ─► reporting ─► needs_input
//! ```
//!
//! A request triage cannot act on (its output `ambiguous`, with a
//! clarifying question) is a question: it goes to reporting, which asks,
//! and the run ends `needs_input`, like one whose data is insufficient.
//!
//! It reads the outputs as their types and matches on their enums
//! ([`Category`], [`Sufficiency`]); an output that does not fit its type
//! cannot be routed, and the run is dead-lettered saying so.

use std::collections::BTreeMap;

use serde_json::Value;

use super::outputs::{Category, DataOutput, Sufficiency, TriageOutput};
use crate::{
    model::Phase,
    pipeline::agent::{parse_output, Final, NoRoute, PhaseOutput, Router, Target},
};

/// netra's routing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

/// The outputs a routing decision may read: the phase that just succeeded
/// and those before it.
struct Outputs<'a> {
    phase: &'a str,
    output: &'a Value,
    upstream: &'a BTreeMap<String, Value>,
}

impl Outputs<'_> {
    /// The output of `T`'s phase, if that phase ran.
    fn get<T: PhaseOutput>(&self) -> Result<Option<T>, NoRoute> {
        let value = if T::PHASE == self.phase {
            Some(self.output)
        } else {
            self.upstream.get(T::PHASE.as_str())
        };
        value
            .map(|v| parse_output::<T>(v).map_err(|e| NoRoute(e.message)))
            .transpose()
    }

    /// The output of `T`'s phase, which must have run.
    fn require<T: PhaseOutput>(&self) -> Result<T, NoRoute> {
        self.get::<T>()?.ok_or_else(|| {
            NoRoute(format!(
                "no output of phase `{}` to route after phase `{}`",
                T::PHASE,
                self.phase
            ))
        })
    }

    /// True when triage could not act on the request and asked a question.
    fn triage_ambiguous(&self) -> Result<bool, NoRoute> {
        Ok(self.get::<TriageOutput>()?.is_some_and(|t| t.ambiguous))
    }

    /// True when the data phase ran and found its data insufficient.
    fn data_insufficient(&self) -> Result<bool, NoRoute> {
        Ok(self
            .get::<DataOutput>()?
            .is_some_and(|d| d.sufficiency == Sufficiency::Insufficient))
    }
}

impl Supervisor {
    /// The next step after `phase`.
    fn route(&self, phase: Phase, outputs: &Outputs<'_>) -> Result<Target, NoRoute> {
        let to = |p: Phase| Ok(Target::Phase(p.as_str()));
        match phase {
            Phase::Triage => match outputs.require::<TriageOutput>()?.category {
                Category::Question => to(Phase::Reporting),
                Category::Analysis | Category::Optimization => to(Phase::Data),
            },
            Phase::Data => {
                if outputs.data_insufficient()? {
                    return to(Phase::Reporting);
                }
                match outputs.require::<TriageOutput>()?.category {
                    Category::Optimization => to(Phase::Optimization),
                    Category::Analysis | Category::Question => to(Phase::Reporting),
                }
            }
            Phase::Optimization => to(Phase::Actions),
            Phase::Actions => to(Phase::Reporting),
            Phase::Reporting => Ok(Target::Finish(
                if outputs.data_insufficient()? || outputs.triage_ambiguous()? {
                    Final::NeedsInput
                } else {
                    Final::Completed
                },
            )),
        }
    }
}

impl Router for Supervisor {
    fn first(&self) -> &'static str {
        Phase::Triage.as_str()
    }

    fn next(
        &self,
        phase: &str,
        output: &Value,
        upstream: &BTreeMap<String, Value>,
    ) -> Result<Target, NoRoute> {
        let known: Phase = phase
            .parse()
            .map_err(|_| NoRoute(format!("no routing rule matches after phase `{phase}`")))?;
        self.route(
            known,
            &Outputs {
                phase,
                output,
                upstream,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn walk(category: &str, sufficiency: &str) -> (Vec<&'static str>, Final) {
        let s = Supervisor;
        let mut outputs = BTreeMap::new();
        let mut phase = s.first();
        let mut path = vec![phase];
        loop {
            match phase {
                "triage" => outputs.insert("triage".into(), json!({"category": category})),
                "data" => outputs.insert("data".into(), json!({"sufficiency": sufficiency})),
                p => outputs.insert(p.into(), json!({})),
            };
            match s.next(phase, &outputs[phase], &outputs).unwrap() {
                Target::Phase(p) => {
                    phase = p;
                    path.push(p);
                }
                Target::Finish(f) => return (path, f),
            }
        }
    }

    #[test]
    fn routes_match_design() {
        assert_eq!(
            walk("question", "sufficient"),
            (vec!["triage", "reporting"], Final::Completed)
        );
        assert_eq!(
            walk("analysis", "sufficient"),
            (vec!["triage", "data", "reporting"], Final::Completed)
        );
        assert_eq!(
            walk("optimization", "partial"),
            (
                vec!["triage", "data", "optimization", "actions", "reporting"],
                Final::Completed
            )
        );
        assert_eq!(
            walk("optimization", "insufficient"),
            (vec!["triage", "data", "reporting"], Final::NeedsInput)
        );
        assert_eq!(
            walk("analysis", "insufficient"),
            (vec!["triage", "data", "reporting"], Final::NeedsInput)
        );
    }

    #[test]
    fn an_ambiguous_triage_ends_needing_input() {
        let s = Supervisor;
        let triage = json!({"category": "question", "ambiguous": true, "clarifying_question": "Which workload?"});
        assert_eq!(
            s.next("triage", &triage, &BTreeMap::new()).unwrap(),
            Target::Phase("reporting")
        );
        let upstream = BTreeMap::from([("triage".to_string(), triage)]);
        assert_eq!(
            s.next("reporting", &json!({}), &upstream).unwrap(),
            Target::Finish(Final::NeedsInput)
        );
    }

    #[test]
    fn unknown_phase_has_no_route() {
        assert!(Supervisor
            .next("nope", &Value::Null, &BTreeMap::new())
            .is_err());
    }

    #[test]
    fn an_output_of_the_wrong_shape_has_no_route() {
        let e = Supervisor
            .next("triage", &json!({"category": "poetry"}), &BTreeMap::new())
            .unwrap_err();
        assert!(e.0.contains("triage"), "{e}");
    }
}
