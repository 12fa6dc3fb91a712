//! The time window a request states ("last 2 hours", "past week"), and how
//! much of it the data phase can serve: its tools read whole days ending at
//! the newest request, so a window in hours is read as the days that cover
//! it, and said so. A window that does not end at the newest request
//! ("yesterday", "in March") is not applied, and said so too.

use super::text::Token;

/// A window the request states.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Its length, hours.
    pub hours: f64,
    /// The words that state it.
    pub words: String,
    /// The tokens it spans (numbers in them are not constraints).
    pub tokens: std::ops::Range<usize>,
}

/// The prefix of every note about the window, so a reader can tell them
/// from the other notes.
pub const NOTE_PREFIX: &str = "time window";

const OPENERS: &[&str] = &["last", "past", "previous", "trailing", "recent"];

const CALENDAR: &[&str] = &[
    "yesterday",
    "today",
    "tonight",
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "q1",
    "q2",
    "q3",
    "q4",
    "ytd",
];

/// Hours in one of `unit`.
fn unit_hours(unit: &str) -> Option<f64> {
    Some(match unit {
        "min" | "mins" | "minute" | "minutes" => 1.0 / 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 1.0,
        "d" | "day" | "days" => 24.0,
        "w" | "wk" | "wks" | "week" | "weeks" => 24.0 * 7.0,
        "fortnight" | "fortnights" => 24.0 * 14.0,
        "mo" | "month" | "months" => 24.0 * 30.0,
        "quarter" | "quarters" => 24.0 * 90.0,
        "year" | "years" | "yr" | "yrs" => 24.0 * 365.0,
        _ => return None,
    })
}

/// A count written as a word (`two`, `a couple of`).
fn count_word(word: &str) -> Option<f64> {
    const COUNTS: &[&str] = &[
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    match word {
        "a" | "an" => Some(1.0),
        "couple" => Some(2.0),
        _ => COUNTS.iter().position(|w| *w == word).map(|n| n as f64),
    }
}

/// The window `tokens` state, and notes about windows that cannot be read.
pub fn stated(tokens: &[Token]) -> (Option<Window>, Vec<String>) {
    let mut notes = Vec::new();
    for i in 0..tokens.len() {
        if OPENERS.contains(&tokens[i].lower.as_str()) {
            if let Some(w) = window_after(tokens, i) {
                return (Some(w), notes);
            }
        }
    }
    let calendar = tokens
        .iter()
        .enumerate()
        .find(|(i, t)| {
            CALENDAR.contains(&t.lower.as_str())
                || (t.lower == "this"
                    && tokens
                        .get(i + 1)
                        .is_some_and(|n| unit_hours(&n.lower).is_some()))
                || (t.lower == "since"
                    && tokens
                        .get(i + 1)
                        .is_some_and(|n| n.is_word() || n.number().is_some()))
        })
        .map(|(i, t)| match tokens.get(i + 1) {
            Some(n) if t.lower == "this" || t.lower == "since" => format!("{} {}", t.raw, n.raw),
            _ => t.raw.clone(),
        });
    if let Some(words) = calendar {
        notes.push(format!(
            "{NOTE_PREFIX} `{words}` was not applied: netra reads windows that end at the newest request (say \"last 7 days\" or \"last 2 hours\")"
        ));
    }
    (None, notes)
}

/// The window after the opener at `i`: `last 2 hours`, `past week`,
/// `last couple of days`, `last 24h`.
fn window_after(tokens: &[Token], i: usize) -> Option<Window> {
    let mut j = i + 1;
    let mut count = 1.0;
    if let Some(t) = tokens.get(j) {
        if let Some(n) = t.number() {
            count = n;
            j += 1;
        } else if let Some(n) = count_word(&t.lower) {
            count = n;
            j += 1;
            if tokens.get(j).is_some_and(|t| t.lower == "of") {
                j += 1;
            }
        }
    }
    let unit = unit_hours(&tokens.get(j)?.lower)?;
    let hours = count * unit;
    (hours > 0.0 && hours.is_finite()).then(|| Window {
        hours,
        words: tokens[i..=j]
            .iter()
            .map(|t| t.raw.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        tokens: i..j + 1,
    })
}

/// The whole days the data phase reads for a window of `hours`, and a note
/// when that is not the window stated.
pub fn served(hours: f64, words: &str) -> (i64, Option<String>) {
    let days = (hours / 24.0).ceil().clamp(1.0, 3650.0) as i64;
    let exact = (hours / 24.0 - days as f64).abs() < 1e-9;
    let note = (!exact).then(|| {
        format!(
            "{NOTE_PREFIX} `{words}` could not be served as stated: the telemetry tools read whole days ending at the newest request, so the last {days} day{} {} read",
            if days == 1 { "" } else { "s" },
            if days == 1 { "was" } else { "were" },
        )
    });
    (days, note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::triage::text::tokens;

    fn hours(text: &str) -> Option<f64> {
        stated(&tokens(text)).0.map(|w| w.hours)
    }

    #[test]
    fn windows_in_hours_days_weeks() {
        assert_eq!(hours("for the last 2 hours"), Some(2.0));
        assert_eq!(hours("over the past week"), Some(168.0));
        assert_eq!(hours("last 30 days"), Some(720.0));
        assert_eq!(hours("the last couple of days"), Some(48.0));
        assert_eq!(hours("past 24h"), Some(24.0));
        assert_eq!(hours("last three months"), Some(2160.0));
        assert_eq!(hours("the last request was slow"), None);
        assert_eq!(served(2.0, "last 2 hours").0, 1);
        assert!(served(2.0, "last 2 hours").1.is_some());
        assert_eq!(served(168.0, "past week"), (7, None));
        let (w, notes) = stated(&tokens("costs yesterday"));
        assert!(w.is_none() && notes[0].contains("yesterday"));
    }
}
