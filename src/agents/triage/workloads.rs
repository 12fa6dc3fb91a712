//! The workloads a request names: after the word "workload" ("workloads A
//! and B", "workload:chat-prod"), before it ("the chat-prod workload"),
//! around "compare"/"vs", and any of the tenant's workload ids written
//! anywhere. Ids are matched to the tenant's case-insensitively, and a
//! misspelled id to the tenant's id it is closest to (said in `unclear`).

use super::{language::english_word, text::Token, vocab};

/// A workload the request names.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// The id: the tenant's, or as written when the tenant has none like it.
    pub id: String,
    /// As written.
    pub written: String,
    /// True when a misspelling was matched to one of the tenant's ids.
    pub corrected: bool,
}

/// Words before an id in a workload slot that are not the id.
const SLOT_SKIP: &[&str] = &[
    "the", "my", "our", "their", "your", "called", "named", "id", "ids", "an", "=", ":", "#", "\"",
    "'", "`", "this", "that",
];

/// Words joining ids in a list.
const JOINERS: &[&str] = &[
    ",", "and", "&", "or", "vs", "versus", "+", "/", "with", "to", "against",
];

/// Prefixes of model and GPU names, which look like ids but are not workloads.
const NOT_WORKLOADS: &[&str] = &[
    "gpt-",
    "gpt4",
    "claude",
    "llama",
    "mistral",
    "mixtral",
    "gemini",
    "qwen",
    "phi-",
    "deepseek",
    "o1",
    "o3",
    "o4",
    "text-embedding",
    "a100",
    "h100",
    "h200",
    "b200",
    "l40",
    "a10",
    "p50",
    "p90",
    "p95",
    "p99",
    "self-host",
    "right-siz",
    "cost-",
    "real-time",
    "follow-up",
    "time-to",
];

/// The tokens after which a workload id comes.
fn is_slot_word(t: &Token) -> bool {
    matches!(
        t.lower.as_str(),
        "workload" | "workloads" | "workload_id" | "workload-id"
    )
}

/// The workloads `tokens` name, in order of first mention, matched to
/// `known` (the tenant's ids).
pub fn named(tokens: &[Token], known: &[String]) -> Vec<Named> {
    let mut found: Vec<(usize, Named)> = Vec::new();
    let push = |at: usize, n: Named, found: &mut Vec<(usize, Named)>| {
        if !found.iter().any(|(_, m)| m.id.eq_ignore_ascii_case(&n.id)) {
            found.push((at, n));
        }
    };
    for (i, t) in tokens.iter().enumerate() {
        if is_slot_word(t) {
            for at in slot_after(tokens, i + 1) {
                push(at, resolve(&tokens[at], known, true), &mut found);
            }
            if let Some(at) = i
                .checked_sub(1)
                .filter(|&j| id_shaped(&tokens[j]) || is_known(&tokens[j], known))
            {
                push(at, resolve(&tokens[at], known, true), &mut found);
            }
        } else if matches!(t.lower.as_str(), "compare" | "vs" | "versus" | "between") {
            let ids = list_at(tokens, i + 1, |t| id_shaped(t) || is_known(t, known));
            for at in ids {
                push(at, resolve(&tokens[at], known, true), &mut found);
            }
        } else if let Some(k) = plain_word_for(t, known) {
            // "chatprod": one of the tenant's ids without its hyphen, or
            // misspelled.
            push(
                i,
                Named {
                    id: k.clone(),
                    written: t.raw.clone(),
                    corrected: true,
                },
                &mut found,
            );
        } else if t.is_word() && (is_known(t, known) || id_shaped(t)) {
            let n = resolve(t, known, id_shaped(t));
            let after_of = i
                .checked_sub(1)
                .is_some_and(|j| matches!(tokens[j].lower.as_str(), "of" | "for" | "on"));
            if n.corrected
                || is_known(t, known)
                || vs_neighbour(tokens, i)
                || (after_of && id_shaped(t))
            {
                push(i, n, &mut found);
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, n)| n).collect()
}

/// True when the token next to `i` is `vs` (`chat-prod vs support-bot`).
fn vs_neighbour(tokens: &[Token], i: usize) -> bool {
    let vs = |j: usize| {
        tokens
            .get(j)
            .is_some_and(|t| matches!(t.lower.as_str(), "vs" | "versus"))
    };
    vs(i + 1) || i.checked_sub(1).is_some_and(vs)
}

/// The ids in the slot starting at `i` (after "workload"): the first
/// word, and more joined by `,`, `and`, `&`.
fn slot_after(tokens: &[Token], mut i: usize) -> Vec<usize> {
    while tokens
        .get(i)
        .is_some_and(|t| SLOT_SKIP.contains(&t.lower.as_str()) || (t.raw == "a"))
    {
        i += 1;
    }
    list_at(tokens, i, |t| {
        (t.is_word() || t.number().is_some())
            && !vocab::known(&t.lower)
            && (!english_word(&t.lower) || single_capital(t))
            && !t.lower.starts_with("workload")
    })
}

/// A list of ids at `i`: one, then more after joiners.
fn list_at(tokens: &[Token], mut i: usize, is_id: impl Fn(&Token) -> bool) -> Vec<usize> {
    let mut out = Vec::new();
    while let Some(t) = tokens.get(i) {
        if !is_id(t) || not_a_workload(t) {
            break;
        }
        out.push(i);
        let mut j = i + 1;
        let mut joined = false;
        while tokens
            .get(j)
            .is_some_and(|t| JOINERS.contains(&t.lower.as_str()) || (joined && t.lower == "the"))
        {
            joined = true;
            j += 1;
        }
        if tokens.get(j).is_some_and(|t| t.lower == "workload") {
            j += 1;
        }
        if !joined {
            break;
        }
        i = j;
    }
    out
}

/// `A`, `B`: a capital letter alone, an id (`workloads A and B`).
fn single_capital(t: &Token) -> bool {
    t.raw.chars().count() == 1 && t.raw.chars().all(|c| c.is_uppercase())
}

/// An id by its shape: letters with `-`, `_` or digits (`chat-prod`, `w1`).
fn id_shaped(t: &Token) -> bool {
    t.is_word()
        && t.lower.chars().count() >= 2
        && t.lower.chars().any(char::is_alphabetic)
        && (t.lower.contains('-')
            || t.lower.contains('_')
            || t.lower.chars().any(|c| c.is_ascii_digit()))
        && !t.lower.contains('\'')
        && !not_a_workload(t)
}

fn not_a_workload(t: &Token) -> bool {
    NOT_WORKLOADS.iter().any(|p| t.lower.starts_with(p))
}

fn is_known(t: &Token, known: &[String]) -> bool {
    t.is_word() && known.iter().any(|k| k.eq_ignore_ascii_case(&t.raw))
}

/// The tenant's id for a written id: the same in any case, or (when
/// `fuzzy`) the closest in spelling; otherwise the id as written.
fn resolve(t: &Token, known: &[String], fuzzy: bool) -> Named {
    let written = t.raw.clone();
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(&written)) {
        return Named {
            id: k.clone(),
            written,
            corrected: false,
        };
    }
    let close = fuzzy.then(|| closest(&t.lower, known)).flatten();
    match close {
        Some(k) => Named {
            id: k.clone(),
            written,
            corrected: true,
        },
        None => Named {
            id: written.clone(),
            written,
            corrected: false,
        },
    }
}

/// The tenant's id a plain word stands for: the id without its `-` or
/// `_`, or very close to it in spelling. English and vocabulary words are
/// never ids this way.
fn plain_word_for<'a>(t: &Token, known: &'a [String]) -> Option<&'a String> {
    let w = t.lower.as_str();
    if !t.is_word() || w.chars().count() < 5 || id_shaped(t) || english_word(w) || vocab::known(w) {
        return None;
    }
    if known.iter().any(|k| k.eq_ignore_ascii_case(w)) {
        return None;
    }
    let bare = |k: &str| k.to_lowercase().replace(['-', '_'], "");
    known.iter().find(|k| bare(k) == w).or_else(|| {
        closest(w, known).filter(|k| strsim::normalized_damerau_levenshtein(w, &bare(k)) >= 0.85)
    })
}

/// The one known id closest to `written` (a tie is no match).
fn closest<'a>(written: &str, known: &'a [String]) -> Option<&'a String> {
    if written.chars().count() < 3 {
        return None;
    }
    let mut scored: Vec<(f64, &String)> = known
        .iter()
        .map(|k| {
            (
                strsim::normalized_damerau_levenshtein(written, &k.to_lowercase()),
                k,
            )
        })
        .filter(|(s, _)| *s >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    match scored.as_slice() {
        [(best, k), (next, _), ..] if (best - next).abs() > 1e-9 => Some(k),
        [(_, k)] => Some(k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::triage::text::tokens;

    fn ids(text: &str, known: &[&str]) -> Vec<String> {
        let known: Vec<String> = known.iter().map(|s| s.to_string()).collect();
        named(&tokens(text), &known)
            .into_iter()
            .map(|n| n.id)
            .collect()
    }

    #[test]
    fn slots_lists_and_known_ids() {
        let known = ["chat-prod", "support-bot", "search"];
        assert_eq!(ids("workloads A and B", &known), vec!["A", "B"]);
        assert_eq!(
            ids("compare chat-prod and support-bot", &known),
            vec!["chat-prod", "support-bot"]
        );
        assert_eq!(
            ids("cut cost of workload:Chat-Prod.", &known),
            vec!["chat-prod"]
        );
        assert_eq!(
            ids("the CHAT-PROD workload is slow", &known),
            vec!["chat-prod"]
        );
        assert_eq!(ids("reduce cost of chat-prd", &known), vec!["chat-prod"]);
        assert_eq!(ids("workload suport-bot", &known), vec!["support-bot"]);
        assert_eq!(
            ids("move chat-prod to gpt-4o-mini", &known),
            vec!["chat-prod"]
        );
        assert_eq!(
            ids("what are the workload costs", &known),
            Vec::<String>::new()
        );
        assert_eq!(ids("cut cost of workload new-svc", &known), vec!["new-svc"]);
        assert_eq!(
            ids("cut cost of workload nothing-here", &[]),
            vec!["nothing-here"]
        );
    }
}
