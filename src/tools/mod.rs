//! Tools: typed, validated functions the agents call to read the store.
//!
//! Each tool has a name, a description and a JSON-Schema parameter schema
//! (the same shape an LLM function-calling API takes), and a handler that
//! receives parameters only after they passed [`schema::validate`]. The
//! [`Registry`] is the dispatcher: an unknown tool or invalid parameters is a
//! [`PhaseError::permanent`] naming the tool and the field. A tool sees only
//! the tenant of the run that calls it ([`ToolContext::tenant`]); tenant is
//! never a parameter.

pub mod catalog;
pub mod schema;
pub mod supply;
pub mod telemetry;

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use sqlx::PgPool;
use tracing::Instrument;

use crate::{error::PhaseError, memo::Memo, pipeline::agent::AgentContext, telemetry::spans};

/// What a tool may use: the store, scoped to one tenant.
#[derive(Clone)]
pub struct ToolContext {
    /// The store.
    pub pool: PgPool,
    /// The run's tenant; every query a tool makes is filtered by it.
    pub tenant: String,
    /// The data version the phase started at; results are memoized under it
    /// (none: nothing is memoized).
    pub data_version: Option<i64>,
    /// Memoized results (see [`crate::memo`]).
    pub memo: Arc<Memo>,
}

impl ToolContext {
    /// The tools' view of an agent's context, for the run's tenant.
    pub fn for_agent(ctx: &AgentContext, tenant: &str) -> Self {
        ToolContext {
            pool: ctx.pool.clone(),
            tenant: tenant.to_string(),
            data_version: ctx.data_version,
            memo: ctx.memo.clone(),
        }
    }

    /// A context without memo (tests, one-off calls).
    pub fn unmemoized(pool: PgPool, tenant: &str) -> Self {
        ToolContext {
            pool,
            tenant: tenant.to_string(),
            data_version: None,
            memo: Arc::new(Memo::default()),
        }
    }
}

/// A tool's implementation: validated parameters in, JSON out.
pub type Handler = for<'a> fn(&'a ToolContext, Value) -> BoxFuture<'a, Result<Value, PhaseError>>;

/// One tool.
#[derive(Clone)]
pub struct Tool {
    /// Unique name (`workload_metrics`).
    pub name: &'static str,
    /// What it returns, for people and LLMs.
    pub description: &'static str,
    /// JSON Schema of its parameters.
    pub parameters: Value,
    /// The implementation.
    pub handler: Handler,
}

/// The tool registry and dispatcher.
#[derive(Clone, Default)]
pub struct Registry {
    tools: BTreeMap<&'static str, Tool>,
}

impl Registry {
    /// Adds (or replaces) a tool.
    pub fn with(mut self, tool: Tool) -> Self {
        self.tools.insert(tool.name, tool);
        self
    }

    /// netra's tools.
    pub fn standard() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let mut r = Registry::default();
            for t in telemetry::tools()
                .into_iter()
                .chain(catalog::tools())
                .chain(supply::tools())
            {
                r = r.with(t);
            }
            r
        })
    }

    /// Names of the registered tools.
    pub fn names(&self) -> Vec<&'static str> {
        self.tools.keys().copied().collect()
    }

    /// The tool descriptions as function specs (name, description, parameters).
    pub fn specs(&self) -> Vec<Value> {
        self.tools
            .values()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect()
    }

    /// Validates `params` against the tool's schema and runs it; a result
    /// computed at the same data version for the same tenant and parameters
    /// is reused instead (tools only read, and only the versioned data),
    /// except for the workload `netra-llm` ([`reads_ledger`]).
    /// Each call is a span, `execute_tool <name>` (see
    /// [`crate::telemetry::spans::tool_call`]).
    pub async fn call(
        &self,
        ctx: &ToolContext,
        name: &str,
        params: Value,
    ) -> Result<Value, PhaseError> {
        let span = spans::tool_call(name, &ctx.tenant);
        let result = self
            .call_unobserved(ctx, name, params)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            spans::failed(&span, e.class.as_str());
        }
        result
    }

    async fn call_unobserved(
        &self,
        ctx: &ToolContext,
        name: &str,
        params: Value,
    ) -> Result<Value, PhaseError> {
        let tool = self.tools.get(name).ok_or_else(|| {
            PhaseError::permanent(format!(
                "unknown tool `{name}` (known: {})",
                self.names().join(", ")
            ))
        })?;
        schema::validate(&tool.parameters, &params).map_err(|e| {
            let field = if e.field.is_empty() {
                "parameters".to_string()
            } else {
                format!("parameter `{}`", e.field)
            };
            PhaseError::permanent(format!(
                "invalid parameters for tool `{name}`: {field} {}",
                e.reason
            ))
        })?;
        let memo = |state: &'static str| {
            tracing::Span::current().record("netra.memo", state);
        };
        let version = match ctx.data_version {
            Some(v) if ctx.memo.enabled() && !reads_ledger(&params) => v,
            _ => {
                memo("off");
                return (tool.handler)(ctx, params).await;
            }
        };
        if let Some(hit) = ctx
            .memo
            .get(&Memo::key(version, &ctx.tenant, name, &params))
        {
            memo("hit");
            return Ok(Value::clone(&hit));
        }
        memo("miss");
        // Stored under the version read before and after computing it.
        let before = crate::memo::current_version(&ctx.pool).await;
        let key = before.map(|v| Memo::key(v, &ctx.tenant, name, &params));
        let result = (tool.handler)(ctx, params).await?;
        if let Some(key) = key {
            if crate::memo::current_version(&ctx.pool).await == before {
                ctx.memo.put(key, Arc::new(result.clone()));
            }
        }
        Ok(result)
    }
}

/// True when a call reads workload `netra-llm`, netra's own model calls (the
/// call ledger, [`crate::store::ledger::WORKLOAD`]). The ledger is not
/// versioned data: a write to it does not bump the data version, since every
/// model call would then update that one row (serializing the calls of all
/// workers) and drop every tenant's memoized results. A result for
/// `netra-llm` memoized at a version would therefore go on being served
/// after later calls were recorded; so these are never memoized, and each
/// call reads the ledger as it is then.
pub fn reads_ledger(params: &Value) -> bool {
    params.get("workload_id").and_then(Value::as_str) == Some(crate::store::ledger::WORKLOAD)
}

/// Maps a store error to a phase error: an outage is worth retrying, a
/// failing query is not.
pub(crate) fn db_err(tool: &str, e: crate::store::Error) -> PhaseError {
    if e.is_outage() {
        PhaseError::transient(format!("tool `{tool}`: database unavailable ({e})"))
    } else {
        PhaseError::permanent(format!("tool `{tool}`: query failed: {e}"))
    }
}

/// Decodes validated parameters into the tool's typed struct.
pub(crate) fn params<T: serde::de::DeserializeOwned>(
    tool: &str,
    v: Value,
) -> Result<T, PhaseError> {
    serde_json::from_value(v)
        .map_err(|e| PhaseError::permanent(format!("invalid parameters for tool `{tool}`: {e}")))
}
