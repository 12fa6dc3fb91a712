//! netra's chaos suite: real requests through spawned `netra serve`
//! workers on the local stack while faults hit the workers, RabbitMQ,
//! Postgres and Redis, then counts from Postgres and the reply queues.
//! Run it with `deploy/local/chaos` (which starts the stack with three
//! RabbitMQ nodes and a Postgres standby, builds, and passes its arguments
//! here); `--help` lists the options, `--list` the scenarios.
//!
//! Every scenario runs `--runs` requests (unique message ids, one reply
//! queue per scenario) in a database and broker namespace of its own; the
//! seed (`--seed`) decides every random choice: when and which worker is
//! killed, which node is killed, where the poison goes. It prints one
//! table, a row per scenario, and exits non-zero on any request lost,
//! phase effect applied twice, run stuck, good request dead-lettered,
//! poison not dead-lettered, scenario that could not run, or (with
//! `--require-all`) scenario skipped. Duplicated replies are reported only.
//!
//! The parts: [`stack`] (the fault commands), [`workers`] (the `netra serve`
//! children), [`traffic`] (publishing, replies), [`poison`], [`scenario`]
//! (the faults), [`run`] (one scenario's life), [`waits`] and [`guards`]
//! (its bounded waits and drop guards), [`tally`] (the counts) and [`table`].

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)] // the suite uses only part of the test harness
mod common;
#[path = "chaos/guards.rs"]
mod guards;
#[path = "chaos/poison.rs"]
mod poison;
#[path = "chaos/run.rs"]
mod run;
#[path = "chaos/scenario.rs"]
mod scenario;
#[path = "chaos/stack.rs"]
mod stack;
#[path = "chaos/table.rs"]
mod table;
#[path = "chaos/tally.rs"]
mod tally;
#[path = "chaos/traffic.rs"]
mod traffic;
#[path = "chaos/waits.rs"]
mod waits;
#[path = "chaos/workers.rs"]
mod workers;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::{
    scenario::Scenario,
    table::{Row, Status},
};

/// netra's chaos suite (run it with deploy/local/chaos).
#[derive(Parser, Debug)]
#[command(name = "deploy/local/chaos", bin_name = "deploy/local/chaos")]
struct Args {
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Requests per scenario.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Run only this scenario (repeatable; default: all). See --list.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Print the table in Markdown.
    #[arg(long)]
    markdown: bool,
    /// A scenario the stack cannot run (no cluster, no standby) is an error.
    #[arg(long)]
    require_all: bool,
    /// Seconds the runs may take to settle after the last fault healed.
    #[arg(long, default_value_t = 180)]
    settle_secs: u64,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

/// Progress and diagnostics go to stderr; the table goes to stdout.
pub fn log(line: impl std::fmt::Display) {
    eprintln!("chaos: {line}");
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match suite(Args::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            log(format!("error: {e:#}"));
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs the selected scenarios and prints the table; false when one failed.
async fn suite(args: Args) -> Result<bool> {
    if args.list {
        for s in Scenario::ALL {
            println!("{:<18} {}", s.name(), s.what());
        }
        return Ok(true);
    }
    let selected = select(&args.scenarios)?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let env = Arc::new(run::Env {
        stack: stack::Stack::from_env()?,
        bin: netra_bin()?,
        log_dir: log_dir(seed)?,
        runs: args.runs,
        seed,
        settle: Duration::from_secs(args.settle_secs),
    });
    log(format!(
        "seed {seed}, {} runs per scenario, worker logs in {}",
        args.runs,
        env.log_dir.display()
    ));
    // The commit the suite was built from: read before the run, so later
    // edits to the checkout do not mark it dirty.
    let commit = commit();
    let mut rows = Vec::new();
    for scenario in selected {
        rows.push(run_one(scenario, &env).await);
    }
    let command = std::env::var("NETRA_CHAOS_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    if args.markdown {
        println!(
            "Chaos suite: seed `{seed}`, {} runs per scenario, commit `{commit}`, command `{command}`.\n",
            args.runs
        );
        println!("{}", table::markdown(&rows));
    } else {
        println!(
            "netra chaos suite: seed {seed}, {} runs per scenario, commit {commit}",
            args.runs
        );
        println!("command: {command}\n");
        println!("{}", table::text(&rows));
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.fails(args.require_all))
        .map(|r| r.scenario)
        .collect();
    if failed.is_empty() {
        log("PASS");
    } else {
        log(format!(
            "FAIL: {} (worker logs in {}; repeat with --seed {seed})",
            failed.join(", "),
            env.log_dir.display()
        ));
    }
    Ok(failed.is_empty())
}

/// The scenarios to run, in the suite's order.
fn select(names: &[String]) -> Result<Vec<Scenario>> {
    if names.is_empty() {
        return Ok(Scenario::ALL.to_vec());
    }
    for n in names {
        if Scenario::parse(n).is_none() {
            let all: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            bail!(
                "unknown scenario `{n}`; the scenarios are: {}",
                all.join(", ")
            );
        }
    }
    Ok(Scenario::ALL
        .into_iter()
        .filter(|s| names.iter().any(|n| n == s.name()))
        .collect())
}

/// Runs one scenario in a task of its own (a panic of the harness fails
/// the row, not the suite); Ctrl-C or SIGTERM stops it, its drop guards
/// killing the workers, healing a faulted service and cleaning up.
async fn run_one(scenario: Scenario, env: &Arc<run::Env>) -> Row {
    let name = scenario.name();
    if let Some(why) = scenario.unmet(&env.stack) {
        log(format!("{name}: {why}"));
        return Row {
            scenario: name,
            status: Status::Skipped(why.to_string()),
            notes: vec![],
        };
    }
    log(format!("{name}: {}", scenario.what()));
    let started = std::time::Instant::now();
    let task_env = env.clone();
    let mut handle = tokio::spawn(async move { run::run(scenario, &task_env).await });
    let joined = tokio::select! {
        joined = &mut handle => joined,
        _ = interrupted() => {
            log("interrupted: stopping the workers, healing the stack, cleaning up");
            handle.abort();
            let _ = handle.await;
            std::process::exit(130);
        }
    };
    let row = |status, notes| Row {
        scenario: name,
        status,
        notes,
    };
    let row = match joined {
        Ok(Ok(out)) => {
            let mut failures = out.tally.failures();
            failures.extend(out.failures);
            row(
                Status::Counted {
                    tally: out.tally,
                    failures,
                },
                out.notes,
            )
        }
        Ok(Err(e)) => row(Status::Error(format!("{e:#}")), vec![]),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            row(Status::Error(format!("panicked: {msg}")), vec![])
        }
        Err(e) => row(Status::Error(e.to_string()), vec![]),
    };
    let verdict = if row.fails(false) { "FAIL" } else { "ok" };
    log(format!(
        "{name}: {verdict} in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    row
}

/// Ctrl-C (SIGINT) or SIGTERM (`timeout`, CI cancelling the job).
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The `netra` binary: NETRA_BIN, else the one beside this example
/// (`<target>/debug/netra` for `<target>/debug/examples/chaos`).
fn netra_bin() -> Result<PathBuf> {
    let bin = match std::env::var_os("NETRA_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            let exe = std::env::current_exe().context("locating this program")?;
            exe.parent()
                .and_then(|examples| examples.parent())
                .map(|profile| profile.join("netra"))
                .context("no directory above this program")?
        }
    };
    if !bin.is_file() {
        bail!(
            "no netra binary at {}: build it (cargo build --bin netra) or set NETRA_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Where the workers' logs go: NETRA_CHAOS_LOG_DIR, else
/// `<target>/debug/chaos-logs/<time>-seed<seed>`.
fn log_dir(seed: u64) -> Result<PathBuf> {
    let dir = match std::env::var_os("NETRA_CHAOS_LOG_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().context("locating this program")?;
            let profile = exe
                .parent()
                .and_then(|examples| examples.parent())
                .context("no directory above this program")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            profile.join("chaos-logs").join(format!("{now}-seed{seed}"))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// `git rev-parse --short HEAD` of the checkout, `+dirty` with changes
/// to tracked files.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{head}+dirty"),
        _ => head,
    }
}
