//! What to do with a request, from what was read: optimize, analyse,
//! answer a question, or ask one. A change asked for with no goal named is
//! about cost; a request that cannot be acted on gets one question.

use super::{goals::Reading, numbers::Limits, questions};
use crate::agents::outputs::{Category, Priority};

/// The decision, and the goals it acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The route.
    pub category: Category,
    /// The question to ask instead of acting, when one is needed.
    pub clarifying: Option<String>,
    /// The goals, in the request's order (none for a question).
    pub priorities: Vec<Priority>,
    /// True when cost was assumed because no goal was named.
    pub defaulted: bool,
}

/// What the request asks for, as read.
pub struct Asked<'a> {
    /// The goals and verbs read.
    pub goals: &'a Reading,
    /// The limits read.
    pub limits: &'a Limits,
    /// The workloads named.
    pub workloads: &'a [String],
    /// The topic of a question netra answers without data.
    pub topic: Option<&'a str>,
    /// The language, when it is not English.
    pub language: Option<&'a str>,
    /// The tenant's workloads (named in questions).
    pub known: &'a [String],
}

enum Decision {
    Optimize,
    Analyse,
    Answer,
    Ask(String),
}

/// Decides what to do with the request.
pub fn decide(a: &Asked<'_>) -> Decided {
    let goals = a.goals;
    let mut priorities: Vec<Priority> = goals.priorities.iter().map(|(p, _)| *p).collect();
    // A budget or a cost cut asks about cost ("get chat-prod below $5,000 a month").
    let cost_limit = a.limits.constraints.monthly_budget_usd.is_some()
        || a.limits.constraints.target_reduction_pct.is_some();
    if cost_limit && !priorities.contains(&Priority::Cost) {
        priorities.push(Priority::Cost);
    }
    let hands_off = !goals.hands_off.is_empty();
    let explicit_change = !goals.change.is_empty() || (cost_limit && !hands_off);
    // Advice beats a look ("what's the cheapest way to …"); a wish does not
    // ("show why chat-prod is so expensive"); "don't change anything" beats both.
    let wants_change = explicit_change
        || (!hands_off
            && (!goals.advice.is_empty() || (!goals.better.is_empty() && goals.look.is_empty())));
    let looks = !goals.look.is_empty() || (!wants_change && !goals.metric.is_empty());
    let defaulted = wants_change && priorities.is_empty() && !goals.vague_change;
    if defaulted {
        priorities.push(Priority::Cost);
    }
    let decision = route(a, &priorities, wants_change, looks);
    let (category, clarifying) = match decision {
        Decision::Optimize => (Category::Optimization, None),
        Decision::Analyse => (Category::Analysis, None),
        Decision::Answer => (Category::Question, None),
        Decision::Ask(q) => (Category::Question, Some(q)),
    };
    if category == Category::Question {
        priorities.clear();
    }
    Decided {
        category,
        clarifying,
        priorities,
        defaulted: defaulted && category != Category::Question,
    }
}

/// The route of a request asking for a change, a look, or neither.
fn route(a: &Asked<'_>, priorities: &[Priority], wants_change: bool, looks: bool) -> Decision {
    let no_workload = a.workloads.is_empty();
    if let Some(lang) = a.language {
        Decision::Ask(questions::in_english(lang, a.workloads))
    } else if wants_change {
        match (no_workload, priorities.is_empty(), a.topic) {
            (true, _, Some(_)) => Decision::Answer,
            (true, _, None) => Decision::Ask(questions::which_workload(priorities, false, a.known)),
            (false, true, _) => Decision::Ask(questions::what_to_do(a.workloads)),
            (false, false, _) => Decision::Optimize,
        }
    } else if looks {
        match (no_workload, a.topic) {
            (false, _) => Decision::Analyse,
            (true, Some(_)) => Decision::Answer,
            (true, None) => Decision::Ask(questions::which_workload(priorities, true, a.known)),
        }
    } else if !no_workload && !priorities.is_empty() {
        // "cost of chat-prod since Monday": a measure of a workload, to see.
        Decision::Analyse
    } else if !no_workload {
        Decision::Ask(questions::what_to_do(a.workloads))
    } else if a.topic.is_some() {
        Decision::Answer
    } else if !priorities.is_empty() {
        Decision::Ask(questions::which_workload(priorities, false, a.known))
    } else {
        Decision::Ask(questions::generic(a.known))
    }
}
