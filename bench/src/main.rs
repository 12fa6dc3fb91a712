//! The `netra-bench` binary (also run as `netra bench`): parse the
//! benchmark's arguments and run it.

use clap::Parser;

/// Throughput, latency and memory of netra against a raw baseline.
#[derive(Debug, Parser)]
#[command(name = "netra bench", version)]
struct Cli {
    #[command(flatten)]
    args: netra_bench::BenchArgs,
    /// (Internal) serve the slow model of `--slow-model` with this delay in
    /// milliseconds; the benchmark starts it as a child process.
    #[arg(long, hide = true, value_name = "MS")]
    serve_slow_model: Option<u64>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    netra::telemetry::init_with_default("warn");
    let outcome = match cli.serve_slow_model {
        Some(ms) => netra_bench::slow_server::serve(ms).await,
        None => netra_bench::run(cli.args).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
