//! The numbers of a request that are limits: a latency in ms or s tied to a
//! latency word, a percentage tied to a cost cut, an amount of money tied
//! to a budget, a quality tier. Every other number stays a number ("our 3
//! services", "40% of its requests are offline", "we spent $12k").

use std::ops::Range;

use super::{
    text::Token,
    vocab::{Cue, Found},
};
use crate::agents::outputs::{Constraints, Priority};

/// What the numbers of a request set, and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// The limits.
    pub constraints: Constraints,
    /// The words each limit came from, by field name.
    pub sources: Vec<(String, String)>,
    /// Numbers read but not applied, and why.
    pub notes: Vec<String>,
}

/// Words that make the number after them a limit.
const LIMIT_WORDS: &[&str] = &[
    "under", "below", "within", "max", "maximum", "most", "than", "to", "<", "≤", "=", "cap",
    "capped", "beneath", "exceed", "over", "above", "beyond", "sub", "target", "slo", "sla",
];

/// Words that tie a latency to the number next to them.
const LATENCY_TIES: &[&str] = &["slo", "sla", "target", "respond", "responses", "answer"];

/// Words between a number and what it measures that keep them together.
const FILLER: &[&str] = &[
    "of", "at", "a", "an", "the", "=", ":", "<", "≤", "around", "about", "roughly", "~", "least",
    "by",
];

/// Words between a latency word and a number that make it a description
/// ("latency is 3 s") unless a limit word follows ("is under 2 s").
const COPULAS: &[&str] = &[
    "is",
    "be",
    "are",
    "was",
    "stays",
    "stay",
    "remains",
    "remain",
    "currently",
    "now",
];

/// Words a latency word and its limit may have between them ("latency for
/// chat-prod must stay under 1 s").
const SKIPPED: &[&str] = &[
    "stay", "stays", "keep", "it", "its", "no", "not", "more", "less", "lower", "higher", "at",
    "go", "goes", "push", "get", "bring", "pushing", "must", "should", "needs", "need", "has",
    "have", "for", "on", "of", "latency", "always", "remain", "be", "can't", "cannot",
];

/// Words that make an amount of money a budget.
const BUDGET_WORDS: &[&str] = &[
    "budget",
    "cap",
    "capped",
    "ceiling",
    "limit",
    "afford",
    "allowance",
];

/// The limits of `tokens`; numbers in `skip` (the window) are not read.
pub fn read(tokens: &[Token], cues: &[Found], skip: Option<Range<usize>>) -> Limits {
    let mut out = Limits {
        constraints: Constraints {
            latency_percentile: percentile(tokens).to_string(),
            ..Constraints::default()
        },
        ..Limits::default()
    };
    let skipped = |k: usize| skip.as_ref().is_some_and(|r| r.contains(&k));
    for (k, t) in tokens.iter().enumerate() {
        let Some(value) = t.number() else { continue };
        if skipped(k) || !value.is_finite() {
            continue;
        }
        if out.constraints.latency_slo_ms.is_none() {
            latency(tokens, cues, k, value, &mut out);
        }
        if out.constraints.target_reduction_pct.is_none() {
            reduction(tokens, cues, k, value, &mut out);
        }
        if out.constraints.monthly_budget_usd.is_none() {
            budget(tokens, k, value, &mut out);
        }
        if out.constraints.quality_floor.is_none() {
            tier(tokens, k, value, &mut out);
        }
    }
    if out.constraints.target_reduction_pct.is_none() {
        by_half(tokens, cues, &mut out);
    }
    out
}

/// "cut the cost by half", "halve the bill": a 50% cost reduction.
fn by_half(tokens: &[Token], cues: &[Found], out: &mut Limits) {
    let at = tokens
        .windows(2)
        .position(|w| matches!(w[0].lower.as_str(), "by" | "in") && w[1].lower == "half");
    let halve = tokens
        .iter()
        .position(|t| t.lower == "halve" || t.lower == "halving");
    let Some(i) = at.or(halve) else { return };
    if goals_in_clause(tokens, cues, tokens[i].clause).contains(&Priority::Cost)
        || clause_about_cost_nearby(tokens, cues, tokens[i].clause)
    {
        out.constraints.target_reduction_pct = Some(50.0);
        out.sources.push((
            "constraints.target_reduction_pct".into(),
            words(tokens, i..(i + if at.is_some() { 2 } else { 1 })),
        ));
    }
}

fn words(tokens: &[Token], r: Range<usize>) -> String {
    let mut s = String::new();
    for t in &tokens[r.start.min(tokens.len())..r.end.min(tokens.len())] {
        let glue = matches!(t.kind, super::text::Kind::Symbol('%' | ',' | '/' | ')'))
            || s.ends_with('$')
            || s.ends_with('€')
            || s.ends_with('£');
        if !s.is_empty() && !glue {
            s.push(' ');
        }
        s.push_str(&t.raw);
    }
    s
}

/// `p99` when the request names it, else `p95`.
fn percentile(tokens: &[Token]) -> &'static str {
    if tokens.iter().any(|t| t.lower == "p99") {
        "p99"
    } else {
        "p95"
    }
}

/// The goals named in clause `clause`.
fn goals_in_clause(tokens: &[Token], cues: &[Found], clause: usize) -> Vec<Priority> {
    cues.iter()
        .filter(|f| tokens[f.at].clause == clause)
        .filter_map(|f| match f.cue {
            Cue::Goal(p) | Cue::Better(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// The cue at token `i`, if one starts there.
fn cue_at(cues: &[Found], i: usize) -> Option<Cue> {
    cues.iter()
        .find(|f| f.at <= i && i < f.at + f.len)
        .map(|f| f.cue)
}

fn is_latency_cue(tokens: &[Token], cues: &[Found], i: usize) -> bool {
    matches!(
        cue_at(cues, i),
        Some(Cue::Goal(Priority::Latency) | Cue::Better(Priority::Latency))
    ) || LATENCY_TIES.contains(&tokens[i].lower.as_str())
}

/// True for a word a latency word and its limit may have between them.
fn between_latency_and_limit(t: &Token, cue: Option<Cue>) -> bool {
    let w = t.lower.as_str();
    FILLER.contains(&w)
        || SKIPPED.contains(&w)
        || w.contains('-')
        || w.contains('_')
        || matches!(
            cue,
            Some(Cue::Keep | Cue::Protect | Cue::Negator | Cue::Change | Cue::Direction)
        )
}

/// What comes before a number, back to the latency word it is tied to.
struct Before {
    /// A limit word ("under", "<", "to" after a change).
    limit: bool,
    /// A statement of fact ("is", "was").
    copula: bool,
    /// The latency word, if one is reached.
    tied: Option<usize>,
}

/// Walks back from number `k` over the words a latency word and its limit
/// may have between them.
fn before_latency_number(tokens: &[Token], cues: &[Found], k: usize) -> Before {
    let clause = tokens[k].clause;
    let mut b = Before {
        limit: false,
        copula: false,
        tied: None,
    };
    let mut i = k;
    while i > 0 && k - i < 8 {
        i -= 1;
        let t = &tokens[i];
        if t.clause != clause && !t.is_symbol('<') {
            break;
        }
        if is_latency_cue(tokens, cues, i) {
            b.tied = Some(i);
            break;
        }
        if t.lower == "to" {
            // "reduce latency to 800 ms" is a limit; "from 1.2 s to 4 s" is not.
            b.limit |= (0..i).any(|j| {
                tokens[j].clause == clause
                    && matches!(cue_at(cues, j), Some(Cue::Change | Cue::Direction))
            });
        } else if LIMIT_WORDS.contains(&t.lower.as_str()) {
            b.limit = true;
        } else if COPULAS.contains(&t.lower.as_str()) {
            b.copula = true;
        } else if !between_latency_and_limit(t, cue_at(cues, i)) {
            break;
        }
    }
    b
}

/// A latency limit at number `k`: a time unit after it, and a latency
/// word next to it (only filler between) or a limit word before it in a
/// clause about latency.
fn latency(tokens: &[Token], cues: &[Found], k: usize, value: f64, out: &mut Limits) {
    let unit = tokens.get(k + 1).map(|t| t.lower.as_str());
    let factor = match unit {
        Some("ms" | "msec" | "msecs" | "millisecond" | "milliseconds" | "millis") => Some(1.0),
        Some("s" | "sec" | "secs" | "second" | "seconds") => Some(1000.0),
        _ => None,
    };
    let clause = tokens[k].clause;
    let Before {
        limit: limit_before,
        copula,
        tied: tied_before,
    } = before_latency_number(tokens, cues, k);
    let after = k + if factor.is_some() { 2 } else { 1 };
    let tied_after = (after..(after + 2).min(tokens.len()))
        .find(|&j| tokens[j].clause == clause && is_latency_cue(tokens, cues, j));
    let tied = tied_before.is_some() || tied_after.is_some();
    // "a 2 s p95 target": a latency word after the number needs a limit word.
    let target_after = tied_after.is_some_and(|j| {
        tokens.get(j + 1).is_some_and(|t| {
            ["slo", "sla", "target", "limit", "budget", "max"].contains(&t.lower.as_str())
        })
    });
    let limit = limit_before || (tied_before.is_some() && !copula) || (target_after && !copula);
    if !(tied && limit) {
        return;
    }
    let start = tied_before.unwrap_or(k);
    let end = tied_after.map_or(after, |j| j + 1);
    match factor {
        Some(f) if value > 0.0 && (value * f).is_finite() => {
            out.constraints.latency_slo_ms = Some(value * f);
            out.sources.push((
                "constraints.latency_slo_ms".into(),
                words(tokens, start..end),
            ));
        }
        Some(_) => {}
        None if limit_before
            && unit.is_none_or(|u| !u.chars().any(char::is_alphabetic) || u.len() > 1) =>
        {
            let free = tokens
                .get(k + 1)
                .is_none_or(|t| !t.is_word() || t.clause != clause);
            if free {
                out.notes.push(format!(
                    "latency limit `{}` has no unit (ms or s); it was not applied",
                    tokens[k].raw
                ));
            }
        }
        None => {}
    }
}

/// A cost reduction at number `k`: a percentage after a cut (`by 30%`,
/// `cut 30%`) or before one (`30% cheaper`, `30% less`), in a clause about
/// cost. `40% of its requests` is a share, not a target.
fn reduction(tokens: &[Token], cues: &[Found], k: usize, value: f64, out: &mut Limits) {
    let next = tokens.get(k + 1);
    let percent = next
        .is_some_and(|t| t.is_symbol('%') || t.lower == "percent" || t.lower == "pct")
        || (next.is_some_and(|t| t.lower == "per")
            && tokens.get(k + 2).is_some_and(|t| t.lower == "cent"));
    if !percent {
        return;
    }
    let after = k + if next.is_some_and(|t| t.lower == "per") {
        3
    } else {
        2
    };
    let clause = tokens[k].clause;
    let before = (k.saturating_sub(3)..k)
        .rev()
        .filter(|&i| tokens[i].clause == clause)
        .any(|i| {
            tokens[i].lower == "by"
                || matches!(
                    cue_at(cues, i),
                    Some(Cue::Change | Cue::Better(Priority::Cost))
                )
        });
    let follows = tokens.get(after).filter(|t| t.clause == clause);
    let after_ok = follows.is_some_and(|t| {
        ["less", "lower", "off", "fewer", "smaller", "down"].contains(&t.lower.as_str())
            || matches!(
                cue_at(cues, after),
                Some(Cue::Change | Cue::Better(Priority::Cost))
            )
    });
    let of_what = follows.is_some_and(|t| t.lower == "of");
    let share_of_cost = of_what
        && (after + 1..(after + 4).min(tokens.len())).any(|i| {
            matches!(
                cue_at(cues, i),
                Some(Cue::Goal(Priority::Cost) | Cue::Better(Priority::Cost))
            )
        });
    if of_what && !share_of_cost {
        return;
    }
    if !(before || after_ok || share_of_cost) {
        return;
    }
    let goals = goals_in_clause(tokens, cues, clause);
    let cost_clause = goals.contains(&Priority::Cost)
        || (goals.is_empty() && clause_about_cost_nearby(tokens, cues, clause));
    let span = words(tokens, k.saturating_sub(1)..after);
    if cost_clause && (0.0..=100.0).contains(&value) && value > 0.0 {
        out.constraints.target_reduction_pct = Some(value);
        out.sources
            .push(("constraints.target_reduction_pct".into(), span));
    } else if let Some(p) = goals.first().filter(|p| **p != Priority::Cost) {
        out.notes.push(format!(
            "`{span}` ({}) was read but not applied: netra's limits are a cost reduction in %, a latency limit in ms or s, and a monthly budget in $",
            p.as_str()
        ));
    }
}

/// True when the clause before `clause` is about cost (`cut the cost of
/// workload x, by 30%`).
fn clause_about_cost_nearby(tokens: &[Token], cues: &[Found], clause: usize) -> bool {
    clause > 0 && {
        let before = goals_in_clause(tokens, cues, clause - 1);
        before.first() == Some(&Priority::Cost) && before.iter().all(|p| *p == Priority::Cost)
    }
}

/// Currency words written after an amount: dollars, then the others.
const DOLLAR_WORDS: &[&str] = &["usd", "dollars", "dollar", "bucks", "grand"];
const OTHER_MONEY_WORDS: &[&str] = &["eur", "euro", "euros", "gbp", "pounds"];

/// A monthly budget at number `k`: an amount in dollars after a limit word
/// or in a clause that says budget; per year or per day, converted.
fn budget(tokens: &[Token], k: usize, value: f64, out: &mut Limits) {
    let prev = k.checked_sub(1).map(|i| &tokens[i]);
    let next = tokens.get(k + 1);
    let sign_before =
        prev.is_some_and(|t| t.is_symbol('$') || t.is_symbol('€') || t.is_symbol('£'));
    let word_after = next.filter(|t| {
        DOLLAR_WORDS.contains(&t.lower.as_str()) || OTHER_MONEY_WORDS.contains(&t.lower.as_str())
    });
    let dollars = prev.is_some_and(|t| t.is_symbol('$'))
        || word_after.is_some_and(|t| DOLLAR_WORDS.contains(&t.lower.as_str()));
    if !sign_before && word_after.is_none() {
        return;
    }
    let clause = tokens[k].clause;
    let first = k - usize::from(sign_before);
    let limit_before = (first.saturating_sub(3)..first)
        .filter(|&i| tokens[i].clause == clause)
        .any(|i| LIMIT_WORDS.contains(&tokens[i].lower.as_str()) && tokens[i].lower != "of");
    let budget_word = tokens
        .iter()
        .filter(|t| t.clause == clause)
        .any(|t| BUDGET_WORDS.iter().any(|b| t.lower.starts_with(b)));
    if !(limit_before || budget_word) {
        return;
    }
    let amount_end = k + 1 + usize::from(word_after.is_some());
    let (factor, period_len) = period(tokens, amount_end);
    let span = words(tokens, first.saturating_sub(1)..amount_end + period_len);
    if !dollars {
        out.notes.push(format!(
            "the budget `{span}` is not in US dollars; netra's budgets are in USD, so it was not applied"
        ));
    } else if value > 0.0 {
        let grand = word_after.is_some_and(|t| t.lower == "grand");
        let monthly = if grand { value * 1000.0 } else { value } * factor;
        if !monthly.is_finite() {
            return;
        }
        out.constraints.monthly_budget_usd = Some(monthly);
        out.sources
            .push(("constraints.monthly_budget_usd".into(), span));
    }
}

/// The factor to a month of the period at `i` (`/month`, `a year`, `per
/// day`), and the tokens it spans.
fn period(tokens: &[Token], i: usize) -> (f64, usize) {
    let mut j = i;
    if tokens.get(j).is_some_and(|t| {
        t.is_symbol('/') || ["a", "per", "each", "every", "an"].contains(&t.lower.as_str())
    }) {
        j += 1;
    }
    let factor = match tokens.get(j).map(|t| t.lower.as_str()) {
        Some("month" | "months" | "mo" | "monthly" | "mth") => 1.0,
        Some("year" | "yr" | "annually" | "yearly" | "annual") => 1.0 / 12.0,
        Some("day" | "daily") => 30.0,
        Some("week" | "weekly" | "wk") => 30.0 / 7.0,
        _ => return (1.0, 0),
    };
    (factor, j + 1 - i)
}

/// A quality floor at number `k`: `tier 2`, `quality floor 3`.
fn tier(tokens: &[Token], k: usize, value: f64, out: &mut Limits) {
    let prev = k.checked_sub(1).map(|i| tokens[i].lower.as_str());
    let prev2 = k.checked_sub(2).map(|i| tokens[i].lower.as_str());
    let named = matches!(prev, Some("tier" | "floor"))
        || (matches!(prev, Some("of")) && matches!(prev2, Some("floor" | "tier")));
    if named && (1.0..=3.0).contains(&value) && value.fract() == 0.0 {
        out.constraints.quality_floor = Some(value as u8);
        out.sources.push((
            "constraints.quality_floor".into(),
            words(tokens, k.saturating_sub(2)..k + 1),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::triage::{text::tokens, vocab::cues};

    fn limits(text: &str) -> Constraints {
        let t = tokens(text);
        read(&t, &cues(&t), None).constraints
    }

    #[test]
    fn numbers_tied_to_a_metric_and_a_unit_are_limits() {
        let c = limits(
            "Cut the cost of workload chat-prod by 30% without pushing p95 latency over 2 s",
        );
        assert_eq!(
            (c.target_reduction_pct, c.latency_slo_ms),
            (Some(30.0), Some(2000.0))
        );
        assert_eq!(limits("keep p99 under 1500ms").latency_slo_ms, Some(1500.0));
        assert_eq!(
            limits("budget $5,000 per month, cut cost").monthly_budget_usd,
            Some(5000.0)
        );
        assert_eq!(
            limits("stay under $60k a year").monthly_budget_usd,
            Some(5000.0)
        );
        assert_eq!(
            limits("make it 25% cheaper").target_reduction_pct,
            Some(25.0)
        );
        assert_eq!(limits("quality tier 2 at least").quality_floor, Some(2));
    }

    #[test]
    fn other_numbers_stay_numbers() {
        assert_eq!(limits("cut cost of our 3 services"), limits(""));
        assert_eq!(
            limits("cut cost; 40% of its requests are offline"),
            limits("")
        );
        assert_eq!(limits("we spent $12,000 last month, reduce it"), limits(""));
        assert_eq!(
            limits("latency is 3 s today, cut cost").latency_slo_ms,
            None
        );
        assert_eq!(limits("reduce latency by 20%").target_reduction_pct, None);
    }
}
