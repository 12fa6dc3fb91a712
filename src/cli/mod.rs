//! The `netra` command line (clap). `anyhow` is used here, at the top, only.

pub mod demo;
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
    pipeline::{replay, seal::Seal, service::ServeOptions},
    store::{self, audit::Said, dead_letters::DeadLetter},
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

/// Prints the least privileges of a tenant's broker user and how to set them.
fn print_broker_permissions(config: &Config, user: &str) {
    use secrecy::ExposeSecret;
    let names = Names::new(&config.namespace);
    let p = crate::broker::permissions::for_tenant(&names, user);
    let vhost = config
        .amqp_url
        .expose_secret()
        .parse::<lapin::uri::AMQPUri>()
        .map(|u| u.vhost)
        .unwrap_or_else(|_| "/".into());
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
        Command::Dlq { action } => dlq(action).await,
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

/// `netra dlq …`.
async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    let (_, pool) = pool().await?;
    match action {
        DlqAction::List {
            filter,
            since,
            limit,
        } => dlq_list(&pool, filter, since.as_deref(), limit).await,
        DlqAction::Show { id } => dlq_show(&pool, id).await,
        DlqAction::Replay {
            id,
            run,
            group,
            filter:
                DlqFilterArgs {
                    phase,
                    tenant,
                    error_contains,
                },
            dry_run,
            patch,
            limit,
            rate,
            reason,
        } => {
            let sel = ReplaySelection {
                id,
                run,
                group,
                phase,
                tenant,
                error_contains,
                limit,
            };
            replay_cmd(pool, sel, dry_run, patch, rate, reason).await
        }
        DlqAction::Groups => dlq_groups(&pool).await,
    }
}

/// `netra dlq list`: one line per pending dead letter, under a header.
async fn dlq_list(
    pool: &sqlx::PgPool,
    filter: DlqFilterArgs,
    since: Option<&str>,
    limit: i64,
) -> anyhow::Result<()> {
    let since = since.map(parse_since).transpose()?;
    let f = store::dead_letters::DeadLetterFilter {
        tenant: filter.tenant,
        phase: filter.phase,
        error_contains: filter.error_contains,
        since,
        limit,
        ..Default::default()
    };
    println!(
        "{:<36}  {:<36}  {:<12}  {:<9}  {:>3}  {:>7}  {:<20}  {:<20}  error",
        "id", "run", "phase", "class", "att", "replays", "first failure", "last failure"
    );
    for d in store::dead_letters::list(pool, &f).await? {
        println!(
            "{:<36}  {:<36}  {:<12}  {:<9}  {:>3}  {:>7}  {:<20}  {:<20}  {}",
            d.id,
            run_or_dash(d.run_id),
            d.phase,
            d.error_class,
            d.attempts,
            d.replay,
            d.first_failed_at.format("%Y-%m-%d %H:%M:%S"),
            d.last_failed_at.format("%Y-%m-%d %H:%M:%S"),
            d.error
        );
    }
    Ok(())
}

/// A dead letter's run id, `-` when it has none.
fn run_or_dash(run: Option<uuid::Uuid>) -> String {
    run.map(|r| r.to_string()).unwrap_or_else(|| "-".into())
}

/// `netra dlq show`: the dead letter, then its run's request and persisted
/// inputs.
async fn dlq_show(pool: &sqlx::PgPool, id: uuid::Uuid) -> anyhow::Result<()> {
    let d = store::dead_letters::get(pool, id, None)
        .await?
        .context("no such dead letter")?;
    println!("{}", serde_json::to_string_pretty(&d)?);
    if let Some(run_id) = d.run_id {
        if let Some(run) = store::runs::get(pool, run_id).await? {
            let (outputs, _) = store::runs::load_inputs(pool, &run).await?;
            println!("request: {}", serde_json::to_string_pretty(&run.request)?);
            println!(
                "persisted inputs (upstream outputs): {}",
                serde_json::to_string_pretty(&outputs)?
            );
        }
    }
    Ok(())
}

/// `netra dlq groups`: pending dead letters by phase and fingerprint.
async fn dlq_groups(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    println!("{:>6}  {:<12}  fingerprint", "count", "phase");
    for g in store::dead_letters::groups(pool, None).await? {
        println!("{:>6}  {:<12}  {}", g.count, g.phase, g.fingerprint);
    }
    Ok(())
}

/// Parses `--since`: RFC 3339, or an age such as `30m`, `2h`, `7d`.
pub fn parse_since(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("--since `{s}`: use RFC 3339 or an age like 30m, 2h, 7d"))?;
    let age = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => bail!("--since `{s}`: unit must be s, m, h or d"),
    };
    Ok(chrono::Utc::now() - age)
}

/// Which dead letters to replay.
struct ReplaySelection {
    id: Option<uuid::Uuid>,
    run: Option<uuid::Uuid>,
    group: Option<String>,
    phase: Option<String>,
    tenant: Option<String>,
    error_contains: Option<String>,
    limit: i64,
}

impl ReplaySelection {
    /// What was asked for, for the replay job and the audit trail.
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "run": self.run, "fingerprint": self.group, "phase": self.phase,
            "tenant": self.tenant, "error_contains": self.error_contains, "limit": self.limit,
        })
    }

    /// True when it names something to replay (a tenant alone does not).
    fn names_something(&self) -> bool {
        self.id.is_some()
            || self.run.is_some()
            || self.group.is_some()
            || self.phase.is_some()
            || self.error_contains.is_some()
    }

    /// The dead letters it selects: the one of `--id`, else the pending ones
    /// that match the filters (and `--run`).
    async fn targets(self, pool: &sqlx::PgPool) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(match self.id {
            Some(id) => store::dead_letters::get(pool, id, self.tenant.as_deref())
                .await?
                .into_iter()
                .collect(),
            None => {
                let f = store::dead_letters::DeadLetterFilter {
                    tenant: self.tenant,
                    phase: self.phase,
                    error_contains: self.error_contains,
                    fingerprint: self.group,
                    limit: self.limit,
                    ..Default::default()
                };
                store::dead_letters::list(pool, &f)
                    .await?
                    .into_iter()
                    .filter(|d| self.run.is_none() || d.run_id == self.run)
                    .collect()
            }
        })
    }
}

/// `netra dlq replay`: a dry run lists what would be replayed; otherwise
/// the selected dead letters are replayed (with a progress bar) and their
/// replayed copies removed from the dead-letter queues.
async fn replay_cmd(
    pool: sqlx::PgPool,
    sel: ReplaySelection,
    dry_run: bool,
    patch: Option<String>,
    rate: Option<f64>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let patch = parse_patch(patch)?;
    if !sel.names_something() {
        bail!("say what to replay: --id, --run, --group, --phase or --error-contains");
    }
    // Checked before anything is read, so a replay without a reason
    // changes nothing.
    let said = if dry_run {
        None
    } else {
        Some(cli_said(reason.as_deref())?)
    };
    let selection = sel.describe();
    let targets = sel.targets(&pool).await?;
    let names = Names::new(&config.namespace);
    let job = match &said {
        Some(said) => Some(
            replay::start_job(
                &pool,
                &replay::JobRequest {
                    said,
                    selection,
                    targets: &targets,
                    patch: patch.as_ref(),
                    rate,
                },
            )
            .await?,
        ),
        None => None,
    };
    let opts = replay::Options {
        dry_run,
        patch,
        rate,
        actor: said.map_or_else(|| "cli".into(), |s| s.actor),
        job,
    };
    let job = ReplayJob {
        config: &config,
        pool: &pool,
        names: &names,
        targets: &targets,
        opts: &opts,
    };
    if dry_run {
        return job.dry_run().await;
    }
    job.replay_and_drain().await
}

/// `--patch`: a JSON object keyed by phase name.
fn parse_patch(patch: Option<String>) -> anyhow::Result<Option<serde_json::Value>> {
    let patch: Option<serde_json::Value> = patch
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .context("--patch is not JSON")?;
    if patch.as_ref().is_some_and(|p| !p.is_object()) {
        bail!("--patch must be a JSON object whose keys are phase names");
    }
    Ok(patch)
}

/// The dead letters `netra dlq replay` selected, and how to replay them.
struct ReplayJob<'a> {
    config: &'a Config,
    pool: &'a sqlx::PgPool,
    names: &'a Names,
    targets: &'a [DeadLetter],
    opts: &'a replay::Options,
}

impl ReplayJob<'_> {
    /// Lists what a replay would do, and counts it; changes nothing.
    async fn dry_run(&self) -> anyhow::Result<()> {
        for d in self.targets {
            println!(
                "would replay {}  run {}  phase {}  {}",
                d.id,
                run_or_dash(d.run_id),
                d.phase,
                d.error
            );
        }
        let r = self.replay(None, |_| {}).await?;
        println!(
            "dry run: {} would be replayed; nothing changed",
            r.would_replay
        );
        Ok(())
    }

    /// Replays the dead letters over a connection of its own, evicts the
    /// replayed runs' cached status, removes the replayed copies from the
    /// dead-letter queues of their phases and prints what it did.
    async fn replay_and_drain(&self) -> anyhow::Result<()> {
        let conn = crate::broker::connect(self.config, "netra dlq replay").await?;
        let publisher = crate::broker::publisher::Publisher::open(&conn).await?;
        let bar = replay_progress_bar(self.targets.len());
        let mut report = self
            .replay(Some(&publisher), |n| bar.set_position(n as u64))
            .await?;
        bar.finish_and_clear();
        let cache = crate::cache::Cache::connect(self.config).await;
        replay::evict_cached(cache.as_ref(), &report.runs).await;
        let ch = conn.create_channel().await?;
        let mut phases: Vec<&str> = self.targets.iter().map(|d| d.phase.as_str()).collect();
        phases.sort_unstable();
        phases.dedup();
        for p in phases {
            report.drained += replay::drain_replayed(self.pool, &ch, self.names, p).await?;
        }
        let _ = conn.close(200, "bye".into()).await;
        println!(
            "replayed {}, already replayed {}, not replayable {}, removed {} copies from the dead-letter queues",
            report.replayed, report.skipped, report.not_replayable, report.drained
        );
        Ok(())
    }

    /// Replays (or, in a dry run, counts) the dead letters with the
    /// deployment's seal, publishing through `publisher`.
    async fn replay(
        &self,
        publisher: Option<&crate::broker::publisher::Publisher>,
        progress: impl FnMut(usize),
    ) -> anyhow::Result<replay::Report> {
        let seal = Seal::load(self.config, self.pool).await?;
        let (pool, names, targets, opts) = (self.pool, self.names, self.targets, self.opts);
        Ok(replay::run_job(pool, names, &seal, publisher, targets, opts, progress).await?)
    }
}

/// The progress bar of a replay, hidden for fewer than two dead letters.
fn replay_progress_bar(len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "replaying {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if len < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
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
