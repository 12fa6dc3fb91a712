//! The `netra` command line (clap). `anyhow` is used here, at the top, only.

pub mod demo;
mod dlq;
pub mod http;

use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::{
    app::{App, StartOptions},
    broker::topology::Names,
    config::Config,
    ingest,
    model::Reason,
    pipeline::service::ServeOptions,
    store::{
        self,
        audit::Said,
        tenants::{Field, Setting},
    },
};

/// netra: a queue worker running a multi-agent AI-workload-optimization pipeline.
#[derive(Debug, Parser)]
#[command(name = "netra", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the request consumer, the phase consumers and the HTTP API.
    Serve {
        /// Only these phases (comma-separated), to scale phases independently.
        #[arg(long, value_delimiter = ',')]
        phases: Option<Vec<String>>,
        /// Do not consume upstream requests in this process.
        #[arg(long)]
        no_requests: bool,
        /// Do not serve HTTP in this process.
        #[arg(long)]
        no_http: bool,
    },
    /// Apply database migrations.
    Migrate,
    /// Submit a request over the HTTP API.
    Submit {
        /// The request text.
        message: String,
        /// The workload it is about.
        #[arg(long)]
        workload: Option<String>,
        /// Continue this thread.
        #[arg(long)]
        thread: Option<uuid::Uuid>,
        /// Block until the run ends and print its report.
        #[arg(long)]
        wait: bool,
        /// API base URL.
        #[arg(long, env = "NETRA_API_URL", default_value = "http://127.0.0.1:8089")]
        api: String,
        /// Bearer token.
        #[arg(long, env = "NETRA_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Show a run over the HTTP API.
    Status {
        /// Run id.
        id: uuid::Uuid,
        /// Long-poll up to this many seconds for a final state.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// API base URL.
        #[arg(long, env = "NETRA_API_URL", default_value = "http://127.0.0.1:8089")]
        api: String,
        /// Bearer token.
        #[arg(long, env = "NETRA_TOKEN", hide_env_values = true)]
        token: String,
        /// Print the JSON instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Load request telemetry of a workload from a file.
    Ingest {
        /// Workload id.
        #[arg(long)]
        workload: String,
        /// File format.
        #[arg(long, value_enum)]
        format: ingest::Format,
        /// Model name (required for the azure format).
        #[arg(long)]
        model: Option<String>,
        /// Tenant that owns the workload (required: no tenant gets data it
        /// was not given).
        #[arg(long)]
        tenant: String,
        /// Abort (inserting nothing) after more bad rows than this.
        #[arg(long, default_value_t = 0)]
        max_errors: usize,
        /// USD per million input tokens, for rows without a recorded cost
        /// (needed for a model the catalog does not have; with
        /// --output-price).
        #[arg(long, requires = "output_price")]
        input_price: Option<f64>,
        /// USD per million output tokens (with --input-price).
        #[arg(long, requires = "input_price")]
        output_price: Option<f64>,
        /// The file (`-` for standard input).
        file: PathBuf,
    },
    /// Manage tenants.
    Tenant {
        /// What to do.
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Manage operators (they see and act on every tenant, in the console
    /// and the API).
    Operator {
        /// What to do.
        #[command(subcommand)]
        action: OperatorAction,
    },
    /// Inspect dead letters.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Start netra in-process, submit sample requests of each category, and
    /// print their reports.
    Demo,
    /// Measure throughput, latency and memory against a raw baseline (runs
    /// `netra-bench` from the same folder, built from `bench/`; see
    /// BENCHMARKS.md).
    Bench {
        /// Arguments for netra-bench (`netra bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `netra operator …`.
#[derive(Debug, Subcommand)]
pub enum OperatorAction {
    /// Create an operator and print its token (shown only once).
    Create {
        /// Operator name.
        name: String,
        /// Why (required; it goes in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// List operators.
    List,
}

/// `netra tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantAction {
    /// Create a tenant and print its API token (shown only once).
    Create {
        /// Tenant name.
        name: String,
        /// Broker user whose validated `user_id` maps AMQP requests to it.
        #[arg(long)]
        amqp_user: Option<String>,
        /// Why (required; it goes in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Set a tenant's weight and cap on runs in flight (fair admission);
    /// prints the resulting ones.
    #[command(group(
        clap::ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["weight", "default_weight", "max_in_flight", "no_max_in_flight", "requests_per_min"])
    ))]
    Set {
        /// Tenant name.
        name: String,
        /// Its weight, 1-1000 (tenants with waiting runs share the runs in
        /// flight in proportion to their weights), or `default`.
        #[arg(long, value_name = "W|default", value_parser = weight_arg, conflicts_with = "default_weight")]
        weight: Option<Setting>,
        /// Clear its own weight: NETRA_FAIR_WEIGHT applies (as `--weight default`).
        #[arg(long)]
        default_weight: bool,
        /// Its cap on runs in flight: at least 1; `none`, no cap even where
        /// NETRA_FAIR_MAX_IN_FLIGHT sets one; or `default`.
        #[arg(long, value_name = "N|none|default", value_parser = cap_arg, conflicts_with = "no_max_in_flight")]
        max_in_flight: Option<Setting>,
        /// Clear its own cap: NETRA_FAIR_MAX_IN_FLIGHT applies (no cap when
        /// that is unset); as `--max-in-flight default`.
        #[arg(long)]
        no_max_in_flight: bool,
        /// Its request rate, new runs per minute on AMQP and the API
        /// together (beyond it runs wait `over its rate`): at least 1;
        /// `none`, no limit even where NETRA_FAIR_REQUESTS_PER_MIN sets
        /// one; or `default`.
        #[arg(long, value_name = "N|none|default", value_parser = rate_arg)]
        requests_per_min: Option<Setting>,
        /// Why (required; it goes in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// List tenants.
    List,
    /// Give a tenant a new API token (printed once); the old one stops working.
    RotateToken {
        /// Tenant name.
        name: String,
    },
    /// Delete a tenant: its token and broker user stop working, and the
    /// name is never given to a new tenant.
    Delete {
        /// Tenant name.
        name: String,
    },
}

/// `--weight`: [`Setting::parse`], which must change something.
fn weight_arg(text: &str) -> Result<Setting, String> {
    setting_arg(text, Field::Weight)
}

/// `--max-in-flight`: [`Setting::parse`], which must change something.
fn cap_arg(text: &str) -> Result<Setting, String> {
    setting_arg(text, Field::MaxInFlight)
}

/// `--requests-per-min`: [`Setting::parse`], which must change something.
fn rate_arg(text: &str) -> Result<Setting, String> {
    setting_arg(text, Field::RequestsPerMin)
}

fn setting_arg(text: &str, field: Field) -> Result<Setting, String> {
    match Setting::parse(text, field)? {
        Setting::Keep => Err(field.accepts()),
        s => Ok(s),
    }
}

/// Prints the least privileges of a tenant's broker user and how to set them.
fn print_broker_permissions(config: &Config, user: &str) {
    let names = Names::new(&config.namespace);
    let p = crate::broker::permissions::for_tenant(&names, user);
    // The vhost of the first broker address (all of them name the same).
    let vhost = config
        .amqp_urls()
        .first()
        .and_then(|u| u.parse::<lapin::uri::AMQPUri>().ok())
        .map(|u| u.vhost)
        .unwrap_or_else(|| "/".into());
    eprintln!(
        "broker user {user}: publish requests to exchange {} with user_id={user}; reply queues must be named {}…\n\
         give it exactly these permissions:\n  {}",
        names.intake_exchange(),
        names.reply_prefix(user),
        crate::broker::permissions::rabbitmqctl_command(&vhost, user, &p)
    );
}

/// The filters `dlq list` and `dlq replay` share.
#[derive(Debug, clap::Args)]
pub struct DlqFilterArgs {
    /// Only this phase.
    #[arg(long)]
    pub phase: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Error contains.
    #[arg(long)]
    pub error_contains: Option<String>,
}

/// `netra dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List pending dead letters.
    List {
        /// Phase, tenant, error text.
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Only dead letters since this time: RFC 3339, or an age like 30m, 2h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Max rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Group pending dead letters by phase and error fingerprint.
    Groups,
    /// Everything about one dead letter, with the run's persisted inputs.
    Show {
        /// Dead-letter id.
        id: uuid::Uuid,
    },
    /// Resume failed phases from persisted state.
    Replay {
        /// One dead letter.
        #[arg(long)]
        id: Option<uuid::Uuid>,
        /// The pending dead letters of one run.
        #[arg(long)]
        run: Option<uuid::Uuid>,
        /// A group: the fingerprint printed by `dlq groups`.
        #[arg(long)]
        group: Option<String>,
        /// Phase, tenant, error text.
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// JSON merge patch over the phase's inputs, e.g. '{"data": {"sufficiency": "partial"}}'.
        #[arg(long)]
        patch: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 10_000)]
        limit: i64,
        /// At most this many per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Why (required unless --dry-run; it goes in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Entry point of the binary.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_filter = match cli.command {
        // The demo prints reports; keep its log to warnings unless asked.
        Command::Demo | Command::Bench { .. } => "warn",
        _ => crate::telemetry::DEFAULT_FILTER,
    };
    if let Err(e) = crate::telemetry::try_init(log_filter) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = run(cli).await;
    // The spans of a command (and of `serve` after its graceful shutdown).
    crate::telemetry::shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn pool() -> anyhow::Result<(Config, sqlx::PgPool)> {
    let config = Config::from_env()?;
    let pool = store::connect(&config)
        .await
        .context("connecting to Postgres (is the stack running? `deploy/local/stack start`)")?;
    store::migrate(&pool).await?;
    crate::agents::catalog::load_catalog(&pool)
        .await
        .context("loading the supply catalog")?;
    Ok((config, pool))
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            phases,
            no_requests,
            no_http,
        } => serve(phases, no_requests, no_http).await,
        Command::Migrate => {
            pool().await?;
            println!("migrations applied; supply catalog loaded");
            Ok(())
        }
        Command::Submit {
            message,
            workload,
            thread,
            wait,
            api,
            token,
        } => http::submit(&api, &token, &message, workload, thread, wait).await,
        Command::Status {
            id,
            wait,
            api,
            token,
            json,
        } => http::status(&api, &token, id, wait, json).await,
        Command::Ingest {
            workload,
            format,
            model,
            tenant,
            max_errors,
            input_price,
            output_price,
            file,
        } => {
            let (_, pool) = pool().await?;
            let target = ingest::Target {
                tenant: &tenant,
                workload: &workload,
                format,
                model: model.as_deref(),
                max_errors,
                prices: input_price.zip(output_price).map(|(i, o)| ingest::Prices {
                    input_per_mtok: i,
                    output_per_mtok: o,
                }),
            };
            ingest::run_cli(&pool, &target, &file).await
        }
        Command::Tenant { action } => tenant(action).await,
        Command::Operator { action } => operator(action).await,
        Command::Dlq { action } => dlq::run(action).await,
        Command::Demo => demo::run().await,
        Command::Bench { args } => bench(&args).await,
    }
}

/// `netra serve`: everything in one process until SIGTERM or SIGINT.
async fn serve(
    phases: Option<Vec<String>>,
    no_requests: bool,
    no_http: bool,
) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    tracing::info!(config = ?config, "starting");
    let opts = StartOptions {
        serve: ServeOptions {
            phases,
            requests: !no_requests,
            scheduler: true,
        },
        http: !no_http,
        agents: None,
    };
    let app = App::start(config, opts).await?;
    if let Some(addr) = app.http_addr {
        tracing::info!(%addr, "HTTP API listening");
    }
    wait_for_signal().await;
    tracing::info!("signal received; shutting down");
    app.shutdown().await;
    Ok(())
}

/// `netra tenant …`.
async fn tenant(action: TenantAction) -> anyhow::Result<()> {
    let (config, pool) = pool().await?;
    match action {
        TenantAction::Create {
            name,
            amqp_user,
            reason,
        } => {
            let said = cli_said(Some(&reason))?;
            let token = store::tenants::create(&pool, &name, amqp_user.as_deref(), &said).await?;
            println!("{token}");
            eprintln!("tenant {name} created; the token above is shown only once");
            if let Some(user) = &amqp_user {
                print_broker_permissions(&config, user);
            }
        }
        TenantAction::Set {
            name,
            weight,
            default_weight,
            max_in_flight,
            no_max_in_flight,
            requests_per_min,
            reason,
        } => {
            let said = cli_said(Some(&reason))?;
            let pick = |value: Option<Setting>, clear: bool| match (value, clear) {
                (Some(v), _) => v,
                (None, true) => Setting::Default,
                (None, false) => Setting::Keep,
            };
            let change = store::tenants::FairChange {
                weight: pick(weight, default_weight),
                max_in_flight: pick(max_in_flight, no_max_in_flight),
                requests_per_min: pick(requests_per_min, false),
            };
            let set = store::tenants::set_fair(&pool, &name, &change, &said).await?;
            let view = store::tenants::TenantView::of(&set, config.fair, 0, 0);
            println!("{}", describe_fair(&view));
        }
        TenantAction::RotateToken { name } => {
            let token = store::tenants::rotate_token(&pool, &name).await?;
            println!("{token}");
            eprintln!(
                "tenant {name} has a new token (shown only once); the old one no longer works"
            );
        }
        TenantAction::Delete { name } => {
            store::tenants::delete(&pool, &name).await?;
            eprintln!("tenant {name} deleted: its token and broker user no longer work, and the name cannot be created again");
        }
        TenantAction::List => {
            for t in store::tenants::list(&pool).await? {
                println!("{t}");
            }
        }
    }
    Ok(())
}

/// A tenant's effective weight and cap, in words, saying "default" where
/// the configuration applies.
fn describe_fair(v: &store::tenants::TenantView) -> String {
    let weight = if v.weight_is_default {
        format!("weight {} (default: NETRA_FAIR_WEIGHT)", v.weight)
    } else {
        format!("weight {}", v.weight)
    };
    let cap = match (v.max_in_flight, v.max_in_flight_is_default) {
        (Some(n), false) => format!("max in flight {n}"),
        (Some(n), true) => format!("max in flight {n} (default: NETRA_FAIR_MAX_IN_FLIGHT)"),
        (None, false) => "no cap on runs in flight (its own: none)".into(),
        (None, true) => {
            "no cap on runs in flight (default: NETRA_FAIR_MAX_IN_FLIGHT is unset)".into()
        }
    };
    // The rate is left out where none applies at all (no default, none of
    // its own), as before there were rates.
    let rate = match (v.requests_per_min, v.requests_per_min_is_default) {
        (Some(n), false) => format!(", {n} requests per minute"),
        (Some(n), true) => {
            format!(", {n} requests per minute (default: NETRA_FAIR_REQUESTS_PER_MIN)")
        }
        (None, false) => ", no request rate limit (its own: none)".into(),
        (None, true) => String::new(),
    };
    format!("tenant {}: {weight}, {cap}{rate}", v.name)
}

/// Who acts from the command line (`cli:$USER`), and why.
fn cli_said(reason: Option<&str>) -> anyhow::Result<Said> {
    let reason = Reason::parse(reason).map_err(|e| anyhow::anyhow!("--reason: {e}"))?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Ok(Said::new(format!("cli:{user}"), reason))
}

/// `netra operator …`.
async fn operator(action: OperatorAction) -> anyhow::Result<()> {
    let (_, pool) = pool().await?;
    match action {
        OperatorAction::Create { name, reason } => {
            let said = cli_said(Some(&reason))?;
            let token = store::operators::create(&pool, &name, &said).await?;
            println!("{token}");
            eprintln!(
                "operator {name} created; the token above is shown only once (it sees every tenant)"
            );
        }
        OperatorAction::List => {
            for o in store::operators::list(&pool).await? {
                println!("{o}");
            }
        }
    }
    Ok(())
}

/// `netra bench …`: the benchmark lives in its own binary, `netra-bench`,
/// so that the product carries none of its dependencies; this runs it from
/// the folder of the running `netra` (both come out of one
/// `cargo build --workspace`).
async fn bench(args: &[String]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the netra binary")?;
    let bench = exe.with_file_name("netra-bench");
    if !bench.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --workspace` (or `-p netra-bench`)",
            bench.display()
        );
    }
    let status = tokio::process::Command::new(&bench)
        .args(args)
        .status()
        .await
        .with_context(|| format!("running {}", bench.display()))?;
    if !status.success() {
        bail!("netra-bench failed ({status})");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
