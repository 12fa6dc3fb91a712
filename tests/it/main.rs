//! netra's integration tests, in one test binary (one link instead of one
//! per file): each module is one area, and every test gets its own database
//! and broker namespace from [`common`], so they run in parallel. The fault
//! tests, which restart shared services, are a binary of their own
//! (`tests/faults.rs`) and run one at a time.

mod common;

mod agents;
mod api;
mod console;
mod console_browser;

mod browser;
mod console_pages;
mod dead_letters;
mod fair;
mod fair_api;
mod figures;
mod goals;
mod group_commit;
mod hardening_api;
mod hardening_broker;
mod ingest;
mod leases;
mod llm;
mod otel;
mod pipeline;
mod report_html;
mod secrets;
mod tls;
mod usage;
