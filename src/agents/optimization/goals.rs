//! The stated goal decides what is considered and how it ranks: each
//! recommendation kind answers one or more goals ([`KINDS`]); a request
//! considers the kinds of its goals (triage's `priorities`; none stated:
//! cost), lists the others under "left out" with the reason, and ranks what
//! it keeps by its goals in order.

use std::cmp::Ordering;

use crate::agents::outputs::{Excluded, Priority, Recommendation};

use Priority::{Cost, Latency, Quality, Throughput};

/// Every recommendation kind and the goals it answers.
pub const KINDS: &[(&str, &[Priority])] = &[
    ("model_routing", &[Cost]),
    ("model_right_sizing", &[Cost]),
    ("self_hosting", &[Cost]),
    ("max_output_tokens", &[Cost, Latency]),
    ("prompt_trimming", &[Cost, Latency]),
    ("prompt_caching", &[Cost]),
    ("batch_processing", &[Cost, Throughput]),
    ("provisioned_throughput", &[Cost]),
    ("faster_model", &[Latency]),
    ("streaming", &[Latency]),
    ("capacity_for_peaks", &[Latency, Throughput]),
    ("model_upgrade", &[Quality]),
    ("quality_comparison", &[Quality]),
    ("self_hosted_capacity", &[Throughput]),
];

/// The kinds that raise throughput at the peak, in the order they rank.
const THROUGHPUT_ORDER: &[&str] = &[
    "capacity_for_peaks",
    "self_hosted_capacity",
    "batch_processing",
];

/// The goals of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Goals {
    /// The goals, in the request's order (cost when none was stated).
    pub asked: Vec<Priority>,
    /// True when none was stated and cost was assumed.
    pub defaulted: bool,
}

fn names(goals: &[Priority]) -> String {
    goals
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Goals {
    /// The goals of triage's priorities.
    pub fn of(priorities: &[Priority]) -> Self {
        let defaulted = priorities.is_empty();
        Goals {
            asked: if defaulted {
                vec![Cost]
            } else {
                priorities.to_vec()
            },
            defaulted,
        }
    }

    /// The goals a kind answers (none for an unknown kind).
    pub fn answered_by(kind: &str) -> &'static [Priority] {
        KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[][..], |(_, g)| *g)
    }

    /// True when a kind answers one of the goals asked.
    pub fn considers(&self, kind: &str) -> bool {
        Self::answered_by(kind)
            .iter()
            .any(|g| self.asked.contains(g))
    }

    /// The goals asked, in words.
    pub fn words(&self) -> String {
        names(&self.asked)
    }

    /// The kinds the goals exclude, for one workload, with the reason.
    pub fn left_out(&self, workload_id: &str) -> Vec<Excluded> {
        KINDS
            .iter()
            .filter(|(k, _)| !self.considers(k))
            .map(|(k, g)| Excluded {
                kind: k.to_string(),
                workload_id: workload_id.to_string(),
                model: String::new(),
                reason: format!(
                    "answers {}; the request asks for {}",
                    names(g),
                    self.words()
                ),
            })
            .collect()
    }
}

/// A recommendation's quality gain in catalog tiers (0 when it has none).
fn tier_gain(r: &Recommendation) -> i64 {
    r.field("tier_gain").as_i64().unwrap_or(0)
}

/// Where a kind ranks for throughput (kinds that do not raise it last).
fn throughput_rank(r: &Recommendation) -> usize {
    THROUGHPUT_ORDER
        .iter()
        .position(|k| *k == r.kind)
        .unwrap_or(THROUGHPUT_ORDER.len())
}

/// How two recommendations compare on one goal: those that answer it
/// first, then cost (larger savings), latency (larger reduction), quality
/// (larger tier gain, then the cheaper) or throughput (capacity first).
fn by_goal(a: &Recommendation, b: &Recommendation, g: Priority) -> Ordering {
    let answers = |r: &Recommendation| Goals::answered_by(&r.kind).contains(&g);
    answers(b).cmp(&answers(a)).then_with(|| match g {
        Cost => b.monthly_savings_usd.total_cmp(&a.monthly_savings_usd),
        Latency => a.latency_impact_ms.total_cmp(&b.latency_impact_ms),
        Quality => tier_gain(b)
            .cmp(&tier_gain(a))
            .then_with(|| b.monthly_savings_usd.total_cmp(&a.monthly_savings_usd)),
        Throughput => throughput_rank(a).cmp(&throughput_rank(b)),
    })
}

/// Orders recommendations by the goals, in their order; ties by savings,
/// then kind.
pub fn rank(recs: &mut [Recommendation], goals: &[Priority]) {
    recs.sort_by(|a, b| {
        goals
            .iter()
            .map(|g| by_goal(a, b, *g))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
            .then_with(|| b.monthly_savings_usd.total_cmp(&a.monthly_savings_usd))
            .then_with(|| a.kind.cmp(&b.kind))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, savings: f64, latency: f64) -> Recommendation {
        Recommendation {
            kind: kind.into(),
            monthly_savings_usd: savings,
            latency_impact_ms: latency,
            ..Default::default()
        }
    }

    #[test]
    fn goals_choose_kinds_and_name_what_they_leave_out() {
        let g = Goals::of(&[Latency]);
        assert!(g.considers("streaming") && g.considers("max_output_tokens"));
        assert!(!g.considers("model_routing") && !g.considers("model_upgrade"));
        let out = g.left_out("w");
        let routing = out.iter().find(|e| e.kind == "model_routing").unwrap();
        assert_eq!(routing.reason, "answers cost; the request asks for latency");
        assert!(Goals::of(&[]).defaulted && Goals::of(&[]).considers("prompt_caching"));
    }

    #[test]
    fn ranking_follows_the_first_goal() {
        let mut recs = vec![
            rec("prompt_caching", 10.0, 0.0),
            rec("streaming", 0.0, -500.0),
            rec("capacity_for_peaks", 0.0, 0.0),
        ];
        rank(&mut recs, &[Cost]);
        assert_eq!(recs[0].kind, "prompt_caching");
        rank(&mut recs, &[Latency]);
        assert_eq!(recs[0].kind, "streaming");
        rank(&mut recs, &[Throughput, Cost]);
        assert_eq!(recs[0].kind, "capacity_for_peaks");
    }
}
