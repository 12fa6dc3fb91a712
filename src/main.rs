//! The `netra` binary: parse the command line and hand over to the library.

/// mimalloc instead of glibc's malloc: a worker allocates and frees many
/// short-lived JSON trees per message, and glibc's malloc/free were ~25% of
/// the process's CPU in `netra bench` (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    netra::cli::main().await
}
