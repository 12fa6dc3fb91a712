//! Charts as inline SVG, drawn on the server: horizontal bars ([`bars`])
//! and a time series ([`line`]). Pure functions of their input: labels are
//! escaped (they can be user-provided: model names, titles), values that
//! are not finite are shown as "n/a" and drawn as nothing, any magnitude
//! scales (coordinates are computed on values divided by the largest
//! one), and empty input says "no data". Every element is closed
//! explicitly, so the SVG is well-formed inside HTML and as XML.
//!
//! Each chart is a `<figure class="chart">` whose SVG carries the exact
//! figures as data attributes (`data-value` per bar; `data-points`,
//! `data-sum` and `data-max` of a series), for people reading the source
//! and for tests.

use maud::{html, Markup};

/// Width of every chart, in SVG user units (it scales to its container).
pub const WIDTH: f64 = 720.0;

/// Height of one bar's row.
const ROW: f64 = 24.0;
/// Width of the label column of a bar chart.
const LABEL_W: f64 = 230.0;
/// Width of the value column of a bar chart.
const VALUE_W: f64 = 110.0;
/// Longest label drawn in full (the whole label is in the bar's tooltip).
const LABEL_CHARS: usize = 34;

/// Bar colours: positive, negative.
const FILL: &str = "#2f6fb3";
const FILL_NEG: &str = "#c0392b";

/// Height of a line chart's plot area, and its margins.
const PLOT_H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// At most this many x labels.
const X_LABELS: usize = 6;
/// Series up to this many points get a dot with a tooltip per point.
const DOTS_UP_TO: usize = 90;

/// A number for people: thousands grouped, 2 decimals (none for whole
/// numbers, up to 4 below 1, scientific for very large or very small
/// magnitudes), "n/a" when it is not finite.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    if !(1e-4..1e15).contains(&a) {
        return format!("{v:.3e}");
    }
    let text = if v.fract() == 0.0 {
        format!("{a:.0}")
    } else if a < 1.0 {
        format!("{a:.4}").trim_end_matches('0').to_string()
    } else {
        format!("{a:.2}")
    };
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), ""), |(i, f)| (i, f));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let zero = int.chars().all(|c| c == '0') && frac.chars().all(|c| c == '0');
    let sign = if v < 0.0 && !zero { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// A value with its unit: `$` before, anything else after.
fn with_unit(v: f64, unit: &str) -> String {
    let n = format_value(v);
    match unit {
        _ if !v.is_finite() => n,
        "" => n,
        "$" | "USD" => match n.strip_prefix('-') {
            Some(abs) => format!("-${abs}"),
            None => format!("${n}"),
        },
        u => format!("{n} {u}"),
    }
}

/// A coordinate, one decimal (0 for anything not finite).
fn c(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "0".to_string()
    }
}

/// The exact value, for a data attribute.
fn exact(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        "n/a".to_string()
    }
}

/// A label shortened to `LABEL_CHARS` characters, with an ellipsis.
fn short(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(LABEL_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// The range of the finite values, always holding 0, scaled by the
/// largest magnitude (so it is within -1..=1 and never overflows): `(lo,
/// hi, scale)`, `v / scale` being what is drawn.
fn domain<'a>(values: impl Iterator<Item = &'a f64>) -> (f64, f64, f64) {
    let finite: Vec<f64> = values.copied().filter(|v| v.is_finite()).collect();
    let scale = finite.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return (0.0, 1.0, 1.0);
    }
    let lo = finite.iter().fold(0.0f64, |m, v| m.min(v / scale));
    let hi = finite.iter().fold(0.0f64, |m, v| m.max(v / scale));
    (lo, hi, scale)
}

/// The y axis of a series: its range widened to whole steps of a round
/// size (1, 2 or 5 × a power of ten) and the ticks at each step, at most
/// seven, each as (scaled value, value); the range in the scaled values
/// of [`domain`]. Falls back to the range as
/// it is, ticked at its ends and middle, when the round range would not be
/// finite.
fn y_axis(lo: f64, hi: f64, scale: f64) -> (f64, f64, Vec<(f64, f64)>) {
    let mid = (lo + hi) / 2.0;
    let fallback = (
        lo,
        hi,
        vec![(lo, lo * scale), (mid, mid * scale), (hi, hi * scale)],
    );
    let (lo_v, hi_v) = (lo * scale, hi * scale);
    let raw = (hi_v - lo_v) / 4.0;
    if !(raw.is_finite() && raw > 0.0) {
        return fallback;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        r if r <= 1.0 => 1.0,
        r if r <= 2.0 => 2.0,
        r if r <= 5.0 => 5.0,
        _ => 10.0,
    } * magnitude;
    let (first, last) = ((lo_v / step).floor(), (hi_v / step).ceil());
    let (lo2, hi2) = (first * step / scale, last * step / scale);
    let count = last - first;
    if !(lo2.is_finite() && hi2.is_finite() && hi2 > lo2 && (1.0..=6.0).contains(&count)) {
        return fallback;
    }
    let ticks = (0..=count as i64)
        .map(|k| {
            let v = (first + k as f64) * step;
            (v / scale, v)
        })
        .collect();
    (lo2, hi2, ticks)
}

/// Where `t` (0 to 1) falls between `a` and `b`.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

/// The caption of a chart: its title, and the unit when there is one.
fn caption(title: &str, unit: &str) -> Markup {
    html! {
        figcaption {
            (title)
            @if !unit.is_empty() { span.meta { " (" (unit) ")" } }
        }
    }
}

/// Horizontal bars, one row per item: its label, a bar from zero (to the
/// left for a negative value, in another colour) and its value with
/// `unit` (`$` or `USD` is written before the number). A value that is
/// not finite gets no bar and "n/a". No items: "no data".
pub fn bars(title: &str, unit: &str, items: &[(String, f64)]) -> Markup {
    if items.is_empty() {
        return empty(title, unit);
    }
    let (lo, hi, scale) = domain(items.iter().map(|(_, v)| v));
    let x0 = LABEL_W + 8.0;
    let x1 = WIDTH - VALUE_W - 8.0;
    let at = |v: f64| lerp(x0, x1, (v - lo) / (hi - lo));
    let zero = at(0.0);
    let height = ROW * items.len() as f64 + 8.0;
    html! {
        figure.chart data-chart="bars" {
            (caption(title, unit))
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (c(WIDTH)) " " (c(height)) }
                role="img" aria-label=(title) data-bars=(items.len()) {
                @for (i, (label, v)) in items.iter().enumerate() {
                    @let y = 4.0 + ROW * i as f64;
                    @let end = if v.is_finite() { at(v / scale) } else { zero };
                    @let (left, width) = (zero.min(end), (end - zero).abs());
                    g.bar.neg[*v < 0.0] data-label=(label) data-value=(exact(*v)) {
                        title { (label) ": " (with_unit(*v, unit)) }
                        text x=(c(LABEL_W)) y=(c(y + ROW * 0.62)) text-anchor="end" { (short(label)) }
                        @if v.is_finite() {
                            rect x=(c(left)) y=(c(y + 4.0)) width=(c(width.max(0.5))) height=(c(ROW - 8.0))
                                fill=(if *v < 0.0 { FILL_NEG } else { FILL }) {}
                        }
                        text x=(c(WIDTH - 4.0)) y=(c(y + ROW * 0.62)) text-anchor="end" { (with_unit(*v, unit)) }
                    }
                }
                line x1=(c(zero)) x2=(c(zero)) y1="2" y2=(c(height - 2.0)) stroke="#616e7c" stroke-width="1" {}
            }
        }
    }
}

/// A chart without data.
fn empty(title: &str, unit: &str) -> Markup {
    html! {
        figure.chart data-chart="empty" {
            (caption(title, unit))
            p.empty { "no data" }
        }
    }
}

/// A time series: `points` in order, each an x label (shown sparsely: at
/// most six, evenly spaced, the first and the last among them) and a value
/// in `unit`. The y axis holds zero and is ticked at round steps; a point that is not finite breaks the
/// line. Up to 90 points get a dot each with its label and value as a
/// tooltip; the peak is named under the chart. No points: "no data".
pub fn line(title: &str, unit: &str, points: &[(String, f64)]) -> Markup {
    if points.is_empty() {
        return empty(title, unit);
    }
    let (lo, hi, scale) = domain(points.iter().map(|(_, v)| v));
    let (lo, hi, y_ticks) = y_axis(lo, hi, scale);
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (TOP + PLOT_H, TOP);
    let n = points.len();
    let x_at = |i: usize| {
        if n == 1 {
            (x0 + x1) / 2.0
        } else {
            lerp(x0, x1, i as f64 / (n - 1) as f64)
        }
    };
    let y_at = |v: f64| lerp(y0, y1, (v / scale - lo) / (hi - lo));
    // Runs of finite points, each one polyline.
    let mut runs: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, (_, v)) in points.iter().enumerate() {
        if v.is_finite() {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(&format!("{},{}", c(x_at(i)), c(y_at(*v))));
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    let finite: Vec<(usize, f64)> = points
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| v.is_finite())
        .map(|(i, (_, v))| (i, *v))
        .collect();
    let peak = finite
        .iter()
        .copied()
        .fold(None::<(usize, f64)>, |best, (i, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        });
    let sum: f64 = finite.iter().map(|(_, v)| v).sum();
    // Evenly spaced over the series, the first and the last among them.
    let shown = n.min(X_LABELS);
    let mut x_labels: Vec<usize> = (0..shown)
        .map(|k| {
            if shown == 1 {
                0
            } else {
                (k * (n - 1) + (shown - 1) / 2) / (shown - 1)
            }
        })
        .collect();
    x_labels.dedup();
    let height = TOP + PLOT_H + BOTTOM;
    html! {
        figure.chart data-chart="line" {
            (caption(title, unit))
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (c(WIDTH)) " " (c(height)) }
                role="img" aria-label=(title) data-points=(n) data-sum=(exact(sum))
                data-max=(exact(peak.map_or(f64::NAN, |(_, v)| v))) {
                @for (t, value) in y_ticks {
                    @let y = lerp(y0, y1, (t - lo) / (hi - lo));
                    line x1=(c(x0)) x2=(c(x1)) y1=(c(y)) y2=(c(y)) stroke="#d9e2ec" stroke-width="1" {}
                    text x=(c(x0 - 6.0)) y=(c(y + 4.0)) text-anchor="end" { (format_value(value)) }
                }
                @for i in &x_labels {
                    @let anchor = if *i == 0 && n > 1 { "start" } else if *i == n - 1 && n > 1 { "end" } else { "middle" };
                    text x=(c(x_at(*i))) y=(c(y0 + 18.0)) text-anchor=(anchor) { (points[*i].0) }
                }
                line x1=(c(x0)) x2=(c(x1)) y1=(c(y0)) y2=(c(y0)) stroke="#616e7c" stroke-width="1" {}
                @for run in &runs {
                    polyline points=(run) fill="none" stroke=(FILL) stroke-width="1.5" stroke-linejoin="round" {}
                }
                @if n <= DOTS_UP_TO {
                    @for (i, v) in &finite {
                        circle cx=(c(x_at(*i))) cy=(c(y_at(*v))) r="2.5" fill=(FILL) {
                            title { (points[*i].0) ": " (with_unit(*v, unit)) }
                        }
                    }
                }
            }
            @if let Some((i, v)) = peak {
                p.note { "peak " (with_unit(v, unit)) " at " (points[i].0) "; " (n) " points" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::testing::well_formed;

    fn items(values: &[f64]) -> Vec<(String, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("item {i}"), *v))
            .collect()
    }

    /// The `x` and `width` of every bar's `rect`.
    fn rects(svg: &str) -> Vec<(f64, f64)> {
        svg.split("<rect ")
            .skip(1)
            .map(|r| {
                let attr = |name: &str| -> f64 {
                    let key = format!("{name}=\"");
                    let start = r.find(&key).unwrap() + key.len();
                    r[start..].split('"').next().unwrap().parse().unwrap()
                };
                (attr("x"), attr("width"))
            })
            .collect()
    }

    #[test]
    fn numbers_are_grouped_and_never_odd() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(-0.0), "0");
        assert_eq!(format_value(1234.5), "1,234.50");
        assert_eq!(format_value(-1234567.0), "-1,234,567");
        assert_eq!(format_value(0.004), "0.004");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(-0.00001), "-1.000e-5");
        assert_eq!(format_value(1e300), "1.000e300");
        assert_eq!(format_value(f64::NAN), "n/a");
        assert_eq!(format_value(f64::NEG_INFINITY), "n/a");
        assert_eq!(format_value(999.999), "1,000.00");
        assert_eq!(with_unit(-12.5, "$"), "-$12.50");
        assert_eq!(with_unit(3.0, "requests"), "3 requests");
        assert_eq!(with_unit(f64::NAN, "$"), "n/a");
    }

    #[test]
    fn bars_draw_negatives_left_of_zero() {
        let out = bars("Savings", "$", &items(&[100.0, -50.0, 25.0])).into_string();
        well_formed(&out).unwrap();
        let r = rects(&out);
        assert_eq!(r.len(), 3);
        let zero_pos = r[0].0;
        // The positive bars start at zero; the negative one ends there.
        assert!((r[2].0 - zero_pos).abs() < 0.11, "{r:?}");
        assert!((r[1].0 + r[1].1 - zero_pos).abs() < 0.11, "{r:?}");
        assert!(r[1].0 < zero_pos);
        // Lengths are proportional: 100 is twice 50, four times 25.
        assert!((r[0].1 / r[1].1 - 2.0).abs() < 0.01, "{r:?}");
        assert!((r[0].1 / r[2].1 - 4.0).abs() < 0.01, "{r:?}");
        assert!(out.contains(FILL_NEG));
        assert!(out.contains(r#"data-value="-50""#));
        assert!(out.contains("-$50"));
        assert!(out.contains(r#"class="bar neg""#));
    }

    #[test]
    fn all_negative_bars_end_at_zero_on_the_right() {
        let out = bars("Losses", "", &items(&[-1.0, -3.0])).into_string();
        well_formed(&out).unwrap();
        let r = rects(&out);
        let right = WIDTH - VALUE_W - 8.0;
        for (x, w) in &r {
            assert!((x + w - right).abs() < 0.11, "{r:?}");
        }
        assert!((r[1].1 / r[0].1 - 3.0).abs() < 0.01);
    }

    #[test]
    fn odd_values_never_panic_and_stay_well_formed() {
        let odd = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            0.0,
            -0.0,
            1e-300,
        ];
        for values in [
            &odd[..],
            &[f64::NAN][..],
            &[0.0, 0.0][..],
            &[f64::MAX, f64::MAX][..],
            &[5.0][..],
        ] {
            let b = bars("b", "$", &items(values)).into_string();
            well_formed(&b).unwrap_or_else(|e| panic!("{e}: {b}"));
            assert!(!b.contains("NaN") && !b.contains("inf"), "{b}");
            let l = line("l", "requests", &items(values)).into_string();
            well_formed(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(!l.contains("NaN") && !l.contains("inf\""), "{l}");
        }
        let huge = bars("b", "", &items(&[f64::MAX, -f64::MAX])).into_string();
        let r = rects(&huge);
        assert!((r[0].1 - r[1].1).abs() < 0.11, "{r:?}");
        assert!(bars("b", "", &items(&[f64::NAN]))
            .into_string()
            .contains("n/a"));
    }

    #[test]
    fn empty_input_says_no_data() {
        for out in [bars("Cost", "$", &[]), line("Requests", "requests", &[])] {
            let out = out.into_string();
            assert!(out.contains("no data"), "{out}");
            assert!(!out.contains("<svg"));
            well_formed(&out).unwrap();
        }
    }

    #[test]
    fn labels_are_escaped_and_shortened() {
        let label = "<script>alert(\"x\")</script> & 'q' ☃ 𝔘 \u{202e}".to_string();
        let long = "m".repeat(100);
        let out = bars("<t>", "\"u\"", &[(label, 1.0), (long.clone(), 2.0)]).into_string();
        well_formed(&out).unwrap();
        assert!(!out.contains("<script>") && !out.contains("<t>"));
        assert!(out
            .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'q' ☃ 𝔘 \u{202e}"));
        assert!(out.contains(&format!("{}…", "m".repeat(LABEL_CHARS - 1))));
        // The whole label stays in the tooltip and the data attribute.
        assert!(out.contains(&format!("data-label=\"{long}\"")));
        let l = line("t", "", &[("<x>".into(), 1.0)]).into_string();
        well_formed(&l).unwrap();
        assert!(l.contains("&lt;x&gt;") && !l.contains("<x>"));
    }

    #[test]
    fn line_has_sparse_labels_a_peak_and_sums() {
        let points: Vec<(String, f64)> = (0..1500)
            .map(|i| (format!("t{i}"), if i == 700 { 50.0 } else { 1.0 }))
            .collect();
        let out = line("Requests per minute", "requests", &points).into_string();
        well_formed(&out).unwrap();
        assert!(out.contains(r#"data-points="1500""#));
        assert!(out.contains(r#"data-sum="1549""#));
        assert!(out.contains(r#"data-max="50""#));
        assert!(out.contains("peak 50 requests at t700"));
        let labels = out.matches(">t").count();
        assert_eq!(labels, X_LABELS);
        assert!(out.contains(">t0<") && out.contains(">t1499<"));
        // No dot per point on a long series; one polyline.
        assert!(!out.contains("<circle"));
        assert_eq!(out.matches("<polyline").count(), 1);
        // A gap breaks the line; a short series has dots with tooltips.
        let gap = line("g", "", &items(&[1.0, 2.0, f64::NAN, 3.0, 4.0])).into_string();
        assert_eq!(gap.matches("<polyline").count(), 2);
        assert_eq!(gap.matches("<circle").count(), 4);
        assert!(gap.contains("<title>item 3: 3</title>"));
        // The y axis is ticked at round steps, up to a round maximum.
        let ticks = line("r", "", &items(&[3.0, 29.0])).into_string();
        for t in [">0<", ">10<", ">20<", ">30<"] {
            assert!(ticks.contains(t), "{t}: {ticks}");
        }
        assert_eq!(y_axis(0.0, 1.0, 29.0).2.len(), 4);
        let values: Vec<f64> = y_axis(-0.5, 1.0, 2.0).2.iter().map(|t| t.1).collect();
        assert_eq!(values, vec![-1.0, 0.0, 1.0, 2.0]);
        assert_eq!(y_axis(0.0, 1.0, f64::MAX).2.len(), 3);
        // One point is drawn in the middle.
        let one = line("o", "", &items(&[7.0])).into_string();
        well_formed(&one).unwrap();
        assert!(one.contains(&format!("cx=\"{}\"", c((LEFT + WIDTH - RIGHT) / 2.0))));
    }
}
