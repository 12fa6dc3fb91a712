//! Header mapping: the header of a CSV file (the generic format's or the
//! Azure trace's) is read by name, case-insensitively and in any order, into
//! the field each position holds. A required column that is missing, a
//! column the format does not know, and a column named twice are errors
//! that name the column.

use super::Format;

/// A field of a request row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// When the request arrived.
    Timestamp,
    /// The model.
    Model,
    /// Prompt tokens.
    Input,
    /// Completion tokens.
    Output,
    /// End-to-end latency, ms.
    Latency,
    /// Time to first token, ms.
    Ttft,
    /// `ok` or an error status.
    Status,
    /// Recorded cost, USD.
    Cost,
}

/// A column a format knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name, as the format's documentation spells it.
    pub name: &'static str,
    /// What it holds.
    pub field: Field,
    /// Whether a header must have it.
    pub required: bool,
}

const fn col(name: &'static str, field: Field, required: bool) -> Column {
    Column {
        name,
        field,
        required,
    }
}

/// The columns of the Azure LLM inference trace.
pub const AZURE: &[Column] = &[
    col("TIMESTAMP", Field::Timestamp, true),
    col("ContextTokens", Field::Input, true),
    col("GeneratedTokens", Field::Output, true),
];

/// The columns of the generic CSV.
pub const CSV: &[Column] = &[
    col("timestamp", Field::Timestamp, true),
    col("model", Field::Model, true),
    col("input_tokens", Field::Input, true),
    col("output_tokens", Field::Output, true),
    col("latency_ms", Field::Latency, false),
    col("status", Field::Status, false),
    col("ttft_ms", Field::Ttft, false),
    col("cost_usd", Field::Cost, false),
];

/// The columns a format's header may have (none for JSON lines).
pub fn known(format: Format) -> &'static [Column] {
    match format {
        Format::Azure => AZURE,
        Format::Csv => CSV,
        Format::Jsonl => &[],
    }
}

/// What each position of a row holds, from the header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    order: Vec<Column>,
}

impl Columns {
    /// Fields per row.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True for no columns (never for a mapped header).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The columns in row order.
    pub fn iter(&self) -> impl Iterator<Item = &Column> {
        self.order.iter()
    }
}

/// Maps a header (its fields, split on commas) to the format's columns.
pub fn map_header(format: Format, header: &[&str]) -> Result<Columns, String> {
    let cols = known(format);
    let mut order: Vec<Column> = Vec::with_capacity(header.len());
    for (i, h) in header.iter().map(|h| h.trim()).enumerate() {
        let c = find(cols, h).ok_or_else(|| unknown(format, cols, i, h))?;
        if order.contains(&c) {
            return Err(format!("column `{h}` appears twice"));
        }
        order.push(c);
    }
    if let Some(m) = cols.iter().find(|c| c.required && !order.contains(c)) {
        return Err(format!(
            "missing column `{}` (the header has: {})",
            m.name,
            header.join(",")
        ));
    }
    Ok(Columns { order })
}

fn find(cols: &[Column], name: &str) -> Option<Column> {
    cols.iter()
        .copied()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}

fn unknown(format: Format, cols: &[Column], i: usize, name: &str) -> String {
    let names: Vec<&str> = cols.iter().map(|c| c.name).collect();
    let what = if name.is_empty() {
        format!("column {} has no name", i + 1)
    } else {
        format!("unknown column `{name}`")
    };
    format!(
        "{what} (the {} format's columns: {})",
        format.name(),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_maps_by_name_in_any_order_and_case() {
        let c = map_header(
            Format::Azure,
            &["generatedtokens", " TIMESTAMP ", "CONTEXTTOKENS"],
        )
        .unwrap();
        let fields: Vec<Field> = c.iter().map(|c| c.field).collect();
        assert_eq!(fields, vec![Field::Output, Field::Timestamp, Field::Input]);
    }

    #[test]
    fn a_missing_unknown_unnamed_or_repeated_column_is_named() {
        let e = map_header(Format::Csv, &["timestamp", "model", "input_tokens"]).unwrap_err();
        assert!(e.contains("missing column `output_tokens`"), "{e}");
        let e = map_header(
            Format::Azure,
            &["TIMESTAMP", "ContextTokens", "GeneratedTokens", "Model"],
        )
        .unwrap_err();
        assert!(
            e.contains("unknown column `Model`") && e.contains("ContextTokens"),
            "{e}"
        );
        let e = map_header(
            Format::Azure,
            &["TIMESTAMP", "ContextTokens", "GeneratedTokens", ""],
        )
        .unwrap_err();
        assert!(e.contains("column 4 has no name"), "{e}");
        let e = map_header(
            Format::Azure,
            &["TIMESTAMP", "ContextTokens", "contexttokens"],
        )
        .unwrap_err();
        assert!(e.contains("`contexttokens` appears twice"), "{e}");
    }
}
