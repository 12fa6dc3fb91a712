//! Grounding: what keeps a model's inventions out of a run.
//!
//! - A number the model extracts from a request must come with the span of
//!   the request that states it; the span must be in the request, contain
//!   the number (in the unit the field is in, or one the span names), and
//!   name the kind of limit (a unit of time for a latency, `%` for a share,
//!   a currency for a budget). Otherwise the number is dropped, and the drop
//!   recorded.
//! - Every number in prose the model writes must appear in the computed
//!   analysis (as written there, or rounded to the digits the prose shows).
//!   Otherwise the prose is replaced by the template, and the replacement
//!   recorded.

use serde_json::Value;

/// A number as written in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Its value.
    pub value: f64,
    /// Digits after the decimal point, as written.
    pub decimals: u32,
    /// The text, as written (`$5,000`, `30%`).
    pub text: String,
    /// The word right after it, lower-cased (`ms`, `seconds`, `services`).
    pub unit: String,
}

/// The numbers of a text that stand on their own: not part of a word or an
/// id (`gpt-4o`, `w-42`, `p95` hold no number). Thousands separators, a
/// leading `$` and a trailing `%` belong to the number.
pub fn numbers_in(text: &str) -> Vec<Written> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            && (i == 0 || !is_word(chars[i - 1]))
            && !(i >= 2 && chars[i - 1] == '.' && chars[i - 2].is_ascii_digit());
        if !starts {
            i += 1;
            continue;
        }
        let begin = if i > 0 && chars[i - 1] == '$' {
            i - 1
        } else {
            i
        };
        let mut j = i;
        let mut digits = String::new();
        let mut decimals = None;
        while j < chars.len() {
            let c = chars[j];
            let next_digit = chars.get(j + 1).is_some_and(char::is_ascii_digit);
            if c.is_ascii_digit() {
                digits.push(c);
                decimals = decimals.map(|d: u32| d + 1);
            } else if c == ',' && next_digit && decimals.is_none() {
                // A thousands separator.
            } else if c == '.' && next_digit && decimals.is_none() {
                digits.push('.');
                decimals = Some(0);
            } else {
                break;
            }
            j += 1;
        }
        let glued = chars
            .get(j)
            .is_some_and(|c| c.is_alphabetic() || *c == '-' || *c == '_');
        let unit_ms = chars.get(j..j + 2).is_some_and(|s| s == ['m', 's']);
        let unit_s = chars.get(j) == Some(&'s') && !chars.get(j + 1).is_some_and(|c| is_word(*c));
        let end = if chars.get(j) == Some(&'%') { j + 1 } else { j };
        if !glued || unit_ms || unit_s || chars.get(j) == Some(&'k') {
            if let Ok(value) = digits.parse::<f64>() {
                let unit: String = chars[end..]
                    .iter()
                    .skip_while(|c| **c == ' ')
                    .take_while(|c| c.is_alphabetic())
                    .collect();
                out.push(Written {
                    value,
                    decimals: decimals.unwrap_or(0),
                    text: chars[begin..end].iter().collect(),
                    unit: unit.to_lowercase(),
                });
            }
        }
        i = j.max(i + 1);
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '.'
}

/// The kind of limit a number is: what its span must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A latency limit, in milliseconds.
    LatencyMs,
    /// A share, in percent.
    Percent,
    /// An amount of money, in US dollars.
    Usd,
    /// A count of days.
    Days,
    /// A quality tier, 1 to 3.
    Tier,
}

/// Checks that `span` is in `request` and states `value` as a `kind`;
/// `Err` says why not.
pub fn check_span(request: &str, span: &str, value: f64, kind: Kind) -> Result<(), String> {
    let span_t = span.trim();
    if span_t.is_empty() {
        return Err("no span of the request was given".into());
    }
    let lower_request = request.to_lowercase();
    let lower = span_t.to_lowercase();
    if !lower_request.contains(&lower) {
        return Err(format!("the span `{span_t}` is not in the request"));
    }
    let numbers = numbers_in(span_t);
    let factor_fits = |n: f64, f: f64| (n * f - value).abs() <= 1e-6 * value.abs().max(1.0);
    let fits = match kind {
        Kind::LatencyMs => numbers.iter().any(|n| {
            let factor = match n.unit.as_str() {
                "ms" | "msec" | "millisecond" | "milliseconds" => 1.0,
                "s" | "sec" | "secs" | "second" | "seconds" => 1000.0,
                "min" | "mins" | "minute" | "minutes" => 60_000.0,
                _ => return false,
            };
            factor_fits(n.value, factor)
        }),
        Kind::Percent => {
            has_any(&lower, &["%", "percent", "per cent"])
                && numbers.iter().any(|n| factor_fits(n.value, 1.0))
        }
        Kind::Usd => {
            let thousands =
                numbers.iter().any(|n| factor_fits(n.value, 1000.0)) && lower.contains('k');
            has_any(&lower, &["$", "usd", "dollar", "budget"])
                && (thousands || numbers.iter().any(|n| factor_fits(n.value, 1.0)))
        }
        Kind::Days => {
            let weeks = numbers.iter().any(|n| factor_fits(n.value, 7.0)) && lower.contains("week");
            let months =
                numbers.iter().any(|n| factor_fits(n.value, 30.0)) && lower.contains("month");
            let days = numbers.iter().any(|n| factor_fits(n.value, 1.0)) && lower.contains("day");
            weeks || months || days
        }
        Kind::Tier => numbers.iter().any(|n| factor_fits(n.value, 1.0)) && lower.contains("tier"),
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the span `{span_t}` does not state {value} as {}",
            match kind {
                Kind::LatencyMs => "a latency in ms or s",
                Kind::Percent => "a percentage",
                Kind::Usd => "an amount in dollars",
                Kind::Days => "a number of days, weeks or months",
                Kind::Tier => "a quality tier",
            }
        ))
    }
}

fn has_any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// Every number in a JSON value (recursively), for [`ungrounded`].
pub fn numbers_of(value: &Value, out: &mut Vec<f64>) {
    match value {
        Value::Number(n) => out.extend(n.as_f64()),
        Value::Array(a) => a.iter().for_each(|v| numbers_of(v, out)),
        Value::Object(m) => m.values().for_each(|v| numbers_of(v, out)),
        Value::String(s) => out.extend(numbers_in(s).into_iter().map(|w| w.value)),
        _ => {}
    }
}

/// The numbers of `prose` that are not among `allowed` (each compared
/// rounded to the decimals the prose writes it with).
pub fn ungrounded(prose: &str, allowed: &[f64]) -> Vec<String> {
    numbers_in(prose)
        .into_iter()
        .filter(|w| {
            let scale = 10f64.powi(i32::try_from(w.decimals).unwrap_or(0));
            !allowed.iter().any(|a| {
                ((a * scale).round() - (w.value * scale).round()).abs() < 0.5
                    || ((a.abs() * scale).round() - (w.value * scale).round()).abs() < 0.5
            })
        })
        .map(|w| w.text)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &str) -> Vec<f64> {
        numbers_in(t).into_iter().map(|w| w.value).collect()
    }

    #[test]
    fn numbers_stand_alone() {
        assert_eq!(
            values("cut $5,000 by 30% on gpt-4o and w-42 at p95"),
            vec![5000.0, 30.0]
        );
        assert_eq!(
            values("under 2 s or 1500ms, 3.25 per day"),
            vec![2.0, 1500.0, 3.25]
        );
        assert_eq!(values("llama-3.1-8b"), Vec::<f64>::new());
    }

    #[test]
    fn spans_must_state_their_number() {
        let r = "Cut the cost of workload chat by 30% keeping p95 under 2 s for our 3 services";
        assert!(check_span(r, "under 2 s", 2000.0, Kind::LatencyMs).is_ok());
        assert!(check_span(r, "by 30%", 30.0, Kind::Percent).is_ok());
        assert!(check_span(r, "our 3 services", 3000.0, Kind::LatencyMs).is_err());
        assert!(check_span(r, "under 5 s", 5000.0, Kind::LatencyMs).is_err());
        assert!(check_span(r, "by 30%", 40.0, Kind::Percent).is_err());
        assert!(check_span("budget of $5k a month", "$5k", 5000.0, Kind::Usd).is_ok());
        assert!(check_span("over the last 2 weeks", "last 2 weeks", 14.0, Kind::Days).is_ok());
    }

    #[test]
    fn prose_numbers_must_come_from_the_analysis() {
        let allowed = [304.5612, 40.0, 3.0];
        assert!(ungrounded("saves $304.56 a month (40%) with 3 changes", &allowed).is_empty());
        assert_eq!(
            ungrounded("saves $305 a month, 55% less", &allowed),
            vec!["55%"]
        );
        assert_eq!(ungrounded("about $999.99", &allowed), vec!["$999.99"]);
    }
}
