//! What a request asks for, clause by clause: the goals it wants better
//! (priorities), the goals it only wants kept (guards: "without losing
//! quality", "keep p95 under 2 s"), whether it asks for a change, for
//! advice or for a look, and what it says not to do ("don't change
//! anything").

use super::{
    text::Token,
    vocab::{Cue, Found},
};
use crate::agents::outputs::Priority;

/// A goal and the words it came from.
pub type Sourced = (Priority, String);

/// The reading of a request's goals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Goals to make better, in the request's order.
    pub priorities: Vec<Sourced>,
    /// Goals to keep as they are.
    pub guards: Vec<Sourced>,
    /// Words asking for a change.
    pub change: Vec<String>,
    /// Words naming a goal as a wish (`cheaper`, `too slow`).
    pub better: Vec<String>,
    /// Words asking for advice.
    pub advice: Vec<String>,
    /// Words asking for a look.
    pub look: Vec<String>,
    /// Measures of usage named (`tokens`, `requests`).
    pub metric: Vec<String>,
    /// Words saying not to change things.
    pub hands_off: Vec<String>,
    /// True when every change word is too vague to imply a goal (`improve`).
    pub vague_change: bool,
    /// Misspelled words that were read as another word.
    pub typos: Vec<String>,
}

/// Words of a statement of fact ("p95 is 3 s", "went from 1.2 s to 4 s").
const COPULAS: &[&str] = &[
    "is", "are", "was", "were", "went", "has", "had", "got", "sits", "runs", "averages",
];

/// Words that make a number a limit ("p95 < 2 s", "latency under 800 ms").
const LIMITS: &[&str] = &[
    "<", "≤", "under", "below", "within", "max", "maximum", "most", "than", "above", "over",
];

/// Change words that do not imply cost when no goal is named.
const VAGUE: &[&str] = &[
    "improve", "fix", "boost", "increase", "raise", "help", "change",
];

/// How a clause speaks of the goals it names.
struct Mood {
    /// It has a negator ("don't", "not").
    negated: bool,
    /// It keeps or protects ("keep p95 under 2 s", "without losing quality").
    kept: bool,
    /// It states a fact with a number ("the p95 is 3 s today").
    fact: bool,
    /// It asks for a change, advice or a look.
    asks: bool,
    /// It has a number.
    number: bool,
    /// It has a protecting word ("hurt", "drop").
    protects: bool,
    /// It has a direction ("down", "higher", "out of control").
    direction: bool,
}

/// The mood of the clause whose cues are `here` and whose words (window
/// left out) are `words`.
fn mood(here: &[&Found], words: &[&Token]) -> Mood {
    let has = |c: Cue| here.iter().any(|f| f.cue == c);
    let first_change = here
        .iter()
        .position(|f| matches!(f.cue, Cue::Change | Cue::Better(_)));
    let first_keep = here.iter().position(|f| f.cue == Cue::Keep);
    let number = words.iter().any(|t| t.number().is_some());
    let asks = here.iter().any(|f| {
        matches!(
            f.cue,
            Cue::Change | Cue::Better(_) | Cue::Look | Cue::Advice
        )
    });
    let says = |list: &[&str]| words.iter().any(|t| list.contains(&t.lower.as_str()));
    // "the p95 is 3 s today": context, not a goal.
    let fact = number && !asks && says(COPULAS);
    // "p95 < 2 s": a limit, which guards its goal.
    let limit = number && !asks && says(LIMITS);
    Mood {
        negated: has(Cue::Negator),
        kept: first_keep.is_some_and(|k| first_change.is_none_or(|c| k < c))
            || (has(Cue::Protect) && first_change.is_none())
            || (limit && !fact),
        fact,
        asks,
        number,
        protects: has(Cue::Protect),
        direction: has(Cue::Direction),
    }
}

/// Reads the goals of `tokens` from their cues; numbers in `skip` (the
/// window) are not read.
pub fn read(tokens: &[Token], cues: &[Found], skip: Option<std::ops::Range<usize>>) -> Reading {
    let skipped = |k: usize| skip.as_ref().is_some_and(|r| r.contains(&k));
    let mut r = Reading::default();
    let mut kept_down = Vec::new();
    let last_clause = tokens.last().map_or(0, |t| t.clause);
    for clause in 0..=last_clause {
        let here: Vec<&Found> = cues
            .iter()
            .filter(|f| tokens[f.at].clause == clause)
            .collect();
        let words: Vec<&Token> = tokens
            .iter()
            .enumerate()
            .filter(|(k, t)| t.clause == clause && !skipped(*k))
            .map(|(_, t)| t)
            .collect();
        if !here.is_empty() {
            read_clause(&here, &mood(&here, &words), &mut r, &mut kept_down);
        }
    }
    if r.priorities.is_empty() {
        // "keep costs down" alone asks for lower costs.
        r.priorities = kept_down;
        r.better.extend(r.priorities.iter().map(|(_, w)| w.clone()));
    } else {
        r.guards.extend(kept_down);
    }
    dedup(&mut r.priorities);
    // A goal asked for is not also only kept.
    let asked: Vec<Priority> = r.priorities.iter().map(|(p, _)| *p).collect();
    r.guards.retain(|(p, _)| !asked.contains(p));
    dedup(&mut r.guards);
    r.vague_change = !r.change.is_empty() && r.change.iter().all(|w| vague(w));
    r
}

/// True for a change word that implies no goal (`improve`, `fix`).
fn vague(word: &str) -> bool {
    let lower = word.to_lowercase();
    VAGUE
        .iter()
        .any(|v| super::text::lemmas(&lower).iter().any(|l| l == v))
}

/// Reads the cues of one clause into `r`; goals kept with a direction
/// ("keep costs down") go to `kept_down`.
fn read_clause(here: &[&Found], m: &Mood, r: &mut Reading, kept_down: &mut Vec<Sourced>) {
    for f in here {
        if f.typo {
            r.typos.push(f.words.clone());
        }
        let w = f.words.clone();
        match f.cue {
            Cue::Goal(_) | Cue::Better(_) if m.fact && !m.negated => {}
            Cue::Goal(p) | Cue::Better(p) if m.kept && !m.negated => {
                if m.direction {
                    kept_down.push((p, w));
                } else {
                    r.guards.push((p, w));
                }
            }
            Cue::Goal(p) if m.negated && (m.protects || m.number || m.kept) => {
                r.guards.push((p, w));
            }
            Cue::Goal(_) if m.negated => {}
            Cue::Better(p) if m.negated => r.guards.push((p, w)),
            Cue::Goal(p) if m.direction && !m.asks => {
                // "needs higher quality", "more throughput": a wish.
                r.priorities.push((p, w.clone()));
                r.better.push(w);
            }
            Cue::Goal(p) => r.priorities.push((p, w)),
            Cue::Better(p) => {
                r.priorities.push((p, w.clone()));
                r.better.push(w);
            }
            Cue::Change | Cue::Generic if m.negated => r.hands_off.push(w),
            Cue::Change if !m.kept => r.change.push(w),
            Cue::Advice if !m.negated => r.advice.push(w),
            Cue::Look if !m.negated => r.look.push(w),
            Cue::Metric if !m.negated => r.metric.push(w),
            _ => {}
        }
    }
}

/// Keeps the first mention of each goal, merging the words of the others.
fn dedup(goals: &mut Vec<Sourced>) {
    let mut out: Vec<Sourced> = Vec::new();
    for (p, w) in goals.drain(..) {
        match out.iter_mut().find(|(q, _)| *q == p) {
            Some((_, words)) => {
                words.push_str(", ");
                words.push_str(&w);
            }
            None => out.push((p, w)),
        }
    }
    *goals = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::triage::{text::tokens, vocab::cues};
    use Priority::*;

    fn goals(text: &str) -> (Vec<Priority>, Vec<Priority>) {
        let t = tokens(text);
        let r = read(&t, &cues(&t), None);
        (
            r.priorities.into_iter().map(|(p, _)| p).collect(),
            r.guards.into_iter().map(|(p, _)| p).collect(),
        )
    }

    #[test]
    fn guarded_goals_are_not_asked_for() {
        assert_eq!(
            goals("cut cost without losing quality"),
            (vec![Cost], vec![Quality])
        );
        assert_eq!(
            goals("reduce spend, keep p95 under 2 s"),
            (vec![Cost], vec![Latency])
        );
        assert_eq!(
            goals("make it faster, cost doesn't matter"),
            (vec![Latency], vec![])
        );
        assert_eq!(goals("keep costs down"), (vec![Cost], vec![]));
        assert_eq!(
            goals("don't let latency go up, trim the bill"),
            (vec![Cost], vec![Latency])
        );
    }

    #[test]
    fn negation_keeps_hands_off() {
        let t = tokens("don't change anything, just show the costs");
        let r = read(&t, &cues(&t), None);
        assert!(r.change.is_empty());
        assert_eq!(r.hands_off, vec!["change"]);
        assert_eq!(r.look, vec!["show"]);
    }
}
