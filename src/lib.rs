#![warn(missing_docs, unreachable_pub)]
//! netra: an event-driven queue worker that runs a multi-agent
//! AI-workload-optimization pipeline on RabbitMQ, Postgres and Redis.
//!
//! # Layout
//! - [`app`]: starts everything in-process (used by `netra serve`, the demo,
//!   the benchmark in `bench/` and the tests).
//! - [`config`]: typed settings from `NETRA_*` variables; secrets redacted.
//! - [`broker`]: RabbitMQ connection, topology, confirmed publishing.
//! - [`store`]: Postgres, one file per table family; migrations in `migrations/`.
//!   Every SQL statement lives here, as a typed function returning rows;
//!   failures are [`store::Error`] (outage, refused data, missing row, …).
//!   It imports no pipeline, agent or API module (their shared types are in [`model`]).
//! - [`catalog`]: the supply catalog (`catalog/models.json`), loaded into
//!   Postgres (through [`store::catalog`]) and read by the tools.
//! - [`cache`]: Redis status cache and long-poll wake-ups (bounded calls).
//! - [`pipeline`]: the generic engine (intake, worker, dispatch, retry,
//!   consumer loop, reconnecting service). Knows no agent by name. It
//!   decides what an attempt's effect writes and publishes
//!   ([`pipeline::effects`]); the store writes the rows it is given.
//! - [`agents`]: triage, data, optimization, actions, reporting, each with
//!   a typed output ([`agents::outputs`]), and the supervisor that routes
//!   between them ([`agents::supervisor`]).
//! - [`tools`]: typed, schema-validated functions the agents call (telemetry
//!   metrics, cost, performance, catalog, supply-configuration validation).
//! - [`api`]: the HTTP API. [`cli`]: the `netra` command line.
//! - [`html`]: server-rendered HTML (the run report with SVG charts).
//! - [`ratelimit`]: sliding-window rate limits, shared through Redis.
//! - [`llm`]: language models: the OpenAI-compatible client, the call ledger,
//!   rate limits, versioned prompts and the grounding checks.
//! - [`memo`]: read results memoized by the version of the data they read.
//! - [`model`]: shared vocabulary of the store and the pipeline (`RunStatus`, `Phase`).
//! - [`error`]: the error policy (transient, permanent, infrastructure).

pub mod agents;
pub mod api;
pub mod app;
pub mod broker;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod console;
pub mod error;
pub mod html;
pub mod ingest;
pub mod llm;
pub mod memo;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod ratelimit;
pub mod sample;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tools;
