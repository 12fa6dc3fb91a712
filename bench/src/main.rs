//! The `netra-bench` binary (also run as `netra bench`): parse the
//! benchmark's arguments and run it.

use clap::Parser;

/// Throughput, latency and memory of netra against a raw baseline.
#[derive(Debug, Parser)]
#[command(name = "netra bench", version)]
struct Cli {
    #[command(flatten)]
    args: netra_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    netra::telemetry::init_with_default("warn");
    match netra_bench::run(cli.args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
