//! `netra ingest`: streams a telemetry file into `llm_requests`.
//!
//! Formats: the public Azure LLM inference trace (`TIMESTAMP,ContextTokens,
//! GeneratedTokens`, the model given on the command line), a generic CSV
//! (`timestamp,model,input_tokens,output_tokens,latency_ms,status` plus
//! optional `ttft_ms,cost_usd`), and JSONL with the same fields. The file is
//! read row by row and inserted in batches inside one transaction, so a file
//! with more bad rows than `--max-errors` inserts nothing. Bad rows are
//! reported by line number. Fields are split on commas (no quoting: none of
//! the formats has text fields that need it).

use std::io::BufRead;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use crate::store::telemetry::{self, RequestRecord};

/// Rows per INSERT.
pub const BATCH: usize = 2_000;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Azure LLM inference trace CSV.
    Azure,
    /// Generic per-request CSV.
    Csv,
    /// Generic per-request JSON lines.
    Jsonl,
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    /// 1-based line number in the file.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// What an ingest did.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows inserted (0 when aborted).
    pub inserted: u64,
    /// Data rows read.
    pub read: u64,
    /// Rows rejected (the first [`MAX_REPORTED`]).
    pub bad: Vec<BadRow>,
    /// How many rows were rejected in all.
    pub bad_rows: u64,
    /// True when the file had more bad rows than allowed and nothing was kept.
    pub aborted: bool,
}

/// Why an ingest failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the file failed.
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    /// The header does not match the format.
    #[error("line 1: {0}")]
    Header(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The Azure format needs `--model`.
    #[error("the azure format needs --model (the trace does not name the model)")]
    ModelRequired,
    /// The workload is netra's own model calls, read from the call ledger.
    #[error("workload `{0}` is netra's own language-model calls (the call ledger); ingest under another name")]
    Reserved(&'static str),
}

/// Parses an Azure trace timestamp: `2023-11-16 18:15:46.6805900` (UTC).
pub fn parse_azure_ts(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .map(|n| n.and_utc())
        .map_err(|_| format!("bad timestamp `{s}` (expected YYYY-MM-DD HH:MM:SS.fffffff)"))
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| parse_azure_ts(s))
}

fn tokens(s: &str, what: &str) -> Result<i32, String> {
    s.trim()
        .parse::<i32>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("bad {what} `{}` (a whole number >= 0)", s.trim()))
}

fn opt_f64(s: Option<&str>, what: &str) -> Result<Option<f64>, String> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(Some)
            .ok_or_else(|| format!("bad {what} `{v}`")),
    }
}

#[derive(Deserialize)]
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

/// Parses one data row (pure, for tests). `columns` is the header.
pub fn parse_row(
    format: Format,
    columns: &[String],
    fields: &[&str],
    model: Option<&str>,
) -> Result<RequestRecord, String> {
    match format {
        Format::Azure => parse_azure_row(fields, model),
        Format::Csv => parse_csv_row(columns, fields),
        Format::Jsonl => parse_jsonl_row(fields.first().copied().unwrap_or_default()),
    }
}

/// A row of the Azure trace: timestamp, context and generated tokens, for
/// the model given on the command line.
fn parse_azure_row(fields: &[&str], model: Option<&str>) -> Result<RequestRecord, String> {
    if fields.len() != 3 {
        return Err(format!("expected 3 fields, found {}", fields.len()));
    }
    Ok(RequestRecord {
        ts: parse_azure_ts(fields[0])?,
        model: model.unwrap_or_default().to_string(),
        input_tokens: tokens(fields[1], "ContextTokens")?,
        output_tokens: tokens(fields[2], "GeneratedTokens")?,
        latency_ms: None,
        ttft_ms: None,
        status: "ok".into(),
        cost_usd: None,
    })
}

/// A row of the generic CSV, its fields found by the header's names.
fn parse_csv_row(columns: &[String], fields: &[&str]) -> Result<RequestRecord, String> {
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .and_then(|i| fields.get(i).copied())
    };
    if fields.len() != columns.len() {
        return Err(format!(
            "expected {} fields, found {}",
            columns.len(),
            fields.len()
        ));
    }
    let model = col("model")
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or("empty model")?;
    Ok(RequestRecord {
        ts: parse_ts(col("timestamp").unwrap_or_default())?,
        model: model.to_string(),
        input_tokens: tokens(col("input_tokens").unwrap_or_default(), "input_tokens")?,
        output_tokens: tokens(col("output_tokens").unwrap_or_default(), "output_tokens")?,
        latency_ms: opt_f64(col("latency_ms"), "latency_ms")?,
        ttft_ms: opt_f64(col("ttft_ms"), "ttft_ms")?,
        status: col("status")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("ok")
            .to_string(),
        cost_usd: opt_f64(col("cost_usd"), "cost_usd")?,
    })
}

/// A JSON line with the generic fields.
fn parse_jsonl_row(line: &str) -> Result<RequestRecord, String> {
    let r: JsonRow = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(RequestRecord {
        ts: parse_ts(&r.timestamp)?,
        model: r.model,
        input_tokens: i32::try_from(r.input_tokens)
            .ok()
            .filter(|n| *n >= 0)
            .ok_or("bad input_tokens")?,
        output_tokens: i32::try_from(r.output_tokens)
            .ok()
            .filter(|n| *n >= 0)
            .ok_or("bad output_tokens")?,
        latency_ms: r.latency_ms,
        ttft_ms: r.ttft_ms,
        status: r.status.unwrap_or_else(|| "ok".into()),
        cost_usd: r.cost_usd,
    })
}

fn check_header(format: Format, header: &[String]) -> Result<(), IngestError> {
    let want: &[&str] = match format {
        Format::Azure => &["timestamp", "contexttokens", "generatedtokens"],
        Format::Csv => &["timestamp", "model", "input_tokens", "output_tokens"],
        Format::Jsonl => return Ok(()),
    };
    let lower: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for w in want {
        if !lower.iter().any(|h| h == w) {
            return Err(IngestError::Header(format!(
                "missing column `{w}` (header: {})",
                header.join(",")
            )));
        }
    }
    Ok(())
}

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Owning tenant.
    pub tenant: &'a str,
    /// Workload id.
    pub workload: &'a str,
    /// File format.
    pub format: Format,
    /// Model (azure format).
    pub model: Option<&'a str>,
    /// Bad rows tolerated before aborting.
    pub max_errors: usize,
}

/// At most this many bad rows are kept in a [`Report`] (all are counted).
pub const MAX_REPORTED: usize = 1_000;

/// Streams `reader` into the workload's telemetry, one line at a time (the
/// file is never held in memory), inserting batches of [`BATCH`] rows inside
/// one transaction. `progress` is called after each batch with the data rows
/// read so far. When bad rows exceed `max_errors` the transaction is rolled
/// back (nothing is inserted, not even the workload) and the rest of the
/// file is still scanned so that every offending line is reported.
pub async fn ingest<R: BufRead>(
    pool: &PgPool,
    target: &Target<'_>,
    mut reader: R,
    mut progress: impl FnMut(u64),
) -> Result<Report, IngestError> {
    if target.format == Format::Azure && target.model.is_none_or(|m| m.trim().is_empty()) {
        return Err(IngestError::ModelRequired);
    }
    if target.workload == crate::store::ledger::WORKLOAD {
        return Err(IngestError::Reserved(crate::store::ledger::WORKLOAD));
    }
    let mut tx = pool.begin().await?;
    telemetry::ensure_workload(&mut *tx, target.tenant, target.workload).await?;
    let mut load = Load {
        target,
        tx: Some(tx),
        report: Report::default(),
        batch: Vec::with_capacity(BATCH),
        header: Vec::new(),
        read: 0,
    };
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        lineno += 1;
        load.line(lineno, &buf).await?;
        if load.batch.len() >= BATCH {
            load.flush().await?;
            progress(load.read);
        }
    }
    load.finish(pool).await?;
    progress(load.read);
    load.report.read = load.read;
    Ok(load.report)
}

/// An ingest while it reads the file.
struct Load<'t> {
    target: &'t Target<'t>,
    /// The transaction of every insert; `None` once aborted.
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    report: Report,
    /// Parsed rows not inserted yet.
    batch: Vec<RequestRecord>,
    /// The header's fields (none yet, or a JSONL file).
    header: Vec<String>,
    /// Data rows read.
    read: u64,
}

impl Load<'_> {
    /// Reads one line of the file: skipped when blank, the header when it is
    /// the first of a CSV file, else a data row, parsed into the batch or
    /// reported as bad (aborting past `max_errors`).
    async fn line(&mut self, lineno: u64, buf: &[u8]) -> Result<(), IngestError> {
        let format = self.target.format;
        let line = match std::str::from_utf8(buf) {
            Ok(l) => l.trim_end_matches(['\n', '\r']),
            Err(_) if self.header.is_empty() && format != Format::Jsonl => {
                return Err(IngestError::Header("not UTF-8 text".into()));
            }
            Err(_) => {
                self.read += 1;
                self.report.reject(lineno, "not UTF-8 text".into());
                return Ok(());
            }
        };
        if line.trim().is_empty() {
            return Ok(());
        }
        if format != Format::Jsonl && self.header.is_empty() {
            self.header = line.split(',').map(|s| s.trim().to_string()).collect();
            return check_header(format, &self.header);
        }
        self.read += 1;
        let fields: Vec<&str> = if format == Format::Jsonl {
            vec![line]
        } else {
            line.split(',').collect()
        };
        match parse_row(format, &self.header, &fields, self.target.model) {
            Ok(rec) if self.tx.is_some() => self.batch.push(rec),
            Ok(_) => {}
            Err(reason) => {
                self.report.reject(lineno, reason);
                if self.report.bad_rows > self.target.max_errors as u64 {
                    self.abort().await?;
                }
            }
        }
        Ok(())
    }

    /// Rolls back everything inserted so far; the rest of the file is only
    /// checked.
    async fn abort(&mut self) -> Result<(), IngestError> {
        if let Some(t) = self.tx.take() {
            t.rollback().await?;
            self.batch.clear();
            self.report.aborted = true;
            self.report.inserted = 0;
        }
        Ok(())
    }

    /// Inserts the batch (unless aborted) and empties it.
    async fn flush(&mut self) -> Result<(), IngestError> {
        if let Some(t) = self.tx.as_mut() {
            let Target {
                tenant, workload, ..
            } = *self.target;
            self.report.inserted +=
                telemetry::insert_batch(t, tenant, workload, &self.batch).await?;
        }
        self.batch.clear();
        Ok(())
    }

    /// Unless aborted: inserts the last batch, commits, and refreshes the
    /// table's statistics.
    async fn finish(&mut self, pool: &PgPool) -> Result<(), IngestError> {
        if let Some(mut t) = self.tx.take() {
            let Target {
                tenant, workload, ..
            } = *self.target;
            self.report.inserted +=
                telemetry::insert_batch(&mut t, tenant, workload, &self.batch).await?;
            t.commit().await?;
            telemetry::analyze(pool).await?;
        }
        Ok(())
    }
}

impl Report {
    /// Counts a bad row, and keeps it while fewer than [`MAX_REPORTED`] are.
    fn reject(&mut self, line: u64, reason: String) {
        self.bad_rows += 1;
        if self.bad.len() < MAX_REPORTED {
            self.bad.push(BadRow { line, reason });
        }
    }
}

/// Counts the bytes read through it, for the progress bar.
struct Counted<R> {
    inner: R,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// `netra ingest`: reads `file` (`-` for standard input), shows a progress
/// bar on standard error (hidden when it is not a terminal), prints bad rows
/// by line number, and fails when the file had more bad rows than allowed.
pub async fn run_cli(
    pool: &PgPool,
    target: &Target<'_>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (inner, total) = open_input(file)?;
    let reader = std::io::BufReader::with_capacity(
        1 << 16,
        Counted {
            inner,
            bytes: bytes.clone(),
        },
    );
    let bar = progress_bar(total);
    let report = ingest(pool, target, reader, |n| {
        bar.set_position(bytes.load(std::sync::atomic::Ordering::Relaxed));
        bar.set_message(format!("{n} rows"));
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    print_bad_rows(&report);
    if report.aborted {
        anyhow::bail!(
            "{} bad rows exceed --max-errors {}; nothing was inserted",
            report.bad_rows,
            target.max_errors
        );
    }
    println!(
        "inserted {} of {} rows into workload {} ({} bad rows skipped)",
        report.inserted, report.read, target.workload, report.bad_rows
    );
    Ok(())
}

/// The input to read: standard input for `-`, else the file, with its
/// length when known.
fn open_input(
    file: &std::path::Path,
) -> anyhow::Result<(Box<dyn std::io::Read + Send>, Option<u64>)> {
    use anyhow::Context;
    if file.as_os_str() == "-" {
        return Ok((Box::new(std::io::stdin()), None));
    }
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok((Box::new(f), len))
}

/// A progress bar on standard error: of the bytes read when the length is
/// known, else a spinner.
fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    }
}

/// Prints the first 50 bad rows by line number, and how many more there were.
fn print_bad_rows(report: &Report) {
    for b in report.bad.iter().take(50) {
        eprintln!("line {}: {}", b.line, b.reason);
    }
    if report.bad_rows > 50 {
        eprintln!("… {} more bad rows", report.bad_rows - 50);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_timestamp_with_seven_digits_is_utc() {
        let t = parse_azure_ts("2023-11-16 18:15:46.6805900").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-11-16T18:15:46.680590+00:00");
        assert!(parse_azure_ts("16/11/2023").is_err());
    }

    #[test]
    fn rows_parse_or_say_why() {
        let h: Vec<String> = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = parse_row(
            Format::Azure,
            &h,
            &["2023-11-16 18:15:46.6805900", "374", "44"],
            Some("gpt-4o"),
        )
        .unwrap();
        assert_eq!(
            (r.input_tokens, r.output_tokens, r.model.as_str()),
            (374, 44, "gpt-4o")
        );
        assert!(parse_row(
            Format::Azure,
            &h,
            &["2023-11-16 18:15:46", "-1", "44"],
            Some("m")
        )
        .unwrap_err()
        .contains("ContextTokens"));
        let g: Vec<String> = [
            "timestamp",
            "model",
            "input_tokens",
            "output_tokens",
            "latency_ms",
            "status",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = parse_row(
            Format::Csv,
            &g,
            &["2026-01-01T00:00:00Z", "gpt-4o", "10", "5", "812.5", "ok"],
            None,
        )
        .unwrap();
        assert_eq!(r.latency_ms, Some(812.5));
        assert!(parse_row(
            Format::Csv,
            &g,
            &["2026-01-01T00:00:00Z", "gpt-4o", "10"],
            None
        )
        .is_err());
        let j = r#"{"timestamp":"2026-01-01T00:00:00Z","model":"m","input_tokens":1,"output_tokens":2,"latency_ms":3}"#;
        assert_eq!(
            parse_row(Format::Jsonl, &[], &[j], None)
                .unwrap()
                .output_tokens,
            2
        );
    }
}
