//! Parsing one data row into a [`RequestRecord`] (pure): a CSV row by the
//! columns its header mapped ([`super::columns`]), or a JSON line with the
//! generic fields (an unknown field is an error that names it). Every
//! number is checked: tokens are whole numbers from 0 to 2^31-1, latencies
//! and costs finite numbers >= 0 (`NaN`, `inf` and negatives are refused),
//! and text with a NUL character is refused, so Postgres never sees a value
//! it would reject.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use super::columns::{Column, Columns, Field};
use crate::store::telemetry::RequestRecord;

/// Parses an Azure trace timestamp: `2023-11-16 18:15:46.6805900` (UTC).
pub fn parse_azure_ts(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .map(|n| n.and_utc())
        .map_err(|_| {
            format!("bad timestamp `{s}` (expected RFC 3339 or YYYY-MM-DD HH:MM:SS.fffffff, UTC)")
        })
}

/// An RFC 3339 timestamp, or the Azure trace's.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| parse_azure_ts(s))
}

fn tokens(s: &str, what: &str) -> Result<i32, String> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| format!("bad {what} `{}` (a whole number >= 0)", s.trim()))
        .and_then(|n| whole(n, what))
}

/// A token count: 0 to `i32::MAX`.
fn whole(n: i64, what: &str) -> Result<i32, String> {
    i32::try_from(n)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("bad {what} `{n}` (a whole number from 0 to {})", i32::MAX))
}

/// A latency or cost: finite and >= 0 (`-0` reads as 0).
fn non_negative(x: Option<f64>, what: &str) -> Result<Option<f64>, String> {
    match x {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v.abs())),
        Some(v) => Err(format!("bad {what} `{v}` (a finite number >= 0)")),
    }
}

fn opt_f64(s: &str, what: &str) -> Result<Option<f64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let v = s
        .parse::<f64>()
        .map_err(|_| format!("bad {what} `{s}` (a finite number >= 0)"))?;
    non_negative(Some(v), what)
}

/// Text for a text column: trimmed, non-empty, without NUL.
fn text(s: &str, what: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    if s.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    Ok(s.to_string())
}

/// The fields of a CSV row, as far as read.
#[derive(Default)]
struct Partial {
    ts: Option<DateTime<Utc>>,
    model: Option<String>,
    input: Option<i32>,
    output: Option<i32>,
    latency: Option<f64>,
    ttft: Option<f64>,
    status: Option<String>,
    cost: Option<f64>,
}

impl Partial {
    fn set(&mut self, c: &Column, v: &str) -> Result<(), String> {
        let name = c.name;
        match c.field {
            Field::Timestamp => self.ts = Some(parse_ts(v)?),
            Field::Model => self.model = Some(text(v, name)?),
            Field::Input => self.input = Some(tokens(v, name)?),
            Field::Output => self.output = Some(tokens(v, name)?),
            Field::Latency => self.latency = opt_f64(v, name)?,
            Field::Ttft => self.ttft = opt_f64(v, name)?,
            Field::Status if v.trim().is_empty() => {}
            Field::Status => self.status = Some(text(v, name)?),
            Field::Cost => self.cost = opt_f64(v, name)?,
        }
        Ok(())
    }

    fn finish(self, model: Option<&str>) -> Result<RequestRecord, String> {
        Ok(RequestRecord {
            ts: self.ts.ok_or("no timestamp")?,
            model: self
                .model
                .or_else(|| model.map(str::to_string))
                .ok_or("no model")?,
            input_tokens: self.input.ok_or("no input tokens")?,
            output_tokens: self.output.ok_or("no output tokens")?,
            latency_ms: self.latency,
            ttft_ms: self.ttft,
            status: self.status.unwrap_or_else(|| "ok".into()),
            cost_usd: self.cost,
        })
    }
}

/// A CSV row (Azure trace or generic), its fields placed by the header's
/// `columns`; `model` is the command line's, for a file without a model
/// column.
pub fn parse_fields(
    columns: &Columns,
    fields: &[&str],
    model: Option<&str>,
) -> Result<RequestRecord, String> {
    if fields.len() != columns.len() {
        return Err(format!(
            "expected {} fields, found {}",
            columns.len(),
            fields.len()
        ));
    }
    let mut row = Partial::default();
    for (c, v) in columns.iter().zip(fields) {
        row.set(c, v)?;
    }
    row.finish(model)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    timestamp: String,
    model: String,
    input_tokens: i64,
    output_tokens: i64,
    latency_ms: Option<f64>,
    ttft_ms: Option<f64>,
    status: Option<String>,
    cost_usd: Option<f64>,
}

/// A JSON line with the generic fields.
pub fn parse_jsonl_row(line: &str) -> Result<RequestRecord, String> {
    let r: JsonRow = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(RequestRecord {
        ts: parse_ts(&r.timestamp)?,
        model: text(&r.model, "model")?,
        input_tokens: whole(r.input_tokens, "input_tokens")?,
        output_tokens: whole(r.output_tokens, "output_tokens")?,
        latency_ms: non_negative(r.latency_ms, "latency_ms")?,
        ttft_ms: non_negative(r.ttft_ms, "ttft_ms")?,
        status: match r.status.as_deref().map(str::trim) {
            None | Some("") => "ok".into(),
            Some(s) => text(s, "status")?,
        },
        cost_usd: non_negative(r.cost_usd, "cost_usd")?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{columns::map_header, Format};
    use super::*;

    #[test]
    fn azure_timestamp_with_seven_digits_is_utc() {
        let t = parse_azure_ts("2023-11-16 18:15:46.6805900").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-11-16T18:15:46.680590+00:00");
        assert!(parse_azure_ts("16/11/2023").is_err());
    }

    #[test]
    fn azure_rows_are_read_by_the_header_order_not_the_position() {
        let c = map_header(
            Format::Azure,
            &["TIMESTAMP", "GeneratedTokens", "ContextTokens"],
        )
        .unwrap();
        let r = parse_fields(&c, &["2023-11-16 18:15:46.6805900", "44", "374"], Some("m")).unwrap();
        assert_eq!(
            (r.input_tokens, r.output_tokens, r.model.as_str()),
            (374, 44, "m")
        );
    }

    #[test]
    fn garbage_numbers_and_text_are_refused_with_the_column_named() {
        let c = map_header(
            Format::Csv,
            &[
                "timestamp",
                "model",
                "input_tokens",
                "output_tokens",
                "latency_ms",
            ],
        )
        .unwrap();
        let row = |f: [&str; 5]| parse_fields(&c, &f, None);
        let ts = "2026-01-01T00:00:00Z";
        let cases = [
            ([ts, "m", "-1", "5", "1"], "input_tokens `-1`"),
            ([ts, "m", "1", "NaN", "1"], "output_tokens `NaN`"),
            (
                [ts, "m", "1", "3000000000", "1"],
                "output_tokens `3000000000`",
            ),
            ([ts, "m", "1.5", "1", "1"], "input_tokens `1.5`"),
            ([ts, "m", "1", "1", "NaN"], "latency_ms `NaN`"),
            ([ts, "m", "1", "1", "-3"], "latency_ms `-3`"),
            ([ts, "m", "1", "1", "1e999"], "latency_ms `inf`"),
            ([ts, " ", "1", "1", "1"], "empty model"),
            (
                ["yesterday", "m", "1", "1", "1"],
                "bad timestamp `yesterday`",
            ),
        ];
        for (f, want) in cases {
            let e = row(f).unwrap_err();
            assert!(e.contains(want), "{f:?}: {e}");
        }
        assert_eq!(
            row([ts, "m", "1", "1", "-0"]).unwrap().latency_ms,
            Some(0.0)
        );
        assert!(row([ts, "m", "1", "1", ""]).unwrap().latency_ms.is_none());
        assert!(parse_fields(&c, &[ts, "m", "1"], None)
            .unwrap_err()
            .contains("expected 5 fields, found 3"));
    }

    #[test]
    fn json_lines_refuse_unknown_fields_negative_values_and_nul() {
        let ok = r#"{"timestamp":"2026-01-01T00:00:00Z","model":"m","input_tokens":1,"output_tokens":2,"latency_ms":3}"#;
        assert_eq!(parse_jsonl_row(ok).unwrap().output_tokens, 2);
        let cases = [
            (
                r#"{"timestamp":"2026-01-01T00:00:00Z","model":"m","input_tokens":1,"output_tokens":2,"colour":1}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"timestamp":"2026-01-01T00:00:00Z","model":"m","input_tokens":-1,"output_tokens":2}"#,
                "input_tokens `-1`",
            ),
            (
                r#"{"timestamp":"2026-01-01T00:00:00Z","model":"m","input_tokens":1,"output_tokens":2,"latency_ms":-1}"#,
                "latency_ms `-1`",
            ),
            (
                r#"{"timestamp":"2026-01-01T00:00:00Z","model":"a\u0000b","input_tokens":1,"output_tokens":2}"#,
                "NUL",
            ),
            (
                r#"{"timestamp":"2026-01-01T00:00:00Z","model":"m","input_tokens":1,"output_tokens":NaN}"#,
                "invalid JSON",
            ),
        ];
        for (line, want) in cases {
            let e = parse_jsonl_row(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
