//! The command line of `netra ingest`: the input (a file or standard
//! input), a progress bar, the bad rows by line number, and the summary
//! (`n new, m already present`).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use sqlx::PgPool;

use super::{ingest, Report, Target};

/// Counts the bytes read through it, for the progress bar.
struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
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
    let bytes = Arc::new(AtomicU64::new(0));
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
        bar.set_position(bytes.load(Ordering::Relaxed));
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
    println!("{}", summary(target, &report));
    Ok(())
}

/// The line printed after an ingest.
pub fn summary(target: &Target<'_>, r: &Report) -> String {
    format!(
        "workload {} of tenant {}: {} new, {} already present ({} rows read, {} bad rows skipped)",
        target.workload, target.tenant, r.inserted, r.already_present, r.read, r.bad_rows
    )
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
