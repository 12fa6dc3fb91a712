//! Server-rendered HTML (maud, which escapes every interpolated string):
//! the run report as a self-contained page, with inline CSS and charts
//! drawn as inline SVG, and no script or external asset.
//!
//! - [`page`]: the document shell with the shared CSS.
//! - [`charts`]: bar and line charts as SVG, pure functions.
//! - [`report`]: a run's report (the reporting phase's output) as HTML,
//!   and its loader.

pub mod charts;
pub mod report;

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The shared CSS of every page (a constant: nothing user-provided).
pub const CSS: &str = r#"
:root { color-scheme: light; --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --accent: #2f6fb3; --bad: #c0392b; --bg: #ffffff; --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6em; margin: 0 0 8px; }
h2 { font-size: 1.25em; margin: 32px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
p, ul, ol { margin: 6px 0 12px; }
blockquote { margin: 8px 0 16px; padding: 8px 14px; border-left: 4px solid var(--line); background: var(--soft); white-space: pre-wrap; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; overflow-wrap: break-word; }
th { background: var(--soft); font-weight: 600; }
table.metrics { width: auto; min-width: 60%; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.meta { color: var(--muted); font-size: 0.9em; }
.notice { border: 1px solid #f0c36d; background: #fdf6e3; padding: 10px 14px; border-radius: 4px; margin: 12px 0; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.tile { flex: 1 1 180px; border: 1px solid var(--line); border-radius: 4px; padding: 10px 14px; }
.tile .k { color: var(--muted); font-size: 0.85em; }
.tile .v { font-size: 1.3em; font-weight: 600; font-variant-numeric: tabular-nums; }
.ok { color: #1e7b34; } .no { color: var(--bad); } .unknown { color: var(--muted); }
figure.chart { margin: 16px 0 4px; }
section.chart-block { margin-bottom: 20px; }
figure.chart figcaption { font-weight: 600; margin-bottom: 4px; }
figure.chart .note { color: var(--muted); font-size: 0.85em; font-weight: normal; margin: 2px 0 0; }
figure.chart svg { width: 100%; height: auto; display: block; }
figure.chart svg text { font: 11px system-ui, sans-serif; fill: var(--ink); }
figure.chart .empty { color: var(--muted); font-style: italic; }
pre { background: var(--soft); padding: 10px; overflow-x: auto; font-size: 0.85em; white-space: pre-wrap; overflow-wrap: anywhere; }
details { margin: 8px 0 16px; } summary { cursor: pointer; color: var(--accent); }
"#;

/// A complete HTML document: `title` (escaped) in the head, the shared
/// inline CSS, and `body` inside `<main>`.
pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                main { (body) }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A strict well-formedness check of generated markup, for the tests:
    //! every tag is closed in order (HTML void elements aside), attribute
    //! values are quoted, and no raw `<` or `>` is left in text.

    const VOID: &[&str] = &["meta", "link", "br", "hr", "img", "input"];

    /// `Err` says what is wrong and where.
    pub(crate) fn well_formed(s: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = s;
        let mut at = 0usize;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            if text.contains('>') {
                return Err(format!("raw > in text at {at}"));
            }
            let after = &rest[open + 1..];
            let close = tag_end(after).ok_or_else(|| format!("unclosed tag at {}", at + open))?;
            let tag = &after[..close];
            if let Some(name) = tag.strip_prefix('/') {
                let name = name.trim();
                match stack.pop() {
                    Some(top) if top == name => {}
                    other => return Err(format!("</{name}> closes {other:?} at {}", at + open)),
                }
            } else if tag.starts_with('!') {
                // <!DOCTYPE html>
            } else {
                let self_closing = tag.ends_with('/');
                let name: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if name.is_empty() {
                    return Err(format!("raw < in text at {}", at + open));
                }
                if !self_closing && !VOID.contains(&name.as_str()) {
                    stack.push(name);
                }
            }
            let consumed = open + 1 + close + 1;
            at += consumed;
            rest = &rest[consumed..];
        }
        if rest.contains('>') {
            return Err("raw > in trailing text".into());
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed elements {stack:?}"))
        }
    }

    /// The end of a tag: the first `>` outside a double-quoted value (a
    /// value may not hold `<` or `>` either: maud escapes them).
    fn tag_end(s: &str) -> Option<usize> {
        let mut quoted = false;
        for (i, c) in s.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '<' if !quoted => return None,
                '<' | '>' if quoted => return None,
                '>' => return Some(i),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_a_complete_escaped_document() {
        let out = page("a <b> \"c\"", html! { p { "x & y" } }).into_string();
        assert!(out.starts_with("<!DOCTYPE html><html lang=\"en\">"));
        assert!(out.contains("<title>a &lt;b&gt; &quot;c&quot;</title>"));
        assert!(out.contains("<p>x &amp; y</p>"));
        assert!(out.contains("<style>"));
        assert!(!out.contains("<script"));
        testing::well_formed(&out).unwrap();
        assert!(testing::well_formed("<p><b></p></b>").is_err());
        assert!(testing::well_formed("<p>1 < 2</p>").is_err());
    }
}
