//! Logging setup shared by the binaries: `tracing` to stderr, filtered by `PITR_LOG`
//! (same syntax as `RUST_LOG`; default `warn`, since PostgreSQL copies the stderr of
//! archive_command and restore_command into its own log for every call).

use std::io::IsTerminal;

/// Installs the global subscriber; `verbose` raises the default to `info`.
pub fn init(verbose: bool) {
    // aws-config warns once per credential provider it tries; the final error says it all.
    let default = if verbose { "info,aws_config=warn" } else { "warn,aws_config=error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PITR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}
