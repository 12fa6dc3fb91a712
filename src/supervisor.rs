//! The supervisor: the routing table of the pipeline, as data, in one place.
//!
//! Phases never call each other. After a phase succeeds, the engine asks the
//! supervisor what comes next, given the outputs persisted so far; the
//! answer is another phase or a final status. The table below is the whole
//! flow of docs/DESIGN.md:
//!
//! ```text
//! request ─► triage ─┬─ question ───────────────────────────► reporting ─► done
//!                    ├─ analysis ──► data ──────────────────► reporting
//!                    └─ optimization ► data ─► optimization ─► actions ─► reporting
//!                                      └─ data insufficient ─► reporting ─► needs_input
//! ```

use std::collections::BTreeMap;

use serde_json::Value;

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
    pub fn status(self) -> crate::model::RunStatus {
        match self {
            Final::Completed => crate::model::RunStatus::Completed,
            Final::NeedsInput => crate::model::RunStatus::NeedsInput,
        }
    }
}

/// Where a rule leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Run this phase next.
    Phase(&'static str),
    /// End the run.
    Finish(Final),
}

/// When a rule applies.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// Always (the fallback rule of a phase).
    Always,
    /// A field of a phase's output equals a string.
    Output {
        /// The phase whose output is read.
        phase: &'static str,
        /// The top-level field of that output.
        field: &'static str,
        /// The value it must have.
        equals: &'static str,
    },
}

/// One row of the routing table: after `after`, when `when`, go to `then`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The phase that just succeeded.
    pub after: &'static str,
    /// The condition; the first matching rule of a phase wins.
    pub when: When,
    /// The next step.
    pub then: Target,
}

/// The routing table could not decide: a bug in the table, not in the run.
#[derive(Debug, thiserror::Error)]
#[error("no routing rule matches after phase `{0}`")]
pub struct NoRoute(pub String);

/// The routing table of a pipeline.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// The phase every run starts with.
    pub first: &'static str,
    /// The rules, in priority order.
    pub rules: Vec<Rule>,
}

const fn out(phase: &'static str, field: &'static str, equals: &'static str) -> When {
    When::Output {
        phase,
        field,
        equals,
    }
}

impl Supervisor {
    /// netra's pipeline (DESIGN.md, "Phases and routing").
    pub fn standard() -> Self {
        use Target::{Finish, Phase};
        use When::Always;
        let rule = |after, when, then| Rule { after, when, then };
        Self {
            first: "triage",
            rules: vec![
                rule(
                    "triage",
                    out("triage", "category", "question"),
                    Phase("reporting"),
                ),
                rule("triage", Always, Phase("data")),
                rule(
                    "data",
                    out("data", "sufficiency", "insufficient"),
                    Phase("reporting"),
                ),
                rule(
                    "data",
                    out("triage", "category", "optimization"),
                    Phase("optimization"),
                ),
                rule("data", Always, Phase("reporting")),
                rule("optimization", Always, Phase("actions")),
                rule("actions", Always, Phase("reporting")),
                rule(
                    "reporting",
                    out("data", "sufficiency", "insufficient"),
                    Finish(Final::NeedsInput),
                ),
                rule("reporting", Always, Finish(Final::Completed)),
            ],
        }
    }

    /// Every phase named in the table.
    pub fn phases(&self) -> Vec<&'static str> {
        let mut v = vec![self.first];
        for r in &self.rules {
            v.push(r.after);
            if let Target::Phase(p) = r.then {
                v.push(p);
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// What comes after `phase`, given its `output` and the outputs of the
    /// phases before it.
    pub fn next(
        &self,
        phase: &str,
        output: &Value,
        upstream: &BTreeMap<String, Value>,
    ) -> Result<Target, NoRoute> {
        let current = phase;
        self.rules
            .iter()
            .filter(|r| r.after == phase)
            .find(|r| match r.when {
                When::Always => true,
                When::Output {
                    phase,
                    field,
                    equals,
                } => {
                    let o = if phase == current {
                        Some(output)
                    } else {
                        upstream.get(phase)
                    };
                    o.and_then(|o| o.get(field)).and_then(Value::as_str) == Some(equals)
                }
            })
            .map(|r| r.then)
            .ok_or_else(|| NoRoute(phase.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn walk(category: &str, sufficiency: &str) -> (Vec<&'static str>, Final) {
        let s = Supervisor::standard();
        let mut outputs = BTreeMap::new();
        let mut phase = s.first;
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
    fn phases_are_the_five() {
        assert_eq!(
            Supervisor::standard().phases(),
            vec!["actions", "data", "optimization", "reporting", "triage"]
        );
    }

    #[test]
    fn unknown_phase_has_no_route() {
        assert!(Supervisor::standard()
            .next("nope", &Value::Null, &BTreeMap::new())
            .is_err());
    }
}
