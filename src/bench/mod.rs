//! `netra bench`: throughput, latency and memory of netra against a raw
//! lapin + Postgres baseline, on the local stack.

use clap::Args;

/// Options of `netra bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("netra bench is being built")
}
