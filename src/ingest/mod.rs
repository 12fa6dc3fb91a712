//! `netra ingest`: streams a telemetry file into `llm_requests`.
//!
//! Formats: the public Azure LLM inference trace (`TIMESTAMP,ContextTokens,
//! GeneratedTokens`, the model given on the command line), a generic CSV
//! (`timestamp,model,input_tokens,output_tokens` plus optional
//! `latency_ms,status,ttft_ms,cost_usd`), and JSON lines with the same
//! fields. A header is read by name, in any order and any case
//! ([`columns`]); a UTF-8 byte order mark is dropped. The file is read line
//! by line ([`lines`], each line bounded) and inserted in batches inside one
//! transaction, so a file with more bad rows than `--max-errors` inserts
//! nothing. Bad rows are reported by line number. Fields are split on
//! commas (no quoting: none of the formats has text fields that need it).
//!
//! Every row is keyed ([`rowkey`]): rows the workload already has are
//! skipped and counted as already present, so ingesting a file again adds
//! nothing. A model not in the supply catalog is refused (naming the
//! catalog's models) unless the row records its cost or prices are given
//! ([`Prices`]); a file without data rows is refused. An ingest that reads
//! its file to the end is recorded in the history (`ingests`, with its rows
//! when it commits; see [`crate::store::ingests`]).

mod cli;
pub mod columns;
pub mod lines;
pub mod parse;
pub mod rowkey;

use std::{collections::BTreeSet, io::BufRead};

use sqlx::PgPool;

pub use cli::{run_cli, summary};
use columns::Columns;
use lines::MAX_LINE;
use rowkey::Keyer;

use crate::store::{
    ingests,
    telemetry::{self, RequestRecord},
};

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

impl Format {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Azure => "azure",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
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
    /// New rows inserted (0 when aborted).
    pub inserted: u64,
    /// Good rows the workload already had (same key), not inserted again.
    pub already_present: u64,
    /// Data rows read.
    pub read: u64,
    /// Rows rejected (the first [`MAX_REPORTED`]).
    pub bad: Vec<BadRow>,
    /// How many rows were rejected in all.
    pub bad_rows: u64,
    /// True when the file had more bad rows than allowed and nothing was kept.
    pub aborted: bool,
}

/// Why an ingest failed as a whole (nothing is inserted).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the file failed.
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    /// The header (at this line) does not match the format.
    #[error("line {0}: {1}")]
    Header(u64, String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Reading the supply catalog failed.
    #[error("reading the supply catalog: {0}")]
    Catalog(#[from] crate::store::Error),
    /// The Azure format needs `--model`.
    #[error("the azure format needs --model (the trace does not name the model)")]
    ModelRequired,
    /// The workload is netra's own model calls, read from the call ledger.
    #[error("workload `{0}` is netra's own language-model calls (the call ledger); ingest under another name")]
    Reserved(&'static str),
    /// The file has no data rows.
    #[error("no data rows: the file is empty or has only a header")]
    Empty,
    /// A model without a price: not in the catalog, no recorded cost, no
    /// prices given. `at` is where (`line N: `, or empty for `--model`).
    #[error("{at}model `{model}` is not in the supply catalog (its models: {known}); give its prices with --input-price and --output-price (USD per million tokens), or record each row's cost_usd")]
    UnknownModel {
        /// Where it was found.
        at: String,
        /// The model.
        model: String,
        /// The catalog's models, comma-separated.
        known: String,
    },
    /// The prices given are not usable.
    #[error("bad price: {0}")]
    Prices(String),
}

/// Prices given on the command line, for a model the catalog does not have
/// (or to override its list price): each row without a recorded cost gets
/// `cost_usd` at these prices, so the analysis uses them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
}

impl Prices {
    /// Both prices finite and >= 0.
    fn check(&self) -> Result<(), IngestError> {
        for (what, p) in [
            ("--input-price", self.input_per_mtok),
            ("--output-price", self.output_per_mtok),
        ] {
            if !(p.is_finite() && p >= 0.0) {
                return Err(IngestError::Prices(format!(
                    "{what} {p} (USD per million tokens, a finite number >= 0)"
                )));
            }
        }
        Ok(())
    }

    /// The cost of a row at these prices.
    fn cost(&self, r: &RequestRecord) -> f64 {
        (f64::from(r.input_tokens) * self.input_per_mtok
            + f64::from(r.output_tokens) * self.output_per_mtok)
            / 1_000_000.0
    }
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
    /// Prices for rows without a recorded cost (`--input-price`,
    /// `--output-price`).
    pub prices: Option<Prices>,
}

/// At most this many bad rows are kept in a [`Report`] (all are counted).
pub const MAX_REPORTED: usize = 1_000;

/// Streams `reader` into the workload's telemetry, one line at a time (the
/// file is never held in memory), inserting batches of [`BATCH`] rows inside
/// one transaction and skipping rows already present. `progress` is called
/// after each batch with the data rows read so far. When bad rows exceed
/// `max_errors` the transaction is rolled back (nothing is inserted, not
/// even the workload) and the rest of the file is still scanned so that
/// every offending line is reported. A whole-file error ([`IngestError`])
/// inserts nothing either.
pub async fn ingest<R: BufRead>(
    pool: &PgPool,
    target: &Target<'_>,
    mut reader: R,
    mut progress: impl FnMut(u64),
) -> Result<Report, IngestError> {
    let started_at = chrono::Utc::now();
    let known = check_target(pool, target).await?;
    let mut tx = pool.begin().await?;
    telemetry::ensure_workload(&mut *tx, target.tenant, target.workload).await?;
    let mut load = Load::new(target, tx, known);
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    while let Some(cut) = lines::read_line(&mut reader, &mut buf, MAX_LINE)? {
        lineno += 1;
        load.line(lineno, &buf, cut).await?;
        if load.batch.len() >= BATCH {
            load.flush().await?;
            progress(load.read);
        }
    }
    if load.read == 0 {
        return Err(IngestError::Empty);
    }
    load.report.read = load.read;
    load.finish(pool, started_at).await?;
    progress(load.read);
    Ok(load.report)
}

/// Checks the target before anything is read, and answers the catalog's
/// model ids.
async fn check_target(pool: &PgPool, target: &Target<'_>) -> Result<BTreeSet<String>, IngestError> {
    if target.format == Format::Azure && target.model.is_none_or(|m| m.trim().is_empty()) {
        return Err(IngestError::ModelRequired);
    }
    if target.workload == crate::store::ledger::WORKLOAD {
        return Err(IngestError::Reserved(crate::store::ledger::WORKLOAD));
    }
    if let Some(p) = &target.prices {
        p.check()?;
    }
    let catalog = crate::catalog::Catalog::read_db(pool).await?;
    let known: BTreeSet<String> = catalog.models.into_iter().map(|m| m.id).collect();
    if let Some(m) = target.model {
        check_model(&known, target, m, false, None)?;
    }
    Ok(known)
}

/// A model is priced when the catalog has it, the row records its cost, or
/// prices were given. `line` is the row's (none for `--model`).
fn check_model(
    known: &BTreeSet<String>,
    target: &Target<'_>,
    model: &str,
    has_cost: bool,
    line: Option<u64>,
) -> Result<(), IngestError> {
    if has_cost || target.prices.is_some() || known.contains(model) {
        return Ok(());
    }
    Err(IngestError::UnknownModel {
        at: line.map(|l| format!("line {l}: ")).unwrap_or_default(),
        model: model.to_string(),
        known: known.iter().cloned().collect::<Vec<_>>().join(", "),
    })
}

/// The text of a line, or why it cannot be read: the byte order mark of the
/// first line is dropped, and a line cut at [`MAX_LINE`], with a NUL byte or
/// not UTF-8 is refused.
fn decode(lineno: u64, buf: &[u8], cut: bool) -> Result<&str, String> {
    if cut {
        return Err(format!("line longer than {MAX_LINE} bytes"));
    }
    let buf = match lineno {
        1 => buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(buf),
        _ => buf,
    };
    if buf.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    std::str::from_utf8(buf)
        .map(|l| l.trim_end_matches(['\n', '\r']))
        .map_err(|_| "not UTF-8 text".into())
}

/// An ingest while it reads the file.
struct Load<'t> {
    target: &'t Target<'t>,
    /// The transaction of every insert; `None` once aborted.
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    report: Report,
    /// Parsed rows not inserted yet, and their keys.
    batch: Vec<RequestRecord>,
    keys: Vec<Option<Vec<u8>>>,
    /// The header's columns (none yet, or a JSONL file).
    columns: Option<Columns>,
    /// The catalog's model ids.
    known: BTreeSet<String>,
    keyer: Keyer<'t>,
    /// Data rows read.
    read: u64,
}

impl<'t> Load<'t> {
    fn new(
        target: &'t Target<'t>,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        known: BTreeSet<String>,
    ) -> Self {
        Load {
            target,
            tx: Some(tx),
            report: Report::default(),
            batch: Vec::with_capacity(BATCH),
            keys: Vec::with_capacity(BATCH),
            columns: None,
            known,
            keyer: Keyer::new(target.tenant, target.workload),
            read: 0,
        }
    }

    /// True while the next non-blank line is a CSV header.
    fn wants_header(&self) -> bool {
        self.target.format != Format::Jsonl && self.columns.is_none()
    }

    /// Reads one line of the file: skipped when blank, the header when it is
    /// the first of a CSV file, else a data row, parsed into the batch or
    /// reported as bad (aborting past `max_errors`).
    async fn line(&mut self, lineno: u64, buf: &[u8], cut: bool) -> Result<(), IngestError> {
        let line = match decode(lineno, buf, cut) {
            Ok(l) => l,
            Err(reason) if self.wants_header() => return Err(IngestError::Header(lineno, reason)),
            Err(reason) => {
                self.read += 1;
                return self.reject(lineno, reason).await;
            }
        };
        if line.trim().is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = line.split(',').collect();
        if self.wants_header() {
            let c = columns::map_header(self.target.format, &fields)
                .map_err(|e| IngestError::Header(lineno, e))?;
            self.columns = Some(c);
            return Ok(());
        }
        self.read += 1;
        let parsed = match &self.columns {
            Some(c) => parse::parse_fields(c, &fields, self.target.model),
            None => parse::parse_jsonl_row(line),
        };
        match parsed {
            Ok(rec) => self.accept(lineno, rec),
            Err(reason) => self.reject(lineno, reason).await,
        }
    }

    /// Takes a good row into the batch (unless aborted): its model must be
    /// priced; its key is of the row as read, before any given price.
    fn accept(&mut self, lineno: u64, mut rec: RequestRecord) -> Result<(), IngestError> {
        let has_cost = rec.cost_usd.is_some();
        check_model(&self.known, self.target, &rec.model, has_cost, Some(lineno))?;
        if self.tx.is_none() {
            return Ok(());
        }
        self.keys.push(Some(self.keyer.key(&rec).to_vec()));
        if let (None, Some(p)) = (rec.cost_usd, &self.target.prices) {
            rec.cost_usd = Some(p.cost(&rec));
        }
        self.batch.push(rec);
        Ok(())
    }

    /// Reports a bad row, aborting once there are more than `max_errors`.
    async fn reject(&mut self, lineno: u64, reason: String) -> Result<(), IngestError> {
        self.report.reject(lineno, reason);
        if self.report.bad_rows > self.target.max_errors as u64 {
            self.abort().await?;
        }
        Ok(())
    }

    /// Rolls back everything inserted so far; the rest of the file is only
    /// checked.
    async fn abort(&mut self) -> Result<(), IngestError> {
        if let Some(t) = self.tx.take() {
            t.rollback().await?;
            self.batch.clear();
            self.keys.clear();
            self.report.aborted = true;
            self.report.inserted = 0;
            self.report.already_present = 0;
        }
        Ok(())
    }

    /// Inserts the batch (unless aborted), counting the rows already
    /// present, and empties it.
    async fn flush(&mut self) -> Result<(), IngestError> {
        if let Some(t) = self.tx.as_mut() {
            let Target {
                tenant, workload, ..
            } = *self.target;
            let new = telemetry::insert_keyed(t, tenant, workload, &self.batch, &self.keys).await?;
            self.report.inserted += new;
            self.report.already_present += (self.batch.len() as u64).saturating_sub(new);
        }
        self.batch.clear();
        self.keys.clear();
        Ok(())
    }

    /// Unless aborted: inserts the last batch, records the ingest in the
    /// history with its rows (one transaction), commits, and refreshes the
    /// table's statistics when rows were added. Aborted: records it alone.
    async fn finish(
        &mut self,
        pool: &PgPool,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), IngestError> {
        self.flush().await?;
        let Target {
            tenant,
            workload,
            format,
            ..
        } = *self.target;
        let r = &self.report;
        let row = ingests::NewIngest {
            tenant,
            workload,
            format: format.name(),
            rows_read: r.read,
            rows_inserted: r.inserted,
            rows_duplicate: r.already_present,
            errors: r.bad_rows,
            aborted: r.aborted,
            started_at,
        };
        match self.tx.take() {
            Some(mut t) => {
                ingests::record(&mut *t, &row).await?;
                t.commit().await?;
                if self.report.inserted > 0 {
                    telemetry::analyze(pool).await?;
                }
            }
            None => {
                ingests::record(pool, &row).await?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_drop_a_bom_and_refuse_nul_long_and_non_utf8() {
        assert_eq!(
            decode(1, b"\xEF\xBB\xBFTIMESTAMP\r\n", false),
            Ok("TIMESTAMP")
        );
        assert!(decode(2, b"\xEF\xBB\xBFx", false)
            .unwrap()
            .starts_with('\u{feff}'));
        assert_eq!(
            decode(3, b"a\0b\n", false),
            Err("contains a NUL byte".into())
        );
        assert_eq!(decode(3, b"\xFF\xFE", false), Err("not UTF-8 text".into()));
        assert!(decode(3, b"abc", true).unwrap_err().contains("longer than"));
    }

    #[test]
    fn given_prices_must_be_finite_and_price_a_row() {
        let p = Prices {
            input_per_mtok: 2.0,
            output_per_mtok: 8.0,
        };
        assert!(p.check().is_ok());
        let r = RequestRecord {
            ts: chrono::Utc::now(),
            model: "m".into(),
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            latency_ms: None,
            ttft_ms: None,
            status: "ok".into(),
            cost_usd: None,
        };
        assert!((p.cost(&r) - 6.0).abs() < 1e-12);
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let p = Prices {
                input_per_mtok: bad,
                output_per_mtok: 1.0,
            };
            assert!(p.check().unwrap_err().to_string().contains("--input-price"));
        }
    }
}
