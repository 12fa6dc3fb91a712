//! Reporting prose from the language model, grounded.
//!
//! The model may write the executive summary and one sentence per
//! recommendation saying why it is worth doing. The figures never come from
//! it: every number in its prose must appear in the computed analysis (as
//! written there, or rounded to the digits the prose shows,
//! [`crate::llm::grounding::ungrounded`]). Prose with any other number is
//! replaced by the template, and the replacement is recorded in the
//! report's `model` note; so is a model that could not be reached.

use serde::Deserialize;
use serde_json::{json, Value};

use super::outputs::{ModelNote, ReportOutput};
use crate::{
    error::PhaseError,
    llm::{
        client::ModelClient,
        grounding::{numbers_of, ungrounded},
        prompts, ChatMessage, OutputSchema,
    },
    model::Phase,
    pipeline::agent::{AgentContext, PhaseInput},
};

/// The model's prose, as the schema has it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Prose {
    executive_summary: String,
    why: Vec<String>,
}

/// The JSON schema of [`Prose`].
fn schema() -> OutputSchema {
    // Built once: every request shares it (thousands of calls in flight).
    static SCHEMA: std::sync::LazyLock<OutputSchema> = std::sync::LazyLock::new(build_schema);
    SCHEMA.clone()
}

fn build_schema() -> OutputSchema {
    OutputSchema {
        name: "report_prose".into(),
        schema: std::sync::Arc::new(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["executive_summary", "why"],
            "properties": {
                "executive_summary": {"type": "string", "maxLength": 600},
                "why": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 240}},
            },
        })),
    }
}

/// What the model is shown: the computed figures it may use, and nothing
/// it could mistake for one.
fn facts(report: &ReportOutput) -> Value {
    let recs: Vec<Value> = report
        .recommendations
        .iter()
        .flatten()
        .map(|r| {
            json!({
                "title": r.title,
                "monthly_savings_usd": r.monthly_savings_usd,
                "latency_impact_ms": r.latency_impact_ms,
                "risk": r.risk,
                "confidence": r.confidence,
            })
        })
        .collect();
    json!({
        "template_summary": report.executive_summary,
        "current_monthly_cost_usd": report.current_monthly_cost_usd,
        "total_monthly_savings_usd": report.total_monthly_savings_usd,
        "recommendations": recs,
        "caveats": report.caveats,
    })
}

/// Rewrites the summary (and adds the reasons) with the model's prose
/// where it is grounded; leaves the template otherwise. Only reports with
/// recommendations get prose: a question, a clarification or a request for
/// data is answered by the template alone.
pub async fn rewrite(
    ctx: &AgentContext,
    model: &ModelClient,
    input: &PhaseInput,
    mut report: ReportOutput,
) -> Result<ReportOutput, PhaseError> {
    if report.needs_input || report.recommendations.as_ref().is_none_or(Vec::is_empty) {
        return Ok(report);
    }
    let facts = facts(&report);
    let scope = ctx.call_scope(input, Phase::Reporting);
    let request = model.request(
        &prompts::REPORTING,
        vec![ChatMessage::new(
            "user",
            format!(
                "The analysis:\n{}",
                serde_json::to_string_pretty(&facts).unwrap_or_default()
            ),
        )],
        Some(schema()),
    );
    let mut note = ModelNote {
        provider: "openai-compatible".into(),
        model: model.config().model.clone(),
        prompt_version: prompts::REPORTING.version().to_string(),
        ..ModelNote::default()
    };
    let answered = match model
        .call(&scope, "report_prose", &prompts::REPORTING, &request)
        .await
    {
        Ok(a) => a,
        Err(e) if e.may_fall_back() => {
            note.fallback = Some(format!("the template is used: {e}"));
            report.model = Some(note);
            return Ok(report);
        }
        // A rate limit or the ledger's database out: never a reason to
        // keep the template.
        Err(e) => return Err(e.into()),
    };
    note.calls.push(answered.ledger_id);
    note.reused = answered.reused;
    note.input_tokens = answered.answer.input_tokens;
    note.output_tokens = answered.answer.output_tokens;
    note.latency_ms = answered.latency_ms;
    match grounded(&answered.answer.content, &facts, &report) {
        Ok(prose) => {
            apply(&mut report, prose);
            note.used = true;
        }
        Err(why) => note.fallback = Some(format!("the template is used: {why}")),
    }
    report.model = Some(note);
    Ok(report)
}

/// The model's prose if every number in it comes from the analysis.
fn grounded(content: &str, facts: &Value, report: &ReportOutput) -> Result<Prose, String> {
    let prose: Prose = serde_json::from_str(content.trim())
        .map_err(|e| format!("the answer does not follow the schema ({e})"))?;
    if prose.executive_summary.trim().is_empty() {
        return Err("the summary is empty".into());
    }
    let mut allowed = Vec::new();
    numbers_of(facts, &mut allowed);
    let n = report.recommendations.as_ref().map_or(0, Vec::len);
    allowed.extend((1..=n).map(|i| i as f64));
    let mut invented = ungrounded(&prose.executive_summary, &allowed);
    for w in &prose.why {
        invented.extend(ungrounded(w, &allowed));
    }
    if invented.is_empty() {
        Ok(prose)
    } else {
        Err(format!(
            "the prose has numbers that are not in the analysis: {}",
            invented.join(", ")
        ))
    }
}

/// Puts accepted prose into the report and its Markdown.
fn apply(report: &mut ReportOutput, prose: Prose) {
    let summary = prose.executive_summary.trim().to_string();
    let old = format!("## Executive summary\n\n{}\n", report.executive_summary);
    let new = format!("## Executive summary\n\n{summary}\n");
    report.markdown = report.markdown.replacen(&old, &new, 1);
    report.executive_summary = summary;
    let reasons: Vec<String> = prose
        .why
        .iter()
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    if !reasons.is_empty() {
        let mut why = String::from("\nWhy:\n\n");
        for (i, r) in reasons.iter().enumerate() {
            why.push_str(&format!("{}. {r}\n", i + 1));
        }
        let anchor = "\nHow each figure was computed:\n";
        if report.markdown.contains(anchor) {
            report.markdown = report
                .markdown
                .replacen(anchor, &format!("{why}{anchor}"), 1);
        }
        report.why = Some(reasons);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::outputs::Recommendation;

    fn report() -> ReportOutput {
        ReportOutput {
            executive_summary: "Current spend is $450.00 per month.".into(),
            recommendations: Some(vec![Recommendation {
                title: "Route traffic to gpt-4o-mini".into(),
                monthly_savings_usd: 304.56,
                ..Recommendation::default()
            }]),
            current_monthly_cost_usd: Some(450.0),
            total_monthly_savings_usd: Some(304.56),
            markdown: "# r\n\n## Executive summary\n\nCurrent spend is $450.00 per month.\n\n## Recommendations\n\n| x |\n\nHow each figure was computed:\n\n1. b\n".into(),
            ..ReportOutput::default()
        }
    }

    #[test]
    fn grounded_prose_replaces_the_template() {
        let mut r = report();
        let f = facts(&r);
        let content = json!({"executive_summary": "Spend of $450 a month can drop by $304.56 with 1 change.", "why": ["gpt-4o-mini answers as well for this traffic"]}).to_string();
        let prose = grounded(&content, &f, &r).unwrap();
        apply(&mut r, prose);
        assert!(r.markdown.contains("can drop by $304.56"), "{}", r.markdown);
        assert!(
            r.markdown.contains("Why:\n\n1. gpt-4o-mini answers"),
            "{}",
            r.markdown
        );
        assert_eq!(r.why.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn invented_numbers_keep_the_template() {
        let r = report();
        let f = facts(&r);
        let content =
            json!({"executive_summary": "You will save $999 (80%).", "why": []}).to_string();
        let e = grounded(&content, &f, &r).unwrap_err();
        assert!(e.contains("$999") && e.contains("80%"), "{e}");
        assert!(grounded("not json", &f, &r).is_err());
    }
}
