//! The suite's one table, a row per scenario, as aligned text or as
//! Markdown (`--markdown`, to paste into RELIABILITY.md).

use crate::tally::Tally;

/// The columns, in order.
const HEADERS: [&str; 12] = [
    "scenario",
    "submitted",
    "completed",
    "needs_input",
    "dead-lettered (poison only)",
    "lost",
    "applied twice",
    "stuck",
    "replies missing",
    "replies duplicated",
    "p99 recovery (ms)",
    "note",
];

/// How a scenario ended.
pub enum Status {
    /// Counted: its tally, and why it fails (empty: it passed).
    Counted { tally: Tally, failures: Vec<String> },
    /// Not run on this stack, and why.
    Skipped(String),
    /// It could not be run to the end.
    Error(String),
}

/// One row.
pub struct Row {
    pub scenario: &'static str,
    pub status: Status,
    pub notes: Vec<String>,
}

impl Row {
    /// True when the row makes the suite fail (a skip only with
    /// `--require-all`).
    pub fn fails(&self, require_all: bool) -> bool {
        match &self.status {
            Status::Counted { failures, .. } => !failures.is_empty(),
            Status::Skipped(_) => require_all,
            Status::Error(_) => true,
        }
    }

    fn cells(&self) -> Vec<String> {
        let mut note: Vec<String> = Vec::new();
        let mut cells = vec![self.scenario.to_string()];
        match &self.status {
            Status::Counted { tally: t, failures } => {
                let dead = if t.good_dead_lettered > 0 {
                    format!("{} + {} good", t.poison_dead_lettered, t.good_dead_lettered)
                } else {
                    t.poison_dead_lettered.to_string()
                };
                let p99 = match (t.recovery_ms.is_empty(), t.p99_recovery()) {
                    (true, _) => "-".to_string(),
                    (false, Some(ms)) => ms.to_string(),
                    (false, None) => "none".to_string(),
                };
                cells.extend([
                    t.submitted.to_string(),
                    t.completed.to_string(),
                    t.needs_input.to_string(),
                    dead,
                    t.lost.to_string(),
                    t.applied_twice.to_string(),
                    t.stuck.to_string(),
                    t.replies_missing.to_string(),
                    t.replies_duplicated.to_string(),
                    p99,
                ]);
                if !failures.is_empty() {
                    note.push(format!("FAIL: {}", failures.join(", ")));
                }
            }
            Status::Skipped(why) => {
                cells.extend(std::iter::repeat_n("-".to_string(), 10));
                note.push(why.clone());
            }
            Status::Error(e) => {
                cells.extend(std::iter::repeat_n("-".to_string(), 10));
                note.push(format!("FAIL: error: {e}"));
            }
        }
        note.extend(self.notes.iter().cloned());
        cells.push(note.join("; "));
        cells
    }
}

/// The table as aligned text: numbers right-aligned, the note last.
pub fn text(rows: &[Row]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.chars().count()).collect();
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i == last {
                out.push_str(c);
            } else if i == 0 {
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
                out.push_str("  ");
            }
        }
        out.trim_end().to_string()
    };
    let headers: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    let mut out = vec![line(&headers)];
    out.extend(body.iter().map(|r| line(r)));
    out.join("\n")
}

/// The table in Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let row = |cells: Vec<String>| {
        let cells: Vec<String> = cells.into_iter().map(|c| c.replace('|', "\\|")).collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = vec![row(HEADERS.iter().map(|h| h.to_string()).collect())];
    let align: Vec<&str> = (0..HEADERS.len())
        .map(|i| {
            if i == 0 || i == HEADERS.len() - 1 {
                "---"
            } else {
                "---:"
            }
        })
        .collect();
    out.push(format!("|{}|", align.join("|")));
    out.extend(rows.iter().map(|r| row(r.cells())));
    out.join("\n")
}
