//! The agents' outputs, as types: what each phase produces and what the
//! phases after it (and the supervisor) read. Their JSON is the stored
//! shape of `phase_outputs` and of a run's result, unchanged from the
//! untyped agents that came before (an output a previous build wrote reads
//! into these types, so runs in flight during an upgrade complete).
//!
//! Every type reads leniently: a field that is absent takes its default (as
//! the untyped agents did), a field of the wrong type is a permanent error
//! naming it ([`crate::pipeline::agent::parse_output`]). Tool results
//! (telemetry, costs, the catalog, the validation) stay JSON: they are the
//! tools' output, described by the tools' schemas.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{model::Phase, pipeline::agent::PhaseOutput};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Cut cost, latency, … of named workloads: the full pipeline.
    Optimization,
    /// Describe a workload from its telemetry. The default for an output
    /// that does not say (as the untyped routing treated it: not a
    /// question, not an optimization).
    #[default]
    Analysis,
    /// A question answered without data, or a request too vague to act on
    /// (then with a clarifying question).
    Question,
}

impl Category {
    /// The name, as in the stored output.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Optimization => "optimization",
            Category::Analysis => "analysis",
            Category::Question => "question",
        }
    }
}

/// A goal of an optimization, in the order the request gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Spend less.
    Cost,
    /// Answer faster.
    Latency,
    /// Keep (or raise) answer quality.
    Quality,
    /// Serve more at peak.
    Throughput,
}

impl Priority {
    /// The name, as in the stored output.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Cost => "cost",
            Priority::Latency => "latency",
            Priority::Quality => "quality",
            Priority::Throughput => "throughput",
        }
    }
}

/// The hard limits a request states; `None` where it states none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Constraints {
    /// The latency the workload must stay under, ms, at `latency_percentile`.
    pub latency_slo_ms: Option<f64>,
    /// `p95` or `p99`: which percentile the SLO is on.
    pub latency_percentile: String,
    /// The cost reduction asked for, percent.
    pub target_reduction_pct: Option<f64>,
    /// The monthly spend the plan must fit, USD.
    pub monthly_budget_usd: Option<f64>,
    /// The lowest catalog quality tier a model change may go to.
    pub quality_floor: Option<u8>,
}

/// The triage phase's reading of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TriageOutput {
    /// One line saying what netra will do, for people.
    pub intent: String,
    /// Which route the run takes.
    pub category: Category,
    /// The workloads named (or passed as `workload_id`).
    pub workload_ids: Vec<String>,
    /// The telemetry window to read, whole days ending at the newest
    /// request: the stated window rounded up to days, or 30 when none is
    /// stated.
    pub time_range_days: i64,
    /// The window the request states, hours (`last 2 hours`: 2, `past
    /// week`: 168); `None` when it states none. A window that is not whole
    /// days is read as `time_range_days`, and `unclear` says so.
    pub window_hours: Option<f64>,
    /// The goals, in the request's order; they rank the recommendations.
    pub priorities: Vec<Priority>,
    /// The limits the recommendations are filtered by.
    pub constraints: Constraints,
    /// What the data phase should fetch.
    pub data_needs: Vec<String>,
    /// The topic of a question netra answers without data.
    pub topic: Option<String>,
    /// True when the request cannot be acted on without asking.
    pub ambiguous: bool,
    /// What to ask, when ambiguous.
    pub clarifying_question: Option<String>,
    /// Parts of the request that were read but not applied, and why.
    pub unclear: Vec<String>,
    /// How sure the reading is, 0 to 1 (lower for an assumed goal, a
    /// misspelling, a note in `unclear`; low when a question is asked).
    pub confidence: f64,
    /// The words of the request each field came from, by field name
    /// (`workload_ids`, `priorities.cost`, `constraints.latency_slo_ms`,
    /// `window`, `guards.quality`, `category`, `topic`, `language`).
    pub sources: BTreeMap<String, Vec<String>>,
    /// How the language model took part, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelNote>,
}

/// How a language model took part in a phase: which model, what the call
/// ledger did, and what the grounding rules dropped or replaced. Absent
/// when no model is configured.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelNote {
    /// The provider (`openai-compatible`).
    pub provider: String,
    /// The model asked.
    pub model: String,
    /// The system prompt's version.
    pub prompt_version: String,
    /// The ledger rows of the phase's calls.
    pub calls: Vec<i64>,
    /// True when every answer came from the ledger (nothing was paid).
    pub reused: bool,
    /// Prompt tokens of the answers used.
    pub input_tokens: u32,
    /// Answer tokens of the answers used.
    pub output_tokens: u32,
    /// Time the calls took, ms.
    pub latency_ms: f64,
    /// True when the model's answer is what the output holds.
    pub used: bool,
    /// Why the embedded analyst decided instead, when it did.
    pub fallback: Option<String>,
    /// What the grounding rules dropped from the model's answer, and why.
    pub dropped: Vec<String>,
    /// Workload ids the model wrote that were matched to known ones.
    pub did_you_mean: Vec<String>,
}

impl Default for TriageOutput {
    fn default() -> Self {
        TriageOutput {
            intent: String::new(),
            category: Category::default(),
            workload_ids: Vec::new(),
            time_range_days: 30,
            window_hours: None,
            priorities: Vec::new(),
            constraints: Constraints::default(),
            data_needs: Vec::new(),
            topic: None,
            ambiguous: false,
            clarifying_question: None,
            unclear: Vec::new(),
            confidence: 0.0,
            sources: BTreeMap::new(),
            model: None,
        }
    }
}

impl PhaseOutput for TriageOutput {
    const PHASE: Phase = Phase::Triage;
}

/// Whether the telemetry supports an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sufficiency {
    /// Enough for every figure.
    Sufficient,
    /// Enough to go on; the gaps are reported as caveats. The default for
    /// an output that does not say.
    #[default]
    Partial,
    /// Something is missing; the run ends `needs_input` and asks for it.
    Insufficient,
}

impl Sufficiency {
    /// The name, as in the stored output.
    pub fn as_str(self) -> &'static str {
        match self {
            Sufficiency::Sufficient => "sufficient",
            Sufficiency::Partial => "partial",
            Sufficiency::Insufficient => "insufficient",
        }
    }
}

/// The tool results of one workload that has data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkloadData {
    /// The workload.
    pub workload_id: String,
    /// `workload_metrics`: requests, tokens, latency, rate.
    pub metrics: Value,
    /// `cost_breakdown`: cost per model.
    pub cost: Value,
    /// `performance`: latency and output length per model.
    pub performance: Value,
}

/// One tool call of the data phase, for the record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolCall {
    /// The tool's name.
    pub tool: String,
    /// The parameters it was called with.
    pub parameters: Value,
}

/// The data phase's tool results and its rating of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataOutput {
    /// Whether the data supports an answer.
    pub sufficiency: Sufficiency,
    /// What must be supplied before an answer (insufficient).
    pub missing: Vec<String>,
    /// Gaps that weaken the figures (partial).
    pub caveats: Vec<String>,
    /// The window read, days.
    pub window_days: i64,
    /// The workloads with data.
    pub workloads: Vec<WorkloadData>,
    /// The catalog the figures are computed from, kept so a replay prices
    /// the same way (absent when no tool ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Value>,
    /// The tool calls made (absent when none was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools_called: Option<Vec<ToolCall>>,
}

impl Default for DataOutput {
    fn default() -> Self {
        DataOutput {
            sufficiency: Sufficiency::default(),
            missing: Vec::new(),
            caveats: Vec::new(),
            window_days: 30,
            workloads: Vec::new(),
            catalog: None,
            tools_called: None,
        }
    }
}

impl PhaseOutput for DataOutput {
    const PHASE: Phase = Phase::Data;
}

/// One recommendation: the figures every kind has, and the fields of its
/// kind (`from_model`/`to_model`, `cap`, `share`, …) in `detail`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Recommendation {
    /// The kind, one of [`crate::agents::optimization::goals::KINDS`]:
    /// `model_routing`, `model_right_sizing`, `self_hosting`,
    /// `max_output_tokens`, `prompt_trimming`, `prompt_caching`,
    /// `batch_processing`, `faster_model`, `streaming`,
    /// `capacity_for_peaks`, `model_upgrade`, `quality_comparison` or
    /// `self_hosted_capacity`. A model change has `shadow_evaluation` and
    /// `risk_reason` among its fields.
    pub kind: String,
    /// The workload it applies to.
    pub workload_id: String,
    /// One line, for people.
    pub title: String,
    /// Expected saving per 30-day month, USD.
    pub monthly_savings_usd: f64,
    /// Expected change of latency, ms (negative: faster).
    pub latency_impact_ms: f64,
    /// `low`, `medium` or `high`.
    pub risk: String,
    /// `high`, `medium` or `low`: how well the data supports the figures.
    pub confidence: String,
    /// The numbers the figures are computed from.
    pub figures: Value,
    /// How the figures were computed, in words.
    pub basis: String,
    /// The fields of its kind.
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}

impl Recommendation {
    /// A field of its kind (`to_model`, `cap`, …); null if it has none.
    pub fn field(&self, name: &str) -> &Value {
        self.detail.get(name).unwrap_or(&Value::Null)
    }

    /// A string field of its kind.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.field(name).as_str()
    }
}

/// An option left out, and why: a goal the request did not ask for, a
/// constraint, missing data, or a cheaper option that superseded it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Excluded {
    /// The recommendation kind (or `all`, `token_options` for a group).
    pub kind: String,
    /// The workload.
    pub workload_id: String,
    /// The model it was considered for (empty when it is left out for the
    /// whole workload).
    pub model: String,
    /// Why it was left out.
    pub reason: String,
}

/// The optimization phase's plan.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizationOutput {
    /// The approach, in words.
    pub strategy: String,
    /// The goals the recommendations are ranked by.
    pub priorities: Vec<Priority>,
    /// Spend now, per 30-day month, USD.
    pub current_monthly_cost_usd: f64,
    /// The recommendations kept, ranked.
    pub recommendations: Vec<Recommendation>,
    /// The options left out ("left out" in the report), each with the
    /// reason.
    pub excluded: Vec<Excluded>,
    /// The sum of the kept savings, USD per month.
    pub total_monthly_savings_usd: f64,
    /// Spend after them, USD per month.
    pub projected_monthly_cost_usd: f64,
    /// The saving as a share of today's spend, percent.
    pub savings_pct: f64,
    /// The reduction asked for, percent.
    pub target_reduction_pct: Option<f64>,
    /// Whether the plan reaches it (none asked: none).
    pub meets_target: Option<bool>,
    /// The budget asked for, USD per month.
    pub monthly_budget_usd: Option<f64>,
    /// Whether the plan fits it.
    pub meets_budget: Option<bool>,
    /// The version of the catalog the prices come from.
    pub catalog_version: String,
    /// What the figures assume, in words.
    pub assumptions: Vec<String>,
}

impl PhaseOutput for OptimizationOutput {
    const PHASE: Phase = Phase::Optimization;
}

/// The steps of one recommendation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanItem {
    /// The recommendation's title.
    pub recommendation: String,
    /// Its kind.
    pub kind: String,
    /// Its workload.
    pub workload_id: String,
    /// What to do, in order.
    pub steps: Vec<String>,
}

/// The actions phase's plan and the supply configuration it adds up to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionsOutput {
    /// Steps per recommendation, in the recommendations' order.
    pub plan: Vec<PlanItem>,
    /// Compute, storage, network and services after the changes.
    pub supply_configuration: Value,
    /// The figures the configuration is validated with.
    pub expected: Value,
    /// Spend after the changes, USD per month (from the optimization).
    pub projected_monthly_cost_usd: f64,
    /// The `validate_supply_config` tool's verdict: `valid` and `checks`.
    pub validation: Value,
}

impl PhaseOutput for ActionsOutput {
    const PHASE: Phase = Phase::Actions;
}

/// The report: the run's result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportOutput {
    /// A few sentences: the answer.
    pub executive_summary: String,
    /// The optimization's recommendations (none when it did not run).
    pub recommendations: Option<Vec<Recommendation>>,
    /// The actions' plan (none when it did not run).
    pub action_plan: Option<Vec<PlanItem>>,
    /// Per-workload figures, unrounded.
    pub metrics: Vec<Value>,
    /// What to do next.
    pub next_steps: Vec<String>,
    /// True when the run ends `needs_input`.
    pub needs_input: bool,
    /// What triage asked, for an ambiguous request.
    pub clarifying_question: Option<String>,
    /// The gaps in the data and the request.
    pub caveats: Vec<String>,
    /// Spend now, USD per month (optimization only).
    pub current_monthly_cost_usd: Option<f64>,
    /// The saving, USD per month (optimization only).
    pub total_monthly_savings_usd: Option<f64>,
    /// The actions' configuration (actions only).
    pub supply_configuration: Option<Value>,
    /// Its validation (actions only).
    pub validation: Option<Value>,
    /// The whole report as Markdown: what goes into the thread.
    pub markdown: String,
    /// Why each recommendation is worth doing, in the model's words (only
    /// when a model wrote them and every number in them is grounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<Vec<String>>,
    /// How the language model took part, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelNote>,
    /// The run's model calls per phase up to this report (calls, ledger
    /// hits, tokens, cost), when a model is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_usage: Option<Value>,
}

impl PhaseOutput for ReportOutput {
    const PHASE: Phase = Phase::Reporting;
}
