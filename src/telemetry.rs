//! Tracing setup: `RUST_LOG` filters (default `info`); `NETRA_LOG_JSON=1`
//! switches to one JSON object per line.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once; later calls are no-ops.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
