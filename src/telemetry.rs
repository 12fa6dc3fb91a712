//! Tracing setup: `RUST_LOG` filters (default `info`, with sqlx and lapin at
//! `warn`); logs go to standard error.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once; later calls are no-ops.
pub fn init() {
    init_with_default("info,sqlx=warn,lapin=warn");
}

/// Like [`init`], with another filter when `RUST_LOG` is not set.
pub fn init_with_default(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
